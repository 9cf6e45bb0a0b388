/* err.h - every error code spangate returns, defined once.
 *
 * Functions return 0 on success or one of the negative SG_E* codes below.
 * The X-macro generates the enum and sg_strerror() from the
 * same table, so a new code cannot be added without a message.
 */
#ifndef SG_ERR_H
#define SG_ERR_H

#define SG_ERRNO_MAP(XX)                                                      \
  XX(NOMEM,    "out of memory")                                               \
  XX(INVAL,    "invalid argument")                                            \
  XX(PARSE,    "malformed input")                                             \
  XX(TOOBIG,   "input too large")                                             \
  XX(IO,       "input/output error")                                          \
  XX(CONFIG,   "configuration error")                                         \
  XX(NOTFOUND, "not found")                                                   \
  XX(AUTH,     "not authorized")                                              \
  XX(UNAVAIL,  "service unavailable")                                         \
  XX(BUSY,     "resource busy, try again")                                    \
  XX(TIMEOUT,  "timed out")                                                   \
  XX(POISON,   "data rejected by the store")                                  \
  XX(SCRIPT,   "script error")                                                \
  XX(CANCELED, "operation canceled")                                          \
  XX(CORRUPT,  "corrupt data")

enum sg__err_index {
#define XX(code, msg) SG__EIDX_##code,
  SG_ERRNO_MAP(XX)
#undef XX
  SG__EIDX_MAX
};

typedef enum {
  SG_OK = 0,
#define XX(code, msg) SG_E##code = -(SG__EIDX_##code + 1),
  SG_ERRNO_MAP(XX)
#undef XX
} sg_err_t;

/* Human-readable message for an SG_E* code (or 0). Never NULL. */
const char *sg_strerror(int err);

#endif
