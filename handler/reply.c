/*
 * Reply queue. Blocks are bump-allocated and only ever appended to, so a
 * segment's pointer stays put however much is queued after it; when the
 * whole queue is written everything is recycled at once.
 */
#include "handler/reply.h"

#include <stdlib.h>
#include <string.h>

#define BLOCK_SIZE (16 * 1024)

struct reply_block {
    struct reply_block *next;
    size_t              cap;
    size_t              used;
    char                data[];
};

static void *
sink_reserve(struct store_sink *sk, size_t len)
{
    struct reply *r = (struct reply *)sk;
    struct reply_block *b = r->tail;

    /* Copying backends put values here: bytes that belong to no segment
     * until reply_item queues them. */
    if (b == NULL || b->cap - b->used < len) {
        size_t cap = len > BLOCK_SIZE ? len : BLOCK_SIZE;

        if (r->spare != NULL && r->spare->cap >= len) {
            b = r->spare;
            r->spare = NULL;
        } else {
            b = malloc(sizeof(*b) + cap);
            if (b == NULL) {
                r->oom = true;
                return NULL;
            }
            b->cap = cap;
        }
        b->used = 0;
        b->next = NULL;
        if (r->tail != NULL) {
            r->tail->next = b;
        } else {
            r->head = b;
        }
        r->tail = b;
    }
    b->used += len;
    return b->data + b->used - len;
}

void
reply_init(struct reply *r, const struct store_ops *ops,
           struct store_thr *thr)
{
    memset(r, 0, sizeof(*r));
    r->sink.reserve = sink_reserve;
    r->ops = ops;
    r->thr = thr;
}

static void
release_from(struct reply *r, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        if (r->seg[i].it.pin != NULL) {
            r->ops->release(r->thr, &r->seg[i].it);
            r->seg[i].it.pin = NULL;
        }
    }
}

static void
free_blocks(struct reply *r, bool keep_one)
{
    struct reply_block *b = r->head;

    while (b != NULL) {
        struct reply_block *next = b->next;

        if (keep_one && r->spare == NULL && b->cap == BLOCK_SIZE) {
            r->spare = b;
        } else {
            free(b);
        }
        b = next;
    }
    r->head = NULL;
    r->tail = NULL;
}

void
reply_deinit(struct reply *r)
{
    release_from(r, r->first, r->nseg);
    free_blocks(r, false);
    free(r->spare);
    free(r->seg);
    r->spare = NULL;
    r->seg = NULL;
    r->nseg = r->segcap = r->first = r->off = r->queued = 0;
}

static struct reply_seg *
new_seg(struct reply *r)
{
    if (r->nseg == r->segcap) {
        size_t cap = r->segcap ? r->segcap * 2 : 64;
        struct reply_seg *s = realloc(r->seg, cap * sizeof(*s));

        if (s == NULL) {
            r->oom = true;
            return NULL;
        }
        r->seg = s;
        r->segcap = cap;
    }
    memset(&r->seg[r->nseg], 0, sizeof(r->seg[0]));
    return &r->seg[r->nseg++];
}

char *
reply_reserve(struct reply *r, size_t n)
{
    char *p = sink_reserve(&r->sink, n);
    struct reply_seg *last;

    if (p == NULL) {
        return NULL;
    }
    r->queued += n;
    r->total += n;
    last = r->nseg > r->first ? &r->seg[r->nseg - 1] : NULL;
    if (last != NULL && last->it.pin == NULL && last->ptr + last->len == p) {
        last->len += n;
        return p;
    }
    last = new_seg(r);
    if (last == NULL) {
        r->queued -= n;
        r->total -= n;
        return NULL;
    }
    last->ptr = p;
    last->len = n;
    return p;
}

void
reply_trim(struct reply *r, size_t n)
{
    struct reply_seg *last = &r->seg[r->nseg - 1];

    last->len -= n;
    r->tail->used -= n;
    r->queued -= n;
    r->total -= n;
    if (last->len == 0) {
        r->nseg--;
    }
}

void
reply_append(struct reply *r, const void *p, size_t n)
{
    char *dst;

    if (n == 0) {
        return;
    }
    dst = reply_reserve(r, n);
    if (dst != NULL) {
        memcpy(dst, p, n);
    }
}

void
reply_str(struct reply *r, const char *s)
{
    reply_append(r, s, strlen(s));
}

void
reply_item(struct reply *r, struct store_item *it)
{
    struct reply_seg *s;

    if (it->len <= REPLY_COPY_MAX || it->pin == NULL) {
        /* Small values are cheaper to copy than to pin and gather; an item
         * without a pin already lives in our blocks (sink). */
        if (it->pin == NULL) {
            s = it->len > 0 ? new_seg(r) : NULL;
            if (s != NULL) {
                s->ptr = it->data;
                s->len = it->len;
                r->queued += it->len;
                r->total += it->len;
            }
        } else {
            reply_append(r, it->data, it->len);
            r->ops->release(r->thr, it);
        }
        it->pin = NULL;
        return;
    }
    s = new_seg(r);
    if (s == NULL) {
        r->ops->release(r->thr, it);
        it->pin = NULL;
        return;
    }
    s->ptr = it->data;
    s->len = it->len;
    s->it = *it;
    r->queued += it->len;
    r->total += it->len;
    it->pin = NULL;
}

void
reply_truncate(struct reply *r, uint64_t at)
{
    uint64_t end = r->total;

    /* Walk back from the end: segment i holds [end - len, end). */
    while (r->nseg > r->first && end > at) {
        struct reply_seg *s = &r->seg[r->nseg - 1];
        size_t sent = r->nseg - 1 == r->first ? r->off : 0;
        uint64_t start = end - (s->len - sent);

        if (start >= at) {
            end = start;
            r->queued -= s->len - sent;
            if (sent > 0) {
                /* Partly sent: keep what went out, drop the rest. */
                s->len = sent;
                break;
            }
            release_from(r, r->nseg - 1, r->nseg);
            r->nseg--;
            continue;
        }
        r->queued -= (size_t)(end - at);
        s->len -= (size_t)(end - at);
        end = at;
    }
    r->total = end;
}

int
reply_iov(const struct reply *r, struct iovec *iov, int max)
{
    int n = 0;

    for (size_t i = r->first; i < r->nseg && n < max; i++) {
        size_t skip = i == r->first ? r->off : 0;

        iov[n].iov_base = (void *)(r->seg[i].ptr + skip);
        iov[n].iov_len = r->seg[i].len - skip;
        n++;
    }
    return n;
}

void
reply_sent(struct reply *r, size_t n)
{
    r->queued -= n;
    while (n > 0 && r->first < r->nseg) {
        struct reply_seg *s = &r->seg[r->first];
        size_t left = s->len - r->off;

        if (n < left) {
            r->off += n;
            return;
        }
        n -= left;
        release_from(r, r->first, r->first + 1);
        r->first++;
        r->off = 0;
    }
    if (r->queued == 0) {
        release_from(r, r->first, r->nseg);
        r->first = r->nseg = r->off = 0;
        free_blocks(r, true);
    }
}
