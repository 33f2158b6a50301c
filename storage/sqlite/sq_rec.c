/*
 * The sqlite adapter's rows: readers (a connection per attached thread
 * whose read snapshot spans gets) and the writer (the write lead's
 * BEGIN IMMEDIATE ... COMMIT per batch, prepared statements only). A value
 * is handed out as SQLite's column buffer, valid until its statement is
 * reset: by rd_end for a reader, by the writer's next call for the writer.
 *
 * A value longer than SQ_INLINE_MAX is in a row of table big, which also
 * names its key: the items row keeps an empty value, the big row's id and
 * the length. Both rows change in the same statement sequence of one
 * write transaction (put, del), so they never disagree but through
 * damage; a big row that is missing, another key's or of another length
 * than recorded makes the record KV_DAMAGED (a miss, removed), never
 * another item's value. A big row is only ever changed or deleted by its
 * own key, so a damaged items row cannot take another item's value with
 * it; what damage orphans, the maintenance thread finds (sq_maint.c).
 *
 * Read snapshots span gets: starting and ending a read transaction takes
 * and drops WAL and file locks (fcntl, and the VFS mutex the other
 * threads contend on), which per get was a quarter of the server's CPU. So
 * a thread's gets share one read transaction until a commit happens (the
 * engine's seq moves: the next get starts a fresh one, so every
 * acknowledged write is seen), the thread writes (the engine idles the
 * reader first: a write may wait on the writer, and a checkpoint holding
 * the writer may be waiting on our snapshot), or the worker goes idle
 * (ops->idle, before every poll), so no snapshot outlives a pass of the
 * event loop.
 */
#include "storage/sqlite/sq.h"

#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

/* Under this much free, SQLITE_FULL is the disk's. */
#define SQ_DISK_MIN (256u * 1024u)

kv_err_e
sq_err(const struct kv_be *b, int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return KV_OK;
    case SQLITE_FULL:
        /* max_page_count, or the disk: only the former wants evictions. */
        return b != NULL && kv_disk_full(b->dir, SQ_DISK_MIN) ? KV_NOSPC
                                                          : KV_FULL;
    case SQLITE_NOMEM:
        return KV_NOMEM;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return KV_CORRUPT;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return KV_BUSY;
    default:
        return KV_EIO;     /* IOERR, READONLY, ... */
    }
}

void
sq_rec(sqlite3_stmt *st, int i, struct kv_rec *r)
{
    r->cas = (uint64_t)sqlite3_column_int64(st, i);
    r->flags = (uint32_t)sqlite3_column_int64(st, i + 1);
    r->exptime = (uint32_t)sqlite3_column_int64(st, i + 2);
    r->stored = (uint32_t)sqlite3_column_int64(st, i + 3);
    r->atime = (uint32_t)sqlite3_column_int64(st, i + 4);
    r->iflags = sqlite3_column_int64(st, i + 5) != 0 ? KV_IF_FETCHED : 0;
    r->sum = (uint64_t)sqlite3_column_int64(st, i + 6);
}

/* ---------------------------------------------------------------- readers */

kv_err_e
sq_rd_open(struct kv_be *b, struct kv_rd **out)
{
    struct kv_rd *r = calloc(1, sizeof(*r));

    *out = NULL;
    if (r == NULL) {
        return KV_NOMEM;
    }
    r->b = b;
    if (sq_connect(b, &r->c, false, false, NULL, 0) != SQLITE_OK ||
        sq_stmt(&r->c, SQ_GET) == NULL || sq_stmt(&r->c, SQ_GETBIG) == NULL ||
        sq_stmt(&r->c, SQ_RBEGIN) == NULL ||
        sq_stmt(&r->c, SQ_COMMIT) == NULL ||
        sq_stmt(&r->c, SQ_ROLLBACK) == NULL) {
        sq_disconnect(&r->c);
        free(r);
        return KV_EIO;
    }
    *out = r;
    return KV_OK;
}

void
sq_rd_idle(struct kv_rd *r)
{
    sqlite3_stmt *st = r->c.st[SQ_COMMIT];

    if (!r->snap) {
        return;
    }
    r->snap = false;
    (void)sqlite3_step(st);
    sqlite3_reset(st);
    if (!sqlite3_get_autocommit(r->c.db)) {
        /* COMMIT of a read failed: never leave the snapshot held. */
        st = r->c.st[SQ_ROLLBACK];
        (void)sqlite3_step(st);
        sqlite3_reset(st);
    }
}

void
sq_rd_close(struct kv_rd *r)
{
    if (r == NULL) {
        return;
    }
    sq_rd_idle(r);
    sq_disconnect(&r->c);
    free(r);
}

/*
 * Makes sure the reader reads at a snapshot holding every commit up to
 * seq; on failure the get runs in its own implicit transaction.
 */
static void
snap_begin(struct kv_rd *r, uint64_t seq)
{
    sqlite3_stmt *st = r->c.st[SQ_RBEGIN];

    if (r->snap && r->snap_seq == seq) {
        return;
    }
    sq_rd_idle(r);
    /* A deferred BEGIN: the snapshot is taken by the next SELECT, so it
     * holds at least the commits up to seq. */
    if (sqlite3_step(st) == SQLITE_DONE) {
        r->snap = true;
        r->snap_seq = seq;
    }
    sqlite3_reset(st);
}

/*
 * The record st is on (SQ_GET or SQ_LOADV: cas ... sum, value, big_id,
 * vlen) into v, its value inline or read from big by big (SQ_GETBIG, left
 * stepped: the value lives in its buffer until it is reset). b (may be
 * NULL) as sq_err says.
 */
static kv_err_e
row_value(const struct kv_be *b, sqlite3_stmt *st, sqlite3_stmt *big,
          const void *key, size_t klen, struct kv_view *v)
{
    sqlite3_int64 vlen = sqlite3_column_int64(st, 9);
    int n;
    int rc;

    sq_rec(st, 0, &v->r);
    v->vlen = vlen > 0 ? (size_t)vlen : 0;
    if (sqlite3_column_type(st, 8) == SQLITE_NULL) {
        v->val = sqlite3_column_blob(st, 7);
        n = sqlite3_column_bytes(st, 7);
    } else {
        sqlite3_bind_int64(big, 1, sqlite3_column_int64(st, 8));
        rc = sqlite3_step(big);
        if (rc != SQLITE_ROW) {
            return rc == SQLITE_DONE ? KV_DAMAGED : sq_err(b, rc);
        }
        /* The key first: another item's row is damage, never its value. */
        n = sqlite3_column_bytes(big, 0);
        if ((size_t)n != klen ||
            (klen > 0 && memcmp(sqlite3_column_blob(big, 0), key, klen))) {
            return KV_DAMAGED;
        }
        v->val = sqlite3_column_blob(big, 1);
        n = sqlite3_column_bytes(big, 1);
    }
    /* A length other than recorded would throw the byte count off. */
    return (sqlite3_int64)n == vlen ? KV_OK : KV_DAMAGED;
}

kv_err_e
sq_rd_get(struct kv_rd *r, uint64_t seq, const void *key, size_t klen,
          struct kv_view *v)
{
    sqlite3_stmt *st = r->c.st[SQ_GET];   /* prepared at open */
    int rc;

    snap_begin(r, seq);
    sq_bind_blob(st, 1, key, klen);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        return rc == SQLITE_DONE ? KV_NOTFOUND : sq_err(NULL, rc);
    }
    return row_value(NULL, st, r->c.st[SQ_GETBIG], key, klen, v);
}

void
sq_rd_end(struct kv_rd *r)
{
    sqlite3_reset(r->c.st[SQ_GETBIG]);
    sqlite3_reset(r->c.st[SQ_GET]);
}

/*
 * Steps st (cas ... sum, key, vlen) through fn; resets it. The
 * SQLite result: SQLITE_DONE when it ran to the end or fn stopped it.
 */
static int
visit(sqlite3_stmt *st, kv_scan_fn fn, void *arg)
{
    int rc;

    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct kv_view v;

        memset(&v, 0, sizeof(v));
        sq_rec(st, 0, &v.r);
        v.vlen = (size_t)sqlite3_column_int64(st, 8);
        if (!fn(arg, sqlite3_column_blob(st, 7),
                (size_t)sqlite3_column_bytes(st, 7), &v)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_reset(st);
    return rc;
}

/* A key-order slice on connection c. */
static kv_err_e
scan(struct sq_conn *c, const void *from, size_t flen, unsigned limit,
     kv_scan_fn fn, void *arg)
{
    sqlite3_stmt *st = sq_stmt(c, flen > 0 ? SQ_SCAN : SQ_SCAN0);

    if (st == NULL) {
        return KV_EIO;
    }
    if (flen > 0) {
        sq_bind_blob(st, 1, from, flen);
    }
    sqlite3_bind_int(st, 2, (int)limit);
    return sq_err(NULL, visit(st, fn, arg));
}

kv_err_e
sq_rd_scan(struct kv_rd *r, const void *from, size_t flen, unsigned limit,
           kv_scan_fn fn, void *arg)
{
    return scan(&r->c, from, flen, limit, fn, arg);
}

kv_err_e
sq_rd_expired(struct kv_rd *r, uint32_t now, unsigned limit, kv_scan_fn fn,
              void *arg)
{
    sqlite3_stmt *st = sq_stmt(&r->c, SQ_EXPIRED);

    if (st == NULL) {
        return KV_EIO;
    }
    sqlite3_bind_int64(st, 1, now);
    sqlite3_bind_int(st, 2, (int)limit);
    return sq_err(NULL, visit(st, fn, arg));
}

/* ----------------------------------------------------------------- writer */

void
sq_settle(struct kv_be *b)
{
    if (b->wopen) {
        sqlite3_reset(b->w.st[SQ_GETBIG]);
        sqlite3_reset(b->w.st[SQ_LOADV]);
        b->wopen = false;
    }
}

/* Steps a statement without parameters once; the SQLite result code. */
static int
step_once(struct kv_be *b, sq_sql_e id)
{
    sqlite3_stmt *st = sq_stmt(&b->w, id);
    int rc;

    if (st == NULL) {
        return SQLITE_ERROR;
    }
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Steps st to its end and resets it; the SQLite result code. */
static int
run_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);

    sqlite3_reset(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

void
sq_abort(struct kv_be *b)
{
    sq_settle(b);
    b->memo = false;
    if (!sqlite3_get_autocommit(b->w.db)) {
        (void)step_once(b, SQ_ROLLBACK);
    }
}

kv_err_e
sq_begin(struct kv_be *b)
{
    int rc;

    sq_settle(b);
    b->memo = false;
    rc = step_once(b, SQ_BEGIN);
    if (rc != SQLITE_OK) {
        sq_abort(b);
    }
    return sq_err(b, rc);
}

/* Notes what a load found of key's big row (b->memo). */
static void
memo_note(struct kv_be *b, const void *key, size_t klen, bool has,
          sqlite3_int64 id)
{
    b->memo = klen <= sizeof(b->memo_key);
    if (b->memo) {
        memcpy(b->memo_key, key, klen);
        b->memo_klen = klen;
        b->memo_has = has;
        b->memo_id = id;
    }
}

kv_err_e
sq_load(struct kv_be *b, const void *key, size_t klen, bool with_value,
        struct kv_view *v)
{
    sqlite3_stmt *st;
    sqlite3_stmt *big = NULL;
    sqlite3_int64 vlen;
    int rc;

    sq_settle(b);
    st = sq_stmt(&b->w, with_value ? SQ_LOADV : SQ_LOAD);
    if (st == NULL ||
        (with_value && (big = sq_stmt(&b->w, SQ_GETBIG)) == NULL)) {
        return KV_EIO;
    }
    sq_bind_blob(st, 1, key, klen);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(st);
        if (rc == SQLITE_DONE) {
            memo_note(b, key, klen, false, 0);
        }
        return rc == SQLITE_DONE ? KV_NOTFOUND : sq_err(b, rc);
    }
    memset(v, 0, sizeof(*v));
    memo_note(b, key, klen, sqlite3_column_type(st, 8) != SQLITE_NULL,
              sqlite3_column_int64(st, 8));
    if (with_value) {
        b->wopen = true;         /* the value lives until the next call */
        return row_value(b, st, big, key, klen, v);
    }
    sq_rec(st, 0, &v->r);
    vlen = sqlite3_column_int64(st, 7);
    v->vlen = vlen > 0 ? (size_t)vlen : 0;
    sqlite3_reset(st);
    return KV_OK;
}

/* Binds r's columns from index i on (flags, exptime, cas, stored, atime,
 * fetched, sum). */
static void
bind_rec(sqlite3_stmt *st, int i, const struct kv_rec *r)
{
    sqlite3_bind_int64(st, i, r->flags);
    sqlite3_bind_int64(st, i + 1, r->exptime);
    sqlite3_bind_int64(st, i + 2, (sqlite3_int64)r->cas);
    sqlite3_bind_int64(st, i + 3, r->stored);
    sqlite3_bind_int64(st, i + 4, r->atime);
    sqlite3_bind_int(st, i + 5, (r->iflags & KV_IF_FETCHED) ? 1 : 0);
    sqlite3_bind_int64(st, i + 6, (sqlite3_int64)r->sum);
}

/* Binds a big row's id and its key (?1, ?2) to statement id. */
static sqlite3_stmt *
big_stmt(struct kv_be *b, sq_sql_e id, sqlite3_int64 big, const void *key,
         size_t klen)
{
    sqlite3_stmt *st = sq_stmt(&b->w, id);

    if (st != NULL) {
        sqlite3_bind_int64(st, 1, big);
        sq_bind_blob(st, 2, key, klen);
    }
    return st;
}

/*
 * The id of the big row key's items row names, if any (*has): what the
 * load just before said, if it was of this key, else a search. An SQLite
 * result code.
 */
static int
old_big(struct kv_be *b, const void *key, size_t klen, sqlite3_int64 *id,
        bool *has)
{
    sqlite3_stmt *st = sq_stmt(&b->w, SQ_OLDBIG);
    int rc;

    *has = false;
    if (st == NULL) {
        return SQLITE_ERROR;
    }
    if (b->memo && b->memo_klen == klen &&
        memcmp(b->memo_key, key, klen) == 0) {
        *has = b->memo_has;
        *id = b->memo_id;
        return SQLITE_OK;
    }
    sq_bind_blob(st, 1, key, klen);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
        *id = sqlite3_column_int64(st, 0);
        *has = true;
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/*
 * Writes a large value for key: into the key's old big row (has, id)
 * when it is one, else a new row; *id gets the row's id. An SQLite code.
 */
static int
big_write(struct kv_be *b, const void *key, size_t klen, const void *v,
          size_t vlen, bool has, sqlite3_int64 *id)
{
    sqlite3_stmt *st;
    int rc;

    if (has) {
        /* Rewriting the row saves deleting one and adding another. */
        st = big_stmt(b, SQ_BIGSET, *id, key, klen);
        if (st == NULL) {
            return SQLITE_ERROR;
        }
        sq_bind_blob(st, 3, v, vlen);
        rc = run_done(st);
        if (rc != SQLITE_OK || sqlite3_changes(b->w.db) == 1) {
            return rc;
        }
    }
    st = sq_stmt(&b->w, SQ_BIGADD);
    if (st == NULL) {
        return SQLITE_ERROR;
    }
    sq_bind_blob(st, 1, key, klen);
    sq_bind_blob(st, 2, v, vlen);
    rc = run_done(st);
    *id = sqlite3_last_insert_rowid(b->w.db);
    return rc;
}

kv_err_e
sq_put(struct kv_be *b, const void *key, size_t klen, const struct kv_rec *r,
       const void *a, size_t na, const void *c, size_t nc)
{
    sqlite3_stmt *st;
    const void *v = na > 0 ? a : c;
    size_t vlen = na + nc;
    bool large = vlen > SQ_INLINE_MAX;
    sqlite3_int64 id = 0;
    bool has;
    int rc;

    sq_settle(b);
    st = sq_stmt(&b->w, SQ_PUT);
    if (st == NULL) {
        return KV_EIO;
    }
    if (na > 0 && nc > 0) {
        /* One blob for SQLite: the two pieces joined. */
        if (!kv_grow(&b->scratch, &b->scratch_cap, vlen)) {
            return KV_NOMEM;
        }
        memcpy(b->scratch, a, na);
        memcpy(b->scratch + na, c, nc);
        v = b->scratch;
    }
    /* A failure part-way is undone by the engine's abort (kv.h). */
    rc = old_big(b, key, klen, &id, &has);
    b->memo = false;
    if (rc == SQLITE_OK && large) {
        rc = big_write(b, key, klen, v, vlen, has, &id);
    } else if (rc == SQLITE_OK && has) {
        sqlite3_stmt *del = big_stmt(b, SQ_BIGDEL, id, key, klen);

        rc = del != NULL ? run_done(del) : SQLITE_ERROR;
    }
    if (rc != SQLITE_OK) {
        return sq_err(b, rc);
    }
    sq_bind_blob(st, 1, key, klen);
    sq_bind_blob(st, 2, v, large ? 0 : vlen);
    bind_rec(st, 3, r);
    if (large) {
        sqlite3_bind_int64(st, 10, id);
    } else {
        sqlite3_bind_null(st, 10);
    }
    sqlite3_bind_int64(st, 11, (sqlite3_int64)vlen);
    return sq_err(b, run_done(st));
}

kv_err_e
sq_put_rec(struct kv_be *b, const void *key, size_t klen,
           const struct kv_rec *r)
{
    sqlite3_stmt *st;
    kv_err_e e;

    sq_settle(b);
    st = sq_stmt(&b->w, SQ_PUTREC);
    if (st == NULL) {
        return KV_EIO;
    }
    sq_bind_blob(st, 1, key, klen);
    bind_rec(st, 2, r);
    e = sq_err(b, run_done(st));
    if (e == KV_OK && sqlite3_changes(b->w.db) == 0) {
        return KV_NOTFOUND;
    }
    return e;
}

kv_err_e
sq_del(struct kv_be *b, const void *key, size_t klen)
{
    sqlite3_stmt *st;
    kv_err_e e;

    sq_settle(b);
    b->memo = false;
    st = sq_stmt(&b->w, SQ_BIGDROP);
    if (st == NULL) {
        return KV_EIO;
    }
    /* The big row first: it is found through the items row. */
    sq_bind_blob(st, 1, key, klen);
    e = sq_err(b, run_done(st));
    if (e != KV_OK) {
        return e;
    }
    st = sq_stmt(&b->w, SQ_DEL);
    if (st == NULL) {
        return KV_EIO;
    }
    sq_bind_blob(st, 1, key, klen);
    e = sq_err(b, run_done(st));
    if (e == KV_OK && sqlite3_changes(b->w.db) == 0) {
        return KV_NOTFOUND;
    }
    return e;
}

int
sq_orphans_drop(struct kv_be *b, const int64_t *ids, unsigned n)
{
    sqlite3_stmt *st = sq_stmt(&b->w, SQ_ORPHANDEL);
    int dropped = 0;

    if (st == NULL || sq_begin(b) != KV_OK) {
        return -1;
    }
    for (unsigned i = 0; i < n; i++) {
        sqlite3_bind_int64(st, 1, ids[i]);
        if (run_done(st) != SQLITE_OK) {
            sq_abort(b);
            return -1;
        }
        dropped += sqlite3_changes(b->w.db);
    }
    if (step_once(b, SQ_COMMIT) != SQLITE_OK) {
        sq_abort(b);
        return -1;
    }
    return dropped;
}

kv_err_e
sq_window(struct kv_be *b, const void *from, size_t flen, unsigned limit,
          kv_scan_fn fn, void *arg)
{
    sq_settle(b);
    return scan(&b->w, from, flen, limit, fn, arg);
}

/*
 * Keeps the WAL within what the disk can take. A WAL may only be copied
 * into the database if the database can grow by as much, so on a nearly
 * full disk a WAL allowed to reach wal_restart would hold the room the
 * copy needs, and nothing could be written again. So the disk is looked
 * at every megabyte of WAL, and with less than twice wal_restart free the
 * WAL is copied and truncated as soon as it holds a quarter of what is
 * free: the data lands in the database, where deletes make room.
 */
static void
wal_guard(struct kv_be *b)
{
    int64_t frame = (int64_t)b->page_size + 24;
    int64_t bytes = (int64_t)b->wal_now * frame;
    struct statvfs sv;

    if (bytes - (int64_t)b->wal_seen * frame >= 1024 * 1024 ||
        b->wal_now < b->wal_seen) {
        b->wal_seen = b->wal_now;
        b->wal_cap = b->wal_restart;
        if (statvfs(b->dir, &sv) == 0) {
            int64_t free = (int64_t)sv.f_bavail * (int64_t)sv.f_frsize;

            if (free < 2 * b->wal_restart) {
                b->wal_cap = free / 4 > 64 * 1024 ? free / 4 : 64 * 1024;
            }
        }
    }
    if (b->wal_cap < b->wal_restart && bytes > b->wal_cap) {
        (void)sq_reclaim(b);
        b->wal_seen = b->wal_now = 0;
    }
}

kv_err_e
sq_commit(struct kv_be *b, const struct kv_meta *m, bool meta_due)
{
    int rc = SQLITE_OK;

    sq_settle(b);
    /*
     * The meta row only when it is due (a flush, a new CAS lease, the
     * first commit, which marks the store in use): most commits write
     * just their rows' pages.
     */
    if (meta_due) {
        rc = sq_meta_put(b, m, false);
    }
    if (rc == SQLITE_OK) {
        rc = step_once(b, SQ_COMMIT);
    }
    if (rc != SQLITE_OK) {
        sq_abort(b);
        return sq_err(b, rc);
    }
    wal_guard(b);
    return KV_OK;
}
