/* pg_schema.h - Agenta's tracing `spans` table, as idempotent DDL.
 *
 * The DDL reproduces the table Agenta's alembic chain builds
 * (api/oss/databases/postgres/migrations/tracing: 58b1b61e5d6c_add_spans,
 * fd77265d65dc_fix_spans) plus the EE chain's root-span indexes
 * (ux_spans_root_per_trace, ix_spans_root_project_created_trace), so spangate
 * can be pointed at an existing Agenta tracing database or create a fresh one.
 *
 * It only ever adds what is missing: enum types, enum labels, the table,
 * columns later migrations added, indexes. It never drops or rewrites
 * anything. Types keep Agenta's names (otelspankind, otelstatuscode,
 * tracetype, spantype); their labels are rendered from span.h's X-macros.
 */
#ifndef SG_PG_SCHEMA_H
#define SG_PG_SCHEMA_H

#include "buf.h"

/* The whole script: one transaction (BEGIN ... COMMIT) serialised against
 * other appliers by a transaction-scoped advisory lock. Static storage;
 * suitable for `psql -f` as printed by `spangate schema --print`. */
const char *sg_pg_schema_sql(void);

/* The advisory lock key the script takes (pg_advisory_xact_lock). */
#define SG_PG_SCHEMA_LOCK_KEY 7306086618577856113 /* arbitrary; no suffix: it is pasted into SQL */

/* Connects (blocking), runs sg_pg_schema_sql(), disconnects. 0 on success;
 * SG_EUNAVAIL when the server cannot be reached, SG_EIO when a statement
 * fails; err then holds the server's message (with SQLSTATE). For the CLI,
 * never call it on a worker loop. */
int sg_pg_schema_apply(const char *conninfo, sg_buf_t *err);

#endif
