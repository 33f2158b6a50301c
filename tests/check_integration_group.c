/*
 * Sets run in groups: a worker takes the plain sets of one pass of its
 * loop and runs them together (one commit on a persistent backend), their
 * replies waiting in holes of the reply queue. Against the real stashd on
 * $STASHD_BACKEND: every reply comes in request order with the right
 * bytes, whatever runs between the sets (a read of the same key, other
 * writes, noreply, quiet binary sets, a set refused as too large); sets a
 * client sent before closing still run; and on a persistent backend a
 * pipeline of sets costs far fewer commits than sets.
 */
#include "tests/util.h"

#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BIN_GETK  0x0c
#define BIN_NOOP  0x0a
#define BIN_SET   0x01
#define BIN_SETQ  0x11

static pid_t    srv_pid;
static uint16_t srv_port;

static void
setup(void)
{
    const char *args[] = { "-t", "1", NULL };

    srv_pid = tu_server_start(args, &srv_port);
    ck_assert_int_gt(srv_pid, 0);
}

static void
teardown(void)
{
    ck_assert_int_eq(tu_server_stop(srv_pid), 0);
}

static bool
persistent(void)
{
    return tu_backend() != NULL && strcmp(tu_backend(), "memory") != 0;
}

/* Sends req whole, then expects exactly exp back (and then silence). */
static void
exchange(int fd, const char *req, const char *exp)
{
    size_t n = strlen(exp);
    char *got = malloc(n + 1);
    ssize_t r;
    char extra;

    ck_assert_ptr_nonnull(got);
    ck_assert_int_eq(tu_send(fd, req, strlen(req)), 0);
    r = tu_recv(fd, got, n);
    ck_assert_int_eq(r, (ssize_t)n);
    got[n] = '\0';
    ck_assert_str_eq(got, exp);
    tu_set_timeout(fd, 100);
    ck_assert_int_le(recv(fd, &extra, 1, 0), 0);
    tu_set_timeout(fd, 10000);
    free(got);
}

/* A general stats figure (0 when absent). */
static unsigned long long
stat_of(int fd, const char *name)
{
    static char buf[65536];
    char want[96];
    const char *p;
    ssize_t n;

    ck_assert_int_eq(tu_send(fd, "stats\r\n", 7), 0);
    n = tu_recv_until(fd, buf, sizeof(buf) - 1, "END\r\n");
    ck_assert_int_gt(n, 0);
    buf[n] = '\0';
    snprintf(want, sizeof(want), "STAT %s ", name);
    p = strstr(buf, want);
    return p == NULL ? 0 : strtoull(p + strlen(want), NULL, 10);
}

START_TEST(pipelined_sets_share_commits)
{
    enum { N = 200 };
    static char req[N * 40 + 64];
    static char exp[N * 10 + 128];
    char commits[64];
    unsigned long long before = 0;
    unsigned long long after;
    size_t r = 0;
    size_t e = 0;
    int fd = tu_connect(srv_port);

    ck_assert_int_ge(fd, 0);
    snprintf(commits, sizeof(commits), "%s_commits",
             persistent() ? tu_backend() : "none");
    if (persistent()) {
        before = stat_of(fd, commits);
    }
    for (int i = 0; i < N; i++) {
        r += (size_t)sprintf(req + r, "set k%d 0 0 6\r\nv%05d\r\n", i, i);
        e += (size_t)sprintf(exp + e, "STORED\r\n");
    }
    r += (size_t)sprintf(req + r, "get k7 k199\r\n");
    sprintf(exp + e, "VALUE k7 0 6\r\nv00007\r\nVALUE k199 0 6\r\n"
            "v00199\r\nEND\r\n");
    exchange(fd, req, exp);
    if (persistent()) {
        /* One commit per set would be 200; a group holds up to 64. */
        after = stat_of(fd, commits);
        ck_assert_msg(after - before <= N / 8, "%llu commits for %d sets",
                      after - before, N);
    }
    close(fd);
}
END_TEST

START_TEST(pipeline_sees_its_own_sets)
{
    int fd = tu_connect(srv_port);

    ck_assert_int_ge(fd, 0);
    exchange(fd,
             "set a 0 0 1\r\n1\r\nget a\r\n"
             "set a 5 0 1\r\n2\r\nget a\r\n"
             "append a 0 0 1\r\n3\r\nget a\r\n"
             "incr a 10\r\n"
             "set b 0 0 2\r\nbb\r\ndelete b\r\nget b\r\n"
             "set c 0 0 1\r\nc\r\ntouch c 100\r\n"
             "set d 0 0 1 noreply\r\nd\r\nget d\r\n"
             "set empty 0 0 0\r\n\r\nget empty\r\n"
             "set e 0 0 1\r\ne\r\nflush_all\r\nget e\r\n",
             "STORED\r\nVALUE a 0 1\r\n1\r\nEND\r\n"
             "STORED\r\nVALUE a 5 1\r\n2\r\nEND\r\n"
             "STORED\r\nVALUE a 5 2\r\n23\r\nEND\r\n"
             "33\r\n"
             "STORED\r\nDELETED\r\nEND\r\n"
             "STORED\r\nTOUCHED\r\n"
             "VALUE d 0 1\r\nd\r\nEND\r\n"
             "STORED\r\nVALUE empty 0 0\r\n\r\nEND\r\n"
             "STORED\r\nOK\r\nEND\r\n");
    close(fd);
}
END_TEST

START_TEST(too_large_set_between_sets)
{
    /* Past the 1 MB item limit: refused, and (as memcached does) the old
     * value goes, while the sets around it stay. */
    size_t big = 2 * 1024 * 1024;
    char *req = malloc(big + 256);
    size_t r = 0;
    int fd = tu_connect(srv_port);

    ck_assert_ptr_nonnull(req);
    ck_assert_int_ge(fd, 0);
    exchange(fd, "set x 0 0 3\r\nold\r\n", "STORED\r\n");
    r += (size_t)sprintf(req, "set y 0 0 1\r\ny\r\nset x 0 0 %zu\r\n", big);
    memset(req + r, 'b', big);
    r += big;
    r += (size_t)sprintf(req + r, "\r\nset z 0 0 1\r\nz\r\nget x y z\r\n");
    ck_assert_int_eq(tu_send(fd, req, r), 0);
    free(req);
    {
        const char *exp = "STORED\r\n"
                          "SERVER_ERROR object too large for cache\r\n"
                          "STORED\r\nVALUE y 0 1\r\ny\r\nVALUE z 0 1\r\nz\r\n"
                          "END\r\n";
        char got[256];
        ssize_t n = tu_recv(fd, got, strlen(exp));

        ck_assert_int_eq(n, (ssize_t)strlen(exp));
        got[n] = '\0';
        ck_assert_str_eq(got, exp);
    }
    close(fd);
}
END_TEST

/* Appends one binary request to buf at *n. */
static void
bin_add(uint8_t *buf, size_t *n, uint8_t op, const char *key,
        const char *val, uint32_t opaque)
{
    uint8_t ext[8] = { 0 };
    bool set = op == BIN_SET || op == BIN_SETQ;

    *n += tu_bin_req(buf + *n, 4096, op, set ? ext : NULL, set ? 8 : 0, key,
                     (uint16_t)strlen(key), val,
                     val != NULL ? (uint32_t)strlen(val) : 0, opaque, 0);
}

START_TEST(binary_quiet_sets_then_noop)
{
    static uint8_t buf[65536];
    uint8_t res[4096];
    struct tu_bin p;
    uint64_t cas[3];
    size_t n = 0;
    int fd = tu_connect(srv_port);

    ck_assert_int_ge(fd, 0);
    for (int i = 0; i < 20; i++) {
        char key[16];

        snprintf(key, sizeof(key), "q%d", i);
        bin_add(buf, &n, BIN_SETQ, key, key, (uint32_t)i);
    }
    for (int i = 0; i < 3; i++) {
        bin_add(buf, &n, BIN_SET, "c", i == 2 ? "last" : "x",
                (uint32_t)(100 + i));
    }
    bin_add(buf, &n, BIN_GETK, "q5", NULL, 200);
    bin_add(buf, &n, BIN_GETK, "c", NULL, 201);
    bin_add(buf, &n, BIN_NOOP, "", NULL, 202);
    ck_assert_int_eq(tu_send(fd, buf, n), 0);
    /* The quiet sets say nothing; the others answer in order, the CAS of
     * each set above the one before. */
    for (int i = 0; i < 3; i++) {
        ck_assert_int_gt(tu_recv_bin(fd, res, sizeof(res)), 0);
        ck_assert_uint_gt(tu_bin_parse(res, sizeof(res), &p), 0);
        ck_assert_uint_eq(p.opcode, BIN_SET);
        ck_assert_uint_eq(p.status, 0);
        ck_assert_uint_eq(p.opaque, (uint32_t)(100 + i));
        cas[i] = p.cas;
        ck_assert_uint_ne(cas[i], 0);
        if (i > 0) {
            ck_assert_uint_gt(cas[i], cas[i - 1]);
        }
    }
    ck_assert_int_gt(tu_recv_bin(fd, res, sizeof(res)), 0);
    ck_assert_uint_gt(tu_bin_parse(res, sizeof(res), &p), 0);
    ck_assert_uint_eq(p.opcode, BIN_GETK);
    ck_assert_uint_eq(p.opaque, 200);
    ck_assert_uint_eq(p.vlen, 2);
    ck_assert_int_eq(memcmp(p.value, "q5", 2), 0);
    ck_assert_int_gt(tu_recv_bin(fd, res, sizeof(res)), 0);
    ck_assert_uint_gt(tu_bin_parse(res, sizeof(res), &p), 0);
    ck_assert_uint_eq(p.opaque, 201);
    ck_assert_uint_eq(p.cas, cas[2]);
    ck_assert_int_eq(memcmp(p.value, "last", 4), 0);
    ck_assert_int_gt(tu_recv_bin(fd, res, sizeof(res)), 0);
    ck_assert_uint_gt(tu_bin_parse(res, sizeof(res), &p), 0);
    ck_assert_uint_eq(p.opcode, BIN_NOOP);
    ck_assert_uint_eq(p.opaque, 202);
    close(fd);
}
END_TEST

START_TEST(sets_sent_before_close_still_run)
{
    enum { N = 50 };
    char req[N * 32];
    size_t r = 0;
    int fd = tu_connect(srv_port);

    ck_assert_int_ge(fd, 0);
    for (int i = 0; i < N; i++) {
        r += (size_t)sprintf(req + r, "set gone%d 0 0 1\r\n%d\r\n", i, i % 10);
    }
    ck_assert_int_eq(tu_send(fd, req, r), 0);
    close(fd);
    fd = tu_connect(srv_port);
    ck_assert_int_ge(fd, 0);
    /* The server may still be running the first connection's sets: the
     * last one shows up within a few seconds. */
    for (int tries = 0; tries < 100; tries++) {
        char got[64];
        ssize_t n;

        ck_assert_int_eq(tu_send(fd, "get gone49\r\n", 12), 0);
        n = tu_recv_until(fd, got, sizeof(got) - 1, "END\r\n");
        ck_assert_int_gt(n, 0);
        got[n] = '\0';
        if (strcmp(got, "END\r\n") != 0) {
            break;
        }
        usleep(50 * 1000);
    }
    {
        static char get[N * 16 + 16];
        static char want[N * 32 + 16];
        size_t g = (size_t)sprintf(get, "get");
        size_t w = 0;

        for (int i = 0; i < N; i++) {
            g += (size_t)sprintf(get + g, " gone%d", i);
            w += (size_t)sprintf(want + w, "VALUE gone%d 0 1\r\n%d\r\n", i,
                                 i % 10);
        }
        sprintf(get + g, "\r\n");
        sprintf(want + w, "END\r\n");
        exchange(fd, get, want);
    }
    close(fd);
}
END_TEST

static Suite *
group_suite(void)
{
    Suite *s = suite_create("group");
    TCase *tc = tcase_create("sets");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, pipelined_sets_share_commits);
    tcase_add_test(tc, pipeline_sees_its_own_sets);
    tcase_add_test(tc, too_large_set_between_sets);
    tcase_add_test(tc, binary_quiet_sets_then_noop);
    tcase_add_test(tc, sets_sent_before_close_still_run);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(group_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
