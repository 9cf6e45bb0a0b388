/* buf.h - a growable byte buffer.
 *
 * Stands alone: no server state, no logging. The data is always followed by
 * a NUL byte (not counted in len) once anything has been appended, so text
 * can be handed to C string functions directly.
 */
#ifndef SG_BUF_H
#define SG_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <string.h>

typedef struct {
  char *data;
  size_t len;
  size_t cap;
} sg_buf_t;

#define SG_BUF_INIT {NULL, 0, 0}

/* Make room for extra more bytes (plus the NUL). 0 or SG_ENOMEM. */
int sg_buf_reserve(sg_buf_t *b, size_t extra);
/* Appends: 0 or SG_ENOMEM (the buffer is unchanged then). Inline: the
 * renderers append a few bytes at a time, and a call into the growth
 * check for each cost ~10% of a request's CPU. */
static inline int sg_buf_append(sg_buf_t *b, const void *p, size_t n) {
  if (n >= b->cap - b->len) { /* no room for n bytes and the NUL */
    int rc = sg_buf_reserve(b, n);
    if (rc != 0) return rc;
  }
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}
static inline int sg_buf_putc(sg_buf_t *b, char c) {
  if (b->cap - b->len < 2) {
    int rc = sg_buf_reserve(b, 1);
    if (rc != 0) return rc;
  }
  b->data[b->len++] = c;
  b->data[b->len] = '\0';
  return 0;
}
int sg_buf_puts(sg_buf_t *b, const char *s);
int sg_buf_printf(sg_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int sg_buf_vprintf(sg_buf_t *b, const char *fmt, va_list ap);
/* Append s as the body of a JSON string (no quotes), escaping as RFC 8259 asks. */
int sg_buf_json_escape(sg_buf_t *b, const char *s, size_t n);
/* The same, with SG_JSON_ESC_JANSSON: byte for byte what jansson's dump
 * writes (\b and \f short, \u00XX in upper case), for text that must
 * equal jansson's output (json_nest.h). */
#define SG_JSON_ESC_JANSSON 1
int sg_buf_json_escape_ex(sg_buf_t *b, const char *s, size_t n, int flags);
/* Length of the longest prefix of s[0..n) a JSON string carries as is: no
 * '"', '\\' or control character. Looks at 16 bytes at a time; the escapers
 * copy such runs whole. */
size_t sg_json_plain_len(const char *s, size_t n);
/* The same prefix, also ending at the first byte from 0x80 up (where a
 * reader must check UTF-8). */
size_t sg_json_ascii_plain_len(const char *s, size_t n);
/* Length of the longest prefix of s[0..n) PostgreSQL's COPY text format
 * carries as is: no '\\' or control character. */
size_t sg_copy_plain_len(const char *s, size_t n);
/* Forget the contents, keep the memory. */
void sg_buf_reset(sg_buf_t *b);
/* Release the memory; the buffer is empty and reusable afterwards. */
void sg_buf_free(sg_buf_t *b);
/* Hand the memory to the caller (who frees it); the buffer becomes empty. */
char *sg_buf_detach(sg_buf_t *b, size_t *len);

#endif
