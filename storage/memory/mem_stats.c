/*
 * The memory backend's statistics: per-thread operation counters summed on
 * demand, per-class figures read under each class lock, and the "items",
 * "slabs" and "sizes" groups in memcached 1.6's names and order. It only
 * reads; a stats call never holds two locks at once.
 */
#include "storage/memory/mem.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static void
ctr_add(struct mem_ctr_sum *out, const struct mem_thr_ctr *c)
{
    out->total_items += atomic_load_explicit(&c->total_items,
                                             memory_order_relaxed);
    out->get_expired += atomic_load_explicit(&c->get_expired,
                                             memory_order_relaxed);
    out->get_flushed += atomic_load_explicit(&c->get_flushed,
                                             memory_order_relaxed);
    for (unsigned id = 0; id <= MEM_MAX_CLASSES; id++) {
        for (unsigned k = 0; k < CTR_N; k++) {
            out->cls[id][k] += atomic_load_explicit(&c->cls[id][k],
                                                    memory_order_relaxed);
        }
    }
}

static void
atomic_add(_Atomic uint64_t *dst, const _Atomic uint64_t *src)
{
    atomic_fetch_add_explicit(dst, atomic_load_explicit(src,
                              memory_order_relaxed), memory_order_relaxed);
}

void
store_mem_ctr_retire(struct store *s, const struct mem_thr_ctr *c)
{
    atomic_add(&s->retired.total_items, &c->total_items);
    atomic_add(&s->retired.get_expired, &c->get_expired);
    atomic_add(&s->retired.get_flushed, &c->get_flushed);
    for (unsigned id = 0; id <= MEM_MAX_CLASSES; id++) {
        for (unsigned k = 0; k < CTR_N; k++) {
            atomic_add(&s->retired.cls[id][k], &c->cls[id][k]);
        }
    }
}

void
store_mem_ctr_sum(struct store *s, struct mem_ctr_sum *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&s->thr_lock);
    ctr_add(out, &s->retired);
    for (struct store_thr *t = s->thrs; t != NULL; t = t->next) {
        ctr_add(out, &t->ctr);
    }
    pthread_mutex_unlock(&s->thr_lock);
}

/* A consistent copy of one class's figures. */
struct cls_snap {
    uint32_t             size;
    uint32_t             perpage;
    uint64_t             npages;
    uint64_t             nchunks;
    uint64_t             nfree;
    uint64_t             nitems;
    uint64_t             bytes;
    uint32_t             tail_time;
    struct mem_cls_stats st;
};

static void
cls_snap(struct store *s, unsigned id, struct cls_snap *out)
{
    struct mem_class *c = &s->cls[id];

    pthread_mutex_lock(&c->lock);
    out->size = c->size;
    out->perpage = c->perpage;
    out->npages = c->npages;
    out->nchunks = c->nchunks;
    out->nfree = c->nfree;
    out->nitems = c->nitems;
    out->bytes = c->bytes;
    out->tail_time = c->tail != NULL ? c->tail->time : 0;
    out->st = c->st;
    pthread_mutex_unlock(&c->lock);
}

void
store_mem_stats(struct store_thr *t, struct store_stats *out)
{
    struct store *s = t->s;
    struct mem_ctr_sum sum;

    memset(out, 0, sizeof(*out));
    for (unsigned id = 1; id <= s->nclasses; id++) {
        struct cls_snap cs;

        cls_snap(s, id, &cs);
        out->curr_items += cs.nitems;
        out->bytes += cs.bytes;
        out->evictions += cs.st.evicted;
        out->expired_unfetched += cs.st.expired_unfetched;
        out->evicted_unfetched += cs.st.evicted_unfetched;
        out->reclaimed += cs.st.reclaimed;
    }
    store_mem_ctr_sum(s, &sum);
    out->total_items = sum.total_items;
    out->get_expired = sum.get_expired;
    out->get_flushed = sum.get_flushed;
    out->limit_maxbytes = s->mem_limit;
}

/* Emits "<prefix><id>:<name>" = v. */
static void
emit_u64(store_emit_fn emit, void *arg, const char *prefix, unsigned id,
         const char *name, uint64_t v)
{
    char key[96];
    char val[24];

    if (prefix != NULL) {
        snprintf(key, sizeof(key), "%s%u:%s", prefix, id, name);
    } else {
        snprintf(key, sizeof(key), "%s", name);
    }
    snprintf(val, sizeof(val), "%" PRIu64, v);
    emit(arg, key, val);
}

static void
group_items(struct store *s, store_emit_fn emit, void *arg)
{
    uint32_t now = atomic_load_explicit(&s->now_seen, memory_order_relaxed);
    struct mem_ctr_sum sum;

    store_mem_ctr_sum(s, &sum);
    for (unsigned id = 1; id <= s->nclasses; id++) {
        struct cls_snap cs;
        uint64_t age;

        cls_snap(s, id, &cs);
        if (cs.nitems == 0) {
            continue;
        }
        age = cs.tail_time != 0 && now > cs.tail_time ? now - cs.tail_time
                                                      : 0;
        /* One LRU per class: it is all "cold" in memcached's terms. */
        const struct { const char *name; uint64_t v; } rows[] = {
            { "number", cs.nitems },
            { "number_hot", 0 },
            { "number_warm", 0 },
            { "number_cold", cs.nitems },
            { "age_hot", 0 },
            { "age_warm", 0 },
            { "age", age },
            { "mem_requested", cs.bytes },
            { "evicted", cs.st.evicted },
            { "evicted_nonzero", cs.st.evicted_nonzero },
            { "evicted_time", cs.st.evicted_time },
            { "outofmemory", cs.st.outofmemory },
            { "tailrepairs", 0 },
            { "reclaimed", cs.st.reclaimed },
            { "expired_unfetched", cs.st.expired_unfetched },
            { "evicted_unfetched", cs.st.evicted_unfetched },
            { "evicted_active", cs.st.evicted_active },
            { "crawler_reclaimed", cs.st.crawler_reclaimed },
            { "crawler_items_checked", cs.st.crawler_checked },
            { "lrutail_reflocked", cs.st.reflocked },
            { "moves_to_cold", 0 },
            { "moves_to_warm", 0 },
            { "moves_within_lru", cs.st.moves_within_lru },
            { "direct_reclaims", 0 },
            { "hits_to_hot", 0 },
            { "hits_to_warm", 0 },
            { "hits_to_cold", sum.cls[id][CTR_GET_HITS] },
            { "hits_to_temp", 0 },
        };

        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
            emit_u64(emit, arg, "items:", id, rows[i].name, rows[i].v);
        }
    }
}

static void
group_slabs(struct store *s, store_emit_fn emit, void *arg)
{
    struct mem_ctr_sum sum;
    uint64_t active = 0;

    store_mem_ctr_sum(s, &sum);
    for (unsigned id = 1; id <= s->nclasses; id++) {
        struct cls_snap cs;
        const uint64_t *k = sum.cls[id];

        cls_snap(s, id, &cs);
        if (cs.npages == 0) {
            continue;
        }
        active++;
        const struct { const char *name; uint64_t v; } rows[] = {
            { "chunk_size", cs.size },
            { "chunks_per_page", cs.perpage },
            { "total_pages", cs.npages },
            { "total_chunks", cs.nchunks },
            { "used_chunks", cs.nchunks - cs.nfree },
            { "free_chunks", cs.nfree },
            { "free_chunks_end", 0 },
            { "get_hits", k[CTR_GET_HITS] },
            { "cmd_set", k[CTR_CMD_SET] },
            { "delete_hits", k[CTR_DELETE_HITS] },
            { "incr_hits", k[CTR_INCR_HITS] },
            { "decr_hits", k[CTR_DECR_HITS] },
            { "cas_hits", k[CTR_CAS_HITS] },
            { "cas_badval", k[CTR_CAS_BADVAL] },
            { "touch_hits", k[CTR_TOUCH_HITS] },
        };

        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
            emit_u64(emit, arg, "", id, rows[i].name, rows[i].v);
        }
    }
    emit_u64(emit, arg, NULL, 0, "active_slabs", active);
    emit_u64(emit, arg, NULL, 0, "total_malloced",
             atomic_load_explicit(&s->malloced, memory_order_relaxed));
}

static void
group_general(struct store *s, store_emit_fn emit, void *arg)
{
    uint64_t mask;
    unsigned power = 0;

    /* The table pointer is stable only under a stripe. */
    pthread_mutex_lock(&s->stripe[0]);
    mask = s->tab->mask;
    pthread_mutex_unlock(&s->stripe[0]);
    while (((uint64_t)1 << power) <= mask) {
        power++;
    }
    emit_u64(emit, arg, NULL, 0, "memory_hash_power_level", power);
    emit_u64(emit, arg, NULL, 0, "memory_hash_bytes",
             (mask + 1) * sizeof(struct item *));
    emit_u64(emit, arg, NULL, 0, "memory_hash_is_expanding",
             atomic_load_explicit(&s->growing, memory_order_relaxed));
    emit_u64(emit, arg, NULL, 0, "memory_slab_classes", s->nclasses);
    emit_u64(emit, arg, NULL, 0, "memory_total_malloced",
             atomic_load_explicit(&s->malloced, memory_order_relaxed));
    emit_u64(emit, arg, NULL, 0, "memory_malloc_fails",
             atomic_load_explicit(&s->malloc_fails, memory_order_relaxed));
}

store_rc_e
store_mem_stats_group(struct store_thr *t, const char *group,
                      store_emit_fn emit, void *arg)
{
    struct store *s = t->s;

    if (strcmp(group, "") == 0) {
        group_general(s, emit, arg);
    } else if (strcmp(group, "items") == 0) {
        group_items(s, emit, arg);
    } else if (strcmp(group, "slabs") == 0) {
        group_slabs(s, emit, arg);
    } else if (strcmp(group, "sizes") == 0) {
        /* memcached 1.6 without -o track_sizes answers just this. */
        emit(arg, "sizes_status", "disabled");
    } else {
        return STORE_ENOENT;
    }
    return STORE_OK;
}
