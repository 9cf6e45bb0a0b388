/* pg_schema.c - Agenta's tracing schema as one idempotent script.
 *
 * Layout (column order, types, nullability, defaults, index names and
 * operator classes) follows Agenta's migrations, not its ORM, where the two
 * differ: ix_links_gin and ix_references_gin are plain jsonb_ops GIN indexes
 * in the migrations (dbes.py declares jsonb_path_ops), and an existing index
 * of that name is left as it is either way.
 *
 * Why each step is guarded instead of relying on "IF NOT EXISTS" alone:
 * ALTER TABLE ... ADD COLUMN IF NOT EXISTS and CREATE INDEX IF NOT EXISTS
 * both lock `spans` before they notice there is nothing to do, which would
 * stall a live Agenta database's writers; looking in the catalogs first
 * keeps a second apply lock-free on the table.
 *
 * Enum types are created empty and filled with ADD VALUE IF NOT EXISTS, one
 * statement per label rendered from span.h's X-macros: the same statements
 * create a fresh type and complete an old one (Agenta's fd77265d65dc builds
 * tracetype/spantype from whatever the Python enums held at the time, so an
 * older database may lack later labels). Labels added to an existing type
 * go at its end; enum order only matters to ORDER BY on the enum column.
 * ALTER TYPE ... ADD VALUE runs inside a transaction since PostgreSQL 12.
 */
#include "pg_schema.h"

#include "err.h"
#include "pg.h"
#include "span.h"

#define STR_(x) #x
#define STR(x) STR_(x)

/* CREATE TYPE <name> AS ENUM () when the current schema has no such type. */
#define ENUM_TYPE(name)                                                        \
  "DO $$ BEGIN\n"                                                              \
  "  IF NOT EXISTS (SELECT 1 FROM pg_type t\n"                                 \
  "                 JOIN pg_namespace n ON n.oid = t.typnamespace\n"           \
  "                 WHERE t.typname = '" name "' AND n.nspname = current_schema()) THEN\n" \
  "    CREATE TYPE " name " AS ENUM ();\n"                                     \
  "  END IF;\n"                                                                \
  "END $$;\n"

#define ADD_SPANKIND(l) "ALTER TYPE otelspankind ADD VALUE IF NOT EXISTS '" #l "';\n"
#define ADD_STATUSCODE(l) "ALTER TYPE otelstatuscode ADD VALUE IF NOT EXISTS '" #l "';\n"
#define ADD_TRACETYPE(l) "ALTER TYPE tracetype ADD VALUE IF NOT EXISTS '" #l "';\n"
#define ADD_SPANTYPE(l) "ALTER TYPE spantype ADD VALUE IF NOT EXISTS '" #l "';\n"

static const char schema_sql[] =
    "-- spangate: Agenta's tracing schema (idempotent; creates what is missing, drops nothing)\n"
    "BEGIN;\n"
    "SET LOCAL client_min_messages = warning;\n"
    "SELECT pg_advisory_xact_lock(" STR(SG_PG_SCHEMA_LOCK_KEY) ");\n"
    "\n"
    ENUM_TYPE("otelspankind")
    SG_SPAN_KIND_MAP(ADD_SPANKIND)
    ENUM_TYPE("otelstatuscode")
    SG_STATUS_CODE_MAP(ADD_STATUSCODE)
    ENUM_TYPE("tracetype")
    SG_TRACE_TYPE_MAP(ADD_TRACETYPE)
    ENUM_TYPE("spantype")
    SG_SPAN_TYPE_MAP(ADD_SPANTYPE)
    "\n"
    "CREATE TABLE IF NOT EXISTS spans (\n"
    "  project_id uuid NOT NULL,\n"
    "  created_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,\n"
    "  updated_at timestamptz,\n"
    "  deleted_at timestamptz,\n"
    "  created_by_id uuid NOT NULL,\n"
    "  updated_by_id uuid,\n"
    "  deleted_by_id uuid,\n"
    "  trace_id uuid NOT NULL,\n"
    "  span_id uuid NOT NULL,\n"
    "  parent_id uuid,\n"
    "  span_kind otelspankind NOT NULL,\n"
    "  span_name varchar NOT NULL,\n"
    "  start_time timestamptz NOT NULL,\n"
    "  end_time timestamptz NOT NULL,\n"
    "  status_code otelstatuscode NOT NULL,\n"
    "  status_message varchar,\n"
    "  attributes jsonb,\n"
    "  events jsonb,\n"
    "  links jsonb,\n"
    "  \"references\" jsonb,\n"
    "  trace_type tracetype,\n"
    "  span_type spantype,\n"
    "  hashes jsonb,\n"
    "  exception jsonb,\n"
    "  session_id varchar,\n"
    "  user_id varchar,\n"
    "  agent_id varchar,\n"
    "  PRIMARY KEY (project_id, trace_id, span_id)\n"
    ");\n"
    "\n"
    "-- Columns Agenta's fd77265d65dc added to a table 58b1b61e5d6c created, and\n"
    "-- spangate's session_id / user_id / agent_id (nullable; Agenta keeps the same\n"
    "-- values in attributes.ag.*, which the default transform leaves in place).\n"
    "DO $$ DECLARE c record; BEGIN\n"
    "  FOR c IN SELECT * FROM (VALUES ('trace_type', 'tracetype'), ('span_type', 'spantype'),\n"
    "                                 ('hashes', 'jsonb'), ('exception', 'jsonb'),\n"
    "                                 ('session_id', 'varchar'), ('user_id', 'varchar'),\n"
    "                                 ('agent_id', 'varchar')) AS v(name, typ) LOOP\n"
    "    IF NOT EXISTS (SELECT 1 FROM pg_attribute\n"
    "                   WHERE attrelid = to_regclass(format('%I.spans', current_schema()))\n"
    "                     AND attname = c.name AND NOT attisdropped) THEN\n"
    "      EXECUTE format('ALTER TABLE spans ADD COLUMN %I %s', c.name, c.typ);\n"
    "    END IF;\n"
    "  END LOOP;\n"
    "END $$;\n"
    "\n"
    "-- spangate's own: committed spans the ClickHouse dual-write could not spool\n"
    "-- (spool full, ClickHouse never reached); `spangate migrate` repairs them.\n"
    "CREATE TABLE IF NOT EXISTS spangate_ch_gaps (\n"
    "  id bigserial PRIMARY KEY,\n"
    "  project_id uuid NOT NULL,\n"
    "  first_created_at timestamptz NOT NULL,\n"
    "  last_created_at timestamptz NOT NULL,\n"
    "  spans bigint NOT NULL,\n"
    "  reason text NOT NULL,\n"
    "  recorded_at timestamptz NOT NULL DEFAULT now(),\n"
    "  repaired_at timestamptz\n"
    ");\n"
    "\n"
    "-- spangate's own: projects whose spans went to ClickHouse only (routing.lua\n"
    "-- M.postgres false) since `since`; migrate and validate leave them alone.\n"
    "CREATE TABLE IF NOT EXISTS spangate_ch_only (\n"
    "  project_id uuid PRIMARY KEY,\n"
    "  since timestamptz NOT NULL DEFAULT now()\n"
    ");\n"
    "\n"
    "DO $$ DECLARE i record; BEGIN\n"
    "  FOR i IN SELECT * FROM (VALUES\n"
    "    ('ix_project_id', 'CREATE INDEX ix_project_id ON spans (project_id)'),\n"
    "    ('ix_project_id_trace_id', 'CREATE INDEX ix_project_id_trace_id ON spans (project_id, trace_id)'),\n"
    "    ('ix_project_id_span_id', 'CREATE INDEX ix_project_id_span_id ON spans (project_id, span_id)'),\n"
    "    ('ix_project_id_start_time', 'CREATE INDEX ix_project_id_start_time ON spans (project_id, start_time)'),\n"
    "    ('ix_attributes_gin', 'CREATE INDEX ix_attributes_gin ON spans USING gin (attributes)'),\n"
    "    ('ix_events_gin', 'CREATE INDEX ix_events_gin ON spans USING gin (events jsonb_path_ops)'),\n"
    "    ('ix_links_gin', 'CREATE INDEX ix_links_gin ON spans USING gin (links)'),\n"
    "    ('ix_references_gin', 'CREATE INDEX ix_references_gin ON spans USING gin (\"references\")'),\n"
    "    ('ix_hashes_gin', 'CREATE INDEX ix_hashes_gin ON spans USING gin (hashes jsonb_path_ops)'),\n"
    "    ('ix_spans_project_id_trace_type', 'CREATE INDEX ix_spans_project_id_trace_type ON spans (project_id, trace_type)'),\n"
    "    ('ix_spans_project_id_span_type', 'CREATE INDEX ix_spans_project_id_span_type ON spans (project_id, span_type)'),\n"
    "    ('ix_spans_project_id_trace_id_created_at',\n"
    "     'CREATE INDEX ix_spans_project_id_trace_id_created_at ON spans (project_id, trace_id, created_at DESC)'),\n"
    "    ('ix_spans_project_id_trace_id_start_time',\n"
    "     'CREATE INDEX ix_spans_project_id_trace_id_start_time ON spans (project_id, trace_id, start_time DESC)'),\n"
    "    ('ix_spans_fts_attributes_gin',\n"
    "     'CREATE INDEX ix_spans_fts_attributes_gin ON spans USING gin (to_tsvector(''simple'', attributes))'),\n"
    "    ('ix_spans_fts_events_gin',\n"
    "     'CREATE INDEX ix_spans_fts_events_gin ON spans USING gin (to_tsvector(''simple'', events))'),\n"
    "    ('ix_spans_root_project_created_trace',\n"
    "     'CREATE INDEX ix_spans_root_project_created_trace ON spans (project_id, created_at, trace_id)\n"
    "      WHERE parent_id IS NULL')\n"
    "  ) AS v(name, ddl) LOOP\n"
    "    IF to_regclass(format('%I.%I', current_schema(), i.name)) IS NULL THEN\n"
    "      EXECUTE i.ddl;\n"
    "    END IF;\n"
    "  END LOOP;\n"
    "END $$;\n"
    "\n"
    "-- One root span (parent_id IS NULL) per trace, as Agenta's EE chain has it.\n"
    "-- A database that already holds several roots for a trace keeps working:\n"
    "-- the index is then skipped with a WARNING, and is created by a later apply\n"
    "-- once those traces are fixed.\n"
    "DO $$ BEGIN\n"
    "  IF to_regclass(format('%I.ux_spans_root_per_trace', current_schema())) IS NULL THEN\n"
    "    BEGIN\n"
    "      CREATE UNIQUE INDEX ux_spans_root_per_trace ON spans (project_id, trace_id)\n"
    "        WHERE parent_id IS NULL;\n"
    "    EXCEPTION WHEN unique_violation THEN\n"
    "      RAISE WARNING 'ux_spans_root_per_trace not created: traces with several root spans exist (%)',\n"
    "        SQLERRM;\n"
    "    END;\n"
    "  END IF;\n"
    "END $$;\n"
    "\n"
    "COMMIT;\n";

const char *sg_pg_schema_sql(void) { return schema_sql; }

int sg_pg_schema_apply(const char *conninfo, sg_buf_t *err) {
  return sg_pg_exec_sync(conninfo, schema_sql, err);
}
