/*
 * Tests of what only the lmdb backend promises, through storage.h: data,
 * CAS and flush state survive close and reopen; a data directory is locked
 * against a second opener; a foreign or damaged file is refused and left
 * untouched; a missing directory is created; -m is enforced by evicting
 * (or by ENOMEM with -M); the sweeper reclaims expired items; --sync=always
 * completes writes through the wait struct exactly once, and concurrent
 * writers share fsyncs. Every test works in its own mkdtemp directory and
 * removes it.
 */
#include "storage/storage.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MB (1024ull * 1024)

/* A sink that mallocs each value and frees them all at reset. */
struct tsink {
    struct store_sink base;            /* first: what the backend sees */
    void            **blocks;
    size_t            n;
    size_t            cap;
};

static void *
tsink_reserve(struct store_sink *sk, size_t len)
{
    struct tsink *ts = (struct tsink *)(void *)sk;
    void *p;

    if (ts->n == ts->cap) {
        size_t cap = ts->cap != 0 ? ts->cap * 2 : 16;
        void **b = realloc(ts->blocks, cap * sizeof(*b));

        if (b == NULL) {
            return NULL;
        }
        ts->blocks = b;
        ts->cap = cap;
    }
    p = malloc(len + 1);
    if (p != NULL) {
        ts->blocks[ts->n++] = p;
    }
    return p;
}

static void
tsink_reset(struct tsink *ts)
{
    for (size_t i = 0; i < ts->n; i++) {
        free(ts->blocks[i]);
    }
    ts->n = 0;
}

static void
tsink_free(struct tsink *ts)
{
    tsink_reset(ts);
    free(ts->blocks);
    ts->blocks = NULL;
    ts->cap = 0;
}

/* One open store on a directory that outlives it (for reopening). */
struct t {
    struct store_cfg  cfg;
    struct store     *s;
    struct store_thr *thr;
    struct store_call c;
    struct tsink      sink;
    char              dir[64];
    char              err[512];
};

static const struct store_ops *ops = &store_lmdb_ops;

static int
rm_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)type;
    (void)ftw;
    return remove(path);
}

static void
rm_tree(const char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static uint32_t
now_s(void)
{
    return (uint32_t)time(NULL);
}

static void
t_cfg(struct t *t, const char *dir)
{
    memset(&t->cfg, 0, sizeof(t->cfg));
    t->cfg.mem_limit = 64 * MB;
    t->cfg.item_max = 1024 * 1024;
    t->cfg.threads = 4;
    t->cfg.data_dir = dir;
    t->cfg.sync = STORE_SYNC_NONE;
    t->cfg.sync_interval_ms = 100;
    t->cfg.now = now_s();
    t->cfg.err = t->err;
    t->cfg.errlen = sizeof(t->err);
}

/* Opens t->cfg; returns the rc, attaching on success. */
static store_rc_e
t_open_rc(struct t *t)
{
    store_rc_e rc;

    t->err[0] = '\0';
    rc = ops->open(&t->cfg, &t->s);
    if (rc == STORE_OK) {
        ck_assert_int_eq(ops->attach(t->s, &t->thr), STORE_OK);
        memset(&t->c, 0, sizeof(t->c));
        t->c.now = t->cfg.now;
        t->sink.base.reserve = tsink_reserve;
        t->c.sink = &t->sink.base;
    }
    return rc;
}

static void
t_open(struct t *t)
{
    store_rc_e rc = t_open_rc(t);

    ck_assert_msg(rc == STORE_OK, "open %s: %s: %s", t->cfg.data_dir,
                  store_strerror(rc), t->err);
}

static void
t_close(struct t *t)
{
    ops->detach(&t->thr);
    ops->close(&t->s);
    ck_assert_ptr_null(t->s);
    tsink_free(&t->sink);
}

/* A fresh temporary directory with the default configuration. */
static struct t *
t_new(void)
{
    struct t *t = calloc(1, sizeof(*t));

    ck_assert_ptr_nonnull(t);
    snprintf(t->dir, sizeof(t->dir), "/tmp/stashd-lmdb-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(t->dir));
    t_cfg(t, t->dir);
    return t;
}

static void
t_free(struct t *t)
{
    rm_tree(t->dir);
    free(t);
}

static store_rc_e
put(struct t *t, const char *key, const void *val, size_t len,
    uint32_t flags, uint32_t exptime, uint64_t *cas)
{
    struct store_key k = { key, strlen(key) };
    struct store_item in = { val, (uint32_t)len, flags, exptime, 0, NULL };
    uint64_t dummy = 0;

    return ops->store(t->thr, &t->c, STORE_SET, &k, &in,
                      cas != NULL ? cas : &dummy);
}

static store_rc_e
get(struct t *t, const char *key, struct store_item *out, char *buf,
    size_t cap)
{
    struct store_key k = { key, strlen(key) };
    store_rc_e rc = ops->get(t->thr, &t->c, &k, NULL, out);

    if (rc == STORE_OK) {
        ck_assert_uint_lt(out->len, cap);
        memcpy(buf, out->data, out->len);
        buf[out->len] = '\0';
        ops->release(t->thr, out);
        tsink_reset(&t->sink);
    }
    return rc;
}

/* Collects the "" group's lines. */
struct lines {
    char text[8192];
    size_t len;
};

static void
collect(void *arg, const char *name, const char *value)
{
    struct lines *l = arg;
    int n = snprintf(l->text + l->len, sizeof(l->text) - l->len, "%s %s\n",
                     name, value);

    if (n > 0 && l->len + (size_t)n < sizeof(l->text)) {
        l->len += (size_t)n;
    }
}

static uint64_t
stat_u64(struct store_thr *thr, const char *name)
{
    struct lines l;
    char pat[96];
    const char *p;

    memset(&l, 0, sizeof(l));
    ck_assert_int_eq(ops->stats_group(thr, "", collect, &l), STORE_OK);
    snprintf(pat, sizeof(pat), "\n%s ", name);
    p = strstr(l.text, pat);
    if (p == NULL && strncmp(l.text, pat + 1, strlen(pat + 1)) == 0) {
        p = l.text - 1;
    }
    ck_assert_msg(p != NULL, "no stat %s in:\n%s", name, l.text);
    return strtoull(p + strlen(pat), NULL, 10);
}

static void
sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}

START_TEST(persists_across_reopen)
{
    struct t *t = t_new();
    uint32_t now = t->cfg.now;
    uint64_t cas[100];
    uint64_t maxcas = 0;
    struct store_item it;
    char buf[256];
    char key[32];
    char val[64];

    t_open(t);
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "key:%d", i);
        snprintf(val, sizeof(val), "value-%d", i * 31);
        ck_assert_int_eq(put(t, key, val, strlen(val), 0xf0000000u + i,
                             i % 3 == 0 ? 0 : now + 1000 + i, &cas[i]),
                         STORE_OK);
        maxcas = cas[i] > maxcas ? cas[i] : maxcas;
    }
    /* A value with every byte, and one that is empty. */
    for (int i = 0; i < 256; i++) {
        buf[i] = (char)i;
    }
    ck_assert_int_eq(put(t, "bin", buf, 256, 7, 0, NULL), STORE_OK);
    ck_assert_int_eq(put(t, "empty", "", 0, 8, 0, NULL), STORE_OK);
    t_close(t);

    t->cfg.now = now + 10;
    t_open(t);
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "key:%d", i);
        snprintf(val, sizeof(val), "value-%d", i * 31);
        ck_assert_int_eq(get(t, key, &it, buf, sizeof(buf)), STORE_OK);
        ck_assert_str_eq(buf, val);
        ck_assert_uint_eq(it.flags, 0xf0000000u + i);
        ck_assert_uint_eq(it.exptime, i % 3 == 0 ? 0 : now + 1000 + i);
        ck_assert_uint_eq(it.cas, cas[i]);
    }
    {
        struct store_key k = { "bin", 3 };

        ck_assert_int_eq(ops->get(t->thr, &t->c, &k, NULL, &it), STORE_OK);
        ck_assert_uint_eq(it.len, 256);
        for (int i = 0; i < 256; i++) {
            ck_assert_int_eq(((const unsigned char *)it.data)[i], i);
        }
        ops->release(t->thr, &it);
        tsink_reset(&t->sink);
    }
    ck_assert_int_eq(get(t, "empty", &it, buf, sizeof(buf)), STORE_OK);
    ck_assert_uint_eq(it.len, 0);
    ck_assert_uint_eq(it.flags, 8);
    /* An exptime that passed while the store was closed is honoured. */
    t->c.now = now + 1050;
    ck_assert_int_eq(get(t, "key:1", &it, buf, sizeof(buf)), STORE_ENOENT);
    ck_assert_int_eq(get(t, "key:99", &it, buf, sizeof(buf)), STORE_OK);
    t_close(t);
    t_free(t);
}
END_TEST

START_TEST(cas_after_reopen_is_larger)
{
    struct t *t = t_new();
    uint64_t maxcas = 0;
    uint64_t cas = 0;
    char key[32];

    for (int round = 0; round < 3; round++) {
        t_open(t);
        for (int i = 0; i < 50; i++) {
            snprintf(key, sizeof(key), "k%d", i % 7);
            ck_assert_int_eq(put(t, key, "v", 1, 0, 0, &cas), STORE_OK);
            ck_assert_uint_gt(cas, maxcas);
            maxcas = cas;
        }
        /* Deleting the item with the largest CAS must not lower it. */
        {
            struct store_key k = { key, strlen(key) };

            ck_assert_int_eq(ops->del(t->thr, &t->c, &k, 0), STORE_OK);
        }
        t_close(t);
    }
    t_open(t);
    ck_assert_int_eq(put(t, "new", "v", 1, 0, 0, &cas), STORE_OK);
    ck_assert_uint_gt(cas, maxcas);
    t_close(t);
    t_free(t);
}
END_TEST

START_TEST(flush_survives_reopen)
{
    struct t *t = t_new();
    uint32_t now = t->cfg.now;
    struct store_item it;
    char buf[64];

    t_open(t);
    ck_assert_int_eq(put(t, "old", "v", 1, 0, 0, NULL), STORE_OK);
    ck_assert_int_eq(ops->flush(t->thr, &t->c, now), STORE_OK);
    ck_assert_int_eq(put(t, "after", "v", 1, 0, 0, NULL), STORE_OK);
    /* A delayed flush: items stored before now + 100 die at now + 100. */
    ck_assert_int_eq(ops->flush(t->thr, &t->c, now + 100), STORE_OK);
    t_close(t);

    t->cfg.now = now + 50;
    t_open(t);
    ck_assert_int_eq(get(t, "old", &it, buf, sizeof(buf)), STORE_ENOENT);
    ck_assert_int_eq(get(t, "after", &it, buf, sizeof(buf)), STORE_OK);
    ck_assert_int_eq(put(t, "middle", "v", 1, 0, 0, NULL), STORE_OK);
    t_close(t);

    t->cfg.now = now + 100;
    t_open(t);
    ck_assert_int_eq(get(t, "after", &it, buf, sizeof(buf)), STORE_ENOENT);
    ck_assert_int_eq(get(t, "middle", &it, buf, sizeof(buf)), STORE_ENOENT);
    ck_assert_int_eq(put(t, "late", "v", 1, 0, 0, NULL), STORE_OK);
    t->c.now = now + 200;
    ck_assert_int_eq(get(t, "late", &it, buf, sizeof(buf)), STORE_OK);
    t_close(t);
    t_free(t);
}
END_TEST

START_TEST(locked_dir_refused)
{
    struct t *t = t_new();
    struct t *u = calloc(1, sizeof(*u));
    pid_t pid;
    int st;

    ck_assert_ptr_nonnull(u);
    t_open(t);
    ck_assert_int_eq(put(t, "k", "v", 1, 0, 0, NULL), STORE_OK);
    /* A second open in this process. */
    t_cfg(u, t->dir);
    ck_assert_int_eq(t_open_rc(u), STORE_ELOCKED);
    ck_assert_ptr_null(u->s);
    ck_assert_msg(strstr(u->err, "stashd.lock") != NULL, "%s", u->err);
    ck_assert_msg(strstr(u->err, "pid") != NULL, "%s", u->err);
    /* Another process. */
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        store_rc_e rc = t_open_rc(u);

        _exit(rc == STORE_ELOCKED ? 0 : 10 + (int)rc);
    }
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 0);
    /* The holder is unaffected; once it closes, the next open works. */
    {
        struct store_item it;
        char buf[8];

        ck_assert_int_eq(get(t, "k", &it, buf, sizeof(buf)), STORE_OK);
    }
    t_close(t);
    t_open(u);
    t_close(u);
    free(u);
    t_free(t);
}
END_TEST

/* Reads a whole file; *len gets its size. */
static unsigned char *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *p;
    long n;

    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    p = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

START_TEST(garbage_file_refused_untouched)
{
    struct t *t = t_new();
    char path[128];
    unsigned char *before;
    unsigned char *after;
    size_t n0;
    size_t n1;
    FILE *f;

    snprintf(path, sizeof(path), "%s/data.mdb", t->dir);
    f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    srand(7);
    for (int i = 0; i < 3 * 4096 + 123; i++) {
        fputc(rand() & 0xff, f);
    }
    fclose(f);
    before = slurp(path, &n0);
    ck_assert_int_eq(t_open_rc(t), STORE_ECORRUPT);
    ck_assert_ptr_null(t->s);
    ck_assert_msg(strstr(t->err, path) != NULL, "%s", t->err);
    after = slurp(path, &n1);
    ck_assert_uint_eq(n0, n1);
    ck_assert(memcmp(before, after, n0) == 0);
    /* And again: a refusal leaves nothing that makes the next one pass. */
    ck_assert_int_eq(t_open_rc(t), STORE_ECORRUPT);
    free(after);
    after = slurp(path, &n1);
    ck_assert_uint_eq(n0, n1);
    ck_assert(memcmp(before, after, n0) == 0);
    free(before);
    free(after);
    t_free(t);
}
END_TEST

START_TEST(foreign_lmdb_refused_untouched)
{
    struct t *t = t_new();
    char path[128];
    unsigned char *before;
    unsigned char *after;
    size_t n0;
    size_t n1;
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

    snprintf(path, sizeof(path), "%s/data.mdb", t->dir);
    before = slurp(path, &n0);
    ck_assert_int_eq(t_open_rc(t), STORE_ECORRUPT);
    ck_assert_msg(strstr(t->err, path) != NULL, "%s", t->err);
    ck_assert_msg(strstr(t->err, "not a stashd store") != NULL, "%s",
                  t->err);
    after = slurp(path, &n1);
    ck_assert_uint_eq(n0, n1);
    ck_assert(memcmp(before, after, n0) == 0);
    free(before);
    free(after);

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
    before = slurp(path, &n0);
    ck_assert_int_eq(t_open_rc(t), STORE_ECORRUPT);
    ck_assert_msg(strstr(t->err, "bad metadata") != NULL, "%s", t->err);
    after = slurp(path, &n1);
    ck_assert_uint_eq(n0, n1);
    ck_assert(memcmp(before, after, n0) == 0);
    free(before);
    free(after);
    t_free(t);
}
END_TEST

START_TEST(truncated_file_refused)
{
    struct t *t = t_new();
    char path[128];
    char val[3000];
    char key[32];
    struct stat st;
    unsigned char *before;
    unsigned char *after;
    size_t n0;
    size_t n1;

    memset(val, 'q', sizeof(val));
    t_open(t);
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        ck_assert_int_eq(put(t, key, val, sizeof(val), 0, 0, NULL),
                         STORE_OK);
    }
    t_close(t);
    snprintf(path, sizeof(path), "%s/data.mdb", t->dir);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(truncate(path, st.st_size / 2), 0);
    before = slurp(path, &n0);
    ck_assert_int_eq(t_open_rc(t), STORE_ECORRUPT);
    ck_assert_msg(strstr(t->err, "truncated") != NULL, "%s", t->err);
    after = slurp(path, &n1);
    ck_assert_uint_eq(n0, n1);
    ck_assert(memcmp(before, after, n0) == 0);
    free(before);
    free(after);
    t_free(t);
}
END_TEST

START_TEST(missing_dir_created)
{
    struct t *t = t_new();
    char dir[128];
    struct stat st;
    struct store_item it;
    char buf[8];

    snprintf(dir, sizeof(dir), "%s/a/b/data", t->dir);
    t_cfg(t, dir);
    t_open(t);
    ck_assert_int_eq(stat(dir, &st), 0);
    ck_assert(S_ISDIR(st.st_mode));
    ck_assert_int_eq(st.st_mode & 0777, 0700);
    ck_assert_int_eq(put(t, "k", "v", 1, 0, 0, NULL), STORE_OK);
    t_close(t);
    t_open(t);
    ck_assert_int_eq(get(t, "k", &it, buf, sizeof(buf)), STORE_OK);
    t_close(t);
    /* A data dir that is a file is refused with its name. */
    snprintf(dir, sizeof(dir), "%s/a/b/data/data.mdb", t->dir);
    t_cfg(t, dir);
    ck_assert_int_ne(t_open_rc(t), STORE_OK);
    ck_assert_msg(strstr(t->err, "data.mdb") != NULL, "%s", t->err);
    t_free(t);
}
END_TEST

START_TEST(limit_evicts_lru)
{
    struct t *t = t_new();
    uint32_t now = t->cfg.now;
    struct store_stats st;
    struct store_item it;
    char val[1000];
    char buf[1100];
    char key[32];
    int read_alive = 0;
    int unread_alive = 0;

    memset(val, 'x', sizeof(val));
    t->cfg.mem_limit = 2 * MB;
    t_open(t);
    /* ~0.9 of the limit in 1800 items. */
    for (int i = 0; i < 1800; i++) {
        snprintf(key, sizeof(key), "k%04d", i);
        ck_assert_int_eq(put(t, key, val, sizeof(val), 0, 0, NULL),
                         STORE_OK);
    }
    ops->stats(t->thr, &st);
    ck_assert_uint_eq(st.evictions, 0);
    /* Two minutes later, every tenth item is read: its recency refreshes. */
    t->c.now = now + 120;
    for (int i = 0; i < 1800; i += 10) {
        snprintf(key, sizeof(key), "k%04d", i);
        ck_assert_int_eq(get(t, key, &it, buf, sizeof(buf)), STORE_OK);
    }
    /* The maintenance thread applies the readers' hints. */
    for (int i = 0; i < 500; i++) {
        if (stat_u64(t->thr, "lmdb_recency_refreshes") >= 180) {
            break;
        }
        sleep_ms(10);
    }
    ck_assert_uint_eq(stat_u64(t->thr, "lmdb_recency_refreshes"), 180);
    /* Half the limit again in new items. */
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof(key), "n%04d", i);
        ck_assert_int_eq(put(t, key, val, sizeof(val), 0, 0, NULL),
                         STORE_OK);
    }
    ops->stats(t->thr, &st);
    ck_assert_uint_le(st.bytes, 2 * MB);
    ck_assert_uint_gt(st.evictions, 500);
    ck_assert_uint_eq(st.curr_items + st.evictions, 2800);
    for (int i = 0; i < 1800; i++) {
        snprintf(key, sizeof(key), "k%04d", i);
        if (get(t, key, &it, buf, sizeof(buf)) == STORE_OK) {
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
        ck_assert_int_eq(get(t, key, &it, buf, sizeof(buf)), STORE_OK);
    }
    t_close(t);
    t_free(t);
}
END_TEST

START_TEST(smaller_limit_after_reopen_trims)
{
    struct t *t = t_new();
    struct store_stats st;
    struct store_item it;
    char val[2000];
    char buf[2100];
    char key[32];

    memset(val, 'z', sizeof(val));
    t->cfg.mem_limit = 64 * MB;
    t_open(t);
    for (int i = 0; i < 4000; i++) {
        snprintf(key, sizeof(key), "k%05d", i);
        ck_assert_int_eq(put(t, key, val, sizeof(val), 0, 0, NULL),
                         STORE_OK);
    }
    t_close(t);
    /* Reopened with 1/8 of what it holds: trimmed in the background. */
    t->cfg.mem_limit = 1 * MB;
    t_open(t);
    for (int i = 0; i < 200; i++) {
        ops->stats(t->thr, &st);
        if (st.bytes <= 1 * MB) {
            break;
        }
        sleep_ms(20);
    }
    ck_assert_uint_le(st.bytes, 1 * MB);
    ck_assert_uint_gt(st.evictions, 3000);
    /* And it takes writes. */
    ck_assert_int_eq(put(t, "fresh", val, sizeof(val), 0, 0, NULL),
                     STORE_OK);
    ck_assert_int_eq(get(t, "fresh", &it, buf, sizeof(buf)), STORE_OK);
    t_close(t);
    t_free(t);
}
END_TEST

START_TEST(limit_no_evict_enomem)
{
    struct t *t = t_new();
    struct store_stats st;
    struct store_item it;
    char val[1000];
    char buf[1100];
    char key[32];
    int stored = 0;
    store_rc_e rc = STORE_OK;

    memset(val, 'y', sizeof(val));
    t->cfg.mem_limit = 1 * MB;
    t->cfg.no_evict = true;
    t_open(t);
    for (int i = 0; i < 5000 && rc == STORE_OK; i++) {
        snprintf(key, sizeof(key), "k%04d", i);
        rc = put(t, key, val, sizeof(val), 0, 0, NULL);
        if (rc == STORE_OK) {
            stored++;
        }
    }
    ck_assert_int_eq(rc, STORE_ENOMEM);
    ck_assert_int_gt(stored, 800);
    ops->stats(t->thr, &st);
    ck_assert_uint_eq(st.evictions, 0);
    ck_assert_uint_le(st.bytes, 1 * MB);
    /* Reads go on; a delete makes room again. */
    ck_assert_int_eq(get(t, "k0000", &it, buf, sizeof(buf)), STORE_OK);
    {
        struct store_key k = { "k0000", 5 };

        ck_assert_int_eq(ops->del(t->thr, &t->c, &k, 0), STORE_OK);
    }
    ck_assert_int_eq(put(t, "again", val, sizeof(val), 0, 0, NULL),
                     STORE_OK);
    /* Expired items are reclaimed to make room even with -M. */
    t->c.now += 10;
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "e%d", i);
        rc = put(t, key, val, sizeof(val), 0, t->c.now + 1, NULL);
        (void)rc;
    }
    t_close(t);
    t_free(t);
}
END_TEST

START_TEST(sweeper_reclaims_expired)
{
    struct t *t = t_new();
    uint32_t now = t->cfg.now;
    struct store_stats st;
    struct store_item it;
    char buf[16];
    char key[32];

    t_open(t);
    for (int i = 0; i < 3000; i++) {
        snprintf(key, sizeof(key), "x%d", i);
        ck_assert_int_eq(put(t, key, "v", 1, 0, i < 2500 ? now + 2 : 0,
                             NULL), STORE_OK);
    }
    ops->stats(t->thr, &st);
    ck_assert_uint_eq(st.curr_items, 3000);
    /* Time moves on (told by a request); nobody reads the dead items. */
    t->c.now = now + 5;
    ck_assert_int_eq(get(t, "x2999", &it, buf, sizeof(buf)), STORE_OK);
    for (int i = 0; i < 100; i++) {
        ops->stats(t->thr, &st);
        if (st.curr_items == 500) {
            break;
        }
        sleep_ms(50);
    }
    ck_assert_uint_eq(st.curr_items, 500);
    ck_assert_uint_ge(st.reclaimed, 2500);
    ck_assert_uint_ge(st.expired_unfetched, 2500);
    /* Each live item counts 48 + key + value bytes. */
    ck_assert_uint_eq(st.bytes, 500 * (48 + 5 + 1));
    /* A flush_all is O(1); the sweeper then reclaims what it killed. */
    ck_assert_int_eq(ops->flush(t->thr, &t->c, t->c.now), STORE_OK);
    ck_assert_int_eq(get(t, "x2999", &it, buf, sizeof(buf)), STORE_ENOENT);
    for (int i = 0; i < 100; i++) {
        ops->stats(t->thr, &st);
        if (st.curr_items == 0) {
            break;
        }
        sleep_ms(50);
    }
    ck_assert_uint_eq(st.curr_items, 0);
    ck_assert_uint_eq(st.bytes, 0);
    ck_assert_uint_ge(st.reclaimed, 3000);
    t_close(t);
    t_free(t);
}
END_TEST

/* A wait whose completions are counted. */
struct twait {
    struct store_wait base;              /* first */
    _Atomic int       done;
};

static void
twait_done(struct store_wait *w, store_rc_e rc)
{
    struct twait *tw = (struct twait *)(void *)w;

    ck_assert_int_eq(rc, STORE_OK);
    atomic_fetch_add(&tw->done, 1);
}

START_TEST(sync_always_completes_once)
{
    struct t *t = t_new();
    struct twait tw;
    struct store_key k = { "k", 1 };
    struct store_item in = { "v", 1, 0, 0, 0, NULL };
    uint64_t cas = 0;
    uint64_t syncs0;

    tw.base.done = twait_done;
    atomic_init(&tw.done, 0);
    t->cfg.sync = STORE_SYNC_ALWAYS;
    t_open(t);
    syncs0 = stat_u64(t->thr, "lmdb_sync_count");
    t->c.wait = &tw.base;
    t->c.pending = false;
    ck_assert_int_eq(ops->store(t->thr, &t->c, STORE_SET, &k, &in, &cas),
                     STORE_OK);
    ck_assert(t->c.pending);
    for (int i = 0; i < 200 && atomic_load(&tw.done) == 0; i++) {
        sleep_ms(10);
    }
    sleep_ms(50);
    ck_assert_int_eq(atomic_load(&tw.done), 1);
    ck_assert_uint_gt(stat_u64(t->thr, "lmdb_sync_count"), syncs0);
    /* A write that changes nothing needs no sync: not pending. */
    t->c.pending = false;
    ck_assert_int_eq(ops->store(t->thr, &t->c, STORE_ADD, &k, &in, &cas),
                     STORE_NOT_STORED);
    ck_assert(!t->c.pending);
    /* Without a wait struct the call returns only once durable. */
    t->c.wait = NULL;
    syncs0 = stat_u64(t->thr, "lmdb_sync_count");
    ck_assert_int_eq(ops->store(t->thr, &t->c, STORE_SET, &k, &in, &cas),
                     STORE_OK);
    ck_assert(!t->c.pending);
    ck_assert_uint_gt(stat_u64(t->thr, "lmdb_sync_count"), syncs0);
    /* Every kind of write completes exactly once. */
    t->c.wait = &tw.base;
    atomic_store(&tw.done, 0);
    {
        struct store_delta d = { 1, 5, 0, 0, false, true };
        uint64_t v = 0;
        int pending = 0;
        uint32_t exp = t->c.now + 100;
        struct store_item out;

        t->c.pending = false;
        ck_assert_int_eq(ops->arith(t->thr, &t->c, &(struct store_key){
                         "n", 1 }, &d, &v, &cas), STORE_OK);
        pending += t->c.pending;
        t->c.pending = false;
        ck_assert_int_eq(ops->touch(t->thr, &t->c, &k, exp), STORE_OK);
        pending += t->c.pending;
        t->c.pending = false;
        ck_assert_int_eq(ops->get(t->thr, &t->c, &k, &exp, &out), STORE_OK);
        ops->release(t->thr, &out);
        pending += t->c.pending;
        t->c.pending = false;
        ck_assert_int_eq(ops->del(t->thr, &t->c, &k, 0), STORE_OK);
        pending += t->c.pending;
        t->c.pending = false;
        ck_assert_int_eq(ops->flush(t->thr, &t->c, t->c.now), STORE_OK);
        pending += t->c.pending;
        for (int i = 0; i < 200 && atomic_load(&tw.done) < pending; i++) {
            sleep_ms(10);
        }
        sleep_ms(50);
        ck_assert_int_eq(atomic_load(&tw.done), pending);
    }
    t_close(t);
    t_free(t);
}
END_TEST

#define GC_THREADS 8
#define GC_WRITES  400

struct gc_arg {
    struct store *s;
    int           id;
    struct twait  tw;
    int           pending;
    bool          failed;
};

static void *
gc_main(void *arg)
{
    struct gc_arg *a = arg;
    struct store_thr *thr = NULL;
    struct store_call c;
    char key[32];

    if (ops->attach(a->s, &thr) != STORE_OK) {
        a->failed = true;
        return NULL;
    }
    memset(&c, 0, sizeof(c));
    c.now = now_s();
    c.wait = &a->tw.base;
    for (int i = 0; i < GC_WRITES; i++) {
        struct store_key k;
        struct store_item in = { "value", 5, 0, 0, 0, NULL };
        uint64_t cas;

        snprintf(key, sizeof(key), "t%d:%d", a->id, i);
        k.data = key;
        k.len = strlen(key);
        c.pending = false;
        if (ops->store(thr, &c, STORE_SET, &k, &in, &cas) != STORE_OK) {
            a->failed = true;
            break;
        }
        a->pending += c.pending;
        /* Like a server connection: a few writes in flight at a time. */
        if (i % 4 == 3) {
            while (atomic_load(&a->tw.done) < a->pending) {
                sleep_ms(0);
            }
        }
    }
    while (atomic_load(&a->tw.done) < a->pending) {
        sleep_ms(1);
    }
    ops->detach(&thr);
    return NULL;
}

START_TEST(group_commit_shares_fsyncs)
{
    struct t *t = t_new();
    struct gc_arg a[GC_THREADS];
    pthread_t th[GC_THREADS];
    uint64_t syncs0;
    uint64_t syncs;
    int pending = 0;

    t->cfg.sync = STORE_SYNC_ALWAYS;
    t_open(t);
    syncs0 = stat_u64(t->thr, "lmdb_sync_count");
    memset(a, 0, sizeof(a));
    for (int i = 0; i < GC_THREADS; i++) {
        a[i].s = t->s;
        a[i].id = i;
        a[i].tw.base.done = twait_done;
        atomic_init(&a[i].tw.done, 0);
        ck_assert_int_eq(pthread_create(&th[i], NULL, gc_main, &a[i]), 0);
    }
    for (int i = 0; i < GC_THREADS; i++) {
        pthread_join(th[i], NULL);
        ck_assert(!a[i].failed);
        ck_assert_int_eq(atomic_load(&a[i].tw.done), a[i].pending);
        pending += a[i].pending;
    }
    syncs = stat_u64(t->thr, "lmdb_sync_count") - syncs0;
    if (getenv("LMDB_TEST_DEBUG") != NULL) {
        fprintf(stderr, "group commit: %d writes, %d pending, %llu syncs, "
                "%llu commits of %llu ops\n", GC_THREADS * GC_WRITES,
                pending, (unsigned long long)syncs,
                (unsigned long long)stat_u64(t->thr, "lmdb_commits"),
                (unsigned long long)stat_u64(t->thr, "lmdb_commit_ops"));
    }
    /* Every write waited for an fsync, and they shared them. */
    ck_assert_int_gt(pending, GC_THREADS * GC_WRITES / 2);
    ck_assert_msg(syncs * 4 < (uint64_t)GC_THREADS * GC_WRITES,
                  "%llu syncs for %d writes", (unsigned long long)syncs,
                  GC_THREADS * GC_WRITES);
    ck_assert_uint_gt(stat_u64(t->thr, "lmdb_commit_ops"),
                      stat_u64(t->thr, "lmdb_commits"));
    t_close(t);
    t_free(t);
}
END_TEST

START_TEST(stats_lines)
{
    struct t *t = t_new();
    struct lines l;

    t->cfg.sync = STORE_SYNC_PERIODIC;
    t->cfg.sync_interval_ms = 20;
    t_open(t);
    ck_assert_int_eq(put(t, "k", "v", 1, 0, 0, NULL), STORE_OK);
    for (int i = 0; i < 100 && stat_u64(t->thr, "lmdb_sync_count") == 0;
         i++) {
        sleep_ms(10);
    }
    ck_assert_uint_ge(stat_u64(t->thr, "lmdb_sync_count"), 1);
    ck_assert_uint_gt(stat_u64(t->thr, "lmdb_last_sync"), 0);
    /* The longest sync is part of the total; none runs for long. */
    ck_assert_uint_le(stat_u64(t->thr, "lmdb_sync_max_usec"),
                      stat_u64(t->thr, "lmdb_sync_usec"));
    ck_assert_uint_lt(stat_u64(t->thr, "lmdb_sync_running_usec"),
                      10u * 1000 * 1000);
    ck_assert_uint_ge(stat_u64(t->thr, "lmdb_map_size"), 3 * 64 * MB);
    ck_assert_uint_gt(stat_u64(t->thr, "lmdb_used_pages"), 0);
    ck_assert_uint_ge(stat_u64(t->thr, "lmdb_readers"), 1);
    memset(&l, 0, sizeof(l));
    ck_assert_int_eq(ops->stats_group(t->thr, "", collect, &l), STORE_OK);
    ck_assert_msg(strstr(l.text, "lmdb_sync periodic\n") != NULL, "%s",
                  l.text);
    for (const char *p = l.text; *p != '\0'; p = strchr(p, '\n') + 1) {
        ck_assert_msg(strncmp(p, "lmdb_", 5) == 0, "unprefixed: %s", p);
    }
    memset(&l, 0, sizeof(l));
    ck_assert_int_eq(ops->stats_group(t->thr, "items", collect, &l),
                     STORE_OK);
    ck_assert_int_eq(ops->stats_group(t->thr, "nope", collect, &l),
                     STORE_ENOENT);
    t_close(t);
    t_free(t);
}
END_TEST

START_TEST(bad_config_refused)
{
    struct t *t = t_new();

    t->cfg.data_dir = NULL;
    ck_assert_int_eq(t_open_rc(t), STORE_EINVAL);
    ck_assert_msg(strstr(t->err, "data-dir") != NULL, "%s", t->err);
    t_free(t);
}
END_TEST

static Suite *
lmdb_suite(void)
{
    Suite *s = suite_create("store_lmdb");
    TCase *tc = tcase_create("lmdb");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, persists_across_reopen);
    tcase_add_test(tc, cas_after_reopen_is_larger);
    tcase_add_test(tc, flush_survives_reopen);
    tcase_add_test(tc, locked_dir_refused);
    tcase_add_test(tc, garbage_file_refused_untouched);
    tcase_add_test(tc, foreign_lmdb_refused_untouched);
    tcase_add_test(tc, truncated_file_refused);
    tcase_add_test(tc, missing_dir_created);
    tcase_add_test(tc, limit_evicts_lru);
    tcase_add_test(tc, smaller_limit_after_reopen_trims);
    tcase_add_test(tc, limit_no_evict_enomem);
    tcase_add_test(tc, sweeper_reclaims_expired);
    tcase_add_test(tc, sync_always_completes_once);
    tcase_add_test(tc, group_commit_shares_fsyncs);
    tcase_add_test(tc, stats_lines);
    tcase_add_test(tc, bad_config_refused);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(lmdb_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
