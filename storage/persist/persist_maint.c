/*
 * The skeleton of a persistent backend's maintenance thread: starting and
 * stopping it, its idle tick, and the clock it works by. Requests tell the
 * store the time; between them the thread runs the last time told on by
 * the monotonic clock, so an idle store still expires and sweeps. What a
 * round does (hints, sweep, eviction, checkpoints) is the backend's: this
 * file never touches a store.
 */
#include "storage/persist/persist.h"

#include <string.h>
#include <time.h>

bool
persist_maint_init(struct persist_maint *pm, uint32_t tick_ms,
                   _Atomic uint32_t *now_seen)
{
    memset(pm, 0, sizeof(*pm));
    pm->tick_ms = tick_ms;
    pm->now_seen = now_seen;
    if (pthread_mutex_init(&pm->lock, NULL) != 0) {
        return false;
    }
    if (!persist_cond_init_mono(&pm->cond)) {
        pthread_mutex_destroy(&pm->lock);
        return false;
    }
    return true;
}

void
persist_maint_deinit(struct persist_maint *pm)
{
    pthread_cond_destroy(&pm->cond);
    pthread_mutex_destroy(&pm->lock);
}

bool
persist_maint_start(struct persist_maint *pm, void *(*fn)(void *), void *arg)
{
    pm->stop = false;
    pm->seen = atomic_load_explicit(pm->now_seen, memory_order_relaxed);
    clock_gettime(CLOCK_MONOTONIC, &pm->base);
    pm->ts = pm->base;
    pm->on = pthread_create(&pm->thread, NULL, fn, arg) == 0;
    return pm->on;
}

void
persist_maint_stop(struct persist_maint *pm)
{
    if (!pm->on) {
        return;
    }
    pthread_mutex_lock(&pm->lock);
    pm->stop = true;
    pthread_cond_signal(&pm->cond);
    pthread_mutex_unlock(&pm->lock);
    pthread_join(pm->thread, NULL);
    pm->on = false;
}

uint32_t
persist_maint_now(struct persist_maint *pm)
{
    uint32_t cur = atomic_load_explicit(pm->now_seen, memory_order_relaxed);

    clock_gettime(CLOCK_MONOTONIC, &pm->ts);
    if (cur != pm->seen) {
        pm->seen = cur;
        pm->base = pm->ts;
    }
    return pm->seen + (uint32_t)(pm->ts.tv_sec - pm->base.tv_sec);
}

bool
persist_maint_next(struct persist_maint *pm, bool more)
{
    bool go;

    pthread_mutex_lock(&pm->lock);
    if (!more && !pm->stop) {
        struct timespec until = pm->ts;

        until.tv_nsec += (long)pm->tick_ms * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&pm->cond, &pm->lock, &until);
    }
    go = !pm->stop;
    pthread_mutex_unlock(&pm->lock);
    return go;
}
