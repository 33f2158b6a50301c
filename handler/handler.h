/*
 * Command semantics, once for every protocol: a decoded request goes in,
 * storage operations and reply bytes come out. The handler owns memcached's
 * rules (quiet variants, CAS, TTLs, incr/decr, append/prepend, touch, flush,
 * stats) and never touches a socket or an event loop, so it is unit-tested
 * on the memory backend alone.
 */
#ifndef STASHD_HANDLER_H
#define STASHD_HANDLER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "handler/reply.h"
#include "protocol/binary.h"
#include "storage/storage.h"

#define STASHD_VERSION "1.6.18-stashd-0.1.0"

/* TTLs up to this many seconds are relative, larger ones absolute. */
#define HANDLER_MAX_RELATIVE (60 * 60 * 24 * 30)

/*
 * Counters of one worker thread. Only the owner writes; the stats command
 * reads every worker's, so each field is a relaxed atomic (plain moves on
 * the hot path, no lock).
 */
#define HANDLER_STATS(X) \
    X(cmd_get) X(cmd_set) X(cmd_flush) X(cmd_touch) X(cmd_meta) \
    X(get_hits) X(get_misses) X(delete_misses) X(delete_hits) \
    X(incr_misses) X(incr_hits) X(decr_misses) X(decr_hits) \
    X(cas_misses) X(cas_hits) X(cas_badval) X(touch_hits) X(touch_misses) \
    X(store_too_large) X(store_no_memory) X(auth_cmds) X(auth_errors) \
    X(bytes_read) X(bytes_written) X(conn_yields)

#define HANDLER_STAT_FIELD(name) _Atomic uint64_t name;
struct hstats {
    HANDLER_STATS(HANDLER_STAT_FIELD)
};
#undef HANDLER_STAT_FIELD

/* Adds n to one counter of the calling thread's own hstats. */
#define HSTAT_ADD(st, field, n) \
    atomic_store_explicit(&(st)->field, \
        atomic_load_explicit(&(st)->field, memory_order_relaxed) + (n), \
        memory_order_relaxed)
#define HSTAT_INC(st, field) HSTAT_ADD(st, field, 1)

/* What the server knows that the stats command reports. */
struct hconn_stats {
    uint64_t curr_connections;
    uint64_t total_connections;
    uint64_t rejected_connections;
    uint64_t connection_structures;
    uint64_t reserved_fds;              /* descriptors not for clients */
    uint64_t listen_disabled_num;       /* accept pauses, out of fds */
    uint64_t time_in_listen_disabled_us;
    bool     accepting;
};

/* Process-wide settings, read-only once the server runs. */
struct hsettings {
    const char *backend;
    uint64_t    maxbytes;
    uint32_t    maxconns;
    uint32_t    tcpport;
    const char *inter;
    const char *domain_socket;
    double      growth_factor;
    uint32_t    chunk_size;
    uint32_t    num_threads;
    uint32_t    item_size_max;
    bool        evictions;
    bool        shutdown;      /* -A: the shutdown command may stop us */
    uint32_t    started;       /* unix time the process started */
    long        pid;
    _Atomic int verbosity;     /* rw: the verbosity command sets it */
    /* rw, under reset_lock: the backend's counters at the last "stats
     * reset", subtracted from what it reports since. */
    pthread_mutex_t    reset_lock;
    struct store_stats reset_base;
};

/* Callbacks into the server for figures only it has. */
struct hserver {
    void  *arg;
    /* Adds every worker's counters into *out. */
    void (*sum_stats)(void *arg, struct hstats *out);
    /* Zeroes every worker's counters (stats reset). */
    void (*reset_stats)(void *arg);
    /* Fills connection figures. */
    void (*conn_stats)(void *arg, struct hconn_stats *out);
    /* Emits the "stats conns" lines; may be NULL. */
    void (*conns)(void *arg, void (*emit)(void *, const char *,
                                          const char *), void *emit_arg);
};

struct hctx;

/*
 * A plain set (no CAS) as the handler
 * hands it to the server to run later (struct hdefer): what the store
 * needs and what its reply needs.
 */
struct hset {
    bool        bin;        /* binary (else text) */
    bool        quiet;      /* SETQ, or text noreply */
    uint8_t     opcode;     /* binary: as sent */
    uint32_t    opaque;     /* binary */
    const void *key;
    size_t      keylen;
    const void *val;
    size_t      vlen;
    uint32_t    flags;
    uint32_t    exptime;    /* absolute */
};

/*
 * The server's offer to run plain sets later, all those of a pass of its
 * loop in one group, so that a persistent backend commits many at once.
 * A set taken leaves a hole in the reply queue, filled once it has run
 * (handler_set_done); everything else the handler does first settles the
 * sets it could see.
 */
struct hdefer {
    /* Takes hs to run later, copying what it needs and leaving a hole in
     * cx->out for the reply; false: the caller runs it now. */
    bool (*take)(struct hdefer *d, struct hctx *cx, const struct hset *hs);
    /* Runs what was taken: all of it (key NULL), or only if a set taken
     * is for key. */
    void (*settle)(struct hdefer *d, const void *key, size_t keylen);
};

/* One per worker thread; out/now/wait are set for each connection. */
struct hctx {
    const struct store_ops *ops;   /* ro */
    struct store_thr       *thr;   /* ro: this thread's store state */
    struct hstats          *st;    /* rw: this thread's counters */
    struct hsettings       *set;   /* ro, but verbosity */
    const struct hserver   *srv;   /* ro */
    struct reply           *out;   /* rw: the current connection's queue */
    uint32_t                now;   /* current unix time */
    struct store_wait      *wait;  /* the connection's, or NULL to block */
    unsigned                pending; /* out: writes still to be made durable */
    size_t                  out_max; /* ro: a multi-key get stops once more
                                      * than this is queued; 0: never */
    size_t                  keys_max; /* ro: ... or once it ran this many
                                       * keys; 0: never */
    size_t                  keys_run; /* out: keys the last get ran */
    const char             *resume;  /* out, HANDLER_SUSPEND: where the keys
                                      * not run yet begin */
    struct hdefer          *defer;   /* ro: NULL, every set runs at once */
};

typedef enum handler_act {
    HANDLER_CONTINUE = 0,
    HANDLER_CLOSE_AFTER_WRITE,  /* send what is queued, then close */
    HANDLER_CLOSE,              /* close without sending more */
    HANDLER_SHUTDOWN,           /* as CLOSE_AFTER_WRITE, then stop the
                                 * server as SIGTERM does */
    HANDLER_SUSPEND             /* a get stopped at cx->out_max or
                                 * cx->keys_max: run the keys from
                                 * cx->resume on as the rest of its line,
                                 * later (once the queue has drained) */
} handler_act_e;

/*
 * A set taken by cx->defer has run with result rc (and cas): queues its
 * reply to cx->out (cx->now, cx->wait as for the request) and does what
 * memcached does after a failed set. Counts what hcore_store counts.
 */
void handler_set_done(struct hctx *cx, const struct hset *hs, store_rc_e rc,
                      uint64_t cas);

/* handler_*_failure for a set taken by cx->defer. */
size_t handler_set_failure(const struct hset *hs, char *out);

/* The most bytes handler_set_done queues. */
#define HANDLER_SET_REPLY_MAX (24 + HANDLER_FAIL_MAX)

/* Converts a protocol TTL to the absolute time storage keeps. */
uint32_t handler_exptime(int64_t ttl, uint32_t now);

/* Executes one well-formed binary request. */
handler_act_e handler_bin(struct hctx *cx, const struct proto_bin_req *rq);

/* Room for the failure reply of one request (handler_*_failure). */
#define HANDLER_FAIL_MAX 96

/*
 * The reply a binary request gets instead of its own when a write it made
 * was left pending and then could not be made durable (its store_wait
 * completed with an error); written to out, HANDLER_FAIL_MAX bytes at
 * most. Returns its length.
 */
size_t handler_bin_failure(const struct proto_bin_req *rq, char *out);

/* Answers a binary request the codec refused (rc != PROTO_OK/NEED_MORE). */
handler_act_e handler_bin_refused(struct hctx *cx, proto_rc_e rc,
                                  const struct proto_bin_req *rq);

/* Stats lines are emitted through this; fmt makes one "name value". */
typedef void (*handler_stat_fn)(void *arg, const char *name,
                                const char *value);

/*
 * Emits the lines of one stats group ("" general, "settings", "items",
 * "slabs", "sizes", "conns"...); false when the group is unknown.
 */
bool handler_stats(struct hctx *cx, const char *group, handler_stat_fn emit,
                   void *arg);

#endif
