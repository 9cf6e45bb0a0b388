/* server.h - the gateway process: workers, listeners, signals. */
#ifndef SG_SERVER_H
#define SG_SERVER_H

#include "config.h"

/* Runs the gateway until SIGTERM/SIGINT. Returns 0 after a graceful
 * shutdown, non-zero when start-up failed or in-flight work did not finish
 * within shutdown_timeout_ms. */
int sg_server_run(const sg_config_t *cfg);

#endif
