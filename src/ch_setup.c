/* ch_setup.c - ClickHouse's version, schema and row layout before the first
 * row (see ch_setup.h). */
#include "ch_setup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ch.h"
#include "ch_insert.h"
#include "err.h"

void sg_ch_setup_opts(const sg_config_t *cfg, sg_ch_schema_opts_t *o) {
  o->database = cfg->clickhouse_database;
  o->cluster = cfg->clickhouse_cluster;
  o->zk_path = cfg->clickhouse_zk_path;
  o->replica = cfg->clickhouse_replica;
}

/* Reads get a short timeout (a start must not hang on an unreachable
 * server); DDL, which ON CLUSTER waits for every host, the configured one. */
static void ch_opts(const sg_config_t *cfg, int ddl, sg_ch_opts_t *o) {
  long t = cfg->clickhouse_timeout_ms;
  if (!ddl && t > 5000) t = 5000;
  sg_config_clickhouse_opts(cfg, NULL, t, 1, o);
}

static void where_prefix(const sg_config_t *cfg, sg_buf_t *err) {
  char where[512];
  sg_buf_printf(err, "ClickHouse at %s: ", sg_config_clickhouse_where(cfg, where, sizeof where));
}

/* A read index backfill copies a few narrow columns of every span (about a
 * million spans a second on 2 cores): it gets an hour, however short
 * clickhouse_timeout_ms is. */
#define BACKFILL_TIMEOUT_MS 3600000L
#define INDEX_STATE_TRIES 5

/* One statement; on failure err gets ClickHouse's answer (and the statement
 * when show, which marks DDL). Unreachable (transient) is SG_EUNAVAIL, the rest SG_EIO.
 * stmt_flags SG_CH_STMT_BACKFILL: the read index's backfill (ch_schema.h).
 * settings: URL parameters for the statement, or NULL. */
static int exec_with(const sg_config_t *cfg, const char *sql, unsigned stmt_flags, const char *settings,
                     sg_buf_t *out, sg_buf_t *err, int show) {
  sg_ch_opts_t o;
  ch_opts(cfg, show, &o);
  sg_buf_t why = SG_BUF_INIT;
  int fill = (stmt_flags & SG_CH_STMT_BACKFILL) != 0;
  if (fill && o.timeout_ms < BACKFILL_TIMEOUT_MS) o.timeout_ms = BACKFILL_TIMEOUT_MS;
  sg_ch_req_t q = {.sql = sql, .settings = fill ? SG_CH_INSERT_FRESH_SETTINGS : settings};
  int rc = sg_ch_send_sync(&o, &q, out, &why);
  if (rc != 0 && err) {
    where_prefix(cfg, err);
    sg_buf_puts(err, why.data ? why.data : sg_strerror(rc));
    if (show) sg_buf_printf(err, "\n  in: %.300s", sql);
  }
  sg_buf_free(&why);
  if (rc == 0) return 0;
  return rc == SG_EUNAVAIL ? SG_EUNAVAIL : SG_EIO;
}

static int exec(const sg_config_t *cfg, const char *sql, sg_buf_t *out, sg_buf_t *err, int show) {
  return exec_with(cfg, sql, 0, NULL, out, err, show);
}

/* ---- ON CLUSTER ------------------------------------------------------------------------
 *
 * sg_ch_setup sends each statement waiting sg_ch_ddl_wait_s for every
 * server (ch_setup.h). One that timed out waiting only for servers that are
 * down is done, with a note; the statements after it are queued without
 * waiting (they would wait for the same servers in vain), and the schema is
 * read back until the server that answers has all of it. Servers that are
 * up but still at it: an error (SG_EUNAVAIL), and the next run starts over
 * (every statement is IF NOT EXISTS or checked against what exists).
 */

typedef struct {
  sg_ch_client_t *c;
  int status, code;
  sg_buf_t body, line;
} ddl_run_t;

static void ddl_cb(void *arg, const sg_ch_result_t *r) {
  ddl_run_t *d = arg;
  d->status = r->status;
  d->code = r->ch_code;
  if (r->len) sg_buf_append(&d->body, r->body, r->len);
  if (r->status) sg_buf_puts(&d->line, r->error);
  sg_ch_client_close(d->c);
}

int sg_ch_ddl_queued_for_down(int ch_code, const char *text, long *hosts) {
  if (ch_code != 159 || text == NULL) return 0;
  const char *u = strstr(text, "There are ");
  const char *a = strstr(text, " of them are currently ");
  if (!u || !a || a < u) return 0;
  char *end;
  long n = strtol(u + 10, &end, 10);
  if (end == u + 10 || strncmp(end, " unfinished host", 16) != 0) return 0;
  const char *m = a;
  while (m > text && m[-1] >= '0' && m[-1] <= '9') m--;
  if (m == a || m == text || m[-1] != '(') return 0;
  if (strtol(m, NULL, 10) != 0) return 0;
  if (hosts) *hosts = n;
  return 1;
}

long sg_ch_ddl_wait_s(const sg_config_t *cfg) {
  long s = (long)((cfg->clickhouse_timeout_ms + 999) / 1000);
  return s > 0 ? s : 1;
}

/* One DDL statement on cfg's cluster, waiting at most wait_s seconds for
 * every server (0: queue it without waiting). 0 done; 1 done on the
 * servers that are up and queued for *down of them that are not; otherwise
 * as exec(). */
static int exec_on_cluster(const sg_config_t *cfg, const char *sql, long wait_s, long *down, sg_buf_t *err) {
  sg_ch_opts_t o;
  ch_opts(cfg, 1, &o);
  o.timeout_ms = wait_s * 1000 + 10000; /* ClickHouse answers first */
  char settings[64];
  snprintf(settings, sizeof settings, "distributed_ddl_task_timeout=%ld", wait_s);
  sg_ch_req_t q;
  memset(&q, 0, sizeof q);
  q.sql = sql;
  q.settings = settings;
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) return SG_EIO;
  ddl_run_t d = {NULL, SG_EIO, 0, SG_BUF_INIT, SG_BUF_INIT};
  d.c = sg_ch_client_new(&loop, &o);
  int rc = d.c ? sg_ch_send(d.c, &q, ddl_cb, &d) : SG_ENOMEM;
  if (rc != 0) {
    sg_ch_client_close(d.c);
    d.status = rc;
    sg_buf_puts(&d.line, d.c ? "ClickHouse request could not start" : "ClickHouse client: out of memory");
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0 && d.status == 0) d.status = SG_EIO;
  rc = d.status;
  if (rc != 0 && sg_ch_ddl_queued_for_down(d.code, d.body.data ? d.body.data : d.line.data, down))
    rc = 1;
  else if (rc != 0 && err) {
    where_prefix(cfg, err);
    sg_buf_puts(err, d.line.data ? d.line.data : sg_strerror(rc));
    sg_buf_printf(err, "\n  in: %.300s", sql);
  }
  sg_buf_free(&d.body);
  sg_buf_free(&d.line);
  if (rc == 0 || rc == 1) return rc;
  return rc == SG_EUNAVAIL ? SG_EUNAVAIL : SG_EIO;
}

static int read_existing(const sg_config_t *cfg, const sg_ch_schema_opts_t *so, sg_ch_existing_t *ex,
                         sg_buf_t *err) {
  sg_buf_t sql = SG_BUF_INIT, out = SG_BUF_INIT;
  sg_ch_existing_free(ex);
  int rc = sg_ch_existing_tables_sql(so, &sql);
  rc = rc ? rc : exec(cfg, sql.data, &out, err, 0);
  rc = rc ? rc : sg_ch_existing_add_tables(ex, out.data, out.len);
  sg_buf_reset(&sql);
  sg_buf_reset(&out);
  rc = rc ? rc : sg_ch_existing_columns_sql(so, &sql);
  rc = rc ? rc : exec(cfg, sql.data, &out, err, 0);
  rc = rc ? rc : sg_ch_existing_add_columns(ex, out.data, out.len);
  sg_buf_reset(&sql);
  sg_buf_reset(&out);
  rc = rc ? rc : sg_ch_index_state_sql(so, ex, &sql);
  /* The markers are read through the Distributed tables on a cluster: with
   * a replica down, each shard's query fails over to another, which must
   * connect within connect_timeout_with_failover_ms (50 ms by default, and
   * missed on a loaded machine: code 279). It gets a second, and the read
   * a few tries; the statements before it were local. */
  if (rc == 0 && sql.len) {
    sg_buf_t why = SG_BUF_INIT;
    for (int tries = 1;; tries++) {
      sg_buf_reset(&out);
      sg_buf_reset(&why);
      rc = exec_with(cfg, sql.data, 0, "connect_timeout_with_failover_ms=1000", &out, &why, 0);
      if (rc == 0 || tries == INDEX_STATE_TRIES) break;
      usleep(200 * 1000);
    }
    if (rc == 0) rc = sg_ch_existing_add_index(ex, out.data, out.len);
    else if (err) sg_buf_puts(err, why.data ? why.data : sg_strerror(rc));
    sg_buf_free(&why);
  }
  sg_buf_free(&sql);
  sg_buf_free(&out);
  return rc;
}

int sg_ch_setup(const sg_config_t *cfg, unsigned flags, sg_ch_target_t *out, sg_buf_t *done,
                sg_buf_t *err) {
  memset(out, 0, sizeof *out);
  sg_ch_schema_opts_t so;
  sg_ch_setup_opts(cfg, &so);
  int rc = 0;
  if (cfg->clickhouse_version[0]) {
    snprintf(out->version_text, sizeof out->version_text, "%s", cfg->clickhouse_version);
  } else {
    sg_buf_t v = SG_BUF_INIT;
    rc = exec(cfg, "SELECT version()", &v, err, 0);
    if (rc == 0)
      snprintf(out->version_text, sizeof out->version_text, "%.*s",
               (int)strcspn(v.data ? v.data : "", "\r\n"), v.data ? v.data : "");
    sg_buf_free(&v);
    if (rc) return rc;
  }
  if (sg_ch_version_parse(out->version_text, &out->ver) != 0) {
    if (err) sg_buf_printf(err, "ClickHouse's version '%s' does not parse", out->version_text);
    return SG_EIO;
  }
  sg_ch_existing_t ex;
  memset(&ex, 0, sizeof ex);
  rc = read_existing(cfg, &so, &ex, err);
  sg_ch_stmts_t st = {0};
  if (rc == 0) rc = sg_ch_upgrade_statements(&out->ver, &so, &ex, &st);
  if (rc == SG_EINVAL) { /* an existing table without a usable created_at: say which */
    sg_ch_layout_t l;
    if (sg_ch_table_layout(&ex, &so, "spans", &l, err) == 0) sg_ch_table_layout(&ex, &so, "nodes", &l, err);
  }
  long wait_s = sg_ch_ddl_wait_s(cfg), down = 0;
  int fill_failed = 0;
  sg_ch_layout_t had;
  int skip_fill = rc == 0 && (flags & SG_CH_SETUP_NO_BACKFILL) && sg_ch_table_layout(&ex, &so, "spans", &had, NULL) == 0;
  for (size_t i = 0; rc == 0 && i < st.n; i++) {
    if (!(flags & SG_CH_SETUP_CREATE)) {
      if (done) sg_buf_printf(done, "missing: %s\n", st.what[i]);
      continue;
    }
    if (st.flags[i] & SG_CH_STMT_BACKFILL) {
      /* an INSERT, not DDL; the schema works without it: reads leave the
       * index alone until a later start or `spangate schema --apply`
       * completes it */
      if (fill_failed) continue;
      if (skip_fill) {
        if (done)
          sg_buf_printf(done, "left for `spangate schema --apply`: %s (reads from ClickHouse do without the "
                        "read index until it is complete)\n", st.what[i]);
        fill_failed = 1; /* one line: the marker waits for its backfill */
        continue;
      }
      sg_buf_t why = SG_BUF_INIT;
      if (exec_with(cfg, st.v[i], st.flags[i], NULL, NULL, &why, 1) != 0) {
        fill_failed = 1;
        if (done)
          sg_buf_printf(done, "could not %s: %s (reads from ClickHouse do without the read index; the next "
                        "start or `spangate schema --apply` tries again)\n", st.what[i], why.data ? why.data : "?");
      } else if (done) {
        sg_buf_printf(done, "%s\n", st.what[i]);
      }
      sg_buf_free(&why);
      continue;
    }
    if (!so.cluster || !*so.cluster) {
      rc = exec(cfg, st.v[i], NULL, err, 1);
      if (rc == 0 && done) sg_buf_printf(done, "%s\n", st.what[i]);
      continue;
    }
    int q = exec_on_cluster(cfg, st.v[i], down ? 0 : wait_s, &down, err);
    if (q == 0 && down) {
      if (done) sg_buf_printf(done, "%s (queued ON CLUSTER: %ld servers are down)\n", st.what[i], down);
    } else if (q == 0) {
      if (done) sg_buf_printf(done, "%s\n", st.what[i]);
    } else if (q == 1) {
      if (done)
        sg_buf_printf(done, "%s: done on the servers that are up; %ld did not answer within %ld s (down?) "
                      "and run it when they are back\n", st.what[i], down, wait_s);
    } else {
      rc = q;
    }
  }
  if (rc == 0 && st.n && (flags & SG_CH_SETUP_CREATE)) rc = read_existing(cfg, &so, &ex, err);
  /* statements queued without waiting: the servers that are up run them
   * within moments; read until the one that answers has everything */
  for (long tries = wait_s * 5; rc == 0 && down && tries > 0; tries--) {
    sg_ch_stmts_t left = {0};
    int lrc = sg_ch_upgrade_statements(&out->ver, &so, &ex, &left);
    size_t n = 0;
    for (size_t i = 0; lrc == 0 && i < left.n; i++) n += !(left.flags[i] & SG_CH_STMT_BACKFILL);
    sg_ch_stmts_free(&left);
    if (lrc != 0 || n == 0) break;
    usleep(200 * 1000);
    rc = read_existing(cfg, &so, &ex, err);
  }
  if (rc == 0) {
    rc = sg_ch_table_layout(&ex, &so, "spans", &out->spans, err);
    if (rc == SG_ENOTFOUND && err)
      sg_buf_puts(err, "; create it with `spangate schema --apply` (or leave clickhouse_create_schema on)");
  }
  if (rc == 0 && sg_ch_index_complete(&ex, &so)) out->ver.caps |= SG_CH_READ_INDEX;
  if (rc == 0) {
    int nrc = sg_ch_table_layout(&ex, &so, "nodes", &out->nodes, NULL);
    if (nrc == SG_ENOTFOUND) sg_ch_layout_of_version(&out->ver, &out->nodes);
    else if (nrc != 0) rc = sg_ch_table_layout(&ex, &so, "nodes", &out->nodes, err);
  }
  sg_ch_stmts_free(&st);
  sg_ch_existing_free(&ex);
  return rc;
}

/* ---- the cache in spool_dir --------------------------------------------------------- */

static void cache_path(const sg_config_t *cfg, const char *name, char *out, size_t cap) {
  snprintf(out, cap, "%s/%s", cfg->spool_dir, name);
}

int sg_ch_setup_save(const sg_config_t *cfg, const sg_ch_target_t *t) {
  char path[4096];
  mkdir(cfg->spool_dir, 0755);
  cache_path(cfg, "clickhouse.version", path, sizeof path);
  FILE *f = fopen(path, "w");
  if (!f) return SG_EIO;
  fprintf(f, "%s\n", t->version_text);
  int rc = fclose(f) == 0 ? 0 : SG_EIO;
  cache_path(cfg, "clickhouse.layout", path, sizeof path);
  if (rc == 0 && (f = fopen(path, "w")) != NULL) {
    fprintf(f, "spans %s\nnodes %s\nread_index %s\n", (t->spans.flags & SG_CH_LAYOUT_DT64) ? "dt64" : "us",
            (t->nodes.flags & SG_CH_LAYOUT_DT64) ? "dt64" : "us", (t->ver.caps & SG_CH_READ_INDEX) ? "complete" : "no");
    rc = fclose(f) == 0 ? 0 : SG_EIO;
  }
  return rc;
}

int sg_ch_setup_cached(const sg_config_t *cfg, sg_ch_target_t *out, sg_buf_t *err) {
  memset(out, 0, sizeof *out);
  char path[4096], text[64] = {0};
  cache_path(cfg, "clickhouse.version", path, sizeof path);
  FILE *f = fopen(path, "r");
  if (f) {
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
  }
  if (cfg->clickhouse_version[0]) snprintf(text, sizeof text, "%s", cfg->clickhouse_version);
  if (sg_ch_version_parse(text, &out->ver) != 0) {
    if (err) sg_buf_printf(err, "no ClickHouse version is cached in %s", path);
    return SG_ENOTFOUND;
  }
  snprintf(out->version_text, sizeof out->version_text, "%.*s", (int)strcspn(text, "\r\n"), text);
  sg_ch_layout_of_version(&out->ver, &out->spans);
  out->nodes = out->spans;
  cache_path(cfg, "clickhouse.layout", path, sizeof path);
  if ((f = fopen(path, "r")) != NULL) {
    char name[16], lay[16];
    while (fscanf(f, "%15s %15s", name, lay) == 2) {
      sg_ch_layout_t l = {strcmp(lay, "dt64") ? 0u : SG_CH_LAYOUT_DT64};
      if (!strcmp(name, "spans")) out->spans = l;
      if (!strcmp(name, "nodes")) out->nodes = l;
      if (!strcmp(name, "read_index") && !strcmp(lay, "complete")) out->ver.caps |= SG_CH_READ_INDEX;
    }
    fclose(f);
  }
  return 0;
}
