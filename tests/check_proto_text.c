/*
 * Unit tests for the text codec (protocol/text.c). Every expectation is
 * written out here again, independently of the codec, from what memcached
 * 1.6.18 answered on the wire (tests/notes/text-oracle.md). Every buffer
 * handed to the decoder is a heap copy of exactly len bytes, so an ASan
 * build catches any read past len.
 */
#include "protocol/text.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_VALUE (1024u * 1024u)

/* A literal with its exact length, NUL bytes included. */
#define S(lit) .in = (lit), .len = sizeof(lit) - 1

#define K10  "kkkkkkkkkk"
#define K50  K10 K10 K10 K10 K10
#define K250 K50 K50 K50 K50 K50
#define K251 K250 "k"

/* ---- a heap copy of exactly len bytes per decode ---- */

static char *held;

static void
held_free(void)
{
    free(held);
    held = NULL;
}

static proto_rc_e
decode(const char *in, size_t len, size_t max_value,
       struct proto_text_req *rq, size_t *used)
{
    held_free();
    held = malloc(len > 0 ? len : 1);
    ck_assert_ptr_nonnull(held);
    memcpy(held, in, len);
    return proto_text_decode(held, len, max_value, rq, used);
}

static void
ck_bytes(const char *got, size_t gotlen, const char *want, size_t wantlen,
         const char *what, const char *in)
{
    ck_assert_msg(gotlen == wantlen && (wantlen == 0 ||
                                        memcmp(got, want, wantlen) == 0),
                  "%s: %s is %zu bytes \"%.*s\", want %zu \"%.*s\"", in, what,
                  gotlen, (int)(gotlen > 80 ? 80 : gotlen),
                  got != NULL ? got : "", wantlen,
                  (int)(wantlen > 80 ? 80 : wantlen), want);
}

/* ---- requests memcached accepts ---- */

struct ok_case {
    const char      *in;
    size_t           len;
    proto_text_cmd_e cmd;
    const char      *key;      /* NULL: keylen 0 */
    size_t           keylen;   /* 0: strlen(key) */
    size_t           nkeys;
    uint32_t         flags;
    int32_t          exptime;
    uint32_t         vlen;
    uint64_t         cas;
    uint64_t         delta;
    int32_t          delay;
    uint32_t         level;
    bool             noreply;
    const char      *value;    /* storage: vlen bytes */
    const char      *args;     /* NULL: not checked */
    const char      *rest;     /* bytes left after *used; NULL: none */
};

static const struct ok_case oks[] = {
    /* get family */
    { S("get a\r\n"), PROTO_TEXT_GET, .key = "a", .nkeys = 1, .args = "a" },
    { S("get a\n"), PROTO_TEXT_GET, .key = "a", .nkeys = 1 },
    { S("get a b c\r\n"), PROTO_TEXT_GET, .key = "a", .nkeys = 3,
      .args = "a b c" },
    { S("  get   n  \r\n"), PROTO_TEXT_GET, .key = "n", .nkeys = 1,
      .args = "n  " },
    { S("get n \r\n"), PROTO_TEXT_GET, .key = "n", .nkeys = 1 },
    { S("get n\r\r\n"), PROTO_TEXT_GET, .key = "n\r", .nkeys = 1 },
    { S("get a\tb\r\n"), PROTO_TEXT_GET, .key = "a\tb", .nkeys = 1 },
    { S("get n\x0b\r\n"), PROTO_TEXT_GET, .key = "n\x0b", .nkeys = 1 },
    { S("get n\rget n\r\n"), PROTO_TEXT_GET, .key = "n\rget", .nkeys = 2 },
    { S("get n\0junk\r\n"), PROTO_TEXT_GET, .key = "n", .nkeys = 1,
      .args = "n" },
    { S("get a\0b c\r\n"), PROTO_TEXT_GET, .key = "a", .nkeys = 1 },
    { S("get x HTTP/\r\n"), PROTO_TEXT_GET, .key = "x", .nkeys = 2 },
    { S("get noreply\r\n"), PROTO_TEXT_GET, .key = "noreply", .nkeys = 1 },
    { S("get " K250 "\r\n"), PROTO_TEXT_GET, .key = K250, .nkeys = 1 },
    { S("bget a\r\n"), PROTO_TEXT_GET, .key = "a", .nkeys = 1 },
    { S("gets a b\r\n"), PROTO_TEXT_GETS, .key = "a", .nkeys = 2 },
    { S("gat 100 a\r\n"), PROTO_TEXT_GAT, .key = "a", .nkeys = 1,
      .exptime = 100, .args = "a" },
    { S("gats 100 a b\r\n"), PROTO_TEXT_GATS, .key = "a", .nkeys = 2,
      .exptime = 100 },
    { S("gat 10\r\n"), PROTO_TEXT_GAT, .nkeys = 0, .exptime = 10,
      .args = "" },
    { S("gats 10 \r\n"), PROTO_TEXT_GATS, .nkeys = 0, .exptime = 10 },
    { S("gat -1 zz\r\n"), PROTO_TEXT_GAT, .key = "zz", .nkeys = 1,
      .exptime = -1 },
    { S("gat 4294967296 n\r\n"), PROTO_TEXT_GAT, .key = "n", .nkeys = 1 },
    { S("gat 10 n noreply\r\n"), PROTO_TEXT_GAT, .key = "n", .nkeys = 2,
      .exptime = 10 },
    /* storage */
    { S("set a 0 0 1\r\nx\r\n"), PROTO_TEXT_SET, .key = "a", .vlen = 1,
      .value = "x" },
    { S("set a 5 0 1\r\nx\r\n"), PROTO_TEXT_SET, .key = "a", .flags = 5,
      .vlen = 1, .value = "x" },
    { S("set a 0 0 1 x\r\nx\r\n"), PROTO_TEXT_SET, .key = "a", .vlen = 1,
      .value = "x" },
    { S("set a 0 0 1 noreply\r\nx\r\n"), PROTO_TEXT_SET, .key = "a",
      .vlen = 1, .value = "x", .noreply = true },
    { S("set a 0 0 1 NOREPLY\r\nx\r\n"), PROTO_TEXT_SET, .key = "a",
      .vlen = 1, .value = "x" },
    { S("set a 4294967295 0 1\r\nx\r\n"), PROTO_TEXT_SET, .key = "a",
      .flags = 4294967295u, .vlen = 1, .value = "x" },
    { S("set a 4294967296 0 1\r\nx\r\n"), PROTO_TEXT_SET, .key = "a",
      .flags = 0, .vlen = 1, .value = "x" },
    { S("set a 4294967297 0 1\r\nx\r\n"), PROTO_TEXT_SET, .key = "a",
      .flags = 1, .vlen = 1, .value = "x" },
    { S("set a -0 0 1\r\nx\r\n"), PROTO_TEXT_SET, .key = "a", .vlen = 1,
      .value = "x" },
    { S("set a +5 0 1\r\nx\r\n"), PROTO_TEXT_SET, .key = "a", .flags = 5,
      .vlen = 1, .value = "x" },
    { S("set a \t5 0 1\r\nx\r\n"), PROTO_TEXT_SET, .key = "a", .flags = 5,
      .vlen = 1, .value = "x" },
    { S("set a 5\t 0 1\r\nx\r\n"), PROTO_TEXT_SET, .key = "a", .flags = 5,
      .vlen = 1, .value = "x" },
    { S("set a 5\tz 0 1\r\nx\r\n"), PROTO_TEXT_SET, .key = "a", .flags = 5,
      .vlen = 1, .value = "x" },
    { S("set a -18446744073709551615 0 1\r\nx\r\n"), PROTO_TEXT_SET,
      .key = "a", .flags = 1, .vlen = 1, .value = "x" },
    { S("set a 010 0 1\r\nx\r\n"), PROTO_TEXT_SET, .key = "a", .flags = 10,
      .vlen = 1, .value = "x" },
    { S("set a 0 -1 1\r\nx\r\n"), PROTO_TEXT_SET, .key = "a", .exptime = -1,
      .vlen = 1, .value = "x" },
    { S("set a 0 2147483647 1\r\nx\r\n"), PROTO_TEXT_SET, .key = "a",
      .exptime = INT32_MAX, .vlen = 1, .value = "x" },
    { S("set a 0 2147483648 1\r\nx\r\n"), PROTO_TEXT_SET, .key = "a",
      .exptime = INT32_MIN, .vlen = 1, .value = "x" },
    { S("set a 0 -2147483648 1\r\nx\r\n"), PROTO_TEXT_SET, .key = "a",
      .exptime = INT32_MIN, .vlen = 1, .value = "x" },
    { S("set a 0 -2147483649 1\r\nx\r\n"), PROTO_TEXT_SET, .key = "a",
      .exptime = INT32_MAX, .vlen = 1, .value = "x" },
    { S("set a 0 4294967296 1\r\nx\r\n"), PROTO_TEXT_SET, .key = "a",
      .exptime = 0, .vlen = 1, .value = "x" },
    { S("set a 0 4294967396 1\r\nx\r\n"), PROTO_TEXT_SET, .key = "a",
      .exptime = 100, .vlen = 1, .value = "x" },
    { S("set a 0 1\x0b 1\r\nx\r\n"), PROTO_TEXT_SET, .key = "a",
      .exptime = 1, .vlen = 1, .value = "x" },
    { S("set a 0 +3 1\r\nx\r\n"), PROTO_TEXT_SET, .key = "a", .exptime = 3,
      .vlen = 1, .value = "x" },
    { S("set a 0 0 4294967297\r\nx\r\n"), PROTO_TEXT_SET, .key = "a",
      .vlen = 1, .value = "x" },
    { S("set a 0 0 +1\r\nx\r\n"), PROTO_TEXT_SET, .key = "a", .vlen = 1,
      .value = "x" },
    { S("set a 0 0 01\r\nx\r\n"), PROTO_TEXT_SET, .key = "a", .vlen = 1,
      .value = "x" },
    { S("set n 0 0 1\rx\r\ny\r\n"), PROTO_TEXT_SET, .key = "n", .vlen = 1,
      .value = "y" },
    { S("set  n  0  0  1\r\nx\r\n"), PROTO_TEXT_SET, .key = "n", .vlen = 1,
      .value = "x" },
    { S("set n 0 0 1  \r\nx\r\n"), PROTO_TEXT_SET, .key = "n", .vlen = 1,
      .value = "x" },
    { S("set a 0 0 1\nx\r\n"), PROTO_TEXT_SET, .key = "a", .vlen = 1,
      .value = "x" },
    { S("set a 0 0 2\r\n\r\n\r\n"), PROTO_TEXT_SET, .key = "a", .vlen = 2,
      .value = "\r\n" },
    { S("set a 0 0 4\r\n\0\r\n\0\r\n"), PROTO_TEXT_SET, .key = "a",
      .vlen = 4, .value = "\0\r\n\0" },
    { S("set a 0 0 0\r\n\r\n"), PROTO_TEXT_SET, .key = "a", .vlen = 0,
      .value = "" },
    { S("set a\tb 0 0 1\r\nx\r\n"), PROTO_TEXT_SET, .key = "a\tb", .vlen = 1,
      .value = "x" },
    { S("set a\x01 0 0 1\r\nx\r\n"), PROTO_TEXT_SET, .key = "a\x01",
      .vlen = 1, .value = "x" },
    { S("set " K250 " 0 0 1\r\nx\r\n"), PROTO_TEXT_SET, .key = K250,
      .vlen = 1, .value = "x" },
    { S("add zz 7 0 1\r\nx\r\n"), PROTO_TEXT_ADD, .key = "zz", .flags = 7,
      .vlen = 1, .value = "x" },
    { S("replace n 7 0 1 noreply\r\nx\r\n"), PROTO_TEXT_REPLACE, .key = "n",
      .flags = 7, .vlen = 1, .value = "x", .noreply = true },
    { S("append n 0 0 3\r\nabc\r\n"), PROTO_TEXT_APPEND, .key = "n",
      .vlen = 3, .value = "abc" },
    { S("prepend n 0 0 3 noreply\r\nabc\r\n"), PROTO_TEXT_PREPEND,
      .key = "n", .vlen = 3, .value = "abc", .noreply = true },
    { S("cas n 0 0 1 1\r\nx\r\n"), PROTO_TEXT_CAS, .key = "n", .vlen = 1,
      .cas = 1, .value = "x" },
    { S("cas n 0 0 1 0\r\nx\r\n"), PROTO_TEXT_CAS, .key = "n", .vlen = 1,
      .cas = 0, .value = "x" },
    { S("cas n 0 0 1 18446744073709551615\r\nx\r\n"), PROTO_TEXT_CAS,
      .key = "n", .vlen = 1, .cas = UINT64_MAX, .value = "x" },
    { S("cas n 0 0 1 1 noreply\r\nx\r\n"), PROTO_TEXT_CAS, .key = "n",
      .vlen = 1, .cas = 1, .value = "x", .noreply = true },
    { S("cas n 0 0 1 1 extra\r\nx\r\n"), PROTO_TEXT_CAS, .key = "n",
      .vlen = 1, .cas = 1, .value = "x" },
    /* delete, incr, decr, touch */
    { S("delete n\r\n"), PROTO_TEXT_DELETE, .key = "n" },
    { S("delete n 0\r\n"), PROTO_TEXT_DELETE, .key = "n" },
    { S("delete n noreply\r\n"), PROTO_TEXT_DELETE, .key = "n",
      .noreply = true },
    { S("delete n 0 noreply\r\n"), PROTO_TEXT_DELETE, .key = "n",
      .noreply = true },
    { S("delete noreply\r\n"), PROTO_TEXT_DELETE, .key = "noreply" },
    { S("incr n 5\r\n"), PROTO_TEXT_INCR, .key = "n", .delta = 5 },
    { S("decr n 5\r\n"), PROTO_TEXT_DECR, .key = "n", .delta = 5 },
    { S("incr n 18446744073709551615\r\n"), PROTO_TEXT_INCR, .key = "n",
      .delta = UINT64_MAX },
    { S("incr n +1\r\n"), PROTO_TEXT_INCR, .key = "n", .delta = 1 },
    { S("incr n 1 noreply\r\n"), PROTO_TEXT_INCR, .key = "n", .delta = 1,
      .noreply = true },
    { S("incr n 1 foo\r\n"), PROTO_TEXT_INCR, .key = "n", .delta = 1 },
    { S("incr n  1\r\n"), PROTO_TEXT_INCR, .key = "n", .delta = 1 },
    { S(" incr n 1\r\n"), PROTO_TEXT_INCR, .key = "n", .delta = 1 },
    { S("incr n 1\t\r\n"), PROTO_TEXT_INCR, .key = "n", .delta = 1 },
    { S("touch n 10\r\n"), PROTO_TEXT_TOUCH, .key = "n", .exptime = 10 },
    { S("touch n -1\r\n"), PROTO_TEXT_TOUCH, .key = "n", .exptime = -1 },
    { S("touch n 10 noreply\r\n"), PROTO_TEXT_TOUCH, .key = "n",
      .exptime = 10, .noreply = true },
    { S("touch n 10 foo\r\n"), PROTO_TEXT_TOUCH, .key = "n",
      .exptime = 10 },
    { S("touch n 4294967296\r\n"), PROTO_TEXT_TOUCH, .key = "n" },
    /* flush_all, verbosity, version, quit, stats, mn, meta */
    { S("flush_all\r\n"), PROTO_TEXT_FLUSH_ALL },
    { S("flush_all 0\r\n"), PROTO_TEXT_FLUSH_ALL },
    { S("flush_all 10\r\n"), PROTO_TEXT_FLUSH_ALL, .delay = 10 },
    { S("flush_all -1\r\n"), PROTO_TEXT_FLUSH_ALL, .delay = -1 },
    { S("flush_all noreply\r\n"), PROTO_TEXT_FLUSH_ALL, .noreply = true },
    { S("flush_all 10 noreply\r\n"), PROTO_TEXT_FLUSH_ALL, .delay = 10,
      .noreply = true },
    { S("flush_all 10 x\r\n"), PROTO_TEXT_FLUSH_ALL, .delay = 10 },
    { S("flush_all 4294967296\r\n"), PROTO_TEXT_FLUSH_ALL },
    { S("verbosity 1\r\n"), PROTO_TEXT_VERBOSITY, .level = 1 },
    { S("verbosity 0\r\n"), PROTO_TEXT_VERBOSITY },
    { S("verbosity 1 noreply\r\n"), PROTO_TEXT_VERBOSITY, .level = 1,
      .noreply = true },
    { S("verbosity 1 2\r\n"), PROTO_TEXT_VERBOSITY, .level = 1 },
    { S("verbosity 4294967296\r\n"), PROTO_TEXT_VERBOSITY },
    { S("verbosity +1\r\n"), PROTO_TEXT_VERBOSITY, .level = 1 },
    { S("version\r\n"), PROTO_TEXT_VERSION },
    { S("version x y z\r\n"), PROTO_TEXT_VERSION, .key = "x" },
    { S("version noreply\r\n"), PROTO_TEXT_VERSION, .key = "noreply" },
    { S("quit\r\n"), PROTO_TEXT_QUIT },
    { S("quit x\r\n"), PROTO_TEXT_QUIT, .key = "x" },
    { S("stats\r\n"), PROTO_TEXT_STATS, .args = "" },
    { S("stats settings\r\n"), PROTO_TEXT_STATS, .key = "settings",
      .args = "settings" },
    { S("stats  settings\r\n"), PROTO_TEXT_STATS, .key = "settings" },
    { S("stats detail on\r\n"), PROTO_TEXT_STATS, .key = "detail",
      .args = "detail on" },
    { S("stats settings\t\r\n"), PROTO_TEXT_STATS, .key = "settings\t" },
    { S("stats noreply\r\n"), PROTO_TEXT_STATS, .key = "noreply" },
    { S("shutdown\r\n"), PROTO_TEXT_SHUTDOWN, .args = "" },
    { S("shutdown graceful\r\n"), PROTO_TEXT_SHUTDOWN, .key = "graceful",
      .args = "graceful" },
    { S("shutdown  graceful x\r\n"), PROTO_TEXT_SHUTDOWN,
      .key = "graceful", .args = "graceful x" },
    { S("shutdown noreply\r\n"), PROTO_TEXT_SHUTDOWN, .key = "noreply" },
    { S("mn\r\n"), PROTO_TEXT_MN },
    { S("mn x\r\n"), PROTO_TEXT_MN, .key = "x" },
    { S("mn\0\r\n"), PROTO_TEXT_MN },
    { S("mg n v\r\n"), PROTO_TEXT_META, .key = "mg", .args = "n v" },
    { S("ms n 1\r\nx\r\n"), PROTO_TEXT_META, .key = "ms", .args = "n 1",
      .rest = "x\r\n" },
};
#define NOKS ((int)(sizeof(oks) / sizeof(oks[0])))

static size_t
ok_used(const struct ok_case *c)
{
    return c->len - (c->rest != NULL ? strlen(c->rest) : 0);
}

static void
check_ok(const struct ok_case *c, const struct proto_text_req *rq,
         size_t used)
{
    size_t keylen = c->key == NULL ? 0 : c->keylen ? c->keylen
                                                   : strlen(c->key);

    ck_assert_msg(rq->cmd == c->cmd, "%s: cmd %d, want %d", c->in, rq->cmd,
                  c->cmd);
    ck_assert_int_eq(rq->err, PROTO_TEXT_E_NONE);
    ck_assert_uint_eq(used, ok_used(c));
    ck_bytes(rq->key, rq->keylen, c->key, keylen, "key", c->in);
    ck_assert_msg(rq->nkeys == c->nkeys, "%s: nkeys %zu, want %zu", c->in,
                  rq->nkeys, c->nkeys);
    ck_assert_uint_eq(rq->flags, c->flags);
    ck_assert_int_eq(rq->exptime, c->exptime);
    ck_assert_uint_eq(rq->vlen, c->vlen);
    ck_assert_uint_eq(rq->cas, c->cas);
    ck_assert_uint_eq(rq->delta, c->delta);
    ck_assert_int_eq(rq->delay, c->delay);
    ck_assert_uint_eq(rq->level, c->level);
    ck_assert_msg(rq->noreply == c->noreply, "%s: noreply", c->in);
    if (c->value != NULL) {
        ck_bytes(rq->value, rq->vlen, c->value, c->vlen, "value", c->in);
        /* the data block ends exactly at *used */
        ck_assert_ptr_eq(rq->value + rq->vlen + 2, held + used);
    } else {
        ck_assert_ptr_null(rq->value);
    }
    if (c->args != NULL) {
        ck_bytes(rq->args, rq->args_len, c->args, strlen(c->args), "args",
                 c->in);
    }
    ck_assert_uint_eq(rq->swallow, 0);
    /* the line stops before "\r\n" and at a NUL */
    ck_assert_ptr_eq(rq->line, held);
    ck_assert_ptr_null(memchr(rq->line, '\n', rq->line_len));
    ck_assert_ptr_null(memchr(rq->line, '\0', rq->line_len));
}

START_TEST(decodes_valid)
{
    const struct ok_case *c = &oks[_i];
    struct proto_text_req rq;
    size_t used = 0;
    proto_rc_e rc = decode(c->in, c->len, MAX_VALUE, &rq, &used);

    ck_assert_msg(rc == PROTO_OK, "%s: rc %d err %d", c->in, rc, rq.err);
    check_ok(c, &rq, used);
}
END_TEST

/* Every proper prefix of a valid command is NEED_MORE, never an error. */
START_TEST(prefixes_need_more)
{
    const struct ok_case *c = &oks[_i];

    for (size_t n = 0; n < ok_used(c); n++) {
        struct proto_text_req rq;
        size_t used = 0;
        proto_rc_e rc = decode(c->in, n, MAX_VALUE, &rq, &used);

        ck_assert_msg(rc == PROTO_NEED_MORE, "%s: prefix %zu gives %d",
                      c->in, n, rc);
        ck_assert_msg(used > n, "%s: prefix %zu needs %zu", c->in, n, used);
        if (c->value != NULL && memchr(c->in, '\n', n) != NULL) {
            /* once the line is there, the exact size is known */
            ck_assert_uint_eq(used, ok_used(c));
        }
    }
}
END_TEST

/* The same command with bytes after it: *used stops at its end. */
START_TEST(trailing_bytes_untouched)
{
    const struct ok_case *c = &oks[_i];
    char buf[1024];
    struct proto_text_req rq;
    size_t used = 0, n = ok_used(c);

    ck_assert_uint_lt(n + 16, sizeof(buf));
    memcpy(buf, c->in, n);
    memcpy(buf + n, "get zz\r\nversion", 15);
    ck_assert_int_eq(decode(buf, n + 15, MAX_VALUE, &rq, &used), PROTO_OK);
    ck_assert_uint_eq(used, n);
    ck_assert_int_eq(rq.cmd, c->cmd);
}
END_TEST

/* ---- requests memcached refuses ---- */

struct err_case {
    const char      *in;
    size_t           len;
    proto_rc_e       rc;
    proto_text_err_e err;
    bool             noreply;
    const char      *rest;      /* bytes left after *used (not EMAGIC) */
    size_t           swallow;   /* E2BIG */
    size_t           nkeys;     /* get family E_FORMAT: the long key */
};

#define UNK(lit) { S(lit), PROTO_EUNKNOWN, PROTO_TEXT_E_ERROR, false, "", 0, 0 }

static const struct err_case errs[] = {
    /* "ERROR": empty lines, unknown commands, wrong token counts */
    UNK("\r\n"), UNK("\n"), UNK("\r\r\n"), UNK(" \r\n"), UNK("\t\r\n"),
    UNK("\0\r\n"), UNK("a\r\n"), UNK("zz\r\n"), UNK("x y\r\n"),
    UNK("GET a\r\n"), UNK("VERSION\r\n"), UNK("versions\r\n"), UNK("MN\r\n"),
    UNK("INCR n 1\r\n"), UNK("STATS\r\n"), UNK("mx\r\n"), UNK("mxx\r\n"),
    UNK("get\tn\r\n"), UNK("get\r\n"), UNK("get \r\n"), UNK("gets\r\n"),
    UNK("gat\r\n"), UNK("gats\r\n"), UNK("bget\r\n"), UNK("set\r\n"),
    UNK("set a\r\n"), UNK("set a 0\r\n"), UNK("set a 0 0\r\n"),
    UNK("incr\r\n"), UNK("incr n\r\n"), UNK("incr n 1 noreply foo\r\n"),
    UNK("decr n\r\n"), UNK("delete\r\n"), UNK("delete n 0 noreply x\r\n"),
    UNK("touch n\r\n"), UNK("touch n 10 noreply x\r\n"),
    UNK("flush_all 1 2 3\r\n"), UNK("verbosity\r\n"),
    UNK("verbosity 1 2 3\r\n"), UNK("lru_crawler\r\n"), UNK("watch\r\n"),
    UNK("lru HTTP/1.1\r\n"), UNK("extstore HTTP/1.1\r\n"),
    UNK("SHUTDOWN\r\n"), UNK("slabs HTTP/1.1\r\n"),
    UNK("cache_memlimit 100\r\n"), UNK("debugtime HTTP/1.1\r\n"),
    UNK("x HTTP/1.1\r\n"), UNK("xx HTTP/1.1 b\r\n"), UNK("xx HTTPS\r\n"),
    UNK("xx http/1.1\r\n"), UNK("gxx HTTP/1.1\r\n"), UNK("HTTP/1.1 xx\r\n"),
    UNK("xx\0 HTTP/1.1\r\n"), UNK("get\0 a\r\n"),
    { S("set a 0 0 1 noreply x\r\nx\r\n"), PROTO_EUNKNOWN,
      PROTO_TEXT_E_ERROR, false, "x\r\n", 0, 0 },
    { S("cas a 0 0 1\r\nx\r\n"), PROTO_EUNKNOWN, PROTO_TEXT_E_ERROR, false,
      "x\r\n", 0, 0 },
    { S("set a\0 0 0 1\r\nx\r\n"), PROTO_EUNKNOWN, PROTO_TEXT_E_ERROR, false,
      "x\r\n", 0, 0 },
    { S("set a   0 1\r\nx\r\n"), PROTO_EUNKNOWN, PROTO_TEXT_E_ERROR, false,
      "x\r\n", 0, 0 },
    { S("get n\r\n\r\n"), PROTO_OK, PROTO_TEXT_E_NONE, false, "\r\n", 0, 1 },

    /* "CLIENT_ERROR bad command line format" */
    { S("get " K251 "\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT, false, "",
      0, 0 },
    { S("get a " K251 " b\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT, false,
      "", 0, 1 },
    { S("gets a b " K251 "\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT, false,
      "", 0, 2 },
    { S("gat 10 " K251 "\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT, false,
      "", 0, 0 },
    { S("gat 10 n " K251 "\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT, false,
      "", 0, 1 },
    { S("set " K251 " 0 0 1\r\nx\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT,
      false, "x\r\n", 0, 0 },
    { S("set " K251 " 0 0 1 noreply\r\nx\r\n"), PROTO_EINVAL,
      PROTO_TEXT_E_FORMAT, true, "x\r\n", 0, 0 },
    { S("cas " K251 " 0 0 1 1\r\nx\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT,
      false, "x\r\n", 0, 0 },
    { S("set a -1 0 1\r\nx\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT, false,
      "x\r\n", 0, 0 },
    { S("set a 5x 0 1\r\nx\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT, false,
      "x\r\n", 0, 0 },
    { S("set a x 0 1\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT, false, "",
      0, 0 },
    { S("set a 18446744073709551616 0 1\r\n"), PROTO_EINVAL,
      PROTO_TEXT_E_FORMAT, false, "", 0, 0 },
    { S("set a 0x10 0 1\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT, false,
      "", 0, 0 },
    { S("set a 0 x 1\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT, false, "",
      0, 0 },
    { S("set a 0 1x 1\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT, false, "",
      0, 0 },
    { S("set a 0 9223372036854775808 1\r\n"), PROTO_EINVAL,
      PROTO_TEXT_E_FORMAT, false, "", 0, 0 },
    { S("set a 0 0 -1\r\nx\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT, false,
      "x\r\n", 0, 0 },
    { S("set a 0 0 x\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT, false, "",
      0, 0 },
    { S("set a 0 0 1x\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT, false, "",
      0, 0 },
    { S("set a 0 0 2147483647\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT,
      false, "", 0, 0 },
    { S("set a 0 0 2147483646\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT,
      false, "", 0, 0 },
    { S("set a 0 0 4294967295\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT,
      false, "", 0, 0 },
    { S("set a 0 0 18446744073709551617\r\n"), PROTO_EINVAL,
      PROTO_TEXT_E_FORMAT, false, "", 0, 0 },
    { S("set n 0 0 HTTP/1.1\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT,
      false, "", 0, 0 },
    { S("set n 0 x 2000000\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT, false,
      "", 0, 0 },
    { S("set n x 0 1 noreply\r\nx\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT,
      true, "x\r\n", 0, 0 },
    { S("set n 0 0 noreply\r\nx\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT,
      true, "x\r\n", 0, 0 },
    { S("add n 0 0 -1 noreply\r\nx\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT,
      true, "x\r\n", 0, 0 },
    { S("cas n 0 0 1 x\r\nx\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT, false,
      "x\r\n", 0, 0 },
    { S("cas n 0 0 1 -1\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT, false, "",
      0, 0 },
    { S("cas n 0 0 1 18446744073709551616\r\n"), PROTO_EINVAL,
      PROTO_TEXT_E_FORMAT, false, "", 0, 0 },
    { S("cas n 0 0 1 noreply\r\nx\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT,
      true, "x\r\n", 0, 0 },
    { S("cas n 0 0 2000000 x\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT,
      false, "", 0, 0 },
    { S("incr " K251 " 1\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT, false,
      "", 0, 0 },
    { S("incr " K251 " x noreply\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT,
      true, "", 0, 0 },
    { S("delete " K251 "\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT, false,
      "", 0, 0 },
    { S("delete " K251 " noreply\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT,
      true, "", 0, 0 },
    { S("touch " K251 " 10\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT, false,
      "", 0, 0 },
    { S("touch " K251 " x\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT, false,
      "", 0, 0 },
    { S("verbosity x\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT, false, "", 0,
      0 },
    { S("verbosity -1\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT, false, "",
      0, 0 },
    { S("verbosity 18446744073709551616\r\n"), PROTO_EINVAL,
      PROTO_TEXT_E_FORMAT, false, "", 0, 0 },
    { S("verbosity HTTP/1.1\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT, false,
      "", 0, 0 },
    { S("verbosity noreply\r\n"), PROTO_EINVAL, PROTO_TEXT_E_FORMAT, true,
      "", 0, 0 },

    /* delete's usage line */
    { S("delete n 1\r\n"), PROTO_EINVAL, PROTO_TEXT_E_DELETE_USAGE, false,
      "", 0, 0 },
    { S("delete n x\r\n"), PROTO_EINVAL, PROTO_TEXT_E_DELETE_USAGE, false,
      "", 0, 0 },
    { S("delete n 00\r\n"), PROTO_EINVAL, PROTO_TEXT_E_DELETE_USAGE, false,
      "", 0, 0 },
    { S("delete n NOREPLY\r\n"), PROTO_EINVAL, PROTO_TEXT_E_DELETE_USAGE,
      false, "", 0, 0 },
    { S("delete n noreply 0\r\n"), PROTO_EINVAL, PROTO_TEXT_E_DELETE_USAGE,
      false, "", 0, 0 },
    { S("delete n 0 x\r\n"), PROTO_EINVAL, PROTO_TEXT_E_DELETE_USAGE, false,
      "", 0, 0 },
    { S("delete n 0 0\r\n"), PROTO_EINVAL, PROTO_TEXT_E_DELETE_USAGE, false,
      "", 0, 0 },
    { S("delete n 1 noreply\r\n"), PROTO_EINVAL, PROTO_TEXT_E_DELETE_USAGE,
      true, "", 0, 0 },
    { S("delete " K251 " 1\r\n"), PROTO_EINVAL, PROTO_TEXT_E_DELETE_USAGE,
      false, "", 0, 0 },

    /* "CLIENT_ERROR invalid numeric delta argument" */
    { S("incr n 18446744073709551616\r\n"), PROTO_EINVAL,
      PROTO_TEXT_E_DELTA, false, "", 0, 0 },
    { S("incr n -1\r\n"), PROTO_EINVAL, PROTO_TEXT_E_DELTA, false, "", 0,
      0 },
    { S("incr n x\r\n"), PROTO_EINVAL, PROTO_TEXT_E_DELTA, false, "", 0, 0 },
    { S("incr n 1x\r\n"), PROTO_EINVAL, PROTO_TEXT_E_DELTA, false, "", 0,
      0 },
    { S("incr n 0x1\r\n"), PROTO_EINVAL, PROTO_TEXT_E_DELTA, false, "", 0,
      0 },
    { S("decr n x\r\n"), PROTO_EINVAL, PROTO_TEXT_E_DELTA, false, "", 0, 0 },
    { S("incr n x noreply\r\n"), PROTO_EINVAL, PROTO_TEXT_E_DELTA, true, "",
      0, 0 },
    { S("incr n noreply\r\n"), PROTO_EINVAL, PROTO_TEXT_E_DELTA, true, "",
      0, 0 },

    /* "CLIENT_ERROR invalid exptime argument" */
    { S("gat x a\r\n"), PROTO_EINVAL, PROTO_TEXT_E_EXPTIME, false, "", 0,
      0 },
    { S("gat x " K251 "\r\n"), PROTO_EINVAL, PROTO_TEXT_E_EXPTIME, false,
      "", 0, 0 },
    { S("gats 18446744073709551616 n\r\n"), PROTO_EINVAL,
      PROTO_TEXT_E_EXPTIME, false, "", 0, 0 },
    { S("gat 1x n\r\n"), PROTO_EINVAL, PROTO_TEXT_E_EXPTIME, false, "", 0,
      0 },
    { S("gat noreply n\r\n"), PROTO_EINVAL, PROTO_TEXT_E_EXPTIME, false, "",
      0, 0 },
    { S("touch n x\r\n"), PROTO_EINVAL, PROTO_TEXT_E_EXPTIME, false, "", 0,
      0 },
    { S("touch n 1x\r\n"), PROTO_EINVAL, PROTO_TEXT_E_EXPTIME, false, "", 0,
      0 },
    { S("touch n 18446744073709551616\r\n"), PROTO_EINVAL,
      PROTO_TEXT_E_EXPTIME, false, "", 0, 0 },
    { S("touch n x noreply\r\n"), PROTO_EINVAL, PROTO_TEXT_E_EXPTIME, true,
      "", 0, 0 },
    { S("flush_all x\r\n"), PROTO_EINVAL, PROTO_TEXT_E_EXPTIME, false, "",
      0, 0 },
    { S("flush_all 1x\r\n"), PROTO_EINVAL, PROTO_TEXT_E_EXPTIME, false, "",
      0, 0 },
    { S("flush_all x y\r\n"), PROTO_EINVAL, PROTO_TEXT_E_EXPTIME, false, "",
      0, 0 },
    { S("flush_all noreply 10\r\n"), PROTO_EINVAL, PROTO_TEXT_E_EXPTIME,
      false, "", 0, 0 },
    { S("flush_all HTTP/1.1\r\n"), PROTO_EINVAL, PROTO_TEXT_E_EXPTIME,
      false, "", 0, 0 },
    { S("flush_all x noreply\r\n"), PROTO_EINVAL, PROTO_TEXT_E_EXPTIME,
      true, "", 0, 0 },
    { S("flush_all noreply noreply\r\n"), PROTO_EINVAL,
      PROTO_TEXT_E_EXPTIME, true, "", 0, 0 },

    /* "CLIENT_ERROR bad data chunk": exactly vlen + 2 bytes are eaten */
    { S("set a 0 0 1\r\nxyz\r\n"), PROTO_EINVAL, PROTO_TEXT_E_CHUNK, false,
      "\r\n", 0, 0 },
    { S("set a 0 0 1\r\nxy\r\n"), PROTO_EINVAL, PROTO_TEXT_E_CHUNK, false,
      "\n", 0, 0 },
    { S("set a 0 0 1\r\nx\rget a\r\n"), PROTO_EINVAL, PROTO_TEXT_E_CHUNK,
      false, "et a\r\n", 0, 0 },
    { S("set a 0 0 1\r\nx\nget a\r\n"), PROTO_EINVAL, PROTO_TEXT_E_CHUNK,
      false, "et a\r\n", 0, 0 },
    { S("set a 0 0 1\nx\nget a\n"), PROTO_EINVAL, PROTO_TEXT_E_CHUNK, false,
      "et a\n", 0, 0 },
    { S("set a 0 0 3\r\nx\r\nget a\r\n"), PROTO_EINVAL, PROTO_TEXT_E_CHUNK,
      false, "t a\r\n", 0, 0 },
    { S("set a 0 0 4294967296\r\nx\r\n"), PROTO_EINVAL, PROTO_TEXT_E_CHUNK,
      false, "\n", 0, 0 },
    { S("set a 0 0 -0\r\nx\r\n"), PROTO_EINVAL, PROTO_TEXT_E_CHUNK, false,
      "\n", 0, 0 },
    { S("set n 0 0 1 noreply\r\nxyz\r\n"), PROTO_EINVAL, PROTO_TEXT_E_CHUNK,
      true, "\r\n", 0, 0 },
    { S("cas n 0 0 1 1\r\nxyz\r\n"), PROTO_EINVAL, PROTO_TEXT_E_CHUNK,
      false, "\r\n", 0, 0 },

    /* "SERVER_ERROR object too large for cache", vlen + 2 swallowed */
    { S("set a 0 0 2000000\r\n"), PROTO_E2BIG, PROTO_TEXT_E_TOO_LARGE,
      false, "", 2000002, 0 },
    { S("set a 0 0 1048577\r\nyyyy"), PROTO_E2BIG, PROTO_TEXT_E_TOO_LARGE,
      false, "yyyy", 1048579, 0 },
    { S("set a 0 0 2147483645\r\n"), PROTO_E2BIG, PROTO_TEXT_E_TOO_LARGE,
      false, "", 2147483647u, 0 },
    { S("set n 0 0 2000000 x\r\n"), PROTO_E2BIG, PROTO_TEXT_E_TOO_LARGE,
      false, "", 2000002, 0 },
    { S("add n 0 0 2000000 noreply\r\n"), PROTO_E2BIG,
      PROTO_TEXT_E_TOO_LARGE, true, "", 2000002, 0 },
    { S("cas n 0 0 2000000 1\r\n"), PROTO_E2BIG, PROTO_TEXT_E_TOO_LARGE,
      false, "", 2000002, 0 },

    /* closed without a reply: HTTP */
    { S("GET / HTTP/1.1\r\n"), PROTO_EMAGIC, PROTO_TEXT_E_HTTP, false, NULL,
      0, 0 },
    { S("foo HTTP/1.0\r\n"), PROTO_EMAGIC, PROTO_TEXT_E_HTTP, false, NULL, 0,
      0 },
    { S("HTTP/1.1\r\n"), PROTO_EMAGIC, PROTO_TEXT_E_HTTP, false, NULL, 0,
      0 },
    { S("xx HTTP/\r\n"), PROTO_EMAGIC, PROTO_TEXT_E_HTTP, false, NULL, 0,
      0 },
    { S("xx HTTP/\0\r\n"), PROTO_EMAGIC, PROTO_TEXT_E_HTTP, false, NULL, 0,
      0 },
    { S("mxx HTTP/1.1\r\n"), PROTO_EMAGIC, PROTO_TEXT_E_HTTP, false, NULL,
      0, 0 },
    { S("bxx HTTP/1.1\r\n"), PROTO_EMAGIC, PROTO_TEXT_E_HTTP, false, NULL,
      0, 0 },
    { S("misbehave HTTP/1.1\r\n"), PROTO_EMAGIC, PROTO_TEXT_E_HTTP, false,
      NULL, 0, 0 },
    { S("PUT /x HTTP/1.1\n"), PROTO_EMAGIC, PROTO_TEXT_E_HTTP, false, NULL,
      0, 0 },
};
#define NERRS ((int)(sizeof(errs) / sizeof(errs[0])))

START_TEST(decodes_errors)
{
    const struct err_case *c = &errs[_i];
    struct proto_text_req rq;
    size_t used = 12345;
    proto_rc_e rc = decode(c->in, c->len, MAX_VALUE, &rq, &used);

    ck_assert_msg(rc == c->rc, "%s: rc %d, want %d", c->in, rc, c->rc);
    ck_assert_msg(rq.err == c->err, "%s: err %d, want %d", c->in, rq.err,
                  c->err);
    ck_assert_msg(rq.noreply == c->noreply, "%s: noreply %d", c->in,
                  rq.noreply);
    if (rc == PROTO_EMAGIC) {
        ck_assert_uint_eq(used, 0);
        return;
    }
    ck_assert_msg(used == c->len - strlen(c->rest),
                  "%s: used %zu, want %zu", c->in, used,
                  c->len - strlen(c->rest));
    ck_assert_uint_eq(rq.swallow, c->swallow);
    if (rc == PROTO_E2BIG) {
        ck_assert_uint_eq(rq.swallow, (size_t)rq.vlen + 2);
        ck_assert_ptr_null(rq.value);
    }
    if (c->err == PROTO_TEXT_E_FORMAT && rq.cmd >= PROTO_TEXT_GET &&
        rq.cmd <= PROTO_TEXT_GATS) {
        ck_assert_uint_eq(rq.nkeys, c->nkeys);
    }
    if (rc == PROTO_EUNKNOWN) {
        ck_assert_str_eq(proto_text_error_text(rq.err), "ERROR");
    }
}
END_TEST

/* noreply silences every error after the token count was accepted. */
START_TEST(noreply_is_never_set_on_error_replies_it_cannot_see)
{
    static const char *const lines[] = {
        "set a 0 0 noreply x y\r\n", "incr n 1 2 noreply\r\n",
        "delete n 0 1 noreply\r\n", "verbosity 1 2 noreply\r\n",
        "flush_all 1 2 noreply\r\n", "bogus noreply\r\n",
    };

    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        struct proto_text_req rq;
        size_t used;

        ck_assert_int_eq(decode(lines[i], strlen(lines[i]), MAX_VALUE, &rq,
                                &used),
                         PROTO_EUNKNOWN);
        ck_assert(!rq.noreply);
    }
}
END_TEST

/* ---- the HTTP close looks at memcached's 23rd token at most ---- */

START_TEST(http_on_last_of_23_tokens)
{
    char line[256];
    struct proto_text_req rq;
    size_t used, n = 0;

    for (int i = 0; i < 22; i++) {
        n += (size_t)sprintf(line + n, "xx ");
    }
    n += (size_t)sprintf(line + n, "HTTP/1.1\r\n");
    ck_assert_int_eq(decode(line, n, MAX_VALUE, &rq, &used), PROTO_EMAGIC);
    ck_assert_int_eq(rq.err, PROTO_TEXT_E_HTTP);

    n = 0;
    for (int i = 0; i < 23; i++) {
        n += (size_t)sprintf(line + n, "xx ");
    }
    n += (size_t)sprintf(line + n, "HTTP/1.1\r\n");
    ck_assert_int_eq(decode(line, n, MAX_VALUE, &rq, &used), PROTO_EUNKNOWN);
    ck_assert_uint_eq(used, n);
}
END_TEST

/* ---- lines without their '\n' ---- */

static proto_rc_e
decode_fill(const char *head, char fill, size_t total, const char *tail,
            struct proto_text_req *rq, size_t *used)
{
    size_t hn = strlen(head), tn = strlen(tail);
    char *b = malloc(total);
    proto_rc_e rc;

    ck_assert_ptr_nonnull(b);
    ck_assert_uint_ge(total, hn + tn);
    memcpy(b, head, hn);
    memset(b + hn, fill, total - hn - tn);
    memcpy(b + total - tn, tail, tn);
    rc = decode(b, total, MAX_VALUE, rq, used);
    free(b);
    return rc;
}

START_TEST(unterminated_lines)
{
    struct proto_text_req rq;
    size_t used;

    /* up to 2048 bytes: wait */
    ck_assert_int_eq(decode_fill("", 'x', 2048, "", &rq, &used),
                     PROTO_NEED_MORE);
    ck_assert_uint_eq(used, 2049);
    /* more: close, unless it is a get or gets */
    ck_assert_int_eq(decode_fill("", 'x', 2049, "", &rq, &used),
                     PROTO_EMAGIC);
    ck_assert_int_eq(rq.err, PROTO_TEXT_E_LINE_TOO_LONG);
    ck_assert_uint_eq(used, 0);
    ck_assert_int_eq(decode_fill("set n 0 0 1 ", 'y', 2049, "", &rq, &used),
                     PROTO_EMAGIC);
    ck_assert_int_eq(decode_fill("set n 0 0 1 ", 'y', 2048, "", &rq, &used),
                     PROTO_NEED_MORE);
    ck_assert_int_eq(decode_fill("get ", 'y', 5000, "", &rq, &used),
                     PROTO_NEED_MORE);
    ck_assert_uint_eq(used, 5001);
    ck_assert_int_eq(decode_fill("gets ", 'y', 20000, "", &rq, &used),
                     PROTO_NEED_MORE);
    ck_assert_int_eq(decode_fill("get", ' ', 3000, "", &rq, &used),
                     PROTO_NEED_MORE);
    ck_assert_int_eq(decode_fill("gat ", 'y', 2049, "", &rq, &used),
                     PROTO_EMAGIC);
    ck_assert_int_eq(decode_fill("bget ", 'y', 2049, "", &rq, &used),
                     PROTO_EMAGIC);
    ck_assert_int_eq(decode_fill("GET ", 'y', 2049, "", &rq, &used),
                     PROTO_EMAGIC);
    ck_assert_int_eq(decode_fill("get\t", 'y', 2049, "", &rq, &used),
                     PROTO_EMAGIC);
    ck_assert_int_eq(decode_fill("getx ", 'y', 2049, "", &rq, &used),
                     PROTO_EMAGIC);
    /* at most 100 spaces before the get */
    {
        char head[128];

        memset(head, ' ', 100);
        strcpy(head + 100, "get ");
        ck_assert_int_eq(decode_fill(head, 'y', 4000, "", &rq, &used),
                         PROTO_NEED_MORE);
        memset(head, ' ', 101);
        strcpy(head + 101, "get ");
        ck_assert_int_eq(decode_fill(head, 'y', 4000, "", &rq, &used),
                         PROTO_EMAGIC);
    }
    /* all spaces: the scan stops at len */
    ck_assert_int_eq(decode_fill("", ' ', 4000, "", &rq, &used),
                     PROTO_EMAGIC);
    /* a complete line is parsed whatever its length */
    ck_assert_int_eq(decode_fill("", 'x', 5000, "\r\n", &rq, &used),
                     PROTO_EUNKNOWN);
    ck_assert_uint_eq(used, 5000);
    ck_assert_int_eq(decode_fill("get ", 'k', 3000, " n\r\n", &rq, &used),
                     PROTO_EINVAL);
    ck_assert_int_eq(rq.err, PROTO_TEXT_E_FORMAT);
    ck_assert_int_eq(decode_fill("set ", 'k', 2000, " 0 0 1\r\n", &rq,
                                 &used),
                     PROTO_EINVAL);
    ck_assert_uint_eq(used, 2000);
    /* a '\n' past memcached's 16 KB read comes too late, but for a get */
    ck_assert_int_eq(decode_fill("", 'x', 16384, "\r\n", &rq, &used),
                     PROTO_EUNKNOWN);
    ck_assert_int_eq(decode_fill("", 'x', 16386, "\r\n", &rq, &used),
                     PROTO_EMAGIC);
    ck_assert_int_eq(rq.err, PROTO_TEXT_E_LINE_TOO_LONG);
    ck_assert_int_eq(decode_fill("", 'x', 17002, "\r\nversion\r\n", &rq,
                                 &used),
                     PROTO_EMAGIC);
    ck_assert_int_eq(decode_fill("get ", 'y', 40000, " n\r\n", &rq, &used),
                     PROTO_EINVAL);
    ck_assert_int_eq(rq.err, PROTO_TEXT_E_FORMAT);
    ck_assert_int_eq(decode_fill("get ", ' ', 40000, "n\r\n", &rq, &used),
                     PROTO_OK);
    ck_assert_uint_eq(rq.nkeys, 1);
    /* nothing at all */
    ck_assert_int_eq(decode("", 0, MAX_VALUE, &rq, &used), PROTO_NEED_MORE);
    ck_assert_uint_eq(used, 1);
}
END_TEST

/* The data block is waited for with its exact size, then checked. */
START_TEST(data_block_sizes)
{
    struct proto_text_req rq;
    size_t used;

    ck_assert_int_eq(decode("set a 0 0 3\r\nab", 15, MAX_VALUE, &rq, &used),
                     PROTO_NEED_MORE);
    ck_assert_uint_eq(used, 18);
    ck_assert_int_eq(rq.cmd, PROTO_TEXT_SET);
    ck_assert_uint_eq(rq.vlen, 3);
    ck_assert_int_eq(decode("set a 0 0 3\r\nabc\r", 17, MAX_VALUE, &rq,
                            &used),
                     PROTO_NEED_MORE);
    ck_assert_uint_eq(used, 18);
    /* max_value is inclusive */
    ck_assert_int_eq(decode("set a 0 0 3\r\nabc\r\n", 18, 3, &rq, &used),
                     PROTO_OK);
    ck_assert_int_eq(decode("set a 0 0 3\r\nabc\r\n", 18, 2, &rq, &used),
                     PROTO_E2BIG);
    ck_assert_uint_eq(used, 13);
    ck_assert_uint_eq(rq.swallow, 5);
    ck_assert_int_eq(decode("set a 0 0 0\r\n\r\n", 15, 0, &rq, &used),
                     PROTO_OK);
    /* a megabyte value that contains every byte */
    {
        size_t vlen = MAX_VALUE, line = 19, n = line + vlen + 2;
        char *b = malloc(n);

        ck_assert_ptr_nonnull(b);
        memcpy(b, "set b 0 0 1048576\r\n", line);
        for (size_t i = 0; i < vlen; i++) {
            b[line + i] = (char)(i * 7 + i / 256);
        }
        memcpy(b + line + vlen, "\r\n", 2);
        ck_assert_int_eq(decode(b, n, MAX_VALUE, &rq, &used), PROTO_OK);
        ck_assert_uint_eq(used, n);
        ck_assert_uint_eq(rq.vlen, vlen);
        ck_assert(memcmp(rq.value, b + line, vlen) == 0);
        ck_assert_int_eq(decode(b, n - 1, MAX_VALUE, &rq, &used),
                         PROTO_NEED_MORE);
        ck_assert_uint_eq(used, n);
        ck_assert_int_eq(decode(b, n, MAX_VALUE - 1, &rq, &used),
                         PROTO_E2BIG);
        ck_assert_uint_eq(rq.swallow, vlen + 2);
        free(b);
    }
}
END_TEST

/* ---- get with many keys, through the cursor ---- */

START_TEST(get_many_keys)
{
    static char line[20000];
    struct proto_text_req rq;
    size_t used, n = 0, pos = 0, keylen, i = 0;
    const char *key;

    n += (size_t)sprintf(line, "gets");
    for (int k = 0; k < 1000; k++) {
        n += (size_t)sprintf(line + n, "%*skey:%d", 1 + k % 3, "", k);
    }
    n += (size_t)sprintf(line + n, "  \r\n");
    ck_assert_int_eq(decode(line, n, MAX_VALUE, &rq, &used), PROTO_OK);
    ck_assert_uint_eq(used, n);
    ck_assert_int_eq(rq.cmd, PROTO_TEXT_GETS);
    ck_assert_uint_eq(rq.nkeys, 1000);
    while (proto_text_next_key(&rq, &pos, &key, &keylen)) {
        char want[32];
        int wn = sprintf(want, "key:%zu", i);

        ck_assert_uint_eq(keylen, (size_t)wn);
        ck_assert(memcmp(key, want, keylen) == 0);
        ck_assert(key >= held && key + keylen <= held + used);
        i++;
    }
    ck_assert_uint_eq(i, 1000);
    /* the cursor stays at the end */
    ck_assert(!proto_text_next_key(&rq, &pos, &key, &keylen));
}
END_TEST

START_TEST(get_300_keys_one_too_long)
{
    static char line[8000];
    struct proto_text_req rq;
    size_t used, n = 0;

    n += (size_t)sprintf(line, "get");
    for (int k = 0; k < 300; k++) {
        n += (size_t)sprintf(line + n, " k%d", k);
    }
    n += (size_t)sprintf(line + n, "\r\n");
    ck_assert_int_eq(decode(line, n, MAX_VALUE, &rq, &used), PROTO_OK);
    ck_assert_uint_eq(rq.nkeys, 300);

    n = (size_t)sprintf(line, "gat 5");
    for (int k = 0; k < 300; k++) {
        n += (size_t)sprintf(line + n, " %s", k == 250 ? K251 : "k");
    }
    n += (size_t)sprintf(line + n, "\r\n");
    ck_assert_int_eq(decode(line, n, MAX_VALUE, &rq, &used), PROTO_EINVAL);
    ck_assert_int_eq(rq.err, PROTO_TEXT_E_FORMAT);
    ck_assert_uint_eq(rq.nkeys, 250);
    ck_assert_uint_eq(used, n);
}
END_TEST

/* ---- get lines decoded a piece at a time ---- */

/* What a line's decode gives a handler: its keys, each followed by ' ',
 * then "END" when it ends, or "ERR" for a refused key. */
struct run {
    char  *p;
    size_t len;
    size_t cap;
};

static void
run_add(struct run *r, const char *p, size_t n)
{
    if (r->len + n + 1 > r->cap) {
        r->cap = 2 * (r->len + n + 1);
        r->p = realloc(r->p, r->cap);
        ck_assert_ptr_nonnull(r->p);
    }
    memcpy(r->p + r->len, p, n);
    r->len += n;
    r->p[r->len] = '\0';
}

static void
run_keys(struct run *r, const struct proto_text_req *rq)
{
    size_t pos = 0, keylen, n = 0;
    const char *key;

    while (proto_text_next_key(rq, &pos, &key, &keylen)) {
        run_add(r, key, keylen);
        run_add(r, " ", 1);
        n++;
    }
    ck_assert_uint_eq(n, rq->nkeys);
}

/* The whole line in one buffer, as proto_text_decode sees it. */
static void
run_whole(const char *line, size_t len, struct run *r, size_t *used)
{
    struct proto_text_req rq;
    proto_rc_e rc = decode(line, len, MAX_VALUE, &rq, used);

    if (rc == PROTO_EINVAL) {
        run_add(r, "ERR", 3);
        return;
    }
    ck_assert_int_eq(rc, PROTO_OK);
    run_keys(r, &rq);
    run_add(r, "END", 3);
}

/*
 * The same line streamed: opened at its start, then fed piece bytes at a
 * time into a buffer that keeps what decode_more left; *used = the bytes
 * the line took.
 */
static void
run_streamed(const char *line, size_t len, size_t piece, size_t max_keys,
             struct run *r, size_t *used)
{
    struct proto_text_stream st;
    struct proto_text_req rq;
    char *buf = malloc(len);
    size_t have = 0, fed, n = 0;

    ck_assert_ptr_nonnull(buf);
    ck_assert(proto_text_stream_start(&st, line, len, &fed));
    *used = fed;
    while (st.cmd != PROTO_TEXT_NONE) {
        proto_rc_e rc;

        ck_assert_uint_lt(fed, len);
        n = len - fed < piece ? len - fed : piece;
        memcpy(buf + have, line + fed, n);
        have += n;
        fed += n;
        for (;;) {
            size_t u = 0;

            rc = proto_text_decode_more(&st, buf, have, max_keys, &rq, &u);
            if (rc == PROTO_NEED_MORE) {
                ck_assert_uint_eq(u, 0);
                break;
            }
            ck_assert_uint_gt(u, 0);
            ck_assert_uint_le(u, have);
            if (max_keys != 0) {
                ck_assert_uint_le(rq.nkeys, max_keys);
            }
            if (rc == PROTO_EINVAL) {
                ck_assert_int_eq(rq.err, PROTO_TEXT_E_FORMAT);
                run_add(r, "ERR", 3);
            } else {
                ck_assert_int_eq(rc, PROTO_OK);
                if (rq.cmd != PROTO_TEXT_NONE) {
                    run_keys(r, &rq);
                    if (!rq.partial) {
                        run_add(r, "END", 3);
                    }
                }
            }
            memmove(buf, buf + u, have - u);
            have -= u;
            *used += u;
            if (st.cmd == PROTO_TEXT_NONE || have == 0) {
                break;
            }
        }
    }
    free(buf);
}

START_TEST(streamed_get_lines_read_as_whole_ones)
{
    static const size_t pieces[] = { 1, 2, 3, 5, 64, 251, 252, 4096, 1 << 20 };
    static const size_t limits[] = { 0, 1, 7, 256 };
    static const char *const tails[] = {
        "\r\n", "  \r\n", "\n", " \r\r\n", " a\0b c\r\n", "\0 x\r\n",
        " z \r \r\n", " " K250 "\r\n",
    };
    char *line = malloc(40000);

    ck_assert_ptr_nonnull(line);
    for (size_t t = 0; t < sizeof(tails) / sizeof(tails[0]); t++) {
        size_t n = (size_t)sprintf(line, "%*s%s", (int)(t * 14), "",
                                   t % 2 ? "gets" : "get");
        size_t tl = t == 4 ? 8 : t == 5 ? 5 : strlen(tails[t]);

        for (int k = 0; k < 3000; k++) {
            n += (size_t)sprintf(line + n, "%*sk%d", 1 + k % 3, "", k);
        }
        memcpy(line + n, tails[t], tl);
        n += tl;
        memcpy(line + n, "version\r\n", 9);
        for (size_t p = 0; p < sizeof(pieces) / sizeof(pieces[0]); p++) {
            struct run whole = { 0 }, streamed = { 0 };
            size_t wused = 0, sused = 0;

            run_whole(line, n + 9, &whole, &wused);
            run_streamed(line, n + 9, pieces[p], limits[p % 4], &streamed,
                         &sused);
            ck_assert_msg(streamed.len == whole.len &&
                          memcmp(streamed.p, whole.p, whole.len) == 0,
                          "tail %zu piece %zu: %zu bytes of keys, want %zu",
                          t, pieces[p], streamed.len, whole.len);
            ck_assert_uint_eq(sused, wused);
            ck_assert_uint_eq(sused, n);
            free(whole.p);
            free(streamed.p);
        }
    }
    free(line);
}
END_TEST

/* A key too long ends the line's run with one error, wherever it is. */
START_TEST(streamed_get_line_with_a_long_key)
{
    static const size_t pieces[] = { 1, 7, 300, 4096 };
    char *line = malloc(20000);

    ck_assert_ptr_nonnull(line);
    for (int at = 0; at < 3; at++) {
        size_t n = (size_t)sprintf(line, "get");

        for (int k = 0; k < 1000; k++) {
            n += (size_t)sprintf(line + n, " %s",
                                 k == (at == 0 ? 0 : at == 1 ? 500 : 999)
                                 ? K251 : "key");
        }
        n += (size_t)sprintf(line + n, " a\r\n");
        for (size_t p = 0; p < sizeof(pieces) / sizeof(pieces[0]); p++) {
            struct run r = { 0 };
            size_t used = 0;
            const char *err;

            run_streamed(line, n, pieces[p], p, &r, &used);
            ck_assert_uint_eq(used, n);
            err = strstr(r.p, "ERR");
            ck_assert_msg(err != NULL && err[3] == '\0',
                          "at %d piece %zu: %s", at, pieces[p],
                          r.len > 40 ? r.p + r.len - 40 : r.p);
            /* Nothing after the long key runs; keys before it may have. */
            ck_assert_uint_le((size_t)(err - r.p),
                              (size_t)(at == 0 ? 0 : at == 1 ? 500 : 999) *
                              4);
            free(r.p);
        }
    }
    free(line);
}
END_TEST

START_TEST(stream_starts_only_on_get_and_gets)
{
    struct proto_text_stream st;
    size_t used = 0;

    ck_assert(proto_text_stream_start(&st, "get a", 5, &used));
    ck_assert_int_eq(st.cmd, PROTO_TEXT_GET);
    ck_assert_uint_eq(used, 4);
    ck_assert(proto_text_stream_start(&st, "  gets a", 8, &used));
    ck_assert_int_eq(st.cmd, PROTO_TEXT_GETS);
    ck_assert_uint_eq(used, 7);
    ck_assert(!proto_text_stream_start(&st, "gat 1 a", 7, &used));
    ck_assert(!proto_text_stream_start(&st, "bget a", 6, &used));
    ck_assert(!proto_text_stream_start(&st, "get", 3, &used));
    ck_assert(!proto_text_stream_start(&st, "GET a", 5, &used));
}
END_TEST

/* ---- several commands in one buffer ---- */

START_TEST(pipelined_valid)
{
    static char buf[64 * 1024];
    size_t n = 0, off = 0;
    int count = 0;

    for (int i = 0; i < NOKS; i++) {
        if (oks[i].rest == NULL) {
            ck_assert_uint_lt(n + oks[i].len, sizeof(buf));
            memcpy(buf + n, oks[i].in, oks[i].len);
            n += oks[i].len;
        }
    }
    for (int i = 0; i < NOKS; i++) {
        struct proto_text_req rq;
        size_t used;
        const char *copy;

        if (oks[i].rest != NULL) {
            continue;
        }
        /* decode in place in one heap copy of the whole rest */
        ck_assert_int_eq(decode(buf + off, n - off, MAX_VALUE, &rq, &used),
                         PROTO_OK);
        copy = held;
        check_ok(&oks[i], &rq, used);
        ck_assert_ptr_eq(rq.line, copy);
        off += used;
        count++;
    }
    ck_assert_uint_eq(off, n);
    ck_assert_int_gt(count, 100);
}
END_TEST

START_TEST(pipelined_mixed)
{
    static const char in[] =
        "foo\r\n"
        "set a 0 0 1\r\nxyz\r\n"            /* chunk error, then "\r\n" */
        "set b 0 0 -1\r\nvv\r\n"            /* format error, then "vv" */
        "get a b\n"
        "set c 0 0 5 noreply\r\n1\r\n3\r\r\n"
        "incr c x\r\n"
        "set d 0 0 9\r\n";
    static const struct {
        proto_rc_e       rc;
        proto_text_cmd_e cmd;
        proto_text_err_e err;
    } want[] = {
        { PROTO_EUNKNOWN, PROTO_TEXT_NONE, PROTO_TEXT_E_ERROR },
        { PROTO_EINVAL, PROTO_TEXT_SET, PROTO_TEXT_E_CHUNK },
        { PROTO_EUNKNOWN, PROTO_TEXT_NONE, PROTO_TEXT_E_ERROR },
        { PROTO_EINVAL, PROTO_TEXT_SET, PROTO_TEXT_E_FORMAT },
        { PROTO_EUNKNOWN, PROTO_TEXT_NONE, PROTO_TEXT_E_ERROR },
        { PROTO_OK, PROTO_TEXT_GET, PROTO_TEXT_E_NONE },
        { PROTO_OK, PROTO_TEXT_SET, PROTO_TEXT_E_NONE },
        { PROTO_EINVAL, PROTO_TEXT_INCR, PROTO_TEXT_E_DELTA },
        { PROTO_NEED_MORE, PROTO_TEXT_SET, PROTO_TEXT_E_NONE },
    };
    size_t off = 0, n = sizeof(in) - 1;

    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        struct proto_text_req rq;
        size_t used;
        proto_rc_e rc = decode(in + off, n - off, MAX_VALUE, &rq, &used);

        ck_assert_msg(rc == want[i].rc, "step %zu: rc %d", i, rc);
        ck_assert_int_eq(rq.cmd, want[i].cmd);
        ck_assert_int_eq(rq.err, want[i].err);
        if (rc == PROTO_NEED_MORE) {
            ck_assert_uint_eq(used, n - off + 11);
            break;
        }
        if (want[i].cmd == PROTO_TEXT_SET && rc == PROTO_OK) {
            ck_assert(rq.noreply);
            ck_assert_uint_eq(rq.vlen, 5);
            ck_assert(memcmp(rq.value, "1\r\n3\r", 5) == 0);
        }
        off += used;
    }
}
END_TEST

/* ---- reply tables and encoders ---- */

START_TEST(error_texts)
{
    ck_assert_str_eq(proto_text_error_text(PROTO_TEXT_E_NONE), "");
    ck_assert_str_eq(proto_text_error_text(PROTO_TEXT_E_ERROR), "ERROR");
    ck_assert_str_eq(proto_text_error_text(PROTO_TEXT_E_FORMAT),
                     "CLIENT_ERROR bad command line format");
    ck_assert_str_eq(proto_text_error_text(PROTO_TEXT_E_DELETE_USAGE),
                     "CLIENT_ERROR bad command line format.  "
                     "Usage: delete <key> [noreply]");
    ck_assert_str_eq(proto_text_error_text(PROTO_TEXT_E_DELTA),
                     "CLIENT_ERROR invalid numeric delta argument");
    ck_assert_str_eq(proto_text_error_text(PROTO_TEXT_E_EXPTIME),
                     "CLIENT_ERROR invalid exptime argument");
    ck_assert_str_eq(proto_text_error_text(PROTO_TEXT_E_CHUNK),
                     "CLIENT_ERROR bad data chunk");
    ck_assert_str_eq(proto_text_error_text(PROTO_TEXT_E_TOO_LARGE),
                     "SERVER_ERROR object too large for cache");
    ck_assert_str_eq(proto_text_error_text(PROTO_TEXT_E_LINE_TOO_LONG), "");
    ck_assert_str_eq(proto_text_error_text(PROTO_TEXT_E_HTTP), "");
    ck_assert_str_eq(proto_text_error_text((proto_text_err_e)99), "");
}
END_TEST

START_TEST(reply_texts)
{
    static const char *const want[PROTO_TEXT_R_COUNT] = {
        "STORED", "NOT_STORED", "EXISTS", "NOT_FOUND", "DELETED", "TOUCHED",
        "OK", "RESET", "END", "MN", "ERROR",
        "CLIENT_ERROR cannot increment or decrement non-numeric value",
        "SERVER_ERROR out of memory storing object",
        "CLIENT_ERROR usage: stats detail on|off|dump",
        "ERROR: shutdown not enabled", "CLIENT_ERROR invalid shutdown mode",
    };

    for (int r = 0; r < PROTO_TEXT_R_COUNT; r++) {
        ck_assert_str_eq(proto_text_reply_text((proto_text_reply_e)r),
                         want[r]);
    }
    ck_assert_str_eq(proto_text_reply_text(PROTO_TEXT_R_COUNT), "");
}
END_TEST

START_TEST(value_headers)
{
    char out[PROTO_TEXT_VALUE_HDR_MAX];
    char d[PROTO_TEXT_U64_MAX];
    size_t n;

    n = proto_text_value_header(out, sizeof(out), "a", 1, 0, 1, false, 0);
    ck_bytes(out, n, "VALUE a 0 1\r\n", 13, "hdr", "get");
    n = proto_text_value_header(out, sizeof(out), "n", 1, 5, 2, true, 124);
    ck_bytes(out, n, "VALUE n 5 2 124\r\n", 17, "hdr", "gets");
    n = proto_text_value_header(out, sizeof(out), "a\tb", 3, 7, 0, true, 0);
    ck_bytes(out, n, "VALUE a\tb 7 0 0\r\n", 17, "hdr", "gets");
    /* the longest header fits the constant */
    n = proto_text_value_header(out, sizeof(out), K250, 250, UINT32_MAX,
                                UINT32_MAX, true, UINT64_MAX);
    ck_assert_uint_eq(n, 6 + 250 + 11 + 11 + 21 + 2);
    ck_assert(memcmp(out + 256, " 4294967295 4294967295 18446744073709551615"
                     "\r\n", 45) == 0);
    /* too small: nothing */
    ck_assert_uint_eq(proto_text_value_header(out, 12, "a", 1, 0, 1, false,
                                              0),
                      0);
    ck_assert_uint_eq(proto_text_value_header(out, 13, "a", 1, 0, 1, false,
                                              0),
                      13);
    ck_assert_uint_eq(proto_text_put_u64(d, 0), 1);
    ck_assert_int_eq(d[0], '0');
    n = proto_text_put_u64(d, UINT64_MAX);
    ck_bytes(d, n, "18446744073709551615", 20, "u64", "max");
    n = proto_text_put_u64(d, 1000);
    ck_bytes(d, n, "1000", 4, "u64", "1000");
}
END_TEST

/* ---- random input never reads out of bounds or breaks the contract ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t
rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

static void
check_contract(const char *buf, size_t len)
{
    size_t off = 0;

    for (int steps = 0; steps < 64; steps++) {
        struct proto_text_req rq;
        size_t used = 0, rest = len - off, pos = 0, keylen, nkeys = 0;
        const char *key;
        proto_rc_e rc = proto_text_decode(buf + off, rest, 64, &rq, &used);

        switch (rc) {
        case PROTO_OK:
            ck_assert_int_ne(rq.cmd, PROTO_TEXT_NONE);
            ck_assert(used >= 1 && used <= rest);
            if (rq.value != NULL) {
                ck_assert_ptr_eq(rq.value + rq.vlen + 2, buf + off + used);
            }
            while (proto_text_next_key(&rq, &pos, &key, &keylen)) {
                ck_assert(key >= buf + off && key + keylen <= buf + off +
                          used);
                ck_assert_ptr_null(memchr(key, ' ', keylen));
                nkeys++;
            }
            if (rq.cmd >= PROTO_TEXT_GET && rq.cmd <= PROTO_TEXT_GATS) {
                ck_assert_uint_eq(nkeys, rq.nkeys);
            }
            break;
        case PROTO_EUNKNOWN:
            ck_assert(!rq.noreply);
            /* fall through */
        case PROTO_EINVAL:
            ck_assert(used >= 1 && used <= rest);
            ck_assert_str_ne(proto_text_error_text(rq.err), "");
            break;
        case PROTO_E2BIG:
            ck_assert(used >= 1 && used <= rest);
            ck_assert_uint_eq(rq.swallow, (size_t)rq.vlen + 2);
            ck_assert_uint_gt(rq.vlen, 64);
            return;
        case PROTO_NEED_MORE:
            ck_assert_uint_gt(used, rest);
            return;
        case PROTO_EMAGIC:
            ck_assert_uint_eq(used, 0);
            ck_assert(rq.err == PROTO_TEXT_E_HTTP ||
                      rq.err == PROTO_TEXT_E_LINE_TOO_LONG);
            return;
        default:
            ck_abort_msg("rc %d", rc);
        }
        off += used;
    }
}

START_TEST(random_garbage)
{
    static const char alphabet[] = "  \r\n\n0123456789-+getsadcinrp\t\0kx";
    char *buf;

    rng_state += (uint64_t)_i * 0x100000001b3ull;
    for (int iter = 0; iter < 4000; iter++) {
        size_t len = rng() % (iter % 50 == 0 ? 4200 : 160);

        buf = malloc(len > 0 ? len : 1);
        ck_assert_ptr_nonnull(buf);
        for (size_t i = 0; i < len; i++) {
            uint32_t r = rng();

            buf[i] = (r & 3) ? alphabet[(r >> 2) % (sizeof(alphabet) - 1)]
                             : (char)(r >> 8);
        }
        check_contract(buf, len);
        free(buf);
    }
}
END_TEST

/* Valid commands with bytes flipped, cut, and glued together. */
START_TEST(mutated_commands)
{
    static const char swaps[] = " \r\n0-9x\0\tk";
    char tmp[2048];

    rng_state += (uint64_t)_i * 0x2545f4914f6cdd1dull;
    for (int iter = 0; iter < 6000; iter++) {
        size_t len = 0;
        int parts = 1 + (int)(rng() % 3);
        char *buf;

        for (int p = 0; p < parts; p++) {
            const struct ok_case *c = &oks[rng() % NOKS];

            if (len + c->len > sizeof(tmp)) {
                break;
            }
            memcpy(tmp + len, c->in, c->len);
            len += c->len;
        }
        for (int m = (int)(rng() % 4); m > 0 && len > 0; m--) {
            tmp[rng() % len] = swaps[rng() % (sizeof(swaps) - 1)];
        }
        if (len > 0 && rng() % 3 == 0) {
            len = rng() % len;
        }
        buf = malloc(len > 0 ? len : 1);
        ck_assert_ptr_nonnull(buf);
        memcpy(buf, tmp, len);
        check_contract(buf, len);
        free(buf);
    }
}
END_TEST

static Suite *
text_suite(void)
{
    Suite *s = suite_create("proto_text");
    TCase *tc = tcase_create("decode");

    tcase_add_checked_fixture(tc, NULL, held_free);
    tcase_add_loop_test(tc, decodes_valid, 0, NOKS);
    tcase_add_loop_test(tc, prefixes_need_more, 0, NOKS);
    tcase_add_loop_test(tc, trailing_bytes_untouched, 0, NOKS);
    tcase_add_loop_test(tc, decodes_errors, 0, NERRS);
    tcase_add_test(tc, noreply_is_never_set_on_error_replies_it_cannot_see);
    tcase_add_test(tc, http_on_last_of_23_tokens);
    tcase_add_test(tc, unterminated_lines);
    tcase_add_test(tc, data_block_sizes);
    tcase_add_test(tc, get_many_keys);
    tcase_add_test(tc, get_300_keys_one_too_long);
    tcase_add_test(tc, streamed_get_lines_read_as_whole_ones);
    tcase_add_test(tc, streamed_get_line_with_a_long_key);
    tcase_add_test(tc, stream_starts_only_on_get_and_gets);
    tcase_add_test(tc, pipelined_valid);
    tcase_add_test(tc, pipelined_mixed);
    suite_add_tcase(s, tc);

    tc = tcase_create("encode");
    tcase_add_test(tc, error_texts);
    tcase_add_test(tc, reply_texts);
    tcase_add_test(tc, value_headers);
    suite_add_tcase(s, tc);

    tc = tcase_create("fuzz");
    tcase_add_checked_fixture(tc, NULL, held_free);
    tcase_add_loop_test(tc, random_garbage, 0, 4);
    tcase_add_loop_test(tc, mutated_commands, 0, 4);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(text_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
