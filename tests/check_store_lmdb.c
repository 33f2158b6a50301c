/*
 * Tests of what only the lmdb backend promises, through storage.h (and
 * liblmdb, to make another program's environment): another program's
 * LMDB environment is refused and left untouched; a page of data.mdb
 * damaged on disk makes open refuse the store, never crash; after a power
 * loss (the machine's boot id changed while the store was open) it opens
 * at its last synced state, while after a process crash it keeps every
 * commit; its own stats lines. What every persistent backend promises is
 * in check_store_persist.c. Every test works in its own mkdtemp directory
 * and removes it.
 */
#include "tests/persist_util.h"

#include <check.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const struct store_ops *const ops = &store_lmdb_ops;

START_TEST(foreign_lmdb_refused_untouched)
{
    struct pt *t = pt_new(ops);
    char path[128];
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k = { 5, "hello" };
    MDB_val v = { 5, "world" };

    /* Another program's LMDB environment in the directory. */
    ck_assert_int_eq(mdb_env_create(&env), 0);
    ck_assert_int_eq(mdb_env_open(env, t->dir, 0, 0600), 0);
    ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    ck_assert_int_eq(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
    ck_assert_int_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
    ck_assert_int_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    pt_path(t, "data.mdb", path, sizeof(path));
    pt_expect_refused(t, STORE_ECORRUPT, path, "not a stashd store");

    /* A stashd-looking record with a bad magic is refused too. */
    ck_assert_int_eq(mdb_env_create(&env), 0);
    ck_assert_int_eq(mdb_env_open(env, t->dir, 0, 0600), 0);
    ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    ck_assert_int_eq(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
    k.mv_data = "stashd";
    k.mv_size = 6;
    ck_assert_int_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
    ck_assert_int_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    pt_expect_refused(t, STORE_ECORRUPT, path, "bad metadata");
    pt_free(t);
}
END_TEST

/* Opens t; sends the rc and t->err through fd. */
static int
open_child(struct pt *t, int fd)
{
    store_rc_e rc = pt_open_rc(t);

    if (write(fd, &rc, sizeof(rc)) != (ssize_t)sizeof(rc) ||
        write(fd, t->err, sizeof(t->err)) != (ssize_t)sizeof(t->err)) {
        return 20;
    }
    if (rc == STORE_OK) {
        pt_close(t);
    }
    return 0;
}

/* pt_open_rc in a child that must not die of it; fills t->err. */
static store_rc_e
open_in_child(struct pt *t)
{
    struct {
        store_rc_e rc;
        char       err[sizeof(t->err)];
    } got;

    pt_in_child(t, open_child, &got, sizeof(got.rc) + sizeof(got.err));
    memcpy(t->err, got.err, sizeof(t->err));
    return got.rc;
}

/*
 * A page of the items' B-tree zeroed on disk (a bad sector, a torn
 * write): the store is refused naming data.mdb, and neither the open nor
 * anything LMDB does on the page brings the process down.
 */
START_TEST(zeroed_page_refused)
{
    static const char last[] = "value 00999|";
    struct pt *t = pt_new(ops);
    unsigned char *file;
    unsigned char *hit;
    unsigned char *zero;
    unsigned char *after;
    char path[128];
    char key[32];
    char val[100];
    uint64_t psize;
    size_t len;
    size_t len2;
    size_t page;

    pt_open(t);
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof(key), "k%05d", i);
        snprintf(val, sizeof(val), "value %05d|%080d", i, i);
        pt_set(t, key, val);
    }
    psize = pt_stat(t, "page_size");
    pt_close(t);

    /*
     * The page holding the last item written: copy-on-write leaves older
     * copies of its leaf behind as free pages, but none of them holds
     * that item, so this page is the live one, in the middle of the tree.
     */
    file = pt_slurp(pt_path(t, "data.mdb", path, sizeof(path)), &len);
    hit = memmem(file, len, last, sizeof(last) - 1);
    ck_assert_ptr_nonnull(hit);
    ck_assert_ptr_null(memmem(hit + 1, (size_t)(file + len - hit - 1), last,
                              sizeof(last) - 1));
    page = (size_t)(hit - file) / psize;
    ck_assert_uint_ge(page, 2);                  /* not a meta page */
    zero = calloc(1, psize);
    ck_assert_ptr_nonnull(zero);
    pt_write_at(path, (long)(page * psize), zero, psize);
    free(zero);
    free(file);
    file = pt_slurp(path, &len);

    for (int round = 0; round < 2; round++) {
        ck_assert_int_eq(open_in_child(t), STORE_ECORRUPT);
        ck_assert_msg(strstr(t->err, path) != NULL, "%s", t->err);
        ck_assert_msg(strstr(t->err, "damaged") != NULL, "%s", t->err);
        after = pt_slurp(path, &len2);
        ck_assert_uint_eq(len, len2);
        ck_assert(memcmp(file, after, len) == 0);
        free(after);
    }
    free(file);
    pt_free(t);
}
END_TEST

/* What the next unsynced_writes_child writes: keys prefix000 .. */
static const char *unsynced_prefix;

#define UNSYNCED_KEYS 100

/*
 * Opens t, checks everything committed before is durable (the open
 * synced it), writes UNSYNCED_KEYS keys, checks they are not, and dies
 * without closing, as kill -9.
 */
static int
unsynced_writes_child(struct pt *t, int fd)
{
    char key[32];

    (void)fd;
    if (pt_open_rc(t) != STORE_OK) {
        return 10;
    }
    if (pt_stat(t, "synced_txnid") < pt_stat(t, "last_txnid")) {
        return 11;
    }
    for (int i = 0; i < UNSYNCED_KEYS; i++) {
        snprintf(key, sizeof(key), "%s%03d", unsynced_prefix, i);
        if (pt_put(t, key, "v", 1, 0, 0, NULL) != STORE_OK) {
            return 12;
        }
    }
    if (pt_stat(t, "synced_txnid") >= pt_stat(t, "last_txnid")) {
        return 13;
    }
    return 0;
}

static void
crash_after_unsynced_writes(struct pt *t, const char *prefix)
{
    unsynced_prefix = prefix;
    pt_in_child(t, unsynced_writes_child, NULL, 0);
}

/* Asserts keys prefix000 .. prefix(n-1) are all there, or all missing. */
static void
expect_keys(struct pt *t, const char *prefix, int n, store_rc_e want)
{
    char key[32];

    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "%s%03d", prefix, i);
        ck_assert_msg(pt_get(t, key, NULL) == want, "%s: want %s", key,
                      store_strerror(want));
    }
}

/*
 * A process crash keeps every commit (the page cache survives it); a
 * power loss, which here is a boot id other than the one the store was
 * open under, makes it fall back to the last synced state, whose pages
 * nothing overwrote, whatever the disk kept of the commits after it.
 */
START_TEST(power_loss_falls_back_to_synced)
{
    struct pt *t = pt_new(ops);

    /* No sync but the ones open and close make. */
    t->cfg.sync = STORE_SYNC_PERIODIC;
    t->cfg.sync_interval_ms = 60000;
    t->cfg.boot_id = "boot-1";
    pt_open(t);
    for (int i = 0; i < 100; i++) {
        char key[32];

        snprintf(key, sizeof(key), "a%03d", i);
        pt_set(t, key, "v");
    }
    pt_close(t);

    crash_after_unsynced_writes(t, "b");
    pt_open(t);
    expect_keys(t, "a", 100, STORE_OK);
    expect_keys(t, "b", 100, STORE_OK);
    ck_assert_uint_eq(pt_stat(t, "snapshot_restored"), 0);
    ck_assert_uint_eq(pt_items(t), 200);
    pt_close(t);

    crash_after_unsynced_writes(t, "c");
    t->cfg.boot_id = "other-boot";
    pt_open(t);
    ck_assert_uint_eq(pt_stat(t, "snapshot_restored"), 1);
    expect_keys(t, "a", 100, STORE_OK);
    expect_keys(t, "b", 100, STORE_OK);
    expect_keys(t, "c", 100, STORE_ENOENT);
    ck_assert_uint_eq(pt_items(t), 200);
    pt_set(t, "d000", "v");
    pt_close(t);

    /* Closed cleanly since: nothing to fall back from. */
    t->cfg.boot_id = "boot-3";
    pt_open(t);
    ck_assert_uint_eq(pt_stat(t, "snapshot_restored"), 0);
    expect_keys(t, "d", 1, STORE_OK);
    ck_assert_uint_eq(pt_items(t), 201);
    pt_close(t);
    pt_free(t);
}
END_TEST

/*
 * LMDB's environment figures and the snapshot scheme's state (the
 * engine's lines are check_store_persist.c's).
 */
START_TEST(lmdb_stats_lines)
{
    struct pt_lines l;
    struct pt *t = pt_new(ops);

    pt_open(t);
    pt_set(t, "k", "v");
    ck_assert_uint_ge(pt_stat(t, "map_size"), 3 * 64 * MB);
    ck_assert_uint_gt(pt_stat(t, "used_pages"), 0);
    ck_assert_uint_ge(pt_stat(t, "readers"), 1);
    ck_assert_uint_eq(pt_stat(t, "entries"), 1);
    ck_assert_uint_eq(pt_stat(t, "page_size") % 4096, 0);
    ck_assert_uint_ge(pt_stat(t, "synced_txnid"), 1);
    pt_general(t, &l);
    ck_assert_msg(strstr(l.text, "lmdb_commit_scheme snapshots\n") != NULL,
                  "%s", l.text);
    pt_close(t);
    pt_free(t);
}
END_TEST

PT_MAIN("store_lmdb", foreign_lmdb_refused_untouched, zeroed_page_refused,
        power_loss_falls_back_to_synced, lmdb_stats_lines)
