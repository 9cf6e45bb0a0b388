/* read_eval.c - the span query's filter in C, with PostgreSQL's semantics,
 * and the ClickHouse condition that narrows the rows first (read_eval.h).
 *
 * Each condition mirrors the SQL read_filter.c writes for it, including how
 * that SQL treats NULL; the comments name that SQL. Results are three-
 * valued: T, F, or U (unknown, SQL's NULL), combined with SQL's rules.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "read_eval.h"

#include <ctype.h>
#include <inttypes.h>
#include <locale.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wctype.h>

#include "ch.h"
#include "err.h"
#include "jalloc.h"
#include "read_internal.h"
#include "span.h"

enum { F = 0, T = 1, U = 2 };

/* ---- characters ------------------------------------------------------------- */

static locale_t utf8_locale;
static pthread_once_t locale_once = PTHREAD_ONCE_INIT;

/* PostgreSQL lower-cases with the C library under the database's LC_CTYPE;
 * a UTF-8 locale's tables are the same Unicode mapping for every language
 * but Turkish. */
static void locale_init(void) {
  utf8_locale = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
  if (!utf8_locale) utf8_locale = newlocale(LC_CTYPE_MASK, "en_US.UTF-8", (locale_t)0);
}

static uint32_t lower_cp(uint32_t c) {
  if (c < 128) return c >= 'A' && c <= 'Z' ? c + 32 : c;
  return utf8_locale ? (uint32_t)towlower_l((wint_t)c, utf8_locale) : c;
}

static int alnum_cp(uint32_t c) {
  if (c < 128) return isalnum((int)c);
  return utf8_locale ? iswalnum_l((wint_t)c, utf8_locale) : 0;
}

/* Next code point of s[*i..n); a byte that does not start valid UTF-8 is
 * its own code point (never a letter). */
static uint32_t next_cp(const char *s, size_t n, size_t *i) {
  const unsigned char *p = (const unsigned char *)s + *i;
  size_t left = n - *i;
  uint32_t c = p[0];
  size_t len = 1;
  if (c >= 0xc0 && c < 0xe0 && left >= 2 && (p[1] & 0xc0) == 0x80) c = (c & 0x1f) << 6 | (p[1] & 0x3f), len = 2;
  else if (c >= 0xe0 && c < 0xf0 && left >= 3 && (p[1] & 0xc0) == 0x80 && (p[2] & 0xc0) == 0x80)
    c = (c & 0x0f) << 12 | (uint32_t)(p[1] & 0x3f) << 6 | (p[2] & 0x3f), len = 3;
  else if (c >= 0xf0 && c < 0xf8 && left >= 4 && (p[1] & 0xc0) == 0x80 && (p[2] & 0xc0) == 0x80 &&
           (p[3] & 0xc0) == 0x80)
    c = (c & 0x07) << 18 | (uint32_t)(p[1] & 0x3f) << 12 | (uint32_t)(p[2] & 0x3f) << 6 | (p[3] & 0x3f), len = 4;
  *i += len;
  return c;
}

static int put_cp(sg_buf_t *b, uint32_t c) {
  char u[4];
  size_t n;
  if (c < 0x80) u[0] = (char)c, n = 1;
  else if (c < 0x800) u[0] = (char)(0xc0 | c >> 6), u[1] = (char)(0x80 | (c & 0x3f)), n = 2;
  else if (c < 0x10000)
    u[0] = (char)(0xe0 | c >> 12), u[1] = (char)(0x80 | ((c >> 6) & 0x3f)), u[2] = (char)(0x80 | (c & 0x3f)), n = 3;
  else
    u[0] = (char)(0xf0 | c >> 18), u[1] = (char)(0x80 | ((c >> 12) & 0x3f)),
    u[2] = (char)(0x80 | ((c >> 6) & 0x3f)), u[3] = (char)(0x80 | (c & 0x3f)), n = 4;
  return sg_buf_append(b, u, n);
}

/* ---- LIKE ----------------------------------------------------------------------- */

enum { P_LIT, P_ONE, P_ANY };
typedef struct {
  uint8_t type;
  uint32_t c;
} pat_t;

/* The pattern as items; `\` escapes the next character. SG_EINVAL for a
 * pattern ending in the escape (PostgreSQL's 22025). */
static int like_compile(const char *s, size_t n, int ci, pat_t **out, size_t *np) {
  pat_t *p = malloc((n + 1) * sizeof *p);
  if (!p) return SG_ENOMEM;
  size_t k = 0, i = 0;
  while (i < n) {
    uint32_t c = next_cp(s, n, &i);
    if (c == '\\') {
      if (i >= n) {
        free(p);
        return SG_EINVAL;
      }
      c = next_cp(s, n, &i);
      p[k].type = P_LIT;
    } else if (c == '%') {
      if (k && p[k - 1].type == P_ANY) continue;
      p[k].type = P_ANY;
    } else if (c == '_') {
      p[k].type = P_ONE;
    } else {
      p[k].type = P_LIT;
    }
    p[k++].c = ci ? lower_cp(c) : c;
  }
  *out = p;
  *np = k;
  return 0;
}

/* Wildcard match with one backtrack point (the last %): O(n * m). */
static int like_match(const pat_t *p, size_t m, const char *s, size_t n, int ci) {
  size_t i = 0, j = 0, star_j = (size_t)-1, star_i = 0;
  while (i < n) {
    if (j < m && p[j].type == P_ANY) {
      star_j = j++;
      star_i = i;
      continue;
    }
    size_t next = i;
    uint32_t c = next_cp(s, n, &next);
    if (ci) c = lower_cp(c);
    if (j < m && (p[j].type == P_ONE || (p[j].type == P_LIT && p[j].c == c))) {
      i = next;
      j++;
      continue;
    }
    if (star_j == (size_t)-1) return 0;
    j = star_j + 1; /* the % takes one more character */
    (void)next_cp(s, n, &star_i);
    i = star_i;
  }
  while (j < m && p[j].type == P_ANY) j++;
  return j == m;
}

/* ---- full-text search (an approximation of PostgreSQL's, read_eval.h) ---------- */

typedef struct {
  char **tok; /* lower-case UTF-8, NUL-terminated */
  size_t ntok;
  int neg;
} cq_item_t;

typedef struct {
  cq_item_t *items;
  size_t n;
} cq_group_t;

typedef struct {
  cq_group_t *groups;
  size_t n;
} cq_t;

typedef int (*tok_cb)(void *ud, const char *t, size_t n);

/* Tokens of s: runs of letters and digits, lower-cased; runs joined by one
 * '.', '@' or '-' (a letter or digit on both sides) form a compound: with
 * only '-' the compound and then its parts (PostgreSQL's hyphenated words),
 * otherwise the compound alone (host names, e-mail addresses, versions). */
static int tokenize(const char *s, size_t n, tok_cb cb, void *ud) {
  sg_buf_t run = SG_BUF_INIT, parts = SG_BUF_INIT; /* parts: NUL-separated runs */
  size_t i = 0;
  int rc = 0;
  while (rc == 0 && i < n) {
    size_t save = i;
    uint32_t c = next_cp(s, n, &i);
    if (!alnum_cp(c)) continue;
    i = save;
    sg_buf_reset(&run);
    sg_buf_reset(&parts);
    int nparts = 0, other_join = 0;
    while (rc == 0) {
      /* one run */
      size_t part0 = run.len;
      while (rc == 0 && i < n) {
        size_t at = i;
        uint32_t d = next_cp(s, n, &at);
        if (!alnum_cp(d)) break;
        rc = put_cp(&run, lower_cp(d));
        i = at;
      }
      if (rc) break;
      rc = sg_buf_append(&parts, run.data + part0, run.len - part0);
      rc = rc ? rc : sg_buf_putc(&parts, '\0');
      nparts++;
      /* a joiner followed by a letter or digit continues the compound */
      if (i + 1 < n && (s[i] == '.' || s[i] == '@' || s[i] == '-')) {
        size_t at = i + 1;
        uint32_t d = next_cp(s, n, &at);
        if (alnum_cp(d)) {
          if (s[i] != '-') other_join = 1;
          rc = sg_buf_putc(&run, s[i]);
          i++;
          continue;
        }
      }
      break;
    }
    if (rc) break;
    rc = cb(ud, run.data, run.len);
    if (rc == 0 && nparts > 1 && !other_join)
      for (size_t off = 0; rc == 0 && off < parts.len; off += strlen(parts.data + off) + 1)
        rc = cb(ud, parts.data + off, strlen(parts.data + off));
  }
  sg_buf_free(&run);
  sg_buf_free(&parts);
  return rc;
}

static int item_add_tok(void *ud, const char *t, size_t n) {
  cq_item_t *it = ud;
  char **nt = realloc(it->tok, (it->ntok + 1) * sizeof *nt);
  if (!nt) return SG_ENOMEM;
  it->tok = nt;
  if (!(it->tok[it->ntok] = strndup(t, n))) return SG_ENOMEM;
  it->ntok++;
  return 0;
}

static void cq_free(cq_t *q) {
  if (!q) return;
  for (size_t g = 0; g < q->n; g++) {
    for (size_t i = 0; i < q->groups[g].n; i++) {
      for (size_t k = 0; k < q->groups[g].items[i].ntok; k++) free(q->groups[g].items[i].tok[k]);
      free(q->groups[g].items[i].tok);
    }
    free(q->groups[g].items);
  }
  free(q->groups);
  free(q);
}

/* websearch_to_tsquery's syntax: "quoted phrase", `or` between alternatives,
 * -word for NOT, other words ANDed. */
static int cq_parse(const char *s, size_t n, cq_t **out) {
  cq_t *q = calloc(1, sizeof *q);
  if (!q) return SG_ENOMEM;
  int rc = 0, neg = 0, want_new_group = 1;
  size_t i = 0;
  while (rc == 0 && i < n) {
    if (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') { i++; continue; }
    size_t a, b;
    if (s[i] == '-' && !neg) { neg = 1; i++; continue; }
    if (s[i] == '"') {
      a = ++i;
      while (i < n && s[i] != '"') i++;
      b = i;
      if (i < n) i++;
    } else {
      a = i;
      while (i < n && !strchr(" \t\n\r\"", s[i])) i++;
      b = i;
      if (b - a == 2 && tolower((unsigned char)s[a]) == 'o' && tolower((unsigned char)s[a + 1]) == 'r' && !neg &&
          q->n && q->groups[q->n - 1].n) {
        want_new_group = 1;
        continue;
      }
    }
    cq_item_t it = {NULL, 0, neg};
    neg = 0;
    rc = tokenize(s + a, b - a, item_add_tok, &it);
    if (rc == 0 && it.ntok) {
      if (want_new_group) {
        cq_group_t *ng = realloc(q->groups, (q->n + 1) * sizeof *ng);
        if (!ng) rc = SG_ENOMEM;
        else {
          q->groups = ng;
          memset(&q->groups[q->n++], 0, sizeof *ng);
          want_new_group = 0;
        }
      }
      cq_group_t *g = &q->groups[q->n - 1];
      cq_item_t *ni = rc ? NULL : realloc(g->items, (g->n + 1) * sizeof *ni);
      if (!ni && rc == 0) rc = SG_ENOMEM;
      if (rc == 0) {
        g->items = ni;
        g->items[g->n++] = it;
        it.tok = NULL;
        it.ntok = 0;
      }
    }
    for (size_t k = 0; k < it.ntok; k++) free(it.tok[k]);
    free(it.tok);
  }
  if (rc) {
    cq_free(q);
    return rc;
  }
  *out = q;
  return 0;
}

/* A document's tokens with their positions; string values are separated by
 * a skipped position, as jsonb's to_tsvector does, so phrases never span
 * two values. */
typedef struct {
  char **tok;
  int *pos;
  size_t n, cap;
  int next;
} tdoc_t;

static int tdoc_add(void *ud, const char *t, size_t n) {
  tdoc_t *d = ud;
  if (d->n == d->cap) {
    size_t cap = d->cap ? d->cap * 2 : 64;
    char **nt = realloc(d->tok, cap * sizeof *nt);
    if (!nt) return SG_ENOMEM;
    d->tok = nt;
    int *np = realloc(d->pos, cap * sizeof *np);
    if (!np) return SG_ENOMEM;
    d->pos = np;
    d->cap = cap;
  }
  if (!(d->tok[d->n] = strndup(t, n))) return SG_ENOMEM;
  d->pos[d->n++] = ++d->next;
  return 0;
}

static int tdoc_collect(const sg_jb_t *v, tdoc_t *d) {
  int rc = 0;
  switch (v->type) {
  case SG_JB_STRING:
    rc = tokenize(v->s, v->n, tdoc_add, d);
    d->next++;
    return rc;
  case SG_JB_ARRAY:
    for (uint32_t i = 0; rc == 0 && i < v->n; i++) rc = tdoc_collect(&v->v[i], d);
    return rc;
  case SG_JB_OBJECT:
    for (uint32_t i = 0; rc == 0 && i < v->n; i++) rc = tdoc_collect(&v->v[2 * i + 1], d);
    return rc;
  default: return 0;
  }
}

static void tdoc_free(tdoc_t *d) {
  for (size_t i = 0; i < d->n; i++) free(d->tok[i]);
  free(d->tok);
  free(d->pos);
}

static int phrase_in(const tdoc_t *d, const cq_item_t *it) {
  for (size_t i = 0; i < d->n; i++) {
    if (strcmp(d->tok[i], it->tok[0])) continue;
    int p = d->pos[i];
    size_t k = 1;
    for (; k < it->ntok; k++) {
      int found = 0;
      for (size_t j = 0; j < d->n && !found; j++) found = d->pos[j] == p + (int)k && !strcmp(d->tok[j], it->tok[k]);
      if (!found) break;
    }
    if (k == it->ntok) return 1;
  }
  return 0;
}

static int cq_match(const cq_t *q, const tdoc_t *d) {
  for (size_t g = 0; g < q->n; g++) {
    int all = 1;
    for (size_t i = 0; all && i < q->groups[g].n; i++) {
      const cq_item_t *it = &q->groups[g].items[i];
      all = phrase_in(d, it) != it->neg;
    }
    if (all && q->groups[g].n) return 1;
  }
  return 0; /* a query without words matches nothing */
}

/* ---- the compiled filter ------------------------------------------------------------ */

enum { N_GROUP, N_TRUE, N_COL, N_JSON, N_CONTENT };

/* JSON condition forms (with a key, over the leaf L; without, over the column) */
enum {
  J_EXISTS, J_NOT_EXISTS, J_NULL, J_NOT_NULL, J_EQ, J_NEQ, J_CONTAINS, J_NOT_CONTAINS, J_CMP, J_STR,
  J_IN, J_NOT_IN, J_COL_NULL, J_COL_NOT_NULL
};

typedef struct node_s node_t;
struct node_s {
  int kind;
  int op;              /* sg__rf_op_t (N_GROUP: 1 for or) */
  int neg;             /* N_GROUP: not, nand, nor */
  node_t **kids;
  size_t nkids;
  const sg__rf_field_t *f;
  /* columns */
  int vnull;           /* is/eq/... with a null value */
  char *s, *s2;        /* value (and btwn's high) as PostgreSQL gets it */
  size_t slen, s2len;
  int64_t us, us2;     /* times */
  char **list;
  size_t *llen, nlist;
  int64_t *lus;
  pat_t *pat;          /* LIKE pattern */
  size_t npat;
  int ci;              /* case-insensitive (ILIKE, ~*) */
  pcre2_code *re;
  pcre2_match_data *md;
  /* JSON */
  int form;            /* J_* */
  char **seg;
  size_t *seglen, nseg;
  char *flat;          /* the dotted key as one name, when it has dots */
  sg_jb_doc_t *vdoc, *vdoc2;
  const sg_jb_t *jv, *jv2; /* the value, the list (in), the nested / flat containment values */
  int num;             /* J_CMP: as numbers (else as text) */
  /* ClickHouse prefilter: texts every matching row's column contains */
  char **need;         /* all of these */
  size_t nneed;
  char **anyk;         /* and at least one of these (when any) */
  size_t nanyk;
  int need_ci;         /* compared case-insensitively */
  /* content */
  cq_t *cq;
};

struct sg_re_s {
  node_t *root;
  pcre2_match_context *mctx;
};

static void node_free(node_t *n) {
  if (!n) return;
  for (size_t i = 0; i < n->nkids; i++) node_free(n->kids[i]);
  free(n->kids);
  free(n->s);
  free(n->s2);
  for (size_t i = 0; i < n->nlist; i++) free(n->list[i]);
  free(n->list);
  free(n->llen);
  free(n->lus);
  free(n->pat);
  if (n->md) pcre2_match_data_free(n->md);
  if (n->re) pcre2_code_free(n->re);
  for (size_t i = 0; i < n->nseg; i++) free(n->seg[i]);
  free(n->seg);
  free(n->seglen);
  free(n->flat);
  sg_jb_free(n->vdoc);
  sg_jb_free(n->vdoc2);
  for (size_t i = 0; i < n->nneed; i++) free(n->need[i]);
  free(n->need);
  for (size_t i = 0; i < n->nanyk; i++) free(n->anyk[i]);
  free(n->anyk);
  cq_free(n->cq);
  free(n);
}

void sg_re_free(sg_re_t *f) {
  if (!f) return;
  node_free(f->root);
  if (f->mctx) pcre2_match_context_free(f->mctx);
  free(f);
}

typedef struct {
  sg_re_t *re;
  sg_buf_t *err;
  sg_buf_t tmp;
} cctx_t;

/* A value PostgreSQL would refuse while running the query: the message its
 * path gives (read.c's pg_fail). */
static int refused(cctx_t *c) {
  if (c->err) sg_buf_puts(c->err, "a filter value is not valid for its field or operator");
  return SG_EINVAL;
}

/* A value of the request as jsonb. jsonb refuses what PostgreSQL's
 * `$n::jsonb` would (a string holding \u0000): the same 400 as there. */
static int json_value(cctx_t *c, const json_t *v, sg_jb_doc_t **doc, const sg_jb_t **root) {
  char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
  if (!t) return SG_ENOMEM;
  int rc = sg_jb_parse(t, strlen(t), doc, root);
  sg_json_free(t);
  if (rc == SG_EINVAL) return refused(c);
  return rc;
}

/* The text a column value takes (read_filter.c's sg__rf_column_value), and
 * for times its µs. */
static int col_text(cctx_t *c, const sg__rf_field_t *f, const json_t *v, char **s, size_t *n, int64_t *us) {
  sg_buf_reset(&c->tmp);
  int rc = sg__rf_column_value(f, v, "filtering", &c->tmp, c->err);
  if (rc) return rc;
  if (f->kind == SG_RFK_TIME && sg__rf_time_value(v, us) != 0) return SG_EINVAL;
  *n = c->tmp.len;
  *s = strndup(c->tmp.data ? c->tmp.data : "", c->tmp.len);
  return *s ? 0 : SG_ENOMEM;
}

static int opt_cs(const json_t *cond) {
  const json_t *o = json_object_get(cond, "options");
  return json_is_object(o) && json_is_true(json_object_get(o, "case_sensitive"));
}

/* No character jansson or jsonb would write escaped. */
static int plain(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch < 0x20 || ch == '"' || ch == '\\') return 0;
  }
  return 1;
}

/* A JSON string as it appears in stored JSON text, when every stored form
 * writes it the same way (plain). */
static char *json_needle(const char *s, size_t n) {
  if (!plain(s, n)) return NULL;
  char *o = malloc(n + 3);
  if (!o) return NULL;
  o[0] = '"';
  memcpy(o + 1, s, n);
  o[n + 1] = '"';
  o[n + 2] = '\0';
  return o;
}

/* For a case-insensitive search in ClickHouse (positionCaseInsensitiveUTF8):
 * the longest run of s that folds the same way there as in PostgreSQL:
 * ASCII, without i or k (U+0130 and U+212A lower-case to them in glibc, not
 * in ClickHouse's multi-character search) and,
 * inside JSON text, within one JSON token in every stored form and not a
 * number (numbers are stored as written, 1e-07, and read as numeric prints
 * them, 0.0000001: the run must hold a letter other than e). NULL when
 * shorter than 2 bytes. */
static char *ci_needle(const char *s, size_t n, int in_json) {
  size_t best = 0, best_at = 0, at = 0;
  for (size_t i = 0; i <= n; i++) {
    unsigned char ch = i < n ? (unsigned char)s[i] : 0;
    int ok = i < n && ch >= 0x20 && ch < 0x7f && !strchr("iIkK", ch) &&
             (!in_json || !strchr("\"\\{}[],: ", ch));
    if (ok) continue;
    int letter = !in_json;
    for (size_t k = at; k < i && !letter; k++)
      letter = isalpha((unsigned char)s[k]) && s[k] != 'e' && s[k] != 'E';
    if (i - at > best && letter) best = i - at, best_at = at;
    at = i + 1;
  }
  return best >= 2 ? strndup(s + best_at, best) : NULL;
}

/* For a case-sensitive search inside JSON text: the longest run of s that
 * lies within one JSON token in every stored form and cannot be a number
 * written differently (it holds a letter other than e/E). */
static char *cs_json_needle(const char *s, size_t n) {
  size_t best = 0, best_at = 0, at = 0;
  for (size_t i = 0; i <= n; i++) {
    unsigned char ch = i < n ? (unsigned char)s[i] : 0;
    int ok = i < n && ch >= 0x20 && !strchr("\"\\{}[],: ", ch);
    if (ok) continue;
    if (i - at > best) {
      int letter = 0;
      for (size_t k = at; k < i; k++)
        if (((unsigned char)s[k] >= 0x80 || isalpha((unsigned char)s[k])) && s[k] != 'e' && s[k] != 'E') letter = 1;
      if (letter) best = i - at, best_at = at;
    }
    at = i + 1;
  }
  return best >= 2 ? strndup(s + best_at, best) : NULL;
}

/* The literal text a LIKE pattern (or a literal value) requires. */
static char *like_literal(const char *s, size_t n, int op) {
  if (op != SG_RFO_LIKE) return strndup(s, n);
  sg_buf_t best = SG_BUF_INIT, cur = SG_BUF_INIT;
  for (size_t i = 0; i <= n; i++) {
    if (i == n || s[i] == '%' || s[i] == '_') {
      if (cur.len > best.len) {
        sg_buf_reset(&best);
        sg_buf_append(&best, cur.data, cur.len);
      }
      sg_buf_reset(&cur);
      continue;
    }
    if (s[i] == '\\' && i + 1 < n) i++;
    sg_buf_putc(&cur, s[i]);
  }
  char *r = best.len ? strndup(best.data, best.len) : NULL;
  sg_buf_free(&best);
  sg_buf_free(&cur);
  return r;
}

#define MAX_NEEDLES 16

/* Takes s (may be NULL: nothing added). */
static int need_add(char ***arr, size_t *n, char *s) {
  if (!s) return 0;
  if (*n >= MAX_NEEDLES) {
    free(s);
    return 0;
  }
  char **a = realloc(*arr, (*n + 1) * sizeof *a);
  if (!a) {
    free(s);
    return SG_ENOMEM;
  }
  *arr = a;
  a[(*n)++] = s;
  return 0;
}

/* Every plain string of a JSON value (object keys too): a document holding
 * the value holds each of them as it is written here. */
static int value_needles(node_t *n, const json_t *v) {
  int rc = 0;
  if (json_is_string(v)) return need_add(&n->need, &n->nneed, json_needle(json_string_value(v), json_string_length(v)));
  if (json_is_object(v)) {
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)v, k, x) {
      if (rc == 0) rc = need_add(&n->need, &n->nneed, json_needle(k, strlen(k)));
      if (rc == 0) rc = value_needles(n, x);
    }
  } else if (json_is_array(v)) {
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) if (rc == 0) rc = value_needles(n, x);
  }
  return rc;
}

/* startswith/endswith/contains/like/matches: the pattern or regex. */
static int string_op(cctx_t *c, node_t *n, int op, const json_t *v, const json_t *cond, int in_json) {
  if (!json_is_string(v)) return sg__rf_fail(c->err, "filtering", "a string operator takes a string value");
  const char *s = json_string_value(v);
  size_t len = json_string_length(v);
  n->ci = !opt_cs(cond);
  if (op == SG_RFO_MATCHES) {
    int ec;
    PCRE2_SIZE eo;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_DOTALL | PCRE2_DOLLAR_ENDONLY | (n->ci ? PCRE2_CASELESS : 0);
    n->re = pcre2_compile((PCRE2_SPTR)s, len, opts, &ec, &eo, NULL);
    if (!n->re) return refused(c);
    n->md = pcre2_match_data_create_from_pattern(n->re, NULL);
    return n->md ? 0 : SG_ENOMEM;
  }
  /* the pattern PostgreSQL is given (read_filter.c's like_pattern) */
  sg_buf_t p = SG_BUF_INIT;
  int rc = 0;
  if (op == SG_RFO_ENDSWITH || op == SG_RFO_CONTAINS) rc = sg_buf_putc(&p, '%');
  if (op == SG_RFO_LIKE) rc = rc ? rc : sg_buf_append(&p, s, len);
  else
    for (size_t i = 0; rc == 0 && i < len; i++) {
      if (s[i] == '%' || s[i] == '_' || s[i] == '\\') rc = sg_buf_putc(&p, '\\');
      rc = rc ? rc : sg_buf_putc(&p, s[i]);
    }
  if (op == SG_RFO_STARTSWITH || op == SG_RFO_CONTAINS) rc = rc ? rc : sg_buf_putc(&p, '%');
  if (rc == 0) rc = like_compile(p.data ? p.data : "", p.len, n->ci, &n->pat, &n->npat);
  sg_buf_free(&p);
  if (rc == SG_EINVAL) return refused(c);
  if (rc) return rc;
  char *lit = like_literal(s, len, op);
  if (lit) {
    rc = need_add(&n->need, &n->nneed,
                  n->ci ? ci_needle(lit, strlen(lit), in_json) : in_json ? cs_json_needle(lit, strlen(lit)) : strdup(lit));
    n->need_ci = n->ci;
    free(lit);
  }
  return rc;
}

static int column_node(cctx_t *c, node_t *n, int op, const json_t *v, const json_t *cond) {
  const sg__rf_field_t *f = n->f;
  int rc;
  switch (op) {
  case SG_RFO_EXISTS:
  case SG_RFO_NOT_EXISTS: return 0;
  case SG_RFO_IS:
  case SG_RFO_EQ:
  case SG_RFO_IS_NOT:
  case SG_RFO_NEQ:
    if (v == NULL || json_is_null(v)) {
      n->vnull = 1;
      return 0;
    }
    return col_text(c, f, v, &n->s, &n->slen, &n->us);
  case SG_RFO_GT:
  case SG_RFO_LT:
  case SG_RFO_GTE:
  case SG_RFO_LTE: return col_text(c, f, v, &n->s, &n->slen, &n->us);
  case SG_RFO_BTWN:
    if ((rc = col_text(c, f, json_array_get(v, 0), &n->s, &n->slen, &n->us))) return rc;
    return col_text(c, f, json_array_get(v, 1), &n->s2, &n->s2len, &n->us2);
  case SG_RFO_STARTSWITH:
  case SG_RFO_ENDSWITH:
  case SG_RFO_CONTAINS:
  case SG_RFO_LIKE:
  case SG_RFO_MATCHES: return string_op(c, n, op, v, cond, 0);
  case SG_RFO_IN:
  case SG_RFO_NOT_IN: {
    size_t k = json_array_size(v);
    n->list = calloc(k + 1, sizeof *n->list);
    n->llen = calloc(k + 1, sizeof *n->llen);
    n->lus = calloc(k + 1, sizeof *n->lus);
    if (!n->list || !n->llen || !n->lus) return SG_ENOMEM;
    for (size_t i = 0; i < k; i++) {
      if ((rc = col_text(c, f, json_array_get(v, i), &n->list[i], &n->llen[i], &n->lus[i]))) return rc;
      n->nlist++;
    }
    return 0;
  }
  default: return SG_EINVAL;
  }
}

static int json_node(cctx_t *c, node_t *n, const char *key, int op, const json_t *v, const json_t *cond) {
  const sg__rf_field_t *f = n->f;
  int rc;
  if (key == NULL) {
    switch (op) {
    case SG_RFO_EXISTS: n->form = J_COL_NOT_NULL; return 0;
    case SG_RFO_NOT_EXISTS: n->form = J_COL_NULL; return 0;
    default: break;
    }
    int pos = op == SG_RFO_IS || op == SG_RFO_EQ;
    if (v == NULL || json_is_null(v)) {
      n->form = pos ? J_COL_NULL : J_COL_NOT_NULL;
      return 0;
    }
    json_t *w = (f->list && json_is_object(v)) ? json_pack("[O]", v) : NULL;
    rc = json_value(c, w ? w : v, &n->vdoc, &n->jv);
    json_decref(w);
    n->form = pos ? J_CONTAINS : J_NOT_CONTAINS;
    if (rc == 0 && pos) rc = value_needles(n, v);
    return rc;
  }
  /* the path, as read_filter.c's key_path splits it */
  size_t klen = strlen(key);
  int numeric = 0;
  for (const char *p = key;;) {
    const char *dot = strchr(p, '.');
    size_t sl = dot ? (size_t)(dot - p) : strlen(p);
    char **ns = realloc(n->seg, (n->nseg + 1) * sizeof *ns);
    size_t *nl = realloc(n->seglen, (n->nseg + 1) * sizeof *nl);
    if (ns) n->seg = ns;
    if (nl) n->seglen = nl;
    if (!ns || !nl || !(n->seg[n->nseg] = strndup(p, sl))) return SG_ENOMEM;
    n->seglen[n->nseg++] = sl;
    int digits = sl > 0;
    for (size_t i = 0; i < sl; i++)
      if (!isdigit((unsigned char)p[i])) digits = 0;
    if (digits) numeric = 1;
    if (!dot) break;
    p = dot + 1;
  }
  if (n->nseg > 1 && !(n->flat = strndup(key, klen))) return SG_ENOMEM;
  switch (op) {
  case SG_RFO_EXISTS: n->form = J_EXISTS; break;
  case SG_RFO_NOT_EXISTS: n->form = J_NOT_EXISTS; break;
  case SG_RFO_IS:
  case SG_RFO_IS_NOT: {
    int neg = op == SG_RFO_IS_NOT;
    if (v == NULL || json_is_null(v)) {
      n->form = neg ? J_NOT_NULL : J_NULL;
      break;
    }
    if (numeric || f->list) {
      n->form = neg ? J_NEQ : J_EQ;
      rc = json_value(c, v, &n->vdoc, &n->jv);
    } else {
      n->form = neg ? J_NOT_CONTAINS : J_CONTAINS;
      json_t *nested = sg__rf_nest_value(key, v, 0), *flat = n->flat ? sg__rf_nest_value(key, v, 1) : NULL;
      rc = nested && (!n->flat || flat) ? 0 : SG_ENOMEM;
      if (rc == 0) rc = json_value(c, nested, &n->vdoc, &n->jv);
      if (rc == 0 && flat) rc = json_value(c, flat, &n->vdoc2, &n->jv2);
      json_decref(nested);
      json_decref(flat);
    }
    if (rc) return rc;
    if (!neg && (rc = value_needles(n, v))) return rc;
    break;
  }
  case SG_RFO_EQ:
  case SG_RFO_NEQ:
    n->form = op == SG_RFO_EQ ? J_EQ : J_NEQ;
    if ((rc = json_value(c, v, &n->vdoc, &n->jv))) return rc;
    if (op == SG_RFO_EQ && (rc = value_needles(n, v))) return rc;
    break;
  case SG_RFO_GT:
  case SG_RFO_LT:
  case SG_RFO_GTE:
  case SG_RFO_LTE:
  case SG_RFO_BTWN: {
    const json_t *lo = v, *hi = NULL;
    if (op == SG_RFO_BTWN) lo = json_array_get(v, 0), hi = json_array_get(v, 1);
    n->form = J_CMP;
    n->num = json_is_number(lo);
    for (int k = 0; k < (hi ? 2 : 1); k++) {
      const json_t *x = k ? hi : lo;
      char *t = json_is_string(x) ? strndup(json_string_value(x), json_string_length(x))
                                  : sg_json_dumps(x, JSON_COMPACT | JSON_ENCODE_ANY);
      if (!t) return SG_ENOMEM;
      if (k) n->s2 = t, n->s2len = strlen(t);
      else n->s = t, n->slen = json_is_string(x) ? json_string_length(x) : strlen(t);
      if (k && json_is_string(x)) n->s2len = json_string_length(x);
    }
    break;
  }
  case SG_RFO_STARTSWITH:
  case SG_RFO_ENDSWITH:
  case SG_RFO_CONTAINS:
  case SG_RFO_LIKE:
  case SG_RFO_MATCHES:
    n->form = J_STR;
    if ((rc = string_op(c, n, op, v, cond, 1))) return rc;
    break;
  case SG_RFO_IN:
  case SG_RFO_NOT_IN:
    n->form = op == SG_RFO_IN ? J_IN : J_NOT_IN;
    if ((rc = json_value(c, v, &n->vdoc, &n->jv))) return rc;
    if (op == SG_RFO_IN) { /* every listed value a plain string: one of them is in the text */
      size_t i;
      json_t *e;
      int ok = json_array_size(v) > 0 && json_array_size(v) <= MAX_NEEDLES;
      json_array_foreach(v, i, e) if (ok && !(json_is_string(e) && plain(json_string_value(e), json_string_length(e))))
        ok = 0;
      json_array_foreach(v, i, e) if (ok && rc == 0)
        rc = need_add(&n->anyk, &n->nanyk, json_needle(json_string_value(e), json_string_length(e)));
      return rc;
    }
    return 0;
  default: return SG_EINVAL;
  }
  /* The leaf must exist for the positive forms: its key is in the text,
   * written `"last"` (nested) or `"a.b.last"` (one flat name). */
  if (n->form == J_EXISTS || n->form == J_EQ || n->form == J_CONTAINS || n->form == J_CMP || n->form == J_STR) {
    const char *last = n->seg[n->nseg - 1];
    if (!numeric && n->nanyk == 0) {
      rc = need_add(&n->anyk, &n->nanyk, json_needle(last, strlen(last)));
      if (rc == 0 && n->flat) rc = need_add(&n->anyk, &n->nanyk, json_needle(n->flat, strlen(n->flat)));
      if (rc == 0 && n->nanyk != (n->flat ? 2u : 1u)) { /* an alternative without a needle: none */
        for (size_t i = 0; i < n->nanyk; i++) free(n->anyk[i]);
        n->nanyk = 0;
      }
    }
  }
  return rc;
}

static int compile_node(cctx_t *c, const json_t *j, int depth, node_t **out);

static int compile_condition(cctx_t *c, const json_t *cond, node_t *n) {
  const json_t *jf = json_object_get(cond, "field"), *jk = json_object_get(cond, "key");
  const json_t *jo = json_object_get(cond, "operator"), *v = json_object_get(cond, "value");
  const char *fname = json_string_value(jf), *key = NULL;
  if (!fname) return SG_EINVAL;
  const sg__rf_field_t *f = sg__rf_find_field(fname, json_string_length(jf));
  if (!f) {
    const char *dot = strchr(fname, '.');
    const sg__rf_field_t *jfld = dot ? sg__rf_find_field(fname, (size_t)(dot - fname)) : NULL;
    if (jfld && jfld->kind == SG_RFK_JSON && !jk) f = jfld, key = dot + 1;
  }
  if (!f) return SG_EINVAL;
  if (jk && !json_is_null(jk)) key = json_string_value(jk);
  int op = SG_RFO_IS;
  if (jo && !json_is_null(jo)) op = sg__rf_find_op(json_string_value(jo));
  if (op < 0) return SG_EINVAL;
  n->f = f;
  n->op = op;
  if (f->kind == SG_RFK_JSON) {
    n->kind = N_JSON;
    return json_node(c, n, key, op, v, cond);
  }
  if (f->kind == SG_RFK_CONTENT) {
    n->kind = N_CONTENT;
    char *t;
    size_t tl;
    int64_t us;
    int rc = col_text(c, f, v, &t, &tl, &us);
    if (rc) return rc;
    rc = cq_parse(t, tl, &n->cq);
    free(t);
    return rc;
  }
  n->kind = N_COL;
  return column_node(c, n, op, v, cond);
}

static int compile_node(cctx_t *c, const json_t *j, int depth, node_t **out) {
  node_t *n = calloc(1, sizeof *n);
  if (!n) return SG_ENOMEM;
  *out = n;
  if (depth > 64) return SG_EINVAL;
  /* read_filter.c: the top is always a filtering object; below, an element
   * with conditions and no field is one */
  if (depth > 0 && (json_object_get(j, "field") || !json_object_get(j, "conditions")))
    return compile_condition(c, j, n);
  const json_t *jo = json_object_get(j, "operator"), *conds = json_object_get(j, "conditions");
  const char *op = json_is_string(jo) ? json_string_value(jo) : "and";
  size_t k = json_is_array(conds) ? json_array_size(conds) : 0;
  if (k == 0) { /* no conditions: no restriction, whatever the operator */
    n->kind = N_TRUE;
    return 0;
  }
  n->kind = N_GROUP;
  n->op = !strcmp(op, "or") || !strcmp(op, "nor");
  n->neg = !strcmp(op, "not") || !strcmp(op, "nand") || !strcmp(op, "nor");
  n->kids = calloc(k, sizeof *n->kids);
  if (!n->kids) return SG_ENOMEM;
  for (size_t i = 0; i < k; i++) {
    int rc = compile_node(c, json_array_get(conds, i), depth + 1, &n->kids[n->nkids++]);
    if (rc) return rc;
  }
  return 0;
}

int sg_re_compile(const json_t *filtering, sg_re_t **out, sg_buf_t *err) {
  pthread_once(&locale_once, locale_init);
  *out = NULL;
  sg_re_t *re = calloc(1, sizeof *re);
  if (!re) return SG_ENOMEM;
  cctx_t c = {re, err, SG_BUF_INIT};
  int rc = 0;
  if (!filtering || json_is_null(filtering)) {
    re->root = calloc(1, sizeof *re->root);
    if (!re->root) rc = SG_ENOMEM;
    else re->root->kind = N_TRUE;
  } else {
    rc = compile_node(&c, filtering, 0, &re->root);
  }
  /* Regular expressions run under a budget: a pathological pattern costs
   * this request a 400, never a worker's CPU. */
  if (rc == 0) {
    re->mctx = pcre2_match_context_create(NULL);
    if (!re->mctx) rc = SG_ENOMEM;
    else {
      pcre2_set_match_limit(re->mctx, 1000000);
      pcre2_set_depth_limit(re->mctx, 10000);
    }
  }
  sg_buf_free(&c.tmp);
  if (rc) {
    sg_re_free(re);
    return rc;
  }
  *out = re;
  return 0;
}

/* ---- rows ---------------------------------------------------------------------------- */

void sg_re_row_init(sg_re_row_t *row) { memset(row, 0, sizeof *row); }

void sg_re_row_clear(sg_re_row_t *row) {
  for (int i = 0; i < SG_RF_NCOLS; i++) sg_jb_free(row->doc[i]);
  memset(row, 0, sizeof *row);
}

int sg_re_row_json(sg_re_row_t *row, int col, const sg_jb_t **out) {
  *out = NULL;
  if (!row->v[col]) return 0;
  if (row->state[col] == 0) {
    int rc = sg_jb_parse(row->v[col], row->len[col], &row->doc[col], &row->json[col]);
    if (rc == SG_ENOMEM) return rc;
    row->state[col] = rc ? -1 : 1;
  }
  if (row->state[col] < 0) return SG_EINVAL;
  *out = row->json[col];
  return 0;
}

/* ---- evaluation ------------------------------------------------------------------------ */

typedef struct {
  const sg_re_t *re;
  sg_re_row_t *row;
  int err;
  sg_buf_t tmp;
} ectx_t;

static int str_cmp(const char *a, size_t na, const char *b, size_t nb) { /* C collation */
  int c = memcmp(a, b, na < nb ? na : nb);
  if (c) return c;
  return na < nb ? -1 : na > nb;
}

static int64_t col_us(const char *v) { return strtoll(v, NULL, 10); }

static int cmp_ok(int op, int c) {
  switch (op) {
  case SG_RFO_GT: return c > 0;
  case SG_RFO_LT: return c < 0;
  case SG_RFO_GTE: return c >= 0;
  default: return c <= 0;
  }
}

/* `expr ILIKE|LIKE|~*|~ p` over text s (not NULL). */
static int str_match(ectx_t *e, const node_t *n, const char *s, size_t len) {
  if (n->re) {
    int r = pcre2_match(n->re, (PCRE2_SPTR)s, len, 0, 0, n->md, e->re->mctx);
    if (r >= 0) return T;
    if (r == PCRE2_ERROR_NOMATCH) return F;
    e->err = SG_EINVAL; /* the match budget, or text that is not UTF-8 */
    return F;
  }
  return like_match(n->pat, n->npat, s, len, n->ci) ? T : F;
}

static int eval_col(ectx_t *e, const node_t *n) {
  const sg__rf_field_t *f = n->f;
  const char *v = e->row->v[f->rcol];
  size_t len = e->row->len[f->rcol];
  int isnull = v == NULL;
  switch (n->op) {
  case SG_RFO_EXISTS: return isnull ? F : T;
  case SG_RFO_NOT_EXISTS: return isnull ? T : F;
  case SG_RFO_IS:
  case SG_RFO_EQ:
  case SG_RFO_IS_NOT:
  case SG_RFO_NEQ: {
    int pos = n->op == SG_RFO_IS || n->op == SG_RFO_EQ;
    if (n->vnull) return (isnull == pos) ? T : F; /* IS [NOT] NULL */
    int eq;
    if (isnull) {
      if (pos) return U;            /* col = $v */
      return T;                     /* col IS DISTINCT FROM $v */
    }
    if (f->kind == SG_RFK_TIME) eq = col_us(v) == n->us;
    else eq = len == n->slen && !memcmp(v, n->s, len);
    return eq == pos ? T : F;
  }
  case SG_RFO_GT:
  case SG_RFO_LT:
  case SG_RFO_GTE:
  case SG_RFO_LTE:
    if (isnull) return U;
    if (f->kind == SG_RFK_TIME) {
      int64_t x = col_us(v);
      return cmp_ok(n->op, x < n->us ? -1 : x > n->us) ? T : F;
    }
    return cmp_ok(n->op, str_cmp(v, len, n->s, n->slen)) ? T : F;
  case SG_RFO_BTWN:
    if (isnull) return U;
    if (f->kind == SG_RFK_TIME) {
      int64_t x = col_us(v);
      return x >= n->us && x <= n->us2 ? T : F;
    }
    return str_cmp(v, len, n->s, n->slen) >= 0 && str_cmp(v, len, n->s2, n->s2len) <= 0 ? T : F;
  case SG_RFO_STARTSWITH:
  case SG_RFO_ENDSWITH:
  case SG_RFO_CONTAINS:
  case SG_RFO_LIKE:
  case SG_RFO_MATCHES: return isnull ? U : str_match(e, n, v, len);
  case SG_RFO_IN:
  case SG_RFO_NOT_IN: {
    /* col = ANY($v): false over an empty list (even for NULL), else
     * unknown for NULL; not_in is (...) IS NOT TRUE */
    int r = F;
    if (n->nlist && isnull) r = U;
    for (size_t i = 0; !isnull && i < n->nlist && r == F; i++) {
      if (f->kind == SG_RFK_TIME) r = col_us(v) == n->lus[i] ? T : F;
      else r = len == n->llen[i] && !memcmp(v, n->list[i], len) ? T : F;
    }
    if (n->op == SG_RFO_IN) return r;
    return r == T ? F : T;
  }
  default: return U;
  }
}

static int not_true(int r) { return r == T ? F : T; }

/* The leaf: col #> path, or COALESCE(col #> path, col -> key) for a key with
 * dots. NULL for SQL NULL. */
static const sg_jb_t *leaf_of(const node_t *n, const sg_jb_t *col) {
  if (!col) return NULL;
  const sg_jb_t *l = sg_jb_path(col, (const char *const *)n->seg, n->seglen, n->nseg);
  if (!l && n->flat) l = sg_jb_get(col, n->flat, strlen(n->flat));
  return l;
}

static int eval_json(ectx_t *e, const node_t *n) {
  const sg_jb_t *col;
  int rc = sg_re_row_json(e->row, n->f->rcol, &col);
  if (rc) {
    e->err = rc;
    return F;
  }
  switch (n->form) {
  case J_COL_NULL: return col ? F : T;
  case J_COL_NOT_NULL: return col ? T : F;
  default: break;
  }
  if (n->nseg == 0) { /* no key: containment over the column */
    if (!col) return n->form == J_CONTAINS ? U : T;
    int c = sg_jb_contains(col, n->jv);
    return n->form == J_CONTAINS ? (c ? T : F) : (c ? F : T);
  }
  const sg_jb_t *l = leaf_of(n, col);
  switch (n->form) {
  case J_EXISTS: return l ? T : F;
  case J_NOT_EXISTS: return l ? F : T;
  case J_NULL: return !l || l->type == SG_JB_NULL ? T : F;     /* (L IS NULL OR L = 'null') */
  case J_NOT_NULL: return l && l->type != SG_JB_NULL ? T : F;  /* (L IS NOT NULL AND L <> 'null') */
  case J_EQ: return l ? (sg_jb_equal(l, n->jv) ? T : F) : U;
  case J_NEQ: return l && sg_jb_equal(l, n->jv) ? F : T;
  case J_CONTAINS:
  case J_NOT_CONTAINS: {
    /* col @> nested [OR col @> flat] */
    int r = col ? (sg_jb_contains(col, n->jv) ? T : F) : U;
    if (r != T && n->jv2 && col && sg_jb_contains(col, n->jv2)) r = T;
    return n->form == J_CONTAINS ? r : not_true(r);
  }
  case J_CMP: {
    /* CASE WHEN jsonb_typeof(L) = 'number' THEN numeric END <op> $n (or text) */
    if (!l || l->type != (n->num ? SG_JB_NUMBER : SG_JB_STRING)) return U;
    int c1, c2 = 0;
    if (n->num) {
      c1 = sg_jb_num_cmp(l->s, l->n, n->s, n->slen);
      if (n->s2) c2 = sg_jb_num_cmp(l->s, l->n, n->s2, n->s2len);
    } else {
      c1 = str_cmp(l->s, l->n, n->s, n->slen);
      if (n->s2) c2 = str_cmp(l->s, l->n, n->s2, n->s2len);
    }
    if (n->op == SG_RFO_BTWN) return c1 >= 0 && c2 <= 0 ? T : F;
    return cmp_ok(n->op, c1) ? T : F;
  }
  case J_STR: {
    if (!l) return U;
    int isnull;
    sg_buf_reset(&e->tmp);
    if (sg_jb_text(l, &e->tmp, &isnull)) {
      e->err = SG_ENOMEM;
      return F;
    }
    if (isnull) return U;
    return str_match(e, n, e->tmp.data ? e->tmp.data : "", e->tmp.len);
  }
  case J_IN:
  case J_NOT_IN: {
    int found = 0;
    for (uint32_t i = 0; l && !found && i < n->jv->n; i++) found = sg_jb_equal(&n->jv->v[i], l);
    return (n->form == J_IN) == found ? T : F;
  }
  default: return U;
  }
}

static int eval_content(ectx_t *e, const node_t *n) {
  /* (to_tsvector(attributes) @@ q OR to_tsvector(events) @@ q) */
  static const int cols[2] = {SG_RF_ATTRIBUTES, SG_RF_EVENTS};
  int r = F;
  for (int k = 0; k < 2 && r != T; k++) {
    const sg_jb_t *col;
    int rc = sg_re_row_json(e->row, cols[k], &col);
    if (rc) {
      e->err = rc;
      return F;
    }
    if (!col) {
      r = U;
      continue;
    }
    tdoc_t d;
    memset(&d, 0, sizeof d);
    rc = tdoc_collect(col, &d);
    if (rc) {
      tdoc_free(&d);
      e->err = rc;
      return F;
    }
    if (cq_match(n->cq, &d)) r = T;
    tdoc_free(&d);
  }
  return r;
}

static int eval(ectx_t *e, const node_t *n) {
  switch (n->kind) {
  case N_TRUE: return T;
  case N_COL: return eval_col(e, n);
  case N_JSON: return eval_json(e, n);
  case N_CONTENT: return eval_content(e, n);
  default: break;
  }
  /* AND / OR with SQL's rules for unknown */
  int r = n->op ? F : T;
  for (size_t i = 0; i < n->nkids && !e->err; i++) {
    int k = eval(e, n->kids[i]);
    if (n->op) { /* or */
      if (k == T) { r = T; break; }
      if (k == U) r = U;
    } else {
      if (k == F) { r = F; break; }
      if (k == U) r = U;
    }
  }
  if (n->neg && r != U) r = r == T ? F : T;
  return r;
}

int sg_re_match(const sg_re_t *f, sg_re_row_t *row) {
  ectx_t e = {f, row, 0, SG_BUF_INIT};
  int r = eval(&e, f->root);
  sg_buf_free(&e.tmp);
  if (e.err) return e.err;
  return r == T;
}

/* ---- the ClickHouse prefilter ---------------------------------------------------------- */

int sg_re_ch_time_us(sg_buf_t *out, const sg_ch_version_t *ver, const char *col) {
  if (ver->caps & SG_CH_DATETIME64) return sg_buf_printf(out, "toUnixTimestamp64Micro(%s)", col);
  return sg_buf_printf(out, "(toInt64(%s) * 1000000 + %s_us)", col, col);
}

int sg_re_ch_time_cmp(sg_buf_t *out, const sg_ch_version_t *ver, const char *col, const char *op, int64_t us) {
  /* Stored times lie in [SG_CH_TIME_MIN_US, SG_CH_TIME_MAX_US]: a bound
   * outside decides alone (and keeps the literals in range). */
  int lt = op[0] == '<', gt = op[0] == '>';
  if (us < SG_CH_TIME_MIN_US) return sg_buf_puts(out, gt ? "1" : "0");
  if (us > SG_CH_TIME_MAX_US) return sg_buf_puts(out, lt ? "1" : "0");
  int64_t s = us / 1000000, frac = us % 1000000;
  if (ver->caps & SG_CH_DATETIME64) {
    char iso[32];
    sg_time_format(us, iso); /* 2024-05-06T07:08:09.123456Z */
    iso[10] = ' ';
    iso[26] = '\0';
    return sg_buf_printf(out, "%s %s toDateTime64('%s', 6, 'UTC')", col, op, iso);
  }
  if (!lt && !gt) return sg_buf_printf(out, "(%s = toDateTime(%" PRId64 ") AND %s_us = %" PRId64 ")", col, s, col, frac);
  return sg_buf_printf(out, "(%s %c toDateTime(%" PRId64 ") OR (%s = toDateTime(%" PRId64 ") AND %s_us %s %" PRId64 "))",
                       col, lt ? '<' : '>', s, col, s, col, op, frac);
}

static const char *ch_col(const sg__rf_field_t *f) {
  return strcmp(f->name, "references") ? f->name : "`references`";
}

static int nullable_col(const sg__rf_field_t *f) {
  static const char *const notnull[] = {"trace_id", "span_id", "span_kind", "status_code", "span_name",
                                        "start_time", "end_time", "created_at"};
  for (size_t i = 0; i < sizeof notnull / sizeof notnull[0]; i++)
    if (!strcmp(f->name, notnull[i])) return 0;
  return 1;
}

/* A column value as a ClickHouse literal comparable with ch_colexpr(). */
static int ch_value(sg_buf_t *b, const sg__rf_field_t *f, const char *s, size_t n) {
  if (f->kind == SG_RFK_UUID) {
    int rc = sg_buf_puts(b, "toUUID(");
    rc = rc ? rc : sg_ch_quote_string(b, s, n);
    return rc ? rc : sg_buf_putc(b, ')');
  }
  return sg_ch_quote_string(b, s, n);
}

static int ch_colexpr(sg_buf_t *b, const sg__rf_field_t *f) {
  if (f->kind == SG_RFK_ENUM) return sg_buf_printf(b, "toString(%s)", ch_col(f));
  return sg_buf_puts(b, ch_col(f));
}

static int ch_needle(sg_buf_t *b, const char *col, const char *needle, int ci) {
  int rc = sg_buf_printf(b, ci ? "positionCaseInsensitiveUTF8(%s, " : "position(%s, ", col);
  rc = rc ? rc : sg_ch_quote_string(b, needle, strlen(needle));
  return rc ? rc : sg_buf_puts(b, ") > 0");
}

/* The node's needles over col: all of need, and one of anyk. */
static int ch_needles(sg_buf_t *b, const char *col, const node_t *n, int *done) {
  int rc = 0, k = 0;
  *done = n->nneed || n->nanyk;
  for (size_t i = 0; rc == 0 && i < n->nneed; i++, k++) {
    if (k) rc = sg_buf_puts(b, " AND ");
    rc = rc ? rc : ch_needle(b, col, n->need[i], n->need_ci);
  }
  if (rc == 0 && n->nanyk) {
    rc = sg_buf_puts(b, k ? " AND (" : "(");
    for (size_t i = 0; rc == 0 && i < n->nanyk; i++) {
      if (i) rc = sg_buf_puts(b, " OR ");
      rc = rc ? rc : ch_needle(b, col, n->anyk[i], 0);
    }
    rc = rc ? rc : sg_buf_putc(b, ')');
  }
  return rc;
}

/* Exact, two-valued condition for a column node; *done 0 when there is none. */
static int ch_column(sg_buf_t *b, const sg_ch_version_t *ver, const node_t *n, int *exact, int *done) {
  const sg__rf_field_t *f = n->f;
  int rc = 0, nul = nullable_col(f);
  *done = 1;
  *exact = 1;
  switch (n->op) {
  case SG_RFO_EXISTS: return sg_buf_printf(b, "isNotNull(%s)", ch_col(f));
  case SG_RFO_NOT_EXISTS: return sg_buf_printf(b, "isNull(%s)", ch_col(f));
  case SG_RFO_IS:
  case SG_RFO_EQ:
  case SG_RFO_IS_NOT:
  case SG_RFO_NEQ: {
    int pos = n->op == SG_RFO_IS || n->op == SG_RFO_EQ;
    if (n->vnull) return sg_buf_printf(b, pos ? "isNull(%s)" : "isNotNull(%s)", ch_col(f));
    if (!pos) { /* IS DISTINCT FROM */
      rc = nul ? sg_buf_printf(b, "(isNull(%s) OR ", ch_col(f)) : sg_buf_putc(b, '(');
      rc = rc ? rc : sg_buf_puts(b, "NOT ifNull(");
    } else {
      rc = sg_buf_puts(b, "ifNull(");
    }
    if (f->kind == SG_RFK_TIME) {
      rc = rc ? rc : sg_re_ch_time_cmp(b, ver, ch_col(f), "=", n->us);
    } else {
      rc = rc ? rc : ch_colexpr(b, f);
      rc = rc ? rc : sg_buf_puts(b, " = ");
      rc = rc ? rc : ch_value(b, f, n->s, n->slen);
    }
    rc = rc ? rc : sg_buf_puts(b, ", 0)");
    if (!pos) rc = rc ? rc : sg_buf_putc(b, ')');
    return rc;
  }
  case SG_RFO_GT:
  case SG_RFO_LT:
  case SG_RFO_GTE:
  case SG_RFO_LTE:
  case SG_RFO_BTWN: {
    static const char *const ops[] = {[SG_RFO_GT] = ">", [SG_RFO_LT] = "<", [SG_RFO_GTE] = ">=", [SG_RFO_LTE] = "<="};
    rc = sg_buf_puts(b, "ifNull(");
    for (int k = 0; rc == 0 && k < (n->op == SG_RFO_BTWN ? 2 : 1); k++) {
      const char *op = n->op == SG_RFO_BTWN ? (k ? "<=" : ">=") : ops[n->op];
      if (k) rc = sg_buf_puts(b, " AND ");
      if (rc) break;
      if (f->kind == SG_RFK_TIME) {
        rc = sg_re_ch_time_cmp(b, ver, ch_col(f), op, k ? n->us2 : n->us);
      } else {
        rc = sg_buf_printf(b, "%s %s ", ch_col(f), op);
        rc = rc ? rc : sg_ch_quote_string(b, k ? n->s2 : n->s, k ? n->s2len : n->slen);
      }
    }
    return rc ? rc : sg_buf_puts(b, ", 0)");
  }
  case SG_RFO_IN:
  case SG_RFO_NOT_IN:
    if (n->nlist == 0) return sg_buf_puts(b, n->op == SG_RFO_IN ? "0" : "1");
    rc = sg_buf_puts(b, n->op == SG_RFO_IN ? "ifNull(" : "NOT ifNull(");
    for (size_t i = 0; rc == 0 && i < n->nlist; i++) {
      if (i) rc = sg_buf_puts(b, " OR ");
      if (rc) break;
      if (f->kind == SG_RFK_TIME) {
        rc = sg_re_ch_time_cmp(b, ver, ch_col(f), "=", n->lus[i]);
      } else {
        rc = ch_colexpr(b, f);
        rc = rc ? rc : sg_buf_puts(b, " = ");
        rc = rc ? rc : ch_value(b, f, n->list[i], n->llen[i]);
      }
    }
    return rc ? rc : sg_buf_puts(b, ", 0)");
  default: break;
  }
  /* string operators: a literal the value must contain */
  *exact = 0;
  return ch_needles(b, ch_col(f), n, done);
}

/* Which columns the prefilter may test (1 << SG_RF_*), and whether it had
 * to leave a condition out for testing another one. */
typedef struct {
  const sg_ch_version_t *ver;
  uint32_t cols;
  int left_out;
} pf_t;

static uint32_t col_bit(int rcol) { return rcol >= 0 && rcol < 32 ? 1u << rcol : 0; }

/* Appends a necessary condition for node n in a positive context (not
 * under NOT). *done 0: none (TRUE). *exact: the condition is n itself. */
static int ch_node(sg_buf_t *b, pf_t *pf, const node_t *n, int *exact, int *done) {
  const sg_ch_version_t *ver = pf->ver;
  int rc = 0;
  *done = 0;
  *exact = 0;
  uint32_t need = n->kind == N_CONTENT ? col_bit(SG_RF_ATTRIBUTES) | col_bit(SG_RF_EVENTS)
                  : n->kind == N_COL || n->kind == N_JSON ? col_bit(n->f->rcol) : 0;
  if (need & ~pf->cols) { /* a column the table at hand lacks: no narrowing here */
    pf->left_out = 1;
    return 0;
  }
  switch (n->kind) {
  case N_TRUE:
    *exact = 1;
    return 0;
  case N_COL: return ch_column(b, ver, n, exact, done);
  case N_JSON: return ch_needles(b, ch_col(n->f), n, done);
  case N_CONTENT: {
    /* one of the alternatives; in it every positive word, in attributes or events */
    sg_buf_t alt = SG_BUF_INIT;
    int ok = n->cq->n > 0;
    for (size_t g = 0; ok && rc == 0 && g < n->cq->n; g++) {
      const cq_group_t *gr = &n->cq->groups[g];
      int words = 0;
      rc = sg_buf_puts(&alt, g ? " OR (1" : "((1");
      for (size_t i = 0; rc == 0 && i < gr->n; i++) {
        if (gr->items[i].neg) continue;
        for (size_t k = 0; rc == 0 && k < gr->items[i].ntok; k++) {
          char *nd = ci_needle(gr->items[i].tok[k], strlen(gr->items[i].tok[k]), 1);
          if (!nd) continue;
          rc = sg_buf_puts(&alt, " AND (");
          rc = rc ? rc : ch_needle(&alt, "attributes", nd, 1);
          rc = rc ? rc : sg_buf_puts(&alt, " OR ");
          rc = rc ? rc : ch_needle(&alt, "events", nd, 1);
          rc = rc ? rc : sg_buf_putc(&alt, ')');
          words++;
          free(nd);
        }
      }
      if (!words) ok = 0; /* this alternative needs no word: no narrowing at all */
      rc = rc ? rc : sg_buf_putc(&alt, ')');
    }
    if (rc == 0 && ok) {
      rc = sg_buf_append(b, alt.data, alt.len);
      rc = rc ? rc : sg_buf_putc(b, ')');
      *done = 1;
    }
    if (rc == 0 && n->cq->n == 0) { /* no words: matches nothing */
      rc = sg_buf_puts(b, "0");
      *done = 1;
      *exact = 1;
    }
    sg_buf_free(&alt);
    return rc;
  }
  default: break;
  }
  /* groups: AND / OR of the children; under NOT only exact children help */
  sg_buf_t part = SG_BUF_INIT;
  int all_exact = 1, all_done = 1, any_true = 0, k = 0;
  for (size_t i = 0; rc == 0 && i < n->nkids; i++) {
    int ex, dn;
    size_t at = part.len;
    if (k) rc = sg_buf_puts(&part, n->op ? " OR " : " AND ");
    rc = rc ? rc : sg_buf_putc(&part, '(');
    rc = rc ? rc : ch_node(&part, pf, n->kids[i], &ex, &dn);
    rc = rc ? rc : sg_buf_putc(&part, ')');
    if (rc) break;
    if (!ex) all_exact = 0;
    if (!dn) { /* no condition: TRUE when exact, unknown narrowing otherwise */
      part.len = at;
      if (part.data) part.data[at] = '\0';
      all_done = 0;
      if (ex) any_true = 1;
      continue;
    }
    k++;
  }
  if (rc == 0) {
    if (n->neg) {
      /* NOT of an exact expression is necessary, but no longer exact: an
       * unknown child makes PostgreSQL's NOT unknown, ClickHouse's true */
      if (all_exact && all_done && k) {
        rc = sg_buf_puts(b, "NOT (");
        rc = rc ? rc : sg_buf_append(b, part.data, part.len);
        rc = rc ? rc : sg_buf_putc(b, ')');
        *done = 1;
      }
    } else if (n->op) { /* OR narrows only when every alternative does */
      if (all_done && k) {
        rc = sg_buf_append(b, part.data, part.len);
        *done = 1;
      }
      *exact = all_exact && (all_done || any_true);
    } else {
      if (k) {
        rc = sg_buf_append(b, part.data, part.len);
        *done = 1;
      }
      *exact = all_exact;
    }
  }
  sg_buf_free(&part);
  return rc;
}

int sg_re_ch_prefilter_on(const sg_re_t *f, const sg_ch_version_t *ver, uint32_t cols, sg_buf_t *out, int *exact,
                          int *complete) {
  int ex = 0, done = 0;
  size_t at = out->len;
  pf_t pf = {ver, cols, 0};
  int rc = ch_node(out, &pf, f->root, &ex, &done);
  if (rc == 0 && !done) {
    out->len = at;
    if (out->data) out->data[at] = '\0';
    rc = sg_buf_putc(out, '1');
  }
  if (exact) *exact = ex;
  if (complete) *complete = !pf.left_out;
  return rc;
}

int sg_re_ch_prefilter(const sg_re_t *f, const sg_ch_version_t *ver, sg_buf_t *out, int *exact) {
  return sg_re_ch_prefilter_on(f, ver, UINT32_MAX, out, exact, NULL);
}
