/*
 * Internals of the lmdb backend, shared by its files and by nobody else:
 * the on-disk record and metadata layouts, struct store and struct
 * store_thr, the write-op queue (group commit), the syncer and the
 * maintenance thread. Everything hangs off one struct store, so two stores
 * in one process share nothing. Lock order: wq.lock, then ps.lock; hint_lock
 * is only ever try-locked by readers and taken alone by the maintenance
 * thread. The LMDB write transaction is held only by the current batch
 * leader (wq.busy), never across a wait on another lock.
 */
#ifndef STASHD_STORAGE_LM_H
#define STASHD_STORAGE_LM_H

#include "storage/storage.h"
#include "storage/persist/persist.h"

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Files in the data directory. LMDB names data.mdb and lock.mdb itself. */
#define LM_DATA_FILE   "data.mdb"

/* Names inside the environment: a plain record and a named DB. */
#define LM_META_KEY    "stashd"
#define LM_ITEMS_DB    "stashd_items"

#define LM_MAGIC       "stashdLM"     /* 8 bytes, no NUL stored */
#define LM_FORMAT      1u             /* bumped on any layout change */
#define LM_META_SIZE   64u

/* Record: cas u64, flags, exptime, stored, atime, iflags, spare; value. */
#define LM_HDR         32u
/* What one item counts against -m: header, key, value, node overhead. */
#define LM_ITEM_OVERHEAD 48u
#define LM_IF_FETCHED  0x1u

/* An item's recency is refreshed at most this often (seconds). */
#define LM_ATIME_GRAIN 60u

/* The maintenance thread's round when idle (ms). */
#define LM_TICK_MS     100u

#define LM_DEFAULT_MEM_LIMIT (64ull * 1024 * 1024)
#define LM_DEFAULT_ITEM_MAX  (1024u * 1024u)
#define LM_ITEM_MAX_LOWEST   1024u
#define LM_ITEM_MAX_HIGHEST  (1024u * 1024u * 1024u)

/* One stored item's header, decoded. */
struct lm_rec {
    uint64_t cas;
    uint32_t flags;
    uint32_t exptime;     /* absolute; 0 = never */
    uint32_t stored;      /* c->now when written: delayed flush */
    uint32_t atime;       /* last access, refreshed every LM_ATIME_GRAIN */
    uint32_t iflags;      /* LM_IF_* */
};

/* The metadata record, decoded. Written in every write transaction. */
struct lm_meta {
    uint64_t flush_cas;   /* items with cas <= this are dead */
    uint64_t cas_max;     /* the largest CAS ever handed out */
    uint64_t bytes;       /* sum of item sizes (LM_ITEM_OVERHEAD + k + v) */
    uint32_t flush_time;  /* items stored before it are dead from then on */
    uint32_t created;     /* unix time the store was made */
};

static inline void
lm_put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static inline void
lm_put64(unsigned char *p, uint64_t v)
{
    lm_put32(p, (uint32_t)v);
    lm_put32(p + 4, (uint32_t)(v >> 32));
}

static inline uint32_t
lm_get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static inline uint64_t
lm_get64(const unsigned char *p)
{
    return (uint64_t)lm_get32(p) | (uint64_t)lm_get32(p + 4) << 32;
}

/* Little-endian on disk whatever the host, so a store moves between hosts. */
static inline void
lm_rec_encode(unsigned char *p, const struct lm_rec *r)
{
    lm_put64(p, r->cas);
    lm_put32(p + 8, r->flags);
    lm_put32(p + 12, r->exptime);
    lm_put32(p + 16, r->stored);
    lm_put32(p + 20, r->atime);
    lm_put32(p + 24, r->iflags);
    lm_put32(p + 28, 0);
}

static inline void
lm_rec_decode(const unsigned char *p, struct lm_rec *r)
{
    r->cas = lm_get64(p);
    r->flags = lm_get32(p + 8);
    r->exptime = lm_get32(p + 12);
    r->stored = lm_get32(p + 16);
    r->atime = lm_get32(p + 20);
    r->iflags = lm_get32(p + 24);
}

/* Bytes an item counts against the limit. */
static inline uint64_t
lm_item_size(size_t klen, size_t vlen)
{
    return LM_ITEM_OVERHEAD + (uint64_t)klen + vlen;
}

/* Kinds of write op; each runs inside a batch's write transaction. */
typedef enum lm_op_kind {
    LM_OP_STORE = 0,
    LM_OP_DEL,
    LM_OP_ARITH,
    LM_OP_TOUCH,
    LM_OP_GAT,
    LM_OP_FLUSH,
    LM_OP_MAINT
} lm_op_kind_e;

struct lm_maint;

/*
 * One write request, on its caller's stack while the caller waits. The
 * leader of a batch fills the results and then sets done under wq.lock.
 */
struct lm_op {
    struct persist_qnode      q;        /* private: the queue */
    lm_op_kind_e              kind;
    uint32_t                  now;
    const struct store_key   *k;
    store_mode_e              mode;     /* STORE */
    const struct store_item  *in;       /* STORE */
    const struct store_delta *d;        /* ARITH */
    uint64_t                  cas;      /* DEL: 0 = unconditional */
    uint32_t                  when;     /* TOUCH/GAT exptime, FLUSH time */
    struct store_sink        *sink;     /* GAT: where the value goes */
    struct store_item        *out;      /* GAT */
    struct lm_maint          *maint;    /* MAINT */
    /* results */
    store_rc_e                rc;
    uint64_t                  cas_out;
    uint64_t                  value;    /* ARITH */
    uint64_t                  seq;      /* the commit that holds it */
    bool                      wrote;    /* changed the data: needs a sync */
};

/* The op a queue node is in; NULL for NULL. */
static inline struct lm_op *
lm_op_of(struct persist_qnode *n)
{
    return n == NULL ? NULL
                     : (struct lm_op *)(void *)((char *)n -
                                                offsetof(struct lm_op, q));
}

/* A buffer of packed keys with their CAS (and a time), built by maint. */
struct lm_keybuf {
    unsigned char *p;
    size_t         len;
    size_t         cap;
    unsigned       n;
};

/* Work for one MAINT op; results are counted in the store. */
struct lm_maint {
    struct lm_keybuf dead;      /* klen u8, key, cas u64: delete if dead */
    struct lm_keybuf touch;     /* klen u8, key, cas u64, time u32 */
    uint64_t         evict;     /* eviction windows, at most */
    uint64_t         evict_to;  /* ... until bytes <= this */
};

/* Per-thread state: a read transaction renewed per get, and a cond. */
struct store_thr {
    struct store    *s;         /* ro */
    MDB_txn         *rtxn;      /* private: reset between calls */
    pthread_cond_t   cond;      /* with s->wq.lock: op done / lead */
};

/* Counters shown by stats; relaxed atomics, any thread. */
struct lm_ctr {
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
    _Atomic uint64_t map_full;
    _Atomic uint64_t hints_dropped;
    _Atomic uint64_t refreshes;    /* items whose atime a hint renewed */
};

struct store {
    /* ro after open */
    MDB_env         *env;
    bool             env_opened;  /* mdb_env_open succeeded */
    MDB_dbi          main_dbi;
    MDB_dbi          items;
    char            *dir;
    int              lock_fd;
    uint64_t         mem_limit;
    uint64_t         map_size;
    uint32_t         item_max;
    bool             no_evict;

    /* Committed state, published by the batch leader after commit. */
    _Atomic uint64_t flush_cas;
    _Atomic uint32_t flush_time;
    _Atomic uint64_t cas_max;
    _Atomic uint64_t bytes;
    _Atomic uint32_t now_seen;    /* latest c->now, for maint and stats */
    _Atomic int      wfail;       /* sticky: a sync failed, writes -> EIO */
    struct lm_meta   meta;        /* leader only: the committed record */
    uint32_t         created;

    /* Write queue: combining leader/follower group commit. */
    struct persist_queue wq;      /* persist_queue.c: leads, batches */
    _Atomic uint64_t seq;         /* last committed batch; leader writes */
    unsigned char   *scratch;     /* leader only: record copies */
    size_t           scratch_cap;
    unsigned char    hand[STORE_KEY_MAX];  /* leader only: evict position */
    size_t           hand_len;

    /* Syncer (persist_sync.c): mdb_env_sync per --sync, group commit. */
    struct persist_sync ps;

    /* Read hints (recency refresh), filled by readers with trylock. */
    pthread_mutex_t  hint_lock;
    struct lm_keybuf hints;       /* hint_lock */

    /* Maintenance thread. */
    struct store_thr *maint_thr;  /* its own read txn and cond */
    struct persist_maint pm;      /* its thread, tick and clock */

    struct lm_ctr    ctr;
};

/* Adds one to a shared counter. */
static inline void
lm_inc(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* Keeps the latest time a caller told us. */
static inline void
lm_note_now(struct store *s, uint32_t now)
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
lm_dead(const struct lm_rec *r, uint32_t now, uint64_t flush_cas,
        uint32_t flush_time, bool *flushed)
{
    bool f = r->cas <= flush_cas ||
             (flush_time != 0 && flush_time <= now && r->stored < flush_time);

    if (flushed != NULL) {
        *flushed = f;
    }
    return f || (r->exptime != 0 && r->exptime <= now);
}

/* The open and close ops (lm_open.c). */
store_rc_e store_lmdb_open(const struct store_cfg *cfg, struct store **out);
void store_lmdb_close(struct store **sp);

/* The attach and detach ops (the maintenance thread uses them too). */
store_rc_e store_lmdb_attach(struct store *s, struct store_thr **out);
void store_lmdb_detach(struct store_thr **tp);

/* An MDB error as a store_rc_e (MAP_FULL and ENOSPC are ENOMEM). */
store_rc_e store_lmdb_rc(int mrc);

/*
 * Queues op, waits until a batch has run it (running the batch itself when
 * no other thread leads) and returns with op's results filled in. Any thread
 * with an attached thr; op lives on the caller's stack.
 */
void store_lmdb_submit(struct store_thr *t, struct lm_op *op);

/* Runs a batch of ops as the leader (the queue's persist_batch_fn). */
void store_lmdb_run_batch(void *arg, struct persist_qnode *batch);

/* Starts the maintenance thread (sweeper, recency, background evict). */
bool store_lmdb_maint_start(struct store *s);

/* Stops and joins it. */
void store_lmdb_maint_stop(struct store *s);

/* Queues a recency refresh for a key just read; never blocks. */
void store_lmdb_hint(struct store *s, const struct store_key *k,
                     uint64_t cas, uint32_t now);

/* Appends one packed key entry; false when out of memory. */
bool store_lmdb_keybuf_add(struct lm_keybuf *b, const void *key, size_t klen,
                           uint64_t cas, const uint32_t *time);

/* Frees b's memory and empties it. */
void store_lmdb_keybuf_deinit(struct lm_keybuf *b);

/* Encodes / decodes the metadata record (LM_META_SIZE bytes). */
void store_lmdb_meta_encode(unsigned char *p, const struct lm_meta *m);
bool store_lmdb_meta_decode(const unsigned char *p, size_t len,
                            struct lm_meta *m, uint32_t *format);

/* Store-wide figures and the "" group (stats ops). */
void store_lmdb_stats(struct store_thr *t, struct store_stats *out);
store_rc_e store_lmdb_stats_group(struct store_thr *t, const char *group,
                                  store_emit_fn emit, void *arg);

#endif /* STASHD_STORAGE_LM_H */
