/*
 * The lmdb adapter (store_lmdb_ops): memcached items in one LMDB
 * environment per data directory, surviving restarts, crashes and power
 * loss. This file opens and closes it.
 *
 * Design, and why:
 * - Layout: DIR/data.mdb + lock.mdb (LMDB's), DIR/stashd.lock (the
 *   engine's flock), DIR/stashd.synced (the last durable snapshot,
 *   lm_sync.c). Items live in the named DB "stashd_items", keyed by the
 *   memcached key; a record is a 40-byte little-endian header (cas, flags,
 *   exptime, stored time, last access, fetched bit, checksum) and the
 *   value. A 64-byte metadata record under the reserved main-DB key
 *   "stashd" (magic, format, flush CAS and time, CAS ceiling, items,
 *   bytes, its own checksum) is rewritten in every commit, so it is always
 *   exactly consistent with the items and a restart needs no scan.
 * - Open refuses, never overwrites: a file that is not an LMDB
 *   environment, another program's environment, a newer or older format,
 *   a sqlite store in the same directory, or a store that LMDB trips over
 *   is refused with a message naming the file. Before LMDB touches the
 *   file in this process, a child process walks every page of it and
 *   checks every record's checksum: a damaged page that would make LMDB
 *   abort (an assertion) or fault kills only the child, and the store is
 *   refused with the reason instead of a crash loop. Damaged records the
 *   walk finds are handed to the engine, which removes them.
 * - Commits are MDB_NOSYNC (a write() to the page cache, which a killed
 *   process does not lose); durability and power-loss consistency are the
 *   snapshot scheme's (lm_sync.c). No MDB_WRITEMAP: with it a full disk
 *   would be a SIGBUS, not ENOSPC.
 */
#include "storage/lmdb/lm.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "storage/persist/persist.h"

#define LM_MAP_HEADROOM  (64ull * 1024 * 1024)
#define LM_MIN_READERS   126u
#define LM_VERIFY_BAD_MAX 4096u   /* damaged keys the walk reports */

void
lm_meta_encode(unsigned char *p, const struct kv_meta *m)
{
    memset(p, 0, LM_META_SIZE);
    memcpy(p, LM_MAGIC, 8);
    kv_put32(p + 8, LM_FORMAT);
    kv_put32(p + 12, m->created);
    kv_put64(p + 16, m->flush_cas);
    kv_put64(p + 24, m->cas_max);
    kv_put64(p + 32, m->bytes);
    kv_put32(p + 40, m->flush_time);
    kv_put64(p + 48, m->items);
    kv_put32(p + 60, kv_crc32c(0, p, 60));
}

bool
lm_meta_decode(const unsigned char *p, size_t len, struct kv_meta *m,
               uint32_t *format)
{
    if (len != LM_META_SIZE || memcmp(p, LM_MAGIC, 8) != 0) {
        return false;
    }
    *format = kv_get32(p + 8);
    if (*format != LM_FORMAT) {
        return true;
    }
    if (kv_get32(p + 60) != kv_crc32c(0, p, 60)) {
        return false;
    }
    m->created = kv_get32(p + 12);
    m->flush_cas = kv_get64(p + 16);
    m->cas_max = kv_get64(p + 24);
    m->bytes = kv_get64(p + 32);
    m->flush_time = kv_get32(p + 40);
    m->items = kv_get64(p + 48);
    return true;
}

int
lm_meta_put(struct kv_be *b, MDB_txn *txn, const struct kv_meta *m)
{
    unsigned char buf[LM_META_SIZE];
    MDB_val key = { sizeof(LM_META_KEY) - 1, (void *)LM_META_KEY };
    MDB_val val = { LM_META_SIZE, buf };

    lm_meta_encode(buf, m);
    return mdb_put(txn, b->main_dbi, &key, &val, 0);
}

/* ------------------------------------------------------ the checking walk */

/* What the walk in the child reports through its pipe. */
struct walk_out {
    int      fd;
    unsigned bad;
};

/*
 * Whether a record of LMDB's free list (key: a transaction id; value: a
 * count and that many page numbers, descending) is one LMDB can use: a
 * damaged one would make a later commit write over a live page or outside
 * the map, which no read ever trips on.
 */
static bool
free_record_ok(const MDB_val *key, const MDB_val *data, uint64_t last_pgno)
{
    const unsigned char *p = data->mv_data;
    uint64_t n;
    uint64_t prev = UINT64_MAX;

    if (key->mv_size != sizeof(size_t) || data->mv_size < sizeof(size_t) ||
        data->mv_size % sizeof(size_t) != 0) {
        return false;
    }
    memcpy(&n, p, sizeof(n));
    if (n != data->mv_size / sizeof(size_t) - 1) {
        return false;
    }
    for (uint64_t i = 1; i <= n; i++) {
        uint64_t pg;

        memcpy(&pg, p + i * sizeof(size_t), sizeof(pg));
        if (pg < 2 || pg > last_pgno || pg >= prev) {
            return false;
        }
        prev = pg;
    }
    return true;
}

/*
 * Whether a value LMDB keeps on overflow pages says so right: the pages
 * start with a header (page number, flags with P_OVERFLOW, page count)
 * that reads never look at but a delete trusts to free them; a damaged
 * count there makes LMDB free garbage, forever. A value is on overflow
 * pages exactly when it starts right after a page header (inline values
 * sit past a leaf's node table).
 */
static bool
overflow_ok(const MDB_val *data, unsigned psize, uint64_t last_pgno)
{
    const unsigned char *pg = (const unsigned char *)data->mv_data - 16;
    uint64_t pgno;
    uint32_t pages;
    uint16_t flags;

    if (data->mv_size == 0 || (uintptr_t)pg % psize != 0) {
        return true;
    }
    memcpy(&pgno, pg, 8);
    memcpy(&flags, pg + 10, 2);
    memcpy(&pages, pg + 12, 4);
    return (flags & 0x04) != 0 &&
           pages == (16 - 1 + data->mv_size) / psize + 1 &&
           pgno >= 2 && pgno + pages - 1 <= last_pgno;
}

/*
 * Walks every record of dbi (0, LMDB's free list: each record checked;
 * the items DB: each record's checksum and overflow pages). An LMDB
 * error, or MDB_CORRUPTED for what a later commit would trip on.
 */
static int
walk_db(MDB_txn *txn, MDB_dbi dbi, bool items, struct walk_out *wo)
{
    MDB_envinfo info;
    MDB_stat est;
    MDB_cursor *cur;
    MDB_val key;
    MDB_val data;
    int rc = mdb_env_info(mdb_txn_env(txn), &info);

    if (rc == 0) {
        rc = mdb_env_stat(mdb_txn_env(txn), &est);
    }
    if (rc == 0) {
        rc = mdb_cursor_open(txn, dbi, &cur);
    }
    if (rc != 0) {
        return rc;
    }
    while ((rc = mdb_cursor_get(cur, &key, &data, MDB_NEXT)) == 0) {
        struct kv_view v;

        if (dbi == 0 && !free_record_ok(&key, &data, info.me_last_pgno)) {
            rc = MDB_CORRUPTED;
            break;
        }
        if (!items) {
            continue;
        }
        if (!overflow_ok(&data, est.ms_psize, info.me_last_pgno)) {
            rc = MDB_CORRUPTED;
            break;
        }
        /* Found again from the root: every branch key on its path is
         * compared, which going leaf to leaf never does. */
        if (key.mv_size == 0 || key.mv_size > STORE_KEY_MAX) {
            rc = MDB_CORRUPTED;
            break;
        } else {
            MDB_val again;

            rc = mdb_get(txn, dbi, &key, &again);
            /* Not found (which would end the walk as if clean) is
             * damage too. */
            if (rc != 0 || again.mv_data != data.mv_data) {
                rc = rc != 0 && rc != MDB_NOTFOUND ? rc : MDB_CORRUPTED;
                break;
            }
        }
        if (lm_rec_decode(&data, &v, true) &&
            kv_sum_ok(&v.r, key.mv_data, key.mv_size, v.val, v.vlen)) {
            continue;
        }
        /* "B <key length> <cas>\n" and the key's bytes. */
        if (wo->bad++ < LM_VERIFY_BAD_MAX && key.mv_size <= STORE_KEY_MAX) {
            char line[64];
            int n = snprintf(line, sizeof(line), "B %zu %llu\n", key.mv_size,
                             (unsigned long long)v.r.cas);

            if (write(wo->fd, line, (size_t)n) != n ||
                write(wo->fd, key.mv_data, key.mv_size) !=
                    (ssize_t)key.mv_size) {
                break;
            }
        }
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Exits the child with "T": the file is shorter than its pages. */
static void
check_length(MDB_env *env, const char *path, int fd)
{
    MDB_envinfo info;
    MDB_stat st;
    struct stat fst;
    uint64_t used;

    if (mdb_env_info(env, &info) != 0 || mdb_env_stat(env, &st) != 0 ||
        stat(path, &fst) != 0) {
        return;
    }
    used = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
    if ((uint64_t)fst.st_size < used) {
        /* Reading a page past the end of the file would be a SIGBUS. */
        dprintf(fd, "T %llu %llu\n", (unsigned long long)fst.st_size,
                (unsigned long long)used);
        _exit(4);
    }
}

/* The child: opens read-only and walks; exits 0 when LMDB found nothing. */
static void
walk_child(const char *dir, const char *path, uint64_t map_size, int fd)
{
    struct walk_out wo = { fd, 0 };
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi items;
    int rc;

    /* LMDB writes an assertion's text to stderr before it aborts. */
    (void)dup2(fd, STDERR_FILENO);
    if ((rc = mdb_env_create(&env)) == 0 &&
        (rc = mdb_env_set_maxdbs(env, 2)) == 0 &&
        (rc = mdb_env_set_mapsize(env, (size_t)map_size)) == 0 &&
        (rc = mdb_env_open(env, dir, MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS,
                           0600)) == 0 &&
        (check_length(env, path, fd),
         rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn)) == 0) {
        /* The free list, the main DB, then every item with its sum. */
        if ((rc = walk_db(txn, 0, false, &wo)) == 0 &&
            (rc = walk_db(txn, 1, false, &wo)) == 0 &&
            (rc = mdb_dbi_open(txn, LM_ITEMS_DB, 0, &items)) == 0) {
            rc = walk_db(txn, items, true, &wo);
        }
        if (rc == MDB_NOTFOUND) {
            rc = 0;              /* no items DB: an empty environment */
        }
    }
    if (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH) {
        /* Not a damaged store but no LMDB file at all: env_open says so. */
        _exit(5);
    }
    if (rc != 0) {
        dprintf(fd, "E %s\n", mdb_strerror(rc));
        _exit(3);
    }
    _exit(0);
}

/* Parses the child's report: damaged keys go to the engine. */
static void
walk_report(struct kv_be *b, const char *buf, size_t n, char *why,
            size_t whylen)
{
    size_t i = 0;

    why[0] = '\0';
    while (i < n) {
        const char *nl = memchr(buf + i, '\n', n - i);
        size_t klen;
        unsigned long long cas;

        if (nl == NULL) {
            break;
        }
        if (buf[i] == 'B' &&
            sscanf(buf + i, "B %zu %llu", &klen, &cas) == 2 &&
            klen <= (size_t)(buf + n - (nl + 1))) {
            b->host->bad(b->host->s, nl + 1, klen, cas);
            i = (size_t)(nl + 1 - buf) + klen;
            continue;
        }
        /* LMDB's own words (an error, an assertion): keep the last. */
        snprintf(why, whylen, "%.*s", (int)(nl - (buf + i)), buf + i);
        i = (size_t)(nl + 1 - buf);
    }
}

/*
 * Walks the whole store in a child process before this one maps it: what
 * would crash LMDB crashes the child, and the store is refused.
 */
static store_rc_e
walk(const struct store_cfg *cfg, struct kv_be *b, off_t file_size)
{
    int fds[2];
    pid_t pid;
    char *buf = NULL;
    size_t n = 0;
    size_t cap = 0;
    char why[256];
    int status = 0;

    if (pipe(fds) != 0) {
        persist_err(cfg, "%s: cannot check it: %s", b->data_path,
                    strerror(errno));
        return STORE_EIO;
    }
    pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        persist_err(cfg, "%s: cannot check it: %s", b->data_path,
                    strerror(errno));
        return STORE_EIO;
    }
    if (pid == 0) {
        close(fds[0]);
        walk_child(b->dir, b->data_path, (uint64_t)file_size > b->map_size
                           ? (uint64_t)file_size + LM_MAP_HEADROOM
                           : b->map_size, fds[1]);
    }
    close(fds[1]);
    for (;;) {
        ssize_t r;

        if (n == cap) {
            char *p = realloc(buf, cap != 0 ? cap * 2 : 4096);

            if (p == NULL) {
                break;
            }
            buf = p;
            cap = cap != 0 ? cap * 2 : 4096;
        }
        r = read(fds[0], buf + n, cap - n);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        n += (size_t)r;
    }
    close(fds[0]);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    walk_report(b, buf != NULL ? buf : "", n, why, sizeof(why));
    free(buf);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        return STORE_OK;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 5) {
        persist_err(cfg, "%s: not an LMDB file this stashd can read; "
                    "refusing to touch it", b->data_path);
        return STORE_ECORRUPT;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 4) {
        unsigned long long have = 0;
        unsigned long long need = 0;

        (void)sscanf(why, "T %llu %llu", &have, &need);
        persist_err(cfg, "%s: truncated: %llu bytes, its pages need %llu; "
                    "refusing to touch it", b->data_path, have, need);
        return STORE_ECORRUPT;
    }
    if (WIFSIGNALED(status)) {
        persist_err(cfg, "%s: damaged: checking it made LMDB fail (%s%s%s);"
                    " refusing to serve from it. Move the directory aside "
                    "to start empty, or restore a backup", b->data_path,
                    strsignal(WTERMSIG(status)), why[0] ? ": " : "", why);
    } else {
        persist_err(cfg, "%s: damaged: LMDB reports \"%s\" while checking "
                    "it; refusing to serve from it. Move the directory "
                    "aside to start empty, or restore a backup",
                    b->data_path, why[0] ? why + 2 : "an error");
    }
    return STORE_ECORRUPT;
}

/* ----------------------------------------------------------------- open */

/*
 * A store written under a larger -m may use more pages than our map: give
 * it headroom past what it uses, or not even an eviction (which needs
 * fresh pages to copy-on-write into) could run.
 */
static store_rc_e
map_fit(const struct store_cfg *cfg, struct kv_be *b)
{
    MDB_envinfo info;
    MDB_stat st;
    struct stat fst;
    uint64_t used;
    int rc;

    if ((rc = mdb_env_info(b->env, &info)) != 0 ||
        (rc = mdb_env_stat(b->env, &st)) != 0) {
        persist_err(cfg, "%s: %s", b->data_path, mdb_strerror(rc));
        return STORE_EIO;
    }
    b->psize = st.ms_psize;
    used = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
    if (stat(b->data_path, &fst) == 0 && (uint64_t)fst.st_size < used) {
        /* Reading a page past the end of the file would be a SIGBUS. */
        persist_err(cfg, "%s: truncated: %llu bytes, its pages need "
                    "%llu; refusing to touch it", b->data_path,
                    (unsigned long long)fst.st_size,
                    (unsigned long long)used);
        return STORE_ECORRUPT;
    }
    if (info.me_mapsize < used + LM_MAP_HEADROOM) {
        rc = mdb_env_set_mapsize(b->env, (size_t)(used + LM_MAP_HEADROOM));
        if (rc != 0) {
            persist_err(cfg, "%s: cannot map %llu bytes: %s", b->data_path,
                        (unsigned long long)(used + LM_MAP_HEADROOM),
                        mdb_strerror(rc));
            return STORE_ENOMEM;
        }
    }
    return STORE_OK;
}

/* LMDB is about to abort on a damaged page: say which file, and how out. */
static void
lm_assert(MDB_env *env, const char *msg)
{
    const char *dir = "?";

    (void)mdb_env_get_path(env, &dir);
    fprintf(stderr, "stashd: %s/%s is damaged (LMDB: %s); stopping rather "
            "than serve from it. The next start checks the file and refuses "
            "it with the way out\n", dir, LM_DATA_FILE, msg);
}

static store_rc_e
env_open(const struct store_cfg *cfg, struct kv_be *b)
{
    unsigned readers = cfg->threads * 2 + 16;
    int rc;

    if (readers < LM_MIN_READERS) {
        readers = LM_MIN_READERS;
    }
    rc = mdb_env_create(&b->env);
    if (rc != 0) {
        persist_err(cfg, "%s: %s", b->dir, mdb_strerror(rc));
        return STORE_ENOMEM;
    }
    (void)mdb_env_set_assert(b->env, lm_assert);
    if ((rc = mdb_env_set_maxdbs(b->env, 2)) != 0 ||
        (rc = mdb_env_set_maxreaders(b->env, readers)) != 0 ||
        (rc = mdb_env_set_mapsize(b->env, (size_t)b->map_size)) != 0) {
        persist_err(cfg, "%s: %s", b->dir, mdb_strerror(rc));
        return STORE_EINVAL;
    }
    /*
     * MDB_NOSYNC: a commit is a write() to the page cache; the syncer
     * makes snapshots durable (lm_sync.c). MDB_NOTLS: read transactions
     * belong to our readers, not to the OS thread.
     */
    rc = mdb_env_open(b->env, b->dir, MDB_NOSYNC | MDB_NOTLS, 0600);
    if (rc == 0) {
        return map_fit(cfg, b);
    }
    if (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH) {
        persist_err(cfg, "%s: not an LMDB file this stashd can read "
                    "(%s); refusing to touch it", b->data_path,
                    mdb_strerror(rc));
        return STORE_ECORRUPT;
    }
    persist_err(cfg, "%s: %s", b->data_path, mdb_strerror(rc));
    return rc == ENOMEM ? STORE_ENOMEM : STORE_EIO;
}

/* A brand-new environment: the items DB and the metadata record. */
static store_rc_e
meta_create(const struct store_cfg *cfg, struct kv_be *b, struct kv_meta *m)
{
    MDB_txn *txn;
    int rc;

    memset(m, 0, sizeof(*m));
    m->created = cfg->now;
    rc = mdb_txn_begin(b->env, NULL, 0, &txn);
    if (rc == 0) {
        if ((rc = mdb_dbi_open(txn, NULL, 0, &b->main_dbi)) != 0 ||
            (rc = mdb_dbi_open(txn, LM_ITEMS_DB, MDB_CREATE,
                               &b->items)) != 0 ||
            (rc = lm_meta_put(b, txn, m)) != 0) {
            mdb_txn_abort(txn);
        } else {
            rc = mdb_txn_commit(txn);
        }
    }
    if (rc != 0) {
        persist_err(cfg, "%s: cannot create the store: %s", b->data_path,
                    mdb_strerror(rc));
        return kv_rc(lm_err(b, rc)) == STORE_ENOMEM ? STORE_ENOMEM
                                                   : STORE_EIO;
    }
    return STORE_OK;
}

/* Checks the environment is a stashd store and loads its metadata. */
static store_rc_e
meta_load(const struct store_cfg *cfg, struct kv_be *b, struct kv_meta *m)
{
    MDB_val key = { sizeof(LM_META_KEY) - 1, (void *)LM_META_KEY };
    MDB_val val;
    MDB_txn *txn;
    MDB_stat st;
    uint32_t format = 0;
    int rc;

    memset(&st, 0, sizeof(st));
    /* Read-only: looking never writes, whatever we find. */
    rc = mdb_txn_begin(b->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        persist_err(cfg, "%s: %s", b->data_path, mdb_strerror(rc));
        return kv_rc(lm_err(b, rc));
    }
    rc = mdb_dbi_open(txn, NULL, 0, &b->main_dbi);
    if (rc == 0) {
        rc = mdb_stat(txn, b->main_dbi, &st);
    }
    if (rc == 0) {
        rc = mdb_get(txn, b->main_dbi, &key, &val);
    }
    if (rc == MDB_NOTFOUND && st.ms_entries == 0) {
        mdb_txn_abort(txn);
        return meta_create(cfg, b, m);
    }
    if (rc == MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        persist_err(cfg, "%s: an LMDB database that is not a stashd "
                    "store; refusing to touch it", b->data_path);
        return STORE_ECORRUPT;
    }
    if (rc != 0) {
        mdb_txn_abort(txn);
        persist_err(cfg, "%s: %s", b->data_path, mdb_strerror(rc));
        return kv_rc(lm_err(b, rc));
    }
    if (!lm_meta_decode(val.mv_data, val.mv_size, m, &format)) {
        mdb_txn_abort(txn);
        persist_err(cfg, "%s: not a stashd store (bad metadata record); "
                    "refusing to touch it", b->data_path);
        return STORE_ECORRUPT;
    }
    if (format != LM_FORMAT) {
        mdb_txn_abort(txn);
        persist_err(cfg, "%s: stashd store format %u, this stashd reads "
                    "format %u (records with checksums); refusing to touch "
                    "it. Move the directory aside to start empty", 
                    b->data_path, format, LM_FORMAT);
        return STORE_ECORRUPT;
    }
    rc = mdb_dbi_open(txn, LM_ITEMS_DB, 0, &b->items);
    if (rc != 0) {
        mdb_txn_abort(txn);
        persist_err(cfg, "%s: stashd store without its items "
                    "database (%s)", b->data_path, mdb_strerror(rc));
        return STORE_ECORRUPT;
    }
    /* Committing a read-only txn keeps the DB handles open. */
    rc = mdb_txn_commit(txn);
    if (rc != 0) {
        persist_err(cfg, "%s: %s", b->data_path, mdb_strerror(rc));
        return kv_rc(lm_err(b, rc));
    }
    return STORE_OK;
}

/* Each backend refuses the other's directory, naming what it found. */
static store_rc_e
check_dir(const struct store_cfg *cfg, struct kv_be *b, bool *exists,
          off_t *size)
{
    char path[4096];
    struct stat st;

    snprintf(path, sizeof(path), "%s/%s", b->dir, LM_SQLITE_FILE);
    if (stat(path, &st) == 0) {
        persist_err(cfg, "%s: the directory holds a sqlite store "
                    "(start with --backend sqlite, or pick another "
                    "--data-dir); the lmdb backend will not mix with it",
                    path);
        return STORE_ECORRUPT;
    }
    *exists = stat(b->data_path, &st) == 0;
    *size = *exists ? st.st_size : 0;
    if (*exists && !S_ISREG(st.st_mode)) {
        persist_err(cfg, "%s: not a regular file; refusing to touch it",
                    b->data_path);
        return STORE_ECORRUPT;
    }
    return STORE_OK;
}

/* A new file's name on disk now, not at the file system's leisure. */
static void
sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

static char *
path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);

    if (p != NULL) {
        snprintf(p, n, "%s/%s", dir, name);
    }
    return p;
}

static int
unlink_in(const struct kv_be *b, const char *name)
{
    char path[4096];

    snprintf(path, sizeof(path), "%s/%s", b->dir, name);
    return unlink(path);
}

/*
 * The creation marker: made (durably, name included) before LMDB makes a
 * new data.mdb and removed once the store's first snapshot is durable,
 * so a data.mdb found beside it that cannot be read is known to be ours
 * and never to have held an acknowledged write. With make, creates it;
 * else says whether it exists.
 */
static bool
creating(const struct kv_be *b, bool make)
{
    char path[4096];
    int fd;

    snprintf(path, sizeof(path), "%s/%s", b->dir, LM_CREATING_FILE);
    if (!make) {
        return access(path, F_OK) == 0;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || fsync(fd) != 0) {
        if (fd >= 0) {
            close(fd);
        }
        return false;
    }
    close(fd);
    sync_dir(b->dir);
    return true;
}

/* Removes what a cut-short creation left, the marker kept. */
static void
start_over(const struct kv_be *b)
{
    (void)unlink_in(b, LM_DATA_FILE);
    (void)unlink_in(b, "lock.mdb");
    (void)unlink_in(b, LM_SNAP_FILE);
}

static void
lm_free(struct kv_be *b)
{
    if (b->env != NULL) {
        mdb_env_close(b->env);
    }
    if (b->data_fd >= 0) {
        close(b->data_fd);
    }
    if (b->snap_fd >= 0) {
        close(b->snap_fd);
    }
    free(b->scratch);
    free(b->snap_path);
    free(b->data_path);
    free(b->dir);
    free(b);
}

static store_rc_e
lm_open(const struct store_cfg *cfg, const char *dir,
        const struct kv_host *host, struct kv_be **out, struct kv_meta *m)
{
    struct kv_be *b = calloc(1, sizeof(*b));
    uint64_t mem = cfg->mem_limit != 0 ? cfg->mem_limit
                                        : 64ull * 1024 * 1024;
    bool exists = false;
    off_t size = 0;
    store_rc_e rc;

    *out = NULL;
    if (b == NULL) {
        return STORE_ENOMEM;
    }
    b->host = host;
    b->data_fd = -1;
    b->snap_fd = -1;
    /*
     * Map: one byte of item data can take about two of pages (half-full
     * B-tree pages, overflow pages rounded up) and copy-on-write keeps
     * the last snapshots' pages too; the file only grows as used.
     */
    b->map_size = mem * 3 + LM_MAP_HEADROOM;
    b->dir = strdup(dir);
    b->data_path = b->dir != NULL ? path_join(dir, LM_DATA_FILE) : NULL;
    b->snap_path = b->dir != NULL ? path_join(dir, LM_SNAP_FILE) : NULL;
    if (b->data_path == NULL || b->snap_path == NULL) {
        lm_free(b);
        return STORE_ENOMEM;
    }
    if ((rc = check_dir(cfg, b, &exists, &size)) == STORE_OK && exists) {
        rc = lm_snap_restore(cfg, b);
        if (rc == STORE_OK) {
            rc = walk(cfg, b, size);
        }
        if (rc == STORE_ECORRUPT && creating(b, false)) {
            /* Ours, made by an open that never finished: nothing in it
             * was ever acknowledged. */
            fprintf(stderr, "stashd: %s: the store's creation was cut "
                    "short (%s); creating it again\n", b->data_path,
                    cfg->err != NULL ? cfg->err : "unreadable");
            lm_snap_undo(b);
            start_over(b);
            exists = false;
            rc = STORE_OK;
        }
    }
    if (rc == STORE_OK && !exists && !creating(b, true)) {
        persist_err(cfg, "%s/%s: %s", b->dir, LM_CREATING_FILE,
                    strerror(errno));
        rc = errno == ENOSPC ? STORE_ENOMEM : STORE_EIO;
    }
    if (rc != STORE_OK ||
        (rc = env_open(cfg, b)) != STORE_OK ||
        (rc = meta_load(cfg, b, m)) != STORE_OK) {
        if (b->env != NULL) {
            mdb_env_close(b->env);
            b->env = NULL;
        }
        lm_snap_undo(b);
        lm_free(b);
        return rc;
    }
    if ((rc = lm_snap_start(cfg, b)) != STORE_OK) {
        lm_free(b);
        return rc;
    }
    /* The first snapshot is durable: the store exists whole. */
    (void)unlink_in(b, LM_CREATING_FILE);
    *out = b;
    return STORE_OK;
}

static void
lm_close(struct kv_be *b, const struct kv_meta *m, bool clean)
{
    (void)m;   /* every commit wrote it */
    if (b->wtxn != NULL) {
        mdb_txn_abort(b->wtxn);
        b->wtxn = NULL;
    }
    lm_snap_close(b, clean);
    lm_free(b);
}

const struct kv_backend lm_backend = {
    .name = "lmdb",
    .file = LM_DATA_FILE,
    /* Without a durable snapshot now and then, a power loss could leave
     * LMDB's newest meta page ahead of its data: sync once a second. */
    .none_sync_ms = 1000,
    /* Pages freed after the durable snapshot are not reused until the
     * next one: sync after this many commits, and hold writers at eight
     * times as many, so the file stays within the map. */
    .sync_pressure = 1024,
    .open = lm_open,
    .close = lm_close,
    .sync = lm_sync,
    .rd_open = lm_rd_open,
    .rd_close = lm_rd_close,
    .rd_get = lm_rd_get,
    .rd_end = lm_rd_end,
    .rd_idle = NULL,
    .rd_scan = lm_rd_scan,
    .rd_expired = NULL,
    .begin = lm_begin,
    .load = lm_load,
    .put = lm_put,
    .put_rec = lm_put_rec,
    .del = lm_del,
    .window = lm_window,
    .commit = lm_commit,
    .abort = lm_abort,
    .reclaim = NULL,
    .tick = NULL,
    .stats = lm_stats,
};

static store_rc_e
store_lmdb_open(const struct store_cfg *cfg, struct store **out)
{
    return kv_open(&lm_backend, cfg, out);
}

const struct store_ops store_lmdb_ops = KV_STORE_OPS("lmdb",
                                                     store_lmdb_open);
