/* route.h - endpoint tables: a row per (methods, path pattern), looked up
 * for a request, with what 404 and 405 answers need.
 *
 * A table is an array of sg_route_t, searched in order (Redis's command
 * table, h2o's path handlers). A path pattern is literal text and at most
 * one `{name}` segment, which matches one non-empty path segment (no '/');
 * its text is handed to the handler. Several rows may share a path (one
 * per method group: `GET /v1/traces/{id}` reads, `DELETE` on the same path
 * deletes), and several paths may share a handler (Agenta's aliases). The
 * router (router.c) owns the gateway's table and the dispatch; this file
 * knows nothing of workers or endpoints, so tests can build tables of
 * their own.
 */
#ifndef SG_ROUTE_H
#define SG_ROUTE_H

#include <stddef.h>

#include "http.h"
#include "principal.h"

/* Method masks: one bit per http-parser method. */
#define SG_M(method) (1ull << (method))
#define SG_M_GET SG_M(HTTP_GET)
#define SG_M_HEAD SG_M(HTTP_HEAD)
#define SG_M_POST SG_M(HTTP_POST)
#define SG_M_PUT SG_M(HTTP_PUT)
#define SG_M_PATCH SG_M(HTTP_PATCH)
#define SG_M_DELETE SG_M(HTTP_DELETE)

struct sg_worker_s;
struct sg_route_s;

/* What a handler is called with; valid during the call only (copy what is
 * needed later). The handler answers req exactly once, now or later. */
typedef struct {
  struct sg_worker_s *w;         /* the worker whose loop runs the request */
  sg_http_req_t *req;
  const struct sg_route_s *route;
  const sg_principal_t *who;     /* the key's principal; NULL for routes without a key */
  const char *param;             /* the {name} segment, in req->path (not NUL-terminated) */
  size_t param_len;              /* 0 without one */
} sg_route_call_t;

typedef void (*sg_route_handler_fn)(const sg_route_call_t *call);

/* An error answer in the endpoint's own format (e.g. OTLP's
 * google.rpc.Status); extra_headers as for sg_http_respond(). */
typedef void (*sg_route_error_fn)(sg_http_req_t *req, int status, const char *msg,
                                  const char *extra_headers);

typedef struct sg_route_s {
  unsigned long long methods;  /* SG_M_* bits */
  const char *path;            /* pattern: "/v1/spans", "/v1/traces/{trace_id}" */
  const char *label;           /* the metrics route label */
  int key;                     /* 1: authenticated first; the handler gets the principal */
  const char *media;           /* accepted Content-Types, comma-separated, checked (415) before
                                  the key; NULL: any */
  sg_route_handler_fn handler;
  sg_route_error_fn error;     /* NULL: sg_http_respond_error ({"error": ...}) */
} sg_route_t;

typedef struct {
  const sg_route_t *route;     /* the row that serves the request; NULL: 404 or 405 */
  const sg_route_t *path_route; /* the first row whose path matches, whatever the method; NULL: 404 */
  unsigned long long allow;    /* the methods of every row whose path matches (405's Allow) */
  const char *param;           /* route's (else path_route's) {name} segment, in path */
  size_t param_len;
} sg_route_match_t;

/* Looks up method + path (no query) in rows[0..n). */
void sg_route_find(const sg_route_t *rows, size_t n, enum http_method method, const char *path,
                   sg_route_match_t *out);

/* 1 when path matches pattern; the {name} segment (if any) in *param,
 * *param_len (both may be NULL). */
int sg_route_path_match(const char *pattern, const char *path, const char **param,
                        size_t *param_len);

/* The Allow header's value for methods: "GET, HEAD", "POST, PUT, DELETE"
 * (GET HEAD POST PUT PATCH DELETE, then any other method in http-parser's
 * order). Truncated to cap; "" for none. */
void sg_route_allow_text(unsigned long long methods, char *out, size_t cap);

/* The media type of a Content-Type value, lower-cased, without parameters
 * or blanks ("Application/JSON; charset=utf-8" -> "application/json"); ""
 * for NULL. Truncated to cap. */
void sg_route_media_type(const char *content_type, char *out, size_t cap);

/* 1 when media (as sg_route_media_type gives it) is one of list's
 * comma-separated types, or list is NULL. */
int sg_route_media_ok(const char *list, const char *media);

#endif
