/*
 * The sqlite backend's statistics: the common figures from counters and the
 * committed meta row, and the "" group's sqlite_* lines from SQLite (page
 * counts through the caller's own connection, file sizes from fstat) plus
 * the writer's, syncer's and checkpointer's counters. It only reads; the
 * caller's connection runs two prepared PRAGMAs, nothing takes a lock.
 */
#include "storage/sqlite/sq.h"

#include <inttypes.h>
#include <stdio.h>
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

static void
emit_u64(store_emit_fn emit, void *arg, const char *name, uint64_t v)
{
    char val[24];

    snprintf(val, sizeof(val), "%" PRIu64, v);
    emit(arg, name, val);
}

static const char *
sync_name(store_sync_e m)
{
    switch (m) {
    case STORE_SYNC_ALWAYS:
        return "always";
    case STORE_SYNC_PERIODIC:
        return "periodic";
    case STORE_SYNC_NONE:
        return "none";
    }
    return "unknown";
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
    emit_u64(emit, arg, "sqlite_page_size", s->page_size);
    emit_u64(emit, arg, "sqlite_page_count", pragma_u64(t, SQ_PAGES));
    emit_u64(emit, arg, "sqlite_freelist_count",
             pragma_u64(t, SQ_FREEPAGES));
    emit_u64(emit, arg, "sqlite_db_bytes", file_size(s->db_path));
    emit_u64(emit, arg, "sqlite_wal_bytes",
             fstat(s->wal_fd, &wst) == 0 ? (uint64_t)wst.st_size : 0);
    emit_u64(emit, arg, "sqlite_items", ld(&s->items));
    emit(arg, "sqlite_sync", sync_name(s->ps.mode));
    emit_u64(emit, arg, "sqlite_sync_interval_ms", s->ps.interval_ms);
    emit_u64(emit, arg, "sqlite_sync_count", ld(&s->ps.count));
    emit_u64(emit, arg, "sqlite_sync_errors", ld(&s->ps.errors));
    emit_u64(emit, arg, "sqlite_sync_usec", ld(&s->ps.usec));
    emit_u64(emit, arg, "sqlite_last_sync",
             atomic_load_explicit(&s->ps.last_sync, memory_order_relaxed));
    emit_u64(emit, arg, "sqlite_checkpoints", ld(&s->ctr.checkpoints));
    emit_u64(emit, arg, "sqlite_checkpoint_restarts",
             ld(&s->ctr.ckpt_restarts));
    emit_u64(emit, arg, "sqlite_wal_frames", ld(&s->ctr.wal_frames));
    emit_u64(emit, arg, "sqlite_checkpoint_usec", ld(&s->ctr.ckpt_usec));
    emit_u64(emit, arg, "sqlite_last_checkpoint",
             atomic_load_explicit(&s->last_ckpt, memory_order_relaxed));
    emit_u64(emit, arg, "sqlite_commits", ld(&s->ctr.commits));
    emit_u64(emit, arg, "sqlite_commit_ops", ld(&s->ctr.commit_ops));
    emit_u64(emit, arg, "sqlite_meta_writes", ld(&s->ctr.meta_writes));
    emit_u64(emit, arg, "sqlite_batch_retries", ld(&s->ctr.aborts));
    emit_u64(emit, arg, "sqlite_busy", ld(&s->ctr.busy));
    emit_u64(emit, arg, "sqlite_full", ld(&s->ctr.full));
    emit_u64(emit, arg, "sqlite_io_errors", ld(&s->ctr.ioerr));
    emit_u64(emit, arg, "sqlite_hints_dropped", ld(&s->ctr.hints_dropped));
    emit_u64(emit, arg, "sqlite_recency_refreshes", ld(&s->ctr.refreshes));
    emit_u64(emit, arg, "sqlite_cas_max", ld(&s->cas_max));
    emit_u64(emit, arg, "sqlite_write_failed",
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
