-- validate_spec.lua - the validation's value comparison (plan.compare_rows,
-- plan.json_equal): JSON compared structurally, NULLs, exact text fields.
package.path = "lua/?.lua;tests/lua/?.lua;" .. package.path
local plan = require("jobs.lib.plan")
local H = require("helper")
local null = H.null

-- A tiny JSON decoder for the spec (the job uses gw.json.decode + gw.totable).
local function decode(s)
  local i = 1
  local function ws() i = s:find("[^ \t\n\r]", i) or #s + 1 end
  local value
  local function str()
    local j, out = i + 1, {}
    while true do
      local c = s:sub(j, j)
      if c == "" then error("unterminated JSON string") end
      if c == '"' then i = j + 1; return table.concat(out) end
      if c == "\\" then j = j + 1; c = ({n = "\n", t = "\t"})[s:sub(j, j)] or s:sub(j, j) end
      out[#out + 1] = c
      j = j + 1
    end
  end
  function value()
    ws()
    local c = s:sub(i, i)
    if c == "{" then
      local t = {}; i = i + 1; ws()
      if s:sub(i, i) == "}" then i = i + 1; return t end
      while true do
        ws()
        if s:sub(i, i) ~= '"' then error("bad JSON object key at " .. i) end
        local k = str(); ws(); i = i + 1
        t[k] = value(); ws()
        local d = s:sub(i, i); i = i + 1
        if d == "}" then return t end
      end
    elseif c == "[" then
      local t = {}; i = i + 1; ws()
      if s:sub(i, i) == "]" then i = i + 1; return t end
      while true do
        t[#t + 1] = value(); ws()
        local d = s:sub(i, i); i = i + 1
        if d == "]" then return t end
      end
    elseif c == '"' then return str()
    elseif s:sub(i, i + 3) == "null" then i = i + 4; return null
    elseif s:sub(i, i + 3) == "true" then i = i + 4; return true
    elseif s:sub(i, i + 4) == "false" then i = i + 5; return false
    else
      local num = s:match("^-?[%d%.eE+-]+", i)
      if not num then error("bad JSON at " .. i) end
      i = i + #num
      return tonumber(num)
    end
  end
  return value()
end

local function row(over)
  local r = {trace_id = "t", span_id = "s", parent_id = null, span_kind = "SPAN_KIND_SERVER",
    span_name = "n\tx", start_us = "1714521600000001", end_us = "1714521600000002",
    status_code = "STATUS_CODE_OK", attributes = '{"a": 1, "b": [1, 2.5, null, {"z": 1, "y": "é"}]}',
    events = null, created_us = "1714521600000003", updated_us = null, deleted_us = null, version = "1714521600000003"}
  for k, v in pairs(over or {}) do r[k] = v end
  return r
end

describe("plan.json_equal", function()
  it("ignores key order and spacing, not values", function()
    assert.is_true(plan.json_equal(decode('{"a":1,"b":{"c":[1,2]}}'), decode('{"b": {"c": [1, 2]}, "a": 1}'), null))
    assert.is_false(plan.json_equal(decode('{"a":1}'), decode('{"a":1,"b":2}'), null))
    assert.is_false(plan.json_equal(decode('[1,2]'), decode('[2,1]'), null))
    assert.is_false(plan.json_equal(decode('{"a":null}'), decode('{}'), null))
    assert.is_false(plan.json_equal(decode('"1"'), decode('1'), null))
  end)
  it("compares numbers by value (jsonb 0.1 vs jansson's 0.10000000000000001)", function()
    assert.is_true(plan.json_equal(decode('{"x":0.1}'), decode('{"x":0.10000000000000001}'), null))
    assert.is_true(plan.json_equal(decode('[1.0]'), decode('[1]'), null))
  end)
end)

describe("plan.compare_rows", function()
  it("finds nothing when the rows are the same value", function()
    local ch = row({attributes = '{"b":[1,2.5,null,{"y":"é","z":1}],"a":1}'})
    assert.same({}, plan.compare_rows(row(), ch, null, decode))
  end)
  it("names every differing field", function()
    local ch = row({span_name = "n x", start_us = "1714521600000000", attributes = '{"a":2}', version = "9"})
    assert.same({"span_name", "start_us", "attributes", "version"}, plan.compare_rows(row(), ch, null, decode))
  end)
  it("tells NULL from empty and from a value", function()
    assert.same({"parent_id"}, plan.compare_rows(row(), row({parent_id = ""}), null, decode))
    assert.same({"events"}, plan.compare_rows(row({events = "[]"}), row(), null, decode))
    assert.same({"deleted_us"}, plan.compare_rows(row({deleted_us = "5"}), row(), null, decode))
  end)
  it("reports unparsable JSON as a difference", function()
    assert.same({"attributes"}, plan.compare_rows(row(), row({attributes = "{oops"}), null, decode))
  end)
end)
