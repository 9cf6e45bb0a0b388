/* server.c - start the workers, watch the signals, shut down gracefully.
 *
 * Each worker is a thread with its own uv loop, its own listening socket on
 * the same address (SO_REUSEPORT: the kernel spreads connections), its own
 * PostgreSQL pool and sink. The main thread only handles signals. */
#include "server.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ch.h"
#include "ch_config.h"
#include "ch_setup.h"
#include "err.h"
#include "ingest_grpc.h"
#include "listen.h"
#include "log.h"
#include "metrics.h"
#include "pgcapture.h"
#include "router.h"
#include "worker.h"

typedef struct {
  const sg_config_t *cfg;
  sg_worker_t *workers;
  int nworkers;
  uv_loop_t *loop;
  uv_signal_t sigint, sigterm, sighup;
  uv_timer_t deadline;
  uv_async_t worker_done;
  _Atomic int finished;
  int stopping;
  int timed_out;
} server_t;

static server_t *the_server;
static sg_pgcapture_t *capture; /* clickhouse_writes = "capture" */
/* ClickHouse's version and layout, found before the workers start; NULL
 * when unknown (each chsink then asks itself). */
static const sg_ch_target_t *ch_target_known;
static sg_ch_target_t ch_target;

/* ---- worker thread ------------------------------------------------------ */

static void publish_stats(sg_worker_t *w) {
  const sg_pg_stats_t *st = sg_pg_pool_stats(w->pg);
#define PUB(field, metric, value)                                                             \
  do {                                                                                         \
    atomic_fetch_add(&sg_metrics.metric, (value) - w->field);                                  \
    w->field = (value);                                                                        \
  } while (0)
  PUB(pub_conns, pg_conns_configured, (int64_t)st->configured);
  PUB(pub_up, pg_conns_up, (int64_t)st->up);
  PUB(pub_busy, pg_conns_busy, (int64_t)st->busy);
  PUB(pub_queue, pg_queue, (int64_t)st->queued);
  PUB(pub_reconnects, pg_reconnects, (uint64_t)st->reconnects);
  PUB(pub_spare, pg_spare_queries, (uint64_t)st->spare_queries);
  PUB(pub_errors, pg_errors, (uint64_t)st->errors);
  PUB(pub_open, connections_open, (int64_t)(w->http ? sg_http_server_connections(w->http) : 0));
  PUB(pub_grpc_open, grpc_connections_open, (int64_t)(w->grpc ? sg_grpc_server_connections(w->grpc) : 0));
  sg_lua_stats_t ls = w->lua_retired;
  if (w->lua) {
    sg_lua_stats_t cur;
    sg_lua_rt_stats(w->lua, &cur);
    ls.calls += cur.calls;
    ls.errors += cur.errors;
    ls.budget_kills += cur.budget_kills;
    ls.spans_dropped += cur.spans_dropped;
    ls.spans_rejected += cur.spans_rejected;
  }
  if (w->lua) sg_lua_rt_publish_metrics(w->lua, 0);
  PUB(pub_lua_calls, lua_calls, ls.calls);
  PUB(pub_lua_errors, lua_errors, ls.errors);
  PUB(pub_lua_kills, lua_budget_kills, ls.budget_kills);
  PUB(pub_lua_dropped, lua_spans_dropped, ls.spans_dropped);
  PUB(pub_lua_rejected, lua_spans_rejected, ls.spans_rejected);
  sg_chsink_stats_t cs;
  memset(&cs, 0, sizeof cs);
  if (w->chsink) sg_chsink_stats(w->chsink, &cs);
  PUB(pub_ch_enabled, ch_enabled, (int64_t)(w->chsink != NULL));
  PUB(pub_ch_reachable, ch_reachable, (int64_t)(w->chsink && cs.reachable));
  PUB(pub_spool_bytes, spool_bytes, (int64_t)cs.spool_bytes);
  PUB(pub_spool_records, spool_records, (int64_t)cs.spool_records);
  PUB(pub_ch_inserts, ch_inserts, cs.inserts);
  PUB(pub_ch_rows, ch_rows, cs.rows_sent);
  PUB(pub_ch_insert_us, ch_insert_us, cs.insert_us_sum);
  PUB(pub_ch_retries, ch_retries, cs.retries);
  PUB(pub_ch_dead_records, ch_dead_records, cs.dead_records);
  PUB(pub_ch_dead_rows, ch_dead_rows, cs.dead_rows);
  PUB(pub_ch_encode_rejects, ch_encode_rejects, cs.encode_rejects);
  PUB(pub_ch_gap_spans, ch_gap_spans, cs.gaps);
  PUB(pub_pg_groups, group_commits, w->sink ? sg_pgsink_stats(w->sink)->groups : w->pub_pg_groups);
  PUB(pub_ch_dead_fail, ch_dead_letter_failures, cs.dead_letter_failures);
  PUB(pub_ch_spool_err, ch_spool_errors, cs.spool_errors);
  if (w->id <= SG_MAX_WORKERS) atomic_store(&sg_metrics.spool_oldest_us[w->id], cs.spool_oldest_us);
  /* The worker's ClickHouse endpoints (all zero once the client is gone). */
  const sg_ch_client_t *cc = w->ch;
  size_t neps = sg_ch_endpoint_count(cc);
  const char *names[SG_METRICS_CH_ENDPOINTS];
  for (size_t i = 0; i < SG_METRICS_CH_ENDPOINTS; i++) {
    sg_ch_endpoint_stats_t es;
    memset(&es, 0, sizeof es);
    if (i < neps) sg_ch_endpoint_stats(cc, i, &es);
    names[i] = es.name;
    PUB(pub_ep_up[i], ch_ep_up[i], (int64_t)(i < neps && es.up));
    PUB(pub_ep_pending[i], ch_ep_pending[i], (int64_t)es.pending);
    PUB(pub_ep_requests[i], ch_ep_requests[i], es.requests);
    PUB(pub_ep_failures[i], ch_ep_failures[i], es.failures);
  }
  if (neps) sg_metrics_ch_endpoint_names(names, neps);
  PUB(pub_ch_failovers, ch_failovers, sg_ch_failovers(cc));
#undef PUB
}

static void stats_cb(uv_timer_t *t) { publish_stats(t->data); }

static void close_cb(uv_handle_t *h) { (void)h; }

/* Both listeners have stopped: no request is in flight any more, the sink
 * and pools can go. */
static void servers_closed(sg_worker_t *w) {
  sg_pg_pool_close(w->read_pg);
  w->read_pg = NULL;
  /* The ClickHouse client first: closing it cancels what its users have in
   * flight (an insert may be sending from the spool's memory). */
  sg_ch_client_close(w->ch);
  w->ch = NULL;
  sg_chttl_close(w->ttl);
  w->ttl = NULL;
  sg_chsink_close(w->chsink);
  w->chsink = NULL;
  sg_pgsink_close(w->sink);
  w->sink = NULL;
  publish_stats(w);
  sg_pg_pool_close(w->pg);
  w->pg = NULL;
  sg_auth_free(w->auth);
  w->auth = NULL;
  sg_lua_rt_free(w->lua);
  w->lua = NULL;
  uv_close((uv_handle_t *)&w->reload, close_cb);
  uv_close((uv_handle_t *)&w->stats_timer, close_cb);
  uv_close((uv_handle_t *)&w->sync_timer, close_cb);
  uv_close((uv_handle_t *)&w->wake, close_cb);
}

static void http_closed_cb(void *arg) {
  sg_worker_t *w = arg;
  w->http = NULL;
  if (--w->servers_open == 0) servers_closed(w);
}

static void grpc_closed_cb(void *arg) {
  sg_worker_t *w = arg;
  w->grpc = NULL;
  if (--w->servers_open == 0) servers_closed(w);
}

static void wake_cb(uv_async_t *a) {
  sg_worker_t *w = a->data;
  if (w->stopping) return;
  w->stopping = 1;
  uv_timer_stop(&w->stats_timer);
  w->servers_open = w->grpc ? 2 : 1;
  if (w->grpc) sg_grpc_server_shutdown(w->grpc, grpc_closed_cb, w);
  sg_http_server_shutdown(w->http, http_closed_cb, w);
}

/* SIGHUP, on the worker's loop, so between requests: fresh Lua states from
 * the scripts on disk (and the keys file). Anything that fails to load keeps
 * what is running. */
static void reload_cb(uv_async_t *a) {
  sg_worker_t *w = a->data;
  if (w->stopping) return;
  sg_buf_t err = SG_BUF_INIT;
  sg_lua_rt_t *fresh = sg_lua_rt_new(w->cfg, &err);
  if (!fresh) {
    sg_error("lua", "reload failed, the previous scripts keep running: %s",
             err.data ? err.data : "out of memory");
    atomic_fetch_add(&sg_metrics.lua_reload_failures, 1);
    atomic_store(&sg_metrics.lua_reload_failed, 1);
  } else {
    sg_lua_stats_t old;
    sg_lua_rt_stats(w->lua, &old);
    w->lua_retired.calls += old.calls;
    w->lua_retired.errors += old.errors;
    w->lua_retired.budget_kills += old.budget_kills;
    w->lua_retired.spans_dropped += old.spans_dropped;
    w->lua_retired.spans_rejected += old.spans_rejected;
    sg_lua_rt_publish_metrics(w->lua, 1);
    sg_lua_rt_free(w->lua);
    w->lua = fresh;
    atomic_fetch_add(&sg_metrics.lua_reloads, 1);
    atomic_store(&sg_metrics.lua_reload_failed, 0);
    if (w->id == 1) sg_info("lua", "scripts reloaded from %s", w->cfg->scripts);
  }
  sg_buf_reset(&err);
  if (!strcmp(w->cfg->auth, "keys")) {
    sg_auth_t *auth;
    size_t revoked;
    int rc = sg_auth_reload(w->auth, w->cfg, &auth, &err, &revoked);
    if (auth) {
      sg_auth_free(w->auth);
      w->auth = auth;
    }
    if (rc == SG_ECONFIG)
      sg_error("auth", "keys file refused: %s; no key was added, and %zu key%s it no longer lists "
                       "on a valid line %s revoked",
               err.data, revoked, revoked == 1 ? "" : "s", revoked == 1 ? "is" : "are");
    else if (rc != 0)
      sg_error("auth", "keys file reload failed, the previous keys stay: %s",
               err.data ? err.data : sg_strerror(rc));
    atomic_store(&sg_metrics.keys_reload_failed, rc != 0); /* before the count that reveals it */
    atomic_fetch_add(rc ? &sg_metrics.keys_reload_failures : &sg_metrics.keys_reloads, 1);
  }
  sg_buf_free(&err);
}

static void worker_main(void *arg) {
  sg_worker_t *w = arg;
  sg_log_set_thread_tag(w->tag);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&w->loop) != 0) sg_warn("server", "worker loop closed with handles open");
  atomic_fetch_add(&the_server->finished, 1);
  uv_async_send(&the_server->worker_done);
}

/* Builds everything a worker owns on its (not yet running) loop. */
static int worker_init(sg_worker_t *w, const sg_config_t *cfg, sg_buf_t *err) {
  w->cfg = cfg;
  snprintf(w->tag, sizeof w->tag, "worker %d", w->id);
  uv_loop_init(&w->loop);
  w->wake.data = w;
  uv_async_init(&w->loop, &w->wake, wake_cb);
  uv_timer_init(&w->loop, &w->stats_timer);
  w->stats_timer.data = w;
  uv_timer_init(&w->loop, &w->sync_timer);
  w->sync_timer.data = w;

  w->reload.data = w;
  uv_async_init(&w->loop, &w->reload, reload_cb);
  /* One budget for every worker and transport. */
  w->inflight.counter = &sg_metrics.inflight_bytes;
  w->inflight.max = cfg->max_inflight_bytes;
  w->inflight.own = &w->inflight_own;
  int rc = sg_auth_new(&w->loop, cfg, &w->auth, err);
  if (rc != 0) return rc;
  w->lua = sg_lua_rt_new(cfg, err);
  if (!w->lua) return SG_ESCRIPT;

  sg_pg_pool_opts_t po;
  memset(&po, 0, sizeof po);
  po.max_queue = 10000;
  po.writable = 1; /* a standby or read-only primary: no connection, 503 and /readyz says why */
  po.spares = (int)cfg->pg_spare_connections;
  po.spare_after_ms = (int)cfg->pg_spare_after_ms;
  w->pg = sg_pg_pool_new(&w->loop, cfg->postgres_uri,
                         (int)(cfg->pg_pool_size + cfg->pg_spare_connections), &po);
  if (!w->pg) return SG_ENOMEM;
  /* Reads have their own connections and a statement timeout, so an
   * expensive query can neither hold ingest's connections nor run forever;
   * a standby serves them too. */
  sg_pg_pool_opts_t ro;
  memset(&ro, 0, sizeof ro);
  ro.max_queue = 1000;
  ro.statement_timeout_ms = (int)cfg->query_timeout_ms;
  w->read_pg = sg_pg_pool_new(&w->loop, cfg->postgres_uri, (int)cfg->read_pool_size, &ro);
  if (!w->read_pg) return SG_ENOMEM;

  sg_pgsink_opts_t so;
  memset(&so, 0, sizeof so);
  so.window_ms = cfg->commit_window_ms > 0 ? (int)cfg->commit_window_ms : -1;
  so.max_batch_spans = (size_t)cfg->commit_max_spans;
  w->sink = sg_pgsink_new(&w->loop, w->pg, &so);
  if (!w->sink) return SG_ENOMEM;

  if (cfg->use_clickhouse) {
    w->ch = sg_ch_client_from_config(&w->loop, cfg);
    if (!w->ch) {
      sg_buf_puts(err, "ClickHouse client: out of memory");
      return SG_ENOMEM;
    }
    w->chsink = sg_chsink_new(&w->loop, cfg, w->ch, ch_target_known, w->id, w->pg, err);
    if (!w->chsink) return SG_ECONFIG;
    sg_chsink_watch(w->chsink, w->inflight.own);
    if (w->id == 1) w->ttl = sg_chttl_new(&w->loop, cfg, w->ch);
  }

  sg_http_limits_t lim;
  memset(&lim, 0, sizeof lim);
  lim.max_header_bytes = cfg->max_header_bytes;
  lim.max_body_bytes = cfg->max_body_bytes;
  lim.read_timeout_ms = (uint64_t)cfg->read_timeout_ms;
  lim.idle_timeout_ms = (uint64_t)cfg->idle_timeout_ms;
  lim.write_timeout_ms = (uint64_t)cfg->read_timeout_ms;
  lim.max_connections = (size_t)cfg->max_connections;
  lim.backlog = 1024;
  lim.inflight = w->inflight.counter;
  lim.max_inflight_bytes = w->inflight.max;
  lim.inflight_own = w->inflight.own;
  w->http = sg_http_server_new(&w->loop, w->listen_fd, &lim, sg_router_handle, w);
  if (!w->http) return SG_ENOMEM;
  sg_http_server_set_observer(w->http, sg_router_observe, w);
  if (w->grpc_fd >= 0) {
    sg_grpc_limits_t gl;
    memset(&gl, 0, sizeof gl);
    gl.max_message_bytes = cfg->max_body_bytes;
    gl.max_header_bytes = cfg->max_header_bytes;
    gl.max_streams = (uint32_t)cfg->grpc_max_streams;
    gl.read_timeout_ms = (uint64_t)cfg->read_timeout_ms;
    gl.idle_timeout_ms = (uint64_t)cfg->idle_timeout_ms;
    gl.write_timeout_ms = (uint64_t)cfg->read_timeout_ms;
    gl.max_connections = (size_t)cfg->max_connections;
    gl.backlog = 1024;
    gl.inflight = w->inflight.counter;
    gl.max_inflight_bytes = w->inflight.max;
    gl.inflight_own = w->inflight.own;
    gl.accept_encoding = SG_INGEST_GRPC_ENCODINGS;
    size_t nm;
    const sg_grpc_method_t *methods = sg_ingest_grpc_methods(&nm);
    uv_os_sock_t fd = w->grpc_fd;
    w->grpc_fd = -1; /* the server owns it now, also on failure */
    w->grpc = sg_grpc_server_new(&w->loop, fd, &gl, methods, nm, w);
    if (!w->grpc) return SG_ENOMEM;
    sg_grpc_server_set_observer(w->grpc, sg__ingest_grpc_observe, w);
  }
  uv_timer_start(&w->stats_timer, stats_cb, 0, 500);
  return 0;
}

/* ---- main thread -------------------------------------------------------- */

static void begin_shutdown(server_t *s, const char *why) {
  if (s->stopping) return;
  s->stopping = 1;
  sg_info("server", "%s: finishing in-flight requests (up to %lld ms)", why,
          s->cfg->shutdown_timeout_ms);
  for (int i = 0; i < s->nworkers; i++) uv_async_send(&s->workers[i].wake);
}

static void deadline_cb(uv_timer_t *t) {
  server_t *s = t->data;
  s->timed_out = 1;
  sg_error("server", "in-flight requests did not finish within shutdown_timeout_ms; exiting");
  uv_stop(s->loop);
}

static void signal_cb(uv_signal_t *h, int signum) {
  server_t *s = h->data;
  if (signum == SIGHUP) {
    sg_info("server", "SIGHUP: reloading the scripts in %s", s->cfg->scripts);
    for (int i = 0; i < s->nworkers; i++) uv_async_send(&s->workers[i].reload);
    sg_pgcapture_reload(capture);
    return;
  }
  if (s->stopping) {
    sg_warn("server", "second %s: exiting now", signum == SIGINT ? "SIGINT" : "SIGTERM");
    s->timed_out = 1;
    uv_stop(s->loop);
    return;
  }
  begin_shutdown(s, signum == SIGINT ? "SIGINT" : "SIGTERM");
  uv_timer_start(&s->deadline, deadline_cb, (uint64_t)s->cfg->shutdown_timeout_ms + 1000, 0);
}

static void worker_done_cb(uv_async_t *a) {
  server_t *s = a->data;
  if (atomic_load(&s->finished) < s->nworkers) return;
  uv_close((uv_handle_t *)&s->sigint, close_cb);
  uv_close((uv_handle_t *)&s->sigterm, close_cb);
  uv_close((uv_handle_t *)&s->sighup, close_cb);
  uv_close((uv_handle_t *)&s->deadline, close_cb);
  uv_close((uv_handle_t *)&s->worker_done, close_cb);
}

/* ClickHouse before the workers start: its version, the database and
 * tables created (or completed) when missing unless clickhouse_create_schema
 * is off, and the row layout of the spans table as it exists. A table
 * spangate cannot write fails the start (err names it); ClickHouse away
 * falls back to the layout cached in spool_dir by the last start, or to
 * gaps until a worker reaches it (chsink.c). */
static int clickhouse_at_start(const sg_config_t *cfg, sg_buf_t *err) {
  sg_buf_t done = SG_BUF_INIT, why = SG_BUF_INIT;
  unsigned flags = cfg->clickhouse_create_schema ? SG_CH_SETUP_CREATE | SG_CH_SETUP_NO_BACKFILL : 0;
  int rc = sg_ch_setup(cfg, flags, &ch_target, &done, &why);
  for (char *l = done.data, *nl; l && *l; l = nl + 1) {
    nl = strchr(l, '\n');
    if (!nl) break;
    *nl = '\0';
    if (flags) sg_info("clickhouse", "schema: %s", l);
    else sg_warn("clickhouse", "schema %s (clickhouse_create_schema is off; `spangate schema --apply` adds it)", l);
  }
  sg_buf_free(&done);
  if (rc == 0) {
    ch_target_known = &ch_target;
    sg_ch_setup_save(cfg, &ch_target);
    char where[512];
    sg_info("server", "ClickHouse %s at %s, database %s%s%s, spans rows %s; dual-write on",
            ch_target.version_text, sg_config_clickhouse_where(cfg, where, sizeof where), cfg->clickhouse_database,
            cfg->clickhouse_cluster[0] ? " on cluster " : "", cfg->clickhouse_cluster,
            (ch_target.spans.flags & SG_CH_LAYOUT_DT64) ? "DateTime64" : "DateTime + _us");
  } else if (rc == SG_EUNAVAIL) {
    sg_buf_t cached = SG_BUF_INIT;
    if (sg_ch_setup_cached(cfg, &ch_target, &cached) == 0) {
      ch_target_known = &ch_target;
      sg_warn("server", "%s; spooling rows in the layout found at the last start (ClickHouse %s)",
              why.data, ch_target.version_text);
    } else {
      sg_warn("server", "%s and %s; spans are recorded as gaps until ClickHouse answers", why.data,
              cached.data);
    }
    sg_buf_free(&cached);
    rc = 0;
  } else {
    sg_buf_puts(err, why.data ? why.data : sg_strerror(rc));
  }
  sg_buf_free(&why);
  return rc;
}

int sg_server_run(const sg_config_t *cfg) {
  signal(SIGPIPE, SIG_IGN);
  server_t s;
  memset(&s, 0, sizeof s);
  the_server = &s;
  s.cfg = cfg;
  s.nworkers = cfg->workers > 0 ? (int)cfg->workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (s.nworkers < 1) s.nworkers = 1;
  s.workers = calloc((size_t)s.nworkers, sizeof *s.workers);
  if (!s.workers) return SG_ENOMEM;

  int rc = 0;
  sg_buf_t err = SG_BUF_INIT;
  if (cfg->use_clickhouse) {
    sg_ch_global_init();
    rc = clickhouse_at_start(cfg, &err);
    if (rc != 0) {
      sg_error("server", "start-up failed: %s", err.data ? err.data : sg_strerror(rc));
      sg_buf_free(&err);
      free(s.workers);
      return rc;
    }
    sg_buf_reset(&err);
  }
  int capture_on = cfg->use_clickhouse && !strcmp(cfg->clickhouse_writes, "capture");
  if (capture_on) {
    /* wal_level or the role's rights wrong: say how to fix it and stop here */
    rc = sg_pgcapture_precheck(cfg, &err);
    if (rc == SG_ECONFIG) {
      sg_error("server", "clickhouse_writes = \"capture\": %s", err.data);
      sg_buf_free(&err);
      return rc;
    }
    if (rc != 0) sg_warn("server", "change capture: %s; it keeps trying", err.data);
    sg_buf_reset(&err);
    rc = 0;
  }
  sg_router_init();
  for (int i = 0; i < s.nworkers && rc == 0; i++) {
    s.workers[i].id = i + 1;
    s.workers[i].listen_fd = -1;
    s.workers[i].grpc_fd = -1;
    rc = sg_listen_tcp(cfg->listen, 1024, &s.workers[i].listen_fd, &err);
    if (rc == 0 && cfg->grpc_listen[0]) {
      sg_buf_t gerr = SG_BUF_INIT; /* "listen: ..." becomes "grpc_listen: ..." */
      rc = sg_listen_tcp(cfg->grpc_listen, 1024, &s.workers[i].grpc_fd, &gerr);
      if (rc != 0) sg_buf_printf(&err, "grpc_%s", gerr.data ? gerr.data : "listen failed");
      sg_buf_free(&gerr);
    }
    if (rc == 0) rc = worker_init(&s.workers[i], cfg, &err);
  }
  if (rc != 0) {
    sg_error("server", "start-up failed: %s", err.data ? err.data : sg_strerror(rc));
    sg_buf_free(&err);
    /* The process exits: the kernel reclaims the sockets and threads never started. */
    return rc;
  }
  sg_buf_free(&err);

  s.loop = uv_default_loop();
  s.sigint.data = s.sigterm.data = s.sighup.data = s.deadline.data = s.worker_done.data = &s;
  uv_signal_init(s.loop, &s.sigint);
  uv_signal_init(s.loop, &s.sigterm);
  uv_signal_init(s.loop, &s.sighup);
  uv_timer_init(s.loop, &s.deadline);
  uv_async_init(s.loop, &s.worker_done, worker_done_cb);
  uv_signal_start(&s.sigint, signal_cb, SIGINT);
  uv_signal_start(&s.sigterm, signal_cb, SIGTERM);
  uv_signal_start(&s.sighup, signal_cb, SIGHUP);

  for (int i = 0; i < s.nworkers; i++) uv_thread_create(&s.workers[i].thread, worker_main, &s.workers[i]);
  if (capture_on && (rc = sg_pgcapture_start(cfg, ch_target_known, &capture, &err)) != 0) {
    sg_error("server", "start-up failed: %s", err.data ? err.data : sg_strerror(rc));
    fflush(stderr);
    _exit(1); /* the workers are running: do not wait for them */
  }
  sg_info("server", "spangate %s listening on http://%s with %d worker%s", SG_VERSION, cfg->listen,
          s.nworkers, s.nworkers == 1 ? "" : "s");
  if (cfg->grpc_listen[0]) sg_info("server", "OTLP/gRPC (h2c) listening on %s", cfg->grpc_listen);

  uv_run(s.loop, UV_RUN_DEFAULT);
  if (s.timed_out) {
    fflush(stderr);
    _exit(1); /* workers may still hold requests; do not wait for them */
  }
  for (int i = 0; i < s.nworkers; i++) uv_thread_join(&s.workers[i].thread);
  sg_pgcapture_stop(capture);
  capture = NULL;
  uv_loop_close(s.loop);
  free(s.workers);
  sg_info("server", "stopped");
  return 0;
}
