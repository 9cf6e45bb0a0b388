/* ch_insert.c - the settings of every INSERT spangate sends (ch_insert.h). */
#include "ch_insert.h"

#include <string.h>

#include "err.h"

static void init(sg_ch_insert_t *ins, const char *sql, const void *body, size_t len, unsigned flags,
                 const char *settings) {
  memset(ins, 0, sizeof *ins);
  ins->req.sql = sql;
  ins->req.body = body;
  ins->req.len = len;
  ins->req.flags = flags;
  ins->req.settings = settings;
}

int sg_ch_insert_segment(sg_ch_insert_t *ins, const sg_ch_version_t *ver, const char *sql,
                         const sg_ch_piece_t *pieces, size_t npieces, unsigned flags,
                         const char *scope, uint64_t first, uint64_t last) {
  init(ins, sql, NULL, 0, flags | SG_CH_IDEMPOTENT, SG_CH_INSERT_SEGMENT_SETTINGS);
  ins->req.pieces = pieces;
  ins->req.npieces = npieces;
  /* insert_deduplication_token exists from 22.2; older servers refuse an
   * unknown setting. */
  if (!scope || !ver || ver->major < 22 || (ver->major == 22 && ver->minor < 2)) return 0;
  if (sg_ch_dedup_token(ins->token, scope, first, last, pieces, npieces, flags) != 0) return SG_EIO;
  ins->req.dedup_token = ins->token;
  return 0;
}

void sg_ch_insert_fresh(sg_ch_insert_t *ins, const char *sql, const void *body, size_t len,
                        unsigned flags) {
  init(ins, sql, body, len, flags, SG_CH_INSERT_FRESH_SETTINGS);
}
