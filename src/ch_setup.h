/* ch_setup.h - ClickHouse before the first row: the server's version, the
 * schema created or upgraded when something is missing, and the row layout
 * of the tables as they exist.
 *
 * Shared by `spangate schema --apply`, `serve` (at start, and later by a
 * worker when ClickHouse was away at start) and the jobs. Blocking (it uses
 * sg_ch_exec_sync): call it from the CLI, before the workers start, or off
 * the loop (uv_queue_work). Never logs: what it did comes back as text.
 */
#ifndef SG_CH_SETUP_H
#define SG_CH_SETUP_H

#include "buf.h"
#include "ch_rows.h"
#include "ch_schema.h"
#include "ch_version.h"
#include "config.h"

typedef struct {
  sg_ch_version_t ver;     /* the server's, or clickhouse_version's */
  char version_text[64];   /* as the server printed it (or configured) */
  sg_ch_layout_t spans;    /* the rows the spans table takes */
  sg_ch_layout_t nodes;    /* the nodes table's (ver's when it does not exist) */
} sg_ch_target_t;

#define SG_CH_SETUP_CREATE 1u /* create / upgrade what is missing (schema --apply) */
/* with CREATE: leave the read index's backfill of a spans table that
 * already existed to `spangate schema --apply` (the gateway's start: a
 * backfill reads every span, and the start must not wait for it) */
#define SG_CH_SETUP_NO_BACKFILL 2u

/* The schema options of cfg (database, cluster, ZooKeeper path, replica);
 * the strings stay cfg's. */
void sg_ch_setup_opts(const sg_config_t *cfg, sg_ch_schema_opts_t *o);

/* Asks ClickHouse (cfg's server) for its version (unless clickhouse_version
 * is set) and what exists; with SG_CH_SETUP_CREATE runs the statements of
 * sg_ch_upgrade_statements one by one; then reads the layout of the spans
 * table. Returns
 *   0             *out filled;
 *   SG_EUNAVAIL   ClickHouse did not answer (err says how);
 *   SG_ENOTFOUND  the spans table does not exist (without SG_CH_SETUP_CREATE);
 *   SG_EINVAL     a table spangate cannot write (err names table and column);
 *   SG_EIO        a statement failed (err has ClickHouse's answer and the
 *                 statement).
 * done gets one line per statement run ("create table `db`.spans ...");
 * without SG_CH_SETUP_CREATE, one line per thing missing ("missing: ...").
 * done and err may be NULL. */
int sg_ch_setup(const sg_config_t *cfg, unsigned flags, sg_ch_target_t *out, sg_buf_t *done,
                sg_buf_t *err);

/* ON CLUSTER. A statement ON CLUSTER is queued for every server of the
 * cluster; ClickHouse answers once each has run it, or after
 * distributed_ddl_task_timeout seconds with code 159 naming how many have
 * not ("There are N unfinished hosts (M of them are currently active)").
 * spangate waits sg_ch_ddl_wait_s(cfg) (clickhouse_timeout_ms in whole
 * seconds, at least 1), below its own request timeout, so it gets that
 * answer. sg_ch_ddl_queued_for_down: 1 (with *hosts = N, hosts may be NULL)
 * when ch_code and the answer's text say the statement timed out waiting
 * only for servers that are down (M = 0): those that are up ran it, the
 * others run it when they are back; 0 otherwise (servers that are up still
 * at it, or another error). */
long sg_ch_ddl_wait_s(const sg_config_t *cfg);
int sg_ch_ddl_queued_for_down(int ch_code, const char *text, long *hosts);

/* The last target sg_ch_setup found, kept in spool_dir for a start while
 * ClickHouse is away: sg_ch_setup_save writes it, sg_ch_setup_cached reads
 * it back (a spool_dir from before layouts were kept has the server's
 * version only: its layout is that version's). 0, or SG_ENOTFOUND with err
 * saying so. */
int sg_ch_setup_save(const sg_config_t *cfg, const sg_ch_target_t *t);
int sg_ch_setup_cached(const sg_config_t *cfg, sg_ch_target_t *out, sg_buf_t *err);

#endif
