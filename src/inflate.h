/* inflate.h - request body decompression (gzip, zlib, raw deflate).
 *
 * Stands alone (zlib + buf). Output is bounded: the inflater stops as soon
 * as the output would exceed max_out, so a compression bomb costs at most
 * max_out bytes of memory (plus the buffer's NUL) and the time to produce
 * them.
 */
#ifndef SG_INFLATE_H
#define SG_INFLATE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

typedef enum {
  SG_ENC_IDENTITY = 0, /* copied as is */
  SG_ENC_GZIP,         /* RFC 1952, one or more concatenated members */
  SG_ENC_DEFLATE,      /* HTTP "deflate": zlib-wrapped (RFC 1950), or raw
                          RFC 1951 data as some clients send */
  SG_ENC_AUTO          /* sniff: 1f 8b -> gzip; 0x78 with a valid zlib
                          header check -> zlib; otherwise identity (what
                          Agenta's OTLP endpoint does) */
} sg_encoding_t;

/* A Content-Encoding value ("gzip", "x-gzip", "deflate", "identity", or
 * empty/NULL for identity), case-insensitive, surrounding blanks ignored.
 * Returns the sg_encoding_t, or -1 for anything else (answer 415). */
int sg_encoding_parse(const char *s, size_t n);

/* The encoding p[0..n) is in: encoding itself, or for SG_ENC_AUTO what its
 * first bytes say (gzip, deflate or identity). */
int sg_encoding_resolve(const uint8_t *p, size_t n, int encoding);

/* Asked before out's memory grows by n bytes (its capacity, as allocated):
 * 0 lets it grow; a negative SG_E* code stops the inflater, which returns
 * that code (out then holds what it had before, in memory already
 * counted). Lets a caller count the output against a memory budget as it
 * is produced instead of after the fact. */
typedef int (*sg_inflate_grow_cb)(void *arg, size_t n);

/* Decompress p[0..n) as encoding and append the result to out, asking
 * grow(arg, n) before every growth of out (grow NULL: nobody asked).
 * Returns 0; SG_ETOOBIG when the output would exceed max_out bytes (out is
 * then left with what it had before); SG_EPARSE when the data is corrupt,
 * truncated, or followed by garbage; SG_ENOMEM; or grow's code. */
int sg_inflate_ex(const uint8_t *p, size_t n, int encoding, size_t max_out, sg_buf_t *out,
                  sg_inflate_grow_cb grow, void *arg);

#endif
