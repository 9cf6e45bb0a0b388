/* config.h - every configuration key, declared once.
 *
 * SG_CONFIG_MAP is the single table of keys: type, name, default, the
 * environment variable that overrides it, and a one-line description. The
 * struct below, the gateway.conf parser, the environment overrides, `--help`
 * and docs/configuration.md's table are all generated from it.
 *
 * gateway.conf is a sandboxed Lua chunk of assignments (`listen =
 * "0.0.0.0:4318"`); it has no os, io or require, and an unknown key is an
 * error naming the nearest known key. Environment variables win over the file.
 */
#ifndef SG_CONFIG_H
#define SG_CONFIG_H

#include <stddef.h>

#include "buf.h"

typedef struct {
  char **v;
  size_t n;
} sg_strlist_t;

/* XX(type, name, default, env, description); env NULL means SPANGATE_<NAME>. */
#define SG_CONFIG_MAP(XX)                                                                      \
  XX(STR, listen, "127.0.0.1:4318", NULL, "address the HTTP server listens on (host:port)")   \
  XX(STR, grpc_listen, "127.0.0.1:4317", NULL,                                                \
     "address of the OTLP/gRPC listener (HTTP/2 cleartext, host:port); empty = no gRPC")       \
  XX(INT, grpc_max_streams, "100", NULL,                                                       \
     "concurrent calls on one gRPC connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS)")       \
  XX(INT, workers, "0", NULL, "worker threads, each with its own loop; 0 = one per core")      \
  XX(STR, log_level, "info", NULL, "debug, info, warn or error")                              \
  XX(STR, log_format, "text", NULL, "text or json (one JSON object per line)")                \
  XX(STR, postgres_uri, "postgresql://postgres@127.0.0.1:5432/agenta_oss_tracing",             \
     "POSTGRES_URI", "libpq connection URI of the primary store (Agenta's tracing database)")  \
  XX(INT, pg_pool_size, "1", NULL,                                                             \
     "PostgreSQL connections per worker for ingest (concurrent writers make the GIN indexes "   \
     "grow: keep workers x pg_pool_size low)")                                                  \
  XX(INT, pg_spare_connections, "1", NULL,                                                     \
     "further ingest connections per worker, each taking a statement only once it has waited "  \
     "for the others pg_spare_after_ms and twice their recent statement time, and never while " \
     "they have been busy without a break for 2 s: one slow statement then holds up no one")   \
  XX(INT, pg_spare_after_ms, "50", NULL,                                                       \
     "the least a statement waits for a busy ingest connection before a spare runs it")        \
  XX(INT, read_pool_size, "2", NULL,                                                           \
     "PostgreSQL connections per worker for the read API, apart from ingest's")                \
  XX(INT, query_timeout_ms, "30000", NULL,                                                     \
     "a read-API query running longer is canceled and answered 504; 0 = no limit")             \
  XX(INT, commit_window_ms, "2", NULL,                                                          \
     "requests arriving within this window share one PostgreSQL transaction (longer while the worker's connections are all busy)") \
  XX(INT, commit_max_spans, "5000", NULL,                                                      \
     "most spans in one group commit; a larger request is written in several statements")      \
  XX(STR, auth, "keys", NULL, "authentication mode: keys, agenta or none")                    \
  XX(STR, keys_file, "/etc/spangate/keys", NULL,                                               \
     "keys file for auth=keys: '<project-uuid> sha256:<hex>' or '<project-uuid> plain:<key>' " \
     "per line")                                                                               \
  XX(STR, agenta_postgres_uri, "", NULL,                                                       \
     "database holding Agenta's api_keys table for auth=agenta (empty: postgres_uri)")         \
  XX(INT, auth_cache_ttl_s, "60", NULL, "seconds an auth=agenta key look-up is cached")        \
  XX(INT, auth_negative_ttl_s, "5", NULL,                                                      \
     "seconds an auth=agenta answer 'unknown or expired key' is cached")                       \
  XX(INT, auth_lookup_rate, "50", NULL,                                                        \
     "auth=agenta look-ups per second per worker of keys not known to be good (503 beyond); "  \
     "0 = unlimited")                                                                          \
  XX(STR, project_id, "", NULL, "the one project of auth=none (development only)")           \
  XX(SIZE, max_body_bytes, "10MiB", NULL,                                                      \
     "largest request body, or gRPC request message, as sent (413 / RESOURCE_EXHAUSTED beyond)") \
  XX(SIZE, max_decompressed_bytes, "64MiB", NULL,                                              \
     "largest request body after gzip/deflate decompression (413 beyond)")                     \
  XX(SIZE, max_header_bytes, "16KiB", NULL,                                                    \
     "largest request head, or gRPC call metadata (431 / RESOURCE_EXHAUSTED beyond)")           \
  XX(SIZE, max_inflight_bytes, "256MiB", NULL,                                                 \
     "request bodies held in flight and their decompressed copies, all workers and listeners " \
     "together (429 / UNAVAILABLE beyond); their decoded spans come on top (see ingest.md)")   \
  XX(INT, max_connections, "10000", NULL,                                                      \
     "open client connections per worker, on each listener (HTTP, gRPC)")                       \
  XX(INT, read_timeout_ms, "10000", NULL,                                                      \
     "a request (gRPC: a call's request) must arrive whole within this time of its first byte " \
     "(408 / DEADLINE_EXCEEDED)")                                                               \
  XX(INT, idle_timeout_ms, "60000", NULL,                                                      \
     "idle keep-alive connections (gRPC: without a call) are closed after this")                \
  XX(INT, shutdown_timeout_ms, "10000", NULL,                                                  \
     "on SIGTERM, how long in-flight requests may take before the gateway exits")              \
  XX(BOOL, use_clickhouse, "false", "USE_CLICKHOUSE", "dual-write spans to ClickHouse")       \
  XX(STR, clickhouse_host, "localhost", "CLICKHOUSE_HOST", "ClickHouse host")                 \
  XX(INT, clickhouse_port, "8123", "CLICKHOUSE_PORT",                                          \
     "ClickHouse HTTP interface port (not the native port 9000)")                              \
  XX(LIST, clickhouse_hosts, "", NULL,                                                         \
     "several ClickHouse endpoints \"host:port\" (replicas of one cluster), used instead of "    \
     "clickhouse_host and clickhouse_port; \"https://host:port\" for TLS on one of them")        \
  XX(BOOL, clickhouse_secure, "false", NULL,                                                   \
     "https to ClickHouse (clickhouse_port is then its https port, usually 8443)")             \
  XX(BOOL, clickhouse_verify, "true", NULL,                                                    \
     "https: verify ClickHouse's certificate and host name (false: self-signed test servers)") \
  XX(STR, clickhouse_ca_file, "", NULL,                                                        \
     "https: PEM file of the CA certificates ClickHouse's is checked against (empty: the system's)") \
  XX(STR, clickhouse_cert_file, "", NULL, "https: PEM client certificate (optional)")          \
  XX(STR, clickhouse_key_file, "", NULL,                                                       \
     "https: PEM private key of clickhouse_cert_file (empty: in that file)")                   \
  XX(STR, clickhouse_user, "default", "CLICKHOUSE_USER", "ClickHouse user")                   \
  XX(STR, clickhouse_gzip, "auto", NULL,                                                       \
     "gzip the bodies sent to ClickHouse: auto (unless the host is loopback), always or never")  \
  XX(STR, clickhouse_password, "", "CLICKHOUSE_PASSWORD", "ClickHouse password")              \
  XX(STR, clickhouse_database, "agenta_oss_tracing", "CLICKHOUSE_DATABASE",                    \
     "ClickHouse database holding the spans and nodes tables")                                 \
  XX(INT, clickhouse_timeout_ms, "30000", NULL, "one ClickHouse request, connect included")   \
  XX(BOOL, clickhouse_create_schema, "true", NULL,                                             \
     "serve creates the ClickHouse database and tables at start when they are missing, and adds " \
     "missing columns, index, TTL and view (as `schema --apply`)")                               \
  XX(STR, clickhouse_version, "", NULL,                                                        \
     "render DDL and SQL for this ClickHouse version (X.Y) instead of asking SELECT version(); " \
     "rows always follow the tables that exist")                                               \
  XX(STR, clickhouse_cluster, "", NULL,                                                        \
     "cluster name from the servers' remote_servers: tables are created ON CLUSTER, replicated " \
     "spans_local/nodes_local with Distributed spans/nodes in front")                          \
  XX(STR, clickhouse_zk_path, "/clickhouse/tables/{shard}/{database}/{table}", NULL,           \
     "ZooKeeper path of the replicated tables; spangate fills in {database} and {table}, "     \
     "the servers' macros the rest")                                                            \
  XX(STR, clickhouse_replica, "{replica}", NULL,                                                \
     "replica name of the replicated tables (usually the servers' {replica} macro)")           \
  XX(STR, spool_dir, "var/spool", NULL, "directory of the durable ClickHouse spool")          \
  XX(SIZE, spool_max_bytes, "1GiB", NULL,                                                      \
     "spool size bound per worker; beyond it spans are recorded as gaps for `spangate migrate`") \
  XX(SIZE, spool_segment_bytes, "32MiB", NULL,                                                 \
     "spool segment size: the most rows sent to ClickHouse in one insert (read from its file " \
     "as it is sent, so it costs disk, not memory)")                                           \
  XX(STR, spool_fsync, "batch", NULL,                                                          \
     "always (each request), batch (once per group commit) or never (leave it to the kernel)") \
  XX(INT, flush_interval_ms, "6000", NULL,                                                     \
     "spooled rows are sent to ClickHouse at least this often (sooner when ingest stops or a " \
     "read from ClickHouse waits for them)")                                                   \
  XX(STR, clickhouse_writes, "spool", NULL,                                                    \
     "how rows reach ClickHouse: spool (what the gateway ingests) or capture (PostgreSQL's "   \
     "logical replication: every writer's inserts, updates and deletes)")                      \
  XX(STR, capture_slot, "spangate", NULL,                                                      \
     "clickhouse_writes = capture: the logical replication slot spangate creates and follows") \
  XX(STR, capture_publication, "spangate", NULL,                                               \
     "clickhouse_writes = capture: the publication (spans, and nodes when it exists)")        \
  XX(SIZE, capture_max_retained_wal, "1GiB", NULL,                                             \
     "clickhouse_writes = capture: warn when the slot holds back more WAL than this")          \
  XX(INT, capture_flush_interval_ms, "1000", NULL,                                             \
     "clickhouse_writes = capture: captured rows are sent to ClickHouse at least this often "  \
     "(their WAL is held until then; nothing asks for them sooner)")                          \
  XX(STR, scripts, "lua", NULL, "directory of the Lua scripts (transform, routing, ttl, jobs)") \
  XX(STR, on_script_error, "pass", NULL,                                                       \
     "a span whose transform fails: pass (stored untransformed) or reject")                    \
  XX(INT, script_budget, "1000000", NULL,                                                      \
     "Lua instructions one hook call may run before it is stopped as a runaway")               \
  XX(LIST, clickhouse_projects, "", NULL,                                                      \
     "routing.lua: projects written to ClickHouse (empty: every project)")                     \
  XX(LIST, clickhouse_projects_deny, "", NULL,                                                 \
     "routing.lua: projects never written to ClickHouse")                                      \
  XX(INT, clickhouse_rollout_percent, "100", NULL,                                             \
     "routing.lua: share of projects (stable hash of the id) written to ClickHouse")           \
  XX(STR, read_backend, "postgres", NULL, "routing.lua: store that serves reads (clickhouse: when it has every span)") \
  XX(LIST, clickhouse_only_projects, "", NULL,                                                 \
     "routing.lua: projects cut over to ClickHouse only: their spans skip PostgreSQL "         \
     "(docs/cutover.md)")                                                                      \
  XX(INT, clickhouse_only_read_wait_ms, "3000", NULL,                                          \
     "a read, edit or delete of a ClickHouse-only project waits at most this long for spans "  \
     "acknowledged before it to reach ClickHouse, then answers 503")                           \
  XX(INT, retention_days, "0", NULL, "ttl.lua: days spans are kept; 0 keeps them forever")     \
  XX(BOOL, pg_retention, "false", NULL,                                                        \
     "opt-in: `spangate ttl purge-postgres` deletes expired traces from PostgreSQL")           \
  XX(INT, ttl_sweep_interval_s, "3600", NULL,                                                  \
     "ClickHouse without native TTL (before 19.6): seconds between sweeps of expired rows")    \
  XX(TABLE, retention_by_project, "{}", NULL,                                                  \
     "ttl.lua: per-project retention days, e.g. { [\"<uuid>\"] = 31 }")

typedef enum { SG_CFG_STR, SG_CFG_INT, SG_CFG_BOOL, SG_CFG_SIZE, SG_CFG_LIST, SG_CFG_TABLE } sg_cfg_type_t;

#define SG__CFG_CTYPE_STR char *
#define SG__CFG_CTYPE_INT long long
#define SG__CFG_CTYPE_BOOL int
#define SG__CFG_CTYPE_SIZE size_t
#define SG__CFG_CTYPE_LIST sg_strlist_t
#define SG__CFG_CTYPE_TABLE char * /* the Lua table as JSON text */

typedef struct {
#define XX(type, name, def, env, desc) SG__CFG_CTYPE_##type name;
  SG_CONFIG_MAP(XX)
#undef XX
} sg_config_t;

typedef struct {
  sg_cfg_type_t type;
  const char *name;
  const char *def;
  const char *env; /* resolved: never NULL */
  const char *desc;
  size_t offset;
} sg_config_key_t;

/* The declared keys, in table order; *n receives the count. */
const sg_config_key_t *sg_config_keys(size_t *n);

/* Defaults only. 0 or SG_ENOMEM. */
int sg_config_defaults(sg_config_t *cfg);
/* Defaults, then the file (NULL: none), then the environment, then checks.
 * On error returns SG_ECONFIG with a one-line reason in err, e.g.
 * "gateway.conf:7: unknown key 'listn' (did you mean 'listen'?)". */
int sg_config_load(sg_config_t *cfg, const char *path, sg_buf_t *err);
void sg_config_free(sg_config_t *cfg);

/* 1 when bodies sent to ClickHouse are gzipped (clickhouse_gzip). */
int sg_config_clickhouse_gzip(const sg_config_t *cfg);

/* The ClickHouse client options of cfg (endpoints, credentials, TLS) into o,
 * with database (NULL: the server's default), the per-request timeout and
 * the connections kept per endpoint. o's strings point into cfg. */
struct sg_ch_opts_s;
void sg_config_clickhouse_opts(const sg_config_t *cfg, const char *database, long timeout_ms,
                               long max_connections, struct sg_ch_opts_s *o);
/* Where ClickHouse is, for log lines: "localhost:8123", or the endpoints
 * joined by ", " ("https://" marks TLS). Never credentials. */
const char *sg_config_clickhouse_where(const sg_config_t *cfg, char *buf, size_t cap);

/* The key nearest to name by edit distance, or NULL when nothing is close. */
const char *sg_config_nearest(const char *name);

/* Help text (for --help) and docs/configuration.md's Markdown table. */
int sg_config_help(sg_buf_t *out);
int sg_config_markdown(sg_buf_t *out);

/* Parse "10MiB", "512k", "1048576" into bytes. 0 or SG_EINVAL. */
int sg_parse_size(const char *s, size_t *out);

#endif
