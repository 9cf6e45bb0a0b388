/* auth.c - API keys: keys file, Agenta's api_keys table, or none. */
#include "auth.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth_agenta.h"
#include "err.h"
#include "span.h"

typedef struct {
  uint8_t digest[32];
  uint8_t project[16];
} key_entry_t;

struct sg_auth_s {
  int mode; /* 0 keys, 1 agenta, 2 none */
  key_entry_t *keys; /* sorted by digest */
  size_t nkeys;
  sg_principal_t fixed; /* auth=none */
  struct sg__auth_agenta_s *agenta;
};

static void sha256(const void *p, size_t n, uint8_t out[32]) {
  unsigned int len = 32;
  EVP_Digest(p, n, out, &len, EVP_sha256(), NULL);
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = tolower(c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

int sg_auth_extract_key(const char *h, const char **key, size_t *len) {
  if (h == NULL) return SG_EAUTH;
  while (*h == ' ' || *h == '\t') h++;
  if (!strncasecmp(h, "ApiKey ", 7)) h += 7;
  else if (!strncasecmp(h, "Bearer ", 7)) h += 7;
  while (*h == ' ' || *h == '\t') h++;
  size_t n = strlen(h);
  while (n && (h[n - 1] == ' ' || h[n - 1] == '\t')) n--;
  if (n == 0 || memchr(h, ' ', n)) return SG_EAUTH;
  *key = h;
  *len = n;
  return 0;
}

int sg_auth_parse_line(const char *line, uint8_t project[16], uint8_t digest[32], sg_buf_t *err) {
  while (isspace((unsigned char)*line)) line++;
  if (*line == '\0' || *line == '#') return SG_ENOTFOUND;
  const char *sp = line;
  while (*sp && !isspace((unsigned char)*sp)) sp++;
  if (sg_id_parse(line, (size_t)(sp - line), project) != 0) {
    sg_buf_printf(err, "expected a project UUID at the start of the line");
    return SG_EINVAL;
  }
  while (isspace((unsigned char)*sp)) sp++;
  const char *secret = sp;
  size_t n = strlen(secret);
  while (n && isspace((unsigned char)secret[n - 1])) n--;
  if (n > 7 && !strncmp(secret, "sha256:", 7)) {
    if (n != 7 + 64) {
      sg_buf_printf(err, "sha256: must be followed by 64 hex digits");
      return SG_EINVAL;
    }
    for (int i = 0; i < 32; i++) {
      int hi = hexval((unsigned char)secret[7 + 2 * i]), lo = hexval((unsigned char)secret[8 + 2 * i]);
      if (hi < 0 || lo < 0) {
        sg_buf_printf(err, "sha256: must be followed by 64 hex digits");
        return SG_EINVAL;
      }
      digest[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
  }
  if (n > 6 && !strncmp(secret, "plain:", 6)) {
    sha256(secret + 6, n - 6, digest);
    return 0;
  }
  sg_buf_printf(err, "expected 'sha256:<hex>' or 'plain:<key>' after the project id");
  return SG_EINVAL;
}

static int cmp_entry(const void *a, const void *b) {
  return memcmp(((const key_entry_t *)a)->digest, ((const key_entry_t *)b)->digest, 32);
}

/* Reads the keys file into a->keys (sorted). Every line is parsed: the
 * valid ones are kept, and on the first bad one err says file:line and why
 * (with a count of the others) and SG_ECONFIG is returned after the whole
 * file was read, so a caller may still use the valid lines. SG_EIO when the
 * file cannot be read at all (err says why; a->keys is then empty). */
static int load_keys(sg_auth_t *a, const char *path, sg_buf_t *err) {
  FILE *f = fopen(path, "r");
  if (!f) {
    sg_buf_printf(err, "keys file %s: %s", path, strerror(errno));
    return SG_EIO;
  }
  char *line = NULL;
  size_t cap = 0, lineno = 0, cap_keys = 0, bad = 0;
  ssize_t got;
  int rc = 0;
  while ((got = getline(&line, &cap, f)) >= 0) {
    lineno++;
    if (got > 0 && line[got - 1] == '\n') line[got - 1] = '\0';
    key_entry_t e;
    sg_buf_t why = SG_BUF_INIT;
    int r = sg_auth_parse_line(line, e.project, e.digest, &why);
    if (r == SG_ENOTFOUND) { sg_buf_free(&why); continue; }
    if (r != 0) {
      if (bad++ == 0) sg_buf_printf(err, "keys file %s:%zu: %s", path, lineno, why.data);
      sg_buf_free(&why);
      continue;
    }
    sg_buf_free(&why);
    if (a->nkeys == cap_keys) {
      cap_keys = cap_keys ? cap_keys * 2 : 16;
      key_entry_t *k = realloc(a->keys, cap_keys * sizeof *k);
      if (!k) { rc = SG_ENOMEM; break; }
      a->keys = k;
    }
    a->keys[a->nkeys++] = e;
  }
  if (rc == 0 && ferror(f)) {
    sg_buf_reset(err);
    sg_buf_printf(err, "keys file %s: read error after line %zu", path, lineno);
    rc = SG_EIO;
  }
  free(line);
  fclose(f);
  if (rc != 0) {
    free(a->keys);
    a->keys = NULL;
    a->nkeys = 0;
    return rc;
  }
  if (bad > 1) sg_buf_printf(err, " (and %zu more bad lines)", bad - 1);
  qsort(a->keys, a->nkeys, sizeof *a->keys, cmp_entry);
  return bad ? SG_ECONFIG : 0;
}

int sg_auth_new(uv_loop_t *loop, const sg_config_t *cfg, sg_auth_t **out, sg_buf_t *err) {
  sg_auth_t *a = calloc(1, sizeof *a);
  if (!a) return SG_ENOMEM;
  int rc = 0;
  if (!strcmp(cfg->auth, "keys")) {
    a->mode = 0;
    rc = load_keys(a, cfg->keys_file, err);
    if (rc == SG_EIO) rc = SG_ECONFIG;
  } else if (!strcmp(cfg->auth, "agenta")) {
    a->mode = 1;
    rc = sg__auth_agenta_new(loop, cfg, &a->agenta, err);
  } else {
    a->mode = 2;
    if (sg_id_parse(cfg->project_id, strlen(cfg->project_id), a->fixed.project_id) != 0) {
      sg_buf_printf(err, "project_id '%s' is not a UUID", cfg->project_id);
      rc = SG_ECONFIG;
    }
  }
  if (rc != 0) {
    sg_auth_free(a);
    return rc;
  }
  *out = a;
  return 0;
}

int sg_auth_reload(const sg_auth_t *old, const sg_config_t *cfg, sg_auth_t **out, sg_buf_t *err,
                   size_t *revoked) {
  *out = NULL;
  *revoked = 0;
  if (old == NULL || old->mode != 0) return 0;
  sg_auth_t *a = calloc(1, sizeof *a);
  if (!a) return SG_ENOMEM;
  int rc = load_keys(a, cfg->keys_file, err);
  if (rc == SG_EIO || rc == SG_ENOMEM) { /* nothing to go by: keep every key */
    sg_auth_free(a);
    return rc;
  }
  if (rc == SG_ECONFIG) {
    /* Refused: nothing is added, but a key the file no longer lists on a
     * valid line (with the same project) is gone; a revocation must not
     * wait for the file to be fixed. */
    key_entry_t *keep = malloc((old->nkeys ? old->nkeys : 1) * sizeof *keep);
    if (!keep) {
      sg_auth_free(a);
      return SG_ENOMEM;
    }
    size_t kept = 0;
    for (size_t i = 0; i < old->nkeys; i++) {
      const key_entry_t *hit = bsearch(&old->keys[i], a->keys, a->nkeys, sizeof *a->keys, cmp_entry);
      if (hit && memcmp(hit->project, old->keys[i].project, 16) == 0) keep[kept++] = old->keys[i];
    }
    *revoked = old->nkeys - kept;
    free(a->keys);
    a->keys = keep; /* old's order: sorted */
    a->nkeys = kept;
  } else {
    for (size_t i = 0; i < old->nkeys; i++) {
      const key_entry_t *hit = bsearch(&old->keys[i], a->keys, a->nkeys, sizeof *a->keys, cmp_entry);
      if (!hit || memcmp(hit->project, old->keys[i].project, 16) != 0) (*revoked)++;
    }
  }
  *out = a;
  return rc;
}

void sg_auth_free(sg_auth_t *a) {
  if (!a) return;
  if (a->agenta) sg__auth_agenta_free(a->agenta);
  free(a->keys);
  free(a);
}

void sg_auth_check(sg_auth_t *a, const char *authorization, sg_auth_cb cb, void *arg) {
  if (a->mode == 2) {
    cb(arg, 0, &a->fixed, NULL);
    return;
  }
  const char *key;
  size_t len;
  if (sg_auth_extract_key(authorization, &key, &len) != 0) {
    cb(arg, SG_EAUTH, NULL,
       authorization ? "malformed Authorization header: expected 'ApiKey <key>'"
                     : "missing Authorization header: expected 'ApiKey <key>'");
    return;
  }
  if (a->mode == 1) {
    sg__auth_agenta_check(a->agenta, key, len, cb, arg);
    return;
  }
  key_entry_t probe;
  sha256(key, len, probe.digest);
  /* The search compares digests, not keys: its timing tells nothing useful
   * about a key. The final comparison is constant-time all the same. */
  key_entry_t *hit = bsearch(&probe, a->keys, a->nkeys, sizeof *a->keys, cmp_entry);
  if (hit && CRYPTO_memcmp(hit->digest, probe.digest, 32) == 0) {
    sg_principal_t p;
    memset(&p, 0, sizeof p);
    memcpy(p.project_id, hit->project, 16);
    cb(arg, 0, &p, NULL);
    return;
  }
  cb(arg, SG_EAUTH, NULL, "invalid API key");
}
