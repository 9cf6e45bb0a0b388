-- batcher_spec.lua - jobs/lib/batcher.lua without a database: fake batches
-- whose send() suspends the task like gw.ch's does, and a small round-robin
-- scheduler standing in for gw.spawn / gw.sleep.
package.path = "lua/?.lua;tests/lua/?.lua;" .. package.path
local batcher = require("jobs.lib.batcher")

-- log: every send and commit in order. A send stays in flight until the
-- scheduler has run `latency` other steps.
local function world(o)
  o = o or {}
  local w = {log = {}, committed = {}, sent_rows = {}, latency = o.latency or 3}
  local id = 0
  function w.new_batch()
    id = id + 1
    local b = {id = id, pages = {}, nrows = 0, nbytes = 0}
    function b:add(project, rows)
      if self.sending then error("add while sending") end
      self.pages[#self.pages + 1] = project .. ":" .. #rows
      self.nrows, self.nbytes = self.nrows + #rows, self.nbytes + 10 * #rows
      return #rows, 0, nil
    end
    function b:rows() return self.nrows end
    function b:bytes() return self.nbytes end
    function b:send()
      if self.sending then error("send while sending") end
      self.sending = true
      local pages = table.concat(self.pages, ",")
      w.log[#w.log + 1] = "send " .. pages
      for _ = 1, w.latency do coroutine.yield() end
      self.sending = false
      local n = self.nrows
      self.pages, self.nrows, self.nbytes = {}, 0, 0
      if o.fail and pages:find(o.fail, 1, true) then error("ClickHouse code 241: memory limit") end
      w.log[#w.log + 1] = "done " .. pages
      return n
    end
    return b
  end
  function w.on_commit(marks)
    local keys = {}
    for k, v in pairs(marks) do keys[#keys + 1] = k .. "=" .. v; w.committed[k] = v end
    table.sort(keys)
    w.log[#w.log + 1] = "commit " .. table.concat(keys, " ")
  end
  w.idle = function() coroutine.yield() end
  -- runs fns as tasks until all are done; returns their errors (nil when ok)
  function w.run(...)
    local tasks, errs = {}, {}
    for i, f in ipairs({...}) do tasks[i] = coroutine.create(f) end
    local alive = #tasks
    while alive > 0 do
      alive = 0
      for i, co in ipairs(tasks) do
        if coroutine.status(co) ~= "dead" then
          local ok, e = coroutine.resume(co)
          if not ok then errs[i] = e end
          if coroutine.status(co) ~= "dead" then alive = alive + 1 end
        end
      end
    end
    return errs
  end
  return w
end

local function rows(n) local t = {} for i = 1, n do t[i] = i end return t end

describe("batcher", function()
  it("collects pages below the limit into one insert, sent by drain, then commits the marks", function()
    local w = world()
    local b = batcher.new{new_batch = w.new_batch, limit = 1000, on_commit = w.on_commit, idle = w.idle}
    local errs = w.run(function()
      assert.same({5, 0}, {b:add("p", rows(5), "r1", 1)})
      b:add("p", rows(5), "r1", 2)
      b:add("q", rows(3), "r2", 1)
      assert.same({}, w.log) -- nothing sent yet
      b:drain()
    end)
    assert.same({}, errs)
    assert.same({"send p:5,p:5,q:3", "done p:5,p:5,q:3", "commit r1=2 r2=1"}, w.log)
    assert.equal(1, b.inserts)
    assert.equal(13, b.rows)
  end)

  it("sends when the batch reaches the limit; later pages go to the next insert", function()
    local w = world()
    local b = batcher.new{new_batch = w.new_batch, limit = 100, on_commit = w.on_commit, idle = w.idle}
    w.run(function()
      b:add("p", rows(6), "r1", 1)  -- 60 bytes
      b:add("p", rows(6), "r1", 2)  -- 120: sent, and add returns once it is in
      assert.same({"send p:6,p:6", "done p:6,p:6", "commit r1=2"}, w.log)
      b:add("p", rows(2), "r1", 3)
      b:drain()
    end)
    assert.same({"send p:6,p:6", "done p:6,p:6", "commit r1=2", "send p:2", "done p:2", "commit r1=3"}, w.log)
    assert.equal(3, w.committed.r1)
  end)

  it("keeps one insert in flight: other tasks fill the next batch and wait their turn, commits stay in order", function()
    local w = world({latency = 5})
    local b = batcher.new{new_batch = w.new_batch, limit = 50, on_commit = w.on_commit, idle = w.idle}
    local order = {}
    local errs = w.run(
      function()
        b:add("a", rows(6), "ra", 1) -- full: sends batch 1, waits for it
        order[#order + 1] = "a back"
        b:add("a", rows(6), "ra", 2)
      end,
      function()
        b:add("b", rows(6), "rb", 1) -- goes into the second batch while the first is in flight
        b:add("b", rows(1), "rb", 2)
        order[#order + 1] = "b back"
      end)
    assert.same({}, errs)
    local done = w.run(function() b:drain() end)
    assert.same({}, done)
    -- never two sends without a done between them
    local inflight = 0
    for _, l in ipairs(w.log) do
      if l:match("^send") then inflight = inflight + 1; assert.equal(1, inflight, table.concat(w.log, "\n")) end
      if l:match("^done") then inflight = inflight - 1 end
    end
    assert.equal("send a:6", w.log[1])
    assert.equal("commit ra=1", w.log[3])
    assert.equal(2, w.committed.ra)
    assert.equal(2, w.committed.rb)
    assert.equal(19, b.rows)
    assert.is_true(b.inserts >= 2)
  end)

  it("a failed insert commits none of its marks and stops every task", function()
    local w = world({fail = "b:"})
    local b = batcher.new{new_batch = w.new_batch, limit = 50, on_commit = w.on_commit, idle = w.idle}
    local errs = w.run(
      function()
        b:add("a", rows(6), "ra", 1)
        b:add("b", rows(6), "rb", 1)  -- this insert fails
      end,
      function()
        for i = 1, 50 do b:add("c", rows(1), "rc", i) end
      end)
    assert.matches("memory limit", errs[1])
    assert.matches("memory limit", errs[2])
    assert.is_nil(w.committed.rb)
    assert.equal(1, w.committed.ra)
    assert.has_error(function() b:drain() end, "ClickHouse code 241: memory limit")
  end)

  it("commits marks of pages whose rows were all rejected (nothing to send)", function()
    local w = world()
    local b = batcher.new{new_batch = w.new_batch, limit = 100, on_commit = w.on_commit, idle = w.idle}
    w.run(function()
      b:add("p", {}, "r1", 7)
      b:drain()
    end)
    assert.same({"send p:0", "done p:0", "commit r1=7"}, w.log)
  end)
end)
