/*
 * Tests of what only the sqlite backend promises, through storage.h (and
 * libsqlite3 to make foreign files and to read the store as the sqlite3
 * shell would): data, CAS and flush state survive close and reopen; a data
 * directory is locked against a second opener; a foreign or damaged file
 * is refused and left byte for byte as it was; a missing directory is
 * created; the schema is what SCHEMA.md says; -m is enforced by evicting
 * (or by ENOMEM with -M); the sweeper reclaims expired and flushed items;
 * --sync=always completes writes through the wait struct exactly once, and
 * concurrent writers share fsyncs; a file size limit and another
 * program's write lock turn into error replies, not a crash or a hang.
 * Every test works in its own mkdtemp directory and removes it.
 */
#include "storage/storage.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
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
    char              db[128];          /* dir/stashd.db */
    char              err[512];
};

static const struct store_ops *ops = &store_sqlite_ops;

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
    ck_assert_int_lt(snprintf(t->db, sizeof(t->db), "%s/stashd.db", dir),
                     (int)sizeof(t->db));
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
    snprintf(t->dir, sizeof(t->dir), "/tmp/stashd-sqlite-XXXXXX");
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

static store_rc_e
del(struct t *t, const char *key)
{
    struct store_key k = { key, strlen(key) };

    return ops->del(t->thr, &t->c, &k, 0);
}

/* Collects a group's lines. */
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

/* Reads a whole file; *len gets its size. */
static unsigned char *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *p;
    long n;

    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
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

/* Runs sql on the database file at path as another program would. */
static void
sql_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    char *e = NULL;

    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    ck_assert_msg(sqlite3_exec(db, sql, NULL, NULL, &e) == SQLITE_OK,
                  "%s: %s", sql, e != NULL ? e : "?");
    sqlite3_free(e);
    ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
}

/* Opens t and expects a refusal that names the file and leaves it be. */
static void
expect_refused(struct t *t, store_rc_e want, const char *why)
{
    unsigned char *before;
    unsigned char *after;
    size_t n0;
    size_t n1;

    before = slurp(t->db, &n0);
    for (int round = 0; round < 2; round++) {
        /* Twice: a refusal leaves nothing that makes the next one pass. */
        ck_assert_int_eq(t_open_rc(t), want);
        ck_assert_ptr_null(t->s);
        ck_assert_msg(strstr(t->err, t->db) != NULL, "%s", t->err);
        ck_assert_msg(strstr(t->err, why) != NULL, "want \"%s\" in: %s",
                      why, t->err);
        after = slurp(t->db, &n1);
        ck_assert_uint_eq(n0, n1);
        ck_assert(memcmp(before, after, n0) == 0);
        free(after);
    }
    free(before);
}

START_TEST(persists_across_reopen)
{
    struct t *t = t_new();
    uint32_t now = t->cfg.now;
    uint64_t cas[100];
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
    /* Without a sink the value comes in a pin that release frees. */
    {
        struct store_key k = { "key:99", 6 };

        t->c.sink = NULL;
        ck_assert_int_eq(ops->get(t->thr, &t->c, &k, NULL, &it), STORE_OK);
        ck_assert_ptr_nonnull(it.pin);
        ck_assert(memcmp(it.data, "value-3069", 10) == 0);
        ops->release(t->thr, &it);
        ck_assert_ptr_null(it.pin);
        t->c.sink = &t->sink.base;
    }
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
        ck_assert_int_eq(del(t, key), STORE_OK);
        t_close(t);
    }
    t_open(t);
    ck_assert_int_eq(put(t, "new", "v", 1, 0, 0, &cas), STORE_OK);
    ck_assert_uint_gt(cas, maxcas);
    t_close(t);
    t_free(t);
}
END_TEST

/* Writes 300 items, deletes the newest, and dies without closing. */
static void
crash_child(struct t *t, int fd)
{
    uint64_t cas = 0;
    char key[32];
    char val[100];

    if (t_open_rc(t) != STORE_OK) {
        _exit(10);
    }
    memset(val, 'c', sizeof(val));
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof(key), "c%03d", i);
        if (put(t, key, val, (size_t)(i % 100), 0, 0, &cas) != STORE_OK) {
            _exit(11);
        }
    }
    if (del(t, "c299") != STORE_OK ||
        write(fd, &cas, sizeof(cas)) != (ssize_t)sizeof(cas)) {
        _exit(12);
    }
    _exit(0);       /* no close: as kill -9, the WAL is left as it is */
}

START_TEST(crash_recounts_and_keeps_cas_growing)
{
    struct t *t = t_new();
    struct store_stats st;
    uint64_t maxcas = 0;
    uint64_t cas = 0;
    uint64_t bytes = 0;
    int fds[2];
    pid_t pid;
    int status;

    ck_assert_int_eq(pipe(fds), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        crash_child(t, fds[1]);
    }
    close(fds[1]);
    ck_assert_int_eq(read(fds[0], &maxcas, sizeof(maxcas)),
                     (ssize_t)sizeof(maxcas));
    close(fds[0]);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    t_open(t);
    /* The counts were stale in the meta row: counted again at open. */
    for (int i = 0; i < 299; i++) {
        bytes += 48 + 4 + (uint64_t)(i % 100);
    }
    ops->stats(t->thr, &st);
    ck_assert_uint_eq(st.curr_items, 299);
    ck_assert_uint_eq(st.bytes, bytes);
    /* Above every CAS handed out, the deleted item's too. */
    ck_assert_int_eq(put(t, "after", "v", 1, 0, 0, &cas), STORE_OK);
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

START_TEST(garbage_file_refused_untouched)
{
    struct t *t = t_new();
    FILE *f;

    f = fopen(t->db, "wb");
    ck_assert_ptr_nonnull(f);
    srand(7);
    for (int i = 0; i < 3 * 4096 + 123; i++) {
        fputc(rand() & 0xff, f);
    }
    fclose(f);
    expect_refused(t, STORE_ECORRUPT, "not an SQLite database");
    /* SQLite's header on garbage pages: SQLite itself says no. */
    f = fopen(t->db, "r+b");
    ck_assert_ptr_nonnull(f);
    fwrite("SQLite format 3", 1, 16, f);
    fclose(f);
    expect_refused(t, STORE_ECORRUPT, "refusing to touch it");
    t_free(t);
}
END_TEST

START_TEST(foreign_sqlite_refused_untouched)
{
    struct t *t = t_new();
    struct stat st;
    char path[160];

    /* Another program's database, in rollback and then in WAL mode. */
    sql_exec(t->db, "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);"
             "INSERT INTO users (name) VALUES ('ada'), ('linus');");
    expect_refused(t, STORE_ECORRUPT, "not a stashd store");
    sql_exec(t->db, "PRAGMA journal_mode = WAL;"
             "INSERT INTO users (name) VALUES ('grace');");
    expect_refused(t, STORE_ECORRUPT, "not a stashd store");
    /* Looking left no WAL behind to be replayed into it later. */
    snprintf(path, sizeof(path), "%s-wal", t->db);
    ck_assert_msg(stat(path, &st) != 0 || st.st_size == 0, "%s", path);
    /* A table called meta is not enough. */
    sql_exec(t->db, "CREATE TABLE meta (id INTEGER PRIMARY KEY, magic TEXT,"
             " format INTEGER); INSERT INTO meta VALUES (1, 'other', 1);");
    expect_refused(t, STORE_ECORRUPT, "not a stashd store");
    /* Nor is another application's empty database. */
    unlink(t->db);
    sql_exec(t->db, "PRAGMA application_id = 42; PRAGMA user_version = 3;");
    expect_refused(t, STORE_ECORRUPT, "another application");
    t_free(t);
}
END_TEST

START_TEST(newer_format_refused)
{
    struct t *t = t_new();

    t_open(t);
    ck_assert_int_eq(put(t, "k", "v", 1, 0, 0, NULL), STORE_OK);
    t_close(t);
    sql_exec(t->db, "UPDATE meta SET format = 2");
    expect_refused(t, STORE_ECORRUPT, "format 2");
    t_free(t);
}
END_TEST

START_TEST(lmdb_dir_refused)
{
    struct t *t = t_new();
    char path[160];
    FILE *f;

    snprintf(path, sizeof(path), "%s/data.mdb", t->dir);
    f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fputs("not really lmdb", f);
    fclose(f);
    ck_assert_int_eq(t_open_rc(t), STORE_ECORRUPT);
    ck_assert_msg(strstr(t->err, path) != NULL, "%s", t->err);
    ck_assert_int_ne(access(t->db, F_OK), 0);
    t_free(t);
}
END_TEST

START_TEST(truncated_file_refused)
{
    struct t *t = t_new();
    char val[3000];
    char key[32];
    struct stat st;

    memset(val, 'q', sizeof(val));
    t_open(t);
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        ck_assert_int_eq(put(t, key, val, sizeof(val), 0, 0, NULL),
                         STORE_OK);
    }
    t_close(t);
    ck_assert_int_eq(stat(t->db, &st), 0);
    ck_assert_int_eq(truncate(t->db, st.st_size / 2), 0);
    expect_refused(t, STORE_ECORRUPT, "refusing to touch it");
    t_free(t);
}
END_TEST

START_TEST(empty_file_becomes_store)
{
    struct t *t = t_new();
    struct store_item it;
    char buf[8];
    int fd = open(t->db, O_CREAT | O_WRONLY, 0600);

    /* A zero-byte stashd.db is SQLite's empty database: nothing to lose. */
    ck_assert_int_ge(fd, 0);
    close(fd);
    t_open(t);
    ck_assert_int_eq(put(t, "k", "v", 1, 0, 0, NULL), STORE_OK);
    t_close(t);
    t_open(t);
    ck_assert_int_eq(get(t, "k", &it, buf, sizeof(buf)), STORE_OK);
    t_close(t);
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
    snprintf(dir, sizeof(dir), "%s/a/b/data/stashd.db", t->dir);
    t_cfg(t, dir);
    ck_assert_int_ne(t_open_rc(t), STORE_OK);
    ck_assert_msg(strstr(t->err, "stashd.db") != NULL, "%s", t->err);
    t_free(t);
}
END_TEST

/* One row of items as the sqlite3 shell shows it. */
static bool
shell_row(sqlite3 *db, const char *key, char *val, size_t cap,
          sqlite3_int64 *flags, sqlite3_int64 *exptime, sqlite3_int64 *cas)
{
    sqlite3_stmt *st = NULL;
    bool found = false;

    /* Keys are BLOBs: a shell user writes CAST('k' AS BLOB) or x'6b'. */
    ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT value, flags, exptime, "
                                        "cas FROM items WHERE key = "
                                        "CAST(?1 AS BLOB)", -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        snprintf(val, cap, "%.*s", sqlite3_column_bytes(st, 0),
                 (const char *)sqlite3_column_blob(st, 0));
        *flags = sqlite3_column_int64(st, 1);
        *exptime = sqlite3_column_int64(st, 2);
        *cas = sqlite3_column_int64(st, 3);
        found = true;
    }
    sqlite3_finalize(st);
    return found;
}

START_TEST(schema_readable_with_sqlite3)
{
    struct t *t = t_new();
    uint64_t cas = 0;
    uint64_t cas2 = 0;
    char path[160];
    char val[64];
    sqlite3_int64 flags;
    sqlite3_int64 exptime;
    sqlite3_int64 c;
    sqlite3 *db;
    sqlite3_stmt *st;

    t_open(t);
    ck_assert_int_eq(put(t, "user:1", "ada", 3, 42, t->cfg.now + 600, &cas),
                     STORE_OK);
    ck_assert_int_eq(put(t, "user:2", "linus", 5, 0, 0, &cas2), STORE_OK);
    ck_assert_int_eq(ops->flush(t->thr, &t->c, t->cfg.now + 3600),
                     STORE_OK);
    /* While it runs, another reader sees committed rows (WAL). */
    ck_assert_int_eq(sqlite3_open_v2(t->db, &db, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    ck_assert(shell_row(db, "user:1", val, sizeof(val), &flags, &exptime,
                        &c));
    ck_assert_str_eq(val, "ada");
    sqlite3_close(db);
    t_close(t);

    /* Closed: one file, the WAL folded into it. */
    snprintf(path, sizeof(path), "%s-wal", t->db);
    ck_assert_int_ne(access(path, F_OK), 0);
    ck_assert_int_eq(sqlite3_open_v2(t->db, &db, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    ck_assert(shell_row(db, "user:1", val, sizeof(val), &flags, &exptime,
                        &c));
    ck_assert_str_eq(val, "ada");
    ck_assert_int_eq(flags, 42);
    ck_assert_int_eq(exptime, t->cfg.now + 600);
    ck_assert_int_eq(c, (sqlite3_int64)cas);
    ck_assert(shell_row(db, "user:2", val, sizeof(val), &flags, &exptime,
                        &c));
    ck_assert_str_eq(val, "linus");
    ck_assert_int_eq(exptime, 0);
    ck_assert(!shell_row(db, "user:3", val, sizeof(val), &flags, &exptime,
                         &c));
    /* The meta row. */
    ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT magic, format, cas_max, "
                                        "items, bytes, flush_cas, flush_time "
                                        "FROM meta", -1, &st, NULL),
                     SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "stashd");
    ck_assert_int_eq(sqlite3_column_int64(st, 1), 1);
    ck_assert_int_eq(sqlite3_column_int64(st, 2), (sqlite3_int64)cas2);
    ck_assert_int_eq(sqlite3_column_int64(st, 3), 2);
    ck_assert_int_eq(sqlite3_column_int64(st, 4), 2 * 48 + 6 + 3 + 6 + 5);
    ck_assert_int_eq(sqlite3_column_int64(st, 5), 0);
    ck_assert_int_eq(sqlite3_column_int64(st, 6), t->cfg.now + 3600);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    /* The sweeper's index is used for its query. */
    ck_assert_int_eq(sqlite3_prepare_v2(db, "EXPLAIN QUERY PLAN SELECT key "
                                        "FROM items WHERE exptime != 0 AND "
                                        "exptime <= 5 ORDER BY exptime",
                                        -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_msg(strstr((const char *)sqlite3_column_text(st, 3),
                         "items_exptime") != NULL, "%s",
                  sqlite3_column_text(st, 3));
    sqlite3_finalize(st);
    ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA application_id", -1, &st,
                                        NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_int_eq(sqlite3_column_int64(st, 0), 0x73746864);
    sqlite3_finalize(st);
    sqlite3_close(db);
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
    ops->idle(t->thr);
    /* The maintenance thread applies the readers' hints. */
    for (int i = 0; i < 500; i++) {
        if (stat_u64(t->thr, "sqlite_recency_refreshes") >= 180) {
            break;
        }
        sleep_ms(10);
    }
    ck_assert_uint_eq(stat_u64(t->thr, "sqlite_recency_refreshes"), 180);
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
    ck_assert_int_eq(del(t, "k0000"), STORE_OK);
    ck_assert_int_eq(put(t, "again", val, sizeof(val), 0, 0, NULL),
                     STORE_OK);
    ck_assert_int_eq(put(t, "more", val, sizeof(val), 0, 0, NULL),
                     STORE_ENOMEM);
    /* Dead items are reclaimed to make room even with -M. */
    ck_assert_int_eq(ops->flush(t->thr, &t->c, t->c.now), STORE_OK);
    ck_assert_int_eq(put(t, "more", val, sizeof(val), 0, 0, NULL),
                     STORE_OK);
    ops->stats(t->thr, &st);
    ck_assert_uint_eq(st.evictions, 0);
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
    /* Then this thread waits, as an idle worker does: it lets go of its
     * read snapshot, which a checkpoint would otherwise wait for. */
    ops->idle(t->thr);
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
    /* A delayed flush is reclaimed once its time has come. */
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof(key), "y%d", i);
        ck_assert_int_eq(put(t, key, "v", 1, 0, 0, NULL), STORE_OK);
    }
    ck_assert_int_eq(ops->flush(t->thr, &t->c, t->c.now + 2), STORE_OK);
    sleep_ms(300);
    ops->stats(t->thr, &st);
    ck_assert_uint_eq(st.curr_items, 300);
    t->c.now += 3;
    ck_assert_int_eq(get(t, "y0", &it, buf, sizeof(buf)), STORE_ENOENT);
    ops->idle(t->thr);
    for (int i = 0; i < 100; i++) {
        ops->stats(t->thr, &st);
        if (st.curr_items == 0) {
            break;
        }
        sleep_ms(50);
    }
    ck_assert_uint_eq(st.curr_items, 0);
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
twait_done(struct store_wait *w)
{
    struct twait *tw = (struct twait *)(void *)w;

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
    syncs0 = stat_u64(t->thr, "sqlite_sync_count");
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
    ck_assert_uint_gt(stat_u64(t->thr, "sqlite_sync_count"), syncs0);
    /* A write that changes nothing needs no sync: not pending. */
    t->c.pending = false;
    ck_assert_int_eq(ops->store(t->thr, &t->c, STORE_ADD, &k, &in, &cas),
                     STORE_NOT_STORED);
    ck_assert(!t->c.pending);
    /* Without a wait struct the call returns only once durable. */
    t->c.wait = NULL;
    syncs0 = stat_u64(t->thr, "sqlite_sync_count");
    ck_assert_int_eq(ops->store(t->thr, &t->c, STORE_SET, &k, &in, &cas),
                     STORE_OK);
    ck_assert(!t->c.pending);
    ck_assert_uint_gt(stat_u64(t->thr, "sqlite_sync_count"), syncs0);
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
        ck_assert_int_ge(pending, 4);
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
    syncs0 = stat_u64(t->thr, "sqlite_sync_count");
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
    syncs = stat_u64(t->thr, "sqlite_sync_count") - syncs0;
    if (getenv("SQLITE_TEST_DEBUG") != NULL) {
        fprintf(stderr, "group commit: %d writes, %d pending, %llu syncs, "
                "%llu commits of %llu ops\n", GC_THREADS * GC_WRITES,
                pending, (unsigned long long)syncs,
                (unsigned long long)stat_u64(t->thr, "sqlite_commits"),
                (unsigned long long)stat_u64(t->thr, "sqlite_commit_ops"));
    }
    /* Every write waited for an fsync, and they shared them. */
    ck_assert_int_gt(pending, GC_THREADS * GC_WRITES / 2);
    ck_assert_msg(syncs * 4 < (uint64_t)GC_THREADS * GC_WRITES,
                  "%llu syncs for %d writes", (unsigned long long)syncs,
                  GC_THREADS * GC_WRITES);
    ck_assert_uint_gt(stat_u64(t->thr, "sqlite_commit_ops"),
                      stat_u64(t->thr, "sqlite_commits"));
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
    for (int i = 0; i < 100 && stat_u64(t->thr, "sqlite_sync_count") == 0;
         i++) {
        sleep_ms(10);
    }
    ck_assert_uint_ge(stat_u64(t->thr, "sqlite_sync_count"), 1);
    ck_assert_uint_gt(stat_u64(t->thr, "sqlite_last_sync"), 0);
    /* The longest sync is part of the total; none runs for long. */
    ck_assert_uint_le(stat_u64(t->thr, "sqlite_sync_max_usec"),
                      stat_u64(t->thr, "sqlite_sync_usec"));
    ck_assert_uint_lt(stat_u64(t->thr, "sqlite_sync_running_usec"),
                      10u * 1000 * 1000);
    ck_assert_uint_eq(stat_u64(t->thr, "sqlite_page_size"), 4096);
    ck_assert_uint_gt(stat_u64(t->thr, "sqlite_page_count"), 2);
    ck_assert_uint_gt(stat_u64(t->thr, "sqlite_wal_bytes"), 0);
    ck_assert_uint_eq(stat_u64(t->thr, "sqlite_items"), 1);
    /* The maintenance thread checkpoints what was committed. */
    for (int i = 0; i < 100 && stat_u64(t->thr, "sqlite_checkpoints") == 0;
         i++) {
        sleep_ms(10);
    }
    ck_assert_uint_ge(stat_u64(t->thr, "sqlite_checkpoints"), 1);
    ck_assert_uint_gt(stat_u64(t->thr, "sqlite_last_checkpoint"), 0);
    memset(&l, 0, sizeof(l));
    ck_assert_int_eq(ops->stats_group(t->thr, "", collect, &l), STORE_OK);
    ck_assert_msg(strstr(l.text, "sqlite_sync periodic\n") != NULL, "%s",
                  l.text);
    ck_assert_msg(strstr(l.text, "sqlite_journal_mode wal\n") != NULL, "%s",
                  l.text);
    for (const char *p = l.text; *p != '\0'; p = strchr(p, '\n') + 1) {
        ck_assert_msg(strncmp(p, "sqlite_", 7) == 0, "unprefixed: %s", p);
    }
    memset(&l, 0, sizeof(l));
    ck_assert_int_eq(ops->stats_group(t->thr, "items", collect, &l),
                     STORE_OK);
    ck_assert_int_eq(ops->stats_group(t->thr, "slabs", collect, &l),
                     STORE_OK);
    ck_assert_uint_eq(l.len, 0);
    ck_assert_int_eq(ops->stats_group(t->thr, "sizes", collect, &l),
                     STORE_OK);
    ck_assert_str_eq(l.text, "sizes_status disabled\n");
    ck_assert_int_eq(ops->stats_group(t->thr, "nope", collect, &l),
                     STORE_ENOENT);
    t_close(t);
    t_free(t);
}
END_TEST

START_TEST(busy_is_an_error_reply)
{
    struct t *t = t_new();
    struct store_item it;
    char buf[8];
    sqlite3 *db = NULL;

    t_open(t);
    ck_assert_int_eq(put(t, "k", "v", 1, 0, 0, NULL), STORE_OK);
    /* Another program takes the write lock and keeps it. */
    ck_assert_int_eq(sqlite3_open(t->db, &db), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL),
                     SQLITE_OK);
    ck_assert_int_eq(put(t, "k2", "v", 1, 0, 0, NULL), STORE_EIO);
    ck_assert_uint_ge(stat_u64(t->thr, "sqlite_busy"), 1);
    /* Readers are not in its way (WAL). */
    ck_assert_int_eq(get(t, "k", &it, buf, sizeof(buf)), STORE_OK);
    ck_assert_int_eq(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL),
                     SQLITE_OK);
    ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
    /* Once it lets go, writes work again. */
    ck_assert_int_eq(put(t, "k2", "v", 1, 0, 0, NULL), STORE_OK);
    ck_assert_int_eq(get(t, "k2", &it, buf, sizeof(buf)), STORE_OK);
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
    t_cfg(t, t->dir);
    t->cfg.item_max = 1024u * 1024u * 1024u;   /* above SQLite's blobs */
    ck_assert_int_eq(t_open_rc(t), STORE_EINVAL);
    ck_assert_msg(strstr(t->err, "item size") != NULL, "%s", t->err);
    t_free(t);
}
END_TEST

/*
 * In a child whose files may not grow past a few MB (RLIMIT_FSIZE: writes
 * beyond fail with EFBIG, as a full disk fails them with ENOSPC): writes
 * turn into errors, never a crash, and reads keep working. Exit status 0
 * when all went as it should; 1x = which expectation failed.
 */
static int
fsize_child(struct t *t)
{
    struct rlimit rl = { 6 * MB, 6 * MB };
    struct store_item it;
    char val[4000];
    char buf[4100];
    char key[32];
    store_rc_e rc = STORE_OK;
    int stored = 0;

    signal(SIGXFSZ, SIG_IGN);
    memset(val, 'f', sizeof(val));
    t->cfg.mem_limit = 256 * MB;
    if (t_open_rc(t) != STORE_OK) {
        return 10;
    }
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0) {
        return 11;
    }
    for (int i = 0; i < 20000 && rc == STORE_OK; i++) {
        snprintf(key, sizeof(key), "f%05d", i);
        rc = put(t, key, val, sizeof(val), 0, 0, NULL);
        stored += rc == STORE_OK;
    }
    if (rc != STORE_EIO && rc != STORE_ENOMEM) {
        return 12;
    }
    if (stored < 100) {
        return 13;
    }
    if (get(t, "f00000", &it, buf, sizeof(buf)) != STORE_OK ||
        get(t, "f00099", &it, buf, sizeof(buf)) != STORE_OK) {
        return 14;
    }
    if (stat_u64(t->thr, "sqlite_io_errors") +
        stat_u64(t->thr, "sqlite_full") == 0) {
        return 15;
    }
    t_close(t);
    return 0;
}

START_TEST(file_size_limit_is_an_error_reply)
{
    struct t *t = t_new();
    pid_t pid = fork();
    int st;

    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        _exit(fsize_child(t));
    }
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st), "child died of signal %d",
                  WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    ck_assert_int_eq(WEXITSTATUS(st), 0);
    /* What was acknowledged is there afterwards, and the store opens. */
    t->cfg.mem_limit = 256 * MB;
    t_open(t);
    {
        struct store_item it;
        char buf[4100];

        ck_assert_int_eq(get(t, "f00000", &it, buf, sizeof(buf)), STORE_OK);
        ck_assert_uint_eq(it.len, 4000);
    }
    t_close(t);
    t_free(t);
}
END_TEST

/*
 * A thread's gets share a read snapshot; every commit made since, by any
 * thread, is still seen by its next get, and a write or idle ends it.
 */
START_TEST(snapshot_sees_every_commit)
{
    struct t *t = t_new();
    struct store_thr *b = NULL;
    struct store_key k = { "k", 1 };
    struct store_item in = { "v2", 2, 0, 0, 0, NULL };
    struct store_item it;
    uint64_t cas = 0;
    char buf[16];

    t_open(t);
    ck_assert_int_eq(ops->attach(t->s, &b), STORE_OK);
    ck_assert_int_eq(put(t, "k", "v1", 2, 0, 0, NULL), STORE_OK);
    ck_assert_int_eq(get(t, "k", &it, buf, sizeof(buf)), STORE_OK);
    ck_assert_str_eq(buf, "v1");
    ck_assert_int_eq(get(t, "k", &it, buf, sizeof(buf)), STORE_OK);
    /* Another thread commits while this one's snapshot is open. */
    ck_assert_int_eq(ops->store(b, &t->c, STORE_SET, &k, &in, &cas),
                     STORE_OK);
    ck_assert_int_eq(get(t, "k", &it, buf, sizeof(buf)), STORE_OK);
    ck_assert_str_eq(buf, "v2");
    ck_assert_uint_eq(it.cas, cas);
    ck_assert_int_eq(ops->del(b, &t->c, &k, 0), STORE_OK);
    ck_assert_int_eq(get(t, "k", &it, buf, sizeof(buf)), STORE_ENOENT);
    /* Its own write, then a get: read-your-writes. */
    ck_assert_int_eq(put(t, "k", "v3", 2, 0, 0, NULL), STORE_OK);
    ck_assert_int_eq(get(t, "k", &it, buf, sizeof(buf)), STORE_OK);
    ck_assert_str_eq(buf, "v3");
    ops->idle(t->thr);
    ops->idle(t->thr);           /* idle twice is harmless */
    ck_assert_int_eq(get(t, "k", &it, buf, sizeof(buf)), STORE_OK);
    ck_assert_str_eq(buf, "v3");
    /* A flush by the other thread hides everything from this one's next
     * get, snapshot or not. */
    ck_assert_int_eq(ops->flush(b, &t->c, t->c.now), STORE_OK);
    ck_assert_int_eq(get(t, "k", &it, buf, sizeof(buf)), STORE_ENOENT);
    ops->detach(&b);
    t_close(t);
    t_free(t);
}
END_TEST

static Suite *
sqlite_suite(void)
{
    Suite *s = suite_create("store_sqlite");
    TCase *tc = tcase_create("sqlite");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, persists_across_reopen);
    tcase_add_test(tc, cas_after_reopen_is_larger);
    tcase_add_test(tc, crash_recounts_and_keeps_cas_growing);
    tcase_add_test(tc, flush_survives_reopen);
    tcase_add_test(tc, locked_dir_refused);
    tcase_add_test(tc, garbage_file_refused_untouched);
    tcase_add_test(tc, foreign_sqlite_refused_untouched);
    tcase_add_test(tc, newer_format_refused);
    tcase_add_test(tc, lmdb_dir_refused);
    tcase_add_test(tc, truncated_file_refused);
    tcase_add_test(tc, empty_file_becomes_store);
    tcase_add_test(tc, missing_dir_created);
    tcase_add_test(tc, schema_readable_with_sqlite3);
    tcase_add_test(tc, limit_evicts_lru);
    tcase_add_test(tc, smaller_limit_after_reopen_trims);
    tcase_add_test(tc, limit_no_evict_enomem);
    tcase_add_test(tc, sweeper_reclaims_expired);
    tcase_add_test(tc, sync_always_completes_once);
    tcase_add_test(tc, group_commit_shares_fsyncs);
    tcase_add_test(tc, stats_lines);
    tcase_add_test(tc, busy_is_an_error_reply);
    tcase_add_test(tc, bad_config_refused);
    tcase_add_test(tc, file_size_limit_is_an_error_reply);
    tcase_add_test(tc, snapshot_sees_every_commit);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(sqlite_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
