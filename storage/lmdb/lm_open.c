/*
 * Opening and closing an lmdb store. open creates the data directory if it
 * is missing (mode 0700), takes an exclusive flock on DIR/stashd.lock so a
 * second stashd (or a second open in this process) is refused before any
 * LMDB file is touched, opens the environment, and checks that it is ours:
 * an empty environment becomes a new store, one with our metadata record
 * is loaded, and anything else (not an LMDB file, another program's LMDB
 * environment, a newer format) is refused with a message naming the file.
 * Refusing never writes: a foreign or damaged data.mdb is left byte for
 * byte as it was. close stops the threads, syncs, and frees everything.
 */
#include "storage/lmdb/lm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define LM_MAP_HEADROOM  (64ull * 1024 * 1024)
#define LM_MIN_READERS   126u

store_rc_e
store_lmdb_rc(int mrc)
{
    switch (mrc) {
    case 0:
        return STORE_OK;
    case MDB_NOTFOUND:
        return STORE_ENOENT;
    case MDB_MAP_FULL:
    case MDB_TXN_FULL:
    case MDB_READERS_FULL:
    case ENOSPC:
    case EDQUOT:
    case ENOMEM:
        return STORE_ENOMEM;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
        return STORE_ECORRUPT;
    default:
        return STORE_EIO;
    }
}

void
store_lmdb_meta_encode(unsigned char *p, const struct lm_meta *m)
{
    memset(p, 0, LM_META_SIZE);
    memcpy(p, LM_MAGIC, 8);
    lm_put32(p + 8, LM_FORMAT);
    lm_put32(p + 12, m->created);
    lm_put64(p + 16, m->flush_cas);
    lm_put64(p + 24, m->cas_max);
    lm_put64(p + 32, m->bytes);
    lm_put32(p + 40, m->flush_time);
}

bool
store_lmdb_meta_decode(const unsigned char *p, size_t len, struct lm_meta *m,
                       uint32_t *format)
{
    if (len != LM_META_SIZE || memcmp(p, LM_MAGIC, 8) != 0) {
        return false;
    }
    *format = lm_get32(p + 8);
    m->created = lm_get32(p + 12);
    m->flush_cas = lm_get64(p + 16);
    m->cas_max = lm_get64(p + 24);
    m->bytes = lm_get64(p + 32);
    m->flush_time = lm_get32(p + 40);
    return true;
}

/*
 * A store written under a larger -m may use more pages than our map: give
 * it headroom past what it uses, or not even an eviction (which needs
 * fresh pages to copy-on-write into) could run.
 */
static store_rc_e
map_fit(const struct store_cfg *cfg, struct store *s)
{
    MDB_envinfo info;
    MDB_stat st;
    struct stat fst;
    char path[4096];
    uint64_t used;
    int rc;

    if ((rc = mdb_env_info(s->env, &info)) != 0 ||
        (rc = mdb_env_stat(s->env, &st)) != 0) {
        persist_err(cfg, "%s/%s: %s", s->dir, LM_DATA_FILE,
                    mdb_strerror(rc));
        return STORE_EIO;
    }
    used = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
    snprintf(path, sizeof(path), "%s/%s", s->dir, LM_DATA_FILE);
    if (stat(path, &fst) == 0 && (uint64_t)fst.st_size < used) {
        /* Reading a page past the end of the file would be a SIGBUS. */
        persist_err(cfg, "%s: truncated: %llu bytes, its pages need "
                    "%llu; refusing to touch it", path,
                    (unsigned long long)fst.st_size,
                    (unsigned long long)used);
        return STORE_ECORRUPT;
    }
    if (info.me_mapsize < used + LM_MAP_HEADROOM) {
        rc = mdb_env_set_mapsize(s->env, (size_t)(used + LM_MAP_HEADROOM));
        if (rc != 0) {
            persist_err(cfg, "%s/%s: cannot map %llu bytes: %s", s->dir,
                        LM_DATA_FILE,
                        (unsigned long long)(used + LM_MAP_HEADROOM),
                        mdb_strerror(rc));
            return store_lmdb_rc(rc);
        }
    }
    return STORE_OK;
}

static store_rc_e
env_open(const struct store_cfg *cfg, struct store *s)
{
    unsigned readers = cfg->threads * 2 + 16;
    int rc;

    if (readers < LM_MIN_READERS) {
        readers = LM_MIN_READERS;
    }
    rc = mdb_env_create(&s->env);
    if (rc != 0) {
        persist_err(cfg, "%s: %s", s->dir, mdb_strerror(rc));
        return STORE_ENOMEM;
    }
    if ((rc = mdb_env_set_maxdbs(s->env, 2)) != 0 ||
        (rc = mdb_env_set_maxreaders(s->env, readers)) != 0 ||
        (rc = mdb_env_set_mapsize(s->env, (size_t)s->map_size)) != 0) {
        persist_err(cfg, "%s: %s", s->dir, mdb_strerror(rc));
        return STORE_EINVAL;
    }
    /*
     * MDB_NOSYNC: a commit is a write() to the page cache, which a killed
     * process does not lose; the syncer fsyncs per --sync. MDB_NOTLS: read
     * transactions belong to our per-thread state, not to the OS thread.
     * No MDB_WRITEMAP: with it a full disk would be a SIGBUS, not ENOSPC.
     */
    rc = mdb_env_open(s->env, s->dir, MDB_NOSYNC | MDB_NOTLS, 0600);
    if (rc == 0) {
        s->env_opened = true;
        return map_fit(cfg, s);
    }
    if (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH) {
        persist_err(cfg, "%s/%s: not an LMDB file this stashd can read "
                    "(%s); refusing to touch it", s->dir, LM_DATA_FILE,
                    mdb_strerror(rc));
        return STORE_ECORRUPT;
    }
    persist_err(cfg, "%s/%s: %s", s->dir, LM_DATA_FILE, mdb_strerror(rc));
    return rc == ENOMEM ? STORE_ENOMEM : STORE_EIO;
}

/* A brand-new environment: the items DB and the metadata record. */
static store_rc_e
meta_create(const struct store_cfg *cfg, struct store *s)
{
    unsigned char buf[LM_META_SIZE];
    MDB_val key = { sizeof(LM_META_KEY) - 1, (void *)LM_META_KEY };
    MDB_val val = { LM_META_SIZE, buf };
    MDB_txn *txn;
    int rc;

    memset(&s->meta, 0, sizeof(s->meta));
    s->meta.created = cfg->now;
    store_lmdb_meta_encode(buf, &s->meta);
    rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc == 0) {
        if ((rc = mdb_dbi_open(txn, NULL, 0, &s->main_dbi)) != 0 ||
            (rc = mdb_dbi_open(txn, LM_ITEMS_DB, MDB_CREATE,
                               &s->items)) != 0 ||
            (rc = mdb_put(txn, s->main_dbi, &key, &val, 0)) != 0) {
            mdb_txn_abort(txn);
        } else {
            rc = mdb_txn_commit(txn);
        }
    }
    if (rc == 0) {
        rc = mdb_env_sync(s->env, 1);
    }
    if (rc != 0) {
        persist_err(cfg, "%s/%s: cannot create the store: %s", s->dir,
                    LM_DATA_FILE, mdb_strerror(rc));
        return store_lmdb_rc(rc);
    }
    return STORE_OK;
}

/* Checks the environment is a stashd store and loads its metadata. */
static store_rc_e
meta_load(const struct store_cfg *cfg, struct store *s)
{
    MDB_val key = { sizeof(LM_META_KEY) - 1, (void *)LM_META_KEY };
    MDB_val val;
    MDB_txn *txn;
    MDB_stat st;
    uint32_t format = 0;
    int rc;

    memset(&st, 0, sizeof(st));
    /* Read-only: looking never writes, whatever we find. */
    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        persist_err(cfg, "%s/%s: %s", s->dir, LM_DATA_FILE,
                    mdb_strerror(rc));
        return store_lmdb_rc(rc);
    }
    rc = mdb_dbi_open(txn, NULL, 0, &s->main_dbi);
    if (rc == 0) {
        rc = mdb_stat(txn, s->main_dbi, &st);
    }
    if (rc == 0) {
        rc = mdb_get(txn, s->main_dbi, &key, &val);
    }
    if (rc == MDB_NOTFOUND && st.ms_entries == 0) {
        mdb_txn_abort(txn);
        return meta_create(cfg, s);
    }
    if (rc == MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        persist_err(cfg, "%s/%s: an LMDB database that is not a stashd "
                    "store; refusing to touch it", s->dir, LM_DATA_FILE);
        return STORE_ECORRUPT;
    }
    if (rc != 0) {
        mdb_txn_abort(txn);
        persist_err(cfg, "%s/%s: %s", s->dir, LM_DATA_FILE,
                    mdb_strerror(rc));
        return store_lmdb_rc(rc);
    }
    if (!store_lmdb_meta_decode(val.mv_data, val.mv_size, &s->meta,
                                &format)) {
        mdb_txn_abort(txn);
        persist_err(cfg, "%s/%s: not a stashd store (bad metadata "
                    "record); refusing to touch it", s->dir,
                    LM_DATA_FILE);
        return STORE_ECORRUPT;
    }
    if (format != LM_FORMAT) {
        mdb_txn_abort(txn);
        persist_err(cfg, "%s/%s: stashd store format %u, this stashd "
                    "reads format %u", s->dir, LM_DATA_FILE, format,
                    LM_FORMAT);
        return STORE_ECORRUPT;
    }
    rc = mdb_dbi_open(txn, LM_ITEMS_DB, 0, &s->items);
    if (rc != 0) {
        mdb_txn_abort(txn);
        persist_err(cfg, "%s/%s: stashd store without its items "
                    "database (%s)", s->dir, LM_DATA_FILE,
                    mdb_strerror(rc));
        return STORE_ECORRUPT;
    }
    /* Committing a read-only txn keeps the DB handles open. */
    rc = mdb_txn_commit(txn);
    if (rc != 0) {
        persist_err(cfg, "%s/%s: %s", s->dir, LM_DATA_FILE,
                    mdb_strerror(rc));
        return store_lmdb_rc(rc);
    }
    return STORE_OK;
}

/* The syncer's hook: every commit so far to disk (MDB_NOSYNC otherwise). */
static int
lm_fsync(void *arg)
{
    struct store *s = arg;

    return mdb_env_sync(s->env, 1);
}

/* What open set up, so that a failure undoes exactly that. */
struct open_state {
    unsigned locks;      /* how many of the sync objects below exist */
};

static void
lm_destroy(struct store *s, const struct open_state *st)
{
    store_lmdb_maint_stop(s);
    persist_sync_stop(&s->ps);
    if (s->env != NULL) {
        if (s->env_opened) {
            (void)mdb_env_sync(s->env, 1);
        }
        mdb_env_close(s->env);
    }
    if (s->lock_fd >= 0) {
        close(s->lock_fd);     /* releases the flock */
    }
    /* In reverse order of lm_open's init list. */
    switch (st->locks) {
    case 4:
        persist_maint_deinit(&s->pm);
        /* fall through */
    case 3:
        pthread_mutex_destroy(&s->hint_lock);
        /* fall through */
    case 2:
        persist_sync_deinit(&s->ps);
        /* fall through */
    case 1:
        persist_queue_deinit(&s->wq);
        /* fall through */
    default:
        break;
    }
    store_lmdb_keybuf_deinit(&s->hints);
    free(s->scratch);
    free(s->dir);
    free(s);
}

static bool
sync_objects_init(const struct store_cfg *cfg, struct store *s,
                  struct open_state *st)
{
    if (!persist_queue_init(&s->wq, store_lmdb_run_batch, s)) {
        return false;
    }
    st->locks = 1;
    if (!persist_sync_init(&s->ps, cfg->sync, cfg->sync_interval_ms,
                           lm_fsync, s, &s->seq, &s->wfail)) {
        return false;
    }
    st->locks = 2;
    if (pthread_mutex_init(&s->hint_lock, NULL) != 0) {
        return false;
    }
    st->locks = 3;
    if (!persist_maint_init(&s->pm, LM_TICK_MS, &s->now_seen)) {
        return false;
    }
    st->locks = 4;
    return true;
}

store_rc_e
store_lmdb_open(const struct store_cfg *cfg, struct store **out)
{
    struct open_state st = { 0 };
    struct store *s;
    store_rc_e rc = STORE_ENOMEM;

    *out = NULL;
    if (cfg->err != NULL && cfg->errlen > 0) {
        cfg->err[0] = '\0';
    }
    if (cfg->data_dir == NULL || cfg->data_dir[0] == '\0') {
        persist_err(cfg, "no data directory given (--data-dir)");
        return STORE_EINVAL;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return STORE_ENOMEM;
    }
    s->lock_fd = -1;
    s->dir = strdup(cfg->data_dir);
    if (s->dir == NULL || !sync_objects_init(cfg, s, &st)) {
        goto fail;
    }
    s->mem_limit = cfg->mem_limit != 0 ? cfg->mem_limit
                                        : LM_DEFAULT_MEM_LIMIT;
    s->item_max = cfg->item_max != 0 ? cfg->item_max : LM_DEFAULT_ITEM_MAX;
    s->no_evict = cfg->no_evict;
    /*
     * Map: one byte of item data can take about two of pages (half-full
     * B-tree pages, overflow pages rounded up) and copy-on-write keeps
     * the last snapshot's pages too; the file only grows as used.
     */
    s->map_size = s->mem_limit * 3 + LM_MAP_HEADROOM;
    atomic_init(&s->now_seen, cfg->now);
    if (s->item_max < LM_ITEM_MAX_LOWEST || s->item_max > LM_ITEM_MAX_HIGHEST ||
        s->ps.mode > STORE_SYNC_NONE) {
        persist_err(cfg, "bad item size limit or sync mode");
        rc = STORE_EINVAL;
        goto fail;
    }
    if ((rc = persist_make_dir(cfg, s->dir)) != STORE_OK ||
        (rc = persist_lock_dir(cfg, s->dir, &s->lock_fd)) != STORE_OK ||
        (rc = env_open(cfg, s)) != STORE_OK ||
        (rc = meta_load(cfg, s)) != STORE_OK) {
        goto fail;
    }
    atomic_init(&s->flush_cas, s->meta.flush_cas);
    atomic_init(&s->flush_time, s->meta.flush_time);
    atomic_init(&s->cas_max, s->meta.cas_max);
    atomic_init(&s->bytes, s->meta.bytes);
    rc = STORE_ENOMEM;
    if (!persist_sync_start(&s->ps) || !store_lmdb_maint_start(s)) {
        persist_err(cfg, "cannot start the lmdb backend's threads");
        goto fail;
    }
    *out = s;
    return STORE_OK;
fail:
    lm_destroy(s, &st);
    return rc;
}

void
store_lmdb_close(struct store **sp)
{
    struct store *s = *sp;
    struct open_state st = { 4 };

    if (s == NULL) {
        return;
    }
    lm_destroy(s, &st);
    *sp = NULL;
}
