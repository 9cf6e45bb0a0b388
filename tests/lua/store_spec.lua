-- store_spec.lua - jobs/lib/store.lua's settle: on a cluster, differences
-- found right after a write are read again while the replicas catch up; on
-- one server they stand at once. A fake gw, no database.
package.path = "lua/?.lua;tests/lua/?.lua;" .. package.path
local H = require("helper")

-- store.lua over a fake gw whose server is a cluster or not; returns store
-- and the pauses it asked for.
local function load(cluster)
  local gw = H.fake_gw({})
  local pauses = {}
  gw.sleep = function(ms) pauses[#pauses + 1] = ms end
  gw.ch = {server = {version = "18.16.1", major = 18, minor = 16, database = "db", cluster = cluster}}
  package.loaded.gw = gw
  package.loaded["jobs.lib.store"] = nil
  package.loaded["jobs.lib.plan"] = nil
  return require("jobs.lib.store"), pauses
end

local function total(t) local s = 0 for _, v in ipairs(t) do s = s + v end return s end

describe("store.settle", function()
  it("on a cluster, reads what differs again until it agrees", function()
    local store, pauses = load("c")
    local reads = 0
    local left = store.settle({"a", "b"}, function(list)
      reads = reads + 1
      assert.same(reads == 1 and {"a", "b"} or {"b"}, list)
      return reads == 1 and {"b"} or {}
    end)
    assert.same({}, left)
    assert.equal(2, reads)
    assert.same({100, 200}, pauses)
  end)

  it("on a cluster, gives up after about 3 s with what still differs", function()
    local store, pauses = load("c")
    local left = store.settle({"a"}, function(list) return list end)
    assert.same({"a"}, left)
    assert.equal(3000, total(pauses))
  end)

  it("on a cluster, costs nothing when nothing differs", function()
    local store, pauses = load("c")
    assert.same({}, store.settle({}, function() error("not called") end))
    assert.same({}, pauses)
  end)

  it("on one server, takes the first answer", function()
    local store, pauses = load(nil)
    assert.same({"a"}, store.settle({"a"}, function() error("not called") end))
    assert.same({}, pauses)
  end)
end)
