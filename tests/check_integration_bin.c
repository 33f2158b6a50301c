/*
 * Integration tests of the binary protocol against the real stashd binary.
 * Each test starts its own server on a free 127.0.0.1 port and stops it by
 * pid. Expected replies are memcached 1.6.18's, observed on the wire and
 * hard-coded here (tests/notes/binary-oracle.py reproduces them); memcached
 * itself is not needed at run time. CAS values are the one thing memcached
 * and stashd number differently, so they are checked for consistency
 * (non-zero, new on every write, kept by touch) rather than by value.
 */
#include "tests/util.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Opcodes and statuses as they appear on the wire. */
enum {
    OP_GET = 0x00, OP_SET = 0x01, OP_ADD = 0x02, OP_REPLACE = 0x03,
    OP_DELETE = 0x04, OP_INCR = 0x05, OP_DECR = 0x06, OP_QUIT = 0x07,
    OP_FLUSH = 0x08, OP_GETQ = 0x09, OP_NOOP = 0x0a, OP_VERSION = 0x0b,
    OP_GETK = 0x0c, OP_GETKQ = 0x0d, OP_APPEND = 0x0e, OP_PREPEND = 0x0f,
    OP_STAT = 0x10, OP_SETQ = 0x11, OP_ADDQ = 0x12, OP_REPLACEQ = 0x13,
    OP_DELETEQ = 0x14, OP_INCRQ = 0x15, OP_DECRQ = 0x16, OP_QUITQ = 0x17,
    OP_FLUSHQ = 0x18, OP_APPENDQ = 0x19, OP_PREPENDQ = 0x1a,
    OP_VERBOSITY = 0x1b, OP_TOUCH = 0x1c, OP_GAT = 0x1d, OP_GATQ = 0x1e,
    OP_GATK = 0x23, OP_GATKQ = 0x24
};
enum {
    ST_OK = 0x00, ST_ENOENT = 0x01, ST_EEXISTS = 0x02, ST_E2BIG = 0x03,
    ST_EINVAL = 0x04, ST_NOT_STORED = 0x05, ST_EDELTA = 0x06,
    ST_UNKNOWN = 0x81
};

#define MB (1024 * 1024)
#define RBUF_CAP (8 * MB)
#define MARK 0xfeedfaceu

static uint8_t *rbuf;   /* replies of the single-threaded tests */

/* memcached's error bodies. */
static const char *
err_text(uint16_t st)
{
    switch (st) {
    case ST_ENOENT:
        return "Not found";
    case ST_EEXISTS:
        return "Data exists for key.";
    case ST_E2BIG:
        return "Too large.";
    case ST_EINVAL:
        return "Invalid arguments";
    case ST_NOT_STORED:
        return "Not stored.";
    case ST_EDELTA:
        return "Non-numeric server-side value for incr or decr";
    case ST_UNKNOWN:
        return "Unknown command";
    default:
        return "";
    }
}

static void
hex(char *out, size_t cap, const uint8_t *p, size_t n)
{
    size_t o = 0;

    out[0] = '\0';
    for (size_t i = 0; i < n && o + 4 < cap; i++) {
        o += (size_t)snprintf(out + o, cap - o, "%02x", p[i]);
    }
    if (n * 2 + 4 >= cap && o + 4 < cap) {
        snprintf(out + o, cap - o, "...");
    }
}

static void
sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static pid_t
start(const char *const *args, uint16_t *port)
{
    pid_t pid = tu_server_start(args, port);

    ck_assert_msg(pid > 0, "%s did not start", tu_bin());
    if (rbuf == NULL) {
        rbuf = malloc(RBUF_CAP);
        ck_assert_ptr_nonnull(rbuf);
    }
    return pid;
}

static void
stop(pid_t pid)
{
    ck_assert_int_eq(tu_server_stop(pid), 0);
}

static int
conn(uint16_t port)
{
    int fd = tu_connect(port);

    ck_assert_msg(fd >= 0, "cannot connect to 127.0.0.1:%u", port);
    return fd;
}

/* Builds one request into a fresh buffer (caller frees). */
static uint8_t *
build(size_t *n, uint8_t op, const void *ext, uint8_t extlen,
      const void *key, uint16_t keylen, const void *val, uint32_t vlen,
      uint32_t opaque, uint64_t cas)
{
    size_t cap = 24 + (size_t)extlen + keylen + vlen;
    uint8_t *b = malloc(cap);

    ck_assert_ptr_nonnull(b);
    *n = tu_bin_req(b, cap, op, ext, extlen, key, keylen, val, vlen, opaque,
                    cas);
    ck_assert_uint_eq(*n, cap);
    return b;
}

static void
sendreq(int fd, uint8_t op, const void *ext, uint8_t extlen, const char *key,
        const void *val, uint32_t vlen, uint32_t opaque, uint64_t cas)
{
    size_t n;
    uint8_t *b = build(&n, op, ext, extlen, key,
                       key ? (uint16_t)strlen(key) : 0, val, vlen, opaque,
                       cas);

    ck_assert_int_eq(tu_send(fd, b, n), 0);
    free(b);
}

/* Receives one reply into rbuf and checks the magic. */
static void
recvres(int fd, struct tu_bin *p)
{
    ssize_t n = tu_recv_bin(fd, rbuf, RBUF_CAP);

    ck_assert_msg(n >= 24, "no reply (connection closed or timed out)");
    ck_assert_uint_eq(tu_bin_parse(rbuf, (size_t)n, p), (size_t)n);
    ck_assert_uint_eq(p->magic, 0x81);
    ck_assert_uint_eq(p->datatype, 0);
}

/* Builds a response as memcached would send it. */
static size_t
resp(uint8_t *out, size_t cap, uint8_t op, uint16_t st, const void *ext,
     uint8_t extlen, const void *key, uint16_t keylen, const void *val,
     uint32_t vlen, uint32_t opaque, uint64_t cas)
{
    size_t n = tu_bin_req(out, cap, op, ext, extlen, key, keylen, val, vlen,
                          opaque, cas);

    ck_assert_uint_gt(n, 0);
    out[0] = 0x81;
    out[6] = (uint8_t)(st >> 8);
    out[7] = (uint8_t)st;
    return n;
}

/* The next n bytes from fd must be exactly exp. */
static void
expect_bytes(int fd, const uint8_t *exp, size_t n, const char *what)
{
    uint8_t *got = malloc(n + 1);
    ssize_t r;

    ck_assert_ptr_nonnull(got);
    r = tu_recv(fd, got, n);
    if (r != (ssize_t)n || memcmp(got, exp, n) != 0) {
        char e[200];
        char g[200];

        hex(e, sizeof(e), exp, n);
        hex(g, sizeof(g), got, r > 0 ? (size_t)r : 0);
        ck_abort_msg("%s: expected %zu bytes %s, got %zd bytes %s", what, n,
                     e, r, g);
    }
    free(got);
}

/* An error reply exactly as memcached sends it. */
static void
expect_err(int fd, uint8_t op, uint16_t st, uint32_t opaque)
{
    uint8_t exp[128];
    const char *t = err_text(st);
    size_t n = resp(exp, sizeof(exp), op, st, NULL, 0, NULL, 0, t,
                    (uint32_t)strlen(t), opaque, 0);
    char what[64];

    snprintf(what, sizeof(what), "op %02x status %02x opaque %x", op, st,
             opaque);
    expect_bytes(fd, exp, n, what);
}

/* A bodiless success reply (NOOP, FLUSH, QUIT, DELETE). */
static void
expect_empty_ok(int fd, uint8_t op, uint32_t opaque)
{
    uint8_t exp[24];
    char what[64];

    resp(exp, sizeof(exp), op, ST_OK, NULL, 0, NULL, 0, NULL, 0, opaque, 0);
    snprintf(what, sizeof(what), "op %02x ok opaque %x", op, opaque);
    expect_bytes(fd, exp, sizeof(exp), what);
}

static void
noop(int fd, uint32_t opaque)
{
    sendreq(fd, OP_NOOP, NULL, 0, NULL, NULL, 0, opaque, 0);
    expect_empty_ok(fd, OP_NOOP, opaque);
}

/* A store reply: status OK, no body, a non-zero CAS (returned). */
static uint64_t
expect_stored(int fd, uint8_t op, uint32_t opaque)
{
    struct tu_bin p;

    recvres(fd, &p);
    ck_assert_msg(p.status == ST_OK, "op %02x: status %02x (%.*s)", op,
                  p.status, (int)p.vlen, (const char *)p.value);
    ck_assert_uint_eq(p.opcode, op);
    ck_assert_uint_eq(p.bodylen, 0);
    ck_assert_uint_eq(p.opaque, opaque);
    ck_assert_uint_ne(p.cas, 0);
    return p.cas;
}

static uint64_t
set_kv(int fd, const char *key, const void *val, uint32_t vlen,
       uint32_t flags, uint32_t exptime)
{
    uint8_t ext[8];

    tu_put32(ext, flags);
    tu_put32(ext + 4, exptime);
    sendreq(fd, OP_SET, ext, 8, key, val, vlen, 0x5e7, 0);
    return expect_stored(fd, OP_SET, 0x5e7);
}

static uint64_t
set_str(int fd, const char *key, const char *val, uint32_t flags)
{
    return set_kv(fd, key, val, (uint32_t)strlen(val), flags, 0);
}

/* GET key must hit with exactly this value, flags and (if non-zero) CAS. */
static void
expect_hit(int fd, const char *key, const void *val, uint32_t vlen,
           uint32_t flags, uint64_t cas)
{
    struct tu_bin p;

    sendreq(fd, OP_GET, NULL, 0, key, NULL, 0, 0x6e7, 0);
    recvres(fd, &p);
    ck_assert_msg(p.status == ST_OK, "GET %s: status %02x", key, p.status);
    ck_assert_uint_eq(p.opcode, OP_GET);
    ck_assert_uint_eq(p.opaque, 0x6e7);
    ck_assert_uint_eq(p.extlen, 4);
    ck_assert_uint_eq(p.keylen, 0);
    ck_assert_uint_eq(tu_get32(p.extras), flags);
    if (cas != 0) {
        ck_assert_uint_eq(p.cas, cas);
    } else {
        ck_assert_uint_ne(p.cas, 0);
    }
    ck_assert_uint_eq(p.vlen, vlen);
    ck_assert_msg(memcmp(p.value, val, vlen) == 0, "GET %s: value differs",
                  key);
}

static void
expect_miss(int fd, const char *key)
{
    sendreq(fd, OP_GET, NULL, 0, key, NULL, 0, 0x3155, 0);
    expect_err(fd, OP_GET, ST_ENOENT, 0x3155);
}

/* Nothing more arrives within ms, and the connection stays open. */
static void
expect_silence(int fd, int ms)
{
    uint8_t b[256];
    int closed;
    size_t n = tu_recv_idle(fd, b, sizeof(b), ms, &closed);

    if (n > 0) {
        char h[200];

        hex(h, sizeof(h), b, n);
        ck_abort_msg("unexpected %zu extra bytes: %s", n, h);
    }
    ck_assert_msg(!closed, "connection closed unexpectedly");
}

/* The server closes the connection without sending anything more. */
static void
expect_closed(int fd)
{
    uint8_t b[256];
    int closed;
    size_t n = tu_recv_idle(fd, b, sizeof(b), 3000, &closed);

    if (n > 0) {
        char h[200];

        hex(h, sizeof(h), b, n);
        ck_abort_msg("expected a close, got %zu more bytes: %s", n, h);
    }
    ck_assert_msg(closed, "connection still open");
}

static void
fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)((i * 131u + (i >> 8) + seed * 7u) & 0xff);
    }
}

/* ------------------------------------------------------------------ */
/* 1. pipelined GetKQ */

START_TEST(pipelined_getkq_then_noop)
{
    uint16_t port;
    pid_t pid = start(NULL, &port);
    int fd = conn(port);
    uint64_t cas[50];
    uint8_t *req = malloc(100 * 64 + 24);
    size_t len = 0;
    char key[32];
    char val[64];

    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof(key), "hit-%02d", i);
        snprintf(val, sizeof(val), "value-%d-%0*d", i, i, 0);
        cas[i] = set_str(fd, key, val, 0x1000u + (uint32_t)i * 7u);
    }
    for (int i = 0; i < 100; i++) {
        if (i % 2 == 0) {
            snprintf(key, sizeof(key), "hit-%02d", i / 2);
        } else {
            snprintf(key, sizeof(key), "miss-%02d", i / 2);
        }
        len += tu_bin_req(req + len, 64, OP_GETKQ, NULL, 0, key,
                          (uint16_t)strlen(key), NULL, 0, (uint32_t)i, 0);
    }
    len += tu_bin_req(req + len, 24, OP_NOOP, NULL, 0, NULL, 0, NULL, 0,
                      MARK, 0);
    ck_assert_int_eq(tu_send(fd, req, len), 0);
    for (int i = 0; i < 50; i++) {
        struct tu_bin p;

        snprintf(key, sizeof(key), "hit-%02d", i);
        snprintf(val, sizeof(val), "value-%d-%0*d", i, i, 0);
        recvres(fd, &p);
        ck_assert_uint_eq(p.opcode, OP_GETKQ);
        ck_assert_uint_eq(p.status, ST_OK);
        ck_assert_uint_eq(p.opaque, (uint32_t)i * 2);
        ck_assert_uint_eq(p.extlen, 4);
        ck_assert_uint_eq(tu_get32(p.extras), 0x1000u + (uint32_t)i * 7u);
        ck_assert_uint_eq(p.keylen, strlen(key));
        ck_assert(memcmp(p.key, key, p.keylen) == 0);
        ck_assert_uint_eq(p.vlen, strlen(val));
        ck_assert(memcmp(p.value, val, p.vlen) == 0);
        ck_assert_uint_eq(p.cas, cas[i]);
    }
    expect_empty_ok(fd, OP_NOOP, MARK);
    expect_silence(fd, 200);
    free(req);
    close(fd);
    stop(pid);
}
END_TEST

/* ------------------------------------------------------------------ */
/* 2. requests fragmented arbitrarily */

START_TEST(set_get_byte_by_byte)
{
    uint16_t port;
    pid_t pid = start(NULL, &port);
    int fd = conn(port);
    uint8_t val[100];
    uint8_t ext[8];
    uint8_t buf[512];
    size_t n;
    uint64_t cas;

    fill(val, sizeof(val), 3);
    val[0] = 0x80;   /* a request magic inside a value is just data */
    val[1] = 0x00;
    tu_put32(ext, 0xcafef00du);
    tu_put32(ext + 4, 0);
    n = tu_bin_req(buf, sizeof(buf), OP_SET, ext, 8, "bytewise", 8, val,
                   sizeof(val), 1, 0);
    n += tu_bin_req(buf + n, sizeof(buf) - n, OP_GET, NULL, 0, "bytewise", 8,
                    NULL, 0, 2, 0);
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(tu_send(fd, buf + i, 1), 0);
    }
    cas = expect_stored(fd, OP_SET, 1);
    {
        struct tu_bin p;

        recvres(fd, &p);
        ck_assert_uint_eq(p.opcode, OP_GET);
        ck_assert_uint_eq(p.status, ST_OK);
        ck_assert_uint_eq(p.opaque, 2);
        ck_assert_uint_eq(tu_get32(p.extras), 0xcafef00du);
        ck_assert_uint_eq(p.cas, cas);
        ck_assert_uint_eq(p.vlen, sizeof(val));
        ck_assert(memcmp(p.value, val, sizeof(val)) == 0);
    }
    expect_silence(fd, 100);
    close(fd);
    stop(pid);
}
END_TEST

START_TEST(split_at_every_boundary)
{
    uint16_t port;
    pid_t pid = start(NULL, &port);
    int fd = conn(port);
    uint8_t ext[8] = { 0, 0, 0, 9, 0, 0, 0, 0 };
    uint8_t buf[256];
    char val[32];
    size_t n = 0;

    /* SET + GET: 24 + 8 + 5 + 20, then 24 + 5 bytes. */
    for (size_t cut = 1; cut < 86; cut++) {
        struct tu_bin p;

        snprintf(val, sizeof(val), "split-value-%08zu", cut);
        n = tu_bin_req(buf, sizeof(buf), OP_SET, ext, 8, "split", 5, val, 20,
                       (uint32_t)cut, 0);
        n += tu_bin_req(buf + n, sizeof(buf) - n, OP_GET, NULL, 0, "split",
                        5, NULL, 0, (uint32_t)cut + 1000, 0);
        ck_assert_uint_eq(n, 86);
        ck_assert_int_eq(tu_send(fd, buf, cut), 0);
        sleep_ms(1);
        ck_assert_int_eq(tu_send(fd, buf + cut, n - cut), 0);
        expect_stored(fd, OP_SET, (uint32_t)cut);
        recvres(fd, &p);
        ck_assert_uint_eq(p.status, ST_OK);
        ck_assert_uint_eq(p.opaque, (uint32_t)cut + 1000);
        ck_assert_uint_eq(tu_get32(p.extras), 9);
        ck_assert_uint_eq(p.vlen, 20);
        ck_assert(memcmp(p.value, val, 20) == 0);
    }
    expect_silence(fd, 100);
    close(fd);
    stop(pid);
}
END_TEST

/* ------------------------------------------------------------------ */
/* 3. values at and over -I */

static void
max_value_roundtrip(int fd, uint32_t flags)
{
    const char *key = "bigkey";
    /* memcached 1.6 (64-bit): 48-byte item header, key + NUL, flags when
     * non-zero, value + \r\n, 8-byte CAS, all within -I. */
    uint32_t max = 1048576 - 48 - 7 - (flags ? 4 : 0) - 2 - 8;
    uint8_t *val = malloc(max + 1);
    uint8_t ext[8];
    uint8_t noop[24];
    uint64_t cas;

    ck_assert_ptr_nonnull(val);
    fill(val, max + 1, flags);
    cas = set_kv(fd, key, val, max, flags, 0);
    expect_hit(fd, key, val, max, flags, cas);

    /* One byte more is refused, the body swallowed, the old value gone
     * (memcached unlinks it so no stale data survives a failed set). */
    tu_put32(ext, flags);
    tu_put32(ext + 4, 0);
    sendreq(fd, OP_SET, ext, 8, key, val, max + 1, 7, 0);
    tu_bin_req(noop, 24, OP_NOOP, NULL, 0, NULL, 0, NULL, 0, 8, 0);
    ck_assert_int_eq(tu_send(fd, noop, 24), 0);
    expect_err(fd, OP_SET, ST_E2BIG, 7);
    expect_empty_ok(fd, OP_NOOP, 8);
    expect_miss(fd, key);
    free(val);
}

START_TEST(largest_value_and_one_more)
{
    const char *args[] = { "-I", "1m", NULL };
    uint16_t port;
    pid_t pid = start(args, &port);
    int fd = conn(port);

    max_value_roundtrip(fd, 0);
    max_value_roundtrip(fd, 0xdeadbeefu);
    set_str(fd, "after", "still-works", 1);
    expect_hit(fd, "after", "still-works", 11, 1, 0);
    close(fd);
    stop(pid);
}
END_TEST

START_TEST(five_mb_value_e2big_in_order)
{
    const char *args[] = { "-I", "1m", NULL };
    uint16_t port;
    pid_t pid = start(args, &port);
    int fd = conn(port);
    int other = conn(port);
    uint32_t big = 5 * MB;
    uint8_t *val = malloc(big);
    uint8_t ext[8] = { 0 };
    uint8_t *req;
    size_t n;
    size_t m;

    ck_assert_ptr_nonnull(val);
    for (uint32_t i = 0; i + 24 <= big; i += 24) {
        tu_bin_req(val + i, 24, OP_FLUSH, NULL, 0, NULL, 0, NULL, 0, 0xbad,
                   0);
    }
    set_str(other, "keep", "kept", 3);
    set_str(fd, "five", "old", 0);

    /* SET then NOOP in one stream: E2BIG, then the NOOP's reply. */
    req = build(&n, OP_SET, ext, 8, "five", 4, val, big, 11, 0);
    req = realloc(req, n + 24);
    m = tu_bin_req(req + n, 24, OP_NOOP, NULL, 0, NULL, 0, NULL, 0, 12, 0);
    ck_assert_int_eq(tu_send(fd, req, n + m), 0);
    expect_err(fd, OP_SET, ST_E2BIG, 11);
    expect_empty_ok(fd, OP_NOOP, 12);
    expect_hit(other, "keep", "kept", 4, 3, 0);
    free(req);

    /* SETQ reports the error too; APPEND leaves the old value alone. */
    req = build(&n, OP_SETQ, ext, 8, "five", 4, val, big, 13, 0);
    ck_assert_int_eq(tu_send(fd, req, n), 0);
    free(req);
    expect_err(fd, OP_SETQ, ST_E2BIG, 13);
    set_str(fd, "five", "old", 0);
    req = build(&n, OP_APPEND, NULL, 0, "five", 4, val, big, 14, 0);
    ck_assert_int_eq(tu_send(fd, req, n), 0);
    free(req);
    expect_err(fd, OP_APPEND, ST_E2BIG, 14);
    expect_hit(fd, "five", "old", 3, 0, 0);
    noop(fd, 15);
    expect_silence(fd, 50);
    expect_hit(other, "keep", "kept", 4, 3, 0);
    close(other);
    close(fd);
    stop(pid);
    free(val);
}
END_TEST

START_TEST(oversized_set_drops_old_value)
{
    const char *args[] = { "-I", "1m", NULL };
    uint16_t port;
    pid_t pid = start(args, &port);
    int fd = conn(port);
    uint32_t big = 5 * MB;
    uint8_t *val = calloc(1, big);
    uint8_t ext[8] = { 0 };
    uint8_t *req;
    size_t n;

    ck_assert_ptr_nonnull(val);
    /* memcached unlinks the old item when a SET's value is refused, so a
     * reader never sees the data the client meant to replace; whether the
     * value is just over the limit or far over it. */
    set_str(fd, "five", "old", 0);
    req = build(&n, OP_SET, ext, 8, "five", 4, val, big, 11, 0);
    ck_assert_int_eq(tu_send(fd, req, n), 0);
    free(req);
    expect_err(fd, OP_SET, ST_E2BIG, 11);
    expect_miss(fd, "five");
    close(fd);
    stop(pid);
    free(val);
}
END_TEST

/* ------------------------------------------------------------------ */
/* 4. many connections, every result predicted by a per-connection model */

#define NCONN 200
#define NOPS 1000
#define NTHREADS 4
#define NKEYS 4
#define VMAX 256

struct model {
    bool     exists;
    bool     numeric;     /* the value is a decimal incr/decr made */
    uint64_t num;
    uint32_t flags;
    uint64_t cas;
    uint32_t vlen;
    uint8_t  val[VMAX];
};

struct sconn {
    int          fd;
    unsigned     id;
    uint64_t     rng;
    char         key[NKEYS][24];
    struct model m[NKEYS];
    /* the request in flight */
    uint8_t      op;
    int          ki;
    uint32_t     opaque;
    uint16_t     want;       /* expected status */
    bool         write;      /* success replaces the model with next */
    bool         del;        /* success erases the key */
    bool         arith;      /* the reply carries next.num */
    struct model next;
};

struct sthread {
    pthread_t     tid;
    uint16_t      port;
    struct sconn *c;
    unsigned      n;
    char          err[512];
    uint64_t      ops;
};

static uint64_t
rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static unsigned
digits(uint64_t v)
{
    unsigned d = 1;

    while (v >= 10) {
        v /= 10;
        d++;
    }
    return d;
}

static void
model_num(struct model *m, uint64_t v, uint32_t flags)
{
    m->exists = true;
    m->numeric = true;
    m->num = v;
    m->flags = flags;
    m->vlen = (uint32_t)snprintf((char *)m->val, VMAX, "%" PRIu64, v);
}

/* Random bytes, the first one a letter so the value is never numeric. */
static uint32_t
rnd_bytes(uint64_t *s, uint8_t *out, uint32_t max, char first)
{
    uint32_t n = 1 + (uint32_t)(rnd(s) % max);

    out[0] = (uint8_t)first;
    for (uint32_t i = 1; i < n; i++) {
        out[i] = (uint8_t)rnd(s);
    }
    return n;
}

/* Picks the next operation from the model, sends it, and records what
 * the reply must be. */
static int
stress_send(struct sconn *c, uint32_t step)
{
    uint8_t req[24 + 20 + 24 + VMAX];
    uint8_t ext[20];
    uint8_t data[VMAX];
    uint32_t dlen = 0;
    uint64_t r = rnd(&c->rng);
    int ki = (int)(rnd(&c->rng) % NKEYS);
    struct model *m = &c->m[ki];
    const char *key = c->key[ki];
    uint64_t cas = 0;
    uint8_t extlen = 0;
    size_t n;
    int pick = (int)(r % 16);

    c->ki = ki;
    c->opaque = step << 8 | c->id;
    c->write = c->del = c->arith = false;
    c->next = *m;
    if ((pick == 9 || pick == 10) && m->vlen + 16 > VMAX) {
        pick = 5;   /* keep values bounded: replace instead of growing */
    }
    if (pick == 12 && m->exists && m->numeric) {
        uint64_t d = 1 + rnd(&c->rng) % 50;
        uint64_t v = m->num >= d ? m->num - d : 0;

        if (digits(v) != digits(m->num)) {
            pick = 11;   /* memcached pads a shrunk number with spaces */
        }
    }
    switch (pick) {
    case 0: case 1: case 2: case 3: case 4:
        c->op = OP_GET;
        c->want = m->exists ? ST_OK : ST_ENOENT;
        break;
    case 5: case 6: case 7: case 8: case 14: case 15:
        c->op = pick == 7 ? OP_ADD : pick == 8 ? OP_REPLACE : OP_SET;
        dlen = rnd_bytes(&c->rng, data, 64, 'v');
        c->next.exists = true;
        c->next.numeric = false;
        c->next.flags = (uint32_t)rnd(&c->rng);
        c->next.vlen = dlen;
        memcpy(c->next.val, data, dlen);
        tu_put32(ext, c->next.flags);
        tu_put32(ext + 4, 0);
        extlen = 8;
        c->write = true;
        if (pick == 7) {
            c->want = m->exists ? ST_EEXISTS : ST_OK;
        } else if (pick == 8) {
            c->want = m->exists ? ST_OK : ST_ENOENT;
        } else if (pick >= 14) {
            /* CAS: the right one half the time. */
            if (m->exists && (rnd(&c->rng) & 1)) {
                cas = m->cas;
                c->want = ST_OK;
            } else if (m->exists) {
                cas = m->cas + 1 + rnd(&c->rng) % 5;
                c->want = ST_EEXISTS;
            } else {
                cas = 1 + rnd(&c->rng) % 1000000;
                c->want = ST_ENOENT;
            }
        } else {
            c->want = ST_OK;
        }
        break;
    case 9: case 10:
        c->op = pick == 9 ? OP_APPEND : OP_PREPEND;
        dlen = rnd_bytes(&c->rng, data, 16, pick == 9 ? 'a' : 'p');
        c->want = m->exists ? ST_OK : ST_NOT_STORED;
        c->write = true;
        c->next.numeric = false;
        if (pick == 9) {
            memcpy(c->next.val + m->vlen, data, dlen);
        } else {
            memcpy(c->next.val, data, dlen);
            memcpy(c->next.val + dlen, m->val, m->vlen);
        }
        c->next.vlen = m->vlen + dlen;
        break;
    case 11: case 12: {
        uint64_t delta = 1 + rnd(&c->rng) % 50;
        uint64_t init = rnd(&c->rng) % 100000;

        c->op = pick == 11 ? OP_INCR : OP_DECR;
        tu_put64(ext, delta);
        tu_put64(ext + 8, init);
        tu_put32(ext + 16, 0);
        extlen = 20;
        c->write = true;
        c->arith = true;
        if (!m->exists) {
            c->want = ST_OK;
            model_num(&c->next, init, 0);
        } else if (!m->numeric) {
            c->want = ST_EDELTA;
        } else {
            c->want = ST_OK;
            model_num(&c->next, pick == 11 ? m->num + delta
                      : (m->num >= delta ? m->num - delta : 0), m->flags);
        }
        break;
    }
    default:
        c->op = OP_DELETE;
        c->want = m->exists ? ST_OK : ST_ENOENT;
        c->del = true;
        break;
    }
    n = tu_bin_req(req, sizeof(req), c->op, ext, extlen, key,
                   (uint16_t)strlen(key), data, dlen, c->opaque, cas);
    return n > 0 ? tu_send(c->fd, req, n) : -1;
}

static int
stress_check(struct sconn *c, uint8_t *buf, size_t cap, char *err,
             size_t errcap)
{
    struct model *m = &c->m[c->ki];
    struct tu_bin p;
    ssize_t n = tu_recv_bin(c->fd, buf, cap);

#define FAIL(...) do { \
        int o_ = snprintf(err, errcap, "conn %u op %02x key %s: ", c->id, \
                          c->op, c->key[c->ki]); \
        snprintf(err + o_, errcap - (size_t)o_, __VA_ARGS__); \
        return -1; \
    } while (0)

    if (n < 24 || tu_bin_parse(buf, (size_t)n, &p) != (size_t)n) {
        FAIL("no reply");
    }
    if (p.magic != 0x81 || p.opcode != c->op || p.opaque != c->opaque) {
        FAIL("bad header: magic %02x op %02x opaque %x", p.magic, p.opcode,
             p.opaque);
    }
    if (p.status != c->want) {
        FAIL("status %02x, want %02x (%.*s)", p.status, c->want,
             (int)p.vlen, (const char *)p.value);
    }
    if (p.status != ST_OK) {
        const char *t = err_text(p.status);

        if (p.cas != 0 || p.extlen != 0 || p.keylen != 0 ||
            p.vlen != strlen(t) || memcmp(p.value, t, p.vlen) != 0) {
            FAIL("error reply malformed");
        }
        return 0;
    }
    if (c->op == OP_GET) {
        if (p.extlen != 4 || tu_get32(p.extras) != m->flags) {
            FAIL("flags %x, want %x", p.extlen == 4 ? tu_get32(p.extras) : 0,
                 m->flags);
        }
        if (p.cas != m->cas) {
            FAIL("cas %" PRIu64 ", want %" PRIu64, p.cas, m->cas);
        }
        if (p.vlen != m->vlen || memcmp(p.value, m->val, m->vlen) != 0) {
            FAIL("value differs (len %u, want %u)", p.vlen, m->vlen);
        }
        return 0;
    }
    if (c->del) {
        if (p.bodylen != 0 || p.cas != 0) {
            FAIL("delete reply has a body or cas");
        }
        m->exists = false;
        return 0;
    }
    if (c->arith) {
        if (p.vlen != 8 || tu_get64(p.value) != c->next.num) {
            FAIL("arith result %" PRIu64 ", want %" PRIu64,
                 p.vlen == 8 ? tu_get64(p.value) : 0, c->next.num);
        }
    } else if (p.bodylen != 0) {
        FAIL("store reply has a body");
    }
    if (p.cas == 0 || p.cas == m->cas) {
        FAIL("write did not give a new cas (%" PRIu64 ")", p.cas);
    }
    *m = c->next;
    m->cas = p.cas;
    return 0;
#undef FAIL
}

static void *
stress_thread(void *arg)
{
    struct sthread *t = arg;
    uint8_t buf[1024];

    for (uint32_t step = 0; step < NOPS; step++) {
        for (unsigned i = 0; i < t->n; i++) {
            if (stress_send(&t->c[i], step) != 0) {
                snprintf(t->err, sizeof(t->err), "conn %u: send failed",
                         t->c[i].id);
                return NULL;
            }
        }
        for (unsigned i = 0; i < t->n; i++) {
            if (stress_check(&t->c[i], buf, sizeof(buf), t->err,
                             sizeof(t->err)) != 0) {
                return NULL;
            }
            t->ops++;
        }
    }
    return NULL;
}

START_TEST(two_hundred_connections_mixed_ops)
{
    uint16_t port;
    pid_t pid = start(NULL, &port);
    struct sconn *c = calloc(NCONN, sizeof(*c));
    struct sthread th[NTHREADS];
    uint64_t total = 0;
    double t0 = now_s();

    ck_assert_ptr_nonnull(c);
    for (unsigned i = 0; i < NCONN; i++) {
        c[i].fd = conn(port);
        c[i].id = i;
        c[i].rng = 0x5eed0000ull + i;
        for (int k = 0; k < NKEYS; k++) {
            snprintf(c[i].key[k], sizeof(c[i].key[k]), "stress:%03u:%d", i,
                     k);
        }
    }
    memset(th, 0, sizeof(th));
    for (unsigned i = 0; i < NTHREADS; i++) {
        th[i].port = port;
        th[i].c = c + i * (NCONN / NTHREADS);
        th[i].n = NCONN / NTHREADS;
        ck_assert_int_eq(pthread_create(&th[i].tid, NULL, stress_thread,
                                        &th[i]), 0);
    }
    for (unsigned i = 0; i < NTHREADS; i++) {
        pthread_join(th[i].tid, NULL);
    }
    for (unsigned i = 0; i < NTHREADS; i++) {
        ck_assert_msg(th[i].err[0] == '\0', "%s", th[i].err);
        total += th[i].ops;
    }
    ck_assert_uint_eq(total, (uint64_t)NCONN * NOPS);
    fprintf(stderr, "stress: %" PRIu64 " operations in %.1f s\n", total,
            now_s() - t0);
    /* Every connection's final state, read back through a fresh one. */
    {
        int fd = conn(port);

        for (unsigned i = 0; i < NCONN; i += 17) {
            for (int k = 0; k < NKEYS; k++) {
                const struct model *m = &c[i].m[k];

                if (m->exists) {
                    expect_hit(fd, c[i].key[k], m->val, m->vlen, m->flags,
                               m->cas);
                } else {
                    expect_miss(fd, c[i].key[k]);
                }
            }
        }
        close(fd);
    }
    for (unsigned i = 0; i < NCONN; i++) {
        close(c[i].fd);
    }
    free(c);
    stop(pid);
}
END_TEST

/* ------------------------------------------------------------------ */
/* 5. malformed packets */

/* Sends raw bytes on a fresh connection. */
static int
fresh(uint16_t port, const void *p, size_t n)
{
    int fd = conn(port);

    ck_assert_int_eq(tu_send(fd, p, n), 0);
    return fd;
}

/*
 * One malformed request per case, on a fresh connection, with what
 * memcached 1.6.18 answers. A NOOP (opaque 0x11223344) goes first where
 * noted: replies to requests before the bad one must still be sent.
 */
enum bad_reply { BAD_CLOSE, BAD_ERR_CLOSE, BAD_ERR_KEPT };

struct bad_case {
    const char     *name;
    bool            noop_first;
    enum bad_reply  reply;
    uint8_t         op;       /* of the error reply */
    uint16_t        status;
};

static const struct bad_case bad_cases[] = {
    { "magic 0x81 after a NOOP", true, BAD_CLOSE, 0, 0 },
    { "magic 0x00 after a NOOP", true, BAD_CLOSE, 0, 0 },
    { "magic 0xff after a NOOP", true, BAD_CLOSE, 0, 0 },
    { "GET keylen 1 bodylen 0, then a NOOP", false, BAD_ERR_CLOSE, OP_GET,
      ST_UNKNOWN },
    { "SET extlen 8 keylen 1 bodylen 8, then a NOOP", false, BAD_ERR_CLOSE,
      OP_SET, ST_UNKNOWN },
    { "GET key of 251 bytes", false, BAD_ERR_CLOSE, OP_GET, ST_EINVAL },
    { "SET key of 251 bytes", false, BAD_ERR_CLOSE, OP_SET, ST_EINVAL },
    { "GET with a value", false, BAD_ERR_CLOSE, OP_GET, ST_EINVAL },
    { "SET with 4 bytes of extras", false, BAD_ERR_CLOSE, OP_SET,
      ST_EINVAL },
    { "SET extlen 4, bodylen 2 GB", false, BAD_ERR_CLOSE, OP_SET,
      ST_EINVAL },
    { "NOOP with a key", false, BAD_ERR_CLOSE, OP_NOOP, ST_EINVAL },
    { "GET key of 251 bytes after a NOOP", true, BAD_ERR_CLOSE, OP_GET,
      ST_EINVAL },
    { "opcode 0x50 with a 5-byte body, then a NOOP", false, BAD_ERR_KEPT,
      0x50, ST_UNKNOWN },
    { "VERBOSITY (0x1b), then a NOOP", false, BAD_ERR_KEPT, OP_VERBOSITY,
      ST_UNKNOWN },
};

/* Builds bad case i at buf; returns its size. */
static size_t
bad_build(int i, uint8_t *buf, size_t cap)
{
    static const uint8_t magics[] = { 0x81, 0x00, 0xff };
    static const uint8_t ext[8] = { 0 };
    char key251[252];
    size_t n = 0;
    size_t at;

    memset(key251, 'a', 251);
    key251[251] = '\0';
    if (bad_cases[i].noop_first) {
        n = tu_bin_req(buf, cap, OP_NOOP, NULL, 0, NULL, 0, NULL, 0,
                       0x11223344u, 0);
    }
    at = n;
    switch (i) {
    case 0: case 1: case 2:
        n += tu_bin_req(buf + n, cap - n, OP_NOOP, NULL, 0, NULL, 0, NULL, 0,
                        2, 0);
        buf[at] = magics[i];
        return n;
    case 3:
        /* extlen + keylen > bodylen: the header alone, then a NOOP. */
        tu_bin_req(buf, cap, OP_GET, NULL, 0, "k", 1, NULL, 0, 0x11223344u,
                   0);
        tu_put32(buf + 8, 0);
        return 24 + tu_bin_req(buf + 24, cap - 24, OP_NOOP, NULL, 0, NULL, 0,
                               NULL, 0, MARK, 0);
    case 4:
        tu_bin_req(buf, cap, OP_SET, ext, 8, "k", 1, NULL, 0, 0x11223344u,
                   0);
        tu_put32(buf + 8, 8);
        return 24 + tu_bin_req(buf + 24, cap - 24, OP_NOOP, NULL, 0, NULL, 0,
                               NULL, 0, MARK, 0);
    case 5: case 11:
        return n + tu_bin_req(buf + n, cap - n, OP_GET, NULL, 0, key251, 251,
                              NULL, 0, 0x11223344u, 0);
    case 6:
        return tu_bin_req(buf, cap, OP_SET, ext, 8, key251, 251, "v", 1,
                          0x11223344u, 0);
    case 7:
        return tu_bin_req(buf, cap, OP_GET, NULL, 0, "keep", 4, "v", 1,
                          0x11223344u, 0);
    case 8:
        return tu_bin_req(buf, cap, OP_SET, ext, 4, "keep", 4, "evil", 4,
                          0x11223344u, 0);
    case 9:
        n = tu_bin_req(buf, cap, OP_SET, ext, 4, "keep", 4, NULL, 0,
                       0x11223344u, 0);
        tu_put32(buf + 8, 0x7fffffffu);
        return n;
    case 10:
        return tu_bin_req(buf, cap, OP_NOOP, NULL, 0, "k", 1, NULL, 0,
                          0x11223344u, 0);
    case 12:
        n = tu_bin_req(buf, cap, 0x50, NULL, 0, NULL, 0, "zzzzz", 5,
                       0x11223344u, 0);
        return n + tu_bin_req(buf + n, cap - n, OP_NOOP, NULL, 0, NULL, 0,
                              NULL, 0, MARK, 0);
    default:
        n = tu_bin_req(buf, cap, OP_VERBOSITY, NULL, 0, NULL, 0, NULL, 0,
                       0x11223344u, 0);
        return n + tu_bin_req(buf + n, cap - n, OP_NOOP, NULL, 0, NULL, 0,
                              NULL, 0, MARK, 0);
    }
}

START_TEST(malformed_packet)
{
    const struct bad_case *bc = &bad_cases[_i];
    uint16_t port;
    pid_t pid = start(NULL, &port);
    int k = conn(port);
    uint64_t kcas = set_str(k, "keep", "safe", 42);
    uint8_t buf[1024];
    size_t n = bad_build(_i, buf, sizeof(buf));
    int fd = conn(port);

    fprintf(stderr, "malformed: %s\n", bc->name);
    ck_assert_int_eq(tu_send(fd, buf, n), 0);
    if (bc->noop_first) {
        expect_empty_ok(fd, OP_NOOP, 0x11223344u);
    }
    if (bc->reply != BAD_CLOSE) {
        expect_err(fd, bc->op, bc->status, 0x11223344u);
    }
    if (bc->reply == BAD_ERR_KEPT) {
        expect_empty_ok(fd, OP_NOOP, MARK);
        expect_silence(fd, 100);
        noop(fd, 5);
    } else {
        expect_closed(fd);
    }
    close(fd);
    /* Another client is served throughout, its data intact. */
    expect_hit(k, "keep", "safe", 4, 42, kcas);
    noop(k, 99);
    close(k);
    stop(pid);
}
END_TEST

/* ------------------------------------------------------------------ */
/* 6. a client that never reads */

/*
 * Replies to one batch pass the server's 1 MB back-pressure mark, and small
 * requests follow in the same write: they must still be answered although
 * no further byte ever arrives (a hang once: held-back requests ran only
 * on the next read).
 */
START_TEST(batch_past_back_pressure_mark)
{
    uint16_t port;
    pid_t pid = start(NULL, &port);
    int fd = conn(port);
    uint32_t vlen = 1000 * 1000;
    uint8_t *val = malloc(vlen);
    uint8_t batch[256];
    size_t blen = 0;
    struct tu_bin p;

    ck_assert_ptr_nonnull(val);
    fill(val, vlen, 7);
    set_kv(fd, "big", val, vlen, 0, 0);
    for (uint32_t i = 0; i < 2; i++) {
        blen += tu_bin_req(batch + blen, sizeof(batch) - blen, OP_GETKQ,
                           NULL, 0, "big", 3, NULL, 0, 10 + i, 0);
    }
    blen += tu_bin_req(batch + blen, sizeof(batch) - blen, OP_GET, NULL, 0,
                       "nope", 4, NULL, 0, 20, 0);
    blen += tu_bin_req(batch + blen, sizeof(batch) - blen, OP_NOOP, NULL, 0,
                       NULL, 0, NULL, 0, 21, 0);
    ck_assert_int_eq(tu_send(fd, batch, blen), 0);
    for (uint32_t i = 0; i < 2; i++) {
        recvres(fd, &p);
        ck_assert_uint_eq(p.opcode, OP_GETKQ);
        ck_assert_uint_eq(p.vlen, vlen);
        ck_assert_mem_eq(p.value, val, vlen);
    }
    expect_err(fd, OP_GET, 0x01, 20);
    expect_empty_ok(fd, OP_NOOP, 21);
    close(fd);
    free(val);
    stop(pid);
}
END_TEST

START_TEST(slow_reader_is_not_buffered)
{
    uint16_t port;
    pid_t pid = start(NULL, &port);
    int c1 = conn(port);
    int slow = conn(port);
    uint32_t vlen = 500 * 1024;
    uint8_t *val = malloc(vlen);
    uint8_t *val2 = malloc(vlen);
    char longkey[251];
    uint8_t *batch = malloc(1000 * (24 + 250));
    size_t blen = 0;
    long rss0;
    long rss1;
    size_t sent_reqs = 0;
    bool blocked = false;

    ck_assert_ptr_nonnull(val);
    ck_assert_ptr_nonnull(val2);
    ck_assert_ptr_nonnull(batch);
    fill(val, vlen, 1);
    fill(val2, vlen, 2);
    memset(longkey, 'B', 250);
    longkey[250] = '\0';
    set_kv(c1, "big", val, vlen, 5, 0);
    set_kv(c1, longkey, val, vlen, 5, 0);
    set_str(c1, "small", "hello", 0);
    rss0 = tu_rss_kb(pid);
    ck_assert_int_gt(rss0, 0);

    /* 2000 GETs of 500 KB (~1 GB of replies), never read. */
    for (uint32_t i = 0; i < 2000; i++) {
        blen += tu_bin_req(batch + blen, 64, OP_GET, NULL, 0, "big", 3, NULL,
                           0, i, 0);
    }
    ck_assert_int_eq(tu_send(slow, batch, blen), 0);

    /* Then keep pushing long-key GETs: once the server stops reading, the
     * kernel buffers fill and our sends block. 200k requests are 55 MB,
     * more than any socket buffer here holds. */
    fcntl(slow, F_SETFL, fcntl(slow, F_GETFL) | O_NONBLOCK);
    blen = 0;
    for (uint32_t i = 0; i < 1000; i++) {
        blen += tu_bin_req(batch + blen, 24 + 250, OP_GET, NULL, 0, longkey,
                           250, NULL, 0, 0x10000u + i, 0);
    }
    for (size_t round = 0; round < 200 && !blocked; round++) {
        size_t off = 0;

        while (off < blen) {
            ssize_t w = send(slow, batch + off, blen - off, MSG_NOSIGNAL);

            if (w > 0) {
                off += (size_t)w;
                continue;
            }
            ck_assert_msg(w < 0 && (errno == EAGAIN || errno == EINTR),
                          "send: %s", strerror(errno));
            {
                struct pollfd p = { slow, POLLOUT, 0 };

                if (poll(&p, 1, 1500) == 0) {
                    blocked = true;
                    break;
                }
            }
        }
        sent_reqs += blocked ? off / (24 + 250) : 1000;
    }
    ck_assert_msg(blocked, "the server kept reading from a client that "
                  "never reads (%zu more GETs of 500 KB accepted)",
                  sent_reqs);

    sleep_ms(300);
    rss1 = tu_rss_kb(pid);
    ck_assert_msg(rss1 - rss0 < 200 * 1024, "RSS grew from %ld kB to %ld kB",
                  rss0, rss1);

    /* Everyone else is served meanwhile. */
    {
        int c2 = conn(port);

        expect_hit(c1, "small", "hello", 5, 0, 0);
        expect_hit(c2, "big", val, vlen, 5, 0);
        set_str(c2, "x", "y", 1);
        expect_hit(c1, "x", "y", 1, 1, 0);
        noop(c2, 1);

        /* The slow client's first replies are intact when it reads. */
        fcntl(slow, F_SETFL, fcntl(slow, F_GETFL) & ~O_NONBLOCK);
        for (uint32_t i = 0; i < 3; i++) {
            struct tu_bin p;

            recvres(slow, &p);
            ck_assert_uint_eq(p.status, ST_OK);
            ck_assert_uint_eq(p.opaque, i);
            ck_assert_uint_eq(p.vlen, vlen);
            ck_assert(memcmp(p.value, val, vlen) == 0);
        }
        close(slow);
        sleep_ms(200);

        /* Replacing the value the slow client had pinned works. */
        set_kv(c2, "big", val2, vlen, 6, 0);
        expect_hit(c1, "big", val2, vlen, 6, 0);
        rss1 = tu_rss_kb(pid);
        ck_assert_msg(rss1 - rss0 < 200 * 1024,
                      "RSS grew from %ld kB to %ld kB", rss0, rss1);
        close(c2);
    }
    {
        int c3 = conn(port);

        noop(c3, 3);
        close(c3);
    }
    close(c1);
    free(batch);
    free(val);
    free(val2);
    stop(pid);
}
END_TEST

/* ------------------------------------------------------------------ */
/* 7. -c */

/* curr_connections from STAT, or -1. */
static long
stat_curr_conns(int fd)
{
    long v = -1;

    sendreq(fd, OP_STAT, NULL, 0, NULL, NULL, 0, 0x57a7, 0);
    for (;;) {
        struct tu_bin p;

        recvres(fd, &p);
        ck_assert_uint_eq(p.status, ST_OK);
        if (p.keylen == 0) {
            return v;
        }
        if (p.keylen == 16 && memcmp(p.key, "curr_connections", 16) == 0) {
            char s[32];

            snprintf(s, sizeof(s), "%.*s", (int)p.vlen,
                     (const char *)p.value);
            v = strtol(s, NULL, 10);
        }
    }
}

START_TEST(connection_limit)
{
    static const char busy[] = "ERROR Too many open connections\r\n";
    const char *args[] = { "-c", "5", NULL };
    uint16_t port;
    pid_t pid = start(args, &port);
    int fds[5];
    char got[128];
    int closed;
    size_t n;
    bool ok = false;

    fds[0] = conn(port);
    /* tu_server_start's probe connection may not be reaped yet. */
    for (int i = 0; i < 100 && stat_curr_conns(fds[0]) != 1; i++) {
        sleep_ms(20);
    }
    ck_assert_int_eq(stat_curr_conns(fds[0]), 1);
    for (int i = 1; i < 5; i++) {
        fds[i] = conn(port);
        noop(fds[i], (uint32_t)i);
    }
    {
        int six = conn(port);

        n = tu_recv_idle(six, got, sizeof(got), 3000, &closed);
        ck_assert_uint_eq(n, sizeof(busy) - 1);
        ck_assert(memcmp(got, busy, n) == 0);
        ck_assert(closed);
        close(six);
    }
    close(fds[4]);
    for (int i = 0; i < 100 && !ok; i++) {
        int fd = conn(port);
        uint8_t req[24];

        tu_bin_req(req, 24, OP_NOOP, NULL, 0, NULL, 0, NULL, 0, 77, 0);
        (void)tu_send(fd, req, 24);
        n = tu_recv_idle(fd, got, 24, 2000, &closed);
        if (n == 24 && (uint8_t)got[0] == 0x81) {
            ok = true;
            fds[4] = fd;
        } else {
            ck_assert_msg(n == 0 || memcmp(got, busy, n) == 0,
                          "unexpected reply to a new connection");
            close(fd);
            sleep_ms(30);
        }
    }
    ck_assert_msg(ok, "no connection accepted after one closed");
    for (int i = 0; i < 5; i++) {
        noop(fds[i], 100u + (uint32_t)i);
        close(fds[i]);
    }
    stop(pid);
}
END_TEST

/* ------------------------------------------------------------------ */
/* 8. commands */

START_TEST(quit_and_quitq)
{
    uint16_t port;
    pid_t pid = start(NULL, &port);
    uint8_t buf[64];
    size_t n;
    int fd;

    fd = conn(port);
    sendreq(fd, OP_QUIT, NULL, 0, NULL, NULL, 0, 0x45, 0);
    expect_empty_ok(fd, OP_QUIT, 0x45);
    expect_closed(fd);
    close(fd);

    /* Whatever follows QUIT in the same write is not run. */
    n = tu_bin_req(buf, sizeof(buf), OP_QUIT, NULL, 0, NULL, 0, NULL, 0, 0x47,
                   0);
    n += tu_bin_req(buf + n, sizeof(buf) - n, OP_NOOP, NULL, 0, NULL, 0,
                    NULL, 0, 0x48, 0);
    fd = fresh(port, buf, n);
    expect_empty_ok(fd, OP_QUIT, 0x47);
    expect_closed(fd);
    close(fd);

    fd = conn(port);
    sendreq(fd, OP_QUITQ, NULL, 0, NULL, NULL, 0, 0x46, 0x1122334455667788ull);
    expect_closed(fd);
    close(fd);

    /* Replies to what came before QUITQ are still sent. */
    n = tu_bin_req(buf, sizeof(buf), OP_NOOP, NULL, 0, NULL, 0, NULL, 0, 0x70,
                   0);
    n += tu_bin_req(buf + n, sizeof(buf) - n, OP_QUITQ, NULL, 0, NULL, 0,
                    NULL, 0, 0x71, 0);
    fd = fresh(port, buf, n);
    expect_empty_ok(fd, OP_NOOP, 0x70);
    expect_closed(fd);
    close(fd);

    n = tu_bin_req(buf, sizeof(buf), OP_QUITQ, NULL, 0, NULL, 0, NULL, 0,
                   0x71, 0);
    n += tu_bin_req(buf + n, sizeof(buf) - n, OP_NOOP, NULL, 0, NULL, 0,
                    NULL, 0, 0x72, 0);
    fd = fresh(port, buf, n);
    expect_closed(fd);
    close(fd);

    /* QUIT with a key is malformed. */
    fd = conn(port);
    sendreq(fd, OP_QUIT, NULL, 0, "k", NULL, 0, 0x49, 0);
    expect_err(fd, OP_QUIT, ST_EINVAL, 0x49);
    expect_closed(fd);
    close(fd);
    stop(pid);
}
END_TEST

START_TEST(noop_and_version)
{
    uint16_t port;
    pid_t pid = start(NULL, &port);
    int fd = conn(port);
    struct tu_bin p;

    /* The request's CAS is not echoed. */
    sendreq(fd, OP_NOOP, NULL, 0, NULL, NULL, 0, 0x3e, 0x1122334455667788ull);
    expect_empty_ok(fd, OP_NOOP, 0x3e);
    sendreq(fd, OP_VERSION, NULL, 0, NULL, NULL, 0, 0x3d, 0);
    recvres(fd, &p);
    ck_assert_uint_eq(p.opcode, OP_VERSION);
    ck_assert_uint_eq(p.status, ST_OK);
    ck_assert_uint_eq(p.opaque, 0x3d);
    ck_assert_uint_eq(p.cas, 0);
    ck_assert_uint_eq(p.extlen, 0);
    ck_assert_uint_eq(p.keylen, 0);
    ck_assert_uint_ge(p.vlen, 5);
    /* "1.6.18" for memcached: clients parse major.minor.patch. */
    ck_assert_msg(p.value[0] >= '0' && p.value[0] <= '9' &&
                  memchr(p.value, '.', p.vlen) != NULL,
                  "version '%.*s'", (int)p.vlen, (const char *)p.value);
    expect_silence(fd, 50);
    close(fd);
    stop(pid);
}
END_TEST

struct statv {
    char name[64];
    char value[128];
};

/* Reads one STAT reply stream up to its empty-key terminator. */
static int
read_stats(int fd, uint32_t opaque, struct statv *out, int max)
{
    int n = 0;

    for (;;) {
        struct tu_bin p;

        recvres(fd, &p);
        ck_assert_uint_eq(p.opcode, OP_STAT);
        ck_assert_uint_eq(p.status, ST_OK);
        ck_assert_uint_eq(p.opaque, opaque);
        ck_assert_uint_eq(p.extlen, 0);
        ck_assert_uint_eq(p.cas, 0);
        if (p.keylen == 0) {
            ck_assert_uint_eq(p.bodylen, 0);
            return n;
        }
        ck_assert_int_lt(n, max);
        snprintf(out[n].name, sizeof(out[n].name), "%.*s", (int)p.keylen,
                 (const char *)p.key);
        snprintf(out[n].value, sizeof(out[n].value), "%.*s", (int)p.vlen,
                 (const char *)p.value);
        n++;
    }
}

static const char *
stat_get(const struct statv *s, int n, const char *name)
{
    for (int i = 0; i < n; i++) {
        if (strcmp(s[i].name, name) == 0) {
            return s[i].value;
        }
    }
    ck_abort_msg("stat %s missing", name);
    return NULL;
}

START_TEST(stat_general)
{
    const char *args[] = { "-t", "3", "-c", "77", NULL };
    uint16_t port;
    pid_t pid = start(args, &port);
    int fd = conn(port);
    struct statv *s = calloc(512, sizeof(*s));
    char want[32];
    int n;
    long conns;

    ck_assert_ptr_nonnull(s);
    set_str(fd, "a", "1", 0);
    expect_hit(fd, "a", "1", 1, 0, 0);
    expect_hit(fd, "a", "1", 1, 0, 0);
    expect_miss(fd, "b");
    sendreq(fd, OP_STAT, NULL, 0, NULL, NULL, 0, 0x50, 0x1122334455667788ull);
    n = read_stats(fd, 0x50, s, 512);
    ck_assert_int_gt(n, 20);
    ck_assert_str_eq(s[0].name, "pid");
    snprintf(want, sizeof(want), "%ld", (long)pid);
    ck_assert_str_eq(stat_get(s, n, "pid"), want);
    ck_assert(strtol(stat_get(s, n, "uptime"), NULL, 10) >= 0);
    ck_assert(strtol(stat_get(s, n, "time"), NULL, 10) > 1600000000L);
    conns = strtol(stat_get(s, n, "curr_connections"), NULL, 10);
    ck_assert_msg(conns >= 1 && conns <= 2, "curr_connections %ld", conns);
    ck_assert_str_eq(stat_get(s, n, "cmd_get"), "3");
    ck_assert_str_eq(stat_get(s, n, "get_hits"), "2");
    ck_assert_str_eq(stat_get(s, n, "get_misses"), "1");
    ck_assert_str_eq(stat_get(s, n, "cmd_set"), "1");
    ck_assert_str_eq(stat_get(s, n, "threads"), "3");
    ck_assert_str_eq(stat_get(s, n, "max_connections"), "77");
    ck_assert_str_eq(stat_get(s, n, "backend"),
                     tu_backend() != NULL ? tu_backend() : "lmdb");
    ck_assert_str_eq(stat_get(s, n, "curr_items"), "1");
    (void)stat_get(s, n, "version");
    (void)stat_get(s, n, "bytes_read");
    (void)stat_get(s, n, "limit_maxbytes");

    sendreq(fd, OP_STAT, NULL, 0, "settings", NULL, 0, 0x51, 0);
    n = read_stats(fd, 0x51, s, 512);
    ck_assert_int_gt(n, 5);
    ck_assert_str_eq(stat_get(s, n, "maxconns"), "77");

    /* An unknown group is "Not found", and the connection is kept. */
    sendreq(fd, OP_STAT, NULL, 0, "bogus", NULL, 0, 0x3f, 0);
    expect_err(fd, OP_STAT, ST_ENOENT, 0x3f);
    noop(fd, 1);
    free(s);
    close(fd);
    stop(pid);
}
END_TEST

START_TEST(flush_and_flushq)
{
    uint16_t port;
    pid_t pid = start(NULL, &port);
    int fd = conn(port);
    uint8_t ext[4];
    uint8_t buf[64];
    size_t n;

    set_str(fd, "a", "1", 0);
    set_str(fd, "b", "2", 0);
    sendreq(fd, OP_FLUSH, NULL, 0, NULL, NULL, 0, 1, 0);
    expect_empty_ok(fd, OP_FLUSH, 1);
    expect_miss(fd, "a");
    expect_miss(fd, "b");

    set_str(fd, "c", "3", 0);
    n = tu_bin_req(buf, sizeof(buf), OP_FLUSHQ, NULL, 0, NULL, 0, NULL, 0,
                   0x42, 0);
    n += tu_bin_req(buf + n, sizeof(buf) - n, OP_NOOP, NULL, 0, NULL, 0,
                    NULL, 0, 0x43, 0);
    ck_assert_int_eq(tu_send(fd, buf, n), 0);
    expect_empty_ok(fd, OP_NOOP, 0x43);
    expect_miss(fd, "c");

    /* With 4 bytes of extras: delay 0 flushes now. */
    set_str(fd, "d", "4", 0);
    tu_put32(ext, 0);
    sendreq(fd, OP_FLUSH, ext, 4, NULL, NULL, 0, 0x40, 0);
    expect_empty_ok(fd, OP_FLUSH, 0x40);
    expect_miss(fd, "d");

    /* A delayed flush leaves the items readable for now. */
    set_str(fd, "e", "5", 0);
    tu_put32(ext, 100);
    sendreq(fd, OP_FLUSH, ext, 4, NULL, NULL, 0, 0x41, 0);
    expect_empty_ok(fd, OP_FLUSH, 0x41);
    expect_hit(fd, "e", "5", 1, 0, 0);
    close(fd);
    stop(pid);
}
END_TEST

static void
arith_ext(uint8_t ext[20], uint64_t delta, uint64_t initial, uint32_t exp)
{
    tu_put64(ext, delta);
    tu_put64(ext + 8, initial);
    tu_put32(ext + 16, exp);
}

/* An INCR/DECR success: the new value as 8 bytes; returns the CAS. */
static uint64_t
expect_arith(int fd, uint8_t op, uint32_t opaque, uint64_t value)
{
    struct tu_bin p;

    recvres(fd, &p);
    ck_assert_msg(p.status == ST_OK, "op %02x: status %02x", op, p.status);
    ck_assert_uint_eq(p.opcode, op);
    ck_assert_uint_eq(p.opaque, opaque);
    ck_assert_uint_eq(p.extlen, 0);
    ck_assert_uint_eq(p.keylen, 0);
    ck_assert_uint_eq(p.vlen, 8);
    ck_assert_uint_eq(tu_get64(p.value), value);
    ck_assert_uint_ne(p.cas, 0);
    return p.cas;
}

START_TEST(incr_decr)
{
    uint16_t port;
    pid_t pid = start(NULL, &port);
    int fd = conn(port);
    uint8_t ext[20];
    uint8_t buf[256];
    uint64_t c1;
    uint64_t c2;
    size_t n;

    /* A miss creates the item with the initial value (delta not added). */
    arith_ext(ext, 1, 10, 0);
    sendreq(fd, OP_INCR, ext, 20, "n", NULL, 0, 0x17, 0);
    c1 = expect_arith(fd, OP_INCR, 0x17, 10);
    arith_ext(ext, 5, 0, 0);
    sendreq(fd, OP_INCR, ext, 20, "n", NULL, 0, 0x18, 0);
    c2 = expect_arith(fd, OP_INCR, 0x18, 15);
    ck_assert_uint_ne(c1, c2);
    expect_hit(fd, "n", "15", 2, 0, c2);
    arith_ext(ext, 100, 0, 0);
    sendreq(fd, OP_DECR, ext, 20, "n", NULL, 0, 0x19, 0);
    expect_arith(fd, OP_DECR, 0x19, 0);   /* no wrap below 0 */

    /* exptime 0xffffffff: do not create. */
    arith_ext(ext, 1, 0, 0xffffffffu);
    sendreq(fd, OP_INCR, ext, 20, "m", NULL, 0, 0x1a, 0);
    expect_err(fd, OP_INCR, ST_ENOENT, 0x1a);
    sendreq(fd, OP_DECR, ext, 20, "m", NULL, 0, 0x1b, 0);
    expect_err(fd, OP_DECR, ST_ENOENT, 0x1b);
    expect_miss(fd, "m");

    /* DECR of a miss creates with the initial value too. */
    arith_ext(ext, 3, 7, 0);
    sendreq(fd, OP_DECR, ext, 20, "d", NULL, 0, 0x1c, 0);
    expect_arith(fd, OP_DECR, 0x1c, 7);
    expect_hit(fd, "d", "7", 1, 0, 0);

    /* Non-numeric, CAS mismatch, wrap at 2^64. */
    set_str(fd, "k", "v", 0);
    arith_ext(ext, 1, 0, 0);
    sendreq(fd, OP_INCR, ext, 20, "k", NULL, 0, 0x1d, 0);
    expect_err(fd, OP_INCR, ST_EDELTA, 0x1d);
    sendreq(fd, OP_INCR, ext, 20, "n", NULL, 0, 0x1e, 1);
    expect_err(fd, OP_INCR, ST_EEXISTS, 0x1e);
    set_str(fd, "big", "18446744073709551615", 0);
    arith_ext(ext, 2, 0, 0);
    sendreq(fd, OP_INCR, ext, 20, "big", NULL, 0, 0x1f, 0);
    expect_arith(fd, OP_INCR, 0x1f, 1);
    arith_ext(ext, 1, UINT64_MAX, 0);
    sendreq(fd, OP_INCR, ext, 20, "w", NULL, 0, 0x20, 0);
    expect_arith(fd, OP_INCR, 0x20, UINT64_MAX);

    /* Quiet: success silent, errors reported. */
    arith_ext(ext, 1, 0, 0);
    n = tu_bin_req(buf, sizeof(buf), OP_INCRQ, ext, 20, "n", 1, NULL, 0, 0x31,
                   0);
    n += tu_bin_req(buf + n, sizeof(buf) - n, OP_DECRQ, ext, 20, "n", 1,
                    NULL, 0, 0x32, 0);
    n += tu_bin_req(buf + n, sizeof(buf) - n, OP_INCRQ, ext, 20, "k", 1,
                    NULL, 0, 0x34, 0);
    n += tu_bin_req(buf + n, sizeof(buf) - n, OP_NOOP, NULL, 0, NULL, 0,
                    NULL, 0, 0x35, 0);
    ck_assert_int_eq(tu_send(fd, buf, n), 0);
    expect_err(fd, OP_INCRQ, ST_EDELTA, 0x34);
    expect_empty_ok(fd, OP_NOOP, 0x35);
    expect_silence(fd, 50);
    close(fd);
    stop(pid);
}
END_TEST

START_TEST(decr_pads_like_memcached)
{
    uint16_t port;
    pid_t pid = start(NULL, &port);
    int fd = conn(port);
    uint8_t ext[20];

    /* memcached rewrites a shorter result in place, padded with spaces,
     * and keeps the flags: "100" - 95 reads back as "5  ". */
    set_str(fd, "p", "100", 5);
    arith_ext(ext, 95, 0, 0);
    sendreq(fd, OP_DECR, ext, 20, "p", NULL, 0, 0x21, 0);
    expect_arith(fd, OP_DECR, 0x21, 5);
    expect_hit(fd, "p", "5  ", 3, 5, 0);
    /* ... and a number with trailing spaces still counts. */
    arith_ext(ext, 20, 0, 0);
    sendreq(fd, OP_INCR, ext, 20, "p", NULL, 0, 0x22, 0);
    expect_arith(fd, OP_INCR, 0x22, 25);
    expect_hit(fd, "p", "25 ", 3, 5, 0);
    close(fd);
    stop(pid);
}
END_TEST

START_TEST(quiet_stores)
{
    uint16_t port;
    pid_t pid = start(NULL, &port);
    int fd = conn(port);
    uint8_t ext[8];
    uint8_t buf[512];
    size_t n;

    tu_put32(ext, 0xdeadbeefu);
    tu_put32(ext + 4, 0);
    n = tu_bin_req(buf, sizeof(buf), OP_SETQ, ext, 8, "q", 1, "1", 1, 0x36,
                   0);
    n += tu_bin_req(buf + n, sizeof(buf) - n, OP_ADDQ, ext, 8, "q", 1, "1", 1,
                    0x37, 0);
    n += tu_bin_req(buf + n, sizeof(buf) - n, OP_REPLACEQ, ext, 8, "nope", 4,
                    "1", 1, 0x38, 0);
    n += tu_bin_req(buf + n, sizeof(buf) - n, OP_APPENDQ, NULL, 0, "nope", 4,
                    "1", 1, 0x39, 0);
    n += tu_bin_req(buf + n, sizeof(buf) - n, OP_APPENDQ, NULL, 0, "q", 1,
                    "A", 1, 0x3a, 0);
    n += tu_bin_req(buf + n, sizeof(buf) - n, OP_PREPENDQ, NULL, 0, "q", 1,
                    "P", 1, 0x3b, 0);
    n += tu_bin_req(buf + n, sizeof(buf) - n, OP_REPLACEQ, ext, 8, "q2", 2,
                    "x", 1, 0x3c, 0);
    n += tu_bin_req(buf + n, sizeof(buf) - n, OP_NOOP, NULL, 0, NULL, 0,
                    NULL, 0, 0x3d, 0);
    ck_assert_int_eq(tu_send(fd, buf, n), 0);
    expect_err(fd, OP_ADDQ, ST_EEXISTS, 0x37);
    expect_err(fd, OP_REPLACEQ, ST_ENOENT, 0x38);
    expect_err(fd, OP_APPENDQ, ST_NOT_STORED, 0x39);
    expect_err(fd, OP_REPLACEQ, ST_ENOENT, 0x3c);
    expect_empty_ok(fd, OP_NOOP, 0x3d);
    expect_hit(fd, "q", "P1A", 3, 0xdeadbeefu, 0);

    n = tu_bin_req(buf, sizeof(buf), OP_SETQ, ext, 8, "q", 1, "1", 1, 0x3e,
                   1);
    n += tu_bin_req(buf + n, sizeof(buf) - n, OP_NOOP, NULL, 0, NULL, 0,
                    NULL, 0, 0x3f, 0);
    ck_assert_int_eq(tu_send(fd, buf, n), 0);
    expect_err(fd, OP_SETQ, ST_EEXISTS, 0x3e);
    expect_empty_ok(fd, OP_NOOP, 0x3f);

    n = tu_bin_req(buf, sizeof(buf), OP_DELETEQ, NULL, 0, "q", 1, NULL, 0,
                   0x40, 0);
    n += tu_bin_req(buf + n, sizeof(buf) - n, OP_DELETEQ, NULL, 0, "q", 1,
                    NULL, 0, 0x41, 0);
    n += tu_bin_req(buf + n, sizeof(buf) - n, OP_NOOP, NULL, 0, NULL, 0,
                    NULL, 0, 0x42, 0);
    ck_assert_int_eq(tu_send(fd, buf, n), 0);
    expect_err(fd, OP_DELETEQ, ST_ENOENT, 0x41);
    expect_empty_ok(fd, OP_NOOP, 0x42);
    expect_miss(fd, "q");

    /* GETQ/GETKQ: hits answered, misses silent. */
    set_str(fd, "g", "gv", 7);
    n = tu_bin_req(buf, sizeof(buf), OP_GETQ, NULL, 0, "nope", 4, NULL, 0, 7,
                   0);
    n += tu_bin_req(buf + n, sizeof(buf) - n, OP_GETQ, NULL, 0, "g", 1, NULL,
                    0, 8, 0);
    n += tu_bin_req(buf + n, sizeof(buf) - n, OP_NOOP, NULL, 0, NULL, 0,
                    NULL, 0, 9, 0);
    ck_assert_int_eq(tu_send(fd, buf, n), 0);
    {
        struct tu_bin p;

        recvres(fd, &p);
        ck_assert_uint_eq(p.opcode, OP_GETQ);
        ck_assert_uint_eq(p.opaque, 8);
        ck_assert_uint_eq(p.keylen, 0);
        ck_assert_uint_eq(tu_get32(p.extras), 7);
        ck_assert_uint_eq(p.vlen, 2);
    }
    expect_empty_ok(fd, OP_NOOP, 9);
    expect_silence(fd, 50);
    close(fd);
    stop(pid);
}
END_TEST

START_TEST(touch_and_gat)
{
    uint16_t port;
    pid_t pid = start(NULL, &port);
    int fd = conn(port);
    uint8_t ext[4] = { 0, 0, 0, 0 };
    uint8_t flags[4] = { 0xde, 0xad, 0xbe, 0xef };
    uint8_t exp[128];
    uint8_t buf[512];
    uint64_t cas;
    size_t n;

    cas = set_str(fd, "t", "tv", 0xdeadbeefu);

    sendreq(fd, OP_TOUCH, ext, 4, "t", NULL, 0, 0x2b, 0);
    n = resp(exp, sizeof(exp), OP_TOUCH, ST_OK, flags, 4, NULL, 0, NULL, 0,
             0x2b, cas);
    expect_bytes(fd, exp, n, "TOUCH hit");
    sendreq(fd, OP_TOUCH, ext, 4, "nope", NULL, 0, 0x2c, 0);
    expect_err(fd, OP_TOUCH, ST_ENOENT, 0x2c);

    sendreq(fd, OP_GAT, ext, 4, "t", NULL, 0, 0x2d, 0);
    n = resp(exp, sizeof(exp), OP_GAT, ST_OK, flags, 4, NULL, 0, "tv", 2,
             0x2d, cas);
    expect_bytes(fd, exp, n, "GAT hit");
    sendreq(fd, OP_GATK, ext, 4, "t", NULL, 0, 0x2e, 0);
    n = resp(exp, sizeof(exp), OP_GATK, ST_OK, flags, 4, "t", 1, "tv", 2,
             0x2e, cas);
    expect_bytes(fd, exp, n, "GATK hit");
    sendreq(fd, OP_GAT, ext, 4, "nope", NULL, 0, 0x2f, 0);
    expect_err(fd, OP_GAT, ST_ENOENT, 0x2f);
    /* A GATK miss carries the key and no message. */
    sendreq(fd, OP_GATK, ext, 4, "nope", NULL, 0, 0x30, 0);
    n = resp(exp, sizeof(exp), OP_GATK, ST_ENOENT, NULL, 0, "nope", 4, NULL,
             0, 0x30, 0);
    expect_bytes(fd, exp, n, "GATK miss");

    n = tu_bin_req(buf, sizeof(buf), OP_GATQ, ext, 4, "t", 1, NULL, 0, 0x31,
                   0);
    n += tu_bin_req(buf + n, sizeof(buf) - n, OP_GATKQ, ext, 4, "t", 1, NULL,
                    0, 0x32, 0);
    n += tu_bin_req(buf + n, sizeof(buf) - n, OP_GATQ, ext, 4, "nope", 4,
                    NULL, 0, 0x33, 0);
    n += tu_bin_req(buf + n, sizeof(buf) - n, OP_GATKQ, ext, 4, "nope", 4,
                    NULL, 0, 0x34, 0);
    n += tu_bin_req(buf + n, sizeof(buf) - n, OP_NOOP, NULL, 0, NULL, 0,
                    NULL, 0, 0x35, 0);
    ck_assert_int_eq(tu_send(fd, buf, n), 0);
    n = resp(exp, sizeof(exp), OP_GATQ, ST_OK, flags, 4, NULL, 0, "tv", 2,
             0x31, cas);
    expect_bytes(fd, exp, n, "GATQ hit");
    n = resp(exp, sizeof(exp), OP_GATKQ, ST_OK, flags, 4, "t", 1, "tv", 2,
             0x32, cas);
    expect_bytes(fd, exp, n, "GATKQ hit");
    expect_empty_ok(fd, OP_NOOP, 0x35);
    /* Touching keeps the CAS. */
    expect_hit(fd, "t", "tv", 2, 0xdeadbeefu, cas);

    /* TTLs: GAT with 1 s expires the item; TOUCH with 0 makes an expiring
     * one permanent (2 s, so a second boundary between SET and TOUCH
     * cannot expire it first). */
    {
        static const uint8_t zero[4] = { 0, 0, 0, 0 };
        uint64_t ce = set_kv(fd, "e", "ev", 2, 0, 2);

        tu_put32(ext, 0);
        sendreq(fd, OP_TOUCH, ext, 4, "e", NULL, 0, 0x36, 0);
        n = resp(exp, sizeof(exp), OP_TOUCH, ST_OK, zero, 4, NULL, 0, NULL,
                 0, 0x36, ce);
        expect_bytes(fd, exp, n, "TOUCH e");
    }
    tu_put32(ext, 1);
    sendreq(fd, OP_GAT, ext, 4, "t", NULL, 0, 0x37, 0);
    n = resp(exp, sizeof(exp), OP_GAT, ST_OK, flags, 4, NULL, 0, "tv", 2,
             0x37, cas);
    expect_bytes(fd, exp, n, "GAT ttl 1");
    sleep_ms(2500);
    expect_miss(fd, "t");
    expect_hit(fd, "e", "ev", 2, 0, 0);
    close(fd);
    stop(pid);
}
END_TEST

START_TEST(cas_rules)
{
    uint16_t port;
    pid_t pid = start(NULL, &port);
    int fd = conn(port);
    uint8_t ext[8] = { 0, 0, 0, 1, 0, 0, 0, 0 };
    uint8_t exp[64];
    uint64_t c1;
    uint64_t c2;
    size_t n;

    c1 = set_str(fd, "k", "v1", 1);
    sendreq(fd, OP_SET, ext, 8, "k", "v2", 2, 0x11, c1 + 1);
    expect_err(fd, OP_SET, ST_EEXISTS, 0x11);
    expect_hit(fd, "k", "v1", 2, 1, c1);
    sendreq(fd, OP_SET, ext, 8, "k", "v2", 2, 0x12, c1);
    c2 = expect_stored(fd, OP_SET, 0x12);
    ck_assert_uint_ne(c1, c2);
    expect_hit(fd, "k", "v2", 2, 1, c2);
    /* The old CAS is spent. */
    sendreq(fd, OP_SET, ext, 8, "k", "v3", 2, 0x13, c1);
    expect_err(fd, OP_SET, ST_EEXISTS, 0x13);

    /* CAS on a missing key is "Not found". */
    sendreq(fd, OP_SET, ext, 8, "missing", "v", 1, 0x14, 1);
    expect_err(fd, OP_SET, ST_ENOENT, 0x14);
    sendreq(fd, OP_REPLACE, ext, 8, "missing", "v", 1, 0x15, 1);
    expect_err(fd, OP_REPLACE, ST_ENOENT, 0x15);
    expect_miss(fd, "missing");

    /* memcached turns an ADD or REPLACE with a CAS into a CAS store. */
    sendreq(fd, OP_ADD, ext, 8, "k", "v", 1, 0x16, c2 + 1);
    expect_err(fd, OP_ADD, ST_EEXISTS, 0x16);
    sendreq(fd, OP_ADD, ext, 8, "k", "v2", 2, 0x16, c2);
    c2 = expect_stored(fd, OP_ADD, 0x16);
    sendreq(fd, OP_ADD, ext, 8, "missing", "v", 1, 0x16, 5);
    expect_err(fd, OP_ADD, ST_ENOENT, 0x16);

    /* APPEND honours the CAS. */
    sendreq(fd, OP_APPEND, NULL, 0, "k", "A", 1, 0x17, c2 + 1);
    expect_err(fd, OP_APPEND, ST_EEXISTS, 0x17);
    sendreq(fd, OP_APPEND, NULL, 0, "k", "A", 1, 0x18, c2);
    c1 = expect_stored(fd, OP_APPEND, 0x18);
    expect_hit(fd, "k", "v2A", 3, 1, c1);
    sendreq(fd, OP_APPEND, NULL, 0, "missing", "A", 1, 0x19, 0);
    expect_err(fd, OP_APPEND, ST_NOT_STORED, 0x19);
    sendreq(fd, OP_PREPEND, NULL, 0, "missing", "A", 1, 0x1a, 0);
    expect_err(fd, OP_PREPEND, ST_NOT_STORED, 0x1a);

    /* DELETE honours the CAS; its reply carries none. */
    sendreq(fd, OP_DELETE, NULL, 0, "k", NULL, 0, 0x25, c1 + 1);
    expect_err(fd, OP_DELETE, ST_EEXISTS, 0x25);
    sendreq(fd, OP_DELETE, NULL, 0, "k", NULL, 0, 0x26, c1);
    expect_empty_ok(fd, OP_DELETE, 0x26);
    sendreq(fd, OP_DELETE, NULL, 0, "k", NULL, 0, 0x24, 0);
    expect_err(fd, OP_DELETE, ST_ENOENT, 0x24);

    /* ADD/REPLACE basics, and GETK's miss reply (key, no message). */
    sendreq(fd, OP_ADD, ext, 8, "a", "1", 1, 0x0e, 0);
    expect_stored(fd, OP_ADD, 0x0e);
    sendreq(fd, OP_REPLACE, ext, 8, "a", "2", 1, 0x10, 0);
    expect_stored(fd, OP_REPLACE, 0x10);
    expect_hit(fd, "a", "2", 1, 1, 0);
    sendreq(fd, OP_GETK, NULL, 0, "nope", NULL, 0, 6, 0);
    n = resp(exp, sizeof(exp), OP_GETK, ST_ENOENT, NULL, 0, "nope", 4, NULL,
             0, 6, 0);
    expect_bytes(fd, exp, n, "GETK miss");
    close(fd);
    stop(pid);
}
END_TEST

/* ------------------------------------------------------------------ */
/* 9. process lifecycle */

START_TEST(sigterm_with_idle_clients)
{
    uint16_t port;
    pid_t pid = start(NULL, &port);
    int a = conn(port);
    int b = conn(port);
    int c = conn(port);
    uint8_t half[24];
    double t0;
    int st;

    noop(a, 1);
    tu_bin_req(half, 24, OP_GET, NULL, 0, NULL, 0, NULL, 0, 2, 0);
    ck_assert_int_eq(tu_send(c, half, 10), 0);   /* half a header */
    sleep_ms(100);
    t0 = now_s();
    st = tu_server_stop(pid);
    ck_assert_int_eq(st, 0);
    ck_assert_msg(now_s() - t0 < 3.0, "SIGTERM took %.1f s", now_s() - t0);
    expect_closed(a);
    expect_closed(b);
    expect_closed(c);
    close(a);
    close(b);
    close(c);
}
END_TEST

static const char *const bad_flags[][3] = {
    { "-t", "0", NULL },
    { "-p", "notanumber", NULL },
    { "--bogus", NULL, NULL },
    { "-U", "5", NULL },
    { "-c", "0", NULL },
    { "-I", "1x", NULL },
    { "-m", "-1", NULL },
    { "stray-argument", NULL, NULL },
};

START_TEST(bad_flags_exit_64)
{
    const char *args[8] = { "-l", "127.0.0.1", "-p", "0" };
    char err[4096];
    int rc;

    args[4] = bad_flags[_i][0];
    args[5] = bad_flags[_i][1];
    args[6] = bad_flags[_i][2];
    args[7] = NULL;
    rc = tu_run(args, err, sizeof(err), 5000);
    ck_assert_msg(rc == 64, "%s %s: exit status %d, want 64 (stderr: %s)",
                  args[4], args[5] ? args[5] : "", rc, err);
    ck_assert_msg(strlen(err) > 0, "%s: nothing on stderr", args[4]);
}
END_TEST

/* ------------------------------------------------------------------ */

static Suite *
suite(void)
{
    Suite *s = suite_create("integration_bin");
    TCase *tc = tcase_create("protocol");
    TCase *load = tcase_create("load");
    TCase *life = tcase_create("lifecycle");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, pipelined_getkq_then_noop);
    tcase_add_test(tc, set_get_byte_by_byte);
    tcase_add_test(tc, split_at_every_boundary);
    tcase_add_test(tc, largest_value_and_one_more);
    tcase_add_test(tc, five_mb_value_e2big_in_order);
    tcase_add_test(tc, oversized_set_drops_old_value);
    tcase_add_loop_test(tc, malformed_packet, 0,
                        (int)(sizeof(bad_cases) / sizeof(bad_cases[0])));
    tcase_add_test(tc, quit_and_quitq);
    tcase_add_test(tc, noop_and_version);
    tcase_add_test(tc, stat_general);
    tcase_add_test(tc, flush_and_flushq);
    tcase_add_test(tc, incr_decr);
    tcase_add_test(tc, decr_pads_like_memcached);
    tcase_add_test(tc, quiet_stores);
    tcase_add_test(tc, touch_and_gat);
    tcase_add_test(tc, cas_rules);
    suite_add_tcase(s, tc);

    tcase_set_timeout(load, 90);
    tcase_add_test(load, two_hundred_connections_mixed_ops);
    tcase_add_test(load, slow_reader_is_not_buffered);
    tcase_add_test(load, batch_past_back_pressure_mark);
    tcase_add_test(load, connection_limit);
    suite_add_tcase(s, load);

    tcase_set_timeout(life, 60);
    tcase_add_test(life, sigterm_with_idle_clients);
    tcase_add_loop_test(life, bad_flags_exit_64, 0,
                        (int)(sizeof(bad_flags) / sizeof(bad_flags[0])));
    suite_add_tcase(s, life);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
