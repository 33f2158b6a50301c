/*
 * The storage interface: one const vtable over opaque handles, implemented
 * by every backend (memory now, lmdb and sqlite later). The handler and the
 * server see only this file; they never know which backend runs. A backend
 * sees only this file and its own library: no sockets, no libev, no protocol.
 *
 * Times are absolute unix seconds. The handler converts TTLs before calling,
 * so a persisted exptime means the same thing after a restart. The caller
 * passes "now" with every call (struct store_call) so backends never read a
 * clock on the request path and tests can move time at will.
 */
#ifndef STASHD_STORAGE_H
#define STASHD_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_OPS_V1 1u
#define STORE_KEY_MAX 250u

struct store;       /* opaque: one per process, shared by all threads */
struct store_thr;   /* opaque: one per worker thread (txn, connection...) */

typedef enum store_rc {
    STORE_OK = 0,
    STORE_ENOENT,       /* no such key (or expired, or flushed) */
    STORE_EEXISTS,      /* CAS mismatch */
    STORE_NOT_STORED,   /* add on existing, replace/append/prepend on missing */
    STORE_E2BIG,        /* item larger than the item size limit */
    STORE_EDELTA,       /* incr/decr on a value that is not a number */
    STORE_ENOMEM,       /* out of memory (-M, map full, disk full) */
    STORE_EIO,          /* the backend failed to read or write */
    STORE_ECORRUPT,     /* data on disk is not ours or is damaged */
    STORE_ELOCKED,      /* another process holds the data directory */
    STORE_EINVAL        /* bad configuration */
} store_rc_e;

typedef enum store_mode {
    STORE_SET = 0,
    STORE_ADD,
    STORE_REPLACE,
    STORE_APPEND,
    STORE_PREPEND
} store_mode_e;

typedef enum store_sync {
    STORE_SYNC_PERIODIC = 0,
    STORE_SYNC_ALWAYS,
    STORE_SYNC_NONE
} store_sync_e;

/* Everything a backend may need to open; filled from the command line. */
struct store_cfg {
    uint64_t     mem_limit;        /* -m, bytes of item data */
    uint32_t     item_max;         /* -I, largest item in bytes */
    uint32_t     chunk_min;        /* -n, smallest slab chunk payload */
    double       factor;           /* -f, slab class growth factor */
    bool         no_evict;         /* -M: answer ENOMEM instead of evicting */
    unsigned     threads;          /* worker threads that will attach */
    const char  *data_dir;         /* persistent backends only */
    store_sync_e sync;             /* persistent backends only */
    uint32_t     sync_interval_ms; /* persistent backends only */
    uint32_t     now;              /* unix time at open */
    const char  *boot_id;          /* the machine's boot id; NULL: the
                                    * kernel's (a new one at open means
                                    * the machine restarted meanwhile) */
    char        *err;              /* open writes why it failed here, */
    size_t       errlen;           /* naming the file; may be NULL */
};

struct store_key {
    const void *data;
    size_t      len;               /* 1..STORE_KEY_MAX, checked by caller */
};

/*
 * An item going in (store) or coming out (get). On the way out, data stays
 * valid until release(); pin is private to the backend (a refcounted item
 * for memory, a copy for disk backends).
 */
struct store_item {
    const void *data;
    uint32_t    len;
    uint32_t    flags;
    uint32_t    exptime;           /* absolute; 0 = never */
    uint64_t    cas;               /* in: 0 = unconditional; out: current */
    void       *pin;               /* private */
};

struct store_delta {
    uint64_t by;
    uint64_t initial;
    uint32_t exptime;              /* for a created item */
    uint64_t cas;                  /* 0 = unconditional */
    bool     decr;
    bool     create;               /* create a missing key with initial */
};

/*
 * Where a copying backend puts the bytes of a value it returns: memory the
 * caller owns for as long as the reply needs it. reserve returns NULL when
 * it cannot give len bytes.
 */
struct store_sink {
    void *(*reserve)(struct store_sink *sk, size_t len);
};

/*
 * A write that is applied but not yet durable. The caller sets done; a
 * backend that sets call->pending calls done exactly once, from any thread,
 * when the write is on disk (rc STORE_OK) or cannot be made durable (an
 * error: the write must be reported as failed). The caller must not send
 * the reply before. For one caller, completions come in the order its
 * writes were made, and once one has failed every later one fails too.
 */
struct store_wait {
    void (*done)(struct store_wait *w, store_rc_e rc);
};

/* Per-call context: one per request, caller-owned. */
struct store_call {
    uint32_t           now;        /* in: current unix time */
    struct store_sink *sink;       /* in: for copying backends; may be NULL */
    struct store_wait *wait;       /* in: NULL = return only once durable */
    bool               pending;    /* out: wait->done will be called */
};

/* One plain set of a group run by set_many. */
struct store_set {
    struct store_call  call;   /* in: now, wait (sink unused); out: pending */
    struct store_key   k;      /* in */
    struct store_item  in;     /* in: in.cas must be 0 */
    store_rc_e         rc;     /* out */
    uint64_t           cas;    /* out: the new CAS, when rc is STORE_OK */
};

/* Figures every backend reports, in memcached's units. */
struct store_stats {
    uint64_t curr_items;
    uint64_t total_items;
    uint64_t bytes;
    uint64_t evictions;
    uint64_t expired_unfetched;
    uint64_t evicted_unfetched;
    uint64_t reclaimed;
    uint64_t get_expired;
    uint64_t get_flushed;
    uint64_t limit_maxbytes;
};

/* Called once per line of a stats group; both strings are NUL-terminated. */
typedef void (*store_emit_fn)(void *arg, const char *name, const char *value);

/*
 * The vtable. Unless a member says otherwise it is thread-safe as long as
 * each thread uses only the store_thr it attached.
 */
struct store_ops {
    uint32_t    version;           /* STORE_OPS_V1; new members only at end */
    const char *name;              /* "memory" | "lmdb" | "sqlite" */

    /* Opens the store whole or fails having freed everything. */
    store_rc_e (*open)(const struct store_cfg *cfg, struct store **out);
    /* Flushes and frees; every thr must be detached. Sets *s = NULL. */
    void (*close)(struct store **s);
    /* Gives the calling thread its per-thread state. */
    store_rc_e (*attach)(struct store *s, struct store_thr **out);
    /* Frees a thread's state; sets *t = NULL; NULL is a no-op. */
    void (*detach)(struct store_thr **t);

    /*
     * Looks up key; on STORE_OK fills *out, to be released exactly once.
     * With touch non-NULL, also sets the exptime to *touch (GAT).
     */
    store_rc_e (*get)(struct store_thr *t, struct store_call *c,
                      const struct store_key *k, const uint32_t *touch,
                      struct store_item *out);
    /* Ends the borrow of a value returned by get. */
    void (*release)(struct store_thr *t, struct store_item *it);
    /*
     * Stores per mode; in->cas != 0 makes it conditional. Append and prepend
     * keep the old flags and exptime. *cas_out gets the new CAS.
     */
    store_rc_e (*store)(struct store_thr *t, struct store_call *c,
                        store_mode_e m, const struct store_key *k,
                        const struct store_item *in, uint64_t *cas_out);
    /* Deletes key; cas != 0 makes it conditional. */
    store_rc_e (*del)(struct store_thr *t, struct store_call *c,
                      const struct store_key *k, uint64_t cas);
    /*
     * Adds or subtracts (wrapping at 2^64 up, stopping at 0 down); a missing
     * key is created with d->initial when d->create. *value and *cas_out get
     * the result. The value is stored as decimal ASCII.
     */
    store_rc_e (*arith)(struct store_thr *t, struct store_call *c,
                        const struct store_key *k, const struct store_delta *d,
                        uint64_t *value, uint64_t *cas_out);
    /* Sets a live item's exptime, keeping its CAS. */
    store_rc_e (*touch)(struct store_thr *t, struct store_call *c,
                        const struct store_key *k, uint32_t exptime);
    /*
     * Invalidates every item stored before time when (when <= c->now: every
     * item now); O(1) at request time.
     */
    store_rc_e (*flush)(struct store_thr *t, struct store_call *c,
                        uint32_t when);
    /* Fills the common figures. */
    void (*stats)(struct store_thr *t, struct store_stats *out);
    /*
     * Emits group's lines: "" = backend-specific general figures (prefixed
     * with the backend name), else e.g. "items", "slabs", "sizes".
     * STORE_ENOENT when the group is unknown to this backend.
     */
    store_rc_e (*stats_group)(struct store_thr *t, const char *group,
                              store_emit_fn emit, void *arg);
    /*
     * The calling thread is about to wait for work: lets go of whatever it
     * kept between calls (sqlite: its read snapshot). NULL when a backend
     * keeps nothing; callers check.
     */
    void (*idle)(struct store_thr *t);
    /*
     * Runs n plain sets in order as one group (one wait for all, so they
     * share a commit), filling each one's rc, cas and call.pending as
     * store does. NULL when grouping gains a backend nothing (memory).
     */
    void (*set_many)(struct store_thr *t, struct store_set *v, size_t n);
};

/* The backend registered under name, or NULL when unknown. */
const struct store_ops *store_find(const char *name);

/* A short English text for rc, never NULL. */
const char *store_strerror(store_rc_e rc);

/* The memory backend: slab allocator, striped hash, per-class LRU. */
extern const struct store_ops store_mem_ops;

/* The lmdb backend: persistent, one LMDB environment per data directory. */
extern const struct store_ops store_lmdb_ops;

/* The sqlite backend: persistent, one WAL-mode database per data directory. */
extern const struct store_ops store_sqlite_ops;

#endif /* STASHD_STORAGE_H */
