/* ch_config.h - the ClickHouse client of a loop, as the configuration
 * describes it: one per worker (its dual-write, TTL sweep and analytics
 * share it) and one per job. The options come from config.c's
 * sg_config_clickhouse_opts(), the one place that turns cfg->clickhouse_*
 * into client options (servers, TLS, credentials). */
#ifndef SG_CH_CONFIG_H
#define SG_CH_CONFIG_H

#include <uv.h>

#include "ch.h"
#include "config.h"

/* Connections the client keeps alive; further requests queue in it. */
#define SG_CH_CLIENT_CONNECTIONS 8

/* The client of loop: cfg's servers, database and request timeout,
 * SG_CH_CLIENT_CONNECTIONS. NULL when out of memory. */
sg_ch_client_t *sg_ch_client_from_config(uv_loop_t *loop, const sg_config_t *cfg);

#endif
