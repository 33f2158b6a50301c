/*
 * The reply queue of one connection: the bytes the handler produces, in
 * request order, waiting for the server's writev. Small pieces are copied
 * into blocks that never move (so a pointer handed out stays valid until the
 * bytes are sent); large values are queued by reference, pinned in the
 * store, and released once written. A block is freed as soon as every byte
 * in it is sent, so a queue that never quite empties (a client that reads
 * slowly but forever) holds no more than its unsent bytes and a block or
 * two. It owns no socket: the server asks for iovecs and reports how much
 * went out.
 */
#ifndef STASHD_HANDLER_REPLY_H
#define STASHD_HANDLER_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "storage/storage.h"

struct reply_block;

struct reply_seg {
    const char         *ptr;
    size_t              len;
    struct reply_block *blk;   /* the block ptr lies in; NULL: a pin */
    struct store_item   it;    /* it.pin != NULL: release once sent */
    bool                hole;  /* reply_hole's, not filled yet */
};

/* A reply's place in the queue, its bytes known later (reply_hole). */
struct reply_hole {
    size_t  seg;
    char   *ptr;
    size_t  max;
};

struct reply {
    struct store_sink       sink;   /* first: the sink casts back to us */
    const struct store_ops *ops;    /* ro: releases pins */
    struct store_thr       *thr;    /* ro */
    char                   *scratch; /* ro: REPLY_COPY_MAX bytes lent by
                                      * the thread, or NULL (see init) */
    struct reply_block     *head;   /* blocks holding queued bytes */
    struct reply_block     *tail;
    struct reply_block     *spare; /* one recycled block: no malloc per batch */
    struct reply_seg       *seg;
    size_t                  nseg;
    size_t                  segcap;
    size_t                  first;  /* first unsent segment */
    size_t                  off;    /* bytes of seg[first] already sent */
    size_t                  queued; /* unsent bytes */
    uint64_t                total;  /* bytes ever queued (a position) */
    size_t                  held;   /* bytes of blocks, spare included */
    bool                    oom;    /* an allocation failed: close the conn */
};

/* Values up to this size are copied, bigger ones pinned. */
#define REPLY_COPY_MAX 2048

/*
 * Prepares r for use; releases go to ops/thr. A copying backend's values of
 * up to REPLY_COPY_MAX bytes land in scratch, then reply_item copies them
 * in behind their header, where they join its segment as a pinned small
 * value does (without it: one segment per value, in the blocks). scratch
 * is the calling thread's, used by one request at a time; may be NULL.
 */
void reply_init(struct reply *r, const struct store_ops *ops,
                struct store_thr *thr, char *scratch);

/* Releases every pin and frees every block. */
void reply_deinit(struct reply *r);

/*
 * Appends n bytes to the queue and returns where to write them, valid until
 * they are sent; NULL when memory ran out (r->oom is then set).
 */
char *reply_reserve(struct reply *r, size_t n);

/*
 * Gives back the last n bytes of the latest reserve, which the caller
 * reserved generously and did not fill.
 */
void reply_trim(struct reply *r, size_t n);

/* Appends a copy of p[0, n). */
void reply_append(struct reply *r, const void *p, size_t n);

/* Appends a NUL-terminated string. */
void reply_str(struct reply *r, const char *s);

/* Appends a value returned by get; takes over its pin. */
void reply_item(struct reply *r, struct store_item *it);

/*
 * Keeps max bytes' place in the queue for a reply made later; nothing at or
 * after it may be sent until it is filled (the caller holds the queue).
 * False when memory ran out (r->oom is then set).
 */
bool reply_hole(struct reply *r, size_t max, struct reply_hole *h);

/*
 * Puts p[0, len) (len <= h->max) in the hole, the rest of which goes, and
 * returns where it starts (a reply_total position). False, and nothing
 * done, when the hole is gone (reply_truncate dropped it).
 */
bool reply_fill(struct reply *r, const struct reply_hole *h, const void *p,
                size_t len, uint64_t *at);

/* Unsent bytes. */
static inline size_t
reply_queued(const struct reply *r)
{
    return r->queued;
}

/* The position of the next byte to be queued, for reply_truncate. */
static inline uint64_t
reply_total(const struct reply *r)
{
    return r->total;
}

/*
 * Drops every unsent byte queued at or after position at (a reply_total
 * taken earlier), releasing their pins; bytes already sent stay sent.
 */
void reply_truncate(struct reply *r, uint64_t at);
/*
 * What back-pressure weighs: the unsent bytes or, when more, the memory of
 * the blocks holding them (a big copied value half sent is held whole).
 */
static inline size_t
reply_backlog(const struct reply *r)
{
    return r->queued > r->held ? r->queued : r->held;
}

/* Memory the queue holds: its blocks and its segment table, in bytes. */
size_t reply_held(const struct reply *r);

/* Fills up to max iovecs with the unsent bytes; returns how many. */
int reply_iov(const struct reply *r, struct iovec *iov, int max);

/* Marks n bytes as sent, releasing what was fully written. */
void reply_sent(struct reply *r, size_t n);

#endif
