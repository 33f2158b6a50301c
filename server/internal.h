/*
 * Types shared by the server's files: the server, its workers and their
 * connections. Not for use outside server/.
 */
#ifndef STASHD_SERVER_INTERNAL_H
#define STASHD_SERVER_INTERNAL_H

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>

#include "handler/handler.h"
#include "server/server.h"

struct conn;
struct server;

/* Sets one pass holds before it runs them, at most. */
#define PASS_MAX   64
/* Bytes of keys and values it copies, at most; a bigger set runs alone. */
#define PASS_ARENA (256 * 1024)

/* A set taken for the pass: its connection, its reply's hole, itself. */
struct pass_set {
    struct conn       *c;
    struct reply_hole  hole;
    struct hset        hs;      /* key and val point into the arena */
    uint32_t           now;
};

/*
 * The plain sets a worker's loop pass took from its connections (struct
 * hdefer), run as one group before the loop polls again, or sooner when a
 * request must see them: a persistent backend then commits a pass's sets
 * together instead of one commit per set. Thread only.
 */
struct pass {
    struct hdefer      d;       /* first: the handler's view */
    struct worker     *w;
    struct pass_set    set[PASS_MAX];
    struct store_set   ss[PASS_MAX];
    size_t             n;
    uint64_t           bloom;   /* a bit per taken key's hash */
    char              *arena;
    size_t             used;
    bool               running; /* sets run now: take and settle refuse */
    struct conn       *kick;    /* connections whose holes were filled */
    struct reply       out;     /* where a filled hole's bytes are made */
};

struct worker {
    struct server     *srv;     /* ro */
    unsigned           id;      /* ro */
    pthread_t          tid;
    struct ev_loop    *loop;    /* ro: owned by this worker's thread */
    ev_async           wake;    /* new fds, completions, stop */
    ev_prepare         prepare; /* store idle; yield after a long busy run */
    ev_check           woke;    /* notes the polls that slept */
    ev_idle            awake;   /* active while turns is not empty */
    struct conn       *turns;   /* thread only: connections that used up
                                 * their turn with requests left */
    bool               busy;    /* thread only: this pass read requests */
    ev_tstamp          awake_since; /* thread only: end of the last sleep
                                     * or yield */
    ev_tstamp          polled_at;   /* thread only: when this poll began */
    pthread_mutex_t    lock;    /* guards the next four members */
    int               *newfds;
    size_t             nnew;
    size_t             capnew;
    struct conn       *done;    /* conns with completed durable writes */
    bool               stopping;
    struct store_thr  *thr;     /* private to the thread */
    struct hstats      stats;   /* written by the thread only */
    struct hctx        cx;      /* private to the thread */
    struct conn       *conns;   /* live connections */
    char              *rscratch; /* shared read buffer: most reads land
                                  * here and leave nothing behind */
    char              *vscratch; /* small values a copying backend
                                  * returns, for the reply queues */
    struct conn       *cur;     /* thread only: the connection running */
    struct pass        pass;    /* thread only */
};

struct server {
    const struct server_cfg *cfg;
    const struct store_ops  *ops;
    struct store            *store;
    struct hsettings         set;
    struct hserver           hs;
    struct worker           *workers;
    unsigned                 nworkers;
    unsigned                 next;      /* round robin, main thread only */
    struct ev_loop          *loop;      /* main thread's */
    int                      lfd;
    uint32_t                 conn_limit;   /* ro once serving: -c, or less
                                            * when descriptors are short */
    uint32_t                 reserved_fds; /* ro once serving: not for
                                            * clients */
    ev_io                    accept_io;
    ev_timer                 accept_retry; /* accepting paused: no fds */
    ev_timer                 trim;         /* freed memory back to the OS */
    ev_tstamp                paused_at;    /* main thread only */
    ev_signal                sigterm;
    ev_signal                sigint;
    ev_async                 stop_req;  /* a shutdown command, any thread */
    _Atomic uint64_t         curr_conns;
    _Atomic uint64_t         total_conns;
    _Atomic uint64_t         rejected_conns;
    _Atomic uint64_t         listen_disabled_num;
    _Atomic uint64_t         listen_disabled_us;
    _Atomic bool             accepting;
};

/* Stops the server as SIGTERM does, from any thread (shutdown command). */
void server_request_stop(struct server *s);

/* Starts worker w's thread; 0 or -1. */
int worker_start(struct worker *w);

/* Hands an accepted, non-blocking fd to w (any thread). */
void worker_give(struct worker *w, int fd);

/* Asks w to finish its connections and exit its loop (any thread). */
void worker_stop(struct worker *w);

#endif
