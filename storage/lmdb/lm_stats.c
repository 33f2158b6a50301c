/*
 * The lmdb adapter's "stats" lines: LMDB's own environment figures and the
 * snapshot scheme's state. It only reads; the item count takes the
 * caller's read transaction.
 */
#include "storage/lmdb/lm.h"

#include <string.h>

#include "storage/persist/persist.h"

void
lm_stats(struct kv_be *b, struct kv_rd *r, store_emit_fn emit, void *arg)
{
    MDB_envinfo info;
    MDB_stat est;
    MDB_stat st;

    memset(&info, 0, sizeof(info));
    memset(&est, 0, sizeof(est));
    memset(&st, 0, sizeof(st));
    (void)mdb_env_info(b->env, &info);
    (void)mdb_env_stat(b->env, &est);
    if (mdb_txn_renew(r->txn) == 0) {
        (void)mdb_stat(r->txn, b->items, &st);
        mdb_txn_reset(r->txn);
    }
    persist_emit_u64(emit, arg, "lmdb_map_size", info.me_mapsize);
    persist_emit_u64(emit, arg, "lmdb_page_size", est.ms_psize);
    persist_emit_u64(emit, arg, "lmdb_used_pages",
                     (uint64_t)info.me_last_pgno + 1);
    persist_emit_u64(emit, arg, "lmdb_used_bytes",
                     ((uint64_t)info.me_last_pgno + 1) * est.ms_psize);
    persist_emit_u64(emit, arg, "lmdb_last_txnid", info.me_last_txnid);
    persist_emit_u64(emit, arg, "lmdb_readers", info.me_numreaders);
    persist_emit_u64(emit, arg, "lmdb_max_readers", info.me_maxreaders);
    persist_emit_u64(emit, arg, "lmdb_entries", st.ms_entries);
    persist_emit_u64(emit, arg, "lmdb_depth", st.ms_depth);
    persist_emit_u64(emit, arg, "lmdb_map_full",
                     atomic_load_explicit(&b->map_full,
                                          memory_order_relaxed));
    emit(arg, "lmdb_commit_scheme", b->snapshots ? "snapshots"
                                                 : "nometasync");
    persist_emit_u64(emit, arg, "lmdb_synced_txnid",
                     atomic_load_explicit(&b->snap_txnid,
                                          memory_order_relaxed));
    persist_emit_u64(emit, arg, "lmdb_snapshot_restored",
                     atomic_load_explicit(&b->restored,
                                          memory_order_relaxed));
}
