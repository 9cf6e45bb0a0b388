/* ch_version.h - ClickHouse server versions and their capabilities.
 *
 * spangate renders its DDL and SQL for what the server can do, read from
 * `SELECT version()` (or the clickhouse_version setting). The row layout is
 * not a capability: it comes from the tables that exist (ch_schema.h).
 * Stands alone: no server, no loop, no logging.
 */
#ifndef SG_CH_VERSION_H
#define SG_CH_VERSION_H

/* Capabilities, each from a documented version threshold (ch_version.c). */
#define SG_CH_DATETIME64 (1u << 0)          /* DateTime64(p, tz)                     20.1 */
#define SG_CH_TTL (1u << 1)                 /* table TTL expressions                 19.6 */
#define SG_CH_TTL_DELETE_KW (1u << 2)       /* `TTL expr DELETE` (explicit action)   20.1 */
#define SG_CH_SKIP_INDEX (1u << 3)          /* data skipping indexes, GA             20.1 */
#define SG_CH_BLOOM_UUID (1u << 4)          /* bloom_filter index on UUID columns   20.12 */
#define SG_CH_LOWCARD (1u << 5)             /* LowCardinality without a setting      19.3 */
#define SG_CH_JSON_FUNCS (1u << 6)          /* JSONExtract* / JSONHas ...            19.8 */
#define SG_CH_TTL_ONLY_DROP_PARTS (1u << 7) /* MergeTree setting ttl_only_drop_parts 20.1 */
#define SG_CH_EXCEPTION_HEADER (1u << 8)    /* X-ClickHouse-Exception-Code header    20.3 */
#define SG_CH_REPLACING_DELETED (1u << 9)   /* ReplacingMergeTree(ver, is_deleted)   23.2 */

typedef struct {
  int major, minor;
  unsigned caps; /* SG_CH_* bits */
} sg_ch_version_t;

/* Parse `SELECT version()` output: "18.16.1", "24.8.4.13" (trailing
 * whitespace and newline allowed; more components ignored) and fill in caps.
 * 0 or SG_EINVAL. */
int sg_ch_version_parse(const char *s, sg_ch_version_t *v);
/* The caps of major.minor (what sg_ch_version_parse fills in). */
unsigned sg_ch_version_caps(int major, int minor);

#endif
