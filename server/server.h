/*
 * server.h -- the inkwire process: the public face of server/ (used by main.c).
 */
#ifndef INKWIRE_SERVER_H
#define INKWIRE_SERVER_H

#include "server/config.h"

#define INKWIRE_VERSION "0.1.0"

/*
 * srv_run -- start inkwire with configuration *cfg and serve until SIGINT or
 * SIGTERM. Opens the database (migrations included) and the listening socket
 * first: any failure there prints one clear line to stderr and returns 1.
 * Returns 0 after a clean shutdown.
 */
int srv_run(const srv_config *cfg);

/*
 * srv_main -- the node: srv_run() itself with INKWIRE_WORKERS=1; with more,
 * forks that many worker processes sharing the port and supervises them
 * (workers.c) until SIGINT/SIGTERM. Returns the exit code (0 after a clean
 * shutdown; 1 when the node could not start).
 */
int srv_main(const srv_config *cfg);

#endif /* INKWIRE_SERVER_H */
