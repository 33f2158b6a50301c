/*
 * Tests of what only the sqlite backend promises, through storage.h (and
 * libsqlite3, to make foreign files and to read the store as the sqlite3
 * shell would): a file SQLite itself refuses, another program's database
 * or another format is refused and left byte for byte as it was; an empty
 * file becomes a store; the schema is what SCHEMA.md says; another
 * program's write lock is an error reply, not a hang; the item size is
 * bounded by SQLite's blobs; a WAL damaged on disk is refused while the
 * machine has not restarted (SQLite would drop acknowledged commits
 * silently) and what a crash left is dropped after a restart; its own
 * stats lines. What every persistent backend promises is in
 * check_store_persist.c. Every test works in its own mkdtemp directory
 * and removes it.
 */
#include "tests/persist_util.h"

#include <check.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const struct store_ops *const ops = &store_sqlite_ops;

/* dir/stashd.db of t into out. */
static const char *
db_path(const struct pt *t, char *out, size_t cap)
{
    return pt_path(t, "stashd.db", out, cap);
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

/* Random bytes are refused by the shared suite; SQLite's header on them
 * gets past the first look, and SQLite itself says no. */
START_TEST(garbage_with_sqlite_header_refused)
{
    struct pt *t = pt_new(ops);
    char db[128];

    pt_garbage_file(db_path(t, db, sizeof(db)), 3 * 4096 + 123);
    pt_write_at(db, 0, "SQLite format 3", 16);
    pt_expect_refused(t, STORE_ECORRUPT, db, "refusing to touch it");
    pt_free(t);
}
END_TEST

START_TEST(foreign_sqlite_refused_untouched)
{
    struct pt *t = pt_new(ops);
    struct stat st;
    char db[128];
    char wal[160];

    /* Another program's database, in rollback and then in WAL mode. */
    db_path(t, db, sizeof(db));
    sql_exec(db, "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);"
             "INSERT INTO users (name) VALUES ('ada'), ('linus');");
    pt_expect_refused(t, STORE_ECORRUPT, db, "not a stashd store");
    sql_exec(db, "PRAGMA journal_mode = WAL;"
             "INSERT INTO users (name) VALUES ('grace');");
    pt_expect_refused(t, STORE_ECORRUPT, db, "not a stashd store");
    /* Looking left no WAL behind to be replayed into it later. */
    snprintf(wal, sizeof(wal), "%s-wal", db);
    ck_assert_msg(stat(wal, &st) != 0 || st.st_size == 0, "%s", wal);
    /* A table called meta is not enough. */
    sql_exec(db, "CREATE TABLE meta (id INTEGER PRIMARY KEY, magic TEXT,"
             " format INTEGER); INSERT INTO meta VALUES (1, 'other', 1);");
    pt_expect_refused(t, STORE_ECORRUPT, db, "not a stashd store");
    /* Nor is another application's empty database. */
    unlink(db);
    sql_exec(db, "PRAGMA application_id = 42; PRAGMA user_version = 3;");
    pt_expect_refused(t, STORE_ECORRUPT, db, "another application");
    pt_free(t);
}
END_TEST

START_TEST(newer_format_refused)
{
    struct pt *t = pt_new(ops);
    char db[128];

    pt_open(t);
    pt_set(t, "k", "v");
    pt_close(t);
    sql_exec(db_path(t, db, sizeof(db)), "UPDATE meta SET format = 4");
    pt_expect_refused(t, STORE_ECORRUPT, db, "format 4");
    pt_free(t);
}
END_TEST

/*
 * A store of format 2 (every value in items, no table big), as the
 * stashd before it made one: refused naming both formats, left as it
 * was (pt_expect_refused compares the bytes).
 */
START_TEST(older_format_refused)
{
    struct pt *t = pt_new(ops);
    char db[128];

    sql_exec(db_path(t, db, sizeof(db)),
             "PRAGMA journal_mode = WAL;"
             "CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 1),"
             " magic TEXT NOT NULL, format INTEGER NOT NULL,"
             " created INTEGER NOT NULL, flush_cas INTEGER NOT NULL,"
             " flush_time INTEGER NOT NULL, cas_max INTEGER NOT NULL,"
             " items INTEGER NOT NULL, bytes INTEGER NOT NULL,"
             " clean INTEGER NOT NULL);"
             "CREATE TABLE items (key BLOB NOT NULL PRIMARY KEY,"
             " value BLOB NOT NULL, flags INTEGER NOT NULL,"
             " exptime INTEGER NOT NULL, cas INTEGER NOT NULL,"
             " stored INTEGER NOT NULL, atime INTEGER NOT NULL,"
             " fetched INTEGER NOT NULL DEFAULT 0, sum INTEGER NOT NULL)"
             " WITHOUT ROWID;"
             "CREATE INDEX items_exptime ON items (exptime)"
             " WHERE exptime != 0;"
             "INSERT INTO meta VALUES (1, 'stashd', 2, 1700000000, 0, 0,"
             " 65536, 1, 50, 1);"
             "INSERT INTO items VALUES (x'6b', x'7676', 0, 0, 1,"
             " 1700000000, 1700000000, 0, 42);"
             "PRAGMA application_id = 1937008740;"
             "PRAGMA user_version = 2;");
    pt_expect_refused(t, STORE_ECORRUPT, db,
                      "stashd store format 2, this stashd reads format 3");
    pt_free(t);
}
END_TEST

START_TEST(empty_file_becomes_store)
{
    struct pt *t = pt_new(ops);
    char db[128];
    int fd = open(db_path(t, db, sizeof(db)), O_CREAT | O_WRONLY, 0600);

    /* A zero-byte stashd.db is SQLite's empty database: nothing to lose. */
    ck_assert_int_ge(fd, 0);
    close(fd);
    pt_open(t);
    pt_set(t, "k", "v");
    pt_close(t);
    pt_open(t);
    ck_assert_int_eq(pt_get(t, "k", NULL), STORE_OK);
    pt_close(t);
    pt_free(t);
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
    struct pt *t = pt_new(ops);
    uint64_t cas = 0;
    uint64_t cas2 = 0;
    char path[160];
    char dbp[128];
    char val[64];
    sqlite3_int64 flags;
    sqlite3_int64 exptime;
    sqlite3_int64 c;
    sqlite3 *db;
    sqlite3_stmt *st;

    db_path(t, dbp, sizeof(dbp));
    pt_open(t);
    ck_assert_int_eq(pt_put(t, "user:1", "ada", 3, 42, t->cfg.now + 600,
                            &cas), STORE_OK);
    ck_assert_int_eq(pt_put(t, "user:2", "linus", 5, 0, 0, &cas2),
                     STORE_OK);
    ck_assert_int_eq(t->ops->flush(t->thr, &t->c, t->cfg.now + 3600),
                     STORE_OK);
    /* While it runs, another reader sees committed rows (WAL). */
    ck_assert_int_eq(sqlite3_open_v2(dbp, &db, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    ck_assert(shell_row(db, "user:1", val, sizeof(val), &flags, &exptime,
                        &c));
    ck_assert_str_eq(val, "ada");
    sqlite3_close(db);
    pt_close(t);

    /* Closed: one file, the WAL folded into it. */
    snprintf(path, sizeof(path), "%s-wal", dbp);
    ck_assert_int_ne(access(path, F_OK), 0);
    ck_assert_int_eq(sqlite3_open_v2(dbp, &db, SQLITE_OPEN_READONLY, NULL),
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
    ck_assert_int_eq(sqlite3_column_int64(st, 1), 3);
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
    pt_free(t);
}
END_TEST

START_TEST(busy_is_an_error_reply)
{
    struct pt *t = pt_new(ops);
    sqlite3 *db = NULL;
    char dbp[128];

    pt_open(t);
    pt_set(t, "k", "v");
    /* Another program takes the write lock and keeps it. */
    ck_assert_int_eq(sqlite3_open(db_path(t, dbp, sizeof(dbp)), &db),
                     SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL),
                     SQLITE_OK);
    ck_assert_int_eq(pt_put(t, "k2", "v", 1, 0, 0, NULL), STORE_EIO);
    ck_assert_uint_ge(pt_stat(t, "busy"), 1);
    /* Readers are not in its way (WAL). */
    ck_assert_int_eq(pt_get(t, "k", NULL), STORE_OK);
    ck_assert_int_eq(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL),
                     SQLITE_OK);
    ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
    /* Once it lets go, writes work again. */
    pt_set(t, "k2", "v");
    ck_assert_int_eq(pt_get(t, "k2", NULL), STORE_OK);
    pt_close(t);
    pt_free(t);
}
END_TEST

START_TEST(item_size_above_sqlite_blobs_refused)
{
    struct pt *t = pt_new(ops);

    t->cfg.item_max = 1024u * 1024u * 1024u;
    ck_assert_int_eq(pt_open_rc(t), STORE_EINVAL);
    ck_assert_msg(strstr(t->err, "item size") != NULL, "%s", t->err);
    pt_free(t);
}
END_TEST

/* WAL layout (sqlite's file format): a header, then frames. */
#define WAL_HDR       32
#define WAL_FRAME_HDR 24
#define PAGE_SIZE     4096
#define WAL_FRAME     (WAL_FRAME_HDR + PAGE_SIZE)
#define WAL_KEYS      300

/*
 * Opens t, holds a read transaction of another connection so that no
 * checkpoint copies the WAL and starts it over (its frames stay where
 * the test looks for them), writes WAL_KEYS keys, one commit each, and
 * dies without closing.
 */
static int
wal_child(struct pt *t, int fd)
{
    sqlite3 *db = NULL;
    char dbp[128];
    char key[32];

    (void)fd;
    if (pt_open_rc(t) != STORE_OK) {
        return 10;
    }
    if (sqlite3_open_v2(db_path(t, dbp, sizeof(dbp)), &db,
                        SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_exec(db, "BEGIN; SELECT count(*) FROM items;", NULL, NULL,
                     NULL) != SQLITE_OK) {
        return 11;
    }
    for (int i = 0; i < WAL_KEYS; i++) {
        snprintf(key, sizeof(key), "w%03d", i);
        if (pt_put(t, key, "value", 5, 0, 0, NULL) != STORE_OK) {
            return 12;
        }
    }
    return 0;       /* no close: the WAL keeps its frames */
}

/*
 * A flipped byte in an early frame of the WAL, commits after it: SQLite's
 * recovery would keep the frames before it and silently drop all the
 * acknowledged commits after. While the machine has not restarted (the
 * page cache held every frame, so none can be torn) that is damage: the
 * store is refused naming the WAL, which is left as it was. After a
 * restart (another boot id) it is what a power loss leaves: the store
 * opens without those commits, counted exactly.
 */
START_TEST(damaged_wal_refused_same_boot)
{
    struct pt *t = pt_new(ops);
    struct stat st;
    char wal[160];
    char key[32];
    unsigned char byte;
    long off = WAL_HDR + 1 * WAL_FRAME + WAL_FRAME_HDR + 100;
    uint64_t found = 0;

    /* The schema in the database file: the WAL holds only the writes. */
    t->cfg.boot_id = "b1";
    pt_open(t);
    pt_close(t);
    pt_in_child(t, wal_child, NULL, 0);

    pt_path(t, "stashd.db-wal", wal, sizeof(wal));
    ck_assert_int_eq(stat(wal, &st), 0);
    ck_assert_int_ge(st.st_size, WAL_HDR + WAL_KEYS * WAL_FRAME);
    {
        FILE *f = fopen(wal, "rb");

        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(fseek(f, off, SEEK_SET), 0);
        ck_assert_int_eq(fread(&byte, 1, 1, f), 1);
        fclose(f);
    }
    byte ^= 0x10;
    pt_write_at(wal, off, &byte, 1);

    pt_expect_refused(t, STORE_ECORRUPT, wal, "frame 2 ");

    t->cfg.boot_id = "b2";
    pt_open(t);
    for (int i = 0; i < WAL_KEYS; i++) {
        snprintf(key, sizeof(key), "w%03d", i);
        found += pt_get(t, key, NULL) == STORE_OK;
    }
    ck_assert_uint_lt(found, 2);
    ck_assert_uint_eq(pt_items(t), found);
    pt_set(t, "after", "v");
    pt_close(t);
    pt_open(t);
    ck_assert_int_eq(pt_get(t, "after", NULL), STORE_OK);
    ck_assert_uint_eq(pt_items(t), found + 1);
    pt_close(t);
    pt_free(t);
}
END_TEST

/* SQLite's figures and the checkpoints' (check_store_persist.c checks the
 * engine's lines). */
START_TEST(sqlite_stats_lines)
{
    struct pt *t = pt_new(ops);
    struct pt_lines l;

    t->cfg.sync = STORE_SYNC_PERIODIC;
    t->cfg.sync_interval_ms = 20;
    pt_open(t);
    pt_set(t, "k", "v");
    ck_assert_uint_eq(pt_stat(t, "page_size"), 4096);
    ck_assert_uint_gt(pt_stat(t, "page_count"), 2);
    ck_assert_uint_gt(pt_stat(t, "wal_bytes"), 0);
    /* The maintenance thread checkpoints what was committed. */
    for (int i = 0; i < 100 && pt_stat(t, "checkpoints") == 0; i++) {
        pt_sleep_ms(10);
    }
    ck_assert_uint_ge(pt_stat(t, "checkpoints"), 1);
    ck_assert_uint_gt(pt_stat(t, "last_checkpoint"), 0);
    pt_general(t, &l);
    ck_assert_msg(strstr(l.text, "sqlite_journal_mode wal\n") != NULL, "%s",
                  l.text);
    pt_close(t);
    pt_free(t);
}
END_TEST

PT_MAIN("store_sqlite", garbage_with_sqlite_header_refused,
        foreign_sqlite_refused_untouched, newer_format_refused,
        older_format_refused,
        empty_file_becomes_store, schema_readable_with_sqlite3,
        busy_is_an_error_reply, item_size_above_sqlite_blobs_refused,
        damaged_wal_refused_same_boot, sqlite_stats_lines)
