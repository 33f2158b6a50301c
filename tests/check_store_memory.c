/*
 * Unit tests of the memory backend's own machinery, beyond what the
 * conformance suite checks for every backend: slab classes and the memory
 * limit, LRU eviction with second chance, -M, pins against reuse, hash
 * growth under load, the sweeper, its stats groups and its registry entry.
 * It may know the item header size (storage/memory/mem.h), nothing else.
 */
#include "tests/conformance.h"
#include "storage/memory/mem.h"

#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define T0    CONF_NOW0
#define MB    (1024u * 1024u)
#define VLEN  1000u

/* A store configured like `stashd -m limit_mb [-M]`. */
static struct conf *
open_mem(uint64_t limit, bool no_evict)
{
    struct store_cfg cfg;

    conformance_cfg(&cfg, NULL);
    cfg.mem_limit = limit;
    cfg.no_evict = no_evict;
    return conformance_open_cfg(&store_mem_ops, &cfg);
}

/* ---- stats groups as a name=value list ---- */

struct lines {
    char   buf[64 * 1024];
    size_t len;
    int    n;
};

static void
collect(void *arg, const char *name, const char *value)
{
    struct lines *l = arg;
    int w = snprintf(l->buf + l->len, sizeof(l->buf) - l->len, "%s=%s\n",
                     name, value);

    ck_assert_int_gt(w, 0);
    ck_assert_uint_lt(l->len + (size_t)w, sizeof(l->buf));
    l->len += (size_t)w;
    l->n++;
}

static void
group(struct conf *cf, const char *name, struct lines *l)
{
    memset(l, 0, sizeof(*l));
    ck_assert_int_eq(cf->ops->stats_group(cf->t, name, collect, l), STORE_OK);
}

/* The value of stat name in l, or -1 when absent. */
static long long
stat_of(const struct lines *l, const char *name)
{
    size_t n = strlen(name);
    const char *p = l->buf;

    while ((p = strstr(p, name)) != NULL) {
        if ((p == l->buf || p[-1] == '\n') && p[n] == '=') {
            return atoll(p + n + 1);
        }
        p += n;
    }
    return -1;
}

static long long
class_stat(const struct lines *l, const char *prefix, unsigned id,
           const char *name)
{
    char key[96];

    snprintf(key, sizeof(key), "%s%u:%s", prefix, id, name);
    return stat_of(l, key);
}

static void
stats(struct conf *cf, struct store_stats *st)
{
    cf->ops->stats(cf->t, st);
}

static void
fill_value(char *v, size_t n, const char *key)
{
    size_t kl = strlen(key);

    for (size_t i = 0; i < n; i++) {
        v[i] = key[i % kl];
    }
}

/* Stores key with a VLEN-byte value derived from the key. */
static store_rc_e
put_big(struct conf *cf, const char *key)
{
    char v[VLEN];

    fill_value(v, sizeof(v), key);
    return conf_storen(cf, STORE_SET, key, v, sizeof(v), 0, 0, 0, NULL);
}

/* True when key is present with the value put_big gave it. */
static bool
has_big(struct conf *cf, const char *key)
{
    char v[VLEN];
    struct store_item it;

    if (conf_get(cf, key, NULL, &it) != STORE_OK) {
        return false;
    }
    fill_value(v, sizeof(v), key);
    CONF_CHECK(it.len == VLEN && memcmp(cf->vbuf, v, VLEN) == 0);
    return true;
}

/* The class id holding the 1 KB test items. */
static unsigned
big_class(struct conf *cf)
{
    return store_mem_slab_id(cf->s, mem_item_total(6, VLEN));
}

START_TEST(evicts_at_mem_limit)
{
    struct conf *cf = open_mem(2 * MB, false);
    struct store_stats st;
    struct lines l;
    char key[32];

    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof(key), "k%05d", i);
        CONF_CHECK(put_big(cf, key) == STORE_OK);
    }
    stats(cf, &st);
    ck_assert_uint_gt(st.evictions, 0);
    ck_assert_uint_eq(st.evicted_unfetched, st.evictions);
    ck_assert_uint_lt(st.curr_items, 10000);
    ck_assert_uint_eq(st.curr_items + st.evictions, 10000);
    ck_assert_uint_le(st.bytes, 2 * MB);
    for (int i = 9900; i < 10000; i++) {
        snprintf(key, sizeof(key), "k%05d", i);
        ck_assert_msg(has_big(cf, key), "recent %s evicted", key);
    }
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "k%05d", i);
        ck_assert_msg(!has_big(cf, key), "early %s kept", key);
    }
    group(cf, "slabs", &l);
    ck_assert_int_le(stat_of(&l, "total_malloced"), 2 * MB);
    ck_assert_int_eq(stat_of(&l, "active_slabs"), 1);
    ck_assert_int_eq(class_stat(&l, "", big_class(cf), "total_pages"), 2);
    group(cf, "items", &l);
    ck_assert_int_eq(class_stat(&l, "items:", big_class(cf), "evicted"),
                     (long long)st.evictions);
    conformance_close(&cf);
}
END_TEST

START_TEST(read_item_gets_second_chance)
{
    struct conf *cf = open_mem(2 * MB, false);
    struct store_stats st;
    struct lines l;
    char key[32];
    long long cap;

    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "hot%d", i);
        ck_assert_int_eq(put_big(cf, key), STORE_OK);
        snprintf(key, sizeof(key), "cold%d", i);
        ck_assert_int_eq(put_big(cf, key), STORE_OK);
    }
    group(cf, "slabs", &l);
    cap = 2 * class_stat(&l, "", big_class(cf), "chunks_per_page");
    ck_assert_int_gt(cap, 100);
    /* Fill to the brim without evicting. */
    for (long long i = 20; i < cap; i++) {
        snprintf(key, sizeof(key), "f%06lld", i);
        CONF_CHECK(put_big(cf, key) == STORE_OK);
    }
    stats(cf, &st);
    ck_assert_uint_eq(st.evictions, 0);
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "hot%d", i);
        ck_assert(has_big(cf, key));
    }
    /* Half the capacity again: the tail goes, except what was read. */
    for (long long i = 0; i < cap / 2; i++) {
        snprintf(key, sizeof(key), "g%06lld", i);
        CONF_CHECK(put_big(cf, key) == STORE_OK);
    }
    stats(cf, &st);
    ck_assert_uint_ge(st.evictions, (uint64_t)(cap / 2));
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "hot%d", i);
        ck_assert_msg(has_big(cf, key), "%s was read but evicted", key);
        snprintf(key, sizeof(key), "cold%d", i);
        ck_assert_msg(!has_big(cf, key), "%s unread but kept", key);
    }
    snprintf(key, sizeof(key), "f%06d", 20);
    ck_assert(!has_big(cf, key));
    conformance_close(&cf);
}
END_TEST

START_TEST(no_evict_answers_enomem)
{
    struct conf *cf = open_mem(2 * MB, true);
    struct store_stats st;
    struct lines l;
    char key[32];
    int n = 0;
    store_rc_e rc;

    for (;;) {
        snprintf(key, sizeof(key), "k%05d", n);
        rc = put_big(cf, key);
        if (rc != STORE_OK) {
            break;
        }
        n++;
        ck_assert_int_lt(n, 100000);
    }
    ck_assert_int_eq(rc, STORE_ENOMEM);
    ck_assert_int_gt(n, 1000);
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "k%05d", i);
        ck_assert_msg(has_big(cf, key), "%s lost under -M", key);
    }
    stats(cf, &st);
    ck_assert_uint_eq(st.evictions, 0);
    ck_assert_uint_eq(st.curr_items, (uint64_t)n);
    group(cf, "items", &l);
    ck_assert_int_ge(class_stat(&l, "items:", big_class(cf), "outofmemory"),
                     1);
    /* All pages are taken, but a class without a page still gets its
     * first one, as in memcached: a new size is never locked out. */
    ck_assert_int_eq(conf_store(cf, STORE_SET, "small", "v", 0, 0, 0, NULL),
                     STORE_OK);
    /* A freed chunk is reused. */
    ck_assert_int_eq(conf_del(cf, "k00000", 0), STORE_OK);
    ck_assert_int_eq(put_big(cf, "again!"), STORE_OK);
    ck_assert_int_eq(put_big(cf, "again?"), STORE_ENOMEM);
    conformance_close(&cf);
}
END_TEST

START_TEST(no_evict_still_reclaims_expired)
{
    struct conf *cf = open_mem(2 * MB, true);
    char v[VLEN];
    char key[32];
    int n = 0;

    memset(v, 'e', sizeof(v));
    for (;; n++) {
        snprintf(key, sizeof(key), "e%05d", n);
        if (conf_storen(cf, STORE_SET, key, v, sizeof(v), 0, T0 + 10, 0,
                        NULL) != STORE_OK) {
            break;
        }
    }
    conf_now(cf, T0 + 10);
    ck_assert_int_eq(put_big(cf, "fresh1"), STORE_OK);
    ck_assert(has_big(cf, "fresh1"));
    conformance_close(&cf);
}
END_TEST

START_TEST(lazy_expiry_and_flush_counted)
{
    struct conf *cf = conformance_open(&store_mem_ops);
    struct store_stats st;

    ck_assert_int_eq(conf_store(cf, STORE_SET, "k", "v", 0, T0 + 5, 0, NULL),
                     STORE_OK);
    conf_now(cf, T0 + 4);
    ck_assert_str_eq(conf_get_str(cf, "k"), "v");
    conf_now(cf, T0 + 5);
    ck_assert_ptr_null(conf_get_str(cf, "k"));
    stats(cf, &st);
    ck_assert_uint_eq(st.get_expired, 1);
    ck_assert_uint_eq(st.curr_items, 0);
    conf_put(cf, "f", "v");
    ck_assert_int_eq(conf_flush(cf, 0), STORE_OK);
    ck_assert_ptr_null(conf_get_str(cf, "f"));
    stats(cf, &st);
    ck_assert_uint_eq(st.get_flushed, 1);
    ck_assert_uint_eq(st.get_expired, 1);
    ck_assert_uint_eq(st.curr_items, 0);
    conformance_close(&cf);
}
END_TEST

START_TEST(cas_starts_at_one_and_counts_writes)
{
    struct conf *cf = conformance_open(&store_mem_ops);
    uint64_t prev;
    uint64_t cas = 0;
    uint64_t v = 0;
    char key[32];

    ck_assert_uint_eq(conf_put(cf, "first", "v"), 1);
    prev = 1;
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof(key), "k%d", i % 37);
        cas = conf_put(cf, key, "v");
        ck_assert_uint_eq(cas, prev + 1);
        prev = cas;
    }
    /* touch, get-and-touch and failed writes hand out no CAS. */
    ck_assert_int_eq(conf_touch(cf, "k1", T0 + 100), STORE_OK);
    ck_assert_int_eq(conf_store(cf, STORE_ADD, "k1", "x", 0, 0, 0, NULL),
                     STORE_NOT_STORED);
    ck_assert_int_eq(conf_store(cf, STORE_APPEND, "k1", "x", 0, 0, 0, &cas),
                     STORE_OK);
    ck_assert_uint_eq(cas, prev + 1);
    conf_put(cf, "n", "1");
    ck_assert_int_eq(conf_arith(cf, "n", &(struct store_delta){ 1, 0, 0, 0,
                                false, false }, &v, &cas), STORE_OK);
    ck_assert_uint_eq(cas, prev + 3);
    conformance_close(&cf);
}
END_TEST

/* memcached's class progression, restated: the spec the store must meet. */
static unsigned
expected_classes(uint64_t *size, unsigned max, uint32_t item_max)
{
    uint64_t s = (ITEM_HDR + 48 + 7) & ~(uint64_t)7;
    unsigned n = 0;

    while (n < max - 1 && (double)s * 1.25 <= (double)item_max) {
        size[n++] = s;
        s = ((uint64_t)((double)s * 1.25) + 7) & ~(uint64_t)7;
    }
    size[n++] = item_max;
    return n;
}

START_TEST(items_land_in_smallest_fitting_class)
{
    static const size_t vlens[] = {
        0, 1, 40, 48, 49, 60, 100, 333, 1000, 4000, 100000, 600000,
        MB - ITEM_HDR - 1,
    };
    uint64_t size[MEM_MAX_CLASSES];
    unsigned n = expected_classes(size, MEM_MAX_CLASSES, MB);

    ck_assert_uint_eq(size[0], 104);
    ck_assert_uint_eq(size[1], 136);
    ck_assert_uint_eq(size[n - 1], MB);
    for (size_t i = 0; i < sizeof(vlens) / sizeof(vlens[0]); i++) {
        struct conf *cf = conformance_open(&store_mem_ops);
        uint64_t total = mem_item_total(1, vlens[i]);
        char *v = calloc(1, vlens[i] + 1);
        unsigned want = 0;
        unsigned got = 0;
        struct lines l;

        while (size[want] < total) {
            want++;
        }
        ck_assert_int_eq(conf_storen(cf, STORE_SET, "k", v, vlens[i], 0, 0, 0,
                                     NULL), STORE_OK);
        group(cf, "items", &l);
        for (unsigned id = 1; id <= n; id++) {
            if (class_stat(&l, "items:", id, "number") == 1) {
                got = id;
            }
        }
        ck_assert_msg(got == want + 1, "vlen %zu: class %u, want %u",
                      vlens[i], got, want + 1);
        ck_assert_int_eq(class_stat(&l, "items:", got, "mem_requested"),
                         (long long)total);
        group(cf, "slabs", &l);
        ck_assert_int_eq(class_stat(&l, "", got, "chunk_size"),
                         (long long)size[want]);
        ck_assert_int_eq(class_stat(&l, "", got, "used_chunks"), 1);
        ck_assert_int_eq(class_stat(&l, "", got, "chunks_per_page"),
                         size[want] * 2 > MB ? 1 : (long long)(MB /
                                                               size[want]));
        free(v);
        conformance_close(&cf);
    }
}
END_TEST

START_TEST(too_big_is_e2big)
{
    struct store_cfg cfg;
    struct conf *cf = conformance_open(&store_mem_ops);
    size_t exact = MB - ITEM_HDR - 1;
    char *v = calloc(1, 2 * MB);

    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(conf_storen(cf, STORE_SET, "k", v, exact + 1, 0, 0, 0,
                                 NULL), STORE_E2BIG);
    ck_assert_int_eq(conf_storen(cf, STORE_SET, "k", v, exact, 0, 0, 0, NULL),
                     STORE_OK);
    ck_assert_int_eq(conf_storen(cf, STORE_SET, "k2", v, 2 * MB - 100, 0, 0,
                                 0, NULL), STORE_E2BIG);
    conformance_close(&cf);

    /* -I 2m: the same value fits. */
    conformance_cfg(&cfg, NULL);
    cfg.item_max = 2 * MB;
    cf = conformance_open_cfg(&store_mem_ops, &cfg);
    ck_assert_int_eq(conf_storen(cf, STORE_SET, "k2", v, 2 * MB - 100, 0, 0,
                                 0, NULL), STORE_OK);
    {
        struct store_item it;

        ck_assert_int_eq(conf_get_raw(cf, "k2", NULL, &it), STORE_OK);
        ck_assert_uint_eq(it.len, 2 * MB - 100);
        ck_assert_mem_eq(it.data, v, it.len);
        conf_release(cf, &it);
    }
    free(v);
    conformance_close(&cf);
}
END_TEST

/* ---- hash growth ---- */

#define GROW_KEYS 1000000u

struct reader {
    struct store          *s;
    _Atomic unsigned      *published;     /* keys below are stored */
    _Atomic bool          *stop;
    unsigned long          checks;
    bool                   failed;
};

static void *
reader_main(void *arg)
{
    struct reader *r = arg;
    struct store_thr *t = NULL;
    struct store_call c;
    uint64_t x = 88172645463325252ULL;

    memset(&c, 0, sizeof(c));
    c.now = T0;
    if (store_mem_ops.attach(r->s, &t) != STORE_OK) {
        r->failed = true;
        return NULL;
    }
    while (!atomic_load(r->stop)) {
        unsigned top = atomic_load(r->published);
        char key[24];
        struct store_key k;
        struct store_item it;

        if (top == 0) {
            continue;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        snprintf(key, sizeof(key), "g%u", (unsigned)(x % top));
        k.data = key;
        k.len = strlen(key);
        memset(&it, 0, sizeof(it));
        if (store_mem_ops.get(t, &c, &k, NULL, &it) != STORE_OK ||
            it.len != k.len || memcmp(it.data, key, k.len) != 0) {
            r->failed = true;
            if (it.pin != NULL) {
                store_mem_ops.release(t, &it);
            }
            break;
        }
        store_mem_ops.release(t, &it);
        r->checks++;
    }
    store_mem_ops.detach(&t);
    return NULL;
}

START_TEST(hash_grows_under_load)
{
    struct conf *cf = conformance_open(&store_mem_ops);
    _Atomic unsigned published = 0;
    _Atomic bool stop = false;
    struct reader r = { cf->s, &published, &stop, 0, false };
    pthread_t th;
    struct lines l;
    char key[24];
    bool saw_growth = false;

    ck_assert_int_eq(pthread_create(&th, NULL, reader_main, &r), 0);
    for (unsigned i = 0; i < GROW_KEYS; i++) {
        int n = snprintf(key, sizeof(key), "g%u", i);

        CONF_CHECK(conf_storen(cf, STORE_SET, key, key, (size_t)n, 0, 0, 0,
                               NULL) == STORE_OK);
        atomic_store(&published, i + 1);
        if (i % 16 == 0 && i > 0) {
            snprintf(key, sizeof(key), "g%u", (i * 2654435761u) % i);
            CONF_CHECK(conf_get_str(cf, key) != NULL);
            CONF_CHECK(strcmp(cf->vbuf, key) == 0);
        }
        if (i % 4096 == 0) {
            group(cf, "", &l);
            saw_growth |= stat_of(&l, "memory_hash_is_expanding") == 1 ||
                          stat_of(&l, "memory_hash_power_level") > 16;
        }
    }
    atomic_store(&stop, true);
    pthread_join(th, NULL);
    ck_assert(!r.failed);
    ck_assert_uint_gt(r.checks, 0);
    ck_assert(saw_growth);
    /* 1M items > 1.5 x 2^19 buckets: it must reach 2^20, within seconds. */
    for (int tries = 0; tries < 200; tries++) {
        group(cf, "", &l);
        if (stat_of(&l, "memory_hash_power_level") >= 20 &&
            stat_of(&l, "memory_hash_is_expanding") == 0) {
            break;
        }
        nanosleep(&(struct timespec){ 0, 50 * 1000 * 1000 }, NULL);
    }
    ck_assert_int_eq(stat_of(&l, "memory_hash_power_level"), 20);
    ck_assert_int_eq(stat_of(&l, "memory_hash_is_expanding"), 0);
    for (unsigned i = 0; i < GROW_KEYS; i++) {
        snprintf(key, sizeof(key), "g%u", i);
        CONF_CHECK(conf_get_str(cf, key) != NULL);
        CONF_CHECK(strcmp(cf->vbuf, key) == 0);
    }
    conformance_close(&cf);
}
END_TEST

/* ---- pins ---- */

START_TEST(pinned_chunk_freed_only_on_release)
{
    struct conf *cf = conformance_open(&store_mem_ops);
    struct store_item it;
    struct lines l;
    unsigned id = store_mem_slab_id(cf->s, mem_item_total(1, 5));

    conf_put(cf, "k", "value");
    ck_assert_int_eq(conf_get_raw(cf, "k", NULL, &it), STORE_OK);
    ck_assert_int_eq(conf_del(cf, "k", 0), STORE_OK);
    group(cf, "slabs", &l);
    ck_assert_int_eq(class_stat(&l, "", id, "used_chunks"), 1);
    /* A new item must not land in the pinned chunk. */
    conf_put(cf, "j", "other");
    ck_assert_mem_eq(it.data, "value", 5);
    group(cf, "slabs", &l);
    ck_assert_int_eq(class_stat(&l, "", id, "used_chunks"), 2);
    conf_release(cf, &it);
    group(cf, "slabs", &l);
    ck_assert_int_eq(class_stat(&l, "", id, "used_chunks"), 1);
    conformance_close(&cf);
}
END_TEST

START_TEST(pinned_item_survives_eviction_pressure)
{
    struct conf *cf = open_mem(2 * MB, false);
    struct store_item it;
    struct store_stats st;
    struct lines l;
    char want[VLEN];
    char key[32];

    ck_assert_int_eq(put_big(cf, "pinned"), STORE_OK);
    ck_assert_int_eq(conf_get_raw(cf, "pinned", NULL, &it), STORE_OK);
    fill_value(want, sizeof(want), "pinned");
    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof(key), "k%05d", i);
        CONF_CHECK(put_big(cf, key) == STORE_OK);
    }
    stats(cf, &st);
    ck_assert_uint_gt(st.evictions, 0);
    ck_assert_mem_eq(it.data, want, VLEN);
    group(cf, "items", &l);
    ck_assert_int_gt(class_stat(&l, "items:", big_class(cf),
                                "lrutail_reflocked"), 0);
    conf_release(cf, &it);
    /* Unpinned, it goes the way of all old items. */
    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof(key), "m%05d", i);
        CONF_CHECK(put_big(cf, key) == STORE_OK);
    }
    ck_assert(!has_big(cf, "pinned"));
    conformance_close(&cf);
}
END_TEST

/* Threads writing and reading a tiny store: eviction races pins. */
struct churn {
    struct store *s;
    int           id;
    bool          failed;
};

static void *
churn_main(void *arg)
{
    struct churn *ch = arg;
    struct store_thr *t = NULL;
    struct store_call c;
    uint64_t x = 0x2545f4914f6cdd1dULL * (uint64_t)(ch->id + 1);
    char v[VLEN];
    struct timespec t0;
    struct timespec now;

    memset(&c, 0, sizeof(c));
    c.now = T0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (store_mem_ops.attach(ch->s, &t) != STORE_OK) {
        ch->failed = true;
        return NULL;
    }
    for (unsigned long n = 0;; n++) {
        char key[16];
        struct store_key k;
        struct store_item in;
        struct store_item out;
        uint64_t cas;

        if ((n & 255) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec - t0.tv_sec >= 2) {
                break;
            }
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        snprintf(key, sizeof(key), "c%05u", (unsigned)(x % 5000));
        k.data = key;
        k.len = strlen(key);
        if (x & (1ull << 40)) {
            fill_value(v, sizeof(v), key);
            memset(&in, 0, sizeof(in));
            in.data = v;
            in.len = VLEN;
            if (store_mem_ops.store(t, &c, STORE_SET, &k, &in, &cas) !=
                STORE_OK) {
                ch->failed = true;
                break;
            }
        } else if (store_mem_ops.get(t, &c, &k, NULL, &out) == STORE_OK) {
            fill_value(v, sizeof(v), key);
            /* Hold the pin across a write so the evictor meets it. */
            memset(&in, 0, sizeof(in));
            in.data = v;
            in.len = VLEN;
            store_mem_ops.store(t, &c, STORE_SET, &k, &in, &cas);
            if (out.len != VLEN || memcmp(out.data, v, VLEN) != 0) {
                ch->failed = true;
            }
            store_mem_ops.release(t, &out);
            if (ch->failed) {
                break;
            }
        }
    }
    store_mem_ops.detach(&t);
    return NULL;
}

START_TEST(eviction_races_pins)
{
    struct conf *cf = open_mem(2 * MB, false);
    struct churn ch[4];
    pthread_t th[4];
    struct store_stats st;

    for (int i = 0; i < 4; i++) {
        ch[i].s = cf->s;
        ch[i].id = i;
        ch[i].failed = false;
        ck_assert_int_eq(pthread_create(&th[i], NULL, churn_main, &ch[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
    }
    for (int i = 0; i < 4; i++) {
        ck_assert(!ch[i].failed);
    }
    stats(cf, &st);
    ck_assert_uint_gt(st.evictions, 0);
    ck_assert_uint_le(st.bytes, 2 * MB);
    conformance_close(&cf);
}
END_TEST

/* ---- sweeper ---- */

static bool
wait_for_items(struct conf *cf, uint64_t want, int seconds)
{
    struct store_stats st;

    for (int i = 0; i < seconds * 20; i++) {
        stats(cf, &st);
        if (st.curr_items == want) {
            return true;
        }
        nanosleep(&(struct timespec){ 0, 50 * 1000 * 1000 }, NULL);
    }
    return false;
}

START_TEST(sweeper_reclaims_without_gets)
{
    struct conf *cf = conformance_open(&store_mem_ops);
    struct store_stats st;
    char key[32];

    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof(key), "e%d", i);
        CONF_CHECK(conf_store(cf, STORE_SET, key, "v", 0, T0 + 2, 0, NULL) ==
                   STORE_OK);
    }
    conf_put(cf, "keep", "v");
    /* Any call tells the store the time; none of these keys is read. */
    conf_now(cf, T0 + 3);
    ck_assert_ptr_null(conf_get_str(cf, "tick"));
    ck_assert_msg(wait_for_items(cf, 1, 5), "sweeper did not reclaim");
    stats(cf, &st);
    ck_assert_uint_eq(st.reclaimed, 1000);
    ck_assert_uint_eq(st.expired_unfetched, 1000);
    ck_assert_uint_eq(st.get_expired, 0);
    ck_assert_str_eq(conf_get_str(cf, "keep"), "v");
    /* Flushed items go the same way. */
    ck_assert_int_eq(conf_flush(cf, 0), STORE_OK);
    ck_assert_msg(wait_for_items(cf, 0, 5), "sweeper missed flushed items");
    conformance_close(&cf);
}
END_TEST

/* ---- stats groups, open, registry ---- */

START_TEST(stats_groups)
{
    struct conf *cf = conformance_open(&store_mem_ops);
    struct lines l;

    conf_put(cf, "a", "1");
    ck_assert_str_eq(conf_get_str(cf, "a"), "1");
    group(cf, "sizes", &l);
    ck_assert_int_eq(l.n, 1);
    ck_assert_str_eq(l.buf, "sizes_status=disabled\n");
    group(cf, "slabs", &l);
    ck_assert_int_eq(stat_of(&l, "active_slabs"), 1);
    ck_assert_int_eq(stat_of(&l, "total_malloced"), MB);
    ck_assert_int_eq(stat_of(&l, "1:chunk_size"), 104);
    ck_assert_int_eq(stat_of(&l, "1:get_hits"), 1);
    ck_assert_int_eq(stat_of(&l, "1:cmd_set"), 1);
    ck_assert_int_eq(stat_of(&l, "1:total_chunks"),
                     stat_of(&l, "1:chunks_per_page"));
    group(cf, "items", &l);
    ck_assert_int_eq(stat_of(&l, "items:1:number"), 1);
    ck_assert_int_eq(stat_of(&l, "items:1:evicted"), 0);
    ck_assert_int_ge(stat_of(&l, "items:1:age"), 0);
    group(cf, "", &l);
    ck_assert_int_eq(stat_of(&l, "memory_hash_power_level"), 16);
    ck_assert_int_gt(l.n, 0);
    for (const char *p = l.buf; *p != '\0'; p = strchr(p, '\n') + 1) {
        ck_assert_msg(strncmp(p, "memory_", 7) == 0, "unprefixed: %s", p);
    }
    ck_assert_int_eq(cf->ops->stats_group(cf->t, "bogus", collect, &l),
                     STORE_ENOENT);
    conformance_close(&cf);
}
END_TEST

START_TEST(stats_survive_detach)
{
    struct conf *cf = conformance_open(&store_mem_ops);
    struct store_thr *t2 = NULL;
    struct store_stats st;

    conf_put(cf, "a", "1");
    ck_assert_int_eq(cf->ops->attach(cf->s, &t2), STORE_OK);
    {
        struct store_key k = { "b", 1 };
        struct store_item in = { "2", 1, 0, 0, 0, NULL };
        uint64_t cas;

        ck_assert_int_eq(cf->ops->store(t2, &cf->c, STORE_SET, &k, &in,
                                        &cas), STORE_OK);
    }
    cf->ops->detach(&t2);
    ck_assert_ptr_null(t2);
    cf->ops->detach(&t2);
    stats(cf, &st);
    ck_assert_uint_eq(st.total_items, 2);
    ck_assert_uint_eq(st.curr_items, 2);
    conformance_close(&cf);
}
END_TEST

START_TEST(open_rejects_bad_config)
{
    struct store_cfg cfg;
    struct store *s = (struct store *)&cfg;     /* open must reset it */
    char why[128] = "";

    conformance_cfg(&cfg, NULL);
    cfg.factor = 1.0;
    cfg.err = why;
    cfg.errlen = sizeof(why);
    ck_assert_int_eq(store_mem_ops.open(&cfg, &s), STORE_EINVAL);
    ck_assert_ptr_null(s);
    ck_assert_str_eq(why, "memory: growth factor must be above 1");
    conformance_cfg(&cfg, NULL);
    cfg.item_max = 512;
    ck_assert_int_eq(store_mem_ops.open(&cfg, &s), STORE_EINVAL);
    conformance_cfg(&cfg, NULL);
    cfg.chunk_min = 2 * MB;
    ck_assert_int_eq(store_mem_ops.open(&cfg, &s), STORE_EINVAL);
    /* Zero means memcached's default. */
    memset(&cfg, 0, sizeof(cfg));
    ck_assert_int_eq(store_mem_ops.open(&cfg, &s), STORE_OK);
    store_mem_ops.close(&s);
    ck_assert_ptr_null(s);
    store_mem_ops.close(&s);
}
END_TEST

START_TEST(registry_and_errors)
{
    ck_assert_ptr_eq(store_find("memory"), &store_mem_ops);
    ck_assert_ptr_null(store_find("nope"));
    ck_assert_ptr_null(store_find(""));
    ck_assert_ptr_null(store_find(NULL));
    ck_assert_uint_eq(store_mem_ops.version, STORE_OPS_V1);
    ck_assert_str_eq(store_mem_ops.name, "memory");
    for (int rc = STORE_OK; rc <= STORE_EINVAL + 1; rc++) {
        const char *m = store_strerror((store_rc_e)rc);

        ck_assert_ptr_nonnull(m);
        ck_assert_uint_gt(strlen(m), 0);
    }
    ck_assert_str_eq(store_strerror(STORE_E2BIG), "item too large");
}
END_TEST

START_TEST(header_fits_memcached_items)
{
    /* memcached 1.6 needs 48 + 1 + 2 + 8 bytes besides key and value. */
    ck_assert_uint_le(ITEM_HDR, 59);
    ck_assert_uint_eq(sizeof(struct item), 56);
}
END_TEST

static Suite *
memory_suite(void)
{
    Suite *s = suite_create("store_memory");
    TCase *tc = tcase_create("memory");
    TCase *tl = tcase_create("load");

    tcase_add_test(tc, evicts_at_mem_limit);
    tcase_add_test(tc, read_item_gets_second_chance);
    tcase_add_test(tc, no_evict_answers_enomem);
    tcase_add_test(tc, no_evict_still_reclaims_expired);
    tcase_add_test(tc, lazy_expiry_and_flush_counted);
    tcase_add_test(tc, cas_starts_at_one_and_counts_writes);
    tcase_add_test(tc, items_land_in_smallest_fitting_class);
    tcase_add_test(tc, too_big_is_e2big);
    tcase_add_test(tc, pinned_chunk_freed_only_on_release);
    tcase_add_test(tc, pinned_item_survives_eviction_pressure);
    tcase_add_test(tc, stats_groups);
    tcase_add_test(tc, stats_survive_detach);
    tcase_add_test(tc, open_rejects_bad_config);
    tcase_add_test(tc, registry_and_errors);
    tcase_add_test(tc, header_fits_memcached_items);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);

    tcase_add_test(tl, hash_grows_under_load);
    tcase_add_test(tl, eviction_races_pins);
    tcase_add_test(tl, sweeper_reclaims_without_gets);
    tcase_set_timeout(tl, 120);
    suite_add_tcase(s, tl);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(memory_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
