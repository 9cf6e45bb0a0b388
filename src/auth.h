/* auth.h - API key -> project.
 *
 * Modes: "keys" (a keys file), "agenta" (Agenta's api_keys table, looked up
 * on the worker's loop and cached), "none" (one configured project; for
 * development). The project a span lands in is always the key's project.
 * Keys are never logged and are compared through their SHA-256 digests in
 * constant time.
 */
#ifndef SG_AUTH_H
#define SG_AUTH_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "config.h"
#include "principal.h"

typedef struct sg_auth_s sg_auth_t;

/* Builds the per-worker authenticator. loop may be NULL for modes that do no
 * I/O. SG_ECONFIG with a reason in err (unreadable keys file, bad line). */
int sg_auth_new(uv_loop_t *loop, const sg_config_t *cfg, sg_auth_t **out, sg_buf_t *err);
/* Re-reads the keys file for auth=keys (a no-op returning 0 with *out NULL
 * for the other modes). *revoked counts old keys the result no longer has.
 *  - 0: the file is fine; *out has exactly its keys.
 *  - SG_ECONFIG: a line is bad (err names file:line). The file is refused:
 *    *out has the old keys that the file still lists on a valid line (with
 *    the same project) and nothing new, so a removal takes effect even when
 *    the edit broke another line (a revocation fails closed).
 *  - SG_EIO (the file cannot be read) or SG_ENOMEM: *out is NULL; keep old.
 * The caller swaps *out in (when not NULL) and frees old. */
int sg_auth_reload(const sg_auth_t *old, const sg_config_t *cfg, sg_auth_t **out, sg_buf_t *err,
                   size_t *revoked);

/* Releases everything; with auth=agenta it closes its PostgreSQL pool
 * (handles close on the loop's next turns). */
void sg_auth_free(sg_auth_t *a);

/* Authenticates an Authorization header value (NULL when absent). cb runs
 * before return for keys/none and for cache hits, later otherwise. */
void sg_auth_check(sg_auth_t *a, const char *authorization, sg_auth_cb cb, void *arg);

/* Pulls the key out of "ApiKey <key>", "Bearer <key>" or a bare key.
 * 0 with key and len set, or SG_EAUTH. */
int sg_auth_extract_key(const char *header, const char **key, size_t *len);

/* Parses one keys-file line (without the newline): "<uuid> sha256:<64 hex>"
 * or "<uuid> plain:<key>"; blank lines and '#' comments give SG_ENOTFOUND.
 * digest receives the SHA-256 of the key. 0, SG_ENOTFOUND or SG_EINVAL. */
int sg_auth_parse_line(const char *line, uint8_t project[16], uint8_t digest[32], sg_buf_t *err);

#endif
