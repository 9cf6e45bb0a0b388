/* span.h - the span record every decoder produces and every sink consumes.
 *
 * A span is Agenta's row: ids as 16 raw bytes (UUID order), enums as small
 * integers whose labels come from the X-macro tables below (the PostgreSQL
 * enum types and the ClickHouse Enum columns are rendered from the same
 * tables), times as integer microseconds since the Unix epoch (UTC), and the
 * JSONB columns as jansson values. Strings are NUL-terminated, valid UTF-8
 * without NUL characters (decoders sanitise; see sg_utf8_sanitize).
 *
 * Stands alone: no server, no database, no Lua.
 */
#ifndef SG_SPAN_H
#define SG_SPAN_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define SG_TRACE_TYPE_MAP(XX) XX(INVOCATION) XX(ANNOTATION) XX(UNKNOWN)

#define SG_SPAN_TYPE_MAP(XX)                                                   \
  XX(AGENT) XX(CHAIN) XX(WORKFLOW) XX(TASK) XX(TOOL) XX(EMBEDDING) XX(QUERY)   \
  XX(LLM) XX(COMPLETION) XX(CHAT) XX(RERANK) XX(UNKNOWN)

/* OTLP's SpanKind numbering: the enum value equals the OTLP wire value. */
#define SG_SPAN_KIND_MAP(XX)                                                   \
  XX(SPAN_KIND_UNSPECIFIED) XX(SPAN_KIND_INTERNAL) XX(SPAN_KIND_SERVER)        \
  XX(SPAN_KIND_CLIENT) XX(SPAN_KIND_PRODUCER) XX(SPAN_KIND_CONSUMER)

/* OTLP's Status.StatusCode numbering. */
#define SG_STATUS_CODE_MAP(XX)                                                 \
  XX(STATUS_CODE_UNSET) XX(STATUS_CODE_OK) XX(STATUS_CODE_ERROR)

typedef enum {
#define XX(n) SG_TRACE_##n,
  SG_TRACE_TYPE_MAP(XX)
#undef XX
  SG_TRACE_TYPE_COUNT
} sg_trace_type_t;

typedef enum {
#define XX(n) SG_SPAN_TYPE_##n,
  SG_SPAN_TYPE_MAP(XX)
#undef XX
  SG_SPAN_TYPE_COUNT
} sg_span_type_t;

typedef enum {
#define XX(n) SG_##n,
  SG_SPAN_KIND_MAP(XX)
#undef XX
  SG_SPAN_KIND_COUNT
} sg_span_kind_t;

typedef enum {
#define XX(n) SG_##n,
  SG_STATUS_CODE_MAP(XX)
#undef XX
  SG_STATUS_CODE_COUNT
} sg_status_code_t;

/* Labels, e.g. sg_span_kind_label(SG_SPAN_KIND_SERVER) == "SPAN_KIND_SERVER". */
const char *sg_trace_type_label(int v);
const char *sg_span_type_label(int v);
const char *sg_span_kind_label(int v);
const char *sg_status_code_label(int v);
/* Reverse look-ups; -1 when the label is unknown. */
int sg_trace_type_parse(const char *s);
int sg_span_type_parse(const char *s);
int sg_span_kind_parse(const char *s);
int sg_status_code_parse(const char *s);

#define SG_NULL_ENUM (-1) /* trace_type / span_type may be SQL NULL */

/* Set by the transform (gw.attributes.nest): the stores receive the
 * attributes with dotted keys nested (Agenta's form), and the resource
 * attributes as attributes.resource. See json_nest.h. */
#define SG_SPAN_NEST_ATTRS 1
#define SG_SPAN_NEST_RESOURCE 2

typedef struct sg_span_s {
  uint8_t trace_id[16];
  uint8_t span_id[16];
  uint8_t parent_id[16];
  uint8_t has_parent;    /* 0: parent_id is NULL (a root span) */
  int8_t trace_type;     /* sg_trace_type_t or SG_NULL_ENUM */
  int8_t span_type;      /* sg_span_type_t or SG_NULL_ENUM */
  int8_t span_kind;      /* sg_span_kind_t */
  int8_t status_code;    /* sg_status_code_t */
  char *span_name;       /* never NULL ("" when absent) */
  char *status_message;  /* NULL = SQL NULL */
  char *session_id;      /* NULL = SQL NULL */
  char *user_id;
  char *agent_id;
  int64_t start_us;      /* µs since the epoch, UTC */
  int64_t end_us;
  json_t *attributes;    /* owned references; NULL = SQL NULL */
  json_t *references;
  json_t *links;
  json_t *hashes;
  json_t *events;
  json_t *resource;      /* OTLP resource attributes object (shared, refcounted) or NULL */
  uint8_t nest_attributes; /* SG_SPAN_NEST_* bits: how the writers render attributes */
  char *attributes_text;  /* the attributes column rendered once for both stores, or NULL */
  size_t attributes_len;
  json_t *scope;         /* OTLP scope {"name","version","attributes"} or NULL */

  /* Filled by the PostgreSQL sink from the upsert's RETURNING. */
  uint8_t created_by_id[16];
  uint8_t updated_by_id[16];
  uint8_t has_created_by; /* 0: NULL */
  uint8_t has_updated_by;
  int64_t created_at_us;
  int64_t updated_at_us; /* 0 = NULL */
  int64_t version;       /* orders re-ingests of the same span (ClickHouse) */
  /* Soft delete (Agenta's lifecycle columns). Ingest never sets them (its
   * upsert clears deleted_at); the migration copies stored rows with them. */
  int64_t deleted_at_us; /* 0 = NULL */
  uint8_t deleted_by_id[16];
  uint8_t has_deleted_by; /* 0: NULL */
} sg_span_t;

/* The spans of one request, plus the ones rejected individually. */
typedef struct {
  sg_span_t *spans;
  size_t n;
  size_t cap;
  size_t rejected;       /* spans dropped by the decoder, with a reason */
  sg_buf_t reject_msg;   /* "span 3: trace_id must be 16 bytes; ..." (first few) */
} sg_span_batch_t;

void sg_span_batch_init(sg_span_batch_t *b);
/* A new zeroed span at the end of the batch (kind UNSPECIFIED, status UNSET,
 * trace_type/span_type NULL), or NULL when out of memory. */
sg_span_t *sg_span_batch_push(sg_span_batch_t *b);
/* Count one rejected span and keep its reason (the first 10 reasons are kept). */
void sg_span_batch_reject(sg_span_batch_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Removes span i where why(ctx, i) is not NULL, rejecting it with that
 * reason ("span <id> of trace <id>: <why>"); the others keep their order.
 * Returns how many were removed. */
size_t sg_span_batch_drop(sg_span_batch_t *b, const char *(*why)(const void *ctx, size_t i), const void *ctx);
void sg_span_batch_free(sg_span_batch_t *b);
void sg_span_clear(sg_span_t *s); /* frees what the span owns, leaves it zeroed */

/* The attributes column as JSON text, rendered as nest_attributes asks
 * (sg_json_dump_attributes) the first time a writer needs it and kept on
 * the span for the next one: PostgreSQL and the ClickHouse spool store the
 * same text, and rendering it is the largest per-span cost of a request.
 * Call it only once attributes/resource/nest_attributes are final (after
 * the transform); *text stays valid until the span is cleared. The span
 * is const to the callers (writers take const spans): the cache is a memo,
 * not a change of value. 0 or SG_ENOMEM. */
int sg_span_attributes_text(const sg_span_t *s, const char **text, size_t *len);
/* Deep copy (strings duplicated, JSON values deep-copied). 0 or SG_ENOMEM. */
int sg_span_copy(sg_span_t *dst, const sg_span_t *src);

/* ---- ids ----------------------------------------------------------------
 * Agenta's mapping: a 32-hex trace id is the UUID's 16 bytes; a 16-hex
 * (8-byte) span id is doubled: 31d6cfe04b9011ec ->
 * 31d6cfe0-4b90-11ec-31d6-cfe04b9011ec. */

/* Raw OTLP bytes to the 16-byte form: 16 bytes are copied, 8 bytes are doubled.
 * Any other length, or all zero bytes, is SG_EINVAL. */
int sg_id_from_bytes(const uint8_t *p, size_t n, uint8_t out[16]);
/* Text id: 32 hex digits, 16 hex digits (doubled), either with a 0x prefix,
 * or a dashed UUID (8-4-4-4-12). Case-insensitive. SG_EINVAL otherwise. */
int sg_id_parse(const char *s, size_t n, uint8_t out[16]);
/* Dashed lower-case UUID, 36 chars + NUL. */
void sg_uuid_format(const uint8_t id[16], char out[37]);
/* 32 lower-case hex digits + NUL (Agenta's API trace id form). */
void sg_hex32_format(const uint8_t id[16], char out[33]);
/* 16 lower-case hex digits + NUL: the first 8 bytes. (Agenta's API answers with the
 * last 8; for a doubled OTLP span id the two are the same.) */
void sg_hex16_format(const uint8_t id[16], char out[17]);

/* ---- times --------------------------------------------------------------
 * Range accepted everywhere: 1970-01-01T00:00:00Z .. 2105-12-31T23:59:59.999999Z,
 * the range both stores keep exactly (PostgreSQL's timestamptz covers more;
 * ClickHouse 18.16's DateTime wraps silently past 2105). A span outside it is
 * rejected at decode time, so PostgreSQL never holds a span ClickHouse
 * cannot. */
#define SG_TIME_MIN_US 0LL
#define SG_TIME_MAX_US 4291747199999999LL /* 2105-12-31T23:59:59.999999Z */

/* ISO-8601 / RFC 3339: "2024-01-02T03:04:05Z", fractional seconds up to 9
 * digits (truncated to µs), offsets "+hh:mm", "-hhmm", "Z"; a space instead
 * of 'T' is accepted. SG_EINVAL when malformed or out of range. */
int sg_time_parse_iso(const char *s, size_t n, int64_t *us);
/* Integer epoch by digit count: up to 10 digits seconds, 11-13 ms, 14-16 µs,
 * 17-19 ns (Agenta's rule). Negative values are rejected. */
int sg_time_from_epoch_digits(const char *s, size_t n, int64_t *us);
int sg_time_from_epoch_int(int64_t v, int64_t *us);
/* "2024-01-02T03:04:05.123456Z" (always 6 fractional digits), 27 chars + NUL. */
void sg_time_format(int64_t us, char out[32]);
/* When a span created at created_us and kept for days (ttl.lua's answer)
 * expires, in µs since the epoch; INT64_MAX means never. days that are not
 * > 0 (0, negative, NaN) keep it forever, and so does a retention whose end
 * int64 µs cannot hold: the sum saturates instead of overflowing (the row
 * encoder stores anything past 2105-12-31 as never anyway). */
int64_t sg_span_expires_us(int64_t created_us, double days);

/* ---- text ---------------------------------------------------------------- */

/* Make s valid for PostgreSQL text/jsonb: every invalid UTF-8 sequence and
 * every NUL byte becomes U+FFFD. Returns a new NUL-terminated string (caller
 * frees) and sets *changed when anything was replaced. NULL on SG_ENOMEM. */
char *sg_utf8_sanitize(const char *s, size_t n, int *changed);
/* Length of the longest prefix of s[0..n) that sg_utf8_sanitize leaves as
 * it is: well-formed UTF-8 (no overlong forms, surrogates or code points
 * past U+10FFFF, as jansson and PostgreSQL check it) without NUL. ASCII is
 * looked at 8 bytes at a time. s is clean when it returns n. */
size_t sg_utf8_valid_len(const char *s, size_t n);

#endif
