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
#include "tests/rig_util.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

/* The stored data: every value says whose it is. */

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
    return (uint32_t)(rig_mix(k, gen) >> 32);
}

/* value(k, gen): "k|gen|" and filler; gen 1 is the stored store. */
static size_t
val_gen(unsigned k, unsigned gen, bool fresh, char *buf)
{
    char name[32];

    key_name(k, fresh, name, sizeof(name));
    return rig_value(rig_mix(k + (fresh ? 1000000u : 0), gen), name, gen,
                     buf, VMAX);
}

/* The configuration of rs on dir, for building and for checking. */
static void
cfg_init(struct rig_store *rs, const char *dir, uint64_t mem_limit,
         uint32_t now)
{
    rig_cfg(&rs->cfg, dir, STORE_SYNC_PERIODIC, 50, rs->err,
            sizeof(rs->err));
    rs->cfg.mem_limit = mem_limit;
    rs->cfg.threads = 2;
    rs->cfg.now = now;
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
build_open(const struct variant *vr, const char *dir, struct rig_store *rs)
{
    cfg_init(rs, dir, 256ull << 20, NOW0);
    if (!rig_store_open(rs, vr->backend, NOW0, NULL)) {
        fprintf(stderr, "build: %s\n", rs->err);
        _exit(2);
    }
}

/* Sets keys [from, to) to generation 1; exits the child on failure. */
static uint64_t
build_set(struct rig_store *rs, unsigned from, unsigned to, char *buf)
{
    uint64_t bytes = 0;

    for (unsigned k = from; k < to; k++) {
        char name[32];
        size_t len = val_gen(k, 1, false, buf);
        uint64_t cas = 0;

        key_name(k, false, name, sizeof(name));
        if (rig_set(rs, name, buf, len, val_flags(k, 1), key_exptime(k),
                    &cas) != STORE_OK) {
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
    char live[300];
    char base[300];
    uint64_t *bytes = rig_shared(sizeof(*bytes));
    uint64_t total;
    pid_t pid;

    snprintf(live, sizeof(live), "%s/live", dir);
    snprintf(base, sizeof(base), "%s/base", dir);
    ck_assert_int_eq(mkdir(base, 0700), 0);
    pid = rig_fork();
    if (pid == 0) {
        struct rig_store rs;
        char *buf = malloc(VMAX);
        unsigned split = vr->open_copy ? NKEYS - NWAL : NKEYS;

        if (buf == NULL) {
            _exit(2);
        }
        build_open(vr, live, &rs);
        *bytes += build_set(&rs, 0, split, buf);
        rig_store_close(&rs);
        if (vr->open_copy) {
            build_open(vr, live, &rs);
            *bytes += build_set(&rs, split, NKEYS, buf);
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
    rig_wait_ok(pid, "%s: building the store", vr->name);
    tu_rm_tree(live);
    total = *bytes;
    munmap(bytes, sizeof(*bytes));
    return total;
}

/* What one check found (shared with the child). */
struct result {
    int                done;
    struct rig_refusal ref;
    unsigned           wrong;
    unsigned           absent;        /* stored keys not served */
    unsigned           rderr;
    unsigned           set_fail;
    unsigned           set_lost;      /* own sets not read back */
    char               ex[RIG_EXLEN];
};

static void
res_wrong(struct result *res, const char *name, const struct store_item *it,
          const char *why)
{
    char shown[40];

    res->wrong++;
    if (res->ex[0] != '\0') {
        return;
    }
    snprintf(res->ex, sizeof(res->ex), "%s: %s (%u bytes \"%s...\")", name,
             why, it->len, rig_shown(it->data, it->len, shown,
                                     sizeof(shown)));
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
    struct rig_store rs;
    char *buf = malloc(VMAX);
    bool set_ok[NSETS];
    struct timespec nap = { SETTLE_MS / 1000,
                            (SETTLE_MS % 1000) * 1000L * 1000L };
    store_rc_e rc;

    cfg_init(&rs, dir, mem_limit, NOW_CHECK);
    if (!rig_store_open(&rs, backend, NOW_CHECK, &res->ref)) {
        if (!res->ref.refused) {
            snprintf(res->ex, sizeof(res->ex), "attach failed");
            res->set_fail++;
        }
        return;
    }
    for (unsigned k = 0; k < NKEYS; k++) {
        char name[32];
        struct store_item it;

        key_name(k, false, name, sizeof(name));
        rc = rig_get(&rs, name, &it);
        if (rc == STORE_OK) {
            check_value(res, k, 1, false, &it, buf);
            rig_release(&rs, &it);
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
        uint64_t cas = 0;

        key_name(k, fresh, name, sizeof(name));
        rc = rig_set(&rs, name, buf, len, val_flags(k, 2), 0, &cas);
        set_ok[i] = rc == STORE_OK;
        res->set_fail += !set_ok[i];
    }
    nanosleep(&nap, NULL);
    for (unsigned i = 0; i < NSETS; i++) {
        bool fresh = i % 2 == 1;
        unsigned k = fresh ? i : i * 61 % NKEYS;
        char name[32];
        struct store_item it;

        key_name(k, fresh, name, sizeof(name));
        rc = rig_get(&rs, name, &it);
        if (rc == STORE_OK) {
            /* A failed set may have left the old value, nothing else. */
            if (set_ok[i] || fresh) {
                check_value(res, k, 2, fresh, &it, buf);
            } else {
                check_value(res, k, 1, false, &it, buf);
            }
            rig_release(&rs, &it);
        } else if (set_ok[i]) {
            res->set_lost++;
        }
    }
    rig_store_close(&rs);
    free(buf);
}

/* The driver. */

struct tally {
    struct rig_tally r;     /* how the trials ended */
    unsigned wrong;         /* trials that served a wrong value */
    unsigned wrong_vals;
    unsigned rderr;         /* trials with read errors */
    unsigned set_fail;      /* trials where a set failed */
    unsigned set_lost;
    unsigned absent;        /* trials missing live keys (evicted, lost) */
    unsigned by_kind[DMG_NKINDS][4]; /* opened, refused, crash+hang, wrong */
    unsigned by_file[MAXFILES][4];   /* the same, by the file damaged */
};

/* What a pool slot is checking. */
struct slot {
    struct trial tr;
    unsigned     id;
};

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

/* With STASHD_CORRUPT_KEEP: keeps slot i's copy, the first of each kind. */
static void
keep_copy(const struct rig_pool *pool, int i, unsigned id, const char *what)
{
    char to[160];

    if (rig_env_uint("STASHD_CORRUPT_KEEP", 0) != 0 &&
        rig_keep(pool, i, "stashd-corrupt", id, what, to, sizeof(to))) {
        printf("kept trial %u (%s) in %s\n", id, what, to);
    }
}

/* Folds the outcome of the child rp reaped into t. */
static void
slot_done(const struct variant *vr, const struct rig_pool *pool,
          const struct slot *slots, struct rig_reaped rp, struct tally *t)
{
    const struct slot *sl = &slots[rp.slot];
    const struct result *res = pool->s[rp.slot].res;
    unsigned *bk = t->by_kind[sl->tr.kind];
    unsigned *bf = t->by_file[sl->tr.file];
    char at[160];
    enum rig_end end;

    trial_name(vr, sl, at, sizeof(at));
    end = rig_tally_end(&t->r, pool, &rp, res->done, &res->ref, at);
    if (end == RIG_HUNG || end == RIG_CRASHED) {
        bk[2]++;
        bf[2]++;
        keep_copy(pool, rp.slot, sl->id, end == RIG_HUNG ? "hang" : "crash");
        return;
    }
    if (end == RIG_REFUSED) {
        bk[1]++;
        bf[1]++;
        return;
    }
    bk[0]++;
    bf[0]++;
    if (res->wrong > 0) {
        t->wrong++;
        bk[3]++;
        bf[3]++;
        t->wrong_vals += res->wrong;
        rig_ex_add(&t->r.ex[RIG_WRONG], "%s: %u wrong, e.g. %s", at,
                   res->wrong, res->ex);
        keep_copy(pool, rp.slot, sl->id, "wrong");
    } else if (res->ex[0] != '\0') {
        rig_ex_add(&t->r.ex[RIG_OTHER], "%s: %s", at, res->ex);
    }
    t->rderr += res->rderr > 0;
    t->set_fail += res->set_fail > 0;
    t->set_lost += res->set_lost > 0;
    t->absent += res->absent > 0;
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
                    p[at + i] = (unsigned char)rig_rng_next(&s);
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
            t->off = rig_rng_next(&s) % files[f].len;
            t->rnd = rig_rng_next(&s);
            t->len = 1 + (unsigned)(rig_rng_next(&s) % 16);
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
           "2 s, longest %.0f ms\n", t->r.checks, t->r.opened, t->r.refused,
           t->r.unnamed, t->r.crashes, t->r.hangs, t->wrong, t->wrong_vals,
           t->rderr, t->set_fail, t->set_lost, t->absent, t->r.slow,
           t->r.max_ms);
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
    rig_tally_print_ex(&t->r, "  ");
    fflush(stdout);
}

START_TEST(corrupt)
{
    const struct variant *vr = &variants[_i];
    const char *seedv = getenv("STASHD_CORRUPT_SEED");
    uint64_t seed = seedv != NULL ? strtoull(seedv, NULL, 0) : 1;
    unsigned scale = rig_env_uint("STASHD_CORRUPT_TRIALS", 0);
    unsigned timeout_s = rig_env_uint("STASHD_CORRUPT_TIMEOUT", TIMEOUT_S);
    bool keep = rig_env_uint("STASHD_CORRUPT_KEEP", 0) != 0;
    struct file files[MAXFILES];
    struct rig_pool pool;
    struct slot slots[NSLOTS];
    struct tally t;
    struct trial *tr;
    unsigned ntr = 0;
    uint64_t bytes;
    char dir[256];
    time_t t0 = time(NULL);

    if (!rig_selected("STASHD_CORRUPT_CASES", vr->name)) {
        return;
    }
    memset(&t, 0, sizeof(t));
    memset(files, 0, sizeof(files));
    rig_mkdtemp(dir, sizeof(dir), "stashd-corrupt");
    bytes = build_base(vr, dir);
    for (unsigned f = 0; f < MAXFILES && vr->files[f] != NULL; f++) {
        char path[400];

        snprintf(path, sizeof(path), "%s/base/%s", dir, vr->files[f]);
        files[f] = read_file(path);
    }
    tr = make_trials(vr, files, seed + (uint64_t)_i, scale, &ntr);
    memset(slots, 0, sizeof(slots));
    rig_pool_init(&pool, NSLOTS, dir, sizeof(struct result), timeout_s,
                  2000.0);
    for (unsigned j = 0; j < ntr; j++) {
        int i;

        while ((i = rig_pool_idle(&pool)) < 0) {
            slot_done(vr, &pool, slots, rig_pool_reap(&pool), &t);
        }
        rig_pool_fresh(&pool, i);
        write_damaged(vr, files, &tr[j], pool.s[i].data);
        if (keep) {
            rig_pool_pristine(&pool, i);
        }
        slots[i].tr = tr[j];
        slots[i].id = j;
        if (rig_pool_fork(&pool, i) == 0) {
            struct result *res = pool.s[i].res;

            /* Below what is stored: the store evicts while it runs. */
            check_copy(vr->backend, pool.s[i].data, bytes * 9 / 10, res);
            res->done = 1;
            _exit(0);
        }
    }
    while (rig_pool_busy(&pool)) {
        slot_done(vr, &pool, slots, rig_pool_reap(&pool), &t);
    }
    print_tally(vr, &t, files, (long)(time(NULL) - t0));
    rig_pool_deinit(&pool);
    for (unsigned f = 0; f < MAXFILES; f++) {
        free(files[f].p);
    }
    free(tr);
    tu_rm_tree(dir);
    ck_assert_msg(t.r.crashes + t.r.hangs + t.wrong + t.r.unnamed == 0,
                  "%s: %u crashes, %u hangs, %u trials served wrong values, "
                  "%u refusals without the file's name", vr->name,
                  t.r.crashes, t.r.hangs, t.wrong, t.r.unnamed);
}
END_TEST

int
main(void)
{
    unsigned scale = rig_env_uint("STASHD_CORRUPT_TRIALS", 0);

    /* Hangs cost their timeout; ASan is slower; long mode scales. */
    return rig_run("store_corrupt", corrupt, NVARIANTS, 300.0 + scale * 2.0);
}
