/* read_internal.h - what the read API's request parsers (read_filter.c,
 * read_analytics.c) share and nobody else calls: the client's error
 * messages. Not part of their interface; include it from those files only.
 */
#ifndef SG_READ_INTERNAL_H
#define SG_READ_INTERNAL_H

#include "buf.h"

/* Appends "<where>: <message>" to err (when not NULL) and returns
 * SG_EINVAL, so a parser can `return sg__rf_fail(...)`. */
int sg__rf_fail(sg_buf_t *err, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A client string made safe to quote in a message: at most 70 bytes
 * (longer ends in "..."), control characters as '?'. Returns out. */
const char *sg__rf_shown(const char *s, char out[80]);

#endif
