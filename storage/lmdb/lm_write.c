/*
 * The lmdb backend's write path: every mutation, from any thread, becomes
 * an lm_op on its caller's stack and goes through one queue. The first
 * thread to find no batch running becomes the leader: it takes the whole
 * queue, applies every op in order inside one LMDB write transaction,
 * writes the metadata record, commits (MDB_NOSYNC: no fsync here), and
 * wakes the waiters; the next queued thread then leads the following
 * batch. So there is never more than one writer, writes that arrive while
 * a batch runs share the next commit, and nobody waits on a dedicated
 * writer thread's wake-up. Durability is the syncer's business
 * (persist_sync.c). If a batch fails (map full, disk full, I/O), it is
 * aborted and its ops are rerun one per transaction, so only the op that
 * cannot fit fails.
 * This file never reads a clock and never calls fsync.
 */
#include "storage/lmdb/lm.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/statvfs.h>

#include "storage/rules.h"

#define LM_WINDOW          16u   /* items looked at per eviction choice */
#define LM_RECLAIM_WINDOWS 4u    /* -M: windows searched for dead items */
#define LM_MAPFULL_EVICT   64u   /* items evicted, at least, on map full */

/* One batch's transaction and everything it changes, published on commit. */
struct lm_wctx {
    struct store   *s;
    MDB_txn        *txn;
    struct lm_meta  m;                 /* staged metadata */
    int             mrc;               /* first LMDB error: must abort */
    bool            dirty;
    uint64_t        total_items;
    uint64_t        evictions;
    uint64_t        evicted_unfetched;
    uint64_t        expired_unfetched;
    uint64_t        reclaimed;
    uint64_t        refreshes;
};

/* The record already stored under a key, if any. */
struct lm_old {
    bool                 found;        /* a record exists, dead or alive */
    bool                 live;
    bool                 flushed;      /* dead by flush, not expiry */
    struct lm_rec        r;
    const unsigned char *val;          /* into the map: valid until a put */
    size_t               vlen;
    uint64_t             size;         /* what it counts against -m */
};

static bool
load(struct lm_wctx *w, const void *kdata, size_t klen, uint32_t now,
     struct lm_old *o)
{
    MDB_val key = { klen, (void *)kdata };
    MDB_val data;
    int rc = mdb_get(w->txn, w->s->items, &key, &data);

    memset(o, 0, sizeof(*o));
    if (rc == MDB_NOTFOUND) {
        return true;
    }
    if (rc != 0) {
        w->mrc = rc;
        return false;
    }
    o->found = true;
    if (data.mv_size < LM_HDR) {
        /* A damaged record is dead: a write replaces it. */
        o->size = lm_item_size(klen, 0);
        return true;
    }
    lm_rec_decode(data.mv_data, &o->r);
    o->val = (const unsigned char *)data.mv_data + LM_HDR;
    o->vlen = data.mv_size - LM_HDR;
    o->size = lm_item_size(klen, o->vlen);
    o->live = !lm_dead(&o->r, now, w->m.flush_cas, w->m.flush_time,
                       &o->flushed);
    return true;
}

static void
bytes_sub(struct lm_wctx *w, uint64_t n)
{
    w->m.bytes = w->m.bytes > n ? w->m.bytes - n : 0;
}

/* Counts a dead record that is going away. */
static void
note_dead(struct lm_wctx *w, const struct lm_rec *r, bool flushed)
{
    w->reclaimed++;
    if (!flushed && !(r->iflags & LM_IF_FETCHED)) {
        w->expired_unfetched++;
    }
}

static bool
scratch_reserve(struct store *s, size_t n)
{
    unsigned char *p;
    size_t cap;

    if (n <= s->scratch_cap) {
        return true;
    }
    cap = s->scratch_cap != 0 ? s->scratch_cap : 4096;
    while (cap < n) {
        cap *= 2;
    }
    p = realloc(s->scratch, cap);
    if (p == NULL) {
        return false;
    }
    s->scratch = p;
    s->scratch_cap = cap;
    return true;
}

/* Writes key -> r + a + b in place of o; false on an LMDB error. */
static bool
put(struct lm_wctx *w, const void *kdata, size_t klen, const struct lm_rec *r,
    const void *a, size_t na, const void *b, size_t nb,
    const struct lm_old *o)
{
    MDB_val key = { klen, (void *)kdata };
    MDB_val data = { LM_HDR + na + nb, NULL };
    unsigned char *p;
    int rc = mdb_put(w->txn, w->s->items, &key, &data, MDB_RESERVE);

    if (rc != 0) {
        w->mrc = rc;
        return false;
    }
    p = data.mv_data;
    lm_rec_encode(p, r);
    if (na > 0) {
        memcpy(p + LM_HDR, a, na);
    }
    if (nb > 0) {
        memcpy(p + LM_HDR + na, b, nb);
    }
    if (o->found) {
        bytes_sub(w, o->size);
        if (!o->live) {
            note_dead(w, &o->r, o->flushed);
        }
    }
    w->m.bytes += lm_item_size(klen, na + nb);
    w->dirty = true;
    return true;
}

static bool
del(struct lm_wctx *w, const void *kdata, size_t klen, uint64_t size)
{
    MDB_val key = { klen, (void *)kdata };
    int rc = mdb_del(w->txn, w->s->items, &key, NULL);

    if (rc != 0 && rc != MDB_NOTFOUND) {
        w->mrc = rc;
        return false;
    }
    if (rc == 0) {
        bytes_sub(w, size);
        w->dirty = true;
    }
    return true;
}

/* A fresh header with the next CAS. */
static struct lm_rec
new_rec(struct lm_wctx *w, uint32_t flags, uint32_t exptime, uint32_t now)
{
    struct lm_rec r;

    r.cas = ++w->m.cas_max;
    r.flags = flags;
    r.exptime = exptime;
    r.stored = now;
    r.atime = now;
    r.iflags = 0;
    return r;
}

/* One item seen by the evictor. */
struct cand {
    unsigned char key[STORE_KEY_MAX];
    size_t        klen;
    struct lm_rec r;
    uint64_t      size;
    bool          dead;
    bool          flushed;
};

static bool
is_protected(const struct cand *c, const struct store_key *protect)
{
    return protect != NULL && c->klen == protect->len &&
           memcmp(c->key, protect->data, c->klen) == 0;
}

/* Older first: atime, then CAS. */
static bool
cand_older(const struct cand *a, const struct cand *b)
{
    return a->r.atime < b->r.atime ||
           (a->r.atime == b->r.atime && a->r.cas < b->r.cas);
}

/*
 * Looks at the next LM_WINDOW items after the hand (a clock over the key
 * order) and removes the dead ones, or else, unless dead_only, the least
 * recently used live ones (oldest atime, then oldest CAS): one, or up to
 * half the window while want bytes are still to be freed. Sampling like
 * this approximates LRU without an index to update on every write.
 * Returns false on an LMDB error.
 */
static bool
evict_window(struct lm_wctx *w, const struct store_key *protect,
             bool dead_only, uint64_t want, uint32_t now)
{
    struct store *s = w->s;
    struct cand c[LM_WINDOW];
    struct cand *order[LM_WINDOW];
    MDB_cursor *cur;
    MDB_val key;
    MDB_val data;
    unsigned n = 0;
    unsigned live = 0;
    uint64_t freed = 0;
    bool any_dead = false;
    int rc = mdb_cursor_open(w->txn, s->items, &cur);

    if (rc != 0) {
        w->mrc = rc;
        return false;
    }
    rc = MDB_NOTFOUND;
    if (s->hand_len > 0) {
        key.mv_size = s->hand_len;
        key.mv_data = s->hand;
        rc = mdb_cursor_get(cur, &key, &data, MDB_SET_RANGE);
    }
    if (rc == MDB_NOTFOUND) {
        rc = mdb_cursor_get(cur, &key, &data, MDB_FIRST);
    }
    while (rc == 0 && n < LM_WINDOW) {
        struct cand *x = &c[n];

        if (key.mv_size <= STORE_KEY_MAX) {
            x->klen = key.mv_size;
            memcpy(x->key, key.mv_data, key.mv_size);
            if (data.mv_size < LM_HDR) {
                memset(&x->r, 0, sizeof(x->r));
                x->size = lm_item_size(x->klen, 0);
                x->dead = true;
                x->flushed = true;
            } else {
                lm_rec_decode(data.mv_data, &x->r);
                x->size = lm_item_size(x->klen, data.mv_size - LM_HDR);
                x->dead = lm_dead(&x->r, now, w->m.flush_cas,
                                  w->m.flush_time, &x->flushed);
            }
            n++;
        }
        rc = mdb_cursor_get(cur, &key, &data, MDB_NEXT);
    }
    if (rc == 0 && key.mv_size <= STORE_KEY_MAX) {
        memcpy(s->hand, key.mv_data, key.mv_size);
        s->hand_len = key.mv_size;
    } else {
        s->hand_len = 0;          /* wrap to the first key next time */
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        w->mrc = rc;
        return false;
    }
    for (unsigned i = 0; i < n; i++) {
        if (is_protected(&c[i], protect)) {
            continue;
        }
        if (c[i].dead) {
            any_dead = true;
            if (!del(w, c[i].key, c[i].klen, c[i].size)) {
                return false;
            }
            note_dead(w, &c[i].r, c[i].flushed);
            continue;
        }
        /* Insertion sort of the live ones, oldest first: n is small. */
        order[live] = &c[i];
        for (unsigned j = live; j > 0 && cand_older(order[j], order[j - 1]);
             j--) {
            struct cand *tmp = order[j];

            order[j] = order[j - 1];
            order[j - 1] = tmp;
        }
        live++;
    }
    if (any_dead || dead_only) {
        return true;
    }
    for (unsigned i = 0; i < live && (i == 0 || (freed < want &&
                                                  i < live / 2)); i++) {
        if (!del(w, order[i]->key, order[i]->klen, order[i]->size)) {
            return false;
        }
        freed += order[i]->size;
        w->evictions++;
        if (!(order[i]->r.iflags & LM_IF_FETCHED)) {
            w->evicted_unfetched++;
        }
    }
    return true;
}

/*
 * Makes bytes - sub + add fit under -m: evicts (or with -M only reclaims
 * dead items) around the hand, never protect. ENOMEM when it cannot.
 */
static store_rc_e
make_room(struct lm_wctx *w, const struct store_key *protect, uint64_t add,
          uint64_t sub, uint32_t now)
{
    struct store *s = w->s;
    uint64_t windows = 0;
    uint64_t max_windows;
    MDB_stat st;
    int rc;

    if (w->m.bytes + add <= s->mem_limit + sub) {
        return STORE_OK;
    }
    if (add > s->mem_limit) {
        return STORE_ENOMEM;
    }
    rc = mdb_stat(w->txn, s->items, &st);
    if (rc != 0) {
        w->mrc = rc;
        return STORE_EIO;
    }
    max_windows = s->no_evict ? LM_RECLAIM_WINDOWS
                              : st.ms_entries / LM_WINDOW + 2;
    while (w->m.bytes + add > s->mem_limit + sub) {
        if (windows++ >= max_windows) {
            return STORE_ENOMEM;
        }
        if (!evict_window(w, protect, s->no_evict,
                          w->m.bytes + add - s->mem_limit - sub, now)) {
            return STORE_EIO;
        }
    }
    return STORE_OK;
}

/* The rule for whole-value writes, memcached's (as the memory backend). */
static store_rc_e
store_check(store_mode_e mode, uint64_t cas, const struct lm_old *o)
{
    if (cas != 0) {
        if (!o->live) {
            return STORE_ENOENT;
        }
        return o->r.cas == cas ? STORE_OK : STORE_EEXISTS;
    }
    if (mode == STORE_ADD && o->live) {
        return STORE_NOT_STORED;
    }
    if (mode == STORE_REPLACE && !o->live) {
        return STORE_NOT_STORED;
    }
    return STORE_OK;
}

static store_rc_e
apply_concat(struct lm_wctx *w, struct lm_op *op)
{
    const struct store_key *k = op->k;
    const struct store_item *in = op->in;
    struct lm_old o;
    struct lm_rec r;
    uint64_t nlen;
    store_rc_e rc;

    if (!load(w, k->data, k->len, op->now, &o)) {
        return STORE_EIO;
    }
    if (!o.live) {
        /* memcached answers NOT_STORED here even when a CAS was given. */
        return STORE_NOT_STORED;
    }
    if (in->cas != 0 && in->cas != o.r.cas) {
        return STORE_EEXISTS;
    }
    nlen = (uint64_t)o.vlen + in->len;
    if (store_too_large(w->s->item_max, k->len, o.r.flags, nlen)) {
        return STORE_E2BIG;
    }
    /* The old value lives in the map: copy it before anything moves. */
    if (!scratch_reserve(w->s, o.vlen)) {
        return STORE_ENOMEM;
    }
    if (o.vlen > 0) {
        memcpy(w->s->scratch, o.val, o.vlen);
    }
    rc = make_room(w, k, lm_item_size(k->len, nlen), o.size, op->now);
    if (rc != STORE_OK) {
        return rc;
    }
    r = new_rec(w, o.r.flags, o.r.exptime, op->now);
    if (op->mode == STORE_APPEND) {
        if (!put(w, k->data, k->len, &r, w->s->scratch, o.vlen, in->data,
                 in->len, &o)) {
            return STORE_EIO;
        }
    } else if (!put(w, k->data, k->len, &r, in->data, in->len,
                    w->s->scratch, o.vlen, &o)) {
        return STORE_EIO;
    }
    w->total_items++;
    op->cas_out = r.cas;
    op->wrote = true;
    return STORE_OK;
}

static store_rc_e
apply_store(struct lm_wctx *w, struct lm_op *op)
{
    const struct store_key *k = op->k;
    const struct store_item *in = op->in;
    struct lm_old o;
    struct lm_rec r;
    store_rc_e rc;

    if (op->mode == STORE_APPEND || op->mode == STORE_PREPEND) {
        return apply_concat(w, op);
    }
    if (store_too_large(w->s->item_max, k->len, in->flags, in->len)) {
        return STORE_E2BIG;
    }
    if (!load(w, k->data, k->len, op->now, &o)) {
        return STORE_EIO;
    }
    rc = store_check(op->mode, in->cas, &o);
    if (rc != STORE_OK) {
        return rc;
    }
    rc = make_room(w, k, lm_item_size(k->len, in->len),
                   o.found ? o.size : 0, op->now);
    if (rc != STORE_OK) {
        return rc;
    }
    r = new_rec(w, in->flags, in->exptime, op->now);
    if (!put(w, k->data, k->len, &r, in->data, in->len, NULL, 0, &o)) {
        return STORE_EIO;
    }
    w->total_items++;
    op->cas_out = r.cas;
    op->wrote = true;
    return STORE_OK;
}

static store_rc_e
apply_del(struct lm_wctx *w, struct lm_op *op)
{
    struct lm_old o;

    if (!load(w, op->k->data, op->k->len, op->now, &o)) {
        return STORE_EIO;
    }
    if (!o.live) {
        return STORE_ENOENT;
    }
    if (op->cas != 0 && op->cas != o.r.cas) {
        return STORE_EEXISTS;
    }
    if (!del(w, op->k->data, op->k->len, o.size)) {
        return STORE_EIO;
    }
    op->wrote = true;
    return STORE_OK;
}

static store_rc_e
apply_arith(struct lm_wctx *w, struct lm_op *op)
{
    const struct store_key *k = op->k;
    const struct store_delta *d = op->d;
    char num[ARITH_NUM_MAX];
    struct lm_old o;
    struct lm_rec r;
    uint64_t v;
    size_t n;
    char *p;
    store_rc_e rc;

    if (!load(w, k->data, k->len, op->now, &o)) {
        return STORE_EIO;
    }
    if (!o.live) {
        /* memcached creates even when a CAS was given. */
        if (!d->create) {
            return STORE_ENOENT;
        }
        v = d->initial;
        p = num;
        n = arith_format(v, 0, num);
    } else {
        if (o.vlen == 0) {
            return STORE_EDELTA;
        }
        if (d->cas != 0 && d->cas != o.r.cas) {
            return STORE_EEXISTS;
        }
        if (!arith_parse((const char *)o.val, o.vlen, &v)) {
            return STORE_EDELTA;
        }
        v = arith_apply(v, d->by, d->decr);
        /* A shorter result is space padded to the old length (arith.h). */
        if (!scratch_reserve(w->s, o.vlen > ARITH_NUM_MAX ? o.vlen
                                                          : ARITH_NUM_MAX)) {
            return STORE_ENOMEM;
        }
        p = (char *)w->s->scratch;
        n = arith_format(v, o.vlen, p);
    }
    rc = make_room(w, k, lm_item_size(k->len, n), o.found ? o.size : 0,
                   op->now);
    if (rc != STORE_OK) {
        return rc;
    }
    r = new_rec(w, o.live ? o.r.flags : 0, o.live ? o.r.exptime : d->exptime,
                op->now);
    if (!put(w, k->data, k->len, &r, p, n, NULL, 0, &o)) {
        return STORE_EIO;
    }
    w->total_items++;
    op->value = v;
    op->cas_out = r.cas;
    op->wrote = true;
    return STORE_OK;
}

/* Touch and get-and-touch: a new exptime, the same CAS and value. */
static store_rc_e
apply_touch(struct lm_wctx *w, struct lm_op *op)
{
    const struct store_key *k = op->k;
    struct store *s = w->s;
    struct store_item *out = op->out;
    struct lm_old o;
    struct lm_rec r;
    void *p;

    if (op->kind == LM_OP_GAT && out->pin != NULL) {
        /* A rerun after an aborted batch: drop the first copy. */
        free(out->pin);
        out->pin = NULL;
    }
    if (!load(w, k->data, k->len, op->now, &o)) {
        return STORE_EIO;
    }
    if (!o.live) {
        if (o.found) {
            op->value = o.flushed ? 2 : 1;   /* counted by the caller */
        }
        return STORE_ENOENT;
    }
    if (!scratch_reserve(s, o.vlen)) {
        return STORE_ENOMEM;
    }
    if (o.vlen > 0) {
        memcpy(s->scratch, o.val, o.vlen);
    }
    r = o.r;
    r.exptime = op->when;
    r.atime = op->now;
    if (op->kind == LM_OP_GAT) {
        r.iflags |= LM_IF_FETCHED;
    }
    if (!put(w, k->data, k->len, &r, s->scratch, o.vlen, NULL, 0, &o)) {
        return STORE_EIO;
    }
    op->cas_out = r.cas;
    op->wrote = true;
    if (op->kind != LM_OP_GAT) {
        return STORE_OK;
    }
    if (o.vlen == 0) {
        p = NULL;
    } else if (op->sink != NULL) {
        p = op->sink->reserve(op->sink, o.vlen);
    } else {
        p = malloc(o.vlen);
        out->pin = p;
    }
    if (o.vlen > 0 && p == NULL) {
        /* Applied, but the value cannot be returned. */
        return STORE_ENOMEM;
    }
    if (o.vlen > 0) {
        memcpy(p, s->scratch, o.vlen);
    }
    out->data = o.vlen > 0 ? p : "";
    out->len = (uint32_t)o.vlen;
    out->flags = r.flags;
    out->exptime = r.exptime;
    out->cas = r.cas;
    return STORE_OK;
}

static store_rc_e
apply_flush(struct lm_wctx *w, struct lm_op *op)
{
    if (op->when <= op->now) {
        /* Every CAS handed out so far is dead; a pending delay is moot. */
        w->m.flush_cas = w->m.cas_max;
        w->m.flush_time = 0;
    } else {
        w->m.flush_time = op->when;
    }
    w->dirty = true;
    op->wrote = true;
    return STORE_OK;
}

/* Walks a packed key buffer: klen u8, key, cas u64[, time u32]. */
struct kb_iter {
    const unsigned char *p;
    const unsigned char *end;
    bool                 timed;
};

static bool
kb_next(struct kb_iter *it, const unsigned char **key, size_t *klen,
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
    *cas = lm_get64(it->p + 1 + *klen);
    *time = it->timed ? lm_get32(it->p + 1 + *klen + 8) : 0;
    it->p += need;
    return true;
}

static store_rc_e
apply_maint(struct lm_wctx *w, struct lm_op *op)
{
    struct lm_maint *mt = op->maint;
    struct store *s = w->s;
    struct kb_iter it = { mt->dead.p, mt->dead.p + mt->dead.len, false };
    const unsigned char *key;
    size_t klen;
    uint64_t cas;
    uint32_t time;
    struct lm_old o;

    /* Dead items the sweeper found, if they are still the same. */
    while (kb_next(&it, &key, &klen, &cas, &time)) {
        if (!load(w, key, klen, op->now, &o)) {
            return STORE_EIO;
        }
        if (o.found && !o.live && o.r.cas == cas) {
            if (!del(w, key, klen, o.size)) {
                return STORE_EIO;
            }
            note_dead(w, &o.r, o.flushed);
        }
    }
    /* Recency: readers saw these items; mark them used. */
    it.p = mt->touch.p;
    it.end = mt->touch.p + mt->touch.len;
    it.timed = true;
    while (kb_next(&it, &key, &klen, &cas, &time)) {
        struct lm_rec r;

        if (!load(w, key, klen, op->now, &o)) {
            return STORE_EIO;
        }
        if (!o.live || o.r.cas != cas || time < o.r.atime + LM_ATIME_GRAIN) {
            continue;
        }
        if (!scratch_reserve(s, o.vlen)) {
            break;
        }
        if (o.vlen > 0) {
            memcpy(s->scratch, o.val, o.vlen);
        }
        r = o.r;
        r.atime = time > r.atime ? time : r.atime;
        r.iflags |= LM_IF_FETCHED;
        if (!put(w, key, klen, &r, s->scratch, o.vlen, NULL, 0, &o)) {
            return STORE_EIO;
        }
        w->refreshes++;
    }
    /* Over the limit (a smaller -m after a restart): evict a few. */
    for (uint64_t i = 0; i < mt->evict && w->m.bytes > mt->evict_to; i++) {
        if (!evict_window(w, NULL, false, w->m.bytes - mt->evict_to,
                          op->now)) {
            return STORE_EIO;
        }
    }
    return STORE_OK;
}

static store_rc_e
apply(struct lm_wctx *w, struct lm_op *op)
{
    op->wrote = false;
    op->cas_out = 0;
    op->value = 0;
    switch (op->kind) {
    case LM_OP_STORE:
        return apply_store(w, op);
    case LM_OP_DEL:
        return apply_del(w, op);
    case LM_OP_ARITH:
        return apply_arith(w, op);
    case LM_OP_TOUCH:
    case LM_OP_GAT:
        return apply_touch(w, op);
    case LM_OP_FLUSH:
        return apply_flush(w, op);
    case LM_OP_MAINT:
        return apply_maint(w, op);
    }
    return STORE_EINVAL;
}

/*
 * Runs ops (just first when single) in one write transaction. Returns 0
 * when committed (or nothing to commit), else the LMDB error after the
 * transaction was aborted; the ops' results are then meaningless.
 */
static int
run_txn(struct store *s, struct lm_op *first, bool single)
{
    struct lm_wctx w;
    unsigned char meta[LM_META_SIZE];
    MDB_val mkey = { sizeof(LM_META_KEY) - 1, (void *)LM_META_KEY };
    MDB_val mval = { LM_META_SIZE, meta };
    uint64_t nops = 0;
    uint64_t seq;
    int rc;

    memset(&w, 0, sizeof(w));
    w.s = s;
    w.m = s->meta;
    rc = mdb_txn_begin(s->env, NULL, 0, &w.txn);
    if (rc != 0) {
        return rc;
    }
    for (struct lm_op *op = first; op != NULL;
         op = single ? NULL : lm_op_of(op->q.next)) {
        op->rc = apply(&w, op);
        nops++;
        if (w.mrc != 0) {
            mdb_txn_abort(w.txn);
            return w.mrc;
        }
    }
    seq = atomic_load_explicit(&s->seq, memory_order_relaxed);
    if (!w.dirty) {
        mdb_txn_abort(w.txn);
    } else {
        store_lmdb_meta_encode(meta, &w.m);
        rc = mdb_put(w.txn, s->main_dbi, &mkey, &mval, 0);
        if (rc != 0) {
            mdb_txn_abort(w.txn);
            return rc;
        }
        rc = mdb_txn_commit(w.txn);
        if (rc != 0) {
            return rc;
        }
        seq++;
        s->meta = w.m;
        atomic_store_explicit(&s->flush_cas, w.m.flush_cas,
                              memory_order_relaxed);
        atomic_store_explicit(&s->flush_time, w.m.flush_time,
                              memory_order_relaxed);
        atomic_store_explicit(&s->cas_max, w.m.cas_max, memory_order_relaxed);
        atomic_store_explicit(&s->bytes, w.m.bytes, memory_order_relaxed);
        atomic_store_explicit(&s->seq, seq, memory_order_release);
        lm_inc(&s->ctr.commits, 1);
        lm_inc(&s->ctr.commit_ops, nops);
        lm_inc(&s->ctr.total_items, w.total_items);
        lm_inc(&s->ctr.evictions, w.evictions);
        lm_inc(&s->ctr.evicted_unfetched, w.evicted_unfetched);
        lm_inc(&s->ctr.expired_unfetched, w.expired_unfetched);
        lm_inc(&s->ctr.reclaimed, w.reclaimed);
        lm_inc(&s->ctr.refreshes, w.refreshes);
    }
    for (struct lm_op *op = first; op != NULL;
         op = single ? NULL : lm_op_of(op->q.next)) {
        op->seq = seq;
    }
    if (w.dirty && s->ps.mode == STORE_SYNC_ALWAYS) {
        persist_sync_kick(&s->ps);
    }
    return 0;
}

/* Frees room after a map-full: a few windows' worth of evictions. */
static void
evict_for_map(struct store *s, uint32_t now)
{
    struct lm_maint mt;
    struct lm_op op;

    memset(&mt, 0, sizeof(mt));
    memset(&op, 0, sizeof(op));
    /* Down to 1/32 below what is stored now, a bounded number of steps. */
    mt.evict = LM_MAPFULL_EVICT;
    mt.evict_to = s->meta.bytes - s->meta.bytes / 32;
    op.kind = LM_OP_MAINT;
    op.now = now;
    op.maint = &mt;
    (void)run_txn(s, &op, true);
}

/* Whether the data directory's file system has (almost) no room left. */
static bool
disk_full(const struct store *s)
{
    struct statvfs v;

    if (statvfs(s->dir, &v) != 0) {
        return false;
    }
    /* A commit writes whole pages: under a few of them free is full. */
    return (uint64_t)v.f_bavail * v.f_frsize < 64 * 1024;
}

/* Runs a batch; on failure reruns each op alone so only the bad one fails. */
static void
run_batch(struct store *s, struct lm_op *batch)
{
    int rc = run_txn(s, batch, batch->q.next == NULL);

    if (rc == 0) {
        return;
    }
    if (batch->q.next != NULL) {
        lm_inc(&s->ctr.aborts, 1);
    }
    for (struct lm_op *op = batch; op != NULL;
         op = lm_op_of(op->q.next)) {
        rc = batch->q.next == NULL ? rc : run_txn(s, op, true);
        if (rc == MDB_MAP_FULL) {
            lm_inc(&s->ctr.map_full, 1);
            if (!s->no_evict && op->kind != LM_OP_MAINT) {
                evict_for_map(s, op->now);
                rc = run_txn(s, op, true);
            }
        }
        if (rc == EIO && disk_full(s)) {
            /* LMDB reports a short write as EIO; on a full disk that is
             * "out of space" for this write, not a broken store. */
            rc = ENOSPC;
        }
        if (rc != 0) {
            op->rc = store_lmdb_rc(rc);
            op->wrote = false;
            op->seq = atomic_load_explicit(&s->seq, memory_order_relaxed);
        }
    }
}

void
store_lmdb_run_batch(void *arg, struct persist_qnode *batch)
{
    run_batch(arg, lm_op_of(batch));
}

void
store_lmdb_submit(struct store_thr *t, struct lm_op *op)
{
    persist_queue_submit(&t->s->wq, &op->q, &t->cond);
}
