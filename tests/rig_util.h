/*
 * What the two fault rigs share, check_store_corrupt.c (damaged files) and
 * check_store_powerloss.c (crash images): each builds store directories
 * and opens every one in a forked child under an alarm, a few at a time,
 * then tallies how each check ended. Here: the knobs from the environment,
 * the self-describing values, a one-buffer value sink and the
 * configuration, a store opened with a refusal noted, the pool of checking
 * children (each with a directory of its own and its result in memory
 * shared with the parent), the tally of how checks ended with a few
 * examples of each finding, and a rig's main. Header-only (static inline)
 * like conformance.h, whose configuration and runner it builds on.
 */
#ifndef STASHD_TESTS_RIG_UTIL_H
#define STASHD_TESTS_RIG_UTIL_H

#include "storage/storage.h"
#include "tests/conformance.h"
#include "tests/util.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RIG_SLOTS 4     /* checking children at most at once */
#define RIG_EXN   3     /* examples kept of each kind of finding */
#define RIG_EXLEN 320   /* bytes of one example */

/* ---------------------------------------------------------------- knobs */

/* $name as an unsigned number; dflt when it is unset or empty. */
static inline unsigned
rig_env_uint(const char *name, unsigned dflt)
{
    const char *v = getenv(name);

    return v != NULL && *v != '\0' ? (unsigned)strtoul(v, NULL, 10) : dflt;
}

/* Whether the comma-separated list in $env (unset or empty: everything)
 * names name. */
static inline bool
rig_selected(const char *env, const char *name)
{
    const char *sel = getenv(env);
    size_t n = strlen(name);

    if (sel == NULL || *sel == '\0') {
        return true;
    }
    for (const char *p = strstr(sel, name); p != NULL;
         p = strstr(p + 1, name)) {
        if ((p == sel || p[-1] == ',') && (p[n] == '\0' || p[n] == ',')) {
            return true;
        }
    }
    return false;
}

/* --------------------------------------------------------------- values */

/* splitmix64: the next number after *s (which moves on); a seed replays. */
static inline uint64_t
rig_rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A number drawn from (a, b): the same for the same pair. */
static inline uint64_t
rig_mix(uint64_t a, uint64_t b)
{
    uint64_t s = a * 0x100000001b3ull ^ (b + 0x632be59bd9b4e019ull);

    return rig_rng_next(&s);
}

/*
 * Writes into buf (vmax bytes, vmax > 3000) the value drawn from h for the
 * key name at generation gen, "name|gen|" and filler letters, so any byte
 * out of place is seen; returns its length. Sizes: most 10-199 bytes, some
 * up to 2 KB, a tenth 3 KB to vmax (past a 4 KB page: overflow pages).
 */
static inline size_t
rig_value(uint64_t h, const char *name, uint32_t gen, char *buf, size_t vmax)
{
    uint64_t s = h;
    unsigned r = (unsigned)(h % 100);
    size_t len;
    size_t hl;

    if (r < 60) {
        len = 10 + (h >> 8) % 190;
    } else if (r < 90) {
        len = 200 + (h >> 8) % 1800;
    } else {
        len = 3000 + (h >> 8) % (vmax - 3000);
    }
    hl = (size_t)snprintf(buf, vmax, "%s|%" PRIu32 "|", name, gen);
    len = len < hl ? hl : len;
    for (size_t i = hl; i < len; i++) {
        buf[i] = (char)('a' + rig_rng_next(&s) % 26);
    }
    return len;
}

/* Writes data[0, len) into out (cap bytes, NUL-terminated), cut to fit and
 * with unprintable bytes as '.', for a message; returns out. */
static inline const char *
rig_shown(const void *data, size_t len, char *out, size_t cap)
{
    size_t n = len < cap - 1 ? len : cap - 1;

    for (size_t i = 0; i < n; i++) {
        char ch = ((const char *)data)[i];

        out[i] = ch >= 32 && ch < 127 ? ch : '.';
    }
    out[n] = '\0';
    return out;
}

/* ------------------------------------------------------ the store, used */

/* One buffer the backend copies a value into; one get at a time. */
struct rig_sink {
    struct store_sink base;     /* first: what the backend sees */
    char             *buf;      /* the caller frees it */
    size_t            cap;
};

/* store_sink.reserve: the buffer, grown to len + 1 bytes when smaller. */
static inline void *
rig_sink_reserve(struct store_sink *sk, size_t len)
{
    struct rig_sink *s = (struct rig_sink *)(void *)sk;

    if (len + 1 > s->cap) {
        char *p = realloc(s->buf, len + 1);

        if (p == NULL) {
            return NULL;
        }
        s->buf = p;
        s->cap = len + 1;
    }
    return s->buf;
}

/* An empty sink. */
static inline void
rig_sink_init(struct rig_sink *s)
{
    s->base.reserve = rig_sink_reserve;
    s->buf = NULL;
    s->cap = 0;
}

/* conformance_cfg on dir with sync mode sync every sync_ms; open's message
 * goes to err (errlen bytes, emptied here). */
static inline void
rig_cfg(struct store_cfg *cfg, const char *dir, store_sync_e sync,
        uint32_t sync_ms, char *err, size_t errlen)
{
    conformance_cfg(cfg, dir);
    cfg->sync = sync;
    cfg->sync_interval_ms = sync_ms;
    cfg->err = err;
    cfg->errlen = errlen;
    err[0] = '\0';
}

/* Why a store was refused (in a child's result, shared). */
struct rig_refusal {
    int  refused;
    int  named;                 /* the message names a file of the dir */
    char msg[512];
};

/* Whether msg names a file inside dir ("dir/name..."). */
static inline bool
rig_names_file(const char *msg, const char *dir)
{
    size_t n = strlen(dir);

    for (const char *p = strstr(msg, dir); p != NULL;
         p = strstr(p + 1, dir)) {
        if (p[n] == '/' && p[n + 1] != '\0' && p[n + 1] != ' ' &&
            p[n + 1] != ':') {
            return true;
        }
    }
    return false;
}

/* A store a rig opens through storage.h, and the calling thread's view. */
struct rig_store {
    const struct store_ops *ops;
    struct store_cfg        cfg;      /* the caller's, err = this err */
    struct store           *s;
    struct store_thr       *t;
    struct rig_sink         sink;
    struct store_call       c;        /* c.now is the check's clock */
    char                    err[512];
};

/*
 * Opens backend on rs->cfg and attaches this thread, its calls at now
 * with a one-buffer sink. False when the open is refused (noted in *rf
 * unless NULL: the rc and cfg.err, and whether that names a file of
 * cfg.data_dir) or attach fails (the store closed again, *rf untouched).
 */
static inline bool
rig_store_open(struct rig_store *rs, const char *backend, uint32_t now,
               struct rig_refusal *rf)
{
    store_rc_e rc;

    rs->ops = store_find(backend);
    rs->s = NULL;
    rs->t = NULL;
    rig_sink_init(&rs->sink);
    memset(&rs->c, 0, sizeof(rs->c));
    rs->c.now = now;
    rs->c.sink = &rs->sink.base;
    rc = rs->ops->open(&rs->cfg, &rs->s);
    if (rc != STORE_OK) {
        if (rf != NULL) {
            rf->refused = 1;
            rf->named = rig_names_file(rs->err, rs->cfg.data_dir);
            snprintf(rf->msg, sizeof(rf->msg), "%s: %.300s",
                     store_strerror(rc), rs->err);
        }
        return false;
    }
    if (rs->ops->attach(rs->s, &rs->t) != STORE_OK) {
        rs->ops->close(&rs->s);
        return false;
    }
    return true;
}

/* Detaches, closes, and frees the sink's buffer. */
static inline void
rig_store_close(struct rig_store *rs)
{
    rs->ops->detach(&rs->t);
    rs->ops->close(&rs->s);
    free(rs->sink.buf);
    rs->sink.buf = NULL;
    rs->sink.cap = 0;
}

/* Gets the C-string key into *it (zeroed first); the caller releases a
 * STORE_OK one (rig_release). */
static inline store_rc_e
rig_get(struct rig_store *rs, const char *key, struct store_item *it)
{
    struct store_key k = { key, strlen(key) };

    memset(it, 0, sizeof(*it));
    return rs->ops->get(rs->t, &rs->c, &k, NULL, it);
}

/* Ends the borrow of a rig_get value. */
static inline void
rig_release(struct rig_store *rs, struct store_item *it)
{
    rs->ops->release(rs->t, it);
}

/* SETs the C-string key to val[0, len) with flags and exptime; *cas gets
 * the new CAS. */
static inline store_rc_e
rig_set(struct rig_store *rs, const char *key, const void *val, size_t len,
        uint32_t flags, uint32_t exptime, uint64_t *cas)
{
    struct store_key k = { key, strlen(key) };
    struct store_item in = { val, (uint32_t)len, flags, exptime, 0, NULL };

    return rs->ops->store(rs->t, &rs->c, STORE_SET, &k, &in, cas);
}

/* ------------------------------------------------------------ processes */

/* size bytes of zeroed memory shared with the children forked after. */
static inline void *
rig_shared(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    ck_assert_ptr_ne(p, MAP_FAILED);
    return p;
}

/* A fresh directory "$TMPDIR/name-XXXXXX" (/tmp when TMPDIR is unset,
 * empty or long) into dir (cap bytes). */
static inline void
rig_mkdtemp(char *dir, size_t cap, const char *name)
{
    const char *tmp = getenv("TMPDIR");

    if (tmp == NULL || *tmp == '\0' || strlen(tmp) > 200) {
        tmp = "/tmp";
    }
    snprintf(dir, cap, "%s/%s-XXXXXX", tmp, name);
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

/*
 * fork with nothing buffered twice; returns 0 in the child, its pid in
 * the parent. The child gets the default SIGALRM: Check's own handler
 * (inherited through the fork) kills the whole process group, and a
 * child's alarm must kill only the child.
 */
static inline pid_t
rig_fork(void)
{
    pid_t pid;

    fflush(stdout);
    fflush(stderr);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        signal(SIGALRM, SIG_DFL);
    }
    return pid;
}

/* Waits for child pid, which must exit 0; else the test fails with what
 * (printf-style) "failed". */
static inline void
rig_wait_ok(pid_t pid, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static inline void
rig_wait_ok(pid_t pid, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    int status;

    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "%s failed (status 0x%x)", what, status);
}

/* One checking child's place. */
struct rig_slot {
    pid_t           pid;        /* 0: free */
    struct timespec start;
    void           *res;        /* its result, shared with the child */
    char            dir[320];   /* the slot's: stderr, pristine copy */
    char            data[336];  /* the directory checked: dir/d */
};

/* The checking children. */
struct rig_pool {
    int             n;
    unsigned        timeout_s;  /* each child's alarm */
    double          slow_ms;    /* a check that takes longer is slow */
    size_t          res_size;
    struct rig_slot s[RIG_SLOTS];
};

/* How a child ended: its slot (free again), wait status, run time. */
struct rig_reaped {
    int    slot;
    int    status;
    double ms;
};

/*
 * n (up to RIG_SLOTS) empty slots in directories base/slot<i>, each with
 * res_size bytes of shared result; a child gets timeout_s before its
 * alarm, and counts as slow after slow_ms.
 */
static inline void
rig_pool_init(struct rig_pool *p, int n, const char *base, size_t res_size,
              unsigned timeout_s, double slow_ms)
{
    ck_assert_int_le(n, RIG_SLOTS);
    memset(p, 0, sizeof(*p));
    p->n = n;
    p->timeout_s = timeout_s;
    p->slow_ms = slow_ms;
    p->res_size = res_size;
    for (int i = 0; i < n; i++) {
        struct rig_slot *sl = &p->s[i];

        sl->res = rig_shared(res_size);
        snprintf(sl->dir, sizeof(sl->dir), "%s/slot%d", base, i);
        snprintf(sl->data, sizeof(sl->data), "%s/slot%d/d", base, i);
        ck_assert_int_eq(mkdir(sl->dir, 0700), 0);
    }
}

/* Unmaps the results; every child must have been reaped. */
static inline void
rig_pool_deinit(struct rig_pool *p)
{
    for (int i = 0; i < p->n; i++) {
        munmap(p->s[i].res, p->res_size);
    }
}

/* A free slot, or -1 when every one runs a child. */
static inline int
rig_pool_idle(const struct rig_pool *p)
{
    for (int i = 0; i < p->n; i++) {
        if (p->s[i].pid == 0) {
            return i;
        }
    }
    return -1;
}

/* Whether any slot runs a child. */
static inline bool
rig_pool_busy(const struct rig_pool *p)
{
    for (int i = 0; i < p->n; i++) {
        if (p->s[i].pid != 0) {
            return true;
        }
    }
    return false;
}

/* Empties slot i's data directory for the next check. */
static inline void
rig_pool_fresh(struct rig_pool *p, int i)
{
    tu_rm_tree(p->s[i].data);
    ck_assert_int_eq(mkdir(p->s[i].data, 0700), 0);
}

/* Copies slot i's data to dir/pristine: the check writes to the data,
 * a copy kept after a failure must be what it was given. */
static inline void
rig_pool_pristine(const struct rig_pool *p, int i)
{
    char cmd[1200];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s/pristine' && cp -r '%s' "
             "'%s/pristine'", p->s[i].dir, p->s[i].data, p->s[i].dir);
    ck_assert_int_eq(system(cmd), 0);
}

/*
 * Forks the check of free slot i (its result zeroed); returns 0 in the
 * child, whose stderr goes to dir/stderr and whose alarm is set, and
 * which must _exit; the child's pid in the parent.
 */
static inline pid_t
rig_pool_fork(struct rig_pool *p, int i)
{
    struct rig_slot *sl = &p->s[i];
    pid_t pid;

    memset(sl->res, 0, p->res_size);
    pid = rig_fork();
    if (pid == 0) {
        char errpath[400];
        int fd;

        snprintf(errpath, sizeof(errpath), "%s/stderr", sl->dir);
        fd = open(errpath, O_CREAT | O_TRUNC | O_WRONLY, 0600);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        alarm(p->timeout_s);
        return 0;
    }
    sl->pid = pid;
    clock_gettime(CLOCK_MONOTONIC, &sl->start);
    return pid;
}

/* Waits for any slot's child to end and frees its slot. */
static inline struct rig_reaped
rig_pool_reap(struct rig_pool *p)
{
    struct rig_reaped r = { -1, 0, 0.0 };
    struct timespec now;
    pid_t pid;

    do {
        pid = waitpid(-1, &r.status, 0);
    } while (pid < 0 && errno == EINTR);
    ck_assert_int_gt(pid, 0);
    clock_gettime(CLOCK_MONOTONIC, &now);
    for (int i = 0; i < p->n; i++) {
        struct rig_slot *sl = &p->s[i];

        if (sl->pid == pid) {
            r.slot = i;
            r.ms = (double)(now.tv_sec - sl->start.tv_sec) * 1e3 +
                   (double)(now.tv_nsec - sl->start.tv_nsec) / 1e6;
            sl->pid = 0;
            return r;
        }
    }
    ck_abort_msg("reaped an unknown child %d", (int)pid);
    return r;
}

/*
 * Copies slot i's pristine copy to /tmp/<name>-kept-<pid>-<id>-<what>
 * (its path into to, cap bytes), the first time only for each what (up to
 * 8 of them); true when it was copied.
 */
static inline bool
rig_keep(const struct rig_pool *p, int i, const char *name, unsigned id,
         const char *what, char *to, size_t cap)
{
    static char kept[8][16];
    char cmd[800];
    unsigned k;

    for (k = 0; k < 8 && kept[k][0] != '\0'; k++) {
        if (strcmp(kept[k], what) == 0) {
            return false;
        }
    }
    if (k == 8) {
        return false;
    }
    snprintf(kept[k], sizeof(kept[k]), "%s", what);
    snprintf(to, cap, "/tmp/%s-kept-%d-%u-%s", name, (int)getpid(), id,
             what);
    snprintf(cmd, sizeof(cmd), "cp -r '%s/pristine' '%s'", p->s[i].dir, to);
    return system(cmd) == 0;
}

/* -------------------------------------------------------------- tallies */

/* Kinds of findings. */
enum rig_kind {
    RIG_CRASH = 0,
    RIG_HANG,
    RIG_WRONG,      /* a value served that was never stored */
    RIG_LOST,       /* a write that had to last did not */
    RIG_OTHER,
    RIG_NKINDS
};

/* The kind's name in a report. */
static inline const char *
rig_kind_name(enum rig_kind k)
{
    static const char *const names[RIG_NKINDS] = {
        "crash", "hang", "wrong", "lost", "other",
    };

    return names[k];
}

/* A few example lines of one kind. */
struct rig_ex {
    unsigned n;
    char     s[RIG_EXN][RIG_EXLEN];
};

/* Adds a line (printf-style) unless RIG_EXN are kept already. */
static inline void
rig_ex_add(struct rig_ex *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static inline void
rig_ex_add(struct rig_ex *e, const char *fmt, ...)
{
    va_list ap;

    if (e->n >= RIG_EXN) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(e->s[e->n++], RIG_EXLEN, fmt, ap);
    va_end(ap);
}

/* How the checks of one kind of directory ended. */
struct rig_tally {
    unsigned      checks;
    unsigned      opened;
    unsigned      refused;
    unsigned      unnamed;      /* refused without naming a file */
    unsigned      crashes;
    unsigned      hangs;
    unsigned      slow;         /* checks over the pool's slow_ms */
    double        max_ms;
    struct rig_ex refusals;
    struct rig_ex ex[RIG_NKINDS];
};

/* How a check ended. */
enum rig_end { RIG_HUNG, RIG_CRASHED, RIG_REFUSED, RIG_OPENED };

/* The line of a crashed child's stderr (in dir) that says why, if any:
 * an assertion or an error, else the first. */
static inline void
rig_crash_line(const char *dir, char *out, size_t cap)
{
    char path[400];
    char buf[4096];
    FILE *f;

    out[0] = '\0';
    snprintf(path, sizeof(path), "%s/stderr", dir);
    f = fopen(path, "r");
    if (f == NULL) {
        return;
    }
    while (fgets(buf, sizeof(buf), f) != NULL) {
        buf[strcspn(buf, "\n")] = '\0';
        if (out[0] == '\0' || strstr(buf, "ssert") != NULL ||
            strstr(buf, "ERROR") != NULL) {
            snprintf(out, cap, "%.200s", buf);
        }
    }
    fclose(f);
}

/*
 * Folds the end of the check r reaped from p into t: a hang (its alarm),
 * a crash (a signal, an exit other than 0, or done unset), a refusal (rf)
 * or an open store, with an example line for all but the last (at names
 * the check). Returns which.
 */
static inline enum rig_end
rig_tally_end(struct rig_tally *t, const struct rig_pool *p,
              const struct rig_reaped *r, int done,
              const struct rig_refusal *rf, const char *at)
{
    int st = r->status;

    t->checks++;
    t->max_ms = r->ms > t->max_ms ? r->ms : t->max_ms;
    t->slow += r->ms > p->slow_ms;
    if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM) {
        t->hangs++;
        rig_ex_add(&t->ex[RIG_HANG], "%s: no answer in %u s", at,
                   p->timeout_s);
        return RIG_HUNG;
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || !done) {
        char why[RIG_EXLEN];

        rig_crash_line(p->s[r->slot].dir, why, sizeof(why));
        t->crashes++;
        if (WIFSIGNALED(st)) {
            rig_ex_add(&t->ex[RIG_CRASH], "%s: signal %d (%s) %s", at,
                       WTERMSIG(st), strsignal(WTERMSIG(st)), why);
        } else {
            rig_ex_add(&t->ex[RIG_CRASH], "%s: exit %d %s", at,
                       WIFEXITED(st) ? WEXITSTATUS(st) : -1, why);
        }
        return RIG_CRASHED;
    }
    if (rf->refused) {
        t->refused++;
        if (!rf->named) {
            t->unnamed++;
            rig_ex_add(&t->ex[RIG_OTHER], "%s: refused without naming a "
                       "file: %s", at, rf->msg);
        }
        rig_ex_add(&t->refusals, "%.300s", rf->msg);
        return RIG_REFUSED;
    }
    t->opened++;
    return RIG_OPENED;
}

/* Prints t's refusals and examples, a line each, after indent. */
static inline void
rig_tally_print_ex(const struct rig_tally *t, const char *indent)
{
    for (unsigned i = 0; i < t->refusals.n; i++) {
        printf("%srefusal: %s\n", indent, t->refusals.s[i]);
    }
    for (int k = 0; k < RIG_NKINDS; k++) {
        for (unsigned i = 0; i < t->ex[k].n; i++) {
            printf("%s%s: %s\n", indent, rig_kind_name((enum rig_kind)k),
                   t->ex[k].s[i]);
        }
    }
}

/* ----------------------------------------------------------------- main */

/*
 * A rig's main: test (a START_TEST name) as a loop test over cases [0, n),
 * in suite name and a test case of the test's name, with timeout_s each
 * (a rig runs long, and a hang it finds costs the child's alarm); returns
 * the exit status.
 */
static inline int
rig_run(const char *name, const TTest *test, int n, double timeout_s)
{
    Suite *s = suite_create(name);
    TCase *tc = tcase_create(test->name);

    tcase_set_timeout(tc, timeout_s);
    tcase_add_loop_test(tc, test, 0, n);
    suite_add_tcase(s, tc);
    return conf_run(s);
}

#endif /* STASHD_TESTS_RIG_UTIL_H */
