/* readiness.h - what /readyz reports that no single worker knows: whether
 * PostgreSQL refused writes lately because it takes none (read-only, disk
 * full, I/O error).
 *
 * Process-wide: every worker's ingest reports its commits, any worker
 * answers /readyz. Safe from any thread.
 */
#ifndef SG_READINESS_H
#define SG_READINESS_H

#include <stddef.h>

/* Reports one group commit's outcome: status 0, or its error with
 * PostgreSQL's "<SQLSTATE> <message>" in errmsg (NULL when the server gave
 * none). Only SQLSTATEs that mean "no writes for now"
 * (sg_pg_sqlstate_unwritable) make the gateway unready. */
void sg_readiness_note_write(int status, const char *errmsg);

/* 1, with the refusal's "<SQLSTATE> <message>" in why, when such a refusal
 * is the latest write outcome and less than SG_READINESS_HOLD_MS old; else
 * 0. After the hold a load balancer sends traffic again and the next write
 * decides (without traffic nothing would ever clear it). */
#define SG_READINESS_HOLD_MS 10000
int sg_readiness_unwritable(char *why, size_t cap);

#endif
