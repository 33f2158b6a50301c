/*
 * The memory backend's hash table: the key hash, bucket chains guarded by
 * striped mutexes, and growth by incremental migration. A bucket's stripe
 * is its index modulo MEM_NSTRIPE, and tables never have fewer buckets than
 * stripes, so when a table doubles, old bucket b splits into new buckets b
 * and b + n that share b's stripe: moving one bucket needs one lock. This
 * module never allocates on the request path and never blocks on a stripe
 * while holding a class lock.
 */
#include "storage/memory/mem.h"

#include <stdlib.h>
#include <string.h>

/* Odd constants with well spread bits; any such would do. */
#define HK0 0xa0761d6478bd642fULL
#define HK1 0xe7037ed1a0b428dbULL
#define HK2 0x8ebc6af09c88c6e3ULL
#define HK3 0x589965cc75374cc3ULL

static inline uint64_t
load64(const unsigned char *p)
{
    uint64_t v;

    memcpy(&v, p, sizeof(v));
    return v;
}

static inline uint64_t
load32(const unsigned char *p)
{
    uint32_t v;

    memcpy(&v, p, sizeof(v));
    return v;
}

/*
 * Multiplies to 128 bits and folds the halves: one instruction that mixes
 * every input bit into every output bit, which is why it is the core step.
 */
static inline uint64_t
fold_mul(uint64_t a, uint64_t b)
{
    unsigned __int128 r = (unsigned __int128)a * b;

    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

uint64_t
store_mem_hash(uint64_t seed, const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = seed ^ fold_mul((uint64_t)n ^ HK0, HK1);
    uint64_t x = 0;
    uint64_t y = 0;
    size_t left = n;

    while (left > 16) {
        h = fold_mul(load64(b) ^ HK1, load64(b + 8) ^ h);
        b += 16;
        left -= 16;
    }
    /* The tail overlaps the previous block when short: no byte loop. */
    if (left > 8) {
        x = load64(b);
        y = load64(b + left - 8);
    } else if (left >= 4) {
        x = load32(b);
        y = load32(b + left - 4);
    } else if (left > 0) {
        x = ((uint64_t)b[0] << 16) | ((uint64_t)b[left / 2] << 8) |
            b[left - 1];
    }
    h = fold_mul(x ^ HK2, y ^ h ^ HK3);
    return fold_mul(h ^ HK0, (uint64_t)n ^ HK2);
}

struct mem_table *
store_mem_table_create(unsigned power)
{
    struct mem_table *t = malloc(sizeof(*t));

    if (t == NULL) {
        return NULL;
    }
    t->b = calloc((size_t)1 << power, sizeof(*t->b));
    if (t->b == NULL) {
        free(t);
        return NULL;
    }
    t->mask = ((uint64_t)1 << power) - 1;
    return t;
}

void
store_mem_table_destroy(struct mem_table **t)
{
    if (*t == NULL) {
        return;
    }
    free((*t)->b);
    free(*t);
    *t = NULL;
}

struct item **
store_mem_bucket(struct store *s, uint64_t hv)
{
    /*
     * mig_pos only grows, and bucket ob moves under its stripe, which the
     * caller holds: if ob is not below mig_pos now it stays in old.
     */
    if (s->old != NULL) {
        uint64_t ob = hv & s->old->mask;

        if (ob >= atomic_load_explicit(&s->mig_pos, memory_order_acquire)) {
            return &s->old->b[ob];
        }
    }
    return &s->tab->b[hv & s->tab->mask];
}

struct item *
store_mem_find(struct store *s, uint64_t hv, const void *key, size_t nkey)
{
    struct item *it = *store_mem_bucket(s, hv);

    for (; it != NULL; it = it->h_next) {
        if (it->nkey == nkey && memcmp(it->data, key, nkey) == 0) {
            return it;
        }
    }
    return NULL;
}

void
store_mem_chain_insert(struct store *s, uint64_t hv, struct item *it)
{
    struct item **head = store_mem_bucket(s, hv);

    it->h_next = *head;
    *head = it;
}

void
store_mem_chain_remove(struct store *s, uint64_t hv, struct item *it)
{
    struct item **pp = store_mem_bucket(s, hv);

    for (; *pp != NULL; pp = &(*pp)->h_next) {
        if (*pp == it) {
            *pp = it->h_next;
            it->h_next = NULL;
            return;
        }
    }
}

void
store_mem_unlink(struct store *s, uint64_t hv, struct item *it)
{
    store_mem_chain_remove(s, hv, it);
    store_mem_lru_unlink(s, it, false);
}

static void
lock_all(struct store *s)
{
    for (unsigned i = 0; i < MEM_NSTRIPE; i++) {
        pthread_mutex_lock(&s->stripe[i]);
    }
}

static void
unlock_all(struct store *s)
{
    for (unsigned i = MEM_NSTRIPE; i-- > 0;) {
        pthread_mutex_unlock(&s->stripe[i]);
    }
}

bool
store_mem_grow_start(struct store *s)
{
    unsigned power = 0;
    struct mem_table *nt;

    while (((uint64_t)1 << power) <= s->tab->mask) {
        power++;
    }
    nt = store_mem_table_create(power + 1);
    if (nt == NULL) {
        return false;
    }
    /* Every stripe, briefly: no reader may see a half-swapped pair. */
    lock_all(s);
    s->old = s->tab;
    s->tab = nt;
    atomic_store_explicit(&s->mig_pos, 0, memory_order_release);
    atomic_store_explicit(&s->growing, true, memory_order_relaxed);
    unlock_all(s);
    return true;
}

bool
store_mem_grow_step(struct store *s, uint64_t nbuckets)
{
    uint64_t pos = atomic_load_explicit(&s->mig_pos, memory_order_relaxed);
    uint64_t end = s->old->mask + 1;

    for (uint64_t n = 0; n < nbuckets && pos < end; n++, pos++) {
        pthread_mutex_t *m = &s->stripe[pos & (MEM_NSTRIPE - 1)];
        struct item *it;

        pthread_mutex_lock(m);
        it = s->old->b[pos];
        s->old->b[pos] = NULL;
        while (it != NULL) {
            struct item *next = it->h_next;
            uint64_t hv = mem_item_hash(s, it);
            struct item **head = &s->tab->b[hv & s->tab->mask];

            it->h_next = *head;
            *head = it;
            it = next;
        }
        atomic_store_explicit(&s->mig_pos, pos + 1, memory_order_release);
        pthread_mutex_unlock(m);
    }
    return pos >= end;
}

void
store_mem_grow_finish(struct store *s)
{
    struct mem_table *ot;

    lock_all(s);
    ot = s->old;
    s->old = NULL;
    atomic_store_explicit(&s->growing, false, memory_order_relaxed);
    unlock_all(s);
    store_mem_table_destroy(&ot);
}
