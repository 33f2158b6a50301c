/*
 * --sync=always under load: many connections on several worker threads each
 * pipeline writes whose replies wait for a shared fsync. Every reply must
 * arrive. (A race once lost completions when two arrived for one worker
 * while it was acting on the first, and connections hung.) Runs for each
 * persistent backend that is built.
 */
#include "tests/util.h"

#include <check.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define THREADS 4
#define CONNS 12           /* per thread */
#define DEPTH 64           /* writes in flight per connection */
#define ROUNDS 12
#define VLEN 4096

static const char *const backends[] = {
#ifdef STASHD_HAVE_LMDB
    "lmdb",
#endif
#ifdef STASHD_HAVE_SQLITE
    "sqlite",
#endif
};
#define NBACKENDS ((int)(sizeof(backends) / sizeof(backends[0])))

struct client {
    uint16_t port;
    unsigned id;
    int      failures;     /* replies missing or not STORED */
};

static void *
client_main(void *arg)
{
    struct client *cl = arg;
    int fds[CONNS];
    uint8_t *batch = malloc((size_t)DEPTH * (24 + 8 + 32 + VLEN));
    uint8_t *val = malloc(VLEN);
    uint8_t ext[8] = { 0 };
    uint8_t hdr[24];

    memset(val, 'v', VLEN);
    for (int c = 0; c < CONNS; c++) {
        fds[c] = tu_connect(cl->port);
        if (fds[c] < 0) {
            cl->failures++;
        }
    }
    for (int r = 0; r < ROUNDS && cl->failures == 0; r++) {
        for (int c = 0; c < CONNS; c++) {
            size_t n = 0;

            for (int i = 0; i < DEPTH; i++) {
                char key[32];
                int kl = snprintf(key, sizeof(key), "t%u-c%d-%d", cl->id, c,
                                  i);

                n += tu_bin_req(batch + n, 24 + 8 + 32 + VLEN, 0x01, ext, 8,
                                key, (uint16_t)kl, val, VLEN, (uint32_t)i,
                                0);
            }
            if (tu_send(fds[c], batch, n) != 0) {
                cl->failures++;
            }
        }
        for (int c = 0; c < CONNS; c++) {
            for (int i = 0; i < DEPTH; i++) {
                /* A SET reply has no body: 24 bytes, status 0. */
                if (tu_recv(fds[c], hdr, 24) != 24 || hdr[6] != 0 ||
                    hdr[7] != 0) {
                    cl->failures++;
                    break;
                }
            }
        }
    }
    for (int c = 0; c < CONNS; c++) {
        if (fds[c] >= 0) {
            close(fds[c]);
        }
    }
    free(batch);
    free(val);
    return NULL;
}

START_TEST(pipelined_writes_all_answered)
{
    char dir[] = "/tmp/stashd-always-XXXXXX";
    const char *args[] = { "--backend", backends[_i], "--data-dir", dir,
                           "--sync=always", "-t", "2", NULL };
    pthread_t tid[THREADS];
    struct client cl[THREADS];
    uint16_t port;
    pid_t pid;
    char cmd[128];

    ck_assert_ptr_nonnull(mkdtemp(dir));
    pid = tu_server_start(args, &port);
    ck_assert_int_gt(pid, 0);
    for (unsigned t = 0; t < THREADS; t++) {
        cl[t].port = port;
        cl[t].id = t;
        cl[t].failures = 0;
        ck_assert_int_eq(pthread_create(&tid[t], NULL, client_main, &cl[t]),
                         0);
    }
    for (unsigned t = 0; t < THREADS; t++) {
        pthread_join(tid[t], NULL);
        ck_assert_msg(cl[t].failures == 0, "client %u: %d replies missing",
                      t, cl[t].failures);
    }
    ck_assert_int_eq(tu_server_stop(pid), 0);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("sync_always");
    TCase *tc = tcase_create("load");
    SRunner *sr;
    int failed;

    tcase_set_timeout(tc, 120);
    if (NBACKENDS > 0) {
        tcase_add_loop_test(tc, pipelined_writes_all_answered, 0, NBACKENDS);
    }
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
