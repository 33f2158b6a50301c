/*
 * Internals of the persistent write engine, shared by storage/kv/'s files
 * and nobody else: struct store and struct store_thr, the write op and its
 * queue (group commit), the maintenance work, the counters. Everything
 * hangs off one struct store, so two stores in one process share nothing.
 * Lock order: wq.lock, then ps.lock; hint_lock and bad_lock are only ever
 * try-locked by readers and taken alone by the maintenance thread. The
 * adapter's write transaction is used only by the batch leader (the queue
 * lead), never across a wait on another lock.
 */
#ifndef STASHD_STORAGE_KV_INT_H
#define STASHD_STORAGE_KV_INT_H

#include "storage/kv/kv.h"
#include "storage/persist/persist.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/*
 * CAS values are leased in blocks: the ceiling the adapter persists is
 * raised this far ahead of the counter, in the commit that crosses it, so
 * an adapter may write its metadata once per block and not per commit.
 */
#define KV_CAS_LEASE   65536u

/* An item's recency is refreshed at most this often (seconds). */
#define KV_ATIME_GRAIN 60u

/* The maintenance thread's round when idle (ms). */
#define KV_TICK_MS     100u

#define KV_DEFAULT_MEM_LIMIT (64ull * 1024 * 1024)
#define KV_DEFAULT_ITEM_MAX  (1024u * 1024u)
#define KV_ITEM_MAX_LOWEST   1024u
#define KV_ITEM_MAX_HIGHEST  (1024u * 1024u * 1024u)

/*
 * Free space left beside the reserve when it is made again: the reserve
 * comes before data (writes past a full disk fail anyway), so it is made
 * back at the first chance, a little room kept for what is in flight.
 */
#define KV_RESERVE_SLACK (64u * 1024u)

/* Damaged records remembered as reported, so a sighting counts once. */
#define KV_BAD_RECENT 16u

/* Damaged records logged by name before the log only counts them. */
#define KV_LOG_BAD_MAX 100u

/* Kinds of write op; each runs inside a batch's write transaction. */
typedef enum kv_op_kind {
    KV_OP_STORE = 0,
    KV_OP_DEL,
    KV_OP_ARITH,
    KV_OP_TOUCH,
    KV_OP_GAT,
    KV_OP_FLUSH,
    KV_OP_MAINT
} kv_op_kind_e;

struct kv_maint;

/*
 * One write request, on its caller's stack while the caller waits. The
 * leader of a batch fills the results and then marks it done.
 */
struct kv_op {
    struct persist_qnode      q;        /* private: the queue */
    kv_op_kind_e              kind;
    uint32_t                  now;
    const struct store_key   *k;
    store_mode_e              mode;     /* STORE */
    const struct store_item  *in;       /* STORE */
    const struct store_delta *d;        /* ARITH */
    uint64_t                  cas;      /* DEL: 0 = unconditional */
    uint32_t                  when;     /* TOUCH/GAT exptime, FLUSH time */
    struct store_sink        *sink;     /* GAT: where the value goes */
    struct store_item        *out;      /* GAT */
    struct kv_maint          *maint;    /* MAINT */
    /* results */
    store_rc_e                rc;
    uint64_t                  cas_out;
    uint64_t                  value;    /* ARITH; TOUCH/GAT: 1 expired,
                                         * 2 flushed */
    uint64_t                  seq;      /* the commit that holds it */
    bool                      wrote;    /* changed the data: needs a sync */
};

/* The op a queue node is in; NULL for NULL. */
static inline struct kv_op *
kv_op_of(struct persist_qnode *n)
{
    return n == NULL ? NULL
                     : (struct kv_op *)(void *)((char *)n -
                                                offsetof(struct kv_op, q));
}

/* A buffer of packed keys with their CAS (and a time). */
struct kv_keybuf {
    unsigned char *p;
    size_t         len;
    size_t         cap;
    unsigned       n;
};

/* Walks a packed key buffer: klen u8, key, cas u64[, time u32]. */
struct kv_kb_iter {
    const unsigned char *p;
    const unsigned char *end;
    bool                 timed;
};

/* Work for one MAINT op; results are counted in the store. */
struct kv_maint {
    struct kv_keybuf dead;      /* klen u8, key, cas u64: delete if dead */
    struct kv_keybuf touch;     /* klen u8, key, cas u64, time u32 */
    struct kv_keybuf bad;       /* klen u8, key, cas u64: delete if damaged */
    uint64_t         evict;     /* eviction windows, at most */
    uint64_t         evict_to;  /* ... until bytes <= this */
    uint64_t         deleted;   /* out: dead items deleted */
};

/* Sets one set_many call queues at once, at most. */
#define KV_MANY_MAX 64u

/* Per-thread state: the adapter's reader and a cond for the queue. */
struct store_thr {
    struct store    *s;         /* ro */
    struct kv_rd    *rd;        /* private: this thread's reader */
    pthread_cond_t   cond;      /* with s->wq.lock: op done / lead */
    struct kv_op     many[KV_MANY_MAX]; /* private: set_many's ops */
};

/* Counters shown by stats; relaxed atomics, any thread. */
struct kv_ctr {
    _Atomic uint64_t total_items;
    _Atomic uint64_t evictions;
    _Atomic uint64_t evicted_unfetched;
    _Atomic uint64_t expired_unfetched;
    _Atomic uint64_t reclaimed;
    _Atomic uint64_t get_expired;
    _Atomic uint64_t get_flushed;
    _Atomic uint64_t commits;      /* write transactions committed */
    _Atomic uint64_t commit_ops;   /* ops in them */
    _Atomic uint64_t aborts;       /* batches retried one op at a time */
    _Atomic uint64_t full;         /* "no room" failures */
    _Atomic uint64_t busy;         /* another process held a lock */
    _Atomic uint64_t io_errors;    /* other failures */
    _Atomic uint64_t hints_dropped;
    _Atomic uint64_t refreshes;    /* items whose atime a hint renewed */
    _Atomic uint64_t bad_records;  /* records that failed their checksum */
    _Atomic uint64_t bad_removed;  /* ... and were removed */
};

struct store {
    /* ro after open */
    const struct kv_backend *be;
    struct kv_be    *b;
    char            *dir;
    int              lock_fd;
    uint64_t         mem_limit;
    uint32_t         item_max;
    bool             no_evict;
    struct kv_host   host;

    /* Committed state, published by the batch leader after commit. */
    _Atomic uint64_t flush_cas;
    _Atomic uint32_t flush_time;
    _Atomic uint64_t cas_max;
    _Atomic uint64_t bytes;
    _Atomic uint64_t items;
    _Atomic uint32_t now_seen;    /* latest c->now, for maint and stats */
    _Atomic int      wfail;       /* sticky: a sync failed, writes -> EIO */
    struct kv_meta   meta;        /* leader only: the committed state */
    uint64_t         cas_ceiling; /* leader only: the persisted ceiling */
    bool             meta_written;/* leader only: since open */
    bool             opened;      /* open succeeded */

    /* Write queue: combining leader/follower group commit. */
    struct persist_queue wq;
    _Atomic uint64_t seq;         /* last committed batch; leader writes */
    unsigned char   *scratch;     /* leader only: values being built */
    size_t           scratch_cap;
    unsigned char    hand[STORE_KEY_MAX];  /* leader only: evict position */
    size_t           hand_len;
    bool             reserve_owed; /* leader only: a delete spent it */

    /* Syncer (persist_sync.c): the adapter's sync, group commit. */
    struct persist_sync ps;

    /* Read hints (recency refresh), filled by readers with trylock. */
    pthread_mutex_t  hint_lock;
    struct kv_keybuf hints;       /* hint_lock */
    /* Damaged records readers found, for the maintenance thread. */
    pthread_mutex_t  bad_lock;
    struct kv_keybuf bad;         /* bad_lock */
    uint64_t         bad_recent[KV_BAD_RECENT]; /* bad_lock: reported */
    unsigned         bad_next;    /* bad_lock */
    _Atomic unsigned bad_logged;

    /* Maintenance thread. */
    struct store_thr *maint_thr;  /* its own reader and cond */
    struct persist_maint pm;      /* its thread, tick and clock */

    struct kv_ctr    ctr;
};

/* Adds n to a shared counter. */
static inline void
kv_inc(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* Keeps the latest time a caller told us. */
static inline void
kv_note_now(struct store *s, uint32_t now)
{
    if (now > atomic_load_explicit(&s->now_seen, memory_order_relaxed)) {
        atomic_store_explicit(&s->now_seen, now, memory_order_relaxed);
    }
}

/*
 * True when r is dead at now under the flush state given: expired, or
 * flushed (*flushed says which; may be NULL).
 */
static inline bool
kv_dead(const struct kv_rec *r, uint32_t now, uint64_t flush_cas,
        uint32_t flush_time, bool *flushed)
{
    bool f = r->cas <= flush_cas ||
             (flush_time != 0 && flush_time <= now && r->stored < flush_time);

    if (flushed != NULL) {
        *flushed = f;
    }
    return f || (r->exptime != 0 && r->exptime <= now);
}

/* Counts a failed adapter call by kind, for stats. */
void kv_note_err(struct store *s, kv_err_e e);

/*
 * Queues op, waits until a batch has run it (running the batch itself when
 * no other thread leads) and returns with op's results filled in. Any thread
 * with an attached thr; op lives on the caller's stack.
 */
void kv_submit(struct store_thr *t, struct kv_op *op);

/* As kv_submit for ops[0, n), queued together: one batch, one wait. */
void kv_submit_many(struct store_thr *t, struct kv_op *ops, size_t n);

/* Runs a batch of ops as the leader (the queue's persist_batch_fn). */
void kv_run_batch(void *arg, struct persist_qnode *batch);

/* Starts the maintenance thread (sweeper, recency, evict, upkeep). */
bool kv_maint_start(struct store *s);

/* Stops and joins it. */
void kv_maint_stop(struct store *s);

/* Queues a recency refresh for a key just read; never blocks. */
void kv_hint(struct store *s, const struct store_key *k, uint64_t cas,
             uint32_t now);

/*
 * A reader found key's record damaged: logs it (the first
 * KV_LOG_BAD_MAX), counts it and queues its removal; never blocks.
 */
void kv_bad_record(struct store *s, const void *key, size_t klen,
                   uint64_t cas);

/* Appends one packed key entry; false when out of memory. */
bool kv_keybuf_add(struct kv_keybuf *b, const void *key, size_t klen,
                   uint64_t cas, const uint32_t *time);

/* Frees b's memory and empties it. */
void kv_keybuf_deinit(struct kv_keybuf *b);

/* The next entry of a packed key buffer; false at its end. */
bool kv_kb_next(struct kv_kb_iter *it, const unsigned char **key,
                size_t *klen, uint64_t *cas, uint32_t *time);

#endif /* STASHD_STORAGE_KV_INT_H */
