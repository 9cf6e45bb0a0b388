/* auth_agenta.h - auth.c's back end for auth=agenta (auth_agenta.c):
 * API keys looked up in Agenta's api_keys table and cached. Internal to
 * auth.c; everything else goes through auth.h. */
#ifndef SG_AUTH_AGENTA_H
#define SG_AUTH_AGENTA_H

#include <stddef.h>
#include <uv.h>

#include "buf.h"
#include "config.h"
#include "principal.h"

struct sg__auth_agenta_s;

/* A look-up cache with its own PostgreSQL pool on loop. SG_ECONFIG or
 * SG_ENOMEM with a reason in err. */
int sg__auth_agenta_new(uv_loop_t *loop, const sg_config_t *cfg, struct sg__auth_agenta_s **out,
                        sg_buf_t *err);
void sg__auth_agenta_free(struct sg__auth_agenta_s *ag);
/* Authenticates key[0..len); cb as sg_auth_check() describes. */
void sg__auth_agenta_check(struct sg__auth_agenta_s *ag, const char *key, size_t len, sg_auth_cb cb,
                           void *arg);

#endif
