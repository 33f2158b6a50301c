/*
 * Pieces the two persistent backends (lmdb, sqlite) share and that owe
 * nothing to either library: the data directory and its lock file, the
 * combining write queue, the syncer thread with its group-commit waiters,
 * the maintenance thread's lifecycle and clock, and small helpers. It sees
 * storage.h and libc only, never a backend's struct store: a backend embeds
 * these structs in its store and hands over what differs (how to run a
 * batch, how to make its file durable, what a maintenance round does). It
 * must never touch a backend's data.
 */
#ifndef STASHD_STORAGE_PERSIST_H
#define STASHD_STORAGE_PERSIST_H

#include "storage/storage.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* The lock file in every persistent data directory, whichever backend. */
#define PERSIST_LOCK_FILE "stashd.lock"

/* Writes a message into cfg->err (when given); any thread. */
void persist_err(const struct store_cfg *cfg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Inits a cond whose timed waits use CLOCK_MONOTONIC; false on failure. */
bool persist_cond_init_mono(pthread_cond_t *c);

/* Microseconds on the monotonic clock. */
uint64_t persist_mono_usec(void);

/* *ts = now + usec, monotonic: for conds from persist_cond_init_mono. */
void persist_deadline(struct timespec *ts, uint64_t usec_from_now);

/* mkdir -p dir with mode 0700 for what it creates; checks it is a dir. */
store_rc_e persist_make_dir(const struct store_cfg *cfg, const char *dir);

/*
 * Takes an exclusive flock on dir/PERSIST_LOCK_FILE and writes our pid in
 * it; *fd holds the lock until closed. STORE_ELOCKED names the holder.
 */
store_rc_e persist_lock_dir(const struct store_cfg *cfg, const char *dir,
                            int *fd);

/*
 * Makes every commit so far durable: 0, or an error code (errno or the
 * library's). Called by the syncer thread only, holding no lock.
 */
typedef int (*persist_fsync_fn)(void *arg);

/*
 * The syncer: the one thread that makes commits durable. The owner counts
 * its commits in *seq; with --sync=always a write waits (or registers a
 * store_wait) until a sync covers its commit, so writes committed during
 * one sync share the next (group commit); with --sync=periodic it syncs at
 * most every interval when something changed; --sync=none starts nothing.
 * A failed sync sets *wfail (sticky). lock is never held across the fsync
 * or a completion callback.
 */
struct persist_sync {
    /* ro after init */
    store_sync_e        mode;
    store_sync_e        shown;       /* the mode stats name (the user's) */
    uint32_t            interval_ms;
    uint64_t            pressure;    /* commits that make a sync due even
                                      * before the interval; 0 = none */
    persist_fsync_fn    fsync;
    void               *arg;
    _Atomic uint64_t   *seq;         /* the owner's last commit */
    _Atomic int        *wfail;       /* the owner's sticky write failure */

    pthread_t           thread;      /* private */
    bool                on;          /* ro: the thread runs */
    pthread_mutex_t     lock;
    pthread_cond_t      cond;        /* monotonic: wakes the syncer */
    pthread_cond_t      synced_cond; /* a sync finished */
    bool                stop;        /* lock */
    bool                urgent;      /* lock: sync now, whatever the mode */
    struct store_wait **waits;       /* lock: pending completions */
    size_t              nwaits;
    size_t              waits_cap;
    _Atomic uint64_t    synced_seq;  /* every commit <= it is durable */
    _Atomic uint64_t    count;       /* good syncs */
    _Atomic uint64_t    errors;      /* failed syncs */
    _Atomic uint32_t    last_sync;   /* unix time of the last good sync */
    _Atomic uint64_t    usec;        /* time spent syncing, total */
    _Atomic uint64_t    max_usec;    /* the longest single sync */
    _Atomic uint64_t    busy_since;  /* mono usec the running sync began,
                                      * 0 when none runs */
};

/*
 * Inits ps (not started); false when a lock cannot be made, with nothing
 * left to undo. seq and wfail must outlive ps.
 */
bool persist_sync_init(struct persist_sync *ps, store_sync_e mode,
                       uint32_t interval_ms, persist_fsync_fn fsync,
                       void *arg, _Atomic uint64_t *seq,
                       _Atomic int *wfail);

/* Frees what init made; the syncer must be stopped. */
void persist_sync_deinit(struct persist_sync *ps);

/* Starts the thread (periodic and always only); false when it cannot. */
bool persist_sync_start(struct persist_sync *ps);

/* Stops it: a last sync, every pending completion called; then joined. */
void persist_sync_stop(struct persist_sync *ps);

/* Emits one stats line whose value is v in decimal. */
void persist_emit_u64(store_emit_fn emit, void *arg, const char *name,
                      uint64_t v);

/*
 * Emits the syncer's stats lines, each name prefixed ("lmdb" gives
 * lmdb_sync, lmdb_sync_interval_ms, ..., lmdb_last_sync, and how long
 * the longest sync and the one running now took). Any thread.
 */
void persist_sync_stats(struct persist_sync *ps, const char *prefix,
                        store_emit_fn emit, void *arg);

/* Wakes the syncer; any thread. */
void persist_sync_kick(struct persist_sync *ps);

/*
 * Has every commit so far synced now, whatever the mode, and waits for it
 * (a store whose space comes back only after a sync). No-op without a
 * syncer thread. Any thread but the syncer's.
 */
void persist_sync_now(struct persist_sync *ps);

/*
 * After the commit numbered seq: wakes the syncer when it is due now
 * (always mode, or pressure commits behind); any thread.
 */
void persist_sync_commit(struct persist_sync *ps, uint64_t seq);

/* Commits this many times the pressure behind the syncer wait for it. */
#define PERSIST_THROTTLE 8u

/*
 * Before a write: waits while commits run too far ahead of the syncer
 * (PERSIST_THROTTLE x pressure). Holding no backend lock.
 */
void persist_sync_throttle(struct persist_sync *ps);

/*
 * After a write whose commit is seq: makes the caller wait for durability
 * per the mode, registering c->wait (c->pending = true; its done gets the
 * outcome) when given, else blocking. STORE_EIO when a sync has failed:
 * the write cannot be promised. Any thread, holding no backend lock.
 */
store_rc_e persist_sync_wait(struct persist_sync *ps, struct store_call *c,
                             uint64_t seq);

/*
 * A maintenance thread's lifecycle and clock: a lock, a monotonic cond to
 * wake it, a stop flag, and the time it works at, which is the latest time
 * a request told (*now_seen) run on by the monotonic clock, so that an
 * idle store still sweeps. The backend owns the loop and the work.
 */
struct persist_maint {
    /* ro after init */
    uint32_t            tick_ms;     /* sleep between idle rounds */
    _Atomic uint32_t   *now_seen;    /* the owner's latest request time */

    pthread_t           thread;      /* private */
    bool                on;          /* ro: the thread runs */
    pthread_mutex_t     lock;
    pthread_cond_t      cond;        /* monotonic: wakes the thread */
    bool                stop;        /* lock */
    uint32_t            seen;        /* thread only: *now_seen at base */
    struct timespec     base;        /* thread only: when seen changed */
    struct timespec     ts;          /* thread only: the last reading */
};

/* Inits pm (not started); false when a lock cannot be made, nothing left. */
bool persist_maint_init(struct persist_maint *pm, uint32_t tick_ms,
                        _Atomic uint32_t *now_seen);

/* Frees what init made; the thread must be stopped. */
void persist_maint_deinit(struct persist_maint *pm);

/* Starts fn(arg) as the thread; false when it cannot. */
bool persist_maint_start(struct persist_maint *pm, void *(*fn)(void *),
                         void *arg);

/* Tells the thread to stop, wakes it and joins it; no-op when not on. */
void persist_maint_stop(struct persist_maint *pm);

/* The maintenance thread only: the unix time to work at, this round. */
uint32_t persist_maint_now(struct persist_maint *pm);

/*
 * The maintenance thread only: unless more, sleeps one tick past the last
 * persist_maint_now (or until woken); false when the thread must stop.
 */
bool persist_maint_next(struct persist_maint *pm, bool more);

/*
 * A combining write queue (group commit without a writer thread): a
 * submitter queues its op and waits; whoever finds nobody leading takes
 * every op queued so far as one batch, runs it outside the lock, marks
 * each done and hands the lead to the oldest waiter. An exclusive taker
 * (checkpoint catch-up, say) gets the lead before the next batch.
 */
struct persist_qnode {
    struct persist_qnode *next;      /* private: the queue, then the batch */
    pthread_cond_t       *cond;      /* ro: the submitter's, with lock */
    bool                  done;      /* lock */
};

/* Runs a batch (linked by next), holding the lead but not the lock. */
typedef void (*persist_batch_fn)(void *arg, struct persist_qnode *batch);

struct persist_queue {
    /* ro after init */
    persist_batch_fn      run;
    void                 *arg;

    pthread_mutex_t       lock;
    pthread_cond_t        excl_cond; /* with lock: the lead is free */
    struct persist_qnode *head;      /* lock */
    struct persist_qnode *tail;      /* lock */
    bool                  busy;      /* lock: someone holds the lead */
    unsigned              excl_want; /* lock: exclusive takers waiting */
};

/* Inits q; false when a lock cannot be made, with nothing left to undo. */
bool persist_queue_init(struct persist_queue *q, persist_batch_fn run,
                        void *arg);

/* Frees what init made; nobody may be using q. */
void persist_queue_deinit(struct persist_queue *q);

/*
 * Queues n, waits on cond (the caller's, with q->lock) until a batch has
 * run it, leading that batch when nobody else does. Any thread; n lives on
 * the caller's stack until this returns.
 */
void persist_queue_submit(struct persist_queue *q, struct persist_qnode *n,
                          pthread_cond_t *cond);

/*
 * As persist_queue_submit for the chain first..last (linked by next), which
 * is queued at once and so runs in one batch: one wait for all of it.
 */
void persist_queue_submit_chain(struct persist_queue *q,
                                struct persist_qnode *first,
                                struct persist_qnode *last,
                                pthread_cond_t *cond);

/* Runs fn(arg) holding the lead alone, once the current batch is done. */
void persist_queue_exclusive(struct persist_queue *q, void (*fn)(void *),
                             void *arg);

#endif /* STASHD_STORAGE_PERSIST_H */
