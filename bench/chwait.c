/* chwait.c - the end of a gateway round: the moment ClickHouse holds every
 * span.
 *
 *   chwait -p PORT -d DATABASE -n ROWS [-t TABLE] [-i INTERVAL_MS] [-T TIMEOUT_S]
 *
 * Asks `SELECT count() FROM TABLE` (default spans) every INTERVAL_MS
 * (default 20) over one kept-alive HTTP connection, and prints the wall
 * clock (seconds.nanoseconds, as `date +%s.%N`) at which a count of at least
 * ROWS came back. Exit 1 after TIMEOUT_S (default 600) with the last count
 * on stderr.
 *
 * The bench polled with a curl process per count, and each cost about 45 ms
 * of CPU: a round's last ClickHouse inserts shared the two cores with the
 * poller that timed them, while the floor times its own inserts. One
 * process and one connection cost ClickHouse's query and little else.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
  char text[64];
  size_t len;
} answer_t;

static size_t keep(char *p, size_t size, size_t n, void *arg) {
  answer_t *a = arg;
  size_t k = size * n, room = sizeof a->text - 1 - a->len, take = k < room ? k : room;
  memcpy(a->text + a->len, p, take);
  a->len += take;
  a->text[a->len] = '\0';
  return k;
}

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(void) {
  fprintf(stderr, "usage: chwait -p PORT -d DATABASE -n ROWS [-t TABLE] [-i INTERVAL_MS] [-T TIMEOUT_S]\n");
  exit(2);
}

int main(int argc, char **argv) {
  const char *db = NULL, *table = "spans";
  long port = 0, interval_ms = 20;
  long long want = -1;
  double timeout_s = 600;
  int c;
  while ((c = getopt(argc, argv, "p:d:n:t:i:T:")) != -1) {
    switch (c) {
      case 'p': port = atol(optarg); break;
      case 'd': db = optarg; break;
      case 'n': want = atoll(optarg); break;
      case 't': table = optarg; break;
      case 'i': interval_ms = atol(optarg); break;
      case 'T': timeout_s = atof(optarg); break;
      default: usage();
    }
  }
  if (port <= 0 || !db || want < 0 || interval_ms < 1) usage();

  curl_global_init(CURL_GLOBAL_DEFAULT);
  CURL *h = curl_easy_init();
  if (!h) return 1;
  char *edb = curl_easy_escape(h, db, 0);
  char url[512], sql[256];
  snprintf(url, sizeof url, "http://127.0.0.1:%ld/?database=%s", port, edb);
  curl_free(edb);
  snprintf(sql, sizeof sql, "SELECT count() FROM %s", table);
  answer_t a;
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, sql);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, keep);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &a);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);

  double deadline = mono() + timeout_s;
  long long n = -1;
  int found = 0;
  for (;;) {
    a.len = 0;
    a.text[0] = '\0';
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (rc == CURLE_OK && status == 200) {
      n = atoll(a.text);
      if (n >= want) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        printf("%lld.%09ld\n", (long long)now.tv_sec, now.tv_nsec);
        found = 1;
        break;
      }
    } else if (rc != CURLE_OK) {
      fprintf(stderr, "chwait: %s\n", curl_easy_strerror(rc));
    } else {
      fprintf(stderr, "chwait: HTTP %ld: %s\n", status, a.text);
    }
    if (mono() >= deadline) {
      fprintf(stderr, "chwait: %s.%s holds %lld of %lld rows after %.0f s\n", db, table, n, want, timeout_s);
      break;
    }
    struct timespec pause = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
    nanosleep(&pause, NULL);
  }
  curl_easy_cleanup(h);
  curl_global_cleanup();
  return found ? 0 : 1;
}
