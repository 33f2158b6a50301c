/*
 * A fault-injection shim for the fault tests, preloaded into the real
 * stashd (LD_PRELOAD): while the file $STASHD_FAULT_CTL says so, the calls
 * a storage library makes on the files of $STASHD_FAULT_DIR fail with EIO
 * ("sync": fsync and fdatasync; "write": the write family and the syncs;
 * "nospc": the write family fails with ENOSPC). Sockets and every other
 * file are left alone, so the server keeps answering. A test flips the
 * mode by rewriting the control file; nothing else changes behaviour.
 * Test code only: it keeps what it needs in globals.
 */
#include "tests/fault_util.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

typedef enum fault { F_NONE, F_SYNC, F_WRITE, F_NOSPC } fault_e;

/* The mode now; the control file is small and read on every call. */
static fault_e
mode(void)
{
    const char *ctl = getenv("STASHD_FAULT_CTL");
    char buf[16] = "";
    ssize_t (*real_read)(int, void *, size_t);
    int (*real_open)(const char *, int, ...);
    int fd;
    ssize_t n;

    if (ctl == NULL) {
        return F_NONE;
    }
    real_open = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open");
    real_read = (ssize_t (*)(int, void *, size_t))dlsym(RTLD_NEXT, "read");
    fd = real_open(ctl, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return F_NONE;
    }
    n = real_read(fd, buf, sizeof(buf) - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    if (strncmp(buf, "sync", 4) == 0) {
        return F_SYNC;
    }
    if (strncmp(buf, "write", 5) == 0) {
        return F_WRITE;
    }
    if (strncmp(buf, "nospc", 5) == 0) {
        return F_NOSPC;
    }
    return F_NONE;
}

/* Whether fd is a regular file inside $STASHD_FAULT_DIR. */
static bool
targeted(int fd)
{
    const char *dir = getenv("STASHD_FAULT_DIR");
    struct stat st;

    return dir != NULL && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
           fault_fd_under(fd, dir);
}

/* Whether a write-family call on fd fails now; sets errno when it does. */
static bool
fail_write(int fd)
{
    fault_e m = mode();

    if ((m != F_WRITE && m != F_NOSPC) || !targeted(fd)) {
        return false;
    }
    errno = m == F_NOSPC ? ENOSPC : EIO;
    return true;
}

/* Whether a sync of fd fails now (with EIO, FAULT_SYNC_INTERPOSERS). */
static bool
fail_sync(int fd)
{
    fault_e m = mode();

    return (m == F_SYNC || m == F_WRITE) && targeted(fd);
}

#define REAL(name, type) ((type)dlsym(RTLD_NEXT, name))

ssize_t
write(int fd, const void *p, size_t n)
{
    if (fail_write(fd)) {
        return -1;
    }
    return REAL("write", ssize_t (*)(int, const void *, size_t))(fd, p, n);
}

ssize_t
pwrite(int fd, const void *p, size_t n, off_t off)
{
    if (fail_write(fd)) {
        return -1;
    }
    return REAL("pwrite", ssize_t (*)(int, const void *, size_t, off_t))(
        fd, p, n, off);
}

ssize_t
pwrite64(int fd, const void *p, size_t n, off_t off)
{
    if (fail_write(fd)) {
        return -1;
    }
    return REAL("pwrite64", ssize_t (*)(int, const void *, size_t, off_t))(
        fd, p, n, off);
}

ssize_t
writev(int fd, const struct iovec *iov, int n)
{
    if (fail_write(fd)) {
        return -1;
    }
    return REAL("writev", ssize_t (*)(int, const struct iovec *, int))(
        fd, iov, n);
}

ssize_t
pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
    if (fail_write(fd)) {
        return -1;
    }
    return REAL("pwritev", ssize_t (*)(int, const struct iovec *, int,
                                       off_t))(fd, iov, n, off);
}

ssize_t
pwritev64(int fd, const struct iovec *iov, int n, off_t off)
{
    if (fail_write(fd)) {
        return -1;
    }
    return REAL("pwritev64", ssize_t (*)(int, const struct iovec *, int,
                                         off_t))(fd, iov, n, off);
}

FAULT_SYNC_INTERPOSERS(fail_sync)
