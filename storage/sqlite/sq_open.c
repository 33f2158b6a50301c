/*
 * The sqlite adapter (store_sqlite_ops): memcached items in one SQLite
 * database per data directory, in WAL mode, surviving restarts, crashes
 * and power loss, readable with the sqlite3 shell (SCHEMA.md). This file
 * opens and closes it and holds the connection and statement helpers.
 *
 * Design, and why:
 * - Layout: DIR/stashd.db (+ -wal, -shm while open), DIR/stashd.lock (the
 *   engine's flock, the same name lmdb uses). Table items(key BLOB PRIMARY
 *   KEY, value, flags, exptime, cas, stored, atime, fetched, sum, big_id,
 *   vlen) WITHOUT ROWID, so a get is one B-tree search; values longer than
 *   SQ_INLINE_MAX in table big(id, key, value), so that no items row
 *   spills onto overflow pages (sq.h says why that matters), a second
 *   search by rowid for those; a partial index on exptime for
 *   the sweeper; a one-row table meta (magic, format, flush CAS and time,
 *   a CAS ceiling, item count, stored bytes, clean flag), rewritten only
 *   in the commits that need it (the engine says when), so most commits
 *   write one page. close writes exact counts and clean = 1, so a clean
 *   restart needs no scan; after a crash open counts items and bytes again
 *   (one pass that reads no values). The first commit after open marks
 *   the row not clean; open itself writes nothing, so a store on a full
 *   disk still opens and serves reads.
 * - Open refuses, never overwrites: a file that is not SQLite, a database
 *   without our meta row, another format, or an lmdb store in the same
 *   directory is refused with a message naming it, and is never opened
 *   for writing. Only a missing file, an empty one, or a database with no
 *   tables at all becomes a new store.
 * - Connections: one per reader (SQLITE_OPEN_NOMUTEX: a connection is
 *   only ever used by one thread at a time; the library itself must be
 *   threadsafe, checked at open), one writer. Every statement is prepared
 *   once per connection and reset after each use.
 * - Durability, the --sync mapping: the writer runs synchronous=OFF and
 *   wal_autocheckpoint=0, so a COMMIT writes its WAL frames to the page
 *   cache (which survives kill -9) and never fsyncs or checkpoints on the
 *   request path. The syncer fdatasyncs the WAL file (sq_sync), which is
 *   what synchronous=FULL would do in every COMMIT, once for all commits
 *   made before it started. A power loss can only cut the WAL short:
 *   SQLite's recovery keeps the frames up to the last whole commit, whose
 *   checksums chain, and drops the rest. Checkpoints run on the
 *   maintenance thread's connection, which is synchronous=NORMAL in every
 *   mode: SQLite then fsyncs the WAL before copying it into the database
 *   and the database before the WAL is reused, so the database file is
 *   never ahead of a durable WAL (sq_maint.c).
 * - max_page_count bounds the file (3 x -m + 64 MB): SQLITE_FULL, from it
 *   or from a full disk, is "no room" for that write.
 * - No global state: everything is in struct kv_be.
 */
#include "storage/sqlite/sq.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "storage/persist/persist.h"

#define SQ_BUSY_MS_WRITER  1000   /* another process writing: then EIO */
#define SQ_BUSY_MS_READER  2000
#define SQ_PAGE_HEADROOM   (64ull * 1024 * 1024)
#define SQ_WAL_MIN         (4ll * 1024 * 1024)
#define SQ_WAL_MAX         (64ll * 1024 * 1024)
#define SQ_WRITER_CACHE_KB 16384

#define SQ_COLS "cas, flags, exptime, stored, atime, fetched, sum"
#define SQ_STR_(x) #x
#define SQ_STR(x)  SQ_STR_(x)

/*
 * Every statement, by id. Columns 0-6 of a row are always cas, flags,
 * exptime, stored, atime, fetched, sum (sq_rec); keys and values are
 * bound as BLOBs, so they compare bytewise.
 */
static const char *const sql_text[SQ_NSQL] = {
    [SQ_GET] = "SELECT " SQ_COLS ", value, big_id, vlen FROM items "
               "WHERE key = ?1",
    [SQ_GETBIG] = "SELECT key, value FROM big WHERE id = ?1",
    [SQ_ORPHANS] = "SELECT b.id, NOT EXISTS (SELECT 1 FROM items i "
                   "WHERE i.key = b.key AND i.big_id = b.id) FROM big b "
                   "WHERE b.id > ?1 ORDER BY b.id LIMIT ?2",
    [SQ_EXPIRED] = "SELECT " SQ_COLS ", key, vlen FROM items "
                   "WHERE exptime != 0 AND exptime <= ?1 "
                   "ORDER BY exptime LIMIT ?2",
    [SQ_SCAN] = "SELECT " SQ_COLS ", key, vlen FROM items "
                "WHERE key >= ?1 ORDER BY key LIMIT ?2",
    [SQ_SCAN0] = "SELECT " SQ_COLS ", key, vlen FROM items "
                 "ORDER BY key LIMIT ?2",
    [SQ_PAGES] = "PRAGMA page_count",
    [SQ_FREEPAGES] = "PRAGMA freelist_count",
    [SQ_RBEGIN] = "BEGIN",
    [SQ_BEGIN] = "BEGIN IMMEDIATE",
    [SQ_COMMIT] = "COMMIT",
    [SQ_ROLLBACK] = "ROLLBACK",
    [SQ_LOAD] = "SELECT " SQ_COLS ", vlen, big_id FROM items "
                "WHERE key = ?1",
    [SQ_LOADV] = "SELECT " SQ_COLS ", value, big_id, vlen FROM items "
                 "WHERE key = ?1",
    [SQ_PUT] = "INSERT OR REPLACE INTO items (key, value, flags, exptime, "
               "cas, stored, atime, fetched, sum, big_id, vlen) "
               "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    [SQ_PUTREC] = "UPDATE items SET flags = ?2, exptime = ?3, cas = ?4, "
                  "stored = ?5, atime = ?6, fetched = ?7, sum = ?8 "
                  "WHERE key = ?1",
    [SQ_OLDBIG] = "SELECT big_id FROM items WHERE key = ?1",
    [SQ_BIGADD] = "INSERT INTO big (key, value) VALUES (?1, ?2)",
    [SQ_BIGSET] = "UPDATE big SET value = ?3 WHERE id = ?1 AND key = ?2",
    [SQ_BIGDEL] = "DELETE FROM big WHERE id = ?1 AND key = ?2",
    [SQ_BIGDROP] = "DELETE FROM big WHERE id = (SELECT big_id FROM items "
                   "WHERE key = ?1) AND key = ?1",
    [SQ_DEL] = "DELETE FROM items WHERE key = ?1",
    [SQ_ORPHANDEL] = "DELETE FROM big WHERE id = ?1 AND NOT EXISTS "
                     "(SELECT 1 FROM items i WHERE i.key = big.key AND "
                     "i.big_id = big.id)",
    [SQ_META] = "UPDATE meta SET flush_cas = ?1, flush_time = ?2, "
                "cas_max = ?3, items = ?4, bytes = ?5, clean = ?6 "
                "WHERE id = 1",
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
    "    fetched INTEGER NOT NULL DEFAULT 0,\n"
    "    sum     INTEGER NOT NULL,\n"
    "    big_id  INTEGER,\n"
    "    vlen    INTEGER NOT NULL\n"
    ") WITHOUT ROWID;\n"
    "CREATE INDEX items_exptime ON items (exptime) WHERE exptime != 0;\n"
    "CREATE TABLE big (\n"
    "    id    INTEGER PRIMARY KEY,\n"
    "    key   BLOB    NOT NULL,\n"
    "    value BLOB    NOT NULL\n"
    ");\n"
    "INSERT INTO meta VALUES (1, '" SQ_MAGIC "', %d, %u, 0, 0, 0, 0, 0, 1);"
    "\n"
    "PRAGMA application_id = %d;\n"
    "PRAGMA user_version = %d;\n";

int
sq_busy(void *arg, int tries)
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

/* An SQLite result as open reports it. */
static store_rc_e
sq_store_rc(int rc)
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

sqlite3_stmt *
sq_stmt(struct sq_conn *c, sq_sql_e id)
{
    if (c->st[id] == NULL &&
        sqlite3_prepare_v3(c->db, sql_text[id], -1, SQLITE_PREPARE_PERSISTENT,
                           &c->st[id], NULL) != SQLITE_OK) {
        c->st[id] = NULL;
    }
    return c->st[id];
}

void
sq_disconnect(struct sq_conn *c)
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
sq_connect(struct kv_be *b, struct sq_conn *c, bool writer,
                     bool create, char *msg, size_t msglen)
{
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX |
                (create ? SQLITE_OPEN_CREATE : 0);
    char mode[16];
    int rc;

    memset(c, 0, sizeof(*c));
    rc = sqlite3_open_v2(b->db_path, &c->db, flags, NULL);
    if (rc != SQLITE_OK) {
        if (msg != NULL && msglen > 0) {
            snprintf(msg, msglen, "%s", c->db != NULL ? sqlite3_errmsg(c->db)
                                                      : sqlite3_errstr(rc));
        }
        sq_disconnect(c);
        return rc;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_handler(c->db, sq_busy,
                         (void *)(intptr_t)(writer ? SQ_BUSY_MS_WRITER
                                                   : SQ_BUSY_MS_READER));
    if (writer && create) {
        /* SQ_INLINE_MAX is sized for it; only a file without pages yet
         * takes it (not once in WAL mode), so it comes first. */
        (void)run_sql(c->db, "PRAGMA page_size = "
                      SQ_STR(SQ_PAGE_SIZE), NULL, 0);
    }
    if (writer) {
        /*
         * WAL: readers never block the writer nor it them. Commits are
         * not synced here: in WAL mode synchronous=NORMAL syncs no commit,
         * only the WAL's header when the WAL starts over (with OFF, frames
         * of the new WAL reaching the disk before its header could, after
         * a power loss, replay the old WAL's frames over pages a later
         * checkpoint had made newer: SQLite's ticket ff5be73dee; the
         * power-loss rig caught it). The syncer fdatasyncs the WAL per
         * --sync, off the request path, one sync for many commits. No
         * auto-checkpoint either: the maintenance thread checkpoints from
         * its own connection, NORMAL too.
         */
        if (!query_text(c->db, "PRAGMA journal_mode = WAL", mode,
                        sizeof(mode)) || strcmp(mode, "wal") != 0) {
            rc = sqlite3_errcode(c->db);
            if (msg != NULL && msglen > 0) {
                snprintf(msg, msglen, "cannot switch to WAL mode: %s",
                         rc != SQLITE_OK ? sqlite3_errmsg(c->db) : mode);
            }
            sq_disconnect(c);
            return rc != SQLITE_OK ? rc : SQLITE_ERROR;
        }
        rc = run_sql(c->db, "PRAGMA synchronous = NORMAL;"
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
        sq_disconnect(c);
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
inspect(const struct store_cfg *cfg, struct kv_be *b, bool *fresh)
{
    sqlite3 *db = NULL;
    sqlite3_int64 n = 0;
    sqlite3_int64 appid = 0;
    char magic[32];
    int rc;

    rc = sqlite3_open_v2(b->db_path, &db,
                         SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        (void)sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1,
                                NULL);
        sqlite3_busy_handler(db, sq_busy,
                             (void *)(intptr_t)SQ_BUSY_MS_READER);
        rc = peek(db, "SELECT count(*), NULL FROM sqlite_master", &n, NULL,
                  0);
    }
    if (rc != SQLITE_OK) {
        store_rc_e src = sq_store_rc(rc);

        persist_err(cfg, "%s: %s%s", b->db_path,
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
                        b->db_path, (long long)appid);
            return STORE_ECORRUPT;
        }
        *fresh = true;
        return STORE_OK;
    }
    rc = peek(db, "SELECT format, magic FROM meta WHERE id = 1", &n, magic,
              sizeof(magic));
    if (rc != SQLITE_OK || strcmp(magic, SQ_MAGIC) != 0) {
        persist_err(cfg, "%s: an SQLite database that is not a stashd "
                    "store (%s); refusing to touch it", b->db_path,
                    rc == SQLITE_NOTFOUND ? "no meta row"
                    : rc != SQLITE_OK ? sqlite3_errmsg(db)
                                      : "wrong magic in meta");
        sqlite3_close(db);
        return (rc & 0xff) == SQLITE_BUSY ? STORE_EIO : STORE_ECORRUPT;
    }
    sqlite3_close(db);
    if (n != SQ_FORMAT) {
        persist_err(cfg, "%s: stashd store format %lld, this stashd "
                    "reads format %d; refusing to touch it", b->db_path,
                    (long long)n, SQ_FORMAT);
        return STORE_ECORRUPT;
    }
    *fresh = false;
    return STORE_OK;
}

/* Is there a database to look at, or something that is not ours? */
static store_rc_e
check_dir(const struct store_cfg *cfg, struct kv_be *b, bool *fresh)
{
    char path[4096];
    struct stat st;
    store_rc_e rc;

    snprintf(path, sizeof(path), "%s/%s", b->dir, SQ_LMDB_FILE);
    if (stat(path, &st) == 0) {
        persist_err(cfg, "%s: the directory holds an lmdb store (start "
                    "with --backend lmdb, or pick another --data-dir); the "
                    "sqlite backend will not mix with it", path);
        return STORE_ECORRUPT;
    }
    if (stat(b->db_path, &st) != 0) {
        if (errno == ENOENT) {
            *fresh = true;
            return STORE_OK;
        }
        persist_err(cfg, "%s: %s", b->db_path, strerror(errno));
        return STORE_EIO;
    }
    if (!S_ISREG(st.st_mode)) {
        persist_err(cfg, "%s: not a regular file; refusing to touch it",
                    b->db_path);
        return STORE_ECORRUPT;
    }
    snprintf(path, sizeof(path), "%s-journal", b->db_path);
    if (stat(path, &st) == 0 && st.st_size > 0) {
        /*
         * A rollback journal: only a store's creation uses one (before it
         * switches to WAL), so the creation never finished; SQLite rolls
         * it back on a writable open. Then look at what is left.
         */
        sqlite3 *db = NULL;

        if (sqlite3_open_v2(b->db_path, &db, SQLITE_OPEN_READWRITE |
                            SQLITE_OPEN_NOMUTEX, NULL) == SQLITE_OK) {
            (void)sqlite3_exec(db, "SELECT count(*) FROM sqlite_master",
                               NULL, NULL, NULL);
        }
        sqlite3_close(db);
        if (stat(b->db_path, &st) != 0) {
            persist_err(cfg, "%s: %s", b->db_path, strerror(errno));
            return STORE_EIO;
        }
    }
    rc = check_header(cfg, b->db_path, st.st_size);
    if (rc != STORE_OK) {
        return rc;
    }
    return inspect(cfg, b, fresh);
}

/* A new store: the schema and the meta row, in one synced transaction. */
static store_rc_e
create_schema(const struct store_cfg *cfg, struct kv_be *b)
{
    char sql[sizeof(schema_fmt) + 64];
    char msg[256] = "";
    int rc;

    snprintf(sql, sizeof(sql), schema_fmt, SQ_FORMAT, (unsigned)cfg->now,
             SQ_APP_ID, SQ_FORMAT);
    rc = run_sql(b->w.db, "PRAGMA synchronous = FULL", msg, sizeof(msg));
    if (rc == SQLITE_OK) {
        rc = run_sql(b->w.db, "BEGIN IMMEDIATE", msg, sizeof(msg));
    }
    if (rc == SQLITE_OK) {
        rc = run_sql(b->w.db, sql, msg, sizeof(msg));
        if (rc == SQLITE_OK) {
            rc = run_sql(b->w.db, "COMMIT", msg, sizeof(msg));
        }
        if (rc != SQLITE_OK && !sqlite3_get_autocommit(b->w.db)) {
            (void)run_sql(b->w.db, "ROLLBACK", NULL, 0);
        }
    }
    if (rc == SQLITE_OK) {
        rc = run_sql(b->w.db, "PRAGMA synchronous = NORMAL", msg,
                     sizeof(msg));
    }
    if (rc != SQLITE_OK) {
        persist_err(cfg, "%s: cannot create the store: %s", b->db_path,
                    msg);
        return sq_store_rc(rc) == STORE_ENOMEM ? STORE_ENOMEM
                                                   : STORE_EIO;
    }
    return STORE_OK;
}

/*
 * After a crash (clean = 0) the row's items and bytes are stale: count
 * them again, one pass over items (vlen: no value, no big row is read).
 */
static store_rc_e
recount(const struct store_cfg *cfg, struct kv_be *b, struct kv_meta *m)
{
    static const char sql[] = "SELECT count(*), coalesce(sum(length(key) + "
                              "vlen), 0) FROM items";
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(b->w.db, sql, -1, &st, NULL);

    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        m->items = (uint64_t)sqlite3_column_int64(st, 0);
        m->bytes = (uint64_t)sqlite3_column_int64(st, 1) +
                   KV_ITEM_OVERHEAD * m->items;
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_OK) {
        persist_err(cfg, "%s: cannot count the items: %s", b->db_path,
                    sqlite3_errmsg(b->w.db));
    }
    sqlite3_finalize(st);
    return sq_store_rc(rc);
}

/* Reads the meta row through the writer and checks the schema. */
static store_rc_e
load_meta(const struct store_cfg *cfg, struct kv_be *b, struct kv_meta *m)
{
    static const char sql[] = "SELECT flush_cas, flush_time, cas_max, "
                              "items, bytes, created, clean FROM meta "
                              "WHERE id = 1";
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(b->w.db, sql, -1, &st, NULL);
    bool clean;

    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
    }
    if (rc != SQLITE_ROW) {
        persist_err(cfg, "%s: unreadable meta row: %s; refusing to "
                    "touch it", b->db_path, sqlite3_errmsg(b->w.db));
        sqlite3_finalize(st);
        return (rc & 0xff) == SQLITE_BUSY ? STORE_EIO : STORE_ECORRUPT;
    }
    memset(m, 0, sizeof(*m));
    m->flush_cas = (uint64_t)sqlite3_column_int64(st, 0);
    m->flush_time = (uint32_t)sqlite3_column_int64(st, 1);
    m->cas_max = (uint64_t)sqlite3_column_int64(st, 2);
    m->items = (uint64_t)sqlite3_column_int64(st, 3);
    m->bytes = (uint64_t)sqlite3_column_int64(st, 4);
    m->created = (uint32_t)sqlite3_column_int64(st, 5);
    clean = sqlite3_column_int64(st, 6) != 0;
    sqlite3_finalize(st);
    /* Every statement there is, prepared on the writer (readers' too:
     * only the writer is sure to exist now): a wrong schema shows here. */
    for (int id = 0; id < SQ_NSQL; id++) {
        if (id != SQ_PAGES && id != SQ_FREEPAGES && id != SQ_RBEGIN &&
            sq_stmt(&b->w, (sq_sql_e)id) == NULL) {
            persist_err(cfg, "%s: not the stashd schema (%s); "
                        "refusing to use it", b->db_path,
                        sqlite3_errmsg(b->w.db));
            return STORE_ECORRUPT;
        }
    }
    return clean ? STORE_OK : recount(cfg, b, m);
}

/*
 * The writer's limits: the WAL starts over once it holds -m / 4 (4 to 64
 * MB; larger means fewer catch-up pauses under heavy writes, sq_maint.c),
 * journal_size_limit trims it to that when it does, and max_page_count
 * bounds the file as lmdb's map does (-m three times over plus headroom,
 * never below what the file already holds): past it a write gets
 * SQLITE_FULL, i.e. no room.
 */
static store_rc_e
set_limits(const struct store_cfg *cfg, struct kv_be *b)
{
    uint64_t mem = cfg->mem_limit != 0 ? cfg->mem_limit
                                        : 64ull * 1024 * 1024;
    char sql[160];
    char val[32];
    char msg[256] = "";
    uint64_t pages;
    uint64_t used;

    if (!query_text(b->w.db, "PRAGMA page_size", val, sizeof(val)) ||
        (b->page_size = (uint32_t)strtoul(val, NULL, 10)) == 0 ||
        !query_text(b->w.db, "PRAGMA page_count", val, sizeof(val))) {
        persist_err(cfg, "%s: %s", b->db_path, sqlite3_errmsg(b->w.db));
        return STORE_EIO;
    }
    used = strtoull(val, NULL, 10);
    pages = (mem * 3 + SQ_PAGE_HEADROOM) / b->page_size;
    if (pages < used + SQ_PAGE_HEADROOM / b->page_size) {
        pages = used + SQ_PAGE_HEADROOM / b->page_size;
    }
    if (pages > 1073741823ull) {
        pages = 1073741823ull;
    }
    b->wal_restart = (int64_t)(mem / 4);
    b->wal_restart = b->wal_restart < SQ_WAL_MIN ? SQ_WAL_MIN
                     : b->wal_restart > SQ_WAL_MAX ? SQ_WAL_MAX
                                                   : b->wal_restart;
    snprintf(sql, sizeof(sql), "PRAGMA journal_size_limit = %lld;"
             "PRAGMA max_page_count = %llu;", (long long)b->wal_restart,
             (unsigned long long)pages);
    if (run_sql(b->w.db, sql, msg, sizeof(msg)) != SQLITE_OK) {
        persist_err(cfg, "%s: %s", b->db_path, msg);
        return STORE_EIO;
    }
    return STORE_OK;
}

int
sq_sync(struct kv_be *b)
{
    if (b->wal_fd < 0) {
        return 0;
    }
    return fdatasync(b->wal_fd) == 0 ? 0 : errno;
}

int
sq_meta_put(struct kv_be *b, const struct kv_meta *m, bool clean)
{
    sqlite3_stmt *st = sq_stmt(&b->w, SQ_META);
    int rc;

    if (st == NULL) {
        return SQLITE_ERROR;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64)m->flush_cas);
    sqlite3_bind_int64(st, 2, m->flush_time);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)m->cas_max);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)m->items);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)m->bytes);
    sqlite3_bind_int(st, 6, clean ? 1 : 0);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_DONE) {
        atomic_fetch_add_explicit(&b->meta_writes, 1, memory_order_relaxed);
        return SQLITE_OK;
    }
    return rc;
}

/* Our own descriptor of the WAL (the syncer's) and of the directory. */
static store_rc_e
open_files(const struct store_cfg *cfg, struct kv_be *b, bool fresh)
{
    b->wal_fd = open(b->wal_path, O_RDONLY | O_CLOEXEC);
    if (b->wal_fd < 0) {
        persist_err(cfg, "%s: %s", b->wal_path, strerror(errno));
        return STORE_EIO;
    }
    b->dir_fd = open(b->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (b->dir_fd < 0) {
        persist_err(cfg, "%s: %s", b->dir, strerror(errno));
        return STORE_EIO;
    }
    /* The new files' names, and what the WAL holds, on disk now. */
    if (sq_sync(b) != 0 || (fresh && fsync(b->dir_fd) != 0)) {
        persist_err(cfg, "%s: cannot sync: %s", b->wal_path,
                    strerror(errno));
        return STORE_EIO;
    }
    return STORE_OK;
}

static void
sq_free(struct kv_be *b)
{
    if (b->w.db != NULL) {
        sq_disconnect(&b->w);
    }
    if (b->wal_fd >= 0) {
        close(b->wal_fd);
    }
    if (b->dir_fd >= 0) {
        (void)fsync(b->dir_fd);
        close(b->dir_fd);
    }
    free(b->scratch);
    free(b->wal_path);
    free(b->db_path);
    free(b->dir);
    free(b);
}

static void
sq_close(struct kv_be *b, const struct kv_meta *m, bool clean)
{
    /*
     * The exact counts and CAS for the next open, marked clean; made
     * durable whatever the mode; then the writer, the last connection,
     * checkpoints with NORMAL sync and removes the WAL.
     */
    if (clean && sq_begin(b) == KV_OK) {
        if (sq_meta_put(b, m, true) != SQLITE_OK ||
            run_sql(b->w.db, "COMMIT", NULL, 0) != SQLITE_OK) {
            sq_abort(b);
        }
    }
    (void)sq_sync(b);
    sq_free(b);
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

/* After each commit: how many frames the WAL holds (no checkpoint). */
static int
wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    struct kv_be *b = arg;

    (void)db;
    (void)name;
    b->wal_now = frames;
    return SQLITE_OK;
}

/*
 * SQLite's largest BLOB (and row) bounds an item: checked on a connection
 * of no file, before the store is touched (a refused open writes nothing).
 */
static store_rc_e
check_item_max(const struct store_cfg *cfg)
{
    uint32_t item_max = cfg->item_max != 0 ? cfg->item_max : 1024u * 1024u;
    sqlite3 *db = NULL;
    int max = 0;

    if (sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE, NULL) ==
        SQLITE_OK) {
        max = sqlite3_limit(db, SQLITE_LIMIT_LENGTH, -1);
    }
    sqlite3_close(db);
    if ((int64_t)item_max > max) {
        persist_err(cfg, "item size limit %u above SQLite's largest blob "
                    "(%d bytes)", item_max, max);
        return STORE_EINVAL;
    }
    return STORE_OK;
}

static store_rc_e
sq_open(const struct store_cfg *cfg, const char *dir,
        const struct kv_host *host, struct kv_be **out, struct kv_meta *m)
{
    struct kv_be *b = calloc(1, sizeof(*b));
    store_rc_e rc = STORE_ENOMEM;
    bool fresh = false;
    char msg[256] = "";

    *out = NULL;
    if (b == NULL) {
        return STORE_ENOMEM;
    }
    b->host = host;
    b->wal_fd = -1;
    b->dir_fd = -1;
    b->ckpt_behind = true;        /* a WAL left by a crash, say */
    b->dir = strdup(dir);
    b->db_path = b->dir != NULL ? path_join(dir, SQ_DB_FILE, "") : NULL;
    b->wal_path = b->dir != NULL ? path_join(dir, SQ_DB_FILE, SQ_WAL_SUFFIX)
                                 : NULL;
    if (b->wal_path == NULL) {
        goto fail;
    }
    if (sqlite3_threadsafe() == 0) {
        persist_err(cfg, "this libsqlite3 is built without thread "
                    "support (SQLITE_THREADSAFE=0)");
        rc = STORE_EINVAL;
        goto fail;
    }
    if ((rc = check_item_max(cfg)) != STORE_OK ||
        (rc = check_dir(cfg, b, &fresh)) != STORE_OK ||
        (rc = sq_wal_check(cfg, b)) != STORE_OK) {
        goto fail;
    }
    if (sq_connect(b, &b->w, true, fresh, msg, sizeof(msg)) != SQLITE_OK) {
        persist_err(cfg, "%s: %s", b->db_path, msg);
        rc = STORE_EIO;
        goto fail;
    }
    if ((fresh && (rc = create_schema(cfg, b)) != STORE_OK) ||
        (rc = load_meta(cfg, b, m)) != STORE_OK ||
        (rc = set_limits(cfg, b)) != STORE_OK ||
        (rc = open_files(cfg, b, fresh)) != STORE_OK) {
        goto fail;
    }
    if (fresh) {
        m->created = cfg->now;
    }
    b->ckpt_seq = host->seq(host->s);
    b->wal_cap = b->wal_restart;
    sq_boot_note(cfg, b->dir);
    sqlite3_wal_hook(b->w.db, wal_hook, b);
    *out = b;
    return STORE_OK;
fail:
    sq_free(b);
    return rc;
}

const struct kv_backend sq_backend = {
    .name = "sqlite",
    .file = SQ_DB_FILE,
    .none_sync_ms = 0,            /* the WAL's checksums cut a torn tail */
    .open = sq_open,
    .close = sq_close,
    .sync = sq_sync,
    .rd_open = sq_rd_open,
    .rd_close = sq_rd_close,
    .rd_get = sq_rd_get,
    .rd_end = sq_rd_end,
    .rd_idle = sq_rd_idle,
    .rd_scan = sq_rd_scan,
    .rd_expired = sq_rd_expired,
    .begin = sq_begin,
    .load = sq_load,
    .put = sq_put,
    .put_rec = sq_put_rec,
    .del = sq_del,
    .window = sq_window,
    .commit = sq_commit,
    .abort = sq_abort,
    .reclaim = sq_reclaim,
    .tick = sq_tick,
    .stats = sq_stats,
};

static store_rc_e
store_sqlite_open(const struct store_cfg *cfg, struct store **out)
{
    return kv_open(&sq_backend, cfg, out);
}

const struct store_ops store_sqlite_ops = KV_STORE_OPS("sqlite",
                                                       store_sqlite_open);
