-- pool_spec.lua - jobs/lib/pool.lua over a fake gw whose tasks are
-- coroutines run round-robin (fn yields where a real task waits for I/O).
package.path = "lua/?.lua;tests/lua/?.lua;" .. package.path
local pool = require("jobs.lib.pool")

-- A fake gw: spawn makes a coroutine; wait runs every task a step at a
-- time until the awaited ones are done, then raises the first error.
local function fake_gw()
  local gw = {tasks = {}, spawned = 0, waits = 0}
  function gw.spawn(fn)
    local t = {co = coroutine.create(fn)}
    gw.tasks[#gw.tasks + 1] = t
    gw.spawned = gw.spawned + 1
    return t
  end
  function gw.wait(...)
    gw.waits = gw.waits + 1
    local want = {...}
    local function done()
      for _, t in ipairs(want) do if coroutine.status(t.co) ~= "dead" then return false end end
      return true
    end
    while not done() do
      for _, t in ipairs(gw.tasks) do
        if coroutine.status(t.co) ~= "dead" then
          local ok, e = coroutine.resume(t.co)
          if not ok then t.err = e end
        end
      end
    end
    for _, t in ipairs(want) do if t.err then error(t.err, 0) end end
    return true
  end
  package.loaded.gw = gw
  return gw
end

describe("jobs/lib/pool", function()
  after_each(function() package.loaded.gw = nil end)

  it("does each item once, in order, with at most n in progress", function()
    local gw = fake_gw()
    local items = {"a", "b", "c", "d", "e"}
    local started, busy, most = {}, 0, 0
    pool.run(2, items, function(item, i)
      assert.equal(items[i], item)
      started[#started + 1] = item
      busy = busy + 1
      most = math.max(most, busy)
      coroutine.yield() -- waiting for I/O
      coroutine.yield()
      busy = busy - 1
    end)
    assert.same(items, started)
    assert.equal(2, most)
    assert.equal(2, gw.spawned)
    assert.equal(0, busy)
  end)

  it("starts no more tasks than items, and none (and no wait) for an empty list", function()
    local gw = fake_gw()
    local n = 0
    pool.run(8.9, {1, 2, 3}, function() n = n + 1 end)
    assert.equal(3, gw.spawned)
    assert.equal(3, n)
    gw = fake_gw()
    pool.run(4, {}, function() error("not called") end)
    assert.equal(0, gw.spawned)
    assert.equal(0, gw.waits)
  end)

  it("start lets the caller work before it waits; a task's error is raised by the wait", function()
    local gw = fake_gw()
    local done = {}
    local wait = pool.start(2, {1, 2, 3}, function(x)
      coroutine.yield()
      if x == 2 then error("project 2: boom", 0) end
      done[#done + 1] = x
    end)
    assert.same({}, done) -- nothing ran yet: the caller's turn
    local ok, e = pcall(wait)
    assert.is_false(ok)
    assert.equal("project 2: boom", e)
    assert.equal(1, gw.waits)
  end)
end)
