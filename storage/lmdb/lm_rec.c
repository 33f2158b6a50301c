/*
 * The lmdb adapter's records: readers (one read transaction per attached
 * thread, MDB_NOTLS, renewed per call and reset after it, so no snapshot
 * outlives a call and readers never block the writer) and the writer (the
 * write lead's one write transaction per batch). A record is a 40-byte
 * little-endian header and the value, under the memcached key in the
 * named DB "stashd_items". Values are handed out as pointers into the map,
 * valid until the reader's rd_end or the writer's next call.
 */
#include "storage/lmdb/lm.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void
lm_rec_encode(unsigned char *p, const struct kv_rec *r)
{
    kv_put64(p, r->cas);
    kv_put32(p + 8, r->flags);
    kv_put32(p + 12, r->exptime);
    kv_put32(p + 16, r->stored);
    kv_put32(p + 20, r->atime);
    kv_put32(p + 24, r->iflags);
    kv_put32(p + 28, 0);
    kv_put64(p + 32, r->sum);
}

bool
lm_rec_decode(const MDB_val *data, struct kv_view *v, bool with_value)
{
    const unsigned char *p = data->mv_data;

    memset(v, 0, sizeof(*v));
    if (data->mv_size < LM_HDR) {
        /* Too short to be ours: a zeroed header, whose sum never holds. */
        return false;
    }
    v->r.cas = kv_get64(p);
    v->r.flags = kv_get32(p + 8);
    v->r.exptime = kv_get32(p + 12);
    v->r.stored = kv_get32(p + 16);
    v->r.atime = kv_get32(p + 20);
    v->r.iflags = kv_get32(p + 24);
    v->r.sum = kv_get64(p + 32);
    v->vlen = data->mv_size - LM_HDR;
    v->val = with_value ? p + LM_HDR : NULL;
    return true;
}

/* A commit writes whole pages: under a few of them free is full. */
#define LM_DISK_MIN (64u * 1024u)

kv_err_e
lm_err(struct kv_be *b, int mrc)
{
    switch (mrc) {
    case 0:
        return KV_OK;
    case MDB_NOTFOUND:
        return KV_NOTFOUND;
    case MDB_MAP_FULL:
        if (b != NULL) {
            atomic_fetch_add_explicit(&b->map_full, 1, memory_order_relaxed);
        }
        return KV_FULL;
    case ENOSPC:
    case EDQUOT:
        return KV_NOSPC;
    case MDB_TXN_FULL:
    case MDB_READERS_FULL:
    case ENOMEM:
        return KV_NOMEM;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
        return KV_CORRUPT;
    case EIO:
        /* LMDB reports a short write as EIO; on a full disk that is "no
         * room" for this write, not a broken store. */
        return b != NULL && kv_disk_full(b->dir, LM_DISK_MIN) ? KV_NOSPC
                                                          : KV_EIO;
    default:
        return KV_EIO;
    }
}

kv_err_e
lm_rd_open(struct kv_be *b, struct kv_rd **out)
{
    struct kv_rd *r = calloc(1, sizeof(*r));
    int rc;

    *out = NULL;
    if (r == NULL) {
        return KV_NOMEM;
    }
    r->b = b;
    rc = mdb_txn_begin(b->env, NULL, MDB_RDONLY, &r->txn);
    if (rc != 0) {
        free(r);
        return lm_err(b, rc);
    }
    mdb_txn_reset(r->txn);
    *out = r;
    return KV_OK;
}

void
lm_rd_close(struct kv_rd *r)
{
    if (r == NULL) {
        return;
    }
    mdb_txn_abort(r->txn);
    free(r);
}

kv_err_e
lm_rd_get(struct kv_rd *r, uint64_t seq, const void *key, size_t klen,
          struct kv_view *v)
{
    MDB_val k = { klen, (void *)key };
    MDB_val data;
    int rc;

    /* A renewed transaction sees every commit made before it. */
    (void)seq;
    rc = mdb_txn_renew(r->txn);
    if (rc != 0) {
        return lm_err(r->b, rc);
    }
    rc = mdb_get(r->txn, r->b->items, &k, &data);
    if (rc != 0) {
        return lm_err(r->b, rc);
    }
    (void)lm_rec_decode(&data, v, true);
    return KV_OK;
}

void
lm_rd_end(struct kv_rd *r)
{
    /* Resetting a transaction that was not renewed is harmless. */
    mdb_txn_reset(r->txn);
}

/* Visits up to limit records from `from` with a cursor of txn. */
static kv_err_e
scan(struct kv_be *b, MDB_txn *txn, const void *from, size_t flen,
     unsigned limit, kv_scan_fn fn, void *arg)
{
    MDB_cursor *cur;
    MDB_val key;
    MDB_val data;
    int rc = mdb_cursor_open(txn, b->items, &cur);

    if (rc != 0) {
        return lm_err(b, rc);
    }
    rc = MDB_NOTFOUND;
    if (flen > 0) {
        key.mv_size = flen;
        key.mv_data = (void *)from;
        rc = mdb_cursor_get(cur, &key, &data, MDB_SET_RANGE);
    } else {
        rc = mdb_cursor_get(cur, &key, &data, MDB_FIRST);
    }
    for (unsigned i = 0; rc == 0 && i < limit; i++) {
        struct kv_view v;

        (void)lm_rec_decode(&data, &v, false);
        if (!fn(arg, key.mv_data, key.mv_size, &v)) {
            break;
        }
        rc = mdb_cursor_get(cur, &key, &data, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? KV_OK : lm_err(b, rc);
}

kv_err_e
lm_rd_scan(struct kv_rd *r, const void *from, size_t flen, unsigned limit,
           kv_scan_fn fn, void *arg)
{
    kv_err_e e;
    int rc = mdb_txn_renew(r->txn);

    if (rc != 0) {
        return lm_err(r->b, rc);
    }
    e = scan(r->b, r->txn, from, flen, limit, fn, arg);
    mdb_txn_reset(r->txn);
    return e;
}

kv_err_e
lm_begin(struct kv_be *b)
{
    return lm_err(b, mdb_txn_begin(b->env, NULL, 0, &b->wtxn));
}

kv_err_e
lm_load(struct kv_be *b, const void *key, size_t klen, bool with_value,
        struct kv_view *v)
{
    MDB_val k = { klen, (void *)key };
    MDB_val data;
    int rc = mdb_get(b->wtxn, b->items, &k, &data);

    if (rc != 0) {
        return lm_err(b, rc);
    }
    (void)lm_rec_decode(&data, v, with_value);
    return KV_OK;
}

kv_err_e
lm_put(struct kv_be *b, const void *key, size_t klen, const struct kv_rec *r,
       const void *a, size_t na, const void *c, size_t nc)
{
    MDB_val k = { klen, (void *)key };
    MDB_val data = { LM_HDR + na + nc, NULL };
    unsigned char *p;
    int rc = mdb_put(b->wtxn, b->items, &k, &data, MDB_RESERVE);

    if (rc != 0) {
        return lm_err(b, rc);
    }
    p = data.mv_data;
    lm_rec_encode(p, r);
    if (na > 0) {
        memcpy(p + LM_HDR, a, na);
    }
    if (nc > 0) {
        memcpy(p + LM_HDR + na, c, nc);
    }
    return KV_OK;
}

kv_err_e
lm_put_rec(struct kv_be *b, const void *key, size_t klen,
           const struct kv_rec *r)
{
    MDB_val k = { klen, (void *)key };
    MDB_val data;
    size_t vlen;
    int rc = mdb_get(b->wtxn, b->items, &k, &data);

    if (rc != 0) {
        return lm_err(b, rc);
    }
    /* Copy-on-write moves the page anyway: keep the value, rewrite all. */
    vlen = data.mv_size > LM_HDR ? data.mv_size - LM_HDR : 0;
    if (!kv_grow(&b->scratch, &b->scratch_cap, vlen)) {
        return KV_NOMEM;
    }
    if (vlen > 0) {
        memcpy(b->scratch, (const unsigned char *)data.mv_data + LM_HDR,
               vlen);
    }
    return lm_put(b, key, klen, r, b->scratch, vlen, NULL, 0);
}

kv_err_e
lm_del(struct kv_be *b, const void *key, size_t klen)
{
    MDB_val k = { klen, (void *)key };

    return lm_err(b, mdb_del(b->wtxn, b->items, &k, NULL));
}

kv_err_e
lm_window(struct kv_be *b, const void *from, size_t flen, unsigned limit,
          kv_scan_fn fn, void *arg)
{
    return scan(b, b->wtxn, from, flen, limit, fn, arg);
}

kv_err_e
lm_commit(struct kv_be *b, const struct kv_meta *m, bool meta_due)
{
    int rc;

    /*
     * The metadata record in every commit, due or not: the main DB's page
     * is rewritten anyway (it holds the items DB's root), and so items,
     * bytes and the flush state on disk are always exact.
     */
    (void)meta_due;
    rc = lm_meta_put(b, b->wtxn, m);
    if (rc != 0) {
        mdb_txn_abort(b->wtxn);
        b->wtxn = NULL;
        return lm_err(b, rc);
    }
    rc = mdb_txn_commit(b->wtxn);
    b->wtxn = NULL;
    return lm_err(b, rc);
}

void
lm_abort(struct kv_be *b)
{
    if (b->wtxn != NULL) {
        mdb_txn_abort(b->wtxn);
        b->wtxn = NULL;
    }
}
