/*
 * stashd's entry point: turns the command line into a server
 * configuration, daemonizes if asked, and runs the server. Bad usage exits
 * with 64 (EX_USAGE) and a message naming the culprit.
 */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd/options.h"
#include "handler/handler.h"
#include "server/server.h"
#include "storage/storage.h"

#define EXIT_USAGE 64

static int
drop_privileges(const char *user)
{
    struct passwd *pw;

    if (getuid() != 0 || user == NULL) {
        return 0;
    }
    pw = getpwnam(user);
    if (pw == NULL) {
        fprintf(stderr, "stashd: unknown user %s\n", user);
        return -1;
    }
    if (setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0) {
        fprintf(stderr, "stashd: cannot become %s: %s\n", user,
                strerror(errno));
        return -1;
    }
    return 0;
}

static int
to_sync(const char *s, store_sync_e *out)
{
    if (strcmp(s, "always") == 0) {
        *out = STORE_SYNC_ALWAYS;
    } else if (strcmp(s, "periodic") == 0) {
        *out = STORE_SYNC_PERIODIC;
    } else if (strcmp(s, "none") == 0) {
        *out = STORE_SYNC_NONE;
    } else {
        return -1;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    struct options o;
    struct server_cfg cfg;

    if (options_parse(&o, argc, argv, stderr) != 0) {
        fprintf(stderr, "Try 'stashd --help' for more information.\n");
        return EXIT_USAGE;
    }
    if (o.help.u) {
        options_help(stdout);
        return 0;
    }
    if (o.version.u) {
        printf("stashd %s\n", STASHD_VERSION);
        return 0;
    }
    if (o.udpport.u != 0) {
        fprintf(stderr, "stashd: -U %llu: UDP is not supported, only -U 0\n",
                (unsigned long long)o.udpport.u);
        return EXIT_USAGE;
    }
    memset(&cfg, 0, sizeof(cfg));
    cfg.ops = store_find(o.backend.s);
    if (cfg.ops == NULL) {
        fprintf(stderr, "stashd: --backend: unknown backend '%s'\n",
                o.backend.s);
        return EXIT_USAGE;
    }
    if (to_sync(o.sync.s, &cfg.store.sync) != 0) {
        fprintf(stderr, "stashd: --sync: '%s' is not always, periodic or "
                "none\n", o.sync.s);
        return EXIT_USAGE;
    }
    if (o.itemmax.u > o.memory.u * 1024 * 1024 / 2 &&
        o.itemmax.u > 1024 * 1024) {
        fprintf(stderr, "stashd: -I %llu: cannot be above half of -m\n",
                (unsigned long long)o.itemmax.u);
        return EXIT_USAGE;
    }
    cfg.listen = o.listen.s;
    cfg.port = (uint16_t)o.port.u;
    cfg.unix_path = o.socketpath.s;
    cfg.maxconns = (uint32_t)o.maxconns.u;
    cfg.threads = (uint32_t)o.threads.u;
    cfg.verbose = (int)o.verbose.u;
    cfg.pidfile = o.pidfile.s;
    cfg.shutdown = o.shutdown.u != 0;
    cfg.store.mem_limit = o.memory.u * 1024 * 1024;
    cfg.store.item_max = (uint32_t)o.itemmax.u;
    cfg.store.chunk_min = (uint32_t)o.chunkmin.u;
    cfg.store.factor = o.factor.d;
    cfg.store.no_evict = o.noevict.u != 0;
    cfg.store.threads = cfg.threads;
    cfg.store.data_dir = o.datadir.s;
    cfg.store.sync_interval_ms = (uint32_t)o.syncinterval.u;
    cfg.store.now = (uint32_t)time(NULL);

    if (drop_privileges(o.user.s) != 0) {
        return 1;
    }
    if (o.daemon.u && daemon(1, 0) != 0) {
        fprintf(stderr, "stashd: cannot daemonize: %s\n", strerror(errno));
        return 1;
    }
    return server_run(&cfg);
}
