/* Process, socket and file helpers for the tests. */
#include "tests/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <dirent.h>
#include <ftw.h>
#include <stdbool.h>
#include <unistd.h>

const char *
tu_bin(void)
{
    const char *b = getenv("STASHD_BIN");

    return b != NULL ? b : "./build/stashd";
}

static uint16_t
free_port(void)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    uint16_t port = 0;

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &alen) == 0) {
        port = ntohs(a.sin_port);
    }
    if (fd >= 0) {
        close(fd);
    }
    return port;
}

static int
try_connect(uint16_t port)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0) {
        return -1;
    }
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void
sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}

/* In a child: a test that fails (and exits) before stopping its server
 * takes the server with it, so no stray stashd outlives a run. */
static void
die_with_parent(void)
{
    pid_t parent = getppid();

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) {
        _exit(127);
    }
}

/*
 * $STASHD_BACKEND runs the same integration tests against each backend:
 * a server started without --backend gets that one and, unless it is
 * memory, a fresh data directory that is removed when the server stops.
 */
struct backend_dir {
    pid_t pid;
    char  path[64];
};

static struct backend_dir dirs[64];

static bool
has_backend_arg(const char *const *args)
{
    for (int i = 0; args != NULL && args[i] != NULL; i++) {
        if (strncmp(args[i], "--backend", 9) == 0) {
            return true;
        }
    }
    return false;
}

static void
remove_dir(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    char f[512];

    if (d == NULL) {
        return;
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            snprintf(f, sizeof(f), "%s/%s", path, e->d_name);
            unlink(f);
        }
    }
    closedir(d);
    rmdir(path);
}

static void
forget_dir(pid_t pid)
{
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        if (dirs[i].pid == pid && pid > 0) {
            remove_dir(dirs[i].path);
            dirs[i].pid = 0;
        }
    }
}

const char *
tu_backend(void)
{
    const char *b = getenv("STASHD_BACKEND");

    return b != NULL && b[0] != '\0' ? b : NULL;
}

pid_t
tu_server_start(const char *const *args, uint16_t *port)
{
    const char *backend = has_backend_arg(args) ? NULL : tu_backend();
    struct backend_dir *slot = NULL;

    if (backend != NULL && strcmp(backend, "memory") != 0) {
        for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
            if (dirs[i].pid == 0) {
                slot = &dirs[i];
                break;
            }
        }
        if (slot == NULL) {
            return -1;
        }
        snprintf(slot->path, sizeof(slot->path), "/tmp/stashd-test-XXXXXX");
        if (mkdtemp(slot->path) == NULL) {
            return -1;
        }
    }
    for (int attempt = 0; attempt < 5; attempt++) {
        const char *argv[64];
        char pbuf[16];
        int n = 0;
        pid_t pid;
        uint16_t p = free_port();

        if (p == 0) {
            continue;
        }
        snprintf(pbuf, sizeof(pbuf), "%u", (unsigned)p);
        argv[n++] = tu_bin();
        argv[n++] = "-p";
        argv[n++] = pbuf;
        argv[n++] = "-l";
        argv[n++] = "127.0.0.1";
        if (backend != NULL) {
            argv[n++] = "--backend";
            argv[n++] = backend;
        }
        if (slot != NULL) {
            argv[n++] = "--data-dir";
            argv[n++] = slot->path;
        }
        for (int i = 0; args != NULL && args[i] != NULL && n < 62; i++) {
            argv[n++] = args[i];
        }
        argv[n] = NULL;
        pid = fork();
        if (pid < 0) {
            return -1;
        }
        if (pid == 0) {
            die_with_parent();
            execv(argv[0], (char *const *)argv);
            _exit(127);
        }
        for (int i = 0; i < 500; i++) {
            int st;
            int fd = try_connect(p);

            if (fd >= 0) {
                close(fd);
                *port = p;
                if (slot != NULL) {
                    slot->pid = pid;
                }
                return pid;
            }
            if (waitpid(pid, &st, WNOHANG) == pid) {
                pid = -1;
                break;
            }
            sleep_ms(10);
        }
        if (pid > 0) {
            tu_server_kill(pid);
        }
    }
    if (slot != NULL) {
        remove_dir(slot->path);
    }
    return -1;
}

int
tu_server_stop(pid_t pid)
{
    int st;

    if (pid <= 0) {
        return -1;
    }
    kill(pid, SIGTERM);
    for (int i = 0; i < 1000; i++) {
        pid_t r = waitpid(pid, &st, WNOHANG);

        if (r == pid) {
            forget_dir(pid);
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    forget_dir(pid);
    return -1;
}

void
tu_server_kill(pid_t pid)
{
    int st;

    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        forget_dir(pid);
    }
}

void
tu_set_timeout(int fd, int ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

int
tu_connect(uint16_t port)
{
    int fd = try_connect(port);
    int one = 1;

    if (fd >= 0) {
        tu_set_timeout(fd, 10000);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return fd;
}

int
tu_send(int fd, const void *p, size_t n)
{
    const char *c = p;

    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);

        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

ssize_t
tu_recv(int fd, void *p, size_t n)
{
    char *c = p;
    size_t got = 0;

    while (got < n) {
        ssize_t r = recv(fd, c + got, n - got, 0);

        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        got += (size_t)r;
    }
    return (ssize_t)got;
}

ssize_t
tu_recv_bin(int fd, uint8_t *buf, size_t cap)
{
    uint32_t body;

    if (cap < 24 || tu_recv(fd, buf, 24) != 24) {
        return -1;
    }
    body = (uint32_t)buf[8] << 24 | (uint32_t)buf[9] << 16 |
           (uint32_t)buf[10] << 8 | buf[11];
    if (body > cap - 24 || tu_recv(fd, buf + 24, body) != (ssize_t)body) {
        return -1;
    }
    return 24 + (ssize_t)body;
}

ssize_t
tu_recv_until(int fd, char *buf, size_t cap, const char *suffix)
{
    size_t got = 0;
    size_t sl = strlen(suffix);

    while (got < cap) {
        ssize_t r = recv(fd, buf + got, cap - got, 0);

        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return -1;
        }
        got += (size_t)r;
        if (got >= sl && memcmp(buf + got - sl, suffix, sl) == 0) {
            return (ssize_t)got;
        }
    }
    return -1;
}

int
tu_closed(int fd, int timeout_ms)
{
    struct pollfd pfd = { fd, POLLIN, 0 };
    char c;

    if (poll(&pfd, 1, timeout_ms) <= 0) {
        return 0;
    }
    return recv(fd, &c, 1, MSG_DONTWAIT) == 0;
}

int
tu_run(const char *const *args, char *err, size_t cap, int timeout_ms)
{
    const char *argv[64];
    int pfd[2];
    int n = 0;
    int st;
    size_t got = 0;
    pid_t pid;

    argv[n++] = tu_bin();
    for (int i = 0; args != NULL && args[i] != NULL && n < 63; i++) {
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    if (pipe(pfd) != 0) {
        return -1;
    }
    pid = fork();
    if (pid < 0) {
        close(pfd[0]);
        close(pfd[1]);
        return -1;
    }
    if (pid == 0) {
        die_with_parent();
        dup2(pfd[1], STDERR_FILENO);
        close(pfd[0]);
        close(pfd[1]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    for (int waited = 0; waited < timeout_ms; waited += 10) {
        struct pollfd p = { pfd[0], POLLIN, 0 };
        pid_t r;

        /* Drain stderr so a chatty child never blocks on a full pipe. */
        while (poll(&p, 1, 0) > 0) {
            char tmp[512];
            ssize_t k = read(pfd[0], tmp, sizeof(tmp));

            if (k <= 0) {
                break;
            }
            for (ssize_t j = 0; j < k; j++) {
                if (err != NULL && got + 1 < cap) {
                    err[got++] = tmp[j];
                }
            }
        }
        r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            char tmp[512];
            ssize_t k;

            while ((k = read(pfd[0], tmp, sizeof(tmp))) > 0) {
                for (ssize_t j = 0; j < k; j++) {
                    if (err != NULL && got + 1 < cap) {
                        err[got++] = tmp[j];
                    }
                }
            }
            close(pfd[0]);
            if (err != NULL && cap > 0) {
                err[got] = '\0';
            }
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        sleep_ms(10);
    }
    tu_server_kill(pid);
    close(pfd[0]);
    if (err != NULL && cap > 0) {
        err[got] = '\0';
    }
    return -1;
}

long
tu_rss_kb(pid_t pid)
{
    char path[64];
    char line[256];
    long kb = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
    f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

size_t
tu_recv_idle(int fd, void *buf, size_t cap, int idle_ms, int *closed)
{
    char *c = buf;
    size_t got = 0;

    *closed = 0;
    while (got < cap) {
        struct pollfd p = { fd, POLLIN, 0 };
        ssize_t r;

        if (poll(&p, 1, idle_ms) <= 0) {
            break;
        }
        r = recv(fd, c + got, cap - got, MSG_DONTWAIT);
        if (r < 0 && (errno == EINTR || errno == EAGAIN)) {
            continue;
        }
        if (r <= 0) {
            *closed = 1;   /* EOF, or a reset: the peer is gone either way */
            break;
        }
        got += (size_t)r;
    }
    return got;
}

void
tu_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

void
tu_put64(uint8_t *p, uint64_t v)
{
    tu_put32(p, (uint32_t)(v >> 32));
    tu_put32(p + 4, (uint32_t)v);
}

uint32_t
tu_get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

uint64_t
tu_get64(const uint8_t *p)
{
    return (uint64_t)tu_get32(p) << 32 | tu_get32(p + 4);
}

size_t
tu_bin_req(uint8_t *out, size_t cap, uint8_t opcode, const void *ext,
           uint8_t extlen, const void *key, uint16_t keylen, const void *val,
           uint32_t vlen, uint32_t opaque, uint64_t cas)
{
    size_t n = 24 + (size_t)extlen + keylen + vlen;

    if (n > cap) {
        return 0;
    }
    out[0] = 0x80;
    out[1] = opcode;
    out[2] = (uint8_t)(keylen >> 8);
    out[3] = (uint8_t)keylen;
    out[4] = extlen;
    out[5] = 0;
    out[6] = 0;
    out[7] = 0;
    tu_put32(out + 8, (uint32_t)(n - 24));
    tu_put32(out + 12, opaque);
    tu_put64(out + 16, cas);
    if (extlen > 0) {
        memcpy(out + 24, ext, extlen);
    }
    if (keylen > 0) {
        memcpy(out + 24 + extlen, key, keylen);
    }
    if (vlen > 0) {
        memcpy(out + 24 + extlen + keylen, val, vlen);
    }
    return n;
}

size_t
tu_bin_parse(const uint8_t *buf, size_t len, struct tu_bin *p)
{
    if (len < 24) {
        return 0;
    }
    p->magic = buf[0];
    p->opcode = buf[1];
    p->keylen = (uint16_t)(buf[2] << 8 | buf[3]);
    p->extlen = buf[4];
    p->datatype = buf[5];
    p->status = (uint16_t)(buf[6] << 8 | buf[7]);
    p->bodylen = tu_get32(buf + 8);
    p->opaque = tu_get32(buf + 12);
    p->cas = tu_get64(buf + 16);
    if ((uint64_t)p->extlen + p->keylen > p->bodylen ||
        len - 24 < p->bodylen) {
        return 0;
    }
    p->extras = buf + 24;
    p->key = buf + 24 + p->extlen;
    p->value = p->key + p->keylen;
    p->vlen = p->bodylen - p->extlen - p->keylen;
    return 24 + (size_t)p->bodylen;
}

/* nftw callback: removes one entry (children come first, FTW_DEPTH). */
static int
rm_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)type;
    (void)ftw;
    return remove(path);
}

void
tu_rm_tree(const char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}
