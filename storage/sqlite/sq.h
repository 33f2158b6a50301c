/*
 * Internals of the sqlite backend, shared by its files and by nobody else:
 * the schema's names, struct store and struct store_thr, the statement
 * table, the write-op queue (group commit), the syncer and the maintenance
 * thread. Everything hangs off one struct store, so two stores in one
 * process share nothing. Lock order: wq.lock, then ps.lock; hint_lock is
 * only ever try-locked by readers and taken alone by the maintenance
 * thread. The writer connection is used only by the thread that holds the
 * lead (wq.busy), never by two threads at once, so every connection can be
 * opened SQLITE_OPEN_NOMUTEX.
 */
#ifndef STASHD_STORAGE_SQ_H
#define STASHD_STORAGE_SQ_H

#include "storage/storage.h"
#include "storage/persist/persist.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Files in the data directory; SQLite adds stashd.db-wal and -shm. */
#define SQ_DB_FILE     "stashd.db"
#define SQ_WAL_SUFFIX  "-wal"
#define SQ_LMDB_FILE   "data.mdb"        /* an lmdb store: not ours */

#define SQ_MAGIC       "stashd"          /* meta.magic */
#define SQ_FORMAT      1                 /* meta.format; bumped on change */
#define SQ_APP_ID      0x73746864        /* PRAGMA application_id: "sthd" */

/* What one item counts against -m: as lmdb, 48 + key + value. */
#define SQ_ITEM_OVERHEAD 48u

/*
 * CAS values are leased in blocks: the meta row's cas_max is raised this
 * far ahead of the counter, in the transaction that crosses it, so the meta
 * row is rewritten once per block and not in every commit.
 */
#define SQ_CAS_LEASE   65536u

/* An item's recency is refreshed at most this often (seconds). */
#define SQ_ATIME_GRAIN 60u

/* The maintenance thread's round when idle (ms). */
#define SQ_TICK_MS     100u

#define SQ_DEFAULT_MEM_LIMIT (64ull * 1024 * 1024)
#define SQ_DEFAULT_ITEM_MAX  (1024u * 1024u)
#define SQ_ITEM_MAX_LOWEST   1024u

/* One stored item's columns other than key and value. */
struct sq_rec {
    uint64_t cas;
    uint32_t flags;
    uint32_t exptime;     /* absolute; 0 = never */
    uint32_t stored;      /* c->now when written: delayed flush */
    uint32_t atime;       /* last access, refreshed every SQ_ATIME_GRAIN */
    bool     fetched;
};

/*
 * The store's state as the leader keeps it. In the meta row, flush_cas and
 * flush_time are always current; cas_max is a lease (>= every CAS handed
 * out), and items and bytes are exact only when clean = 1 (closed cleanly);
 * open recounts them otherwise.
 */
struct sq_meta {
    uint64_t flush_cas;   /* items with cas <= this are dead */
    uint64_t cas_max;     /* the largest CAS handed out */
    uint64_t bytes;       /* sum of item sizes (SQ_ITEM_OVERHEAD + k + v) */
    uint64_t items;       /* rows in items, dead ones not yet swept too */
    uint32_t flush_time;  /* items stored before it are dead from then on */
    uint32_t created;     /* unix time the store was made */
};

/* Bytes an item counts against the limit. */
static inline uint64_t
sq_item_size(size_t klen, size_t vlen)
{
    return SQ_ITEM_OVERHEAD + (uint64_t)klen + vlen;
}

/*
 * Every statement the backend runs, prepared once per connection on first
 * use (sq_stmt) and reset after each use, so no request parses SQL.
 */
typedef enum sq_sql {
    SQ_GET = 0,       /* reader: an item by key */
    SQ_EXPIRED,       /* reader (maint): expired keys, by the index */
    SQ_SCAN,          /* reader (maint): a slice in key order after ?1 */
    SQ_SCAN0,         /* reader (maint): the first slice */
    SQ_PAGES,         /* reader (stats) */
    SQ_FREEPAGES,     /* reader (stats) */
    SQ_RBEGIN,        /* reader: a snapshot over several gets */
    SQ_BEGIN,         /* writer */
    SQ_COMMIT,        /* writer, and a reader ending its snapshot */
    SQ_ROLLBACK,      /* writer, and a reader whose COMMIT failed */
    SQ_LOAD,          /* writer: an item's columns and value length */
    SQ_LOADV,         /* writer: the same with the value */
    SQ_PUT,
    SQ_DEL,
    SQ_TOUCH,
    SQ_REFRESH,
    SQ_META,
    SQ_WINDOW,        /* writer: an eviction window from the hand */
    SQ_WINDOW0,       /* writer: the first window */
    SQ_NSQL
} sq_sql_e;

/* A connection and its prepared statements. */
struct sq_conn {
    sqlite3      *db;
    sqlite3_stmt *st[SQ_NSQL];
};

/* Kinds of write op; each runs inside a batch's write transaction. */
typedef enum sq_op_kind {
    SQ_OP_STORE = 0,
    SQ_OP_DEL,
    SQ_OP_ARITH,
    SQ_OP_TOUCH,
    SQ_OP_GAT,
    SQ_OP_FLUSH,
    SQ_OP_MAINT
} sq_op_kind_e;

struct sq_maint;

/*
 * One write request, on its caller's stack while the caller waits. The
 * leader of a batch fills the results and then sets done under wq.lock.
 */
struct sq_op {
    struct persist_qnode      q;        /* private: the queue */
    sq_op_kind_e              kind;
    uint32_t                  now;
    const struct store_key   *k;
    store_mode_e              mode;     /* STORE */
    const struct store_item  *in;       /* STORE */
    const struct store_delta *d;        /* ARITH */
    uint64_t                  cas;      /* DEL: 0 = unconditional */
    uint32_t                  when;     /* TOUCH/GAT exptime, FLUSH time */
    struct store_sink        *sink;     /* GAT: where the value goes */
    struct store_item        *out;      /* GAT */
    struct sq_maint          *maint;    /* MAINT */
    /* results */
    store_rc_e                rc;
    uint64_t                  cas_out;
    uint64_t                  value;    /* ARITH; TOUCH/GAT: 1 expired,
                                         * 2 flushed */
    uint64_t                  seq;      /* the commit that holds it */
    bool                      wrote;    /* changed the data: needs a sync */
};

/* The op a queue node is in; NULL for NULL. */
static inline struct sq_op *
sq_op_of(struct persist_qnode *n)
{
    return n == NULL ? NULL
                     : (struct sq_op *)(void *)((char *)n -
                                                offsetof(struct sq_op, q));
}

/* A buffer of packed keys with their CAS (and a time), built by maint. */
struct sq_keybuf {
    unsigned char *p;
    size_t         len;
    size_t         cap;
    unsigned       n;
};

/* Work for one MAINT op; results are counted in the store. */
struct sq_maint {
    struct sq_keybuf dead;      /* klen u8, key, cas u64: delete if dead */
    struct sq_keybuf touch;     /* klen u8, key, cas u64, time u32 */
    uint64_t         evict;     /* eviction windows, at most */
    uint64_t         evict_to;  /* ... until bytes <= this */
    uint64_t         deleted;   /* out: dead items deleted */
};

/* Per-thread state: a read connection and a cond for the write queue. */
struct store_thr {
    struct store    *s;         /* ro */
    struct sq_conn   c;         /* private: this thread's connection */
    bool             snap;      /* private: a read transaction is open */
    uint64_t         snap_seq;  /* private: s->seq when it began */
    pthread_cond_t   cond;      /* with s->wq.lock: op done / lead */
};

/* Counters shown by stats; relaxed atomics, any thread. */
struct sq_ctr {
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
    _Atomic uint64_t busy;         /* SQLITE_BUSY / LOCKED seen */
    _Atomic uint64_t full;         /* SQLITE_FULL seen */
    _Atomic uint64_t ioerr;        /* other failures seen */
    _Atomic uint64_t hints_dropped;
    _Atomic uint64_t refreshes;    /* items whose atime a hint renewed */
    _Atomic uint64_t checkpoints;  /* checkpoints run */
    _Atomic uint64_t ckpt_restarts;/* ... that held the writers to catch up */
    _Atomic uint64_t wal_frames;   /* frames in the WAL at the last one */
    _Atomic uint64_t ckpt_usec;
    _Atomic uint64_t meta_writes;  /* commits that rewrote the meta row */
};

struct store {
    /* ro after open */
    char            *dir;
    char            *db_path;
    char            *wal_path;
    int              lock_fd;
    int              wal_fd;      /* our own descriptor of the WAL: fsync */
    int              dir_fd;
    uint64_t         mem_limit;
    uint32_t         item_max;
    bool             no_evict;
    uint32_t         page_size;
    int64_t          wal_restart; /* WAL bytes that call for a catch-up */
    struct sq_conn   w;           /* the writer: the leader's only */

    /* Committed state, published by the batch leader after commit. */
    _Atomic uint64_t flush_cas;
    _Atomic uint32_t flush_time;
    _Atomic uint64_t flush_gen;   /* flushes committed since open */
    _Atomic uint64_t cas_max;
    _Atomic uint64_t bytes;
    _Atomic uint64_t items;
    _Atomic uint32_t now_seen;    /* latest c->now, for maint and stats */
    _Atomic int      wfail;       /* sticky: a sync failed, writes -> EIO */
    struct sq_meta   meta;        /* leader only: the committed state */
    uint64_t         cas_lease;   /* leader only: cas_max in the row */
    bool             opened;      /* open succeeded: close writes clean */

    /* Write queue: combining leader/follower group commit. */
    struct persist_queue wq;      /* persist_queue.c: leads, batches */
    _Atomic uint64_t seq;         /* last committed batch; leader writes */
    unsigned char   *scratch;     /* leader only: values being built */
    size_t           scratch_cap;
    unsigned char    hand[STORE_KEY_MAX];  /* leader only: evict position */
    size_t           hand_len;

    /* Syncer (persist_sync.c): fdatasync of the WAL, group commit. */
    struct persist_sync ps;
    _Atomic uint32_t last_ckpt;   /* unix time of the last checkpoint */

    /* Read hints (recency refresh), filled by readers with trylock. */
    pthread_mutex_t  hint_lock;
    struct sq_keybuf hints;       /* hint_lock */

    /* Maintenance thread. */
    struct store_thr *maint_thr;  /* its own connection and cond */
    struct persist_maint pm;      /* its thread, tick and clock */

    struct sq_ctr    ctr;
};

/* Adds n to a shared counter. */
static inline void
sq_inc(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* Keeps the latest time a caller told us. */
static inline void
sq_note_now(struct store *s, uint32_t now)
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
sq_dead(const struct sq_rec *r, uint32_t now, uint64_t flush_cas,
        uint32_t flush_time, bool *flushed)
{
    bool f = r->cas <= flush_cas ||
             (flush_time != 0 && flush_time <= now && r->stored < flush_time);

    if (flushed != NULL) {
        *flushed = f;
    }
    return f || (r->exptime != 0 && r->exptime <= now);
}

/* Binds a key or value as a BLOB (never NULL, never TEXT); SQLITE_OK. */
static inline int
sq_bind_blob(sqlite3_stmt *st, int i, const void *p, size_t n)
{
    return sqlite3_bind_blob64(st, i, n > 0 ? p : "", (sqlite3_uint64)n,
                               SQLITE_STATIC);
}

/* The open and close ops (sq_open.c). */
store_rc_e store_sqlite_open(const struct store_cfg *cfg, struct store **out);
void store_sqlite_close(struct store **sp);

/* The attach and detach ops (the maintenance thread uses them too). */
store_rc_e store_sqlite_attach(struct store *s, struct store_thr **out);
void store_sqlite_detach(struct store_thr **tp);

/*
 * Opens a connection to s's database with our per-connection settings;
 * writer or reader. On failure *msg (may be NULL) gets SQLite's words.
 */
int store_sqlite_connect(struct store *s, struct sq_conn *c, bool writer,
                         bool create, char *msg, size_t msglen);

/* Finalizes c's statements and closes it; a closed c is a no-op. */
void store_sqlite_disconnect(struct sq_conn *c);

/* Statement id of c, prepared on first use; NULL on failure. */
sqlite3_stmt *store_sqlite_stmt(struct sq_conn *c, sq_sql_e id);

/* An SQLite result code as a store_rc_e (FULL and NOMEM are ENOMEM). */
store_rc_e store_sqlite_rc(int rc);

/* Counts an SQLite failure by kind, for stats. */
void store_sqlite_note_err(struct store *s, int rc);

/*
 * Busy handler of every connection: short sleeps first (our own readers
 * and checkpoints hold locks for microseconds), then 1 ms ones, until the
 * connection's budget (ms, in arg) is spent; then the call fails BUSY.
 */
int store_sqlite_busy(void *arg, int tries);

/* Decodes the columns (cas, flags, exptime, stored, atime, fetched) at i. */
void store_sqlite_rec(sqlite3_stmt *st, int i, struct sq_rec *r);

/*
 * Queues op, waits until a batch has run it (running the batch itself when
 * no other thread leads) and returns with op's results filled in. Any thread
 * with an attached thr; op lives on the caller's stack.
 */
void store_sqlite_submit(struct store_thr *t, struct sq_op *op);

/* Runs a batch of ops as the leader (the queue's persist_batch_fn). */
void store_sqlite_run_batch(void *arg, struct persist_qnode *batch);

/*
 * Rewrites the meta row from s->meta in a transaction of its own, with
 * cas_max = cas_col and the clean flag; the SQLite result code. Only with
 * the lead held, or while no other thread can write (open, close).
 */
int store_sqlite_meta_commit(struct store *s, uint64_t cas_col, bool clean);

/* fdatasync of the WAL now; 0 or an errno. For open and close. */
int store_sqlite_sync_wal(struct store *s);

/* Starts the maintenance thread (sweeper, recency, evict, checkpoints). */
bool store_sqlite_maint_start(struct store *s);

/* Stops and joins it. */
void store_sqlite_maint_stop(struct store *s);

/* Queues a recency refresh for a key just read; never blocks. */
void store_sqlite_hint(struct store *s, const struct store_key *k,
                       uint64_t cas, uint32_t now);

/* Appends one packed key entry; false when out of memory. */
bool store_sqlite_keybuf_add(struct sq_keybuf *b, const void *key,
                             size_t klen, uint64_t cas, const uint32_t *time);

/* Frees b's memory and empties it. */
void store_sqlite_keybuf_deinit(struct sq_keybuf *b);

/* Store-wide figures and the "" group (stats ops). */
void store_sqlite_stats(struct store_thr *t, struct store_stats *out);
store_rc_e store_sqlite_stats_group(struct store_thr *t, const char *group,
                                    store_emit_fn emit, void *arg);

#endif /* STASHD_STORAGE_SQ_H */
