/* read.h - the read API's endpoints (rows of router.c's table); the router
 * authenticates first, so each reads only call->who's project. */
#ifndef SG_READ_H
#define SG_READ_H

#include "route.h"

/* GET /v1/traces/{trace_id}: the spans of one trace (PostgreSQL). */
void sg__read_trace(const sg_route_call_t *call);
/* POST /v1/spans/query: Agenta's filtering and windowing (PostgreSQL). */
void sg__read_query(const sg_route_call_t *call);
/* GET /v1/analytics/spans: counts, errors, percentiles (PostgreSQL, or
 * ClickHouse through the worker's client when routing.lua says so). */
void sg__read_analytics(const sg_route_call_t *call);

#endif
