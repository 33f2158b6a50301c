/*
 * What every persistent backend promises, through storage.h, each test run
 * against every one this build has (a loop test over the table below):
 * data, CAS and flush state survive close, reopen and a crash, with exact
 * counts; a data directory is locked against a second opener; a foreign,
 * damaged or truncated file, or the other backend's directory, is refused
 * naming the file and left as it was; a record damaged on disk is never
 * served and is removed; a missing directory is created; -m is enforced by
 * evicting (or by ENOMEM with -M); the sweeper reclaims expired and
 * flushed items; --sync=always completes writes through the wait struct
 * exactly once, concurrent writers share fsyncs, and a failed fsync fails
 * the writes waiting on it and every later one while reads go on; a file
 * size limit is an error reply. What only one backend promises is in
 * check_store_lmdb.c and check_store_sqlite.c. Every test works in its own
 * mkdtemp directory and removes it.
 */
#include "tests/fault_util.h"
#include "tests/persist_util.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* A persistent backend and what a test needs to know of its files. */
struct backend {
    const struct store_ops *ops;
    const char             *file;          /* its main file */
    const struct store_ops *other;         /* the other persistent backend,
                                            * NULL when not built */
    const char             *other_file;    /* ... and its main file */
    const char             *garbage_why;   /* its refusal of random bytes */
    const char             *truncated_why; /* ... of a file cut short */
};

#ifdef STASHD_HAVE_LMDB
#define LMDB_OPS (&store_lmdb_ops)
#else
#define LMDB_OPS NULL
#endif
#ifdef STASHD_HAVE_SQLITE
#define SQLITE_OPS (&store_sqlite_ops)
#else
#define SQLITE_OPS NULL
#endif

static const struct backend backends[] = {
#ifdef STASHD_HAVE_LMDB
    { &store_lmdb_ops, "data.mdb", SQLITE_OPS, "stashd.db",
      "not an LMDB file", "truncated" },
#endif
#ifdef STASHD_HAVE_SQLITE
    { &store_sqlite_ops, "stashd.db", LMDB_OPS, "data.mdb",
      "not an SQLite database", "refusing to touch it" },
#endif
    { NULL, NULL, NULL, NULL, NULL, NULL }
};

#define NBACKENDS ((int)(sizeof(backends) / sizeof(backends[0])) - 1)

/* ------------------------------------------------ failing the disk sync */

/*
 * This program's own fsync and fdatasync stand before libc's for the
 * engine, liblmdb and libsqlite3 alike: while fail_syncs is set, a sync
 * of a file under fail_dir fails with EIO, as a disk that lost a write
 * does. Slowly, so that the writes it covers are already waiting on it.
 */
static _Atomic bool fail_syncs;
static char fail_dir[80];
static _Atomic int failed_syncs;

static bool
sync_fails(int fd)
{
    if (!atomic_load(&fail_syncs) || !fault_fd_under(fd, fail_dir)) {
        return false;
    }
    atomic_fetch_add(&failed_syncs, 1);
    pt_sleep_ms(20);
    return true;
}

FAULT_SYNC_INTERPOSERS(sync_fails)

/* ------------------------------------------------------- the test cases */

START_TEST(persists_across_reopen)
{
    struct pt *t = pt_new(backends[_i].ops);
    uint32_t now = t->cfg.now;
    uint64_t cas[100];
    struct store_item it;
    char buf[256];
    char key[32];
    char val[64];

    pt_open(t);
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "key:%d", i);
        snprintf(val, sizeof(val), "value-%d", i * 31);
        ck_assert_int_eq(pt_put(t, key, val, strlen(val), 0xf0000000u + i,
                                i % 3 == 0 ? 0 : now + 1000 + i, &cas[i]),
                         STORE_OK);
    }
    /* A value with every byte, and one that is empty. */
    for (int i = 0; i < 256; i++) {
        buf[i] = (char)i;
    }
    ck_assert_int_eq(pt_put(t, "bin", buf, 256, 7, 0, NULL), STORE_OK);
    ck_assert_int_eq(pt_put(t, "empty", "", 0, 8, 0, NULL), STORE_OK);
    pt_close(t);

    t->cfg.now = now + 10;
    pt_open(t);
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "key:%d", i);
        snprintf(val, sizeof(val), "value-%d", i * 31);
        ck_assert_int_eq(pt_get(t, key, &it), STORE_OK);
        ck_assert_str_eq(t->val, val);
        ck_assert_uint_eq(it.flags, 0xf0000000u + i);
        ck_assert_uint_eq(it.exptime, i % 3 == 0 ? 0 : now + 1000 + i);
        ck_assert_uint_eq(it.cas, cas[i]);
    }
    ck_assert_int_eq(pt_get(t, "bin", &it), STORE_OK);
    ck_assert_uint_eq(it.len, 256);
    for (int i = 0; i < 256; i++) {
        ck_assert_int_eq((unsigned char)t->val[i], i);
    }
    ck_assert_int_eq(pt_get(t, "empty", &it), STORE_OK);
    ck_assert_uint_eq(it.len, 0);
    ck_assert_uint_eq(it.flags, 8);
    /* An exptime that passed while the store was closed is honoured. */
    t->c.now = now + 1050;
    ck_assert_int_eq(pt_get(t, "key:1", &it), STORE_ENOENT);
    ck_assert_int_eq(pt_get(t, "key:99", &it), STORE_OK);
    /* Without a sink the value comes in a pin that release frees. */
    {
        struct store_key k = { "key:99", 6 };

        t->c.sink = NULL;
        ck_assert_int_eq(t->ops->get(t->thr, &t->c, &k, NULL, &it),
                         STORE_OK);
        ck_assert_ptr_nonnull(it.pin);
        ck_assert(memcmp(it.data, "value-3069", 10) == 0);
        t->ops->release(t->thr, &it);
        ck_assert_ptr_null(it.pin);
        t->c.sink = &t->sink.base;
    }
    pt_close(t);
    pt_free(t);
}
END_TEST

START_TEST(cas_after_reopen_is_larger)
{
    struct pt *t = pt_new(backends[_i].ops);
    uint64_t maxcas = 0;
    uint64_t cas = 0;
    char key[32];

    for (int round = 0; round < 3; round++) {
        pt_open(t);
        for (int i = 0; i < 50; i++) {
            snprintf(key, sizeof(key), "k%d", i % 7);
            ck_assert_int_eq(pt_put(t, key, "v", 1, 0, 0, &cas), STORE_OK);
            ck_assert_uint_gt(cas, maxcas);
            maxcas = cas;
        }
        /* Deleting the item with the largest CAS must not lower it. */
        ck_assert_int_eq(pt_del(t, key), STORE_OK);
        pt_close(t);
    }
    pt_open(t);
    ck_assert_int_eq(pt_put(t, "new", "v", 1, 0, 0, &cas), STORE_OK);
    ck_assert_uint_gt(cas, maxcas);
    pt_close(t);
    pt_free(t);
}
END_TEST

/*
 * Writes 300 items, deletes the newest, sends the last CAS, and dies
 * without closing: as kill -9, the files are left as they are.
 */
static int
crash_child(struct pt *t, int fd)
{
    uint64_t cas = 0;
    char key[32];
    char val[100];

    if (pt_open_rc(t) != STORE_OK) {
        return 10;
    }
    memset(val, 'c', sizeof(val));
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof(key), "c%03d", i);
        if (pt_put(t, key, val, (size_t)(i % 100), 0, 0, &cas) !=
            STORE_OK) {
            return 11;
        }
    }
    if (pt_del(t, "c299") != STORE_OK ||
        write(fd, &cas, sizeof(cas)) != (ssize_t)sizeof(cas)) {
        return 12;
    }
    return 0;
}

/*
 * After a crash the store opens with exact counts (however the backend
 * gets them: sqlite counts again, lmdb's are in every commit) and hands
 * out CAS values above every one handed out before, the deleted item's
 * too.
 */
START_TEST(crash_keeps_counts_and_cas_growing)
{
    struct pt *t = pt_new(backends[_i].ops);
    struct store_stats st;
    uint64_t maxcas = 0;
    uint64_t cas = 0;
    uint64_t bytes = 0;

    pt_in_child(t, crash_child, &maxcas, sizeof(maxcas));
    pt_open(t);
    for (int i = 0; i < 299; i++) {
        bytes += 48 + 4 + (uint64_t)(i % 100);
    }
    t->ops->stats(t->thr, &st);
    ck_assert_uint_eq(st.curr_items, 299);
    ck_assert_uint_eq(st.bytes, bytes);
    ck_assert_int_eq(pt_get(t, "c298", NULL), STORE_OK);
    ck_assert_int_eq(pt_get(t, "c299", NULL), STORE_ENOENT);
    ck_assert_int_eq(pt_put(t, "after", "v", 1, 0, 0, &cas), STORE_OK);
    ck_assert_uint_gt(cas, maxcas);
    pt_close(t);
    pt_free(t);
}
END_TEST

START_TEST(flush_survives_reopen)
{
    struct pt *t = pt_new(backends[_i].ops);
    uint32_t now = t->cfg.now;

    pt_open(t);
    pt_set(t, "old", "v");
    ck_assert_int_eq(t->ops->flush(t->thr, &t->c, now), STORE_OK);
    pt_set(t, "after", "v");
    /* A delayed flush: items stored before now + 100 die at now + 100. */
    ck_assert_int_eq(t->ops->flush(t->thr, &t->c, now + 100), STORE_OK);
    pt_close(t);

    t->cfg.now = now + 50;
    pt_open(t);
    ck_assert_int_eq(pt_get(t, "old", NULL), STORE_ENOENT);
    ck_assert_int_eq(pt_get(t, "after", NULL), STORE_OK);
    pt_set(t, "middle", "v");
    pt_close(t);

    t->cfg.now = now + 100;
    pt_open(t);
    ck_assert_int_eq(pt_get(t, "after", NULL), STORE_ENOENT);
    ck_assert_int_eq(pt_get(t, "middle", NULL), STORE_ENOENT);
    pt_set(t, "late", "v");
    t->c.now = now + 200;
    ck_assert_int_eq(pt_get(t, "late", NULL), STORE_OK);
    pt_close(t);
    pt_free(t);
}
END_TEST

/* A second handle on t's directory, to be freed with free() alone. */
static struct pt *
twin(struct pt *t, const struct store_ops *ops)
{
    struct pt *u = calloc(1, sizeof(*u));

    ck_assert_ptr_nonnull(u);
    u->ops = ops;
    memcpy(u->dir, t->dir, sizeof(u->dir));
    pt_cfg(u, u->dir);
    conf_sink_init(&u->sink);
    return u;
}

/* Opens t, which another process holds: 0 when refused as it should. */
static int
locked_child(struct pt *t, int fd)
{
    store_rc_e rc = pt_open_rc(t);

    (void)fd;
    return rc == STORE_ELOCKED ? 0 : 10 + (int)rc;
}

START_TEST(locked_dir_refused)
{
    struct pt *t = pt_new(backends[_i].ops);
    struct pt *u = twin(t, t->ops);

    pt_open(t);
    pt_set(t, "k", "v");
    /* A second open in this process. */
    ck_assert_int_eq(pt_open_rc(u), STORE_ELOCKED);
    ck_assert_ptr_null(u->s);
    ck_assert_msg(strstr(u->err, "stashd.lock") != NULL, "%s", u->err);
    ck_assert_msg(strstr(u->err, "pid") != NULL, "%s", u->err);
    /* Another process. */
    pt_in_child(u, locked_child, NULL, 0);
    /* The holder is unaffected; once it closes, the next open works. */
    ck_assert_int_eq(pt_get(t, "k", NULL), STORE_OK);
    pt_close(t);
    pt_open(u);
    ck_assert_int_eq(pt_get(u, "k", NULL), STORE_OK);
    pt_close(u);
    free(u);
    pt_free(t);
}
END_TEST

START_TEST(garbage_file_refused_untouched)
{
    const struct backend *be = &backends[_i];
    struct pt *t = pt_new(be->ops);
    char path[128];

    pt_garbage_file(pt_path(t, be->file, path, sizeof(path)),
                    3 * 4096 + 123);
    pt_expect_refused(t, STORE_ECORRUPT, path, be->garbage_why);
    pt_free(t);
}
END_TEST

START_TEST(truncated_file_refused)
{
    const struct backend *be = &backends[_i];
    struct pt *t = pt_new(be->ops);
    char path[128];
    char val[3000];
    struct stat st;

    memset(val, 'q', sizeof(val));
    pt_open(t);
    pt_fill(t, "k%d", 200, val, sizeof(val));
    pt_close(t);
    pt_path(t, be->file, path, sizeof(path));
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(truncate(path, st.st_size / 2), 0);
    pt_expect_refused(t, STORE_ECORRUPT, path, be->truncated_why);
    pt_free(t);
}
END_TEST

/*
 * Each backend refuses the other's data directory, naming the file it
 * found, creates nothing of its own there, and leaves the other's store
 * as it was: the other still opens it and finds its data.
 */
START_TEST(other_backend_dir_refused)
{
    const struct backend *be = &backends[_i];
    struct pt *t = pt_new(be->ops);
    char other[128];
    char mine[128];

    pt_path(t, be->other_file, other, sizeof(other));
    if (be->other != NULL) {
        struct pt *u = twin(t, be->other);

        pt_open(u);
        pt_set(u, "theirs", "v");
        pt_close(u);
        free(u);
    } else {
        /* Only this backend is built: the file's name is what counts. */
        pt_garbage_file(other, 100);
    }
    pt_expect_refused(t, STORE_ECORRUPT, other, "will not mix");
    ck_assert_msg(access(pt_path(t, be->file, mine, sizeof(mine)), F_OK) !=
                  0, "%s was made", mine);
    if (be->other != NULL) {
        struct pt *u = twin(t, be->other);

        pt_open(u);
        ck_assert_int_eq(pt_get(u, "theirs", NULL), STORE_OK);
        pt_close(u);
        free(u);
    }
    pt_free(t);
}
END_TEST

START_TEST(missing_dir_created)
{
    const struct backend *be = &backends[_i];
    struct pt *t = pt_new(be->ops);
    char dir[128];
    struct stat st;

    snprintf(dir, sizeof(dir), "%s/a/b/data", t->dir);
    pt_cfg(t, dir);
    pt_open(t);
    ck_assert_int_eq(stat(dir, &st), 0);
    ck_assert(S_ISDIR(st.st_mode));
    ck_assert_int_eq(st.st_mode & 0777, 0700);
    pt_set(t, "k", "v");
    pt_close(t);
    pt_open(t);
    ck_assert_int_eq(pt_get(t, "k", NULL), STORE_OK);
    pt_close(t);
    /* A data dir that is a file is refused with its name. */
    snprintf(dir, sizeof(dir), "%s/a/b/data/%s", t->dir, be->file);
    pt_cfg(t, dir);
    ck_assert_int_ne(pt_open_rc(t), STORE_OK);
    ck_assert_msg(strstr(t->err, be->file) != NULL, "%s", t->err);
    pt_free(t);
}
END_TEST

/*
 * A record whose value was damaged on disk (one byte flipped while the
 * store was closed) is never served: a miss, counted, and removed by the
 * maintenance thread, while every other record is served as written.
 */
START_TEST(damaged_record_never_served)
{
    static const char mark[] = "victim:a value no other record holds:";
    enum { MARK_LEN = sizeof(mark) - 1 };
    const struct backend *be = &backends[_i];
    struct pt *t = pt_new(be->ops);
    unsigned char *file;
    char path[128];
    char val[128];
    char key[32];
    size_t len;
    int hits = 0;

    pt_open(t);
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof(key), "k%02d", i);
        snprintf(val, sizeof(val), "plain value %02d", i);
        pt_set(t, key, val);
    }
    snprintf(val, sizeof(val), "%s%s", mark, "0123456789abcdef");
    pt_set(t, "victim", val);
    pt_close(t);

    /*
     * Every copy of the value (copy-on-write and freed pages keep old
     * ones): whichever the store reads is then damaged.
     */
    file = pt_slurp(pt_path(t, be->file, path, sizeof(path)), &len);
    for (unsigned char *p = file;
         (p = memmem(p, (size_t)(file + len - p), mark, MARK_LEN)) != NULL;
         p += MARK_LEN) {
        p[MARK_LEN + 4] ^= 0x01;
        pt_write_at(path, (long)(p - file) + MARK_LEN + 4, &p[MARK_LEN + 4],
                    1);
        hits++;
    }
    free(file);
    ck_assert_msg(hits > 0, "the value is not in %s", path);

    /* lmdb's start-up walk may find it first: then it is a miss as well. */
    pt_open(t);
    ck_assert_int_eq(pt_get(t, "victim", NULL), STORE_ENOENT);
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof(key), "k%02d", i);
        snprintf(val, sizeof(val), "plain value %02d", i);
        ck_assert_int_eq(pt_get(t, key, NULL), STORE_OK);
        ck_assert_str_eq(t->val, val);
    }
    ck_assert_uint_ge(pt_stat(t, "checksum_failures"), 1);
    ck_assert_uint_eq(pt_wait_items(t, 50, 3000), 50);
    ck_assert_uint_ge(pt_stat(t, "damaged_removed"), 1);
    ck_assert_int_eq(pt_get(t, "victim", NULL), STORE_ENOENT);
    /* The key is usable again. */
    pt_set(t, "victim", "new");
    ck_assert_int_eq(pt_get(t, "victim", NULL), STORE_OK);
    ck_assert_str_eq(t->val, "new");
    pt_close(t);
    pt_free(t);
}
END_TEST

START_TEST(limit_evicts_lru)
{
    struct pt *t = pt_new(backends[_i].ops);
    uint32_t now = t->cfg.now;
    struct store_stats st;
    char val[1000];
    char key[32];
    int read_alive = 0;
    int unread_alive = 0;

    memset(val, 'x', sizeof(val));
    t->cfg.mem_limit = 2 * MB;
    pt_open(t);
    /* ~0.9 of the limit in 1800 items. */
    pt_fill(t, "k%04d", 1800, val, sizeof(val));
    t->ops->stats(t->thr, &st);
    ck_assert_uint_eq(st.evictions, 0);
    /* Two minutes later, every tenth item is read: its recency refreshes. */
    t->c.now = now + 120;
    for (int i = 0; i < 1800; i += 10) {
        snprintf(key, sizeof(key), "k%04d", i);
        ck_assert_int_eq(pt_get(t, key, NULL), STORE_OK);
    }
    t->ops->idle(t->thr);
    /* The maintenance thread applies the readers' hints. */
    for (int i = 0; i < 500; i++) {
        if (pt_stat(t, "recency_refreshes") >= 180) {
            break;
        }
        pt_sleep_ms(10);
    }
    ck_assert_uint_eq(pt_stat(t, "recency_refreshes"), 180);
    /* Half the limit again in new items. */
    pt_fill(t, "n%04d", 1000, val, sizeof(val));
    t->ops->stats(t->thr, &st);
    ck_assert_uint_le(st.bytes, 2 * MB);
    ck_assert_uint_gt(st.evictions, 500);
    ck_assert_uint_eq(st.curr_items + st.evictions, 2800);
    for (int i = 0; i < 1800; i++) {
        snprintf(key, sizeof(key), "k%04d", i);
        if (pt_get(t, key, NULL) == STORE_OK) {
            if (i % 10 == 0) {
                read_alive++;
            } else {
                unread_alive++;
            }
        }
    }
    /* The read ones survive; the unread old ones went first. */
    ck_assert_int_ge(read_alive, 170);
    ck_assert_int_le(unread_alive, 1620 - 500);
    /* The newest items are all there. */
    for (int i = 990; i < 1000; i++) {
        snprintf(key, sizeof(key), "n%04d", i);
        ck_assert_int_eq(pt_get(t, key, NULL), STORE_OK);
    }
    pt_close(t);
    pt_free(t);
}
END_TEST

START_TEST(smaller_limit_after_reopen_trims)
{
    struct pt *t = pt_new(backends[_i].ops);
    struct store_stats st;
    char val[8000];

    /* 8 MB in few items: what is trimmed is the point, not commits. */
    memset(val, 'z', sizeof(val));
    t->cfg.mem_limit = 64 * MB;
    pt_open(t);
    pt_fill(t, "k%05d", 1000, val, sizeof(val));
    pt_close(t);
    /* Reopened with 1/8 of what it holds: trimmed in the background. */
    t->cfg.mem_limit = 1 * MB;
    pt_open(t);
    for (int i = 0; i < 200; i++) {
        t->ops->stats(t->thr, &st);
        if (st.bytes <= 1 * MB) {
            break;
        }
        pt_sleep_ms(20);
    }
    ck_assert_uint_le(st.bytes, 1 * MB);
    ck_assert_uint_gt(st.evictions, 750);
    /* And it takes writes. */
    ck_assert_int_eq(pt_put(t, "fresh", val, sizeof(val), 0, 0, NULL),
                     STORE_OK);
    ck_assert_int_eq(pt_get(t, "fresh", NULL), STORE_OK);
    pt_close(t);
    pt_free(t);
}
END_TEST

START_TEST(limit_no_evict_enomem)
{
    struct pt *t = pt_new(backends[_i].ops);
    struct store_stats st;
    char val[1000];
    char key[32];
    int stored = 0;
    store_rc_e rc = STORE_OK;

    memset(val, 'y', sizeof(val));
    t->cfg.mem_limit = 1 * MB;
    t->cfg.no_evict = true;
    pt_open(t);
    for (int i = 0; i < 5000 && rc == STORE_OK; i++) {
        snprintf(key, sizeof(key), "k%04d", i);
        rc = pt_put(t, key, val, sizeof(val), 0, 0, NULL);
        if (rc == STORE_OK) {
            stored++;
        }
    }
    ck_assert_int_eq(rc, STORE_ENOMEM);
    ck_assert_int_gt(stored, 800);
    t->ops->stats(t->thr, &st);
    ck_assert_uint_eq(st.evictions, 0);
    ck_assert_uint_le(st.bytes, 1 * MB);
    /* Reads go on; a delete makes room again. */
    ck_assert_int_eq(pt_get(t, "k0000", NULL), STORE_OK);
    ck_assert_int_eq(pt_del(t, "k0000"), STORE_OK);
    ck_assert_int_eq(pt_put(t, "again", val, sizeof(val), 0, 0, NULL),
                     STORE_OK);
    ck_assert_int_eq(pt_put(t, "more", val, sizeof(val), 0, 0, NULL),
                     STORE_ENOMEM);
    /* Dead items are reclaimed to make room even with -M. */
    ck_assert_int_eq(t->ops->flush(t->thr, &t->c, t->c.now), STORE_OK);
    ck_assert_int_eq(pt_put(t, "more", val, sizeof(val), 0, 0, NULL),
                     STORE_OK);
    t->ops->stats(t->thr, &st);
    ck_assert_uint_eq(st.evictions, 0);
    pt_close(t);
    pt_free(t);
}
END_TEST

START_TEST(sweeper_reclaims_expired)
{
    struct pt *t = pt_new(backends[_i].ops);
    uint32_t now = t->cfg.now;
    struct store_stats st;
    char key[32];

    pt_open(t);
    for (int i = 0; i < 3000; i++) {
        snprintf(key, sizeof(key), "x%d", i);
        ck_assert_int_eq(pt_put(t, key, "v", 1, 0, i < 2500 ? now + 2 : 0,
                                NULL), STORE_OK);
    }
    ck_assert_uint_eq(pt_items(t), 3000);
    /* Time moves on (told by a request); nobody reads the dead items. */
    t->c.now = now + 5;
    ck_assert_int_eq(pt_get(t, "x2999", NULL), STORE_OK);
    /* Then this thread waits, as an idle worker does: it lets go of its
     * read snapshot, which a checkpoint would otherwise wait for. */
    t->ops->idle(t->thr);
    ck_assert_uint_eq(pt_wait_items(t, 500, 5000), 500);
    t->ops->stats(t->thr, &st);
    ck_assert_uint_ge(st.reclaimed, 2500);
    ck_assert_uint_ge(st.expired_unfetched, 2500);
    /* Each live item counts 48 + key + value bytes. */
    ck_assert_uint_eq(st.bytes, 500 * (48 + 5 + 1));
    /* A flush_all is O(1); the sweeper then reclaims what it killed. */
    ck_assert_int_eq(t->ops->flush(t->thr, &t->c, t->c.now), STORE_OK);
    ck_assert_int_eq(pt_get(t, "x2999", NULL), STORE_ENOENT);
    ck_assert_uint_eq(pt_wait_items(t, 0, 5000), 0);
    t->ops->stats(t->thr, &st);
    ck_assert_uint_eq(st.bytes, 0);
    ck_assert_uint_ge(st.reclaimed, 3000);
    /* A delayed flush is reclaimed once its time has come. */
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof(key), "y%d", i);
        pt_set(t, key, "v");
    }
    ck_assert_int_eq(t->ops->flush(t->thr, &t->c, t->c.now + 2), STORE_OK);
    pt_sleep_ms(300);
    ck_assert_uint_eq(pt_items(t), 300);
    t->c.now += 3;
    ck_assert_int_eq(pt_get(t, "y0", NULL), STORE_ENOENT);
    t->ops->idle(t->thr);
    ck_assert_uint_eq(pt_wait_items(t, 0, 5000), 0);
    pt_close(t);
    pt_free(t);
}
END_TEST

/* A wait whose completions are counted and whose last rc is kept. */
struct twait {
    struct store_wait base;              /* first */
    _Atomic int       done;
    _Atomic int       rc;
    bool              want_ok;           /* anything else fails the test */
};

static void
twait_done(struct store_wait *w, store_rc_e rc)
{
    struct twait *tw = (struct twait *)(void *)w;

    if (tw->want_ok) {
        ck_assert_int_eq(rc, STORE_OK);
    }
    atomic_store(&tw->rc, (int)rc);
    atomic_fetch_add(&tw->done, 1);
}

static void
twait_init(struct twait *tw, bool want_ok)
{
    tw->base.done = twait_done;
    atomic_init(&tw->done, 0);
    atomic_init(&tw->rc, -1);
    tw->want_ok = want_ok;
}

/* Waits up to 2 s for n completions, then a little for any extra one. */
static int
twait_for(struct twait *tw, int n)
{
    for (int i = 0; i < 200 && atomic_load(&tw->done) < n; i++) {
        pt_sleep_ms(10);
    }
    pt_sleep_ms(50);
    return atomic_load(&tw->done);
}

/*
 * A SET of k to in with tw as the wait struct (its count at 0): it must
 * succeed, be left pending, and be completed exactly once.
 */
static void
set_completes_once(struct pt *t, struct twait *tw, const struct store_key *k,
                   const struct store_item *in)
{
    uint64_t cas = 0;

    t->c.wait = &tw->base;
    t->c.pending = false;
    ck_assert_int_eq(t->ops->store(t->thr, &t->c, STORE_SET, k, in, &cas),
                     STORE_OK);
    ck_assert(t->c.pending);
    ck_assert_int_eq(twait_for(tw, 1), 1);
}

START_TEST(sync_always_completes_once)
{
    struct pt *t = pt_new(backends[_i].ops);
    struct twait tw;
    struct store_key k = { "k", 1 };
    struct store_item in = { "v", 1, 0, 0, 0, NULL };
    uint64_t cas = 0;
    uint64_t syncs0;

    twait_init(&tw, true);
    t->cfg.sync = STORE_SYNC_ALWAYS;
    pt_open(t);
    syncs0 = pt_stat(t, "sync_count");
    set_completes_once(t, &tw, &k, &in);
    ck_assert_uint_gt(pt_stat(t, "sync_count"), syncs0);
    /* A write that changes nothing needs no sync: not pending. */
    t->c.pending = false;
    ck_assert_int_eq(t->ops->store(t->thr, &t->c, STORE_ADD, &k, &in, &cas),
                     STORE_NOT_STORED);
    ck_assert(!t->c.pending);
    /* Without a wait struct the call returns only once durable. */
    t->c.wait = NULL;
    syncs0 = pt_stat(t, "sync_count");
    ck_assert_int_eq(t->ops->store(t->thr, &t->c, STORE_SET, &k, &in, &cas),
                     STORE_OK);
    ck_assert(!t->c.pending);
    ck_assert_uint_gt(pt_stat(t, "sync_count"), syncs0);
    /* Every kind of write completes exactly once. */
    t->c.wait = &tw.base;
    atomic_store(&tw.done, 0);
    {
        struct store_delta d = { 1, 5, 0, 0, false, true };
        struct store_key n = { "n", 1 };
        uint64_t v = 0;
        int pending = 0;
        uint32_t exp = t->c.now + 100;
        struct store_item out;

        t->c.pending = false;
        ck_assert_int_eq(t->ops->arith(t->thr, &t->c, &n, &d, &v, &cas),
                         STORE_OK);
        pending += t->c.pending;
        t->c.pending = false;
        ck_assert_int_eq(t->ops->touch(t->thr, &t->c, &k, exp), STORE_OK);
        pending += t->c.pending;
        t->c.pending = false;
        ck_assert_int_eq(t->ops->get(t->thr, &t->c, &k, &exp, &out),
                         STORE_OK);
        t->ops->release(t->thr, &out);
        pending += t->c.pending;
        t->c.pending = false;
        ck_assert_int_eq(t->ops->del(t->thr, &t->c, &k, 0), STORE_OK);
        pending += t->c.pending;
        t->c.pending = false;
        ck_assert_int_eq(t->ops->flush(t->thr, &t->c, t->c.now), STORE_OK);
        pending += t->c.pending;
        ck_assert_int_ge(pending, 4);
        ck_assert_int_eq(twait_for(&tw, pending), pending);
    }
    pt_close(t);
    pt_free(t);
}
END_TEST

/*
 * A disk sync that fails: the write waiting on it is completed with
 * STORE_EIO (its reply must not say stored), or returns it when it waits
 * in the call; every later write fails too, reads go on, and the store
 * opens again afterwards.
 */
START_TEST(failed_sync_reported)
{
    struct pt *t = pt_new(backends[_i].ops);
    struct twait tw;
    struct store_key k = { "k", 1 };
    struct store_item in = { "v", 1, 0, 0, 0, NULL };
    struct store_delta d = { 1, 5, 0, 0, false, true };
    uint64_t cas = 0;
    uint64_t v = 0;

    twait_init(&tw, false);
    t->cfg.sync = STORE_SYNC_ALWAYS;
    pt_open(t);
    pt_set(t, "before", "v");
    ck_assert_uint_eq(pt_stat(t, "sync_errors"), 0);
    snprintf(fail_dir, sizeof(fail_dir), "%s/", t->dir);
    atomic_store(&fail_syncs, true);

    set_completes_once(t, &tw, &k, &in);
    ck_assert_int_eq(atomic_load(&tw.rc), STORE_EIO);
    ck_assert_int_gt(atomic_load(&failed_syncs), 0);
    /* Every later write fails at once, whether it would wait or not. */
    t->c.pending = false;
    ck_assert_int_eq(t->ops->store(t->thr, &t->c, STORE_SET, &k, &in, &cas),
                     STORE_EIO);
    ck_assert(!t->c.pending);
    t->c.wait = NULL;
    ck_assert_int_eq(pt_put(t, "after", "v", 1, 0, 0, NULL), STORE_EIO);
    ck_assert_int_eq(t->ops->arith(t->thr, &t->c, &(struct store_key){
                     "n", 1 }, &d, &v, &cas), STORE_EIO);
    ck_assert_int_eq(pt_del(t, "before"), STORE_EIO);
    ck_assert_int_eq(t->ops->touch(t->thr, &t->c, &k, 0), STORE_EIO);
    ck_assert_int_eq(t->ops->flush(t->thr, &t->c, t->c.now), STORE_EIO);
    /* Reads go on. */
    ck_assert_int_eq(pt_get(t, "before", NULL), STORE_OK);
    ck_assert_str_eq(t->val, "v");
    ck_assert_int_eq(pt_get(t, "after", NULL), STORE_ENOENT);
    ck_assert_uint_ge(pt_stat(t, "sync_errors"), 1);
    ck_assert_uint_eq(pt_stat(t, "write_failed"), 1);
    /* The disk is back: after a restart the store opens, with what was
     * durable before the failure. */
    atomic_store(&fail_syncs, false);
    pt_close(t);
    pt_open(t);
    ck_assert_int_eq(pt_get(t, "before", NULL), STORE_OK);
    ck_assert_uint_eq(pt_stat(t, "write_failed"), 0);
    /* A write that waits for its sync in the call fails the same way. */
    atomic_store(&fail_syncs, true);
    ck_assert_int_eq(pt_put(t, "blocking", "v", 1, 0, 0, NULL), STORE_EIO);
    ck_assert_int_eq(pt_put(t, "after", "v", 1, 0, 0, NULL), STORE_EIO);
    atomic_store(&fail_syncs, false);
    pt_close(t);
    /* And then it takes writes again. */
    pt_open(t);
    pt_set(t, "after", "v");
    ck_assert_int_eq(pt_get(t, "after", NULL), STORE_OK);
    pt_close(t);
    pt_free(t);
}
END_TEST

#define GC_THREADS 8
#define GC_WRITES  400

struct gc_arg {
    const struct store_ops *ops;
    struct store           *s;
    int                     id;
    struct twait            tw;
    int                     pending;
    bool                    failed;
};

static void *
gc_main(void *arg)
{
    struct gc_arg *a = arg;
    struct store_thr *thr = NULL;
    struct store_call c;
    char key[32];

    if (a->ops->attach(a->s, &thr) != STORE_OK) {
        a->failed = true;
        return NULL;
    }
    memset(&c, 0, sizeof(c));
    c.now = pt_now_s();
    c.wait = &a->tw.base;
    for (int i = 0; i < GC_WRITES; i++) {
        struct store_key k;
        struct store_item in = { "value", 5, 0, 0, 0, NULL };
        uint64_t cas;

        snprintf(key, sizeof(key), "t%d:%d", a->id, i);
        k.data = key;
        k.len = strlen(key);
        c.pending = false;
        if (a->ops->store(thr, &c, STORE_SET, &k, &in, &cas) != STORE_OK) {
            a->failed = true;
            break;
        }
        a->pending += c.pending;
        /* Like a server connection: a few writes in flight at a time. */
        if (i % 4 == 3) {
            while (atomic_load(&a->tw.done) < a->pending) {
                pt_sleep_ms(0);
            }
        }
    }
    while (atomic_load(&a->tw.done) < a->pending) {
        pt_sleep_ms(1);
    }
    a->ops->detach(&thr);
    return NULL;
}

START_TEST(group_commit_shares_fsyncs)
{
    struct pt *t = pt_new(backends[_i].ops);
    struct gc_arg a[GC_THREADS];
    pthread_t th[GC_THREADS];
    uint64_t syncs0;
    uint64_t syncs;
    int pending = 0;

    t->cfg.sync = STORE_SYNC_ALWAYS;
    pt_open(t);
    syncs0 = pt_stat(t, "sync_count");
    memset(a, 0, sizeof(a));
    for (int i = 0; i < GC_THREADS; i++) {
        a[i].ops = t->ops;
        a[i].s = t->s;
        a[i].id = i;
        twait_init(&a[i].tw, true);
        ck_assert_int_eq(pthread_create(&th[i], NULL, gc_main, &a[i]), 0);
    }
    for (int i = 0; i < GC_THREADS; i++) {
        pthread_join(th[i], NULL);
        ck_assert(!a[i].failed);
        ck_assert_int_eq(atomic_load(&a[i].tw.done), a[i].pending);
        pending += a[i].pending;
    }
    syncs = pt_stat(t, "sync_count") - syncs0;
    if (getenv("PERSIST_TEST_DEBUG") != NULL) {
        fprintf(stderr, "%s group commit: %d writes, %d pending, %llu "
                "syncs, %llu commits of %llu ops\n", t->ops->name,
                GC_THREADS * GC_WRITES, pending, (unsigned long long)syncs,
                (unsigned long long)pt_stat(t, "commits"),
                (unsigned long long)pt_stat(t, "commit_ops"));
    }
    /* Every write waited for an fsync, and they shared them. */
    ck_assert_int_gt(pending, GC_THREADS * GC_WRITES / 2);
    ck_assert_msg(syncs * 4 < (uint64_t)GC_THREADS * GC_WRITES,
                  "%llu syncs for %d writes", (unsigned long long)syncs,
                  GC_THREADS * GC_WRITES);
    ck_assert_uint_gt(pt_stat(t, "commit_ops"), pt_stat(t, "commits"));
    pt_close(t);
    pt_free(t);
}
END_TEST

/* The engine's lines; check_store_<backend>.c checks the adapter's. */
START_TEST(stats_lines)
{
    struct pt *t = pt_new(backends[_i].ops);
    const char *name = t->ops->name;
    struct pt_lines l;
    char want[64];

    t->cfg.sync = STORE_SYNC_PERIODIC;
    t->cfg.sync_interval_ms = 20;
    pt_open(t);
    pt_set(t, "k", "v");
    for (int i = 0; i < 100 && pt_stat(t, "sync_count") == 0; i++) {
        pt_sleep_ms(10);
    }
    ck_assert_uint_ge(pt_stat(t, "sync_count"), 1);
    ck_assert_uint_gt(pt_stat(t, "last_sync"), 0);
    /* The longest sync is part of the total; none runs for long. */
    ck_assert_uint_le(pt_stat(t, "sync_max_usec"), pt_stat(t, "sync_usec"));
    ck_assert_uint_lt(pt_stat(t, "sync_running_usec"), 10u * 1000 * 1000);
    ck_assert_uint_eq(pt_stat(t, "items"), 1);
    pt_general(t, &l);
    snprintf(want, sizeof(want), "%.40s_sync periodic\n", name);
    ck_assert_msg(strstr(l.text, want) != NULL, "%s", l.text);
    for (const char *p = l.text; *p != '\0'; p = strchr(p, '\n') + 1) {
        ck_assert_msg(strncmp(p, name, strlen(name)) == 0 &&
                      p[strlen(name)] == '_', "unprefixed: %s", p);
    }
    memset(&l, 0, sizeof(l));
    ck_assert_int_eq(t->ops->stats_group(t->thr, "items", pt_collect, &l),
                     STORE_OK);
    ck_assert_int_eq(t->ops->stats_group(t->thr, "slabs", pt_collect, &l),
                     STORE_OK);
    ck_assert_uint_eq(l.len, 0);
    ck_assert_int_eq(t->ops->stats_group(t->thr, "sizes", pt_collect, &l),
                     STORE_OK);
    ck_assert_str_eq(l.text, "sizes_status disabled\n");
    ck_assert_int_eq(t->ops->stats_group(t->thr, "nope", pt_collect, &l),
                     STORE_ENOENT);
    pt_close(t);
    pt_free(t);
}
END_TEST

START_TEST(bad_config_refused)
{
    struct pt *t = pt_new(backends[_i].ops);

    t->cfg.data_dir = NULL;
    ck_assert_int_eq(pt_open_rc(t), STORE_EINVAL);
    ck_assert_msg(strstr(t->err, "data-dir") != NULL, "%s", t->err);
    pt_cfg(t, t->dir);
    t->cfg.item_max = 100;
    ck_assert_int_eq(pt_open_rc(t), STORE_EINVAL);
    ck_assert_msg(strstr(t->err, "item size") != NULL, "%s", t->err);
    pt_cfg(t, t->dir);
    t->cfg.sync = (store_sync_e)7;
    ck_assert_int_eq(pt_open_rc(t), STORE_EINVAL);
    ck_assert_msg(strstr(t->err, "sync") != NULL, "%s", t->err);
    pt_free(t);
}
END_TEST

/*
 * In a child whose files may not grow past a few MB (RLIMIT_FSIZE: writes
 * beyond fail with EFBIG, as a full disk fails them with ENOSPC): writes
 * turn into errors, never a crash, and reads keep working. Exit status 0
 * when all went as it should; 1x = which expectation failed.
 */
static int
fsize_child(struct pt *t, int fd)
{
    struct rlimit rl = { 6 * MB, 6 * MB };
    char val[4000];
    char key[32];
    store_rc_e rc = STORE_OK;
    int stored = 0;

    (void)fd;
    signal(SIGXFSZ, SIG_IGN);
    memset(val, 'f', sizeof(val));
    t->cfg.mem_limit = 256 * MB;
    if (pt_open_rc(t) != STORE_OK) {
        return 10;
    }
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0) {
        return 11;
    }
    for (int i = 0; i < 20000 && rc == STORE_OK; i++) {
        snprintf(key, sizeof(key), "f%05d", i);
        rc = pt_put(t, key, val, sizeof(val), 0, 0, NULL);
        stored += rc == STORE_OK;
    }
    if (rc != STORE_EIO && rc != STORE_ENOMEM) {
        return 12;
    }
    if (stored < 100) {
        return 13;
    }
    if (pt_get(t, "f00000", NULL) != STORE_OK ||
        pt_get(t, "f00099", NULL) != STORE_OK) {
        return 14;
    }
    if (pt_stat(t, "io_errors") + pt_stat(t, "full") == 0) {
        return 15;
    }
    pt_close(t);
    return 0;
}

START_TEST(file_size_limit_is_an_error_reply)
{
    struct pt *t = pt_new(backends[_i].ops);
    struct store_item it;

    pt_in_child(t, fsize_child, NULL, 0);
    /* What was acknowledged is there afterwards, and the store opens. */
    t->cfg.mem_limit = 256 * MB;
    pt_open(t);
    ck_assert_int_eq(pt_get(t, "f00000", &it), STORE_OK);
    ck_assert_uint_eq(it.len, 4000);
    pt_close(t);
    pt_free(t);
}
END_TEST

/*
 * A thread's gets may share a read snapshot (sqlite keeps one between
 * calls); every commit made since, by any thread, is still seen by its
 * next get, and a write or idle ends it.
 */
START_TEST(snapshot_sees_every_commit)
{
    struct pt *t = pt_new(backends[_i].ops);
    struct store_thr *b = NULL;
    struct store_key k = { "k", 1 };
    struct store_item in = { "v2", 2, 0, 0, 0, NULL };
    struct store_item it;
    uint64_t cas = 0;

    pt_open(t);
    ck_assert_int_eq(t->ops->attach(t->s, &b), STORE_OK);
    pt_set(t, "k", "v1");
    ck_assert_int_eq(pt_get(t, "k", NULL), STORE_OK);
    ck_assert_str_eq(t->val, "v1");
    ck_assert_int_eq(pt_get(t, "k", NULL), STORE_OK);
    /* Another thread commits while this one's snapshot is open. */
    ck_assert_int_eq(t->ops->store(b, &t->c, STORE_SET, &k, &in, &cas),
                     STORE_OK);
    ck_assert_int_eq(pt_get(t, "k", &it), STORE_OK);
    ck_assert_str_eq(t->val, "v2");
    ck_assert_uint_eq(it.cas, cas);
    ck_assert_int_eq(t->ops->del(b, &t->c, &k, 0), STORE_OK);
    ck_assert_int_eq(pt_get(t, "k", NULL), STORE_ENOENT);
    /* Its own write, then a get: read-your-writes. */
    pt_set(t, "k", "v3");
    ck_assert_int_eq(pt_get(t, "k", NULL), STORE_OK);
    ck_assert_str_eq(t->val, "v3");
    t->ops->idle(t->thr);
    t->ops->idle(t->thr);           /* idle twice is harmless */
    ck_assert_int_eq(pt_get(t, "k", NULL), STORE_OK);
    ck_assert_str_eq(t->val, "v3");
    /* A flush by the other thread hides everything from this one's next
     * get, snapshot or not. */
    ck_assert_int_eq(t->ops->flush(b, &t->c, t->c.now), STORE_OK);
    ck_assert_int_eq(pt_get(t, "k", NULL), STORE_ENOENT);
    t->ops->detach(&b);
    pt_close(t);
    pt_free(t);
}
END_TEST

static Suite *
persist_suite(void)
{
    Suite *s = suite_create("store_persist");
    TCase *tc = tcase_create("persist");

    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, persists_across_reopen, 0, NBACKENDS);
    tcase_add_loop_test(tc, cas_after_reopen_is_larger, 0, NBACKENDS);
    tcase_add_loop_test(tc, crash_keeps_counts_and_cas_growing, 0,
                        NBACKENDS);
    tcase_add_loop_test(tc, flush_survives_reopen, 0, NBACKENDS);
    tcase_add_loop_test(tc, locked_dir_refused, 0, NBACKENDS);
    tcase_add_loop_test(tc, garbage_file_refused_untouched, 0, NBACKENDS);
    tcase_add_loop_test(tc, truncated_file_refused, 0, NBACKENDS);
    tcase_add_loop_test(tc, other_backend_dir_refused, 0, NBACKENDS);
    tcase_add_loop_test(tc, missing_dir_created, 0, NBACKENDS);
    tcase_add_loop_test(tc, damaged_record_never_served, 0, NBACKENDS);
    tcase_add_loop_test(tc, limit_evicts_lru, 0, NBACKENDS);
    tcase_add_loop_test(tc, smaller_limit_after_reopen_trims, 0, NBACKENDS);
    tcase_add_loop_test(tc, limit_no_evict_enomem, 0, NBACKENDS);
    tcase_add_loop_test(tc, sweeper_reclaims_expired, 0, NBACKENDS);
    tcase_add_loop_test(tc, sync_always_completes_once, 0, NBACKENDS);
    tcase_add_loop_test(tc, failed_sync_reported, 0, NBACKENDS);
    tcase_add_loop_test(tc, group_commit_shares_fsyncs, 0, NBACKENDS);
    tcase_add_loop_test(tc, stats_lines, 0, NBACKENDS);
    tcase_add_loop_test(tc, bad_config_refused, 0, NBACKENDS);
    tcase_add_loop_test(tc, file_size_limit_is_an_error_reply, 0,
                        NBACKENDS);
    tcase_add_loop_test(tc, snapshot_sees_every_commit, 0, NBACKENDS);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(persist_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
