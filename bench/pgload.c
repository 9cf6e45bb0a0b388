/* pgload.c - the floor of request latency: each request's rows COPY'd
 * straight into PostgreSQL, paced as load.c paces its open loop.
 *
 *   pgload -u CONNINFO -f ROWS -i INDEX -r RATE (-d SECONDS | -n REQUESTS)
 *          [-c SESSIONS] [--raw FILE]
 *
 * ROWS and INDEX come from `rows --pg ROWS --pg-index INDEX`: COPY text of
 * the columns pgsink.c writes, and one "offset length" line per request.
 * Request i (in INDEX order, wrapping around) is due at t0 + i / RATE,
 * whether or not earlier ones are done; a free session runs
 * `COPY spans (...) FROM STDIN` with its rows (one statement, one
 * transaction, committed with the server's synchronous_commit); its latency
 * counts from the due time to the commit, so waiting for a session counts
 * (no coordinated omission), as in load.c. SESSIONS (default 8): bench/run.sh
 * passes as many as the gateway's ingest pools keep (workers x
 * (pg_pool_size + pg_spare_connections)).
 *
 * Prints one JSON object: counts, duration, rate, latency percentiles (ms).
 * --raw FILE writes every latency (ms, one per line) for merging runs.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char copy_sql[] =
    "COPY spans (project_id, created_by_id, trace_id, span_id, parent_id, trace_type, span_type,"
    " span_kind, span_name, start_time, end_time, status_code, status_message, attributes,"
    " \"references\", links, hashes, events, session_id, user_id, agent_id) FROM STDIN";

typedef struct {
  size_t off, len;
} req_t;

typedef struct {
  size_t req;     /* index into reqs */
  double due;     /* CLOCK_MONOTONIC seconds */
} item_t;

static const char *conninfo;
static char *data;
static req_t *reqs;
static size_t nreqs;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static item_t *queue;       /* every due item, in order; head advances */
static size_t qhead, qtail;
static int closed;          /* no more items will come */
static double *lat_ms;      /* per item, filled by the workers */
static size_t nok, nerr;
static char last_error[512];

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void sleep_until(double t) {
  struct timespec ts;
  ts.tv_sec = (time_t)t;
  ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

/* One COPY of a request's rows: 0, or -1 with the reason in why. */
static int copy_one(PGconn *c, const req_t *r, char *why, size_t cap) {
  PGresult *res = PQexec(c, copy_sql);
  int ok = PQresultStatus(res) == PGRES_COPY_IN;
  PQclear(res);
  if (ok) ok = PQputCopyData(c, data + r->off, (int)r->len) == 1 && PQputCopyEnd(c, NULL) == 1;
  int rc = ok ? 0 : -1;
  while ((res = PQgetResult(c)) != NULL) {
    if (PQresultStatus(res) != PGRES_COMMAND_OK) rc = -1;
    PQclear(res);
  }
  if (rc) snprintf(why, cap, "%s", PQerrorMessage(c));
  return rc;
}

static void *worker(void *arg) {
  (void)arg;
  PGconn *c = PQconnectdb(conninfo);
  if (PQstatus(c) != CONNECTION_OK) {
    fprintf(stderr, "pgload: %s", PQerrorMessage(c));
    exit(1);
  }
  char why[512];
  for (;;) {
    pthread_mutex_lock(&mu);
    while (qhead == qtail && !closed) pthread_cond_wait(&cv, &mu);
    if (qhead == qtail) {
      pthread_mutex_unlock(&mu);
      break;
    }
    size_t k = qhead++;
    item_t it = queue[k];
    pthread_mutex_unlock(&mu);
    int rc = copy_one(c, &reqs[it.req], why, sizeof why);
    double ms = (now_s() - it.due) * 1e3;
    pthread_mutex_lock(&mu);
    lat_ms[k] = rc ? -1 : ms;
    if (rc) {
      nerr++;
      snprintf(last_error, sizeof last_error, "%s", why);
    } else {
      nok++;
    }
    pthread_mutex_unlock(&mu);
  }
  PQfinish(c);
  return NULL;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double p) {
  if (n == 0) return 0;
  size_t i = (size_t)(p / 100.0 * (double)n);
  if (i >= n) i = n - 1;
  return v[i];
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)n + 1);
  if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
    free(b);
    b = NULL;
  }
  fclose(f);
  if (b) b[n] = '\0';
  *len = (size_t)n;
  return b;
}

int main(int argc, char **argv) {
  const char *rows = NULL, *index = NULL, *raw = NULL;
  double rate = 0, duration = 0;
  size_t nwant = 0;
  int sessions = 8;
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *a = argv[i], *v = argv[i + 1];
    if (!strcmp(a, "-u")) conninfo = v;
    else if (!strcmp(a, "-f")) rows = v;
    else if (!strcmp(a, "-i")) index = v;
    else if (!strcmp(a, "-r")) rate = atof(v);
    else if (!strcmp(a, "-d")) duration = atof(v);
    else if (!strcmp(a, "-n")) nwant = strtoull(v, NULL, 10);
    else if (!strcmp(a, "-c")) sessions = atoi(v);
    else if (!strcmp(a, "--raw")) raw = v;
    else goto usage;
  }
  if (!conninfo || !rows || !index || rate <= 0 || (duration <= 0 && nwant == 0) || sessions < 1 ||
      (argc % 2) != 1)
    goto usage;
  size_t dlen, ilen;
  data = read_file(rows, &dlen);
  char *itext = read_file(index, &ilen);
  if (!data || !itext) {
    perror("pgload: reading the rows");
    return 1;
  }
  for (char *p = itext; *p; p++) nreqs += *p == '\n';
  reqs = calloc(nreqs ? nreqs : 1, sizeof *reqs);
  size_t k = 0;
  for (char *p = itext; k < nreqs && *p;) {
    char *end;
    reqs[k].off = strtoull(p, &end, 10);
    reqs[k].len = strtoull(end, &end, 10);
    if (reqs[k].off + reqs[k].len > dlen) {
      fprintf(stderr, "pgload: the index does not match the rows\n");
      return 1;
    }
    k++;
    p = strchr(end, '\n');
    if (!p) break;
    p++;
  }
  if (k == 0) {
    fprintf(stderr, "pgload: no requests in %s\n", index);
    return 1;
  }
  nreqs = k;
  size_t total = nwant ? nwant : (size_t)(rate * duration);
  if (total == 0) total = 1;
  queue = calloc(total, sizeof *queue);
  lat_ms = calloc(total, sizeof *lat_ms);
  pthread_t *th = calloc((size_t)sessions, sizeof *th);
  for (int i = 0; i < sessions; i++) pthread_create(&th[i], NULL, worker, NULL);

  double t0 = now_s() + 0.2; /* let the sessions connect */
  for (size_t i = 0; i < total; i++) {
    double due = t0 + (double)i / rate;
    sleep_until(due);
    pthread_mutex_lock(&mu);
    queue[qtail++] = (item_t){i % nreqs, due};
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
  }
  pthread_mutex_lock(&mu);
  closed = 1;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  for (int i = 0; i < sessions; i++) pthread_join(th[i], NULL);
  double secs = now_s() - t0;

  double *ok = malloc((total ? total : 1) * sizeof *ok);
  size_t n = 0;
  for (size_t i = 0; i < total; i++)
    if (lat_ms[i] >= 0) ok[n++] = lat_ms[i];
  if (raw) {
    FILE *f = fopen(raw, "w");
    if (!f) {
      perror(raw);
      return 1;
    }
    for (size_t i = 0; i < n; i++) fprintf(f, "%.3f\n", ok[i]);
    fclose(f);
  }
  qsort(ok, n, sizeof *ok, cmp_double);
  printf("{\"requests_ok\":%zu,\"errors\":%zu,\"connections\":%d,\"target_rate_rps\":%.2f,"
         "\"seconds\":%.3f,\"requests_per_s\":%.2f,"
         "\"latency_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"p99_9\":%.3f,\"max\":%.3f},"
         "\"last_error\":\"",
         nok, nerr, sessions, rate, secs, (double)nok / secs, pct(ok, n, 50), pct(ok, n, 90),
         pct(ok, n, 99), pct(ok, n, 99.9), n ? ok[n - 1] : 0.0);
  for (const char *p = last_error; *p; p++) {
    if (*p == '"' || *p == '\\') putchar('\\');
    if ((unsigned char)*p >= 0x20) putchar(*p);
  }
  printf("\"}\n");
  return nerr ? 1 : 0;

usage:
  fprintf(stderr, "usage: pgload -u CONNINFO -f ROWS -i INDEX -r RATE (-d SECONDS | -n REQUESTS)\n"
                  "              [-c SESSIONS] [--raw FILE]\n");
  return 2;
}
