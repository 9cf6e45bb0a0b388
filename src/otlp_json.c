/* otlp_json.c - OTLP/HTTP JSON bodies to span records; the JSON response.
 *
 * The OTLP JSON encoding is the proto3 JSON mapping of
 * ExportTraceServiceRequest with OTLP's exceptions: traceId/spanId/
 * parentSpanId are hex strings (not base64), enums are integers (names are
 * accepted too), and keys are lowerCamelCase (the proto field names are
 * accepted too, as the mapping allows). int64/fixed64 come as strings or
 * numbers. Unknown fields are ignored; null means "not set".
 *
 * Shape errors above the spans (resourceSpans not an array, a resource that
 * is not an object, ...) fail the request; errors inside one span reject it.
 * Problems in a resource's or scope's attributes reject the spans under it.
 */
#include "decode.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "decode_internal.h"
#include "err.h"
#include "jalloc.h"
#include "json_load.h"
#include "json_nest.h"

/* Attribute keys nest as deep as attribute values may (json_nest.h). */
_Static_assert(SG_JSON_NEST_MAX_SEGMENTS == SG_ATTR_MAX_DEPTH, "nesting limits differ");

typedef struct {
  sg_span_batch_t *out;
  sg_buf_t *err;
  char reason[384]; /* why the current span is rejected; "" if it is not */
} jctx_t;

/* Record the first reason (path: message) and return SG_EINVAL. */
static int bad(jctx_t *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad(jctx_t *c, const char *path, const char *fmt, ...) {
  if (c->reason[0]) return SG_EINVAL;
  int k = snprintf(c->reason, sizeof(c->reason), "%s: ", path);
  if (k < 0 || (size_t)k >= sizeof(c->reason)) k = 0;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->reason + k, sizeof(c->reason) - (size_t)k, fmt, ap);
  va_end(ap);
  return SG_EINVAL;
}

/* A field by its JSON name or its proto name; NULL when absent or null. */
static json_t *field(json_t *o, const char *camel, const char *snake) {
  json_t *v = json_object_get(o, camel);
  if (v == NULL && snake) v = json_object_get(o, snake);
  return json_is_null(v) ? NULL : v;
}

/* ---- scalars ---------------------------------------------------------------- */

/* Exactly nbytes bytes of hex. */
static int hex_bytes(const char *s, size_t n, uint8_t *out, size_t nbytes) {
  if (n != 2 * nbytes) return -1;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    int v = ch >= '0' && ch <= '9'   ? ch - '0'
            : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
            : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                     : -1;
    if (v < 0) return -1;
    if (i % 2 == 0) out[i / 2] = (uint8_t)(v << 4);
    else out[i / 2] |= (uint8_t)v;
  }
  return 0;
}

/* A hex id: 32 digits for a trace id (want16), 16 (or 32) for a span id.
 * 0 with out set, SG_EINVAL with the reason. */
static int hex_id(jctx_t *c, json_t *v, const char *path, int want16, uint8_t out[16]) {
  uint8_t raw[16];
  if (!json_is_string(v)) return bad(c, path, "expected a hex string");
  const char *s = json_string_value(v);
  size_t n = json_string_length(v);
  if (want16) {
    if (hex_bytes(s, n, raw, 16) != 0) return bad(c, path, "expected 32 hex digits");
  } else if (hex_bytes(s, n, raw, 8) != 0 && hex_bytes(s, n, raw, 16) != 0) {
    return bad(c, path, "expected 16 hex digits");
  }
  if (sg_id_from_bytes(raw, n / 2, out) != 0) return bad(c, path, "id is all zero");
  return 0;
}

/* fixed64 / uint64 nanoseconds as a string of digits or a JSON integer. */
static int u64_value(jctx_t *c, json_t *v, const char *path, uint64_t *out) {
  if (json_is_integer(v)) {
    if (json_integer_value(v) < 0) return bad(c, path, "expected a non-negative integer");
    *out = (uint64_t)json_integer_value(v);
    return 0;
  }
  if (json_is_string(v)) {
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    uint64_t x = 0;
    if (n == 0 || n > 20) return bad(c, path, "expected an integer string");
    for (size_t i = 0; i < n; i++) {
      if (s[i] < '0' || s[i] > '9') return bad(c, path, "expected an integer string");
      unsigned d = (unsigned)(s[i] - '0');
      if (x > (UINT64_MAX - d) / 10) return bad(c, path, "integer out of range");
      x = x * 10 + d;
    }
    *out = x;
    return 0;
  }
  return bad(c, path, "expected an integer or an integer string");
}

/* int64 as a JSON integer or a string of digits with an optional sign. */
static int i64_value(jctx_t *c, json_t *v, const char *path, int64_t *out) {
  if (json_is_integer(v)) {
    *out = json_integer_value(v);
    return 0;
  }
  if (json_is_string(v)) {
    const char *s = json_string_value(v);
    char *end;
    if (json_string_length(v) == 0 || json_string_length(v) > 24 ||
        !(s[0] == '-' || (s[0] >= '0' && s[0] <= '9')))
      return bad(c, path, "expected an integer string");
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (*end != '\0' || end == s) return bad(c, path, "expected an integer string");
    if (errno == ERANGE) return bad(c, path, "integer out of int64 range");
    *out = x;
    return 0;
  }
  if (json_is_real(v)) {
    double d = json_real_value(v);
    if (d >= -9223372036854775808.0 && d < 9223372036854775808.0 && d == (double)(int64_t)d) {
      *out = (int64_t)d;
      return 0;
    }
  }
  return bad(c, path, "expected an integer or an integer string");
}

/* Enum as an integer or a name (full label, case-insensitive); unknown values
 * map to 0 (UNSPECIFIED / UNSET), as for the binary encoding. */
static int enum_value(jctx_t *c, json_t *v, const char *path, int count,
                      int (*parse)(const char *), int *out) {
  if (json_is_integer(v)) {
    json_int_t x = json_integer_value(v);
    *out = x >= 0 && x < count ? (int)x : 0;
    return 0;
  }
  if (json_is_string(v)) {
    int x = parse(json_string_value(v));
    *out = x >= 0 ? x : 0;
    return 0;
  }
  return bad(c, path, "expected an enum integer or name");
}

static char *sanitized_cstr(json_t *v) {
  int changed;
  return sg_utf8_sanitize(json_string_value(v), json_string_length(v), &changed);
}

/* ---- attributes ------------------------------------------------------------- */

static int kv_list(jctx_t *c, json_t *arr, const char *path, int depth, json_t **obj);

/* AnyValue object to a JSON value. */
static int any_value(jctx_t *c, json_t *av, const char *path, int depth, json_t **out) {
  json_t *v, *nv = NULL;
  char sub[320];
  *out = NULL;
  if (av == NULL || json_is_null(av)) {
    *out = json_null();
    return 0;
  }
  if (!json_is_object(av)) return bad(c, path, "expected an AnyValue object");
  if ((v = field(av, "stringValue", "string_value"))) {
    if (!json_is_string(v)) return bad(c, path, "stringValue: expected a string");
    nv = sg__json_string_sanitized(json_string_value(v), json_string_length(v));
  } else if ((v = field(av, "boolValue", "bool_value"))) {
    if (!json_is_boolean(v)) return bad(c, path, "boolValue: expected true or false");
    nv = json_boolean(json_is_true(v));
  } else if ((v = field(av, "intValue", "int_value"))) {
    int64_t x = 0;
    sg__pathf(sub, sizeof(sub), "%s.intValue", path);
    if (i64_value(c, v, sub, &x)) return SG_EINVAL;
    nv = json_integer(x);
  } else if ((v = field(av, "doubleValue", "double_value"))) {
    if (json_is_number(v)) {
      nv = json_real(json_number_value(v));
    } else if (json_is_string(v)) {
      const char *s = json_string_value(v);
      char *end;
      if (strcmp(s, "NaN") == 0 || strcmp(s, "Infinity") == 0 || strcmp(s, "-Infinity") == 0) {
        nv = json_string(s);
      } else {
        errno = 0;
        double d = strtod(s, &end);
        if (*s == '\0' || *end != '\0') return bad(c, path, "doubleValue: expected a number");
        nv = sg__json_double(d);
      }
    } else {
      return bad(c, path, "doubleValue: expected a number");
    }
  } else if ((v = field(av, "arrayValue", "array_value"))) {
    sg__pathf(sub, sizeof(sub), "%s.arrayValue", path);
    if (!json_is_object(v)) return bad(c, sub, "expected an object");
    if (depth >= SG_ATTR_MAX_DEPTH)
      return bad(c, sub, "values nested deeper than %d levels", SG_ATTR_MAX_DEPTH);
    json_t *vals = field(v, "values", NULL);
    if (vals && !json_is_array(vals)) return bad(c, sub, "values: expected an array");
    if ((nv = json_array()) == NULL) return SG_ENOMEM;
    size_t i;
    json_t *e;
    json_array_foreach(vals, i, e) {
      json_t *x;
      int rc;
      sg__pathf(sub, sizeof(sub), "%s.arrayValue.values[%zu]", path, i);
      if ((rc = any_value(c, e, sub, depth + 1, &x)) != 0 ||
          (rc = json_array_append_new(nv, x) ? SG_ENOMEM : 0) != 0) {
        json_decref(nv);
        return rc;
      }
    }
  } else if ((v = field(av, "kvlistValue", "kvlist_value"))) {
    sg__pathf(sub, sizeof(sub), "%s.kvlistValue", path);
    if (!json_is_object(v)) return bad(c, sub, "expected an object");
    if (depth >= SG_ATTR_MAX_DEPTH)
      return bad(c, sub, "values nested deeper than %d levels", SG_ATTR_MAX_DEPTH);
    sg__pathf(sub, sizeof(sub), "%s.kvlistValue.values", path);
    int rc = kv_list(c, field(v, "values", NULL), sub, depth + 1, &nv);
    if (rc) {
      json_decref(nv);
      return rc;
    }
    if (nv == NULL && (nv = json_object()) == NULL) return SG_ENOMEM;
  } else if ((v = field(av, "bytesValue", "bytes_value"))) {
    sg_buf_t raw = SG_BUF_INIT;
    if (!json_is_string(v)) return bad(c, path, "bytesValue: expected a base64 string");
    int rc = sg__base64_decode(json_string_value(v), json_string_length(v), &raw);
    if (rc == SG_EINVAL) {
      sg_buf_free(&raw);
      return bad(c, path, "bytesValue: invalid base64");
    }
    if (rc == 0) nv = sg__base64_json((const uint8_t *)(raw.data ? raw.data : ""), raw.len);
    sg_buf_free(&raw);
  } else {
    nv = json_null(); /* an empty AnyValue */
  }
  if (nv == NULL) return SG_ENOMEM;
  *out = nv;
  return 0;
}

/* A KeyValue array into *obj (created when NULL and arr is non-empty). */
static int kv_list(jctx_t *c, json_t *arr, const char *path, int depth, json_t **obj) {
  char sub[320];
  size_t i;
  json_t *kv;
  if (arr == NULL) return 0;
  if (!json_is_array(arr)) return bad(c, path, "expected an array of {key, value}");
  if (*obj == NULL && (*obj = json_object()) == NULL) return SG_ENOMEM;
  json_array_foreach(arr, i, kv) {
    sg__pathf(sub, sizeof(sub), "%s[%zu]", path, i);
    if (!json_is_object(kv)) return bad(c, sub, "expected a {key, value} object");
    json_t *k = field(kv, "key", NULL), *val;
    if (k && !json_is_string(k)) return bad(c, sub, "key: expected a string");
    sg__pathf(sub, sizeof(sub), "%s[%zu].value", path, i);
    int rc = any_value(c, field(kv, "value", NULL), sub, depth, &val);
    if (rc) return rc;
    char *key = k ? sanitized_cstr(k) : strdup("");
    if (key == NULL || json_object_set_new_nocheck(*obj, key, val) != 0) {
      free(key);
      return SG_ENOMEM;
    }
    free(key);
  }
  return 0;
}

/* ---- spans ------------------------------------------------------------------ */

static int span_events(jctx_t *c, json_t *arr, const char *path, sg_span_t *s) {
  char sub[320];
  size_t i;
  json_t *ev;
  if (arr == NULL) return 0;
  if (!json_is_array(arr)) return bad(c, path, "expected an array");
  if (json_array_size(arr) == 0) return 0;
  if ((s->events = json_array()) == NULL) return SG_ENOMEM;
  json_array_foreach(arr, i, ev) {
    uint64_t t = 0;
    json_t *v, *attrs = NULL;
    int rc;
    sg__pathf(sub, sizeof(sub), "%s[%zu]", path, i);
    if (!json_is_object(ev)) return bad(c, sub, "expected an object");
    if ((v = field(ev, "timeUnixNano", "time_unix_nano"))) {
      sg__pathf(sub, sizeof(sub), "%s[%zu].timeUnixNano", path, i);
      if (u64_value(c, v, sub, &t)) return SG_EINVAL;
    }
    json_t *name = field(ev, "name", NULL);
    sg__pathf(sub, sizeof(sub), "%s[%zu].name", path, i);
    if (name && !json_is_string(name)) return bad(c, sub, "expected a string");
    sg__pathf(sub, sizeof(sub), "%s[%zu].attributes", path, i);
    if ((rc = kv_list(c, field(ev, "attributes", NULL), sub, 0, &attrs))) {
      json_decref(attrs);
      return rc;
    }
    char *nm = name ? sanitized_cstr(name) : strdup("");
    if (nm == NULL) {
      json_decref(attrs);
      return SG_ENOMEM;
    }
    json_t *e = sg__event_json(nm, (int64_t)(t / 1000), attrs);
    free(nm);
    if (e == NULL || json_array_append_new(s->events, e)) return SG_ENOMEM;
  }
  return 0;
}

static int span_links(jctx_t *c, json_t *arr, const char *path, sg_span_t *s) {
  char sub[320];
  size_t i;
  json_t *lk;
  if (arr == NULL) return 0;
  if (!json_is_array(arr)) return bad(c, path, "expected an array");
  if (json_array_size(arr) == 0) return 0;
  if ((s->links = json_array()) == NULL) return SG_ENOMEM;
  json_array_foreach(arr, i, lk) {
    uint8_t t[16], sp[16];
    json_t *attrs = NULL, *l;
    sg__pathf(sub, sizeof(sub), "%s[%zu]", path, i);
    if (!json_is_object(lk)) return bad(c, sub, "expected an object");
    sg__pathf(sub, sizeof(sub), "%s[%zu].traceId", path, i);
    if (hex_id(c, field(lk, "traceId", "trace_id"), sub, 1, t)) return SG_EINVAL;
    sg__pathf(sub, sizeof(sub), "%s[%zu].spanId", path, i);
    if (hex_id(c, field(lk, "spanId", "span_id"), sub, 0, sp)) return SG_EINVAL;
    sg__pathf(sub, sizeof(sub), "%s[%zu].attributes", path, i);
    int rc = kv_list(c, field(lk, "attributes", NULL), sub, 0, &attrs);
    if (rc == 0) rc = sg__link_json(t, sp, attrs, &l);
    json_decref(attrs);
    if (rc == SG_ETOOBIG) return bad(c, sub, "too large to flatten");
    if (rc) return rc;
    if (json_array_append_new(s->links, l)) return SG_ENOMEM;
  }
  return 0;
}

/* Fill s from one span object: 0, SG_EINVAL (reason set) or SG_ENOMEM. */
static int span_fields(jctx_t *c, json_t *o, const char *path, sg_span_t *s) {
  char sub[320], rng[48];
  json_t *v;
  int rc, x = 0;
  if (!json_is_object(o)) return bad(c, path, "expected an object");
#define SUB(name) (sg__pathf(sub, sizeof(sub), "%s.%s", path, name), sub)
  if (hex_id(c, field(o, "traceId", "trace_id"), SUB("traceId"), 1, s->trace_id))
    return SG_EINVAL;
  if (hex_id(c, field(o, "spanId", "span_id"), SUB("spanId"), 0, s->span_id))
    return SG_EINVAL;
  v = field(o, "parentSpanId", "parent_span_id");
  if (v && !(json_is_string(v) && json_string_length(v) == 0)) {
    static const uint8_t zero[16];
    uint8_t raw[16];
    size_t n = json_is_string(v) ? json_string_length(v) : 0;
    if (n == 16 || n == 32) {
      if (hex_bytes(json_string_value(v), n, raw, n / 2) == 0 && memcmp(raw, zero, n / 2) == 0)
        v = NULL; /* all-zero parent: a root span */
    }
    if (v) {
      if (hex_id(c, v, SUB("parentSpanId"), 0, s->parent_id)) return SG_EINVAL;
      s->has_parent = 1;
    }
  }
  if ((v = field(o, "name", NULL)) && !json_is_string(v))
    return bad(c, SUB("name"), "expected a string");
  s->span_name = v ? sanitized_cstr(v) : strdup("");
  if (s->span_name == NULL) return SG_ENOMEM;
  if ((v = field(o, "kind", NULL))) {
    if (enum_value(c, v, SUB("kind"), SG_SPAN_KIND_COUNT, sg_span_kind_parse, &x))
      return SG_EINVAL;
    s->span_kind = (int8_t)x;
  }
  uint64_t ns;
  if ((v = field(o, "startTimeUnixNano", "start_time_unix_nano"))) {
    if (u64_value(c, v, SUB("startTimeUnixNano"), &ns)) return SG_EINVAL;
    s->start_us = (int64_t)(ns / 1000);
    if (s->start_us < SG_TIME_MIN_US || s->start_us > SG_TIME_MAX_US)
      return bad(c, sub, "outside %s", sg__time_range_text(rng));
  }
  if ((v = field(o, "endTimeUnixNano", "end_time_unix_nano"))) {
    if (u64_value(c, v, SUB("endTimeUnixNano"), &ns)) return SG_EINVAL;
    s->end_us = (int64_t)(ns / 1000);
    if (s->end_us < SG_TIME_MIN_US || s->end_us > SG_TIME_MAX_US)
      return bad(c, sub, "outside %s", sg__time_range_text(rng));
  }
  if ((rc = kv_list(c, field(o, "attributes", NULL), SUB("attributes"), 0, &s->attributes)))
    return rc;
  if ((rc = span_events(c, field(o, "events", NULL), SUB("events"), s))) return rc;
  if ((rc = span_links(c, field(o, "links", NULL), SUB("links"), s))) return rc;
  if ((v = field(o, "status", NULL))) {
    if (!json_is_object(v)) return bad(c, SUB("status"), "expected an object");
    json_t *code = field(v, "code", NULL), *msg = field(v, "message", NULL);
    if (code) {
      if (enum_value(c, code, SUB("status.code"), SG_STATUS_CODE_COUNT,
                     sg_status_code_parse, &x))
        return SG_EINVAL;
      s->status_code = (int8_t)x;
    }
    if (msg && !json_is_string(msg)) return bad(c, SUB("status.message"), "expected a string");
    if (msg && json_string_length(msg) > 0 && (s->status_message = sanitized_cstr(msg)) == NULL)
      return SG_ENOMEM;
  }
#undef SUB
  return 0;
}

/* Decode one span into the batch or reject it; hard errors only for ENOMEM. */
static int decode_span(jctx_t *c, json_t *o, const char *path, json_t *resource,
                       json_t *scope, const char *inherited) {
  sg_span_t s;
  memset(&s, 0, sizeof(s));
  s.trace_type = SG_NULL_ENUM;
  s.span_type = SG_NULL_ENUM;
  strcpy(c->reason, inherited);
  int rc = c->reason[0] ? SG_EINVAL : span_fields(c, o, path, &s);
  if (rc == SG_EINVAL) {
    sg_span_batch_reject(c->out, "%s", c->reason);
    sg_span_clear(&s);
    return 0;
  }
  if (rc == 0) {
    if (resource) s.resource = json_incref(resource);
    if (scope) s.scope = json_incref(scope);
    sg_span_t *d = sg_span_batch_push(c->out);
    if (d) {
      *d = s;
      return 0;
    }
    rc = SG_ENOMEM;
  }
  sg_span_clear(&s);
  return rc;
}

static int shape_error(jctx_t *c, const char *path, const char *what) {
  sg_buf_printf(c->err, "%s: %s", path, what);
  return SG_EPARSE;
}

static int scope_spans(jctx_t *c, json_t *ss, const char *path, json_t *resource,
                       const char *res_reason) {
  char sub[320], reason[sizeof(c->reason)];
  json_t *scope = NULL, *v, *spans;
  int rc = 0;
  if (!json_is_object(ss)) return shape_error(c, path, "expected an object");
  strcpy(c->reason, res_reason);
  if ((v = field(ss, "scope", NULL))) {
    json_t *name = field(v, "name", NULL), *ver = field(v, "version", NULL), *attrs = NULL;
    sg__pathf(sub, sizeof(sub), "%s.scope", path);
    if (!json_is_object(v)) return shape_error(c, sub, "expected an object");
    if ((name && !json_is_string(name)) || (ver && !json_is_string(ver)))
      return shape_error(c, sub, "name and version must be strings");
    sg__pathf(sub, sizeof(sub), "%s.scope.attributes", path);
    rc = kv_list(c, field(v, "attributes", NULL), sub, 0, &attrs);
    if (rc == SG_ENOMEM || (attrs == NULL && (attrs = json_object()) == NULL)) {
      json_decref(attrs);
      return SG_ENOMEM;
    }
    rc = 0;
    json_t *jn = name ? sg__json_string_sanitized(json_string_value(name),
                                                  json_string_length(name))
                      : json_string("");
    json_t *jv = ver ? sg__json_string_sanitized(json_string_value(ver),
                                                 json_string_length(ver))
                     : json_string("");
    /* set_nocheck takes its own references: drop ours either way. */
    int fail = jn == NULL || jv == NULL || (scope = json_object()) == NULL ||
               json_object_set_nocheck(scope, "name", jn) ||
               json_object_set_nocheck(scope, "version", jv) ||
               json_object_set_nocheck(scope, "attributes", attrs);
    json_decref(jn);
    json_decref(jv);
    json_decref(attrs);
    if (fail) {
      json_decref(scope);
      return SG_ENOMEM;
    }
  }
  strcpy(reason, c->reason);
  spans = field(ss, "spans", NULL);
  sg__pathf(sub, sizeof(sub), "%s.spans", path);
  if (spans && !json_is_array(spans)) {
    json_decref(scope);
    return shape_error(c, sub, "expected an array");
  }
  size_t i;
  json_t *sp;
  json_array_foreach(spans, i, sp) {
    sg__pathf(sub, sizeof(sub), "%s.spans[%zu]", path, i);
    if ((rc = decode_span(c, sp, sub, resource, scope, reason))) break;
  }
  json_decref(scope);
  return rc;
}

static int resource_spans(jctx_t *c, json_t *rs, const char *path) {
  char sub[320], reason[sizeof(c->reason)];
  json_t *res = NULL, *v, *sss;
  int rc;
  if (!json_is_object(rs)) return shape_error(c, path, "expected an object");
  c->reason[0] = '\0';
  if ((v = field(rs, "resource", NULL))) {
    sg__pathf(sub, sizeof(sub), "%s.resource", path);
    if (!json_is_object(v)) return shape_error(c, sub, "expected an object");
    sg__pathf(sub, sizeof(sub), "%s.resource.attributes", path);
    rc = kv_list(c, field(v, "attributes", NULL), sub, 0, &res);
    if (rc == SG_ENOMEM) {
      json_decref(res);
      return rc;
    }
  }
  strcpy(reason, c->reason);
  sss = field(rs, "scopeSpans", "scope_spans");
  sg__pathf(sub, sizeof(sub), "%s.scopeSpans", path);
  rc = 0;
  if (sss && !json_is_array(sss)) {
    rc = shape_error(c, sub, "expected an array");
  } else {
    size_t i;
    json_t *ss;
    json_array_foreach(sss, i, ss) {
      sg__pathf(sub, sizeof(sub), "%s.scopeSpans[%zu]", path, i);
      if ((rc = scope_spans(c, ss, sub, res, reason))) break;
    }
  }
  json_decref(res);
  return rc;
}

int sg_otlp_decode_json(const char *p, size_t n, sg_span_batch_t *out, sg_buf_t *err) {
  jctx_t c;
  json_t *doc, *rss;
  size_t cost;
  int rc;
  c.out = out;
  c.err = err;
  c.reason[0] = '\0';
  if ((rc = sg__json_load(p, n, &doc, &cost, err))) return rc;
  if (!json_is_object(doc)) {
    sg_json_release(doc, cost);
    sg_buf_puts(err, "body: expected a JSON object {\"resourceSpans\": [...]}");
    return SG_EPARSE;
  }
  rss = field(doc, "resourceSpans", "resource_spans");
  if (rss && !json_is_array(rss)) {
    rc = shape_error(&c, "resourceSpans", "expected an array");
  } else {
    size_t i;
    json_t *rs;
    char path[64];
    json_array_foreach(rss, i, rs) {
      sg__pathf(path, sizeof(path), "resourceSpans[%zu]", i);
      if ((rc = resource_spans(&c, rs, path))) break;
    }
  }
  sg_json_release(doc, cost);
  return rc;
}

/* ---- response --------------------------------------------------------------- */

int sg_otlp_response_json(size_t rejected, const char *msg, sg_buf_t *out) {
  json_t *o = json_object(), *ps = NULL;
  int rc = 0;
  if (o == NULL) return SG_ENOMEM;
  if (rejected > 0 || (msg && *msg)) {
    char num[24];
    if ((ps = json_object()) == NULL || json_object_set_new_nocheck(o, "partialSuccess", ps))
      rc = SG_ENOMEM;
    if (rc == 0 && rejected > 0) {
      snprintf(num, sizeof(num), "%zu", rejected); /* int64 is a string in proto3 JSON */
      if (json_object_set_new_nocheck(ps, "rejectedSpans", json_string(num))) rc = SG_ENOMEM;
    }
    if (rc == 0 && msg && *msg) {
      json_t *m = sg__json_string_sanitized(msg, strlen(msg));
      if (json_object_set_new_nocheck(ps, "errorMessage", m)) rc = SG_ENOMEM;
    }
  }
  if (rc == 0) {
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (s == NULL || sg_buf_puts(out, s)) rc = SG_ENOMEM;
    sg_json_free(s);
  }
  json_decref(o);
  return rc;
}
