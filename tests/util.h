/*
 * Helpers shared by the tests: start the real stashd on a free loopback
 * port and stop it by pid, blocking socket I/O with timeouts so that no
 * test can hang, and removal of a test's directory tree. Only 127.0.0.1 is
 * ever used.
 */
#ifndef STASHD_TESTS_UTIL_H
#define STASHD_TESTS_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The stashd binary under test: $STASHD_BIN, else ./build/stashd. */
const char *tu_bin(void);

/* $STASHD_BACKEND, the backend integration tests run against, or NULL. */
const char *tu_backend(void);

/*
 * Starts stashd -p <free port> -l 127.0.0.1 plus args (NULL-terminated, may
 * be NULL) and waits until it accepts; returns its pid, or -1. Without
 * --backend in args it runs on tu_backend() with a fresh data directory,
 * removed when the server is stopped or killed.
 */
pid_t tu_server_start(const char *const *args, uint16_t *port);

/* SIGTERM, waits up to 10 s (then SIGKILL); returns the exit status or -1. */
int tu_server_stop(pid_t pid);

/* SIGKILL and reap. */
void tu_server_kill(pid_t pid);

/* A blocking TCP connection to 127.0.0.1:port with 10 s I/O timeouts. */
int tu_connect(uint16_t port);

/* Sends all n bytes; 0 or -1. */
int tu_send(int fd, const void *p, size_t n);

/* Receives exactly n bytes; n, or what arrived before close/timeout. */
ssize_t tu_recv(int fd, void *p, size_t n);

/* Receives one binary response (24-byte header + body) into buf (cap bytes);
 * returns its total size or -1. */
ssize_t tu_recv_bin(int fd, uint8_t *buf, size_t cap);

/* Receives until the buffer ends with suffix; returns bytes or -1. */
ssize_t tu_recv_until(int fd, char *buf, size_t cap, const char *suffix);

/* 1 if the peer closed (read returns 0 within timeout_ms), else 0. */
int tu_closed(int fd, int timeout_ms);

/* Sets the receive timeout of fd in milliseconds. */
void tu_set_timeout(int fd, int ms);

/* Runs stashd with exactly args (argv[1..], NULL-terminated) and waits up
 * to timeout_ms; its stderr goes to err (cap bytes, NUL-terminated, may be
 * NULL). Returns the exit status, 128 + signal, or -1 if it had to be
 * killed at the deadline. */
int tu_run(const char *const *args, char *err, size_t cap, int timeout_ms);

/* Removes dir and everything below it, links not followed; errors are
 * ignored (a test's leftovers in /tmp must not fail it). */
void tu_rm_tree(const char *dir);

/* VmRSS of pid in kB from /proc/<pid>/status, or -1. */
long tu_rss_kb(pid_t pid);

/* Reads whatever arrives until the peer stays silent for idle_ms, closes,
 * or cap bytes are in; returns the bytes read, *closed = 1 if it closed. */
size_t tu_recv_idle(int fd, void *buf, size_t cap, int idle_ms, int *closed);

/* A binary protocol packet as the tests see it (header fields host order,
 * pointers into the caller's buffer). */
struct tu_bin {
    uint8_t        magic;
    uint8_t        opcode;
    uint16_t       keylen;
    uint8_t        extlen;
    uint8_t        datatype;
    uint16_t       status;    /* vbucket in a request */
    uint32_t       bodylen;
    uint32_t       opaque;
    uint64_t       cas;
    const uint8_t *extras;
    const uint8_t *key;
    const uint8_t *value;
    uint32_t       vlen;
};

/* Encodes a request (magic 0x80) into out; returns its size, 0 if it does
 * not fit in cap. Lengths are taken from the arguments as given. */
size_t tu_bin_req(uint8_t *out, size_t cap, uint8_t opcode, const void *ext,
                  uint8_t extlen, const void *key, uint16_t keylen,
                  const void *val, uint32_t vlen, uint32_t opaque,
                  uint64_t cas);

/* Decodes the packet at buf[0, len); returns its size, 0 if incomplete or
 * inconsistent (extlen + keylen > bodylen). */
size_t tu_bin_parse(const uint8_t *buf, size_t len, struct tu_bin *p);

/* Big-endian stores and loads. */
void tu_put32(uint8_t *p, uint32_t v);
void tu_put64(uint8_t *p, uint64_t v);
uint32_t tu_get32(const uint8_t *p);
uint64_t tu_get64(const uint8_t *p);

#endif
