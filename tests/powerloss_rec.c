/*
 * The recorder of the power-loss rig (see powerloss_rec.h). Every wrapper
 * below calls the real function and, only when recording is on and the fd
 * is a file of the recorded directory, appends what the call did.
 * A write is logged after it returned, with the bytes it really wrote
 * (write/writev: at the fd's position less what was written):
 * the caller only acts on a write (acknowledges a commit, syncs) after
 * that, so every write lands in the log before anything it caused. A sync
 * is logged twice, at entry and after return, and only what was logged
 * before its entry counts as covered by it. The lock serializes records
 * and the workload's markers, so the log order is a happened-before order.
 * Nothing here may allocate on the recording path (a wrapper can be called
 * from inside malloc-free code of a library), and errno is preserved.
 */
#include "tests/powerloss_rec.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define PL_MAXFD 4096

/* The real functions, found once through dlsym(RTLD_NEXT). */
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off64_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t (*real_pwritev64)(int, const struct iovec *, int, off64_t);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off64_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_msync)(void *, size_t, int);
static int (*real_unlink)(const char *);
static int (*real_rename)(const char *, const char *);
static int (*real_close)(int);

static pthread_once_t resolve_once = PTHREAD_ONCE_INIT;

/* dlsym returns an object pointer; POSIX guarantees it converts. */
static void *
sym(const char *name)
{
    void *p = dlsym(RTLD_NEXT, name);

    if (p == NULL) {
        abort();   /* without the real call nothing can work */
    }
    return p;
}

static void
resolve(void)
{
    *(void **)&real_write = sym("write");
    *(void **)&real_pwrite = sym("pwrite");
    *(void **)&real_pwrite64 = sym("pwrite64");
    *(void **)&real_writev = sym("writev");
    *(void **)&real_pwritev = sym("pwritev");
    *(void **)&real_pwritev64 = sym("pwritev64");
    *(void **)&real_ftruncate = sym("ftruncate");
    *(void **)&real_ftruncate64 = sym("ftruncate64");
    *(void **)&real_fsync = sym("fsync");
    *(void **)&real_fdatasync = sym("fdatasync");
    *(void **)&real_msync = sym("msync");
    *(void **)&real_unlink = sym("unlink");
    *(void **)&real_rename = sym("rename");
    *(void **)&real_close = sym("close");
}

#define RESOLVE() pthread_once(&resolve_once, resolve)

/*
 * Which file an fd was. Dropped at close: a file system may give a new
 * file the inode number of one just unlinked (ext4 does: SQLite's WAL
 * reopened on the fd and inode of its deleted rollback journal), so dev/ino
 * alone cannot tell; they catch fds closed by paths we do not see.
 */
struct fdcache {
    dev_t dev;
    ino_t ino;
    int   file;     /* index in log->files, or -1: not recorded */
    bool  valid;
};

static struct pl_log *log_;              /* shared, from setup */
static size_t log_map_len;
static atomic_bool recording;
static atomic_bool nosync;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char dir_[PATH_MAX];              /* lock: as given */
static char dir_real[PATH_MAX];          /* lock: realpath of dir_ */
static struct fdcache fdc[PL_MAXFD];     /* lock */
static _Thread_local uint8_t thread_tag;

bool
pl_rec_setup(size_t rec_cap, size_t data_cap)
{
    size_t head = (sizeof(struct pl_log) + 4095) & ~(size_t)4095;
    size_t len = head + rec_cap * sizeof(struct pl_rec) + data_cap;
    void *p;

    RESOLVE();
    p = mmap(NULL, len, PROT_READ | PROT_WRITE,
             MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        return false;
    }
    log_ = p;
    log_map_len = len;
    log_->rec_cap = rec_cap;
    log_->data_cap = data_cap;
    log_->rec = (struct pl_rec *)(void *)((char *)p + head);
    log_->data = (uint8_t *)(log_->rec + rec_cap);
    return true;
}

void
pl_rec_teardown(void)
{
    if (log_ != NULL) {
        munmap(log_, log_map_len);
        log_ = NULL;
    }
}

struct pl_log *
pl_rec_log(void)
{
    return log_;
}

void
pl_rec_start(const char *dir)
{
    RESOLVE();
    pthread_mutex_lock(&lock);
    strncpy(dir_, dir, sizeof(dir_) - 1);
    if (realpath(dir, dir_real) == NULL) {
        strncpy(dir_real, dir, sizeof(dir_real) - 1);
    }
    memset(fdc, 0, sizeof(fdc));
    atomic_store(&log_->nrec, 0);
    log_->data_used = 0;
    log_->nfiles = 0;
    log_->overflow = false;
    log_->msyncs = 0;
    log_->ignored = 0;
    log_->renames = 0;
    atomic_store(&recording, true);
    pthread_mutex_unlock(&lock);
}

uint64_t
pl_rec_stop(void)
{
    uint64_t n;

    pthread_mutex_lock(&lock);
    atomic_store(&recording, false);
    n = atomic_load(&log_->nrec);
    pthread_mutex_unlock(&lock);
    return n;
}

bool
pl_rec_full(void)
{
    return log_ != NULL && log_->overflow;
}

void
pl_rec_nosync(void)
{
    atomic_store(&nosync, true);
}

void
pl_rec_thread(uint8_t tag)
{
    thread_tag = tag;
}

/* Appends r; lock held. false (and recording off) when the log is full. */
static bool
push(struct pl_rec *r)
{
    uint64_t n = atomic_load_explicit(&log_->nrec, memory_order_relaxed);

    if (n >= log_->rec_cap) {
        log_->overflow = true;
        atomic_store(&recording, false);
        return false;
    }
    r->thr = thread_tag;
    log_->rec[n] = *r;
    atomic_store_explicit(&log_->nrec, n + 1, memory_order_release);
    return true;
}

/* Reserves len bytes of the data arena; lock held. NULL when full. */
static uint8_t *
data_take(size_t len, uint64_t *at)
{
    if (log_->data_cap - log_->data_used < len) {
        log_->overflow = true;
        atomic_store(&recording, false);
        return NULL;
    }
    *at = log_->data_used;
    log_->data_used += len;
    return log_->data + *at;
}

/* Lock files are rebuilt at open: whatever they hold does not matter. */
static bool
ignored_name(const char *name)
{
    size_t n = strlen(name);

    return strcmp(name, "lock.mdb") == 0 ||
           strcmp(name, "stashd.lock") == 0 ||
           (n >= 4 && strcmp(name + n - 4, "-shm") == 0);
}

/*
 * The index of a file named by its absolute path, registering it (and
 * logging its creation) when new; -1 for anything that is not directly
 * in the recorded directory or is a lock file. Lock held.
 */
static int
file_of_path(const char *path)
{
    const char *name = NULL;
    size_t n;

    n = strlen(dir_real);
    if (strncmp(path, dir_real, n) == 0 && path[n] == '/') {
        name = path + n + 1;
    } else {
        n = strlen(dir_);
        if (strncmp(path, dir_, n) == 0 && path[n] == '/') {
            name = path + n + 1;
        }
    }
    if (name == NULL || name[0] == '\0' || strchr(name, '/') != NULL ||
        strstr(name, " (deleted)") != NULL || ignored_name(name)) {
        return -1;
    }
    for (uint32_t i = 0; i < log_->nfiles; i++) {
        if (strcmp(log_->files[i], name) == 0) {
            return (int)i;
        }
    }
    if (log_->nfiles == PL_MAXFILES || strlen(name) >= PL_NAMELEN) {
        return -1;
    }
    strcpy(log_->files[log_->nfiles], name);
    {
        struct pl_rec r = { .kind = PL_CREATE,
                            .file = (uint8_t)log_->nfiles };

        if (!push(&r)) {
            return -1;
        }
    }
    return (int)log_->nfiles++;
}

/* The recorded file fd refers to, or -1. Lock held. */
static int
file_of_fd(int fd)
{
    char link[64];
    char path[PATH_MAX];
    struct stat st;
    ssize_t n;
    int f;

    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        return -1;
    }
    if (fd < PL_MAXFD && fdc[fd].valid && fdc[fd].dev == st.st_dev &&
        fdc[fd].ino == st.st_ino) {
        return fdc[fd].file;
    }
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    n = readlink(link, path, sizeof(path) - 1);
    if (n <= 0) {
        return -1;
    }
    path[n] = '\0';
    f = file_of_path(path);
    if (fd < PL_MAXFD) {
        fdc[fd].dev = st.st_dev;
        fdc[fd].ino = st.st_ino;
        fdc[fd].file = f;
        fdc[fd].valid = true;
    }
    return f;
}

/* A write of done bytes from iov at off (-1: at the fd's position before). */
static void
note_write(int fd, off_t off, const struct iovec *iov, int iovcnt,
           ssize_t done)
{
    struct pl_rec r = { .kind = PL_WRITE };
    uint8_t *dst;
    size_t left;
    int saved = errno;
    int fl;
    int f;

    if (done <= 0) {
        return;
    }
    pthread_mutex_lock(&lock);
    if (!atomic_load(&recording)) {
        goto out;
    }
    f = file_of_fd(fd);
    if (f < 0) {
        log_->ignored++;
        goto out;
    }
    if (off < 0) {
        /* The position has moved past what was written. */
        off = lseek(fd, 0, SEEK_CUR);
        if (off < 0) {
            goto out;
        }
        off -= done;
    }
    fl = fcntl(fd, F_GETFL);
    dst = data_take((size_t)done, &r.data);
    if (dst == NULL) {
        goto out;
    }
    left = (size_t)done;
    for (int i = 0; i < iovcnt && left > 0; i++) {
        size_t n = iov[i].iov_len < left ? iov[i].iov_len : left;

        memcpy(dst, iov[i].iov_base, n);
        dst += n;
        left -= n;
    }
    r.file = (uint8_t)f;
    r.off = (uint64_t)off;
    r.len = (uint32_t)done;
    r.flags = fl >= 0 && (fl & O_DSYNC) != 0 ? PL_F_DURABLE : 0;
    (void)push(&r);
out:
    pthread_mutex_unlock(&lock);
    errno = saved;
}

static void
note_trunc(int fd, off_t len)
{
    struct pl_rec r = { .kind = PL_TRUNC };
    int saved = errno;
    int f;

    pthread_mutex_lock(&lock);
    if (atomic_load(&recording) && (f = file_of_fd(fd)) >= 0) {
        r.file = (uint8_t)f;
        r.off = (uint64_t)len;
        (void)push(&r);
    }
    pthread_mutex_unlock(&lock);
    errno = saved;
}

/* Logs a sync's entry; returns its record index, or -1 when not ours. */
static int64_t
note_sync_in(int fd)
{
    struct pl_rec r = { .kind = PL_SYNC_IN };
    int64_t at = -1;
    int saved = errno;
    int f;

    pthread_mutex_lock(&lock);
    if (atomic_load(&recording) && (f = file_of_fd(fd)) >= 0) {
        r.file = (uint8_t)f;
        at = (int64_t)atomic_load(&log_->nrec);
        if (!push(&r)) {
            at = -1;
        }
    }
    pthread_mutex_unlock(&lock);
    errno = saved;
    return at;
}

static void
note_sync_out(int64_t in, int rc)
{
    struct pl_rec r = { .kind = PL_SYNC_OUT };
    int saved = errno;

    if (in < 0) {
        return;
    }
    pthread_mutex_lock(&lock);
    if (atomic_load(&recording)) {
        r.file = log_->rec[in].file;
        r.off = (uint64_t)in;
        r.flags = rc != 0 ? PL_F_FAILED : 0;
        (void)push(&r);
    }
    pthread_mutex_unlock(&lock);
    errno = saved;
}

/* A name leaves the directory: durable at once, like a creation. */
static void
note_unlink(const char *path)
{
    char abs[PATH_MAX];
    struct pl_rec r = { .kind = PL_UNLINK };
    int saved = errno;
    int f;

    pthread_mutex_lock(&lock);
    if (!atomic_load(&recording) || path == NULL) {
        goto out;
    }
    if (path[0] != '/') {
        if (getcwd(abs, sizeof(abs)) == NULL) {
            goto out;
        }
        strncat(abs, "/", sizeof(abs) - strlen(abs) - 1);
        strncat(abs, path, sizeof(abs) - strlen(abs) - 1);
        path = abs;
    }
    f = file_of_path(path);
    if (f >= 0) {
        r.file = (uint8_t)f;
        (void)push(&r);
        /* An fd still open on the old inode no longer writes this name. */
        for (int i = 0; i < PL_MAXFD; i++) {
            if (fdc[i].valid && fdc[i].file == f) {
                fdc[i].file = -1;
            }
        }
    }
out:
    pthread_mutex_unlock(&lock);
    errno = saved;
}

void
pl_rec_mark(pl_kind_e kind, uint8_t op, uint64_t key, uint32_t ver,
            uint64_t aux)
{
    struct pl_rec r = { .kind = (uint8_t)kind, .file = op, .off = key,
                        .len = ver, .data = aux };

    pthread_mutex_lock(&lock);
    if (atomic_load(&recording)) {
        (void)push(&r);
    }
    pthread_mutex_unlock(&lock);
}

/*
 * The interposers. Exported from the executable (ENABLE_EXPORTS), so the
 * shared libraries' calls bind here before libc.
 */

ssize_t
write(int fd, const void *buf, size_t n)
{
    ssize_t rc;

    RESOLVE();
    rc = real_write(fd, buf, n);
    if (atomic_load_explicit(&recording, memory_order_relaxed)) {
        struct iovec v = { (void *)(uintptr_t)buf, n };

        note_write(fd, -1, &v, 1, rc);
    }
    return rc;
}

ssize_t
pwrite(int fd, const void *buf, size_t n, off_t off)
{
    ssize_t rc;

    RESOLVE();
    rc = real_pwrite(fd, buf, n, off);
    if (atomic_load_explicit(&recording, memory_order_relaxed)) {
        struct iovec v = { (void *)(uintptr_t)buf, n };

        note_write(fd, off, &v, 1, rc);
    }
    return rc;
}

ssize_t
pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
    ssize_t rc;

    RESOLVE();
    rc = real_pwrite64(fd, buf, n, off);
    if (atomic_load_explicit(&recording, memory_order_relaxed)) {
        struct iovec v = { (void *)(uintptr_t)buf, n };

        note_write(fd, (off_t)off, &v, 1, rc);
    }
    return rc;
}

ssize_t
writev(int fd, const struct iovec *iov, int iovcnt)
{
    ssize_t rc;

    RESOLVE();
    rc = real_writev(fd, iov, iovcnt);
    if (atomic_load_explicit(&recording, memory_order_relaxed)) {
        note_write(fd, -1, iov, iovcnt, rc);
    }
    return rc;
}

ssize_t
pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
    ssize_t rc;

    RESOLVE();
    rc = real_pwritev(fd, iov, iovcnt, off);
    if (atomic_load_explicit(&recording, memory_order_relaxed)) {
        note_write(fd, off, iov, iovcnt, rc);
    }
    return rc;
}

ssize_t
pwritev64(int fd, const struct iovec *iov, int iovcnt, off64_t off)
{
    ssize_t rc;

    RESOLVE();
    rc = real_pwritev64(fd, iov, iovcnt, off);
    if (atomic_load_explicit(&recording, memory_order_relaxed)) {
        note_write(fd, (off_t)off, iov, iovcnt, rc);
    }
    return rc;
}

int
ftruncate(int fd, off_t len)
{
    int rc;

    RESOLVE();
    rc = real_ftruncate(fd, len);
    if (rc == 0 && atomic_load_explicit(&recording, memory_order_relaxed)) {
        note_trunc(fd, len);
    }
    return rc;
}

int
ftruncate64(int fd, off64_t len)
{
    int rc;

    RESOLVE();
    rc = real_ftruncate64(fd, len);
    if (rc == 0 && atomic_load_explicit(&recording, memory_order_relaxed)) {
        note_trunc(fd, (off_t)len);
    }
    return rc;
}

int
fsync(int fd)
{
    int64_t in = -1;
    int rc;

    RESOLVE();
    if (atomic_load_explicit(&recording, memory_order_relaxed)) {
        in = note_sync_in(fd);
    }
    rc = atomic_load_explicit(&nosync, memory_order_relaxed) ? 0
                                                              : real_fsync(fd);
    note_sync_out(in, rc);
    return rc;
}

int
fdatasync(int fd)
{
    int64_t in = -1;
    int rc;

    RESOLVE();
    if (atomic_load_explicit(&recording, memory_order_relaxed)) {
        in = note_sync_in(fd);
    }
    rc = atomic_load_explicit(&nosync, memory_order_relaxed)
         ? 0 : real_fdatasync(fd);
    note_sync_out(in, rc);
    return rc;
}

int
msync(void *addr, size_t len, int flags)
{
    RESOLVE();
    if (atomic_load_explicit(&recording, memory_order_relaxed)) {
        pthread_mutex_lock(&lock);
        log_->msyncs++;
        pthread_mutex_unlock(&lock);
    }
    if (atomic_load_explicit(&nosync, memory_order_relaxed)) {
        return 0;
    }
    return real_msync(addr, len, flags);
}

int
unlink(const char *path)
{
    int rc;

    RESOLVE();
    rc = real_unlink(path);
    if (rc == 0 && atomic_load_explicit(&recording, memory_order_relaxed)) {
        note_unlink(path);
    }
    return rc;
}

int
close(int fd)
{
    RESOLVE();
    if (atomic_load_explicit(&recording, memory_order_relaxed) && fd >= 0 &&
        fd < PL_MAXFD) {
        pthread_mutex_lock(&lock);
        fdc[fd].valid = false;
        pthread_mutex_unlock(&lock);
    }
    return real_close(fd);
}

int
rename(const char *from, const char *to)
{
    int rc;

    RESOLVE();
    rc = real_rename(from, to);
    if (rc == 0 && atomic_load_explicit(&recording, memory_order_relaxed)) {
        /*
         * Neither backend renames; should one start, the rig must learn
         * to move bytes between names. Until then the old name goes and
         * the new one is left as whatever it was written as.
         */
        pthread_mutex_lock(&lock);
        log_->renames++;
        pthread_mutex_unlock(&lock);
        note_unlink(from);
    }
    return rc;
}
