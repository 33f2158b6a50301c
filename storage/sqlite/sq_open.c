/*
 * Opening and closing a sqlite store, and the connection and statement
 * helpers every file of the backend uses. open creates the data directory
 * if it is missing (mode 0700), takes an exclusive flock on DIR/stashd.lock
 * (the same file lmdb locks, so two backends cannot share a directory
 * either) before any database file is touched, and then looks at
 * DIR/stashd.db without writing: a file that is not SQLite, an SQLite
 * database that is not a stashd store (no meta table, another magic) or a
 * newer format is refused with a message naming it, and is never opened
 * for writing. Only a missing file, an empty one, or a database with no
 * tables at all becomes a new store. close stops the threads, makes the WAL
 * durable, and closes the writer last so that SQLite folds the WAL into
 * the database file (synchronous=NORMAL for that checkpoint) and removes
 * it, leaving one file for the sqlite3 shell.
 */
#include "storage/sqlite/sq.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SQ_BUSY_MS_WRITER  1000   /* another process writing: then EIO */
#define SQ_BUSY_MS_READER  2000
#define SQ_PAGE_HEADROOM   (64ull * 1024 * 1024)
#define SQ_WAL_MIN         (4ll * 1024 * 1024)
#define SQ_WAL_MAX         (64ll * 1024 * 1024)
#define SQ_WRITER_CACHE_KB 16384

/*
 * Every statement, by id. Columns 0-5 of a row are always cas, flags,
 * exptime, stored, atime, fetched (store_sqlite_rec); keys and values are
 * bound as BLOBs, so they compare bytewise.
 */
static const char *const sql_text[SQ_NSQL] = {
    [SQ_GET] = "SELECT cas, flags, exptime, stored, atime, fetched, value "
               "FROM items WHERE key = ?1",
    [SQ_EXPIRED] = "SELECT key, cas FROM items "
                   "WHERE exptime != 0 AND exptime <= ?1 "
                   "ORDER BY exptime LIMIT ?2",
    [SQ_SCAN] = "SELECT cas, flags, exptime, stored, atime, fetched, key "
                "FROM items WHERE key > ?1 ORDER BY key LIMIT ?2",
    [SQ_SCAN0] = "SELECT cas, flags, exptime, stored, atime, fetched, key "
                 "FROM items ORDER BY key LIMIT ?2",
    [SQ_PAGES] = "PRAGMA page_count",
    [SQ_FREEPAGES] = "PRAGMA freelist_count",
    [SQ_RBEGIN] = "BEGIN",
    [SQ_BEGIN] = "BEGIN IMMEDIATE",
    [SQ_COMMIT] = "COMMIT",
    [SQ_ROLLBACK] = "ROLLBACK",
    [SQ_LOAD] = "SELECT cas, flags, exptime, stored, atime, fetched, "
                "length(value) FROM items WHERE key = ?1",
    [SQ_LOADV] = "SELECT cas, flags, exptime, stored, atime, fetched, value "
                 "FROM items WHERE key = ?1",
    [SQ_PUT] = "INSERT OR REPLACE INTO items (key, value, flags, exptime, "
               "cas, stored, atime, fetched) "
               "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [SQ_DEL] = "DELETE FROM items WHERE key = ?1",
    [SQ_TOUCH] = "UPDATE items SET exptime = ?2, atime = ?3, "
                 "fetched = fetched | ?4 WHERE key = ?1",
    [SQ_REFRESH] = "UPDATE items SET atime = ?3, fetched = 1 "
                   "WHERE key = ?1 AND cas = ?2 AND atime <= ?4",
    [SQ_META] = "UPDATE meta SET flush_cas = ?1, flush_time = ?2, "
                "cas_max = ?3, items = ?4, bytes = ?5, clean = ?6 "
                "WHERE id = 1",
    [SQ_WINDOW] = "SELECT cas, flags, exptime, stored, atime, fetched, key, "
                  "length(value) FROM items WHERE key >= ?1 "
                  "ORDER BY key LIMIT ?2",
    [SQ_WINDOW0] = "SELECT cas, flags, exptime, stored, atime, fetched, "
                   "key, length(value) FROM items ORDER BY key LIMIT ?2",
};

/* The schema (SCHEMA.md explains it); %u is the creation time. */
static const char schema_fmt[] =
    "CREATE TABLE meta (\n"
    "    id         INTEGER PRIMARY KEY CHECK (id = 1),\n"
    "    magic      TEXT    NOT NULL,\n"
    "    format     INTEGER NOT NULL,\n"
    "    created    INTEGER NOT NULL,\n"
    "    flush_cas  INTEGER NOT NULL,\n"
    "    flush_time INTEGER NOT NULL,\n"
    "    cas_max    INTEGER NOT NULL,\n"
    "    items      INTEGER NOT NULL,\n"
    "    bytes      INTEGER NOT NULL,\n"
    "    clean      INTEGER NOT NULL\n"
    ");\n"
    "CREATE TABLE items (\n"
    "    key     BLOB    NOT NULL PRIMARY KEY,\n"
    "    value   BLOB    NOT NULL,\n"
    "    flags   INTEGER NOT NULL,\n"
    "    exptime INTEGER NOT NULL,\n"
    "    cas     INTEGER NOT NULL,\n"
    "    stored  INTEGER NOT NULL,\n"
    "    atime   INTEGER NOT NULL,\n"
    "    fetched INTEGER NOT NULL DEFAULT 0\n"
    ") WITHOUT ROWID;\n"
    "CREATE INDEX items_exptime ON items (exptime) WHERE exptime != 0;\n"
    "INSERT INTO meta VALUES (1, '" SQ_MAGIC "', %d, %u, 0, 0, 0, 0, 0, 1);"
    "\n"
    "PRAGMA application_id = %d;\n"
    "PRAGMA user_version = %d;\n";

int
store_sqlite_busy(void *arg, int tries)
{
    int budget_ms = (int)(intptr_t)arg;
    struct timespec ts = { 0, 0 };

    /* 20 sleeps of 50 us, then 1 ms each: about budget_ms in all. */
    if (tries >= 20 + budget_ms) {
        return 0;
    }
    ts.tv_nsec = tries < 20 ? 50 * 1000L : 1000 * 1000L;
    nanosleep(&ts, NULL);
    return 1;
}

store_rc_e
store_sqlite_rc(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return STORE_OK;
    case SQLITE_FULL:
    case SQLITE_NOMEM:
        return STORE_ENOMEM;
    case SQLITE_TOOBIG:
        return STORE_E2BIG;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return STORE_ECORRUPT;
    default:
        return STORE_EIO;   /* BUSY, LOCKED, IOERR, READONLY, ... */
    }
}

void
store_sqlite_note_err(struct store *s, int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        sq_inc(&s->ctr.busy, 1);
        break;
    case SQLITE_FULL:
        sq_inc(&s->ctr.full, 1);
        break;
    default:
        sq_inc(&s->ctr.ioerr, 1);
        break;
    }
}

void
store_sqlite_rec(sqlite3_stmt *st, int i, struct sq_rec *r)
{
    r->cas = (uint64_t)sqlite3_column_int64(st, i);
    r->flags = (uint32_t)sqlite3_column_int64(st, i + 1);
    r->exptime = (uint32_t)sqlite3_column_int64(st, i + 2);
    r->stored = (uint32_t)sqlite3_column_int64(st, i + 3);
    r->atime = (uint32_t)sqlite3_column_int64(st, i + 4);
    r->fetched = sqlite3_column_int64(st, i + 5) != 0;
}

sqlite3_stmt *
store_sqlite_stmt(struct sq_conn *c, sq_sql_e id)
{
    if (c->st[id] == NULL &&
        sqlite3_prepare_v3(c->db, sql_text[id], -1, SQLITE_PREPARE_PERSISTENT,
                           &c->st[id], NULL) != SQLITE_OK) {
        c->st[id] = NULL;
    }
    return c->st[id];
}

void
store_sqlite_disconnect(struct sq_conn *c)
{
    if (c->db == NULL) {
        return;
    }
    for (int i = 0; i < SQ_NSQL; i++) {
        sqlite3_finalize(c->st[i]);
        c->st[i] = NULL;
    }
    if (sqlite3_close(c->db) != SQLITE_OK) {
        (void)sqlite3_close_v2(c->db);
    }
    c->db = NULL;
}

/* Runs sql (settings, schema) on db; SQLite's message into msg. */
static int
run_sql(sqlite3 *db, const char *sql, char *msg, size_t msglen)
{
    char *e = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &e);

    if (rc != SQLITE_OK && msg != NULL && msglen > 0) {
        snprintf(msg, msglen, "%s", e != NULL ? e : sqlite3_errstr(rc));
    }
    sqlite3_free(e);
    return rc;
}

/* The single-row answer of sql as text (a pragma); false on failure. */
static bool
query_text(sqlite3 *db, const char *sql, char *out, size_t cap)
{
    sqlite3_stmt *st = NULL;
    bool ok = false;

    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        const unsigned char *v = sqlite3_column_text(st, 0);

        snprintf(out, cap, "%s", v != NULL ? (const char *)v : "");
        ok = true;
    }
    sqlite3_finalize(st);
    return ok;
}

int
store_sqlite_connect(struct store *s, struct sq_conn *c, bool writer,
                     bool create, char *msg, size_t msglen)
{
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX |
                (create ? SQLITE_OPEN_CREATE : 0);
    char mode[16];
    int rc;

    memset(c, 0, sizeof(*c));
    rc = sqlite3_open_v2(s->db_path, &c->db, flags, NULL);
    if (rc != SQLITE_OK) {
        if (msg != NULL && msglen > 0) {
            snprintf(msg, msglen, "%s", c->db != NULL ? sqlite3_errmsg(c->db)
                                                      : sqlite3_errstr(rc));
        }
        store_sqlite_disconnect(c);
        return rc;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_handler(c->db, store_sqlite_busy,
                         (void *)(intptr_t)(writer ? SQ_BUSY_MS_WRITER
                                                   : SQ_BUSY_MS_READER));
    if (writer) {
        /*
         * WAL: readers never block the writer nor it them. Commits are
         * not synced here (synchronous=OFF): the syncer fdatasyncs the WAL
         * per --sync, off the request path, one sync for many commits.
         * No auto-checkpoint either: the maintenance thread checkpoints
         * from its own connection with synchronous=NORMAL.
         */
        if (!query_text(c->db, "PRAGMA journal_mode = WAL", mode,
                        sizeof(mode)) || strcmp(mode, "wal") != 0) {
            rc = sqlite3_errcode(c->db);
            if (msg != NULL && msglen > 0) {
                snprintf(msg, msglen, "cannot switch to WAL mode: %s",
                         rc != SQLITE_OK ? sqlite3_errmsg(c->db) : mode);
            }
            store_sqlite_disconnect(c);
            return rc != SQLITE_OK ? rc : SQLITE_ERROR;
        }
        rc = run_sql(c->db, "PRAGMA synchronous = OFF;"
                     "PRAGMA wal_autocheckpoint = 0;"
                     "PRAGMA cache_size = -16384;", msg, msglen);
    } else {
        /*
         * Readers write nothing but checkpoints (the maintenance thread's
         * connection), and those must sync the WAL before copying it and
         * the database before the WAL is reused: NORMAL does both.
         */
        rc = run_sql(c->db, "PRAGMA synchronous = NORMAL;"
                     "PRAGMA wal_autocheckpoint = 0;", msg, msglen);
    }
    if (rc != SQLITE_OK) {
        store_sqlite_disconnect(c);
    }
    return rc;
}

/* Refuses a file that does not start with SQLite's header string. */
static store_rc_e
check_header(const struct store_cfg *cfg, const char *path, off_t size)
{
    static const char magic[16] = "SQLite format 3";   /* and its NUL */
    char head[16];
    ssize_t n = -1;
    int fd;

    if (size == 0) {
        return STORE_OK;      /* SQLite's own empty database */
    }
    /* Read-only, and closed before SQLite opens the file at all. */
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        persist_err(cfg, "%s: %s", path, strerror(errno));
        return STORE_EIO;
    }
    n = pread(fd, head, sizeof(head), 0);
    close(fd);
    if (n != (ssize_t)sizeof(head) || memcmp(head, magic, 16) != 0) {
        persist_err(cfg, "%s: not an SQLite database; refusing to "
                    "touch it", path);
        return STORE_ECORRUPT;
    }
    return STORE_OK;
}

/* One integer or text answer from a read-only look. */
static int
peek(sqlite3 *db, const char *sql, sqlite3_int64 *num, char *text,
     size_t cap)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            const unsigned char *v = sqlite3_column_text(st, 1);

            *num = sqlite3_column_int64(st, 0);
            if (text != NULL) {
                snprintf(text, cap, "%s", v != NULL ? (const char *)v : "");
            }
            rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
            rc = SQLITE_NOTFOUND;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

/*
 * Looks at an existing stashd.db through a read-only connection (which
 * never checkpoints on close) and decides: ours (load it), empty (make
 * it a store), or anything else (refuse, naming the file).
 */
static store_rc_e
inspect(const struct store_cfg *cfg, struct store *s, bool *fresh)
{
    sqlite3 *db = NULL;
    sqlite3_int64 n = 0;
    sqlite3_int64 appid = 0;
    char magic[32];
    int rc;

    rc = sqlite3_open_v2(s->db_path, &db,
                         SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        (void)sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1,
                                NULL);
        sqlite3_busy_handler(db, store_sqlite_busy,
                             (void *)(intptr_t)SQ_BUSY_MS_READER);
        rc = peek(db, "SELECT count(*), NULL FROM sqlite_master", &n, NULL,
                  0);
    }
    if (rc != SQLITE_OK) {
        store_rc_e src = store_sqlite_rc(rc);

        persist_err(cfg, "%s: %s%s", s->db_path,
                    db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc),
                    src == STORE_ECORRUPT ? "; refusing to touch it"
                                          : "");
        sqlite3_close(db);
        return src == STORE_ECORRUPT ? src : STORE_EIO;
    }
    if (n == 0) {
        /* No tables: an empty database, nothing in it to lose. */
        rc = peek(db, "SELECT application_id, NULL "
                  "FROM pragma_application_id", &appid, NULL, 0);
        sqlite3_close(db);
        if (rc != SQLITE_OK || (appid != 0 && appid != SQ_APP_ID)) {
            persist_err(cfg, "%s: an SQLite database of another "
                        "application (id %lld); refusing to touch it",
                        s->db_path, (long long)appid);
            return STORE_ECORRUPT;
        }
        *fresh = true;
        return STORE_OK;
    }
    rc = peek(db, "SELECT format, magic FROM meta WHERE id = 1", &n, magic,
              sizeof(magic));
    if (rc != SQLITE_OK || strcmp(magic, SQ_MAGIC) != 0) {
        persist_err(cfg, "%s: an SQLite database that is not a stashd "
                    "store (%s); refusing to touch it", s->db_path,
                    rc == SQLITE_NOTFOUND ? "no meta row"
                    : rc != SQLITE_OK ? sqlite3_errmsg(db)
                                      : "wrong magic in meta");
        sqlite3_close(db);
        return (rc & 0xff) == SQLITE_BUSY ? STORE_EIO : STORE_ECORRUPT;
    }
    sqlite3_close(db);
    if (n != SQ_FORMAT) {
        persist_err(cfg, "%s: stashd store format %lld, this stashd "
                    "reads format %d; refusing to touch it", s->db_path,
                    (long long)n, SQ_FORMAT);
        return STORE_ECORRUPT;
    }
    *fresh = false;
    return STORE_OK;
}

/* Is there a database to look at, or something that is not ours? */
static store_rc_e
check_dir(const struct store_cfg *cfg, struct store *s, bool *fresh)
{
    char path[4096];
    struct stat st;
    store_rc_e rc;

    snprintf(path, sizeof(path), "%s/%s", s->dir, SQ_LMDB_FILE);
    if (stat(path, &st) == 0) {
        persist_err(cfg, "%s: the directory holds an lmdb store; the "
                    "sqlite backend will not mix with it", path);
        return STORE_ECORRUPT;
    }
    if (stat(s->db_path, &st) != 0) {
        if (errno == ENOENT) {
            *fresh = true;
            return STORE_OK;
        }
        persist_err(cfg, "%s: %s", s->db_path, strerror(errno));
        return STORE_EIO;
    }
    if (!S_ISREG(st.st_mode)) {
        persist_err(cfg, "%s: not a regular file; refusing to touch it",
                    s->db_path);
        return STORE_ECORRUPT;
    }
    rc = check_header(cfg, s->db_path, st.st_size);
    if (rc != STORE_OK) {
        return rc;
    }
    return inspect(cfg, s, fresh);
}

/* A new store: the schema and the meta row, in one synced transaction. */
static store_rc_e
create_schema(const struct store_cfg *cfg, struct store *s)
{
    char sql[sizeof(schema_fmt) + 64];
    char msg[256] = "";
    int rc;

    snprintf(sql, sizeof(sql), schema_fmt, SQ_FORMAT, (unsigned)cfg->now,
             SQ_APP_ID, SQ_FORMAT);
    rc = run_sql(s->w.db, "PRAGMA synchronous = FULL", msg, sizeof(msg));
    if (rc == SQLITE_OK) {
        rc = run_sql(s->w.db, "BEGIN IMMEDIATE", msg, sizeof(msg));
    }
    if (rc == SQLITE_OK) {
        rc = run_sql(s->w.db, sql, msg, sizeof(msg));
        if (rc == SQLITE_OK) {
            rc = run_sql(s->w.db, "COMMIT", msg, sizeof(msg));
        }
        if (rc != SQLITE_OK && !sqlite3_get_autocommit(s->w.db)) {
            (void)run_sql(s->w.db, "ROLLBACK", NULL, 0);
        }
    }
    if (rc == SQLITE_OK) {
        rc = run_sql(s->w.db, "PRAGMA synchronous = OFF", msg, sizeof(msg));
    }
    if (rc != SQLITE_OK) {
        persist_err(cfg, "%s: cannot create the store: %s", s->db_path,
                    msg);
        return store_sqlite_rc(rc) == STORE_ENOMEM ? STORE_ENOMEM
                                                   : STORE_EIO;
    }
    return STORE_OK;
}

/*
 * After a crash (clean = 0) the row's items and bytes are stale: count
 * them again, one pass over the table (length() reads no value).
 */
static store_rc_e
recount(const struct store_cfg *cfg, struct store *s)
{
    static const char sql[] = "SELECT count(*), coalesce(sum(length(key) + "
                              "length(value)), 0) FROM items";
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->w.db, sql, -1, &st, NULL);

    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        s->meta.items = (uint64_t)sqlite3_column_int64(st, 0);
        s->meta.bytes = (uint64_t)sqlite3_column_int64(st, 1) +
                        SQ_ITEM_OVERHEAD * s->meta.items;
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_OK) {
        persist_err(cfg, "%s: cannot count the items: %s", s->db_path,
                    sqlite3_errmsg(s->w.db));
    }
    sqlite3_finalize(st);
    return store_sqlite_rc(rc);
}

/* Reads the meta row through the writer and checks the schema. */
static store_rc_e
load_meta(const struct store_cfg *cfg, struct store *s)
{
    static const char sql[] = "SELECT flush_cas, flush_time, cas_max, "
                              "items, bytes, created, clean FROM meta "
                              "WHERE id = 1";
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->w.db, sql, -1, &st, NULL);
    bool clean;
    store_rc_e src;

    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
    }
    if (rc != SQLITE_ROW) {
        persist_err(cfg, "%s: unreadable meta row: %s; refusing to "
                    "touch it", s->db_path, sqlite3_errmsg(s->w.db));
        sqlite3_finalize(st);
        return (rc & 0xff) == SQLITE_BUSY ? STORE_EIO : STORE_ECORRUPT;
    }
    s->meta.flush_cas = (uint64_t)sqlite3_column_int64(st, 0);
    s->meta.flush_time = (uint32_t)sqlite3_column_int64(st, 1);
    s->meta.cas_max = (uint64_t)sqlite3_column_int64(st, 2);
    s->meta.items = (uint64_t)sqlite3_column_int64(st, 3);
    s->meta.bytes = (uint64_t)sqlite3_column_int64(st, 4);
    s->meta.created = (uint32_t)sqlite3_column_int64(st, 5);
    clean = sqlite3_column_int64(st, 6) != 0;
    sqlite3_finalize(st);
    /* Every statement the writer will run: a wrong schema shows here. */
    for (int id = SQ_BEGIN; id < SQ_NSQL; id++) {
        if (store_sqlite_stmt(&s->w, (sq_sql_e)id) == NULL) {
            persist_err(cfg, "%s: not the stashd schema (%s); "
                        "refusing to use it", s->db_path,
                        sqlite3_errmsg(s->w.db));
            return STORE_ECORRUPT;
        }
    }
    if (!clean && (src = recount(cfg, s)) != STORE_OK) {
        return src;
    }
    /* Running from now on: a lease on the next CAS block, not clean. */
    rc = store_sqlite_meta_commit(s, s->meta.cas_max + SQ_CAS_LEASE, false);
    if (rc != SQLITE_OK) {
        persist_err(cfg, "%s: cannot write the meta row: %s",
                    s->db_path, sqlite3_errmsg(s->w.db));
        return store_sqlite_rc(rc) == STORE_ENOMEM ? STORE_ENOMEM
                                                   : STORE_EIO;
    }
    return STORE_OK;
}

/*
 * The writer's limits: the WAL starts over once it holds -m / 4 (4 to 64
 * MB; larger means fewer catch-up pauses under heavy writes, sq_maint.c),
 * journal_size_limit trims it to that when it does, and max_page_count
 * bounds the file as lmdb's map does (-m three times over plus headroom,
 * never below what the file already holds): past it a write gets
 * SQLITE_FULL, i.e. out of memory.
 */
static store_rc_e
set_limits(const struct store_cfg *cfg, struct store *s)
{
    char sql[160];
    char val[32];
    char msg[256] = "";
    uint64_t pages;
    uint64_t used;

    if (!query_text(s->w.db, "PRAGMA page_size", val, sizeof(val)) ||
        (s->page_size = (uint32_t)strtoul(val, NULL, 10)) == 0 ||
        !query_text(s->w.db, "PRAGMA page_count", val, sizeof(val))) {
        persist_err(cfg, "%s: %s", s->db_path, sqlite3_errmsg(s->w.db));
        return STORE_EIO;
    }
    used = strtoull(val, NULL, 10);
    /* SQLite's largest BLOB (and row) bounds an item. */
    if ((int64_t)s->item_max > sqlite3_limit(s->w.db, SQLITE_LIMIT_LENGTH,
                                             -1)) {
        persist_err(cfg, "item size limit %u above SQLite's largest "
                    "blob (%d bytes)", s->item_max,
                    sqlite3_limit(s->w.db, SQLITE_LIMIT_LENGTH, -1));
        return STORE_EINVAL;
    }
    pages = (s->mem_limit * 3 + SQ_PAGE_HEADROOM) / s->page_size;
    if (pages < used + SQ_PAGE_HEADROOM / s->page_size) {
        pages = used + SQ_PAGE_HEADROOM / s->page_size;
    }
    if (pages > 1073741823ull) {
        pages = 1073741823ull;
    }
    s->wal_restart = (int64_t)(s->mem_limit / 4);
    s->wal_restart = s->wal_restart < SQ_WAL_MIN ? SQ_WAL_MIN
                     : s->wal_restart > SQ_WAL_MAX ? SQ_WAL_MAX
                                                   : s->wal_restart;
    snprintf(sql, sizeof(sql), "PRAGMA journal_size_limit = %lld;"
             "PRAGMA max_page_count = %llu;", (long long)s->wal_restart,
             (unsigned long long)pages);
    if (run_sql(s->w.db, sql, msg, sizeof(msg)) != SQLITE_OK) {
        persist_err(cfg, "%s: %s", s->db_path, msg);
        return STORE_EIO;
    }
    return STORE_OK;
}

int
store_sqlite_sync_wal(struct store *s)
{
    if (s->wal_fd < 0) {
        return 0;
    }
    return fdatasync(s->wal_fd) == 0 ? 0 : errno;
}

/* The syncer's hook: the WAL holds every commit, so syncing it is enough. */
static int
sq_fsync(void *arg)
{
    return store_sqlite_sync_wal(arg);
}

/* Our own descriptor of the WAL (the syncer's) and of the directory. */
static store_rc_e
open_files(const struct store_cfg *cfg, struct store *s, bool fresh)
{
    s->wal_fd = open(s->wal_path, O_RDONLY | O_CLOEXEC);
    if (s->wal_fd < 0) {
        persist_err(cfg, "%s: %s", s->wal_path, strerror(errno));
        return STORE_EIO;
    }
    s->dir_fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->dir_fd < 0) {
        persist_err(cfg, "%s: %s", s->dir, strerror(errno));
        return STORE_EIO;
    }
    /* The new files' names, and what the WAL holds, on disk now. */
    if (store_sqlite_sync_wal(s) != 0 || (fresh && fsync(s->dir_fd) != 0)) {
        persist_err(cfg, "%s: cannot sync: %s", s->wal_path,
                    strerror(errno));
        return STORE_EIO;
    }
    return STORE_OK;
}

/* What open set up, so that a failure undoes exactly that. */
struct open_state {
    unsigned locks;      /* how many of the sync objects below exist */
};

static void
sq_destroy(struct store *s, const struct open_state *st)
{
    store_sqlite_maint_stop(s);
    persist_sync_stop(&s->ps);
    if (s->w.db != NULL) {
        /*
         * The exact counts and CAS for the next open, marked clean; made
         * durable whatever the mode; then the writer, the last connection,
         * checkpoints with NORMAL sync and removes the WAL.
         */
        if (s->opened && atomic_load(&s->wfail) == 0) {
            (void)store_sqlite_meta_commit(s, s->meta.cas_max, true);
        }
        (void)store_sqlite_sync_wal(s);
        (void)run_sql(s->w.db, "PRAGMA synchronous = NORMAL", NULL, 0);
        store_sqlite_disconnect(&s->w);
    }
    if (s->wal_fd >= 0) {
        close(s->wal_fd);
    }
    if (s->dir_fd >= 0) {
        (void)fsync(s->dir_fd);
        close(s->dir_fd);
    }
    if (s->lock_fd >= 0) {
        close(s->lock_fd);     /* releases the flock */
    }
    /* In reverse order of sync_objects_init. */
    switch (st->locks) {
    case 4:
        persist_maint_deinit(&s->pm);
        /* fall through */
    case 3:
        pthread_mutex_destroy(&s->hint_lock);
        /* fall through */
    case 2:
        persist_sync_deinit(&s->ps);
        /* fall through */
    case 1:
        persist_queue_deinit(&s->wq);
        /* fall through */
    default:
        break;
    }
    store_sqlite_keybuf_deinit(&s->hints);
    free(s->scratch);
    free(s->wal_path);
    free(s->db_path);
    free(s->dir);
    free(s);
}

static bool
sync_objects_init(const struct store_cfg *cfg, struct store *s,
                  struct open_state *st)
{
    if (!persist_queue_init(&s->wq, store_sqlite_run_batch, s)) {
        return false;
    }
    st->locks = 1;
    if (!persist_sync_init(&s->ps, cfg->sync, cfg->sync_interval_ms,
                           sq_fsync, s, &s->seq, &s->wfail)) {
        return false;
    }
    st->locks = 2;
    if (pthread_mutex_init(&s->hint_lock, NULL) != 0) {
        return false;
    }
    st->locks = 3;
    if (!persist_maint_init(&s->pm, SQ_TICK_MS, &s->now_seen)) {
        return false;
    }
    st->locks = 4;
    return true;
}

static char *
path_join(const char *dir, const char *name, const char *suffix)
{
    size_t n = strlen(dir) + strlen(name) + strlen(suffix) + 2;
    char *p = malloc(n);

    if (p != NULL) {
        snprintf(p, n, "%s/%s%s", dir, name, suffix);
    }
    return p;
}

/* The configuration, checked and copied into s. */
static store_rc_e
take_cfg(const struct store_cfg *cfg, struct store *s)
{
    s->mem_limit = cfg->mem_limit != 0 ? cfg->mem_limit
                                        : SQ_DEFAULT_MEM_LIMIT;
    s->item_max = cfg->item_max != 0 ? cfg->item_max : SQ_DEFAULT_ITEM_MAX;
    s->no_evict = cfg->no_evict;
    if (sqlite3_threadsafe() == 0) {
        persist_err(cfg, "this libsqlite3 is built without thread "
                    "support (SQLITE_THREADSAFE=0)");
        return STORE_EINVAL;
    }
    if (s->item_max < SQ_ITEM_MAX_LOWEST) {
        persist_err(cfg, "item size limit %u below %u", s->item_max,
                    SQ_ITEM_MAX_LOWEST);
        return STORE_EINVAL;
    }
    if (s->ps.mode > STORE_SYNC_NONE) {
        persist_err(cfg, "bad sync mode");
        return STORE_EINVAL;
    }
    return STORE_OK;
}

store_rc_e
store_sqlite_open(const struct store_cfg *cfg, struct store **out)
{
    struct open_state st = { 0 };
    struct store *s;
    store_rc_e rc = STORE_ENOMEM;
    bool fresh = false;
    char msg[256] = "";

    *out = NULL;
    if (cfg->err != NULL && cfg->errlen > 0) {
        cfg->err[0] = '\0';
    }
    if (cfg->data_dir == NULL || cfg->data_dir[0] == '\0') {
        persist_err(cfg, "no data directory given (--data-dir)");
        return STORE_EINVAL;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return STORE_ENOMEM;
    }
    s->lock_fd = -1;
    s->wal_fd = -1;
    s->dir_fd = -1;
    s->dir = strdup(cfg->data_dir);
    s->db_path = s->dir != NULL ? path_join(s->dir, SQ_DB_FILE, "") : NULL;
    s->wal_path = s->dir != NULL ? path_join(s->dir, SQ_DB_FILE,
                                             SQ_WAL_SUFFIX) : NULL;
    if (s->wal_path == NULL || !sync_objects_init(cfg, s, &st)) {
        goto fail;
    }
    atomic_init(&s->now_seen, cfg->now);
    if ((rc = take_cfg(cfg, s)) != STORE_OK ||
        (rc = persist_make_dir(cfg, s->dir)) != STORE_OK ||
        (rc = persist_lock_dir(cfg, s->dir, &s->lock_fd)) != STORE_OK ||
        (rc = check_dir(cfg, s, &fresh)) != STORE_OK) {
        goto fail;
    }
    if (store_sqlite_connect(s, &s->w, true, fresh, msg,
                             sizeof(msg)) != SQLITE_OK) {
        persist_err(cfg, "%s: %s", s->db_path, msg);
        rc = STORE_EIO;
        goto fail;
    }
    if ((fresh && (rc = create_schema(cfg, s)) != STORE_OK) ||
        (rc = load_meta(cfg, s)) != STORE_OK ||
        (rc = set_limits(cfg, s)) != STORE_OK ||
        (rc = open_files(cfg, s, fresh)) != STORE_OK) {
        goto fail;
    }
    atomic_init(&s->flush_cas, s->meta.flush_cas);
    atomic_init(&s->flush_time, s->meta.flush_time);
    atomic_init(&s->cas_max, s->meta.cas_max);
    atomic_init(&s->bytes, s->meta.bytes);
    atomic_init(&s->items, s->meta.items);
    rc = STORE_ENOMEM;
    if (!persist_sync_start(&s->ps) || !store_sqlite_maint_start(s)) {
        persist_err(cfg, "cannot start the sqlite backend's threads");
        goto fail;
    }
    s->opened = true;
    *out = s;
    return STORE_OK;
fail:
    sq_destroy(s, &st);
    return rc;
}

void
store_sqlite_close(struct store **sp)
{
    struct store *s = *sp;
    struct open_state st = { 4 };

    if (s == NULL) {
        return;
    }
    sq_destroy(s, &st);
    *sp = NULL;
}
