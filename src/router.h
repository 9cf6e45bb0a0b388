/* router.h - the gateway's endpoints: one table (router.c) of method, path,
 * metrics label, key needed, media types and handler; the dispatch that
 * authenticates and answers 404, 405 and 415 for every endpoint alike. */
#ifndef SG_ROUTER_H
#define SG_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include "http.h"
#include "route.h"

/* Registers the table's metrics labels (once per process, before the
 * workers serve: the /metrics listing then has a stable order). */
void sg_router_init(void);

/* The HTTP server's handler (sg_http_handler_cb); worker is the sg_worker_t. */
void sg_router_handle(sg_http_req_t *req, void *worker);

/* The HTTP server's observer (sg_http_log_cb): counts every answer under
 * its route's label ("other" for paths no row has). */
void sg_router_observe(void *worker, const sg_http_req_t *req, int status, uint64_t duration_ns,
                       size_t bytes_in);

/* The table, for tests and documentation. */
const sg_route_t *sg_router_table(size_t *n);

#endif
