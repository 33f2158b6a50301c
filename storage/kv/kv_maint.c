/*
 * The maintenance thread of a persistent store, with its own reader. Every
 * tick it (1) applies the recency hints readers left (an item's atime is
 * refreshed at most every KV_ATIME_GRAIN seconds, so reads cost no write
 * most of the time), (2) removes the damaged records readers met, (3)
 * sweeps: the expired items through the adapter's index when it has one
 * and, after a flush_all, the flushed ones by a scan in key order; without
 * an index a scan in key order finds both, a slice per tick; what it finds
 * is deleted through the ordinary write queue, a bounded number per op,
 * (4) evicts when the store holds more than -m (a smaller -m after a
 * restart), and (5) gives the adapter its round (sqlite checkpoints). Each
 * write step is one small op in a batch, so requests never wait long
 * behind it. It owns no data: it only proposes deletions that the writer
 * re-checks.
 */
#include "storage/kv/kv_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

#define KV_SWEEP_SCAN    4096u   /* records looked at per tick */
#define KV_SWEEP_DEL     256u    /* dead items deleted per op */
#define KV_HINT_CAP      (32u * 1024u)   /* bytes of pending hints: some
                                          * hundreds of refreshes per op */
#define KV_BAD_CAP       (16u * 1024u)   /* bytes of pending removals */
#define KV_EVICT_WINDOWS 256u    /* background eviction windows per op */

bool
kv_keybuf_add(struct kv_keybuf *b, const void *key, size_t klen,
              uint64_t cas, const uint32_t *time)
{
    size_t need = 1 + klen + 8 + (time != NULL ? 4 : 0);
    unsigned char *p;

    if (klen > STORE_KEY_MAX) {
        return false;
    }
    if (!kv_grow(&b->p, &b->cap, b->len + need)) {
        return false;
    }
    p = b->p + b->len;
    p[0] = (unsigned char)klen;
    memcpy(p + 1, key, klen);
    kv_put64(p + 1 + klen, cas);
    if (time != NULL) {
        kv_put32(p + 1 + klen + 8, *time);
    }
    b->len += need;
    b->n++;
    return true;
}

void
kv_keybuf_deinit(struct kv_keybuf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

bool
kv_kb_next(struct kv_kb_iter *it, const unsigned char **key, size_t *klen,
           uint64_t *cas, uint32_t *time)
{
    size_t need;

    if (it->p >= it->end) {
        return false;
    }
    *klen = it->p[0];
    need = 1 + *klen + 8 + (it->timed ? 4 : 0);
    if ((size_t)(it->end - it->p) < need) {
        return false;
    }
    *key = it->p + 1;
    *cas = kv_get64(it->p + 1 + *klen);
    *time = it->timed ? kv_get32(it->p + 1 + *klen + 8) : 0;
    it->p += need;
    return true;
}

void
kv_hint(struct store *s, const struct store_key *k, uint64_t cas,
        uint32_t now)
{
    /* A reader never waits: if the list is busy or full, skip the hint. */
    if (pthread_mutex_trylock(&s->hint_lock) != 0) {
        kv_inc(&s->ctr.hints_dropped, 1);
        return;
    }
    if (s->hints.len + 1 + k->len + 12 > KV_HINT_CAP ||
        !kv_keybuf_add(&s->hints, k->data, k->len, cas, &now)) {
        kv_inc(&s->ctr.hints_dropped, 1);
    }
    pthread_mutex_unlock(&s->hint_lock);
}

/*
 * Whether this damaged record was reported a moment ago (a hot key read
 * again before the maintenance thread removed it); notes it if not.
 */
static bool
bad_seen(struct store *s, const void *key, size_t klen, uint64_t cas)
{
    uint64_t id = (uint64_t)kv_crc32c(0, key, klen) << 32 ^ cas;
    bool seen = false;

    pthread_mutex_lock(&s->bad_lock);
    for (unsigned i = 0; i < KV_BAD_RECENT; i++) {
        seen = seen || s->bad_recent[i] == id;
    }
    if (!seen) {
        s->bad_recent[s->bad_next++ % KV_BAD_RECENT] = id;
    }
    pthread_mutex_unlock(&s->bad_lock);
    return seen;
}

void
kv_bad_record(struct store *s, const void *key, size_t klen, uint64_t cas)
{
    unsigned n;

    if (bad_seen(s, key, klen, cas)) {
        return;
    }
    n = atomic_fetch_add(&s->bad_logged, 1);
    kv_inc(&s->ctr.bad_records, 1);
    if (n < KV_LOG_BAD_MAX) {
        char shown[STORE_KEY_MAX * 4 + 1];
        const unsigned char *k = key;
        size_t j = 0;

        for (size_t i = 0; i < klen && i < STORE_KEY_MAX; i++) {
            j += (size_t)snprintf(shown + j, sizeof(shown) - j,
                                  isgraph(k[i]) ? "%c" : "\\x%02x", k[i]);
        }
        shown[j] = '\0';
        fprintf(stderr, "stashd: %s: the record of key \"%s\" fails its "
                "checksum (damaged on disk): not served, removed%s\n",
                s->dir, shown, n + 1 == KV_LOG_BAD_MAX
                ? "; further damaged records are only counted "
                  "(stats: checksum_failures)" : "");
    }
    /* Removal is the maintenance thread's; a reader never waits. */
    if (pthread_mutex_trylock(&s->bad_lock) != 0) {
        return;
    }
    if (s->bad.len + 1 + klen + 8 <= KV_BAD_CAP) {
        (void)kv_keybuf_add(&s->bad, key, klen, cas, NULL);
    }
    pthread_mutex_unlock(&s->bad_lock);
}

/* The maintenance thread's private state. */
struct sweep {
    unsigned char hand[STORE_KEY_MAX];    /* where the next scan starts */
    size_t        hand_len;
    bool          active;                 /* a flush pass is under way */
    uint64_t      pass_cas;               /* what the pass will cover */
    uint32_t      pass_time;
    uint64_t      swept_cas;              /* covered by finished passes */
    uint32_t      swept_time;
    unsigned      ticks;
};

/* What a scan collects into the op. */
struct collect {
    struct store    *s;
    struct sweep    *sw;
    struct kv_maint *mt;
    uint32_t         now;
    uint64_t         fc;
    uint32_t         ft;
    unsigned         seen;
    unsigned         limit;  /* records to look at */
    bool             full;   /* stopped because the op is full */
    bool             more;   /* a record follows the slice */
};

/* Adds a dead or damaged record; false when the op is full. */
static bool
collect_one(struct collect *co, const void *key, size_t klen,
            const struct kv_view *v)
{
    if (co->mt->dead.n + co->mt->bad.n >= KV_SWEEP_DEL) {
        co->full = true;
        return false;
    }
    if (klen == 0 || klen > STORE_KEY_MAX) {
        return true;
    }
    if (!kv_sum_meta_ok(&v->r)) {
        kv_bad_record(co->s, key, klen, v->r.cas);
        if (!kv_keybuf_add(&co->mt->bad, key, klen, v->r.cas, NULL)) {
            co->full = true;
            return false;
        }
        return true;
    }
    if (kv_dead(&v->r, co->now, co->fc, co->ft, NULL) &&
        !kv_keybuf_add(&co->mt->dead, key, klen, v->r.cas, NULL)) {
        co->full = true;
        return false;
    }
    return true;
}

static bool
expired_visit(void *arg, const void *key, size_t klen, const struct kv_view *v)
{
    return collect_one(arg, key, klen, v);
}

/* A key-order slice: keeps the hand at the first record not looked at. */
static bool
scan_visit(void *arg, const void *key, size_t klen, const struct kv_view *v)
{
    struct collect *co = arg;

    if (co->seen == co->limit || co->full) {
        if (klen <= STORE_KEY_MAX) {
            memcpy(co->sw->hand, key, klen);
            co->sw->hand_len = klen;
            co->more = true;
        }
        return false;
    }
    if (!collect_one(co, key, klen, v)) {
        /* Full: this record is looked at again next time. */
        if (klen <= STORE_KEY_MAX) {
            memcpy(co->sw->hand, key, klen);
            co->sw->hand_len = klen;
            co->more = true;
        }
        return false;
    }
    co->seen++;
    return true;
}

/*
 * Scans up to KV_SWEEP_SCAN records from the hand; true when it stopped
 * because the op is full (there may be more right away). *wrapped says
 * the scan reached the end of the keys.
 */
static bool
scan_slice(struct store_thr *t, struct collect *co, bool *wrapped)
{
    struct store *s = t->s;
    kv_err_e e;

    co->seen = 0;
    co->limit = KV_SWEEP_SCAN;
    co->more = false;
    e = s->be->rd_scan(t->rd, co->sw->hand, co->sw->hand_len,
                       KV_SWEEP_SCAN + 1, scan_visit, co);
    *wrapped = false;
    if (e != KV_OK) {
        kv_note_err(s, e);
        return false;
    }
    if (!co->more) {
        co->sw->hand_len = 0;
        *wrapped = true;
    }
    return co->full;
}

/*
 * With an index of expiry times: the expired records by the index, then,
 * after a flush_all, a pass over every key until the flush is covered.
 * True when more is waiting.
 */
static bool
sweep_indexed(struct store_thr *t, struct collect *co)
{
    struct store *s = t->s;
    struct sweep *sw = co->sw;
    bool due_time = co->ft != 0 && co->ft <= co->now &&
                    co->ft > sw->swept_time;
    bool wrapped;
    bool full;
    kv_err_e e;

    e = s->be->rd_expired(t->rd, co->now, KV_SWEEP_DEL + 1, expired_visit,
                          co);
    if (e != KV_OK) {
        kv_note_err(s, e);
    }
    if (co->full) {
        return true;
    }
    if (!sw->active) {
        if (co->fc <= sw->swept_cas && !due_time) {
            return false;
        }
        /* Start a pass that covers the flush state as it is now. */
        sw->active = true;
        sw->hand_len = 0;
        sw->pass_cas = co->fc;
        sw->pass_time = due_time ? co->ft : sw->swept_time;
    }
    full = scan_slice(t, co, &wrapped);
    if (wrapped) {
        /* Reached the end: everything flushed before the pass is seen. */
        sw->active = false;
        sw->swept_cas = sw->pass_cas;
        sw->swept_time = sw->pass_time;
    }
    return full;
}

/* Runs one MAINT op through the write queue; true when it committed. */
static bool
maint_submit(struct store_thr *t, struct kv_maint *mt, uint32_t now)
{
    struct kv_op op;

    memset(&op, 0, sizeof(op));
    op.kind = KV_OP_MAINT;
    op.now = now;
    op.maint = mt;
    kv_submit(t, &op);
    return op.rc == STORE_OK;
}

/* Moves what readers left in *from to *to (emptied), leaving them *to's
 * old buffer; under lock. */
static void
take_list(pthread_mutex_t *lock, struct kv_keybuf *from, struct kv_keybuf *to)
{
    pthread_mutex_lock(lock);
    if (from->n > 0) {
        struct kv_keybuf tmp = *from;

        *from = *to;
        from->len = from->n = 0;
        *to = tmp;
    }
    pthread_mutex_unlock(lock);
}

/* One tick's work; true when more is waiting (no sleep before it). */
static bool
maint_work(struct store *s, struct store_thr *t, struct sweep *sw,
           struct kv_maint *mt, uint32_t now)
{
    struct collect co;
    bool more;
    bool wrapped;
    uint64_t bytes;

    mt->dead.len = mt->dead.n = 0;
    mt->touch.len = mt->touch.n = 0;
    mt->bad.len = mt->bad.n = 0;
    mt->evict = 0;
    mt->evict_to = s->mem_limit;
    if (atomic_load(&s->wfail) != 0) {
        return false;
    }
    take_list(&s->hint_lock, &s->hints, &mt->touch);
    take_list(&s->bad_lock, &s->bad, &mt->bad);
    memset(&co, 0, sizeof(co));
    co.s = s;
    co.sw = sw;
    co.mt = mt;
    co.now = now;
    co.fc = atomic_load_explicit(&s->flush_cas, memory_order_relaxed);
    co.ft = atomic_load_explicit(&s->flush_time, memory_order_relaxed);
    if (s->be->rd_expired != NULL) {
        more = sweep_indexed(t, &co);
    } else {
        more = scan_slice(t, &co, &wrapped);
    }
    if (s->be->rd_idle != NULL) {
        s->be->rd_idle(t->rd);
    }
    bytes = atomic_load_explicit(&s->bytes, memory_order_relaxed);
    if (!s->no_evict && bytes > s->mem_limit) {
        mt->evict = KV_EVICT_WINDOWS;
        more = true;
    }
    if (mt->dead.n > 0 || mt->touch.n > 0 || mt->bad.n > 0 ||
        mt->evict > 0) {
        /* A failing op must not spin: wait for the next tick then. */
        more = maint_submit(t, mt, now) && more;
    }
    if (s->be->tick != NULL) {
        s->be->tick(s->b, t->rd);
    }
    /* A reserve given back to a full disk is made again once there is
     * room to spare (a stat a second). */
    if (++sw->ticks % 10 == 0) {
        kv_reserve_make(s->dir, KV_RESERVE_SLACK);
    }
    return more;
}

static void *
maint_main(void *arg)
{
    struct store_thr *t = arg;
    struct store *s = t->s;
    struct sweep sw;
    struct kv_maint mt;

    memset(&sw, 0, sizeof(sw));
    memset(&mt, 0, sizeof(mt));
    for (;;) {
        /* The time requests told, run on while idle (persist_maint.c). */
        bool more = maint_work(s, t, &sw, &mt, persist_maint_now(&s->pm));

        if (!persist_maint_next(&s->pm, more)) {
            break;
        }
    }
    kv_keybuf_deinit(&mt.dead);
    kv_keybuf_deinit(&mt.touch);
    kv_keybuf_deinit(&mt.bad);
    return NULL;
}

bool
kv_maint_start(struct store *s)
{
    if (kv_attach(s, &s->maint_thr) != STORE_OK) {
        return false;
    }
    if (!persist_maint_start(&s->pm, maint_main, s->maint_thr)) {
        kv_detach(&s->maint_thr);
        return false;
    }
    return true;
}

void
kv_maint_stop(struct store *s)
{
    if (!s->pm.on) {
        return;
    }
    persist_maint_stop(&s->pm);
    kv_detach(&s->maint_thr);
}
