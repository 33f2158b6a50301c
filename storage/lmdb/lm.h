/*
 * Internals of the lmdb adapter, shared by its files and by nobody else:
 * the on-disk record, metadata and snapshot-file layouts, and struct kv_be
 * and struct kv_rd. The adapter only stores and finds records in one LMDB
 * environment; memcached's rules are the engine's (storage/kv/).
 */
#ifndef STASHD_STORAGE_LM_H
#define STASHD_STORAGE_LM_H

#include "storage/kv/kv.h"

#include <lmdb.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Files in the data directory. LMDB names data.mdb and lock.mdb itself. */
#define LM_DATA_FILE   "data.mdb"
#define LM_SNAP_FILE   "stashd.synced"   /* the last durable snapshot */
#define LM_SQLITE_FILE "stashd.db"       /* a sqlite store: not ours */
#define LM_CREATING_FILE "stashd.creating" /* a creation not yet durable */

/* Names inside the environment: a plain record and a named DB. */
#define LM_META_KEY    "stashd"
#define LM_ITEMS_DB    "stashd_items"

#define LM_MAGIC       "stashdLM"     /* 8 bytes, no NUL stored */
#define LM_FORMAT      2u             /* 2: checksummed records */
#define LM_META_SIZE   64u

/*
 * Record: cas u64, flags, exptime, stored, atime, iflags, spare u32,
 * sum u64 (little-endian), then the value.
 */
#define LM_HDR         40u

/*
 * What the snapshot file keeps of LMDB's meta page: its header and the
 * MDB_meta that follows it (data format 1, 64-bit), where the
 * transaction id sits at LM_META_TXNID. Checked against the library at
 * every open; when it does not hold, commits fall back to LMDB's own
 * ordered sync (MDB_NOMETASYNC).
 */
#define LM_SNAP_META   256u
#define LM_META_FLAGS  10u            /* u16 mp_flags: P_META is 0x08 */
#define LM_META_MAGIC  16u            /* u32 0xBEEFC0DE */
#define LM_META_VER    20u            /* u32 data format 1 */
#define LM_META_TXNID  144u           /* u64 */
#define LM_SNAP_SLOT   512u           /* two slots, one sector each */

/* The lmdb adapter's open store. */
struct kv_be {
    /* ro after open */
    MDB_env              *env;
    MDB_dbi               main_dbi;
    MDB_dbi               items;
    char                 *dir;
    char                 *data_path;
    char                 *snap_path;
    const struct kv_host *host;
    uint64_t              map_size;
    unsigned              psize;
    bool                  snapshots;  /* the pinned-snapshot scheme */
    char                  boot_id[48];
    unsigned char         undo[2 * LM_SNAP_META]; /* LMDB's metas before a
                                                   * restore */
    unsigned              undo_psize; /* 0: nothing restored to undo */

    /* The writer: the write lead's only. */
    MDB_txn              *wtxn;
    unsigned char        *scratch;    /* a value being rewritten */
    size_t                scratch_cap;

    /* The syncer's only (and open/close). */
    int                   data_fd;    /* reads LMDB's meta pages */
    int                   snap_fd;
    MDB_txn              *pin;        /* the last durable snapshot */
    uint64_t              snap_seq;   /* slots written */

    _Atomic uint64_t      map_full;
    _Atomic uint64_t      restored;   /* snapshots restored at open */
    _Atomic uint64_t      snap_txnid; /* the durable snapshot */
};

/* A reader: a read transaction, renewed per call and reset after it. */
struct kv_rd {
    struct kv_be *b;
    MDB_txn      *txn;
};

/* The adapter (lm_open.c fills the table). */
extern const struct kv_backend lm_backend;

/* An LMDB or system error as a kv_err_e; b may be NULL. */
kv_err_e lm_err(struct kv_be *b, int mrc);

/* Decodes a stored record; false when it is too short to be one. */
bool lm_rec_decode(const MDB_val *data, struct kv_view *v, bool with_value);

/* Encodes r into the LM_HDR bytes at p. */
void lm_rec_encode(unsigned char *p, const struct kv_rec *r);

/* The adapter's record operations (lm_rec.c), for the table. */
kv_err_e lm_rd_open(struct kv_be *b, struct kv_rd **out);
void lm_rd_close(struct kv_rd *r);
kv_err_e lm_rd_get(struct kv_rd *r, uint64_t seq, const void *key,
                   size_t klen, struct kv_view *v);
void lm_rd_end(struct kv_rd *r);
kv_err_e lm_rd_scan(struct kv_rd *r, const void *from, size_t flen,
                    unsigned limit, kv_scan_fn fn, void *arg);
kv_err_e lm_begin(struct kv_be *b);
kv_err_e lm_load(struct kv_be *b, const void *key, size_t klen,
                 bool with_value, struct kv_view *v);
kv_err_e lm_put(struct kv_be *b, const void *key, size_t klen,
                const struct kv_rec *r, const void *a, size_t na,
                const void *c, size_t nc);
kv_err_e lm_put_rec(struct kv_be *b, const void *key, size_t klen,
                    const struct kv_rec *r);
kv_err_e lm_del(struct kv_be *b, const void *key, size_t klen);
kv_err_e lm_window(struct kv_be *b, const void *from, size_t flen,
                   unsigned limit, kv_scan_fn fn, void *arg);
kv_err_e lm_commit(struct kv_be *b, const struct kv_meta *m, bool meta_due);
void lm_abort(struct kv_be *b);

/* Encodes / decodes the metadata record (LM_META_SIZE bytes). */
void lm_meta_encode(unsigned char *p, const struct kv_meta *m);
bool lm_meta_decode(const unsigned char *p, size_t len, struct kv_meta *m,
                    uint32_t *format);

/* Writes m as the metadata record in txn; an LMDB error code. */
int lm_meta_put(struct kv_be *b, MDB_txn *txn, const struct kv_meta *m);

/* The syncer's hook and the snapshot scheme (lm_sync.c). */
int lm_sync(struct kv_be *b);

/*
 * Before LMDB opens the file: when the machine restarted since the store
 * was last open and it was not closed cleanly, puts the last durable
 * snapshot back as LMDB's current state (the pages after it may never
 * have reached the disk). STORE_OK, or an error with cfg's message.
 */
store_rc_e lm_snap_restore(const struct store_cfg *cfg, struct kv_be *b);

/* Puts back the meta pages a restore replaced (the file was refused). */
void lm_snap_undo(struct kv_be *b);

/*
 * After LMDB opened the file: checks the meta page layout this scheme
 * relies on, then makes the current state the durable snapshot.
 */
store_rc_e lm_snap_start(const struct store_cfg *cfg, struct kv_be *b);

/* At close: the final snapshot, marked clean; releases the pin. */
void lm_snap_close(struct kv_be *b, bool clean);

/* The "stats" lines of the adapter (lm_stats.c). */
void lm_stats(struct kv_be *b, struct kv_rd *r, store_emit_fn emit,
              void *arg);

#endif /* STASHD_STORAGE_LM_H */
