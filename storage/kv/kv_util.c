/*
 * Small helpers the engine and the adapters share: a growable buffer and
 * the full-disk test. Nothing here keeps state.
 */
#include "storage/kv/kv.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

bool
kv_grow(unsigned char **buf, size_t *cap, size_t n)
{
    unsigned char *p;
    size_t c;

    if (n <= *cap) {
        return true;
    }
    c = *cap != 0 ? *cap : 4096;
    while (c < n) {
        c *= 2;
    }
    p = realloc(*buf, c);
    if (p == NULL) {
        return false;
    }
    *buf = p;
    *cap = c;
    return true;
}

bool
kv_disk_full(const char *dir, uint64_t min)
{
    struct statvfs sv;

    if (statvfs(dir, &sv) != 0) {
        return false;
    }
    return (uint64_t)sv.f_bavail * sv.f_frsize < min;
}

static void
reserve_path(const char *dir, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", dir, KV_RESERVE_FILE);
}

bool
kv_reserve_exists(const char *dir)
{
    char path[4096];
    struct stat st;

    reserve_path(dir, path, sizeof(path));
    return stat(path, &st) == 0;
}

bool
kv_reserve_release(const char *dir)
{
    char path[4096];

    reserve_path(dir, path, sizeof(path));
    return unlink(path) == 0;
}

void
kv_reserve_make(const char *dir, uint64_t min)
{
    char path[4096];
    struct stat st;
    struct statvfs sv;
    uint64_t room;
    off_t len;
    int fd;

    reserve_path(dir, path, sizeof(path));
    if (stat(path, &st) == 0 || statvfs(dir, &sv) != 0) {
        return;
    }
    /* Right after a delete (or an open) spent it, the room is the
     * reserve less what that wrote: most of a reserve then beats none,
     * which would let the next writes fill the disk with no way back; a
     * quarter of it stays free for those writes (a WAL grows before the
     * rows a delete freed can be used again). */
    room = (uint64_t)sv.f_bavail * sv.f_frsize;
    if (min < KV_RESERVE / 4) {
        min = KV_RESERVE / 4;
    }
    if (room < min + KV_RESERVE / 2) {
        return;
    }
    len = (off_t)(room - min < KV_RESERVE ? room - min : KV_RESERVE);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        return;
    }
    /* Blocks really taken (a sparse file would give nothing back). */
    if (posix_fallocate(fd, 0, len) != 0 || fsync(fd) != 0) {
        close(fd);
        unlink(path);
        return;
    }
    close(fd);
}
