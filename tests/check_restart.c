/*
 * Restart tests of every persistent backend this build has (lmdb, sqlite),
 * the same tests unchanged for each (a loop test over the table below),
 * against the real binary ($STASHD_BIN) started with --backend NAME
 * --data-dir DIR, over the binary protocol on 127.0.0.1: 100,000 items
 * with varied values, flags and TTLs survive a SIGTERM restart exactly
 * (value, flags, CAS), and CAS values after it are larger than all before;
 * with --sync=always and eight clients writing, a kill -9 loses no
 * acknowledged write; with --sync=periodic, after a kill -9 the store
 * opens and holds, for each client, a prefix of what it wrote (keys are
 * written in sequence, so a hole would show an out-of-order or torn
 * recovery).
 */
#include "tests/util.h"

#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define OP_GET   0x00
#define OP_SET   0x01
#define OP_NOOP  0x0a
#define OP_GETK  0x0c
#define OP_SETQ  0x11

#define NITEMS   100000u
#define BATCH    1000u
#define NTTL     100u
#define NCLIENTS 8
#define WINDOW   8u        /* requests in flight per client */
#define MAXSEQ   200000u   /* per client, far more than it gets to write */

/* The persistent backends built; each test runs once per row. */
static const char *const backends[] = {
#ifdef STASHD_HAVE_LMDB
    "lmdb",
#endif
#ifdef STASHD_HAVE_SQLITE
    "sqlite",
#endif
    NULL
};

#define NBACKENDS ((int)(sizeof(backends) / sizeof(backends[0])) - 1)

/* A connection with a receive buffer that yields whole packets. */
struct bconn {
    int      fd;
    uint8_t *buf;
    size_t   off;
    size_t   len;
    size_t   cap;
};

static void
bc_open(struct bconn *c, uint16_t port)
{
    memset(c, 0, sizeof(*c));
    c->cap = 1 << 20;
    c->buf = malloc(c->cap);
    ck_assert_ptr_nonnull(c->buf);
    c->fd = tu_connect(port);
    ck_assert_int_ge(c->fd, 0);
}

static void
bc_close(struct bconn *c)
{
    if (c->fd >= 0) {
        close(c->fd);
    }
    free(c->buf);
    c->buf = NULL;
    c->fd = -1;
}

/* The next response packet; false when the peer is gone or broke it. */
static bool
bc_next(struct bconn *c, struct tu_bin *p)
{
    for (;;) {
        size_t n = tu_bin_parse(c->buf + c->off, c->len - c->off, p);
        ssize_t r;

        if (n > 0) {
            c->off += n;
            return true;
        }
        if (c->off > 0) {
            memmove(c->buf, c->buf + c->off, c->len - c->off);
            c->len -= c->off;
            c->off = 0;
        }
        if (c->len == c->cap) {
            return false;
        }
        r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (r <= 0) {
            return false;
        }
        c->len += (size_t)r;
    }
}

static size_t
req_set(uint8_t *out, size_t cap, uint8_t op, const char *key,
        const void *val, uint32_t vlen, uint32_t flags, uint32_t exptime,
        uint32_t opaque)
{
    uint8_t ext[8];

    tu_put32(ext, flags);
    tu_put32(ext + 4, exptime);
    return tu_bin_req(out, cap, op, ext, 8, key, (uint16_t)strlen(key), val,
                      vlen, opaque, 0);
}

static size_t
req_key(uint8_t *out, size_t cap, uint8_t op, const char *key,
        uint32_t opaque)
{
    return tu_bin_req(out, cap, op, NULL, 0, key, (uint16_t)strlen(key),
                      NULL, 0, opaque, 0);
}

/* Waits until the server answers a NOOP (it listens before it opens). */
static void
wait_ready(uint16_t port)
{
    struct bconn c;
    struct tu_bin p;
    uint8_t req[32];
    size_t n = req_key(req, sizeof(req), OP_NOOP, "", 0);

    bc_open(&c, port);
    ck_assert_int_eq(tu_send(c.fd, req, n), 0);
    ck_assert(bc_next(&c, &p));
    ck_assert_int_eq(p.opcode, OP_NOOP);
    bc_close(&c);
}

static pid_t
start(const char *backend, const char *dir, const char *sync, uint16_t *port)
{
    const char *args[] = { "--backend", backend, "--data-dir", dir, "--sync",
                           sync, "--sync-interval", "50", "-t", "4", "-m",
                           "512", NULL };
    pid_t pid = tu_server_start(args, port);

    ck_assert_msg(pid > 0, "%s: the server did not start", backend);
    wait_ready(*port);
    return pid;
}

static void
make_dir(char *dir, size_t cap)
{
    snprintf(dir, cap, "/tmp/stashd-restart-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

/* ---- SIGTERM restart with 100,000 items ---- */

static size_t
item_val(uint32_t i, uint8_t *v)
{
    size_t n = i % 5000 == 7 ? 3000 + i % 1000 : 1 + (i * 7919u) % 160;

    for (size_t j = 0; j < n; j++) {
        v[j] = (uint8_t)(i * 31u + j * 7u);
    }
    return n;
}

static uint32_t
item_flags(uint32_t i)
{
    return i * 2654435761u;
}

/* 0, relative (20 days), or absolute (about ten years ahead). */
static uint32_t
item_ttl(uint32_t i, uint32_t now)
{
    switch (i % 3) {
    case 0:
        return 0;
    case 1:
        return 20 * 86400;
    default:
        return now + 10 * 365 * 86400 + i;
    }
}

/* Sends [from, to) as one pipelined batch of SETQ and a NOOP. */
static void
write_batch(struct bconn *c, uint8_t *out, size_t cap, uint32_t from,
            uint32_t to, uint32_t now)
{
    uint8_t v[4096];
    size_t n = 0;
    char key[32];
    struct tu_bin p;

    for (uint32_t i = from; i < to; i++) {
        size_t vl = item_val(i, v);

        snprintf(key, sizeof(key), "item:%u", i);
        n += req_set(out + n, cap - n, OP_SETQ, key, v, (uint32_t)vl,
                     item_flags(i), item_ttl(i, now), i);
    }
    n += req_key(out + n, cap - n, OP_NOOP, "", 0);
    ck_assert_int_eq(tu_send(c->fd, out, n), 0);
    ck_assert(bc_next(c, &p));
    /* A quiet set answers only when it fails. */
    ck_assert_msg(p.opcode == OP_NOOP, "SETQ %u failed: status %u",
                  p.opaque, p.status);
}

/* Reads every item with GETK, checks it, and fills or checks cas[]. */
static void
read_all(struct bconn *c, uint8_t *out, size_t cap, uint64_t *cas,
         bool record)
{
    uint8_t v[4096];
    char key[32];

    for (uint32_t from = 0; from < NITEMS; from += BATCH) {
        uint32_t to = from + BATCH;
        size_t n = 0;

        for (uint32_t i = from; i < to; i++) {
            snprintf(key, sizeof(key), "item:%u", i);
            n += req_key(out + n, cap - n, OP_GETK, key, i);
        }
        ck_assert_int_eq(tu_send(c->fd, out, n), 0);
        for (uint32_t i = from; i < to; i++) {
            struct tu_bin p;
            size_t vl = item_val(i, v);

            ck_assert(bc_next(c, &p));
            ck_assert_uint_eq(p.opaque, i);
            ck_assert_msg(p.status == 0, "item:%u: status %u", i, p.status);
            ck_assert_uint_eq(p.extlen, 4);
            ck_assert_uint_eq(tu_get32(p.extras), item_flags(i));
            ck_assert_uint_eq(p.vlen, vl);
            ck_assert(memcmp(p.value, v, vl) == 0);
            if (record) {
                cas[i] = p.cas;
            } else {
                ck_assert_msg(p.cas == cas[i], "item:%u: cas %llu, was %llu",
                              i, (unsigned long long)p.cas,
                              (unsigned long long)cas[i]);
            }
        }
    }
}

START_TEST(sigterm_restart_keeps_everything)
{
    char dir[64];
    uint16_t port = 0;
    pid_t pid;
    struct bconn c;
    size_t cap = 8u << 20;
    uint8_t *out = malloc(cap);
    uint64_t *cas = calloc(NITEMS, sizeof(*cas));
    uint64_t maxcas = 0;
    uint32_t now = (uint32_t)time(NULL);
    uint32_t ttl_end;
    struct tu_bin p;
    size_t n = 0;
    char key[32];

    ck_assert_ptr_nonnull(out);
    ck_assert_ptr_nonnull(cas);
    make_dir(dir, sizeof(dir));
    pid = start(backends[_i], dir, "periodic", &port);
    bc_open(&c, port);
    for (uint32_t from = 0; from < NITEMS; from += BATCH) {
        write_batch(&c, out, cap, from, from + BATCH, now);
    }
    /* Items that expire two seconds from now: their TTL must persist. */
    for (uint32_t i = 0; i < NTTL; i++) {
        snprintf(key, sizeof(key), "ttl:%u", i);
        n += req_set(out + n, cap - n, OP_SETQ, key, "t", 1, 0, 2, i);
    }
    n += req_key(out + n, cap - n, OP_NOOP, "", 0);
    ck_assert_int_eq(tu_send(c.fd, out, n), 0);
    ck_assert(bc_next(&c, &p));
    ck_assert_int_eq(p.opcode, OP_NOOP);
    /* The NOOP answer follows the TTL sets: they expire by then + 2 s. */
    ttl_end = (uint32_t)time(NULL) + 2;
    read_all(&c, out, cap, cas, true);
    for (uint32_t i = 0; i < NITEMS; i++) {
        maxcas = cas[i] > maxcas ? cas[i] : maxcas;
    }
    bc_close(&c);
    ck_assert_int_eq(tu_server_stop(pid), 0);

    pid = start(backends[_i], dir, "periodic", &port);
    bc_open(&c, port);
    read_all(&c, out, cap, cas, false);
    /* New writes: CAS above every CAS from before the restart. */
    for (uint32_t i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "new:%u", i);
        n = req_set(out, cap, OP_SET, key, "n", 1, 0, 0, i);
        ck_assert_int_eq(tu_send(c.fd, out, n), 0);
        ck_assert(bc_next(&c, &p));
        ck_assert_int_eq(p.status, 0);
        ck_assert_uint_gt(p.cas, maxcas);
        maxcas = p.cas;
    }
    /* Overwriting an old item too. */
    n = req_set(out, cap, OP_SET, "item:0", "x", 1, 0, 0, 0);
    ck_assert_int_eq(tu_send(c.fd, out, n), 0);
    ck_assert(bc_next(&c, &p));
    ck_assert_uint_gt(p.cas, maxcas);
    /* The two-second items are gone once their absolute time passed. */
    while ((uint32_t)time(NULL) <= ttl_end) {
        usleep(100 * 1000);
    }
    for (uint32_t i = 0; i < NTTL; i++) {
        snprintf(key, sizeof(key), "ttl:%u", i);
        n = req_key(out, cap, OP_GET, key, i);
        ck_assert_int_eq(tu_send(c.fd, out, n), 0);
        ck_assert(bc_next(&c, &p));
        ck_assert_msg(p.status == 1, "ttl:%u still there", i);
    }
    bc_close(&c);
    ck_assert_int_eq(tu_server_stop(pid), 0);
    tu_rm_tree(dir);
    free(cas);
    free(out);
}
END_TEST

/* ---- kill -9 while eight clients write ---- */

struct client {
    uint16_t         port;
    int              id;
    atomic_bool     *stop;
    uint64_t        *cas;     /* [MAXSEQ]: CAS of acknowledged writes */
    uint32_t         sent;    /* writes sent */
    uint32_t         acked;   /* every write below this was acknowledged */
    bool             broken;  /* a bad answer before the kill */
};

static void
client_val(int id, uint32_t seq, char *v, size_t cap)
{
    snprintf(v, cap, "client %d write %u %s", id, seq,
             seq % 7 == 0 ? "with a somewhat longer tail to vary sizes" : "");
}

/* Writes c<id>:<seq> in order, WINDOW at a time, until the server dies. */
static void *
client_main(void *arg)
{
    struct client *cl = arg;
    struct bconn c;
    uint8_t out[WINDOW * 512];
    char key[32];
    char val[128];

    bc_open(&c, cl->port);
    while (!atomic_load(cl->stop) && cl->sent + WINDOW <= MAXSEQ) {
        size_t n = 0;

        for (uint32_t i = 0; i < WINDOW; i++) {
            uint32_t seq = cl->sent + i;

            snprintf(key, sizeof(key), "c%d:%u", cl->id, seq);
            client_val(cl->id, seq, val, sizeof(val));
            n += req_set(out + n, sizeof(out) - n, OP_SET, key, val,
                         (uint32_t)strlen(val), (uint32_t)seq, 0, seq);
        }
        if (tu_send(c.fd, out, n) != 0) {
            break;
        }
        cl->sent += WINDOW;
        for (uint32_t i = 0; i < WINDOW; i++) {
            struct tu_bin p;

            if (!bc_next(&c, &p)) {
                goto out;
            }
            if (p.status != 0 || p.opaque != cl->acked) {
                cl->broken = true;
                goto out;
            }
            cl->cas[cl->acked++] = p.cas;
        }
    }
out:
    bc_close(&c);
    return NULL;
}

/* Starts the clients, lets them write for ms, kills the server. */
static void
write_and_kill(pid_t pid, uint16_t port, struct client *cl, int ms)
{
    pthread_t th[NCLIENTS];
    atomic_bool stop;

    atomic_init(&stop, false);
    for (int i = 0; i < NCLIENTS; i++) {
        cl[i].port = port;
        cl[i].id = i;
        cl[i].stop = &stop;
        cl[i].cas = calloc(MAXSEQ, sizeof(uint64_t));
        ck_assert_ptr_nonnull(cl[i].cas);
        ck_assert_int_eq(pthread_create(&th[i], NULL, client_main, &cl[i]),
                         0);
    }
    usleep((useconds_t)ms * 1000);
    tu_server_kill(pid);
    atomic_store(&stop, true);
    for (int i = 0; i < NCLIENTS; i++) {
        pthread_join(th[i], NULL);
        ck_assert_msg(!cl[i].broken, "client %d got a bad answer", i);
        ck_assert_uint_gt(cl[i].acked, 0);
    }
}

/*
 * Reads c<id>:0 .. c<id>:sent-1 back; returns how many are present and
 * checks every present one is intact and, when acknowledged, has its CAS.
 * *prefix gets the length of the leading run of present keys.
 */
static uint32_t read_client_(struct bconn *c, const struct client *cl,
                             uint32_t *prefix);

static uint32_t
read_client(struct bconn *c, const struct client *cl, uint32_t *prefix)
{
    uint32_t present = read_client_(c, cl, prefix);

    if (getenv("RESTART_TEST_DEBUG") != NULL) {
        fprintf(stderr, "client %d: sent %u, acked %u, present %u, "
                "prefix %u\n", cl->id, cl->sent, cl->acked, present,
                *prefix);
    }
    return present;
}

static uint32_t
read_client_(struct bconn *c, const struct client *cl, uint32_t *prefix)
{
    uint8_t *out = malloc((size_t)WINDOW * 64 * 64);
    uint32_t present = 0;
    char key[32];
    char val[128];
    const uint32_t chunk = WINDOW * 64;

    ck_assert_ptr_nonnull(out);
    *prefix = 0;
    for (uint32_t from = 0; from < cl->sent; from += chunk) {
        uint32_t to = from + chunk < cl->sent ? from + chunk : cl->sent;
        size_t n = 0;

        for (uint32_t seq = from; seq < to; seq++) {
            snprintf(key, sizeof(key), "c%d:%u", cl->id, seq);
            n += req_key(out + n, (size_t)WINDOW * 64 * 64 - n, OP_GETK, key,
                         seq);
        }
        ck_assert_int_eq(tu_send(c->fd, out, n), 0);
        for (uint32_t seq = from; seq < to; seq++) {
            struct tu_bin p;

            ck_assert(bc_next(c, &p));
            ck_assert_uint_eq(p.opaque, seq);
            if (p.status != 0) {
                ck_assert_int_eq(p.status, 1);
                continue;
            }
            client_val(cl->id, seq, val, sizeof(val));
            ck_assert_uint_eq(p.vlen, strlen(val));
            ck_assert(memcmp(p.value, val, p.vlen) == 0);
            ck_assert_uint_eq(tu_get32(p.extras), seq);
            if (seq < cl->acked) {
                ck_assert_uint_eq(p.cas, cl->cas[seq]);
            }
            if (present == seq) {
                *prefix = seq + 1;
            }
            present++;
        }
    }
    free(out);
    return present;
}

START_TEST(kill9_always_keeps_acknowledged)
{
    char dir[64];
    uint16_t port = 0;
    struct client cl[NCLIENTS];
    struct bconn c;
    pid_t pid;
    uint32_t total = 0;

    memset(cl, 0, sizeof(cl));
    make_dir(dir, sizeof(dir));
    pid = start(backends[_i], dir, "always", &port);
    write_and_kill(pid, port, cl, 1500);

    pid = start(backends[_i], dir, "always", &port);
    bc_open(&c, port);
    for (int i = 0; i < NCLIENTS; i++) {
        uint32_t prefix;
        uint32_t present = read_client(&c, &cl[i], &prefix);

        /* Every acknowledged write survived, with its CAS. */
        ck_assert_msg(prefix >= cl[i].acked, "%s: client %d: %u acked, "
                      "first %u present", backends[_i], i, cl[i].acked,
                      prefix);
        ck_assert_uint_eq(present, prefix);
        total += cl[i].acked;
    }
    ck_assert_uint_gt(total, 100);
    bc_close(&c);
    ck_assert_int_eq(tu_server_stop(pid), 0);
    for (int i = 0; i < NCLIENTS; i++) {
        free(cl[i].cas);
    }
    tu_rm_tree(dir);
}
END_TEST

START_TEST(kill9_periodic_consistent_prefix)
{
    char dir[64];
    uint16_t port = 0;
    struct client cl[NCLIENTS];
    struct bconn c;
    pid_t pid;

    memset(cl, 0, sizeof(cl));
    make_dir(dir, sizeof(dir));
    pid = start(backends[_i], dir, "periodic", &port);
    write_and_kill(pid, port, cl, 1000);

    pid = start(backends[_i], dir, "periodic", &port);
    bc_open(&c, port);
    for (int i = 0; i < NCLIENTS; i++) {
        uint32_t prefix;
        uint32_t present = read_client(&c, &cl[i], &prefix);

        /* What is there is exactly a prefix of what the client wrote... */
        ck_assert_msg(present == prefix, "%s: client %d: %u present, but "
                      "only the first %u in sequence", backends[_i], i,
                      present, prefix);
        /* ...and a killed process loses no commit (the page cache keeps
         * it), so every acknowledged write is in it. */
        ck_assert_uint_ge(prefix, cl[i].acked);
    }
    bc_close(&c);
    ck_assert_int_eq(tu_server_stop(pid), 0);
    for (int i = 0; i < NCLIENTS; i++) {
        free(cl[i].cas);
    }
    tu_rm_tree(dir);
}
END_TEST

static Suite *
restart_suite(void)
{
    Suite *s = suite_create("restart");
    TCase *tc = tcase_create("restart");

    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, sigterm_restart_keeps_everything, 0, NBACKENDS);
    tcase_add_loop_test(tc, kill9_always_keeps_acknowledged, 0, NBACKENDS);
    tcase_add_loop_test(tc, kill9_periodic_consistent_prefix, 0, NBACKENDS);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr;
    int failed;

    if (NBACKENDS == 0) {
        printf("restart: no persistent backend in this build\n");
        return EXIT_SUCCESS;
    }
    sr = srunner_create(restart_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
