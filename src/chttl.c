/* chttl.c - the expired-row sweep for ClickHouse servers without TTL. */
#include "chttl.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "ch.h"
#include "ch_schema.h"
#include "ch_setup.h"
#include "err.h"
#include "log.h"
#include "metrics.h"

/* spans and nodes, and the read index (its rows expire with the spans they
 * point at: same expires_at) */
static const char *const tables[] = {"spans", "nodes", "spans_by_trace", "spans_by_start"};
#define NTABLES (sizeof tables / sizeof tables[0])
#define NTABLES_ROWS 2 /* spans and nodes: what the expired-rows metric counts */

struct sg_chttl_s {
  uv_loop_t *loop;
  const sg_config_t *cfg;
  sg_ch_client_t *ch;
  uv_timer_t timer;
  int step;          /* state machine of one round */
  size_t table;      /* index into tables */
  uint64_t expired;  /* rows counted in this table */
  int64_t cutoff_s;  /* this table's count and delete both use expires_at < cutoff */
  sg_buf_t sql;
  int closing;
};

static void step_cb(void *arg, const sg_ch_result_t *r);

static void round_send(sg_chttl_t *t, int step) {
  t->step = step;
  sg_ch_req_t q;
  memset(&q, 0, sizeof q);
  q.sql = t->sql.data;
  char settings[64];
  if (step == 4 && t->cfg->clickhouse_cluster[0]) {
    /* The mutation ON CLUSTER: ClickHouse answers before our timeout, and
     * a server that is down takes it when it is back (step_cb). */
    long wait_s = sg_ch_ddl_wait_s(t->cfg);
    snprintf(settings, sizeof settings, "distributed_ddl_task_timeout=%ld", wait_s);
    q.settings = settings;
    q.timeout_ms = wait_s * 1000 + 10000;
  }
  if (sg_ch_send(t->ch, &q, step_cb, t) != 0) t->step = 0;
}

static void finish_round(sg_chttl_t *t) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  atomic_store(&sg_metrics.ttl_last_sweep_s, (int64_t)ts.tv_sec);
  t->step = 0;
}

/* Next table, or the end of the round. */
static void next_table(sg_chttl_t *t) {
  if (++t->table >= NTABLES) {
    finish_round(t);
    return;
  }
  sg_buf_reset(&t->sql);
  sg_buf_puts(&t->sql, "SELECT count() FROM system.mutations WHERE database = ");
  sg_ch_quote_string(&t->sql, t->cfg->clickhouse_database, strlen(t->cfg->clickhouse_database));
  sg_buf_printf(&t->sql, " AND table = '%s%s' AND is_done = 0", tables[t->table],
                t->cfg->clickhouse_cluster[0] ? "_local" : "");
  round_send(t, 2);
}

static void step_cb(void *arg, const sg_ch_result_t *r) {
  sg_chttl_t *t = arg;
  if (r->status == SG_ECANCELED) return;
  long down = 0;
  if (r->status != 0 && t->step == 4 && sg_ch_ddl_queued_for_down(r->ch_code, r->body, &down)) {
    /* every shard took the mutation; down servers get it when they are back */
    sg_info("ttl", "ClickHouse TTL sweep of %s: %ld servers of the cluster are down and take the "
            "mutation when they are back", tables[t->table], down);
  } else if (r->status != 0) {
    /* Unknown table (nodes not created) or ClickHouse away: try next round. */
    if (t->step == 3 && r->ch_code == 60) {
      next_table(t);
      return;
    }
    sg_warn("ttl", "ClickHouse TTL sweep stopped this round: %s", r->error);
    t->step = 0;
    return;
  }
  switch (t->step) {
  case 1: { /* version */
    sg_ch_version_t v;
    if (sg_ch_version_parse(r->body, &v) != 0 || (v.caps & SG_CH_TTL)) {
      t->step = 0; /* the server expires rows itself */
      finish_round(t);
      return;
    }
    t->table = (size_t)-1;
    next_table(t);
    return;
  }
  case 2: /* mutations still running */
    if (strtoull(r->body, NULL, 10) > 0) {
      sg_info("ttl", "ClickHouse TTL sweep of %s skipped: an earlier sweep is still running",
              tables[t->table]);
      next_table(t);
      return;
    }
    /* One cutoff for the count and the delete, so the rows counted are the
     * rows the mutation removes (with now() in both, rows expiring between
     * the two statements were deleted but never counted). */
    t->cutoff_s = (int64_t)time(NULL);
    sg_buf_reset(&t->sql);
    sg_buf_puts(&t->sql, "SELECT count() FROM ");
    sg_ch_quote_ident(&t->sql, t->cfg->clickhouse_database);
    sg_buf_printf(&t->sql, ".%s WHERE expires_at < toDateTime(%" PRId64 ")", tables[t->table],
                  t->cutoff_s);
    round_send(t, 3);
    return;
  case 3: /* expired rows */
    t->expired = strtoull(r->body, NULL, 10);
    if (t->expired == 0) {
      next_table(t);
      return;
    }
    sg_buf_reset(&t->sql);
    sg_buf_puts(&t->sql, "ALTER TABLE ");
    sg_ch_schema_opts_t so;
    sg_ch_setup_opts(t->cfg, &so);
    sg_ch_mutation_target(&so, tables[t->table], &t->sql); /* a cluster's local tables */
    sg_buf_printf(&t->sql, " DELETE WHERE expires_at < toDateTime(%" PRId64 ")", t->cutoff_s);
    round_send(t, 4);
    return;
  case 4: /* mutation accepted */
    if (t->table < NTABLES_ROWS) atomic_fetch_add(&sg_metrics.ttl_rows_expired, t->expired);
    sg_info("ttl", "ClickHouse TTL sweep: deleting %" PRIu64 " expired rows from %s", t->expired,
            tables[t->table]);
    next_table(t);
    return;
  default: t->step = 0; return;
  }
}

static void tick(uv_timer_t *h) {
  sg_chttl_t *t = h->data;
  if (t->closing || t->step != 0) return; /* a round is still going */
  sg_buf_reset(&t->sql);
  sg_buf_puts(&t->sql, "SELECT version()");
  round_send(t, 1);
}

sg_chttl_t *sg_chttl_new(uv_loop_t *loop, const sg_config_t *cfg, sg_ch_client_t *ch) {
  sg_chttl_t *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->loop = loop;
  t->cfg = cfg;
  t->ch = ch;
  uv_timer_init(loop, &t->timer);
  t->timer.data = t;
  uint64_t every = (uint64_t)cfg->ttl_sweep_interval_s * 1000;
  uv_timer_start(&t->timer, tick, every < 5000 ? every : 5000, every);
  return t;
}

static void closed(uv_handle_t *h) {
  sg_chttl_t *t = h->data;
  sg_buf_free(&t->sql);
  free(t);
}

void sg_chttl_close(sg_chttl_t *t) {
  if (!t) return;
  t->closing = 1;
  uv_timer_stop(&t->timer);
  uv_close((uv_handle_t *)&t->timer, closed);
}
