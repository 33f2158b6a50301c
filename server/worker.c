/*
 * Worker threads and their connections. Each worker owns a libev loop and
 * every connection handed to it; nothing on the request path takes a lock
 * shared with another thread. A read event does one read(), runs the
 * complete requests in it through the handler (up to a turn's worth, the
 * rest after the other connections' turns), and sends all the replies
 * with one writev (pipelining without a syscall per reply). No connection
 * holds more than a bounded amount of memory: past the high-water mark
 * nothing more of its requests runs, a multi-get included, until its
 * client reads.
 */
#include "server/internal.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "handler/text.h"
#include "protocol/binary.h"
#include "protocol/text.h"

#define SCRATCH_SIZE (64 * 1024)
#define CONN_BUF_MIN (16 * 1024)
/* Room for a request's header or command line beyond its value. */
#define CONN_BUF_SLACK (64 * 1024)
/* Past this many unsent bytes a connection is not read from, nor a
 * multi-get run further, until its client reads: a client that never reads
 * cannot grow our memory. */
#define OUT_HIGH_WATER (1024 * 1024)
#define IOV_BATCH 1024
/*
 * Requests one connection runs in a turn of its worker's loop, each key of
 * a multi-get counting as one. A connection with more goes on before the
 * next poll, after every other ready connection has had its turn: a long
 * get line or a deep pipeline then delays the thread's other clients by a
 * turn, not by all it holds (a 1 MB line of misses is 100,000 lookups).
 * memcached yields likewise, after 20 requests per event.
 */
#define CONN_TURN 256

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
    struct proto_text_stream stream; /* a get line run a piece at a time */
    struct reply       out;
    struct store_wait  wait;      /* for writes that complete later */
    unsigned           pending;   /* writes not yet durable; loop-owned */
    unsigned           completed; /* under w->lock */
    unsigned           fail_at;   /* under w->lock: the first of the
                                   * completed that failed, or UINT_MAX */
    struct conn_fix   *fix;       /* loop-owned: pending writes' replies */
    size_t             nfix;
    size_t             fixcap;
    bool               in_done;   /* under w->lock: on w->done */
    struct conn       *done_next; /* under w->lock */
    struct conn       *ready_next; /* loop-owned: completions to act on */
    bool               held;      /* complete requests wait in `in` for
                                   * the reply queue to drain, or for the
                                   * next turn */
    bool               yielded;   /* loop-owned: on w->turns */
    struct conn       *turn_next; /* loop-owned */
    bool               close_after_write;
    bool               closed;    /* fd closed, waiting for pending */
    bool               kicked;    /* loop-owned: on w->pass.kick */
    struct conn       *kick_next; /* loop-owned */
    int                events;    /* what io watches now */
    _Atomic uint32_t   last_cmd;  /* unix time of the last request */
    char               addr[80];  /* ro: "tcp:ip:port" for stats conns */
    struct conn       *prev;      /* under w->lock */
    struct conn       *next;      /* under w->lock */
};

/*
 * What to answer instead, should a request's pending writes fail: where
 * its reply starts in the queue, how many of the connection's pending
 * writes are its, and the failure reply, made when it went pending.
 */
struct conn_fix {
    uint64_t at;
    unsigned writes;
    uint8_t  len;
    char     reply[HANDLER_FAIL_MAX];
};

static void conn_cb(struct ev_loop *loop, ev_io *io, int revents);
static void conn_resume(struct conn *c);
static void conn_update(struct conn *c);

static void
conn_wait_done(struct store_wait *wt, store_rc_e rc)
{
    struct conn *c = (struct conn *)((char *)wt - offsetof(struct conn,
                                                           wait));
    struct worker *w = c->w;

    pthread_mutex_lock(&w->lock);
    if (rc != STORE_OK && c->fail_at == UINT_MAX) {
        c->fail_at = c->completed;
    }
    c->completed++;
    if (!c->in_done) {
        c->in_done = true;
        c->done_next = w->done;
        w->done = c;
    }
    pthread_mutex_unlock(&w->lock);
    ev_async_send(w->loop, &w->wake);
}

/* Names the peer as memcached's "stats conns" does. */
static void
conn_name(struct conn *c)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char ip[INET6_ADDRSTRLEN] = "?";

    if (getpeername(c->fd, (struct sockaddr *)&ss, &len) != 0) {
        snprintf(c->addr, sizeof(c->addr), "unknown");
    } else if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;

        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        snprintf(c->addr, sizeof(c->addr), "tcp:%s:%u", ip,
                 (unsigned)ntohs(a->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
        snprintf(c->addr, sizeof(c->addr), "tcp6:[%s]:%u", ip,
                 (unsigned)ntohs(a->sin6_port));
    } else {
        snprintf(c->addr, sizeof(c->addr), "unix:%s",
                 c->w->srv->cfg->unix_path ? c->w->srv->cfg->unix_path : "");
    }
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
    c->fail_at = UINT_MAX;
    reply_init(&c->out, w->srv->ops, w->thr, w->vscratch);
    c->events = EV_READ;
    ev_io_init(&c->io, conn_cb, fd, EV_READ);
    ev_io_start(w->loop, &c->io);
    conn_name(c);
    atomic_store_explicit(&c->last_cmd, (uint32_t)ev_now(w->loop),
                          memory_order_relaxed);
    /* The list is read by "stats conns" from other threads. */
    pthread_mutex_lock(&w->lock);
    c->next = w->conns;
    if (w->conns != NULL) {
        w->conns->prev = c;
    }
    w->conns = c;
    pthread_mutex_unlock(&w->lock);
    if (w->srv->cfg->verbose > 1) {
        fprintf(stderr, "<%d new client connection\n", fd);
    }
}

static void
conn_free(struct conn *c)
{
    struct worker *w = c->w;

    pthread_mutex_lock(&w->lock);
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        w->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    pthread_mutex_unlock(&w->lock);
    free(c->fix);
    free(c->in);
    free(c);
}

/*
 * A request at reply position at left writes pending: keeps its failure
 * reply, made now while the request is at hand. Without memory for it the
 * connection closes once the writes complete (never a false success).
 */
static void
conn_fix_push(struct conn *c, uint64_t at, unsigned writes,
              const char *reply, size_t len)
{
    struct conn_fix *f;

    if (c->nfix == c->fixcap) {
        size_t cap = c->fixcap != 0 ? c->fixcap * 2 : 8;

        f = realloc(c->fix, cap * sizeof(*f));
        if (f == NULL) {
            len = 0;
            if (c->nfix == 0) {
                c->close_after_write = true;
                return;
            }
            f = &c->fix[c->nfix - 1];
            f->writes += writes;   /* folded into the one before */
            return;
        }
        c->fix = f;
        c->fixcap = cap;
    }
    f = &c->fix[c->nfix++];
    f->at = at;
    f->writes = writes;
    f->len = (uint8_t)len;
    memcpy(f->reply, reply, len);
}

/*
 * n of the connection's pending writes completed, the first failed one
 * being fail_at (UINT_MAX: none). A failed write's request is answered
 * with its failure reply in place of its own; what follows it is dropped
 * and the connection closes after that reply, since later requests may
 * have read or built on the write that did not last.
 */
static void
conn_fix_done(struct conn *c, unsigned n, unsigned fail_at)
{
    unsigned k = 0;
    size_t i = 0;

    while (i < c->nfix && k + c->fix[i].writes <= n) {
        if (fail_at != UINT_MAX && k + c->fix[i].writes > fail_at) {
            break;
        }
        k += c->fix[i].writes;
        i++;
    }
    if (fail_at != UINT_MAX && i < c->nfix && !c->closed) {
        reply_truncate(&c->out, c->fix[i].at);
        reply_append(&c->out, c->fix[i].reply, c->fix[i].len);
        c->close_after_write = true;
        c->nfix = 0;
        return;
    }
    if (i < c->nfix) {
        c->fix[i].writes -= n - k;       /* some of its writes are done */
    }
    memmove(c->fix, c->fix + i, (c->nfix - i) * sizeof(*c->fix));
    c->nfix -= i;
}

/*
 * Closes the socket now. The struct is freed by the event callbacks once
 * they are done with it and no write is pending (conn_reap), so a close
 * deep inside a read never leaves a caller holding freed memory.
 */
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
}

/* Frees a closed connection once no write is pending and it is on no list
 * of the loop's; true if freed. */
static bool
conn_reap(struct conn *c)
{
    if (c->closed && c->pending == 0 && !c->yielded) {
        conn_free(c);
        return true;
    }
    return false;
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
    case PROTO_OK: {
        uint64_t at = reply_total(&c->out);

        if (w->srv->cfg->verbose > 1) {
            fprintf(stderr, "<%d Read binary protocol data: opcode 0x%02x\n",
                    c->fd, rq.opcode);
        }
        *act = handler_bin(&w->cx, &rq);
        if (w->cx.pending > 0) {
            char fail[HANDLER_FAIL_MAX];

            conn_fix_push(c, at, w->cx.pending, fail,
                          handler_bin_failure(&rq, fail));
        }
        return used;
    }
    case PROTO_E2BIG:
        /* The refusal needs the key (a failed set drops the old value),
         * so wait for it; the value itself is skipped unread. */
        if (len < PROTO_BIN_HDR + (size_t)rq.extlen + rq.keylen) {
            *need = PROTO_BIN_HDR + (size_t)rq.extlen + rq.keylen;
            return 0;
        }
        rq.key = (const uint8_t *)buf + PROTO_BIN_HDR + rq.extlen;
        /* fall through */
    case PROTO_EUNKNOWN:
        *act = handler_bin_refused(&w->cx, rc, &rq);
        c->swallow = rq.bodylen;
        if (rc == PROTO_EUNKNOWN && (rq.opcode < PROTO_BIN_SASL_LIST ||
                                     rq.opcode > PROTO_BIN_SASL_STEP)) {
            /* memcached has read an unknown command's extras and key
             * before it skips bodylen bytes; skipping as much keeps a
             * client's stream in step with what memcached would run. */
            c->swallow += (uint64_t)rq.extlen + rq.keylen;
        }
        return PROTO_BIN_HDR;
    default:
        *act = handler_bin_refused(&w->cx, rc, &rq);
        return len;
    }
}

/* No request is bigger than an item plus its line or header. */
static size_t
conn_buf_max(const struct worker *w)
{
    return (size_t)w->srv->set.item_size_max + CONN_BUF_SLACK;
}

static size_t
conn_exec_text(struct conn *c, const char *buf, size_t len, size_t *need,
               handler_act_e *act)
{
    struct worker *w = c->w;
    struct proto_text_req rq;
    size_t used = 0;
    proto_rc_e rc;

    if (c->stream.cmd != PROTO_TEXT_NONE) {
        rc = proto_text_decode_more(&c->stream, buf, len, w->cx.keys_max,
                                    &rq, &used);
    } else {
        rc = proto_text_decode(buf, len, w->srv->set.item_size_max, &rq,
                               &used);
        /* memcached reads a get line whatever its length; one longer than
         * a buffer may grow to has its keys run as they arrive. */
        if (rc == PROTO_NEED_MORE && len >= conn_buf_max(w) &&
            proto_text_stream_start(&c->stream, buf, len, &used)) {
            return used;
        }
    }
    switch (rc) {
    case PROTO_NEED_MORE:
        *need = used;
        return 0;
    case PROTO_OK: {
        uint64_t at = reply_total(&c->out);

        if (rq.cmd == PROTO_TEXT_NONE) {
            return used;    /* the rest of a line that runs no more */
        }
        if (w->srv->cfg->verbose > 1) {
            fprintf(stderr, "<%d %.*s\n", c->fd, (int)(rq.line_len > 200 ?
                    200 : rq.line_len), rq.line);
        }
        *act = handler_text(&w->cx, &rq);
        if (w->cx.pending > 0) {
            char fail[HANDLER_FAIL_MAX];

            conn_fix_push(c, at, w->cx.pending, fail,
                          handler_text_failure(&rq, fail));
        }
        if (*act == HANDLER_SUSPEND) {
            /* Stopped at back-pressure: the keys not run yet stay in the
             * buffer and go on as the rest of the line once it drains. */
            memset(&c->stream, 0, sizeof(c->stream));
            c->stream.cmd = rq.cmd;
            c->stream.exptime = rq.exptime;
            *act = HANDLER_CONTINUE;
            return (size_t)(w->cx.resume - buf);
        }
        return used;
    }
    case PROTO_EMAGIC:
        *act = handler_text_refused(&w->cx, rc, &rq);
        return len;
    case PROTO_E2BIG:
        *act = handler_text_refused(&w->cx, rc, &rq);
        c->swallow = rq.swallow;
        return used;
    default:
        *act = handler_text_refused(&w->cx, rc, &rq);
        return used > 0 ? used : len;
    }
}

/* FNV-1a, for the pass's bloom of taken keys. */
static uint64_t
key_bit(const void *key, size_t len)
{
    const unsigned char *p = key;
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < len; i++) {
        h = (h ^ p[i]) * 16777619u;
    }
    return (uint64_t)1 << (h % 64);
}

/*
 * Runs the pass's sets as one group, then fills each one's hole with its
 * reply and lists its connection for a send. The handler's follow-ups
 * (a failed set drops the key) run inside, with take and settle off.
 */
static void
pass_run(struct worker *w)
{
    struct pass *p = &w->pass;
    struct hctx saved = w->cx;

    if (p->n == 0 || p->running) {
        return;
    }
    p->running = true;
    for (size_t i = 0; i < p->n; i++) {
        struct pass_set *ps = &p->set[i];
        struct store_set *ss = &p->ss[i];

        memset(ss, 0, sizeof(*ss));
        ss->call.now = ps->now;
        ss->call.wait = &ps->c->wait;
        ss->k.data = ps->hs.key;
        ss->k.len = ps->hs.keylen;
        ss->in.data = ps->hs.val;
        ss->in.len = (uint32_t)ps->hs.vlen;
        ss->in.flags = ps->hs.flags;
        ss->in.exptime = ps->hs.exptime;
    }
    w->srv->ops->set_many(w->thr, p->ss, p->n);
    for (size_t i = 0; i < p->n; i++) {
        struct pass_set *ps = &p->set[i];
        struct conn *c = ps->c;
        char bytes[HANDLER_SET_REPLY_MAX];
        struct iovec iov[4];
        size_t len = 0;
        unsigned writes;
        uint64_t at;
        int niov;

        w->cx.out = &p->out;
        w->cx.wait = &c->wait;
        w->cx.now = ps->now;
        w->cx.pending = 0;
        handler_set_done(&w->cx, &ps->hs, p->ss[i].rc, p->ss[i].cas);
        niov = reply_iov(&p->out, iov, 4);
        for (int j = 0; j < niov; j++) {
            size_t n = iov[j].iov_len;

            if (len + n > sizeof(bytes)) {
                n = sizeof(bytes) - len;
            }
            memcpy(bytes + len, iov[j].iov_base, n);
            len += n;
        }
        reply_sent(&p->out, reply_queued(&p->out));
        writes = (p->ss[i].call.pending ? 1u : 0u) + w->cx.pending;
        if (!c->closed && reply_fill(&c->out, &ps->hole, bytes, len, &at) &&
            writes > 0) {
            char fail[HANDLER_FAIL_MAX];

            conn_fix_push(c, at, writes, fail,
                          handler_set_failure(&ps->hs, fail));
        }
        c->pending += writes;
        c->pending--;          /* the hole's */
        if (!c->kicked) {
            c->kicked = true;
            c->kick_next = p->kick;
            p->kick = c;
        }
    }
    p->n = 0;
    p->used = 0;
    p->bloom = 0;
    p->running = false;
    w->cx.out = saved.out;
    w->cx.wait = saved.wait;
    w->cx.now = saved.now;
    w->cx.pending = saved.pending;
}

static void
pass_settle(struct hdefer *d, const void *key, size_t keylen)
{
    struct pass *p = (struct pass *)d;

    if (p->n == 0 || p->running) {
        return;
    }
    if (key != NULL) {
        size_t i = 0;

        if ((p->bloom & key_bit(key, keylen)) == 0) {
            return;
        }
        while (i < p->n && (p->set[i].hs.keylen != keylen ||
                            memcmp(p->set[i].hs.key, key, keylen) != 0)) {
            i++;
        }
        if (i == p->n) {
            return;
        }
    }
    pass_run(p->w);
}

static bool
pass_take(struct hdefer *d, struct hctx *cx, const struct hset *hs)
{
    struct pass *p = (struct pass *)d;
    struct worker *w = p->w;
    struct conn *c = w->cur;
    struct pass_set *ps;
    size_t need = hs->keylen + hs->vlen;

    if (p->running || c == NULL || cx->out != &c->out ||
        need > PASS_ARENA / 4) {
        return false;
    }
    if (p->n == PASS_MAX || p->used + need > PASS_ARENA) {
        pass_run(w);
    }
    ps = &p->set[p->n];
    if (!reply_hole(&c->out, HANDLER_SET_REPLY_MAX, &ps->hole)) {
        return false;
    }
    ps->c = c;
    ps->hs = *hs;
    ps->now = cx->now;
    memcpy(p->arena + p->used, hs->key, hs->keylen);
    ps->hs.key = p->arena + p->used;
    if (hs->vlen > 0) {     /* an empty value may have no pointer */
        memcpy(p->arena + p->used + hs->keylen, hs->val, hs->vlen);
    }
    ps->hs.val = p->arena + p->used + hs->keylen;
    p->used += need;
    p->bloom |= key_bit(hs->key, hs->keylen);
    p->n++;
    c->pending++;              /* nothing goes out past the hole */
    return true;
}

/* Sends for the connections whose holes were filled. */
static void
pass_kick(struct worker *w)
{
    while (w->pass.kick != NULL) {
        struct conn *c = w->pass.kick;

        w->pass.kick = c->kick_next;
        c->kicked = false;
        if (!c->closed && c->pending == 0) {
            conn_resume(c);
        }
        if (!conn_reap(c) && !c->closed) {
            conn_update(c);
        }
    }
}

/*
 * Before the poll: runs what the pass took and sends the replies; running
 * held requests may take more, so a few rounds, then the poll is told not
 * to sleep if any is left.
 */
static void
pass_finish(struct worker *w)
{
    for (int round = 0; round < 4 && (w->pass.n > 0 ||
                                      w->pass.kick != NULL); round++) {
        pass_run(w);
        pass_kick(w);
    }
    if (w->pass.n > 0 || w->pass.kick != NULL) {
        ev_idle_start(w->loop, &w->awake);
    } else if (w->turns == NULL) {
        ev_idle_stop(w->loop, &w->awake);
    }
}

/* The connection used its turn with requests left: it goes on before the
 * worker polls again (worker_before_poll), and the poll must not sleep. */
static void
conn_yield(struct conn *c)
{
    struct worker *w = c->w;

    c->held = true;
    if (!c->yielded) {
        c->yielded = true;
        c->turn_next = w->turns;
        w->turns = c;
        ev_idle_start(w->loop, &w->awake);
        HSTAT_INC(&w->stats, conn_yields);
    }
}

/*
 * Runs every complete request in buf[0, len) and returns how many bytes
 * were consumed; stops early at back-pressure, at the end of the turn, or
 * when the connection is to be closed. *need is the size the next request
 * needs, when known.
 */
static size_t
conn_process(struct conn *c, const char *buf, size_t len, size_t *need)
{
    struct worker *w = c->w;
    size_t pos = 0;
    size_t turn = CONN_TURN;

    *need = 0;
    w->cur = c;
    w->cx.out = &c->out;
    w->cx.now = (uint32_t)ev_now(w->loop);
    w->cx.wait = &c->wait;
    atomic_store_explicit(&c->last_cmd, w->cx.now, memory_order_relaxed);
    while (pos < len && !c->close_after_write && !c->closed) {
        handler_act_e act = HANDLER_CONTINUE;
        size_t used;

        if (c->swallow > 0) {
            size_t n = len - pos < c->swallow ? len - pos : c->swallow;

            c->swallow -= n;
            pos += n;
            continue;
        }
        if (reply_backlog(&c->out) > OUT_HIGH_WATER) {
            c->held = true;
            break;
        }
        if (turn == 0) {
            conn_yield(c);
            break;
        }
        if (c->proto == CONN_UNKNOWN) {
            c->proto = (uint8_t)buf[pos] == PROTO_BIN_REQ ? CONN_BINARY
                                                          : CONN_TEXT;
        }
        w->cx.pending = 0;
        w->cx.keys_max = turn;
        w->cx.keys_run = 0;
        if (c->proto == CONN_BINARY) {
            used = conn_exec_binary(c, buf + pos, len - pos, need, &act);
        } else {
            used = conn_exec_text(c, buf + pos, len - pos, need, &act);
        }
        c->pending += w->cx.pending;
        if (used == 0) {
            break;
        }
        pos += used;
        turn -= w->cx.keys_run > 1 ? w->cx.keys_run : 1;
        if (act == HANDLER_CLOSE_AFTER_WRITE) {
            c->close_after_write = true;
        } else if (act == HANDLER_CLOSE) {
            conn_close(c);
        } else if (act == HANDLER_SHUTDOWN) {
            c->close_after_write = true;
            server_request_stop(w->srv);
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
    size_t limit = conn_buf_max(c->w);

    if (want < CONN_BUF_MIN) {
        want = CONN_BUF_MIN;
    }
    if (c->in != NULL && want > c->in_cap && want < 2 * c->in_cap) {
        /* Requests of unknown size grow a byte at a time: double. */
        want = 2 * c->in_cap;
    }
    if (want > limit) {
        want = need > limit ? need : limit;
        if (want > limit) {
            return false;
        }
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

/* Processes what is buffered, keeping what is left; false if closed. */
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
    return true;
}

/*
 * Sends what is queued and, while the queue stays below the high-water
 * mark, runs the requests back-pressure held back: their bytes are already
 * read, so no read event would ever bring them up again. Requests held for
 * the next turn wait for it (worker_before_poll).
 */
static void
conn_resume(struct conn *c)
{
    while (conn_flush(c) && c->held && !c->yielded &&
           reply_backlog(&c->out) <= OUT_HIGH_WATER) {
        c->held = false;
        if (c->in == NULL || c->in_end == c->in_start ||
            !conn_run(c, c->in + c->in_start, c->in_end - c->in_start)) {
            return;
        }
    }
}

static void
conn_update(struct conn *c)
{
    int ev = 0;

    if (c->closed) {
        return;
    }
    if (!c->close_after_write && !c->yielded &&
        reply_backlog(&c->out) <= OUT_HIGH_WATER &&
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
        buf = c->in + c->in_start;
        n = (ssize_t)(c->in_end - c->in_start);
    }
    if (conn_run(c, buf, (size_t)n)) {
        conn_resume(c);
    }
}

static void
conn_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct conn *c = (struct conn *)io;

    (void)loop;
    if (revents & EV_WRITE) {
        conn_resume(c);
    }
    if ((revents & EV_READ) && !c->closed) {
        c->w->busy = true;
        conn_read(c);
    }
    if (!conn_reap(c) && !c->closed) {
        conn_update(c);
    }
}

/* Forgets the connections waiting for a turn: the worker is stopping. */
static void
worker_drop_turns(struct worker *w)
{
    for (struct conn *c = w->turns; c != NULL; c = c->turn_next) {
        c->yielded = false;
    }
    w->turns = NULL;
    ev_idle_stop(w->loop, &w->awake);
}

/* Gives each connection that used up its turn the next one. */
static void
worker_run_turns(struct worker *w)
{
    struct conn *turns = w->turns;

    w->turns = NULL;
    for (struct conn *c = turns, *next; c != NULL; c = next) {
        next = c->turn_next;
        c->yielded = false;
        w->busy = true;
        if (!c->closed) {
            conn_resume(c);
        }
        if (!conn_reap(c) && !c->closed) {
            conn_update(c);
        }
    }
    if (w->turns == NULL) {
        ev_idle_stop(w->loop, &w->awake);
    }
}

/* Active while connections wait for a turn: keeps the poll from sleeping,
 * so that worker_before_poll comes round again at once. */
static void
worker_awake(struct ev_loop *loop, ev_idle *i, int revents)
{
    (void)loop;
    (void)i;
    (void)revents;
}

static void
worker_wake(struct ev_loop *loop, ev_async *a, int revents)
{
    struct worker *w = (struct worker *)((char *)a -
                                         offsetof(struct worker, wake));
    int fds[64];
    size_t nfd;
    struct conn *ready = NULL;
    bool stopping;

    (void)revents;
    do {
        pthread_mutex_lock(&w->lock);
        nfd = w->nnew < 64 ? w->nnew : 64;
        if (nfd > 0) {
            memcpy(fds, w->newfds + (w->nnew - nfd), nfd * sizeof(int));
        }
        w->nnew -= nfd;
        /*
         * Moved to a list of our own under the lock: once it is released
         * a completion may push a conn onto w->done again, rewriting its
         * done_next while we would still be walking it.
         */
        for (struct conn *c = w->done; c != NULL; c = c->done_next) {
            c->pending -= c->completed;
            conn_fix_done(c, c->completed, c->fail_at);
            c->completed = 0;
            c->fail_at = UINT_MAX;
            c->in_done = false;
            c->ready_next = ready;
            ready = c;
        }
        w->done = NULL;
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
    for (struct conn *c = ready, *next; c != NULL; c = next) {
        next = c->ready_next;
        if (!c->closed && c->pending == 0) {
            conn_resume(c);
        }
        if (!conn_reap(c) && !c->closed) {
            conn_update(c);
        }
    }
    if (stopping) {
        /* Requests already read have been answered (but for turns not
         * taken yet); send what is queued if the socket takes it, then
         * go. */
        pass_run(w);
        pass_kick(w);
        worker_drop_turns(w);
        for (struct conn *c = w->conns, *next; c != NULL; c = next) {
            next = c->next;
            if (!c->closed) {
                (void)conn_flush(c);
                conn_close(c);
            }
            (void)conn_reap(c);
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

    atomic_store(&s->total_conns, 0);
    atomic_store(&s->rejected_conns, 0);
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
    out->reserved_fds = s->reserved_fds;
    out->listen_disabled_num = atomic_load(&s->listen_disabled_num);
    out->time_in_listen_disabled_us = atomic_load(&s->listen_disabled_us);
    out->accepting = atomic_load(&s->accepting);
}

static void
worker_conns(void *arg, void (*emit)(void *, const char *, const char *),
             void *emit_arg)
{
    struct server *s = arg;
    uint32_t now = (uint32_t)time(NULL);
    char name[64];
    char val[128];

    /* memcached lists its listener first, then every client. */
    snprintf(name, sizeof(name), "%d:addr", s->lfd);
    if (s->cfg->unix_path != NULL) {
        snprintf(val, sizeof(val), "unix:%s", s->cfg->unix_path);
    } else {
        snprintf(val, sizeof(val), "tcp:%s:%u", s->cfg->listen,
                 (unsigned)s->cfg->port);
    }
    emit(emit_arg, name, val);
    snprintf(name, sizeof(name), "%d:state", s->lfd);
    emit(emit_arg, name, "conn_listening");
    snprintf(name, sizeof(name), "%d:secs_since_last_cmd", s->lfd);
    emit(emit_arg, name, "0");
    for (unsigned i = 0; i < s->nworkers; i++) {
        struct worker *w = &s->workers[i];

        pthread_mutex_lock(&w->lock);
        for (struct conn *c = w->conns; c != NULL; c = c->next) {
            uint32_t last = atomic_load_explicit(&c->last_cmd,
                                                 memory_order_relaxed);

            if (c->closed) {
                continue;
            }
            snprintf(name, sizeof(name), "%d:addr", c->fd);
            emit(emit_arg, name, c->addr);
            snprintf(name, sizeof(name), "%d:listen_addr", c->fd);
            snprintf(val, sizeof(val), "%s:%s:%u",
                     s->cfg->unix_path ? "unix" : "tcp",
                     s->cfg->unix_path ? s->cfg->unix_path : s->cfg->listen,
                     s->cfg->unix_path ? 0 : (unsigned)s->cfg->port);
            emit(emit_arg, name, val);
            snprintf(name, sizeof(name), "%d:state", c->fd);
            emit(emit_arg, name, "conn_parse_cmd");
            snprintf(name, sizeof(name), "%d:secs_since_last_cmd", c->fd);
            snprintf(val, sizeof(val), "%u", now > last ? now - last : 0);
            emit(emit_arg, name, val);
        }
        pthread_mutex_unlock(&w->lock);
    }
}

/*
 * A worker that has served requests for YIELD_AFTER without its poll ever
 * sleeping gives its core away once, before it polls again.
 * When clients share the cores with the workers (a co-located proxy or
 * app, a benchmark client), a worker that always finds more requests
 * ready never blocks, so the scheduler only switches it out at the end of
 * a time slice, and every reply the client has not read yet waits that
 * long: measured on 2 cores, p99 jumped from 0.5 ms to 3-5 ms in about
 * half the runs. Yielding after every busy pass fixed that but cost
 * throughput: the kernel (EEVDF) pushes a yielder's deadline back, so the
 * client each writev wakes then preempted the worker at once, about 0.2
 * involuntary switches per request instead of 0.05. Yielding only after
 * a quarter of a millisecond awake keeps the tail bound (p99 0.45-0.65 ms)
 * and gives back 5-6 % of ops/s (benchmarks/README.md has the figures).
 */
#define YIELD_AFTER 250e-6      /* seconds awake before a yield */
#define POLL_SLEPT  20e-6       /* a poll this long gave the core away */

/* Before every poll: the turns of connections that had more to run, then
 * the store lets go of what it kept for the pass (ops->idle), then the
 * yield rule above. */
static void
worker_before_poll(struct ev_loop *loop, ev_prepare *p, int revents)
{
    struct worker *w = (struct worker *)((char *)p -
                                         offsetof(struct worker, prepare));
    ev_tstamp now;

    (void)loop;
    (void)revents;
    if (w->turns != NULL) {
        worker_run_turns(w);
    }
    if (w->cx.defer != NULL) {
        pass_finish(w);
    }
    now = ev_time();
    if (w->cx.ops->idle != NULL) {
        w->cx.ops->idle(w->thr);
    }
    if (w->busy && now - w->awake_since >= YIELD_AFTER) {
        sched_yield();
        now = ev_time();
        w->awake_since = now;
    }
    w->busy = false;
    w->polled_at = now;
}

/* Runs after every poll; ev_now is fresh there. */
static void
worker_woke(struct ev_loop *loop, ev_check *c, int revents)
{
    struct worker *w = (struct worker *)((char *)c -
                                         offsetof(struct worker, woke));

    (void)revents;
    if (ev_now(loop) - w->polled_at >= POLL_SLEPT) {
        w->awake_since = ev_now(loop);
    }
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;

    ev_run(w->loop, 0);
    pass_run(w);
    pass_kick(w);
    worker_drop_turns(w);
    for (struct conn *c = w->conns, *next; c != NULL; c = next) {
        next = c->next;
        conn_close(c);
        /* A write still pending at exit: the store is closed next, and
         * nobody will call back. */
        c->pending = 0;
        (void)conn_reap(c);
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
    s->hs.conns = worker_conns;
    w->loop = ev_loop_new(EVFLAG_AUTO);
    w->rscratch = malloc(SCRATCH_SIZE);
    w->vscratch = malloc(REPLY_COPY_MAX);
    if (w->loop == NULL || w->rscratch == NULL || w->vscratch == NULL ||
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
    w->cx.out_max = OUT_HIGH_WATER;
    if (s->ops->set_many != NULL) {
        /* A backend that commits: its sets go in groups (struct pass). */
        w->pass.arena = malloc(PASS_ARENA);
        if (w->pass.arena == NULL) {
            return -1;
        }
        w->pass.w = w;
        w->pass.d.take = pass_take;
        w->pass.d.settle = pass_settle;
        reply_init(&w->pass.out, s->ops, w->thr, NULL);
        w->cx.defer = &w->pass.d;
    }
    ev_async_init(&w->wake, worker_wake);
    ev_async_start(w->loop, &w->wake);
    ev_prepare_init(&w->prepare, worker_before_poll);
    ev_prepare_start(w->loop, &w->prepare);
    ev_unref(w->loop);   /* these two alone must not keep the loop alive */
    ev_check_init(&w->woke, worker_woke);
    ev_check_start(w->loop, &w->woke);
    ev_unref(w->loop);
    ev_idle_init(&w->awake, worker_awake);
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
