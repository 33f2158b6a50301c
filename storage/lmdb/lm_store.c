/*
 * The lmdb backend (store_lmdb_ops): memcached items in one LMDB
 * environment per data directory, surviving restarts and crashes.
 *
 * Design, and why:
 * - Layout: DIR/data.mdb + lock.mdb (LMDB's), DIR/stashd.lock (our flock).
 *   Items live in the named DB "stashd_items", keyed by the memcached key;
 *   a record is a 32-byte little-endian header (cas, flags, exptime,
 *   stored time, last access, fetched bit) and the value. A 64-byte
 *   metadata record under the reserved main-DB key "stashd" (magic, format,
 *   flush CAS and time, largest CAS, stored bytes) is rewritten in every
 *   write transaction, so it is always exactly consistent with the items:
 *   after any restart the CAS counter resumes above every stored CAS, a
 *   flush_all (immediate or delayed) is still in force, and -m accounting
 *   needs no scan. A file that is not an LMDB environment, or an
 *   environment without that record, is refused and never written.
 * - Reads never block on writers: each attached thread owns one read
 *   transaction (MDB_NOTLS) that get renews, copies the value from into
 *   the caller's sink (or a malloc'd pin without one; release frees it),
 *   and resets before returning, so no snapshot outlives a call. Expired
 *   and flushed items are invisible at once; deciding that needs only the
 *   header and the flush state held in atomics.
 * - Writes: one queue, drained by whichever caller finds no batch running
 *   (lm_write.c): every op queued while a batch runs goes into the next
 *   write transaction, one writer at a time, and no dedicated writer
 *   thread to hand off to (measured: ~15% more writes/s than a mutex
 *   around a transaction per op).
 * - Durability (persist_sync.c): the environment runs MDB_NOSYNC, so
 *   a commit is cheap and lands in the page cache, which survives kill -9;
 *   a syncer thread fsyncs every --sync-interval ms (periodic), never
 *   (none, but at close), or as soon as writes are waiting (always): such
 *   a write returns with call->pending set and its wait->done is called
 *   after the fsync
 *   that covers its commit, one fsync for all writes committed meanwhile;
 *   without a wait struct the call blocks until then. Caveat, LMDB's own
 *   for MDB_NOSYNC: a power loss or kernel crash (not a process crash)
 *   while commits are unsynced can leave LMDB's newest meta page on disk
 *   ahead of its data; --sync=always keeps that window to writes in
 *   flight. No MDB_WRITEMAP: with it a full disk would be SIGBUS.
 * - Expiry, flush, limits (lm_maint.c, lm_write.c): flush_all only
 *   rewrites the metadata (flush CAS, or a flush time compared with each
 *   record's stored time), so it is O(1) and persists. A sweeper thread
 *   scans slices in its own read transaction and deletes the expired and
 *   flushed items it finds through the queue, a bounded number per op. At
 *   -m the writer evicts around a clock hand in key order: of a window of
 *   16 items, the dead ones, else the least recently used (oldest atime,
 *   then CAS; more than one while much room is wanted). atime is refreshed
 *   from readers' hints at most once a minute, so reads rarely cost a
 *   write; with -M the writer only reclaims dead items and else answers
 *   ENOMEM. MDB_MAP_FULL and ENOSPC are ENOMEM for that write; reads go on.
 * - No global state: everything is in struct store; close joins both
 *   threads, syncs and frees all.
 */
#include "storage/lmdb/lm.h"

#include <stdlib.h>

#include "storage/rules.h"

store_rc_e
store_lmdb_attach(struct store *s, struct store_thr **out)
{
    struct store_thr *t = calloc(1, sizeof(*t));
    int rc;

    *out = NULL;
    if (t == NULL) {
        return STORE_ENOMEM;
    }
    t->s = s;
    if (pthread_cond_init(&t->cond, NULL) != 0) {
        free(t);
        return STORE_ENOMEM;
    }
    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t->rtxn);
    if (rc != 0) {
        pthread_cond_destroy(&t->cond);
        free(t);
        return store_lmdb_rc(rc);
    }
    mdb_txn_reset(t->rtxn);
    *out = t;
    return STORE_OK;
}

void
store_lmdb_detach(struct store_thr **tp)
{
    struct store_thr *t = *tp;

    if (t == NULL) {
        return;
    }
    mdb_txn_abort(t->rtxn);
    pthread_cond_destroy(&t->cond);
    free(t);
    *tp = NULL;
}

/* The value's bytes in memory the caller owns: the sink, else a pin. */
static store_rc_e
copy_out(struct store_call *c, const void *v, size_t n,
         struct store_item *out)
{
    void *p;

    out->pin = NULL;
    if (n == 0) {
        out->data = "";
        return STORE_OK;
    }
    if (c->sink != NULL) {
        p = c->sink->reserve(c->sink, n);
    } else {
        p = malloc(n);
        out->pin = p;
    }
    if (p == NULL) {
        return STORE_ENOMEM;
    }
    memcpy(p, v, n);
    out->data = p;
    return STORE_OK;
}

static store_rc_e
lm_gat(struct store_thr *t, struct store_call *c, const struct store_key *k,
       uint32_t exptime, struct store_item *out)
{
    struct store *s = t->s;
    struct lm_op op;

    memset(&op, 0, sizeof(op));
    if (atomic_load(&s->wfail) != 0) {
        return STORE_EIO;
    }
    out->pin = NULL;
    op.kind = LM_OP_GAT;
    op.now = c->now;
    op.k = k;
    op.when = exptime;
    op.sink = c->sink;
    op.out = out;
    store_lmdb_submit(t, &op);
    if (op.rc == STORE_ENOENT && op.value != 0) {
        lm_inc(op.value == 2 ? &s->ctr.get_flushed : &s->ctr.get_expired,
               1);
    }
    if (op.rc != STORE_OK) {
        free(out->pin);
        out->pin = NULL;
    }
    if (op.wrote) {
        persist_sync_wait(&s->ps, c, op.seq);
    }
    return op.rc;
}

static store_rc_e
lm_get(struct store_thr *t, struct store_call *c, const struct store_key *k,
       const uint32_t *touch, struct store_item *out)
{
    struct store *s = t->s;
    MDB_val key = { k->len, (void *)k->data };
    MDB_val data;
    struct lm_rec r;
    bool flushed;
    store_rc_e rc;
    int mrc;

    lm_note_now(s, c->now);
    if (touch != NULL) {
        return lm_gat(t, c, k, *touch, out);
    }
    mrc = mdb_txn_renew(t->rtxn);
    if (mrc != 0) {
        return store_lmdb_rc(mrc);
    }
    mrc = mdb_get(t->rtxn, s->items, &key, &data);
    if (mrc != 0) {
        mdb_txn_reset(t->rtxn);
        return mrc == MDB_NOTFOUND ? STORE_ENOENT : store_lmdb_rc(mrc);
    }
    if (data.mv_size < LM_HDR) {
        mdb_txn_reset(t->rtxn);
        return STORE_ECORRUPT;
    }
    lm_rec_decode(data.mv_data, &r);
    if (lm_dead(&r, c->now,
                atomic_load_explicit(&s->flush_cas, memory_order_relaxed),
                atomic_load_explicit(&s->flush_time, memory_order_relaxed),
                &flushed)) {
        mdb_txn_reset(t->rtxn);
        lm_inc(flushed ? &s->ctr.get_flushed : &s->ctr.get_expired, 1);
        return STORE_ENOENT;
    }
    rc = copy_out(c, (const unsigned char *)data.mv_data + LM_HDR,
                  data.mv_size - LM_HDR, out);
    mdb_txn_reset(t->rtxn);
    if (rc != STORE_OK) {
        return rc;
    }
    out->len = (uint32_t)(data.mv_size - LM_HDR);
    out->flags = r.flags;
    out->exptime = r.exptime;
    out->cas = r.cas;
    /*
     * Recency is refreshed at most once per grain, and only then is the
     * fetched bit set too: a first read within a minute of the write costs
     * no rewrite, at the price of such items counting as unfetched.
     */
    if (c->now >= r.atime + LM_ATIME_GRAIN) {
        store_lmdb_hint(s, k, r.cas, c->now);
    }
    return STORE_OK;
}

static void
lm_release(struct store_thr *t, struct store_item *it)
{
    (void)t;
    free(it->pin);
    it->pin = NULL;
}

/* Submits op and makes the caller wait for durability when it wrote. */
static store_rc_e
run(struct store_thr *t, struct store_call *c, struct lm_op *op)
{
    struct store *s = t->s;

    lm_note_now(s, c->now);
    if (atomic_load(&s->wfail) != 0) {
        return STORE_EIO;
    }
    op->now = c->now;
    store_lmdb_submit(t, op);
    if (op->wrote) {
        persist_sync_wait(&s->ps, c, op->seq);
    }
    return op->rc;
}

static store_rc_e
lm_store(struct store_thr *t, struct store_call *c, store_mode_e m,
         const struct store_key *k, const struct store_item *in,
         uint64_t *cas_out)
{
    struct lm_op op;
    store_rc_e rc;

    if (m != STORE_APPEND && m != STORE_PREPEND &&
        store_too_large(t->s->item_max, k->len, in->flags, in->len)) {
        return STORE_E2BIG;
    }
    memset(&op, 0, sizeof(op));
    op.kind = LM_OP_STORE;
    op.k = k;
    op.mode = m;
    op.in = in;
    rc = run(t, c, &op);
    if (rc == STORE_OK) {
        *cas_out = op.cas_out;
    }
    return rc;
}

static store_rc_e
lm_del(struct store_thr *t, struct store_call *c, const struct store_key *k,
       uint64_t cas)
{
    struct lm_op op;

    memset(&op, 0, sizeof(op));
    op.kind = LM_OP_DEL;
    op.k = k;
    op.cas = cas;
    return run(t, c, &op);
}

static store_rc_e
lm_arith(struct store_thr *t, struct store_call *c, const struct store_key *k,
         const struct store_delta *d, uint64_t *value, uint64_t *cas_out)
{
    struct lm_op op;
    store_rc_e rc;

    memset(&op, 0, sizeof(op));
    op.kind = LM_OP_ARITH;
    op.k = k;
    op.d = d;
    rc = run(t, c, &op);
    if (rc == STORE_OK) {
        *value = op.value;
        *cas_out = op.cas_out;
    }
    return rc;
}

static store_rc_e
lm_touch(struct store_thr *t, struct store_call *c, const struct store_key *k,
         uint32_t exptime)
{
    struct lm_op op;
    store_rc_e rc;

    memset(&op, 0, sizeof(op));
    op.kind = LM_OP_TOUCH;
    op.k = k;
    op.when = exptime;
    rc = run(t, c, &op);
    if (rc == STORE_ENOENT && op.value != 0) {
        lm_inc(op.value == 2 ? &t->s->ctr.get_flushed
                             : &t->s->ctr.get_expired, 1);
    }
    return rc;
}

static store_rc_e
lm_flush(struct store_thr *t, struct store_call *c, uint32_t when)
{
    struct lm_op op;

    memset(&op, 0, sizeof(op));
    op.kind = LM_OP_FLUSH;
    op.when = when;
    return run(t, c, &op);
}

const struct store_ops store_lmdb_ops = {
    .version = STORE_OPS_V1,
    .name = "lmdb",
    .open = store_lmdb_open,
    .close = store_lmdb_close,
    .attach = store_lmdb_attach,
    .detach = store_lmdb_detach,
    .get = lm_get,
    .release = lm_release,
    .store = lm_store,
    .del = lm_del,
    .arith = lm_arith,
    .touch = lm_touch,
    .flush = lm_flush,
    .stats = store_lmdb_stats,
    .stats_group = store_lmdb_stats_group,
};
