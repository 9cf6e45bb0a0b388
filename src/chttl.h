/* chttl.h - retention in ClickHouse servers without TTL (before 19.6, such
 * as Debian's 18.16): a periodic sweep that deletes expired rows.
 *
 * Every ttl_sweep_interval_s, on one worker: ask the server's version (a
 * server with TTL expires rows itself: nothing to do); skip the round while
 * an earlier sweep's mutation is still running (so at most one is in
 * flight); count the rows whose expires_at has passed; if any, delete them
 * with one `ALTER TABLE ... DELETE WHERE expires_at < now()` mutation per
 * table. Every round is logged and counted in /metrics. */
#ifndef SG_CHTTL_H
#define SG_CHTTL_H

#include <uv.h>

#include "ch.h"
#include "config.h"

typedef struct sg_chttl_s sg_chttl_t;

/* Starts the sweep on loop; it sends through ch (the worker's ClickHouse
 * client; the caller owns it and closes it before sg_chttl_close). */
sg_chttl_t *sg_chttl_new(uv_loop_t *loop, const sg_config_t *cfg, sg_ch_client_t *ch);
/* Closes its handles; frees itself once they are closed. */
void sg_chttl_close(sg_chttl_t *t);

#endif
