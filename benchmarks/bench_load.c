/*
 * The load itself: each thread owns its connections and one epoll set and
 * runs them closed-loop. A connection writes a batch of `depth` requests
 * with one send, reads replies with one recv per readiness event, parses
 * them where they lie and, when the batch is answered (or, with --window,
 * after every read), writes the next batch. Latency is per request: from
 * the clock read just before its batch was sent to the clock read just
 * after the recv that completed its reply. This module owns every socket
 * and buffer of a run; it must never allocate per request.
 */
#include "benchmarks/bench.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_EVENTS   64
#define RBUF_MIN     (64 * 1024)
#define BUF_MAX      (1024 * 1024)

typedef enum phase {
    PHASE_WARMUP = 0,
    PHASE_MEASURE,
    PHASE_STOP
} phase_e;

typedef enum mode {
    MODE_PREFILL = 0,  /* SET every key of the thread's slice once */
    MODE_VERIFY,       /* GET every key of the thread's slice once */
    MODE_LOAD          /* the workload, until PHASE_STOP */
} mode_e;

struct pending {
    uint64_t sent_ns;
    uint8_t  op;
};

struct conn {
    int             fd;
    uint32_t        head;       /* ring index of the oldest pending reply */
    uint32_t        inflight;
    struct pending *ring;       /* ring_cap entries (a power of two) */
    uint8_t        *wbuf;
    size_t          wcap, wlen, woff;
    uint8_t        *rbuf;
    size_t          rcap, rlen;
    bool            out_armed;  /* EPOLLOUT registered: a write is stuck */
    uint64_t        progress_ns;/* last reply, or when replies became due */
};

struct run;

struct thread {
    pthread_t          pt;
    uint32_t           id;
    struct run        *run;
    int                ep;
    struct conn       *conns;
    uint32_t           nconns;
    uint32_t           ring_mask;
    uint64_t           rng;
    uint64_t           seq_next;  /* prefill/verify cursor */
    uint64_t           seq_end;
    uint32_t           busy;      /* connections with replies pending */
    struct bench_stats st;        /* measured phase */
    uint64_t           pre_ops;   /* prefill replies */
    uint64_t           pre_errs;  /* prefill sets refused */
    uint64_t           ver_ops;   /* verify replies */
    uint64_t           ver_hits;
    char               first_err[64]; /* the first error reply, printable */
    char               err[256];
} __attribute__((aligned(64)));

struct run {
    const struct bench_cfg *cfg;
    const struct bench_gen *gen;
    _Atomic int             phase;
    _Atomic int             failed;
    pthread_barrier_t       barrier;
    struct thread          *threads;
};

static void
thread_fail(struct thread *t, const char *fmt, ...)
{
    va_list ap;

    if (t->err[0] == '\0') {
        va_start(ap, fmt);
        vsnprintf(t->err, sizeof(t->err), fmt, ap);
        va_end(ap);
    }
    atomic_store(&t->run->failed, 1);
}

int
bench_connect(const struct bench_cfg *cfg, bool quiet)
{
    struct addrinfo hints, *res = NULL, *ai;
    int fd = -1, one = 1, rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(cfg->host, cfg->port, &hints, &res);
    if (rc != 0) {
        if (!quiet) {
            fprintf(stderr, "stashd-bench: %s:%s: %s\n", cfg->host,
                    cfg->port, gai_strerror(rc));
        }
        return -1;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            break;
        }
        close(fd);
        fd = -1;
    }
    if (fd < 0 && !quiet) {
        fprintf(stderr, "stashd-bench: connect %s:%s: %s\n", cfg->host,
                cfg->port, strerror(errno));
    }
    freeaddrinfo(res);
    if (fd >= 0) {
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return fd;
}

static int
fcntl_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static uint32_t
pow2_at_least(uint32_t v)
{
    uint32_t p = 1;

    while (p < v) {
        p <<= 1;
    }
    return p;
}

static int
conn_open(struct thread *t, struct conn *c)
{
    const struct bench_cfg *cfg = t->run->cfg;
    const struct bench_gen *g = t->run->gen;
    uint32_t most = cfg->depth > cfg->prefill_depth ? cfg->depth
                                                    : cfg->prefill_depth;
    struct epoll_event ev;
    size_t want;

    memset(c, 0, sizeof(*c));
    c->fd = bench_connect(cfg, false);
    if (c->fd < 0) {
        thread_fail(t, "cannot connect");
        return -1;
    }
    if (fcntl_nonblock(c->fd) != 0) {
        thread_fail(t, "O_NONBLOCK: %s", strerror(errno));
        return -1;
    }
    c->ring = calloc(t->ring_mask + 1, sizeof(*c->ring));
    c->wcap = (size_t)most * g->max_req;
    want = (size_t)cfg->depth * g->max_resp;
    c->rcap = want < BUF_MAX ? want : BUF_MAX;
    if (c->rcap < RBUF_MIN) {
        c->rcap = RBUF_MIN;
    }
    if (c->rcap < 2 * g->max_resp) {
        c->rcap = 2 * g->max_resp;
    }
    c->wbuf = malloc(c->wcap);
    c->rbuf = malloc(c->rcap);
    if (c->ring == NULL || c->wbuf == NULL || c->rbuf == NULL) {
        thread_fail(t, "out of memory for connection buffers");
        return -1;
    }
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.ptr = c;
    if (epoll_ctl(t->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        thread_fail(t, "epoll_ctl: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static void
conn_close(struct conn *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    free(c->ring);
    c->ring = NULL;
    free(c->wbuf);
    c->wbuf = NULL;
    free(c->rbuf);
    c->rbuf = NULL;
}

static int
conn_arm(struct thread *t, struct conn *c, bool out)
{
    struct epoll_event ev;

    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN | (out ? EPOLLOUT : 0);
    ev.data.ptr = c;
    if (epoll_ctl(t->ep, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        thread_fail(t, "epoll_ctl: %s", strerror(errno));
        return -1;
    }
    c->out_armed = out;
    return 0;
}

/* Sends what is left of the batch; arms EPOLLOUT if the socket is full. */
static int
conn_flush(struct thread *t, struct conn *c)
{
    while (c->woff < c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff,
                         MSG_NOSIGNAL);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return c->out_armed ? 0 : conn_arm(t, c, true);
            }
            thread_fail(t, "send: %s", strerror(errno));
            return -1;
        }
        c->woff += (size_t)n;
    }
    if (c->out_armed) {
        return conn_arm(t, c, false);
    }
    return 0;
}

/* Encodes requests up to the mode's depth into one batch and sends it. */
static int
conn_fill(struct thread *t, struct conn *c, mode_e mode)
{
    const struct bench_cfg *cfg = t->run->cfg;
    const struct bench_gen *g = t->run->gen;
    uint32_t limit = mode == MODE_LOAD ? cfg->depth : cfg->prefill_depth;
    uint32_t before = c->inflight;
    uint64_t now;

    if (c->woff < c->wlen) {
        return 0;
    }
    c->wlen = 0;
    c->woff = 0;
    now = bench_now_ns();
    while (c->inflight < limit) {
        uint64_t key;
        bench_op_e op;
        uint32_t vlen = 0;
        struct pending *pd;

        if (mode == MODE_LOAD) {
            op = (bench_rng_next(&t->rng) >> 32) < g->set_below ? BENCH_SET
                                                               : BENCH_GET;
            key = bench_gen_key(g, &t->rng);
        } else {
            if (t->seq_next >= t->seq_end) {
                break;
            }
            op = mode == MODE_PREFILL ? BENCH_SET : BENCH_GET;
            key = t->seq_next++;
        }
        if (op == BENCH_SET) {
            vlen = bench_gen_vlen(g, &t->rng);
        }
        c->wlen += bench_gen_encode(g, op, key, vlen, c->wbuf + c->wlen);
        pd = &c->ring[(c->head + c->inflight) & t->ring_mask];
        pd->sent_ns = now;
        pd->op = (uint8_t)op;
        c->inflight++;
    }
    if (before == 0 && c->inflight > 0) {
        t->busy++;
        c->progress_ns = now;
    }
    return conn_flush(t, c);
}

static int
conn_grow(struct thread *t, struct conn *c, size_t need)
{
    uint8_t *nb;
    size_t cap = c->rcap;

    while (cap < need) {
        cap *= 2;
    }
    nb = realloc(c->rbuf, cap);
    if (nb == NULL) {
        thread_fail(t, "out of memory for a %zu-byte reply", need);
        return -1;
    }
    c->rbuf = nb;
    c->rcap = cap;
    return 0;
}

/* Keeps the first error reply for the failure message. */
static void
note_error(struct thread *t, const uint8_t *p, size_t n)
{
    size_t i, k = 0;

    for (i = 0; i < n && k + 1 < sizeof(t->first_err); i++) {
        t->first_err[k++] = p[i] >= ' ' && p[i] < 127 ? (char)p[i] : '.';
    }
    t->first_err[k] = '\0';
}

/* One recv, then every complete reply in the buffer, then a refill. */
static int
conn_read(struct thread *t, struct conn *c, mode_e mode)
{
    const struct run *r = t->run;
    const struct bench_gen *g = r->gen;
    bool measuring, refill;
    uint32_t before = c->inflight;
    size_t off = 0;
    uint64_t now;
    ssize_t n;

    n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            return 0;
        }
        thread_fail(t, "recv: %s", strerror(errno));
        return -1;
    }
    if (n == 0) {
        thread_fail(t, "the server closed a connection (%u replies "
                    "pending%s%s%s)", c->inflight,
                    t->first_err[0] ? "; it had answered \"" : "",
                    t->first_err, t->first_err[0] ? "\"" : "");
        return -1;
    }
    now = bench_now_ns();
    c->rlen += (size_t)n;
    measuring = mode == MODE_LOAD &&
                atomic_load_explicit(&r->phase, memory_order_relaxed) ==
                    PHASE_MEASURE;
    while (c->inflight > 0) {
        struct pending *pd = &c->ring[c->head];
        size_t used = 0;
        int result = 0;
        bench_parse_e rc = bench_parse_reply(g, (bench_op_e)pd->op,
                                             c->rbuf + off, c->rlen - off,
                                             &used, &result);

        if (rc == BENCH_PARSE_MORE) {
            if (used > c->rcap && conn_grow(t, c, used) != 0) {
                return -1;
            }
            break;
        }
        if (rc == BENCH_PARSE_BAD) {
            thread_fail(t, "a reply does not parse as a %s reply "
                        "(first byte 0x%02x)", pd->op == BENCH_GET ? "get"
                        : "set", c->rbuf[off]);
            return -1;
        }
        if (result < 0 && t->first_err[0] == '\0') {
            note_error(t, c->rbuf + off, used);
        }
        off += used;
        c->head = (c->head + 1) & t->ring_mask;
        c->inflight--;
        if (measuring) {
            struct bench_stats *s = &t->st;

            s->ops++;
            if (pd->op == BENCH_GET) {
                s->gets++;
                s->hits += result == 1;
            } else {
                s->sets++;
            }
            s->errors += result < 0;
            bench_hist_record(&s->hist, now - pd->sent_ns);
        } else if (mode == MODE_PREFILL) {
            t->pre_ops++;
            t->pre_errs += result < 0;
        } else if (mode == MODE_VERIFY) {
            t->ver_ops++;
            t->ver_hits += result == 1;
        }
    }
    if (off > 0) {
        c->progress_ns = now;
    }
    if (off < c->rlen) {
        if (c->inflight == 0) {
            thread_fail(t, "%zu bytes arrived that nothing asked for",
                        c->rlen - off);
            return -1;
        }
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
    }
    c->rlen -= off;
    if (before > 0 && c->inflight == 0) {
        t->busy--;
    }
    if (mode == MODE_LOAD &&
        atomic_load_explicit(&r->phase, memory_order_relaxed) == PHASE_STOP) {
        return 0;
    }
    refill = r->cfg->window ? c->inflight < r->cfg->depth : c->inflight == 0;
    return refill ? conn_fill(t, c, mode) : 0;
}

static bool
loop_done(const struct thread *t, mode_e mode)
{
    if (atomic_load_explicit(&t->run->failed, memory_order_relaxed)) {
        return true;
    }
    if (mode == MODE_LOAD) {
        return atomic_load_explicit(&t->run->phase, memory_order_relaxed) ==
               PHASE_STOP;
    }
    return t->busy == 0 && t->seq_next >= t->seq_end;
}

/*
 * A server that read requests and never answers would hang the run (and
 * compare.sh): fail once a connection has waited stall_s for any reply.
 */
static int
check_stalls(struct thread *t, uint64_t now)
{
    uint64_t limit = (uint64_t)(t->run->cfg->stall_s * 1e9);
    uint32_t i;

    for (i = 0; i < t->nconns; i++) {
        const struct conn *c = &t->conns[i];

        if (c->inflight > 0 && now - c->progress_ns > limit) {
            thread_fail(t, "the server stalled: a connection has waited "
                        "%.1f s for any of its %u pending replies (%zu "
                        "reply bytes buffered, %zu of %zu request bytes "
                        "sent)", (now - c->progress_ns) / 1e9, c->inflight,
                        c->rlen, c->woff, c->wlen);
            return -1;
        }
    }
    return 0;
}

static int
thread_loop(struct thread *t, mode_e mode)
{
    struct epoll_event ev[MAX_EVENTS];
    uint64_t next_check = bench_now_ns() + 1000000000ull;
    uint32_t i;

    for (i = 0; i < t->nconns; i++) {
        if (conn_fill(t, &t->conns[i], mode) != 0) {
            return -1;
        }
    }
    while (!loop_done(t, mode)) {
        int n = epoll_wait(t->ep, ev, MAX_EVENTS, 50);
        int k;

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            thread_fail(t, "epoll_wait: %s", strerror(errno));
            return -1;
        }
        for (k = 0; k < n; k++) {
            struct conn *c = ev[k].data.ptr;

            if ((ev[k].events & EPOLLOUT) && conn_flush(t, c) != 0) {
                return -1;
            }
            if ((ev[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) &&
                conn_read(t, c, mode) != 0) {
                return -1;
            }
        }
        if (n < MAX_EVENTS) {
            uint64_t now = bench_now_ns();

            if (now > next_check) {
                next_check = now + 1000000000ull;
                if (check_stalls(t, now) != 0) {
                    return -1;
                }
            }
        }
    }
    return 0;
}

/* Key slice [lo, hi) of thread id for prefill and verify. */
static void
thread_slice(struct thread *t)
{
    const struct bench_cfg *cfg = t->run->cfg;

    t->seq_next = cfg->keys * t->id / cfg->threads;
    t->seq_end = cfg->keys * (t->id + 1) / cfg->threads;
}

/* Pins thread t to one CPU, spreading the threads over them in turn. */
static void
thread_pin(struct thread *t)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    int rc;

    if (ncpu < 1) {
        return;
    }
    CPU_ZERO(&set);
    CPU_SET((int)(t->id % (uint32_t)ncpu), &set);
    rc = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    if (rc != 0) {
        thread_fail(t, "cannot pin to CPU %ld: %s", (long)(t->id % ncpu),
                    strerror(rc));
    }
}

static void *
thread_main(void *arg)
{
    struct thread *t = arg;
    struct run *r = t->run;
    const struct bench_cfg *cfg = r->cfg;
    uint32_t i;

    if (cfg->pin) {
        thread_pin(t);
    }

    t->ep = epoll_create1(EPOLL_CLOEXEC);
    if (t->ep < 0) {
        thread_fail(t, "epoll_create1: %s", strerror(errno));
    }
    for (i = 0; i < t->nconns && !atomic_load(&r->failed); i++) {
        if (conn_open(t, &t->conns[i]) != 0) {
            break;
        }
    }
    pthread_barrier_wait(&r->barrier);                  /* connected */
    if (cfg->prefill && !atomic_load(&r->failed)) {
        thread_slice(t);
        thread_loop(t, MODE_PREFILL);
    }
    pthread_barrier_wait(&r->barrier);                  /* prefilled */
    if (cfg->verify && !atomic_load(&r->failed)) {
        thread_slice(t);
        thread_loop(t, MODE_VERIFY);
    }
    pthread_barrier_wait(&r->barrier);                  /* verified */
    if (cfg->duration_s > 0 && !atomic_load(&r->failed)) {
        thread_loop(t, MODE_LOAD);
    }
    for (i = 0; i < t->nconns; i++) {
        conn_close(&t->conns[i]);
    }
    if (t->ep >= 0) {
        close(t->ep);
    }
    return NULL;
}

static double
cpu_self_s(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* utime + stime of pid from /proc, in seconds; < 0 if unreadable. */
static double
cpu_pid_s(long pid)
{
    char path[64], buf[1024], *p;
    unsigned long long ut, st;
    long hz = sysconf(_SC_CLK_TCK);
    FILE *f;
    size_t n;

    if (pid <= 0) {
        return -1.0;
    }
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    f = fopen(path, "r");
    if (f == NULL) {
        return -1.0;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')');          /* comm may hold spaces */
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
               &ut, &st) != 2) {
        return -1.0;
    }
    return (double)(ut + st) / (double)hz;
}

/* Sleeps up to s seconds, waking early if a thread failed. */
static void
nap(struct run *r, double s)
{
    uint64_t end = bench_now_ns() + (uint64_t)(s * 1e9);

    while (!atomic_load(&r->failed) && bench_now_ns() < end) {
        usleep(5000);
    }
}

int
bench_run(const struct bench_cfg *cfg, const struct bench_gen *g,
          struct bench_report *out)
{
    struct run r;
    uint32_t i, ring = pow2_at_least(cfg->depth > cfg->prefill_depth
                                     ? cfg->depth : cfg->prefill_depth);
    uint64_t t0, t1;
    double c0, c1, s0, s1;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    memset(&r, 0, sizeof(r));
    r.cfg = cfg;
    r.gen = g;
    atomic_store(&r.phase, PHASE_WARMUP);
    r.threads = aligned_alloc(64, sizeof(*r.threads) * cfg->threads);
    if (r.threads == NULL) {
        return -1;
    }
    memset(r.threads, 0, sizeof(*r.threads) * cfg->threads);
    pthread_barrier_init(&r.barrier, NULL, cfg->threads + 1);
    for (i = 0; i < cfg->threads; i++) {
        struct thread *t = &r.threads[i];

        t->id = i;
        t->run = &r;
        t->ep = -1;
        t->ring_mask = ring - 1;
        t->nconns = cfg->conns / cfg->threads +
                    (i < cfg->conns % cfg->threads ? 1 : 0);
        t->conns = calloc(t->nconns ? t->nconns : 1, sizeof(*t->conns));
        t->rng = (cfg->seed + 1) * 0x9E3779B97F4A7C15ULL + i * 7919 + 1;
        if (t->conns == NULL ||
            pthread_create(&t->pt, NULL, thread_main, t) != 0) {
            fprintf(stderr, "stashd-bench: cannot start thread %u\n", i);
            exit(1);
        }
    }
    pthread_barrier_wait(&r.barrier);
    t0 = bench_now_ns();
    pthread_barrier_wait(&r.barrier);
    t1 = bench_now_ns();
    out->prefill_s = (t1 - t0) / 1e9;
    pthread_barrier_wait(&r.barrier);
    out->verify_s = (bench_now_ns() - t1) / 1e9;
    for (i = 0; i < cfg->threads; i++) {
        out->prefill_sets += r.threads[i].pre_ops;
        out->prefill_errors += r.threads[i].pre_errs;
        out->verify_gets += r.threads[i].ver_ops;
        out->verify_hits += r.threads[i].ver_hits;
    }
    if (cfg->duration_s > 0) {
        nap(&r, cfg->warmup_s);
        c0 = cpu_self_s();
        s0 = cpu_pid_s(cfg->server_pid);
        t0 = bench_now_ns();
        atomic_store(&r.phase, PHASE_MEASURE);
        nap(&r, cfg->duration_s);
        atomic_store(&r.phase, PHASE_STOP);
        t1 = bench_now_ns();
        c1 = cpu_self_s();
        s1 = cpu_pid_s(cfg->server_pid);
        out->measured_s = (t1 - t0) / 1e9;
        out->client_cpu_s = c1 - c0;
        out->server_cpu_s = s0 >= 0 && s1 >= 0 ? s1 - s0 : -1.0;
    }
    for (i = 0; i < cfg->threads; i++) {
        struct thread *t = &r.threads[i];
        struct bench_stats *m = &out->measured;

        pthread_join(t->pt, NULL);
        if (t->err[0] != '\0') {
            fprintf(stderr, "stashd-bench: thread %u: %s\n", i, t->err);
            rc = -1;
        }
        m->ops += t->st.ops;
        m->gets += t->st.gets;
        m->hits += t->st.hits;
        m->sets += t->st.sets;
        m->errors += t->st.errors;
        bench_hist_merge(&m->hist, &t->st.hist);
        if (cfg->per_thread) {
            printf("  thread %u: %llu ops, p50 %.1f us, p99 %.1f us\n", i,
                    (unsigned long long)t->st.ops,
                    bench_hist_percentile(&t->st.hist, 50) / 1e3,
                    bench_hist_percentile(&t->st.hist, 99) / 1e3);
        }
        free(t->conns);
    }
    pthread_barrier_destroy(&r.barrier);
    free(r.threads);
    return rc;
}
