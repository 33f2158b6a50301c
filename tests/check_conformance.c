/*
 * The backend conformance suite: every rule of storage.h that does not
 * depend on how a backend keeps its data, run against each backend in the
 * table below through the vtable alone (memcached 1.6 semantics: modes,
 * CAS, arithmetic, touch, expiry, flush, size limit, concurrency). Every
 * test opens a fresh store in a fresh temporary directory.
 */
#include "tests/conformance.h"

#include <check.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const struct store_ops *const backends[] = {
    &store_mem_ops,
#ifdef STASHD_HAVE_LMDB
    &store_lmdb_ops,
#endif
#ifdef STASHD_HAVE_SQLITE
    &store_sqlite_ops,
#endif
};

#define NBACKENDS ((int)(sizeof(backends) / sizeof(backends[0])))
#define T0        CONF_NOW0

START_TEST(set_then_get)
{
    struct conf *cf = conformance_open(backends[_i]);
    struct store_item it;
    uint64_t cas = 0;

    ck_assert_int_eq(conf_store(cf, STORE_SET, "k", "hello", 0xdeadbeef,
                                T0 + 100, 0, &cas), STORE_OK);
    ck_assert_int_eq(conf_get(cf, "k", NULL, &it), STORE_OK);
    ck_assert_uint_eq(it.len, 5);
    ck_assert_str_eq(cf->vbuf, "hello");
    ck_assert_uint_eq(it.flags, 0xdeadbeef);
    ck_assert_uint_eq(it.exptime, T0 + 100);
    ck_assert_uint_eq(it.cas, cas);
    ck_assert_int_eq(conf_get(cf, "nope", NULL, &it), STORE_ENOENT);
    conformance_close(&cf);
}
END_TEST

START_TEST(binary_values_and_long_keys)
{
    struct conf *cf = conformance_open(backends[_i]);
    char key[STORE_KEY_MAX + 1];
    const char val[] = { 'a', '\0', '\r', '\n', (char)0xff, '\0' };
    struct store_item it;

    memset(key, 'x', STORE_KEY_MAX);
    key[STORE_KEY_MAX] = '\0';
    ck_assert_int_eq(conf_storen(cf, STORE_SET, key, val, sizeof(val), 1, 0,
                                 0, NULL), STORE_OK);
    ck_assert_int_eq(conf_get(cf, key, NULL, &it), STORE_OK);
    ck_assert_uint_eq(it.len, sizeof(val));
    ck_assert_mem_eq(cf->vbuf, val, sizeof(val));
    /* An empty value is a value. */
    ck_assert_int_eq(conf_storen(cf, STORE_SET, "e", "", 0, 0, 0, 0, NULL),
                     STORE_OK);
    ck_assert_int_eq(conf_get(cf, "e", NULL, &it), STORE_OK);
    ck_assert_uint_eq(it.len, 0);
    conformance_close(&cf);
}
END_TEST

START_TEST(overwrite_gives_new_cas)
{
    struct conf *cf = conformance_open(backends[_i]);
    uint64_t c1 = conf_put(cf, "k", "v1");
    uint64_t c2 = conf_put(cf, "k", "v2");
    uint64_t c3 = conf_put(cf, "other", "v");

    ck_assert_uint_gt(c2, c1);
    ck_assert_uint_gt(c3, c2);
    ck_assert_str_eq(conf_get_str(cf, "k"), "v2");
    conformance_close(&cf);
}
END_TEST

START_TEST(add_only_when_missing)
{
    struct conf *cf = conformance_open(backends[_i]);

    ck_assert_int_eq(conf_store(cf, STORE_ADD, "k", "a1", 0, 0, 0, NULL),
                     STORE_OK);
    ck_assert_int_eq(conf_store(cf, STORE_ADD, "k", "a2", 0, 0, 0, NULL),
                     STORE_NOT_STORED);
    ck_assert_str_eq(conf_get_str(cf, "k"), "a1");
    /* An expired item is missing for add. */
    ck_assert_int_eq(conf_store(cf, STORE_SET, "e", "old", 0, T0 + 5, 0,
                                NULL), STORE_OK);
    conf_now(cf, T0 + 5);
    ck_assert_int_eq(conf_store(cf, STORE_ADD, "e", "new", 0, 0, 0, NULL),
                     STORE_OK);
    ck_assert_str_eq(conf_get_str(cf, "e"), "new");
    conformance_close(&cf);
}
END_TEST

START_TEST(replace_only_when_present)
{
    struct conf *cf = conformance_open(backends[_i]);

    ck_assert_int_eq(conf_store(cf, STORE_REPLACE, "k", "r", 0, 0, 0, NULL),
                     STORE_NOT_STORED);
    ck_assert_ptr_null(conf_get_str(cf, "k"));
    conf_put(cf, "k", "v");
    ck_assert_int_eq(conf_store(cf, STORE_REPLACE, "k", "r", 7, 0, 0, NULL),
                     STORE_OK);
    ck_assert_str_eq(conf_get_str(cf, "k"), "r");
    conformance_close(&cf);
}
END_TEST

START_TEST(append_prepend)
{
    struct conf *cf = conformance_open(backends[_i]);
    struct store_item it;
    uint64_t c0 = 0;
    uint64_t c1 = 0;

    ck_assert_int_eq(conf_store(cf, STORE_APPEND, "k", "x", 0, 0, 0, NULL),
                     STORE_NOT_STORED);
    ck_assert_int_eq(conf_store(cf, STORE_PREPEND, "k", "x", 0, 0, 0, NULL),
                     STORE_NOT_STORED);
    ck_assert_int_eq(conf_store(cf, STORE_SET, "k", "mid", 42, T0 + 100, 0,
                                &c0), STORE_OK);
    /* in->flags and in->exptime are ignored: the old ones stay. */
    ck_assert_int_eq(conf_store(cf, STORE_APPEND, "k", "-end", 1, T0 + 1, 0,
                                &c1), STORE_OK);
    ck_assert_uint_gt(c1, c0);
    ck_assert_int_eq(conf_store(cf, STORE_PREPEND, "k", "start-", 2, 0, 0,
                                NULL), STORE_OK);
    ck_assert_int_eq(conf_get(cf, "k", NULL, &it), STORE_OK);
    ck_assert_str_eq(cf->vbuf, "start-mid-end");
    ck_assert_uint_eq(it.flags, 42);
    ck_assert_uint_eq(it.exptime, T0 + 100);
    /* With a CAS: mismatch refused, match applied. */
    ck_assert_int_eq(conf_store(cf, STORE_APPEND, "k", "!", 0, 0, it.cas + 1,
                                NULL), STORE_EEXISTS);
    ck_assert_int_eq(conf_store(cf, STORE_APPEND, "k", "!", 0, 0, it.cas,
                                NULL), STORE_OK);
    ck_assert_str_eq(conf_get_str(cf, "k"), "start-mid-end!");
    /* memcached: append with a CAS on a missing key is NOT_STORED. */
    ck_assert_int_eq(conf_store(cf, STORE_APPEND, "none", "x", 0, 0, 5,
                                NULL), STORE_NOT_STORED);
    conformance_close(&cf);
}
END_TEST

START_TEST(cas_rules)
{
    struct conf *cf = conformance_open(backends[_i]);
    uint64_t cas = conf_put(cf, "k", "v1");
    uint64_t c2 = 0;

    ck_assert_int_eq(conf_store(cf, STORE_SET, "k", "v2", 0, 0, cas + 1,
                                NULL), STORE_EEXISTS);
    ck_assert_str_eq(conf_get_str(cf, "k"), "v1");
    ck_assert_int_eq(conf_store(cf, STORE_SET, "k", "v2", 0, 0, cas, &c2),
                     STORE_OK);
    ck_assert_uint_gt(c2, cas);
    ck_assert_str_eq(conf_get_str(cf, "k"), "v2");
    /* The old CAS is spent. */
    ck_assert_int_eq(conf_store(cf, STORE_SET, "k", "v3", 0, 0, cas, NULL),
                     STORE_EEXISTS);
    ck_assert_int_eq(conf_store(cf, STORE_SET, "missing", "v", 0, 0, 1,
                                NULL), STORE_ENOENT);
    ck_assert_ptr_null(conf_get_str(cf, "missing"));
    ck_assert_int_eq(conf_store(cf, STORE_REPLACE, "missing", "v", 0, 0, 1,
                                NULL), STORE_ENOENT);
    ck_assert_int_eq(conf_store(cf, STORE_REPLACE, "k", "r", 0, 0, c2 + 9,
                                NULL), STORE_EEXISTS);
    ck_assert_int_eq(conf_store(cf, STORE_REPLACE, "k", "r", 0, 0, c2, &c2),
                     STORE_OK);
    /* memcached binary: add with a CAS is a compare-and-swap. */
    ck_assert_int_eq(conf_store(cf, STORE_ADD, "k", "a", 0, 0, c2 + 9, NULL),
                     STORE_EEXISTS);
    ck_assert_int_eq(conf_store(cf, STORE_ADD, "k", "a", 0, 0, c2, NULL),
                     STORE_OK);
    ck_assert_str_eq(conf_get_str(cf, "k"), "a");
    ck_assert_int_eq(conf_store(cf, STORE_ADD, "missing", "v", 0, 0, 3,
                                NULL), STORE_ENOENT);
    conformance_close(&cf);
}
END_TEST

START_TEST(cas_on_expired_is_enoent)
{
    struct conf *cf = conformance_open(backends[_i]);
    uint64_t cas = 0;

    ck_assert_int_eq(conf_store(cf, STORE_SET, "k", "v", 0, T0 + 2, 0, &cas),
                     STORE_OK);
    conf_now(cf, T0 + 2);
    ck_assert_int_eq(conf_store(cf, STORE_SET, "k", "w", 0, 0, cas, NULL),
                     STORE_ENOENT);
    conformance_close(&cf);
}
END_TEST

START_TEST(delete_rules)
{
    struct conf *cf = conformance_open(backends[_i]);
    uint64_t cas = conf_put(cf, "k", "v");

    ck_assert_int_eq(conf_del(cf, "missing", 0), STORE_ENOENT);
    ck_assert_int_eq(conf_del(cf, "missing", 7), STORE_ENOENT);
    ck_assert_int_eq(conf_del(cf, "k", cas + 1), STORE_EEXISTS);
    ck_assert_str_eq(conf_get_str(cf, "k"), "v");
    ck_assert_int_eq(conf_del(cf, "k", cas), STORE_OK);
    ck_assert_ptr_null(conf_get_str(cf, "k"));
    ck_assert_int_eq(conf_del(cf, "k", 0), STORE_ENOENT);
    conf_put(cf, "k", "again");
    ck_assert_int_eq(conf_del(cf, "k", 0), STORE_OK);
    ck_assert_ptr_null(conf_get_str(cf, "k"));
    conformance_close(&cf);
}
END_TEST

START_TEST(arith_basic)
{
    struct conf *cf = conformance_open(backends[_i]);
    struct store_item it;
    uint64_t v = 0;
    uint64_t cas0 = 0;
    uint64_t cas1 = 0;
    struct store_delta d = { 5, 0, 0, 0, false, false };

    ck_assert_int_eq(conf_store(cf, STORE_SET, "n", "10", 99, T0 + 500, 0,
                                &cas0), STORE_OK);
    ck_assert_int_eq(conf_arith(cf, "n", &d, &v, &cas1), STORE_OK);
    ck_assert_uint_eq(v, 15);
    ck_assert_uint_gt(cas1, cas0);
    ck_assert_int_eq(conf_get(cf, "n", NULL, &it), STORE_OK);
    ck_assert_str_eq(cf->vbuf, "15");
    ck_assert_uint_eq(it.flags, 99);
    ck_assert_uint_eq(it.exptime, T0 + 500);
    ck_assert_uint_eq(it.cas, cas1);
    /* Decrement to fewer digits: space padded to the old length, as
     * memcached's in-place rewrite leaves it; the padding still parses. */
    conf_put(cf, "n", "100");
    ck_assert_int_eq(conf_incr(cf, "n", true, 91, &v), STORE_OK);
    ck_assert_uint_eq(v, 9);
    ck_assert_str_eq(conf_get_str(cf, "n"), "9  ");
    ck_assert_int_eq(conf_incr(cf, "n", false, 991, &v), STORE_OK);
    ck_assert_str_eq(conf_get_str(cf, "n"), "1000");
    /* A NUL ends the number too (memcached's strtoull stops there). */
    ck_assert_int_eq(conf_storen(cf, STORE_SET, "n",
                                 "18446744073709551615\0", 21, 0, 0, 0,
                                 &v), STORE_OK);
    ck_assert_int_eq(conf_incr(cf, "n", false, 1, &v), STORE_OK);
    ck_assert_uint_eq(v, 0);
    /* memcached's strtoull: a blank ends the number. */
    conf_put(cf, "n", "12 abc");
    ck_assert_int_eq(conf_incr(cf, "n", false, 1, &v), STORE_OK);
    ck_assert_uint_eq(v, 13);
    conf_put(cf, "n", "007");
    ck_assert_int_eq(conf_incr(cf, "n", false, 1, &v), STORE_OK);
    ck_assert_uint_eq(v, 8);
    ck_assert_str_eq(conf_get_str(cf, "n"), "8  ");
    conformance_close(&cf);
}
END_TEST

START_TEST(arith_wrap_and_floor)
{
    struct conf *cf = conformance_open(backends[_i]);
    uint64_t v = 0;

    conf_put(cf, "n", "18446744073709551615");
    ck_assert_int_eq(conf_incr(cf, "n", false, 2, &v), STORE_OK);
    ck_assert_uint_eq(v, 1);
    ck_assert_str_eq(conf_get_str(cf, "n"), "1                   ");
    ck_assert_int_eq(conf_incr(cf, "n", false, UINT64_MAX, &v), STORE_OK);
    ck_assert_uint_eq(v, 0);
    conf_put(cf, "n", "5");
    ck_assert_int_eq(conf_incr(cf, "n", true, 10, &v), STORE_OK);
    ck_assert_uint_eq(v, 0);
    ck_assert_str_eq(conf_get_str(cf, "n"), "0");
    ck_assert_int_eq(conf_incr(cf, "n", true, 1, &v), STORE_OK);
    ck_assert_uint_eq(v, 0);
    conf_put(cf, "n", "18446744073709551614");
    ck_assert_int_eq(conf_incr(cf, "n", false, 1, &v), STORE_OK);
    ck_assert_uint_eq(v, UINT64_MAX);
    ck_assert_str_eq(conf_get_str(cf, "n"), "18446744073709551615");
    conformance_close(&cf);
}
END_TEST

START_TEST(arith_non_numeric)
{
    static const char *const bad[] = {
        "abc", "12abc", "-1", "18446744073709551616", " ", "+", "1.5",
        "99999999999999999999999",
    };
    struct conf *cf = conformance_open(backends[_i]);
    uint64_t v = 0;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        conf_put(cf, "n", bad[i]);
        ck_assert_msg(conf_incr(cf, "n", false, 1, &v) == STORE_EDELTA,
                      "incr on \"%s\"", bad[i]);
        ck_assert_msg(conf_incr(cf, "n", true, 1, &v) == STORE_EDELTA,
                      "decr on \"%s\"", bad[i]);
        ck_assert_str_eq(conf_get_str(cf, "n"), bad[i]);
    }
    ck_assert_int_eq(conf_storen(cf, STORE_SET, "e", "", 0, 0, 0, 0, NULL),
                     STORE_OK);
    ck_assert_int_eq(conf_incr(cf, "e", false, 1, &v), STORE_EDELTA);
    conformance_close(&cf);
}
END_TEST

START_TEST(arith_missing_and_create)
{
    struct conf *cf = conformance_open(backends[_i]);
    struct store_delta d = { 3, 77, T0 + 60, 0, false, false };
    struct store_item it;
    uint64_t v = 0;
    uint64_t cas = 0;

    ck_assert_int_eq(conf_arith(cf, "c", &d, &v, NULL), STORE_ENOENT);
    ck_assert_ptr_null(conf_get_str(cf, "c"));
    d.create = true;
    ck_assert_int_eq(conf_arith(cf, "c", &d, &v, &cas), STORE_OK);
    ck_assert_uint_eq(v, 77);
    ck_assert_int_eq(conf_get(cf, "c", NULL, &it), STORE_OK);
    ck_assert_str_eq(cf->vbuf, "77");
    ck_assert_uint_eq(it.flags, 0);
    ck_assert_uint_eq(it.exptime, T0 + 60);
    ck_assert_uint_eq(it.cas, cas);
    /* Now it exists: create changes nothing, the delta applies. */
    ck_assert_int_eq(conf_arith(cf, "c", &d, &v, NULL), STORE_OK);
    ck_assert_uint_eq(v, 80);
    d.decr = true;
    d.initial = 5;
    ck_assert_int_eq(conf_arith(cf, "d", &d, &v, NULL), STORE_OK);
    ck_assert_uint_eq(v, 5);
    conformance_close(&cf);
}
END_TEST

START_TEST(arith_cas)
{
    struct conf *cf = conformance_open(backends[_i]);
    uint64_t cas = conf_put(cf, "n", "1");
    struct store_delta d = { 1, 0, 0, cas + 1, false, false };
    uint64_t v = 0;
    uint64_t c2 = 0;

    ck_assert_int_eq(conf_arith(cf, "n", &d, &v, NULL), STORE_EEXISTS);
    ck_assert_str_eq(conf_get_str(cf, "n"), "1");
    d.cas = cas;
    ck_assert_int_eq(conf_arith(cf, "n", &d, &v, &c2), STORE_OK);
    ck_assert_uint_eq(v, 2);
    ck_assert_uint_gt(c2, cas);
    ck_assert_int_eq(conf_arith(cf, "n", &d, &v, NULL), STORE_EEXISTS);
    conformance_close(&cf);
}
END_TEST

START_TEST(touch_keeps_cas)
{
    struct conf *cf = conformance_open(backends[_i]);
    struct store_item it;
    uint64_t cas = 0;

    ck_assert_int_eq(conf_touch(cf, "k", T0 + 10), STORE_ENOENT);
    ck_assert_int_eq(conf_store(cf, STORE_SET, "k", "v", 3, T0 + 10, 0,
                                &cas), STORE_OK);
    ck_assert_int_eq(conf_touch(cf, "k", T0 + 100), STORE_OK);
    ck_assert_int_eq(conf_get(cf, "k", NULL, &it), STORE_OK);
    ck_assert_uint_eq(it.exptime, T0 + 100);
    ck_assert_uint_eq(it.cas, cas);
    ck_assert_uint_eq(it.flags, 3);
    /* The touched item outlives its first exptime... */
    conf_now(cf, T0 + 50);
    ck_assert_str_eq(conf_get_str(cf, "k"), "v");
    /* ...and touch to 0 makes it permanent. */
    ck_assert_int_eq(conf_touch(cf, "k", 0), STORE_OK);
    conf_now(cf, T0 + 100000);
    ck_assert_str_eq(conf_get_str(cf, "k"), "v");
    /* A touch into the past expires it. */
    ck_assert_int_eq(conf_touch(cf, "k", T0 + 1), STORE_OK);
    ck_assert_ptr_null(conf_get_str(cf, "k"));
    conformance_close(&cf);
}
END_TEST

START_TEST(get_and_touch)
{
    struct conf *cf = conformance_open(backends[_i]);
    struct store_item it;
    uint32_t touch = T0 + 1000;
    uint64_t cas = 0;

    ck_assert_int_eq(conf_get(cf, "k", &touch, &it), STORE_ENOENT);
    ck_assert_int_eq(conf_store(cf, STORE_SET, "k", "gat", 5, T0 + 5, 0,
                                &cas), STORE_OK);
    ck_assert_int_eq(conf_get(cf, "k", &touch, &it), STORE_OK);
    ck_assert_str_eq(cf->vbuf, "gat");
    ck_assert_uint_eq(it.cas, cas);
    ck_assert_uint_eq(it.exptime, T0 + 1000);
    conf_now(cf, T0 + 500);
    ck_assert_int_eq(conf_get(cf, "k", NULL, &it), STORE_OK);
    ck_assert_uint_eq(it.cas, cas);
    ck_assert_uint_eq(it.exptime, T0 + 1000);
    /* The CAS from before the touch still works for a write. */
    ck_assert_int_eq(conf_store(cf, STORE_SET, "k", "w", 0, 0, cas, NULL),
                     STORE_OK);
    conformance_close(&cf);
}
END_TEST

START_TEST(expiry_moves_with_now)
{
    struct conf *cf = conformance_open(backends[_i]);
    struct store_item it;

    ck_assert_int_eq(conf_store(cf, STORE_SET, "k", "v", 0, T0 + 10, 0,
                                NULL), STORE_OK);
    conf_put(cf, "forever", "v");
    conf_now(cf, T0 + 9);
    ck_assert_int_eq(conf_get(cf, "k", NULL, &it), STORE_OK);
    ck_assert_uint_eq(it.exptime, T0 + 10);
    conf_now(cf, T0 + 10);
    ck_assert_ptr_null(conf_get_str(cf, "k"));
    ck_assert_int_eq(conf_touch(cf, "k", 0), STORE_ENOENT);
    ck_assert_int_eq(conf_del(cf, "k", 0), STORE_ENOENT);
    ck_assert_int_eq(conf_store(cf, STORE_REPLACE, "k", "r", 0, 0, 0, NULL),
                     STORE_NOT_STORED);
    ck_assert_int_eq(conf_store(cf, STORE_APPEND, "k", "r", 0, 0, 0, NULL),
                     STORE_NOT_STORED);
    ck_assert_int_eq(conf_incr(cf, "k", false, 1, NULL), STORE_ENOENT);
    /* An exptime already past when stored is dead at once. */
    ck_assert_int_eq(conf_store(cf, STORE_SET, "p", "v", 0, T0 + 1, 0, NULL),
                     STORE_OK);
    ck_assert_ptr_null(conf_get_str(cf, "p"));
    conf_now(cf, T0 + 1000000);
    ck_assert_str_eq(conf_get_str(cf, "forever"), "v");
    conformance_close(&cf);
}
END_TEST

START_TEST(flush_now)
{
    struct conf *cf = conformance_open(backends[_i]);
    char key[32];

    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        conf_put(cf, key, "v");
    }
    ck_assert_int_eq(conf_flush(cf, 0), STORE_OK);
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        ck_assert_ptr_null(conf_get_str(cf, key));
    }
    ck_assert_int_eq(conf_store(cf, STORE_REPLACE, "k1", "r", 0, 0, 0, NULL),
                     STORE_NOT_STORED);
    ck_assert_int_eq(conf_store(cf, STORE_ADD, "k2", "a", 0, 0, 0, NULL),
                     STORE_OK);
    conf_put(cf, "after", "v");
    ck_assert_str_eq(conf_get_str(cf, "after"), "v");
    ck_assert_str_eq(conf_get_str(cf, "k2"), "a");
    /* when <= now means now, too. */
    ck_assert_int_eq(conf_flush(cf, T0 - 5), STORE_OK);
    ck_assert_ptr_null(conf_get_str(cf, "after"));
    conformance_close(&cf);
}
END_TEST

START_TEST(flush_delayed)
{
    struct conf *cf = conformance_open(backends[_i]);

    conf_put(cf, "early", "v");
    ck_assert_int_eq(conf_flush(cf, T0 + 10), STORE_OK);
    conf_now(cf, T0 + 5);
    ck_assert_str_eq(conf_get_str(cf, "early"), "v");
    conf_put(cf, "middle", "v");
    conf_now(cf, T0 + 9);
    ck_assert_str_eq(conf_get_str(cf, "middle"), "v");
    conf_now(cf, T0 + 10);
    ck_assert_ptr_null(conf_get_str(cf, "early"));
    ck_assert_ptr_null(conf_get_str(cf, "middle"));
    conf_put(cf, "late", "v");
    conf_now(cf, T0 + 20);
    ck_assert_str_eq(conf_get_str(cf, "late"), "v");
    conformance_close(&cf);
}
END_TEST

START_TEST(size_limit)
{
    struct conf *cf = conformance_open(backends[_i]);
    /* memcached 1.6 accepts 48 + nkey+1 + vlen+2 + 8 <= item_max. */
    size_t fits = CONF_ITEM_MAX - 59 - 3;
    char *big = malloc(CONF_ITEM_MAX + 1);
    struct store_item it;

    ck_assert_ptr_nonnull(big);
    memset(big, 'b', CONF_ITEM_MAX + 1);
    ck_assert_int_eq(conf_storen(cf, STORE_SET, "big", big, CONF_ITEM_MAX + 1,
                                 0, 0, 0, NULL), STORE_E2BIG);
    ck_assert_int_eq(conf_storen(cf, STORE_SET, "big", big, CONF_ITEM_MAX,
                                 0, 0, 0, NULL), STORE_E2BIG);
    ck_assert_ptr_null(conf_get_str(cf, "big"));
    ck_assert_int_eq(conf_storen(cf, STORE_SET, "big", big, fits, 0, 0, 0,
                                 NULL), STORE_OK);
    ck_assert_int_eq(conf_get(cf, "big", NULL, &it), STORE_OK);
    ck_assert_uint_eq(it.len, fits);
    ck_assert_mem_eq(cf->vbuf, big, fits);
    /* Growing past the limit by append is E2BIG and keeps the old value. */
    ck_assert_int_eq(conf_storen(cf, STORE_APPEND, "big", big, 100, 0, 0, 0,
                                 NULL), STORE_E2BIG);
    ck_assert_int_eq(conf_get(cf, "big", NULL, &it), STORE_OK);
    ck_assert_uint_eq(it.len, fits);
    free(big);
    conformance_close(&cf);
}
END_TEST

START_TEST(value_outlives_overwrite_until_release)
{
    struct conf *cf = conformance_open(backends[_i]);
    struct store_item a;
    struct store_item b;

    conf_put(cf, "k", "first-value");
    ck_assert_int_eq(conf_get_raw(cf, "k", NULL, &a), STORE_OK);
    conf_put(cf, "k", "second-value-longer");
    ck_assert_int_eq(conf_get_raw(cf, "k", NULL, &b), STORE_OK);
    ck_assert_int_eq(conf_del(cf, "k", 0), STORE_OK);
    conf_put(cf, "k", "third");
    ck_assert_uint_eq(a.len, strlen("first-value"));
    ck_assert_mem_eq(a.data, "first-value", a.len);
    ck_assert_mem_eq(b.data, "second-value-longer", b.len);
    conf_release(cf, &b);
    conf_release(cf, &a);
    ck_assert_str_eq(conf_get_str(cf, "k"), "third");
    conformance_close(&cf);
}
END_TEST

struct stat_line {
    int n;
};

static void
count_line(void *arg, const char *name, const char *value)
{
    struct stat_line *sl = arg;

    ck_assert_ptr_nonnull(name);
    ck_assert_ptr_nonnull(value);
    sl->n++;
}

START_TEST(stats_common)
{
    struct conf *cf = conformance_open(backends[_i]);
    struct store_stats st;
    struct stat_line sl = { 0 };

    conf_put(cf, "a", "1");
    conf_put(cf, "b", "22");
    conf_put(cf, "c", "333");
    conf_put(cf, "c", "4444");
    cf->ops->stats(cf->t, &st);
    ck_assert_uint_eq(st.curr_items, 3);
    ck_assert_uint_ge(st.total_items, 4);
    ck_assert_uint_gt(st.bytes, 0);
    ck_assert_uint_eq(st.limit_maxbytes, CONF_MEM_LIMIT);
    ck_assert_int_eq(conf_del(cf, "a", 0), STORE_OK);
    cf->ops->stats(cf->t, &st);
    ck_assert_uint_eq(st.curr_items, 2);
    ck_assert_int_eq(cf->ops->stats_group(cf->t, "no-such-group", count_line,
                                          &sl), STORE_ENOENT);
    ck_assert_int_eq(cf->ops->stats_group(cf->t, "", count_line, &sl),
                     STORE_OK);
    conformance_close(&cf);
}
END_TEST

/* ---- concurrency ---- */

#define HAMMER_THREADS 4
#define HAMMER_KEYS    100
#define HAMMER_MS      1500
#define INCR_EACH      10000

struct hammer {
    const struct store_ops *ops;
    struct store           *s;
    int                     id;
    uint64_t               *cas;          /* CAS of every successful write */
    size_t                  ncas;
    size_t                  cap;
    unsigned long           nops;
    char                    err[160];     /* first broken rule, if any */
};

static uint64_t
xorshift(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static double
mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void
hammer_fail(struct hammer *h, const char *what, store_rc_e rc)
{
    if (h->err[0] == '\0') {
        snprintf(h->err, sizeof(h->err), "thread %d: %s: %s", h->id, what,
                 store_strerror(rc));
    }
}

static void
hammer_cas(struct hammer *h, uint64_t cas)
{
    if (h->ncas > 0 && cas <= h->cas[h->ncas - 1]) {
        hammer_fail(h, "CAS not increasing", STORE_OK);
    }
    if (h->ncas == h->cap) {
        h->cap = h->cap == 0 ? 65536 : h->cap * 2;
        h->cas = realloc(h->cas, h->cap * sizeof(*h->cas));
        if (h->cas == NULL) {
            abort();
        }
    }
    h->cas[h->ncas++] = cas;
}

/* A value this suite wrote: "v:<digits>:<digits>;" then any "a;". */
static bool
value_ok(const unsigned char *p, size_t n)
{
    if (n < 2 || p[0] != 'v' || p[1] != ':') {
        return false;
    }
    for (size_t i = 2; i < n; i++) {
        if (strchr("0123456789:;a", p[i]) == NULL || p[i] == '\0') {
            return false;
        }
    }
    return true;
}

static void *
hammer_main(void *arg)
{
    struct hammer *h = arg;
    struct store_thr *t = NULL;
    struct conf_sink sink;
    struct store_call c;
    uint64_t rnd = 0x9e3779b97f4a7c15ULL * (uint64_t)(h->id + 1);
    double end = mono_ms() + HAMMER_MS;
    store_rc_e rc;

    conf_sink_init(&sink);
    memset(&c, 0, sizeof(c));
    c.now = CONF_NOW0;
    c.sink = &sink.base;
    if (h->ops->attach(h->s, &t) != STORE_OK) {
        hammer_fail(h, "attach", STORE_ENOMEM);
        return NULL;
    }
    while (h->err[0] == '\0') {
        uint64_t r = xorshift(&rnd);
        char key[16];
        char val[48];
        struct store_key k;
        struct store_item in;
        struct store_item out;
        uint64_t cas = 0;
        unsigned op = (unsigned)(r >> 32) % 10;

        if ((h->nops & 63) == 0 && mono_ms() >= end) {
            break;
        }
        h->nops++;
        snprintf(key, sizeof(key), "k%u", (unsigned)(r % HAMMER_KEYS));
        k.data = key;
        k.len = strlen(key);
        snprintf(val, sizeof(val), "v:%d:%lu;", h->id, h->nops);
        memset(&in, 0, sizeof(in));
        in.data = val;
        in.len = (uint32_t)strlen(val);
        switch (op) {
        case 0:
        case 1:
        case 2:
            rc = h->ops->store(t, &c, STORE_SET, &k, &in, &cas);
            if (rc != STORE_OK) {
                hammer_fail(h, "set", rc);
            } else {
                hammer_cas(h, cas);
            }
            break;
        case 3:
        case 4:
            rc = h->ops->get(t, &c, &k, NULL, &out);
            if (rc == STORE_OK) {
                if (!value_ok(out.data, out.len)) {
                    hammer_fail(h, "get: damaged value", rc);
                }
                h->ops->release(t, &out);
                conf_sink_reset(&sink);
            } else if (rc != STORE_ENOENT) {
                hammer_fail(h, "get", rc);
            }
            break;
        case 5:
        case 6:
            rc = h->ops->store(t, &c, op == 5 ? STORE_ADD : STORE_REPLACE,
                               &k, &in, &cas);
            if (rc == STORE_OK) {
                hammer_cas(h, cas);
            } else if (rc != STORE_NOT_STORED) {
                hammer_fail(h, "add/replace", rc);
            }
            break;
        case 7:
            in.data = "a;";
            in.len = 2;
            rc = h->ops->store(t, &c, STORE_APPEND, &k, &in, &cas);
            if (rc == STORE_OK) {
                hammer_cas(h, cas);
            } else if (rc != STORE_NOT_STORED && rc != STORE_E2BIG) {
                hammer_fail(h, "append", rc);
            }
            break;
        case 8:
            rc = h->ops->del(t, &c, &k, 0);
            if (rc != STORE_OK && rc != STORE_ENOENT) {
                hammer_fail(h, "delete", rc);
            }
            break;
        default:
            rc = h->ops->get(t, &c, &k, NULL, &out);
            if (rc != STORE_OK) {
                break;
            }
            in.cas = out.cas;
            h->ops->release(t, &out);
            conf_sink_reset(&sink);
            rc = h->ops->store(t, &c, STORE_SET, &k, &in, &cas);
            if (rc == STORE_OK) {
                hammer_cas(h, cas);
            } else if (rc != STORE_EEXISTS && rc != STORE_ENOENT) {
                hammer_fail(h, "cas", rc);
            }
            break;
        }
    }
    h->ops->detach(&t);
    return NULL;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

START_TEST(concurrent_mixed_ops)
{
    struct conf *cf = conformance_open(backends[_i]);
    struct hammer h[HAMMER_THREADS];
    pthread_t th[HAMMER_THREADS];
    uint64_t *all;
    size_t n = 0;

    memset(h, 0, sizeof(h));
    for (int i = 0; i < HAMMER_THREADS; i++) {
        h[i].ops = cf->ops;
        h[i].s = cf->s;
        h[i].id = i;
        ck_assert_int_eq(pthread_create(&th[i], NULL, hammer_main, &h[i]), 0);
    }
    for (int i = 0; i < HAMMER_THREADS; i++) {
        pthread_join(th[i], NULL);
    }
    for (int i = 0; i < HAMMER_THREADS; i++) {
        ck_assert_msg(h[i].err[0] == '\0', "%s", h[i].err);
        ck_assert_uint_gt(h[i].ncas, 0);
        n += h[i].ncas;
    }
    all = malloc(n * sizeof(*all));
    ck_assert_ptr_nonnull(all);
    n = 0;
    for (int i = 0; i < HAMMER_THREADS; i++) {
        memcpy(all + n, h[i].cas, h[i].ncas * sizeof(*all));
        n += h[i].ncas;
        free(h[i].cas);
    }
    qsort(all, n, sizeof(*all), cmp_u64);
    for (size_t i = 1; i < n; i++) {
        if (all[i] == all[i - 1]) {
            ck_abort_msg("CAS %llu handed out twice",
                         (unsigned long long)all[i]);
        }
    }
    free(all);
    /* The store is still whole: every key reads back as ours or missing. */
    for (int i = 0; i < HAMMER_KEYS; i++) {
        char key[16];
        const char *v;

        snprintf(key, sizeof(key), "k%d", i);
        v = conf_get_str(cf, key);
        CONF_CHECK(v == NULL ||
                   value_ok((const unsigned char *)v, strlen(v)));
    }
    conformance_close(&cf);
}
END_TEST

struct incr_arg {
    const struct store_ops *ops;
    struct store           *s;
    uint64_t               *seen;         /* results, to check uniqueness */
    bool                    failed;
};

static void *
incr_main(void *arg)
{
    struct incr_arg *a = arg;
    struct store_thr *t = NULL;
    struct store_call c;
    struct store_key k = { "ctr", 3 };
    struct store_delta d = { 1, 0, 0, 0, false, false };

    memset(&c, 0, sizeof(c));
    c.now = CONF_NOW0;
    if (a->ops->attach(a->s, &t) != STORE_OK) {
        a->failed = true;
        return NULL;
    }
    for (int i = 0; i < INCR_EACH; i++) {
        uint64_t cas = 0;

        if (a->ops->arith(t, &c, &k, &d, &a->seen[i], &cas) != STORE_OK) {
            a->failed = true;
            break;
        }
    }
    a->ops->detach(&t);
    return NULL;
}

START_TEST(concurrent_incr_adds_up)
{
    struct conf *cf = conformance_open(backends[_i]);
    struct incr_arg a[HAMMER_THREADS];
    pthread_t th[HAMMER_THREADS];
    uint64_t v = 0;
    unsigned char *hit = calloc(HAMMER_THREADS * INCR_EACH + 1, 1);

    ck_assert_ptr_nonnull(hit);
    conf_put(cf, "ctr", "0");
    for (int i = 0; i < HAMMER_THREADS; i++) {
        a[i].ops = cf->ops;
        a[i].s = cf->s;
        a[i].failed = false;
        a[i].seen = calloc(INCR_EACH, sizeof(uint64_t));
        ck_assert_ptr_nonnull(a[i].seen);
        ck_assert_int_eq(pthread_create(&th[i], NULL, incr_main, &a[i]), 0);
    }
    for (int i = 0; i < HAMMER_THREADS; i++) {
        pthread_join(th[i], NULL);
    }
    for (int i = 0; i < HAMMER_THREADS; i++) {
        ck_assert(!a[i].failed);
        for (int j = 0; j < INCR_EACH; j++) {
            uint64_t r = a[i].seen[j];

            /* Each result 1..N exactly once: no lost or doubled update. */
            CONF_CHECK(r >= 1 && r <= HAMMER_THREADS * INCR_EACH);
            CONF_CHECK(hit[r] == 0);
            hit[r] = 1;
        }
        free(a[i].seen);
    }
    free(hit);
    ck_assert_int_eq(conf_incr(cf, "ctr", false, 0, &v), STORE_OK);
    ck_assert_uint_eq(v, HAMMER_THREADS * INCR_EACH);
    ck_assert_str_eq(conf_get_str(cf, "ctr"), "40000");
    conformance_close(&cf);
}
END_TEST

#define MILLION 1000000u

START_TEST(million_keys)
{
    struct conf *cf = conformance_open(backends[_i]);
    /*
     * One thread, one key per commit: a persistent backend makes every
     * commit's pages durable (a power loss must not tear them), which is
     * disk bandwidth, not what this test is about; a quarter of a million
     * keys still spans a deep tree.
     */
    unsigned n = strcmp(backends[_i]->name, "memory") == 0 ? MILLION
                                                          : MILLION / 4;
    char key[24];
    char val[24];
    struct store_stats st;

    for (unsigned i = 0; i < n; i++) {
        int kl = snprintf(key, sizeof(key), "key:%u", i);
        int vl = snprintf(val, sizeof(val), "%u", i * 7u);

        (void)kl;
        CONF_CHECK(conf_storen(cf, STORE_SET, key, val, (size_t)vl, i, 0, 0,
                               NULL) == STORE_OK);
    }
    for (unsigned i = 0; i < n; i++) {
        struct store_item it;

        snprintf(key, sizeof(key), "key:%u", i);
        snprintf(val, sizeof(val), "%u", i * 7u);
        CONF_CHECK(conf_get(cf, key, NULL, &it) == STORE_OK);
        CONF_CHECK(strcmp(cf->vbuf, val) == 0);
        CONF_CHECK(it.flags == i);
    }
    cf->ops->stats(cf->t, &st);
    ck_assert_uint_eq(st.curr_items, n);
    conformance_close(&cf);
}
END_TEST

static Suite *
conformance_suite(void)
{
    Suite *s = suite_create("conformance");
    TCase *tc = tcase_create("semantics");
    TCase *tl = tcase_create("load");

    tcase_add_loop_test(tc, set_then_get, 0, NBACKENDS);
    tcase_add_loop_test(tc, binary_values_and_long_keys, 0, NBACKENDS);
    tcase_add_loop_test(tc, overwrite_gives_new_cas, 0, NBACKENDS);
    tcase_add_loop_test(tc, add_only_when_missing, 0, NBACKENDS);
    tcase_add_loop_test(tc, replace_only_when_present, 0, NBACKENDS);
    tcase_add_loop_test(tc, append_prepend, 0, NBACKENDS);
    tcase_add_loop_test(tc, cas_rules, 0, NBACKENDS);
    tcase_add_loop_test(tc, cas_on_expired_is_enoent, 0, NBACKENDS);
    tcase_add_loop_test(tc, delete_rules, 0, NBACKENDS);
    tcase_add_loop_test(tc, arith_basic, 0, NBACKENDS);
    tcase_add_loop_test(tc, arith_wrap_and_floor, 0, NBACKENDS);
    tcase_add_loop_test(tc, arith_non_numeric, 0, NBACKENDS);
    tcase_add_loop_test(tc, arith_missing_and_create, 0, NBACKENDS);
    tcase_add_loop_test(tc, arith_cas, 0, NBACKENDS);
    tcase_add_loop_test(tc, touch_keeps_cas, 0, NBACKENDS);
    tcase_add_loop_test(tc, get_and_touch, 0, NBACKENDS);
    tcase_add_loop_test(tc, expiry_moves_with_now, 0, NBACKENDS);
    tcase_add_loop_test(tc, flush_now, 0, NBACKENDS);
    tcase_add_loop_test(tc, flush_delayed, 0, NBACKENDS);
    tcase_add_loop_test(tc, size_limit, 0, NBACKENDS);
    tcase_add_loop_test(tc, value_outlives_overwrite_until_release, 0,
                        NBACKENDS);
    tcase_add_loop_test(tc, stats_common, 0, NBACKENDS);
    suite_add_tcase(s, tc);

    tcase_set_timeout(tl, 120);
    tcase_add_loop_test(tl, concurrent_mixed_ops, 0, NBACKENDS);
    tcase_add_loop_test(tl, concurrent_incr_adds_up, 0, NBACKENDS);
    tcase_add_loop_test(tl, million_keys, 0, NBACKENDS);
    suite_add_tcase(s, tl);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(conformance_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
