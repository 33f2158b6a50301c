/*
 * The sqlite backend's statistics: the common figures from counters and the
 * committed meta row, and the "" group's sqlite_* lines from SQLite (page
 * counts through the caller's own connection, file sizes from fstat) plus
 * the writer's, syncer's and checkpointer's counters. It only reads; the
 * caller's connection runs two prepared PRAGMAs, nothing takes a lock.
 */
#include "storage/sqlite/sq.h"

#include <sys/stat.h>

static uint64_t
ld(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

void
store_sqlite_stats(struct store_thr *t, struct store_stats *out)
{
    struct store *s = t->s;

    memset(out, 0, sizeof(*out));
    /* Rows in the table, dead ones not yet swept included (as memcached). */
    out->curr_items = ld(&s->items);
    out->total_items = ld(&s->ctr.total_items);
    out->bytes = ld(&s->bytes);
    out->evictions = ld(&s->ctr.evictions);
    out->expired_unfetched = ld(&s->ctr.expired_unfetched);
    out->evicted_unfetched = ld(&s->ctr.evicted_unfetched);
    out->reclaimed = ld(&s->ctr.reclaimed);
    out->get_expired = ld(&s->ctr.get_expired);
    out->get_flushed = ld(&s->ctr.get_flushed);
    out->limit_maxbytes = s->mem_limit;
}

/* A one-number PRAGMA on the caller's connection; 0 when it fails. */
static uint64_t
pragma_u64(struct store_thr *t, sq_sql_e id)
{
    sqlite3_stmt *st = store_sqlite_stmt(&t->c, id);
    uint64_t v = 0;

    if (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
        v = (uint64_t)sqlite3_column_int64(st, 0);
    }
    if (st != NULL) {
        sqlite3_reset(st);
    }
    return v;
}

static uint64_t
file_size(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

static void
group_general(struct store_thr *t, store_emit_fn emit, void *arg)
{
    struct store *s = t->s;
    struct stat wst;

    emit(arg, "sqlite_version", sqlite3_libversion());
    emit(arg, "sqlite_journal_mode", "wal");
    /* How commits are synced: by the syncer, not by SQLite. */
    emit(arg, "sqlite_synchronous", "off");
    persist_emit_u64(emit, arg, "sqlite_page_size", s->page_size);
    persist_emit_u64(emit, arg, "sqlite_page_count", pragma_u64(t, SQ_PAGES));
    persist_emit_u64(emit, arg, "sqlite_freelist_count",
                     pragma_u64(t, SQ_FREEPAGES));
    persist_emit_u64(emit, arg, "sqlite_db_bytes", file_size(s->db_path));
    persist_emit_u64(emit, arg, "sqlite_wal_bytes",
                     fstat(s->wal_fd, &wst) == 0 ? (uint64_t)wst.st_size : 0);
    persist_emit_u64(emit, arg, "sqlite_items", ld(&s->items));
    persist_sync_stats(&s->ps, "sqlite", emit, arg);
    persist_emit_u64(emit, arg, "sqlite_checkpoints", ld(&s->ctr.checkpoints));
    persist_emit_u64(emit, arg, "sqlite_checkpoint_restarts",
                     ld(&s->ctr.ckpt_restarts));
    persist_emit_u64(emit, arg, "sqlite_wal_frames", ld(&s->ctr.wal_frames));
    persist_emit_u64(emit, arg, "sqlite_checkpoint_usec",
                     ld(&s->ctr.ckpt_usec));
    persist_emit_u64(emit, arg, "sqlite_last_checkpoint",
                     atomic_load_explicit(&s->last_ckpt, memory_order_relaxed));
    persist_emit_u64(emit, arg, "sqlite_commits", ld(&s->ctr.commits));
    persist_emit_u64(emit, arg, "sqlite_commit_ops", ld(&s->ctr.commit_ops));
    persist_emit_u64(emit, arg, "sqlite_meta_writes", ld(&s->ctr.meta_writes));
    persist_emit_u64(emit, arg, "sqlite_batch_retries", ld(&s->ctr.aborts));
    persist_emit_u64(emit, arg, "sqlite_busy", ld(&s->ctr.busy));
    persist_emit_u64(emit, arg, "sqlite_full", ld(&s->ctr.full));
    persist_emit_u64(emit, arg, "sqlite_io_errors", ld(&s->ctr.ioerr));
    persist_emit_u64(emit, arg, "sqlite_hints_dropped",
                     ld(&s->ctr.hints_dropped));
    persist_emit_u64(emit, arg, "sqlite_recency_refreshes",
                     ld(&s->ctr.refreshes));
    persist_emit_u64(emit, arg, "sqlite_cas_max", ld(&s->cas_max));
    persist_emit_u64(emit, arg, "sqlite_write_failed",
                     atomic_load(&s->wfail) != 0 ? 1 : 0);
}

store_rc_e
store_sqlite_stats_group(struct store_thr *t, const char *group,
                         store_emit_fn emit, void *arg)
{
    if (strcmp(group, "") == 0) {
        group_general(t, emit, arg);
    } else if (strcmp(group, "items") == 0 || strcmp(group, "slabs") == 0) {
        /* No slab classes: nothing to list, as memcached with no items. */
    } else if (strcmp(group, "sizes") == 0) {
        emit(arg, "sizes_status", "disabled");
    } else {
        return STORE_ENOENT;
    }
    return STORE_OK;
}
