-- ttl_spec.lua - the shipped lua/ttl.lua over a fake gw.config.
package.path = "tests/lua/?.lua;" .. package.path
local H = require("helper")

local P1 = "01934b7e-1234-7000-8000-000000000001"
local P2 = "01934b7e-1234-7000-8000-000000000002"

local function ttl(cfg) return H.load("ttl", H.fake_gw(cfg)) end

describe("ttl.lua", function()
  it("keeps spans forever by default", function()
    local M = ttl({ retention_days = 0, retention_by_project = {} })
    assert.is_nil(M.retention_days(P1, {}))
  end)

  it("uses retention_days for every project", function()
    local M = ttl({ retention_days = 30 })
    assert.are.equal(30, M.retention_days(P1, {}))
  end)

  it("lets retention_by_project override, 0 meaning forever", function()
    local M = ttl({ retention_days = 30, retention_by_project = { [P1] = 7, [P2] = 0 } })
    assert.are.equal(7, M.retention_days(P1, {}))
    assert.is_nil(M.retention_days(P2, {}))
    assert.are.equal(30, M.retention_days("01934b7e-1234-7000-8000-000000000003", {}))
  end)

  it("matches project ids in any case", function()
    local M = ttl({ retention_by_project = { [P1:upper()] = 14 } })
    assert.are.equal(14, M.retention_days(P1, {}))
  end)

  it("ignores values that are not positive numbers", function()
    local M = ttl({ retention_days = "x", retention_by_project = { [P1] = -3 } })
    assert.is_nil(M.retention_days(P1, {}))
    assert.is_nil(M.retention_days(P2, {}))
  end)
end)
