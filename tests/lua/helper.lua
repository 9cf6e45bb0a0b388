-- helper.lua - a fake `gw` for the policy scripts' specs, and a loader that
-- gives each test a fresh copy of a script. Plain tables stand in for spans
-- and attributes: the shipped scripts need no C.
local H = {}

H.null = setmetatable({}, { __tostring = function() return "gw.null" end })

function H.fake_gw(config)
  local gw = {
    null = H.null,
    config = config or {},
    object = function(t) return t or {} end,
    array = function(t) return t or {} end,
    log = { debug = print, info = print, warn = print, error = print },
    metrics = { incr = function() end, gauge = function() end },
    attributes = {},
    span = { copy = function(s) local c = {} for k, v in pairs(s) do c[k] = v end return c end },
  }
  function gw.attributes.get_many(a, ...)
    local n, r = select("#", ...), {}
    for i = 1, n do r[i] = a and a[(select(i, ...))] end
    return unpack(r, 1, n)
  end
  function gw.attributes.nest(span, with_resource, on)
    span._nest = (on == nil) or on
    span._with_resource = with_resource and true or false
  end
  return gw
end

-- Load lua/<name>.lua with gw = fake (a fresh module each time).
function H.load(name, gw)
  package.loaded.gw = gw
  local chunk = assert(loadfile("lua/" .. name .. ".lua"))
  return chunk()
end

return H
