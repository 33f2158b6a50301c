/*
 * How the lmdb adapter survives a power loss without an fsync per commit.
 *
 * Commits are MDB_NOSYNC: a write() of the new pages and then of LMDB's
 * meta page, to the page cache. A killed process loses none of it, but
 * the kernel writes dirty pages back in any order, so after a power loss
 * the disk may hold a meta page whose data pages never arrived, and pages
 * LMDB freed and reused since the last fsync may have overwritten the
 * ones an older meta points to: the store is damaged. LMDB's own remedy
 * (an fsync between the data and the meta of every commit) costs a disk
 * flush per commit on the request path; measured here it halves the
 * throughput of the standard workload.
 *
 * Instead, the syncer keeps a durable snapshot:
 * 1. it pins the newest snapshot with a read transaction (LMDB never
 *    reuses a page that a live reader's snapshot can see, so from now on
 *    nothing overwrites that snapshot's pages) and copies its meta page
 *    (the transaction id picks which of LMDB's two);
 * 2. fdatasync of data.mdb: the snapshot's pages are on disk;
 * 3. writes the meta page copy, the snapshot's transaction id and the
 *    machine's boot id into one of two checksummed slots of
 *    DIR/stashd.synced, and fdatasyncs it: the snapshot is now the one to
 *    fall back on;
 * 4. releases the previous pin.
 * At open, if the store was not closed cleanly and the machine has
 * restarted since (its boot id changed: a power loss or kernel crash,
 * where the page cache was lost), both of LMDB's meta pages are set back
 * to the saved one before LMDB opens the file: exactly the last synced
 * state, whose pages were never overwritten. Without a restart (kill -9)
 * the page cache kept every commit and LMDB's newest meta is used as is.
 * So: --sync=always answers a write once a snapshot holding it is saved
 * (every acknowledged write survives), --sync=periodic loses at most the
 * writes of the last interval, and --sync=none saves a snapshot every
 * second (lm_backend.none_sync_ms) so that it too stays consistent. The
 * meta page layout this relies on is checked at every open; where it does
 * not hold, commits fall back to LMDB's ordered sync (MDB_NOMETASYNC).
 */
#include "storage/lmdb/lm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/persist/persist.h"

#define SNAP_MAGIC    "stashdSN"
#define SNAP_VERSION  1u
#define SNAP_CLEAN    0x1u
#define SNAP_META_OFF 96u
#define SNAP_CRC_OFF  (LM_SNAP_SLOT - 4u)
#define SNAP_TRIES    16          /* lock-free attempts to read a meta */
#define P_META        0x08u
#define MDB_MAGIC     0xBEEFC0DEu

/* One slot of the snapshot file, decoded. */
struct snap {
    uint32_t      flags;
    uint64_t      seq;
    uint64_t      txnid;
    uint32_t      psize;
    char          boot[48];
    unsigned char meta[LM_SNAP_META];
};

static void
snap_encode(unsigned char *p, const struct snap *sn)
{
    memset(p, 0, LM_SNAP_SLOT);
    memcpy(p, SNAP_MAGIC, 8);
    kv_put32(p + 8, SNAP_VERSION);
    kv_put32(p + 12, sn->flags);
    kv_put64(p + 16, sn->seq);
    kv_put64(p + 24, sn->txnid);
    kv_put32(p + 32, sn->psize);
    memcpy(p + 40, sn->boot, sizeof(sn->boot));
    memcpy(p + SNAP_META_OFF, sn->meta, LM_SNAP_META);
    kv_put32(p + SNAP_CRC_OFF, kv_crc32c(0, p, SNAP_CRC_OFF));
}

static bool
snap_decode(const unsigned char *p, struct snap *sn)
{
    if (memcmp(p, SNAP_MAGIC, 8) != 0 || kv_get32(p + 8) != SNAP_VERSION ||
        kv_get32(p + SNAP_CRC_OFF) != kv_crc32c(0, p, SNAP_CRC_OFF)) {
        return false;
    }
    sn->flags = kv_get32(p + 12);
    sn->seq = kv_get64(p + 16);
    sn->txnid = kv_get64(p + 24);
    sn->psize = kv_get32(p + 32);
    memcpy(sn->boot, p + 40, sizeof(sn->boot));
    sn->boot[sizeof(sn->boot) - 1] = '\0';
    memcpy(sn->meta, p + SNAP_META_OFF, LM_SNAP_META);
    return true;
}

/* The newer valid slot of the file at fd; false when neither is. */
static bool
snap_best(int fd, struct snap *out)
{
    unsigned char buf[2 * LM_SNAP_SLOT];
    struct snap sn[2];
    bool ok[2];
    ssize_t n = pread(fd, buf, sizeof(buf), 0);

    if (n < 0) {
        return false;
    }
    if ((size_t)n < sizeof(buf)) {
        memset(buf + n, 0, sizeof(buf) - (size_t)n);
    }
    ok[0] = snap_decode(buf, &sn[0]);
    ok[1] = snap_decode(buf + LM_SNAP_SLOT, &sn[1]);
    if (!ok[0] && !ok[1]) {
        return false;
    }
    *out = ok[0] && (!ok[1] || sn[0].seq > sn[1].seq) ? sn[0] : sn[1];
    return true;
}

/* The machine's boot id: changes with every boot, so it tells a restart. */
static void
boot_id(const struct store_cfg *cfg, char *out, size_t cap)
{
    FILE *f;

    memset(out, 0, cap);
    if (cfg->boot_id != NULL) {
        snprintf(out, cap, "%s", cfg->boot_id);
        return;
    }
    f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f == NULL) {
        return;
    }
    if (fgets(out, (int)cap, f) != NULL) {
        out[strcspn(out, "\n")] = '\0';
    }
    fclose(f);
}

/* Writes b->undo past the snapshot file's slots, durably. */
static bool
keep_undo(struct kv_be *b)
{
    int fd = open(b->snap_path, O_RDWR | O_CLOEXEC);
    bool ok = fd >= 0 &&
              pwrite(fd, b->undo, sizeof(b->undo), 2 * LM_SNAP_SLOT) ==
                  (ssize_t)sizeof(b->undo) &&
              fdatasync(fd) == 0;

    if (fd >= 0) {
        close(fd);
    }
    return ok;
}

void
lm_snap_undo(struct kv_be *b)
{
    int fd;

    if (b->undo_psize == 0) {
        return;
    }
    fd = open(b->data_path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        return;
    }
    if (pwrite(fd, b->undo, LM_SNAP_META, 0) == (ssize_t)LM_SNAP_META &&
        pwrite(fd, b->undo + LM_SNAP_META, LM_SNAP_META, b->undo_psize) ==
            (ssize_t)LM_SNAP_META) {
        (void)fdatasync(fd);
    }
    close(fd);
    b->undo_psize = 0;
}

store_rc_e
lm_snap_restore(const struct store_cfg *cfg, struct kv_be *b)
{
    char boot[48];
    struct snap sn;
    struct stat st;
    int fd = open(b->snap_path, O_RDONLY | O_CLOEXEC);
    int dfd;
    bool ok;

    if (fd < 0) {
        return STORE_OK;          /* never synced, or not ours: the walk */
    }
    ok = snap_best(fd, &sn);
    close(fd);
    boot_id(cfg, boot, sizeof(boot));
    if (!ok || (sn.flags & SNAP_CLEAN) || boot[0] == '\0' ||
        strcmp(boot, sn.boot) == 0) {
        /* Closed cleanly, or the page cache outlived the process: LMDB's
         * newest state is whole. */
        return STORE_OK;
    }
    dfd = open(b->data_path, O_RDWR | O_CLOEXEC);
    if (dfd < 0 || fstat(dfd, &st) != 0) {
        persist_err(cfg, "%s: %s", b->data_path, strerror(errno));
        if (dfd >= 0) {
            close(dfd);
        }
        return STORE_EIO;
    }
    if (sn.psize < LM_SNAP_META || (uint64_t)st.st_size < 2ull * sn.psize ||
        pread(dfd, b->undo, LM_SNAP_META, 0) != (ssize_t)LM_SNAP_META ||
        pread(dfd, b->undo + LM_SNAP_META, LM_SNAP_META, sn.psize) !=
            (ssize_t)LM_SNAP_META) {
        close(dfd);
        return STORE_OK;          /* not a file this snapshot fits */
    }
    /*
     * LMDB's own meta pages are kept first (here, and in the snapshot
     * file past its two slots), so that if the file turns out not to be
     * the one the snapshot was taken of (the walk after this refuses it),
     * they are put back: a refused file is left as it was.
     */
    if (!keep_undo(b)) {
        persist_err(cfg, "%s: cannot keep LMDB's meta pages before the "
                    "restore: %s", b->snap_path, strerror(errno));
        close(dfd);
        return STORE_EIO;
    }
    b->undo_psize = sn.psize;
    for (unsigned i = 0; i < 2; i++) {
        unsigned char page[LM_SNAP_META];

        memcpy(page, sn.meta, sizeof(page));
        kv_put64(page, i);         /* mp_pgno: the slot it sits in */
        if (pwrite(dfd, page, sizeof(page), (off_t)i * sn.psize) !=
            (ssize_t)sizeof(page)) {
            persist_err(cfg, "%s: cannot restore the last synced state: "
                        "%s", b->data_path, strerror(errno));
            close(dfd);
            return STORE_EIO;
        }
    }
    if (fdatasync(dfd) != 0) {
        persist_err(cfg, "%s: cannot restore the last synced state: %s",
                    b->data_path, strerror(errno));
        close(dfd);
        return STORE_EIO;
    }
    close(dfd);
    atomic_store(&b->restored, 1);
    fprintf(stderr, "stashd: %s: the machine restarted while the store was "
            "open (power loss or crash): back to its last synced state "
            "(LMDB transaction %llu); writes after that sync are gone\n",
            b->data_path, (unsigned long long)sn.txnid);
    return STORE_OK;
}

/* Reads the meta page of snapshot txnid from the file; true when it is. */
static bool
read_meta(struct kv_be *b, uint64_t txnid, unsigned char *meta)
{
    off_t off = (off_t)(txnid & 1) * b->psize;

    return pread(b->data_fd, meta, LM_SNAP_META, off) ==
               (ssize_t)LM_SNAP_META &&
           kv_get32(meta + LM_META_MAGIC) == MDB_MAGIC &&
           kv_get32(meta + LM_META_VER) == 1 &&
           (kv_get32(meta + 8) >> 16 & P_META) != 0 &&
           kv_get64(meta + LM_META_TXNID) == txnid;
}

/* Pins the newest snapshot and copies its meta page. */
struct pin_try {
    struct kv_be *b;
    MDB_txn      *pin;
    uint64_t      txnid;
    unsigned char meta[LM_SNAP_META];
    int           rc;
};

static bool
pin_once(struct pin_try *pt)
{
    pt->rc = mdb_txn_begin(pt->b->env, NULL, MDB_RDONLY, &pt->pin);
    if (pt->rc != 0) {
        pt->pin = NULL;
        return false;
    }
    pt->txnid = mdb_txn_id(pt->pin);
    if (read_meta(pt->b, pt->txnid, pt->meta)) {
        return true;
    }
    /* Two commits since the pin rewrote that meta page: try again. */
    mdb_txn_abort(pt->pin);
    pt->pin = NULL;
    pt->rc = EAGAIN;
    return false;
}

static void
pin_exclusive(void *arg)
{
    (void)pin_once(arg);
}

/* Writes slot sn (seq picks which) and makes it durable; 0 or errno. */
static int
snap_write(struct kv_be *b, struct snap *sn)
{
    unsigned char buf[LM_SNAP_SLOT];

    sn->seq = ++b->snap_seq;
    snap_encode(buf, sn);
    if (pwrite(b->snap_fd, buf, sizeof(buf),
               (off_t)(sn->seq & 1) * LM_SNAP_SLOT) != (ssize_t)sizeof(buf)) {
        return errno != 0 ? errno : EIO;
    }
    return fdatasync(b->snap_fd) == 0 ? 0 : errno;
}

/* One round of the scheme at the top of the file; 0 or an errno. */
static int
snap_sync(struct kv_be *b, bool clean)
{
    struct pin_try pt;
    struct snap sn;
    int rc;

    memset(&pt, 0, sizeof(pt));
    pt.b = b;
    for (int i = 0; i < SNAP_TRIES && !pin_once(&pt); i++) {
        if (pt.rc != EAGAIN) {
            return pt.rc;
        }
    }
    if (pt.pin == NULL) {
        /* Commits keep racing us: read it with the writers held. */
        b->host->exclusive(b->host->s, pin_exclusive, &pt);
        if (pt.pin == NULL) {
            return pt.rc != 0 ? pt.rc : EIO;
        }
    }
    rc = mdb_env_sync(b->env, 1);
    if (rc == 0) {
        memset(&sn, 0, sizeof(sn));
        sn.flags = clean ? SNAP_CLEAN : 0;
        sn.txnid = pt.txnid;
        sn.psize = b->psize;
        memcpy(sn.boot, b->boot_id, sizeof(sn.boot));
        memcpy(sn.meta, pt.meta, sizeof(sn.meta));
        rc = snap_write(b, &sn);
    }
    if (rc != 0) {
        mdb_txn_abort(pt.pin);
        return rc;
    }
    if (b->pin != NULL) {
        mdb_txn_abort(b->pin);
    }
    b->pin = pt.pin;
    atomic_store(&b->snap_txnid, pt.txnid);
    return 0;
}

int
lm_sync(struct kv_be *b)
{
    if (!b->snapshots) {
        return mdb_env_sync(b->env, 1);
    }
    return snap_sync(b, false);
}

store_rc_e
lm_snap_start(const struct store_cfg *cfg, struct kv_be *b)
{
    unsigned char meta[LM_SNAP_META];
    MDB_envinfo info;
    struct snap sn;
    bool fresh;
    int rc;

    boot_id(cfg, b->boot_id, sizeof(b->boot_id));
    b->data_fd = open(b->data_path, O_RDONLY | O_CLOEXEC);
    if (b->data_fd < 0 || mdb_env_info(b->env, &info) != 0) {
        persist_err(cfg, "%s: %s", b->data_path, strerror(errno));
        return STORE_EIO;
    }
    b->snapshots = sizeof(void *) == 8 && b->psize >= LM_SNAP_META &&
                   read_meta(b, info.me_last_txnid, meta);
    if (!b->snapshots) {
        /* Not the layout the scheme knows: LMDB's own ordered sync. */
        fprintf(stderr, "stashd: %s: unexpected LMDB meta page layout; "
                "every commit syncs its data first (MDB_NOMETASYNC)\n",
                b->data_path);
        if ((rc = mdb_env_set_flags(b->env, MDB_NOSYNC, 0)) != 0 ||
            (rc = mdb_env_set_flags(b->env, MDB_NOMETASYNC, 1)) != 0 ||
            (rc = mdb_env_sync(b->env, 1)) != 0) {
            persist_err(cfg, "%s: %s", b->data_path, mdb_strerror(rc));
            return STORE_EIO;
        }
        return STORE_OK;
    }
    fresh = access(b->snap_path, F_OK) != 0;
    b->snap_fd = open(b->snap_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (b->snap_fd < 0) {
        persist_err(cfg, "%s: %s", b->snap_path, strerror(errno));
        return errno == ENOSPC ? STORE_ENOMEM : STORE_EIO;
    }
    if (snap_best(b->snap_fd, &sn)) {
        b->snap_seq = sn.seq;
    }
    /* From now on the store is open: a snapshot that says so. */
    rc = snap_sync(b, false);
    if (rc == 0 && fresh) {
        int dfd = open(b->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (dfd < 0 || fsync(dfd) != 0) {
            rc = errno;
        }
        if (dfd >= 0) {
            close(dfd);
        }
    }
    if (rc != 0) {
        persist_err(cfg, "%s: cannot make the store durable: %s",
                    b->snap_path, rc > 0 ? strerror(rc) : mdb_strerror(rc));
        return rc == ENOSPC ? STORE_ENOMEM : STORE_EIO;
    }
    return STORE_OK;
}

void
lm_snap_close(struct kv_be *b, bool clean)
{
    if (b->env == NULL) {
        return;
    }
    if (!b->snapshots) {
        (void)mdb_env_sync(b->env, 1);
    } else if (b->snap_fd >= 0) {
        /* A failed write may have lost pages: then not "clean", so that
         * a restart after a power loss still falls back. */
        (void)snap_sync(b, clean);
    }
    if (b->pin != NULL) {
        mdb_txn_abort(b->pin);
        b->pin = NULL;
    }
}
