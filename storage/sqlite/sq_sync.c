/*
 * The sqlite backend's syncer thread: the only place that makes commits
 * durable. The writer commits with synchronous=OFF, so a commit is a
 * write() of its WAL frames to the page cache, which a killed process does
 * not lose; durability against a power loss needs the WAL fdatasync'd,
 * which is exactly what synchronous=FULL would do inside every COMMIT. Here
 * it is done by this thread, on its own descriptor of the WAL file (fsync
 * works on the file, whichever descriptor asks), once for every commit
 * that happened before it started: with --sync=always as soon as a commit
 * is waiting, and every write whose commit a sync covered is completed at
 * once, so writes from many connections that commit while one fdatasync
 * runs share the next one (group commit); with --sync=periodic at most
 * every --sync-interval ms when something changed; with --sync=none it
 * does not run (close syncs). It never touches the data, only the file,
 * and never holds sync_lock across the fdatasync or a completion callback.
 */
#include "storage/sqlite/sq.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static uint64_t
mono_usec(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int
store_sqlite_sync_wal(struct store *s)
{
    if (s->wal_fd < 0) {
        return 0;
    }
    return fdatasync(s->wal_fd) == 0 ? 0 : errno;
}

/* Pending completions taken out of the store, to call outside the lock. */
struct taken {
    struct store_wait **w;
    size_t              n;
    size_t              cap;
};

/* Moves every registered wait into tk; sync_lock held. */
static void
take_waits(struct store *s, struct taken *tk)
{
    size_t n = s->nwaits;

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
     * seq read under this same lock: the coming fdatasync covers them.
     */
    tk->n = n;
    if (n == 0) {
        return;
    }
    memcpy(tk->w, s->waits, n * sizeof(*tk->w));
    memmove(s->waits, s->waits + n, (s->nwaits - n) * sizeof(*s->waits));
    s->nwaits -= n;
}

/* One fdatasync covering every commit up to the current seq; lock held. */
static void
sync_once(struct store *s, struct taken *tk)
{
    uint64_t target = atomic_load_explicit(&s->seq, memory_order_acquire);
    uint64_t t0;
    int rc;

    take_waits(s, tk);
    pthread_mutex_unlock(&s->sync_lock);
    t0 = mono_usec();
    rc = store_sqlite_sync_wal(s);
    sq_inc(&s->sync_usec, mono_usec() - t0);
    if (rc != 0) {
        /*
         * After a failed fsync the kernel may have dropped the dirty
         * pages: nothing written since can be promised, so writes stop
         * (reads go on). The waiting writes are completed all the same:
         * the interface has no way to fail them now.
         */
        sq_inc(&s->sync_errors, 1);
        atomic_store(&s->wfail, rc);
    } else {
        sq_inc(&s->sync_count, 1);
        atomic_store_explicit(&s->last_sync, (uint32_t)time(NULL),
                              memory_order_relaxed);
    }
    pthread_mutex_lock(&s->sync_lock);
    atomic_store_explicit(&s->synced_seq, target, memory_order_release);
    pthread_cond_broadcast(&s->synced_cond);
    pthread_mutex_unlock(&s->sync_lock);
    for (size_t i = 0; i < tk->n; i++) {
        tk->w[i]->done(tk->w[i]);
    }
    pthread_mutex_lock(&s->sync_lock);
}

static void
deadline(struct timespec *ts, uint64_t usec_from_now)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(usec_from_now / 1000000u);
    ts->tv_nsec += (long)(usec_from_now % 1000000u) * 1000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void *
sync_main(void *arg)
{
    struct store *s = arg;
    struct taken tk = { NULL, 0, 0 };
    uint64_t interval = (uint64_t)(s->sync_interval_ms != 0
                                   ? s->sync_interval_ms : 100) * 1000u;
    uint64_t last = mono_usec();

    pthread_mutex_lock(&s->sync_lock);
    for (;;) {
        bool dirty = atomic_load_explicit(&s->seq, memory_order_acquire) >
                     atomic_load_explicit(&s->synced_seq,
                                          memory_order_relaxed) ||
                     s->nwaits > 0;
        uint64_t now = mono_usec();
        struct timespec ts;

        if (dirty && (s->sync == STORE_SYNC_ALWAYS || s->sync_stop ||
                      now - last >= interval)) {
            last = now;
            sync_once(s, &tk);
            continue;
        }
        if (s->sync_stop) {
            break;
        }
        if (s->sync == STORE_SYNC_ALWAYS) {
            pthread_cond_wait(&s->sync_cond, &s->sync_lock);
        } else {
            /* Periodic: look again when the interval is up. */
            deadline(&ts, dirty ? interval - (now - last) : interval);
            pthread_cond_timedwait(&s->sync_cond, &s->sync_lock, &ts);
        }
    }
    pthread_mutex_unlock(&s->sync_lock);
    free(tk.w);
    return NULL;
}

bool
store_sqlite_sync_start(struct store *s)
{
    if (s->sync == STORE_SYNC_NONE) {
        return true;
    }
    s->sync_stop = false;
    s->syncer_on = pthread_create(&s->syncer, NULL, sync_main, s) == 0;
    return s->syncer_on;
}

void
store_sqlite_sync_stop(struct store *s)
{
    if (!s->syncer_on) {
        return;
    }
    pthread_mutex_lock(&s->sync_lock);
    s->sync_stop = true;
    pthread_cond_signal(&s->sync_cond);
    pthread_mutex_unlock(&s->sync_lock);
    pthread_join(s->syncer, NULL);
    s->syncer_on = false;
}

void
store_sqlite_sync_kick(struct store *s)
{
    pthread_mutex_lock(&s->sync_lock);
    pthread_cond_signal(&s->sync_cond);
    pthread_mutex_unlock(&s->sync_lock);
}

void
store_sqlite_durable(struct store *s, struct store_call *c,
                     const struct sq_op *op)
{
    if (s->sync != STORE_SYNC_ALWAYS || !s->syncer_on ||
        atomic_load_explicit(&s->synced_seq, memory_order_acquire) >=
        op->seq) {
        return;
    }
    pthread_mutex_lock(&s->sync_lock);
    if (atomic_load_explicit(&s->synced_seq, memory_order_relaxed) >=
        op->seq) {
        pthread_mutex_unlock(&s->sync_lock);
        return;
    }
    if (c->wait != NULL) {
        if (s->nwaits == s->waits_cap) {
            size_t cap = s->waits_cap != 0 ? s->waits_cap * 2 : 64;
            struct store_wait **w = realloc(s->waits, cap * sizeof(*w));

            if (w != NULL) {
                s->waits = w;
                s->waits_cap = cap;
            }
        }
        if (s->nwaits < s->waits_cap) {
            s->waits[s->nwaits++] = c->wait;
            c->pending = true;
            pthread_cond_signal(&s->sync_cond);
            pthread_mutex_unlock(&s->sync_lock);
            return;
        }
        /* Out of memory for the list: wait here instead. */
    }
    pthread_cond_signal(&s->sync_cond);
    while (atomic_load_explicit(&s->synced_seq, memory_order_relaxed) <
           op->seq) {
        pthread_cond_wait(&s->synced_cond, &s->sync_lock);
    }
    pthread_mutex_unlock(&s->sync_lock);
}
