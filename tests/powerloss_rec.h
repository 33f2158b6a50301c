/*
 * The power-loss rig's recorder: the test executable defines write, pwrite,
 * pwritev, writev, ftruncate, fsync, fdatasync, msync, unlink and rename
 * (and their 64-bit twins) itself, so the calls that liblmdb, libsqlite3 and
 * the storage layer make land here first (symbols of the executable
 * interpose over libc; no LD_PRELOAD, which would break ASan's link order;
 * close is wrapped too, to forget what an fd was)
 * and go on to the real ones through dlsym(RTLD_NEXT). While recording is
 * on, every modifying call on a file of one data directory is appended to a
 * log in shared memory with its bytes, and the workload appends its own
 * issue/ack markers under the same lock, so the log's order is a
 * happened-before order. The log lives in a MAP_SHARED mapping made before
 * fork: the recording child _exits at a random moment and the parent reads
 * what it left. Lock files (lock.mdb, stashd.lock, *-shm) are not recorded:
 * the backends rebuild them at open. Writes through shared mappings cannot
 * be seen; msync calls are only counted.
 */
#ifndef STASHD_TESTS_POWERLOSS_REC_H
#define STASHD_TESTS_POWERLOSS_REC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PL_MAXFILES 32
#define PL_NAMELEN  64

typedef enum pl_kind {
    PL_WRITE = 1,   /* file, off, len, data: bytes written at off */
    PL_TRUNC,       /* file, off: the new length */
    PL_SYNC_IN,     /* file: fsync/fdatasync entered */
    PL_SYNC_OUT,    /* file, off: index of its SYNC_IN; flags: failed */
    PL_UNLINK,      /* file: removed (or renamed away) */
    PL_CREATE,      /* file: first seen; exists from here on */
    PL_ISSUE,       /* workload: op (file = op kind, off = key, len = ver) */
    PL_ACK          /* workload: the op returned; data = its store_rc */
} pl_kind_e;

#define PL_F_DURABLE 0x01u   /* WRITE on an O_SYNC/O_DSYNC fd */
#define PL_F_FAILED  0x02u   /* SYNC_OUT: the sync returned an error */

struct pl_rec {
    uint8_t  kind;           /* pl_kind_e */
    uint8_t  file;           /* file index; ISSUE/ACK: the op's kind */
    uint8_t  flags;
    uint8_t  thr;            /* pl_rec_thread tag of the caller, 0 = other */
    uint32_t len;
    uint64_t off;
    uint64_t data;           /* offset of the bytes in the data arena */
};

/* What a recording left, in shared memory. */
struct pl_log {
    _Atomic uint64_t nrec;          /* published records */
    uint64_t         rec_cap;
    uint64_t         data_used;
    uint64_t         data_cap;
    uint32_t         nfiles;
    bool             overflow;      /* a cap was hit: recording stopped */
    uint64_t         msyncs;        /* msync calls seen (not modelled) */
    uint64_t         ignored;       /* writes to other files, not recorded */
    uint64_t         renames;       /* renames seen (modelled as unlink) */
    char             files[PL_MAXFILES][PL_NAMELEN]; /* names in the dir */
    struct pl_rec   *rec;           /* rec_cap entries */
    uint8_t         *data;          /* data_cap bytes */
};

/*
 * Maps the shared log (before fork): room for rec_cap records and data_cap
 * bytes of written data, reserved lazily. false when mmap fails.
 */
bool pl_rec_setup(size_t rec_cap, size_t data_cap);

/* Unmaps the log; recording must be off. */
void pl_rec_teardown(void);

/* The log (valid between setup and teardown). */
struct pl_log *pl_rec_log(void);

/* Empties the log and starts recording modifying calls on files in dir. */
void pl_rec_start(const char *dir);

/* Stops recording (any thread); returns the number of records. */
uint64_t pl_rec_stop(void);

/* True once the log is full (recording has stopped by itself). */
bool pl_rec_full(void);

/* Tags the calling thread's records with tag (1..255; 0 = untagged). */
void pl_rec_thread(uint8_t tag);

/*
 * Makes fsync, fdatasync and msync return success without syncing (this
 * process, from now on): a checker's scratch copy needs no durability,
 * and a real sync on a disk-backed /tmp costs more than the whole check.
 */
void pl_rec_nosync(void);

/* Appends a workload marker (PL_ISSUE or PL_ACK) in log order. */
void pl_rec_mark(pl_kind_e kind, uint8_t op, uint64_t key, uint32_t ver,
                 uint64_t aux);

#endif /* STASHD_TESTS_POWERLOSS_REC_H */
