/* ch_config.c - the ClickHouse client of a loop (see ch_config.h). */
#include "ch_config.h"

sg_ch_client_t *sg_ch_client_from_config(uv_loop_t *loop, const sg_config_t *cfg) {
  sg_ch_opts_t o;
  sg_config_clickhouse_opts(cfg, cfg->clickhouse_database, (long)cfg->clickhouse_timeout_ms,
                            SG_CH_CLIENT_CONNECTIONS, &o);
  return sg_ch_client_new(loop, &o);
}
