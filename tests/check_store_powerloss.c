/*
 * The power-loss rig: for each persistent backend and sync mode, a forked
 * child opens a store on an empty directory while every write, truncate
 * and sync on its files is recorded (powerloss_rec.c), runs a few thousand
 * writes from several threads (some sets in groups, as a worker runs a
 * loop pass's sets) with self-describing values, and _exits
 * without closing. From the log the parent builds hundreds of crash images
 * (powerloss_img.c): what a power loss at a random record would leave, with
 * unsynced writes dropped, torn and reordered, plus kill -9 images that keep
 * every write. Each image is opened in a forked child under an alarm. The
 * contract, through storage.h only: the store opens, or is refused with a
 * message naming a file of the directory; never a crash or a hang; every
 * value served is exactly one a set issued for that key; no required write
 * is lost; a new write gets a CAS above every CAS read. A write is required
 * once acknowledged in --sync=always and in every kill -9 image, and in the
 * other modes once every file its call wrote has completed a sync entered
 * after the call returned. Knobs (environment): STASHD_POWERLOSS_POINTS
 * (power-loss images per case, default 200), _KILL9 (kill -9 images, 25),
 * _OPS (ops per thread, 700), _PACE_US (up to this long between a thread's
 * ops, 3000), _RUN_MS (workload cap, 4000), _SEED (crash points and
 * fates), _CASES ("lmdb-periodic,sqlite-none"), _TIMEOUT (seconds per image
 * check, 5; 15 under ASan), _KEEP=1 (keep the first image of each kind of
 * failure, and the first refused, with log.txt: every record up to the
 * crash point and what became of each write; prints their paths).
 */
#include "storage/storage.h"
#include "tests/powerloss_img.h"
#include "tests/powerloss_rec.h"
#include "tests/rig_util.h"

#include <check.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NTHREADS    3
#define KPT         40                       /* keys per thread */
#define NSETKEYS    (NTHREADS * KPT)
#define NKEYS       (NSETKEYS + NTHREADS)    /* + one counter per thread */
#define NOW0        1700000000u
#define VMAX        12288u
#define GROUP_MAX   4                        /* sets in one set_many */
#define SYNC_MS     30u
#define GAP_EVERY_MS 400                     /* workload: a burst and */
#define GAP_MS       150                     /* an idle gap */
#define NSLOTS      3                        /* checks run in parallel */
/* A check that takes this long hangs (a healthy one takes well under 1 s;
 * ASan makes some take seconds on a loaded machine). */
#if defined(__SANITIZE_ADDRESS__)
#define TIMEOUT_S   15u
#else
#define TIMEOUT_S   5u
#endif

enum op_kind { OP_SET = 1, OP_DEL, OP_TOUCH, OP_INCR };

struct case_def {
    const char  *backend;
    store_sync_e mode;
    const char  *mode_name;
};

static const struct case_def cases[] = {
#ifdef STASHD_HAVE_LMDB
    { "lmdb", STORE_SYNC_ALWAYS, "always" },
    { "lmdb", STORE_SYNC_PERIODIC, "periodic" },
    { "lmdb", STORE_SYNC_NONE, "none" },
#endif
#ifdef STASHD_HAVE_SQLITE
    { "sqlite", STORE_SYNC_ALWAYS, "always" },
    { "sqlite", STORE_SYNC_PERIODIC, "periodic" },
    { "sqlite", STORE_SYNC_NONE, "none" },
#endif
};
#define NCASES ((int)(sizeof(cases) / sizeof(cases[0])))

/* The knobs, from the environment. */
struct params {
    unsigned points;
    unsigned kill9;
    unsigned ops;
    unsigned pace_us;
    unsigned run_ms;
    unsigned timeout_s;
    uint64_t seed;
    bool     keep;
};

static void
params_get(struct params *pp)
{
    const char *seed = getenv("STASHD_POWERLOSS_SEED");

    pp->points = rig_env_uint("STASHD_POWERLOSS_POINTS", 200);
    pp->kill9 = rig_env_uint("STASHD_POWERLOSS_KILL9", 25);
    pp->ops = rig_env_uint("STASHD_POWERLOSS_OPS", 700);
    pp->pace_us = rig_env_uint("STASHD_POWERLOSS_PACE_US", 3000);
    pp->run_ms = rig_env_uint("STASHD_POWERLOSS_RUN_MS", 4000);
    pp->timeout_s = rig_env_uint("STASHD_POWERLOSS_TIMEOUT", TIMEOUT_S);
    pp->seed = seed != NULL && *seed != '\0' ? strtoull(seed, NULL, 0) : 1;
    pp->keep = rig_env_uint("STASHD_POWERLOSS_KEEP", 0) != 0;
}

/* Whether $STASHD_POWERLOSS_CASES (unset: all) names backend-mode. */
static bool
case_selected(const struct case_def *cd)
{
    char name[32];

    snprintf(name, sizeof(name), "%s-%s", cd->backend, cd->mode_name);
    return rig_selected("STASHD_POWERLOSS_CASES", name);
}

/* Values: self-describing, so any byte out of place is seen. */

static void
key_name(unsigned k, char *buf, size_t cap)
{
    if (k < NSETKEYS) {
        snprintf(buf, cap, "pl%u:k%u", k / KPT, k % KPT);
    } else {
        snprintf(buf, cap, "pl%u:ctr", k - NSETKEYS);
    }
}

static uint32_t
val_flags(unsigned k, uint32_t v)
{
    return (uint32_t)(rig_mix(k, v) >> 32);
}

/* value(k, v): "key|v|" and filler drawn from (k, v). */
static size_t
val_gen(unsigned k, uint32_t v, char *buf)
{
    char name[32];

    key_name(k, name, sizeof(name));
    return rig_value(rig_mix(k, v), name, v, buf, VMAX);
}

static void
cfg_init(struct store_cfg *cfg, const char *dir, store_sync_e mode,
         char *err, size_t errlen)
{
    rig_cfg(cfg, dir, mode, SYNC_MS, err, errlen);
    cfg->threads = NTHREADS;
    /* The machine the workload ran on; a power-loss image is opened on
     * the next boot (a new boot id), a kill -9 image on the same one. */
    cfg->boot_id = "boot-workload";
}

/* The workload (recording child). */

struct worker {
    const struct store_ops *ops;
    struct store           *s;
    unsigned                tid;
    unsigned                nops;
    unsigned                pace_us;   /* up to this long between ops */
    uint64_t                seed;
    atomic_bool            *stop;
    atomic_bool            *hold;    /* an idle gap: wait before the next */
    atomic_uint            *finished;
    atomic_uint            *bad;     /* a live answer that was wrong */
};

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    struct store_thr *t = NULL;
    struct store_call c = { NOW0, NULL, NULL, false };
    struct pl_rng rng = { rig_mix(w->seed, w->tid + 1000) };
    uint32_t ver[KPT] = { 0 };
    uint32_t cver = 0;
    char *buf = malloc(VMAX);
    char *gbuf = malloc((size_t)GROUP_MAX * VMAX);

    pl_rec_thread((uint8_t)(w->tid + 1));
    if (buf == NULL || gbuf == NULL ||
        w->ops->attach(w->s, &t) != STORE_OK) {
        atomic_fetch_add(w->bad, 1);
        goto out;
    }
    for (unsigned i = 0; i < w->nops && !atomic_load(w->stop) &&
         !pl_rec_full(); i++) {
        unsigned r = (unsigned)pl_rng_below(&rng, 100);
        unsigned ki = (unsigned)pl_rng_below(&rng, KPT);
        unsigned k = w->tid * KPT + ki;
        char name[32];
        struct store_key key = { name, 0 };
        store_rc_e rc;

        if (r >= 88) {
            k = NSETKEYS + w->tid;
        }
        key_name(k, name, sizeof(name));
        key.len = strlen(name);
        c.pending = false;
        if (r < 70 && r % 4 == 0 && w->ops->set_many != NULL) {
            /* A group of sets on keys of this thread, as a worker's
             * loop pass runs them (one queue chain, one commit). */
            struct store_set g[GROUP_MAX];
            char names[GROUP_MAX][32];
            unsigned n = 1 + (unsigned)pl_rng_below(&rng, GROUP_MAX);
            unsigned ks[GROUP_MAX];
            uint32_t vs[GROUP_MAX];

            memset(g, 0, sizeof(g));
            for (unsigned j = 0; j < n; j++) {
                unsigned kj = (ki + j) % KPT;
                size_t len;

                ks[j] = w->tid * KPT + kj;
                vs[j] = ++ver[kj];
                key_name(ks[j], names[j], sizeof(names[j]));
                len = val_gen(ks[j], vs[j], gbuf + (size_t)j * VMAX);
                g[j].call.now = NOW0;
                g[j].k.data = names[j];
                g[j].k.len = strlen(names[j]);
                g[j].in.data = gbuf + (size_t)j * VMAX;
                g[j].in.len = (uint32_t)len;
                g[j].in.flags = val_flags(ks[j], vs[j]);
                pl_rec_mark(PL_ISSUE, OP_SET, ks[j], vs[j], 0);
            }
            w->ops->set_many(t, g, n);
            rc = STORE_OK;
            for (unsigned j = 0; j < n; j++) {
                pl_rec_mark(PL_ACK, OP_SET, ks[j], vs[j], g[j].rc);
                c.pending = c.pending || g[j].call.pending;
            }
        } else if (r < 70) {
            uint32_t v = ++ver[ki];
            size_t len = val_gen(k, v, buf);
            struct store_item in = { buf, (uint32_t)len, val_flags(k, v),
                                     0, 0, NULL };
            uint64_t cas = 0;

            pl_rec_mark(PL_ISSUE, OP_SET, k, v, 0);
            rc = w->ops->store(t, &c, STORE_SET, &key, &in, &cas);
            pl_rec_mark(PL_ACK, OP_SET, k, v, rc);
        } else if (r < 82) {
            uint32_t v = ++ver[ki];

            pl_rec_mark(PL_ISSUE, OP_DEL, k, v, 0);
            rc = w->ops->del(t, &c, &key, 0);
            pl_rec_mark(PL_ACK, OP_DEL, k, v, rc);
        } else if (r < 88) {
            pl_rec_mark(PL_ISSUE, OP_TOUCH, k, 0, 0);
            rc = w->ops->touch(t, &c, &key, NOW0 + 30u * 86400u);
            pl_rec_mark(PL_ACK, OP_TOUCH, k, 0, rc);
        } else {
            struct store_delta d = { 1, 1, 0, 0, false, true };
            uint64_t value = 0;
            uint64_t cas = 0;
            uint32_t v = ++cver;

            pl_rec_mark(PL_ISSUE, OP_INCR, k, v, 0);
            rc = w->ops->arith(t, &c, &key, &d, &value, &cas);
            pl_rec_mark(PL_ACK, OP_INCR, k, v, rc);
            if (rc == STORE_OK && value != v) {
                atomic_fetch_add(w->bad, 1);
            }
        }
        if (c.pending) {
            /* wait == NULL promises the call returns durable. */
            atomic_fetch_add(w->bad, 1);
        }
        if (w->pace_us != 0) {
            /* Spread the ops over many periodic syncs. */
            struct timespec nap = { 0, (long)pl_rng_below(&rng,
                                                          w->pace_us) * 1000 };

            nanosleep(&nap, NULL);
        }
        while (atomic_load(w->hold) && !atomic_load(w->stop)) {
            struct timespec nap = { 0, 1000 * 1000 };

            nanosleep(&nap, NULL);
        }
    }
    w->ops->detach(&t);
out:
    free(buf);
    free(gbuf);
    atomic_fetch_add(w->finished, 1);
    return NULL;
}

/* Runs the workload on dir and _exits without closing the store. */
static void
workload_child(const struct case_def *cd, const char *dir,
               const struct params *pp)
{
    const struct store_ops *ops = store_find(cd->backend);
    struct store_cfg cfg;
    struct store *s = NULL;
    struct worker w[NTHREADS];
    pthread_t th[NTHREADS];
    atomic_bool stop = false;
    atomic_bool hold = false;
    atomic_uint finished = 0;
    atomic_uint bad = 0;
    char err[512];
    struct timespec t0;
    struct timespec now;
    store_rc_e rc;

    cfg_init(&cfg, dir, cd->mode, err, sizeof(err));
    pl_rec_start(dir);
    rc = ops->open(&cfg, &s);
    if (rc != STORE_OK) {
        fprintf(stderr, "workload: open %s: %s: %s\n", dir,
                store_strerror(rc), err);
        _exit(2);
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned i = 0; i < NTHREADS; i++) {
        w[i] = (struct worker){ ops, s, i, pp->ops, pp->pace_us, pp->seed,
                                &stop, &hold, &finished, &bad };
        if (pthread_create(&th[i], NULL, worker_main, &w[i]) != 0) {
            _exit(3);
        }
    }
    for (;;) {
        struct timespec nap = { 0, 2 * 1000 * 1000 };
        long ms;

        nanosleep(&nap, NULL);
        clock_gettime(CLOCK_MONOTONIC, &now);
        ms = (now.tv_sec - t0.tv_sec) * 1000 +
             (now.tv_nsec - t0.tv_nsec) / 1000000;
        if (atomic_load(&finished) == NTHREADS || ms >= (long)pp->run_ms) {
            break;
        }
        /*
         * Bursts: every GAP_EVERY_MS all writers pause for GAP_MS, longer
         * than a maintenance tick, so background work (a checkpoint that
         * completes, a syncer that catches up) happens between bursts and
         * the next burst starts on top of it (SQLite then reuses its WAL).
         */
        atomic_store(&hold, ms % GAP_EVERY_MS >= GAP_EVERY_MS - GAP_MS);
    }
    /* The power goes off here: whatever is in flight stays in flight. */
    pl_rec_stop();
    atomic_store(&stop, true);
    _exit(atomic_load(&bad) != 0 ? 4 : 0);
}

/* What the log says about each key's ops. */

struct kop {
    uint64_t issue;     /* record of its ISSUE marker */
    uint64_t ack;       /* record of its ACK marker, if acked */
    uint64_t req;       /* power-loss images: required from this record */
    uint32_t mask;      /* files written while the call ran */
    uint8_t  kind;
    uint8_t  rc;
    bool     acked;
};

struct kinfo {
    struct kop *ops;    /* ops[v - 1]: version v */
    uint32_t    n;
    uint32_t    cap;
};

static struct kinfo keys[NKEYS];

static void
keys_free(void)
{
    for (unsigned k = 0; k < NKEYS; k++) {
        free(keys[k].ops);
    }
    memset(keys, 0, sizeof(keys));
}

/* An op whose result the store must keep once it is required. */
static bool
effective(const struct kop *o)
{
    if (!o->acked) {
        return false;
    }
    if (o->kind == OP_DEL) {
        return o->rc == STORE_OK || o->rc == STORE_ENOENT;
    }
    return o->rc == STORE_OK;
}

/* Fills keys[] from the log and decides when each op becomes required. */
static void
keys_build(const struct pl_model *m, store_sync_e mode, const char *backend)
{
    /*
     * lmdb's commit point is its snapshot file: after a power loss the
     * store falls back to the snapshot stashd.synced names. A sync round
     * pins the newest snapshot (unseen here), syncs data.mdb, then writes
     * and syncs stashd.synced; rounds follow one another. A round that
     * ends after a write's ack may have pinned before it, but the next
     * round pins after that one ended: a write is durable once the
     * stashd.synced sync of the round after the first one ending after
     * its ack has returned.
     */
    uint32_t commit_file = PL_MAXFILES;

    if (strcmp(backend, "lmdb") == 0) {
        for (uint32_t f = 0; f < m->nfiles; f++) {
            if (strcmp(m->log->files[f], "stashd.synced") == 0) {
                commit_file = f;
            }
        }
    }
    const struct pl_log *log = m->log;
    struct kop *inflight[NTHREADS + 1] = { NULL };

    keys_free();
    for (uint64_t i = 0; i < m->nrec; i++) {
        const struct pl_rec *r = &log->rec[i];

        if ((r->kind == PL_ISSUE || r->kind == PL_ACK) &&
            (r->thr == 0 || r->thr > NTHREADS || r->off >= NKEYS)) {
            ck_abort_msg("bad marker at record %" PRIu64, i);
        }
        switch (r->kind) {
        case PL_ISSUE: {
            struct kinfo *ki = &keys[r->off];
            struct kop *o;

            inflight[r->thr] = NULL;
            if (r->file == OP_TOUCH) {
                break;
            }
            ck_assert_uint_eq(r->len, ki->n + 1);
            if (ki->n == ki->cap) {
                ki->cap = ki->cap != 0 ? ki->cap * 2 : 32;
                ki->ops = realloc(ki->ops, ki->cap * sizeof(*ki->ops));
                ck_assert_ptr_nonnull(ki->ops);
            }
            o = &ki->ops[ki->n++];
            memset(o, 0, sizeof(*o));
            o->issue = i;
            o->kind = r->file;
            o->req = PL_NEVER;
            inflight[r->thr] = o;
            break;
        }
        case PL_ACK:
            if (r->file != OP_TOUCH) {
                struct kop *o = &keys[r->off].ops[r->len - 1];

                o->ack = i;
                o->rc = (uint8_t)r->data;
                o->acked = true;
            }
            inflight[r->thr] = NULL;
            break;
        case PL_WRITE:
        case PL_TRUNC:
        case PL_UNLINK:
            for (unsigned t = 1; t <= NTHREADS; t++) {
                if (inflight[t] != NULL) {
                    inflight[t]->mask |= 1u << r->file;
                }
            }
            break;
        default:
            break;
        }
    }
    for (unsigned k = 0; k < NKEYS; k++) {
        for (uint32_t v = 0; v < keys[k].n; v++) {
            struct kop *o = &keys[k].ops[v];
            uint64_t req = 0;

            if (!effective(o)) {
                continue;
            }
            if (mode == STORE_SYNC_ALWAYS) {
                o->req = o->ack + 1;
                continue;
            }
            if (commit_file != PL_MAXFILES) {
                uint64_t q = pl_model_covered_from(m, commit_file, o->ack);

                o->req = q == PL_NEVER ? PL_NEVER
                         : pl_model_covered_from(m, commit_file, q);
                continue;
            }
            /*
             * Required once every file the call wrote has a completed sync
             * entered after the call returned (without a write: any sync).
             * Only then is every byte of its commit durable in the model,
             * whatever else (a checkpoint, say) wrote meanwhile.
             */
            if (o->mask == 0) {
                req = pl_model_covered_from(m, PL_MAXFILES, o->ack);
            }
            for (uint32_t f = 0; f < m->nfiles; f++) {
                if ((o->mask & (1u << f)) != 0) {
                    uint64_t c = pl_model_covered_from(m, f, o->ack);

                    req = c > req ? c : req;
                }
            }
            o->req = req;
        }
    }
}

/* The image checker (a forked child per image). */

/* What one check found (shared with the child), with a few examples of
 * each kind of finding. */
struct result {
    int                done;
    struct rig_refusal ref;
    unsigned           wrong;
    unsigned           lost;
    unsigned           rderr;
    unsigned           cas_bad;
    unsigned           probe_fail;
    struct rig_ex      ex[RIG_NKINDS];
};

/* Why a value is not value(k, v) for an issued set v; NULL when it is. */
static const char *
why_wrong(unsigned k, const struct store_item *it, uint32_t issued,
          char *gen, char *why, size_t cap, unsigned long *vout)
{
    const struct kinfo *ki = &keys[k];
    const char *d = it->data;
    char name[32];
    size_t nl;
    size_t glen;
    unsigned long v;
    char *end;

    key_name(k, name, sizeof(name));
    nl = strlen(name);
    *vout = 0;
    if (k >= NSETKEYS) {
        /* A counter: the nth incr left n. */
        char num[24];

        if (it->len == 0 || it->len >= sizeof(num)) {
            return "not a counter";
        }
        memcpy(num, d, it->len);
        num[it->len] = '\0';
        v = strtoul(num, &end, 10);
        *vout = v;
        if (*end != '\0' || v == 0) {
            return "not a counter";
        }
        if (v > issued) {
            snprintf(why, cap, "count %lu never reached (%u incrs issued)",
                     v, issued);
            return why;
        }
        return NULL;
    }
    if (it->len < nl + 3 || memcmp(d, name, nl) != 0 || d[nl] != '|') {
        return "not this key's value";
    }
    v = strtoul(d + nl + 1, &end, 10);
    *vout = v;
    if (end >= d + it->len || *end != '|' || v == 0) {
        return "bad header";
    }
    if (v > issued || ki->ops[v - 1].kind != OP_SET) {
        snprintf(why, cap, "version %lu never set (%u ops issued)", v,
                 issued);
        return why;
    }
    glen = val_gen(k, (uint32_t)v, gen);
    if (it->len != glen) {
        snprintf(why, cap, "version %lu is %zu bytes, got %u", v, glen,
                 it->len);
        return why;
    }
    for (size_t i = 0; i < glen; i++) {
        if (d[i] != gen[i]) {
            size_t j = glen;

            while (j > i && d[j - 1] == gen[j - 1]) {
                j--;
            }
            snprintf(why, cap, "version %lu (%zu bytes) differs in bytes "
                     "%zu..%zu", v, glen, i, j - 1);
            return why;
        }
    }
    if (it->flags != val_flags(k, (uint32_t)v)) {
        snprintf(why, cap, "version %lu has flags %u, got %u", v,
                 val_flags(k, (uint32_t)v), it->flags);
        return why;
    }
    return NULL;
}

/* Checks one key against what was issued and required by record p. */
static void
check_key(struct result *res, unsigned k, uint64_t p, bool kill9,
          store_rc_e rc, const struct store_item *it, char *gen)
{
    const struct kinfo *ki = &keys[k];
    uint32_t issued = 0;
    uint32_t req = 0;
    const struct kop *ro = NULL;
    uint64_t rfrom = 0;
    char name[32];
    char why[160];
    const char *bad;
    unsigned long v;

    key_name(k, name, sizeof(name));
    for (uint32_t i = 1; i <= ki->n; i++) {
        const struct kop *o = &ki->ops[i - 1];
        uint64_t from = kill9 ? (effective(o) ? o->ack + 1 : PL_NEVER)
                              : o->req;

        if (o->issue < p) {
            issued = i;
        }
        if (from <= p) {
            req = i;
            rfrom = from;
        }
    }
    ro = req != 0 ? &ki->ops[req - 1] : NULL;
    if (rc == STORE_ENOENT) {
        bool deleted = false;

        if (ro == NULL || ro->kind == OP_DEL) {
            return;
        }
        for (uint32_t i = req + 1; i <= issued; i++) {
            deleted = deleted || ki->ops[i - 1].kind == OP_DEL;
        }
        if (!deleted) {
            res->lost++;
            rig_ex_add(&res->ex[RIG_LOST], "%s absent, version %u required "
                       "(acked at record %" PRIu64 ", durable from %" PRIu64
                       ")", name, req, ro->ack, rfrom);
        }
        return;
    }
    if (rc != STORE_OK) {
        res->rderr++;
        if (ro != NULL && ro->kind != OP_DEL) {
            res->lost++;
            rig_ex_add(&res->ex[RIG_LOST], "get %s: %s, version %u "
                       "required", name, store_strerror(rc), req);
        }
        return;
    }
    bad = why_wrong(k, it, issued, gen, why, sizeof(why), &v);
    if (bad != NULL) {
        char shown[40];

        res->wrong++;
        rig_ex_add(&res->ex[RIG_WRONG], "%s: %s (\"%s...\")", name, bad,
                   rig_shown(it->data, it->len, shown, sizeof(shown)));
        return;
    }
    if (ro != NULL && (v < req || (v == req && ro->kind == OP_DEL))) {
        res->lost++;
        rig_ex_add(&res->ex[RIG_LOST], "%s holds version %lu, version %u "
                   "(%s) required (acked at record %" PRIu64 ", durable "
                   "from %" PRIu64 ")", name, v, req,
                   ro->kind == OP_DEL ? "delete" : "write", ro->ack, rfrom);
    }
}

/* Opens the image in dir and checks every key; in the forked child. */
static void
check_image(const char *backend, const char *dir, uint64_t p, bool kill9,
            struct result *res)
{
    struct rig_store rs;
    char *gen = malloc(VMAX);
    uint64_t cas_max = 0;
    store_rc_e rc;

    cfg_init(&rs.cfg, dir, STORE_SYNC_NONE, rs.err, sizeof(rs.err));
    rs.cfg.threads = 1;
    rs.cfg.now = NOW0 + 60;
    if (!kill9) {
        rs.cfg.boot_id = "boot-after-power-loss";
    }
    if (!rig_store_open(&rs, backend, NOW0 + 60, &res->ref)) {
        if (!res->ref.refused) {
            res->probe_fail++;
            rig_ex_add(&res->ex[RIG_OTHER], "attach failed after open");
        }
        return;
    }
    for (unsigned k = 0; k < NKEYS; k++) {
        char name[32];
        struct store_item it;

        key_name(k, name, sizeof(name));
        rc = rig_get(&rs, name, &it);
        check_key(res, k, p, kill9, rc, &it, gen);
        if (rc == STORE_OK) {
            cas_max = it.cas > cas_max ? it.cas : cas_max;
            rig_release(&rs, &it);
        }
    }
    {
        uint64_t cas = 0;

        rc = rig_set(&rs, "pl:probe", "probe", 5, 0, 0, &cas);
        if (rc != STORE_OK) {
            res->probe_fail++;
            rig_ex_add(&res->ex[RIG_OTHER], "a set after open failed: %s",
                       store_strerror(rc));
        } else if (cas <= cas_max) {
            res->cas_bad++;
            rig_ex_add(&res->ex[RIG_OTHER], "new CAS %" PRIu64 " not above "
                       "%" PRIu64 " read", cas, cas_max);
        }
    }
    rig_store_close(&rs);
    free(gen);
}

/* The driver: images, slots, tallies. */

struct image {
    uint64_t p;
    bool     kill9;
    uint8_t  fate;
    unsigned id;
};

static const struct pl_fate fates[] = {
    { 0.50, 0.20, PL_ORDER_NONE },
    { 0.85, 0.05, PL_ORDER_NONE },
    { 0.15, 0.10, PL_ORDER_NONE },
    { 0.00, 0.00, PL_ORDER_PREFIX },
    { 0.00, 0.00, PL_ORDER_SUFFIX },
};
#define NFATES ((unsigned)(sizeof(fates) / sizeof(fates[0])))
static const char *const fate_names[] = {
    "half kept", "most kept", "most dropped", "in-order prefix",
    "newest first",
};

struct tally {
    struct rig_tally r;    /* how the image checks ended */
    unsigned wrong;        /* images with a wrong value */
    unsigned lost;         /* images with a lost required write */
    unsigned cas_bad;
    unsigned probe_fail;
    unsigned wrong_vals;   /* over all images */
    unsigned lost_vals;
    unsigned rderr;
};

/* What a pool slot is checking. */
struct slot {
    struct image    img;
    uint8_t        *fates;     /* with _KEEP: pl_fate_e of each record */
};

static const char *
img_kind(const struct image *im)
{
    return im->kill9 ? "kill -9" : fate_names[im->fate];
}

/* The log of the case running, for dumps of kept images. */
static const struct pl_model *keep_model;

/* Keeps a copy of slot i's image when asked to, the first of each kind. */
static void
keep_image(const struct params *pp, const struct rig_pool *pool, int i,
           const struct slot *sl, const char *what)
{
    char to[128];

    if (pp->keep && rig_keep(pool, i, "stashd-pl", sl->img.id, what, to,
                             sizeof(to))) {
        char log[160];

        /* With the log up to the crash point and each write's fate. */
        snprintf(log, sizeof(log), "%s/log.txt", to);
        (void)pl_dump(keep_model, sl->img.p, sl->fates, log);
        printf("kept image %u (%s) in %s\n", sl->img.id, what, to);
    }
}

/* Folds the outcome of the child rp reaped into the tallies. */
static void
slot_done(const struct params *pp, const struct rig_pool *pool,
          const struct slot *slots, struct rig_reaped rp, struct tally *pw,
          struct tally *k9, uint64_t nrec)
{
    const struct slot *sl = &slots[rp.slot];
    struct tally *t = sl->img.kill9 ? k9 : pw;
    const struct result *res = pool->s[rp.slot].res;
    char at[96];

    snprintf(at, sizeof(at), "image %u (%s, P=%" PRIu64 "/%" PRIu64 ")",
             sl->img.id, img_kind(&sl->img), sl->img.p, nrec);
    switch (rig_tally_end(&t->r, pool, &rp, res->done, &res->ref, at)) {
    case RIG_HUNG:
        keep_image(pp, pool, rp.slot, sl, "hang");
        return;
    case RIG_CRASHED:
        keep_image(pp, pool, rp.slot, sl, "crash");
        return;
    case RIG_REFUSED:
        keep_image(pp, pool, rp.slot, sl, "refused");
        return;
    case RIG_OPENED:
        break;
    }
    t->wrong += res->wrong > 0;
    t->lost += res->lost > 0;
    t->cas_bad += res->cas_bad > 0;
    t->probe_fail += res->probe_fail > 0;
    t->wrong_vals += res->wrong;
    t->lost_vals += res->lost;
    t->rderr += res->rderr;
    for (int kind = 0; kind < RIG_NKINDS; kind++) {
        /* One line per image and kind, so examples span images. */
        if (res->ex[kind].n > 0) {
            rig_ex_add(&t->r.ex[kind], "%s: %s%s", at, res->ex[kind].s[0],
                       res->ex[kind].n > 1 ? " (and more)" : "");
        }
    }
    if (res->wrong > 0) {
        keep_image(pp, pool, rp.slot, sl, "wrong");
    } else if (res->lost > 0) {
        keep_image(pp, pool, rp.slot, sl, "lost");
    }
}

static int
image_cmp(const void *a, const void *b)
{
    const struct image *x = a;
    const struct image *y = b;

    return x->p < y->p ? -1 : x->p > y->p ? 1 : 0;
}

/*
 * The returns of syncs that cover a write to the first 8 KB of their file
 * (a file header: SQLite's WAL and database headers, LMDB's two meta
 * pages): a crash just before one leaves a header write in flight.
 */
static uint64_t *
header_syncs(const struct pl_model *m, size_t *n)
{
    const struct pl_log *log = m->log;
    uint64_t *out = malloc((m->any.nbar + 1) * sizeof(*out));
    bool pending[PL_MAXFILES] = { false };

    ck_assert_ptr_nonnull(out);
    *n = 0;
    for (uint64_t i = 0; i < m->nrec; i++) {
        const struct pl_rec *r = &log->rec[i];

        if (r->kind == PL_WRITE && r->off < 8192) {
            pending[r->file] = true;
        } else if (r->kind == PL_SYNC_IN && pending[r->file]) {
            /* Its return is where the header is still in flight. */
            pending[r->file] = false;
            for (uint64_t j = i + 1; j < m->nrec; j++) {
                if (log->rec[j].kind == PL_SYNC_OUT && log->rec[j].off == i) {
                    out[(*n)++] = j;
                    break;
                }
            }
        }
    }
    return out;
}

/*
 * Crash points: half spread over the whole run, the rest where much is in
 * flight: just before a sync returns, just after an acknowledgement, just
 * before the return of a sync that covers a header write.
 */
static struct image *
pick_images(const struct pl_model *m, const struct params *pp,
            struct pl_rng *rng, unsigned *n)
{
    const struct pl_log *log = m->log;
    uint64_t *acks = NULL;
    size_t nacks = 0;
    size_t nhdr = 0;
    uint64_t *hdr = header_syncs(m, &nhdr);
    struct image *im;
    unsigned total = pp->points + pp->kill9;

    im = calloc(total != 0 ? total : 1, sizeof(*im));
    ck_assert_ptr_nonnull(im);
    acks = malloc(m->nrec * sizeof(*acks));
    ck_assert_ptr_nonnull(acks);
    for (uint64_t i = 0; i < m->nrec; i++) {
        if (log->rec[i].kind == PL_ACK) {
            acks[nacks++] = i;
        }
    }
    for (unsigned i = 0; i < total; i++) {
        unsigned r = (unsigned)pl_rng_below(rng, 20);

        im[i].id = i;
        im[i].kill9 = i >= pp->points;
        im[i].fate = (uint8_t)pl_rng_below(rng, NFATES);
        if (!im[i].kill9 && r >= 10 && r < 13 && m->any.nbar > 0) {
            im[i].p = m->any.by_out[pl_rng_below(rng, m->any.nbar)].out;
        } else if (!im[i].kill9 && r >= 13 && r < 16 && nacks > 0) {
            im[i].p = acks[pl_rng_below(rng, nacks)] + 1;
        } else if (!im[i].kill9 && r >= 16 && nhdr > 0) {
            im[i].p = hdr[pl_rng_below(rng, nhdr)];
        } else {
            im[i].p = 1 + pl_rng_below(rng, m->nrec);
        }
    }
    free(acks);
    free(hdr);
    qsort(im, total, sizeof(*im), image_cmp);
    *n = total;
    return im;
}

static void
print_tally(const char *what, const struct tally *t)
{
    printf("  %s: %u images: %u opened, %u refused (%u without naming a "
           "file), %u crashes, %u hangs, %u with wrong values (%u values), "
           "%u with lost required writes (%u keys), %u CAS not increasing, "
           "%u failed a set after open; %u read errors; %u checks over "
           "1 s, longest %.0f ms\n", what, t->r.checks, t->r.opened,
           t->r.refused, t->r.unnamed, t->r.crashes, t->r.hangs, t->wrong,
           t->wrong_vals, t->lost, t->lost_vals, t->cas_bad, t->probe_fail,
           t->rderr, t->r.slow, t->r.max_ms);
    rig_tally_print_ex(&t->r, "    ");
}

static unsigned
tally_failures(const struct tally *t)
{
    return t->r.unnamed + t->r.crashes + t->r.hangs + t->wrong + t->lost +
           t->cas_bad + t->probe_fail;
}

/* Runs check_image on slot i's image in a child that cannot outlive it. */
static void
slot_start(struct rig_pool *pool, int i, const struct slot *sl,
           const char *backend)
{
    if (rig_pool_fork(pool, i) == 0) {
        struct result *res = pool->s[i].res;

        pl_rec_nosync();
        check_image(backend, pool->s[i].data, sl->img.p, sl->img.kill9, res);
        res->done = 1;
        _exit(0);
    }
}

/* Records the workload on work; returns the number of records. */
static uint64_t
record(const struct case_def *cd, const char *work, const struct params *pp)
{
    pid_t pid = rig_fork();

    if (pid == 0) {
        workload_child(cd, work, pp);
    }
    rig_wait_ok(pid, "%s-%s: the workload", cd->backend, cd->mode_name);
    return atomic_load(&pl_rec_log()->nrec);
}

/* Prints what was recorded; fails when the wrappers saw nothing. */
static void
record_summary(const struct case_def *cd, const struct params *pp,
               const struct pl_model *m)
{
    const struct pl_log *log = m->log;
    uint64_t writes = 0;
    uint64_t bytes = 0;
    uint64_t acked = 0;
    uint64_t issued = 0;

    for (uint64_t i = 0; i < m->nrec; i++) {
        if (log->rec[i].kind == PL_WRITE) {
            writes++;
            bytes += log->rec[i].len;
        } else if (log->rec[i].kind == PL_ISSUE) {
            issued++;
        } else if (log->rec[i].kind == PL_ACK) {
            acked++;
        }
    }
    printf("powerloss %s-%s: seed %" PRIu64 ", %" PRIu64 " ops issued, %"
           PRIu64 " returned; %" PRIu64 " records: %" PRIu64 " writes (%"
           PRIu64 " KB), %zu syncs, %" PRIu64 " msyncs, %" PRIu64
           " renames%s; files:", cd->backend, cd->mode_name, pp->seed,
           issued, acked, m->nrec, writes, bytes / 1024, m->any.nbar,
           log->msyncs, log->renames,
           log->overflow ? " (log full: stopped early)" : "");
    for (uint32_t f = 0; f < m->nfiles; f++) {
        printf(" %s (%zu ops, %zu syncs)", log->files[f], m->f[f].nops,
               m->f[f].nbar);
    }
    printf("\n");
    /* The rig sees nothing unless the interposition really works. */
    ck_assert_msg(writes > 0 && m->any.nbar > 0 && acked > 0,
                  "%s-%s: recorded %" PRIu64 " writes, %zu syncs, %" PRIu64
                  " acks: the wrappers are not called", cd->backend,
                  cd->mode_name, writes, m->any.nbar, acked);
}

START_TEST(powerloss)
{
    const struct case_def *cd = &cases[_i];
    struct params pp;
    char base[256];
    char work[272];
    struct pl_model m;
    struct pl_dir dur;
    struct pl_dir k9dur;
    struct pl_dir out;
    struct pl_rng rng;
    struct image *im;
    unsigned nim = 0;
    struct rig_pool pool;
    struct slot slots[NSLOTS];
    struct tally pw;
    struct tally k9;
    uint64_t nrec;
    uint64_t img_bytes = 0;
    uint8_t *fate_buf = NULL;
    time_t t0 = time(NULL);
    time_t t_rec;

    if (!case_selected(cd)) {
        return;
    }
    params_get(&pp);
    memset(&pw, 0, sizeof(pw));
    memset(&k9, 0, sizeof(k9));
    rig_mkdtemp(base, sizeof(base), "stashd-pl");
    snprintf(work, sizeof(work), "%s/work", base);
    ck_assert_int_eq(mkdir(work, 0700), 0);
    ck_assert(pl_rec_setup(8u << 20, 2048ull << 20));
    nrec = record(cd, work, &pp);
    t_rec = time(NULL);
    tu_rm_tree(work);
    ck_assert(pl_model_init(&m, pl_rec_log(), nrec));
    keys_build(&m, cd->mode, cd->backend);
    record_summary(cd, &pp, &m);

    rng.s = pp.seed * 0x9e3779b97f4a7c15ull + (uint64_t)_i;
    im = pick_images(&m, &pp, &rng, &nim);
    pl_dir_init(&dur);
    pl_dir_init(&k9dur);
    pl_dir_init(&out);
    memset(slots, 0, sizeof(slots));
    rig_pool_init(&pool, NSLOTS, base, sizeof(struct result), pp.timeout_s,
                  1000.0);
    if (pp.keep) {
        keep_model = &m;
        fate_buf = malloc(nrec);
        ck_assert_ptr_nonnull(fate_buf);
        for (int i = 0; i < NSLOTS; i++) {
            slots[i].fates = malloc(nrec);
            ck_assert_ptr_nonnull(slots[i].fates);
        }
    }
    for (unsigned j = 0; j < nim; j++) {
        struct image *img = &im[j];
        struct pl_imgstat ist = { .fate_of = fate_buf };
        struct pl_rng irng = { rig_mix(pp.seed, img->id) };
        int i;

        /* The next image is built while the last ones are checked. */
        ck_assert(pl_image(&m, img->kill9 ? &k9dur : &dur, img->p,
                           img->kill9, &fates[img->fate], &irng, &out,
                           &ist));
        while ((i = rig_pool_idle(&pool)) < 0) {
            slot_done(&pp, &pool, slots, rig_pool_reap(&pool), &pw, &k9,
                      nrec);
        }
        rig_pool_fresh(&pool, i);
        ck_assert(pl_dir_write(&m, &out, pool.s[i].data));
        for (uint32_t f = 0; f < m.nfiles; f++) {
            img_bytes += out.f[f].exists ? out.f[f].len : 0;
        }
        slots[i].img = *img;
        if (pp.keep) {
            memcpy(slots[i].fates, fate_buf, nrec);
            rig_pool_pristine(&pool, i);
        }
        slot_start(&pool, i, &slots[i], cd->backend);
    }
    while (rig_pool_busy(&pool)) {
        slot_done(&pp, &pool, slots, rig_pool_reap(&pool), &pw, &k9, nrec);
    }

    printf("powerloss %s-%s results (%ld s: workload %ld s, images of %"
           PRIu64 " KB on average):\n", cd->backend, cd->mode_name,
           (long)(time(NULL) - t0), (long)(t_rec - t0),
           nim != 0 ? img_bytes / nim / 1024 : 0);
    print_tally("power loss", &pw);
    print_tally("kill -9", &k9);
    fflush(stdout);

    rig_pool_deinit(&pool);
    for (int i = 0; i < NSLOTS; i++) {
        free(slots[i].fates);
    }
    free(fate_buf);
    free(im);
    pl_dir_deinit(&dur);
    pl_dir_deinit(&k9dur);
    pl_dir_deinit(&out);
    pl_model_deinit(&m);
    keys_free();
    pl_rec_teardown();
    tu_rm_tree(base);
    ck_assert_msg(tally_failures(&pw) + tally_failures(&k9) == 0,
                  "%s-%s: power loss: %u crashes, %u hangs, %u wrong, %u "
                  "lost, %u unnamed refusals, %u CAS, %u sets failed; "
                  "kill -9: %u crashes, %u hangs, %u wrong, %u lost",
                  cd->backend, cd->mode_name, pw.r.crashes, pw.r.hangs,
                  pw.wrong, pw.lost, pw.r.unnamed, pw.cas_bad, pw.probe_fail,
                  k9.r.crashes, k9.r.hangs, k9.wrong, k9.lost);
}
END_TEST

int
main(void)
{
    unsigned points = rig_env_uint("STASHD_POWERLOSS_POINTS", 200);

    /* Generous: a hang costs its timeout, and ASan is slower. */
    return rig_run("store_powerloss", powerloss, NCASES,
                   300.0 + points * 0.5);
}
