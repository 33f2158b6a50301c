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
 */
#include "storage/sqlite/sq.h"

#include <time.h>

#include "storage/persist/persist.h"

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

void
sq_tick(struct kv_be *b, struct kv_rd *r)
{
    const struct kv_host *h = b->host;
    uint64_t seq = h->seq(h->s);
    int64_t wal;
    int frames = 0;

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
