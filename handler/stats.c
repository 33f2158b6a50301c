/*
 * The stats command's groups, named and ordered as memcached 1.6 prints
 * them, so tools that scrape memcached's stats read ours unchanged. Figures
 * memcached has and stashd does not (its LRU maintainer, slab mover, logger,
 * extstore) are reported as 0 rather than left out.
 */
#include "handler/core.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>

struct line {
    handler_stat_fn emit;
    void           *arg;
};

static void
u64(struct line *l, const char *name, uint64_t v)
{
    char buf[32];

    snprintf(buf, sizeof(buf), "%" PRIu64, v);
    l->emit(l->arg, name, buf);
}

static void
str(struct line *l, const char *name, const char *v)
{
    l->emit(l->arg, name, v);
}

/* The backend's figures, its counters taken from the last stats reset. */
static void
backend_stats(struct hctx *cx, struct store_stats *st)
{
    struct store_stats b;

    cx->ops->stats(cx->thr, st);
    pthread_mutex_lock(&cx->set->reset_lock);
    b = cx->set->reset_base;
    pthread_mutex_unlock(&cx->set->reset_lock);
#define SINCE(f) st->f = st->f > b.f ? st->f - b.f : 0
    SINCE(total_items);
    SINCE(evictions);
    SINCE(expired_unfetched);
    SINCE(evicted_unfetched);
    SINCE(reclaimed);
    SINCE(get_expired);
    SINCE(get_flushed);
#undef SINCE
}

static void
reset(struct hctx *cx)
{
    struct store_stats st;

    memset(&st, 0, sizeof(st));
    cx->ops->stats(cx->thr, &st);
    pthread_mutex_lock(&cx->set->reset_lock);
    cx->set->reset_base = st;
    pthread_mutex_unlock(&cx->set->reset_lock);
    cx->srv->reset_stats(cx->srv->arg);
}

static void
general(struct hctx *cx, struct line *l)
{
    struct hstats s;
    struct hconn_stats c;
    struct store_stats st;
    struct rusage ru;
    char buf[64];
    static const char *const zero_tail[] = {
        "slab_reassign_rescues", "slab_reassign_chunk_rescues",
        "slab_reassign_evictions_nomem", "slab_reassign_inline_reclaim",
        "slab_reassign_busy_items", "slab_reassign_busy_deletes",
        "slab_reassign_running", "slabs_moved", "lru_crawler_running",
        "lru_crawler_starts", "lru_maintainer_juggles", "malloc_fails",
        "log_worker_dropped", "log_worker_written", "log_watcher_skipped",
        "log_watcher_sent", "log_watchers", "unexpected_napi_ids",
        "round_robin_fallback",
    };

    memset(&s, 0, sizeof(s));
    memset(&c, 0, sizeof(c));
    memset(&st, 0, sizeof(st));
    cx->srv->sum_stats(cx->srv->arg, &s);
    cx->srv->conn_stats(cx->srv->arg, &c);
    backend_stats(cx, &st);
    getrusage(RUSAGE_SELF, &ru);

    u64(l, "pid", (uint64_t)cx->set->pid);
    u64(l, "uptime", cx->now - cx->set->started);
    u64(l, "time", cx->now);
    str(l, "version", STASHD_VERSION);
    str(l, "libevent", "libev");
    u64(l, "pointer_size", sizeof(void *) * 8);
    snprintf(buf, sizeof(buf), "%ld.%06ld", (long)ru.ru_utime.tv_sec,
             (long)ru.ru_utime.tv_usec);
    str(l, "rusage_user", buf);
    snprintf(buf, sizeof(buf), "%ld.%06ld", (long)ru.ru_stime.tv_sec,
             (long)ru.ru_stime.tv_usec);
    str(l, "rusage_system", buf);
    u64(l, "max_connections", cx->set->maxconns);
    u64(l, "curr_connections", c.curr_connections);
    u64(l, "total_connections", c.total_connections);
    u64(l, "rejected_connections", c.rejected_connections);
    u64(l, "connection_structures", c.connection_structures);
    u64(l, "response_obj_oom", 0);
    u64(l, "response_obj_count", 0);
    u64(l, "response_obj_bytes", 0);
    u64(l, "read_buf_count", 0);
    u64(l, "read_buf_bytes", 0);
    u64(l, "read_buf_bytes_free", 0);
    u64(l, "read_buf_oom", 0);
    u64(l, "reserved_fds", c.reserved_fds);
    u64(l, "cmd_get", s.cmd_get);
    u64(l, "cmd_set", s.cmd_set);
    u64(l, "cmd_flush", s.cmd_flush);
    u64(l, "cmd_touch", s.cmd_touch);
    u64(l, "cmd_meta", s.cmd_meta);
    u64(l, "get_hits", s.get_hits);
    u64(l, "get_misses", s.get_misses);
    u64(l, "get_expired", st.get_expired);
    u64(l, "get_flushed", st.get_flushed);
    u64(l, "delete_misses", s.delete_misses);
    u64(l, "delete_hits", s.delete_hits);
    u64(l, "incr_misses", s.incr_misses);
    u64(l, "incr_hits", s.incr_hits);
    u64(l, "decr_misses", s.decr_misses);
    u64(l, "decr_hits", s.decr_hits);
    u64(l, "cas_misses", s.cas_misses);
    u64(l, "cas_hits", s.cas_hits);
    u64(l, "cas_badval", s.cas_badval);
    u64(l, "touch_hits", s.touch_hits);
    u64(l, "touch_misses", s.touch_misses);
    u64(l, "store_too_large", s.store_too_large);
    u64(l, "store_no_memory", s.store_no_memory);
    u64(l, "auth_cmds", s.auth_cmds);
    u64(l, "auth_errors", s.auth_errors);
    u64(l, "bytes_read", s.bytes_read);
    u64(l, "bytes_written", s.bytes_written);
    u64(l, "limit_maxbytes", cx->set->maxbytes);
    u64(l, "accepting_conns", c.accepting ? 1 : 0);
    u64(l, "listen_disabled_num", c.listen_disabled_num);
    u64(l, "time_in_listen_disabled_us", c.time_in_listen_disabled_us);
    u64(l, "threads", cx->set->num_threads);
    u64(l, "conn_yields", s.conn_yields);
    u64(l, "hash_power_level", 0);
    u64(l, "hash_bytes", 0);
    u64(l, "hash_is_expanding", 0);
    for (size_t i = 0; i < sizeof(zero_tail) / sizeof(zero_tail[0]); i++) {
        u64(l, zero_tail[i], 0);
    }
    u64(l, "bytes", st.bytes);
    u64(l, "curr_items", st.curr_items);
    u64(l, "total_items", st.total_items);
    u64(l, "slab_global_page_pool", 0);
    u64(l, "expired_unfetched", st.expired_unfetched);
    u64(l, "evicted_unfetched", st.evicted_unfetched);
    u64(l, "evicted_active", 0);
    u64(l, "evictions", st.evictions);
    u64(l, "reclaimed", st.reclaimed);
    u64(l, "crawler_reclaimed", 0);
    u64(l, "crawler_items_checked", 0);
    u64(l, "lrutail_reflocked", 0);
    u64(l, "moves_to_cold", 0);
    u64(l, "moves_to_warm", 0);
    u64(l, "moves_within_lru", 0);
    u64(l, "direct_reclaims", 0);
    u64(l, "lru_bumps_dropped", 0);
    str(l, "backend", cx->ops->name);
    /* The backend's own figures, each prefixed with its name. */
    (void)cx->ops->stats_group(cx->thr, "", l->emit, l->arg);
}

static void
settings(struct hctx *cx, struct line *l)
{
    const struct hsettings *s = cx->set;
    char buf[32];

    u64(l, "maxbytes", s->maxbytes);
    u64(l, "maxconns", s->maxconns);
    u64(l, "tcpport", s->tcpport);
    u64(l, "udpport", 0);
    str(l, "inter", s->inter != NULL ? s->inter : "NULL");
    u64(l, "verbosity", (uint64_t)atomic_load(&cx->set->verbosity));
    u64(l, "oldest", 0);
    str(l, "evictions", s->evictions ? "on" : "off");
    str(l, "domain_socket", s->domain_socket != NULL ? s->domain_socket
                                                     : "NULL");
    str(l, "umask", "700");
    str(l, "shutdown_command", s->shutdown ? "yes" : "no");
    snprintf(buf, sizeof(buf), "%.2f", s->growth_factor);
    str(l, "growth_factor", buf);
    u64(l, "chunk_size", s->chunk_size);
    u64(l, "num_threads", s->num_threads);
    u64(l, "num_threads_per_udp", s->num_threads);
    str(l, "stat_key_prefix", ":");
    str(l, "detail_enabled", "no");
    u64(l, "reqs_per_event", 20);
    str(l, "cas_enabled", "yes");
    u64(l, "tcp_backlog", 1024);
    str(l, "binding_protocol", "auto-negotiate");
    str(l, "auth_enabled_sasl", "no");
    str(l, "auth_enabled_ascii", "no");
    u64(l, "item_size_max", s->item_size_max);
    str(l, "maxconns_fast", "yes");
    u64(l, "hashpower_init", 0);
    str(l, "flush_enabled", "yes");
    str(l, "backend", cx->ops->name);
}

bool
handler_stats(struct hctx *cx, const char *group, handler_stat_fn emit,
              void *arg)
{
    struct line l = { emit, arg };

    /* Figures that count the sets a client sent before asking. */
    hcore_settle(cx, NULL, 0);
    if (group[0] == '\0') {
        general(cx, &l);
        return true;
    }
    if (strcmp(group, "settings") == 0) {
        settings(cx, &l);
        return true;
    }
    if (strcmp(group, "reset") == 0) {
        reset(cx);
        return true;
    }
    if (strcmp(group, "items") == 0 || strcmp(group, "slabs") == 0 ||
        strcmp(group, "sizes") == 0) {
        /* A backend without slabs has nothing to list, as memcached with
         * no items lists nothing. */
        (void)cx->ops->stats_group(cx->thr, group, emit, arg);
        return true;
    }
    if (strcmp(group, "conns") == 0 && cx->srv->conns != NULL) {
        cx->srv->conns(cx->srv->arg, emit, arg);
        return true;
    }
    return false;
}
