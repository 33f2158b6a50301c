/*
 * A look at DIR/stashd.db-wal before SQLite opens it. SQLite's recovery
 * keeps the frames up to the first one whose salt or checksum is wrong and
 * silently drops every frame after it. After a power loss that is right:
 * the frames after a torn one were never promised. But a flipped bit in a
 * frame that was written and synced long ago cuts off everything after it,
 * acknowledged writes included, and nobody would know. So: the frames
 * after the first bad one are checked on their own (each from the stored
 * checksum of the one before it); if whole commits follow the bad frame
 * and the machine has not restarted since the store was last open (its
 * page cache then held every frame, so nothing can be torn), the WAL is
 * damaged, and the store is refused with the way out. Otherwise what
 * SQLite will drop is only logged. Reads only; it never writes the WAL.
 */
#include "storage/sqlite/sq.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/persist/persist.h"

#define WAL_HDR       32u
#define WAL_FRAME_HDR 24u
#define WAL_MAGIC     0x377f0682u      /* | 1: big-endian checksums */

#define SQ_BOOT_FILE  "stashd.boot"    /* the boot id at the last open */

static uint32_t
be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* SQLite's WAL checksum over n bytes (a multiple of 8), from s. */
static void
wal_sum(bool big, const unsigned char *p, size_t n, uint32_t s[2])
{
    for (size_t i = 0; i + 8 <= n; i += 8) {
        uint32_t x0 = big ? be32(p + i) : kv_get32(p + i);
        uint32_t x1 = big ? be32(p + i + 4) : kv_get32(p + i + 4);

        s[0] += x0 + s[1];
        s[1] += x1 + s[0];
    }
}

/* Whether frame f (header + page) checks out starting from sum s. */
static bool
frame_ok(bool big, const unsigned char *f, size_t psize,
         const unsigned char *hdr, const uint32_t from[2], uint32_t out[2])
{
    uint32_t s[2] = { from[0], from[1] };

    if (memcmp(f + 8, hdr + 16, 8) != 0) {
        return false;                  /* another generation's salt */
    }
    wal_sum(big, f, 8, s);
    wal_sum(big, f + WAL_FRAME_HDR, psize, s);
    out[0] = s[0];
    out[1] = s[1];
    return s[0] == be32(f + 16) && s[1] == be32(f + 20);
}

/* The machine's boot id now, into out (empty when it cannot be read). */
static void
boot_now(const struct store_cfg *cfg, char *out, size_t cap)
{
    FILE *f;

    out[0] = '\0';
    if (cfg->boot_id != NULL) {
        snprintf(out, cap, "%s", cfg->boot_id);
    } else if ((f = fopen("/proc/sys/kernel/random/boot_id", "r")) != NULL) {
        if (fgets(out, (int)cap, f) == NULL) {
            out[0] = '\0';
        }
        fclose(f);
    }
    out[strcspn(out, "\n")] = '\0';
}

/* Whether the machine has not restarted since the last successful open. */
static bool
same_boot(const struct store_cfg *cfg, const char *dir)
{
    char path[4096];
    char now[48];
    char then[48] = "";
    FILE *f;

    boot_now(cfg, now, sizeof(now));
    snprintf(path, sizeof(path), "%s/%s", dir, SQ_BOOT_FILE);
    if ((f = fopen(path, "r")) != NULL) {
        if (fgets(then, sizeof(then), f) == NULL) {
            then[0] = '\0';
        }
        fclose(f);
    }
    then[strcspn(then, "\n")] = '\0';
    return now[0] != '\0' && strcmp(now, then) == 0;
}

void
sq_boot_note(const struct store_cfg *cfg, const char *dir)
{
    char path[4096];
    char now[48];
    FILE *f;

    boot_now(cfg, now, sizeof(now));
    snprintf(path, sizeof(path), "%s/%s", dir, SQ_BOOT_FILE);
    if ((f = fopen(path, "w")) != NULL) {
        fprintf(f, "%s\n", now);
        fclose(f);
    }
}

store_rc_e
sq_wal_check(const struct store_cfg *cfg, struct kv_be *b)
{
    bool same = same_boot(cfg, b->dir);
    unsigned char hdr[WAL_HDR];
    unsigned char *f = NULL;
    struct stat st;
    uint32_t s[2] = { 0, 0 };
    uint32_t next[2];
    size_t psize;
    size_t fsize;
    size_t nframes;
    size_t bad = 0;
    size_t good_commits = 0;
    size_t lost_commits = 0;
    bool big;
    int fd = open(b->wal_path, O_RDONLY | O_CLOEXEC);
    store_rc_e rc = STORE_OK;

    if (fd < 0) {
        return STORE_OK;               /* no WAL: nothing to recover */
    }
    if (fstat(fd, &st) != 0 || st.st_size < (off_t)WAL_HDR ||
        pread(fd, hdr, WAL_HDR, 0) != (ssize_t)WAL_HDR ||
        (be32(hdr) & ~1u) != WAL_MAGIC) {
        close(fd);
        return STORE_OK;               /* empty, or never written whole */
    }
    big = (be32(hdr) & 1u) != 0;
    psize = be32(hdr + 8);
    if (psize < 512 || psize > 65536 || (psize & (psize - 1)) != 0) {
        close(fd);
        return STORE_OK;
    }
    fsize = WAL_FRAME_HDR + psize;
    nframes = ((size_t)st.st_size - WAL_HDR) / fsize;
    f = malloc(fsize);
    if (f == NULL) {
        close(fd);
        return STORE_OK;
    }
    wal_sum(big, hdr, 24, s);
    bad = nframes;
    if (s[0] != be32(hdr + 24) || s[1] != be32(hdr + 28)) {
        bad = 0;                       /* SQLite ignores every frame */
        s[0] = be32(hdr + 24);
        s[1] = be32(hdr + 28);
    }
    /* The frames SQLite keeps, up to the first that fails. */
    for (size_t i = 0; i < nframes && bad == nframes; i++) {
        if (pread(fd, f, fsize, (off_t)(WAL_HDR + i * fsize)) !=
            (ssize_t)fsize || !frame_ok(big, f, psize, hdr, s, next)) {
            bad = i;
            break;
        }
        s[0] = next[0];
        s[1] = next[1];
        good_commits += be32(f + 4) != 0;
    }
    /* After it: frames that check out from their own predecessor's stored
     * sum were written whole, in this generation, after the bad one. */
    for (size_t i = bad; i < nframes; i++) {
        if (pread(fd, f, fsize, (off_t)(WAL_HDR + i * fsize)) !=
            (ssize_t)fsize) {
            break;
        }
        if (i > bad && frame_ok(big, f, psize, hdr, s, next) &&
            be32(f + 4) != 0) {
            lost_commits++;
        }
        s[0] = be32(f + 16);
        s[1] = be32(f + 20);
    }
    free(f);
    close(fd);
    if (lost_commits > 0 && same) {
        persist_err(cfg, "%s: damaged: frame %zu of %zu fails its checksum "
                    "and SQLite would drop the %zu commits written after it; "
                    "refusing to open. Move %s aside to accept the loss (the "
                    "store then opens at its last good commit), or restore "
                    "a backup", b->wal_path, bad + 1, nframes, lost_commits,
                    b->wal_path);
        rc = STORE_ECORRUPT;
    } else if (bad < nframes) {
        fprintf(stderr, "stashd: %s: %zu frames after frame %zu are "
                "dropped (%s; %zu commits kept)\n", b->wal_path,
                nframes - bad, bad, same ? "never completed"
                : "left incomplete when the machine went down",
                good_commits);
    }
    return rc;
}
