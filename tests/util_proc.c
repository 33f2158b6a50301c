/* Process and socket helpers for the integration tests. */
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
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
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

pid_t
tu_server_start(const char *const *args, uint16_t *port)
{
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
        for (int i = 0; args != NULL && args[i] != NULL && n < 62; i++) {
            argv[n++] = args[i];
        }
        argv[n] = NULL;
        pid = fork();
        if (pid < 0) {
            return -1;
        }
        if (pid == 0) {
            execv(argv[0], (char *const *)argv);
            _exit(127);
        }
        for (int i = 0; i < 500; i++) {
            int st;
            int fd = try_connect(p);

            if (fd >= 0) {
                close(fd);
                *port = p;
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
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;
}

void
tu_server_kill(pid_t pid)
{
    int st;

    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
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
