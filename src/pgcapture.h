/* pgcapture.h - change capture: PostgreSQL's logical replication stream
 * into ClickHouse (clickhouse_writes = "capture").
 *
 * One thread with its own loop follows the replication slot `capture_slot`
 * (built-in plugin pgoutput, publication `capture_publication` on `spans`
 * and, when it exists, Agenta's `nodes`), both created when missing. Every
 * INSERT, UPDATE and DELETE by any writer becomes ClickHouse rows: the row
 * encoder of the migration and the dual-write, routing.lua and ttl.lua (a
 * Lua runtime of its own), a spool directory of its own
 * (<spool_dir>/capture, and capture-nodes) with chsink's flusher. A hard
 * delete becomes a tombstone (is_deleted = 1, same sorting key, higher
 * version).
 *
 * The position confirmed to PostgreSQL advances only once ClickHouse has
 * accepted (or dead-lettered) every row of the transactions before it, so
 * the slot itself is the durable queue: a kill -9 at any moment, a
 * ClickHouse outage or a failover to another gateway loses nothing, and what
 * is replayed (at most what was unconfirmed) collapses under FINAL (same
 * version).
 *
 * One process follows the slot at a time: PostgreSQL lets one connection
 * stream from a slot; another gateway's START_REPLICATION is refused
 * (55006, the slot is active) and it stands by, retrying every 2 s, until
 * the active one's connection ends (a process killed, a host gone after
 * wal_sender_timeout).
 */
#ifndef SG_PGCAPTURE_H
#define SG_PGCAPTURE_H

#include "buf.h"
#include "ch_setup.h"
#include "config.h"

typedef struct sg_pgcapture_s sg_pgcapture_t;

/* Before the gateway starts (blocking; main thread): connects as capture
 * will (replication=database) and asks wal_level. 0 when capture can run;
 * SG_ECONFIG when it never will as configured (wal_level is not logical, the
 * role lacks REPLICATION, max_wal_senders is 0), with the fix in err;
 * SG_EUNAVAIL when PostgreSQL cannot be asked now (capture starts and keeps
 * trying; err says why). */
int sg_pgcapture_precheck(const sg_config_t *cfg, sg_buf_t *err);

/* Starts the capture thread. target: ClickHouse's version and the tables'
 * row layouts (copied), or NULL (asked again until known; nothing is read
 * from the slot before). 0, or SG_ENOMEM / SG_ECONFIG with err. */
int sg_pgcapture_start(const sg_config_t *cfg, const sg_ch_target_t *target, sg_pgcapture_t **out,
                       sg_buf_t *err);

/* SIGHUP: fresh routing and ttl scripts (a failing reload keeps the old). Any thread. */
void sg_pgcapture_reload(sg_pgcapture_t *c);

/* Stops streaming (nothing unconfirmed is lost: the slot has it), closes
 * everything, joins the thread and frees c. NULL is a no-op. */
void sg_pgcapture_stop(sg_pgcapture_t *c);

/* The capture's state as a JSON object for /readyz, e.g.
 * {"state":"streaming","slot":"spangate","lag_bytes":0,...}; appends
 * {"state":"off"} when capture is not running. Any thread. */
int sg_pgcapture_status_json(sg_buf_t *out);

#endif
