/* decode_support.c - the helpers the three decoders share, so that a value
 * becomes the same JSON and a problem the same message whatever the wire
 * format: base64, sanitised strings and doubles, Agenta's link and event
 * objects, printable excerpts and paths for messages, and the bounded load
 * of a JSON body. Declared in decode_internal.h.
 */
#include "decode.h"
#include "decode_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "json_load.h"

void sg__pathf(char *dst, size_t n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(dst, n, fmt, ap);
  va_end(ap);
}

json_t *sg__base64_json(const uint8_t *p, size_t n) {
  static const char tab[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t olen = (n + 2) / 3 * 4;
  char *o = malloc(olen + 1), *w = o;
  if (o == NULL) return NULL;
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
    *w++ = tab[v >> 18];
    *w++ = tab[v >> 12 & 63];
    *w++ = tab[v >> 6 & 63];
    *w++ = tab[v & 63];
  }
  if (n - i == 1) {
    uint32_t v = (uint32_t)p[i] << 16;
    *w++ = tab[v >> 18];
    *w++ = tab[v >> 12 & 63];
    *w++ = '=';
    *w++ = '=';
  } else if (n - i == 2) {
    uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
    *w++ = tab[v >> 18];
    *w++ = tab[v >> 12 & 63];
    *w++ = tab[v >> 6 & 63];
    *w++ = '=';
  }
  *w = '\0';
  json_t *j = json_stringn_nocheck(o, olen);
  free(o);
  return j;
}

static int b64val(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

int sg__base64_decode(const char *s, size_t n, sg_buf_t *out) {
  while (n > 0 && s[n - 1] == '=') n--; /* padding is optional */
  if (n % 4 == 1) return SG_EINVAL;
  if (sg_buf_reserve(out, n / 4 * 3 + 2) != 0) return SG_ENOMEM;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    int v = b64val((unsigned char)s[i]);
    if (v < 0) return SG_EINVAL;
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out->data[out->len++] = (char)(acc >> bits & 0xff);
    }
  }
  out->data[out->len] = '\0';
  return 0;
}

json_t *sg__json_string_sanitized(const char *s, size_t n) {
  /* jansson validates UTF-8 as strictly as PostgreSQL (no overlongs, no
   * surrogates); only NUL needs a separate look. Clean strings: one copy. */
  if (memchr(s, 0, n) == NULL) {
    json_t *j = json_stringn(s, n);
    if (j) return j;
  }
  int changed;
  char *c = sg_utf8_sanitize(s, n, &changed);
  if (c == NULL) return NULL;
  json_t *j = json_string_nocheck(c);
  free(c);
  return j;
}

void sg__printable(const char *s, size_t n, size_t max, char *out, size_t outsz) {
  size_t o = 0, i = 0;
  if (outsz == 0) return;
  if (max > outsz - 1) max = outsz - 1;
  while (i < n && o < max) {
    unsigned char c = (unsigned char)s[i];
    size_t l = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3
             : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (l > 1 && i + l <= n) {
      int changed = 1;
      char *t = sg_utf8_sanitize(s + i, l, &changed);
      free(t);
      if (t == NULL || changed) l = 0;
    } else if (l > 1) {
      l = 0;
    }
    if (l == 0 || (l == 1 && (c < 0x20 || c == 0x7f))) {
      out[o++] = '?';
      i += l ? l : 1;
      continue;
    }
    if (o + l > max) break;
    memcpy(out + o, s + i, l);
    o += l;
    i += l;
  }
  out[o] = '\0';
}

json_t *sg__json_double(double d) {
  if (isnan(d)) return json_string("NaN");
  if (isinf(d)) return json_string(d > 0 ? "Infinity" : "-Infinity");
  return json_real(d);
}

/* Rough size of a JSON tree, to bound what flattening may produce. */
static size_t json_weight(json_t *v, int depth) {
  size_t w = 8;
  if (depth > SG_ATTR_MAX_DEPTH + 8) return w;
  if (json_is_object(v)) {
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) w += strlen(k) + json_weight(x, depth + 1);
  } else if (json_is_array(v)) {
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) w += json_weight(x, depth + 1);
  }
  return w;
}

/* Agenta's marshall(): nested dicts and lists become dotted keys
 * ("attributes.a.0.b"); empty containers vanish. budget bounds the key
 * bytes produced (a deep chain of long keys with many leaves would
 * otherwise grow quadratically). 0, SG_ENOMEM or SG_ETOOBIG. */
static int marshall(json_t *dst, sg_buf_t *key, json_t *v, size_t *budget, int depth) {
  size_t base = key->len;
  int rc = 0;
  if (depth > SG_ATTR_MAX_DEPTH + 8) return SG_ETOOBIG;
  if (json_is_object(v) || json_is_array(v)) {
    const char *k;
    json_t *x;
    size_t i;
    if (json_is_object(v)) {
      json_object_foreach(v, k, x) {
        key->len = base;
        if (sg_buf_putc(key, '.') || sg_buf_puts(key, k)) return SG_ENOMEM;
        if ((rc = marshall(dst, key, x, budget, depth + 1)) != 0) return rc;
      }
    } else {
      json_array_foreach(v, i, x) {
        key->len = base;
        if (sg_buf_printf(key, ".%zu", i)) return SG_ENOMEM;
        if ((rc = marshall(dst, key, x, budget, depth + 1)) != 0) return rc;
      }
    }
    key->len = base;
    key->data[base] = '\0';
    return 0;
  }
  if (key->len > *budget) return SG_ETOOBIG;
  *budget -= key->len;
  if (json_object_set_nocheck(dst, key->data, v) != 0) return SG_ENOMEM;
  return 0;
}

int sg__link_json(const uint8_t trace_id[16], const uint8_t span_id[16], json_t *attrs,
                  json_t **out) {
  char t[37], s[37];
  sg_uuid_format(trace_id, t);
  sg_uuid_format(span_id, s);
  *out = NULL;
  json_t *o = json_object();
  if (o == NULL) return SG_ENOMEM;
  if (json_object_set_new_nocheck(o, "trace_id", json_string_nocheck(t)) ||
      json_object_set_new_nocheck(o, "span_id", json_string_nocheck(s))) {
    json_decref(o);
    return SG_ENOMEM;
  }
  if (attrs && (json_object_size(attrs) > 0 || json_array_size(attrs) > 0)) {
    sg_buf_t key = SG_BUF_INIT;
    size_t budget = 8 * json_weight(attrs, 0) + 4096;
    int rc = sg_buf_puts(&key, "attributes");
    if (rc == 0) rc = marshall(o, &key, attrs, &budget, 0);
    sg_buf_free(&key);
    if (rc != 0) {
      json_decref(o);
      return rc;
    }
  }
  *out = o;
  return 0;
}

json_t *sg__event_json(const char *name, int64_t ts_us, json_t *attrs) {
  char ts[32];
  sg_time_format(ts_us, ts);
  json_t *o = json_object();
  if (o == NULL || json_object_set_new_nocheck(o, "name", json_string_nocheck(name)) ||
      json_object_set_new_nocheck(o, "timestamp", json_string_nocheck(ts))) {
    json_decref(o);
    json_decref(attrs);
    return NULL;
  }
  /* set_new steals attrs, also when it fails */
  if (json_object_set_new_nocheck(o, "attributes", attrs ? attrs : json_object())) {
    json_decref(o);
    return NULL;
  }
  return o;
}

const char *sg__time_range_text(char out[48]) {
  char lo[32], hi[32];
  sg_time_format(SG_TIME_MIN_US, lo);
  sg_time_format(SG_TIME_MAX_US, hi);
  /* whole seconds are enough here: "YYYY-MM-DDThh:mm:ss" is 19 chars */
  memcpy(out, lo, 19);
  memcpy(out + 19, "Z..", 3);
  memcpy(out + 22, hi, 19);
  memcpy(out + 41, "Z", 2);
  return out;
}

int sg__json_load(const char *p, size_t n, json_t **doc, size_t *cost, sg_buf_t *err) {
  json_error_t je;
  size_t budget = sg_json_tree_budget(n);
  int rc = sg_json_load_bounded(p, n, JSON_ALLOW_NUL, budget, doc, &je, cost);
  if (rc == SG_ETOOBIG) {
    sg_buf_printf(err, "JSON body too large to decode: its %zu bytes would take about %zu MiB once "
                  "parsed, over the %zu MiB allowed for it (%dx its size + 1 MiB, at most %zu "
                  "MiB); send fewer spans per request, or protobuf",
                  n, *cost >> 20, budget >> 20, SG_JSON_TREE_RATIO, SG_JSON_TREE_MAX >> 20);
  } else if (rc == SG_EPARSE) {
    char why[sizeof(je.text)];
    sg__printable(je.text, strlen(je.text), sizeof(why) - 1, why, sizeof(why));
    sg_buf_printf(err, "body is not valid JSON: %s at line %d column %d", why, je.line,
                  je.column);
  }
  return rc;
}
