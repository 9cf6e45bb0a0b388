/* listen.h - listening TCP sockets for "host:port" strings.
 *
 * Stands alone: no server state, no logging. The socket is created here
 * rather than by libuv because libuv 1.44 cannot set SO_REUSEPORT, and the
 * option only has effect when it is set before bind(). Each worker thread
 * calls sg_listen_tcp() for the same address and gets its own socket; the
 * kernel spreads new connections over them (the nginx reuseport model).
 * Hand the result to uv_tcp_open() (sg_http_server_new() does that).
 */
#ifndef SG_LISTEN_H
#define SG_LISTEN_H

#include <sys/socket.h>
#include <uv.h>

#include "buf.h"

/* Parse "host:port" into a socket address. Accepted forms:
 *   127.0.0.1:4318   localhost:4318   [::1]:4318   [::]:4318
 *   *:4318 and :4318 (every IPv4 address)
 * The port is decimal, 1..65535. A name is resolved with getaddrinfo() (may
 * block: call at start-up); the first address returned is used.
 * Returns 0, or SG_EINVAL with a message naming the problem and the input
 * appended to err (if err is not NULL), e.g.
 *   "listen: port must be 1..65535 in 'x:99999'". */
int sg_listen_parse(const char *hostport, struct sockaddr_storage *addr, socklen_t *addrlen,
                    sg_buf_t *err);

/* Create a non-blocking, close-on-exec TCP socket for hostport with
 * SO_REUSEADDR and SO_REUSEPORT set, bind it and listen(backlog; <= 0 means
 * SOMAXCONN). On success stores the descriptor in *fd (the caller owns it)
 * and returns 0. On failure returns SG_EINVAL (bad address string),
 * SG_EBUSY (address in use by a socket without SO_REUSEPORT, or owned by
 * another user) or SG_EIO (any other socket error), appends a one-line
 * message to err and leaves *fd untouched. */
int sg_listen_tcp(const char *hostport, int backlog, uv_os_sock_t *fd, sg_buf_t *err);

/* Format addr as "1.2.3.4:80" or "[::1]:80" into out (at least 64 bytes).
 * Returns out. */
char *sg_listen_addr_str(const struct sockaddr *addr, char *out, size_t outlen);

#endif
