/*
 * Small helpers the engine and the adapters share: a growable buffer and
 * the full-disk test. Nothing here keeps state.
 */
#include "storage/kv/kv.h"

#include <stdlib.h>
#include <sys/statvfs.h>

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
