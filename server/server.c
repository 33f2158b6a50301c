/*
 * The main thread: opens the store, listens, accepts and deals connections
 * to workers round robin, and on SIGTERM/SIGINT stops accepting, lets the
 * workers finish what they have read, and closes the store. It never runs a
 * request itself.
 */
#include "server/internal.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char too_many[] = "ERROR Too many open connections\r\n";

/*
 * Descriptors kept free beyond those open once the server runs: files a
 * backend opens later (sqlite opens a thread's WAL on its first read) and
 * the one a client over the limit is accepted on, to be told why.
 */
#define FD_SLACK 16
/* Before the store is open: what it and the loops may hold, at most. */
#define FD_GUESS(threads) (64 + 4 * (rlim_t)(threads))
/* Out of descriptors, accept() fails at once and the listener stays
 * readable: instead of spinning on it, stop accepting this long. */
#define ACCEPT_PAUSE 0.05
/*
 * Freed memory goes back to the system this often (malloc_trim). glibc
 * returns only the top of its heaps by itself, so the buffers of a burst
 * of big replies or of clients that never read stayed in RSS after they
 * were freed. Mapping each big buffer on its own (a fixed M_MMAP_THRESHOLD)
 * would return it at once, but costs a mapping, its page faults and an
 * unmapping per big value: 30x fewer 200 KB gets per second on lmdb here.
 */
#define TRIM_EVERY 1.0

/*
 * memcached's rule: refuse to start when the hard descriptor limit is below
 * -c and cannot be raised (that takes CAP_SYS_RESOURCE); 0 or -1.
 */
static int
fd_limit_check(const struct server_cfg *cfg)
{
    struct rlimit rl;
    struct rlimit want;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_max == RLIM_INFINITY ||
        rl.rlim_max >= cfg->maxconns) {
        return 0;
    }
    want.rlim_cur = cfg->maxconns + FD_GUESS(cfg->threads);
    want.rlim_max = want.rlim_cur;
    if (setrlimit(RLIMIT_NOFILE, &want) == 0) {
        return 0;
    }
    fprintf(stderr, "stashd: -c %u needs more file descriptors than the "
            "hard limit of %llu (ulimit -Hn) allows: raise it, or lower "
            "-c\n", (unsigned)cfg->maxconns, (unsigned long long)rl.rlim_max);
    return -1;
}

/* Descriptors open in this process, or -1 when /proc cannot say. */
static int
fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;

    if (d == NULL) {
        return -1;
    }
    while (readdir(d) != NULL) {
        n++;
    }
    closedir(d);
    return n - 3;   /* ".", ".." and the directory's own descriptor */
}

/*
 * Once the store, the listener and the loops are open: raises the soft
 * descriptor limit to fit -c clients beside them, as far as the hard limit
 * lets it, and sets how many clients fit. When the hard limit is short
 * that is fewer than -c, and the rest are refused with memcached's error
 * line: memcached counts its own descriptors within -c the same way.
 */
static void
fd_fit(struct server *s)
{
    struct rlimit rl;
    int open_now = fd_count();
    rlim_t need;

    s->reserved_fds = (uint32_t)(open_now >= 0 ? (rlim_t)open_now
                                 : FD_GUESS(s->nworkers)) + FD_SLACK;
    s->conn_limit = s->cfg->maxconns;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) {
        return;
    }
    need = (rlim_t)s->cfg->maxconns + s->reserved_fds;
    if (rl.rlim_cur >= need) {
        return;
    }
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
        struct rlimit both = { need, need };

        if (setrlimit(RLIMIT_NOFILE, &both) == 0) {
            return;
        }
        rl.rlim_cur = rl.rlim_max;
    } else {
        rl.rlim_cur = need;
    }
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 && getrlimit(RLIMIT_NOFILE,
                                                        &rl) != 0) {
        return;
    }
    if (rl.rlim_cur < need) {
        s->conn_limit = rl.rlim_cur > s->reserved_fds
                        ? (uint32_t)(rl.rlim_cur - s->reserved_fds) : 0;
        fprintf(stderr, "stashd: %llu file descriptors (ulimit -n) leave "
                "room for %u connections, not -c %u\n",
                (unsigned long long)rl.rlim_cur, (unsigned)s->conn_limit,
                (unsigned)s->cfg->maxconns);
    }
}

static int
listen_tcp(const struct server_cfg *cfg)
{
    struct addrinfo hints;
    struct addrinfo *res = NULL;
    char port[16];
    int fd = -1;
    int rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    snprintf(port, sizeof(port), "%u", (unsigned)cfg->port);
    rc = getaddrinfo(cfg->listen, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "stashd: cannot resolve listen address %s: %s\n",
                cfg->listen, gai_strerror(rc));
        return -1;
    }
    for (struct addrinfo *a = res; a != NULL; a = a->ai_next) {
        int one = 1;

        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK |
                    SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 &&
            listen(fd, 1024) == 0) {
            break;
        }
        close(fd);
        fd = -1;
    }
    if (fd < 0) {
        fprintf(stderr, "stashd: cannot listen on %s:%u: %s\n", cfg->listen,
                (unsigned)cfg->port, strerror(errno));
    }
    freeaddrinfo(res);
    return fd;
}

static int
listen_unix(const char *path)
{
    struct sockaddr_un a;
    int fd;

    if (strlen(path) >= sizeof(a.sun_path)) {
        fprintf(stderr, "stashd: unix socket path too long: %s\n", path);
        return -1;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    memset(&a, 0, sizeof(a));
    a.sun_family = AF_UNIX;
    strcpy(a.sun_path, path);
    unlink(path);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(fd, 1024) != 0) {
        fprintf(stderr, "stashd: cannot listen on %s: %s\n", path,
                strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* Out of descriptors or memory: accepting would fail again at once. */
static void
accept_pause(struct server *s, int err)
{
    if (s->cfg->verbose > 0) {
        fprintf(stderr, "stashd: accept: %s; not accepting for %.0f ms\n",
                strerror(err), ACCEPT_PAUSE * 1e3);
    }
    ev_io_stop(s->loop, &s->accept_io);
    atomic_store(&s->accepting, false);
    atomic_fetch_add(&s->listen_disabled_num, 1);
    s->paused_at = ev_now(s->loop);
    ev_timer_set(&s->accept_retry, ACCEPT_PAUSE, 0.);
    ev_timer_start(s->loop, &s->accept_retry);
}

static void
on_accept_retry(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct server *s = t->data;

    (void)revents;
    atomic_fetch_add(&s->listen_disabled_us,
                     (uint64_t)((ev_now(loop) - s->paused_at) * 1e6));
    atomic_store(&s->accepting, true);
    ev_io_start(loop, &s->accept_io);
}

static void
on_trim(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
    malloc_trim(0);
}

static void
on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    struct server *s = (struct server *)((char *)io -
                                         offsetof(struct server, accept_io));

    (void)loop;
    (void)revents;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        int one = 1;

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                errno == ENOMEM) {
                accept_pause(s, errno);
            }
            return;
        }
        if (atomic_load(&s->curr_conns) >= s->conn_limit) {
            /* memcached's answer, then the door: the client learns why. */
            ssize_t w = write(fd, too_many, sizeof(too_many) - 1);

            (void)w;
            close(fd);
            atomic_fetch_add(&s->rejected_conns, 1);
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        atomic_fetch_add(&s->curr_conns, 1);
        atomic_fetch_add(&s->total_conns, 1);
        worker_give(&s->workers[s->next], fd);
        s->next = (s->next + 1) % s->nworkers;
    }
}

/* Stops accepting and ends the main loop; why is for -v. */
static void
stop_serving(struct server *s, const char *why)
{
    if (s->cfg->verbose > 0) {
        fprintf(stderr, "stashd: %s, shutting down\n", why);
    }
    ev_io_stop(s->loop, &s->accept_io);
    ev_timer_stop(s->loop, &s->accept_retry);
    atomic_store(&s->accepting, false);
    ev_break(s->loop, EVBREAK_ALL);
}

static void
on_signal(struct ev_loop *loop, ev_signal *sig, int revents)
{
    char why[32];

    (void)loop;
    (void)revents;
    snprintf(why, sizeof(why), "signal %d", sig->signum);
    stop_serving(sig->data, why);
}

static void
on_stop_request(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)revents;
    stop_serving(a->data, "shutdown command");
}

void
server_request_stop(struct server *s)
{
    ev_async_send(s->loop, &s->stop_req);
}

static int
write_pidfile(const char *path)
{
    FILE *f = fopen(path, "w");

    if (f == NULL) {
        fprintf(stderr, "stashd: cannot write pid file %s: %s\n", path,
                strerror(errno));
        return -1;
    }
    fprintf(f, "%ld\n", (long)getpid());
    return fclose(f) == 0 ? 0 : -1;
}

int
server_run(const struct server_cfg *cfg)
{
    struct server s;
    store_rc_e rc;
    unsigned started = 0;
    int status = 0;

    memset(&s, 0, sizeof(s));
    s.cfg = cfg;
    s.ops = cfg->ops;
    s.lfd = -1;
    s.set.backend = cfg->ops->name;
    s.set.maxbytes = cfg->store.mem_limit;
    s.set.maxconns = cfg->maxconns;
    s.set.tcpport = cfg->unix_path != NULL ? 0 : cfg->port;
    s.set.inter = cfg->listen;
    s.set.domain_socket = cfg->unix_path;
    s.set.growth_factor = cfg->store.factor;
    s.set.chunk_size = cfg->store.chunk_min;
    s.set.num_threads = cfg->threads;
    s.set.item_size_max = cfg->store.item_max;
    s.set.evictions = !cfg->store.no_evict;
    s.set.shutdown = cfg->shutdown;
    s.set.started = (uint32_t)time(NULL) - 2;
    s.set.pid = (long)getpid();
    atomic_store(&s.set.verbosity, cfg->verbose);
    pthread_mutex_init(&s.set.reset_lock, NULL);
    /* A client gone mid-write is an error return, not a death. SIGHUP and
     * SIGUSR1 are sent by log rotation and by habits from other daemons;
     * their default action would end the process without closing the
     * store, and stashd has no log file to reopen (it logs to stderr). */
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGUSR1, SIG_IGN);

    if (fd_limit_check(cfg) != 0) {
        return 1;
    }
    s.lfd = cfg->unix_path != NULL ? listen_unix(cfg->unix_path)
                                   : listen_tcp(cfg);
    if (s.lfd < 0) {
        return 1;
    }
    {
        struct store_cfg scfg = cfg->store;
        char err[512] = "";

        scfg.err = err;
        scfg.errlen = sizeof(err);
        rc = cfg->ops->open(&scfg, &s.store);
        if (rc != STORE_OK) {
            fprintf(stderr, "stashd: cannot open the %s backend: %s%s%s\n",
                    cfg->ops->name, store_strerror(rc), err[0] ? ": " : "",
                    err);
        }
    }
    if (rc != STORE_OK) {
        close(s.lfd);
        return 1;
    }
    if (cfg->pidfile != NULL && write_pidfile(cfg->pidfile) != 0) {
        status = 1;
        goto out;
    }
    /* Before the workers: a shutdown command may reach it at once. */
    s.loop = EV_DEFAULT;
    ev_async_init(&s.stop_req, on_stop_request);
    s.stop_req.data = &s;
    ev_async_start(s.loop, &s.stop_req);
    s.nworkers = cfg->threads;
    s.workers = calloc(s.nworkers, sizeof(*s.workers));
    if (s.workers == NULL) {
        status = 1;
        goto out;
    }
    for (; started < s.nworkers; started++) {
        s.workers[started].srv = &s;
        s.workers[started].id = started;
        if (worker_start(&s.workers[started]) != 0) {
            fprintf(stderr, "stashd: cannot start worker thread %u\n",
                    started);
            status = 1;
            goto stop;
        }
    }
    fd_fit(&s);
    atomic_store(&s.accepting, true);
    ev_timer_init(&s.accept_retry, on_accept_retry, ACCEPT_PAUSE, 0.);
    s.accept_retry.data = &s;
    ev_timer_init(&s.trim, on_trim, TRIM_EVERY, TRIM_EVERY);
    ev_timer_start(s.loop, &s.trim);
    ev_io_init(&s.accept_io, on_accept, s.lfd, EV_READ);
    ev_io_start(s.loop, &s.accept_io);
    ev_signal_init(&s.sigterm, on_signal, SIGTERM);
    s.sigterm.data = &s;
    ev_signal_start(s.loop, &s.sigterm);
    ev_signal_init(&s.sigint, on_signal, SIGINT);
    s.sigint.data = &s;
    ev_signal_start(s.loop, &s.sigint);
    if (cfg->verbose > 0) {
        fprintf(stderr, "stashd: serving on %s:%u with %u threads, "
                "backend %s\n", cfg->unix_path ? cfg->unix_path : cfg->listen,
                (unsigned)cfg->port, cfg->threads, cfg->ops->name);
    }
    ev_run(s.loop, 0);

stop:
    close(s.lfd);
    s.lfd = -1;
    if (cfg->unix_path != NULL) {
        unlink(cfg->unix_path);
    }
    for (unsigned i = 0; i < started; i++) {
        worker_stop(&s.workers[i]);
    }
    for (unsigned i = 0; i < started; i++) {
        struct worker *w = &s.workers[i];

        pthread_join(w->tid, NULL);
        cfg->ops->detach(&w->thr);
        ev_loop_destroy(w->loop);
        pthread_mutex_destroy(&w->lock);
        for (size_t j = 0; j < w->nnew; j++) {
            close(w->newfds[j]);
        }
        free(w->newfds);
        free(w->rscratch);
        free(w->vscratch);
        free(w->pass.arena);
        reply_deinit(&w->pass.out);
    }
    free(s.workers);
out:
    if (s.lfd >= 0) {
        close(s.lfd);
    }
    cfg->ops->close(&s.store);
    if (cfg->pidfile != NULL) {
        unlink(cfg->pidfile);
    }
    pthread_mutex_destroy(&s.set.reset_lock);
    return status;
}
