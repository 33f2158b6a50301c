/*
 * What the disk-fault injectors share: fault_shim.c (preloaded into the
 * real stashd) and check_store_persist.c (its own executable) both stand
 * before libc's fsync and fdatasync and fail the syncs of files under one
 * directory. Header-only (static inline) and libc alone, no Check and no
 * storage.h: the shim is a shared library loaded before ASan's runtime.
 */
#ifndef STASHD_TESTS_FAULT_UTIL_H
#define STASHD_TESTS_FAULT_UTIL_H

#include <dlfcn.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Whether the file open on fd has a path that starts with dir (the path
 * from /proc/self/fd, so it is the file's real, absolute one). */
static inline bool
fault_fd_under(int fd, const char *dir)
{
    char link[64];
    char path[4096];
    ssize_t n;

    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    n = readlink(link, path, sizeof(path) - 1);
    if (n <= 0) {
        return false;
    }
    path[n] = '\0';
    return strncmp(path, dir, strlen(dir)) == 0;
}

/* Unless fail (then -1 with EIO), the sync call name on fd by its next
 * definition, libc's (-1 with ENOSYS when there is none). */
static inline int
fault_sync(bool fail, const char *name, int fd)
{
    int (*fn)(int);

    if (fail) {
        errno = EIO;
        return -1;
    }
    fn = (int (*)(int))dlsym(RTLD_NEXT, name);
    if (fn == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return fn(fd);
}

/*
 * Defines fsync and fdatasync, which fail with EIO while fails(fd) is true
 * and call libc's otherwise. A macro because the definitions must be in
 * the executable or library that interposes (a symbol there stands before
 * libc's for every caller).
 */
#define FAULT_SYNC_INTERPOSERS(fails)                                     \
    int                                                                   \
    fsync(int fd)                                                         \
    {                                                                     \
        return fault_sync(fails(fd), "fsync", fd);                        \
    }                                                                     \
                                                                          \
    int                                                                   \
    fdatasync(int fd)                                                     \
    {                                                                     \
        return fault_sync(fails(fd), "fdatasync", fd);                    \
    }

#endif /* STASHD_TESTS_FAULT_UTIL_H */
