/* native_json.c - Agenta's native span JSON to span records.
 *
 * Body: {"spans": [span, ...]} where a span uses Agenta's field names (its
 * OTelFlatSpan model, agenta sdk/agenta/sdk/models/tracing.py):
 *   trace_id, span_id, parent_id    32 hex, 16 hex (doubled), 0x-hex, or a
 *                                   dashed UUID (sg_id_parse); trace_id and
 *                                   span_id are required, all-zero ids are
 *                                   rejected, an all-zero parent is a root
 *   span_name                       string ("" when absent)
 *   span_kind, status_code          label ("SPAN_KIND_SERVER", "STATUS_CODE_OK")
 *                                   or short ("server", "ok"), case-insensitive,
 *                                   or the OTLP integer
 *   trace_type, span_type           label, case-insensitive ("invocation",
 *                                   "LLM"); absent/null -> SQL NULL
 *   status_message                  string ("" -> NULL, as the OTLP path)
 *   start_time, end_time            ISO-8601 string, or an integer epoch (or
 *                                   a string of digits) by digit count; one
 *                                   missing takes the other, both missing
 *                                   take the current time (Agenta's defaults)
 *   attributes                      any JSON object, kept as sent
 *   events                          [{name, timestamp, attributes}], the
 *                                   timestamp normalised as in the OTLP path
 *   links                           [{trace_id, span_id, attributes}], stored
 *                                   in Agenta's link form (see decode.h)
 *   references, hashes              arrays, kept as sent
 *   session_id, user_id, agent_id   strings
 * Unknown fields are ignored; a "project_id" never decides anything (the
 * project comes from the API key). Empty events/links/references/hashes
 * arrays are stored as NULL, as Agenta's mappings.py does.
 *
 * Strings are sanitised (jansson already guarantees UTF-8; "\u0000" becomes
 * U+FFFD) and kept values may nest at most SG_NATIVE_MAX_DEPTH levels.
 */
#include "decode.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "decode_internal.h"
#include "err.h"
#include "json_load.h"

typedef struct {
  sg_span_batch_t *out;
  char reason[384];
} nctx_t;

static int bad(nctx_t *c, const char *path, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int bad(nctx_t *c, const char *path, const char *field, const char *fmt, ...) {
  if (c->reason[0]) return SG_EINVAL;
  int k = snprintf(c->reason, sizeof(c->reason), "%s%s%s: ", path, field ? "." : "",
                   field ? field : "");
  if (k < 0 || (size_t)k >= sizeof(c->reason)) k = 0;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->reason + k, sizeof(c->reason) - (size_t)k, fmt, ap);
  va_end(ap);
  return SG_EINVAL;
}

static json_t *get(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  return json_is_null(v) ? NULL : v;
}

/* Replace "\u0000" in every string of v (in place) and bound the nesting.
 * 0, SG_EINVAL (too deep; reason set by the caller) or SG_ENOMEM. */
static int sanitize_tree(json_t *v, int depth) {
  if (json_is_string(v)) {
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (memchr(s, 0, n) == NULL) return 0;
    int changed;
    char *t = sg_utf8_sanitize(s, n, &changed);
    if (t == NULL) return SG_ENOMEM;
    int rc = json_string_set_nocheck(v, t) ? SG_ENOMEM : 0;
    free(t);
    return rc;
  }
  if (!json_is_object(v) && !json_is_array(v)) return 0;
  if (depth >= SG_NATIVE_MAX_DEPTH) return SG_EINVAL;
  if (json_is_object(v)) {
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) {
      int rc = sanitize_tree(x, depth + 1);
      if (rc) return rc;
    }
  } else {
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) {
      int rc = sanitize_tree(x, depth + 1);
      if (rc) return rc;
    }
  }
  return 0;
}

/* A kept JSON value: sanitised, bounded, then referenced into *dst. */
static int keep_tree(nctx_t *c, json_t *v, const char *path, const char *field,
                     json_t **dst) {
  int rc = sanitize_tree(v, 0);
  if (rc == SG_EINVAL)
    return bad(c, path, field, "nested deeper than %d levels", SG_NATIVE_MAX_DEPTH);
  if (rc) return rc;
  *dst = json_incref(v);
  return 0;
}

static int str_field(nctx_t *c, json_t *o, const char *path, const char *field, char **dst) {
  json_t *v = get(o, field);
  if (v == NULL) return 0;
  if (!json_is_string(v)) return bad(c, path, field, "expected a string");
  int changed;
  *dst = sg_utf8_sanitize(json_string_value(v), json_string_length(v), &changed);
  return *dst ? 0 : SG_ENOMEM;
}

/* An id field. required: missing is an error; otherwise *present says. */
static int id_field(nctx_t *c, json_t *o, const char *path, const char *field, int required,
                    uint8_t out[16], int *present) {
  static const uint8_t zero[16];
  json_t *v = get(o, field);
  if (present) *present = 0;
  if (v == NULL || (!required && json_is_string(v) && json_string_length(v) == 0)) {
    if (required) return bad(c, path, field, "missing");
    return 0;
  }
  if (!json_is_string(v) ||
      sg_id_parse(json_string_value(v), json_string_length(v), out) != 0)
    return bad(c, path, field, "expected 32 hex digits, 16 hex digits, 0x-hex or a dashed UUID");
  if (memcmp(out, zero, 16) == 0) {
    if (required) return bad(c, path, field, "id is all zero");
    return 0; /* an all-zero parent: a root span */
  }
  if (present) *present = 1;
  return 0;
}

/* ISO-8601 string, digit string, or integer epoch. 1 set, 0 absent, or
 * SG_EINVAL. */
static int time_value(nctx_t *c, json_t *v, const char *path, const char *field,
                      int64_t *us) {
  char rng[48];
  if (v == NULL) return 0;
  if (json_is_integer(v)) {
    if (sg_time_from_epoch_int(json_integer_value(v), us) != 0)
      return bad(c, path, field, "epoch must be a non-negative integer of at most 19 digits "
                 "(s, ms, µs or ns by digit count) within %s", sg__time_range_text(rng));
    return 1;
  }
  if (json_is_string(v)) {
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    size_t d = strspn(s, "0123456789");
    if (n > 0 && d == n) {
      if (sg_time_from_epoch_digits(s, n, us) != 0)
        return bad(c, path, field, "epoch must have at most 19 digits (s, ms, µs or ns by "
                   "digit count) within %s", sg__time_range_text(rng));
      return 1;
    }
    if (sg_time_parse_iso(s, n, us) != 0)
      return bad(c, path, field, "expected an ISO-8601 time within %s", sg__time_range_text(rng));
    return 1;
  }
  return bad(c, path, field, "expected an ISO-8601 string or an integer epoch");
}

/* Label lookups accepting the full label or the short form after a prefix
 * ("SERVER" for "SPAN_KIND_SERVER"), case-insensitive. */
static int label_parse(const char *s, const char *prefix, int (*parse)(const char *)) {
  int v = parse(s);
  if (v >= 0 || prefix == NULL) return v;
  char buf[64];
  size_t lp = strlen(prefix), ls = strlen(s);
  if (lp + ls >= sizeof(buf)) return -1;
  memcpy(buf, prefix, lp);
  memcpy(buf + lp, s, ls + 1);
  return parse(buf);
}

static int enum_field(nctx_t *c, json_t *o, const char *path, const char *field,
                      const char *prefix, int (*parse)(const char *), int count,
                      int allow_int, int8_t *dst) {
  json_t *v = get(o, field);
  if (v == NULL) return 0;
  if (allow_int && json_is_integer(v)) {
    json_int_t x = json_integer_value(v);
    if (x < 0 || x >= count) return bad(c, path, field, "unknown value %lld", (long long)x);
    *dst = (int8_t)x;
    return 0;
  }
  if (!json_is_string(v)) return bad(c, path, field, "expected a label string");
  int x = label_parse(json_string_value(v), prefix, parse);
  if (x < 0) {
    char shown[68];
    sg__printable(json_string_value(v), json_string_length(v), 64, shown, sizeof(shown));
    return bad(c, path, field, "unknown label \"%s\"", shown);
  }
  *dst = (int8_t)x;
  return 0;
}

static int array_field(nctx_t *c, json_t *o, const char *path, const char *field,
                       json_t **arr) {
  *arr = get(o, field);
  if (*arr && !json_is_array(*arr)) return bad(c, path, field, "expected an array");
  if (*arr && json_array_size(*arr) == 0) *arr = NULL;
  return 0;
}

static int events_field(nctx_t *c, json_t *o, const char *path, sg_span_t *s) {
  json_t *arr, *ev;
  size_t i;
  char sub[256];
  int rc;
  if ((rc = array_field(c, o, path, "events", &arr)) || arr == NULL) return rc;
  if ((s->events = json_array()) == NULL) return SG_ENOMEM;
  json_array_foreach(arr, i, ev) {
    int64_t ts = 0;
    json_t *attrs = NULL, *name;
    sg__pathf(sub, sizeof(sub), "%s.events[%zu]", path, i);
    if (!json_is_object(ev)) return bad(c, sub, NULL, "expected an object");
    name = get(ev, "name");
    if (name == NULL || !json_is_string(name)) return bad(c, sub, "name", "expected a string");
    rc = time_value(c, get(ev, "timestamp"), sub, "timestamp", &ts);
    if (rc == 0) return bad(c, sub, "timestamp", "missing");
    if (rc < 0) return rc;
    json_t *a = get(ev, "attributes");
    if (a && !json_is_object(a)) return bad(c, sub, "attributes", "expected an object");
    if (a && (rc = keep_tree(c, a, sub, "attributes", &attrs))) return rc;
    int changed;
    char *nm = sg_utf8_sanitize(json_string_value(name), json_string_length(name), &changed);
    if (nm == NULL) {
      json_decref(attrs);
      return SG_ENOMEM;
    }
    json_t *e = sg__event_json(nm, ts, attrs);
    free(nm);
    if (e == NULL || json_array_append_new(s->events, e)) return SG_ENOMEM;
  }
  return 0;
}

static int links_field(nctx_t *c, json_t *o, const char *path, sg_span_t *s) {
  json_t *arr, *lk;
  size_t i;
  char sub[256];
  int rc;
  if ((rc = array_field(c, o, path, "links", &arr)) || arr == NULL) return rc;
  if ((s->links = json_array()) == NULL) return SG_ENOMEM;
  json_array_foreach(arr, i, lk) {
    uint8_t t[16], sp[16];
    json_t *attrs, *l;
    sg__pathf(sub, sizeof(sub), "%s.links[%zu]", path, i);
    if (!json_is_object(lk)) return bad(c, sub, NULL, "expected an object");
    if (id_field(c, lk, sub, "trace_id", 1, t, NULL)) return SG_EINVAL;
    if (id_field(c, lk, sub, "span_id", 1, sp, NULL)) return SG_EINVAL;
    attrs = get(lk, "attributes");
    if (attrs && !json_is_object(attrs)) return bad(c, sub, "attributes", "expected an object");
    if (attrs && (rc = sanitize_tree(attrs, 0)))
      return rc == SG_EINVAL ? bad(c, sub, "attributes", "nested too deep") : rc;
    rc = sg__link_json(t, sp, attrs, &l);
    if (rc == SG_ETOOBIG) return bad(c, sub, "attributes", "too large to flatten");
    if (rc) return rc;
    if (json_array_append_new(s->links, l)) return SG_ENOMEM;
  }
  return 0;
}

static int64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Fill s from one span object: 0, SG_EINVAL (reason set) or SG_ENOMEM. */
static int span_fields(nctx_t *c, json_t *o, const char *path, sg_span_t *s) {
  int rc, has_start, has_end, present;
  json_t *v;
  if (!json_is_object(o)) return bad(c, path, NULL, "expected an object");
  if ((rc = id_field(c, o, path, "trace_id", 1, s->trace_id, NULL))) return rc;
  if ((rc = id_field(c, o, path, "span_id", 1, s->span_id, NULL))) return rc;
  if ((rc = id_field(c, o, path, "parent_id", 0, s->parent_id, &present))) return rc;
  s->has_parent = (uint8_t)present;
  if ((rc = str_field(c, o, path, "span_name", &s->span_name))) return rc;
  if (s->span_name == NULL && (s->span_name = strdup("")) == NULL) return SG_ENOMEM;
  if ((rc = enum_field(c, o, path, "span_kind", "SPAN_KIND_", sg_span_kind_parse,
                       SG_SPAN_KIND_COUNT, 1, &s->span_kind)) ||
      (rc = enum_field(c, o, path, "status_code", "STATUS_CODE_", sg_status_code_parse,
                       SG_STATUS_CODE_COUNT, 1, &s->status_code)) ||
      (rc = enum_field(c, o, path, "trace_type", NULL, sg_trace_type_parse,
                       SG_TRACE_TYPE_COUNT, 0, &s->trace_type)) ||
      (rc = enum_field(c, o, path, "span_type", NULL, sg_span_type_parse,
                       SG_SPAN_TYPE_COUNT, 0, &s->span_type)))
    return rc;
  if ((rc = str_field(c, o, path, "status_message", &s->status_message))) return rc;
  if (s->status_message && s->status_message[0] == '\0') {
    free(s->status_message);
    s->status_message = NULL;
  }
  if ((has_start = time_value(c, get(o, "start_time"), path, "start_time", &s->start_us)) < 0)
    return has_start;
  if ((has_end = time_value(c, get(o, "end_time"), path, "end_time", &s->end_us)) < 0)
    return has_end;
  if (!has_start && !has_end) s->start_us = s->end_us = now_us();
  else if (!has_start) s->start_us = s->end_us;
  else if (!has_end) s->end_us = s->start_us;
  if ((v = get(o, "attributes"))) {
    if (!json_is_object(v)) return bad(c, path, "attributes", "expected an object");
    if ((rc = keep_tree(c, v, path, "attributes", &s->attributes))) return rc;
  }
  if ((rc = events_field(c, o, path, s)) || (rc = links_field(c, o, path, s))) return rc;
  if ((rc = array_field(c, o, path, "references", &v))) return rc;
  if (v && (rc = keep_tree(c, v, path, "references", &s->references))) return rc;
  if ((rc = array_field(c, o, path, "hashes", &v))) return rc;
  if (v && (rc = keep_tree(c, v, path, "hashes", &s->hashes))) return rc;
  if ((rc = str_field(c, o, path, "session_id", &s->session_id)) ||
      (rc = str_field(c, o, path, "user_id", &s->user_id)) ||
      (rc = str_field(c, o, path, "agent_id", &s->agent_id)))
    return rc;
  return 0;
}

int sg_native_decode_json(const char *p, size_t n, sg_span_batch_t *out, sg_buf_t *err) {
  json_t *doc, *spans, *o;
  nctx_t c;
  size_t i, cost;
  char path[48];
  int rc;
  c.out = out;
  if ((rc = sg__json_load(p, n, &doc, &cost, err))) return rc;
  spans = json_is_object(doc) ? json_object_get(doc, "spans") : NULL;
  if (!json_is_array(spans)) {
    sg_json_release(doc, cost);
    sg_buf_puts(err, "body: expected a JSON object {\"spans\": [...]}");
    return SG_EPARSE;
  }
  json_array_foreach(spans, i, o) {
    sg_span_t s;
    memset(&s, 0, sizeof(s));
    s.trace_type = SG_NULL_ENUM;
    s.span_type = SG_NULL_ENUM;
    c.reason[0] = '\0';
    sg__pathf(path, sizeof(path), "spans[%zu]", i);
    rc = span_fields(&c, o, path, &s);
    if (rc == SG_EINVAL) {
      sg_span_batch_reject(out, "%s", c.reason);
      sg_span_clear(&s);
      rc = 0;
      continue;
    }
    sg_span_t *d = rc == 0 ? sg_span_batch_push(out) : NULL;
    if (d == NULL) {
      sg_span_clear(&s);
      rc = SG_ENOMEM;
      break;
    }
    *d = s;
  }
  sg_json_release(doc, cost); /* the spans keep what they reference */
  return rc;
}
