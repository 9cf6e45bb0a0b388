/* ingest_grpc.h - the gRPC side of ingest: OTLP's TraceService/Export as a
 * method of grpc.c's server, handing messages to ingest.c and turning its
 * results into gRPC answers. */
#ifndef SG_INGEST_GRPC_H
#define SG_INGEST_GRPC_H

#include <stddef.h>
#include <stdint.h>

#include "grpc.h"

/* Message encodings the listener takes besides identity (grpc-accept-encoding). */
#define SG_INGEST_GRPC_ENCODINGS "gzip,deflate"

/* The methods of the gateway's gRPC listener; the server's ctx is the worker. */
const sg_grpc_method_t *sg_ingest_grpc_methods(size_t *n);

/* The listener's observer: counts every answer in the metrics by gRPC code. */
void sg__ingest_grpc_observe(void *ctx, const sg_grpc_call_t *call, int code, uint64_t duration_ns);

#endif
