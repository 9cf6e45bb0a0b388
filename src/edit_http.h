/* edit_http.h - the trace edit and delete endpoints (rows of router.c's
 * table), as Agenta's tracing router defines them:
 *   PUT    /v1/traces/{trace_id}, /api/tracing/traces/{trace_id}
 *          the trace's spans again (native JSON {"spans": [...]}, one trace,
 *          the path's, with exactly one root span), upserted like ingest
 *   DELETE /v1/traces/{trace_id}, /api/tracing/traces/{trace_id}
 *          every span of the trace, deleted (edit.h)
 * Both answer 202 {"count": N, "links": [{"trace_id", "span_id"}]} with
 * Agenta's hex ids, once the change is committed (and its ClickHouse rows
 * are in the spool). */
#ifndef SG_EDIT_HTTP_H
#define SG_EDIT_HTTP_H

#include "route.h"

#define SG_EDIT_MEDIA "application/json"

void sg__edit_http_put(const sg_route_call_t *call);
void sg__edit_http_delete(const sg_route_call_t *call);

#endif
