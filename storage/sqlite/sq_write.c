/*
 * The sqlite backend's write path: every mutation, from any thread, becomes
 * an sq_op on its caller's stack and goes through one queue. The first
 * thread to find no batch running becomes the leader: it takes the whole
 * queue, applies every op in order inside one transaction on the writer
 * connection (BEGIN IMMEDIATE ... COMMIT, prepared statements only),
 * rewrites the meta row when the flush state changed or the CAS counter
 * left its lease, commits (synchronous=OFF: no fsync here), and
 * wakes the waiters; the next queued thread then leads the following
 * batch. So there is one writer, writes that arrive while a batch runs
 * share the next commit, and nobody waits on a dedicated writer thread's
 * wake-up. Durability is the syncer's business (persist_sync.c). If a batch
 * fails (SQLITE_FULL, BUSY, I/O), it is rolled back and its ops are rerun
 * one per transaction, so only the op that cannot be done fails. This file
 * never reads a clock and never syncs.
 */
#include "storage/sqlite/sq.h"

#include <stdlib.h>

#include "storage/rules.h"

#define SQ_WINDOW_ITEMS    16u   /* items looked at per eviction choice */
#define SQ_RECLAIM_WINDOWS 4u    /* -M: windows searched for dead items */
#define SQ_FULL_EVICT      64u   /* windows evicted, at most, on FULL */

/* One batch's transaction and everything it changes, published on commit. */
struct sq_wctx {
    struct store   *s;
    struct sq_meta  m;                 /* staged meta row */
    int             err;               /* first SQLite error: roll back */
    bool            dirty;
    uint64_t        flushes;
    uint64_t        total_items;
    uint64_t        evictions;
    uint64_t        evicted_unfetched;
    uint64_t        expired_unfetched;
    uint64_t        reclaimed;
    uint64_t        refreshes;
};

/* The row already stored under a key, if any. */
struct sq_old {
    bool          found;        /* a row exists, dead or alive */
    bool          live;
    bool          flushed;      /* dead by flush, not expiry */
    struct sq_rec r;
    size_t        vlen;         /* the value is in s->scratch if loaded */
    uint64_t      size;         /* what it counts against -m */
};

static sqlite3_stmt *
stmt(struct sq_wctx *w, sq_sql_e id)
{
    sqlite3_stmt *st = store_sqlite_stmt(&w->s->w, id);

    if (st == NULL && w->err == 0) {
        w->err = SQLITE_ERROR;
    }
    return st;
}

/* Steps st to its end and resets it; false (w->err set) on failure. */
static bool
run_done(struct sq_wctx *w, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);

    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        w->err = rc;
        return false;
    }
    return true;
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

/*
 * Loads the row under key (with its value copied to s->scratch when
 * with_value, else only its length); false on an SQLite error.
 */
static bool
load(struct sq_wctx *w, const void *kdata, size_t klen, uint32_t now,
     bool with_value, struct sq_old *o)
{
    sqlite3_stmt *st = stmt(w, with_value ? SQ_LOADV : SQ_LOAD);
    int rc;

    memset(o, 0, sizeof(*o));
    if (st == NULL) {
        return false;
    }
    sq_bind_blob(st, 1, kdata, klen);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        sqlite3_reset(st);
        return true;
    }
    if (rc != SQLITE_ROW) {
        sqlite3_reset(st);
        w->err = rc;
        return false;
    }
    store_sqlite_rec(st, 0, &o->r);
    if (with_value) {
        const void *v = sqlite3_column_blob(st, 6);

        o->vlen = (size_t)sqlite3_column_bytes(st, 6);
        if (!scratch_reserve(w->s, o->vlen)) {
            sqlite3_reset(st);
            w->err = SQLITE_NOMEM;
            return false;
        }
        if (o->vlen > 0) {
            memcpy(w->s->scratch, v, o->vlen);
        }
    } else {
        o->vlen = (size_t)sqlite3_column_int64(st, 6);
    }
    sqlite3_reset(st);
    o->found = true;
    o->size = sq_item_size(klen, o->vlen);
    o->live = !sq_dead(&o->r, now, w->m.flush_cas, w->m.flush_time,
                       &o->flushed);
    return true;
}

static void
bytes_sub(struct sq_wctx *w, uint64_t n)
{
    w->m.bytes = w->m.bytes > n ? w->m.bytes - n : 0;
}

/* Counts a dead row that is going away. */
static void
note_dead(struct sq_wctx *w, const struct sq_rec *r, bool flushed)
{
    w->reclaimed++;
    if (!flushed && !r->fetched) {
        w->expired_unfetched++;
    }
}

/* Writes key -> r + value in place of o; false on an SQLite error. */
static bool
put(struct sq_wctx *w, const void *kdata, size_t klen, const struct sq_rec *r,
    const void *v, size_t vlen, const struct sq_old *o)
{
    sqlite3_stmt *st = stmt(w, SQ_PUT);

    if (st == NULL) {
        return false;
    }
    sq_bind_blob(st, 1, kdata, klen);
    sq_bind_blob(st, 2, v, vlen);
    sqlite3_bind_int64(st, 3, r->flags);
    sqlite3_bind_int64(st, 4, r->exptime);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)r->cas);
    sqlite3_bind_int64(st, 6, r->stored);
    sqlite3_bind_int64(st, 7, r->atime);
    sqlite3_bind_int(st, 8, r->fetched ? 1 : 0);
    if (!run_done(w, st)) {
        return false;
    }
    if (o->found) {
        bytes_sub(w, o->size);
        if (!o->live) {
            note_dead(w, &o->r, o->flushed);
        }
    } else {
        w->m.items++;
    }
    w->m.bytes += sq_item_size(klen, vlen);
    w->dirty = true;
    return true;
}

static bool
del(struct sq_wctx *w, const void *kdata, size_t klen, uint64_t size)
{
    sqlite3_stmt *st = stmt(w, SQ_DEL);

    if (st == NULL) {
        return false;
    }
    sq_bind_blob(st, 1, kdata, klen);
    if (!run_done(w, st)) {
        return false;
    }
    if (sqlite3_changes(w->s->w.db) > 0) {
        bytes_sub(w, size);
        w->m.items = w->m.items > 0 ? w->m.items - 1 : 0;
        w->dirty = true;
    }
    return true;
}

/* A fresh row header with the next CAS. */
static struct sq_rec
new_rec(struct sq_wctx *w, uint32_t flags, uint32_t exptime, uint32_t now)
{
    struct sq_rec r;

    r.cas = ++w->m.cas_max;
    r.flags = flags;
    r.exptime = exptime;
    r.stored = now;
    r.atime = now;
    r.fetched = false;
    return r;
}

/* One item seen by the evictor. */
struct cand {
    unsigned char key[STORE_KEY_MAX];
    size_t        klen;
    struct sq_rec r;
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
 * Reads the SQ_WINDOW_ITEMS rows from the hand (a clock over the key
 * order) into c and moves the hand past them; returns how many, or -1 on
 * an error.
 */
static int
read_window(struct sq_wctx *w, struct cand *c, uint32_t now)
{
    struct store *s = w->s;
    sqlite3_stmt *st = stmt(w, s->hand_len > 0 ? SQ_WINDOW : SQ_WINDOW0);
    int n = 0;
    int rc;

    if (st == NULL) {
        return -1;
    }
    if (s->hand_len > 0) {
        sq_bind_blob(st, 1, s->hand, s->hand_len);
    }
    sqlite3_bind_int(st, 2, (int)SQ_WINDOW_ITEMS + 1);
    s->hand_len = 0;              /* wraps unless a row follows */
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const void *k = sqlite3_column_blob(st, 6);
        size_t klen = (size_t)sqlite3_column_bytes(st, 6);

        if (klen == 0 || klen > STORE_KEY_MAX) {
            continue;
        }
        if (n == (int)SQ_WINDOW_ITEMS) {
            memcpy(s->hand, k, klen);     /* the next window starts here */
            s->hand_len = klen;
            break;
        }
        c[n].klen = klen;
        memcpy(c[n].key, k, klen);
        store_sqlite_rec(st, 0, &c[n].r);
        c[n].size = sq_item_size(klen,
                                 (size_t)sqlite3_column_int64(st, 7));
        c[n].dead = sq_dead(&c[n].r, now, w->m.flush_cas, w->m.flush_time,
                            &c[n].flushed);
        n++;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        w->err = rc;
        return -1;
    }
    return n;
}

/*
 * Looks at the next SQ_WINDOW_ITEMS items after the hand and removes the
 * dead ones, or else, unless dead_only, the least recently used live ones
 * (oldest atime, then oldest CAS): one, or up to half the window while
 * want bytes are still to be freed. Sampling like this approximates LRU
 * without an index to update on every write (as lmdb does). Returns false
 * on an SQLite error.
 */
static bool
evict_window(struct sq_wctx *w, const struct store_key *protect,
             bool dead_only, uint64_t want, uint32_t now)
{
    struct cand c[SQ_WINDOW_ITEMS];
    struct cand *order[SQ_WINDOW_ITEMS];
    unsigned live = 0;
    uint64_t freed = 0;
    bool any_dead = false;
    int n = read_window(w, c, now);

    if (n < 0) {
        return false;
    }
    for (int i = 0; i < n; i++) {
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
        if (!order[i]->r.fetched) {
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
make_room(struct sq_wctx *w, const struct store_key *protect, uint64_t add,
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
    max_windows = s->no_evict ? SQ_RECLAIM_WINDOWS
                              : w->m.items / SQ_WINDOW_ITEMS + 2;
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
store_check(store_mode_e mode, uint64_t cas, const struct sq_old *o)
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
apply_concat(struct sq_wctx *w, struct sq_op *op)
{
    const struct store_key *k = op->k;
    const struct store_item *in = op->in;
    struct store *s = w->s;
    struct sq_old o;
    struct sq_rec r;
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
    rc = make_room(w, k, sq_item_size(k->len, nlen), o.size, op->now);
    if (rc != STORE_OK) {
        return rc;
    }
    /* The old value is in scratch: build the new one around it. */
    if (!scratch_reserve(s, (size_t)nlen)) {
        return STORE_ENOMEM;
    }
    if (op->mode == STORE_APPEND) {
        if (in->len > 0) {
            memcpy(s->scratch + o.vlen, in->data, in->len);
        }
    } else if (in->len > 0) {
        memmove(s->scratch + in->len, s->scratch, o.vlen);
        memcpy(s->scratch, in->data, in->len);
    }
    r = new_rec(w, o.r.flags, o.r.exptime, op->now);
    if (!put(w, k->data, k->len, &r, s->scratch, (size_t)nlen, &o)) {
        return STORE_EIO;
    }
    w->total_items++;
    op->cas_out = r.cas;
    op->wrote = true;
    return STORE_OK;
}

static store_rc_e
apply_store(struct sq_wctx *w, struct sq_op *op)
{
    const struct store_key *k = op->k;
    const struct store_item *in = op->in;
    struct sq_old o;
    struct sq_rec r;
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
    rc = make_room(w, k, sq_item_size(k->len, in->len),
                   o.found ? o.size : 0, op->now);
    if (rc != STORE_OK) {
        return rc;
    }
    r = new_rec(w, in->flags, in->exptime, op->now);
    if (!put(w, k->data, k->len, &r, in->data, in->len, &o)) {
        return STORE_EIO;
    }
    w->total_items++;
    op->cas_out = r.cas;
    op->wrote = true;
    return STORE_OK;
}

static store_rc_e
apply_del(struct sq_wctx *w, struct sq_op *op)
{
    struct sq_old o;

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
apply_arith(struct sq_wctx *w, struct sq_op *op)
{
    const struct store_key *k = op->k;
    const struct store_delta *d = op->d;
    struct store *s = w->s;
    char num[ARITH_NUM_MAX];
    struct sq_old o;
    struct sq_rec r;
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
        if (!arith_parse((const char *)s->scratch, o.vlen, &v)) {
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
    rc = make_room(w, k, sq_item_size(k->len, n), o.found ? o.size : 0,
                   op->now);
    if (rc != STORE_OK) {
        return rc;
    }
    r = new_rec(w, o.live ? o.r.flags : 0, o.live ? o.r.exptime : d->exptime,
                op->now);
    if (!put(w, k->data, k->len, &r, p, n, &o)) {
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
apply_touch(struct sq_wctx *w, struct sq_op *op)
{
    const struct store_key *k = op->k;
    struct store *s = w->s;
    struct store_item *out = op->out;
    bool gat = op->kind == SQ_OP_GAT;
    sqlite3_stmt *st;
    struct sq_old o;
    void *p = NULL;

    if (gat && out->pin != NULL) {
        /* A rerun after a failed batch: drop the first copy. */
        free(out->pin);
        out->pin = NULL;
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
    st = stmt(w, SQ_TOUCH);
    if (st == NULL) {
        return STORE_EIO;
    }
    sq_bind_blob(st, 1, k->data, k->len);
    sqlite3_bind_int64(st, 2, op->when);
    sqlite3_bind_int64(st, 3, op->now);
    sqlite3_bind_int(st, 4, gat ? 1 : 0);
    if (!run_done(w, st)) {
        return STORE_EIO;
    }
    w->dirty = true;
    op->cas_out = o.r.cas;
    op->wrote = true;
    if (!gat) {
        return STORE_OK;
    }
    if (o.vlen > 0) {
        if (op->sink != NULL) {
            p = op->sink->reserve(op->sink, o.vlen);
        } else {
            p = malloc(o.vlen);
            out->pin = p;
        }
        if (p == NULL) {
            /* Applied, but the value cannot be returned. */
            return STORE_ENOMEM;
        }
        memcpy(p, s->scratch, o.vlen);
    }
    out->data = o.vlen > 0 ? p : "";
    out->len = (uint32_t)o.vlen;
    out->flags = o.r.flags;
    out->exptime = op->when;
    out->cas = o.r.cas;
    return STORE_OK;
}

static store_rc_e
apply_flush(struct sq_wctx *w, struct sq_op *op)
{
    if (op->when <= op->now) {
        /* Every CAS handed out so far is dead; a pending delay is moot. */
        w->m.flush_cas = w->m.cas_max;
        w->m.flush_time = 0;
    } else {
        w->m.flush_time = op->when;
    }
    w->dirty = true;
    w->flushes++;
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
    memcpy(cas, it->p + 1 + *klen, 8);
    if (it->timed) {
        memcpy(time, it->p + 1 + *klen + 8, 4);
    } else {
        *time = 0;
    }
    it->p += need;
    return true;
}

static store_rc_e
apply_maint(struct sq_wctx *w, struct sq_op *op)
{
    struct sq_maint *mt = op->maint;
    struct kb_iter it = { mt->dead.p, mt->dead.p + mt->dead.len, false };
    const unsigned char *key;
    size_t klen;
    uint64_t cas;
    uint32_t time;
    struct sq_old o;
    sqlite3_stmt *st;

    mt->deleted = 0;
    /* Dead items the sweeper found, if they are still the same. */
    while (kb_next(&it, &key, &klen, &cas, &time)) {
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
    /* Recency: readers saw these items; mark them used. */
    it.p = mt->touch.p;
    it.end = mt->touch.p + mt->touch.len;
    it.timed = true;
    while (kb_next(&it, &key, &klen, &cas, &time)) {
        if ((st = stmt(w, SQ_REFRESH)) == NULL) {
            return STORE_EIO;
        }
        sq_bind_blob(st, 1, key, klen);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)cas);
        sqlite3_bind_int64(st, 3, time);
        sqlite3_bind_int64(st, 4, (sqlite3_int64)time - SQ_ATIME_GRAIN);
        if (!run_done(w, st)) {
            return STORE_EIO;
        }
        if (sqlite3_changes(w->s->w.db) > 0) {
            w->refreshes++;
            w->dirty = true;
        }
    }
    /* Over the limit (a smaller -m after a restart, FULL): evict a few. */
    for (uint64_t i = 0; i < mt->evict && w->m.bytes > mt->evict_to; i++) {
        if (!evict_window(w, NULL, false, w->m.bytes - mt->evict_to,
                          op->now)) {
            return STORE_EIO;
        }
    }
    return STORE_OK;
}

static store_rc_e
apply(struct sq_wctx *w, struct sq_op *op)
{
    op->wrote = false;
    op->cas_out = 0;
    op->value = 0;
    switch (op->kind) {
    case SQ_OP_STORE:
        return apply_store(w, op);
    case SQ_OP_DEL:
        return apply_del(w, op);
    case SQ_OP_ARITH:
        return apply_arith(w, op);
    case SQ_OP_TOUCH:
    case SQ_OP_GAT:
        return apply_touch(w, op);
    case SQ_OP_FLUSH:
        return apply_flush(w, op);
    case SQ_OP_MAINT:
        return apply_maint(w, op);
    }
    return STORE_EINVAL;
}

/* Ends a failed transaction, if SQLite has not already. */
static void
rollback(struct store *s)
{
    sqlite3_stmt *st;

    if (!sqlite3_get_autocommit(s->w.db) &&
        (st = store_sqlite_stmt(&s->w, SQ_ROLLBACK)) != NULL) {
        (void)sqlite3_step(st);
        sqlite3_reset(st);
    }
}

/* Steps a statement without parameters once; the SQLite result code. */
static int
step_once(struct store *s, sq_sql_e id)
{
    sqlite3_stmt *st = store_sqlite_stmt(&s->w, id);
    int rc;

    if (st == NULL) {
        return SQLITE_ERROR;
    }
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Writes m as the meta row; the SQLite result code. */
static int
write_meta(struct store *s, const struct sq_meta *m, uint64_t cas_col,
           bool clean)
{
    sqlite3_stmt *st = store_sqlite_stmt(&s->w, SQ_META);
    int rc;

    if (st == NULL) {
        return SQLITE_ERROR;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64)m->flush_cas);
    sqlite3_bind_int64(st, 2, m->flush_time);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)cas_col);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)m->items);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)m->bytes);
    sqlite3_bind_int(st, 6, clean ? 1 : 0);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_DONE) {
        sq_inc(&s->ctr.meta_writes, 1);
        return SQLITE_OK;
    }
    return rc;
}

int
store_sqlite_meta_commit(struct store *s, uint64_t cas_col, bool clean)
{
    int rc = step_once(s, SQ_BEGIN);

    if (rc == SQLITE_OK) {
        rc = write_meta(s, &s->meta, cas_col, clean);
    }
    if (rc == SQLITE_OK) {
        rc = step_once(s, SQ_COMMIT);
    }
    if (rc != SQLITE_OK) {
        rollback(s);
        return rc;
    }
    s->cas_lease = cas_col;
    return SQLITE_OK;
}

/* After a commit: the new state for readers, stats and the syncer. */
static void
publish(struct store *s, const struct sq_wctx *w, uint64_t nops)
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
    if (w->flushes > 0) {
        sq_inc(&s->flush_gen, w->flushes);
    }
    atomic_store_explicit(&s->seq, seq + 1, memory_order_release);
    sq_inc(&s->ctr.commits, 1);
    sq_inc(&s->ctr.commit_ops, nops);
    sq_inc(&s->ctr.total_items, w->total_items);
    sq_inc(&s->ctr.evictions, w->evictions);
    sq_inc(&s->ctr.evicted_unfetched, w->evicted_unfetched);
    sq_inc(&s->ctr.expired_unfetched, w->expired_unfetched);
    sq_inc(&s->ctr.reclaimed, w->reclaimed);
    sq_inc(&s->ctr.refreshes, w->refreshes);
}

/*
 * Runs ops (just first when single) in one write transaction. Returns
 * SQLITE_OK when committed (or nothing to commit), else the SQLite error
 * after the transaction was rolled back; the ops' results are then
 * meaningless.
 */
static int
run_txn(struct store *s, struct sq_op *first, bool single)
{
    struct sq_wctx w;
    uint64_t nops = 0;
    uint64_t lease = s->cas_lease;
    int rc;

    memset(&w, 0, sizeof(w));
    w.s = s;
    w.m = s->meta;
    rc = step_once(s, SQ_BEGIN);
    if (rc != SQLITE_OK) {
        rollback(s);
        return rc;
    }
    for (struct sq_op *op = first; op != NULL;
         op = single ? NULL : sq_op_of(op->q.next)) {
        op->rc = apply(&w, op);
        nops++;
        if (w.err != 0) {
            rollback(s);
            return w.err;
        }
    }
    /*
     * The meta row only when the flush state changed or the CAS counter
     * left its lease: most commits write just their items' pages.
     */
    if (w.dirty && (w.flushes > 0 || w.m.cas_max > s->cas_lease)) {
        lease = w.m.cas_max > s->cas_lease ? w.m.cas_max + SQ_CAS_LEASE
                                           : s->cas_lease;
        rc = write_meta(s, &w.m, lease, false);
        if (rc != SQLITE_OK) {
            rollback(s);
            return rc;
        }
    }
    rc = step_once(s, SQ_COMMIT);
    if (rc != SQLITE_OK) {
        rollback(s);
        return rc;
    }
    s->cas_lease = lease;
    if (w.dirty) {
        publish(s, &w, nops);
    }
    for (struct sq_op *op = first; op != NULL;
         op = single ? NULL : sq_op_of(op->q.next)) {
        op->seq = atomic_load_explicit(&s->seq, memory_order_relaxed);
    }
    if (w.dirty && s->ps.mode == STORE_SYNC_ALWAYS) {
        persist_sync_kick(&s->ps);
    }
    return SQLITE_OK;
}

/* Frees room after SQLITE_FULL: a few windows' worth of evictions. */
static void
evict_for_full(struct store *s, uint32_t now)
{
    struct sq_maint mt;
    struct sq_op op;

    memset(&mt, 0, sizeof(mt));
    memset(&op, 0, sizeof(op));
    /* Down to 1/32 below what is stored now, a bounded number of steps. */
    mt.evict = SQ_FULL_EVICT;
    mt.evict_to = s->meta.bytes - s->meta.bytes / 32;
    op.kind = SQ_OP_MAINT;
    op.now = now;
    op.maint = &mt;
    (void)run_txn(s, &op, true);
}

/* Runs a batch; on failure reruns each op alone so only the bad one fails. */
static void
run_batch(struct store *s, struct sq_op *batch)
{
    int rc = run_txn(s, batch, batch->q.next == NULL);

    if (rc == SQLITE_OK) {
        return;
    }
    store_sqlite_note_err(s, rc);
    if (batch->q.next != NULL) {
        sq_inc(&s->ctr.aborts, 1);
    }
    for (struct sq_op *op = batch; op != NULL;
         op = sq_op_of(op->q.next)) {
        if (batch->q.next != NULL) {
            rc = run_txn(s, op, true);
            if (rc != SQLITE_OK) {
                store_sqlite_note_err(s, rc);
            }
        }
        if ((rc & 0xff) == SQLITE_FULL && !s->no_evict &&
            op->kind != SQ_OP_MAINT) {
            evict_for_full(s, op->now);
            rc = run_txn(s, op, true);
        }
        if (rc != SQLITE_OK) {
            op->rc = store_sqlite_rc(rc);
            op->wrote = false;
            op->seq = atomic_load_explicit(&s->seq, memory_order_relaxed);
        }
    }
}

void
store_sqlite_run_batch(void *arg, struct persist_qnode *batch)
{
    run_batch(arg, sq_op_of(batch));
}

void
store_sqlite_submit(struct store_thr *t, struct sq_op *op)
{
    persist_queue_submit(&t->s->wq, &op->q, &t->cond);
}
