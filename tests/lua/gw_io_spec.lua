-- gw_io_spec.lua - src/lua/gw_io.lua (the Lua layer of a job's gw.pg,
-- gw.ch, gw.sleep and tasks) over fake raw functions: what the wrappers
-- return, and that a failure raises at the script's line.

-- A fresh gw over raw (with the fields gw_io.lua expects filled in).
local function load(raw)
  raw.batch_mt = raw.batch_mt or {}
  local chunk = assert(loadfile("src/lua/gw_io.lua"))
  local gw = {}
  chunk(gw, raw)
  return gw, raw
end

-- The error f raises, as text.
local function err_of(f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok)
  return tostring(e)
end

describe("gw_io.lua", function()
  it("gw.pg.query and query_raw pass the raw flag, SQL and parameters, and return rows, affected", function()
    local calls = {}
    local gw = load({
      pg_query = function(raw, sql, ...)
        calls[#calls + 1] = {raw, sql, select("#", ...), ...}
        return true, {{n = "1"}}, 1
      end,
    })
    local rows, n = gw.pg.query("SELECT $1, $2", "a", nil)
    assert.same({{n = "1"}}, rows)
    assert.equal(1, n)
    gw.pg.query_raw("SELECT 1")
    assert.same({false, "SELECT $1, $2", 2, "a"}, calls[1])
    assert.same({true, "SELECT 1", 0}, calls[2])
  end)

  it("a failed call raises its message at the caller's line, not inside gw_io.lua", function()
    local fail = function() return false, "gw.pg.query: 22012 division by zero" end
    local raw = {pg_query = fail, ch_query = fail, ch_insert = fail, ch_insert_spans = fail,
                 sleep = fail, batch_send = fail}
    local gw = load(raw)
    local b = setmetatable({}, raw.batch_mt)
    local cases = {
      function() gw.pg.query("SELECT 1/0") end,
      function() gw.pg.query_raw("SELECT 1/0") end,
      function() gw.ch.query("SELECT 1") end,
      function() gw.ch.insert("t", "") end,
      function() gw.ch.insert_spans("p", {}) end,
      function() gw.sleep(1) end,
      function() b:send() end,
    }
    for i, f in ipairs(cases) do
      local e = err_of(f)
      assert.truthy(e:find("gw_io_spec.lua:%d+: gw.pg.query: 22012 division by zero"), "case " .. i .. ": " .. e)
      assert.falsy(e:find("gw_io.lua", 1, true), "case " .. i .. ": " .. e)
    end
  end)

  it("gw.ch wrappers return what the raw functions answer", function()
    local gw = load({
      ch_query = function(sql, format) return true, format == "TSV" and {{"1"}} or "1\n" end,
      ch_insert = function(target, rows) return true, #rows end,
      ch_insert_spans = function(p, rows) return true, 2, 1, "span x/y: bad trace_id" end,
      ch_span_batch = function() return "batch" end,
      server = {version = "24.3", major = 24, minor = 3, datetime64 = true, database = "db"},
    })
    assert.equal("1\n", gw.ch.query("SELECT 1"))
    assert.same({{"1"}}, gw.ch.query("SELECT 1", "TSV"))
    assert.equal(3, gw.ch.insert("db.t (a)", {{1}, {2}, {3}}))
    assert.same({2, 1, "span x/y: bad trace_id"}, {gw.ch.insert_spans("p", {})})
    assert.equal("batch", gw.ch.span_batch())
    assert.equal("db", gw.ch.server.database)
    assert.is_nil(gw.ch.server_error)
  end)

  it("a batch's methods are the raw functions, send raises on failure and returns the rows", function()
    local raw = {
      batch_add = function(b, p, rows) return #rows, 0 end,
      batch_rows = function(b) return 7 end,
      batch_bytes = function(b) return 70 end,
      batch_send = function(b) return true, 7 end,
    }
    load(raw)
    local b = setmetatable({}, raw.batch_mt)
    assert.same({2, 0}, {b:add("p", {1, 2})})
    assert.equal(7, b:rows())
    assert.equal(70, b:bytes())
    assert.equal(7, b:send())
  end)

  it("gw.wait returns one task's results (nil included), true for several, and re-raises a failure as it is", function()
    local results = {
      a = {true, {n = 3, 1, nil, 3}},
      b = {true, {n = 0}},
      bad = {false, "job.lua:3: boom\nstack traceback:\n..."},
    }
    local waited = {}
    local gw = load({wait = function(t) waited[#waited + 1] = t return unpack(results[t]) end})
    local x, y, z = gw.wait("a")
    assert.same({1, nil, 3}, {x, y, z})
    assert.equal(3, select("#", gw.wait("a")))
    assert.is_true(gw.wait("a", "b"))
    assert.equal("job.lua:3: boom\nstack traceback:\n...", err_of(gw.wait, "bad"))
    waited = {}
    err_of(gw.wait, "a", "bad", "b")
    assert.same({"a", "bad"}, waited) -- stops at the first failure
    assert.truthy(err_of(function() gw.wait() end):find("gw_io_spec.lua:%d+: gw.wait: bad argument #1"))
  end)

  it("passes spawn, exit, hooks, isatty and the server's error through", function()
    local spawn, exit, hook = function() end, function() end, function() return false end
    local gw = load({spawn = spawn, exit = exit, hook_clickhouse = hook, isatty = false,
                     server_error = "ClickHouse at h:1 did not answer"})
    assert.equal(spawn, gw.spawn)
    assert.equal(exit, gw.exit)
    assert.equal(hook, gw.hooks.clickhouse)
    assert.is_false(gw.stdout_isatty)
    assert.is_nil(gw.ch.server)
    assert.equal("ClickHouse at h:1 did not answer", gw.ch.server_error)
  end)
end)
