-- jobs/lib/pool.lua - a fixed number of job tasks working through a list:
-- the jobs' one way to run per-project or per-range work in parallel.
local M = {}

-- Starts min(n, #items) tasks (gw.spawn); each takes the next item in
-- order and calls fn(item, i) until none is left, so at most n items are
-- in progress and each is done once. Returns a function that waits for
-- all of them (gw.wait: a task's error is raised there). The caller can
-- do other I/O before it waits.
function M.start(n, items, fn)
  local gw = require("gw") -- looked up per call: specs swap the module
  local tasks, next_i = {}, 1
  for w = 1, math.min(math.floor(n), #items) do
    tasks[w] = gw.spawn(function()
      while next_i <= #items do
        local i = next_i
        next_i = i + 1
        fn(items[i], i)
      end
    end)
  end
  return function()
    if #tasks > 0 then gw.wait(unpack(tasks)) end
  end
end

-- start(n, items, fn), then wait.
function M.run(n, items, fn)
  M.start(n, items, fn)()
end

return M
