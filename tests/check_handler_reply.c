/*
 * The reply queue alone: copy versus pin, partial writes at every offset,
 * more segments than one writev takes, memory a copying backend reserves
 * through the sink, trimming, and teardown. Pins are tokens counted by a
 * fake store_ops, so each test can say exactly when and how often a value
 * went back to the store.
 */
#include "handler/reply.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPIN 4096

static char          g_pins[NPIN];     /* a pin is &g_pins[i] */
static unsigned      g_rel[NPIN];      /* releases per pin */
static unsigned long g_nrel;

static void
fake_release(struct store_thr *t, struct store_item *it)
{
    ptrdiff_t i = (char *)it->pin - g_pins;

    (void)t;
    ck_assert_ptr_nonnull(it->pin);
    ck_assert(i >= 0 && i < NPIN);
    g_rel[i]++;
    g_nrel++;
    it->pin = NULL;
}

static const struct store_ops fake_ops = {
    .version = STORE_OPS_V1,
    .name = "fake",
    .release = fake_release,
};

static struct reply g_r;

static void
setup(void)
{
    memset(g_rel, 0, sizeof(g_rel));
    g_nrel = 0;
    reply_init(&g_r, &fake_ops, NULL, NULL);
}

static void
teardown(void)
{
    reply_deinit(&g_r);
    for (int i = 0; i < NPIN; i++) {
        ck_assert_msg(g_rel[i] <= 1, "pin %d released %u times", i,
                      g_rel[i]);
    }
}

/* The bytes a test expects on the wire, built alongside the queue. */
struct buf {
    char  *p;
    size_t len;
    size_t cap;
};

static void
buf_add(struct buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        ck_assert_ptr_nonnull(b->p);
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void
buf_free(struct buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static struct store_item
pinned(int pin, const void *data, uint32_t len)
{
    struct store_item it;

    memset(&it, 0, sizeof(it));
    it.data = data;
    it.len = len;
    it.pin = &g_pins[pin];
    return it;
}

static void
fill(char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = (char)('A' + (seed * 7 + i * 13) % 53);
    }
}

/* Copies the unsent bytes out through reply_iov, without sending. */
static void
peek(const struct reply *r, struct buf *out, int max_iov)
{
    struct iovec *iov = calloc((size_t)max_iov, sizeof(*iov));
    int n;

    ck_assert_ptr_nonnull(iov);
    n = reply_iov(r, iov, max_iov);
    for (int i = 0; i < n; i++) {
        ck_assert_uint_gt(iov[i].iov_len, 0);
        buf_add(out, iov[i].iov_base, iov[i].iov_len);
    }
    free(iov);
}

/* Sends everything, step bytes (0: all offered) per reply_sent. */
static unsigned
drain(struct reply *r, struct buf *out, int max_iov, size_t step)
{
    struct iovec *iov = calloc((size_t)max_iov, sizeof(*iov));
    unsigned calls = 0;

    ck_assert_ptr_nonnull(iov);
    while (reply_queued(r) > 0) {
        int n = reply_iov(r, iov, max_iov);
        size_t offered = 0;
        size_t send;

        calls++;
        ck_assert_int_gt(n, 0);
        ck_assert_int_le(n, max_iov);
        for (int i = 0; i < n; i++) {
            offered += iov[i].iov_len;
        }
        send = step == 0 || step > offered ? offered : step;
        for (int i = 0; i < n && send > 0; i++) {
            size_t k = iov[i].iov_len < send ? iov[i].iov_len : send;

            buf_add(out, iov[i].iov_base, k);
            send -= k;
        }
        send = step == 0 || step > offered ? offered : step;
        reply_sent(r, send);
    }
    free(iov);
    return calls;
}

static void
assert_same(const struct buf *got, const struct buf *want)
{
    size_t i = 0;

    ck_assert_uint_eq(got->len, want->len);
    /* One check per byte would write to Check's pipe per byte. */
    while (i < want->len && got->p[i] == want->p[i]) {
        i++;
    }
    ck_assert_msg(i == want->len, "byte %zu of %zu differs", i, want->len);
}

START_TEST(copy_up_to_threshold_pin_above)
{
    char *small = malloc(REPLY_COPY_MAX);
    char *big = malloc(REPLY_COPY_MAX + 1);
    struct store_item a;
    struct store_item b;
    struct buf want = { 0 };
    struct buf got = { 0 };
    struct iovec iov[8];
    int n;

    ck_assert_ptr_nonnull(small);
    ck_assert_ptr_nonnull(big);
    fill(small, REPLY_COPY_MAX, 1);
    fill(big, REPLY_COPY_MAX + 1, 2);
    buf_add(&want, small, REPLY_COPY_MAX);
    buf_add(&want, big, REPLY_COPY_MAX + 1);

    a = pinned(0, small, REPLY_COPY_MAX);
    reply_item(&g_r, &a);
    /* Copied: the pin went back at once and the caller's copy is free. */
    ck_assert_uint_eq(g_rel[0], 1);
    ck_assert_ptr_null(a.pin);
    memset(small, '#', REPLY_COPY_MAX);

    b = pinned(1, big, REPLY_COPY_MAX + 1);
    reply_item(&g_r, &b);
    ck_assert_uint_eq(g_rel[1], 0);
    ck_assert_ptr_null(b.pin);      /* the queue owns it now */
    ck_assert_uint_eq(reply_queued(&g_r), 2 * REPLY_COPY_MAX + 1);

    n = reply_iov(&g_r, iov, 8);
    ck_assert_int_eq(n, 2);
    ck_assert_ptr_ne(iov[0].iov_base, small);
    ck_assert_ptr_eq(iov[1].iov_base, big);   /* sent from the item */
    ck_assert_uint_eq(iov[1].iov_len, REPLY_COPY_MAX + 1);

    drain(&g_r, &got, 8, 0);
    assert_same(&got, &want);
    ck_assert_uint_eq(g_rel[0], 1);
    ck_assert_uint_eq(g_rel[1], 1);
    ck_assert_uint_eq(g_nrel, 2);
    buf_free(&want);
    buf_free(&got);
    free(small);
    free(big);
}
END_TEST

START_TEST(zero_length_and_unpinned_items)
{
    static const char empty[1] = { 0 };
    char *v = g_r.sink.reserve(&g_r.sink, 5000);
    struct store_item z = pinned(7, empty, 0);
    struct store_item u;
    struct buf got = { 0 };
    struct buf want = { 0 };

    ck_assert_ptr_nonnull(v);
    reply_item(&g_r, &z);
    ck_assert_uint_eq(g_rel[7], 1);
    ck_assert_uint_eq(reply_queued(&g_r), 0);

    /* A copying backend's value: already in the queue's memory, no pin. */
    fill(v, 5000, 3);
    buf_add(&want, v, 5000);
    memset(&u, 0, sizeof(u));
    u.data = v;
    u.len = 5000;
    reply_item(&g_r, &u);
    ck_assert_uint_eq(reply_queued(&g_r), 5000);
    drain(&g_r, &got, 4, 0);
    assert_same(&got, &want);
    ck_assert_uint_eq(g_nrel, 1);
    buf_free(&got);
    buf_free(&want);
}
END_TEST

/* A queue of headers, copies and pins; ends[] gets where each pinned
 * value's last byte lies, so a test knows when it must be released. */
struct layout {
    char  *data;           /* values' bytes */
    size_t total;
    size_t end[4];         /* for pins 0, 1, 3 (2 is copied) */
};

static void
build(struct reply *r, struct layout *l, struct buf *want)
{
    static const uint32_t len[4] = { 3000, 2049, 100, 4096 };
    char *h;
    size_t off = 0;
    struct store_item it;

    if (l->data == NULL) {
        l->data = malloc(3000 + 2049 + 100 + 4096);
        ck_assert_ptr_nonnull(l->data);
        fill(l->data, 3000 + 2049 + 100 + 4096, 9);
    }
    want->len = 0;
    h = reply_reserve(r, 24);
    ck_assert_ptr_nonnull(h);
    memset(h, 'H', 24);
    buf_add(want, h, 24);
    for (int i = 0; i < 4; i++) {
        const char *d = l->data + off;

        it = pinned(i, d, len[i]);
        reply_item(r, &it);
        buf_add(want, d, len[i]);
        l->end[i] = want->len;
        off += len[i];
        reply_append(r, "0123456789", 10);
        buf_add(want, "0123456789", 10);
    }
    l->total = want->len;
}

START_TEST(partial_sends_at_every_offset)
{
    struct layout l = { 0 };
    struct buf want = { 0 };
    struct buf rest = { 0 };
    size_t total;

    build(&g_r, &l, &want);
    total = l.total;
    reply_deinit(&g_r);
    memset(g_rel, 0, sizeof(g_rel));

    for (size_t k = 0; k <= total; k++) {
        reply_init(&g_r, &fake_ops, NULL, NULL);
        build(&g_r, &l, &want);
        ck_assert_uint_eq(g_rel[2], 1);       /* copied at once */
        if (k > 0) {
            reply_sent(&g_r, k);
        }
        ck_assert_uint_eq(reply_queued(&g_r), total - k);
        for (int i = 0; i < 4; i++) {
            if (i != 2) {
                ck_assert_msg(g_rel[i] == (l.end[i] <= k ? 1u : 0u),
                              "offset %zu: pin %d released %u times", k, i,
                              g_rel[i]);
            }
        }
        rest.len = 0;
        peek(&g_r, &rest, 64);
        ck_assert_uint_eq(rest.len, total - k);
        ck_assert(memcmp(rest.p == NULL ? "" : rest.p, want.p + k,
                         total - k) == 0);
        if (k < total) {
            reply_sent(&g_r, total - k);
        }
        ck_assert_uint_eq(reply_queued(&g_r), 0);
        for (int i = 0; i < 4; i++) {
            ck_assert_uint_eq(g_rel[i], 1);
        }
        reply_deinit(&g_r);
        for (int i = 0; i < 4; i++) {
            ck_assert_uint_eq(g_rel[i], 1);
        }
        memset(g_rel, 0, sizeof(g_rel));
    }
    reply_init(&g_r, &fake_ops, NULL, NULL);
    free(l.data);
    buf_free(&want);
    buf_free(&rest);
}
END_TEST

START_TEST(byte_by_byte)
{
    struct layout l = { 0 };
    struct buf want = { 0 };
    struct buf got = { 0 };

    build(&g_r, &l, &want);
    for (size_t k = 1; k <= l.total; k++) {
        struct iovec iov[2];
        int n = reply_iov(&g_r, iov, 2);

        ck_assert_int_ge(n, 1);
        buf_add(&got, iov[0].iov_base, 1);
        reply_sent(&g_r, 1);
        for (int i = 0; i < 4; i++) {
            if (i != 2) {
                ck_assert_uint_eq(g_rel[i], l.end[i] <= k ? 1u : 0u);
            }
        }
    }
    ck_assert_uint_eq(reply_queued(&g_r), 0);
    assert_same(&got, &want);
    free(l.data);
    buf_free(&want);
    buf_free(&got);
}
END_TEST

START_TEST(more_segments_than_one_writev)
{
    enum { NITEMS = 3000 };
    size_t size = 0;
    char *data;
    size_t off = 0;
    struct buf want = { 0 };
    struct buf got = { 0 };
    unsigned calls;

    for (int i = 0; i < NITEMS; i++) {
        size += REPLY_COPY_MAX + 1 + (size_t)(i % 7);
    }
    data = malloc(size);
    ck_assert_ptr_nonnull(data);
    fill(data, size, 5);
    for (int i = 0; i < NITEMS; i++) {
        uint32_t len = REPLY_COPY_MAX + 1 + (uint32_t)(i % 7);
        char *h = reply_reserve(&g_r, 24);
        struct store_item it = pinned(i, data + off, len);

        ck_assert_ptr_nonnull(h);
        memset(h, 'a' + i % 26, 24);
        buf_add(&want, h, 24);
        reply_item(&g_r, &it);
        buf_add(&want, data + off, len);
        off += len;
    }
    ck_assert_uint_eq(reply_queued(&g_r), want.len);
    /* 6000 segments, at most 1024 per writev, and each writev short by
     * a little, so every round starts inside a segment. */
    calls = drain(&g_r, &got, 1024, 1024 * 1000);
    ck_assert_uint_ge(calls, 6);
    assert_same(&got, &want);
    for (int i = 0; i < NITEMS; i++) {
        ck_assert_uint_eq(g_rel[i], 1);
    }
    ck_assert_uint_eq(g_nrel, NITEMS);
    free(data);
    buf_free(&want);
    buf_free(&got);
}
END_TEST

START_TEST(sink_memory_stays_valid)
{
    static const size_t sz[] = { 100, 16000, 30000, 7, 16384, 1 };
    char *v[6];
    char *h;
    struct buf want = { 0 };
    struct buf got = { 0 };
    char big[20000];
    char tail[100000];

    /* Values a copying backend reserved, interleaved with queued bytes
     * that need new blocks, some larger than a block. */
    for (int i = 0; i < 6; i++) {
        v[i] = g_r.sink.reserve(&g_r.sink, sz[i]);
        ck_assert_ptr_nonnull(v[i]);
        fill(v[i], sz[i], (unsigned)i + 20);
        if (i == 1) {
            memset(big, 'b', sizeof(big));
            reply_append(&g_r, big, sizeof(big));
            buf_add(&want, big, sizeof(big));
        }
    }
    h = reply_reserve(&g_r, 24);
    ck_assert_ptr_nonnull(h);
    buf_add(&want, "hhhhhhhhhhhhhhhhhhhhhhhh", 24);
    memset(tail, 't', sizeof(tail));
    reply_append(&g_r, tail, sizeof(tail));
    buf_add(&want, tail, sizeof(tail));
    /* Written after 100 KB more were queued behind it. */
    memset(h, 'h', 24);
    for (int i = 5; i >= 0; i--) {
        char *check = malloc(sz[i]);
        struct store_item it;

        ck_assert_ptr_nonnull(check);
        fill(check, sz[i], (unsigned)i + 20);
        ck_assert(memcmp(v[i], check, sz[i]) == 0);
        memset(&it, 0, sizeof(it));
        it.data = v[i];
        it.len = (uint32_t)sz[i];
        reply_item(&g_r, &it);
        buf_add(&want, check, sz[i]);
        free(check);
    }
    drain(&g_r, &got, 3, 5000);
    assert_same(&got, &want);
    ck_assert_uint_eq(g_nrel, 0);
    buf_free(&want);
    buf_free(&got);
}
END_TEST

/*
 * With a scratch buffer, small values a copying backend returns are copied
 * in behind their headers: a long multi-get is a few large segments, not
 * one per value (whose table once outweighed the bytes it described).
 */
START_TEST(small_copied_values_join_their_headers)
{
    static char scratch[REPLY_COPY_MAX];
    struct buf want = { 0 };
    struct buf got = { 0 };
    struct iovec iov[64];
    char *big;

    reply_deinit(&g_r);
    reply_init(&g_r, &fake_ops, NULL, scratch);
    for (int i = 0; i < 20000; i++) {
        size_t n = 1 + (size_t)i % REPLY_COPY_MAX;
        char *v = g_r.sink.reserve(&g_r.sink, n);
        struct store_item it;

        ck_assert_ptr_eq(v, scratch);
        fill(v, n, (unsigned)i);
        reply_str(&g_r, "<");
        memset(&it, 0, sizeof(it));
        it.data = v;
        it.len = (uint32_t)n;
        reply_item(&g_r, &it);
        reply_str(&g_r, ">");
        buf_add(&want, "<", 1);
        buf_add(&want, v, n);
        buf_add(&want, ">", 1);
    }
    /* One segment per block, give or take. */
    ck_assert_int_le(reply_iov(&g_r, iov, 64), 64);
    ck_assert_uint_le(g_r.nseg, reply_queued(&g_r) / (8 * 1024) + 2);
    /* Bigger ones still go in the blocks, queued where they lie. */
    big = g_r.sink.reserve(&g_r.sink, REPLY_COPY_MAX + 1);
    ck_assert_uint_ge((uintptr_t)big - (uintptr_t)scratch, sizeof(scratch));
    drain(&g_r, &got, 7, 3333);
    assert_same(&got, &want);
    buf_free(&want);
    buf_free(&got);
}
END_TEST

START_TEST(reuse_after_drain)
{
    for (int round = 0; round < 5; round++) {
        struct buf want = { 0 };
        struct buf got = { 0 };
        size_t n = (size_t)round * 9000 + 10;
        char *p = malloc(n);
        char *d = malloc(5000);
        struct store_item it;

        ck_assert_ptr_nonnull(p);
        ck_assert_ptr_nonnull(d);
        fill(p, n, (unsigned)round);
        fill(d, 5000, (unsigned)round + 50);
        reply_append(&g_r, p, n);
        buf_add(&want, p, n);
        it = pinned(round, d, 5000);
        reply_item(&g_r, &it);
        buf_add(&want, d, 5000);
        reply_str(&g_r, "END\r\n");
        buf_add(&want, "END\r\n", 5);
        drain(&g_r, &got, 2, 777);
        assert_same(&got, &want);
        ck_assert_uint_eq(g_rel[round], 1);
        ck_assert(!g_r.oom);
        free(p);
        free(d);
        buf_free(&want);
        buf_free(&got);
    }
}
END_TEST

START_TEST(trim_gives_back_the_tail)
{
    struct buf got = { 0 };
    char *p = reply_reserve(&g_r, 100);
    char *q;

    ck_assert_ptr_nonnull(p);
    memcpy(p, "0123456789", 10);
    reply_trim(&g_r, 90);
    ck_assert_uint_eq(reply_queued(&g_r), 10);
    q = reply_reserve(&g_r, 5);
    ck_assert_ptr_nonnull(q);
    memcpy(q, "abcde", 5);
    /* A whole reservation given back leaves nothing behind. */
    p = reply_reserve(&g_r, 40);
    ck_assert_ptr_nonnull(p);
    reply_trim(&g_r, 40);
    ck_assert_uint_eq(reply_queued(&g_r), 15);
    drain(&g_r, &got, 8, 0);
    ck_assert_uint_eq(got.len, 15);
    ck_assert(memcmp(got.p, "0123456789abcde", 15) == 0);
    buf_free(&got);
}
END_TEST

/*
 * A client that reads, but never quite everything: the queue is never
 * empty, yet what was sent must not stay allocated (it did, until the
 * queue drained, which such a client never lets happen).
 */
START_TEST(memory_follows_the_unsent_bytes)
{
    enum { VAL = 50000, ROUNDS = 2000, KEEP = 100000 };
    struct buf want = { 0 };
    struct buf got = { 0 };
    char *d = malloc(VAL);
    size_t peak = 0;

    ck_assert_ptr_nonnull(d);
    fill(d, VAL, 3);
    for (int i = 0; i < ROUNDS; i++) {
        /* As a text get from a copying backend: the value reserved through
         * the sink, then its header, then the pieces around it. */
        char *v = g_r.sink.reserve(&g_r.sink, VAL);
        struct store_item it;
        struct store_item pin = pinned(i % NPIN, d, 3000);
        char hdr[32];
        int n = snprintf(hdr, sizeof(hdr), "VALUE k%d 0 %d\r\n", i, VAL);

        ck_assert_ptr_nonnull(v);
        memcpy(v, d, VAL);
        reply_append(&g_r, hdr, (size_t)n);
        memset(&it, 0, sizeof(it));
        it.data = v;
        it.len = VAL;
        reply_item(&g_r, &it);
        reply_str(&g_r, "\r\n");
        reply_item(&g_r, &pin);
        reply_str(&g_r, "END\r\n");
        if (i < 3) {
            buf_add(&want, hdr, (size_t)n);
            buf_add(&want, d, VAL);
            buf_add(&want, "\r\n", 2);
            buf_add(&want, d, 3000);
            buf_add(&want, "END\r\n", 5);
        }
        if (reply_queued(&g_r) > KEEP) {
            struct iovec iov[64];
            size_t send = reply_queued(&g_r) - KEEP;
            size_t left = send;
            int k = reply_iov(&g_r, iov, 64);

            for (int j = 0; j < k && left > 0 && got.len < want.len; j++) {
                size_t m = iov[j].iov_len < left ? iov[j].iov_len : left;

                buf_add(&got, iov[j].iov_base, m);
                left -= m;
            }
            for (int j = 0; j < k && left > 0; j++) {
                left -= iov[j].iov_len < left ? iov[j].iov_len : left;
            }
            reply_sent(&g_r, send - left);
        }
        ck_assert_uint_gt(reply_queued(&g_r), 0);
        if (reply_held(&g_r) > peak) {
            peak = reply_held(&g_r);
        }
    }
    ck_assert_msg(peak < KEEP + 2 * VAL + 256 * 1024,
                  "%zu bytes held for %d unsent", peak, KEEP);
    /* What went out first is what was queued first. */
    ck_assert_uint_ge(got.len, want.len);
    got.len = want.len;
    assert_same(&got, &want);
    /* Values sent went back to the store as they went out. */
    ck_assert_uint_gt(g_nrel, ROUNDS - 5);
    free(d);
    buf_free(&want);
    buf_free(&got);
}
END_TEST

START_TEST(deinit_releases_every_unsent_pin)
{
    char *d = malloc(5 * 3000);
    char *h;

    ck_assert_ptr_nonnull(d);
    fill(d, 5 * 3000, 4);
    for (int i = 0; i < 5; i++) {
        struct store_item it = pinned(i, d + i * 3000, 3000);

        h = reply_reserve(&g_r, 24);
        ck_assert_ptr_nonnull(h);
        memset(h, 'h', 24);
        reply_item(&g_r, &it);
    }
    /* Two values sent, the third half sent. */
    reply_sent(&g_r, 2 * (24 + 3000) + 24 + 1500);
    ck_assert_uint_eq(g_rel[0], 1);
    ck_assert_uint_eq(g_rel[1], 1);
    ck_assert_uint_eq(g_rel[2], 0);
    reply_deinit(&g_r);
    for (int i = 0; i < 5; i++) {
        ck_assert_uint_eq(g_rel[i], 1);
    }
    ck_assert_uint_eq(g_nrel, 5);
    reply_init(&g_r, &fake_ops, NULL, NULL);
    free(d);
}
END_TEST

START_TEST(deinit_after_full_send_releases_nothing_more)
{
    char *d = malloc(3000);
    struct store_item it;
    struct buf got = { 0 };

    ck_assert_ptr_nonnull(d);
    fill(d, 3000, 8);
    it = pinned(0, d, 3000);
    reply_item(&g_r, &it);
    drain(&g_r, &got, 1, 0);
    ck_assert_uint_eq(g_rel[0], 1);
    reply_deinit(&g_r);
    ck_assert_uint_eq(g_rel[0], 1);
    ck_assert_uint_eq(g_nrel, 1);
    reply_init(&g_r, &fake_ops, NULL, NULL);
    buf_free(&got);
    free(d);
}
END_TEST

START_TEST(holes_filled_later_keep_their_place)
{
    static char big[4096];
    struct reply_hole h1;
    struct reply_hole h2;
    struct store_item it;
    struct buf want = { 0 };
    struct buf got = { 0 };
    uint64_t at;

    fill(big, sizeof(big), 3);
    reply_append(&g_r, "A", 1);
    ck_assert(reply_hole(&g_r, 120, &h1));
    reply_append(&g_r, "B", 1);
    it = pinned(1, big, sizeof(big));
    reply_item(&g_r, &it);
    ck_assert(reply_hole(&g_r, 120, &h2));
    reply_append(&g_r, "C", 1);
    ck_assert_uint_eq(reply_queued(&g_r), 3 + 240 + sizeof(big));
    /* The later one first (a quiet reply: nothing), then the earlier. */
    ck_assert(reply_fill(&g_r, &h2, "", 0, &at));
    ck_assert_uint_eq(at, 1 + 120 + 1 + sizeof(big));
    ck_assert(!reply_fill(&g_r, &h2, "x", 1, &at));
    ck_assert(reply_fill(&g_r, &h1, "xyz", 3, &at));
    ck_assert_uint_eq(at, 1);
    ck_assert_uint_eq(reply_total(&g_r), 6 + sizeof(big));
    buf_add(&want, "Axyz", 4);
    buf_add(&want, "B", 1);
    buf_add(&want, big, sizeof(big));
    buf_add(&want, "C", 1);
    drain(&g_r, &got, 64, 5);
    assert_same(&got, &want);
    ck_assert_uint_eq(g_rel[1], 1);
    buf_free(&want);
    buf_free(&got);
}
END_TEST

START_TEST(hole_dropped_by_truncate_is_not_filled)
{
    struct reply_hole h;
    struct buf got = { 0 };
    uint64_t at;
    uint64_t mark;

    reply_append(&g_r, "keep", 4);
    mark = reply_total(&g_r);
    ck_assert(reply_hole(&g_r, 64, &h));
    reply_append(&g_r, "drop", 4);
    reply_truncate(&g_r, mark);
    reply_append(&g_r, "fail", 4);
    ck_assert(!reply_fill(&g_r, &h, "late", 4, &at));
    drain(&g_r, &got, 8, 0);
    ck_assert_uint_eq(got.len, 8);
    ck_assert_int_eq(memcmp(got.p, "keepfail", 8), 0);
    buf_free(&got);
}
END_TEST

static Suite *
reply_suite(void)
{
    Suite *s = suite_create("handler_reply");
    TCase *tc = tcase_create("reply");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, copy_up_to_threshold_pin_above);
    tcase_add_test(tc, holes_filled_later_keep_their_place);
    tcase_add_test(tc, hole_dropped_by_truncate_is_not_filled);
    tcase_add_test(tc, zero_length_and_unpinned_items);
    tcase_add_test(tc, partial_sends_at_every_offset);
    tcase_add_test(tc, byte_by_byte);
    tcase_add_test(tc, more_segments_than_one_writev);
    tcase_add_test(tc, sink_memory_stays_valid);
    tcase_add_test(tc, small_copied_values_join_their_headers);
    tcase_add_test(tc, reuse_after_drain);
    tcase_add_test(tc, trim_gives_back_the_tail);
    tcase_add_test(tc, memory_follows_the_unsent_bytes);
    tcase_add_test(tc, deinit_releases_every_unsent_pin);
    tcase_add_test(tc, deinit_after_full_send_releases_nothing_more);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(reply_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
