-- routing_spec.lua - the shipped lua/routing.lua over a fake gw.config.
package.path = "tests/lua/?.lua;" .. package.path
local H = require("helper")

local P1 = "01934b7e-1234-7000-8000-000000000001"
local P2 = "01934b7e-1234-7000-8000-000000000002"

local function routing(cfg)
  cfg.use_clickhouse = cfg.use_clickhouse ~= false
  return H.load("routing", H.fake_gw(cfg))
end

describe("routing.lua", function()
  it("computes FNV-1a 32 exactly", function()
    local M = routing({})
    assert.are.equal(2166136261, M.fnv1a32(""))
    assert.are.equal(0xe40c292c, M.fnv1a32("a"))
    assert.are.equal(0xbf9cf968, M.fnv1a32("foobar"))
  end)

  it("routes every project with the defaults", function()
    local M = routing({ clickhouse_projects = {}, clickhouse_projects_deny = {},
                        clickhouse_rollout_percent = 100 })
    assert.is_true(M.clickhouse(P1))
    assert.is_true(M.clickhouse(P2))
  end)

  it("lets the deny list win over the allow list", function()
    local M = routing({ clickhouse_projects = { P1, P2 }, clickhouse_projects_deny = { P2 } })
    assert.is_true(M.clickhouse(P1))
    assert.is_false(M.clickhouse(P2))
  end)

  it("routes only the allow list when it is not empty, ignoring the percentage", function()
    local M = routing({ clickhouse_projects = { P1 }, clickhouse_rollout_percent = 0 })
    assert.is_true(M.clickhouse(P1))
    assert.is_false(M.clickhouse(P2))
  end)

  it("matches ids in any case, dashed or not", function()
    local M = routing({ clickhouse_projects_deny = { "01934B7E123470008000000000000001" } })
    assert.is_false(M.clickhouse(P1))
    assert.is_true(M.clickhouse(P2))
  end)

  it("rolls out by a stable hash: hash mod 100 < percent", function()
    local ids = {}
    for i = 1, 400 do ids[i] = string.format("00000000-0000-0000-0000-%012x", i) end
    local prev = {}
    for _, pct in ipairs({ 0, 10, 25, 50, 90, 100 }) do
      local M = routing({ clickhouse_rollout_percent = pct })
      local on = 0
      for _, id in ipairs(ids) do
        local r = M.clickhouse(id)
        assert.are.equal(M.fnv1a32(id) % 100 < pct, r)
        if prev[id] then assert.is_true(r) end -- raising the percentage never turns one off
        prev[id] = r
        if r then on = on + 1 end
      end
      assert.is_true(math.abs(on - 4 * pct) <= 40, ("%d%% gave %d of 400"):format(pct, on))
    end
  end)

  it("reads from ClickHouse only for routed projects when configured", function()
    local M = routing({ read_backend = "clickhouse", clickhouse_projects_deny = { P2 } })
    assert.are.equal("clickhouse", M.read_backend({}, P1))
    assert.are.equal("postgres", M.read_backend({}, P2))
    M = routing({ read_backend = "clickhouse", use_clickhouse = false })
    assert.are.equal("postgres", M.read_backend({}, P1))
    M = routing({ read_backend = "postgres" })
    assert.are.equal("postgres", M.read_backend(nil, P1))
    -- every endpoint, the third argument (and query.endpoint) naming it
    M = routing({ read_backend = "clickhouse" })
    for _, e in ipairs({ "trace", "query", "analytics" }) do
      assert.are.equal("clickhouse", M.read_backend({ endpoint = e }, P1, e))
    end
  end)
  it("keeps every project on PostgreSQL unless clickhouse_only_projects names it", function()
    local M = routing({})
    assert.is_true(M.postgres(P1))
    M = routing({ clickhouse_only_projects = { "01934B7E123470008000000000000001" } })
    assert.is_false(M.postgres(P1))
    assert.is_true(M.postgres(P2))
  end)

  it("reads a ClickHouse-only project from ClickHouse whatever read_backend says", function()
    local M = routing({ read_backend = "postgres", clickhouse_only_projects = { P1 } })
    for _, e in ipairs({ "trace", "query", "analytics" }) do
      assert.are.equal("clickhouse", M.read_backend({ endpoint = e }, P1, e))
      assert.are.equal("postgres", M.read_backend({ endpoint = e }, P2, e))
    end
    -- a project kept out of ClickHouse is not ClickHouse-only (the gateway keeps it on PostgreSQL)
    M = routing({ clickhouse_only_projects = { P1 }, clickhouse_projects_deny = { P1 } })
    assert.are.equal("postgres", M.read_backend({}, P1, "trace"))
  end)
end)
