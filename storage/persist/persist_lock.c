/*
 * The data directory of a persistent store: created if missing (mode
 * 0700) and locked with an exclusive flock on DIR/stashd.lock, the same
 * file for every backend, so a second stashd, a second open in this
 * process, or another backend is refused before any data file is touched.
 * The lock file holds the holder's pid so that the refusal can name it.
 * Also the small helpers the persistent backends' open code shares. It
 * never reads or writes a data file.
 */
#include "storage/persist/persist.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

void
persist_err(const struct store_cfg *cfg, const char *fmt, ...)
{
    va_list ap;

    if (cfg->err == NULL || cfg->errlen == 0) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(cfg->err, cfg->errlen, fmt, ap);
    va_end(ap);
}

bool
persist_cond_init_mono(pthread_cond_t *c)
{
    pthread_condattr_t ca;
    bool ok;

    if (pthread_condattr_init(&ca) != 0) {
        return false;
    }
    ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
         pthread_cond_init(c, &ca) == 0;
    pthread_condattr_destroy(&ca);
    return ok;
}

store_rc_e
persist_make_dir(const struct store_cfg *cfg, const char *dir)
{
    size_t n = strlen(dir);
    char *p = malloc(n + 1);
    struct stat st;

    if (p == NULL) {
        return STORE_ENOMEM;
    }
    memcpy(p, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != '\0') {
            continue;
        }
        p[i] = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            persist_err(cfg, "cannot create %s: %s", p, strerror(errno));
            free(p);
            return STORE_EIO;
        }
        p[i] = i < n ? '/' : '\0';
    }
    free(p);
    if (stat(dir, &st) != 0) {
        persist_err(cfg, "%s: %s", dir, strerror(errno));
        return STORE_EIO;
    }
    if (!S_ISDIR(st.st_mode)) {
        persist_err(cfg, "%s: not a directory", dir);
        return STORE_EINVAL;
    }
    return STORE_OK;
}

store_rc_e
persist_lock_dir(const struct store_cfg *cfg, const char *dir, int *lock_fd)
{
    char path[4096];
    char buf[32];
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "%s/%s", dir, PERSIST_LOCK_FILE);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        persist_err(cfg, "%s: %s", path, strerror(errno));
        return STORE_EIO;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;

        n = pread(fd, buf, sizeof(buf) - 1, 0);
        buf[n > 0 ? n : 0] = '\0';
        buf[strcspn(buf, "\n")] = '\0';
        close(fd);
        if (e == EWOULDBLOCK) {
            persist_err(cfg, "%s: the data directory is in use by "
                        "another stashd%s%s%s", path,
                        buf[0] ? " (pid " : "", buf, buf[0] ? ")" : "");
            return STORE_ELOCKED;
        }
        persist_err(cfg, "%s: cannot lock: %s", path, strerror(e));
        return STORE_EIO;
    }
    /* Who holds it, for the next one's message; best effort. */
    n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)n, 0) != n) {
        /* The lock is what matters; the pid is only a courtesy. */
    }
    *lock_fd = fd;
    return STORE_OK;
}
