/*
 * The persistent write engine and the record store beneath it. memcached's
 * write semantics (the store modes, CAS, append/prepend, incr/decr,
 * touch/GAT, flush epochs, TTL, the eviction window, recency hints, the
 * sweeper, batches and their retry, checksums) live once, in storage/kv/,
 * over the small record-store interface below that each persistent backend
 * (lmdb/, sqlite/) implements. An adapter only stores and finds records:
 * it never decides whether an item is alive, never assigns a CAS and never
 * counts bytes; the engine never calls a library directly. This header is
 * what an adapter sees of the engine; storage/kv/kv_int.h is the rest.
 */
#ifndef STASHD_STORAGE_KV_H
#define STASHD_STORAGE_KV_H

#include "storage/storage.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What an adapter call can report; the engine maps these to store_rc_e. */
typedef enum kv_err {
    KV_OK = 0,
    KV_NOTFOUND,       /* no record under the key */
    KV_FULL,           /* the store's own size limit: map, page count */
    KV_NOSPC,          /* the disk (or quota) is full */
    KV_BUSY,           /* another process holds a lock too long */
    KV_CORRUPT,        /* the library found the file damaged */
    KV_DAMAGED,        /* a record whose parts do not fit together (its
                        * value's row missing or of the wrong length): the
                        * view's r and vlen (as recorded) are set, and the
                        * engine treats it as failing its checksum */
    KV_NOMEM,          /* memory ran out */
    KV_EIO             /* any other failure of the library or the OS */
} kv_err_e;

/* An item's metadata as it is stored beside the key and the value. */
struct kv_rec {
    uint64_t cas;
    uint32_t flags;
    uint32_t exptime;      /* absolute; 0 = never */
    uint32_t stored;       /* unix time written: delayed flush */
    uint32_t atime;        /* last access, a hint (not checksummed) */
    uint32_t iflags;       /* KV_IF_*, hints (not checksummed) */
    uint64_t sum;          /* kv_sum_*: key+value and metadata checksums */
};

#define KV_IF_FETCHED 0x1u

/* A record an adapter found; val stays valid as each call below says. */
struct kv_view {
    struct kv_rec r;
    const void   *val;     /* NULL unless the value was asked for */
    size_t        vlen;    /* always set */
};

/*
 * Store-wide state the engine persists through the adapter. cas_max as
 * handed to commit is a ceiling above every CAS handed out (leased ahead,
 * so that an adapter that writes it rarely still resumes above them all).
 */
struct kv_meta {
    uint64_t flush_cas;    /* items with cas <= this are dead */
    uint64_t cas_max;
    uint64_t bytes;        /* sum of kv_item_size of every record */
    uint64_t items;        /* records, dead ones not yet swept included */
    uint32_t flush_time;   /* items stored before it are dead from then */
    uint32_t created;      /* unix time the store was made */
};

/* What one item counts against -m: as memcached, about 48 + key + value. */
#define KV_ITEM_OVERHEAD 48u

static inline uint64_t
kv_item_size(size_t klen, size_t vlen)
{
    return KV_ITEM_OVERHEAD + (uint64_t)klen + vlen;
}

/* Visits one record of a scan; false stops the scan. */
typedef bool (*kv_scan_fn)(void *arg, const void *key, size_t klen,
                           const struct kv_view *v);

struct kv_be;          /* an adapter's open store */
struct kv_rd;          /* an adapter's reader, one per attached thread */

/* What the engine lends an adapter: its upkeep, damage it finds. */
struct kv_host {
    void     *s;                                   /* private */
    /* Runs fn(arg) holding the write lead alone, between batches. */
    void     (*exclusive)(void *s, void (*fn)(void *), void *arg);
    /* The number of the last commit. */
    uint64_t (*seq)(void *s);
    /* A record found damaged: logged, counted, removed; any thread. */
    void     (*bad)(void *s, const void *key, size_t klen, uint64_t cas);
};

/* An adapter error as a store_rc_e (FULL and NOMEM are ENOMEM). */
store_rc_e kv_rc(kv_err_e e);

/*
 * The record store. Unless said otherwise a member returns KV_OK or an
 * error and may be called from any thread holding what it names: a reader
 * by its own thread only, the writer members by the write lead only (one
 * thread at a time, between begin and commit/abort). A writer member that
 * fails may leave its work half done: the engine then aborts the whole
 * transaction, never commits it.
 */
struct kv_backend {
    const char *name;        /* "lmdb": also the stats prefix */
    const char *file;        /* the main file's name, for messages */
    /*
     * Under --sync=none, a consistency sync this often (ms), when the
     * store needs one to survive a power loss at all; 0 = never.
     */
    uint32_t    none_sync_ms;
    /*
     * Commits after which a sync is due whatever the interval, and eight
     * times which writers wait for it: for a store whose file grows until
     * a sync (a pinned snapshot); 0 = none.
     */
    uint64_t    sync_pressure;

    /*
     * Opens or creates the store in dir (made and locked by the engine).
     * Fills *m from the file; items and bytes must be exact (recounted if
     * need be). A file that is not this backend's, damaged, or of another
     * format is refused with a message naming it (persist_err).
     */
    store_rc_e (*open)(const struct store_cfg *cfg, const char *dir,
                       const struct kv_host *host, struct kv_be **out,
                       struct kv_meta *m);
    /* Writes m as the final state (clean: nothing failed) and closes. */
    void (*close)(struct kv_be *b, const struct kv_meta *m, bool clean);
    /* Makes every commit so far durable: 0 or an errno. Syncer only. */
    int (*sync)(struct kv_be *b);

    /* A reader for the calling thread. */
    kv_err_e (*rd_open)(struct kv_be *b, struct kv_rd **out);
    /* Frees it; NULL is a no-op. */
    void (*rd_close)(struct kv_rd *r);
    /*
     * Finds key at a snapshot holding every commit up to seq, value
     * included; v->val stays valid until rd_end. KV_DAMAGED as load
     * says. Call rd_end after any result.
     */
    kv_err_e (*rd_get)(struct kv_rd *r, uint64_t seq, const void *key,
                       size_t klen, struct kv_view *v);
    /* Ends what rd_get started. */
    void (*rd_end)(struct kv_rd *r);
    /* Lets go of whatever the reader keeps between calls; may be NULL. */
    void (*rd_idle)(struct kv_rd *r);
    /*
     * Visits up to limit records with key >= from (flen 0: from the
     * first) in key order, without values; a fresh snapshot.
     */
    kv_err_e (*rd_scan)(struct kv_rd *r, const void *from, size_t flen,
                        unsigned limit, kv_scan_fn fn, void *arg);
    /*
     * Visits up to limit records with 0 < exptime <= now, without values;
     * NULL when the adapter has no index for it (the sweeper then scans).
     */
    kv_err_e (*rd_expired)(struct kv_rd *r, uint32_t now, unsigned limit,
                           kv_scan_fn fn, void *arg);

    /* Starts the write transaction of a batch. */
    kv_err_e (*begin)(struct kv_be *b);
    /*
     * Finds key in the write transaction; the value only when with_value.
     * v->val stays valid until the next writer call. KV_DAMAGED when
     * the value cannot be had as recorded (with_value only).
     */
    kv_err_e (*load)(struct kv_be *b, const void *key, size_t klen,
                     bool with_value, struct kv_view *v);
    /* Writes key -> r and the value a[0, na) + c[0, nc). */
    kv_err_e (*put)(struct kv_be *b, const void *key, size_t klen,
                    const struct kv_rec *r, const void *a, size_t na,
                    const void *c, size_t nc);
    /* Rewrites an existing record's metadata, keeping its value. */
    kv_err_e (*put_rec)(struct kv_be *b, const void *key, size_t klen,
                        const struct kv_rec *r);
    /* Removes key; KV_NOTFOUND when it is not there. */
    kv_err_e (*del)(struct kv_be *b, const void *key, size_t klen);
    /* rd_scan inside the write transaction (the evictor's window). */
    kv_err_e (*window)(struct kv_be *b, const void *from, size_t flen,
                       unsigned limit, kv_scan_fn fn, void *arg);
    /*
     * Commits, with m as the store's state; meta_due says the state must
     * be in this commit (the flush state or the CAS ceiling changed, or
     * it is the first commit since open); otherwise writing it is the
     * adapter's choice. On failure the transaction is gone.
     */
    kv_err_e (*commit)(struct kv_be *b, const struct kv_meta *m,
                       bool meta_due);
    /* Drops the write transaction. */
    void (*abort)(struct kv_be *b);

    /*
     * Gives back disk space the store holds but no longer needs (sqlite:
     * the WAL, copied into the database and truncated). The write lead's,
     * between transactions; may be NULL.
     */
    kv_err_e (*reclaim)(struct kv_be *b);

    /*
     * The maintenance thread's round, with its own reader: the adapter's
     * upkeep (sqlite: checkpoints). May be NULL.
     */
    void (*tick)(struct kv_be *b, struct kv_rd *r);
    /* Emits the adapter's own "stats" lines, prefixed with its name. */
    void (*stats)(struct kv_be *b, struct kv_rd *r, store_emit_fn emit,
                  void *arg);
};

/* Opens a store whose records live in be (the store_ops open of each). */
store_rc_e kv_open(const struct kv_backend *be, const struct store_cfg *cfg,
                   struct store **out);

/* The rest of store_ops, the same for every persistent backend. */
void kv_close(struct store **sp);
store_rc_e kv_attach(struct store *s, struct store_thr **out);
void kv_detach(struct store_thr **tp);
store_rc_e kv_get(struct store_thr *t, struct store_call *c,
                  const struct store_key *k, const uint32_t *touch,
                  struct store_item *out);
void kv_release(struct store_thr *t, struct store_item *it);
store_rc_e kv_store(struct store_thr *t, struct store_call *c,
                    store_mode_e m, const struct store_key *k,
                    const struct store_item *in, uint64_t *cas_out);
store_rc_e kv_del(struct store_thr *t, struct store_call *c,
                  const struct store_key *k, uint64_t cas);
store_rc_e kv_arith(struct store_thr *t, struct store_call *c,
                    const struct store_key *k, const struct store_delta *d,
                    uint64_t *value, uint64_t *cas_out);
store_rc_e kv_touch(struct store_thr *t, struct store_call *c,
                    const struct store_key *k, uint32_t exptime);
store_rc_e kv_flush(struct store_thr *t, struct store_call *c,
                    uint32_t when);
void kv_stats(struct store_thr *t, struct store_stats *out);
store_rc_e kv_stats_group(struct store_thr *t, const char *group,
                          store_emit_fn emit, void *arg);
void kv_idle(struct store_thr *t);
void kv_set_many(struct store_thr *t, struct store_set *v, size_t n);

/* The store_ops of a persistent backend whose open calls kv_open. */
#define KV_STORE_OPS(backend_name, open_fn)                                \
    {                                                                      \
        .version = STORE_OPS_V1, .name = (backend_name),                   \
        .open = (open_fn), .close = kv_close, .attach = kv_attach,         \
        .detach = kv_detach, .get = kv_get, .release = kv_release,         \
        .store = kv_store, .del = kv_del, .arith = kv_arith,               \
        .touch = kv_touch, .flush = kv_flush, .stats = kv_stats,           \
        .stats_group = kv_stats_group, .idle = kv_idle,                    \
        .set_many = kv_set_many,                                           \
    }

/*
 * Checksums. A record's sum is two CRC-32Cs: the high half over the key
 * and the value, the low half over the high half and the metadata that
 * decides what a client sees (cas, flags, exptime, stored). So a change of
 * metadata alone (touch) needs no value to re-sum, and an adapter never
 * computes one: the engine sums what it writes and checks what it reads.
 */

/* CRC-32C of p[0, n) continuing from crc (0 to start). */
uint32_t kv_crc32c(uint32_t crc, const void *p, size_t n);

/* The key+value half for key and the value a + c. */
uint32_t kv_sum_kv(const void *key, size_t klen, const void *a, size_t na,
                   const void *c, size_t nc);

/* The whole sum of r given the key+value half. */
uint64_t kv_sum_make(uint32_t kv, const struct kv_rec *r);

/* True when r's metadata matches its sum (no value needed). */
bool kv_sum_meta_ok(const struct kv_rec *r);

/* True when r, key and value all match r's sum. */
bool kv_sum_ok(const struct kv_rec *r, const void *key, size_t klen,
               const void *val, size_t vlen);

/*
 * Makes *buf hold at least n bytes (doubling from 4 KB, contents kept);
 * false when memory ran out, *buf untouched.
 */
bool kv_grow(unsigned char **buf, size_t *cap, size_t n);

/*
 * Whether dir's file system has less than min bytes left for us: tells a
 * full disk from the store's own limit when a library says only "full".
 */
bool kv_disk_full(const char *dir, uint64_t min);

/*
 * The reserve: a file of KV_RESERVE bytes kept in every persistent data
 * directory and given back when the disk is full, so that a store can
 * still open (sqlite needs its -shm) and deletes can still free space.
 */
#define KV_RESERVE_FILE "stashd.reserve"
#define KV_RESERVE      (1024u * 1024u)

/* Whether dir holds its reserve. */
bool kv_reserve_exists(const char *dir);

/* Deletes dir's reserve; true when there was one to give back. */
bool kv_reserve_release(const char *dir);

/*
 * Makes dir's reserve unless it exists: KV_RESERVE bytes, or what there is
 * above min free (KV_RESERVE / 4 at least) if that is half of it or more.
 */
void kv_reserve_make(const char *dir, uint64_t min);

/* Little-endian helpers for adapters' on-disk layouts. */
static inline void
kv_put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static inline void
kv_put64(unsigned char *p, uint64_t v)
{
    kv_put32(p, (uint32_t)v);
    kv_put32(p + 4, (uint32_t)(v >> 32));
}

static inline uint32_t
kv_get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static inline uint64_t
kv_get64(const unsigned char *p)
{
    return (uint64_t)kv_get32(p) | (uint64_t)kv_get32(p + 4) << 32;
}

#endif /* STASHD_STORAGE_KV_H */
