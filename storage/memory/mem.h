/*
 * Internals of the memory backend, shared by its files and by nobody else:
 * the item layout, the slab classes with their LRUs, the striped hash table
 * and struct store itself. Everything hangs off one struct store, so two
 * stores in one process never share state. Lock order: a stripe lock, then
 * a class lock; the only code that holds a class lock and wants a stripe is
 * the evictor, and it uses trylock. Only the table swap takes every stripe
 * (in index order) and it holds no class lock meanwhile.
 */
#ifndef STASHD_STORAGE_MEM_H
#define STASHD_STORAGE_MEM_H

#include "storage/storage.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MEM_NSTRIPE       1024u   /* power of two; <= buckets */
#define MEM_HASH_POWER0   16u     /* 65536 buckets, as memcached starts */
#define MEM_PAGE_SIZE     (1024u * 1024u)
#define MEM_MAX_CLASSES   63u     /* ids 1..63 like memcached; 0 unused */
#define MEM_CHUNK_ALIGN   8u
#define MEM_TICK_MS       100u    /* maintenance thread period */

/* iflags bits. */
#define IT_LINKED  0x01u          /* in the hash table and its LRU */
#define IT_ACTIVE  0x02u          /* read since the evictor last saw it */
#define IT_FETCHED 0x04u          /* read at least once */

/*
 * One stored item, at the start of a slab chunk. 55 bytes before the data,
 * so an item memcached 1.6 accepts (59 bytes of overhead without flags)
 * always fits here too. Fields other than refcount and iflags change only
 * under the item's stripe lock; the LRU links only under its class lock.
 */
struct item {
    struct item     *lru_prev;    /* private: newer neighbour, class lock */
    struct item     *lru_next;    /* private: older neighbour, class lock */
    struct item     *h_next;      /* private: bucket chain, or free list */
    uint64_t         cas;         /* rw: stripe lock */
    uint32_t         exptime;     /* rw: absolute; 0 = never */
    uint32_t         time;        /* ro: when stored (c->now) */
    uint32_t         flags;       /* ro */
    uint32_t         vlen;        /* ro */
    _Atomic uint32_t refcount;    /* 1 for the table + 1 per pin */
    _Atomic uint8_t  iflags;      /* IT_* */
    uint8_t          nkey;        /* ro */
    uint8_t          clsid;       /* ro */
    unsigned char    data[];      /* key, then value; no terminator */
};

#define ITEM_HDR offsetof(struct item, data)

/* Per-class figures, all under the class lock. */
struct mem_cls_stats {
    uint64_t evicted;
    uint64_t evicted_nonzero;
    uint64_t evicted_time;
    uint64_t evicted_unfetched;
    uint64_t evicted_active;
    uint64_t outofmemory;
    uint64_t reclaimed;
    uint64_t expired_unfetched;
    uint64_t crawler_reclaimed;
    uint64_t crawler_checked;
    uint64_t reflocked;
    uint64_t moves_within_lru;
};

/* One slab class: chunk free list, pages and LRU under one lock. */
struct mem_class {
    _Alignas(64) pthread_mutex_t lock;
    uint32_t             size;        /* ro: chunk bytes */
    uint32_t             perpage;     /* ro: chunks per page */
    uint64_t             page_bytes;  /* ro: perpage * size */
    struct item         *free;        /* private: chunk free list */
    uint64_t             nfree;
    uint64_t             nchunks;     /* carved from pages */
    void               **pages;       /* private: for close */
    size_t               npages;
    size_t               pages_cap;
    struct item         *head;        /* private: LRU, newest */
    struct item         *tail;        /* private: LRU, oldest */
    uint64_t             nitems;
    uint64_t             bytes;       /* sum of linked items' sizes */
    struct mem_cls_stats st;
};

/* The hash table proper: a power of two of chained buckets. */
struct mem_table {
    struct item **b;
    uint64_t      mask;               /* buckets - 1 */
};

/* Per-class operation counters, kept per thread and summed by stats. */
enum mem_ctr {
    CTR_GET_HITS = 0,
    CTR_CMD_SET,
    CTR_DELETE_HITS,
    CTR_INCR_HITS,
    CTR_DECR_HITS,
    CTR_CAS_HITS,
    CTR_CAS_BADVAL,
    CTR_TOUCH_HITS,
    CTR_N
};

/* Store-wide operation counters, kept per thread. */
struct mem_thr_ctr {
    _Atomic uint64_t total_items;
    _Atomic uint64_t get_expired;
    _Atomic uint64_t get_flushed;
    _Atomic uint64_t cls[MEM_MAX_CLASSES + 1][CTR_N];
};

struct store_thr {
    struct store      *s;             /* ro */
    struct store_thr  *next;          /* private: s->thrs, s->thr_lock */
    struct store_thr  *prev;
    struct mem_thr_ctr ctr;           /* rw by owner, read by stats */
};

struct store {
    /* ro after open */
    uint64_t          mem_limit;
    uint32_t          item_max;
    bool              no_evict;
    unsigned          nclasses;       /* valid ids 1..nclasses */
    uint64_t          seed;

    _Atomic uint64_t  cas_next;       /* last CAS handed out */
    _Atomic uint64_t  flush_cas;      /* items with cas <= this are dead */
    _Atomic uint32_t  flush_time;     /* items stored before it are dead */
    _Atomic uint32_t  now_seen;       /* latest c->now, for the sweeper */
    _Atomic uint64_t  malloced;       /* bytes of slab pages */
    _Atomic uint64_t  malloc_fails;

    /* Written only with every stripe lock held, read under any one. */
    struct mem_table *tab;
    struct mem_table *old;            /* non-NULL while migrating */
    _Atomic uint64_t  mig_pos;        /* old buckets below are moved */
    _Atomic bool      growing;        /* for stats only */

    pthread_mutex_t   stripe[MEM_NSTRIPE];
    struct mem_class  cls[MEM_MAX_CLASSES + 1];

    pthread_mutex_t   thr_lock;       /* guards thrs and retired */
    struct store_thr *thrs;
    struct mem_thr_ctr retired;       /* counters of detached threads */

    /* Maintenance thread: grows the table and sweeps dead items. */
    pthread_t         maint;
    pthread_mutex_t   maint_lock;
    pthread_cond_t    maint_cond;
    bool              maint_stop;     /* maint_lock */
    uint64_t          sweep_pos;      /* maintenance thread only */
};

/* A 64-bit hash of n bytes under seed; fast, well mixed, not keyed. */
uint64_t store_mem_hash(uint64_t seed, const void *p, size_t n);

/* The stripe guarding every bucket that hv can fall into. */
static inline pthread_mutex_t *
mem_stripe(struct store *s, uint64_t hv)
{
    return &s->stripe[hv & (MEM_NSTRIPE - 1)];
}

/* The key of it hashed as lookups do. */
static inline uint64_t
mem_item_hash(struct store *s, const struct item *it)
{
    return store_mem_hash(s->seed, it->data, it->nkey);
}

/* Bytes an item with these lengths occupies. */
static inline uint64_t
mem_item_total(size_t nkey, size_t vlen)
{
    return ITEM_HDR + (uint64_t)nkey + vlen;
}

/* True when it is dead at now: expired, or flushed; *flushed tells which. */
bool store_mem_item_dead(struct store *s, const struct item *it, uint32_t now,
                         bool *flushed);

/* Builds the classes from cfg; false when cfg makes no sense. */
bool store_mem_slab_setup(struct store *s, uint32_t chunk_min, double factor);

/* Frees every page and class lock. */
void store_mem_slab_teardown(struct store *s);

/* Class id for an item of total bytes, or 0 when it is too large. */
unsigned store_mem_slab_id(struct store *s, uint64_t total);

/*
 * A chunk for an item of total bytes, refcount 1 and not linked: free list,
 * else a new page within mem_limit, else the LRU tail. NULL when none can be
 * had. The caller may hold one stripe lock (trylock keeps it safe).
 */
struct item *store_mem_item_alloc(struct store *s, uint64_t total,
                                  uint32_t now);

/* Returns an unlinked chunk whose last reference is gone; sets *it NULL. */
void store_mem_item_free(struct store *s, struct item **it);

/* Drops one reference; frees the chunk when it was the last. */
void store_mem_item_unref(struct store *s, struct item *it);

/* Puts it at the head of its LRU and counts it; caller holds its stripe. */
void store_mem_lru_link(struct store *s, struct item *it);

/*
 * Takes it out of its LRU and drops the table's reference; caller holds its
 * stripe and has already removed it from the chain. swept counts it as
 * reclaimed by the sweeper.
 */
void store_mem_lru_unlink(struct store *s, struct item *it, bool swept);

/* Allocates a table of 2^power empty buckets; NULL when out of memory. */
struct mem_table *store_mem_table_create(unsigned power);

/* Frees a table (not its items); sets *t = NULL. */
void store_mem_table_destroy(struct mem_table **t);

/* The chain head that hv lives in; caller holds mem_stripe(s, hv). */
struct item **store_mem_bucket(struct store *s, uint64_t hv);

/* Finds key in its bucket, dead or alive; caller holds the stripe. */
struct item *store_mem_find(struct store *s, uint64_t hv, const void *key,
                            size_t nkey);

/* Inserts it at its bucket's head; caller holds the stripe. */
void store_mem_chain_insert(struct store *s, uint64_t hv, struct item *it);

/* Removes it from its bucket; caller holds the stripe. */
void store_mem_chain_remove(struct store *s, uint64_t hv, struct item *it);

/*
 * Removes a linked item from the table and its LRU and drops the table's
 * reference; pins keep the memory until released. Caller holds the stripe.
 */
void store_mem_unlink(struct store *s, uint64_t hv, struct item *it);

/* Adds 1 to a counter only the calling thread writes; no locked insn. */
static inline void
mem_ctr_inc(_Atomic uint64_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

/* Starts doubling the table; false when out of memory. Maintenance only. */
bool store_mem_grow_start(struct store *s);

/* Moves up to nbuckets old buckets; true when all are moved. */
bool store_mem_grow_step(struct store *s, uint64_t nbuckets);

/* Drops the old table once every bucket has moved. */
void store_mem_grow_finish(struct store *s);

/* Starts the maintenance thread; false when it cannot. */
bool store_mem_maint_start(struct store *s);

/* Stops and joins the maintenance thread. */
void store_mem_maint_stop(struct store *s);

/* Store-wide figures (stats op). */
void store_mem_stats(struct store_thr *t, struct store_stats *out);

/* One stats group (stats_group op). */
store_rc_e store_mem_stats_group(struct store_thr *t, const char *group,
                                 store_emit_fn emit, void *arg);

/* The per-thread counters summed over every thread, attached or not. */
struct mem_ctr_sum {
    uint64_t total_items;
    uint64_t get_expired;
    uint64_t get_flushed;
    uint64_t cls[MEM_MAX_CLASSES + 1][CTR_N];
};

/* Sums every attached thread's counters and the retired ones into *out. */
void store_mem_ctr_sum(struct store *s, struct mem_ctr_sum *out);

/* Adds a detaching thread's counters to the retired ones; thr_lock held. */
void store_mem_ctr_retire(struct store *s, const struct mem_thr_ctr *c);

#endif /* STASHD_STORAGE_MEM_H */
