/*
 * Helpers for the tests of the persistent backends (check_store_persist.c
 * and the backend-specific check_store_lmdb.c, check_store_sqlite.c): a
 * store on a temporary directory that outlives it, so a test can close,
 * damage a file, crash a child and open again; short put/get calls; stats
 * by name; whole files read and compared. They see storage.h only. The
 * value sink is conformance.h's, the tree removal util.h's. Header-only
 * (static inline) like conformance.h: each test program is one file.
 */
#ifndef STASHD_TESTS_PERSIST_UTIL_H
#define STASHD_TESTS_PERSIST_UTIL_H

#include "tests/conformance.h"

#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MB (1024ull * 1024)

/* Big enough for every value these tests store. */
#define PT_VBUF (64u * 1024u)

/* One store on a directory that outlives it (for reopening). */
struct pt {
    const struct store_ops *ops;
    struct store_cfg        cfg;
    struct store           *s;
    struct store_thr       *thr;
    struct store_call       c;       /* c.now is the test's clock */
    struct conf_sink        sink;
    char                    dir[64];
    char                    err[512]; /* why the last open failed */
    char                    val[PT_VBUF + 1]; /* last value read + NUL */
};

static inline uint32_t
pt_now_s(void)
{
    return (uint32_t)time(NULL);
}

static inline void
pt_sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}

/*
 * The configuration the tests start from: small and quick (no sync unless
 * a test asks, a short interval when it does).
 */
static inline void
pt_cfg(struct pt *t, const char *dir)
{
    memset(&t->cfg, 0, sizeof(t->cfg));
    t->cfg.mem_limit = 64 * MB;
    t->cfg.item_max = 1024 * 1024;
    t->cfg.threads = 4;
    t->cfg.data_dir = dir;
    t->cfg.sync = STORE_SYNC_NONE;
    t->cfg.sync_interval_ms = 100;
    t->cfg.now = pt_now_s();
    t->cfg.err = t->err;
    t->cfg.errlen = sizeof(t->err);
}

/* A fresh temporary directory for ops, with the default configuration. */
static inline struct pt *
pt_new(const struct store_ops *ops)
{
    struct pt *t = calloc(1, sizeof(*t));

    ck_assert_ptr_nonnull(t);
    t->ops = ops;
    snprintf(t->dir, sizeof(t->dir), "/tmp/stashd-%s-XXXXXX", ops->name);
    ck_assert_ptr_nonnull(mkdtemp(t->dir));
    pt_cfg(t, t->dir);
    conf_sink_init(&t->sink);
    return t;
}

/* Removes the directory and frees t; the store must be closed. */
static inline void
pt_free(struct pt *t)
{
    tu_rm_tree(t->dir);
    free(t);
}

/* Opens t->cfg; returns the rc, attaching on success. */
static inline store_rc_e
pt_open_rc(struct pt *t)
{
    store_rc_e rc;

    t->err[0] = '\0';
    rc = t->ops->open(&t->cfg, &t->s);
    if (rc == STORE_OK) {
        ck_assert_int_eq(t->ops->attach(t->s, &t->thr), STORE_OK);
        memset(&t->c, 0, sizeof(t->c));
        t->c.now = t->cfg.now;
        t->c.sink = &t->sink.base;
    }
    return rc;
}

static inline void
pt_open(struct pt *t)
{
    store_rc_e rc = pt_open_rc(t);

    ck_assert_msg(rc == STORE_OK, "open %s %s: %s: %s", t->ops->name,
                  t->cfg.data_dir, store_strerror(rc), t->err);
}

static inline void
pt_close(struct pt *t)
{
    t->ops->detach(&t->thr);
    ck_assert_ptr_null(t->thr);
    t->ops->close(&t->s);
    ck_assert_ptr_null(t->s);
    conf_sink_reset(&t->sink);
}

/* dir/name into out. */
static inline const char *
pt_path(const struct pt *t, const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", t->dir, name);
    return out;
}

/* SET key to val[0, len); *cas (may be NULL) gets the new CAS. */
static inline store_rc_e
pt_put(struct pt *t, const char *key, const void *val, size_t len,
       uint32_t flags, uint32_t exptime, uint64_t *cas)
{
    struct store_key k = { key, strlen(key) };
    struct store_item in = { val, (uint32_t)len, flags, exptime, 0, NULL };
    uint64_t dummy = 0;

    return t->ops->store(t->thr, &t->c, STORE_SET, &k, &in,
                         cas != NULL ? cas : &dummy);
}

/* pt_put of a C string that must succeed. */
static inline void
pt_set(struct pt *t, const char *key, const char *val)
{
    store_rc_e rc = pt_put(t, key, val, strlen(val), 0, 0, NULL);

    ck_assert_msg(rc == STORE_OK, "set %s: %s", key, store_strerror(rc));
}

/* pt_put of keys fmt(0) .. fmt(n - 1) (fmt takes one int), each to
 * val[0, len) and each must succeed. */
static inline void
pt_fill(struct pt *t, const char *fmt, int n, const void *val, size_t len)
{
    char key[64];

    for (int i = 0; i < n; i++) {
        store_rc_e rc;

        snprintf(key, sizeof(key), fmt, i);
        rc = pt_put(t, key, val, len, 0, 0, NULL);
        ck_assert_msg(rc == STORE_OK, "set %s: %s", key, store_strerror(rc));
    }
}

/*
 * Gets key, copies the value into t->val (NUL-terminated) and releases;
 * *out (may be NULL) gets len, flags, exptime and cas.
 */
static inline store_rc_e
pt_get(struct pt *t, const char *key, struct store_item *out)
{
    struct store_key k = { key, strlen(key) };
    struct store_item it;
    store_rc_e rc = t->ops->get(t->thr, &t->c, &k, NULL, &it);

    if (rc == STORE_OK) {
        ck_assert_uint_le(it.len, PT_VBUF);
        memcpy(t->val, it.data, it.len);
        t->val[it.len] = '\0';
        if (out != NULL) {
            *out = it;
            out->data = t->val;
        }
        t->ops->release(t->thr, &it);
        conf_sink_reset(&t->sink);
    }
    return rc;
}

static inline store_rc_e
pt_del(struct pt *t, const char *key)
{
    struct store_key k = { key, strlen(key) };

    return t->ops->del(t->thr, &t->c, &k, 0);
}

/* A stats group's lines, "name value\n" each. */
struct pt_lines {
    char   text[8192];
    size_t len;
};

static inline void
pt_collect(void *arg, const char *name, const char *value)
{
    struct pt_lines *l = arg;
    int n = snprintf(l->text + l->len, sizeof(l->text) - l->len, "%s %s\n",
                     name, value);

    if (n > 0 && l->len + (size_t)n < sizeof(l->text)) {
        l->len += (size_t)n;
    }
}

/* The "" group's lines of t's store. */
static inline void
pt_general(struct pt *t, struct pt_lines *l)
{
    memset(l, 0, sizeof(*l));
    ck_assert_int_eq(t->ops->stats_group(t->thr, "", pt_collect, l),
                     STORE_OK);
}

/* The general stat <backend>_<name> as a number; it must exist. */
static inline uint64_t
pt_stat(struct pt *t, const char *name)
{
    struct pt_lines l;
    char pat[96];
    const char *p;

    pt_general(t, &l);
    snprintf(pat, sizeof(pat), "\n%s_%s ", t->ops->name, name);
    if (strncmp(l.text, pat + 1, strlen(pat + 1)) == 0) {
        p = l.text - 1;
    } else {
        p = strstr(l.text, pat);
    }
    ck_assert_msg(p != NULL, "no stat %s in:\n%s", pat + 1, l.text);
    return strtoull(p + strlen(pat), NULL, 10);
}

static inline uint64_t
pt_items(struct pt *t)
{
    struct store_stats st;

    t->ops->stats(t->thr, &st);
    return st.curr_items;
}

/* Polls the common figures every 20 ms, up to ms, until curr_items is n. */
static inline uint64_t
pt_wait_items(struct pt *t, uint64_t n, int ms)
{
    uint64_t have = pt_items(t);

    for (int waited = 0; have != n && waited < ms; waited += 20) {
        pt_sleep_ms(20);
        have = pt_items(t);
    }
    return have;
}

/* Reads a whole file; *len gets its size. */
static inline unsigned char *
pt_slurp(const char *path, size_t *len)
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

/* Writes p[0, n) at off in path, which must exist. */
static inline void
pt_write_at(const char *path, long off, const void *p, size_t n)
{
    FILE *f = fopen(path, "r+b");

    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    ck_assert_int_eq(fseek(f, off, SEEK_SET), 0);
    ck_assert_uint_eq(fwrite(p, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

/* Writes n pseudo-random bytes (seeded: the same each run) to path. */
static inline void
pt_garbage_file(const char *path, size_t n)
{
    FILE *f = fopen(path, "wb");

    ck_assert_ptr_nonnull(f);
    srand(7);
    for (size_t i = 0; i < n; i++) {
        fputc(rand() & 0xff, f);
    }
    ck_assert_int_eq(fclose(f), 0);
}

/*
 * Opens t expecting rc want, twice (a refusal must leave nothing behind
 * that makes the next one pass): the message names path and says why,
 * and the file at path is byte for byte as it was.
 */
static inline void
pt_expect_refused(struct pt *t, store_rc_e want, const char *path,
                  const char *why)
{
    unsigned char *before;
    unsigned char *after;
    size_t n0;
    size_t n1;

    before = pt_slurp(path, &n0);
    for (int round = 0; round < 2; round++) {
        store_rc_e rc = pt_open_rc(t);

        ck_assert_msg(rc == want, "%s: want %s, got %s (%s)", t->ops->name,
                      store_strerror(want), store_strerror(rc), t->err);
        ck_assert_ptr_null(t->s);
        ck_assert_msg(strstr(t->err, path) != NULL, "want %s in: %s", path,
                      t->err);
        ck_assert_msg(why == NULL || strstr(t->err, why) != NULL,
                      "want \"%s\" in: %s", why, t->err);
        after = pt_slurp(path, &n1);
        ck_assert_uint_eq(n0, n1);
        ck_assert(memcmp(before, after, n0) == 0);
        free(after);
    }
    free(before);
}

/*
 * Runs fn(t, fd) in a child process, which exits with what fn returns
 * (0: all went as it should; a child never returns into Check), and
 * waits for it: it must exit 0, not die of a signal. out[0, n) gets what
 * the child wrote to fd first.
 */
static inline void
pt_in_child(struct pt *t, int (*fn)(struct pt *t, int fd), void *out,
            size_t n)
{
    size_t got = 0;
    int fds[2];
    int st = 0;
    pid_t pid;

    ck_assert_int_eq(pipe(fds), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        _exit(fn(t, fds[1]));
    }
    close(fds[1]);
    while (got < n) {
        ssize_t r = read(fds[0], (char *)out + got, n - got);

        if (r <= 0) {
            break;
        }
        got += (size_t)r;
    }
    close(fds[0]);
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st), "child died of signal %d",
                  WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    ck_assert_msg(WEXITSTATUS(st) == 0, "child exited with %d",
                  WEXITSTATUS(st));
    ck_assert_uint_eq(got, n);
}

/* Runs tests[0, n) as one suite, each in its own process (CK_FORK). */
static inline int
pt_run(const char *name, const TTest *const *tests, size_t n)
{
    Suite *s = suite_create(name);
    TCase *tc = tcase_create(name);

    tcase_set_timeout(tc, 60);
    for (size_t i = 0; i < n; i++) {
        tcase_add_test(tc, tests[i]);
    }
    suite_add_tcase(s, tc);
    return conf_run(s);
}

/*
 * A test program's main: the listed tests (START_TEST names) as one
 * suite. A macro because Check's test names are variables, which only an
 * array inside a function can list.
 */
#define PT_MAIN(suite_name, ...)                                          \
    int                                                                   \
    main(void)                                                            \
    {                                                                     \
        const TTest *const pt_tests_[] = { __VA_ARGS__ };                 \
                                                                          \
        return pt_run((suite_name), pt_tests_,                            \
                      sizeof(pt_tests_) / sizeof(pt_tests_[0]));          \
    }

#endif /* STASHD_TESTS_PERSIST_UTIL_H */
