/*
 * The lmdb backend's maintenance thread, one per store. Every tick it
 * (1) applies the recency hints readers left (an item's atime is refreshed
 * at most every LM_ATIME_GRAIN seconds, so reads cost no write most of the
 * time), (2) sweeps: scans a slice of the items in key order from where it
 * stopped, in its own read transaction so the scan never holds the writer,
 * and deletes the dead (expired or flushed) ones it found through the
 * ordinary write queue, a bounded number per op, and (3) evicts when the
 * store holds more than -m (a smaller -m after a restart). Each step is one
 * small op in a batch, so requests never wait long behind it. It owns no
 * data: it only proposes deletions that the writer re-checks.
 */
#include "storage/lmdb/lm.h"

#include <stdlib.h>
#include <time.h>

#define LM_SWEEP_SCAN    4096u   /* items looked at per tick */
#define LM_SWEEP_DEL     256u    /* dead items deleted per op */
#define LM_HINT_CAP      (32u * 1024u)   /* bytes of pending hints: some
                                          * hundreds of refreshes per op */
#define LM_EVICT_WINDOWS 256u    /* background eviction windows per op */

bool
store_lmdb_keybuf_add(struct lm_keybuf *b, const void *key, size_t klen,
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
    lm_put64(p + 1 + klen, cas);
    if (time != NULL) {
        lm_put32(p + 1 + klen + 8, *time);
    }
    b->len += need;
    b->n++;
    return true;
}

void
store_lmdb_keybuf_deinit(struct lm_keybuf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

void
store_lmdb_hint(struct store *s, const struct store_key *k, uint64_t cas,
                uint32_t now)
{
    /* A reader never waits: if the list is busy or full, skip the hint. */
    if (pthread_mutex_trylock(&s->hint_lock) != 0) {
        lm_inc(&s->ctr.hints_dropped, 1);
        return;
    }
    if (s->hints.len + 1 + k->len + 12 > LM_HINT_CAP ||
        !store_lmdb_keybuf_add(&s->hints, k->data, k->len, cas, &now)) {
        lm_inc(&s->ctr.hints_dropped, 1);
    }
    pthread_mutex_unlock(&s->hint_lock);
}

/* Where the sweeper stopped, private to the maintenance thread. */
struct sweep {
    unsigned char hand[STORE_KEY_MAX];
    size_t        hand_len;
};

/*
 * Scans up to LM_SWEEP_SCAN items from the hand in a read transaction and
 * collects the dead ones (at most LM_SWEEP_DEL) into dead. Returns true
 * when it stopped because dead was full (there may be more right away).
 */
static bool
sweep_scan(struct store *s, struct store_thr *t, struct sweep *sw,
           uint32_t now, struct lm_keybuf *dead)
{
    uint64_t fc = atomic_load_explicit(&s->flush_cas, memory_order_relaxed);
    uint32_t ft = atomic_load_explicit(&s->flush_time, memory_order_relaxed);
    MDB_cursor *cur;
    MDB_val key;
    MDB_val data;
    bool full = false;
    int rc;

    if (mdb_txn_renew(t->rtxn) != 0) {
        return false;
    }
    if (mdb_cursor_open(t->rtxn, s->items, &cur) != 0) {
        mdb_txn_reset(t->rtxn);
        return false;
    }
    rc = MDB_NOTFOUND;
    if (sw->hand_len > 0) {
        key.mv_size = sw->hand_len;
        key.mv_data = sw->hand;
        rc = mdb_cursor_get(cur, &key, &data, MDB_SET_RANGE);
    }
    if (rc == MDB_NOTFOUND) {
        rc = mdb_cursor_get(cur, &key, &data, MDB_FIRST);
    }
    for (unsigned i = 0; rc == 0 && i < LM_SWEEP_SCAN; i++) {
        struct lm_rec r;

        if (dead->n >= LM_SWEEP_DEL) {
            full = true;
            break;
        }
        if (data.mv_size >= LM_HDR && key.mv_size <= STORE_KEY_MAX) {
            lm_rec_decode(data.mv_data, &r);
            if (lm_dead(&r, now, fc, ft, NULL) &&
                !store_lmdb_keybuf_add(dead, key.mv_data, key.mv_size,
                                       r.cas, NULL)) {
                break;
            }
        }
        rc = mdb_cursor_get(cur, &key, &data, MDB_NEXT);
    }
    if (rc == 0 && key.mv_size <= STORE_KEY_MAX) {
        memcpy(sw->hand, key.mv_data, key.mv_size);
        sw->hand_len = key.mv_size;
    } else {
        sw->hand_len = 0;
    }
    mdb_cursor_close(cur);
    mdb_txn_reset(t->rtxn);
    return full;
}

/* Runs one MAINT op through the write queue. */
static void
maint_submit(struct store_thr *t, struct lm_maint *mt, uint32_t now)
{
    struct lm_op op;

    memset(&op, 0, sizeof(op));
    op.kind = LM_OP_MAINT;
    op.now = now;
    op.maint = mt;
    store_lmdb_submit(t, &op);
}

/* One tick's work; true when more is waiting (no sleep before it). */
static bool
maint_work(struct store *s, struct store_thr *t, struct sweep *sw,
           struct lm_maint *mt, uint32_t now)
{
    bool more = false;
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
        struct lm_keybuf tmp = s->hints;

        s->hints = mt->touch;
        s->hints.len = s->hints.n = 0;
        mt->touch = tmp;
    }
    pthread_mutex_unlock(&s->hint_lock);
    more = sweep_scan(s, t, sw, now, &mt->dead);
    bytes = atomic_load_explicit(&s->bytes, memory_order_relaxed);
    if (!s->no_evict && bytes > s->mem_limit) {
        mt->evict = LM_EVICT_WINDOWS;
        more = true;
    }
    if (mt->dead.n > 0 || mt->touch.n > 0 || mt->evict > 0) {
        maint_submit(t, mt, now);
    }
    return more;
}

static void *
maint_main(void *arg)
{
    struct store_thr *t = arg;
    struct store *s = t->s;
    struct sweep sw;
    struct lm_maint mt;

    memset(&sw, 0, sizeof(sw));
    memset(&mt, 0, sizeof(mt));
    for (;;) {
        /* The time requests told, run on while idle (persist_maint.c). */
        bool more = maint_work(s, t, &sw, &mt, persist_maint_now(&s->pm));

        if (!persist_maint_next(&s->pm, more)) {
            break;
        }
    }
    store_lmdb_keybuf_deinit(&mt.dead);
    store_lmdb_keybuf_deinit(&mt.touch);
    return NULL;
}

bool
store_lmdb_maint_start(struct store *s)
{
    if (store_lmdb_attach(s, &s->maint_thr) != STORE_OK) {
        return false;
    }
    if (!persist_maint_start(&s->pm, maint_main, s->maint_thr)) {
        store_lmdb_detach(&s->maint_thr);
        return false;
    }
    return true;
}

void
store_lmdb_maint_stop(struct store *s)
{
    if (!s->pm.on) {
        return;
    }
    persist_maint_stop(&s->pm);
    store_lmdb_detach(&s->maint_thr);
}
