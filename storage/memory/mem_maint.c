/*
 * The memory backend's maintenance thread, one per store: it doubles the
 * hash table when items outnumber buckets 3 to 2, migrating a few thousand
 * buckets at a time, and otherwise sweeps dead (expired or flushed) items a
 * slice of buckets per tick. Every step holds one stripe lock for one
 * bucket, so it never stalls a request for long. It is the only thread
 * that swaps tables, so it may read s->tab and s->old without a stripe.
 */
#include "storage/memory/mem.h"

#include <time.h>

#define GROW_STEP       4096u     /* buckets moved between stop checks */
#define GROW_POWER_MAX  32u
#define SWEEP_MIN       16384u    /* buckets swept per tick, at least */
#define SWEEP_SHARE     16u       /* ... or this share of the table */

static uint64_t
items_total(struct store *s)
{
    uint64_t n = 0;

    for (unsigned id = 1; id <= s->nclasses; id++) {
        pthread_mutex_lock(&s->cls[id].lock);
        n += s->cls[id].nitems;
        pthread_mutex_unlock(&s->cls[id].lock);
    }
    return n;
}

static void
sweep_bucket(struct store *s, uint64_t b, uint32_t now, uint64_t *checked)
{
    pthread_mutex_t *m = &s->stripe[b & (MEM_NSTRIPE - 1)];
    struct item **pp;

    pthread_mutex_lock(m);
    pp = &s->tab->b[b];
    while (*pp != NULL) {
        struct item *it = *pp;
        bool flushed;

        checked[it->clsid]++;
        if (store_mem_item_dead(s, it, now, &flushed)) {
            *pp = it->h_next;
            it->h_next = NULL;
            store_mem_lru_unlink(s, it, true);
        } else {
            pp = &it->h_next;
        }
    }
    pthread_mutex_unlock(m);
}

static void
sweep_step(struct store *s, uint32_t now)
{
    uint64_t checked[MEM_MAX_CLASSES + 1] = { 0 };
    uint64_t nb = s->tab->mask + 1;
    uint64_t n = nb / SWEEP_SHARE;

    if (n < SWEEP_MIN) {
        n = SWEEP_MIN < nb ? SWEEP_MIN : nb;
    }
    for (uint64_t i = 0; i < n; i++) {
        sweep_bucket(s, s->sweep_pos & s->tab->mask, now, checked);
        s->sweep_pos = (s->sweep_pos + 1) & s->tab->mask;
    }
    for (unsigned id = 1; id <= s->nclasses; id++) {
        if (checked[id] != 0) {
            pthread_mutex_lock(&s->cls[id].lock);
            s->cls[id].st.crawler_checked += checked[id];
            pthread_mutex_unlock(&s->cls[id].lock);
        }
    }
}

/* One unit of work; true when more is waiting (no sleep before it). */
static bool
maint_work(struct store *s, uint32_t now)
{
    if (s->old != NULL) {
        if (store_mem_grow_step(s, GROW_STEP)) {
            store_mem_grow_finish(s);
        }
        return true;
    }
    if (s->tab->mask < ((uint64_t)1 << GROW_POWER_MAX) - 1 &&
        items_total(s) * 2 > (s->tab->mask + 1) * 3 &&
        store_mem_grow_start(s)) {
        return true;
    }
    sweep_step(s, now);
    return false;
}

/* Whole seconds from a to b: never rounds up, so never runs ahead. */
static uint32_t
elapsed_s(const struct timespec *a, const struct timespec *b)
{
    int64_t ms = (int64_t)(b->tv_sec - a->tv_sec) * 1000 +
                 (b->tv_nsec - a->tv_nsec) / 1000000;

    return ms > 0 ? (uint32_t)(ms / 1000) : 0;
}

static void *
maint_main(void *arg)
{
    struct store *s = arg;
    uint32_t seen = atomic_load_explicit(&s->now_seen, memory_order_relaxed);
    struct timespec base;
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &base);
    for (;;) {
        uint32_t cur = atomic_load_explicit(&s->now_seen,
                                            memory_order_relaxed);
        bool more;

        /*
         * Requests tell the time; between them, run the last one told on
         * by the monotonic clock, so an idle store still sweeps.
         */
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if (cur != seen) {
            seen = cur;
            base = ts;
        }
        more = maint_work(s, seen + elapsed_s(&base, &ts));

        pthread_mutex_lock(&s->maint_lock);
        if (!more && !s->maint_stop) {
            struct timespec until = ts;

            until.tv_nsec += (long)MEM_TICK_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&s->maint_cond, &s->maint_lock, &until);
        }
        if (s->maint_stop) {
            pthread_mutex_unlock(&s->maint_lock);
            break;
        }
        pthread_mutex_unlock(&s->maint_lock);
    }
    return NULL;
}

bool
store_mem_maint_start(struct store *s)
{
    s->maint_stop = false;
    return pthread_create(&s->maint, NULL, maint_main, s) == 0;
}

void
store_mem_maint_stop(struct store *s)
{
    pthread_mutex_lock(&s->maint_lock);
    s->maint_stop = true;
    pthread_cond_signal(&s->maint_cond);
    pthread_mutex_unlock(&s->maint_lock);
    pthread_join(s->maint, NULL);
}
