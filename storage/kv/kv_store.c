/*
 * The store_ops of every persistent backend: open and close, the per-thread
 * readers, gets, and the write entry points that turn a request into a
 * kv_op for the write queue (kv_write.c) and then wait for durability as
 * --sync says (persist_sync.c).
 *
 * Design, and why:
 * - One engine, many record stores: an adapter (lmdb/, sqlite/) only finds
 *   and stores records; liveness (TTL, flush epochs), CAS, -m accounting,
 *   eviction, recency and checksums are decided here and in kv_write.c,
 *   once, so both backends answer alike and a fix is made once.
 * - Reads never block on writers: a get asks the thread's reader for the
 *   record at a snapshot holding every commit so far, checks it against
 *   its checksum, decides liveness from the header and the flush state
 *   held in atomics, and copies the value into the caller's sink (or a
 *   malloc'd pin without one; release frees it). A record that fails its
 *   checksum is never served: it is a miss, logged, counted and queued
 *   for removal.
 * - Writes go through one combining queue (group commit without a writer
 *   thread); a write is committed before it returns, so a crash of the
 *   process never loses an acknowledged write, and with --sync=always it
 *   is also durable (or registers a completion) before it is answered.
 * - No global state: everything is in struct store; close joins both
 *   threads, syncs and frees all.
 */
#include "storage/kv/kv_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "storage/rules.h"

store_rc_e
kv_attach(struct store *s, struct store_thr **out)
{
    struct store_thr *t = calloc(1, sizeof(*t));
    kv_err_e e;

    *out = NULL;
    if (t == NULL) {
        return STORE_ENOMEM;
    }
    t->s = s;
    if (pthread_cond_init(&t->cond, NULL) != 0) {
        free(t);
        return STORE_ENOMEM;
    }
    e = s->be->rd_open(s->b, &t->rd);
    if (e != KV_OK) {
        pthread_cond_destroy(&t->cond);
        free(t);
        return kv_rc(e);
    }
    *out = t;
    return STORE_OK;
}

void
kv_detach(struct store_thr **tp)
{
    struct store_thr *t = *tp;

    if (t == NULL) {
        return;
    }
    t->s->be->rd_close(t->rd);
    pthread_cond_destroy(&t->cond);
    free(t);
    *tp = NULL;
}

void
kv_idle(struct store_thr *t)
{
    if (t->s->be->rd_idle != NULL) {
        t->s->be->rd_idle(t->rd);
    }
}

/* The value's bytes in memory the caller owns: the sink, else a pin. */
static store_rc_e
copy_out(struct store_call *c, const void *v, size_t n,
         struct store_item *out)
{
    void *p;

    out->pin = NULL;
    out->len = (uint32_t)n;
    if (n == 0) {
        out->data = "";
        return STORE_OK;
    }
    if (c->sink != NULL) {
        p = c->sink->reserve(c->sink, n);
    } else {
        p = malloc(n);
        out->pin = p;
    }
    if (p == NULL) {
        return STORE_ENOMEM;
    }
    memcpy(p, v, n);
    out->data = p;
    return STORE_OK;
}

/* A TOUCH or GAT that missed a dead record: counted as memcached does. */
static void
count_dead_miss(struct store *s, const struct kv_op *op)
{
    if (op->rc == STORE_ENOENT && op->value != 0) {
        kv_inc(op->value == 2 ? &s->ctr.get_flushed : &s->ctr.get_expired,
               1);
    }
}

/* Submits op and makes the caller wait for durability when it wrote. */
static store_rc_e
run(struct store_thr *t, struct store_call *c, struct kv_op *op)
{
    struct store *s = t->s;

    kv_note_now(s, c->now);
    if (atomic_load(&s->wfail) != 0) {
        return STORE_EIO;
    }
    op->now = c->now;
    /* A reader's snapshot must not be held across a wait on the writer. */
    kv_idle(t);
    persist_sync_throttle(&s->ps);
    kv_submit(t, op);
    if (op->wrote && persist_sync_wait(&s->ps, c, op->seq) != STORE_OK) {
        /* Committed, but a sync failed: it cannot be promised. */
        op->rc = STORE_EIO;
    }
    return op->rc;
}

static store_rc_e
gat(struct store_thr *t, struct store_call *c, const struct store_key *k,
    uint32_t exptime, struct store_item *out)
{
    struct kv_op op;
    store_rc_e rc;

    memset(&op, 0, sizeof(op));
    out->pin = NULL;
    op.kind = KV_OP_GAT;
    op.k = k;
    op.when = exptime;
    op.sink = c->sink;
    op.out = out;
    rc = run(t, c, &op);
    count_dead_miss(t->s, &op);
    if (rc != STORE_OK) {
        free(out->pin);
        out->pin = NULL;
    }
    return rc;
}

store_rc_e
kv_get(struct store_thr *t, struct store_call *c, const struct store_key *k,
       const uint32_t *touch, struct store_item *out)
{
    struct store *s = t->s;
    const struct kv_backend *be = s->be;
    struct kv_view v;
    bool flushed;
    store_rc_e rc;
    kv_err_e e;

    kv_note_now(s, c->now);
    if (touch != NULL) {
        return gat(t, c, k, *touch, out);
    }
    e = be->rd_get(t->rd,
                   atomic_load_explicit(&s->seq, memory_order_acquire),
                   k->data, k->len, &v);
    if (e != KV_OK && e != KV_DAMAGED) {
        be->rd_end(t->rd);
        kv_note_err(s, e);
        return e == KV_NOTFOUND ? STORE_ENOENT : kv_rc(e);
    }
    if (e == KV_DAMAGED ||
        !kv_sum_ok(&v.r, k->data, k->len, v.val, v.vlen)) {
        be->rd_end(t->rd);
        kv_bad_record(s, k->data, k->len, v.r.cas);
        return STORE_ENOENT;
    }
    if (kv_dead(&v.r, c->now,
                atomic_load_explicit(&s->flush_cas, memory_order_relaxed),
                atomic_load_explicit(&s->flush_time, memory_order_relaxed),
                &flushed)) {
        be->rd_end(t->rd);
        kv_inc(flushed ? &s->ctr.get_flushed : &s->ctr.get_expired, 1);
        return STORE_ENOENT;
    }
    rc = copy_out(c, v.val, v.vlen, out);
    be->rd_end(t->rd);
    if (rc != STORE_OK) {
        return rc;
    }
    out->flags = v.r.flags;
    out->exptime = v.r.exptime;
    out->cas = v.r.cas;
    /*
     * Recency is refreshed at most once per grain, and only then is the
     * fetched bit set too: a first read within a minute of the write costs
     * no rewrite, at the price of such items counting as unfetched.
     */
    if (c->now >= v.r.atime + KV_ATIME_GRAIN) {
        kv_hint(s, k, v.r.cas, c->now);
    }
    return STORE_OK;
}

void
kv_release(struct store_thr *t, struct store_item *it)
{
    (void)t;
    free(it->pin);
    it->pin = NULL;
}

store_rc_e
kv_store(struct store_thr *t, struct store_call *c, store_mode_e m,
         const struct store_key *k, const struct store_item *in,
         uint64_t *cas_out)
{
    struct kv_op op;
    store_rc_e rc;

    if (m != STORE_APPEND && m != STORE_PREPEND &&
        store_too_large(t->s->item_max, k->len, in->flags, in->len)) {
        return STORE_E2BIG;
    }
    memset(&op, 0, sizeof(op));
    op.kind = KV_OP_STORE;
    op.k = k;
    op.mode = m;
    op.in = in;
    rc = run(t, c, &op);
    if (rc == STORE_OK) {
        *cas_out = op.cas_out;
    }
    return rc;
}

/* Up to KV_MANY_MAX sets of v as one chain. */
static void
set_chunk(struct store_thr *t, struct store_set *v, size_t n)
{
    struct store *s = t->s;
    struct kv_op *ops = t->many;

    for (size_t i = 0; i < n; i++) {
        memset(&ops[i], 0, sizeof(ops[i]));
        ops[i].kind = KV_OP_STORE;
        ops[i].k = &v[i].k;
        ops[i].mode = STORE_SET;
        ops[i].in = &v[i].in;
        ops[i].now = v[i].call.now;
        kv_note_now(s, v[i].call.now);
    }
    kv_submit_many(t, ops, n);
    for (size_t i = 0; i < n; i++) {
        v[i].rc = ops[i].rc;
        v[i].cas = ops[i].cas_out;
        if (ops[i].wrote &&
            persist_sync_wait(&s->ps, &v[i].call, ops[i].seq) != STORE_OK) {
            v[i].rc = STORE_EIO;
        }
    }
}

void
kv_set_many(struct store_thr *t, struct store_set *v, size_t n)
{
    struct store *s = t->s;
    size_t i = 0;

    /* Too large fails alone; the rest go in chains. */
    while (i < n) {
        size_t j = i;

        v[i].call.pending = false;
        if (atomic_load(&s->wfail) != 0) {
            v[i++].rc = STORE_EIO;
            continue;
        }
        if (store_too_large(s->item_max, v[i].k.len, v[i].in.flags,
                            v[i].in.len)) {
            v[i++].rc = STORE_E2BIG;
            continue;
        }
        while (j < n && j - i < KV_MANY_MAX &&
               !store_too_large(s->item_max, v[j].k.len, v[j].in.flags,
                                v[j].in.len)) {
            v[j++].call.pending = false;
        }
        /* A reader's snapshot must not be held across a wait on the
         * writer. */
        kv_idle(t);
        persist_sync_throttle(&s->ps);
        set_chunk(t, v + i, j - i);
        i = j;
    }
}

store_rc_e
kv_del(struct store_thr *t, struct store_call *c, const struct store_key *k,
       uint64_t cas)
{
    struct kv_op op;

    memset(&op, 0, sizeof(op));
    op.kind = KV_OP_DEL;
    op.k = k;
    op.cas = cas;
    return run(t, c, &op);
}

store_rc_e
kv_arith(struct store_thr *t, struct store_call *c, const struct store_key *k,
         const struct store_delta *d, uint64_t *value, uint64_t *cas_out)
{
    struct kv_op op;
    store_rc_e rc;

    memset(&op, 0, sizeof(op));
    op.kind = KV_OP_ARITH;
    op.k = k;
    op.d = d;
    rc = run(t, c, &op);
    if (rc == STORE_OK) {
        *value = op.value;
        *cas_out = op.cas_out;
    }
    return rc;
}

store_rc_e
kv_touch(struct store_thr *t, struct store_call *c, const struct store_key *k,
         uint32_t exptime)
{
    struct kv_op op;
    store_rc_e rc;

    memset(&op, 0, sizeof(op));
    op.kind = KV_OP_TOUCH;
    op.k = k;
    op.when = exptime;
    rc = run(t, c, &op);
    count_dead_miss(t->s, &op);
    return rc;
}

store_rc_e
kv_flush(struct store_thr *t, struct store_call *c, uint32_t when)
{
    struct kv_op op;

    memset(&op, 0, sizeof(op));
    op.kind = KV_OP_FLUSH;
    op.when = when;
    return run(t, c, &op);
}

/* -------------------------------------------------------------- lifecycle */

/* The syncer's hook: the adapter makes every commit so far durable. */
static int
kv_fsync(void *arg)
{
    struct store *s = arg;

    return s->be->sync(s->b);
}

static void
host_exclusive(void *arg, void (*fn)(void *), void *fn_arg)
{
    struct store *s = arg;

    persist_queue_exclusive(&s->wq, fn, fn_arg);
}

static uint64_t
host_seq(void *arg)
{
    struct store *s = arg;

    return atomic_load_explicit(&s->seq, memory_order_acquire);
}

static void
host_bad(void *arg, const void *key, size_t klen, uint64_t cas)
{
    kv_bad_record(arg, key, klen, cas);
}

/* What open set up, so that a failure undoes exactly that. */
struct open_state {
    unsigned locks;      /* how many of the sync objects below exist */
};

static void
destroy(struct store *s, const struct open_state *st)
{
    kv_maint_stop(s);
    persist_sync_stop(&s->ps);
    if (s->b != NULL) {
        s->be->close(s->b, &s->meta,
                     s->opened && atomic_load(&s->wfail) == 0);
        s->b = NULL;
    }
    if (s->lock_fd >= 0) {
        close(s->lock_fd);     /* releases the flock */
    }
    /* In reverse order of sync_objects_init. */
    switch (st->locks) {
    case 5:
        persist_maint_deinit(&s->pm);
        /* fall through */
    case 4:
        pthread_mutex_destroy(&s->bad_lock);
        /* fall through */
    case 3:
        pthread_mutex_destroy(&s->hint_lock);
        /* fall through */
    case 2:
        persist_sync_deinit(&s->ps);
        /* fall through */
    case 1:
        persist_queue_deinit(&s->wq);
        /* fall through */
    default:
        break;
    }
    kv_keybuf_deinit(&s->hints);
    kv_keybuf_deinit(&s->bad);
    free(s->scratch);
    free(s->dir);
    free(s);
}

static bool
sync_objects_init(const struct store_cfg *cfg, struct store *s,
                  struct open_state *st)
{
    store_sync_e mode = cfg->sync;
    uint32_t interval = cfg->sync_interval_ms;

    if (!persist_queue_init(&s->wq, kv_run_batch, s)) {
        return false;
    }
    st->locks = 1;
    if (mode == STORE_SYNC_NONE && s->be->none_sync_ms != 0) {
        /* Some stores need a sync now and then to survive a power loss
         * at all; nobody waits for it. */
        mode = STORE_SYNC_PERIODIC;
        interval = s->be->none_sync_ms;
    }
    if (!persist_sync_init(&s->ps, mode, interval, kv_fsync, s, &s->seq,
                           &s->wfail)) {
        return false;
    }
    s->ps.shown = cfg->sync;
    s->ps.pressure = s->be->sync_pressure;
    st->locks = 2;
    if (pthread_mutex_init(&s->hint_lock, NULL) != 0) {
        return false;
    }
    st->locks = 3;
    if (pthread_mutex_init(&s->bad_lock, NULL) != 0) {
        return false;
    }
    st->locks = 4;
    if (!persist_maint_init(&s->pm, KV_TICK_MS, &s->now_seen)) {
        return false;
    }
    st->locks = 5;
    return true;
}

/* The configuration, checked and copied into s. */
static store_rc_e
take_cfg(const struct store_cfg *cfg, struct store *s)
{
    s->mem_limit = cfg->mem_limit != 0 ? cfg->mem_limit
                                        : KV_DEFAULT_MEM_LIMIT;
    s->item_max = cfg->item_max != 0 ? cfg->item_max : KV_DEFAULT_ITEM_MAX;
    s->no_evict = cfg->no_evict;
    if (s->item_max < KV_ITEM_MAX_LOWEST ||
        s->item_max > KV_ITEM_MAX_HIGHEST) {
        persist_err(cfg, "item size limit %u outside %u..%u", s->item_max,
                    KV_ITEM_MAX_LOWEST, KV_ITEM_MAX_HIGHEST);
        return STORE_EINVAL;
    }
    if (cfg->sync > STORE_SYNC_NONE) {
        persist_err(cfg, "bad sync mode");
        return STORE_EINVAL;
    }
    return STORE_OK;
}

store_rc_e
kv_open(const struct kv_backend *be, const struct store_cfg *cfg,
        struct store **out)
{
    struct open_state st = { 0 };
    struct store *s;
    store_rc_e rc = STORE_ENOMEM;

    *out = NULL;
    if (cfg->err != NULL && cfg->errlen > 0) {
        cfg->err[0] = '\0';
    }
    if (cfg->data_dir == NULL || cfg->data_dir[0] == '\0') {
        persist_err(cfg, "no data directory given (--data-dir)");
        return STORE_EINVAL;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return STORE_ENOMEM;
    }
    s->be = be;
    s->lock_fd = -1;
    s->host.s = s;
    s->host.exclusive = host_exclusive;
    s->host.seq = host_seq;
    s->host.bad = host_bad;
    s->dir = strdup(cfg->data_dir);
    if (s->dir == NULL) {
        goto fail;
    }
    if ((rc = take_cfg(cfg, s)) != STORE_OK) {
        goto fail;
    }
    rc = STORE_ENOMEM;
    if (!sync_objects_init(cfg, s, &st)) {
        goto fail;
    }
    atomic_init(&s->now_seen, cfg->now);
    if ((rc = persist_make_dir(cfg, s->dir)) != STORE_OK ||
        (rc = persist_lock_dir(cfg, s->dir, &s->lock_fd)) != STORE_OK) {
        goto fail;
    }
    if (kv_disk_full(s->dir, KV_RESERVE) && kv_reserve_release(s->dir)) {
        /* What opening takes (sqlite's -shm, a snapshot) must fit. */
        fprintf(stderr, "stashd: %s: the disk is full: released the "
                "%u-byte reserve so that the store can open\n", s->dir,
                KV_RESERVE);
    }
    if ((rc = be->open(cfg, s->dir, &s->host, &s->b, &s->meta)) !=
        STORE_OK) {
        goto fail;
    }
    kv_reserve_make(s->dir, KV_RESERVE_SLACK);
    s->reserve_owed = !kv_reserve_exists(s->dir);
    /* The file holds a ceiling: resume there, above every CAS in it. */
    s->cas_ceiling = s->meta.cas_max;
    atomic_init(&s->flush_cas, s->meta.flush_cas);
    atomic_init(&s->flush_time, s->meta.flush_time);
    atomic_init(&s->cas_max, s->meta.cas_max);
    atomic_init(&s->bytes, s->meta.bytes);
    atomic_init(&s->items, s->meta.items);
    rc = STORE_ENOMEM;
    if (!persist_sync_start(&s->ps) || !kv_maint_start(s)) {
        persist_err(cfg, "cannot start the %s backend's threads", be->name);
        goto fail;
    }
    s->opened = true;
    *out = s;
    return STORE_OK;
fail:
    destroy(s, &st);
    return rc;
}

void
kv_close(struct store **sp)
{
    struct store *s = *sp;
    struct open_state st = { 5 };

    if (s == NULL) {
        return;
    }
    destroy(s, &st);
    *sp = NULL;
}

/* ------------------------------------------------------------------ stats */

static uint64_t
ld(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

void
kv_stats(struct store_thr *t, struct store_stats *out)
{
    struct store *s = t->s;

    memset(out, 0, sizeof(*out));
    /* Records in the store, dead ones not yet swept included (as
     * memcached counts them). */
    out->curr_items = ld(&s->items);
    out->total_items = ld(&s->ctr.total_items);
    out->bytes = ld(&s->bytes);
    out->evictions = ld(&s->ctr.evictions);
    out->expired_unfetched = ld(&s->ctr.expired_unfetched);
    out->evicted_unfetched = ld(&s->ctr.evicted_unfetched);
    out->reclaimed = ld(&s->ctr.reclaimed);
    out->get_expired = ld(&s->ctr.get_expired);
    out->get_flushed = ld(&s->ctr.get_flushed);
    out->limit_maxbytes = s->mem_limit;
}

/* Emits one line named prefix_name. */
static void
emit_named(store_emit_fn emit, void *arg, const char *prefix,
           const char *name, uint64_t v)
{
    char full[64];

    snprintf(full, sizeof(full), "%s_%s", prefix, name);
    persist_emit_u64(emit, arg, full, v);
}

static void
group_general(struct store_thr *t, store_emit_fn emit, void *arg)
{
    struct store *s = t->s;
    const char *p = s->be->name;

    s->be->stats(s->b, t->rd, emit, arg);
    emit_named(emit, arg, p, "items", ld(&s->items));
    persist_sync_stats(&s->ps, p, emit, arg);
    emit_named(emit, arg, p, "commits", ld(&s->ctr.commits));
    emit_named(emit, arg, p, "commit_ops", ld(&s->ctr.commit_ops));
    emit_named(emit, arg, p, "batch_retries", ld(&s->ctr.aborts));
    emit_named(emit, arg, p, "full", ld(&s->ctr.full));
    emit_named(emit, arg, p, "busy", ld(&s->ctr.busy));
    emit_named(emit, arg, p, "io_errors", ld(&s->ctr.io_errors));
    emit_named(emit, arg, p, "hints_dropped", ld(&s->ctr.hints_dropped));
    emit_named(emit, arg, p, "recency_refreshes", ld(&s->ctr.refreshes));
    emit_named(emit, arg, p, "checksum_failures", ld(&s->ctr.bad_records));
    emit_named(emit, arg, p, "damaged_removed", ld(&s->ctr.bad_removed));
    emit_named(emit, arg, p, "cas_max", ld(&s->cas_max));
    emit_named(emit, arg, p, "write_failed",
               atomic_load(&s->wfail) != 0 ? 1 : 0);
}

store_rc_e
kv_stats_group(struct store_thr *t, const char *group, store_emit_fn emit,
               void *arg)
{
    if (strcmp(group, "") == 0) {
        group_general(t, emit, arg);
    } else if (strcmp(group, "items") == 0 || strcmp(group, "slabs") == 0) {
        /* No slab classes: nothing to list, as memcached with no items. */
    } else if (strcmp(group, "sizes") == 0) {
        emit(arg, "sizes_status", "disabled");
    } else {
        return STORE_ENOENT;
    }
    return STORE_OK;
}
