/* ingest_http.c - OTLP/HTTP and native JSON ingest: HTTP in, ingest.c's
 * pipeline, HTTP out. By the time a handler runs, the router has checked
 * the Content-Type (415) and the key (401). What is left here is HTTP's
 * own: the Content-Encoding header, the status codes, Retry-After, and the
 * answer bodies of each protocol. */
#include "ingest_http.h"

#include <stdio.h>
#include <string.h>

#include "decode.h"
#include "inflate.h"
#include "ingest.h"
#include "span.h"

static int is_proto(const sg_http_req_t *req) {
  char mt[64];
  sg_route_media_type(sg_http_header(req, "content-type"), mt, sizeof mt);
  return !strcmp(mt, "application/x-protobuf");
}

/* gRPC status code that matches an HTTP status, for google.rpc.Status. */
static int grpc_code(int status) {
  switch (status) {
  case 400: case 413: case 415: return 3; /* INVALID_ARGUMENT */
  case 401: return 16;                    /* UNAUTHENTICATED */
  case 429: return 8;                     /* RESOURCE_EXHAUSTED */
  case 503: return 14;                    /* UNAVAILABLE */
  default: return 13;                     /* INTERNAL */
  }
}

void sg__ingest_http_otlp_error(sg_http_req_t *req, int status, const char *msg, const char *extra) {
  sg_buf_t b = SG_BUF_INIT;
  int rc;
  if (is_proto(req)) {
    rc = sg_rpc_status_proto(grpc_code(status), msg, &b);
  } else {
    rc = sg_buf_printf(&b, "{\"code\":%d,\"message\":\"", grpc_code(status));
    rc = rc ? rc : sg_buf_json_escape(&b, msg, strlen(msg));
    rc = rc ? rc : sg_buf_puts(&b, "\",\"error\":\"");
    rc = rc ? rc : sg_buf_json_escape(&b, msg, strlen(msg));
    rc = rc ? rc : sg_buf_puts(&b, "\"}\n");
  }
  if (rc != 0) sg_http_respond(req, 500, NULL, NULL, 0, extra);
  else sg_http_respond(req, status, is_proto(req) ? "application/x-protobuf" : "application/json",
                       b.data, b.len, extra);
  sg_buf_free(&b);
}

/* The HTTP status and headers of a failed result. */
static int status_of(const sg_ingest_result_t *res, char *extra, size_t cap) {
  extra[0] = '\0';
  if (res->retry_after_s > 0) snprintf(extra, cap, "Retry-After: %d\r\n", res->retry_after_s);
  switch (res->cls) {
  case SG_INGEST_OK: return 200;
  case SG_INGEST_BAD_INPUT: return 400;
  case SG_INGEST_TOO_LARGE: return 413;
  case SG_INGEST_BUSY: return 429;
  case SG_INGEST_UNAVAILABLE: return 503;
  default: return 500;
  }
}

static void otlp_done(void *arg, const sg_ingest_result_t *res) {
  sg_http_req_t *req = arg;
  char extra[48];
  int status = status_of(res, extra, sizeof extra);
  if (res->cls != SG_INGEST_OK) {
    sg__ingest_http_otlp_error(req, status, res->message, extra[0] ? extra : NULL);
    return;
  }
  int proto = is_proto(req);
  sg_buf_t b = SG_BUF_INIT;
  int rc = proto ? sg_otlp_response_proto(res->rejected, res->message, &b)
                 : sg_otlp_response_json(res->rejected, res->message, &b);
  if (rc != 0) sg_http_respond(req, 500, NULL, NULL, 0, NULL);
  else sg_http_respond(req, 200, proto ? "application/x-protobuf" : "application/json", b.data, b.len,
                       NULL);
  sg_buf_free(&b);
}

static void native_done(void *arg, const sg_ingest_result_t *res) {
  sg_http_req_t *req = arg;
  char extra[48];
  int status = status_of(res, extra, sizeof extra);
  if (res->cls != SG_INGEST_OK) {
    sg_http_respond_error(req, status, res->message, extra[0] ? extra : NULL);
    return;
  }
  sg_buf_t b = SG_BUF_INIT;
  int rc = sg_buf_printf(&b, "{\"count\":%zu,\"links\":[", res->stored);
  for (size_t i = 0; rc == 0 && i < res->stored; i++) {
    char t[37], s[37];
    sg_uuid_format(res->batch->spans[i].trace_id, t);
    sg_uuid_format(res->batch->spans[i].span_id, s);
    rc = sg_buf_printf(&b, "%s{\"trace_id\":\"%s\",\"span_id\":\"%s\"}", i ? "," : "", t, s);
  }
  rc = rc ? rc : sg_buf_puts(&b, "]");
  if (rc == 0 && res->rejected) {
    rc = sg_buf_printf(&b, ",\"rejected\":%zu,\"error\":\"", res->rejected);
    rc = rc ? rc : sg_buf_json_escape(&b, res->message, strlen(res->message));
    rc = rc ? rc : sg_buf_puts(&b, "\"");
  }
  rc = rc ? rc : sg_buf_puts(&b, "}\n");
  /* The spans are stored: a 500 here only means the answer could not be
   * built, and the client's retry is an idempotent upsert. */
  if (rc != 0) sg_http_respond(req, 500, NULL, NULL, 0, NULL);
  else sg_http_respond(req, 200, "application/json", b.data, b.len, NULL);
  sg_buf_free(&b);
}

static int reserve_cb(void *arg, size_t n) { return sg_http_req_reserve(arg, n); }

/* Hands the request's body to the pipeline; done answers it. */
static void submit(const sg_route_call_t *call, sg_ingest_format_t format, sg_ingest_done_cb done,
                   sg_route_error_fn error) {
  sg_http_req_t *req = call->req;
  const char *ce = sg_http_header(req, "content-encoding");
  int enc = sg_encoding_parse(ce, ce ? strlen(ce) : 0);
  if (enc < 0) {
    sg_buf_t m = SG_BUF_INIT;
    sg_buf_printf(&m, "unsupported Content-Encoding '%s' (use gzip, deflate or identity)", ce);
    error(req, 415, m.data ? m.data : "unsupported Content-Encoding", NULL);
    sg_buf_free(&m);
    return;
  }
  /* Without a Content-Encoding (or "identity") the body may still be gzip
   * or zlib, recognised by its first bytes, as Agenta's endpoint does. */
  if (enc == SG_ENC_IDENTITY) enc = SG_ENC_AUTO;
  sg_ingest_req_t rq;
  memset(&rq, 0, sizeof rq);
  rq.format = format;
  rq.body = (const uint8_t *)req->body.data;
  rq.len = req->body.len;
  rq.encoding = enc;
  rq.reserve = reserve_cb;
  rq.reserve_arg = req;
  rq.done = done;
  rq.arg = req;
  sg_ingest_submit(call->w, call->who, &rq);
}

void sg__ingest_http_otlp(const sg_route_call_t *call) {
  submit(call, is_proto(call->req) ? SG_INGEST_OTLP_PROTO : SG_INGEST_OTLP_JSON, otlp_done,
         sg__ingest_http_otlp_error);
}

void sg__ingest_http_native(const sg_route_call_t *call) {
  submit(call, SG_INGEST_NATIVE_JSON, native_done, sg_http_respond_error);
}
