/*
 * The sqlite adapter's upkeep, run by the engine's maintenance thread on
 * its own connection: checkpoints of the WAL into the database.
 *
 * The writer never checkpoints (wal_autocheckpoint=0), so no request pays
 * for one. Every tick with something committed this runs a PASSIVE
 * checkpoint, which never blocks the writer or readers. Its connection is
 * synchronous=NORMAL, so SQLite fsyncs the WAL before copying and the
 * database after: the database file is never ahead of a durable WAL, and
 * the WAL is only reused once the database holds everything (the store
 * never corrupts on power loss in any mode). Under a steady stream of
 * writes a PASSIVE checkpoint never quite catches up, and SQLite starts
 * the WAL over only when one has; so once the WAL holds more than
 * b->wal_restart bytes of frames, one RESTART checkpoint runs while this
 * thread holds the write lead (the engine's exclusive): it only has the
 * frames since the last tick left to copy, it waits for readers of older
 * frames (a worker keeps a snapshot for one pass of its event loop at
 * most, and drops it before any write), and the next commit starts the
 * WAL over.
 *
 * It also looks for orphaned big rows, a slice a second: rows no items
 * row names. put and del never leave one (both rows change in one
 * transaction, which the engine aborts whole on any failure), but damage
 * can: an items row whose big_id was hit points elsewhere, and the row it
 * named is then owned by nobody. Found on the maintenance connection,
 * removed under the write lead, re-checked there; a store without
 * orphans never writes for it.
 */
#include "storage/sqlite/sq.h"

#include <time.h>

#include "storage/persist/persist.h"

#define SQ_ORPHAN_USEC  (1000u * 1000u)  /* a slice at most this often */
#define SQ_ORPHAN_SLICE 1024             /* big rows looked at per slice */
#define SQ_ORPHAN_MAX   64u              /* orphans removed per slice */

/*
 * A checkpoint in mode on the maintenance connection; *frames gets the
 * WAL's size in frames. True when every frame is in the database.
 */
static bool
checkpoint(struct kv_be *b, struct kv_rd *r, int mode, int *frames)
{
    uint64_t t0 = persist_mono_usec();
    int log = 0;
    int done = 0;
    int rc = sqlite3_wal_checkpoint_v2(r->c.db, "main", mode, &log, &done);

    atomic_fetch_add_explicit(&b->ckpt_usec, persist_mono_usec() - t0,
                              memory_order_relaxed);
    *frames = log > 0 ? log : 0;
    if (rc != SQLITE_OK) {
        return false;
    }
    atomic_fetch_add_explicit(&b->checkpoints, 1, memory_order_relaxed);
    atomic_store_explicit(&b->wal_frames, (uint64_t)*frames,
                          memory_order_relaxed);
    atomic_store_explicit(&b->last_ckpt, (uint32_t)time(NULL),
                          memory_order_relaxed);
    return done >= log;
}

struct catch_up {
    struct kv_be *b;
    struct kv_rd *r;
    bool          all;
    int           mode;
};

/* Under the write lead: nothing is appended, so the copy completes. */
static void
catch_up(void *arg)
{
    struct catch_up *cu = arg;
    int frames;

    cu->all = checkpoint(cu->b, cu->r, cu->mode, &frames);
}

struct orphans {
    struct kv_be *b;
    int64_t       id[SQ_ORPHAN_MAX];
    unsigned      n;
};

/* Under the write lead: the writer connection is ours. */
static void
orphans_drop(void *arg)
{
    struct orphans *o = arg;
    int n = sq_orphans_drop(o->b, o->id, o->n);

    if (n > 0) {
        atomic_fetch_add_explicit(&o->b->orphans, (uint64_t)n,
                                  memory_order_relaxed);
    }
}

/*
 * The next slice of big rows after the hand (wrapping at the end): any
 * that no items row names are removed.
 */
static void
orphan_slice(struct kv_be *b, struct kv_rd *r)
{
    sqlite3_stmt *st = sq_stmt(&r->c, SQ_ORPHANS);
    struct orphans o = { .b = b, .n = 0 };
    int rows = 0;
    int rc = SQLITE_ROW;

    if (st == NULL) {
        return;
    }
    sqlite3_bind_int64(st, 1, b->orphan_hand);
    sqlite3_bind_int(st, 2, SQ_ORPHAN_SLICE);
    while (o.n < SQ_ORPHAN_MAX && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        b->orphan_hand = sqlite3_column_int64(st, 0);
        rows++;
        if (sqlite3_column_int(st, 1) != 0) {
            o.id[o.n++] = b->orphan_hand;
        }
    }
    sqlite3_reset(st);
    if (rc == SQLITE_DONE && rows < SQ_ORPHAN_SLICE) {
        b->orphan_hand = 0;
    }
    if (o.n > 0) {
        b->host->exclusive(b->host->s, orphans_drop, &o);
    }
}

void
sq_tick(struct kv_be *b, struct kv_rd *r)
{
    const struct kv_host *h = b->host;
    uint64_t seq = h->seq(h->s);
    uint64_t now = persist_mono_usec();
    int64_t wal;
    int frames = 0;

    if (now - b->orphan_at >= SQ_ORPHAN_USEC) {
        b->orphan_at = now;
        orphan_slice(b, r);
    }
    if (seq == b->ckpt_seq && !b->ckpt_behind) {
        return;
    }
    b->ckpt_seq = seq;
    b->ckpt_behind = !checkpoint(b, r, SQLITE_CHECKPOINT_PASSIVE, &frames);
    wal = (int64_t)frames * (b->page_size + 24);
    if (wal > b->wal_restart ||
        (wal > 0 && kv_disk_full(b->dir, (uint64_t)b->wal_restart))) {
        /* On a nearly full disk the WAL is given back as soon as it is
         * copied, not left to grow to wal_restart. */
        struct catch_up cu = { b, r, false, 0 };

        cu.mode = kv_disk_full(b->dir, (uint64_t)b->wal_restart)
                  ? SQLITE_CHECKPOINT_TRUNCATE : SQLITE_CHECKPOINT_RESTART;
        h->exclusive(h->s, catch_up, &cu);
        atomic_fetch_add_explicit(&b->ckpt_restarts, 1, memory_order_relaxed);
        b->ckpt_behind = !cu.all;
        b->ckpt_seq = h->seq(h->s);
    }
}

kv_err_e
sq_reclaim(struct kv_be *b)
{
    int rc;

    /*
     * A checkpoint syncs as its connection says: the writer is NORMAL, so
     * the database is on disk before the WAL it came from is truncated.
     */
    sq_settle(b);
    rc = sqlite3_wal_checkpoint_v2(b->w.db, "main",
                                   SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    if (rc == SQLITE_OK) {
        atomic_fetch_add_explicit(&b->checkpoints, 1, memory_order_relaxed);
        atomic_store_explicit(&b->wal_frames, 0, memory_order_relaxed);
    }
    return sq_err(b, rc);
}
