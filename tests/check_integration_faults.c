/*
 * Failures are reported, never answered as success: the real stashd on a
 * persistent backend ($STASHD_BACKEND) whose store cannot write, because
 * another process holds sqlite's write lock, or because the disk fails
 * writes or syncs (tests/fault_shim.c, preloaded). Every write-type
 * command must then answer SERVER_ERROR in text and an error status in
 * binary, leave the data as it was, and reads must go on; a write left
 * pending under --sync=always whose sync fails must get an error too.
 */
#include "tests/util.h"

#include <check.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BIN_DELETE   0x04
#define BIN_FLUSH    0x08
#define BIN_EINTERNAL 0x84

/* One server on a data dir of its own, maybe with the fault shim. */
struct srv {
    pid_t    pid;
    uint16_t port;
    char     dir[64];
    char     ctl[80];
};

static const char *
backend(void)
{
    return tu_backend() != NULL ? tu_backend() : "lmdb";
}

static bool
persistent(void)
{
    return strcmp(backend(), "memory") != 0;
}

/* Writes the shim's mode ("" for none). */
static void
set_fault(struct srv *s, const char *mode)
{
    FILE *f = fopen(s->ctl, "w");

    ck_assert_ptr_nonnull(f);
    fputs(mode, f);
    fclose(f);
}

static void
srv_start(struct srv *s, bool shim, const char *sync)
{
    const char *args[] = { "--backend", backend(), "--data-dir", s->dir,
                           "--sync", sync, "-t", "2", NULL };

    memset(s, 0, sizeof(*s));
    snprintf(s->dir, sizeof(s->dir), "/tmp/stashd-fault-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(s->dir));
    /* The control file lives beside the data, not in it. */
    snprintf(s->ctl, sizeof(s->ctl), "%s.ctl", s->dir);
    args[3] = s->dir;
    set_fault(s, "");
    if (shim) {
        const char *lib = getenv("STASHD_FAULT_SHIM");

        ck_assert_msg(lib != NULL, "STASHD_FAULT_SHIM not set");
        setenv("LD_PRELOAD", lib, 1);
        setenv("STASHD_FAULT_CTL", s->ctl, 1);
        setenv("STASHD_FAULT_DIR", s->dir, 1);
        /* The ASan build: the shim comes before ASan's runtime. */
        setenv("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1:"
               "verify_asan_link_order=0", 1);
    }
    s->pid = tu_server_start(args, &s->port);
    unsetenv("LD_PRELOAD");
    ck_assert_msg(s->pid > 0, "stashd did not start");
}

static void
srv_stop(struct srv *s)
{
    set_fault(s, "");
    ck_assert_int_eq(tu_server_stop(s->pid), 0);
    tu_rm_tree(s->dir);
    unlink(s->ctl);
}

/* Sends a text command and returns its first reply line. */
static const char *
cmd(int fd, const char *line, char *buf, size_t cap)
{
    ssize_t n;

    ck_assert_int_eq(tu_send(fd, line, strlen(line)), 0);
    n = tu_recv_until(fd, buf, cap, "\r\n");
    ck_assert_msg(n > 0, "no reply to %s", line);
    buf[n] = '\0';
    return buf;
}

/* A whole get reply, until END or an error line. */
static const char *
get(int fd, const char *key, char *buf, size_t cap)
{
    char line[300];
    size_t n = 0;

    snprintf(line, sizeof(line), "get %s\r\n", key);
    ck_assert_int_eq(tu_send(fd, line, strlen(line)), 0);
    for (;;) {
        ssize_t r = tu_recv_until(fd, buf + n, cap - n, "\r\n");

        ck_assert_msg(r > 0, "no reply to get %s", key);
        n += (size_t)r;
        buf[n] = '\0';
        if (strstr(buf, "END\r\n") != NULL ||
            strstr(buf, "ERROR") != NULL) {
            return buf;
        }
    }
}

/* Sends one binary request (req[0, n)) and decodes its reply into *b,
 * which points into resp (cap bytes). */
static void
bin_call(int fd, const uint8_t *req, size_t n, uint8_t *resp, size_t cap,
         struct tu_bin *b)
{
    ssize_t r;

    ck_assert_int_eq(tu_send(fd, req, n), 0);
    r = tu_recv_bin(fd, resp, cap);
    ck_assert_int_gt(r, 0);
    ck_assert_uint_gt(tu_bin_parse(resp, (size_t)r, b), 0);
}

/* A binary request with no extras and no value; the reply's status. */
static unsigned
bin_status(int fd, uint8_t op, const char *key, char *msg, size_t cap)
{
    uint8_t req[300];
    uint8_t resp[512];
    struct tu_bin b;
    size_t n = tu_bin_req(req, sizeof(req), op, NULL, 0, key,
                          (uint16_t)strlen(key), NULL, 0, 0x1234, 0);

    bin_call(fd, req, n, resp, sizeof(resp), &b);
    ck_assert_uint_eq(b.opaque, 0x1234);
    snprintf(msg, cap, "%.*s", (int)b.vlen, (const char *)b.value);
    return b.status;
}

/* A text command whose reply must be SERVER_ERROR; why and what name it
 * in the failure message. */
static void
expect_server_error(int fd, const char *line, const char *why,
                    const char *what)
{
    char buf[4096];

    ck_assert_msg(strncmp(cmd(fd, line, buf, sizeof(buf)), "SERVER_ERROR",
                          12) == 0, "%s: %s: %s", why, what, buf);
}

/* Every write-type command fails loudly while the store cannot write. */
static void
expect_writes_fail(int fd, uint16_t port, const char *why)
{
    static const struct {
        const char *what;
        const char *line;
    } writes[] = {
        { "set", "set k 0 0 2\r\nv2\r\n" },
        { "delete", "delete k\r\n" },
        { "touch", "touch k 100\r\n" },
        { "incr", "incr n 1\r\n" },
        { "append", "append k 0 0 1\r\nx\r\n" },
        { "flush_all", "flush_all\r\n" },
        { "gat", "gat 100 k\r\n" },
    };
    int bfd = tu_connect(port);     /* the first byte picks the protocol */
    char buf[4096];
    char msg[128];

    for (size_t i = 0; i < sizeof(writes) / sizeof(writes[0]); i++) {
        expect_server_error(fd, writes[i].line, why, writes[i].what);
    }
    ck_assert_uint_eq(bin_status(bfd, BIN_DELETE, "k", msg, sizeof(msg)),
                      BIN_EINTERNAL);
    ck_assert_uint_eq(bin_status(bfd, BIN_FLUSH, "", msg, sizeof(msg)),
                      BIN_EINTERNAL);
    close(bfd);
    /* The data is as it was, and reads go on. */
    ck_assert_str_eq(get(fd, "k", buf, sizeof(buf)),
                     "VALUE k 0 2\r\nv1\r\nEND\r\n");
    ck_assert_str_eq(get(fd, "n", buf, sizeof(buf)),
                     "VALUE n 0 1\r\n5\r\nEND\r\n");
}

/* srv_start, then a connection that seeds k = v1 and n = 5; returns it. */
static int
srv_seeded(struct srv *s, bool shim, const char *sync)
{
    char buf[256];
    int fd;

    srv_start(s, shim, sync);
    fd = tu_connect(s->port);
    ck_assert_str_eq(cmd(fd, "set k 0 0 2\r\nv1\r\n", buf, sizeof(buf)),
                     "STORED\r\n");
    ck_assert_str_eq(cmd(fd, "set n 0 0 1\r\n5\r\n", buf, sizeof(buf)),
                     "STORED\r\n");
    return fd;
}

START_TEST(sqlite_writer_locked_elsewhere)
{
    struct srv s;
    sqlite3 *db;
    char path[128];
    char buf[4096];
    int fd;

    if (strcmp(backend(), "sqlite") != 0) {
        return;                         /* an sqlite-only way to fail */
    }
    fd = srv_seeded(&s, false, "periodic");
    /* The sqlite3 shell (or any program) holding the write lock. */
    snprintf(path, sizeof(path), "%s/stashd.db", s.dir);
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL),
                     SQLITE_OK);
    expect_writes_fail(fd, s.port, "write lock held");
    ck_assert_int_eq(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    /* Once it is let go, writes work again. */
    ck_assert_str_eq(cmd(fd, "delete k\r\n", buf, sizeof(buf)),
                     "DELETED\r\n");
    close(fd);
    srv_stop(&s);
}
END_TEST

START_TEST(failing_disk_writes)
{
    struct srv s;
    int fd;

    if (!persistent()) {
        return;
    }
    fd = srv_seeded(&s, true, "periodic");
    set_fault(&s, "write");
    expect_writes_fail(fd, s.port, "writes fail");
    set_fault(&s, "");
    close(fd);
    srv_stop(&s);
}
END_TEST

START_TEST(failing_sync_fails_pending_writes)
{
    struct srv s;
    char buf[4096];
    uint8_t req[64];
    uint8_t resp[256];
    uint8_t ext[8] = { 0 };
    struct tu_bin b;
    size_t n;
    int closed = 0;
    int fd;

    if (!persistent()) {
        return;
    }
    fd = srv_seeded(&s, true, "always");
    set_fault(&s, "sync");
    /*
     * Committed, but its sync fails: an error, never STORED. When the
     * write was left waiting for that sync, the connection closes after
     * the error (the get pipelined behind it may have read what did not
     * last); when the sync had already failed as the write came to wait,
     * the error is the write's own answer and the get is answered.
     */
    ck_assert_int_eq(tu_send(fd, "set k 0 0 2\r\nv2\r\nget n\r\n", 24), 0);
    ck_assert_int_eq(tu_recv(fd, buf, 24), 24);
    buf[24] = '\0';
    ck_assert_str_eq(buf, "SERVER_ERROR i/o error\r\n");
    n = tu_recv_idle(fd, buf, sizeof(buf) - 1, 1000, &closed);
    buf[n] = '\0';
    ck_assert_msg(closed ? n == 0
                         : strcmp(buf, "VALUE n 0 1\r\n5\r\nEND\r\n") == 0,
                  "after the failed set: %s%s", buf,
                  closed ? " (then closed)" : "");
    close(fd);
    /* A quiet binary set is answered too: errors are always sent. */
    fd = tu_connect(s.port);
    n = tu_bin_req(req, sizeof(req), 0x11 /* SETQ */, ext, 8, "q", 1, "x",
                   1, 77, 0);
    bin_call(fd, req, n, resp, sizeof(resp), &b);
    ck_assert_uint_eq(b.status, BIN_EINTERNAL);
    ck_assert_uint_eq(b.opaque, 77);
    close(fd);
    /* From then on writes fail at once (the disk broke its promise);
     * reads go on. */
    fd = tu_connect(s.port);
    expect_server_error(fd, "set z 0 0 1\r\nz\r\n", "after a failed sync",
                        "set");
    ck_assert_str_eq(get(fd, "n", buf, sizeof(buf)),
                     "VALUE n 0 1\r\n5\r\nEND\r\n");
    close(fd);
    srv_stop(&s);
}
END_TEST

static Suite *
faults_suite(void)
{
    Suite *s = suite_create("faults");
    TCase *tc = tcase_create("faults");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, sqlite_writer_locked_elsewhere);
    tcase_add_test(tc, failing_disk_writes);
    tcase_add_test(tc, failing_sync_fails_pending_writes);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(faults_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
