-- jobs/lib/batcher.lua - keyset pages of many ranges into few, large
-- ClickHouse inserts, and the checkpoints that may be saved once an insert
-- is in.
--
-- Each page is encoded into the filling batch at once (the PostgreSQL
-- result can be freed right after); when the batch reaches `limit` bytes it
-- is sent while the tasks go on filling a second one. One insert is in
-- flight at a time, so inserts commit in the order their rows were read and
-- a range's checkpoint never gets ahead of its rows in ClickHouse. Larger
-- inserts make fewer parts: ClickHouse merges far less (a 5,000-row insert
-- per page made ~200 parts per million spans, and merging them took a
-- quarter of the machine).
--
--   local b = batcher.new{new_batch = gw.ch.span_batch, limit = bytes,
--                         on_commit = function(marks) ... end,
--                         idle = function() gw.sleep(2) end}
--   b:add(project, rows, key, mark)  -- rows encoded; mark saved with key once they are in
--   b:drain()                        -- everything added is in ClickHouse, marks committed
local M = {}
M.__index = M

function M.new(o)
  assert(o.new_batch and o.limit and o.on_commit and o.idle, "batcher.new: new_batch, limit, on_commit, idle")
  return setmetatable({
    new_batch = o.new_batch, limit = o.limit, on_commit = o.on_commit, idle = o.idle,
    filling = o.new_batch(), spare = o.new_batch(), marks = {},
    busy = false, err = nil, inserts = 0, rows = 0,
  }, M)
end

local function wait_idle(self)
  while self.busy do
    self.idle()
  end
  if self.err then error(self.err, 0) end
end

-- Sends the filling batch. Returns once it is in ClickHouse and its marks
-- are committed, or at once when another task took it meanwhile (its
-- rows are then on their way; drain() waits for them).
function M:flush()
  if self.err then error(self.err, 0) end
  local b = self.filling
  wait_idle(self)
  if self.filling ~= b then return end
  local marks = self.marks
  if b:rows() == 0 and next(marks) == nil then return end
  self.busy = true
  self.filling, self.spare, self.marks = self.spare, b, {}
  local ok, err = pcall(function()
    local n = b:send()
    self.inserts, self.rows = self.inserts + 1, self.rows + n
    self.on_commit(marks)
  end)
  self.busy = false
  if not ok then
    self.err = err
    error(err, 0)
  end
end

-- rows (a gw.pg.query_raw result or a list of rows) of project into the
-- batch; mark replaces key's earlier mark and is handed to on_commit with
-- the insert that carries these rows. Returns batch:add's (added,
-- rejected, first reason).
function M:add(project, rows, key, mark)
  if self.err then error(self.err, 0) end
  local n, rejected, why = self.filling:add(project, rows)
  if key ~= nil then self.marks[key] = mark end
  if self.filling:bytes() >= self.limit then self:flush() end
  return n, rejected, why
end

-- Everything added so far is in ClickHouse and its marks are committed.
function M:drain()
  self:flush()
  wait_idle(self)
end

return M
