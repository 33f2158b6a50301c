/*
 * Internals of the sqlite adapter, shared by its files and by nobody else:
 * the schema's names, the statement table, struct kv_be and struct kv_rd.
 * The adapter only stores and finds rows in one WAL-mode database;
 * memcached's rules are the engine's (storage/kv/). The writer connection
 * is used only by the write lead, never by two threads at once, so every
 * connection can be opened SQLITE_OPEN_NOMUTEX.
 */
#ifndef STASHD_STORAGE_SQ_H
#define STASHD_STORAGE_SQ_H

#include "storage/kv/kv.h"

#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Files in the data directory; SQLite adds stashd.db-wal and -shm. */
#define SQ_DB_FILE     "stashd.db"
#define SQ_WAL_SUFFIX  "-wal"
#define SQ_LMDB_FILE   "data.mdb"        /* an lmdb store: not ours */

#define SQ_MAGIC       "stashd"          /* meta.magic */
#define SQ_FORMAT      3                 /* 2: checksummed rows; 3: large
                                          * values in table big */
#define SQ_APP_ID      0x73746864        /* PRAGMA application_id: "sthd" */
#define SQ_PAGE_SIZE   4096              /* a new store's */

/*
 * Values longer than this live in table big, and their items row keeps
 * an empty value and the big row's id. Why: items is an index b-tree
 * (WITHOUT ROWID), whose interior cells hold whole records, and SQLite
 * reads a record that spills onto overflow pages whole to compare it with
 * a key: one 1 MB row on a lookup's way down cost 1.9 ms. A record never
 * spills when it fits the page's largest local payload, for an index
 * b-tree (usable - 12) * 64 / 255 - 23 = 1002 bytes with 4 KB pages. The
 * largest items record with an inline value is SQ_ROW_MAX (below): a
 * 14-byte header (its size, two 2-byte blob types, nine 1-byte integer
 * types), a 250-byte key, the value, and at most 55 bytes of integers
 * (flags, exptime, stored, atime and vlen 6 each, cas, sum and big_id 8
 * each, fetched 1). 512 keeps that at 831, and a power of two that a
 * reader of the schema can remember.
 */
#define SQ_INLINE_MAX  512u
#define SQ_ROW_MAX     (14u + STORE_KEY_MAX + SQ_INLINE_MAX + 55u)
#define SQ_LOCAL_MAX(page) (((page) - 12u) * 64u / 255u - 23u)
_Static_assert(SQ_ROW_MAX <= SQ_LOCAL_MAX(SQ_PAGE_SIZE),
               "an items row with an inline value must not spill");

/* The maintenance thread's checkpoint round (ms) when something changed. */
#define SQ_CKPT_MS     250u

/*
 * Every statement the adapter runs, prepared once per connection on first
 * use (sq_stmt) and reset after each use, so no request parses SQL.
 * Columns 0-6 of an items row are always cas, flags, exptime, stored,
 * atime, fetched, sum (sq_rec); with its value, 7-9 are value, big_id,
 * vlen (sq_rec.c's row_value), without (SQ_LOAD) 7-8 vlen, big_id.
 */
typedef enum sq_sql {
    SQ_GET = 0,       /* reader: a row by key, with its value */
    SQ_GETBIG,        /* a big row's key and value: after SQ_GET/LOADV */
    SQ_ORPHANS,       /* reader (maint): a slice of big rows, orphan or not */
    SQ_EXPIRED,       /* reader (maint): expired rows, by the index */
    SQ_SCAN,          /* a slice in key order from ?1 */
    SQ_SCAN0,         /* the first slice */
    SQ_PAGES,         /* reader (stats) */
    SQ_FREEPAGES,     /* reader (stats) */
    SQ_RBEGIN,        /* reader: a snapshot over several gets */
    SQ_BEGIN,         /* writer */
    SQ_COMMIT,        /* writer, and a reader ending its snapshot */
    SQ_ROLLBACK,      /* writer, and a reader whose COMMIT failed */
    SQ_LOAD,          /* writer: a row and its value's length */
    SQ_LOADV,         /* writer: the same with the value */
    SQ_PUT,
    SQ_PUTREC,        /* writer: a row's columns but the value */
    SQ_OLDBIG,        /* writer: the big row a key's value is in */
    SQ_BIGADD,        /* writer: a new big row */
    SQ_BIGSET,        /* writer: a key's big row's new value */
    SQ_BIGDEL,        /* writer: a big row, if it is the key's */
    SQ_BIGDROP,       /* writer: a key's big row, before its items row */
    SQ_DEL,
    SQ_ORPHANDEL,     /* writer: a big row no items row names */
    SQ_META,
    SQ_NSQL
} sq_sql_e;

/* A connection and its prepared statements. */
struct sq_conn {
    sqlite3      *db;
    sqlite3_stmt *st[SQ_NSQL];
};

/* The sqlite adapter's open store. */
struct kv_be {
    /* ro after open */
    char                 *dir;
    char                 *db_path;
    char                 *wal_path;
    const struct kv_host *host;
    int                   wal_fd;      /* our descriptor of the WAL: fsync */
    int                   dir_fd;
    uint32_t              page_size;
    int64_t               wal_restart; /* WAL bytes that call for catch-up */

    /* The writer: the write lead's only. */
    struct sq_conn        w;
    bool                  wopen;       /* a load left a value stepped */
    /* What the last load found of its key's big row, for a put of that
     * key right after it (the engine's load + put) to skip a search. */
    bool                  memo;        /* valid: no put or del since */
    bool                  memo_has;    /* the row names a big row */
    int64_t               memo_id;
    size_t                memo_klen;
    unsigned char         memo_key[STORE_KEY_MAX];
    int                   wal_now;     /* frames in the WAL (its hook) */
    int                   wal_seen;    /* ... when the disk was looked at */
    int64_t               wal_cap;     /* WAL bytes the disk allows now */
    unsigned char        *scratch;     /* a value put in two pieces */
    size_t                scratch_cap;

    /* The maintenance thread's only: the checkpoint policy, and where
     * the search for orphaned big rows is. */
    uint64_t              ckpt_seq;    /* seq at the last checkpoint */
    bool                  ckpt_behind; /* it left frames uncopied */
    int64_t               orphan_hand; /* big ids up to it were looked at */
    uint64_t              orphan_at;   /* monotonic usec of the last look */

    _Atomic uint64_t      checkpoints;
    _Atomic uint64_t      ckpt_restarts;
    _Atomic uint64_t      wal_frames;
    _Atomic uint64_t      ckpt_usec;
    _Atomic uint64_t      meta_writes;
    _Atomic uint64_t      orphans;     /* big rows removed as orphans */
    _Atomic uint32_t      last_ckpt;
};

/* A reader: a connection whose read snapshot may span several gets. */
struct kv_rd {
    struct kv_be   *b;
    struct sq_conn  c;
    bool            snap;       /* a read transaction is open */
    uint64_t        snap_seq;   /* the commit seq when it began */
};

/* The adapter (sq_open.c fills the table). */
extern const struct kv_backend sq_backend;

/* An SQLite result code as a kv_err_e; b (may be NULL) tells a full disk
 * from the store's own page limit. */
kv_err_e sq_err(const struct kv_be *b, int rc);

/*
 * Opens a connection to b's database with our per-connection settings;
 * writer or reader. On failure *msg (may be NULL) gets SQLite's words.
 */
int sq_connect(struct kv_be *b, struct sq_conn *c, bool writer, bool create,
               char *msg, size_t msglen);

/* Finalizes c's statements and closes it; a closed c is a no-op. */
void sq_disconnect(struct sq_conn *c);

/* Statement id of c, prepared on first use; NULL on failure. */
sqlite3_stmt *sq_stmt(struct sq_conn *c, sq_sql_e id);

/* Decodes columns 0-6 at i (cas ... sum) into r. */
void sq_rec(sqlite3_stmt *st, int i, struct kv_rec *r);

/* Binds a key or value as a BLOB (never NULL, never TEXT); SQLITE_OK. */
static inline int
sq_bind_blob(sqlite3_stmt *st, int i, const void *p, size_t n)
{
    return sqlite3_bind_blob64(st, i, n > 0 ? p : "", (sqlite3_uint64)n,
                               SQLITE_STATIC);
}

/*
 * Busy handler of every connection: short sleeps first (our own readers
 * and checkpoints hold locks for microseconds), then 1 ms ones, until the
 * connection's budget (ms, in arg) is spent; then the call fails BUSY.
 */
int sq_busy(void *arg, int tries);

/* Writes m as the meta row on the writer (inside its transaction). */
int sq_meta_put(struct kv_be *b, const struct kv_meta *m, bool clean);

/* fdatasync of the WAL now; 0 or an errno. The syncer's hook. */
int sq_sync(struct kv_be *b);

/* The adapter's record operations (sq_rec.c), for the table. */
kv_err_e sq_rd_open(struct kv_be *b, struct kv_rd **out);
void sq_rd_close(struct kv_rd *r);
kv_err_e sq_rd_get(struct kv_rd *r, uint64_t seq, const void *key,
                   size_t klen, struct kv_view *v);
void sq_rd_end(struct kv_rd *r);
void sq_rd_idle(struct kv_rd *r);
kv_err_e sq_rd_scan(struct kv_rd *r, const void *from, size_t flen,
                    unsigned limit, kv_scan_fn fn, void *arg);
kv_err_e sq_rd_expired(struct kv_rd *r, uint32_t now, unsigned limit,
                       kv_scan_fn fn, void *arg);
kv_err_e sq_begin(struct kv_be *b);
kv_err_e sq_load(struct kv_be *b, const void *key, size_t klen,
                 bool with_value, struct kv_view *v);
kv_err_e sq_put(struct kv_be *b, const void *key, size_t klen,
                const struct kv_rec *r, const void *a, size_t na,
                const void *c, size_t nc);
kv_err_e sq_put_rec(struct kv_be *b, const void *key, size_t klen,
                    const struct kv_rec *r);
kv_err_e sq_del(struct kv_be *b, const void *key, size_t klen);
kv_err_e sq_window(struct kv_be *b, const void *from, size_t flen,
                   unsigned limit, kv_scan_fn fn, void *arg);
kv_err_e sq_commit(struct kv_be *b, const struct kv_meta *m, bool meta_due);
void sq_abort(struct kv_be *b);

/*
 * Before SQLite opens the database: refuses a WAL whose damage would make
 * SQLite drop committed frames silently (sq_wal.c); logs what a crash
 * left incomplete.
 */
store_rc_e sq_wal_check(const struct store_cfg *cfg, struct kv_be *b);

/* After a successful open: the boot id sq_wal_check compares with. */
void sq_boot_note(const struct store_cfg *cfg, const char *dir);

/* The maintenance round: checkpoints (sq_maint.c). */
void sq_tick(struct kv_be *b, struct kv_rd *r);

/* Copies the WAL into the database and truncates it: the disk is full. */
kv_err_e sq_reclaim(struct kv_be *b);

/* Resets what the writer's last load left stepped (its value's buffer). */
void sq_settle(struct kv_be *b);

/*
 * Removes the big rows of ids[0, n) that no items row names (re-checked
 * in its own write transaction); the write lead's. How many went, or -1.
 */
int sq_orphans_drop(struct kv_be *b, const int64_t *ids, unsigned n);

/* The "stats" lines of the adapter (sq_stats.c). */
void sq_stats(struct kv_be *b, struct kv_rd *r, store_emit_fn emit,
              void *arg);

#endif /* STASHD_STORAGE_SQ_H */
