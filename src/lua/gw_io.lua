-- gw_io.lua - the Lua face of a job's I/O: gw.pg, gw.ch, gw.sleep, the
-- tasks (gw.spawn / gw.wait / gw.exit) and gw.hooks, over the raw C
-- functions of lua_pg.c, lua_ch.c and lua_sched.c.
--
-- Built into the binary (the Makefile turns this file into a C array;
-- lua_io.c runs it once per job state): it is not read from the scripts
-- directory and editing an installed copy changes nothing.
--
-- Why a Lua layer at all: an I/O function yields its task, and the loop
-- resumes it with the result; a C function cannot raise an error "later",
-- so the raw functions answer (false, message) and these wrappers raise
-- error(message, 2), pointing at the script's line.
--
-- Called as chunk(gw, raw): gw is the module table to fill; raw holds
--   pg_query(raw_rows, sql, ...)         -> ok, rows | message, affected
--   ch_query(sql [, "TSV"])              -> ok, text | rows | message
--   ch_insert(target, body | rows)       -> ok, rows | message
--   ch_insert_spans(project_id, rows)    -> ok, inserted | message, rejected, why
--   ch_span_batch()                      -> batch (methods: batch_mt.__index)
--   batch_add, batch_rows, batch_bytes   (raise on bad arguments)
--   batch_send(b)                        -> ok, rows | message
--   sleep(ms)                            -> ok | message
--   spawn(fn, ...), exit(n)              (as gw.spawn / gw.exit)
--   wait(task)                           -> ok, result ({n = k, ...} or error text)
--   hook_clickhouse(project_id)          -> routing.lua's answer
--   isatty, server, server_error, batch_mt
local gw, raw = ...
local error, select, unpack = error, select, unpack

gw.pg = {
  query = function(sql, ...)
    local ok, rows, n = raw.pg_query(false, sql, ...)
    if not ok then error(rows, 2) end
    return rows, n
  end,
  query_raw = function(sql, ...)
    local ok, rows, n = raw.pg_query(true, sql, ...)
    if not ok then error(rows, 2) end
    return rows, n
  end,
}

gw.ch = {
  server = raw.server,
  server_error = raw.server_error,
  query = function(sql, format)
    local ok, r = raw.ch_query(sql, format)
    if not ok then error(r, 2) end
    return r
  end,
  insert = function(target, rows)
    local ok, r = raw.ch_insert(target, rows)
    if not ok then error(r, 2) end
    return r
  end,
  insert_spans = function(project_id, rows)
    local ok, n, rejected, why = raw.ch_insert_spans(project_id, rows)
    if not ok then error(n, 2) end
    return n, rejected, why
  end,
  span_batch = raw.ch_span_batch,
}

raw.batch_mt.__index = {
  add = raw.batch_add,
  rows = raw.batch_rows,
  bytes = raw.batch_bytes,
  send = function(b)
    local ok, n = raw.batch_send(b)
    if not ok then error(n, 2) end
    return n
  end,
}

gw.sleep = function(ms)
  local ok, e = raw.sleep(ms)
  if not ok then error(e, 2) end
end

gw.spawn = raw.spawn
gw.exit = raw.exit

-- gw.wait(t) -> t's results; gw.wait(t1, t2, ...) -> true once all ended.
-- A failed task's error already carries its traceback: re-raised as it is
-- (level 0), at the first failed task in argument order.
gw.wait = function(...)
  local n = select("#", ...)
  if n == 0 then error("gw.wait: bad argument #1 (task expected)", 2) end
  local first
  for i = 1, n do
    local ok, res = raw.wait((select(i, ...)))
    if not ok then error(res, 0) end
    if i == 1 then first = res end
  end
  if n == 1 then return unpack(first, 1, first.n) end
  return true
end

gw.hooks = { clickhouse = raw.hook_clickhouse, postgres = raw.hook_postgres }
gw.stdout_isatty = raw.isatty
