/*
 * The lmdb backend's statistics: the common figures from counters and the
 * committed metadata, and the "" group's lmdb_* lines from LMDB's own
 * environment info plus the writer's and syncer's counters. It only reads;
 * it takes no lock but a read transaction for the item count.
 */
#include "storage/lmdb/lm.h"


static uint64_t
ld(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* Items in the store, dead ones not yet swept included (as memcached). */
static uint64_t
entries(struct store_thr *t, unsigned *depth)
{
    MDB_stat st;

    *depth = 0;
    if (mdb_txn_renew(t->rtxn) != 0) {
        return 0;
    }
    if (mdb_stat(t->rtxn, t->s->items, &st) != 0) {
        st.ms_entries = 0;
        st.ms_depth = 0;
    }
    mdb_txn_reset(t->rtxn);
    *depth = st.ms_depth;
    return st.ms_entries;
}

void
store_lmdb_stats(struct store_thr *t, struct store_stats *out)
{
    struct store *s = t->s;
    unsigned depth;

    memset(out, 0, sizeof(*out));
    out->curr_items = entries(t, &depth);
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
group_general(struct store_thr *t, store_emit_fn emit, void *arg)
{
    struct store *s = t->s;
    MDB_envinfo info;
    MDB_stat est;
    unsigned depth;
    uint64_t n = entries(t, &depth);

    memset(&info, 0, sizeof(info));
    memset(&est, 0, sizeof(est));
    (void)mdb_env_info(s->env, &info);
    (void)mdb_env_stat(s->env, &est);
    persist_emit_u64(emit, arg, "lmdb_map_size", info.me_mapsize);
    persist_emit_u64(emit, arg, "lmdb_page_size", est.ms_psize);
    persist_emit_u64(emit, arg, "lmdb_used_pages",
                     (uint64_t)info.me_last_pgno + 1);
    persist_emit_u64(emit, arg, "lmdb_used_bytes",
                     ((uint64_t)info.me_last_pgno + 1) * est.ms_psize);
    persist_emit_u64(emit, arg, "lmdb_last_txnid", info.me_last_txnid);
    persist_emit_u64(emit, arg, "lmdb_readers", info.me_numreaders);
    persist_emit_u64(emit, arg, "lmdb_max_readers", info.me_maxreaders);
    persist_emit_u64(emit, arg, "lmdb_entries", n);
    persist_emit_u64(emit, arg, "lmdb_depth", depth);
    persist_sync_stats(&s->ps, "lmdb", emit, arg);
    persist_emit_u64(emit, arg, "lmdb_commits", ld(&s->ctr.commits));
    persist_emit_u64(emit, arg, "lmdb_commit_ops", ld(&s->ctr.commit_ops));
    persist_emit_u64(emit, arg, "lmdb_batch_retries", ld(&s->ctr.aborts));
    persist_emit_u64(emit, arg, "lmdb_map_full", ld(&s->ctr.map_full));
    persist_emit_u64(emit, arg, "lmdb_hints_dropped",
                     ld(&s->ctr.hints_dropped));
    persist_emit_u64(emit, arg, "lmdb_recency_refreshes",
                     ld(&s->ctr.refreshes));
    persist_emit_u64(emit, arg, "lmdb_cas_max", ld(&s->cas_max));
    persist_emit_u64(emit, arg, "lmdb_write_failed",
                     atomic_load(&s->wfail) != 0 ? 1 : 0);
}

store_rc_e
store_lmdb_stats_group(struct store_thr *t, const char *group,
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
