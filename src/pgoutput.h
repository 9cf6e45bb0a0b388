/* pgoutput.h - PostgreSQL's logical replication stream, parsed.
 *
 * Two layers, both from PostgreSQL's documentation (chapter "Frontend/Backend
 * Protocol": "Streaming Replication Protocol" and "Logical Replication
 * Message Formats"):
 *
 *   - the CopyData messages of a replication connection after
 *     START_REPLICATION: XLogData ('w') and the primary keepalive ('k') from
 *     the server, the standby status update ('r') we send back;
 *   - inside each XLogData, one message of the built-in `pgoutput` plugin,
 *     protocol version 1: Begin, Commit, Origin, Relation, Type, Insert,
 *     Update, Delete, Truncate (and the logical decoding Message, which only
 *     comes with `messages 'true'`).
 *
 * All integers are big-endian (network order). LSNs are 64-bit WAL
 * positions; times are µs since 2000-01-01 UTC (PostgreSQL's epoch).
 *
 * Parsing copies nothing: names and column values point into the buffer
 * given (valid as long as it is), and the arrays of columns and values live
 * in a scratch that is reused from message to message. Stands alone: no
 * libpq, no loop, no logging. 0 or a negative SG_E* code (err.h).
 */
#ifndef SG_PGOUTPUT_H
#define SG_PGOUTPUT_H

#include <stddef.h>
#include <stdint.h>

typedef uint64_t sg_lsn_t;

/* 2000-01-01T00:00:00Z in Unix µs: PostgreSQL time = Unix time - this. */
#define SG_PGO_EPOCH_US 946684800000000LL

/* ---- the replication protocol ----------------------------------------------- */

typedef struct {
  char kind;           /* 'w' XLogData, 'k' primary keepalive */
  sg_lsn_t start;      /* 'w': WAL position of the data */
  sg_lsn_t wal_end;    /* 'w': current end of WAL; 'k': the position the server has sent up to */
  int64_t clock;       /* the server's clock when it sent this (PostgreSQL µs) */
  int reply;           /* 'k': 1 when the server asks for a status update at once */
  const uint8_t *data; /* 'w': the pgoutput message */
  size_t len;
} sg_pgo_copy_t;

/* One CopyData payload from the server. SG_EPARSE when it is short or of
 * another kind (the kind byte is then still in out->kind). */
int sg_pgo_copy_parse(const void *buf, size_t len, sg_pgo_copy_t *out);

#define SG_PGO_STATUS_LEN 34
/* The standby status update ('r') into out: written, flushed and applied
 * positions (each "the last WAL byte + 1"), our clock (PostgreSQL µs), and
 * whether we want an immediate reply. Returns SG_PGO_STATUS_LEN. */
size_t sg_pgo_status_update(uint8_t out[SG_PGO_STATUS_LEN], sg_lsn_t written, sg_lsn_t flushed,
                            sg_lsn_t applied, int64_t clock, int reply);

/* ---- pgoutput messages --------------------------------------------------------- */

/* One column value of a tuple. */
typedef struct {
  char kind;           /* 'n' NULL, 'u' unchanged TOASTed value (not sent), 't' text, 'b' binary */
  const char *p;       /* 't', 'b': the bytes (not NUL-terminated) */
  uint32_t len;
} sg_pgo_value_t;

typedef struct {
  uint16_t n;
  const sg_pgo_value_t *v;
} sg_pgo_tuple_t;

typedef struct {
  uint8_t flags;       /* 1: part of the replica identity (the key) */
  const char *name;    /* NUL-terminated */
  uint32_t type_oid;
  int32_t typmod;
} sg_pgo_column_t;

typedef struct {
  char type; /* 'B','C','O','R','Y','I','U','D','T','M' */
  union {
    struct {
      sg_lsn_t final_lsn;   /* the transaction's commit record */
      int64_t commit_time;
      uint32_t xid;
    } begin;
    struct {
      uint8_t flags;
      sg_lsn_t commit_lsn;  /* the commit record */
      sg_lsn_t end_lsn;     /* just past it: what a client confirms */
      int64_t commit_time;
    } commit;
    struct {
      sg_lsn_t lsn;
      const char *name;
    } origin;
    struct {
      uint32_t oid;
      const char *nspname;  /* "" for pg_catalog */
      const char *relname;
      char replident;       /* relreplident: 'd' default (primary key), 'n' nothing, 'f' full, 'i' index */
      uint16_t ncols;
      const sg_pgo_column_t *cols;
    } rel;
    struct {
      uint32_t oid;
      const char *nspname;
      const char *name;
    } type;
    struct {
      uint32_t rel;
      /* Insert: 0 and new_tuple. Update: old_kind 0 (no old values sent),
       * 'K' (old key) or 'O' (old row, REPLICA IDENTITY FULL), and
       * new_tuple. Delete: 'K' or 'O' and old_tuple; new_tuple empty. */
      char old_kind;
      sg_pgo_tuple_t old_tuple, new_tuple;
    } change;
    struct {
      uint32_t nrels;
      uint8_t options;      /* 1 CASCADE, 2 RESTART IDENTITY */
      const uint8_t *oids;  /* nrels big-endian uint32 (sg_pgo_truncate_oid) */
    } truncate;
    struct {
      uint8_t flags;        /* 1: transactional */
      sg_lsn_t lsn;
      const char *prefix;
      const uint8_t *content;
      uint32_t len;
    } message;
  } u;
} sg_pgo_msg_t;

/* Arrays reused by sg_pgo_parse; zero-initialise, free with
 * sg_pgo_scratch_free. */
typedef struct {
  sg_pgo_value_t *v;
  size_t vcap;
  sg_pgo_column_t *c;
  size_t ccap;
} sg_pgo_scratch_t;

/* Parses one pgoutput message (protocol version 1). Pointers in out point
 * into buf and into scratch, valid until the next call with that scratch.
 * SG_EPARSE: truncated, trailing bytes, an unknown message type or tuple
 * value kind, a string without its NUL; SG_ENOMEM. */
int sg_pgo_parse(const void *buf, size_t len, sg_pgo_msg_t *out, sg_pgo_scratch_t *scratch);
void sg_pgo_scratch_free(sg_pgo_scratch_t *s);

/* Relation i of a Truncate. */
uint32_t sg_pgo_truncate_oid(const sg_pgo_msg_t *m, uint32_t i);

/* ---- values and positions -------------------------------------------------------- */

/* "16/B374D848" (what pg_current_wal_lsn() prints) <-> an LSN. */
int sg_pgo_lsn_parse(const char *s, sg_lsn_t *out);
void sg_pgo_lsn_format(sg_lsn_t lsn, char out[24]);

/* A timestamptz as PostgreSQL prints it with DateStyle ISO:
 * "2024-05-01 00:00:01.000123+00" (any zone offset "+HH", "+HH:MM" or
 * "+HH:MM:SS"; 0..6 fraction digits; years 1..9999, AD) -> µs since the
 * Unix epoch, UTC. SG_EPARSE for anything else ("infinity", BC dates). */
int sg_pgo_timestamptz_us(const char *p, size_t n, int64_t *us);

#endif
