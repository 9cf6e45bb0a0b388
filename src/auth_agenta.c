/* auth_agenta.c - API keys from Agenta's api_keys table.
 *
 * Agenta hands out keys as "<prefix>.<raw>" and stores
 * hashed_key = "<prefix>." || hex(sha256(raw)), with an optional
 * expiration_date. A key is looked up by that hash on the worker's own
 * PostgreSQL pool.
 *
 * Caching, and why it is shaped so. Anyone can present keys, so look-ups of
 * unknown keys must not be able to crowd out the keys that work:
 *  - good keys live in their own table (`good`), which a flood of bad keys
 *    cannot evict; an entry is fresh for auth_cache_ttl_s (never past the
 *    key's expiration_date), then stale: a stale good key is asked again,
 *    and that look-up skips the rate limit (there are only as many of them
 *    as there are good keys per TTL);
 *  - unknown, wrong and expired keys are remembered in a separate table
 *    (`bad`) for auth_negative_ttl_s, so a client retrying a bad key costs
 *    one look-up per that time;
 *  - every other look-up (a key seen in neither table) takes a token from a
 *    per-worker bucket refilled at auth_lookup_rate per second (burst: one
 *    second's worth), and at most MAX_COLD_INFLIGHT of them run at once.
 *    Without a token the key is answered "unavailable" (503 + Retry-After)
 *    at once, without asking PostgreSQL. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "auth_agenta.h"
#include "err.h"
#include "metrics.h"
#include "pg.h"
#include "span.h"

#define GOOD_SLOTS 4096 /* powers of two */
#define BAD_SLOTS 4096
#define MAX_COLD_INFLIGHT 16

typedef struct {
  uint8_t digest[32];  /* sha256 of the whole presented key */
  uint64_t until_ms;   /* loop time after which the entry is stale */
  uint64_t used;       /* 0 = empty slot */
  sg_principal_t who;
} good_t;

typedef struct {
  uint8_t digest[32];
  uint64_t until_ms;   /* 0 = empty */
} bad_t;

struct sg__auth_agenta_s {
  uv_loop_t *loop;
  sg_pg_pool_t *pool;
  uint64_t ttl_ms, neg_ttl_ms;
  double rate, tokens;  /* token bucket: refill per second, tokens now */
  uint64_t refilled_ms;
  unsigned cold_inflight;
  uint32_t seed;        /* slot choice an attacker cannot aim at */
  good_t *good;
  bad_t *bad;
};

typedef struct {
  struct sg__auth_agenta_s *ag;
  sg_auth_cb cb;
  void *arg;
  int cold;             /* counted in cold_inflight */
  uint8_t digest[32];
  char hashed[160];
  const char *params[1];
} lookup_t;

static const char lookup_sql[] =
    "SELECT project_id::text, created_by_id::text,"
    " CASE WHEN expiration_date IS NULL THEN NULL"
    "      ELSE (extract(epoch FROM expiration_date - now()) * 1000)::bigint END"
    " FROM api_keys WHERE hashed_key = $1 LIMIT 1";

int sg__auth_agenta_new(uv_loop_t *loop, const sg_config_t *cfg, struct sg__auth_agenta_s **out,
                        sg_buf_t *err) {
  const char *uri = cfg->agenta_postgres_uri[0] ? cfg->agenta_postgres_uri : cfg->postgres_uri;
  if (sg_pg_conninfo_check(uri, err) != 0) return SG_ECONFIG;
  struct sg__auth_agenta_s *ag = calloc(1, sizeof *ag);
  if (!ag || !(ag->good = calloc(GOOD_SLOTS, sizeof *ag->good)) ||
      !(ag->bad = calloc(BAD_SLOTS, sizeof *ag->bad))) {
    if (ag) free(ag->good);
    free(ag);
    return SG_ENOMEM;
  }
  ag->loop = loop;
  ag->ttl_ms = (uint64_t)(cfg->auth_cache_ttl_s > 0 ? cfg->auth_cache_ttl_s : 0) * 1000;
  ag->neg_ttl_ms = (uint64_t)(cfg->auth_negative_ttl_s > 0 ? cfg->auth_negative_ttl_s : 0) * 1000;
  ag->rate = cfg->auth_lookup_rate > 0 ? (double)cfg->auth_lookup_rate : 0;
  ag->tokens = ag->rate;
  ag->refilled_ms = loop ? uv_now(loop) : 0;
  if (RAND_bytes((unsigned char *)&ag->seed, sizeof ag->seed) != 1) ag->seed = (uint32_t)uv_hrtime();
  if (loop && !(ag->pool = sg_pg_pool_new(loop, uri, 2, NULL))) {
    free(ag->good);
    free(ag->bad);
    free(ag);
    return SG_ENOMEM;
  }
  *out = ag;
  return 0;
}

void sg__auth_agenta_free(struct sg__auth_agenta_s *ag) {
  if (ag->pool) sg_pg_pool_close(ag->pool);
  free(ag->good);
  free(ag->bad);
  free(ag);
}

/* The digest is SHA-256 of what the client sent, so it picks its slot; the
 * per-worker seed keeps a client from aiming a key at a given slot. */
static uint32_t slot_of(const struct sg__auth_agenta_s *ag, const uint8_t digest[32], uint32_t n) {
  uint32_t h;
  memcpy(&h, digest, sizeof h);
  h ^= ag->seed;
  h *= 0x9e3779b1u;
  return (h >> 16 ^ h) & (n - 1);
}

static void forget_good(struct sg__auth_agenta_s *ag, const uint8_t digest[32]) {
  good_t *g = &ag->good[slot_of(ag, digest, GOOD_SLOTS)];
  if (g->used && CRYPTO_memcmp(g->digest, digest, 32) == 0) memset(g, 0, sizeof *g);
}

static void remember_bad(struct sg__auth_agenta_s *ag, const uint8_t digest[32]) {
  forget_good(ag, digest);
  if (!ag->neg_ttl_ms) return;
  bad_t *b = &ag->bad[slot_of(ag, digest, BAD_SLOTS)];
  memcpy(b->digest, digest, 32);
  b->until_ms = uv_now(ag->loop) + ag->neg_ttl_ms;
}

/* A token for a look-up of a key not known to be good. */
static int take_token(struct sg__auth_agenta_s *ag) {
  if (ag->rate <= 0) return 1; /* 0: unlimited */
  uint64_t now = uv_now(ag->loop);
  ag->tokens += (double)(now - ag->refilled_ms) * ag->rate / 1000.0;
  ag->refilled_ms = now;
  double burst = ag->rate < 1 ? 1 : ag->rate;
  if (ag->tokens > burst) ag->tokens = burst;
  if (ag->tokens < 1) return 0;
  ag->tokens -= 1;
  return 1;
}

static void lookup_cb(void *arg, PGresult *res, int err, const char *errmsg) {
  lookup_t *lk = arg;
  struct sg__auth_agenta_s *ag = lk->ag;
  (void)errmsg;
  if (lk->cold) ag->cold_inflight--;
  if (err != 0) {
    lk->cb(lk->arg, err == SG_EPOISON ? SG_EAUTH : SG_EUNAVAIL, NULL,
           err == SG_EPOISON ? "invalid API key" : NULL);
    free(lk);
    return;
  }
  sg_principal_t who;
  memset(&who, 0, sizeof who);
  int allowed = 0;
  uint64_t now = uv_now(ag->loop), until = now + ag->ttl_ms;
  if (PQntuples(res) == 1) {
    const char *project = PQgetvalue(res, 0, 0);
    allowed = sg_id_parse(project, strlen(project), who.project_id) == 0;
    if (!PQgetisnull(res, 0, 1)) {
      const char *u = PQgetvalue(res, 0, 1);
      who.has_user = sg_id_parse(u, strlen(u), who.user_id) == 0;
    }
    if (!PQgetisnull(res, 0, 2)) {
      long long left = atoll(PQgetvalue(res, 0, 2));
      if (left <= 0) allowed = 0; /* expired */
      else if (now + (uint64_t)left < until) until = now + (uint64_t)left;
    }
  }
  if (allowed) { /* kept even with a TTL of 0: stale at once, but known good */
    good_t *g = &ag->good[slot_of(ag, lk->digest, GOOD_SLOTS)];
    memcpy(g->digest, lk->digest, 32);
    g->until_ms = until;
    g->used = 1;
    g->who = who;
  } else if (!allowed) {
    remember_bad(ag, lk->digest); /* a revoked key stops being good at once */
  }
  if (allowed) lk->cb(lk->arg, 0, &who, NULL);
  else lk->cb(lk->arg, SG_EAUTH, NULL, "invalid or expired API key");
  free(lk);
}

void sg__auth_agenta_check(struct sg__auth_agenta_s *ag, const char *key, size_t len, sg_auth_cb cb,
                           void *arg) {
  uint8_t digest[32];
  unsigned int dlen = 32;
  EVP_Digest(key, len, digest, &dlen, EVP_sha256(), NULL);
  uint64_t now = uv_now(ag->loop);
  good_t *g = &ag->good[slot_of(ag, digest, GOOD_SLOTS)];
  int known_good = g->used && CRYPTO_memcmp(g->digest, digest, 32) == 0;
  if (known_good && now < g->until_ms) {
    cb(arg, 0, &g->who, NULL);
    return;
  }
  bad_t *b = &ag->bad[slot_of(ag, digest, BAD_SLOTS)];
  if (!known_good && b->until_ms && now < b->until_ms && CRYPTO_memcmp(b->digest, digest, 32) == 0) {
    cb(arg, SG_EAUTH, NULL, "invalid or expired API key");
    return;
  }
  const char *dot = memchr(key, '.', len);
  size_t plen = dot ? (size_t)(dot - key) : 0;
  if (!dot || plen == 0 || plen > 64 || len - plen - 1 == 0) {
    cb(arg, SG_EAUTH, NULL, "invalid API key: Agenta keys look like '<prefix>.<secret>'");
    return;
  }
  /* A stale good key is asked again without a token; anything else is
   * rate limited and bounded in flight. */
  if (!known_good && (ag->cold_inflight >= MAX_COLD_INFLIGHT || !take_token(ag))) {
    atomic_fetch_add_explicit(&sg_metrics.auth_lookups_limited, 1, memory_order_relaxed);
    cb(arg, SG_EUNAVAIL, NULL, "too many look-ups of unknown API keys; retry later");
    return;
  }
  lookup_t *lk = calloc(1, sizeof *lk);
  if (!lk) {
    cb(arg, SG_EUNAVAIL, NULL, NULL);
    return;
  }
  lk->ag = ag;
  lk->cb = cb;
  lk->arg = arg;
  lk->cold = !known_good;
  memcpy(lk->digest, digest, 32);
  uint8_t raw[32];
  EVP_Digest(dot + 1, len - plen - 1, raw, &dlen, EVP_sha256(), NULL);
  memcpy(lk->hashed, key, plen);
  lk->hashed[plen] = '.';
  static const char hexd[] = "0123456789abcdef";
  for (int i = 0; i < 32; i++) {
    lk->hashed[plen + 1 + 2 * i] = hexd[raw[i] >> 4];
    lk->hashed[plen + 2 + 2 * i] = hexd[raw[i] & 15];
  }
  lk->hashed[plen + 65] = '\0';
  lk->params[0] = lk->hashed;
  atomic_fetch_add_explicit(&sg_metrics.auth_lookups, 1, memory_order_relaxed);
  if (lk->cold) ag->cold_inflight++;
  int rc = sg_pg_query(ag->pool, lookup_sql, 1, lk->params, NULL, NULL, lookup_cb, lk);
  if (rc != 0) {
    if (lk->cold) ag->cold_inflight--;
    free(lk);
    cb(arg, SG_EUNAVAIL, NULL, NULL);
  }
}
