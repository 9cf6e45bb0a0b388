/* route.c - endpoint table look-up (see route.h). */
#include "route.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

int sg_route_path_match(const char *pat, const char *path, const char **param, size_t *param_len) {
  const char *pv = NULL;
  size_t pn = 0;
  while (*pat) {
    if (*pat == '{') {
      const char *close = strchr(pat, '}');
      if (close == NULL) return 0; /* a malformed pattern matches nothing */
      size_t n = strcspn(path, "/");
      if (n == 0 || pv != NULL) return 0; /* one non-empty segment; one {name} */
      pv = path;
      pn = n;
      path += n;
      pat = close + 1;
      continue;
    }
    if (*pat++ != *path++) return 0;
  }
  if (*path) return 0;
  if (param) *param = pv;
  if (param_len) *param_len = pn;
  return 1;
}

void sg_route_find(const sg_route_t *rows, size_t n, enum http_method method, const char *path,
                   sg_route_match_t *out) {
  memset(out, 0, sizeof *out);
  unsigned long long bit = (unsigned)method < 64 ? SG_M(method) : 0;
  for (size_t i = 0; i < n; i++) {
    const char *pv;
    size_t pn;
    if (!sg_route_path_match(rows[i].path, path, &pv, &pn)) continue;
    out->allow |= rows[i].methods;
    if (out->path_route == NULL) {
      out->path_route = &rows[i];
      out->param = pv;
      out->param_len = pn;
    }
    if (out->route == NULL && (rows[i].methods & bit)) {
      out->route = &rows[i];
      out->param = pv;
      out->param_len = pn;
    }
  }
}

/* Appends one method's name; 0 when it does not fit whole. */
static int put_method(char *out, size_t cap, size_t *len, unsigned m) {
  int w = snprintf(out + *len, cap - *len, "%s%s", *len ? ", " : "",
                   http_method_str((enum http_method)m));
  if (w < 0 || (size_t)w >= cap - *len) {
    out[*len] = '\0';
    return 0;
  }
  *len += (size_t)w;
  return 1;
}

void sg_route_allow_text(unsigned long long methods, char *out, size_t cap) {
  static const enum http_method first[] = {HTTP_GET, HTTP_HEAD, HTTP_POST,
                                           HTTP_PUT, HTTP_PATCH, HTTP_DELETE};
  size_t len = 0;
  if (cap == 0) return;
  out[0] = '\0';
  for (size_t i = 0; i < sizeof first / sizeof first[0]; i++)
    if (methods & SG_M(first[i])) {
      methods &= ~SG_M(first[i]);
      if (!put_method(out, cap, &len, first[i])) return;
    }
  for (unsigned m = 0; m < 64; m++)
    if ((methods & SG_M(m)) && !put_method(out, cap, &len, m)) return;
}

void sg_route_media_type(const char *h, char *out, size_t cap) {
  size_t n = 0;
  if (cap == 0) return;
  if (h)
    for (; *h && *h != ';' && n + 1 < cap; h++)
      if (!isspace((unsigned char)*h)) out[n++] = (char)tolower((unsigned char)*h);
  out[n] = '\0';
}

int sg_route_media_ok(const char *list, const char *media) {
  if (list == NULL) return 1;
  size_t n = strlen(media);
  while (*list) {
    while (*list == ' ' || *list == ',') list++;
    size_t k = strcspn(list, ", ");
    if (k && k == n && !strncmp(list, media, n)) return 1;
    list += k;
  }
  return 0;
}
