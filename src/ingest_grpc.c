/* ingest_grpc.c - OTLP over gRPC: TraceService/Export in, ingest.c's
 * pipeline, gRPC answers out. grpc.c has checked the framing, the
 * content-type, the method and the message's size and prefix by the time
 * the handler runs; what is left is the key (the `authorization` metadata,
 * checked as the HTTP endpoints check theirs), the message's encoding, and
 * the mapping of ingest's outcomes to gRPC codes:
 *   stored (some spans maybe rejected)  OK + ExportTraceServiceResponse
 *                                       (partial_success when rejected)
 *   no or bad key                       16 UNAUTHENTICATED
 *   key store unavailable               14 UNAVAILABLE + RetryInfo
 *   bad input (decode, decompress)      3 INVALID_ARGUMENT
 *   too large once decompressed         8 RESOURCE_EXHAUSTED, no RetryInfo
 *                                       (exporters then do not retry it)
 *   budget full, storage unavailable    14 UNAVAILABLE + RetryInfo
 *   internal                            13 INTERNAL
 */
#include "ingest_grpc.h"

#include <string.h>

#include "decode.h"
#include "err.h"
#include "inflate.h"
#include "ingest.h"
#include "metrics.h"
#include "worker.h"

#define EXPORT_PATH "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

static void export_done(void *arg, const sg_ingest_result_t *res) {
  sg_grpc_call_t *call = arg;
  int retry_ms = res->retry_after_s > 0 ? res->retry_after_s * 1000 : 1000;
  switch (res->cls) {
  case SG_INGEST_OK: break;
  case SG_INGEST_BAD_INPUT:
    sg_grpc_respond_status(call, SG_GRPC_INVALID_ARGUMENT, res->message, 0);
    return;
  case SG_INGEST_TOO_LARGE:
    sg_grpc_respond_status(call, SG_GRPC_RESOURCE_EXHAUSTED, res->message, 0);
    return;
  case SG_INGEST_BUSY:
  case SG_INGEST_UNAVAILABLE:
    sg_grpc_respond_status(call, SG_GRPC_UNAVAILABLE, res->message, retry_ms);
    return;
  default:
    sg_grpc_respond_status(call, SG_GRPC_INTERNAL, res->message, 0);
    return;
  }
  sg_buf_t b = SG_BUF_INIT;
  /* The spans are stored: INTERNAL here only means the answer could not be
   * built, and the client's retry is an idempotent upsert. */
  if (sg_otlp_response_proto(res->rejected, res->message, &b) != 0)
    sg_grpc_respond_status(call, SG_GRPC_INTERNAL, "out of memory building the answer", 0);
  else
    sg_grpc_respond(call, b.data ? b.data : "", b.len);
  sg_buf_free(&b);
}

static int reserve_cb(void *arg, size_t n) { return sg_grpc_call_reserve(arg, n); }

static void auth_cb(void *arg, int rc, const sg_principal_t *who, const char *msg) {
  sg_grpc_call_t *call = arg;
  if (rc == SG_EUNAVAIL) {
    sg_grpc_respond_status(call, SG_GRPC_UNAVAILABLE, "the API key store is unavailable; retry later",
                           2000);
    return;
  }
  if (rc != 0) {
    sg_grpc_respond_status(call, SG_GRPC_UNAUTHENTICATED, msg ? msg : "invalid API key", 0);
    return;
  }
  sg_ingest_req_t rq;
  memset(&rq, 0, sizeof rq);
  rq.format = SG_INGEST_OTLP_PROTO;
  rq.body = call->message;
  rq.len = call->len;
  /* The prefix's flag says whether this message is compressed; grpc.c has
   * accepted its grpc-encoding, one of SG_INGEST_GRPC_ENCODINGS. */
  rq.encoding = call->compressed ? sg_encoding_parse(call->encoding, strlen(call->encoding))
                                 : SG_ENC_IDENTITY;
  rq.reserve = reserve_cb;
  rq.reserve_arg = call;
  rq.done = export_done;
  rq.arg = call;
  sg_ingest_submit(call->user, who, &rq);
}

/* TraceService/Export: authenticate with the call's `authorization`
 * metadata ("ApiKey <key>" or "Bearer <key>"), then ingest. */
static void export_handler(sg_grpc_call_t *call, void *ctx) {
  sg_worker_t *w = ctx;
  call->user = w;
  sg_auth_check(w->auth, sg_grpc_metadata(call, "authorization"), auth_cb, call);
}

static const sg_grpc_method_t methods[] = {
    {EXPORT_PATH, export_handler},
};

const sg_grpc_method_t *sg_ingest_grpc_methods(size_t *n) {
  *n = sizeof methods / sizeof methods[0];
  return methods;
}

void sg__ingest_grpc_observe(void *ctx, const sg_grpc_call_t *call, int code, uint64_t duration_ns) {
  (void)ctx;
  (void)call;
  sg_metrics_grpc_observe(code, duration_ns);
}
