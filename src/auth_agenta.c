/* auth_agenta.c - API keys from Agenta's api_keys table.
 *
 * Agenta hands out keys as "<prefix>.<raw>" and stores
 * hashed_key = "<prefix>." || hex(sha256(raw)), with an optional
 * expiration_date. A key is looked up by that hash on the worker's own
 * PostgreSQL pool; answers (allow and deny) are cached per worker for
 * auth_cache_ttl_s, and an allowed key is never served from the cache past
 * its expiration_date. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "err.h"
#include "pg.h"
#include "span.h"

#define CACHE_SLOTS 4096 /* a power of two */

typedef struct {
  uint8_t digest[32];  /* sha256 of the whole presented key */
  uint64_t until_ms;   /* loop time after which the entry is stale; 0 = empty */
  int allowed;
  sg_principal_t who;
} cache_entry_t;

struct sg__auth_agenta_s {
  uv_loop_t *loop;
  sg_pg_pool_t *pool;
  uint64_t ttl_ms;
  cache_entry_t *cache;
};

typedef struct {
  struct sg__auth_agenta_s *ag;
  sg_auth_cb cb;
  void *arg;
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
  if (!ag || !(ag->cache = calloc(CACHE_SLOTS, sizeof *ag->cache))) {
    free(ag);
    return SG_ENOMEM;
  }
  ag->loop = loop;
  ag->ttl_ms = (uint64_t)(cfg->auth_cache_ttl_s > 0 ? cfg->auth_cache_ttl_s : 0) * 1000;
  if (loop && !(ag->pool = sg_pg_pool_new(loop, uri, 2, NULL))) {
    free(ag->cache);
    free(ag);
    return SG_ENOMEM;
  }
  *out = ag;
  return 0;
}

void sg__auth_agenta_free(struct sg__auth_agenta_s *ag) {
  if (ag->pool) sg_pg_pool_close(ag->pool);
  free(ag->cache);
  free(ag);
}

static cache_entry_t *slot(struct sg__auth_agenta_s *ag, const uint8_t digest[32]) {
  uint32_t h;
  memcpy(&h, digest, sizeof h);
  return &ag->cache[h & (CACHE_SLOTS - 1)];
}

static void lookup_cb(void *arg, PGresult *res, int err, const char *errmsg) {
  lookup_t *lk = arg;
  struct sg__auth_agenta_s *ag = lk->ag;
  (void)errmsg;
  if (err != 0) {
    lk->cb(lk->arg, err == SG_EPOISON ? SG_EAUTH : SG_EUNAVAIL, NULL,
           err == SG_EPOISON ? "invalid API key" : NULL);
    free(lk);
    return;
  }
  sg_principal_t who;
  memset(&who, 0, sizeof who);
  int allowed = 0;
  uint64_t until = uv_now(ag->loop) + ag->ttl_ms;
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
      else if (uv_now(ag->loop) + (uint64_t)left < until) until = uv_now(ag->loop) + (uint64_t)left;
    }
  }
  if (ag->ttl_ms) {
    cache_entry_t *e = slot(ag, lk->digest);
    memcpy(e->digest, lk->digest, 32);
    e->until_ms = until;
    e->allowed = allowed;
    e->who = who;
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
  cache_entry_t *e = slot(ag, digest);
  if (e->until_ms && uv_now(ag->loop) < e->until_ms && CRYPTO_memcmp(e->digest, digest, 32) == 0) {
    if (e->allowed) cb(arg, 0, &e->who, NULL);
    else cb(arg, SG_EAUTH, NULL, "invalid or expired API key");
    return;
  }
  const char *dot = memchr(key, '.', len);
  size_t plen = dot ? (size_t)(dot - key) : 0;
  if (!dot || plen == 0 || plen > 64 || len - plen - 1 == 0) {
    cb(arg, SG_EAUTH, NULL, "invalid API key: Agenta keys look like '<prefix>.<secret>'");
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
  int rc = sg_pg_query(ag->pool, lookup_sql, 1, lk->params, NULL, NULL, lookup_cb, lk);
  if (rc != 0) {
    free(lk);
    cb(arg, SG_EUNAVAIL, NULL, NULL);
  }
}
