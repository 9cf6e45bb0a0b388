/* read.c - the read endpoints. Placeholder until the read API lands: every
 * read answers 501 so the routes are visible and honest. */
#include "worker.h"

void sg__read_trace(sg_worker_t *w, sg_http_req_t *req, const char *trace_id) {
  (void)w;
  (void)trace_id;
  sg__respond_error(req, 501, "reading traces is not implemented yet", NULL);
}

void sg__read_query(sg_worker_t *w, sg_http_req_t *req) {
  (void)w;
  sg__respond_error(req, 501, "span queries are not implemented yet", NULL);
}

void sg__read_analytics(sg_worker_t *w, sg_http_req_t *req) {
  (void)w;
  sg__respond_error(req, 501, "analytics are not implemented yet", NULL);
}

void sg__read_close(sg_worker_t *w) { (void)w; }
