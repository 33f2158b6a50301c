/*
 * The sqlite backend's large values (format 3), through storage.h and a
 * second, read-only sqlite3 connection on stashd.db: a value longer than
 * 512 bytes lives in table big and its items row stays small, so no items
 * row spills onto overflow pages; every write keeps exactly one big row
 * per large item (replace, shrink, grow, append, delete, expiry, flush,
 * eviction), across a clean close and a crash; a big row damaged on disk,
 * missing, another key's or of the wrong length is a miss, counted and
 * removed, never a wrong value; a big row nobody owns is removed in the
 * background. Every test works in its own mkdtemp directory and removes
 * it.
 */
#include "storage/sqlite/sq.h"
#include "tests/persist_util.h"

#include <check.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct store_ops *const ops = &store_sqlite_ops;

#define INLINE_MAX 512u        /* SCHEMA.md's figure */
_Static_assert(INLINE_MAX == SQ_INLINE_MAX, "SCHEMA.md says 512");

/* A value of len bytes that says who it is (never the byte 'X'). */
static unsigned char *
value_of(size_t len, unsigned seed)
{
    unsigned char *v = malloc(len + 1);

    ck_assert_ptr_nonnull(v);
    for (size_t i = 0; i < len; i++) {
        v[i] = (unsigned char)('a' + (i * 7 + seed) % 23);
    }
    return v;
}

/* Sets key to a fresh value_of(len, seed); must succeed. */
static void
put_len(struct pt *t, const char *key, size_t len, unsigned seed,
        uint32_t exptime)
{
    unsigned char *v = value_of(len, seed);
    store_rc_e rc = pt_put(t, key, v, len, 0, exptime, NULL);

    ck_assert_msg(rc == STORE_OK, "set %s (%zu): %s", key, len,
                  store_strerror(rc));
    free(v);
}

/* key's value must be want[0, len) (any size: pt_get stops at 64 KB). */
static void
expect_value(struct pt *t, const char *key, const void *want, size_t len)
{
    struct store_key k = { key, strlen(key) };
    struct store_item it;
    store_rc_e rc = t->ops->get(t->thr, &t->c, &k, NULL, &it);

    ck_assert_msg(rc == STORE_OK, "get %s: %s", key, store_strerror(rc));
    ck_assert_uint_eq(it.len, len);
    ck_assert_msg(len == 0 || memcmp(it.data, want, len) == 0,
                  "%s: another value", key);
    t->ops->release(t->thr, &it);
    conf_sink_reset(&t->sink);
}

/* key's value must be value_of(len, seed). */
static void
expect_len(struct pt *t, const char *key, size_t len, unsigned seed)
{
    unsigned char *v = value_of(len, seed);

    expect_value(t, key, v, len);
    free(v);
}

/* One number from sql on stashd.db, read as the sqlite3 shell would. */
static sqlite3_int64
q_int(const struct pt *t, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    sqlite3_int64 n;
    char path[128];

    ck_assert_int_eq(sqlite3_open_v2(pt_path(t, "stashd.db", path,
                                             sizeof(path)),
                                     &db, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    ck_assert_msg(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK,
                  "%s: %s", sql, sqlite3_errmsg(db));
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
    return n;
}

static sqlite3_int64
big_rows(const struct pt *t)
{
    return q_int(t, "SELECT count(*) FROM big");
}

/* Runs sql on the closed store's file, as another program would. */
static void
sql_exec(const struct pt *t, const char *sql)
{
    sqlite3 *db = NULL;
    char *e = NULL;
    char path[128];

    ck_assert_int_eq(sqlite3_open(pt_path(t, "stashd.db", path,
                                          sizeof(path)), &db), SQLITE_OK);
    ck_assert_msg(sqlite3_exec(db, sql, NULL, NULL, &e) == SQLITE_OK,
                  "%s: %s", sql, e != NULL ? e : "?");
    sqlite3_free(e);
    ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
}

static uint64_t
stat_bytes(struct pt *t)
{
    struct store_stats st;

    t->ops->stats(t->thr, &st);
    return st.bytes;
}

/* Polls the sqlite stat name every 20 ms, up to ms, until it is >= n. */
static uint64_t
wait_stat(struct pt *t, const char *name, uint64_t n, int ms)
{
    uint64_t v = pt_stat(t, name);

    for (int waited = 0; v < n && waited < ms; waited += 20) {
        t->ops->idle(t->thr);
        pt_sleep_ms(20);
        v = pt_stat(t, name);
    }
    return v;
}

/* Appends (or prepends) len bytes of value_of(len, seed) to key. */
static store_rc_e
concat(struct pt *t, store_mode_e mode, const char *key, size_t len,
       unsigned seed)
{
    struct store_key k = { key, strlen(key) };
    unsigned char *v = value_of(len, seed);
    struct store_item in = { v, (uint32_t)len, 0, 0, 0, NULL };
    uint64_t cas = 0;
    store_rc_e rc = t->ops->store(t->thr, &t->c, mode, &k, &in, &cas);

    free(v);
    return rc;
}

static const size_t sizes[] = {
    0, 1, INLINE_MAX - 1, INLINE_MAX, INLINE_MAX + 1, 1002, 4096,
    1024 * 1024,
};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

/* What a crash leaves: written, never closed. */
static int
crash_child(struct pt *t, int fd)
{
    (void)fd;
    if (pt_open_rc(t) != STORE_OK) {
        return 10;
    }
    put_len(t, "c:new", 5000, 9, 0);
    put_len(t, "v4096", 100, 9, 0);           /* big -> small */
    put_len(t, "v511", 700, 9, 0);            /* small -> big */
    if (pt_del(t, "v1048576") != STORE_OK) {
        return 11;
    }
    return 0;
}

/*
 * Values on both sides of 512 bytes read back as written, inline or in
 * big as SCHEMA.md says; no items row spills, even with the longest key
 * beside the longest inline value; the byte count is 48 + key + value
 * each, after a clean reopen and after a crash (recounted).
 */
START_TEST(sizes_around_threshold)
{
    struct pt *t = pt_new(ops);
    char longkey[STORE_KEY_MAX + 1];
    char key[32];
    uint64_t bytes = 0;
    sqlite3_int64 large = 0;
    char sql[320];

    t->cfg.item_max = 2 * 1024 * 1024;
    pt_open(t);
    for (size_t i = 0; i < NSIZES; i++) {
        snprintf(key, sizeof(key), "v%zu", sizes[i]);
        put_len(t, key, sizes[i], (unsigned)i, 0);
        bytes += 48 + strlen(key) + sizes[i];
        large += sizes[i] > INLINE_MAX;
    }
    memset(longkey, 'K', STORE_KEY_MAX);
    longkey[STORE_KEY_MAX] = '\0';
    put_len(t, longkey, INLINE_MAX, 77, 0);
    longkey[0] = 'L';
    put_len(t, longkey, INLINE_MAX + 1, 78, 0);
    bytes += 2 * (48 + STORE_KEY_MAX) + 2 * INLINE_MAX + 1;
    large++;
    ck_assert_uint_eq(stat_bytes(t), bytes);

    /* While it runs, the shell sees where each value is. */
    for (size_t i = 0; i < NSIZES; i++) {
        snprintf(sql, sizeof(sql), "SELECT (big_id IS NOT NULL) * 1000000 "
                 "+ length(value) * 10 + (vlen = %zu) FROM items WHERE "
                 "key = CAST('v%zu' AS BLOB)", sizes[i], sizes[i]);
        ck_assert_int_eq(q_int(t, sql),
                         sizes[i] > INLINE_MAX ? 1000001
                                               : (sqlite3_int64)sizes[i] * 10
                                                 + 1);
    }
    ck_assert_int_eq(big_rows(t), large);
    /* SCHEMA.md's query for a value, inline or not (value_of(4096, 6)
     * starts "gnu", value_of(511, 2) "cjq"). */
    for (int i = 0; i < 2; i++) {
        snprintf(sql, sizeof(sql), "SELECT length(v) * (CAST(substr(v, 1, "
                 "3) AS TEXT) = '%s') FROM (SELECT coalesce(b.value, "
                 "i.value) AS v FROM items i LEFT JOIN big b ON b.id = "
                 "i.big_id WHERE i.key = CAST('%s' AS BLOB))",
                 i == 0 ? "gnu" : "cjq", i == 0 ? "v4096" : "v511");
        ck_assert_int_eq(q_int(t, sql), i == 0 ? 4096 : 511);
    }
    ck_assert_int_eq(q_int(t, "SELECT count(*) FROM dbstat WHERE "
                           "name = 'items' AND pagetype = 'overflow'"), 0);
    ck_assert_int_le(q_int(t, "SELECT max(mx_payload) FROM dbstat WHERE "
                           "name = 'items'"), SQ_ROW_MAX);
    for (size_t i = 0; i < NSIZES; i++) {
        snprintf(key, sizeof(key), "v%zu", sizes[i]);
        expect_len(t, key, sizes[i], (unsigned)i);
    }
    pt_close(t);

    pt_open(t);
    ck_assert_uint_eq(stat_bytes(t), bytes);
    ck_assert_uint_eq(pt_items(t), NSIZES + 2);
    for (size_t i = 0; i < NSIZES; i++) {
        snprintf(key, sizeof(key), "v%zu", sizes[i]);
        expect_len(t, key, sizes[i], (unsigned)i);
    }
    expect_len(t, longkey, INLINE_MAX + 1, 78);
    pt_close(t);

    /* A crash: open counts again from vlen, no big row read. */
    pt_in_child(t, crash_child, NULL, 0);
    bytes += 48 + 5 + 5000;
    bytes = bytes - 4096 + 100 - 511 + 700 - (48 + 8 + 1024 * 1024);
    pt_open(t);
    ck_assert_uint_eq(stat_bytes(t), bytes);
    ck_assert_uint_eq(pt_items(t), NSIZES + 2);
    expect_len(t, "c:new", 5000, 9);
    expect_len(t, "v4096", 100, 9);
    expect_len(t, "v511", 700, 9);
    ck_assert_int_eq(pt_get(t, "v1048576", NULL), STORE_ENOENT);
    ck_assert_int_eq(big_rows(t), large + 1 - 1 + 1 - 1);
    pt_close(t);
    pt_free(t);
}
END_TEST

/* A key's value moves between items and big as it changes size. */
START_TEST(replace_big_small_big)
{
    struct pt *t = pt_new(ops);
    static const size_t steps[] = {
        1024 * 1024, 10, 2000, 600, INLINE_MAX, INLINE_MAX + 1, 0, 70000,
    };

    t->cfg.item_max = 2 * 1024 * 1024;
    pt_open(t);
    put_len(t, "other", 3000, 1, 0);
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        put_len(t, "k", steps[i], (unsigned)i + 10, 0);
        expect_len(t, "k", steps[i], (unsigned)i + 10);
        ck_assert_int_eq(big_rows(t), 1 + (steps[i] > INLINE_MAX));
        ck_assert_uint_eq(stat_bytes(t), 48 + 5 + 3000 + 48 + 1 + steps[i]);
    }
    expect_len(t, "other", 3000, 1);
    pt_close(t);
    pt_open(t);
    expect_len(t, "k", 70000, 17);
    expect_len(t, "other", 3000, 1);
    pt_close(t);
    pt_free(t);
}
END_TEST

/* append and prepend (the engine's load + put) across the threshold. */
START_TEST(append_crossing_threshold)
{
    struct pt *t = pt_new(ops);
    unsigned char *want = malloc(8000);
    unsigned char *v;

    ck_assert_ptr_nonnull(want);
    pt_open(t);
    put_len(t, "a", 500, 1, 0);
    ck_assert_int_eq(concat(t, STORE_APPEND, "a", 20, 2), STORE_OK);
    v = value_of(500, 1);
    memcpy(want, v, 500);
    free(v);
    v = value_of(20, 2);
    memcpy(want + 500, v, 20);
    free(v);
    expect_value(t, "a", want, 520);
    ck_assert_int_eq(big_rows(t), 1);
    /* Big to bigger, at the front. */
    ck_assert_int_eq(concat(t, STORE_PREPEND, "a", 3000, 3), STORE_OK);
    memmove(want + 3000, want, 520);
    v = value_of(3000, 3);
    memcpy(want, v, 3000);
    free(v);
    expect_value(t, "a", want, 3520);
    ck_assert_int_eq(big_rows(t), 1);
    /* Exactly onto the threshold stays inline; one more byte does not. */
    put_len(t, "b", INLINE_MAX - 1, 4, 0);
    ck_assert_int_eq(concat(t, STORE_APPEND, "b", 1, 5), STORE_OK);
    ck_assert_int_eq(big_rows(t), 1);
    ck_assert_int_eq(concat(t, STORE_PREPEND, "b", 1, 6), STORE_OK);
    ck_assert_int_eq(big_rows(t), 2);
    ck_assert_uint_eq(stat_bytes(t), 48 + 1 + 3520 + 48 + 1 + INLINE_MAX + 1);
    pt_close(t);
    pt_open(t);
    expect_value(t, "a", want, 3520);
    pt_close(t);
    free(want);
    pt_free(t);
}
END_TEST

/*
 * Delete, expiry, flush_all and eviction take the big rows with their
 * items: the table ends empty, or as large as the items that need it.
 */
START_TEST(big_rows_go_with_their_items)
{
    struct pt *t = pt_new(ops);
    uint32_t now = t->cfg.now;
    char key[32];

    pt_open(t);
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "d%02d", i);
        put_len(t, key, 2000, (unsigned)i, i >= 10 && i < 15 ? now + 2 : 0);
    }
    pt_set(t, "small", "v");
    ck_assert_int_eq(big_rows(t), 20);
    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof(key), "d%02d", i);
        ck_assert_int_eq(pt_del(t, key), STORE_OK);
    }
    ck_assert_int_eq(big_rows(t), 15);
    /* Time moves on; the sweeper finds the expired ones by the index. */
    t->c.now = now + 5;
    ck_assert_int_eq(pt_get(t, "d19", NULL), STORE_OK);
    t->ops->idle(t->thr);
    ck_assert_uint_eq(pt_wait_items(t, 11, 5000), 11);
    ck_assert_int_eq(big_rows(t), 10);
    ck_assert_uint_eq(stat_bytes(t), 10 * (48 + 3 + 2000) + 48 + 5 + 1);
    ck_assert_int_eq(t->ops->flush(t->thr, &t->c, t->c.now), STORE_OK);
    ck_assert_uint_eq(pt_wait_items(t, 0, 5000), 0);
    ck_assert_int_eq(big_rows(t), 0);
    ck_assert_uint_eq(stat_bytes(t), 0);
    pt_close(t);
    pt_free(t);

    /* -m 1 MB, 6 MB of large values: evicted, big rows and all. */
    t = pt_new(ops);
    t->cfg.mem_limit = 1 * MB;
    pt_open(t);
    for (int i = 0; i < 120; i++) {
        snprintf(key, sizeof(key), "e%03d", i);
        put_len(t, key, 50000, (unsigned)i, 0);
    }
    ck_assert_uint_le(stat_bytes(t), 1 * MB);
    ck_assert_int_eq(big_rows(t), (sqlite3_int64)pt_items(t));
    ck_assert_int_eq(q_int(t, "SELECT count(*) FROM items i JOIN big b ON "
                           "b.id = i.big_id AND b.key = i.key"),
                     (sqlite3_int64)pt_items(t));
    expect_len(t, "e119", 50000, 119);
    pt_close(t);
    pt_free(t);
}
END_TEST

/*
 * A big row changed on disk (one byte, or cut short) while the store is
 * closed: a miss, counted in sqlite_checksum_failures, removed with its
 * big row; every other value as written, the byte count exact.
 */
START_TEST(damaged_big_row_is_a_miss)
{
    struct pt *t = pt_new(ops);
    char key[32];

    pt_open(t);
    put_len(t, "victim", 4096, 1, 0);
    put_len(t, "short", 4096, 2, 0);
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        put_len(t, key, i % 2 == 0 ? 100 : 3000, (unsigned)i, 0);
    }
    pt_close(t);
    sql_exec(t, "UPDATE big SET value = CAST(substr(value, 1, 99) || 'X' "
             "|| substr(value, 101) AS BLOB) "
             "WHERE key = CAST('victim' AS BLOB);"
             "UPDATE big SET value = substr(value, 1, 1000) "
             "WHERE key = CAST('short' AS BLOB);");

    pt_open(t);
    ck_assert_int_eq(pt_get(t, "victim", NULL), STORE_ENOENT);
    ck_assert_int_eq(pt_get(t, "short", NULL), STORE_ENOENT);
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        expect_len(t, key, i % 2 == 0 ? 100 : 3000, (unsigned)i);
    }
    ck_assert_uint_eq(pt_stat(t, "checksum_failures"), 2);
    t->ops->idle(t->thr);
    ck_assert_uint_eq(pt_wait_items(t, 10, 3000), 10);
    ck_assert_uint_eq(pt_stat(t, "damaged_removed"), 2);
    ck_assert_uint_eq(stat_bytes(t), 5 * (48 + 2 + 100) + 5 * (48 + 2 + 3000));
    ck_assert_int_eq(big_rows(t), 5);
    put_len(t, "victim", 5000, 3, 0);
    expect_len(t, "victim", 5000, 3);
    pt_close(t);
    pt_free(t);
}
END_TEST

/*
 * items rows whose big_id names no row, or another key's row: misses,
 * counted and removed, on reads and on writes (an append loads the
 * value), and the other key keeps its value; the rows nobody names then
 * (the one the redirected row owned, one made by hand) are removed in the
 * background.
 */
START_TEST(dangling_big_id_is_a_miss)
{
    struct pt *t = pt_new(ops);

    pt_open(t);
    put_len(t, "a", 3000, 1, 0);
    put_len(t, "b", 3000, 2, 0);
    put_len(t, "c", 3000, 3, 0);
    put_len(t, "d", 3000, 4, 0);
    put_len(t, "e", 3000, 5, 0);
    pt_set(t, "s", "small");
    pt_close(t);
    sql_exec(t, "DELETE FROM big WHERE key IN (x'61', x'65');"
             "UPDATE items SET big_id = (SELECT id FROM big WHERE "
             "key = x'62') WHERE key = x'63';"
             "INSERT INTO big (key, value) VALUES (x'7a', zeroblob(5000));");

    pt_open(t);
    ck_assert_int_eq(pt_get(t, "a", NULL), STORE_ENOENT);
    ck_assert_int_eq(pt_get(t, "c", NULL), STORE_ENOENT);
    ck_assert_int_eq(concat(t, STORE_APPEND, "e", 10, 6), STORE_NOT_STORED);
    expect_len(t, "b", 3000, 2);
    expect_len(t, "d", 3000, 4);
    ck_assert_int_eq(pt_get(t, "s", NULL), STORE_OK);
    ck_assert_str_eq(t->val, "small");
    ck_assert_uint_eq(pt_stat(t, "checksum_failures"), 3);
    t->ops->idle(t->thr);
    ck_assert_uint_eq(pt_wait_items(t, 3, 3000), 3);
    ck_assert_uint_eq(stat_bytes(t), 2 * (48 + 1 + 3000) + 48 + 1 + 5);
    /* c's own row and the hand-made one: nobody's. */
    ck_assert_uint_eq(wait_stat(t, "orphans_removed", 2, 5000), 2);
    ck_assert_int_eq(big_rows(t), 2);
    expect_len(t, "b", 3000, 2);
    put_len(t, "c", 4000, 7, 0);
    expect_len(t, "c", 4000, 7);
    pt_close(t);
    pt_free(t);
}
END_TEST

PT_MAIN("store_sqlite_big", sizes_around_threshold, replace_big_small_big,
        append_crossing_threshold, big_rows_go_with_their_items,
        damaged_big_row_is_a_miss, dangling_big_id_is_a_miss)
