/*
 * The sqlite backend (store_sqlite_ops): memcached items in one SQLite
 * database per data directory, in WAL mode, surviving restarts and
 * crashes, readable with the sqlite3 shell (SCHEMA.md).
 *
 * Design, and why:
 * - Layout: DIR/stashd.db (+ -wal, -shm while open), DIR/stashd.lock (our
 *   flock, the same name lmdb uses). Table items(key BLOB PRIMARY KEY,
 *   value, flags, exptime, cas, stored, atime, fetched) WITHOUT ROWID, so
 *   a get is one B-tree search; a partial index on exptime for the
 *   sweeper; a one-row table meta (magic, format, flush CAS and time, a
 *   CAS lease, item count, stored bytes, clean flag). The meta row is
 *   rewritten only in the transactions that need it, so most commits
 *   write one page: a flush_all (immediate or delayed) commits with it and
 *   survives any restart; CAS values are leased 65,536 at a time (the row
 *   holds a ceiling above every CAS handed out, so after a crash the
 *   counter resumes above all of them, deleted items' included); close
 *   writes exact counts and clean = 1, so a clean restart needs no scan,
 *   and after a crash open counts items and bytes again (one pass that
 *   reads no values, 0.25 s per million items). A file that is not
 *   SQLite, a database without our meta row, or a newer format is refused
 *   and never opened for writing (sq_open.c).
 * - Connections: one per attached thread for reads (SQLITE_OPEN_NOMUTEX:
 *   a connection is only ever used by one thread at a time; the library
 *   itself must be threadsafe, checked at open), one writer, one for the
 *   maintenance thread. Every statement is prepared once per connection
 *   and reset after each use: no SQL is parsed per request. A get binds
 *   the key, steps (on a WAL snapshot: it never blocks on the writer),
 *   and copies the value into the caller's sink (or a malloc'd pin
 *   without one; release frees it). Expired and flushed items are
 *   invisible at once; deciding that needs only the row and the flush
 *   state in atomics.
 * - Read snapshots span gets: starting and ending a read transaction takes
 *   and drops WAL and file locks (fcntl, and the VFS mutex the other
 *   threads contend on), which per get was a quarter of the server's CPU.
 *   So a thread's gets share one read transaction until a commit happens
 *   (s->seq moves: the next get starts a fresh one, so every acknowledged
 *   write is seen), the thread writes (a write may wait on the writer,
 *   and a checkpoint holding the writer may be waiting on our snapshot),
 *   or the worker goes idle (ops->idle, before every poll), so no snapshot
 *   outlives a pass of the event loop. Measured: +13 % ops/s and -12 %
 *   server CPU per request on `standard`.
 * - Writes: one queue, drained by whichever caller finds no batch running
 *   (sq_write.c): every op queued while a batch runs goes into the next
 *   BEGIN IMMEDIATE ... COMMIT on the writer connection.
 * - Durability, the --sync mapping: the writer runs synchronous=OFF and
 *   wal_autocheckpoint=0, so a COMMIT writes its WAL frames to the page
 *   cache (which survives kill -9) and never fsyncs or checkpoints on the
 *   request path. The syncer thread (persist_sync.c) fdatasyncs the WAL file,
 *   which is what synchronous=FULL would do in every COMMIT, once for all
 *   commits made before it started:
 *     always   - as soon as a commit waits; the write returns with
 *                call->pending set and its wait->done is called after the
 *                fdatasync that covers its commit (without a wait struct
 *                the call blocks until then), so concurrent writers from
 *                all connections share one fdatasync (group commit);
 *     periodic - every --sync-interval ms when something changed: a power
 *                loss loses at most that window, a crash of the process
 *                nothing;
 *     none     - never (close does); the OS writes back when it likes.
 *   Checkpoints run on the maintenance thread's connection, which is
 *   synchronous=NORMAL in every mode: SQLite then fsyncs the WAL before
 *   copying it into the database and the database before the WAL is
 *   reused, so the file is never corrupted by a power loss, whatever the
 *   mode; they are PASSIVE (never block requests), every 250 ms when
 *   something changed, with a short catch-up under the write lead when
 *   the WAL passes 16 MB so that it can start over (sq_maint.c). Readers
 *   may see a commit before it is durable, as with lmdb; no reply that
 *   acknowledges a write is sent before it is.
 * - Expiry, flush, limits (sq_maint.c, sq_write.c): flush_all only
 *   rewrites the meta row (flush CAS, or a flush time compared with each
 *   row's stored time), so it is O(1) and persists. The sweeper deletes
 *   expired rows found through the exptime index and, after a flush, the
 *   flushed rows found by a scan in key order, through the queue, a
 *   bounded number per op. At -m the writer evicts around a clock hand in
 *   key order: of a window of 16 rows, the dead ones, else the least
 *   recently used (oldest atime, then CAS). atime is refreshed from
 *   readers' hints at most once a minute, so reads rarely cost a write;
 *   with -M the writer only reclaims dead items and else answers ENOMEM.
 *   max_page_count bounds the file (3 x -m + 64 MB): SQLITE_FULL, from it
 *   or from a full disk, is ENOMEM for that write (after one eviction
 *   round unless -M); BUSY and I/O errors are EIO; reads go on.
 * - No global state: everything is in struct store; close joins both
 *   threads, syncs, checkpoints and frees all.
 */
#include "storage/sqlite/sq.h"

#include <stdlib.h>

#include "storage/rules.h"

store_rc_e
store_sqlite_attach(struct store *s, struct store_thr **out)
{
    struct store_thr *t = calloc(1, sizeof(*t));

    *out = NULL;
    if (t == NULL) {
        return STORE_ENOMEM;
    }
    t->s = s;
    if (pthread_cond_init(&t->cond, NULL) != 0) {
        free(t);
        return STORE_ENOMEM;
    }
    if (store_sqlite_connect(s, &t->c, false, false, NULL, 0) != SQLITE_OK ||
        store_sqlite_stmt(&t->c, SQ_GET) == NULL ||
        store_sqlite_stmt(&t->c, SQ_RBEGIN) == NULL ||
        store_sqlite_stmt(&t->c, SQ_COMMIT) == NULL ||
        store_sqlite_stmt(&t->c, SQ_ROLLBACK) == NULL) {
        store_sqlite_disconnect(&t->c);
        pthread_cond_destroy(&t->cond);
        free(t);
        return STORE_EIO;
    }
    *out = t;
    return STORE_OK;
}

/* Ends the thread's read snapshot, if any. */
static void
snap_end(struct store_thr *t)
{
    sqlite3_stmt *st = t->c.st[SQ_COMMIT];

    if (!t->snap) {
        return;
    }
    t->snap = false;
    (void)sqlite3_step(st);
    sqlite3_reset(st);
    if (!sqlite3_get_autocommit(t->c.db)) {
        /* COMMIT of a read failed: never leave the snapshot held. */
        st = t->c.st[SQ_ROLLBACK];
        (void)sqlite3_step(st);
        sqlite3_reset(st);
    }
}

/*
 * Makes sure the thread reads at a snapshot holding every commit up to
 * now; on failure the get runs in its own implicit transaction.
 */
static void
snap_begin(struct store_thr *t)
{
    uint64_t seq = atomic_load_explicit(&t->s->seq, memory_order_acquire);
    sqlite3_stmt *st = t->c.st[SQ_RBEGIN];

    if (t->snap && t->snap_seq == seq) {
        return;
    }
    snap_end(t);
    /* A deferred BEGIN: the snapshot is taken by the next SELECT, so it
     * holds at least the commits up to seq. */
    if (sqlite3_step(st) == SQLITE_DONE) {
        t->snap = true;
        t->snap_seq = seq;
    }
    sqlite3_reset(st);
}

static void
sq_idle(struct store_thr *t)
{
    snap_end(t);
}

void
store_sqlite_detach(struct store_thr **tp)
{
    struct store_thr *t = *tp;

    if (t == NULL) {
        return;
    }
    snap_end(t);
    store_sqlite_disconnect(&t->c);
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

/* Submits op and makes the caller wait for durability when it wrote. */
static store_rc_e
run(struct store_thr *t, struct store_call *c, struct sq_op *op)
{
    struct store *s = t->s;

    sq_note_now(s, c->now);
    if (atomic_load(&s->wfail) != 0) {
        return STORE_EIO;
    }
    op->now = c->now;
    snap_end(t);
    store_sqlite_submit(t, op);
    if (op->wrote) {
        persist_sync_wait(&s->ps, c, op->seq);
    }
    return op->rc;
}

/* A TOUCH or GAT that missed a dead row: counted as memcached does. */
static void
count_dead_miss(struct store *s, const struct sq_op *op)
{
    if (op->rc == STORE_ENOENT && op->value != 0) {
        sq_inc(op->value == 2 ? &s->ctr.get_flushed : &s->ctr.get_expired,
               1);
    }
}

static store_rc_e
sq_gat(struct store_thr *t, struct store_call *c, const struct store_key *k,
       uint32_t exptime, struct store_item *out)
{
    struct sq_op op;
    store_rc_e rc;

    memset(&op, 0, sizeof(op));
    out->pin = NULL;
    op.kind = SQ_OP_GAT;
    op.k = k;
    op.when = exptime;
    op.sink = c->sink;
    op.out = out;
    rc = run(t, c, &op);
    count_dead_miss(t->s, &op);
    if (rc != STORE_OK) {
        free(out->pin);
        out->pin = NULL;
    }
    return rc;
}

static store_rc_e
sq_get(struct store_thr *t, struct store_call *c, const struct store_key *k,
       const uint32_t *touch, struct store_item *out)
{
    struct store *s = t->s;
    sqlite3_stmt *st = t->c.st[SQ_GET];   /* prepared at attach */
    struct sq_rec r;
    bool flushed;
    store_rc_e rc;
    int src;

    sq_note_now(s, c->now);
    if (touch != NULL) {
        return sq_gat(t, c, k, *touch, out);
    }
    snap_begin(t);
    sq_bind_blob(st, 1, k->data, k->len);
    src = sqlite3_step(st);
    if (src != SQLITE_ROW) {
        sqlite3_reset(st);
        if (src == SQLITE_DONE) {
            return STORE_ENOENT;
        }
        store_sqlite_note_err(s, src);
        return store_sqlite_rc(src);
    }
    store_sqlite_rec(st, 0, &r);
    if (sq_dead(&r, c->now,
                atomic_load_explicit(&s->flush_cas, memory_order_relaxed),
                atomic_load_explicit(&s->flush_time, memory_order_relaxed),
                &flushed)) {
        sqlite3_reset(st);
        sq_inc(flushed ? &s->ctr.get_flushed : &s->ctr.get_expired, 1);
        return STORE_ENOENT;
    }
    {
        const void *v = sqlite3_column_blob(st, 6);
        size_t n = (size_t)sqlite3_column_bytes(st, 6);

        rc = copy_out(c, v, n, out);
        out->len = (uint32_t)n;
    }
    sqlite3_reset(st);
    if (rc != STORE_OK) {
        return rc;
    }
    out->flags = r.flags;
    out->exptime = r.exptime;
    out->cas = r.cas;
    /*
     * Recency is refreshed at most once per grain, and only then is the
     * fetched bit set too: a first read within a minute of the write costs
     * no rewrite, at the price of such items counting as unfetched.
     */
    if (c->now >= r.atime + SQ_ATIME_GRAIN) {
        store_sqlite_hint(s, k, r.cas, c->now);
    }
    return STORE_OK;
}

static void
sq_release(struct store_thr *t, struct store_item *it)
{
    (void)t;
    free(it->pin);
    it->pin = NULL;
}

static store_rc_e
sq_store(struct store_thr *t, struct store_call *c, store_mode_e m,
         const struct store_key *k, const struct store_item *in,
         uint64_t *cas_out)
{
    struct sq_op op;
    store_rc_e rc;

    if (m != STORE_APPEND && m != STORE_PREPEND &&
        store_too_large(t->s->item_max, k->len, in->flags, in->len)) {
        return STORE_E2BIG;
    }
    memset(&op, 0, sizeof(op));
    op.kind = SQ_OP_STORE;
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
sq_del(struct store_thr *t, struct store_call *c, const struct store_key *k,
       uint64_t cas)
{
    struct sq_op op;

    memset(&op, 0, sizeof(op));
    op.kind = SQ_OP_DEL;
    op.k = k;
    op.cas = cas;
    return run(t, c, &op);
}

static store_rc_e
sq_arith(struct store_thr *t, struct store_call *c, const struct store_key *k,
         const struct store_delta *d, uint64_t *value, uint64_t *cas_out)
{
    struct sq_op op;
    store_rc_e rc;

    memset(&op, 0, sizeof(op));
    op.kind = SQ_OP_ARITH;
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
sq_touch(struct store_thr *t, struct store_call *c, const struct store_key *k,
         uint32_t exptime)
{
    struct sq_op op;
    store_rc_e rc;

    memset(&op, 0, sizeof(op));
    op.kind = SQ_OP_TOUCH;
    op.k = k;
    op.when = exptime;
    rc = run(t, c, &op);
    count_dead_miss(t->s, &op);
    return rc;
}

static store_rc_e
sq_flush(struct store_thr *t, struct store_call *c, uint32_t when)
{
    struct sq_op op;

    memset(&op, 0, sizeof(op));
    op.kind = SQ_OP_FLUSH;
    op.when = when;
    return run(t, c, &op);
}

const struct store_ops store_sqlite_ops = {
    .version = STORE_OPS_V1,
    .name = "sqlite",
    .open = store_sqlite_open,
    .close = store_sqlite_close,
    .attach = store_sqlite_attach,
    .detach = store_sqlite_detach,
    .get = sq_get,
    .release = sq_release,
    .store = sq_store,
    .del = sq_del,
    .arith = sq_arith,
    .touch = sq_touch,
    .flush = sq_flush,
    .stats = store_sqlite_stats,
    .stats_group = store_sqlite_stats_group,
    .idle = sq_idle,
};
