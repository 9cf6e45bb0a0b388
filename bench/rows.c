/* rows.c - the floor's input: the workload's spans rendered as the rows the
 * gateway writes, for loading straight into the databases.
 *
 *   rows -w WORKLOAD -n REQUESTS [--seq-base N] [--scripts DIR] [--project UUID]
 *        [--ch-version X.Y] [--pg FILE] [--pg-index FILE] [--ch FILE] [--ch-split ROWS]
 *
 * Requests seq-base .. seq-base+REQUESTS-1 are rendered exactly as load.c
 * sends them (workload.h), decoded with the gateway's own decoder
 * (sg_otlp_decode_proto), run through the transform in DIR (default lua/:
 * the shipped normalisation and nesting, as the gateway does) and written:
 *   --pg   PostgreSQL COPY text for
 *          spans (project_id, created_by_id, trace_id, span_id, parent_id,
 *          trace_type, span_type, span_kind, span_name, start_time, end_time,
 *          status_code, status_message, attributes, "references", links,
 *          hashes, events, session_id, user_id, agent_id)
 *          (the columns of pgsink.c's upsert, rendered the same way:
 *          attributes through sg_json_dump_attributes with the nest flags);
 *   --pg-index  with --pg: one line per request, "offset length" of its
 *          rows in the --pg file (bench/pgload.c COPYs them request by
 *          request);
 *   --ch   ClickHouse TabSeparated rows from sg_ch_row_encode (the spool's
 *          row encoder) for the given server version, created_at = now.
 *          With --ch-split ROWS, FILE.0, FILE.1, ... of ROWS rows each.
 * Prints a JSON line with the counts and bytes on stdout.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ch_schema.h"
#include "config.h"
#include "decode.h"
#include "jalloc.h"
#include "json_nest.h"
#include "lua_rt.h"
#include "span.h"
#include "workload.h"

static void put_uuid(sg_buf_t *b, const uint8_t id[16]) {
  char u[37];
  sg_uuid_format(id, u);
  sg_buf_append(b, u, 36);
}

static void put_text(sg_buf_t *b, const char *s) {
  if (s == NULL) sg_buf_puts(b, "\\N");
  else sg_ch_tsv_escape(b, s, strlen(s)); /* COPY text escapes: \\ \t \n \r, the same set */
}

static void put_json(sg_buf_t *b, sg_buf_t *tmp, const json_t *v) {
  if (v == NULL || json_is_null(v)) {
    sg_buf_puts(b, "\\N");
    return;
  }
  sg_buf_reset(tmp);
  sg_json_dump(v, 0, tmp);
  sg_ch_tsv_escape(b, tmp->data, tmp->len);
}

static void pg_row(sg_buf_t *b, sg_buf_t *tmp, const uint8_t project[16], const uint8_t user[16],
                   const sg_span_t *sp) {
  char t[32];
  put_uuid(b, project);
  sg_buf_putc(b, '\t');
  put_uuid(b, user);
  sg_buf_putc(b, '\t');
  put_uuid(b, sp->trace_id);
  sg_buf_putc(b, '\t');
  put_uuid(b, sp->span_id);
  sg_buf_putc(b, '\t');
  if (sp->has_parent) put_uuid(b, sp->parent_id);
  else sg_buf_puts(b, "\\N");
  sg_buf_putc(b, '\t');
  put_text(b, sg_trace_type_label(sp->trace_type));
  sg_buf_putc(b, '\t');
  put_text(b, sg_span_type_label(sp->span_type));
  sg_buf_putc(b, '\t');
  put_text(b, sg_span_kind_label(sp->span_kind));
  sg_buf_putc(b, '\t');
  put_text(b, sp->span_name ? sp->span_name : "");
  sg_buf_putc(b, '\t');
  sg_time_format(sp->start_us, t);
  sg_buf_puts(b, t);
  sg_buf_putc(b, '\t');
  sg_time_format(sp->end_us, t);
  sg_buf_puts(b, t);
  sg_buf_putc(b, '\t');
  put_text(b, sg_status_code_label(sp->status_code));
  sg_buf_putc(b, '\t');
  put_text(b, sp->status_message);
  sg_buf_putc(b, '\t');
  const json_t *res = (sp->nest_attributes & SG_SPAN_NEST_RESOURCE) ? sp->resource : NULL;
  if ((sp->attributes == NULL || json_is_null(sp->attributes)) && res == NULL) {
    sg_buf_puts(b, "\\N");
  } else {
    sg_buf_reset(tmp);
    sg_json_dump_attributes(sp->attributes, res, (sp->nest_attributes & SG_SPAN_NEST_ATTRS) ? SG_JSON_NEST : 0,
                            tmp);
    sg_ch_tsv_escape(b, tmp->data, tmp->len);
  }
  sg_buf_putc(b, '\t');
  put_json(b, tmp, sp->references);
  sg_buf_putc(b, '\t');
  put_json(b, tmp, sp->links);
  sg_buf_putc(b, '\t');
  put_json(b, tmp, sp->hashes);
  sg_buf_putc(b, '\t');
  put_json(b, tmp, sp->events);
  sg_buf_putc(b, '\t');
  put_text(b, sp->session_id);
  sg_buf_putc(b, '\t');
  put_text(b, sp->user_id);
  sg_buf_putc(b, '\t');
  put_text(b, sp->agent_id);
  sg_buf_putc(b, '\n');
}

static int write_all(FILE *f, const sg_buf_t *b) { return b->len == 0 || fwrite(b->data, 1, b->len, f) == b->len; }

int main(int argc, char **argv) {
  const char *wpath = NULL, *scripts = "lua", *project = "0190a3b4-0000-7000-8000-0000000000be";
  const char *chver = "18.16", *pgout = NULL, *chout = NULL, *idxout = NULL;
  uint64_t nreq = 0, base = 0, split = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *a = argv[i], *v = argv[i + 1];
    if (!strcmp(a, "-w")) wpath = v;
    else if (!strcmp(a, "-n")) nreq = strtoull(v, NULL, 10);
    else if (!strcmp(a, "--seq-base")) base = strtoull(v, NULL, 10);
    else if (!strcmp(a, "--scripts")) scripts = v;
    else if (!strcmp(a, "--project")) project = v;
    else if (!strcmp(a, "--ch-version")) chver = v;
    else if (!strcmp(a, "--pg")) pgout = v;
    else if (!strcmp(a, "--pg-index")) idxout = v;
    else if (!strcmp(a, "--ch")) chout = v;
    else if (!strcmp(a, "--ch-split")) split = strtoull(v, NULL, 10);
    else {
      fprintf(stderr, "rows: unknown option %s\n", a);
      return 2;
    }
  }
  if (!wpath || !nreq || (argc % 2) != 1) {
    fprintf(stderr, "usage: rows -w WORKLOAD -n REQUESTS [--seq-base N] [--scripts DIR] [--project UUID]\n"
                    "            [--ch-version X.Y] [--pg FILE] [--pg-index FILE] [--ch FILE] [--ch-split ROWS]\n");
    return 2;
  }
  wl_t wl;
  if (wl_load(wpath, &wl) != 0) return 1;
  uint8_t pid[16], user[16];
  if (sg_id_parse(project, strlen(project), pid) != 0) {
    fprintf(stderr, "rows: bad project id %s\n", project);
    return 2;
  }
  memset(user, 0, 16);
  user[15] = 1; /* the created_by_id the gateway uses for a key without a user */
  sg_ch_version_t ver;
  if (sg_ch_version_parse(chver, &ver) != 0) {
    fprintf(stderr, "rows: bad ClickHouse version %s\n", chver);
    return 2;
  }
  sg_ch_layout_t lay; /* a fresh table's, for that version */
  sg_ch_layout_of_version(&ver, &lay);
  sg_config_t cfg;
  sg_config_defaults(&cfg);
  free(cfg.scripts);
  cfg.scripts = strdup(scripts);
  sg_buf_t err = SG_BUF_INIT;
  sg_lua_rt_t *rt = sg_lua_rt_new(&cfg, &err);
  if (!rt) {
    fprintf(stderr, "rows: scripts: %s\n", err.data ? err.data : "?");
    return 1;
  }
  FILE *pg = pgout ? fopen(pgout, "wb") : NULL;
  if (pgout && !pg) {
    perror(pgout);
    return 1;
  }
  FILE *idx = idxout ? fopen(idxout, "w") : NULL;
  if (idxout && !idx) {
    perror(idxout);
    return 1;
  }
  FILE *ch = NULL;
  uint64_t ch_part = 0, ch_rows_in_part = 0;
  char chname[4096];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t created = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
  uint8_t *body = malloc(wl_max_len(&wl));
  sg_buf_t out_pg = SG_BUF_INIT, out_ch = SG_BUF_INIT, tmp = SG_BUF_INIT;
  uint64_t nrows = 0, pg_bytes = 0, ch_bytes = 0;
  for (uint64_t seq = base; seq < base + nreq; seq++) {
    const wl_body_t *b = wl_render(&wl, seq, body);
    sg_span_batch_t batch;
    sg_span_batch_init(&batch);
    sg_buf_reset(&err);
    sg_jregion_t *region = sg_jregion_new(); /* as the gateway decodes (ingest.c) */
    sg_jregion_t *was = sg_jregion_enter(region);
    int drc = sg_otlp_decode_proto(body, b->len, &batch, &err);
    sg_jregion_enter(was);
    if (drc != 0 || batch.rejected) {
      fprintf(stderr, "rows: request %" PRIu64 ": %s %s\n", seq, err.data ? err.data : "",
              batch.reject_msg.data ? batch.reject_msg.data : "");
      return 1;
    }
    if (sg_lua_rt_hooks(rt) & SG_LUA_HOOK_TRANSFORM) {
      if (sg_lua_transform(rt, pid, &batch, NULL) != 0) {
        fprintf(stderr, "rows: transform failed\n");
        return 1;
      }
    }
    sg_buf_reset(&out_pg);
    sg_buf_reset(&out_ch);
    for (size_t i = 0; i < batch.n; i++) {
      sg_span_t *sp = &batch.spans[i];
      if (pg) pg_row(&out_pg, &tmp, pid, user, sp);
      if (chout) {
        sp->created_at_us = created;
        sp->version = created;
        memcpy(sp->created_by_id, user, 16);
        sp->has_created_by = 1;
        if (sg_ch_row_encode(&lay, pid, sp, INT64_MAX, &out_ch) != 0) {
          fprintf(stderr, "rows: a span does not encode for ClickHouse\n");
          return 1;
        }
      }
      nrows++;
    }
    if (pg && !write_all(pg, &out_pg)) {
      perror(pgout);
      return 1;
    }
    if (chout) {
      if (!ch) {
        if (split) snprintf(chname, sizeof chname, "%s.%" PRIu64, chout, ch_part);
        else snprintf(chname, sizeof chname, "%s", chout);
        ch = fopen(chname, "wb");
        if (!ch) {
          perror(chname);
          return 1;
        }
      }
      if (!write_all(ch, &out_ch)) {
        perror(chname);
        return 1;
      }
      ch_rows_in_part += batch.n;
      if (split && ch_rows_in_part >= split) {
        fclose(ch);
        ch = NULL;
        ch_part++;
        ch_rows_in_part = 0;
      }
    }
    if (idx) fprintf(idx, "%" PRIu64 " %zu\n", pg_bytes, out_pg.len);
    pg_bytes += out_pg.len;
    ch_bytes += out_ch.len;
    sg_span_batch_free(&batch);
    sg_jregion_release(region);
  }
  if (pg) fclose(pg);
  if (idx && fclose(idx) != 0) {
    perror(idxout);
    return 1;
  }
  if (ch) {
    fclose(ch);
    ch_part++;
  }
  printf("{\"rows\":%" PRIu64 ",\"pg_bytes\":%" PRIu64 ",\"ch_bytes\":%" PRIu64 ",\"ch_files\":%" PRIu64 "}\n",
         nrows, pg_bytes, ch_bytes, ch_part);
  sg_lua_rt_free(rt);
  sg_config_free(&cfg);
  sg_buf_free(&out_pg);
  sg_buf_free(&out_ch);
  sg_buf_free(&tmp);
  sg_buf_free(&err);
  free(body);
  return 0;
}
