#include "listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"

static int fail(sg_buf_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(sg_buf_t *err, int code, const char *fmt, ...) {
  if (err != NULL) {
    va_list ap;
    va_start(ap, fmt);
    (void)sg_buf_vprintf(err, fmt, ap);
    va_end(ap);
  }
  return code;
}

int sg_listen_parse(const char *hostport, struct sockaddr_storage *addr, socklen_t *addrlen,
                    sg_buf_t *err) {
  if (hostport == NULL || *hostport == '\0')
    return fail(err, SG_EINVAL,
                "listen: empty address (expected host:port, e.g. '127.0.0.1:4318')");

  char host[256];
  const char *port;
  int bracketed = 0;
  if (hostport[0] == '[') {
    const char *close = strchr(hostport, ']');
    if (close == NULL)
      return fail(err, SG_EINVAL, "listen: missing ']' after IPv6 address in '%s'", hostport);
    if (close[1] != ':')
      return fail(err, SG_EINVAL, "listen: missing ':port' after ']' in '%s'", hostport);
    size_t n = (size_t)(close - hostport - 1);
    if (n == 0 || n >= sizeof host)
      return fail(err, SG_EINVAL, "listen: bad IPv6 address in '%s'", hostport);
    memcpy(host, hostport + 1, n);
    host[n] = '\0';
    port = close + 2;
    bracketed = 1;
  } else {
    const char *colon = strrchr(hostport, ':');
    if (colon == NULL)
      return fail(err, SG_EINVAL, "listen: missing ':port' in '%s' (expected host:port)",
                  hostport);
    if (memchr(hostport, ':', (size_t)(colon - hostport)) != NULL)
      return fail(err, SG_EINVAL,
                  "listen: IPv6 address must be in brackets, e.g. '[::1]:4318', in '%s'",
                  hostport);
    size_t n = (size_t)(colon - hostport);
    if (n >= sizeof host)
      return fail(err, SG_EINVAL, "listen: host name too long in '%s'", hostport);
    memcpy(host, hostport, n);
    host[n] = '\0';
    port = colon + 1;
  }

  unsigned long p = 0;
  size_t digits = strspn(port, "0123456789");
  if (digits == 0 || port[digits] != '\0' || digits > 5 || (p = strtoul(port, NULL, 10)) < 1 ||
      p > 65535)
    return fail(err, SG_EINVAL, "listen: port must be 1..65535 in '%s'", hostport);

  memset(addr, 0, sizeof *addr);
  if (!bracketed && (host[0] == '\0' || strcmp(host, "*") == 0)) {
    struct sockaddr_in *sin = (struct sockaddr_in *)addr;
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(INADDR_ANY);
    sin->sin_port = htons((uint16_t)p);
    *addrlen = sizeof *sin;
    return 0;
  }

  /* Digits and dots are meant as an IPv4 address: never ask DNS about a
   * typo like 999.1.1.1. */
  int dotted = host[strspn(host, "0123456789.")] == '\0';
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = bracketed ? AF_INET6 : dotted ? AF_INET : AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV | (bracketed || dotted ? AI_NUMERICHOST : 0);
  int rc = getaddrinfo(host, port, &hints, &res);
  if (rc != 0) {
    if (bracketed)
      return fail(err, SG_EINVAL, "listen: '%s' is not an IPv6 address in '%s'", host, hostport);
    if (dotted)
      return fail(err, SG_EINVAL, "listen: '%s' is not an IPv4 address in '%s'", host, hostport);
    return fail(err, SG_EINVAL, "listen: cannot resolve host '%s' in '%s': %s", host, hostport,
                rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
  }
  if (res == NULL || res->ai_addrlen > sizeof *addr) {
    if (res) freeaddrinfo(res);
    return fail(err, SG_EINVAL, "listen: no usable address for '%s'", hostport);
  }
  memcpy(addr, res->ai_addr, res->ai_addrlen);
  *addrlen = (socklen_t)res->ai_addrlen;
  freeaddrinfo(res);
  return 0;
}

char *sg_listen_addr_str(const struct sockaddr *addr, char *out, size_t outlen) {
  char ip[INET6_ADDRSTRLEN] = "?";
  unsigned port = 0;
  if (addr->sa_family == AF_INET) {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)addr;
    inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof ip);
    port = ntohs(sin->sin_port);
    snprintf(out, outlen, "%s:%u", ip, port);
  } else if (addr->sa_family == AF_INET6) {
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)addr;
    inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof ip);
    port = ntohs(sin6->sin6_port);
    snprintf(out, outlen, "[%s]:%u", ip, port);
  } else {
    snprintf(out, outlen, "(family %d)", addr->sa_family);
  }
  return out;
}

int sg_listen_tcp(const char *hostport, int backlog, uv_os_sock_t *fd, sg_buf_t *err) {
  struct sockaddr_storage ss;
  socklen_t sslen = 0;
  int rc = sg_listen_parse(hostport, &ss, &sslen, err);
  if (rc != 0) return rc;

  char where[80];
  sg_listen_addr_str((struct sockaddr *)&ss, where, sizeof where);

  int s = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
  if (s < 0)
    return fail(err, SG_EIO, "listen: socket() for %s: %s", where, strerror(errno));

  /* Both options must be set before bind(): SO_REUSEADDR so a restart does
   * not wait for TIME_WAIT sockets, SO_REUSEPORT so every worker can bind
   * its own socket to the same address. An [::] socket keeps the system's
   * IPV6_V6ONLY default (dual-stack on Linux). */
  int one = 1;
  if (setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    int e = errno;
    close(s);
    return fail(err, SG_EIO, "listen: setsockopt(SO_REUSEADDR/SO_REUSEPORT) for %s: %s", where,
                strerror(e));
  }

  if (bind(s, (struct sockaddr *)&ss, sslen) != 0) {
    int e = errno;
    close(s);
    switch (e) {
    case EADDRINUSE:
      return fail(err, SG_EBUSY,
                  "listen: %s is already in use (by a socket without SO_REUSEPORT or of another "
                  "user) for '%s'",
                  where, hostport);
    case EACCES:
      return fail(err, SG_EIO,
                  "listen: permission denied binding %s for '%s' (ports below 1024 need "
                  "privileges)",
                  where, hostport);
    case EADDRNOTAVAIL:
      return fail(err, SG_EIO, "listen: %s is not an address of this host for '%s'", where,
                  hostport);
    default:
      return fail(err, SG_EIO, "listen: bind %s for '%s': %s", where, hostport, strerror(e));
    }
  }

  if (listen(s, backlog > 0 ? backlog : SOMAXCONN) != 0) {
    int e = errno;
    close(s);
    if (e == EADDRINUSE)
      return fail(err, SG_EBUSY, "listen: %s is already in use for '%s'", where, hostport);
    return fail(err, SG_EIO, "listen: listen() on %s for '%s': %s", where, hostport, strerror(e));
  }

  *fd = s;
  return 0;
}
