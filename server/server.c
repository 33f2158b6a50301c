/*
 * The main thread: opens the store, listens, accepts and deals connections
 * to workers round robin, and on SIGTERM/SIGINT stops accepting, lets the
 * workers finish what they have read, and closes the store. It never runs a
 * request itself.
 */
#include "server/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char too_many[] = "ERROR Too many open connections\r\n";

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
            if (errno == EMFILE || errno == ENFILE) {
                fprintf(stderr, "stashd: accept: %s\n", strerror(errno));
            }
            return;
        }
        if (atomic_load(&s->curr_conns) >= s->cfg->maxconns) {
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

static void
stop_serving(struct server *s)
{
    ev_io_stop(s->loop, &s->accept_io);
    atomic_store(&s->accepting, false);
    ev_break(s->loop, EVBREAK_ALL);
}

static void
on_signal(struct ev_loop *loop, ev_signal *sig, int revents)
{
    struct server *s = sig->data;

    (void)loop;
    (void)revents;
    if (s->cfg->verbose > 0) {
        fprintf(stderr, "stashd: signal %d, shutting down\n", sig->signum);
    }
    stop_serving(s);
}

static void
on_stop_request(struct ev_loop *loop, ev_async *a, int revents)
{
    struct server *s = a->data;

    (void)loop;
    (void)revents;
    if (s->cfg->verbose > 0) {
        fprintf(stderr, "stashd: shutdown command, shutting down\n");
    }
    stop_serving(s);
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
    atomic_store(&s.accepting, true);
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
