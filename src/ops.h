/* ops.h - the operations endpoints (rows of router.c's table): /healthz,
 * /readyz, /metrics. No key needed. */
#ifndef SG_OPS_H
#define SG_OPS_H

#include "route.h"

/* GET /healthz: 200 while the process runs. */
void sg__ops_healthz(const sg_route_call_t *call);
/* GET /readyz: 200 when this worker can write to PostgreSQL and no write
 * was refused lately for lack of writability (readiness.h); else 503 naming
 * the cause. ClickHouse and spool figures either way. */
void sg__ops_readyz(const sg_route_call_t *call);
/* GET /metrics: Prometheus text format. */
void sg__ops_metrics(const sg_route_call_t *call);

#endif
