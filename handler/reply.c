/*
 * Reply queue. Blocks are bump-allocated and only ever appended to, so a
 * segment's pointer stays put however much is queued after it. A block
 * counts the unsent segments that point into it and is freed once they are
 * all sent, unless it is the one being appended to; when the whole queue is
 * written everything goes at once, but one standard block is kept spare so
 * that a connection draining between batches allocates nothing.
 */
#include "handler/reply.h"

#include <stdlib.h>
#include <string.h>

#define BLOCK_SIZE (16 * 1024)
/* Sent segments at the front of the table are dropped once there are this
 * many and they are half of it: an amortized memmove instead of a table
 * that grows for as long as the queue never empties. */
#define SEG_COMPACT 64

struct reply_block {
    struct reply_block *prev;
    struct reply_block *next;
    size_t              cap;
    size_t              used;
    size_t              refs;   /* unsent segments pointing into data */
    char                data[];
};

static void
block_unlink(struct reply *r, struct reply_block *b)
{
    if (b->prev != NULL) {
        b->prev->next = b->next;
    } else {
        r->head = b->next;
    }
    if (b->next != NULL) {
        b->next->prev = b->prev;
    } else {
        r->tail = b->prev;
    }
}

/* Frees b, or keeps it as the spare. */
static void
block_drop(struct reply *r, struct reply_block *b)
{
    if (r->spare == NULL && b->cap == BLOCK_SIZE) {
        r->spare = b;
        return;
    }
    r->held -= sizeof(*b) + b->cap;
    free(b);
}

/* len bytes at the end of the queue's memory, in no segment yet. */
static char *
block_reserve(struct reply *r, size_t len)
{
    struct reply_block *b = r->tail;

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
            r->held += sizeof(*b) + cap;
        }
        b->used = 0;
        b->refs = 0;
        b->next = NULL;
        b->prev = r->tail;
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

/*
 * Where a copying backend puts a value it returns. Big ones go in the
 * blocks, where reply_item queues them as they lie, so a block is never
 * freed between this and that reply_item (only reply_sent frees).
 */
static void *
sink_reserve(struct store_sink *sk, size_t len)
{
    struct reply *r = (struct reply *)sk;

    if (len <= REPLY_COPY_MAX && r->scratch != NULL) {
        return r->scratch;
    }
    return block_reserve(r, len);
}

void
reply_init(struct reply *r, const struct store_ops *ops,
           struct store_thr *thr, char *scratch)
{
    memset(r, 0, sizeof(*r));
    r->sink.reserve = sink_reserve;
    r->ops = ops;
    r->thr = thr;
    r->scratch = scratch;
}

/* The block p was reserved from; NULL when it is none of ours. */
static struct reply_block *
block_of(const struct reply *r, const char *p)
{
    /* Almost always the tail or the one before it. */
    for (struct reply_block *b = r->tail; b != NULL; b = b->prev) {
        if (p >= b->data && p < b->data + b->used) {
            return b;
        }
    }
    return NULL;
}

/* A segment fully sent (or dropped): its pin and its block's count go. */
static void
seg_done(struct reply *r, struct reply_seg *s)
{
    if (s->it.pin != NULL) {
        r->ops->release(r->thr, &s->it);
        s->it.pin = NULL;
    }
    if (s->blk != NULL && --s->blk->refs == 0 && s->blk != r->tail) {
        block_unlink(r, s->blk);
        block_drop(r, s->blk);
    }
    s->blk = NULL;
}

static void
free_blocks(struct reply *r)
{
    while (r->head != NULL) {
        struct reply_block *b = r->head;

        block_unlink(r, b);
        block_drop(r, b);
    }
}

void
reply_deinit(struct reply *r)
{
    for (size_t i = r->first; i < r->nseg; i++) {
        seg_done(r, &r->seg[i]);
    }
    free_blocks(r);
    free(r->spare);
    free(r->seg);
    r->spare = NULL;
    r->seg = NULL;
    r->nseg = r->segcap = r->first = r->off = r->queued = r->held = 0;
}

static struct reply_seg *
new_seg(struct reply *r, struct reply_block *blk)
{
    struct reply_seg *s;

    if (r->nseg == r->segcap) {
        size_t cap = r->segcap ? r->segcap * 2 : 64;

        s = realloc(r->seg, cap * sizeof(*s));
        if (s == NULL) {
            r->oom = true;
            return NULL;
        }
        r->seg = s;
        r->segcap = cap;
    }
    s = &r->seg[r->nseg++];
    memset(s, 0, sizeof(*s));
    s->blk = blk;
    if (blk != NULL) {
        blk->refs++;
    }
    return s;
}

char *
reply_reserve(struct reply *r, size_t n)
{
    char *p = block_reserve(r, n);
    struct reply_seg *last;

    if (p == NULL) {
        return NULL;
    }
    r->queued += n;
    r->total += n;
    last = r->nseg > r->first ? &r->seg[r->nseg - 1] : NULL;
    if (last != NULL && last->it.pin == NULL && !last->hole &&
        last->ptr + last->len == p) {
        last->len += n;
        return p;
    }
    last = new_seg(r, r->tail);
    if (last == NULL) {
        r->queued -= n;
        r->total -= n;
        return NULL;
    }
    last->ptr = p;
    last->len = n;
    return p;
}

bool
reply_hole(struct reply *r, size_t max, struct reply_hole *h)
{
    char *p = block_reserve(r, max);
    struct reply_seg *s;

    if (p == NULL) {
        return false;
    }
    s = new_seg(r, r->tail);
    if (s == NULL) {
        r->tail->used -= max;
        return false;
    }
    s->ptr = p;
    s->len = max;
    s->hole = true;
    r->queued += max;
    r->total += max;
    h->seg = r->nseg - 1;
    h->ptr = p;
    h->max = max;
    return true;
}

bool
reply_fill(struct reply *r, const struct reply_hole *h, const void *p,
           size_t len, uint64_t *at)
{
    struct reply_seg *s = h->seg < r->nseg ? &r->seg[h->seg] : NULL;
    uint64_t end = r->total;

    if (s == NULL || !s->hole || s->ptr != h->ptr || h->seg < r->first) {
        return false;
    }
    memcpy(h->ptr, p, len);
    s->hole = false;
    s->len = len;
    r->queued -= h->max - len;
    r->total -= h->max - len;
    end = r->total;
    for (size_t i = r->nseg; i-- > h->seg;) {
        end -= r->seg[i].len;
    }
    *at = end;
    return true;
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
        r->tail->refs--;
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
    bool scratch = r->scratch != NULL && (uintptr_t)it->data -
                   (uintptr_t)r->scratch < REPLY_COPY_MAX;

    if (it->pin == NULL && !scratch) {
        /* Copied by the backend into our blocks: queued where it lies. */
        s = it->len > 0 ? new_seg(r, block_of(r, it->data)) : NULL;
        if (s != NULL) {
            s->ptr = it->data;
            s->len = it->len;
            r->queued += it->len;
            r->total += it->len;
        }
        return;
    }
    if (it->len <= REPLY_COPY_MAX) {
        /* Small values are cheaper to copy than to pin and gather. */
        reply_append(r, it->data, it->len);
        if (it->pin != NULL) {
            r->ops->release(r->thr, it);
        }
        it->pin = NULL;
        return;
    }
    s = new_seg(r, NULL);
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
            seg_done(r, s);
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

        if (r->seg[i].len == skip) {
            continue;   /* a hole filled with nothing (a quiet reply) */
        }
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
            break;
        }
        n -= left;
        seg_done(r, s);
        r->first++;
        r->off = 0;
    }
    if (r->queued == 0) {
        for (size_t i = r->first; i < r->nseg; i++) {
            seg_done(r, &r->seg[i]);
        }
        r->first = r->nseg = r->off = 0;
        free_blocks(r);
        return;
    }
    /* A block whose segments went out while it was the tail is freed once
     * a newer one took over and it reaches the front. */
    while (r->head != r->tail && r->head->refs == 0) {
        struct reply_block *b = r->head;

        block_unlink(r, b);
        block_drop(r, b);
    }
    if (r->first >= SEG_COMPACT && 2 * r->first >= r->nseg) {
        memmove(r->seg, r->seg + r->first,
                (r->nseg - r->first) * sizeof(r->seg[0]));
        r->nseg -= r->first;
        r->first = 0;
    }
}

size_t
reply_held(const struct reply *r)
{
    return r->held + r->segcap * sizeof(r->seg[0]);
}
