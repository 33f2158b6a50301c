/*
 * Helpers shared by the tests: start the real stashd on a free loopback
 * port and stop it by pid, and blocking socket I/O with timeouts so that no
 * test can hang. Only 127.0.0.1 is ever used.
 */
#ifndef STASHD_TESTS_UTIL_H
#define STASHD_TESTS_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The stashd binary under test: $STASHD_BIN, else ./build/stashd. */
const char *tu_bin(void);

/*
 * Starts stashd -p <free port> -l 127.0.0.1 plus args (NULL-terminated, may
 * be NULL) and waits until it accepts; returns its pid, or -1.
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

#endif
