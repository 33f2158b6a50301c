/*
 * The write path of every persistent backend: each mutation, from any
 * thread, becomes a kv_op on its caller's stack and goes through one
 * queue. The first thread to find no batch running becomes the leader: it
 * takes the whole queue, applies every op in order inside one write
 * transaction of the adapter, commits (no sync here) and wakes the
 * waiters; the next queued thread then leads the following batch. So there
 * is one writer, writes that arrive while a batch runs share the next
 * commit, and nobody waits on a dedicated writer thread's wake-up.
 * Durability is the syncer's business (persist_sync.c). If a batch fails
 * (no room, a lock held elsewhere, I/O), it is dropped and its ops are
 * rerun one per transaction, so only the op that cannot be done fails.
 * Every record written is checksummed here and every record read back for
 * a write is checked here; a damaged one is removed and never used.
 * This file never reads a clock and never syncs.
 */
#include "storage/kv/kv_int.h"

#include <stdio.h>
#include <stdlib.h>

#include "storage/rules.h"

#define KV_WINDOW          16u   /* items looked at per eviction choice */
#define KV_RECLAIM_WINDOWS 4u    /* -M: windows searched for dead items */
#define KV_FULL_EVICT      64u   /* windows evicted, at most, on no room */

/* One batch's transaction and everything it changes, published on commit. */
struct kv_wctx {
    struct store   *s;
    struct kv_meta  m;                 /* staged state */
    kv_err_e        err;               /* first adapter error: abort */
    bool            dirty;
    bool            flushed;           /* the flush state changed */
    uint64_t        total_items;
    uint64_t        evictions;
    uint64_t        evicted_unfetched;
    uint64_t        expired_unfetched;
    uint64_t        reclaimed;
    uint64_t        refreshes;
    uint64_t        bad_removed;
    bool            bad_known;         /* damage met is already reported */
};

/* The record already stored under a key, if any. */
struct kv_old {
    bool          found;        /* a record exists, dead or alive */
    bool          live;
    bool          flushed;      /* dead by flush, not expiry */
    struct kv_rec r;
    const void   *val;          /* with_value only: until the next call */
    size_t        vlen;
    uint64_t      size;         /* what it counts against -m */
};

store_rc_e
kv_rc(kv_err_e e)
{
    switch (e) {
    case KV_OK:
        return STORE_OK;
    case KV_NOTFOUND:
        return STORE_ENOENT;
    case KV_FULL:
    case KV_NOSPC:
    case KV_NOMEM:
        return STORE_ENOMEM;
    case KV_CORRUPT:
    case KV_DAMAGED:       /* the engine's own to handle: never a reply */
        return STORE_ECORRUPT;
    case KV_BUSY:
    case KV_EIO:
        break;
    }
    return STORE_EIO;
}

void
kv_note_err(struct store *s, kv_err_e e)
{
    switch (e) {
    case KV_OK:
    case KV_NOTFOUND:
    case KV_DAMAGED:       /* counted as a checksum failure */
        break;
    case KV_FULL:
    case KV_NOSPC:
        kv_inc(&s->ctr.full, 1);
        break;
    case KV_BUSY:
        kv_inc(&s->ctr.busy, 1);
        break;
    default:
        kv_inc(&s->ctr.io_errors, 1);
        break;
    }
}

/* Notes an adapter failure; false so callers can return it. */
static bool
fail(struct kv_wctx *w, kv_err_e e)
{
    if (w->err == KV_OK) {
        w->err = e;
    }
    return false;
}

static bool
scratch_reserve(struct store *s, size_t n)
{
    return kv_grow(&s->scratch, &s->scratch_cap, n);
}

static void
bytes_sub(struct kv_wctx *w, uint64_t n)
{
    w->m.bytes = w->m.bytes > n ? w->m.bytes - n : 0;
}

/* Accounts for a record that is gone from the store. */
static void
gone(struct kv_wctx *w, uint64_t size)
{
    bytes_sub(w, size);
    w->m.items = w->m.items > 0 ? w->m.items - 1 : 0;
    w->dirty = true;
}

/* Counts a dead record that is going away. */
static void
note_dead(struct kv_wctx *w, const struct kv_rec *r, bool flushed)
{
    w->reclaimed++;
    if (!flushed && !(r->iflags & KV_IF_FETCHED)) {
        w->expired_unfetched++;
    }
}

static bool
del(struct kv_wctx *w, const void *kdata, size_t klen, uint64_t size)
{
    kv_err_e e = w->s->be->del(w->s->b, kdata, klen);

    if (e == KV_NOTFOUND) {
        return true;
    }
    if (e != KV_OK) {
        return fail(w, e);
    }
    gone(w, size);
    return true;
}

/*
 * Loads the record under key (its value too when with_value) and checks
 * it against its sum: the metadata always, key and value when loaded. A
 * damaged record is removed here and reported as absent. False on an
 * adapter error.
 */
static bool
load(struct kv_wctx *w, const void *kdata, size_t klen, uint32_t now,
     bool with_value, struct kv_old *o)
{
    struct store *s = w->s;
    struct kv_view v;
    kv_err_e e = s->be->load(s->b, kdata, klen, with_value, &v);
    bool ok;

    memset(o, 0, sizeof(*o));
    if (e == KV_NOTFOUND) {
        return true;
    }
    if (e != KV_OK && e != KV_DAMAGED) {
        return fail(w, e);
    }
    ok = e == KV_OK &&
         (with_value ? kv_sum_ok(&v.r, kdata, klen, v.val, v.vlen)
                     : kv_sum_meta_ok(&v.r));
    if (!ok) {
        if (!w->bad_known) {
            kv_bad_record(s, kdata, klen, v.r.cas);
        }
        if (!del(w, kdata, klen, kv_item_size(klen, v.vlen))) {
            return false;
        }
        w->bad_removed++;
        return true;
    }
    o->found = true;
    o->r = v.r;
    o->val = v.val;
    o->vlen = v.vlen;
    o->size = kv_item_size(klen, v.vlen);
    o->live = !kv_dead(&o->r, now, w->m.flush_cas, w->m.flush_time,
                       &o->flushed);
    return true;
}

/* Writes key -> r + a + b (summed here) in place of o; false on failure. */
static bool
put(struct kv_wctx *w, const void *kdata, size_t klen, struct kv_rec *r,
    const void *a, size_t na, const void *b, size_t nb,
    const struct kv_old *o)
{
    struct store *s = w->s;
    kv_err_e e;

    r->sum = kv_sum_make(kv_sum_kv(kdata, klen, a, na, b, nb), r);
    e = s->be->put(s->b, kdata, klen, r, a, na, b, nb);
    if (e != KV_OK) {
        return fail(w, e);
    }
    if (o->found) {
        bytes_sub(w, o->size);
        if (!o->live) {
            note_dead(w, &o->r, o->flushed);
        }
    } else {
        w->m.items++;
    }
    w->m.bytes += kv_item_size(klen, na + nb);
    w->dirty = true;
    return true;
}

/* Rewrites o's metadata as r, re-summed with o's key+value half. */
static bool
put_rec(struct kv_wctx *w, const void *kdata, size_t klen, struct kv_rec *r,
        const struct kv_old *o)
{
    struct store *s = w->s;
    kv_err_e e;

    r->sum = kv_sum_make((uint32_t)(o->r.sum >> 32), r);
    e = s->be->put_rec(s->b, kdata, klen, r);
    if (e != KV_OK) {
        return fail(w, e);
    }
    w->dirty = true;
    return true;
}

/* A fresh header with the next CAS. */
static struct kv_rec
new_rec(struct kv_wctx *w, uint32_t flags, uint32_t exptime, uint32_t now)
{
    struct kv_rec r;

    memset(&r, 0, sizeof(r));
    r.cas = ++w->m.cas_max;
    r.flags = flags;
    r.exptime = exptime;
    r.stored = now;
    r.atime = now;
    return r;
}

/* A new value is in: what the op and the stats learn of it. */
static store_rc_e
stored(struct kv_wctx *w, struct kv_op *op, const struct kv_rec *r)
{
    w->total_items++;
    op->cas_out = r->cas;
    op->wrote = true;
    return STORE_OK;
}

/* One item seen by the evictor. */
struct cand {
    unsigned char key[STORE_KEY_MAX];
    size_t        klen;
    struct kv_rec r;
    uint64_t      size;
    bool          dead;
    bool          flushed;
    bool          bad;
};

/* Collects a window of candidates and where the next one starts. */
struct window {
    struct kv_wctx *w;
    struct cand    *c;
    unsigned        n;
    uint32_t        now;
    bool            more;       /* a record follows the window */
};

static bool
window_visit(void *arg, const void *key, size_t klen, const struct kv_view *v)
{
    struct window *win = arg;
    struct store *s = win->w->s;
    struct cand *x;

    if (klen == 0 || klen > STORE_KEY_MAX) {
        return true;
    }
    if (win->n == KV_WINDOW) {
        memcpy(s->hand, key, klen);     /* the next window starts here */
        s->hand_len = klen;
        win->more = true;
        return false;
    }
    x = &win->c[win->n++];
    x->klen = klen;
    memcpy(x->key, key, klen);
    x->r = v->r;
    x->size = kv_item_size(klen, v->vlen);
    x->bad = !kv_sum_meta_ok(&v->r);
    x->dead = x->bad || kv_dead(&x->r, win->now, win->w->m.flush_cas,
                                win->w->m.flush_time, &x->flushed);
    return true;
}

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
 * Looks at the next KV_WINDOW items after the hand (a clock over the key
 * order) and removes the dead ones, or else, unless dead_only, the least
 * recently used live ones (oldest atime, then oldest CAS): one, or up to
 * half the window while want bytes are still to be freed. Sampling like
 * this approximates LRU without an index to update on every write.
 * Returns false on an adapter error.
 */
static bool
evict_window(struct kv_wctx *w, const struct store_key *protect,
             bool dead_only, uint64_t want, uint32_t now)
{
    struct store *s = w->s;
    struct cand c[KV_WINDOW];
    struct cand *order[KV_WINDOW];
    struct window win = { w, c, 0, now, false };
    unsigned live = 0;
    uint64_t freed = 0;
    bool any_dead = false;
    kv_err_e e = s->be->window(s->b, s->hand, s->hand_len, KV_WINDOW + 1,
                               window_visit, &win);

    if (!win.more) {
        s->hand_len = 0;          /* wrap to the first key next time */
    }
    if (e != KV_OK) {
        return fail(w, e);
    }
    for (unsigned i = 0; i < win.n; i++) {
        if (is_protected(&c[i], protect)) {
            continue;
        }
        if (c[i].dead) {
            any_dead = true;
            if (c[i].bad) {
                kv_bad_record(s, c[i].key, c[i].klen, c[i].r.cas);
            }
            if (!del(w, c[i].key, c[i].klen, c[i].size)) {
                return false;
            }
            if (c[i].bad) {
                w->bad_removed++;
            } else {
                note_dead(w, &c[i].r, c[i].flushed);
            }
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
        if (!(order[i]->r.iflags & KV_IF_FETCHED)) {
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
make_room(struct kv_wctx *w, const struct store_key *protect, uint64_t add,
          uint64_t sub, uint32_t now)
{
    struct store *s = w->s;
    uint64_t windows = 0;
    uint64_t max_windows;

    if (w->m.bytes + add <= s->mem_limit + sub) {
        return STORE_OK;
    }
    if (add > s->mem_limit) {
        return STORE_ENOMEM;
    }
    max_windows = s->no_evict ? KV_RECLAIM_WINDOWS
                              : w->m.items / KV_WINDOW + 2;
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
store_check(store_mode_e mode, uint64_t cas, const struct kv_old *o)
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

/* Copies o's value into the scratch buffer, which no adapter call moves. */
static bool
keep_value(struct kv_wctx *w, const struct kv_old *o)
{
    if (!scratch_reserve(w->s, o->vlen)) {
        return false;
    }
    if (o->vlen > 0) {
        memcpy(w->s->scratch, o->val, o->vlen);
    }
    return true;
}

static store_rc_e
apply_concat(struct kv_wctx *w, struct kv_op *op)
{
    const struct store_key *k = op->k;
    const struct store_item *in = op->in;
    struct store *s = w->s;
    struct kv_old o;
    struct kv_rec r;
    uint64_t nlen;
    store_rc_e rc;

    if (!load(w, k->data, k->len, op->now, true, &o)) {
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
    if (store_too_large(s->item_max, k->len, o.r.flags, nlen)) {
        return STORE_E2BIG;
    }
    /* The old value lives in the adapter's buffers: keep a copy before
     * anything moves them. */
    if (!keep_value(w, &o)) {
        return STORE_ENOMEM;
    }
    rc = make_room(w, k, kv_item_size(k->len, nlen), o.size, op->now);
    if (rc != STORE_OK) {
        return rc;
    }
    r = new_rec(w, o.r.flags, o.r.exptime, op->now);
    if (op->mode == STORE_APPEND) {
        if (!put(w, k->data, k->len, &r, s->scratch, o.vlen, in->data,
                 in->len, &o)) {
            return STORE_EIO;
        }
    } else if (!put(w, k->data, k->len, &r, in->data, in->len, s->scratch,
                    o.vlen, &o)) {
        return STORE_EIO;
    }
    return stored(w, op, &r);
}

static store_rc_e
apply_store(struct kv_wctx *w, struct kv_op *op)
{
    const struct store_key *k = op->k;
    const struct store_item *in = op->in;
    struct kv_old o;
    struct kv_rec r;
    store_rc_e rc;

    if (op->mode == STORE_APPEND || op->mode == STORE_PREPEND) {
        return apply_concat(w, op);
    }
    if (store_too_large(w->s->item_max, k->len, in->flags, in->len)) {
        return STORE_E2BIG;
    }
    if (!load(w, k->data, k->len, op->now, false, &o)) {
        return STORE_EIO;
    }
    rc = store_check(op->mode, in->cas, &o);
    if (rc != STORE_OK) {
        return rc;
    }
    rc = make_room(w, k, kv_item_size(k->len, in->len),
                   o.found ? o.size : 0, op->now);
    if (rc != STORE_OK) {
        return rc;
    }
    r = new_rec(w, in->flags, in->exptime, op->now);
    if (!put(w, k->data, k->len, &r, in->data, in->len, NULL, 0, &o)) {
        return STORE_EIO;
    }
    return stored(w, op, &r);
}

static store_rc_e
apply_del(struct kv_wctx *w, struct kv_op *op)
{
    struct kv_old o;

    if (!load(w, op->k->data, op->k->len, op->now, false, &o)) {
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
apply_arith(struct kv_wctx *w, struct kv_op *op)
{
    const struct store_key *k = op->k;
    const struct store_delta *d = op->d;
    struct store *s = w->s;
    char num[ARITH_NUM_MAX];
    struct kv_old o;
    struct kv_rec r;
    uint64_t v;
    size_t n;
    char *p;
    store_rc_e rc;

    if (!load(w, k->data, k->len, op->now, true, &o)) {
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
        /* A shorter result is space padded to the old length (rules.h). */
        if (!scratch_reserve(s, o.vlen > ARITH_NUM_MAX ? o.vlen
                                                       : ARITH_NUM_MAX)) {
            return STORE_ENOMEM;
        }
        p = (char *)s->scratch;
        n = arith_format(v, o.vlen, p);
    }
    rc = make_room(w, k, kv_item_size(k->len, n), o.found ? o.size : 0,
                   op->now);
    if (rc != STORE_OK) {
        return rc;
    }
    r = new_rec(w, o.live ? o.r.flags : 0, o.live ? o.r.exptime : d->exptime,
                op->now);
    if (!put(w, k->data, k->len, &r, p, n, NULL, 0, &o)) {
        return STORE_EIO;
    }
    op->value = v;
    return stored(w, op, &r);
}

/* The value's bytes for a GAT, in memory its caller owns. */
static store_rc_e
gat_copy(struct kv_op *op, const void *val, size_t n,
         const struct kv_rec *r)
{
    struct store_item *out = op->out;
    void *p = NULL;

    if (n > 0) {
        if (op->sink != NULL) {
            p = op->sink->reserve(op->sink, n);
        } else {
            p = malloc(n);
            out->pin = p;
        }
        if (p == NULL) {
            /* Applied, but the value cannot be returned. */
            return STORE_ENOMEM;
        }
        memcpy(p, val, n);
    }
    out->data = n > 0 ? p : "";
    out->len = (uint32_t)n;
    out->flags = r->flags;
    out->exptime = r->exptime;
    out->cas = r->cas;
    return STORE_OK;
}

/* Touch and get-and-touch: a new exptime, the same CAS and value. */
static store_rc_e
apply_touch(struct kv_wctx *w, struct kv_op *op)
{
    const struct store_key *k = op->k;
    struct store *s = w->s;
    bool gat = op->kind == KV_OP_GAT;
    struct kv_old o;
    struct kv_rec r;

    if (gat && op->out->pin != NULL) {
        /* A rerun after a failed batch: drop the first copy. */
        free(op->out->pin);
        op->out->pin = NULL;
    }
    if (!load(w, k->data, k->len, op->now, gat, &o)) {
        return STORE_EIO;
    }
    if (!o.live) {
        if (o.found) {
            op->value = o.flushed ? 2 : 1;   /* counted by the caller */
        }
        return STORE_ENOENT;
    }
    /* A GAT's value must outlive the rewrite below. */
    if (gat && !keep_value(w, &o)) {
        return STORE_ENOMEM;
    }
    r = o.r;
    r.exptime = op->when;
    r.atime = op->now;
    if (gat) {
        r.iflags |= KV_IF_FETCHED;
    }
    if (!put_rec(w, k->data, k->len, &r, &o)) {
        return STORE_EIO;
    }
    op->cas_out = r.cas;
    op->wrote = true;
    return gat ? gat_copy(op, s->scratch, o.vlen, &r) : STORE_OK;
}

static store_rc_e
apply_flush(struct kv_wctx *w, struct kv_op *op)
{
    if (op->when <= op->now) {
        /* Every CAS handed out so far is dead; a pending delay is moot. */
        w->m.flush_cas = w->m.cas_max;
        w->m.flush_time = 0;
    } else {
        w->m.flush_time = op->when;
    }
    w->dirty = true;
    w->flushed = true;
    op->wrote = true;
    return STORE_OK;
}

static store_rc_e
apply_maint(struct kv_wctx *w, struct kv_op *op)
{
    struct kv_maint *mt = op->maint;
    struct kv_kb_iter it = { mt->dead.p, mt->dead.p + mt->dead.len, false };
    const unsigned char *key;
    size_t klen;
    uint64_t cas;
    uint32_t time;
    struct kv_old o;

    mt->deleted = 0;
    /* Dead items the sweeper found, if they are still the same. */
    while (kv_kb_next(&it, &key, &klen, &cas, &time)) {
        if (!load(w, key, klen, op->now, false, &o)) {
            return STORE_EIO;
        }
        if (o.found && !o.live && o.r.cas == cas) {
            if (!del(w, key, klen, o.size)) {
                return STORE_EIO;
            }
            note_dead(w, &o.r, o.flushed);
            mt->deleted++;
        }
    }
    /* Damaged records met (and reported) elsewhere: loading them whole
     * removes them. */
    it.p = mt->bad.p;
    it.end = mt->bad.p + mt->bad.len;
    w->bad_known = true;
    while (kv_kb_next(&it, &key, &klen, &cas, &time)) {
        if (!load(w, key, klen, op->now, true, &o)) {
            return STORE_EIO;
        }
    }
    w->bad_known = false;
    /* Recency: readers saw these items; mark them used. */
    it.p = mt->touch.p;
    it.end = mt->touch.p + mt->touch.len;
    it.timed = true;
    while (kv_kb_next(&it, &key, &klen, &cas, &time)) {
        struct kv_rec r;

        if (!load(w, key, klen, op->now, false, &o)) {
            return STORE_EIO;
        }
        if (!o.live || o.r.cas != cas || time < o.r.atime + KV_ATIME_GRAIN) {
            continue;
        }
        r = o.r;
        r.atime = time;
        r.iflags |= KV_IF_FETCHED;
        if (!put_rec(w, key, klen, &r, &o)) {
            return STORE_EIO;
        }
        w->refreshes++;
    }
    /* Over the limit (a smaller -m after a restart, no room): evict. */
    for (uint64_t i = 0; i < mt->evict && w->m.bytes > mt->evict_to; i++) {
        if (!evict_window(w, NULL, false, w->m.bytes - mt->evict_to,
                          op->now)) {
            return STORE_EIO;
        }
    }
    return STORE_OK;
}

static store_rc_e
apply(struct kv_wctx *w, struct kv_op *op)
{
    op->wrote = false;
    op->cas_out = 0;
    op->value = 0;
    switch (op->kind) {
    case KV_OP_STORE:
        return apply_store(w, op);
    case KV_OP_DEL:
        return apply_del(w, op);
    case KV_OP_ARITH:
        return apply_arith(w, op);
    case KV_OP_TOUCH:
    case KV_OP_GAT:
        return apply_touch(w, op);
    case KV_OP_FLUSH:
        return apply_flush(w, op);
    case KV_OP_MAINT:
        return apply_maint(w, op);
    }
    return STORE_EINVAL;
}

/* After a commit: the new state for readers, stats and the syncer. */
static void
publish(struct store *s, const struct kv_wctx *w, uint64_t nops)
{
    uint64_t seq = atomic_load_explicit(&s->seq, memory_order_relaxed);

    s->meta = w->m;
    atomic_store_explicit(&s->flush_cas, w->m.flush_cas,
                          memory_order_relaxed);
    atomic_store_explicit(&s->flush_time, w->m.flush_time,
                          memory_order_relaxed);
    atomic_store_explicit(&s->cas_max, w->m.cas_max, memory_order_relaxed);
    atomic_store_explicit(&s->bytes, w->m.bytes, memory_order_relaxed);
    atomic_store_explicit(&s->items, w->m.items, memory_order_relaxed);
    atomic_store_explicit(&s->seq, seq + 1, memory_order_release);
    kv_inc(&s->ctr.commits, 1);
    kv_inc(&s->ctr.commit_ops, nops);
    kv_inc(&s->ctr.total_items, w->total_items);
    kv_inc(&s->ctr.evictions, w->evictions);
    kv_inc(&s->ctr.evicted_unfetched, w->evicted_unfetched);
    kv_inc(&s->ctr.expired_unfetched, w->expired_unfetched);
    kv_inc(&s->ctr.reclaimed, w->reclaimed);
    kv_inc(&s->ctr.refreshes, w->refreshes);
    kv_inc(&s->ctr.bad_removed, w->bad_removed);
}

/*
 * Runs ops (just first when single) in one write transaction. Returns
 * KV_OK when committed (or nothing to commit), else the adapter's error
 * after the transaction was dropped; the ops' results are then
 * meaningless.
 */
static kv_err_e
run_txn(struct store *s, struct kv_op *first, bool single)
{
    const struct kv_backend *be = s->be;
    struct kv_wctx w;
    struct kv_meta disk;
    uint64_t nops = 0;
    bool due;
    kv_err_e e;

    memset(&w, 0, sizeof(w));
    w.s = s;
    w.m = s->meta;
    e = be->begin(s->b);
    if (e != KV_OK) {
        return e;
    }
    for (struct kv_op *op = first; op != NULL;
         op = single ? NULL : kv_op_of(op->q.next)) {
        op->rc = apply(&w, op);
        nops++;
        if (w.err != KV_OK) {
            be->abort(s->b);
            return w.err;
        }
    }
    if (!w.dirty) {
        be->abort(s->b);
        for (struct kv_op *op = first; op != NULL;
             op = single ? NULL : kv_op_of(op->q.next)) {
            op->seq = atomic_load_explicit(&s->seq, memory_order_relaxed);
        }
        return KV_OK;
    }
    /* What the file must say: the CAS as a ceiling leased ahead. */
    disk = w.m;
    due = !s->meta_written || w.flushed || w.m.cas_max > s->cas_ceiling;
    disk.cas_max = w.m.cas_max > s->cas_ceiling
                   ? w.m.cas_max + KV_CAS_LEASE : s->cas_ceiling;
    e = be->commit(s->b, &disk, due);
    if (e != KV_OK) {
        return e;
    }
    s->cas_ceiling = disk.cas_max;
    s->meta_written = true;
    publish(s, &w, nops);
    for (struct kv_op *op = first; op != NULL;
         op = single ? NULL : kv_op_of(op->q.next)) {
        op->seq = atomic_load_explicit(&s->seq, memory_order_relaxed);
    }
    persist_sync_commit(&s->ps, atomic_load_explicit(&s->seq,
                                                     memory_order_relaxed));
    return KV_OK;
}

/* Frees room after "no room": a few windows' worth of evictions. */
static void
evict_for_room(struct store *s, uint32_t now)
{
    struct kv_maint mt;
    struct kv_op op;

    memset(&mt, 0, sizeof(mt));
    memset(&op, 0, sizeof(op));
    /* Down to 1/32 below what is stored now, a bounded number of steps. */
    mt.evict = KV_FULL_EVICT;
    mt.evict_to = s->meta.bytes - s->meta.bytes / 32;
    op.kind = KV_OP_MAINT;
    op.now = now;
    op.maint = &mt;
    (void)run_txn(s, &op, true);
}

/* Whether op can give disk space back (so may spend the reserve on it). */
static bool
frees_space(const struct kv_op *op)
{
    return op->kind == KV_OP_DEL || op->kind == KV_OP_FLUSH ||
           op->kind == KV_OP_MAINT;
}

/*
 * After "the disk is full" for op (alone in its transaction): gives back
 * what the store can (the adapter's reclaim; a sync, after which pages
 * freed since the last one can be used again) and tries once more. Only
 * an op that frees space (a delete, a flush, the sweeper's) may then
 * spend the reserve, so that on a full disk deletes always can; it tries
 * at once (a reclaim first, say a checkpoint that grows the database,
 * could take the room it just got), and the reserve is owed from then on
 * (see reserve_owed).
 */
static kv_err_e
retry_nospc(struct store *s, struct kv_op *op)
{
    kv_err_e e;

    if (s->be->reclaim != NULL) {
        (void)s->be->reclaim(s->b);
    }
    persist_sync_now(&s->ps);
    if (!frees_space(op)) {
        /* What reclaim gave back makes the reserve first, if it went. */
        kv_reserve_make(s->dir, KV_RESERVE_SLACK);
    }
    e = run_txn(s, op, true);
    if (e == KV_NOSPC && frees_space(op) && kv_reserve_release(s->dir)) {
        fprintf(stderr, "stashd: %s: the disk is full: released the "
                "reserve so that deletes can free space\n", s->dir);
        s->reserve_owed = true;
        e = run_txn(s, op, true);
        if (e == KV_NOSPC && s->be->reclaim != NULL) {
            (void)s->be->reclaim(s->b);
            e = run_txn(s, op, true);
        }
    }
    return e;
}

/*
 * While the reserve a delete spent is not back, every batch first tries
 * to make it again: the room the delete got would otherwise go to the
 * next writes, and a disk that fills up again without its reserve has no
 * way back, not even after a restart. A statvfs per batch, only then.
 */
static void
reserve_owed(struct store *s)
{
    if (s->reserve_owed) {
        kv_reserve_make(s->dir, KV_RESERVE_SLACK);
        s->reserve_owed = !kv_reserve_exists(s->dir);
    }
}

/* Runs a batch; on failure reruns each op alone so only the bad one fails. */
static void
run_batch(struct store *s, struct kv_op *batch)
{
    kv_err_e e;

    reserve_owed(s);
    e = run_txn(s, batch, batch->q.next == NULL);

    if (e == KV_OK) {
        return;
    }
    kv_note_err(s, e);
    if (batch->q.next != NULL) {
        kv_inc(&s->ctr.aborts, 1);
    }
    for (struct kv_op *op = batch; op != NULL; op = kv_op_of(op->q.next)) {
        if (batch->q.next != NULL) {
            e = run_txn(s, op, true);
            if (e != KV_OK) {
                kv_note_err(s, e);
            }
        }
        if (e == KV_FULL && !s->no_evict && op->kind != KV_OP_MAINT) {
            evict_for_room(s, op->now);
            e = run_txn(s, op, true);
        }
        if (e == KV_NOSPC) {
            e = retry_nospc(s, op);
        }
        if (e != KV_OK) {
            op->rc = kv_rc(e);
            op->wrote = false;
            op->seq = atomic_load_explicit(&s->seq, memory_order_relaxed);
        }
    }
}

void
kv_run_batch(void *arg, struct persist_qnode *batch)
{
    run_batch(arg, kv_op_of(batch));
}

void
kv_submit(struct store_thr *t, struct kv_op *op)
{
    persist_queue_submit(&t->s->wq, &op->q, &t->cond);
}

void
kv_submit_many(struct store_thr *t, struct kv_op *ops, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++) {
        ops[i].q.next = &ops[i + 1].q;
    }
    persist_queue_submit_chain(&t->s->wq, &ops[0].q, &ops[n - 1].q,
                               &t->cond);
}
