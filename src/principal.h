/* principal.h - who a request acts for, as authentication found it.
 *
 * The type every layer that handles an authenticated request shares (the
 * authenticators, the endpoints, the ingest pipeline), kept apart so that
 * none of them depends on another's header for it.
 */
#ifndef SG_PRINCIPAL_H
#define SG_PRINCIPAL_H

#include <stdint.h>

typedef struct {
  uint8_t project_id[16];
  uint8_t has_user;     /* created_by_id known (auth=agenta: the key's creator) */
  uint8_t user_id[16];
} sg_principal_t;

/* An authenticator's answer. rc: 0 (p filled), SG_EAUTH (no or bad key; msg
 * says which, for the client), SG_EUNAVAIL (the key store could not be
 * asked). p and msg are valid during the call only. */
typedef void (*sg_auth_cb)(void *arg, int rc, const sg_principal_t *p, const char *msg);

#endif
