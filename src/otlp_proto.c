/* otlp_proto.c - OTLP/HTTP protobuf bodies to span records; the protobuf
 * response bodies.
 *
 * The request is read in place with a small wire-format reader instead of
 * protobuf_c_message_unpack(): unpack builds the whole message tree first
 * (an empty sub-message of 2 bytes costs a ~200-byte struct, so a 10 MiB body
 * could cost a gigabyte) and recurses without a depth limit (nested
 * ArrayValues overflow the stack). Reading in place allocates only what the
 * span records keep, skips over values nested too deep without recursing,
 * and validates the framing of everything it walks. The generated protobuf-c
 * code (build/gen) is used to write the responses, and by the tests to build
 * requests.
 *
 * Field numbers are those of proto/opentelemetry/proto/ (opentelemetry-proto).
 */
#include "decode.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode_internal.h"
#include "err.h"
#include "google/rpc/status.pb-c.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"

/* ---- wire reader ------------------------------------------------------------ */

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

typedef struct {
  uint32_t num;
  int wt;
  uint64_t u;         /* varint, fixed64, fixed32 */
  const uint8_t *p;   /* WT_LEN */
  size_t n;
} fld_t;

typedef struct {
  const uint8_t *p, *end;
} rd_t;

typedef struct {
  sg_span_batch_t *out;
  sg_buf_t *err;
  /* where the reader is, for messages: "resource_spans[0].scope_spans[1].spans[3]";
   * kept as numbers and written out only for a message (formatting it for
   * every span cost more than reading the span's ids) */
  enum { AT_NONE, AT_RESOURCE, AT_SCOPE, AT_SPAN } at;
  size_t ri, si, spi;
  char reason[320];   /* why the current span is rejected; "" if it is not */
  size_t budget;      /* bytes the decoded values may still cost (see below) */
} pctx_t;

/* Allocation budget. Protobuf is dense: an empty Event is 2 bytes on the
 * wire but 4 JSON values on the heap. Each value created is charged its
 * approximate heap cost, and a request may cost at most SG_PROTO_EXPANSION
 * times its size (plus a constant): ordinary telemetry stays far below
 * (about 10x), pathological bodies of empty elements fail instead of
 * taking memory out of proportion to the body size limit. */
#define SG_PROTO_EXPANSION 64
#define SG_PROTO_BUDGET_MIN (1u << 20)
#define COST_SCALAR 48
#define COST_CONTAINER 192

/* The reader's place as text ("" at the top level). */
static void where(const pctx_t *c, char *out, size_t n) {
  switch (c->at) {
  case AT_RESOURCE: snprintf(out, n, "resource_spans[%zu].resource", c->ri); break;
  case AT_SCOPE: snprintf(out, n, "resource_spans[%zu].scope_spans[%zu].scope", c->ri, c->si); break;
  case AT_SPAN: snprintf(out, n, "resource_spans[%zu].scope_spans[%zu].spans[%zu]", c->ri, c->si, c->spi); break;
  default: out[0] = '\0';
  }
}

static int perr(pctx_t *c, const char *what) {
  char w[96];
  where(c, w, sizeof w);
  if (w[0])
    sg_buf_printf(c->err, "protobuf: %s in %s", what, w);
  else
    sg_buf_printf(c->err, "protobuf: %s", what);
  return SG_EPARSE;
}

static void reject_reason(pctx_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void reject_reason(pctx_t *c, const char *fmt, ...) {
  if (c->reason[0]) return; /* keep the first */
  char w[96];
  where(c, w, sizeof w);
  int k = snprintf(c->reason, sizeof(c->reason), "%s.", w);
  if (k < 0 || (size_t)k >= sizeof(c->reason)) k = 0;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->reason + k, sizeof(c->reason) - (size_t)k, fmt, ap);
  va_end(ap);
}

static int rd_varint_long(rd_t *r, uint64_t *v) {
  uint64_t x = 0;
  for (int shift = 0; shift < 70; shift += 7) {
    if (r->p >= r->end) return -1;
    uint8_t b = *r->p++;
    x |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = x;
      return 0;
    }
  }
  return -2; /* more than 10 bytes */
}

static inline int rd_varint(rd_t *r, uint64_t *v) {
  if (r->p < r->end && *r->p < 0x80) { /* tags and most lengths: one byte */
    *v = *r->p++;
    return 0;
  }
  return rd_varint_long(r, v);
}

/* Next field: 1 read, 0 at the end, SG_EPARSE (message in err). */
static int rd_next(pctx_t *c, rd_t *r, fld_t *f) {
  uint64_t tag;
  if (r->p >= r->end) return 0;
  int e = rd_varint(r, &tag);
  if (e == -1) return perr(c, "truncated message");
  if (e == -2 || tag >> 32) return perr(c, "malformed varint");
  f->num = (uint32_t)(tag >> 3);
  f->wt = (int)(tag & 7);
  if (f->num == 0) return perr(c, "invalid field number 0");
  switch (f->wt) {
  case WT_VARINT:
    e = rd_varint(r, &f->u);
    if (e == -1) return perr(c, "truncated message");
    if (e == -2) return perr(c, "malformed varint");
    return 1;
  case WT_I64:
    if (r->end - r->p < 8) return perr(c, "truncated message");
    f->u = 0;
    for (int i = 7; i >= 0; i--) f->u = f->u << 8 | r->p[i];
    r->p += 8;
    return 1;
  case WT_I32:
    if (r->end - r->p < 4) return perr(c, "truncated message");
    f->u = (uint64_t)r->p[0] | (uint64_t)r->p[1] << 8 | (uint64_t)r->p[2] << 16 |
           (uint64_t)r->p[3] << 24;
    r->p += 4;
    return 1;
  case WT_LEN: {
    uint64_t len;
    e = rd_varint(r, &len);
    if (e == -1) return perr(c, "truncated message");
    if (e == -2) return perr(c, "malformed varint");
    if (len > (uint64_t)(r->end - r->p)) return perr(c, "truncated message");
    f->p = r->p;
    f->n = (size_t)len;
    r->p += len;
    return 1;
  }
  default:
    /* 3/4 are the deprecated groups, which OTLP never uses; 6/7 do not exist. */
    return perr(c, "unsupported wire type");
  }
}

/* Charges cost to the budget: 0, or SG_ETOOBIG (message in err) when the
 * request would take more than its budget: too large, as JSON over its own
 * budget is (ingest answers 413), not malformed. */
static int charge(pctx_t *c, size_t cost) {
  if (cost > c->budget) {
    perr(c, "message expands too much when decoded");
    return SG_ETOOBIG;
  }
  c->budget -= cost;
  return 0;
}

static int want(pctx_t *c, const fld_t *f, int wt, const char *name) {
  if (f->wt == wt) return 0;
  char m[96];
  snprintf(m, sizeof(m), "wrong wire type for %s", name);
  return perr(c, m);
}

/* ---- attributes ------------------------------------------------------------- */

static int kv_into(pctx_t *c, const uint8_t *p, size_t n, json_t *obj, int depth);

/* A string value as a JSON string: a clean one (valid UTF-8 without NUL, as
 * most are) is copied straight from the wire; jansson's own check would
 * only walk it a second time. The others are sanitized as before. */
static json_t *str_value(const uint8_t *p, size_t n) {
  if (sg_utf8_valid_len((const char *)p, n) == n) return json_stringn_nocheck((const char *)p, n);
  return sg__json_string_sanitized((const char *)p, n);
}

/* One AnyValue message merged into *val (a later member of the oneof
 * replaces the earlier one, as protobuf merging does). depth counts the
 * array/kvlist levels above this value. */
static int any_value(pctx_t *c, const uint8_t *p, size_t n, int depth, json_t **val) {
  rd_t r = {p, p + n};
  fld_t f;
  int rc;
  while ((rc = rd_next(c, &r, &f)) == 1) {
    json_t *nv = NULL;
    switch (f.num) {
    case 1:
      if ((rc = want(c, &f, WT_LEN, "AnyValue.string_value"))) return rc;
      nv = str_value(f.p, f.n);
      break;
    case 2:
      if ((rc = want(c, &f, WT_VARINT, "AnyValue.bool_value"))) return rc;
      nv = json_boolean(f.u != 0);
      break;
    case 3:
      if ((rc = want(c, &f, WT_VARINT, "AnyValue.int_value"))) return rc;
      nv = json_integer((json_int_t)(int64_t)f.u);
      break;
    case 4: {
      if ((rc = want(c, &f, WT_I64, "AnyValue.double_value"))) return rc;
      double d;
      memcpy(&d, &f.u, sizeof(d));
      nv = sg__json_double(d);
      break;
    }
    case 5:
    case 6:
      if ((rc = want(c, &f, WT_LEN, f.num == 5 ? "AnyValue.array_value"
                                               : "AnyValue.kvlist_value")))
        return rc;
      if (depth >= SG_ATTR_MAX_DEPTH) {
        reject_reason(c, "attributes: values nested deeper than %d levels",
                      SG_ATTR_MAX_DEPTH);
        nv = json_null();
        break;
      }
      nv = f.num == 5 ? json_array() : json_object();
      if (nv == NULL) return SG_ENOMEM;
      {
        rd_t sub = {f.p, f.p + f.n};
        fld_t g;
        while ((rc = rd_next(c, &sub, &g)) == 1) {
          if (g.num != 1) continue;
          if ((rc = want(c, &g, WT_LEN, f.num == 5 ? "ArrayValue.values"
                                                   : "KeyValueList.values"))) break;
          if (f.num == 5) {
            json_t *e = NULL;
            if ((rc = any_value(c, g.p, g.n, depth + 1, &e)) != 0) {
              json_decref(e); /* what it merged before failing */
              break;
            }
            if (e == NULL) e = json_null();
            if (json_array_append_new(nv, e) != 0) { rc = SG_ENOMEM; break; }
          } else if ((rc = kv_into(c, g.p, g.n, nv, depth + 1)) != 0) {
            break;
          }
        }
        if (rc != 0) {
          json_decref(nv);
          return rc;
        }
      }
      break;
    case 7:
      if ((rc = want(c, &f, WT_LEN, "AnyValue.bytes_value"))) return rc;
      nv = sg__base64_json(f.p, f.n);
      break;
    default:
      continue; /* unknown field */
    }
    if (nv == NULL) return SG_ENOMEM;
    json_decref(*val);
    *val = nv;
    if ((rc = charge(c, (f.num == 5 || f.num == 6 ? COST_CONTAINER : COST_SCALAR) +
                            (f.wt == WT_LEN ? f.n : 0))) != 0)
      return rc;
  }
  return rc;
}

/* One KeyValue message into obj (last key wins). */
static int kv_into(pctx_t *c, const uint8_t *p, size_t n, json_t *obj, int depth) {
  rd_t r = {p, p + n};
  fld_t f;
  const uint8_t *key = NULL;
  size_t keylen = 0;
  json_t *val = NULL;
  int rc;
  while ((rc = rd_next(c, &r, &f)) == 1) {
    if (f.num == 1) {
      if ((rc = want(c, &f, WT_LEN, "KeyValue.key"))) break;
      key = f.p;
      keylen = f.n;
    } else if (f.num == 2) {
      if ((rc = want(c, &f, WT_LEN, "KeyValue.value"))) break;
      if ((rc = any_value(c, f.p, f.n, depth, &val)) != 0) break;
    }
  }
  if (rc != 0) {
    json_decref(val);
    return rc;
  }
  if (val == NULL) val = json_null();
  if ((rc = charge(c, COST_SCALAR + keylen)) != 0) {
    json_decref(val);
    return rc;
  }
  if (key == NULL) key = (const uint8_t *)"";
  /* A clean key goes in as it is on the wire, without a sanitized copy. */
  if (sg_utf8_valid_len((const char *)key, keylen) == keylen)
    return json_object_setn_new_nocheck(obj, (const char *)key, keylen, val) == 0 ? 0 : SG_ENOMEM;
  int changed;
  char *k = sg_utf8_sanitize((const char *)key, keylen, &changed);
  if (k == NULL || json_object_set_new_nocheck(obj, k, val) != 0) {
    free(k);
    return SG_ENOMEM;
  }
  free(k);
  return 0;
}

/* A repeated KeyValue field occurrence appended into *obj (created lazily). */
static int attr_field(pctx_t *c, const fld_t *f, json_t **obj, const char *name) {
  int rc = want(c, f, WT_LEN, name);
  if (rc) return rc;
  if (*obj == NULL) {
    if ((rc = charge(c, COST_CONTAINER)) != 0) return rc;
    if ((*obj = json_object()) == NULL) return SG_ENOMEM;
  }
  return kv_into(c, f->p, f->n, *obj, 0);
}

static char *cstr_sanitized(const uint8_t *p, size_t n) {
  int changed;
  return sg_utf8_sanitize((const char *)p, n, &changed);
}

/* ---- spans ------------------------------------------------------------------ */

static int64_t ns_to_us(uint64_t ns) {
  return (int64_t)(ns / 1000); /* < 1.9e16 µs: no overflow */
}

static int time_in_range(int64_t us) {
  return us >= SG_TIME_MIN_US && us <= SG_TIME_MAX_US;
}

static int decode_event(pctx_t *c, const uint8_t *p, size_t n, json_t *events) {
  rd_t r = {p, p + n};
  fld_t f;
  uint64_t t = 0;
  const uint8_t *name = NULL;
  size_t namelen = 0;
  json_t *attrs = NULL;
  int rc;
  while ((rc = rd_next(c, &r, &f)) == 1) {
    if (f.num == 1) {
      if ((rc = want(c, &f, WT_I64, "Event.time_unix_nano"))) break;
      t = f.u;
    } else if (f.num == 2) {
      if ((rc = want(c, &f, WT_LEN, "Event.name"))) break;
      name = f.p;
      namelen = f.n;
    } else if (f.num == 3) {
      if ((rc = attr_field(c, &f, &attrs, "Event.attributes"))) break;
    }
  }
  if (rc == 0) rc = charge(c, 2 * COST_CONTAINER + 2 * COST_SCALAR + namelen);
  if (rc != 0) {
    json_decref(attrs);
    return rc;
  }
  char *nm = cstr_sanitized(name ? name : (const uint8_t *)"", namelen);
  json_t *ev = nm ? sg__event_json(nm, ns_to_us(t), attrs) : (json_decref(attrs), NULL);
  free(nm);
  if (ev == NULL || json_array_append_new(events, ev) != 0) return SG_ENOMEM;
  return 0;
}

static int decode_link(pctx_t *c, const uint8_t *p, size_t n, size_t idx, json_t *links) {
  rd_t r = {p, p + n};
  fld_t f;
  const uint8_t *tid = NULL, *sid = NULL;
  size_t tn = 0, sn = 0;
  json_t *attrs = NULL;
  int rc;
  while ((rc = rd_next(c, &r, &f)) == 1) {
    if (f.num == 1) {
      if ((rc = want(c, &f, WT_LEN, "Link.trace_id"))) break;
      tid = f.p;
      tn = f.n;
    } else if (f.num == 2) {
      if ((rc = want(c, &f, WT_LEN, "Link.span_id"))) break;
      sid = f.p;
      sn = f.n;
    } else if (f.num == 4) {
      if ((rc = attr_field(c, &f, &attrs, "Link.attributes"))) break;
    }
  }
  if (rc == 0) {
    uint8_t t[16], s[16];
    if (sg_id_from_bytes(tid, tn, t) != 0 || tn != 16) {
      reject_reason(c, "links[%zu].trace_id: must be 16 bytes, not all zero (got %zu)", idx, tn);
    } else if (sg_id_from_bytes(sid, sn, s) != 0) {
      reject_reason(c, "links[%zu].span_id: must be 8 or 16 bytes, not all zero (got %zu)", idx, sn);
    } else if (!c->reason[0] && (rc = charge(c, COST_CONTAINER + 2 * COST_SCALAR)) == 0) {
      json_t *l;
      rc = sg__link_json(t, s, attrs, &l);
      if (rc == SG_ETOOBIG) {
        reject_reason(c, "links[%zu].attributes: too large to flatten", idx);
        rc = 0;
      } else if (rc == 0 && json_array_append_new(links, l) != 0) {
        rc = SG_ENOMEM;
      }
    }
  }
  json_decref(attrs);
  return rc;
}

static int decode_status(pctx_t *c, const uint8_t *p, size_t n, sg_span_t *s) {
  rd_t r = {p, p + n};
  fld_t f;
  int rc;
  while ((rc = rd_next(c, &r, &f)) == 1) {
    if (f.num == 2) {
      if ((rc = want(c, &f, WT_LEN, "Status.message"))) return rc;
      free(s->status_message);
      s->status_message = NULL;
      if (f.n > 0 && (s->status_message = cstr_sanitized(f.p, f.n)) == NULL)
        return SG_ENOMEM;
    } else if (f.num == 3) {
      if ((rc = want(c, &f, WT_VARINT, "Status.code"))) return rc;
      int32_t v = (int32_t)f.u;
      s->status_code = (int8_t)(v >= 0 && v < SG_STATUS_CODE_COUNT ? v : SG_STATUS_CODE_UNSET);
    }
  }
  return rc;
}

static int decode_span(pctx_t *c, const uint8_t *p, size_t n, json_t *resource,
                       json_t *scope) {
  sg_span_t s;
  memset(&s, 0, sizeof(s));
  s.trace_type = SG_NULL_ENUM;
  s.span_type = SG_NULL_ENUM;
  rd_t r = {p, p + n};
  fld_t f;
  const uint8_t *tid = NULL, *sid = NULL, *pid = NULL, *name = NULL;
  size_t tn = 0, sn = 0, pn = 0, namelen = 0, nlinks = 0;
  int rc;
  while ((rc = rd_next(c, &r, &f)) == 1) {
    switch (f.num) {
    case 1:
      if ((rc = want(c, &f, WT_LEN, "Span.trace_id"))) goto fail;
      tid = f.p, tn = f.n;
      break;
    case 2:
      if ((rc = want(c, &f, WT_LEN, "Span.span_id"))) goto fail;
      sid = f.p, sn = f.n;
      break;
    case 4:
      if ((rc = want(c, &f, WT_LEN, "Span.parent_span_id"))) goto fail;
      pid = f.p, pn = f.n;
      break;
    case 5:
      if ((rc = want(c, &f, WT_LEN, "Span.name"))) goto fail;
      name = f.p, namelen = f.n;
      break;
    case 6: {
      if ((rc = want(c, &f, WT_VARINT, "Span.kind"))) goto fail;
      int32_t v = (int32_t)f.u;
      s.span_kind = (int8_t)(v >= 0 && v < SG_SPAN_KIND_COUNT ? v : SG_SPAN_KIND_UNSPECIFIED);
      break;
    }
    case 7:
      if ((rc = want(c, &f, WT_I64, "Span.start_time_unix_nano"))) goto fail;
      s.start_us = ns_to_us(f.u);
      break;
    case 8:
      if ((rc = want(c, &f, WT_I64, "Span.end_time_unix_nano"))) goto fail;
      s.end_us = ns_to_us(f.u);
      break;
    case 9:
      if ((rc = attr_field(c, &f, &s.attributes, "Span.attributes"))) goto fail;
      break;
    case 11:
      if ((rc = want(c, &f, WT_LEN, "Span.events"))) goto fail;
      if (s.events == NULL && (s.events = json_array()) == NULL) goto nomem;
      if ((rc = decode_event(c, f.p, f.n, s.events))) goto fail;
      break;
    case 13:
      if ((rc = want(c, &f, WT_LEN, "Span.links"))) goto fail;
      if (s.links == NULL && (s.links = json_array()) == NULL) goto nomem;
      if ((rc = decode_link(c, f.p, f.n, nlinks++, s.links))) goto fail;
      break;
    case 15:
      if ((rc = want(c, &f, WT_LEN, "Span.status"))) goto fail;
      if ((rc = decode_status(c, f.p, f.n, &s))) goto fail;
      break;
    default:
      break; /* trace_state, flags, dropped counts, unknown fields */
    }
  }
  if (rc != 0) goto fail;

  if (sg_id_from_bytes(tid, tn, s.trace_id) != 0 || tn != 16)
    reject_reason(c, "trace_id: must be 16 bytes, not all zero (got %zu bytes)", tn);
  else if (sg_id_from_bytes(sid, sn, s.span_id) != 0)
    reject_reason(c, "span_id: must be 8 or 16 bytes, not all zero (got %zu bytes)", sn);
  char rng[48];
  if (!time_in_range(s.start_us))
    reject_reason(c, "start_time_unix_nano: outside %s", sg__time_range_text(rng));
  else if (!time_in_range(s.end_us))
    reject_reason(c, "end_time_unix_nano: outside %s", sg__time_range_text(rng));
  if (pn > 0) {
    static const uint8_t zero[16];
    if ((pn == 8 || pn == 16) && memcmp(pid, zero, pn) == 0) {
      /* An all-zero parent is how some SDKs write "no parent": a root. */
    } else if (sg_id_from_bytes(pid, pn, s.parent_id) != 0) {
      reject_reason(c, "parent_span_id: must be empty, 8 or 16 bytes (got %zu bytes)", pn);
    } else {
      s.has_parent = 1;
    }
  }
  if (c->reason[0]) {
    sg_span_batch_reject(c->out, "%s", c->reason);
    sg_span_clear(&s);
    return 0;
  }
  if ((rc = charge(c, sizeof(sg_span_t) + COST_SCALAR + namelen)) != 0) goto fail;
  if ((s.span_name = cstr_sanitized(name ? name : (const uint8_t *)"", namelen)) == NULL)
    goto nomem;
  if (resource) s.resource = json_incref(resource);
  if (scope) s.scope = json_incref(scope);
  sg_span_t *d = sg_span_batch_push(c->out);
  if (d == NULL) goto nomem;
  *d = s;
  return 0;
nomem:
  rc = SG_ENOMEM;
fail:
  sg_span_clear(&s);
  return rc;
}

/* ScopeSpans: the scope first (wherever it sits on the wire), then spans. */
static int decode_scope_spans(pctx_t *c, const uint8_t *p, size_t n, size_t ri, size_t si,
                              json_t *resource, const char *res_reason) {
  rd_t r = {p, p + n};
  fld_t f;
  json_t *scope = NULL, *sattrs = NULL;
  const uint8_t *name = NULL, *version = NULL;
  size_t namelen = 0, verlen = 0, spi = 0;
  int rc, have_scope = 0;
  c->at = AT_SCOPE, c->ri = ri, c->si = si;
  strcpy(c->reason, res_reason);
  while ((rc = rd_next(c, &r, &f)) == 1) {
    if (f.num != 1) continue;
    if ((rc = want(c, &f, WT_LEN, "ScopeSpans.scope"))) goto out;
    have_scope = 1;
    rd_t sr = {f.p, f.p + f.n};
    fld_t g;
    while ((rc = rd_next(c, &sr, &g)) == 1) {
      if (g.num == 1) {
        if ((rc = want(c, &g, WT_LEN, "InstrumentationScope.name"))) goto out;
        name = g.p, namelen = g.n;
      } else if (g.num == 2) {
        if ((rc = want(c, &g, WT_LEN, "InstrumentationScope.version"))) goto out;
        version = g.p, verlen = g.n;
      } else if (g.num == 3) {
        if ((rc = attr_field(c, &g, &sattrs, "InstrumentationScope.attributes"))) goto out;
      }
    }
    if (rc) goto out;
  }
  if (rc) goto out;
  char scope_reason[sizeof(c->reason)];
  strcpy(scope_reason, c->reason);
  if (have_scope) {
    if ((rc = charge(c, 2 * COST_CONTAINER + 2 * COST_SCALAR + namelen + verlen)) != 0)
      goto out;
    if ((scope = json_object()) == NULL) goto nomem;
    if (sattrs == NULL && (sattrs = json_object()) == NULL) goto nomem;
    if (json_object_set_new_nocheck(scope, "name", sg__json_string_sanitized(
                                        name ? (const char *)name : "", namelen)) ||
        json_object_set_new_nocheck(scope, "version", sg__json_string_sanitized(
                                        version ? (const char *)version : "", verlen)) ||
        json_object_set_nocheck(scope, "attributes", sattrs))
      goto nomem;
  }
  r.p = p;
  while ((rc = rd_next(c, &r, &f)) == 1) {
    if (f.num != 2) continue;
    c->at = AT_SPAN, c->ri = ri, c->si = si, c->spi = spi++;
    if ((rc = want(c, &f, WT_LEN, "ScopeSpans.spans"))) goto out;
    strcpy(c->reason, scope_reason);
    if ((rc = decode_span(c, f.p, f.n, resource, scope))) goto out;
  }
  goto out;
nomem:
  rc = SG_ENOMEM;
out:
  json_decref(scope);
  json_decref(sattrs);
  return rc;
}

/* ResourceSpans: the resource first (wherever it sits), then scope_spans. */
static int decode_resource_spans(pctx_t *c, const uint8_t *p, size_t n, size_t ri) {
  rd_t r = {p, p + n};
  fld_t f;
  json_t *res = NULL;
  size_t si = 0;
  int rc;
  c->at = AT_RESOURCE, c->ri = ri;
  c->reason[0] = '\0';
  while ((rc = rd_next(c, &r, &f)) == 1) {
    if (f.num != 1) continue;
    if ((rc = want(c, &f, WT_LEN, "ResourceSpans.resource"))) goto out;
    rd_t rr = {f.p, f.p + f.n};
    fld_t g;
    while ((rc = rd_next(c, &rr, &g)) == 1)
      if (g.num == 1 && (rc = attr_field(c, &g, &res, "Resource.attributes"))) goto out;
    if (rc) goto out;
  }
  if (rc) goto out;
  char res_reason[sizeof(c->reason)];
  strcpy(res_reason, c->reason);
  r.p = p;
  while ((rc = rd_next(c, &r, &f)) == 1) {
    if (f.num != 2) continue;
    if ((rc = want(c, &f, WT_LEN, "ResourceSpans.scope_spans"))) goto out;
    if ((rc = decode_scope_spans(c, f.p, f.n, ri, si++, res, res_reason))) goto out;
  }
out:
  json_decref(res);
  return rc;
}

int sg_otlp_decode_proto(const uint8_t *p, size_t n, sg_span_batch_t *out, sg_buf_t *err) {
  pctx_t c;
  c.out = out;
  c.err = err;
  c.at = AT_NONE;
  c.reason[0] = '\0';
  c.budget = n > (SIZE_MAX - SG_PROTO_BUDGET_MIN) / SG_PROTO_EXPANSION
                 ? SIZE_MAX
                 : n * SG_PROTO_EXPANSION + SG_PROTO_BUDGET_MIN;
  rd_t r = {p, p + n};
  fld_t f;
  size_t ri = 0;
  int rc;
  if (n == 0) return 0; /* an empty message is a valid, empty request */
  while ((rc = rd_next(&c, &r, &f)) == 1) {
    if (f.num != 1) continue;
    if ((rc = want(&c, &f, WT_LEN, "ExportTraceServiceRequest.resource_spans"))) return rc;
    if ((rc = decode_resource_spans(&c, f.p, f.n, ri++))) return rc;
    c.at = AT_NONE;
  }
  return rc;
}

/* ---- responses -------------------------------------------------------------- */

static int pack_into(const ProtobufCMessage *m, sg_buf_t *out) {
  size_t sz = protobuf_c_message_get_packed_size(m);
  if (sg_buf_reserve(out, sz) != 0) return SG_ENOMEM;
  protobuf_c_message_pack(m, (uint8_t *)out->data + out->len);
  out->len += sz;
  out->data[out->len] = '\0';
  return 0;
}

int sg_otlp_response_proto(size_t rejected, const char *msg, sg_buf_t *out) {
  Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceResponse resp =
      OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_SERVICE_RESPONSE__INIT;
  Opentelemetry__Proto__Collector__Trace__V1__ExportTracePartialSuccess ps =
      OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_PARTIAL_SUCCESS__INIT;
  if (rejected > 0 || (msg && *msg)) {
    ps.rejected_spans = (int64_t)rejected;
    ps.error_message = (char *)(msg ? msg : "");
    resp.partial_success = &ps;
  }
  return pack_into(&resp.base, out);
}

int sg_rpc_status_proto(int code, const char *msg, sg_buf_t *out) {
  Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
  st.code = code;
  st.message = (char *)(msg ? msg : "");
  return pack_into(&st.base, out);
}
