/*
 * Crash images for the power-loss rig: from a recorded log (powerloss_rec.h)
 * it builds the files of the data directory as a power loss at record P
 * would leave them. Per file, every write before the entry of the last sync
 * barrier of that file that returned before P is durable; every later write
 * before P is kept, dropped or torn (a random subset of its 512-byte
 * sectors, aligned to file offsets), applied in log order, so the disk may
 * persist them in any order. Writes on O_SYNC/O_DSYNC fds, creations and
 * unlinks are durable at once. A "kill -9" image keeps every write before
 * P. The durable part of each file is kept in memory and only moves
 * forward, so crash points must be asked for in ascending order.
 */
#ifndef STASHD_TESTS_POWERLOSS_IMG_H
#define STASHD_TESTS_POWERLOSS_IMG_H

#include "tests/powerloss_rec.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PL_SECTOR 512u
#define PL_NEVER  UINT64_MAX

/* A small fast PRNG (splitmix64), so a seed replays the same images. */
struct pl_rng {
    uint64_t s;
};

uint64_t pl_rng_next(struct pl_rng *r);
/* Uniform in [0, n); n > 0. */
uint64_t pl_rng_below(struct pl_rng *r, uint64_t n);
/* Uniform in [0, 1). */
double pl_rng_unit(struct pl_rng *r);

/* One completed sync barrier of a file: the records of its entry/return. */
struct pl_barrier {
    uint64_t in;
    uint64_t out;
};

/* What the log says about one file. */
struct pl_mfile {
    uint64_t          *ops;      /* WRITE/TRUNC/UNLINK/CREATE record idx */
    size_t             nops;
    struct pl_barrier *by_out;   /* good barriers, ascending out */
    uint64_t          *in_max;   /* in_max[i] = max in of by_out[0..i] */
    struct pl_barrier *by_in;    /* the same, ascending in */
    uint64_t          *out_min;  /* out_min[i] = min out of by_in[i..] */
    size_t             nbar;
};

/* The log, indexed for image building. */
struct pl_model {
    const struct pl_log *log;
    uint64_t             nrec;
    uint32_t             nfiles;
    struct pl_mfile      f[PL_MAXFILES];
    struct pl_mfile      any;    /* barriers of every file (no ops) */
};

/* Indexes log's first nrec records; false when out of memory. */
bool pl_model_init(struct pl_model *m, const struct pl_log *log,
                   uint64_t nrec);
void pl_model_deinit(struct pl_model *m);

/*
 * The durable horizon of file f at crash point P: writes with a record
 * index below it were covered by a barrier that returned before P.
 */
uint64_t pl_model_horizon(const struct pl_model *m, uint32_t f, uint64_t p);

/*
 * The first record index Q such that a barrier on file f (f == PL_MAXFILES:
 * any file) entered after record `after` has returned before Q; PL_NEVER
 * when there is none.
 */
uint64_t pl_model_covered_from(const struct pl_model *m, uint32_t f,
                               uint64_t after);

/* One file's bytes in an image or in a durable base. */
struct pl_buf {
    uint8_t *p;
    size_t   len;
    size_t   cap;
    bool     exists;
};

/* Every file of a directory, and for a base how far each is applied. */
struct pl_dir {
    struct pl_buf f[PL_MAXFILES];
    uint64_t      upto[PL_MAXFILES];  /* records below applied (base) */
    size_t        next[PL_MAXFILES];  /* index into model ops (base) */
};

void pl_dir_init(struct pl_dir *d);
void pl_dir_deinit(struct pl_dir *d);

/* Pending writes in an order: each on its own, or a cut in log order. */
typedef enum pl_order {
    PL_ORDER_NONE = 0,  /* each kept, torn or dropped independently */
    PL_ORDER_PREFIX,    /* written back oldest first: those before a cut */
    PL_ORDER_SUFFIX     /* newest first: those after a cut */
} pl_order_e;

/* How the pending writes of one image fare. */
struct pl_fate {
    double     keep;    /* kept whole */
    double     torn;    /* torn; the rest is dropped */
    pl_order_e order;   /* else: the write at the cut is torn */
};

/* What an image did with its pending writes. */
struct pl_imgstat {
    uint64_t pending;   /* writes and truncates not yet durable */
    uint64_t kept;
    uint64_t torn;
    uint64_t dropped;
    uint8_t *fate_of;   /* in, may be NULL: gets a pl_fate_e per record */
};

/* What became of one record in an image (for a dump of a failure). */
typedef enum pl_fate_kind {
    PL_FATE_NONE = 0,   /* not a file op, or at/after the crash point */
    PL_FATE_DURABLE,    /* synced, O_SYNC, or a creation/unlink */
    PL_FATE_KEPT,
    PL_FATE_TORN,
    PL_FATE_DROPPED
} pl_fate_e;

/*
 * Builds in out the power-loss image at p under fate, moving base (the
 * durable files) forward to p's horizons first. kill9: every write before
 * p kept (base is then moved to p itself). Points must ascend per base.
 * With st->fate_of set (m->nrec bytes) it says what became of each record.
 */
bool pl_image(const struct pl_model *m, struct pl_dir *base, uint64_t p,
              bool kill9, const struct pl_fate *fate, struct pl_rng *rng,
              struct pl_dir *out, struct pl_imgstat *st);

/*
 * Writes a text dump of the records before p (with their fates when given)
 * to path, for reading a failure; false when it cannot.
 */
bool pl_dump(const struct pl_model *m, uint64_t p, const uint8_t *fate_of,
             const char *path);

/* Writes the existing files of d into dir (which exists and is empty). */
bool pl_dir_write(const struct pl_model *m, const struct pl_dir *d,
                  const char *dir);

#endif /* STASHD_TESTS_POWERLOSS_IMG_H */
