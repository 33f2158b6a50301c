/*
 * Worker threads and their connections. Each worker owns a libev loop and
 * every connection handed to it; nothing on the request path takes a lock
 * shared with another thread. A read event does one read(), runs every
 * complete request in it through the handler, and sends all the replies
 * with one writev (pipelining without a syscall per reply).
 */
#include "server/internal.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "protocol/binary.h"

#define SCRATCH_SIZE (64 * 1024)
#define CONN_BUF_MIN (16 * 1024)
/* Past this many unsent bytes a connection is not read from until its
 * client reads: a client that never reads cannot grow our memory. */
#define OUT_HIGH_WATER (1024 * 1024)
#define IOV_BATCH 1024

typedef enum conn_proto {
    CONN_UNKNOWN = 0,
    CONN_BINARY,
    CONN_TEXT
} conn_proto_e;

struct conn {
    ev_io              io;        /* first: the callback casts back */
    struct worker     *w;         /* ro */
    int                fd;        /* ro */
    conn_proto_e       proto;     /* set by the first byte */
    char              *in;        /* leftover bytes of a partial request */
    size_t             in_start;
    size_t             in_end;
    size_t             in_cap;
    uint64_t           swallow;   /* body bytes still to skip */
    struct reply       out;
    struct store_wait  wait;      /* for writes that complete later */
    unsigned           pending;   /* writes not yet durable; loop-owned */
    unsigned           completed; /* under w->lock */
    bool               in_done;   /* under w->lock: on w->done */
    struct conn       *done_next; /* under w->lock */
    bool               close_after_write;
    bool               closed;    /* fd closed, waiting for pending */
    int                events;    /* what io watches now */
    struct conn       *prev;
    struct conn       *next;
};

static void conn_cb(struct ev_loop *loop, ev_io *io, int revents);

static void
conn_wait_done(struct store_wait *wt)
{
    struct conn *c = (struct conn *)((char *)wt - offsetof(struct conn,
                                                           wait));
    struct worker *w = c->w;

    pthread_mutex_lock(&w->lock);
    c->completed++;
    if (!c->in_done) {
        c->in_done = true;
        c->done_next = w->done;
        w->done = c;
    }
    pthread_mutex_unlock(&w->lock);
    ev_async_send(w->loop, &w->wake);
}

static void
conn_new(struct worker *w, int fd)
{
    struct conn *c = calloc(1, sizeof(*c));

    if (c == NULL) {
        close(fd);
        atomic_fetch_sub(&w->srv->curr_conns, 1);
        return;
    }
    c->w = w;
    c->fd = fd;
    c->wait.done = conn_wait_done;
    reply_init(&c->out, w->srv->ops, w->thr);
    c->events = EV_READ;
    ev_io_init(&c->io, conn_cb, fd, EV_READ);
    ev_io_start(w->loop, &c->io);
    c->next = w->conns;
    if (w->conns != NULL) {
        w->conns->prev = c;
    }
    w->conns = c;
    if (w->srv->cfg->verbose > 1) {
        fprintf(stderr, "<%d new client connection\n", fd);
    }
}

static void
conn_free(struct conn *c)
{
    struct worker *w = c->w;

    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        w->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    free(c->in);
    free(c);
}

/* Closes the socket now; the struct lives on until no write is pending. */
static void
conn_close(struct conn *c)
{
    struct worker *w = c->w;

    if (c->closed) {
        return;
    }
    c->closed = true;
    ev_io_stop(w->loop, &c->io);
    close(c->fd);
    reply_deinit(&c->out);
    atomic_fetch_sub(&w->srv->curr_conns, 1);
    if (w->srv->cfg->verbose > 1) {
        fprintf(stderr, "<%d connection closed.\n", c->fd);
    }
    if (c->pending == 0) {
        conn_free(c);
    }
}

static void
conn_watch(struct conn *c, int events)
{
    if (c->events == events) {
        return;
    }
    ev_io_stop(c->w->loop, &c->io);
    c->events = events;
    if (events != 0) {
        ev_io_set(&c->io, c->fd, events);
        ev_io_start(c->w->loop, &c->io);
    }
}

/* Runs the request at buf[0, len) if complete; returns bytes consumed, 0
 * when more are needed (*need = total size wanted, if known). */
static size_t
conn_exec_binary(struct conn *c, const char *buf, size_t len, size_t *need,
                 handler_act_e *act)
{
    struct worker *w = c->w;
    struct proto_bin_req rq;
    size_t used = 0;
    proto_rc_e rc = proto_bin_decode((const uint8_t *)buf, len,
                                     w->srv->set.item_size_max, &rq, &used);

    switch (rc) {
    case PROTO_NEED_MORE:
        *need = used;
        return 0;
    case PROTO_OK:
        if (w->srv->cfg->verbose > 1) {
            fprintf(stderr, "<%d Read binary protocol data: opcode 0x%02x\n",
                    c->fd, rq.opcode);
        }
        *act = handler_bin(&w->cx, &rq);
        return used;
    case PROTO_EUNKNOWN:
    case PROTO_E2BIG:
        *act = handler_bin_refused(&w->cx, rc, &rq);
        c->swallow = rq.bodylen;
        return PROTO_BIN_HDR;
    default:
        *act = handler_bin_refused(&w->cx, rc, &rq);
        return len;
    }
}

/*
 * Runs every complete request in buf[0, len) and returns how many bytes
 * were consumed; stops early at back-pressure or when the connection is to
 * be closed. *need is the size the next request needs, when known.
 */
static size_t
conn_process(struct conn *c, const char *buf, size_t len, size_t *need)
{
    struct worker *w = c->w;
    size_t pos = 0;

    *need = 0;
    w->cx.out = &c->out;
    w->cx.now = (uint32_t)ev_now(w->loop);
    w->cx.wait = &c->wait;
    while (pos < len && !c->close_after_write && !c->closed) {
        handler_act_e act = HANDLER_CONTINUE;
        size_t used;

        if (c->swallow > 0) {
            size_t n = len - pos < c->swallow ? len - pos : c->swallow;

            c->swallow -= n;
            pos += n;
            continue;
        }
        if (reply_queued(&c->out) > OUT_HIGH_WATER) {
            break;
        }
        if (c->proto == CONN_UNKNOWN) {
            c->proto = (uint8_t)buf[pos] == PROTO_BIN_REQ ? CONN_BINARY
                                                          : CONN_TEXT;
        }
        w->cx.pending = 0;
        if (c->proto == CONN_BINARY) {
            used = conn_exec_binary(c, buf + pos, len - pos, need, &act);
        } else {
            /* The text protocol arrives with its own issue; until then a
             * text client gets memcached's answer to a command it does not
             * know, once, and the connection is closed. */
            reply_str(&c->out, "ERROR\r\n");
            used = len - pos;
            act = HANDLER_CLOSE_AFTER_WRITE;
        }
        c->pending += w->cx.pending;
        if (used == 0) {
            break;
        }
        pos += used;
        if (act == HANDLER_CLOSE_AFTER_WRITE) {
            c->close_after_write = true;
        } else if (act == HANDLER_CLOSE) {
            conn_close(c);
        }
    }
    if (c->out.oom) {
        conn_close(c);
    }
    return pos;
}

/* Sends what can be sent; returns false if the connection was closed. */
static bool
conn_flush(struct conn *c)
{
    struct worker *w = c->w;
    struct iovec iov[IOV_BATCH];

    while (reply_queued(&c->out) > 0 && c->pending == 0) {
        int n = reply_iov(&c->out, iov, IOV_BATCH);
        ssize_t wr = writev(c->fd, iov, n);

        if (wr < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return true;
            }
            conn_close(c);
            return false;
        }
        HSTAT_ADD(&w->stats, bytes_written, (uint64_t)wr);
        reply_sent(&c->out, (size_t)wr);
    }
    if (reply_queued(&c->out) == 0 && c->pending == 0 &&
        c->close_after_write) {
        conn_close(c);
        return false;
    }
    return true;
}

/* Keeps leftover bytes of a partial request in the connection's buffer. */
static bool
conn_keep(struct conn *c, const char *p, size_t n, size_t need)
{
    size_t want = need > n ? need : n;

    if (want < CONN_BUF_MIN) {
        want = CONN_BUF_MIN;
    }
    if (c->in == NULL || c->in_cap < want) {
        char *b = malloc(want);

        if (b == NULL) {
            return false;
        }
        memcpy(b, p, n);
        free(c->in);
        c->in = b;
        c->in_cap = want;
    } else if (p != c->in) {
        memmove(c->in, p, n);
    }
    c->in_start = 0;
    c->in_end = n;
    return true;
}

/* Processes what is buffered, then sends; false if the conn is gone. */
static bool
conn_run(struct conn *c, char *buf, size_t len)
{
    size_t need = 0;
    size_t used = conn_process(c, buf, len, &need);

    if (c->closed) {
        return false;
    }
    if (used < len && !c->close_after_write) {
        if (!conn_keep(c, buf + used, len - used, need)) {
            conn_close(c);
            return false;
        }
    } else if (buf == c->in) {
        /* Nothing left over: an idle connection holds no read buffer. */
        free(c->in);
        c->in = NULL;
        c->in_cap = c->in_start = c->in_end = 0;
    }
    return conn_flush(c);
}

static void
conn_update(struct conn *c)
{
    int ev = 0;

    if (c->closed) {
        return;
    }
    if (!c->close_after_write && reply_queued(&c->out) <= OUT_HIGH_WATER &&
        (c->in == NULL || c->in_end < c->in_cap)) {
        ev |= EV_READ;
    }
    if (reply_queued(&c->out) > 0 && c->pending == 0) {
        ev |= EV_WRITE;
    }
    conn_watch(c, ev);
}

static void
conn_read(struct conn *c)
{
    struct worker *w = c->w;
    char *buf;
    size_t have;
    size_t room;
    ssize_t n;

    if (c->in != NULL && c->in_end > c->in_start) {
        /* A partial request: read straight behind it, so a large value
         * is copied once, not once per read. */
        buf = c->in;
        have = c->in_end;
        room = c->in_cap - c->in_end;
        if (room == 0) {
            /* Full of complete requests held back by back-pressure. */
            return;
        }
    } else {
        buf = w->rscratch;
        have = 0;
        room = SCRATCH_SIZE;
    }
    n = read(c->fd, buf + have, room);
    if (n == 0) {
        conn_close(c);
        return;
    }
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            conn_close(c);
        }
        return;
    }
    HSTAT_ADD(&w->stats, bytes_read, (uint64_t)n);
    if (buf == c->in) {
        c->in_end += (size_t)n;
        if (!conn_run(c, c->in + c->in_start, c->in_end - c->in_start)) {
            return;
        }
    } else if (!conn_run(c, buf, (size_t)n)) {
        return;
    }
}

static void
conn_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct conn *c = (struct conn *)io;

    (void)loop;
    if (revents & EV_WRITE) {
        if (!conn_flush(c)) {
            return;
        }
        if (reply_queued(&c->out) <= OUT_HIGH_WATER && c->in != NULL &&
            c->in_end > c->in_start) {
            /* Requests held back by back-pressure can run now. */
            if (!conn_run(c, c->in + c->in_start, c->in_end - c->in_start)) {
                return;
            }
        }
    }
    if (revents & EV_READ) {
        conn_read(c);
        if (c->closed) {
            return;
        }
    }
    conn_update(c);
}

static void
worker_wake(struct ev_loop *loop, ev_async *a, int revents)
{
    struct worker *w = (struct worker *)((char *)a -
                                         offsetof(struct worker, wake));
    int fds[64];
    size_t nfd;
    struct conn *done;
    bool stopping;

    (void)revents;
    do {
        pthread_mutex_lock(&w->lock);
        nfd = w->nnew < 64 ? w->nnew : 64;
        memcpy(fds, w->newfds + (w->nnew - nfd), nfd * sizeof(int));
        w->nnew -= nfd;
        done = w->done;
        w->done = NULL;
        for (struct conn *c = done; c != NULL; c = c->done_next) {
            c->pending -= c->completed;
            c->completed = 0;
            c->in_done = false;
        }
        stopping = w->stopping;
        pthread_mutex_unlock(&w->lock);
        for (size_t i = 0; i < nfd; i++) {
            if (stopping) {
                close(fds[i]);
                atomic_fetch_sub(&w->srv->curr_conns, 1);
            } else {
                conn_new(w, fds[i]);
            }
        }
    } while (nfd == 64);
    for (struct conn *c = done, *next; c != NULL; c = next) {
        next = c->done_next;
        if (c->closed) {
            if (c->pending == 0) {
                conn_free(c);
            }
        } else if (c->pending == 0 && conn_flush(c)) {
            conn_update(c);
        }
    }
    if (stopping) {
        /* Requests already read have been answered; send what is queued
         * if the socket takes it, then go. */
        for (struct conn *c = w->conns, *next; c != NULL; c = next) {
            next = c->next;
            if (!c->closed) {
                (void)conn_flush(c);
                conn_close(c);
            }
        }
        if (w->conns == NULL) {
            ev_break(loop, EVBREAK_ALL);
        }
    }
}

static void
worker_sum(void *arg, struct hstats *out)
{
    struct server *s = arg;

    for (unsigned i = 0; i < s->nworkers; i++) {
        const struct hstats *st = &s->workers[i].stats;

#define ADD_ONE(name) \
        out->name += atomic_load_explicit(&st->name, memory_order_relaxed);
        HANDLER_STATS(ADD_ONE)
#undef ADD_ONE
    }
}

static void
worker_reset(void *arg)
{
    struct server *s = arg;

    /* Another thread's counters are reset from here; a racing increment
     * may survive, which memcached's own stats reset tolerates too. */
    for (unsigned i = 0; i < s->nworkers; i++) {
        struct hstats *st = &s->workers[i].stats;

#define ZERO_ONE(name) \
        atomic_store_explicit(&st->name, 0, memory_order_relaxed);
        HANDLER_STATS(ZERO_ONE)
#undef ZERO_ONE
    }
}

static void
worker_conn_stats(void *arg, struct hconn_stats *out)
{
    struct server *s = arg;

    out->curr_connections = atomic_load(&s->curr_conns);
    out->total_connections = atomic_load(&s->total_conns);
    out->rejected_connections = atomic_load(&s->rejected_conns);
    out->connection_structures = out->curr_connections + 1;
    out->accepting = atomic_load(&s->accepting);
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;

    ev_run(w->loop, 0);
    for (struct conn *c = w->conns, *next; c != NULL; c = next) {
        next = c->next;
        conn_close(c);
    }
    return NULL;
}

int
worker_start(struct worker *w)
{
    struct server *s = w->srv;

    s->hs.arg = s;
    s->hs.sum_stats = worker_sum;
    s->hs.reset_stats = worker_reset;
    s->hs.conn_stats = worker_conn_stats;
    s->hs.conns = NULL;
    w->loop = ev_loop_new(EVFLAG_AUTO);
    w->rscratch = malloc(SCRATCH_SIZE);
    if (w->loop == NULL || w->rscratch == NULL ||
        pthread_mutex_init(&w->lock, NULL) != 0) {
        return -1;
    }
    if (s->ops->attach(s->store, &w->thr) != STORE_OK) {
        return -1;
    }
    w->cx.ops = s->ops;
    w->cx.thr = w->thr;
    w->cx.st = &w->stats;
    w->cx.set = &s->set;
    w->cx.srv = &s->hs;
    ev_async_init(&w->wake, worker_wake);
    ev_async_start(w->loop, &w->wake);
    return pthread_create(&w->tid, NULL, worker_main, w) == 0 ? 0 : -1;
}

void
worker_give(struct worker *w, int fd)
{
    pthread_mutex_lock(&w->lock);
    if (w->nnew == w->capnew) {
        size_t cap = w->capnew ? w->capnew * 2 : 64;
        int *n = realloc(w->newfds, cap * sizeof(int));

        if (n == NULL) {
            pthread_mutex_unlock(&w->lock);
            close(fd);
            atomic_fetch_sub(&w->srv->curr_conns, 1);
            return;
        }
        w->newfds = n;
        w->capnew = cap;
    }
    w->newfds[w->nnew++] = fd;
    pthread_mutex_unlock(&w->lock);
    ev_async_send(w->loop, &w->wake);
}

void
worker_stop(struct worker *w)
{
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_mutex_unlock(&w->lock);
    ev_async_send(w->loop, &w->wake);
}
