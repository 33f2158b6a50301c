/*
 * The network server: a main thread that accepts and hands connections to
 * worker threads round robin, each worker running its own libev loop and
 * owning its connections outright (no lock on the request path). It owns
 * sockets, buffers and signals; command meaning belongs to handler/.
 */
#ifndef STASHD_SERVER_H
#define STASHD_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "storage/storage.h"

struct server_cfg {
    const char             *listen;      /* address for TCP */
    uint16_t                port;        /* TCP port */
    const char             *unix_path;   /* non-NULL: unix socket, no TCP */
    uint32_t                maxconns;
    uint32_t                threads;
    int                     verbose;
    const char             *pidfile;     /* NULL: none */
    bool                    shutdown;    /* -A: the shutdown command */
    const struct store_ops *ops;
    struct store_cfg        store;       /* handed to ops->open */
};

/*
 * Opens the store, listens, serves until SIGTERM/SIGINT (or, with
 * cfg->shutdown, a client's shutdown command), then finishes
 * in-flight work, closes the store and returns the exit status (0 on a clean
 * stop, 1 when the store or the listener could not be set up).
 */
int server_run(const struct server_cfg *cfg);

#endif
