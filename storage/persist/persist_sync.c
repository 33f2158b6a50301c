/*
 * The syncer thread of a persistent backend: the only place that makes
 * commits durable (both backends commit to the page cache only, which a
 * killed process does not lose). With --sync=always it syncs as soon as a
 * commit is waiting, and every write whose commit a sync covered is
 * completed at once: writes from many connections that commit while one
 * sync runs share the next one (group commit). With --sync=periodic it
 * syncs at most every --sync-interval ms when something changed. With
 * --sync=none it does not run; the backend's close syncs. It never touches
 * the data, only calls the backend's fsync hook, and it never holds its
 * lock across that call or a completion callback.
 */
#include "storage/persist/persist.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t
persist_mono_usec(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void
persist_deadline(struct timespec *ts, uint64_t usec_from_now)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(usec_from_now / 1000000u);
    ts->tv_nsec += (long)(usec_from_now % 1000000u) * 1000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void
inc(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* Pending completions taken out of ps, to call outside the lock. */
struct taken {
    struct store_wait **w;
    size_t              n;
    size_t              cap;
};

/* Moves every registered wait into tk; lock held. */
static void
take_waits(struct persist_sync *ps, struct taken *tk)
{
    size_t n = ps->nwaits;

    if (n > tk->cap) {
        struct store_wait **p = realloc(tk->w, n * sizeof(*p));

        if (p != NULL) {
            tk->w = p;
            tk->cap = n;
        } else {
            n = tk->cap;   /* the rest wait for the next round */
        }
    }
    /*
     * Each was registered after its commit, so all are for commits <= the
     * seq read under this same lock: the coming sync covers them.
     */
    tk->n = n;
    if (n == 0) {
        return;
    }
    memcpy(tk->w, ps->waits, n * sizeof(*tk->w));
    memmove(ps->waits, ps->waits + n,
            (ps->nwaits - n) * sizeof(*ps->waits));
    ps->nwaits -= n;
}

/* One sync covering every commit up to the current seq; lock held. */
static void
sync_once(struct persist_sync *ps, struct taken *tk)
{
    uint64_t target = atomic_load_explicit(ps->seq, memory_order_acquire);
    uint64_t t0;
    uint64_t t1;
    int rc;

    take_waits(ps, tk);
    pthread_mutex_unlock(&ps->lock);
    t0 = persist_mono_usec();
    /*
     * Kept visible while it runs: a write waiting on a slow disk then
     * shows as a sync in progress in "stats", not as a silent server.
     */
    atomic_store_explicit(&ps->busy_since, t0, memory_order_relaxed);
    rc = ps->fsync(ps->arg);
    t1 = persist_mono_usec();
    atomic_store_explicit(&ps->busy_since, 0, memory_order_relaxed);
    inc(&ps->usec, t1 - t0);
    if (t1 - t0 > atomic_load_explicit(&ps->max_usec, memory_order_relaxed)) {
        atomic_store_explicit(&ps->max_usec, t1 - t0, memory_order_relaxed);
    }
    if (rc != 0) {
        /*
         * After a failed fsync the kernel may have dropped the dirty
         * pages: nothing written since can be promised, so writes stop
         * (reads go on), and the writes that waited on it fail.
         */
        inc(&ps->errors, 1);
        atomic_store(ps->wfail, rc);
    } else {
        inc(&ps->count, 1);
        atomic_store_explicit(&ps->last_sync, (uint32_t)time(NULL),
                              memory_order_relaxed);
    }
    pthread_mutex_lock(&ps->lock);
    atomic_store_explicit(&ps->synced_seq, target, memory_order_release);
    pthread_cond_broadcast(&ps->synced_cond);
    pthread_mutex_unlock(&ps->lock);
    /* Sticky: a commit made before a failed sync may be covered by a
     * later one that "succeeds" on pages the kernel already dropped. */
    for (size_t i = 0; i < tk->n; i++) {
        tk->w[i]->done(tk->w[i], atomic_load(ps->wfail) != 0 ? STORE_EIO
                                                            : STORE_OK);
    }
    pthread_mutex_lock(&ps->lock);
}

static void *
sync_main(void *arg)
{
    struct persist_sync *ps = arg;
    struct taken tk = { NULL, 0, 0 };
    uint64_t interval = (uint64_t)(ps->interval_ms != 0
                                   ? ps->interval_ms : 100) * 1000u;
    uint64_t last = persist_mono_usec();

    pthread_mutex_lock(&ps->lock);
    for (;;) {
        uint64_t behind = atomic_load_explicit(ps->seq,
                                               memory_order_acquire) -
                          atomic_load_explicit(&ps->synced_seq,
                                               memory_order_relaxed);
        bool dirty = behind > 0 || ps->nwaits > 0;
        uint64_t now = persist_mono_usec();
        struct timespec ts;

        if (dirty && (ps->mode == STORE_SYNC_ALWAYS || ps->stop ||
                      ps->urgent ||
                      now - last >= interval ||
                      (ps->pressure != 0 && behind >= ps->pressure))) {
            last = now;
            ps->urgent = false;
            sync_once(ps, &tk);
            continue;
        }
        if (ps->stop) {
            break;
        }
        if (ps->mode == STORE_SYNC_ALWAYS) {
            pthread_cond_wait(&ps->cond, &ps->lock);
        } else {
            /* Periodic: look again when the interval is up. */
            persist_deadline(&ts, dirty ? interval - (now - last) : interval);
            pthread_cond_timedwait(&ps->cond, &ps->lock, &ts);
        }
    }
    pthread_mutex_unlock(&ps->lock);
    free(tk.w);
    return NULL;
}

bool
persist_sync_init(struct persist_sync *ps, store_sync_e mode,
                  uint32_t interval_ms, persist_fsync_fn fsync, void *arg,
                  _Atomic uint64_t *seq, _Atomic int *wfail)
{
    memset(ps, 0, sizeof(*ps));
    ps->mode = mode;
    ps->shown = mode;
    ps->interval_ms = interval_ms;
    ps->fsync = fsync;
    ps->arg = arg;
    ps->seq = seq;
    ps->wfail = wfail;
    if (pthread_mutex_init(&ps->lock, NULL) != 0) {
        return false;
    }
    if (!persist_cond_init_mono(&ps->cond)) {
        pthread_mutex_destroy(&ps->lock);
        return false;
    }
    if (pthread_cond_init(&ps->synced_cond, NULL) != 0) {
        pthread_cond_destroy(&ps->cond);
        pthread_mutex_destroy(&ps->lock);
        return false;
    }
    return true;
}

void
persist_sync_deinit(struct persist_sync *ps)
{
    pthread_cond_destroy(&ps->synced_cond);
    pthread_cond_destroy(&ps->cond);
    pthread_mutex_destroy(&ps->lock);
    free(ps->waits);
    ps->waits = NULL;
    ps->nwaits = 0;
    ps->waits_cap = 0;
}

bool
persist_sync_start(struct persist_sync *ps)
{
    if (ps->mode == STORE_SYNC_NONE) {
        return true;
    }
    ps->stop = false;
    ps->on = pthread_create(&ps->thread, NULL, sync_main, ps) == 0;
    return ps->on;
}

void
persist_sync_stop(struct persist_sync *ps)
{
    if (!ps->on) {
        return;
    }
    pthread_mutex_lock(&ps->lock);
    ps->stop = true;
    pthread_cond_signal(&ps->cond);
    pthread_mutex_unlock(&ps->lock);
    pthread_join(ps->thread, NULL);
    ps->on = false;
}

void
persist_sync_commit(struct persist_sync *ps, uint64_t seq)
{
    uint64_t synced = atomic_load_explicit(&ps->synced_seq,
                                           memory_order_relaxed);

    /* Behind by the pressure: a kick every 64 commits until it syncs. */
    if (ps->mode == STORE_SYNC_ALWAYS ||
        (ps->pressure != 0 && ps->on && seq >= synced + ps->pressure &&
         seq % 64 == 0)) {
        persist_sync_kick(ps);
    }
}

void
persist_sync_throttle(struct persist_sync *ps)
{
    uint64_t seq;

    if (ps->pressure == 0 || !ps->on) {
        return;
    }
    seq = atomic_load_explicit(ps->seq, memory_order_acquire);
    if (atomic_load_explicit(&ps->synced_seq, memory_order_acquire) +
        PERSIST_THROTTLE * ps->pressure >= seq) {
        return;
    }
    /* Wait for the syncer to catch up halfway, so commits run in bursts
     * rather than one wake-up each. (synced_seq may pass seq meanwhile.) */
    pthread_mutex_lock(&ps->lock);
    pthread_cond_signal(&ps->cond);
    while (!ps->stop &&
           atomic_load_explicit(&ps->synced_seq, memory_order_relaxed) +
           PERSIST_THROTTLE * ps->pressure / 2 < seq) {
        pthread_cond_wait(&ps->synced_cond, &ps->lock);
    }
    pthread_mutex_unlock(&ps->lock);
}

void
persist_sync_now(struct persist_sync *ps)
{
    uint64_t seq;

    if (!ps->on) {
        return;
    }
    seq = atomic_load_explicit(ps->seq, memory_order_acquire);
    pthread_mutex_lock(&ps->lock);
    if (atomic_load_explicit(&ps->synced_seq, memory_order_relaxed) < seq) {
        ps->urgent = true;
        pthread_cond_signal(&ps->cond);
    }
    while (!ps->stop &&
           atomic_load_explicit(&ps->synced_seq, memory_order_relaxed) < seq) {
        pthread_cond_wait(&ps->synced_cond, &ps->lock);
    }
    pthread_mutex_unlock(&ps->lock);
}

void
persist_sync_kick(struct persist_sync *ps)
{
    pthread_mutex_lock(&ps->lock);
    pthread_cond_signal(&ps->cond);
    pthread_mutex_unlock(&ps->lock);
}

/* What a write whose commit a sync covered learns: failed once any did. */
static store_rc_e
sync_rc(struct persist_sync *ps)
{
    return atomic_load(ps->wfail) != 0 ? STORE_EIO : STORE_OK;
}

store_rc_e
persist_sync_wait(struct persist_sync *ps, struct store_call *c, uint64_t seq)
{
    if (ps->mode != STORE_SYNC_ALWAYS || !ps->on) {
        return STORE_OK;
    }
    if (atomic_load_explicit(&ps->synced_seq, memory_order_acquire) >= seq) {
        return sync_rc(ps);
    }
    pthread_mutex_lock(&ps->lock);
    if (atomic_load_explicit(&ps->synced_seq, memory_order_relaxed) >= seq) {
        pthread_mutex_unlock(&ps->lock);
        return sync_rc(ps);
    }
    if (c->wait != NULL) {
        if (ps->nwaits == ps->waits_cap) {
            size_t cap = ps->waits_cap != 0 ? ps->waits_cap * 2 : 64;
            struct store_wait **w = realloc(ps->waits, cap * sizeof(*w));

            if (w != NULL) {
                ps->waits = w;
                ps->waits_cap = cap;
            }
        }
        if (ps->nwaits < ps->waits_cap) {
            ps->waits[ps->nwaits++] = c->wait;
            c->pending = true;
            pthread_cond_signal(&ps->cond);
            pthread_mutex_unlock(&ps->lock);
            return STORE_OK;
        }
        /* Out of memory for the list: wait here instead. */
    }
    pthread_cond_signal(&ps->cond);
    while (atomic_load_explicit(&ps->synced_seq, memory_order_relaxed) <
           seq) {
        pthread_cond_wait(&ps->synced_cond, &ps->lock);
    }
    pthread_mutex_unlock(&ps->lock);
    return sync_rc(ps);
}

void
persist_emit_u64(store_emit_fn emit, void *arg, const char *name, uint64_t v)
{
    char val[24];

    snprintf(val, sizeof(val), "%" PRIu64, v);
    emit(arg, name, val);
}

static const char *
sync_name(store_sync_e m)
{
    switch (m) {
    case STORE_SYNC_ALWAYS:
        return "always";
    case STORE_SYNC_PERIODIC:
        return "periodic";
    case STORE_SYNC_NONE:
        return "none";
    }
    return "unknown";
}

void
persist_sync_stats(struct persist_sync *ps, const char *prefix,
                   store_emit_fn emit, void *arg)
{
    char name[64];
    uint64_t busy;
    uint64_t now;

    snprintf(name, sizeof(name), "%s_sync", prefix);
    emit(arg, name, sync_name(ps->shown));
    snprintf(name, sizeof(name), "%s_sync_interval_ms", prefix);
    persist_emit_u64(emit, arg, name, ps->interval_ms);
    snprintf(name, sizeof(name), "%s_sync_count", prefix);
    persist_emit_u64(emit, arg, name,
                     atomic_load_explicit(&ps->count, memory_order_relaxed));
    snprintf(name, sizeof(name), "%s_sync_errors", prefix);
    persist_emit_u64(emit, arg, name,
                     atomic_load_explicit(&ps->errors, memory_order_relaxed));
    snprintf(name, sizeof(name), "%s_sync_usec", prefix);
    persist_emit_u64(emit, arg, name,
                     atomic_load_explicit(&ps->usec, memory_order_relaxed));
    snprintf(name, sizeof(name), "%s_sync_max_usec", prefix);
    persist_emit_u64(emit, arg, name,
                     atomic_load_explicit(&ps->max_usec,
                                          memory_order_relaxed));
    busy = atomic_load_explicit(&ps->busy_since, memory_order_relaxed);
    now = persist_mono_usec();
    snprintf(name, sizeof(name), "%s_sync_running_usec", prefix);
    persist_emit_u64(emit, arg, name, busy != 0 && now > busy ? now - busy
                                                              : 0);
    snprintf(name, sizeof(name), "%s_last_sync", prefix);
    persist_emit_u64(emit, arg, name,
                     atomic_load_explicit(&ps->last_sync,
                                          memory_order_relaxed));
}
