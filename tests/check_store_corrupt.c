/*
 * Damaged files, for each persistent backend: a store of a few thousand
 * keys (values from a few bytes to 12 KB, a tenth already expired when it
 * is checked) is built through storage.h and closed (for sqlite also a
 * variant copied while open, its last commits still in the WAL), then each
 * trial copies it, damages one store file once (a flipped bit, a few
 * overwritten bytes, a zeroed 512-byte sector or 4 KB page, at offsets
 * spread over the file, plus pages named by the issue), and in a forked
 * child under an alarm opens it, gets every key, sets some, lets the
 * maintenance thread sweep and evict for a while (the -m given is below
 * what is stored), reads its own sets back and closes. The contract: the
 * store opens or is refused with a message naming the file; never a crash
 * or a hang; a value served is exactly the one stored (value, flags,
 * exptime), never an expired one, else the key is absent. Knobs
 * (environment): STASHD_CORRUPT_TRIALS (random trials per store file; 0:
 * the defaults below, a third of them under ASan), STASHD_CORRUPT_CASES
 * ("lmdb,sqlite-wal"; unset: all), STASHD_CORRUPT_SEED,
 * STASHD_CORRUPT_TIMEOUT (s per trial, 10; 30 under ASan),
 * STASHD_CORRUPT_KEEP=1 (keep the first failing copy of each kind and
 * print its path).
 */
#include "storage/storage.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NKEYS      2500u
#define NWAL       400u             /* open copy: keys only in the WAL */
#define NSETS      40u              /* keys set by each check */
#define NOW0       1700000000u
#define NOW_CHECK  (NOW0 + 3600u)  /* a tenth of the keys expired by then */
#define VMAX       12288u
#define NSLOTS     4                /* checks mostly sleep: run 4 at once */
#define SETTLE_MS  300              /* the maintenance thread's turn */
/* A check that takes this long hangs (a healthy one takes well under 1 s;
 * ASan makes some take seconds on a loaded machine). */
#if defined(__SANITIZE_ADDRESS__)
#define TIMEOUT_S   30u
#define TRIALS_DIV  3u   /* sqlite through ASan's allocator: 6x slower */
#else
#define TIMEOUT_S   10u
#define TRIALS_DIV  1u
#endif
#define EXLEN      320
#define EXN        3
#define PAGE       4096u
#define SECTOR     512u
#define MAXFILES   2

/* One stored store to damage. */
struct variant {
    const char *name;
    const char *backend;
    bool        open_copy;          /* copied while open: WAL kept */
    const char *files[MAXFILES];    /* the store files, NULL-terminated */
    unsigned    trials[MAXFILES];   /* random trials per file */
};

static const struct variant variants[] = {
#ifdef STASHD_HAVE_LMDB
    { "lmdb", "lmdb", false, { "data.mdb", NULL }, { 180, 0 } },
#endif
#ifdef STASHD_HAVE_SQLITE
    { "sqlite", "sqlite", false, { "stashd.db", NULL }, { 120, 0 } },
    { "sqlite-wal", "sqlite", true, { "stashd.db", "stashd.db-wal" },
      { 40, 100 } },
#endif
};
#define NVARIANTS ((int)(sizeof(variants) / sizeof(variants[0])))

typedef enum damage {
    DMG_BIT = 0,        /* one bit flipped */
    DMG_BYTES,          /* 1-16 bytes overwritten with random ones */
    DMG_SECTOR,         /* a 512-byte sector zeroed */
    DMG_PAGE,           /* a 4 KB page zeroed */
    DMG_NKINDS
} damage_e;

static const char *const damage_names[DMG_NKINDS] = {
    "bit flip", "bytes overwritten", "sector zeroed", "page zeroed",
};

struct trial {
    unsigned file;
    damage_e kind;
    uint64_t off;
    unsigned len;       /* DMG_BYTES */
    uint64_t rnd;       /* the bit, the bytes */
};

static uint64_t
rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static unsigned
env_uint(const char *name, unsigned dflt)
{
    const char *v = getenv(name);

    return v != NULL && *v != '\0' ? (unsigned)strtoul(v, NULL, 10) : dflt;
}

/* Whether $STASHD_CORRUPT_CASES (unset: all) names this variant. */
static bool
selected(const char *name)
{
    const char *sel = getenv("STASHD_CORRUPT_CASES");
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

/* The stored data: every value says whose it is. */

static uint64_t
mix(uint64_t a, uint64_t b)
{
    uint64_t s = a * 0x100000001b3ull ^ (b + 0x632be59bd9b4e019ull);

    return rng_next(&s);
}

static void
key_name(unsigned k, bool fresh, char *buf, size_t cap)
{
    snprintf(buf, cap, fresh ? "ck:new:%u" : "ck:%u", k);
}

/* Every tenth key expires at NOW0 + 60: dead when checked. */
static uint32_t
key_exptime(unsigned k)
{
    return k % 10 == 3 ? NOW0 + 60 : 0;
}

static uint32_t
val_flags(unsigned k, unsigned gen)
{
    return (uint32_t)(mix(k, gen) >> 32);
}

/* value(k, gen): "k|gen|" and filler; gen 1 is the stored store. */
static size_t
val_gen(unsigned k, unsigned gen, bool fresh, char *buf)
{
    uint64_t h = mix(k + (fresh ? 1000000u : 0), gen);
    uint64_t s = h;
    unsigned r = (unsigned)(h % 100);
    char name[32];
    size_t len;
    size_t hl;

    if (r < 60) {
        len = 10 + (h >> 8) % 190;
    } else if (r < 90) {
        len = 200 + (h >> 8) % 1800;
    } else {
        len = 3000 + (h >> 8) % (VMAX - 3000);
    }
    key_name(k, fresh, name, sizeof(name));
    hl = (size_t)snprintf(buf, VMAX, "%s|%u|", name, gen);
    len = len < hl ? hl : len;
    for (size_t i = hl; i < len; i++) {
        buf[i] = (char)('a' + rng_next(&s) % 26);
    }
    return len;
}

/* One buffer the backend copies a value into; one get at a time. */
struct sink {
    struct store_sink base;     /* first: what the backend sees */
    char             *buf;
    size_t            cap;
};

static void *
sink_reserve(struct store_sink *sk, size_t len)
{
    struct sink *s = (struct sink *)(void *)sk;

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

static void
cfg_init(struct store_cfg *cfg, const char *dir, uint64_t mem_limit,
         uint32_t now, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->mem_limit = mem_limit;
    cfg->item_max = 1024 * 1024;
    cfg->chunk_min = 48;
    cfg->factor = 1.25;
    cfg->threads = 2;
    cfg->data_dir = dir;
    cfg->sync = STORE_SYNC_PERIODIC;
    cfg->sync_interval_ms = 50;
    cfg->now = now;
    cfg->err = err;
    cfg->errlen = errlen;
    err[0] = '\0';
}

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

static bool
copy_file(const char *from, const char *to)
{
    char buf[65536];
    int in = open(from, O_RDONLY);
    int out = in >= 0 ? open(to, O_CREAT | O_TRUNC | O_WRONLY, 0600) : -1;
    bool ok = in >= 0 && out >= 0;
    ssize_t n;

    while (ok && (n = read(in, buf, sizeof(buf))) != 0) {
        ok = n > 0 && write(out, buf, (size_t)n) == n;
    }
    if (in >= 0) {
        close(in);
    }
    if (out >= 0) {
        close(out);
    }
    return ok;
}

/* Opens dir for building; exits the (child) process when it cannot. */
static void
build_open(const struct variant *vr, const char *dir, struct store **s,
           struct store_thr **t)
{
    const struct store_ops *ops = store_find(vr->backend);
    struct store_cfg cfg;
    char err[512];

    cfg_init(&cfg, dir, 256ull << 20, NOW0, err, sizeof(err));
    if (ops->open(&cfg, s) != STORE_OK || ops->attach(*s, t) != STORE_OK) {
        fprintf(stderr, "build: %s\n", err);
        _exit(2);
    }
}

/* Sets keys [from, to) to generation 1; exits the child on failure. */
static uint64_t
build_set(const struct variant *vr, struct store_thr *t, unsigned from,
          unsigned to, char *buf)
{
    const struct store_ops *ops = store_find(vr->backend);
    struct store_call c = { NOW0, NULL, NULL, false };
    uint64_t bytes = 0;

    for (unsigned k = from; k < to; k++) {
        char name[32];
        size_t len = val_gen(k, 1, false, buf);
        struct store_key key = { name, 0 };
        struct store_item in = { buf, (uint32_t)len, val_flags(k, 1),
                                 key_exptime(k), 0, NULL };
        uint64_t cas = 0;

        key_name(k, false, name, sizeof(name));
        key.len = strlen(name);
        if (ops->store(t, &c, STORE_SET, &key, &in, &cas) != STORE_OK) {
            _exit(3);
        }
        bytes += len;
    }
    return bytes;
}

/*
 * Builds the store in dir/live (in a child: the store's threads must not
 * outlive it) and leaves its files in dir/base, after close; or, for an
 * open copy, a closed store reopened for the last NWAL keys and copied
 * while still open, so those commits are only in the WAL. Returns the
 * bytes of item data stored.
 */
static uint64_t
build_base(const struct variant *vr, const char *dir)
{
    const struct store_ops *ops = store_find(vr->backend);
    char live[300];
    char base[300];
    uint64_t *bytes = mmap(NULL, sizeof(*bytes), PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    uint64_t total;
    int status;
    pid_t pid;

    ck_assert_ptr_ne(bytes, MAP_FAILED);
    snprintf(live, sizeof(live), "%s/live", dir);
    snprintf(base, sizeof(base), "%s/base", dir);
    ck_assert_int_eq(mkdir(base, 0700), 0);
    fflush(stdout);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct store *s = NULL;
        struct store_thr *t = NULL;
        char *buf = malloc(VMAX);
        unsigned split = vr->open_copy ? NKEYS - NWAL : NKEYS;

        if (buf == NULL) {
            _exit(2);
        }
        build_open(vr, live, &s, &t);
        *bytes += build_set(vr, t, 0, split, buf);
        ops->detach(&t);
        ops->close(&s);
        if (vr->open_copy) {
            build_open(vr, live, &s, &t);
            *bytes += build_set(vr, t, split, NKEYS, buf);
        }
        /* Open: what a crash would leave, the last commits in the WAL. */
        for (unsigned f = 0; f < MAXFILES && vr->files[f] != NULL; f++) {
            char from[400];
            char to[400];

            snprintf(from, sizeof(from), "%s/%s", live, vr->files[f]);
            snprintf(to, sizeof(to), "%s/%s", base, vr->files[f]);
            if (!copy_file(from, to)) {
                _exit(4);
            }
        }
        _exit(0);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "%s: building the store failed (0x%x)", vr->name, status);
    rm_tree(live);
    total = *bytes;
    munmap(bytes, sizeof(*bytes));
    return total;
}

/* What one check found (shared with the child). */
enum ex_kind { EX_CRASH, EX_HANG, EX_WRONG, EX_OTHER, EX_NKINDS };
static const char *const ex_names[EX_NKINDS] = {
    "crash", "hang", "wrong", "other",
};

struct result {
    int      done;
    int      refused;
    int      named;
    char     refmsg[400];
    unsigned wrong;
    unsigned absent;        /* stored keys not served */
    unsigned rderr;
    unsigned set_fail;
    unsigned set_lost;      /* own sets not read back */
    char     ex[EXLEN];
};

/* Whether msg names a file inside dir ("dir/name..."). */
static bool
names_file(const char *msg, const char *dir)
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

static void
res_wrong(struct result *res, const char *name, const struct store_item *it,
          const char *why)
{
    char shown[40];
    size_t n = it->len < sizeof(shown) - 1 ? it->len : sizeof(shown) - 1;

    res->wrong++;
    if (res->ex[0] != '\0') {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = ((const char *)it->data)[i];

        shown[i] = ch >= 32 && ch < 127 ? ch : '.';
    }
    shown[n] = '\0';
    snprintf(res->ex, sizeof(res->ex), "%s: %s (%u bytes \"%s...\")", name,
             why, it->len, shown);
}

/* Checks a served value against value(k, gen) and its metadata. */
static void
check_value(struct result *res, unsigned k, unsigned gen, bool fresh,
            const struct store_item *it, char *expect)
{
    size_t len = val_gen(k, gen, fresh, expect);
    uint32_t exp = fresh || gen != 1 ? 0 : key_exptime(k);
    char name[32];
    char why[128];

    key_name(k, fresh, name, sizeof(name));
    if (exp != 0 && exp <= NOW_CHECK) {
        res_wrong(res, name, it, "served after it expired");
    } else if (it->len != len || memcmp(it->data, expect, len) != 0) {
        size_t i = 0;

        while (i < len && i < it->len &&
               ((const char *)it->data)[i] == expect[i]) {
            i++;
        }
        snprintf(why, sizeof(why), "not the value stored (%zu bytes, "
                 "first difference at byte %zu)", len, i);
        res_wrong(res, name, it, why);
    } else if (it->flags != val_flags(k, gen)) {
        snprintf(why, sizeof(why), "flags %u, stored %u", it->flags,
                 val_flags(k, gen));
        res_wrong(res, name, it, why);
    } else if (it->exptime != exp) {
        snprintf(why, sizeof(why), "exptime %u, stored %u", it->exptime,
                 exp);
        res_wrong(res, name, it, why);
    }
}

/* Opens the damaged copy in dir and uses it; in the forked child. */
static void
check_copy(const char *backend, const char *dir, uint64_t mem_limit,
           struct result *res)
{
    const struct store_ops *ops = store_find(backend);
    struct store_cfg cfg;
    struct store *s = NULL;
    struct store_thr *t = NULL;
    struct sink sk = { { sink_reserve }, NULL, 0 };
    struct store_call c = { NOW_CHECK, &sk.base, NULL, false };
    char err[512];
    char *buf = malloc(VMAX);
    bool set_ok[NSETS];
    struct timespec nap = { SETTLE_MS / 1000,
                            (SETTLE_MS % 1000) * 1000L * 1000L };
    store_rc_e rc;

    cfg_init(&cfg, dir, mem_limit, NOW_CHECK, err, sizeof(err));
    rc = ops->open(&cfg, &s);
    if (rc != STORE_OK) {
        res->refused = 1;
        res->named = names_file(err, dir);
        snprintf(res->refmsg, sizeof(res->refmsg), "%s: %.300s",
                 store_strerror(rc), err);
        return;
    }
    if (ops->attach(s, &t) != STORE_OK) {
        snprintf(res->ex, sizeof(res->ex), "attach failed");
        res->set_fail++;
        ops->close(&s);
        return;
    }
    for (unsigned k = 0; k < NKEYS; k++) {
        char name[32];
        struct store_key key = { name, 0 };
        struct store_item it;

        key_name(k, false, name, sizeof(name));
        key.len = strlen(name);
        memset(&it, 0, sizeof(it));
        rc = ops->get(t, &c, &key, NULL, &it);
        if (rc == STORE_OK) {
            check_value(res, k, 1, false, &it, buf);
            ops->release(t, &it);
        } else if (rc == STORE_ENOENT) {
            res->absent += key_exptime(k) == 0;
        } else {
            res->rderr++;
        }
    }
    /* Half overwrite stored keys, half are new. */
    for (unsigned i = 0; i < NSETS; i++) {
        bool fresh = i % 2 == 1;
        unsigned k = fresh ? i : i * 61 % NKEYS;
        char name[32];
        size_t len = val_gen(k, 2, fresh, buf);
        struct store_key key = { name, 0 };
        struct store_item in = { buf, (uint32_t)len, val_flags(k, 2), 0, 0,
                                 NULL };
        uint64_t cas = 0;

        key_name(k, fresh, name, sizeof(name));
        key.len = strlen(name);
        rc = ops->store(t, &c, STORE_SET, &key, &in, &cas);
        set_ok[i] = rc == STORE_OK;
        res->set_fail += !set_ok[i];
    }
    nanosleep(&nap, NULL);
    for (unsigned i = 0; i < NSETS; i++) {
        bool fresh = i % 2 == 1;
        unsigned k = fresh ? i : i * 61 % NKEYS;
        char name[32];
        struct store_key key = { name, 0 };
        struct store_item it;

        key_name(k, fresh, name, sizeof(name));
        key.len = strlen(name);
        memset(&it, 0, sizeof(it));
        rc = ops->get(t, &c, &key, NULL, &it);
        if (rc == STORE_OK) {
            /* A failed set may have left the old value, nothing else. */
            if (set_ok[i] || fresh) {
                check_value(res, k, 2, fresh, &it, buf);
            } else {
                check_value(res, k, 1, false, &it, buf);
            }
            ops->release(t, &it);
        } else if (set_ok[i]) {
            res->set_lost++;
        }
    }
    ops->detach(&t);
    ops->close(&s);
    free(sk.buf);
    free(buf);
}

/* The driver. */

struct tally {
    unsigned trials;
    unsigned opened;
    unsigned refused;
    unsigned unnamed;
    unsigned crashes;
    unsigned hangs;
    unsigned wrong;         /* trials that served a wrong value */
    unsigned wrong_vals;
    unsigned rderr;         /* trials with read errors */
    unsigned set_fail;      /* trials where a set failed */
    unsigned set_lost;
    unsigned absent;        /* trials missing live keys (evicted, lost) */
    unsigned slow;          /* trials over 2 s */
    double   max_ms;
    unsigned by_kind[DMG_NKINDS][4]; /* opened, refused, crash+hang, wrong */
    unsigned by_file[MAXFILES][4];   /* the same, by the file damaged */
    unsigned nref;
    char     ref[EXN][EXLEN];
    unsigned nex[EX_NKINDS];
    char     ex[EX_NKINDS][EXN][EXLEN];
};

struct slot {
    pid_t           pid;
    struct timespec start;
    struct trial    tr;
    unsigned        id;
    struct result  *res;
    char            dir[300];
    char            data[320];
};

static void
tally_ex(struct tally *t, enum ex_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
tally_ex(struct tally *t, enum ex_kind kind, const char *fmt, ...)
{
    va_list ap;

    if (t->nex[kind] >= EXN) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(t->ex[kind][t->nex[kind]++], EXLEN, fmt, ap);
    va_end(ap);
}

/* The line of a crashed child's stderr that says why, if any. */
static void
crash_line(const char *dir, char *out, size_t cap)
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

static void
trial_name(const struct variant *vr, const struct slot *sl, char *buf,
           size_t cap)
{
    const struct trial *tr = &sl->tr;

    if (tr->kind == DMG_PAGE) {
        snprintf(buf, cap, "trial %u: %s page %" PRIu64 " zeroed", sl->id,
                 vr->files[tr->file], tr->off / PAGE);
    } else if (tr->kind == DMG_SECTOR) {
        snprintf(buf, cap, "trial %u: %s sector at %" PRIu64 " zeroed",
                 sl->id, vr->files[tr->file], tr->off);
    } else if (tr->kind == DMG_BIT) {
        snprintf(buf, cap, "trial %u: %s bit %u of byte %" PRIu64
                 " flipped", sl->id, vr->files[tr->file],
                 (unsigned)(tr->rnd % 8), tr->off);
    } else {
        snprintf(buf, cap, "trial %u: %s %u bytes at %" PRIu64
                 " overwritten", sl->id, vr->files[tr->file], tr->len,
                 tr->off);
    }
}

static void
keep_copy(const struct slot *sl, const char *what)
{
    static char kept[8][16];
    char cmd[800];
    unsigned i;

    if (env_uint("STASHD_CORRUPT_KEEP", 0) == 0) {
        return;
    }
    for (i = 0; i < 8 && kept[i][0] != '\0'; i++) {
        if (strcmp(kept[i], what) == 0) {
            return;
        }
    }
    if (i == 8) {
        return;
    }
    snprintf(kept[i], sizeof(kept[i]), "%s", what);
    snprintf(cmd, sizeof(cmd), "cp -r '%s/pristine' "
             "'/tmp/stashd-corrupt-kept-%d-%u-%s'", sl->dir, (int)getpid(),
             sl->id, what);
    if (system(cmd) == 0) {
        printf("kept trial %u (%s) in /tmp/stashd-corrupt-kept-%d-%u-%s\n",
               sl->id, what, (int)getpid(), sl->id, what);
    }
}

static void
slot_done(const struct variant *vr, const struct slot *sl, int status,
          unsigned timeout_s, struct tally *t)
{
    const struct result *res = sl->res;
    unsigned *bk = t->by_kind[sl->tr.kind];
    unsigned *bf = t->by_file[sl->tr.file];
    char at[160];
    char why[EXLEN];
    struct timespec now;
    double ms;

    clock_gettime(CLOCK_MONOTONIC, &now);
    ms = (double)(now.tv_sec - sl->start.tv_sec) * 1e3 +
         (double)(now.tv_nsec - sl->start.tv_nsec) / 1e6;
    t->max_ms = ms > t->max_ms ? ms : t->max_ms;
    t->slow += ms > 2000.0;
    trial_name(vr, sl, at, sizeof(at));
    t->trials++;
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) {
        t->hangs++;
        bk[2]++;
        bf[2]++;
        tally_ex(t, EX_HANG, "%s: no answer in %u s", at, timeout_s);
        keep_copy(sl, "hang");
        return;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !res->done) {
        crash_line(sl->dir, why, sizeof(why));
        t->crashes++;
        bk[2]++;
        bf[2]++;
        if (WIFSIGNALED(status)) {
            tally_ex(t, EX_CRASH, "%s: signal %d (%s) %s", at,
                     WTERMSIG(status), strsignal(WTERMSIG(status)), why);
        } else {
            tally_ex(t, EX_CRASH, "%s: exit %d %s", at,
                     WIFEXITED(status) ? WEXITSTATUS(status) : -1, why);
        }
        keep_copy(sl, "crash");
        return;
    }
    if (res->refused) {
        t->refused++;
        bk[1]++;
        bf[1]++;
        if (!res->named) {
            t->unnamed++;
            tally_ex(t, EX_OTHER, "%s: refused without naming the file: %s",
                     at, res->refmsg);
        }
        if (t->nref < EXN) {
            snprintf(t->ref[t->nref++], EXLEN, "%.300s", res->refmsg);
        }
        return;
    }
    t->opened++;
    bk[0]++;
    bf[0]++;
    if (res->wrong > 0) {
        t->wrong++;
        bk[3]++;
        bf[3]++;
        t->wrong_vals += res->wrong;
        tally_ex(t, EX_WRONG, "%s: %u wrong, e.g. %s", at, res->wrong,
                 res->ex);
        keep_copy(sl, "wrong");
    } else if (res->ex[0] != '\0') {
        tally_ex(t, EX_OTHER, "%s: %s", at, res->ex);
    }
    t->rderr += res->rderr > 0;
    t->set_fail += res->set_fail > 0;
    t->set_lost += res->set_lost > 0;
    t->absent += res->absent > 0;
}

static void
reap(const struct variant *vr, struct slot *slots, unsigned timeout_s,
     struct tally *t)
{
    int status;
    pid_t pid;

    do {
        pid = waitpid(-1, &status, 0);
    } while (pid < 0 && errno == EINTR);
    ck_assert_int_gt(pid, 0);
    for (int i = 0; i < NSLOTS; i++) {
        if (slots[i].pid == pid) {
            slot_done(vr, &slots[i], status, timeout_s, t);
            slots[i].pid = 0;
            return;
        }
    }
    ck_abort_msg("reaped an unknown child %d", (int)pid);
}

/* The store's files, read once. */
struct file {
    unsigned char *p;
    size_t         len;
};

static struct file
read_file(const char *path)
{
    struct file f = { NULL, 0 };
    struct stat st;
    int fd = open(path, O_RDONLY);

    ck_assert_msg(fd >= 0, "%s: %s", path, strerror(errno));
    ck_assert_int_eq(fstat(fd, &st), 0);
    f.len = (size_t)st.st_size;
    f.p = malloc(f.len != 0 ? f.len : 1);
    ck_assert_ptr_nonnull(f.p);
    for (size_t done = 0; done < f.len;) {
        ssize_t n = read(fd, f.p + done, f.len - done);

        ck_assert_int_gt(n, 0);
        done += (size_t)n;
    }
    close(fd);
    return f;
}

/* Writes the files into dir, the one named by tr damaged. */
static void
write_damaged(const struct variant *vr, const struct file *files,
              const struct trial *tr, const char *dir)
{
    for (unsigned f = 0; f < MAXFILES && vr->files[f] != NULL; f++) {
        char path[400];
        unsigned char *p = files[f].p;
        size_t len = files[f].len;
        unsigned char saved[PAGE];
        size_t at = 0;
        size_t n = 0;
        int fd;

        if (f == tr->file && len > 0) {
            at = (size_t)tr->off;
            switch (tr->kind) {
            case DMG_BIT:
                n = 1;
                break;
            case DMG_BYTES:
                n = tr->len;
                break;
            case DMG_SECTOR:
                n = SECTOR;
                break;
            default:
                n = PAGE;
                break;
            }
            n = at + n > len ? len - at : n;
            memcpy(saved, p + at, n);
            if (tr->kind == DMG_BIT) {
                p[at] ^= (unsigned char)(1u << (tr->rnd % 8));
            } else if (tr->kind == DMG_BYTES) {
                uint64_t s = tr->rnd;

                for (size_t i = 0; i < n; i++) {
                    p[at + i] = (unsigned char)rng_next(&s);
                }
            } else {
                memset(p + at, 0, n);
            }
        }
        snprintf(path, sizeof(path), "%s/%s", dir, vr->files[f]);
        fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
        ck_assert_int_ge(fd, 0);
        for (size_t done = 0; done < len;) {
            ssize_t w = write(fd, p + done, len - done);

            ck_assert_int_gt(w, 0);
            done += (size_t)w;
        }
        close(fd);
        if (n > 0) {
            memcpy(p + at, saved, n);
        }
    }
}

/*
 * The trials: a few named ones (the page 217, the first pages,
 * the last), then random kinds at random offsets over each file.
 */
static struct trial *
make_trials(const struct variant *vr, const struct file *files,
            uint64_t seed, unsigned scale, unsigned *n)
{
    size_t cap = 64;
    struct trial *tr;
    uint64_t s = seed;

    for (unsigned f = 0; f < MAXFILES && vr->files[f] != NULL; f++) {
        cap += scale != 0 ? scale : vr->trials[f];
    }
    tr = calloc(cap, sizeof(*tr));
    ck_assert_ptr_nonnull(tr);
    *n = 0;
    for (unsigned f = 0; f < MAXFILES && vr->files[f] != NULL; f++) {
        uint64_t pages = files[f].len / PAGE;
        uint64_t named[] = { 217, 0, 1, 2, 3, pages - 1 };
        unsigned nrand = scale != 0 ? scale : vr->trials[f] / TRIALS_DIV;

        for (unsigned i = 0; i < sizeof(named) / sizeof(named[0]); i++) {
            if (named[i] < pages) {
                tr[(*n)++] = (struct trial){ f, DMG_PAGE, named[i] * PAGE,
                                             0, 0 };
            }
        }
        for (unsigned i = 0; i < nrand && files[f].len > 0; i++) {
            struct trial *t = &tr[(*n)++];

            t->file = f;
            t->kind = (damage_e)(i % DMG_NKINDS);
            t->off = rng_next(&s) % files[f].len;
            t->rnd = rng_next(&s);
            t->len = 1 + (unsigned)(rng_next(&s) % 16);
            if (t->kind == DMG_PAGE) {
                t->off -= t->off % PAGE;
            } else if (t->kind == DMG_SECTOR) {
                t->off -= t->off % SECTOR;
            }
        }
    }
    return tr;
}

static void
print_tally(const struct variant *vr, const struct tally *t,
            const struct file *files, long secs)
{
    printf("corrupt %s (%ld s; %s %zu KB", vr->name, secs, vr->files[0],
           files[0].len / 1024);
    if (vr->files[1] != NULL) {
        printf(", %s %zu KB", vr->files[1], files[1].len / 1024);
    }
    printf("): %u trials: %u opened, %u refused (%u without naming the "
           "file), %u crashes, %u hangs, %u served wrong values (%u "
           "values); %u with read errors, %u with failed sets, %u lost own "
           "sets, %u missing stored keys (evicted or lost); %u trials over "
           "2 s, longest %.0f ms\n", t->trials, t->opened, t->refused,
           t->unnamed, t->crashes, t->hangs, t->wrong, t->wrong_vals,
           t->rderr, t->set_fail, t->set_lost, t->absent, t->slow,
           t->max_ms);
    for (int k = 0; k < DMG_NKINDS; k++) {
        const unsigned *b = t->by_kind[k];

        printf("  %-18s opened %3u, refused %3u, crashed or hung %3u, "
               "wrong values %3u\n", damage_names[k], b[0], b[1], b[2],
               b[3]);
    }
    for (unsigned f = 0; vr->files[1] != NULL && f < MAXFILES &&
         vr->files[f] != NULL; f++) {
        /* With two files: which one the damage was in. */
        const unsigned *b = t->by_file[f];

        printf("  %-18s opened %3u, refused %3u, crashed or hung %3u, "
               "wrong values %3u\n", vr->files[f], b[0], b[1], b[2], b[3]);
    }
    for (unsigned i = 0; i < t->nref; i++) {
        printf("  refusal: %s\n", t->ref[i]);
    }
    for (int k = 0; k < EX_NKINDS; k++) {
        for (unsigned i = 0; i < t->nex[k]; i++) {
            printf("  %s: %s\n", ex_names[k], t->ex[k][i]);
        }
    }
    fflush(stdout);
}

START_TEST(corrupt)
{
    const struct variant *vr = &variants[_i];
    const char *tmp = getenv("TMPDIR");
    const char *seedv = getenv("STASHD_CORRUPT_SEED");
    uint64_t seed = seedv != NULL ? strtoull(seedv, NULL, 0) : 1;
    unsigned scale = env_uint("STASHD_CORRUPT_TRIALS", 0);
    unsigned timeout_s = env_uint("STASHD_CORRUPT_TIMEOUT", TIMEOUT_S);
    bool keep = env_uint("STASHD_CORRUPT_KEEP", 0) != 0;
    struct file files[MAXFILES];
    struct slot slots[NSLOTS];
    struct tally t;
    struct trial *tr;
    unsigned ntr = 0;
    uint64_t bytes;
    char dir[256];
    time_t t0 = time(NULL);

    if (!selected(vr->name)) {
        return;
    }
    memset(&t, 0, sizeof(t));
    memset(files, 0, sizeof(files));
    if (tmp == NULL || *tmp == '\0' || strlen(tmp) > 200) {
        tmp = "/tmp";
    }
    snprintf(dir, sizeof(dir), "%s/stashd-corrupt-XXXXXX", tmp);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    bytes = build_base(vr, dir);
    for (unsigned f = 0; f < MAXFILES && vr->files[f] != NULL; f++) {
        char path[400];

        snprintf(path, sizeof(path), "%s/base/%s", dir, vr->files[f]);
        files[f] = read_file(path);
    }
    tr = make_trials(vr, files, seed + (uint64_t)_i, scale, &ntr);
    memset(slots, 0, sizeof(slots));
    for (int i = 0; i < NSLOTS; i++) {
        slots[i].res = mmap(NULL, sizeof(struct result),
                            PROT_READ | PROT_WRITE,
                            MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        ck_assert_ptr_ne(slots[i].res, MAP_FAILED);
        snprintf(slots[i].dir, sizeof(slots[i].dir), "%s/slot%d", dir, i);
        snprintf(slots[i].data, sizeof(slots[i].data), "%s/slot%d/d",
                 dir, i);
        ck_assert_int_eq(mkdir(slots[i].dir, 0700), 0);
    }
    for (unsigned j = 0; j < ntr; j++) {
        struct slot *sl = NULL;
        pid_t pid;

        while (sl == NULL) {
            for (int i = 0; i < NSLOTS && sl == NULL; i++) {
                if (slots[i].pid == 0) {
                    sl = &slots[i];
                }
            }
            if (sl == NULL) {
                reap(vr, slots, timeout_s, &t);
            }
        }
        rm_tree(sl->data);
        ck_assert_int_eq(mkdir(sl->data, 0700), 0);
        write_damaged(vr, files, &tr[j], sl->data);
        if (keep) {
            char cmd[1200];

            snprintf(cmd, sizeof(cmd), "rm -rf '%s/pristine' && cp -r '%s' "
                     "'%s/pristine'", sl->dir, sl->data, sl->dir);
            ck_assert_int_eq(system(cmd), 0);
        }
        sl->tr = tr[j];
        sl->id = j;
        memset(sl->res, 0, sizeof(*sl->res));
        fflush(stdout);
        fflush(stderr);
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            char errpath[400];
            int fd;

            snprintf(errpath, sizeof(errpath), "%s/stderr", sl->dir);
            fd = open(errpath, O_CREAT | O_TRUNC | O_WRONLY, 0600);
            if (fd >= 0) {
                dup2(fd, 2);
                close(fd);
            }
            /* Check's SIGALRM handler would kill the whole group. */
            signal(SIGALRM, SIG_DFL);
            alarm(timeout_s);
            /* Below what is stored: the store evicts while it runs. */
            check_copy(vr->backend, sl->data, bytes * 9 / 10, sl->res);
            sl->res->done = 1;
            _exit(0);
        }
        sl->pid = pid;
        clock_gettime(CLOCK_MONOTONIC, &sl->start);
    }
    for (int i = 0; i < NSLOTS; i++) {
        while (slots[i].pid != 0) {
            reap(vr, slots, timeout_s, &t);
        }
    }
    print_tally(vr, &t, files, (long)(time(NULL) - t0));
    for (int i = 0; i < NSLOTS; i++) {
        munmap(slots[i].res, sizeof(struct result));
    }
    for (unsigned f = 0; f < MAXFILES; f++) {
        free(files[f].p);
    }
    free(tr);
    rm_tree(dir);
    ck_assert_msg(t.crashes + t.hangs + t.wrong + t.unnamed == 0,
                  "%s: %u crashes, %u hangs, %u trials served wrong values, "
                  "%u refusals without the file's name", vr->name, t.crashes,
                  t.hangs, t.wrong, t.unnamed);
}
END_TEST

static Suite *
corrupt_suite(void)
{
    Suite *s = suite_create("store_corrupt");
    TCase *tc = tcase_create("corrupt");
    unsigned scale = env_uint("STASHD_CORRUPT_TRIALS", 0);

    /* Hangs cost their timeout; ASan is slower; long mode scales. */
    tcase_set_timeout(tc, 300.0 + scale * 2.0);
    tcase_add_loop_test(tc, corrupt, 0, NVARIANTS);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(corrupt_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
