/* json_load.c - parsing JSON from requests with a memory bound. See
 * json_load.h for the cost model. */
#include "json_load.h"

#include <stdint.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "err.h"

/* What jansson 2.14 allocates per construct (malloc's usable size + its
 * 8-byte header, measured): json_object_t with its first 8 hash buckets;
 * one pair (with a short key) plus its share of the buckets, which double
 * as members are added; json_array_t with its first 8 slots; a slot, with
 * the doubling; a json_string_t and its value; an integer or a real. */
#define COST_OBJECT 224
#define COST_MEMBER 112
#define COST_ARRAY 128
#define COST_ELEMENT 16
#define COST_STRING 80
#define COST_NUMBER 32

/* jansson's JSON_PARSER_MAX_DEPTH: it stops with an error on entering a
 * deeper container, having built only the enclosing ones, so the estimate
 * stops there too (and the caller gets jansson's error, not SG_ETOOBIG). */
#define MAX_DEPTH 2048

size_t sg_json_tree_budget(size_t n) {
  if (n > (SG_JSON_TREE_MAX - SG_JSON_TREE_SLACK) / SG_JSON_TREE_RATIO) return SG_JSON_TREE_MAX;
  return SG_JSON_TREE_RATIO * n + SG_JSON_TREE_SLACK;
}

/* Index of the quote closing the string whose opening quote is at i (n
 * when unterminated). A quote is escaped when an odd number of
 * backslashes precede it; each run of backslashes is counted once, so the
 * scan stays linear. */
static size_t string_end(const char *p, size_t n, size_t i) {
  size_t j = i + 1;
  for (;;) {
    const char *q = memchr(p + j, '"', n - j);
    if (q == NULL) return n;
    size_t k = (size_t)(q - p), b = k;
    while (b > i + 1 && p[b - 1] == '\\') b--;
    if (((k - b) & 1) == 0) return k;
    j = k + 1;
  }
}

/* Bytes that end a number or a literal. */
static const uint8_t delim[256] = {
    [' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1, [','] = 1, [':'] = 1,
    ['['] = 1, [']'] = 1, ['{'] = 1, ['}'] = 1, ['"'] = 1,
};

size_t sg_json_tree_cost(const char *p, size_t n) {
  /* One bit per open container: 1 for an object. */
  uint8_t is_obj[MAX_DEPTH / 8] = {0};
  size_t depth = 0, cost = 0;
  int expect_key = 0; /* after '{' or an object's ',' */
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)p[i];
    int in_obj = depth > 0 && (is_obj[(depth - 1) / 8] >> ((depth - 1) % 8) & 1);
    /* A value inside an array also takes a slot. */
    size_t slot = depth > 0 && !in_obj ? COST_ELEMENT : 0;
    switch (ch) {
    case ' ': case '\t': case '\n': case '\r': case ':':
      break;
    case ',':
      expect_key = in_obj;
      break;
    case '{': case '[': {
      if (depth == MAX_DEPTH) return cost;
      cost += (ch == '{' ? COST_OBJECT : COST_ARRAY) + slot;
      uint8_t bit = (uint8_t)(1u << (depth % 8));
      if (ch == '{') is_obj[depth / 8] |= bit;
      else is_obj[depth / 8] &= (uint8_t)~bit;
      depth++;
      expect_key = ch == '{';
      break;
    }
    case '}': case ']':
      if (depth > 0) depth--;
      expect_key = 0;
      break;
    case '"': {
      size_t end = string_end(p, n, i);
      /* The text's length bounds the decoded one (escapes only shrink). */
      cost += (expect_key ? COST_MEMBER : COST_STRING + slot) + (end - i - 1);
      expect_key = 0;
      i = end;
      break;
    }
    default:
      if (ch == '-' || (ch >= '0' && ch <= '9')) cost += COST_NUMBER + slot;
      else cost += slot; /* true, false, null: shared, only the slot */
      while (i + 1 < n && !delim[(unsigned char)p[i + 1]]) i++;
      expect_key = 0;
      break;
    }
  }
  return cost;
}

int sg_json_load_bounded(const char *p, size_t n, size_t flags, size_t max_bytes, json_t **doc,
                         json_error_t *je, size_t *cost) {
  size_t c = sg_json_tree_cost(p, n);
  *doc = NULL;
  if (cost) *cost = c;
  if (c > max_bytes) return SG_ETOOBIG;
  *doc = json_loadb(p, n, flags, je);
  if (*doc == NULL) return json_error_code(je) == json_error_out_of_memory ? SG_ENOMEM : SG_EPARSE;
  return 0;
}

void sg_json_release(json_t *doc, size_t cost) {
  json_decref(doc);
#ifdef __GLIBC__
  if (cost >= SG_JSON_TRIM_ABOVE) malloc_trim(0);
#else
  (void)cost;
#endif
}
