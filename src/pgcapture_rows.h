/* pgcapture_rows.h - change capture's rows: the pgoutput tuples of
 * PostgreSQL's `spans` and `nodes` tables turned into ClickHouse rows.
 *
 * pgoutput sends every column as text (the type's output function, in the
 * walsender session's DateStyle ISO and TimeZone UTC, see pgcapture.c), so a
 * spans tuple maps onto the migration's sg_ch_text_row_t and goes through the
 * same encoder (sg_ch_row_encode_text) as `spangate migrate` and, through
 * sg_ch_row_encode, the dual-write: the three paths write equal rows.
 *
 * Columns are found by name in the Relation message, so the table may have
 * more columns (Agenta's `exception`) or its columns in another order.
 *
 * Unchanged TOASTed values ('u') are taken from the old row, which pgoutput
 * sends in full with REPLICA IDENTITY FULL; without it they are missing and
 * the change cannot be written (SG_ENOTFOUND, the column named in *why).
 *
 * Stands alone: no loop, no libpq, no Lua. 0 or a negative SG_E* code.
 */
#ifndef SG_PGCAPTURE_ROWS_H
#define SG_PGCAPTURE_ROWS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "ch_rows.h"
#include "pgoutput.h"
#include "span.h"

/* SG_CAP_BROKEN: spans or nodes without a column a row needs (its changes
 * cannot be written; the caller counts and reports them). */
enum { SG_CAP_OTHER = 0, SG_CAP_SPANS, SG_CAP_NODES, SG_CAP_BROKEN };

/* The spans columns a row is built from, in sg_cap_rel_t.idx order. */
#define SG_CAP_SPAN_COLS(XX)                                                                 \
  XX(project_id) XX(trace_id) XX(span_id) XX(parent_id) XX(trace_type) XX(span_type)        \
  XX(span_kind) XX(span_name) XX(start_time) XX(end_time) XX(status_code) XX(status_message) \
  XX(attributes) XX(references) XX(links) XX(hashes) XX(events) XX(session_id) XX(user_id)   \
  XX(agent_id) XX(created_at) XX(updated_at) XX(deleted_at) XX(created_by_id)               \
  XX(updated_by_id) XX(deleted_by_id)

enum {
#define XX(n) SG_CAP_C_##n,
  SG_CAP_SPAN_COLS(XX)
#undef XX
  SG_CAP_NCOLS
};

/* What a Relation message said about one table. */
typedef struct {
  uint32_t oid;
  int kind;          /* SG_CAP_SPANS / SG_CAP_NODES by name, else SG_CAP_OTHER */
  char replident;    /* 'f' REPLICA IDENTITY FULL, 'd' default, ... */
  char name[64];
  uint16_t ncols;
  int16_t idx[SG_CAP_NCOLS]; /* spans: the tuple position of each column, -1 when absent */
  /* nodes: key columns' positions and every column's name and type */
  int16_t n_project, n_node, n_tree, n_root, n_created, n_updated;
  char **names;
  uint32_t *types;
} sg_cap_rel_t;

/* Fills r (cleared first) from a Relation message. SG_EINVAL when a table
 * we capture lacks a column a row needs (project_id, trace_id, span_id,
 * span_kind, span_name, start_time, end_time, status_code, created_at; for
 * nodes project_id, node_id, created_at), naming it in why; SG_ENOMEM. */
int sg_cap_rel_set(sg_cap_rel_t *r, const sg_pgo_msg_t *m, char *why, size_t whycap);
void sg_cap_rel_free(sg_cap_rel_t *r);

/* One spans row from a tuple: `tup` is the row (the new row of an insert or
 * update, the old row of a delete), `old` the old row when pgoutput sent it
 * (REPLICA IDENTITY FULL), else NULL. Values point into the tuples. version
 * = µs of coalesce(updated_at, created_at), the dual-write's rule.
 * SG_ENOTFOUND: a value is not in the stream (an unchanged TOASTed column
 * without the old row, or a delete's non-key column without REPLICA IDENTITY
 * FULL); SG_EINVAL: a value that does not parse (a time); *why names the
 * column. The project id, and created_at when present, are set even then. */
int sg_cap_span_row(const sg_cap_rel_t *rel, const sg_pgo_tuple_t *tup, const sg_pgo_tuple_t *old,
                    uint8_t project_id[16], sg_ch_text_row_t *row, const char **why);

/* Turns the deleted row into its tombstone: is_deleted = 1, deleted_at the
 * delete's commit time (µs; kept as it was if out of ClickHouse's range),
 * version the greater of that time and the row's version + 1, so that it
 * replaces every version of the row under FINAL. */
void sg_cap_tombstone(sg_ch_text_row_t *row, int64_t commit_us);

/* The span ttl.lua is asked about, from a text row: ids parsed, strings
 * copied, JSON columns parsed. Free with sg_span_clear. SG_EINVAL /
 * SG_EPARSE (*why names the column) or SG_ENOMEM; s is cleared then. */
int sg_cap_hook_span(const sg_ch_text_row_t *t, sg_span_t *s, const char **why);

/* 1 when an update changed a key column (project, trace, span, created_at)
 * between the old row and the new: the row moves to another ClickHouse
 * sorting key, and the old key needs a tombstone. 0 otherwise, or when the
 * old row is not known. */
int sg_cap_span_key_moved(const sg_cap_rel_t *rel, const sg_pgo_tuple_t *old, const sg_pgo_tuple_t *tup);

/* The nodes INSERT into db for a table of layout lay, as sg_cap_node_row
 * encodes rows. */
int sg_cap_nodes_insert_sql(const sg_ch_layout_t *lay, const char *db, sg_buf_t *out);

/* One nodes row (TabSeparated, '\n'-terminated) as `spangate migrate` copies
 * them: the key columns, attributes = every other column as to_jsonb() would
 * render the row (keys in jsonb's order), version = µs of
 * coalesce(updated_at, created_at), kept forever. is_deleted: a tombstone,
 * its version the greater of tomb_version and the row's version + 1. Appends to out; out unchanged on an
 * error (*why names the column). */
int sg_cap_node_row(const sg_ch_layout_t *lay, const sg_cap_rel_t *rel, const sg_pgo_tuple_t *tup,
                    const sg_pgo_tuple_t *old, int is_deleted, int64_t tomb_version, sg_buf_t *out,
                    uint8_t project_id[16], const char **why);

#endif
