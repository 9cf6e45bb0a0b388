/* decode_check.h - what every decoder fuzz target checks, beyond the
 * sanitizers: the return code is 0, SG_EPARSE, SG_ETOOBIG or SG_ENOMEM;
 * SG_EPARSE and SG_ETOOBIG come with a one-line message; messages are one
 * line of valid UTF-8; every kept span has a name, in-range times and
 * enums, valid strings, JSON values that jansson can serialise and read
 * back (so no invalid UTF-8 slipped in through the nocheck setters), and
 * an attributes column, rendered with nesting as the default transform
 * asks, that reads back as a JSON object. Included by the fuzz_*.c targets
 * only. */
#ifndef SG_FUZZ_DECODE_CHECK_H
#define SG_FUZZ_DECODE_CHECK_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"
#include "err.h"
#include "jalloc.h"

static void check_json(json_t *v) {
  if (v == NULL) return;
  char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
  if (s == NULL) abort();
  json_error_t e;
  json_t *back = json_loads(s, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
  if (back == NULL) abort();
  json_decref(back);
  sg_json_free(s);
}

static void check_str(const char *s) {
  if (s == NULL) return;
  int changed;
  char *t = sg_utf8_sanitize(s, strlen(s), &changed);
  if (t == NULL || changed) abort();
  free(t);
}

/* Aborts (a fuzzer finding) when a decoder's result breaks the contract. */
static void check_decoded(int rc, sg_span_batch_t *bt_, sg_buf_t *err_) {
  sg_span_batch_t bt = *bt_;
  sg_buf_t err = *err_;
  if (rc != 0 && rc != SG_EPARSE && rc != SG_ETOOBIG && rc != SG_ENOMEM) abort();
  if ((rc == SG_EPARSE || rc == SG_ETOOBIG) && (err.len == 0 || memchr(err.data, '\n', err.len)))
    abort();
  if (rc == 0 && bt.rejected == 0 && bt.reject_msg.len != 0) abort();
  if (bt.rejected > 0 && bt.reject_msg.len == 0) abort();
  /* Messages go back to clients: one line of valid UTF-8. */
  if (err.len && (memchr(err.data, '\n', err.len) || strlen(err.data) != err.len)) abort();
  check_str(err.data);
  if (bt.reject_msg.len && memchr(bt.reject_msg.data, '\n', bt.reject_msg.len)) abort();
  check_str(bt.reject_msg.data);
  for (size_t i = 0; i < bt.n; i++) {
    sg_span_t *s = &bt.spans[i];
    if (s->span_name == NULL) abort();
    if (s->start_us < SG_TIME_MIN_US || s->start_us > SG_TIME_MAX_US) abort();
    if (s->end_us < SG_TIME_MIN_US || s->end_us > SG_TIME_MAX_US) abort();
    if (s->span_kind < 0 || s->span_kind >= SG_SPAN_KIND_COUNT) abort();
    if (s->status_code < 0 || s->status_code >= SG_STATUS_CODE_COUNT) abort();
    check_str(s->span_name);
    check_str(s->status_message);
    check_str(s->session_id);
    check_str(s->user_id);
    check_str(s->agent_id);
    check_json(s->attributes);
    check_json(s->events);
    check_json(s->links);
    check_json(s->references);
    check_json(s->hashes);
    check_json(s->resource);
    check_json(s->scope);
    /* What the stores get (json_nest.c: deep keys, conflicts, arrays). */
    const char *text;
    size_t len;
    s->nest_attributes = SG_SPAN_NEST_ATTRS | SG_SPAN_NEST_RESOURCE;
    int arc = sg_span_attributes_text(s, &text, &len);
    if (arc == 0) {
      json_error_t e;
      json_t *back = json_loadb(text, len, JSON_ALLOW_NUL, &e);
      if (!json_is_object(back) && !(s->attributes == NULL && s->resource == NULL)) abort();
      json_decref(back);
    } else if (arc != SG_ENOMEM) {
      abort();
    }
  }
}

#endif
