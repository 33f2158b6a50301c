/*
 * The sqlite backend's maintenance thread, one per store, with its own
 * connection. Every tick it (1) applies the recency hints readers left (an
 * item's atime is refreshed at most every SQ_ATIME_GRAIN seconds, so reads
 * cost no write most of the time), (2) sweeps: the expired items through
 * the index on exptime, and after a flush_all the flushed ones by a scan in
 * key order, a slice per tick, both read on its own connection and deleted
 * through the ordinary write queue, a bounded number per op, (3) evicts
 * when the store holds more than -m (a smaller -m after a restart), and
 * (4) checkpoints the WAL into the database. Each write step is one small
 * op in a batch, so requests never wait long behind it.
 *
 * Checkpoints: the writer never checkpoints (wal_autocheckpoint=0), so no
 * request pays for one. This thread runs a PASSIVE checkpoint every tick
 * when something was committed; PASSIVE never blocks the writer or
 * readers. Its connection is synchronous=NORMAL, so SQLite fsyncs the WAL
 * before copying and the database after: the database file is never ahead
 * of a durable WAL, and the WAL is only reused once the database holds
 * everything (the store never corrupts on power loss in any mode). Under a
 * steady stream of writes a PASSIVE checkpoint never quite catches up, and
 * SQLite starts the WAL over only when one has; so once the WAL holds more
 * than s->wal_restart bytes of frames, one RESTART checkpoint runs while
 * this thread holds the write lead (persist_queue_exclusive): it only has
 * the frames since the last tick left to copy, it waits for readers of
 * older frames (a worker keeps a snapshot for one pass of its event loop
 * at most, and drops it before any write), and the next commit starts the
 * WAL over.
 */
#include "storage/sqlite/sq.h"

#include <stdlib.h>
#include <time.h>

#define SQ_SWEEP_SCAN    4096u   /* rows looked at per tick after a flush */
#define SQ_SWEEP_DEL     256u    /* dead items deleted per op */
#define SQ_HINT_CAP      (32u * 1024u)   /* bytes of pending hints: some
                                          * hundreds of refreshes per op */
#define SQ_EVICT_WINDOWS 256u    /* background eviction windows per op */

bool
store_sqlite_keybuf_add(struct sq_keybuf *b, const void *key, size_t klen,
                        uint64_t cas, const uint32_t *time)
{
    size_t need = 1 + klen + 8 + (time != NULL ? 4 : 0);
    unsigned char *p;

    if (klen > STORE_KEY_MAX) {
        return false;
    }
    if (b->len + need > b->cap) {
        size_t cap = b->cap != 0 ? b->cap * 2 : 4096;

        while (cap < b->len + need) {
            cap *= 2;
        }
        p = realloc(b->p, cap);
        if (p == NULL) {
            return false;
        }
        b->p = p;
        b->cap = cap;
    }
    p = b->p + b->len;
    p[0] = (unsigned char)klen;
    memcpy(p + 1, key, klen);
    memcpy(p + 1 + klen, &cas, 8);
    if (time != NULL) {
        memcpy(p + 1 + klen + 8, time, 4);
    }
    b->len += need;
    b->n++;
    return true;
}

void
store_sqlite_keybuf_deinit(struct sq_keybuf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

void
store_sqlite_hint(struct store *s, const struct store_key *k, uint64_t cas,
                  uint32_t now)
{
    /* A reader never waits: if the list is busy or full, skip the hint. */
    if (pthread_mutex_trylock(&s->hint_lock) != 0) {
        sq_inc(&s->ctr.hints_dropped, 1);
        return;
    }
    if (s->hints.len + 1 + k->len + 12 > SQ_HINT_CAP ||
        !store_sqlite_keybuf_add(&s->hints, k->data, k->len, cas, &now)) {
        sq_inc(&s->ctr.hints_dropped, 1);
    }
    pthread_mutex_unlock(&s->hint_lock);
}

/* The maintenance thread's private state. */
struct sweep {
    unsigned char hand[STORE_KEY_MAX];    /* flush pass: last key seen */
    size_t        hand_len;
    bool          active;                 /* a flush pass is under way */
    uint64_t      pass_cas;               /* what the pass will cover */
    uint32_t      pass_time;
    uint64_t      swept_cas;              /* covered by finished passes */
    uint32_t      swept_time;
    uint64_t      ckpt_seq;               /* seq at the last checkpoint */
    bool          ckpt_behind;            /* it left frames uncopied */
};

/* Expired items by the index, oldest first, up to the op's limit. */
static bool
find_expired(struct store_thr *t, uint32_t now, struct sq_keybuf *dead)
{
    sqlite3_stmt *st = store_sqlite_stmt(&t->c, SQ_EXPIRED);
    unsigned room = SQ_SWEEP_DEL - dead->n;
    unsigned got = 0;
    int rc;

    if (st == NULL || room == 0) {
        return room == 0;
    }
    sqlite3_bind_int64(st, 1, now);
    sqlite3_bind_int(st, 2, (int)room);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const void *k = sqlite3_column_blob(st, 0);
        size_t klen = (size_t)sqlite3_column_bytes(st, 0);
        uint64_t cas = (uint64_t)sqlite3_column_int64(st, 1);

        got++;
        if (klen > 0 && klen <= STORE_KEY_MAX &&
            !store_sqlite_keybuf_add(dead, k, klen, cas, NULL)) {
            break;
        }
    }
    sqlite3_reset(st);
    return got == room;           /* there may be more right away */
}

/*
 * After a flush_all: scans up to SQ_SWEEP_SCAN rows in key order from the
 * hand and collects the dead ones. True when it stopped because the op is
 * full (there may be more right away).
 */
static bool
flush_scan(struct store *s, struct store_thr *t, struct sweep *sw,
           uint32_t now, struct sq_keybuf *dead)
{
    uint64_t fc = atomic_load_explicit(&s->flush_cas, memory_order_relaxed);
    uint32_t ft = atomic_load_explicit(&s->flush_time, memory_order_relaxed);
    bool due_time = ft != 0 && ft <= now && ft > sw->swept_time;
    sqlite3_stmt *st;
    unsigned rows = 0;
    bool full = false;
    int rc;

    if (!sw->active) {
        if (fc <= sw->swept_cas && !due_time) {
            return false;
        }
        /* Start a pass that covers the flush state as it is now. */
        sw->active = true;
        sw->hand_len = 0;
        sw->pass_cas = fc;
        sw->pass_time = due_time ? ft : sw->swept_time;
    }
    st = store_sqlite_stmt(&t->c, sw->hand_len > 0 ? SQ_SCAN : SQ_SCAN0);
    if (st == NULL) {
        return false;
    }
    if (sw->hand_len > 0) {
        sq_bind_blob(st, 1, sw->hand, sw->hand_len);
    }
    sqlite3_bind_int(st, 2, (int)SQ_SWEEP_SCAN);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const void *k = sqlite3_column_blob(st, 6);
        size_t klen = (size_t)sqlite3_column_bytes(st, 6);
        struct sq_rec r;

        if (dead->n >= SQ_SWEEP_DEL) {
            full = true;
            break;
        }
        rows++;
        if (klen == 0 || klen > STORE_KEY_MAX) {
            continue;
        }
        memcpy(sw->hand, k, klen);
        sw->hand_len = klen;
        store_sqlite_rec(st, 0, &r);
        if (sq_dead(&r, now, fc, ft, NULL) &&
            !store_sqlite_keybuf_add(dead, k, klen, r.cas, NULL)) {
            full = true;
            break;
        }
    }
    sqlite3_reset(st);
    if (rc == SQLITE_DONE && rows < SQ_SWEEP_SCAN) {
        /* Reached the end: everything flushed before the pass is seen. */
        sw->active = false;
        sw->swept_cas = sw->pass_cas;
        sw->swept_time = sw->pass_time;
    }
    return full;
}

/* Runs one MAINT op through the write queue; true when it committed. */
static bool
maint_submit(struct store_thr *t, struct sq_maint *mt, uint32_t now)
{
    struct sq_op op;

    memset(&op, 0, sizeof(op));
    op.kind = SQ_OP_MAINT;
    op.now = now;
    op.maint = mt;
    store_sqlite_submit(t, &op);
    return op.rc == STORE_OK;
}

static uint64_t
mono_usec(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/*
 * A checkpoint in mode on the maintenance connection; *frames gets the
 * WAL's size in frames. True when every frame is in the database.
 */
static bool
checkpoint(struct store *s, struct store_thr *t, int mode, int *frames)
{
    uint64_t t0 = mono_usec();
    int log = 0;
    int done = 0;
    int rc = sqlite3_wal_checkpoint_v2(t->c.db, "main", mode, &log, &done);

    sq_inc(&s->ctr.ckpt_usec, mono_usec() - t0);
    *frames = log > 0 ? log : 0;
    if (rc != SQLITE_OK) {
        store_sqlite_note_err(s, rc);
        return false;
    }
    sq_inc(&s->ctr.checkpoints, 1);
    atomic_store_explicit(&s->ctr.wal_frames, (uint64_t)*frames,
                          memory_order_relaxed);
    atomic_store_explicit(&s->last_ckpt, (uint32_t)time(NULL),
                          memory_order_relaxed);
    return done >= log;
}

struct catch_up {
    struct store     *s;
    struct store_thr *t;
    bool              all;
};

/* Under the write lead: nothing is appended, so the copy completes. */
static void
catch_up(void *arg)
{
    struct catch_up *cu = arg;
    int frames;

    cu->all = checkpoint(cu->s, cu->t, SQLITE_CHECKPOINT_RESTART, &frames);
}

/* The checkpoint policy (see the top of the file). */
static void
maint_checkpoint(struct store *s, struct store_thr *t, struct sweep *sw)
{
    uint64_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
    int frames = 0;

    if (seq == sw->ckpt_seq && !sw->ckpt_behind) {
        return;
    }
    sw->ckpt_seq = seq;
    sw->ckpt_behind = !checkpoint(s, t, SQLITE_CHECKPOINT_PASSIVE, &frames);
    if ((int64_t)frames * (s->page_size + 24) > s->wal_restart) {
        struct catch_up cu = { s, t, false };

        persist_queue_exclusive(&s->wq, catch_up, &cu);
        sq_inc(&s->ctr.ckpt_restarts, 1);
        sw->ckpt_behind = !cu.all;
        sw->ckpt_seq = atomic_load_explicit(&s->seq, memory_order_acquire);
    }
}

/* One tick's work; true when more is waiting (no sleep before it). */
static bool
maint_work(struct store *s, struct store_thr *t, struct sweep *sw,
           struct sq_maint *mt, uint32_t now)
{
    bool more;
    uint64_t bytes;

    mt->dead.len = mt->dead.n = 0;
    mt->touch.len = mt->touch.n = 0;
    mt->evict = 0;
    mt->evict_to = s->mem_limit;
    if (atomic_load(&s->wfail) != 0) {
        return false;
    }
    /* Take the readers' hints, leaving them an empty list. */
    pthread_mutex_lock(&s->hint_lock);
    if (s->hints.n > 0) {
        struct sq_keybuf tmp = s->hints;

        s->hints = mt->touch;
        s->hints.len = s->hints.n = 0;
        mt->touch = tmp;
    }
    pthread_mutex_unlock(&s->hint_lock);
    more = find_expired(t, now, &mt->dead);
    if (!more) {
        more = flush_scan(s, t, sw, now, &mt->dead);
    }
    bytes = atomic_load_explicit(&s->bytes, memory_order_relaxed);
    if (!s->no_evict && bytes > s->mem_limit) {
        mt->evict = SQ_EVICT_WINDOWS;
        more = true;
    }
    if (mt->dead.n > 0 || mt->touch.n > 0 || mt->evict > 0) {
        /* A failing op must not spin: wait for the next tick then. */
        more = maint_submit(t, mt, now) && more;
    }
    maint_checkpoint(s, t, sw);
    return more;
}

static void *
maint_main(void *arg)
{
    struct store_thr *t = arg;
    struct store *s = t->s;
    struct sweep sw;
    struct sq_maint mt;

    memset(&sw, 0, sizeof(sw));
    memset(&mt, 0, sizeof(mt));
    sw.ckpt_seq = atomic_load_explicit(&s->seq, memory_order_relaxed);
    sw.ckpt_behind = true;        /* a WAL left by a crash, say */
    for (;;) {
        /* The time requests told, run on while idle (persist_maint.c). */
        bool more = maint_work(s, t, &sw, &mt, persist_maint_now(&s->pm));

        if (!persist_maint_next(&s->pm, more)) {
            break;
        }
    }
    store_sqlite_keybuf_deinit(&mt.dead);
    store_sqlite_keybuf_deinit(&mt.touch);
    return NULL;
}

bool
store_sqlite_maint_start(struct store *s)
{
    if (store_sqlite_attach(s, &s->maint_thr) != STORE_OK) {
        return false;
    }
    if (!persist_maint_start(&s->pm, maint_main, s->maint_thr)) {
        store_sqlite_detach(&s->maint_thr);
        return false;
    }
    return true;
}

void
store_sqlite_maint_stop(struct store *s)
{
    if (!s->pm.on) {
        return;
    }
    persist_maint_stop(&s->pm);
    store_sqlite_detach(&s->maint_thr);
}
