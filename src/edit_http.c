/* edit_http.c - PUT and DELETE of one trace over HTTP (see edit_http.h).
 *
 * Agenta's router (edit_trace, delete_trace) answers 202 with its
 * OTelLinksResponse: {"count", "links"}, each link {"trace_id": 32 hex,
 * "span_id": 16 hex}; an id that is not a trace id is 400. A trace the
 * project does not have (another project's included) deletes nothing:
 * 202 {"count": 0, "links": []}, as Agenta answers, which also keeps a
 * retried delete harmless. The edit is a re-ingest of the trace's spans
 * (Agenta's edit_trace calls its ingest after checking the payload), so it
 * runs ingest.c's pipeline with the edit's rules as the check. Unlike
 * Agenta, 202 here means done: committed, and spooled for ClickHouse. */
#include "edit_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edit.h"
#include "inflate.h"
#include "ingest.h"
#include "span.h"

/* The {trace_id} segment: 32 hex digits, 0x + 32, or a dashed UUID (not
 * the 16-hex span form sg_id_parse also takes). 0 or -1. */
static int parse_trace(const sg_route_call_t *call, uint8_t out[16]) {
  size_t n = call->param_len;
  if (n != 32 && n != 34 && n != 36) return -1;
  return sg_id_parse(call->param, n, out) == 0 ? 0 : -1;
}

static void bad_trace(const sg_route_call_t *call) {
  sg_http_respond_error(call->req, 400, "Invalid trace_id: use 32 hex digits, 0x-prefixed hex or a dashed UUID",
                        NULL);
}

/* {"count":n,"links":[...]}: ids as Agenta prints them (trace 32 hex, span
 * the last 16 hex digits of its UUID). */
static int put_links(sg_buf_t *b, size_t n, const uint8_t trace[16], const uint8_t (*spans)[16],
                     const sg_span_t *batch) {
  int rc = sg_buf_printf(b, "{\"count\":%zu,\"links\":[", n);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    char t[33], s[33];
    sg_hex32_format(batch ? batch[i].trace_id : trace, t);
    sg_hex32_format(batch ? batch[i].span_id : spans[i], s);
    rc = sg_buf_printf(b, "%s{\"trace_id\":\"%s\",\"span_id\":\"%s\"}", i ? "," : "", t, s + 16);
  }
  return rc ? rc : sg_buf_putc(b, ']');
}

static int status_of(sg_ingest_class_t cls) {
  switch (cls) {
  case SG_INGEST_OK: return 202;
  case SG_INGEST_BAD_INPUT: return 400;
  case SG_INGEST_TOO_LARGE: return 413;
  case SG_INGEST_BUSY: return 429;
  case SG_INGEST_UNAVAILABLE: return 503;
  default: return 500;
  }
}

static void respond_failure(sg_http_req_t *req, sg_ingest_class_t cls, const char *msg, int retry) {
  char extra[48] = "";
  if (retry > 0) snprintf(extra, sizeof extra, "Retry-After: %d\r\n", retry);
  sg_http_respond_error(req, status_of(cls), msg, extra[0] ? extra : NULL);
}

/* ---- DELETE ----------------------------------------------------------------------- */

static void deleted(void *arg, const sg_edit_result_t *res) {
  sg_http_req_t *req = arg;
  if (res->cls != SG_INGEST_OK) {
    respond_failure(req, res->cls, res->message, res->retry_after_s);
    return;
  }
  sg_buf_t b = SG_BUF_INIT;
  int rc = put_links(&b, res->n, res->trace_id, res->span_ids, NULL);
  rc = rc ? rc : sg_buf_puts(&b, "}\n");
  /* The trace is deleted: a 500 only means the answer could not be built,
   * and a retried delete deletes nothing more. */
  if (rc != 0) sg_http_respond(req, 500, NULL, NULL, 0, NULL);
  else sg_http_respond(req, 202, "application/json", b.data, b.len, NULL);
  sg_buf_free(&b);
}

void sg__edit_http_delete(const sg_route_call_t *call) {
  uint8_t trace[16];
  if (parse_trace(call, trace) != 0) {
    bad_trace(call);
    return;
  }
  sg_edit_delete_trace(call->w, call->who, trace, deleted, call->req);
}

/* ---- PUT ---------------------------------------------------------------------------- */

typedef struct {
  sg_http_req_t *req;
  uint8_t trace[16];
} put_t;

/* Agenta's checks of an edit (its router's edit_trace, then the service's
 * single-trace and root checks), in its order and words. Spans the decoder
 * refused fail the edit whole: an edit applied in part is not what the
 * client asked for. */
static int check_edit(void *arg, const sg_span_batch_t *b, char *why, size_t cap) {
  put_t *p = arg;
  if (b->rejected) {
    snprintf(why, cap, "%s", b->reject_msg.data ? b->reject_msg.data : "a span is not valid");
    return -1;
  }
  if (b->n == 0) {
    snprintf(why, cap, "Missing spans");
    return -1;
  }
  size_t roots = 0;
  for (size_t i = 0; i < b->n; i++) {
    if (memcmp(b->spans[i].trace_id, b->spans[0].trace_id, 16) != 0) {
      snprintf(why, cap, "Trace payload must contain exactly one trace_id.");
      return -1;
    }
    roots += !b->spans[i].has_parent;
  }
  if (memcmp(b->spans[0].trace_id, p->trace, 16) != 0) {
    char path[33], body[33];
    sg_hex32_format(p->trace, path);
    sg_hex32_format(b->spans[0].trace_id, body);
    snprintf(why, cap, "Path trace_id '%s' does not match payload trace_id '%s'.", path, body);
    return -1;
  }
  if (roots != 1) {
    snprintf(why, cap, roots ? "Too many root spans" : "Missing root span");
    return -1;
  }
  return 0;
}

static void edited(void *arg, const sg_ingest_result_t *res) {
  put_t *p = arg;
  sg_http_req_t *req = p->req;
  uint8_t trace[16];
  memcpy(trace, p->trace, 16);
  free(p);
  if (res->cls != SG_INGEST_OK) {
    respond_failure(req, res->cls, res->message, res->retry_after_s);
    return;
  }
  sg_buf_t b = SG_BUF_INIT;
  int rc = put_links(&b, res->stored, trace, NULL, res->batch ? res->batch->spans : NULL);
  if (rc == 0 && res->rejected) {
    rc = sg_buf_printf(&b, ",\"rejected\":%zu,\"error\":\"", res->rejected);
    rc = rc ? rc : sg_buf_json_escape(&b, res->message, strlen(res->message));
    rc = rc ? rc : sg_buf_puts(&b, "\"");
  }
  rc = rc ? rc : sg_buf_puts(&b, "}\n");
  if (rc != 0) sg_http_respond(req, 500, NULL, NULL, 0, NULL);
  else sg_http_respond(req, 202, "application/json", b.data, b.len, NULL);
  sg_buf_free(&b);
}

static int reserve_cb(void *arg, size_t n) { return sg_http_req_reserve(arg, n); }

void sg__edit_http_put(const sg_route_call_t *call) {
  sg_http_req_t *req = call->req;
  uint8_t trace[16];
  if (parse_trace(call, trace) != 0) {
    bad_trace(call);
    return;
  }
  const char *ce = sg_http_header(req, "content-encoding");
  int enc = sg_encoding_parse(ce, ce ? strlen(ce) : 0);
  if (enc < 0) {
    sg_http_respond_error(req, 415, "unsupported Content-Encoding (use gzip, deflate or identity)", NULL);
    return;
  }
  if (enc == SG_ENC_IDENTITY) enc = SG_ENC_AUTO; /* as ingest: gzip/zlib recognised by their bytes */
  put_t *p = calloc(1, sizeof *p);
  if (!p) {
    sg_http_respond_error(req, 503, "out of memory", "Retry-After: 1\r\n");
    return;
  }
  p->req = req;
  memcpy(p->trace, trace, 16);
  sg_ingest_req_t rq;
  memset(&rq, 0, sizeof rq);
  rq.format = SG_INGEST_NATIVE_JSON;
  rq.body = (const uint8_t *)req->body.data;
  rq.len = req->body.len;
  rq.encoding = enc;
  rq.reserve = reserve_cb;
  rq.reserve_arg = req;
  rq.check = check_edit;
  rq.edit = 1;
  rq.done = edited;
  rq.arg = p;
  sg_ingest_submit(call->w, call->who, &rq);
}
