/*
 * Helpers for the backend conformance suite: open any backend through
 * storage.h alone in a fresh temporary data directory, drive it with short
 * calls, and on close check that every successful get was released once and
 * remove the directory; and run a test program's suite. Nothing here knows
 * a backend's internals, so a new backend joins the suite by adding one row
 * to its table. Header-only (static inline): each test program is one file
 * (check_conformance.c; persist_util.h builds on its sink and runner for
 * the persistent backends' tests, rig_util.h on its configuration and
 * runner for the fault rigs).
 */
#ifndef STASHD_TESTS_CONFORMANCE_H
#define STASHD_TESTS_CONFORMANCE_H

#include "storage/storage.h"
#include "tests/util.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONF_NOW0      1700000000u         /* a plausible unix time */
#define CONF_MEM_LIMIT (256ull * 1024 * 1024)
#define CONF_ITEM_MAX  (1024u * 1024u)
#define CONF_VBUF      (CONF_ITEM_MAX + 1)

/*
 * ck_assert records a mark point (a write to a file) on every call, which
 * dominates loops of a million operations; this only acts on failure.
 */
#define CONF_CHECK(cond)                                                  \
    do {                                                                  \
        if (!(cond)) {                                                    \
            ck_abort_msg("%s:%d: %s", __FILE__, __LINE__, #cond);         \
        }                                                                 \
    } while (0)

/* Memory a copying backend fills on get; freed when no get is pending. */
struct conf_block {
    struct conf_block *next;
    unsigned char      data[];
};

struct conf_sink {
    struct store_sink  base;               /* first: what backends see */
    struct conf_block *blocks;
};

/* One open store and the calling thread's view of it. */
struct conf {
    const struct store_ops *ops;
    struct store           *s;
    struct store_thr       *t;
    struct store_cfg        cfg;
    struct store_call       c;             /* c.now is the test's clock */
    struct conf_sink        sink;
    char                    dir[64];
    char                    err[256];      /* why open failed */
    char                   *vbuf;          /* last value read, NUL added */
    long                    gets;          /* STORE_OK gets */
    long                    releases;
};

/* store_sink.reserve: a fresh block per value, kept until reset. */
static inline void *
conf_sink_reserve(struct store_sink *sk, size_t len)
{
    struct conf_sink *cs = (struct conf_sink *)(void *)sk;
    struct conf_block *b = malloc(sizeof(*b) + len + 1);

    if (b == NULL) {
        return NULL;
    }
    b->next = cs->blocks;
    cs->blocks = b;
    return b->data;
}

/* Frees what the backend reserved for earlier gets. */
static inline void
conf_sink_reset(struct conf_sink *cs)
{
    while (cs->blocks != NULL) {
        struct conf_block *b = cs->blocks;

        cs->blocks = b->next;
        free(b);
    }
}

/* An empty sink. */
static inline void
conf_sink_init(struct conf_sink *cs)
{
    cs->base.reserve = conf_sink_reserve;
    cs->blocks = NULL;
}

/* The configuration every conformance test starts from. */
static inline void
conformance_cfg(struct store_cfg *cfg, const char *dir)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->mem_limit = CONF_MEM_LIMIT;
    cfg->item_max = CONF_ITEM_MAX;
    cfg->chunk_min = 48;
    cfg->factor = 1.25;
    cfg->threads = 4;
    cfg->data_dir = dir;
    cfg->sync = STORE_SYNC_NONE;
    cfg->sync_interval_ms = 1000;
    cfg->now = CONF_NOW0;
}

/* Opens ops on a fresh temporary directory with cfg (NULL = defaults). */
static inline struct conf *
conformance_open_cfg(const struct store_ops *ops, const struct store_cfg *cfg)
{
    struct conf *cf = calloc(1, sizeof(*cf));
    store_rc_e rc;

    ck_assert_ptr_nonnull(cf);
    snprintf(cf->dir, sizeof(cf->dir), "/tmp/stashd-conf-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(cf->dir));
    if (cfg != NULL) {
        cf->cfg = *cfg;
        cf->cfg.data_dir = cf->dir;
    } else {
        conformance_cfg(&cf->cfg, cf->dir);
    }
    cf->cfg.err = cf->err;
    cf->cfg.errlen = sizeof(cf->err);
    cf->ops = ops;
    cf->vbuf = malloc(CONF_VBUF + 1);
    ck_assert_ptr_nonnull(cf->vbuf);
    conf_sink_init(&cf->sink);
    cf->c.now = cf->cfg.now;
    cf->c.sink = &cf->sink.base;
    cf->c.wait = NULL;
    rc = ops->open(&cf->cfg, &cf->s);
    ck_assert_msg(rc == STORE_OK, "%s: open: %s (%s)", ops->name,
                  store_strerror(rc), cf->err);
    ck_assert_int_eq(ops->attach(cf->s, &cf->t), STORE_OK);
    return cf;
}

/* Opens ops with the default conformance configuration. */
static inline struct conf *
conformance_open(const struct store_ops *ops)
{
    return conformance_open_cfg(ops, NULL);
}

/* Checks gets == releases, closes, removes the directory, frees *cfp. */
static inline void
conformance_close(struct conf **cfp)
{
    struct conf *cf = *cfp;

    ck_assert_msg(cf->gets == cf->releases, "%ld gets, %ld releases",
                  cf->gets, cf->releases);
    cf->ops->detach(&cf->t);
    ck_assert_ptr_null(cf->t);
    cf->ops->close(&cf->s);
    ck_assert_ptr_null(cf->s);
    conf_sink_reset(&cf->sink);
    tu_rm_tree(cf->dir);
    free(cf->vbuf);
    free(cf);
    *cfp = NULL;
}

/* A key view of a C string. */
static inline struct store_key
conf_key(const char *key)
{
    struct store_key k = { key, strlen(key) };

    return k;
}

/* Sets the clock every later call passes as c->now. */
static inline void
conf_now(struct conf *cf, uint32_t now)
{
    cf->c.now = now;
}

/* Any mode with a value of len bytes; *cas_out may be NULL. */
static inline store_rc_e
conf_storen(struct conf *cf, store_mode_e m, const char *key, const void *val,
            size_t len, uint32_t flags, uint32_t exptime, uint64_t cas,
            uint64_t *cas_out)
{
    struct store_key k = conf_key(key);
    struct store_item in = { val, (uint32_t)len, flags, exptime, cas, NULL };
    uint64_t dummy = 0;
    store_rc_e rc;

    cf->c.pending = false;
    rc = cf->ops->store(cf->t, &cf->c, m, &k, &in,
                        cas_out != NULL ? cas_out : &dummy);
    CONF_CHECK(!cf->c.pending);
    return rc;
}

/* conf_storen with a C-string value. */
static inline store_rc_e
conf_store(struct conf *cf, store_mode_e m, const char *key, const char *val,
           uint32_t flags, uint32_t exptime, uint64_t cas, uint64_t *cas_out)
{
    return conf_storen(cf, m, key, val, strlen(val), flags, exptime, cas,
                       cas_out);
}

/* SET that must succeed; returns its CAS. */
static inline uint64_t
conf_put(struct conf *cf, const char *key, const char *val)
{
    uint64_t cas = 0;

    CONF_CHECK(conf_store(cf, STORE_SET, key, val, 0, 0, 0, &cas) ==
               STORE_OK);
    CONF_CHECK(cas != 0);
    return cas;
}

/* A get counted for the gets == releases check; caller releases. */
static inline store_rc_e
conf_get_raw(struct conf *cf, const char *key, const uint32_t *touch,
             struct store_item *out)
{
    struct store_key k = conf_key(key);
    store_rc_e rc;

    memset(out, 0, sizeof(*out));
    rc = cf->ops->get(cf->t, &cf->c, &k, touch, out);
    if (rc == STORE_OK) {
        cf->gets++;
    }
    return rc;
}

/* Releases a conf_get_raw value, counted for the close check. */
static inline void
conf_release(struct conf *cf, struct store_item *it)
{
    cf->ops->release(cf->t, it);
    cf->releases++;
    if (cf->gets == cf->releases) {
        conf_sink_reset(&cf->sink);
    }
}

/*
 * Gets key, copies the value into cf->vbuf (NUL-terminated) and releases;
 * *out (may be NULL) gets len, flags, exptime and cas, data = cf->vbuf.
 */
static inline store_rc_e
conf_get(struct conf *cf, const char *key, const uint32_t *touch,
         struct store_item *out)
{
    struct store_item it;
    store_rc_e rc = conf_get_raw(cf, key, touch, &it);

    if (rc != STORE_OK) {
        return rc;
    }
    CONF_CHECK(it.len <= CONF_VBUF);
    memcpy(cf->vbuf, it.data, it.len);
    cf->vbuf[it.len] = '\0';
    if (out != NULL) {
        *out = it;
        out->data = cf->vbuf;
        out->pin = NULL;
    }
    conf_release(cf, &it);
    return STORE_OK;
}

/* The value of key as a string, or NULL when missing. */
static inline const char *
conf_get_str(struct conf *cf, const char *key)
{
    store_rc_e rc = conf_get(cf, key, NULL, NULL);

    if (rc != STORE_OK && rc != STORE_ENOENT) {
        ck_abort_msg("get %s: %s", key, store_strerror(rc));
    }
    return rc == STORE_OK ? cf->vbuf : NULL;
}

/* Deletes key; cas != 0 makes it conditional. */
static inline store_rc_e
conf_del(struct conf *cf, const char *key, uint64_t cas)
{
    struct store_key k = conf_key(key);
    store_rc_e rc;

    cf->c.pending = false;
    rc = cf->ops->del(cf->t, &cf->c, &k, cas);
    CONF_CHECK(!cf->c.pending);
    return rc;
}

/* arith with d; value and cas_out may be NULL. */
static inline store_rc_e
conf_arith(struct conf *cf, const char *key, const struct store_delta *d,
           uint64_t *value, uint64_t *cas_out)
{
    struct store_key k = conf_key(key);
    uint64_t v = 0;
    uint64_t cas = 0;
    store_rc_e rc;

    cf->c.pending = false;
    rc = cf->ops->arith(cf->t, &cf->c, &k, d, value != NULL ? value : &v,
                        cas_out != NULL ? cas_out : &cas);
    CONF_CHECK(!cf->c.pending);
    return rc;
}

/* incr (or decr) by without create; returns rc, *value the result. */
static inline store_rc_e
conf_incr(struct conf *cf, const char *key, bool decr, uint64_t by,
          uint64_t *value)
{
    struct store_delta d = { by, 0, 0, 0, decr, false };

    return conf_arith(cf, key, &d, value, NULL);
}

/* Sets key's exptime. */
static inline store_rc_e
conf_touch(struct conf *cf, const char *key, uint32_t exptime)
{
    struct store_key k = conf_key(key);
    store_rc_e rc;

    cf->c.pending = false;
    rc = cf->ops->touch(cf->t, &cf->c, &k, exptime);
    CONF_CHECK(!cf->c.pending);
    return rc;
}

/* Flushes everything stored before when (<= now: everything). */
static inline store_rc_e
conf_flush(struct conf *cf, uint32_t when)
{
    store_rc_e rc;

    cf->c.pending = false;
    rc = cf->ops->flush(cf->t, &cf->c, when);
    CONF_CHECK(!cf->c.pending);
    return rc;
}

/* Runs suite s, each test in its own process (CK_FORK), and frees it;
 * the exit status of a test program. */
static inline int
conf_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

#endif /* STASHD_TESTS_CONFORMANCE_H */
