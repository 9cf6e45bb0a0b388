/* ingest.h - the ingest pipeline of one batch of spans, whatever carried it:
 *   decompress -> decode -> transform.lua -> group commit into PostgreSQL
 *   -> routing.lua + ttl.lua -> ClickHouse spool (+ fsync) -> result;
 * for a project cut over to ClickHouse only (routing.lua M.postgres false):
 *   ... -> transform.lua -> the gateway's created_at / version (chonly.h)
 *   -> ttl.lua -> ClickHouse spool (+ fsync) -> result.
 *
 * A transport (ingest_http.c for OTLP/HTTP and native JSON; OTLP/gRPC can
 * be another) authenticates the caller (sg_auth_check on the credential it
 * carries), hands the body over with sg_ingest_submit() and turns the
 * result into its own answer. The result comes only after the spans are
 * committed and, when they go to ClickHouse too, after their spool rows are
 * durable (for a ClickHouse-only project: after the spool rows are durable;
 * a full spool then answers SG_INGEST_UNAVAILABLE instead of recording a
 * gap): a transport that acknowledges on SG_INGEST_OK acknowledges nothing
 * that is not stored.
 *
 * Runs on the worker's loop thread.
 */
#ifndef SG_INGEST_H
#define SG_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include "principal.h"
#include "span.h"
#include "worker.h"

typedef enum {
  SG_INGEST_OTLP_PROTO,  /* ExportTraceServiceRequest, protobuf */
  SG_INGEST_OTLP_JSON,   /* the same in OTLP's JSON mapping */
  SG_INGEST_NATIVE_JSON  /* Agenta's {"spans": [...]} */
} sg_ingest_format_t;

/* What became of a batch; each class is a different answer for the client
 * (HTTP status / gRPC code in ingest_http.c). */
typedef enum {
  SG_INGEST_OK = 0,       /* committed; spans refused one by one are counted in rejected */
  SG_INGEST_BAD_INPUT,    /* malformed: does not decompress or decode; do not retry as is */
  SG_INGEST_TOO_LARGE,    /* larger than the limits allow once decompressed; never fits */
  SG_INGEST_BUSY,         /* the in-flight memory budget is full now; retry after */
  SG_INGEST_UNAVAILABLE,  /* storage unavailable or out of memory now; nothing (or only an
                             idempotent part) was stored; retry after */
  SG_INGEST_INTERNAL      /* a failure retrying does not cure (e.g. the schema is missing) */
} sg_ingest_class_t;

typedef struct {
  sg_ingest_class_t cls;
  const char *message;     /* for the client, never NULL: why it failed, or on OK why spans
                              were rejected ("" when none was) */
  int retry_after_s;       /* BUSY / UNAVAILABLE: seconds to wait before retrying; 0: no advice */
  size_t stored;           /* OK: spans committed */
  size_t rejected;         /* OK: spans refused one by one (bad data) */
  const sg_span_batch_t *batch; /* OK: the committed spans (their ids, for an answer that lists
                                   them); NULL otherwise */
} sg_ingest_result_t;

/* Called exactly once per submit, on the loop; res is valid during the call. */
typedef void (*sg_ingest_done_cb)(void *arg, const sg_ingest_result_t *res);

/* Counts n more bytes held for the request in the process's in-flight
 * budget, with what the transport counted for it already (its body), so a
 * request that could never fit is told apart from a full budget: 0,
 * SG_EBUSY (no room now) or SG_ETOOBIG (never). */
typedef int (*sg_ingest_reserve_cb)(void *arg, size_t n);

typedef struct {
  sg_ingest_format_t format;
  const uint8_t *body;     /* as received, possibly compressed; valid until done has run */
  size_t len;
  int encoding;            /* sg_encoding_t (inflate.h); SG_ENC_AUTO recognises gzip and zlib
                              by their first bytes */
  sg_ingest_reserve_cb reserve; /* for memory the pipeline allocates (the decompressed copy);
                                   NULL: not counted */
  void *reserve_arg;
  /* NULL, or the endpoint's own rules over the decoded spans (an edit's one
   * trace, say), run before transform.lua with rq.arg: a message written to
   * why[0..cap) fails the request as SG_INGEST_BAD_INPUT with it. The
   * batch's rejected / reject_msg tell the spans the decoder refused. */
  int (*check)(void *arg, const sg_span_batch_t *batch, char *why, size_t cap);
  /* 1: an edit of one trace (PUT). For a ClickHouse-only project the
   * trace's stored rows are read from ClickHouse first, so that each span
   * already there keeps its created_at (its sorting key) and gets a version
   * above the stored one (chonly.h); 0: plain ingest. */
  int edit;
  sg_ingest_done_cb done;
  void *arg;
} sg_ingest_req_t;

/* Runs the pipeline for rq's body on worker w, storing the spans in who's
 * project (with who's user as creator when known). rq is copied; the body
 * must stay valid until rq->done has run, which may happen before this
 * returns (bad input, nothing to store). */
void sg_ingest_submit(sg_worker_t *w, const sg_principal_t *who, const sg_ingest_req_t *rq);

#endif
