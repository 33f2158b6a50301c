/*
 * Probe mode (--wait-hit): the restart-time measurement. Optionally starts
 * the server itself, so the clock starts at fork() and not when a shell got
 * round to it, then connects and asks for one key until the server answers
 * with a hit (or, with --wait-listen, until it accepts). Blocking sockets
 * and sleeps are fine here: this measures milliseconds, once.
 */
#include "benchmarks/bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* 1 hit, 0 miss, -1 the connection is no good (closed, timed out, junk) */
static int
probe_once(int fd, const struct bench_gen *g, uint64_t key, uint8_t *buf,
           size_t cap)
{
    size_t len = bench_gen_encode(g, BENCH_GET, key, 0, buf), have = 0;
    size_t off = 0;

    while (off < len) {
        ssize_t n = send(fd, buf + off, len - off, MSG_NOSIGNAL);

        if (n <= 0) {
            return -1;
        }
        off += (size_t)n;
    }
    for (;;) {
        size_t used = 0;
        int result = 0;
        bench_parse_e rc;
        ssize_t n;

        if (have > 0) {
            rc = bench_parse_reply(g, BENCH_GET, buf, have, &used, &result);
            if (rc == BENCH_PARSE_OK) {
                return result == 1 ? 1 : (result == 0 ? 0 : -1);
            }
            if (rc == BENCH_PARSE_BAD || used > cap) {
                return -1;
            }
        }
        n = recv(fd, buf + have, cap - have, 0);
        if (n <= 0) {
            return -1;
        }
        have += (size_t)n;
    }
}

int
bench_probe(const struct bench_cfg *cfg, const struct bench_gen *g)
{
    uint64_t t0 = bench_now_ns(), t_conn = 0, t_hit = 0, deadline;
    uint64_t misses = 0;
    size_t cap = 2 * g->max_resp + 4096;
    uint8_t *buf = malloc(cap);
    pid_t pid = -1;
    int fd = -1, status;

    if (buf == NULL) {
        return -1;
    }
    if (cfg->exec_argv != NULL) {
        pid = fork();
        if (pid < 0) {
            perror("stashd-bench: fork");
            free(buf);
            return -1;
        }
        if (pid == 0) {
            /* keep the caller's $(...) from waiting on the server's stdout */
            dup2(STDERR_FILENO, STDOUT_FILENO);
            execvp(cfg->exec_argv[0], cfg->exec_argv);
            fprintf(stderr, "stashd-bench: exec %s: %s\n", cfg->exec_argv[0],
                    strerror(errno));
            _exit(127);
        }
    }
    deadline = t0 + (uint64_t)(cfg->timeout_s * 1e9);
    while (bench_now_ns() < deadline) {
        int r;

        if (pid > 0 && waitpid(pid, &status, WNOHANG) == pid) {
            fprintf(stderr, "stashd-bench: the server exited (status %d) "
                    "before serving a hit\n", status);
            pid = -1;
            break;
        }
        if (fd < 0) {
            struct timeval tv = { 1, 0 };

            fd = bench_connect(cfg, true);
            if (fd < 0) {
                usleep(200);
                continue;
            }
            if (t_conn == 0) {
                t_conn = bench_now_ns();
            }
            if (cfg->wait_listen) {
                break;
            }
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        }
        r = probe_once(fd, g, cfg->probe_key, buf, cap);
        if (r == 1) {
            t_hit = bench_now_ns();
            break;
        }
        if (r < 0) {
            close(fd);
            fd = -1;
        } else {
            misses++;
        }
        usleep(r == 0 ? 1000 : 200);
    }
    if (fd >= 0) {
        close(fd);
    }
    free(buf);
    printf("RESULT%s%s first_conn_ms=%.1f first_hit_ms=%.1f misses=%llu "
           "pid=%ld\n", cfg->label ? " label=" : "",
           cfg->label ? cfg->label : "",
           t_conn ? (t_conn - t0) / 1e6 : -1.0,
           t_hit ? (t_hit - t0) / 1e6 : -1.0, (unsigned long long)misses,
           (long)pid);
    return t_hit || (cfg->wait_listen && t_conn) ? 0 : -1;
}
