/*
 * The sqlite adapter's "stats" lines: SQLite's page counts through the
 * caller's own connection, file sizes, and the checkpointer's counters.
 * It only reads; nothing takes a lock.
 */
#include "storage/sqlite/sq.h"

#include <sys/stat.h>

#include "storage/persist/persist.h"

static uint64_t
ld(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* A one-number PRAGMA on the caller's connection; 0 when it fails. */
static uint64_t
pragma_u64(struct kv_rd *r, sq_sql_e id)
{
    sqlite3_stmt *st = sq_stmt(&r->c, id);
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

void
sq_stats(struct kv_be *b, struct kv_rd *r, store_emit_fn emit, void *arg)
{
    struct stat wst;

    emit(arg, "sqlite_version", sqlite3_libversion());
    emit(arg, "sqlite_journal_mode", "wal");
    /* Commits are synced by the syncer; SQLite syncs the WAL's header
     * when the WAL starts over, and checkpoints. */
    emit(arg, "sqlite_synchronous", "normal");
    persist_emit_u64(emit, arg, "sqlite_page_size", b->page_size);
    persist_emit_u64(emit, arg, "sqlite_page_count", pragma_u64(r, SQ_PAGES));
    persist_emit_u64(emit, arg, "sqlite_freelist_count",
                     pragma_u64(r, SQ_FREEPAGES));
    persist_emit_u64(emit, arg, "sqlite_db_bytes", file_size(b->db_path));
    persist_emit_u64(emit, arg, "sqlite_wal_bytes",
                     fstat(b->wal_fd, &wst) == 0 ? (uint64_t)wst.st_size : 0);
    persist_emit_u64(emit, arg, "sqlite_checkpoints", ld(&b->checkpoints));
    persist_emit_u64(emit, arg, "sqlite_checkpoint_restarts",
                     ld(&b->ckpt_restarts));
    persist_emit_u64(emit, arg, "sqlite_wal_frames", ld(&b->wal_frames));
    persist_emit_u64(emit, arg, "sqlite_checkpoint_usec", ld(&b->ckpt_usec));
    persist_emit_u64(emit, arg, "sqlite_last_checkpoint",
                     atomic_load_explicit(&b->last_ckpt,
                                          memory_order_relaxed));
    persist_emit_u64(emit, arg, "sqlite_meta_writes", ld(&b->meta_writes));
    persist_emit_u64(emit, arg, "sqlite_orphans_removed", ld(&b->orphans));
}
