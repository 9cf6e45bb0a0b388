/* ingest_http.h - the HTTP side of ingest: the OTLP/HTTP and native JSON
 * endpoints (rows of router.c's table), which hand bodies to ingest.c and
 * turn its results into answers. */
#ifndef SG_INGEST_HTTP_H
#define SG_INGEST_HTTP_H

#include "http.h"
#include "route.h"

/* Content-Types the endpoints take (the table's media column). */
#define SG_INGEST_OTLP_MEDIA "application/x-protobuf, application/json"
#define SG_INGEST_NATIVE_MEDIA "application/json"

/* POST /v1/traces: an OTLP ExportTraceServiceRequest, protobuf or JSON;
 * answered with an ExportTraceServiceResponse in the request's encoding. */
void sg__ingest_http_otlp(const sg_route_call_t *call);
/* POST /v1/spans: Agenta's native JSON; answered {"count","links"[,"rejected","error"]}. */
void sg__ingest_http_native(const sg_route_call_t *call);
/* An OTLP error answer: google.rpc.Status when the request is protobuf,
 * {"code","message","error"} JSON otherwise. */
void sg__ingest_http_otlp_error(sg_http_req_t *req, int status, const char *msg,
                                const char *extra_headers);

#endif
