/* decode.h - request bodies to span records, and the OTLP response bodies.
 *
 * Three decoders, one per wire format, all filling an sg_span_batch_t:
 *   otlp_proto.c   OTLP/HTTP binary protobuf (ExportTraceServiceRequest)
 *   otlp_json.c    OTLP/HTTP JSON (the proto3 JSON mapping of the same)
 *   native_json.c  Agenta's native {"spans":[...]} with its field names
 * The body is already decompressed (see inflate.h).
 *
 * Errors come in two sizes. A body that cannot be read at all (not JSON,
 * truncated protobuf, "resourceSpans" not an array, ...) fails the request:
 * SG_EPARSE with a one-line message in err naming the place, e.g.
 *   "resourceSpans[0].scopeSpans: expected an array"
 *   "body is not valid JSON: ... at line 1 column 5"
 *   "protobuf: truncated message"
 * A span that is readable but cannot be stored (trace id of 3 bytes, missing
 * span id, time out of range, unknown span_type label, ...) is rejected
 * alone: out->rejected counts it and out->reject_msg keeps the first reasons
 * ("resourceSpans[0].scopeSpans[1].spans[3].traceId: expected 32 hex
 * digits"); the other spans are decoded normally and 0 is returned.
 *
 * What the decoders produce (Agenta's row; see span.h):
 * - ids: 16-byte trace ids as is, 8-byte span/parent ids doubled; all-zero
 *   ids are rejected. An empty OTLP parent id means a root span.
 * - times: µs since the epoch (OTLP nanoseconds truncated); a span time
 *   outside SG_TIME_MIN_US..SG_TIME_MAX_US rejects the span (event
 *   timestamps are JSON text and are kept whatever their value).
 * - attributes: a JSON object with the keys exactly as sent (dotted keys are
 *   not nested here). OTLP AnyValue: string (sanitised UTF-8), bool, int
 *   (exact int64), double (NaN/Infinity/-Infinity as the strings "NaN",
 *   "Infinity", "-Infinity"), array, kvlist -> object, bytes -> standard
 *   padded base64 string, empty value -> null. Duplicate keys: last wins.
 *   Values nested deeper than SG_ATTR_MAX_DEPTH reject the span.
 * - events: NULL when the span has none, else an array of
 *   {"name": str, "timestamp": "YYYY-MM-DDThh:mm:ss.ffffffZ", "attributes": {..}}
 *   (Agenta's OTelEvent as its mappings.py stores it).
 * - links: NULL when none, else an array of Agenta's stored link form: the
 *   link model flattened with dotted keys (Agenta's marshall()):
 *   {"trace_id": "<dashed uuid>", "span_id": "<dashed uuid, doubled>",
 *    "attributes.<key>": value, "attributes.<key>.<sub>": ...}.
 *   A link whose ids are invalid rejects its span (Agenta drops such spans).
 * - resource: the resource attributes object, one value shared (refcount)
 *   by the spans of a ResourceSpans; NULL when the resource has none.
 * - scope: {"name": str, "version": str, "attributes": {..}} shared by the
 *   spans of a ScopeSpans; NULL when the scope is absent.
 * - trace_type / span_type: SG_NULL_ENUM from OTLP (set later from the
 *   ag.type.* attributes); from native JSON the label sent, or SG_NULL_ENUM.
 *
 * Memory: protobuf is read in place (no intermediate message tree, no
 * recursion beyond SG_ATTR_MAX_DEPTH) and what it builds is charged against
 * a budget of 64x the body size + 1 MiB; a body of empty elements that
 * would exceed it fails with SG_ETOOBIG ("protobuf: message expands too much
 * when decoded"). JSON is parsed by jansson (depth limit 2048) into a tree
 * (~5-12x the body for real spans, ~80x for "{}" spam), and the spans are
 * built from it. Its size is estimated before parsing (json_load.h): a
 * body whose tree would take more than 64x its size + 1 MiB, or more than
 * 256 MiB, fails with SG_ETOOBIG unparsed; after a large one the freed
 * memory is handed back to the system. Nothing here logs.
 */
#ifndef SG_DECODE_H
#define SG_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "span.h"

/* Deepest attribute value nesting kept (array/kvlist levels below the
 * attribute itself). Deeper values reject their span. */
#define SG_ATTR_MAX_DEPTH 32
/* Deepest nesting of the JSON values native spans keep as sent
 * (attributes, references, hashes, event and link attributes). */
#define SG_NATIVE_MAX_DEPTH 64

/* Decode a body into out (initialised by the caller with
 * sg_span_batch_init; spans are appended). Returns 0, SG_EPARSE with a
 * message in err (appended), SG_ETOOBIG (the body would expand past its
 * budget; message in err), or SG_ENOMEM. On failure out may hold spans
 * decoded before the error: the caller frees the batch either way. */
int sg_otlp_decode_proto(const uint8_t *p, size_t n, sg_span_batch_t *out, sg_buf_t *err);
int sg_otlp_decode_json(const char *p, size_t n, sg_span_batch_t *out, sg_buf_t *err);
int sg_native_decode_json(const char *p, size_t n, sg_span_batch_t *out, sg_buf_t *err);

/* ---- responses (OTLP/HTTP) -------------------------------------------------
 * Appended to out; 0 or SG_ENOMEM. */

/* ExportTraceServiceResponse, binary. partial_success (rejected_spans,
 * error_message) is present only when rejected > 0 or msg is non-empty. */
int sg_otlp_response_proto(size_t rejected, const char *msg, sg_buf_t *out);
/* The same in the proto3 JSON mapping: {} or
 * {"partialSuccess":{"rejectedSpans":"N","errorMessage":"..."}} (int64 is a
 * JSON string; fields with default values are omitted). */
int sg_otlp_response_json(size_t rejected, const char *msg, sg_buf_t *out);
/* google.rpc.Status {code, message}, the body of protobuf error responses. */
int sg_rpc_status_proto(int code, const char *msg, sg_buf_t *out);

#endif
