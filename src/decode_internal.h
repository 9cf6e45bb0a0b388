/* decode_internal.h - what the three decoders (otlp_proto.c, otlp_json.c,
 * native_json.c) share, defined in decode_support.c. Not part of decode.h's
 * interface: include it from the decoders only.
 */
#ifndef SG_DECODE_INTERNAL_H
#define SG_DECODE_INTERNAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* snprintf for the paths in messages ("resourceSpans[0].scopeSpans[2]");
 * truncating a long path is fine. */
void sg__pathf(char *dst, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Standard base64 with padding of p[0..n) as a JSON string; NULL on ENOMEM. */
json_t *sg__base64_json(const uint8_t *p, size_t n);
/* Decode standard or URL-safe base64, padding optional (proto3 JSON bytes).
 * Appends to out; SG_EINVAL when malformed, SG_ENOMEM. */
int sg__base64_decode(const char *s, size_t n, sg_buf_t *out);
/* A JSON string of s[0..n) made valid (sg_utf8_sanitize); NULL on ENOMEM. */
json_t *sg__json_string_sanitized(const char *s, size_t n);
/* Double as JSON: a real, or "NaN" / "Infinity" / "-Infinity". */
json_t *sg__json_double(double d);
/* One link in Agenta's stored form (see decode.h) into *out; attrs (may be
 * NULL) is only read. 0, SG_ENOMEM, or SG_ETOOBIG when flattening the
 * attributes would produce keys out of proportion to their size. */
int sg__link_json(const uint8_t trace_id[16], const uint8_t span_id[16], json_t *attrs,
                  json_t **out);
/* Copy text taken from the input into a message: at most max bytes, never
 * splitting a UTF-8 sequence, with control characters and invalid UTF-8
 * shown as '?', so messages stay one valid line. out has outsz bytes. */
void sg__printable(const char *s, size_t n, size_t max, char *out, size_t outsz);
/* "1970-01-01T00:00:00Z..2105-12-31T23:59:59Z": the SG_TIME range, for
 * messages; returns out. */
const char *sg__time_range_text(char out[48]);
/* Parse a JSON body (jansson; \u0000 allowed, sanitised later) within
 * sg_json_tree_budget(n) (json_load.h). 0 with *doc and *cost (the tree's
 * estimated size, for sg_json_release) set; SG_ENOMEM; SG_ETOOBIG with
 * "JSON body too large to decode: ..." or SG_EPARSE with "body is not
 * valid JSON: <why> at line L column C" appended to err. */
int sg__json_load(const char *p, size_t n, json_t **doc, size_t *cost, sg_buf_t *err);
/* {"name", "timestamp", "attributes"} (takes attrs; NULL means {}). */
json_t *sg__event_json(const char *name, int64_t ts_us, json_t *attrs);

#endif
