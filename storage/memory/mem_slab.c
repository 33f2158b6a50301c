/*
 * The memory backend's slab allocator and LRUs. It owns every byte of item
 * memory: pages carved into fixed-size chunks per class, each class with a
 * free list and an LRU under one mutex. Chunks come from the free list, then
 * from a new page while the store is under mem_limit, then from the class's
 * LRU tail (dead items first, items read since the last pass get a second
 * chance). It never frees a chunk that a pin still references and never
 * waits for a stripe lock while holding a class lock (trylock only).
 */
#include "storage/memory/mem.h"

#include <stdlib.h>
#include <string.h>

/* How many tail items the evictor may skip (pinned, busy) per attempt. */
#define PULL_TRIES      50u
/* How many active items it may send back to the head per attempt. */
#define PULL_MOVES_MAX  1000u

static uint64_t
align_up(uint64_t v)
{
    return (v + MEM_CHUNK_ALIGN - 1) & ~(uint64_t)(MEM_CHUNK_ALIGN - 1);
}

static bool
class_init(struct mem_class *c, uint64_t size)
{
    memset(c, 0, sizeof(*c));
    if (pthread_mutex_init(&c->lock, NULL) != 0) {
        return false;
    }
    c->size = (uint32_t)size;
    /*
     * A chunk over half a page would waste most of a 1 MB page, so such a
     * class gets pages of exactly one chunk.
     */
    if (size * 2 > MEM_PAGE_SIZE) {
        c->perpage = 1;
        c->page_bytes = size;
    } else {
        c->perpage = (uint32_t)(MEM_PAGE_SIZE / size);
        c->page_bytes = MEM_PAGE_SIZE;
    }
    return true;
}

bool
store_mem_slab_setup(struct store *s, uint32_t chunk_min, double factor)
{
    uint64_t size = align_up(ITEM_HDR + (uint64_t)chunk_min);
    uint64_t last = align_up(s->item_max);
    unsigned id = 0;

    if (factor <= 1.0 || chunk_min == 0 || size > last) {
        return false;
    }
    /* memcached's progression: multiply, align, stop near the largest. */
    while (id < MEM_MAX_CLASSES - 1 && (double)size * factor <= (double)last) {
        uint64_t next;

        if (!class_init(&s->cls[++id], size)) {
            goto fail;
        }
        next = align_up((uint64_t)((double)size * factor));
        size = next > size ? next : size + MEM_CHUNK_ALIGN;
    }
    if (!class_init(&s->cls[++id], last)) {
        goto fail;
    }
    s->nclasses = id;
    return true;
fail:
    while (--id > 0) {
        pthread_mutex_destroy(&s->cls[id].lock);
    }
    return false;
}

void
store_mem_slab_teardown(struct store *s)
{
    for (unsigned id = 1; id <= s->nclasses; id++) {
        struct mem_class *c = &s->cls[id];

        for (size_t i = 0; i < c->npages; i++) {
            free(c->pages[i]);
        }
        free(c->pages);
        c->pages = NULL;
        c->npages = 0;
        pthread_mutex_destroy(&c->lock);
    }
    s->nclasses = 0;
}

unsigned
store_mem_slab_id(struct store *s, uint64_t total)
{
    unsigned lo = 1;
    unsigned hi = s->nclasses;

    if (total > s->item_max || total > s->cls[hi].size) {
        return 0;
    }
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;

        if (s->cls[mid].size >= total) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return lo;
}

static void
free_push(struct mem_class *c, struct item *it)
{
    atomic_store_explicit(&it->iflags, 0, memory_order_relaxed);
    it->h_next = c->free;
    c->free = it;
    c->nfree++;
}

/* Adds one page to c within mem_limit; caller holds c->lock. */
static bool
page_new(struct store *s, struct mem_class *c)
{
    uint64_t cur = atomic_load_explicit(&s->malloced, memory_order_relaxed);
    unsigned char *page;

    do {
        /* Every class may have its first page over the limit, as in
         * memcached: else a size that comes late would find every page
         * taken by other classes and could never be stored at all. */
        if (c->npages != 0 && cur + c->page_bytes > s->mem_limit) {
            return false;
        }
    } while (!atomic_compare_exchange_weak_explicit(&s->malloced, &cur,
                 cur + c->page_bytes, memory_order_relaxed,
                 memory_order_relaxed));
    if (c->npages == c->pages_cap) {
        size_t cap = c->pages_cap == 0 ? 16 : c->pages_cap * 2;
        void **p = realloc(c->pages, cap * sizeof(*p));

        if (p == NULL) {
            goto fail;
        }
        c->pages = p;
        c->pages_cap = cap;
    }
    page = malloc(c->page_bytes);
    if (page == NULL) {
        goto fail;
    }
    c->pages[c->npages++] = page;
    /* Pushed backwards so that chunks are handed out in address order. */
    for (uint32_t i = c->perpage; i-- > 0;) {
        free_push(c, (struct item *)(void *)(page + (size_t)i * c->size));
    }
    c->nchunks += c->perpage;
    return true;
fail:
    atomic_fetch_sub_explicit(&s->malloced, c->page_bytes,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&s->malloc_fails, 1, memory_order_relaxed);
    return false;
}

static void
lru_remove(struct mem_class *c, struct item *it)
{
    if (it->lru_prev != NULL) {
        it->lru_prev->lru_next = it->lru_next;
    } else {
        c->head = it->lru_next;
    }
    if (it->lru_next != NULL) {
        it->lru_next->lru_prev = it->lru_prev;
    } else {
        c->tail = it->lru_prev;
    }
    it->lru_prev = NULL;
    it->lru_next = NULL;
}

static void
lru_push_head(struct mem_class *c, struct item *it)
{
    it->lru_prev = NULL;
    it->lru_next = c->head;
    if (c->head != NULL) {
        c->head->lru_prev = it;
    } else {
        c->tail = it;
    }
    c->head = it;
}

/*
 * Takes a chunk from c's LRU tail, or NULL; caller holds c->lock. Dead items
 * are always fair game; live ones only when eviction is allowed, and an
 * item read since the last pass is sent back to the head once instead.
 */
static struct item *
lru_pull_tail(struct store *s, struct mem_class *c, uint32_t now)
{
    struct item *it = c->tail;
    unsigned tries = PULL_TRIES;
    unsigned moves = 0;

    while (it != NULL && tries > 0) {
        struct item *prev = it->lru_prev;
        uint64_t hv;
        pthread_mutex_t *m;
        uint8_t fl;
        bool dead;
        bool flushed;

        if (atomic_load_explicit(&it->refcount, memory_order_acquire) > 1) {
            c->st.reflocked++;
            tries--;
            it = prev;
            continue;
        }
        hv = mem_item_hash(s, it);
        m = mem_stripe(s, hv);
        if (pthread_mutex_trylock(m) != 0) {
            tries--;
            it = prev;
            continue;
        }
        /* Under the stripe nobody can pin it any more: decide for good. */
        fl = atomic_load_explicit(&it->iflags, memory_order_relaxed);
        if (atomic_load_explicit(&it->refcount, memory_order_acquire) != 1 ||
            (fl & IT_LINKED) == 0) {
            pthread_mutex_unlock(m);
            tries--;
            it = prev;
            continue;
        }
        dead = store_mem_item_dead(s, it, now, &flushed);
        if (!dead && s->no_evict) {
            pthread_mutex_unlock(m);
            tries--;
            it = prev;
            continue;
        }
        if (!dead && (fl & IT_ACTIVE) != 0 && moves < PULL_MOVES_MAX) {
            /* Read since we last looked: back to the head, once. */
            atomic_fetch_and_explicit(&it->iflags, (uint8_t)~IT_ACTIVE,
                                      memory_order_relaxed);
            pthread_mutex_unlock(m);
            lru_remove(c, it);
            lru_push_head(c, it);
            c->st.moves_within_lru++;
            moves++;
            it = prev;
            continue;
        }
        store_mem_chain_remove(s, hv, it);
        lru_remove(c, it);
        c->nitems--;
        c->bytes -= mem_item_total(it->nkey, it->vlen);
        if (dead) {
            c->st.reclaimed++;
            if ((fl & IT_FETCHED) == 0) {
                c->st.expired_unfetched++;
            }
        } else {
            c->st.evicted++;
            c->st.evicted_time = now > it->time ? now - it->time : 0;
            if (it->exptime != 0) {
                c->st.evicted_nonzero++;
            }
            if ((fl & IT_FETCHED) == 0) {
                c->st.evicted_unfetched++;
            }
            if ((fl & IT_ACTIVE) != 0) {
                c->st.evicted_active++;
            }
        }
        atomic_store_explicit(&it->iflags, 0, memory_order_relaxed);
        atomic_store_explicit(&it->refcount, 0, memory_order_relaxed);
        pthread_mutex_unlock(m);
        return it;
    }
    return NULL;
}

struct item *
store_mem_item_alloc(struct store *s, uint64_t total, uint32_t now)
{
    unsigned id = store_mem_slab_id(s, total);
    struct mem_class *c;
    struct item *it;

    if (id == 0) {
        return NULL;
    }
    c = &s->cls[id];
    pthread_mutex_lock(&c->lock);
    it = c->free;
    if (it == NULL && page_new(s, c)) {
        it = c->free;
    }
    if (it != NULL) {
        c->free = it->h_next;
        c->nfree--;
    } else {
        it = lru_pull_tail(s, c, now);
        if (it == NULL) {
            c->st.outofmemory++;
        }
    }
    pthread_mutex_unlock(&c->lock);
    if (it == NULL) {
        return NULL;
    }
    it->lru_prev = NULL;
    it->lru_next = NULL;
    it->h_next = NULL;
    it->clsid = (uint8_t)id;
    atomic_store_explicit(&it->iflags, 0, memory_order_relaxed);
    atomic_store_explicit(&it->refcount, 1, memory_order_relaxed);
    return it;
}

void
store_mem_item_free(struct store *s, struct item **it)
{
    struct mem_class *c = &s->cls[(*it)->clsid];

    pthread_mutex_lock(&c->lock);
    free_push(c, *it);
    pthread_mutex_unlock(&c->lock);
    *it = NULL;
}

void
store_mem_item_unref(struct store *s, struct item *it)
{
    if (atomic_fetch_sub_explicit(&it->refcount, 1,
                                  memory_order_acq_rel) == 1) {
        store_mem_item_free(s, &it);
    }
}

void
store_mem_lru_link(struct store *s, struct item *it)
{
    struct mem_class *c = &s->cls[it->clsid];

    atomic_fetch_or_explicit(&it->iflags, IT_LINKED, memory_order_relaxed);
    pthread_mutex_lock(&c->lock);
    lru_push_head(c, it);
    c->nitems++;
    c->bytes += mem_item_total(it->nkey, it->vlen);
    pthread_mutex_unlock(&c->lock);
}

void
store_mem_lru_unlink(struct store *s, struct item *it, bool swept)
{
    struct mem_class *c = &s->cls[it->clsid];

    pthread_mutex_lock(&c->lock);
    lru_remove(c, it);
    c->nitems--;
    c->bytes -= mem_item_total(it->nkey, it->vlen);
    if (swept) {
        c->st.crawler_reclaimed++;
        c->st.reclaimed++;
        if ((atomic_load_explicit(&it->iflags, memory_order_relaxed) &
             IT_FETCHED) == 0) {
            c->st.expired_unfetched++;
        }
    }
    atomic_fetch_and_explicit(&it->iflags, (uint8_t)~IT_LINKED,
                              memory_order_relaxed);
    /* The last reference gone: back to the free list while we hold it. */
    if (atomic_fetch_sub_explicit(&it->refcount, 1,
                                  memory_order_acq_rel) == 1) {
        free_push(c, it);
    }
    pthread_mutex_unlock(&c->lock);
}
