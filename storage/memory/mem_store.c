/*
 * The memory backend's operations: the store_mem_ops vtable, open/close,
 * thread attach, and the memcached semantics of every request (modes, CAS,
 * arithmetic, touch, lazy expiry and O(1) flush). A request takes exactly
 * one stripe lock, for its key, and allocates nothing but slab chunks.
 * Values never change in place: a write links a new item and unlinks the
 * old one, so a pinned value stays intact until its release.
 */
#include "storage/rules.h"
#include "storage/memory/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MEM_LIMIT (64ull * 1024 * 1024)
#define DEFAULT_ITEM_MAX  (1024u * 1024u)
#define DEFAULT_CHUNK_MIN 48u
#define DEFAULT_FACTOR    1.25
#define ITEM_MAX_LOWEST   1024u
#define ITEM_MAX_HIGHEST  (1024u * 1024u * 1024u)
#define HASH_SEED         0x2d358dccaa6c78a5ULL

bool
store_mem_item_dead(struct store *s, const struct item *it, uint32_t now,
                    bool *flushed)
{
    uint32_t ft = atomic_load_explicit(&s->flush_time, memory_order_relaxed);
    uint64_t fc = atomic_load_explicit(&s->flush_cas, memory_order_relaxed);

    *flushed = it->cas <= fc || (ft != 0 && ft <= now && it->time < ft);
    if (*flushed) {
        return true;
    }
    return it->exptime != 0 && it->exptime <= now;
}

/* Keeps the latest time a caller told us, for the sweeper and stats. */
static inline void
note_now(struct store *s, uint32_t now)
{
    if (now > atomic_load_explicit(&s->now_seen, memory_order_relaxed)) {
        atomic_store_explicit(&s->now_seen, now, memory_order_relaxed);
    }
}

/*
 * The live item for key, or NULL; a dead one found on the way is unlinked.
 * Caller holds the stripe. count says whether this is a read that memcached
 * counts in get_expired / get_flushed.
 */
static struct item *
find_live(struct store_thr *t, uint64_t hv, const struct store_key *k,
          uint32_t now, bool count)
{
    struct store *s = t->s;
    struct item *it = store_mem_find(s, hv, k->data, k->len);
    bool flushed;

    if (it == NULL || !store_mem_item_dead(s, it, now, &flushed)) {
        return it;
    }
    store_mem_unlink(s, hv, it);
    if (count) {
        mem_ctr_inc(flushed ? &t->ctr.get_flushed : &t->ctr.get_expired);
    }
    return NULL;
}

/* Gives nit the next CAS and puts it where old was; caller holds stripe. */
static void
commit(struct store_thr *t, uint64_t hv, struct item *nit, struct item *old)
{
    struct store *s = t->s;

    /* Under the stripe, so a key's CAS values rise in link order. */
    nit->cas = atomic_fetch_add_explicit(&s->cas_next, 1,
                                         memory_order_relaxed) + 1;
    if (old != NULL) {
        store_mem_unlink(s, hv, old);
    }
    store_mem_chain_insert(s, hv, nit);
    store_mem_lru_link(s, nit);
    mem_ctr_inc(&t->ctr.total_items);
}

static void
item_fill(struct item *it, const struct store_key *k, uint32_t vlen,
          uint32_t flags, uint32_t exptime, uint32_t now)
{
    it->nkey = (uint8_t)k->len;
    it->vlen = vlen;
    it->flags = flags;
    it->exptime = exptime;
    it->time = now;
    memcpy(it->data, k->data, k->len);
}

static inline unsigned char *
item_value(struct item *it)
{
    return it->data + it->nkey;
}

static store_rc_e
mem_get(struct store_thr *t, struct store_call *c, const struct store_key *k,
        const uint32_t *touch, struct store_item *out)
{
    struct store *s = t->s;
    uint64_t hv = store_mem_hash(s->seed, k->data, k->len);
    pthread_mutex_t *m = mem_stripe(s, hv);
    struct item *it;
    uint8_t fl;

    note_now(s, c->now);
    pthread_mutex_lock(m);
    it = find_live(t, hv, k, c->now, true);
    if (it == NULL) {
        pthread_mutex_unlock(m);
        return STORE_ENOENT;
    }
    if (touch != NULL) {
        it->exptime = *touch;
    }
    atomic_fetch_add_explicit(&it->refcount, 1, memory_order_relaxed);
    /* A plain load first: most reads find the bits set already. */
    fl = atomic_load_explicit(&it->iflags, memory_order_relaxed);
    if ((fl & (IT_ACTIVE | IT_FETCHED)) != (IT_ACTIVE | IT_FETCHED)) {
        atomic_fetch_or_explicit(&it->iflags, IT_ACTIVE | IT_FETCHED,
                                 memory_order_relaxed);
    }
    out->data = item_value(it);
    out->len = it->vlen;
    out->flags = it->flags;
    out->exptime = it->exptime;
    out->cas = it->cas;
    out->pin = it;
    pthread_mutex_unlock(m);
    mem_ctr_inc(&t->ctr.cls[it->clsid][touch != NULL ? CTR_TOUCH_HITS
                                                     : CTR_GET_HITS]);
    return STORE_OK;
}

static void
mem_release(struct store_thr *t, struct store_item *it)
{
    if (it->pin != NULL) {
        store_mem_item_unref(t->s, it->pin);
        it->pin = NULL;
    }
}

/* Append or prepend: the new item is built from the old under the stripe. */
static store_rc_e
store_concat(struct store_thr *t, struct store_call *c, store_mode_e mode,
             const struct store_key *k, const struct store_item *in,
             uint64_t hv, uint64_t *cas_out)
{
    struct store *s = t->s;
    pthread_mutex_t *m = mem_stripe(s, hv);
    struct item *old;
    struct item *nit;
    unsigned char *v;
    uint64_t total;
    store_rc_e rc = STORE_OK;

    pthread_mutex_lock(m);
    old = find_live(t, hv, k, c->now, false);
    if (old == NULL) {
        /* memcached answers NOT_STORED here even when a CAS was given. */
        rc = STORE_NOT_STORED;
        goto out;
    }
    if (in->cas != 0 && in->cas != old->cas) {
        mem_ctr_inc(&t->ctr.cls[old->clsid][CTR_CAS_BADVAL]);
        rc = STORE_EEXISTS;
        goto out;
    }
    total = mem_item_total(k->len, (uint64_t)old->vlen + in->len);
    if (total > s->item_max ||
        store_too_large(s->item_max, k->len, old->flags,
                        (size_t)old->vlen + in->len)) {
        rc = STORE_E2BIG;
        goto out;
    }
    /*
     * Allocating under our stripe is safe: the evictor only trylocks, so
     * it skips old and everything else this stripe guards.
     */
    nit = store_mem_item_alloc(s, total, c->now);
    if (nit == NULL) {
        rc = STORE_ENOMEM;
        goto out;
    }
    item_fill(nit, k, old->vlen + in->len, old->flags, old->exptime, c->now);
    v = item_value(nit);
    /* memcpy wants valid pointers even for 0 bytes; data may be NULL. */
    if (in->len > 0) {
        memcpy(v + (mode == STORE_APPEND ? old->vlen : 0), in->data,
               in->len);
    }
    if (old->vlen > 0) {
        memcpy(v + (mode == STORE_APPEND ? 0 : in->len), item_value(old),
               old->vlen);
    }
    if (in->cas != 0) {
        mem_ctr_inc(&t->ctr.cls[nit->clsid][CTR_CAS_HITS]);
    }
    mem_ctr_inc(&t->ctr.cls[nit->clsid][CTR_CMD_SET]);
    commit(t, hv, nit, old);
    *cas_out = nit->cas;
out:
    pthread_mutex_unlock(m);
    return rc;
}

/*
 * The rule for whole-value writes, memcached's: a CAS makes any mode a
 * compare-and-swap (missing -> ENOENT, other CAS -> EEXISTS); otherwise add
 * wants no live item and replace wants one.
 */
static store_rc_e
store_check(store_mode_e mode, uint64_t cas, const struct item *old)
{
    if (cas != 0) {
        if (old == NULL) {
            return STORE_ENOENT;
        }
        return old->cas == cas ? STORE_OK : STORE_EEXISTS;
    }
    if (mode == STORE_ADD && old != NULL) {
        return STORE_NOT_STORED;
    }
    if (mode == STORE_REPLACE && old == NULL) {
        return STORE_NOT_STORED;
    }
    return STORE_OK;
}

static store_rc_e
mem_store(struct store_thr *t, struct store_call *c, store_mode_e mode,
          const struct store_key *k, const struct store_item *in,
          uint64_t *cas_out)
{
    struct store *s = t->s;
    uint64_t hv = store_mem_hash(s->seed, k->data, k->len);
    pthread_mutex_t *m = mem_stripe(s, hv);
    uint64_t total = mem_item_total(k->len, in->len);
    struct item *nit;
    struct item *old;
    store_rc_e rc;

    note_now(s, c->now);
    /* nkey is one byte: a longer key must never reach item_fill. */
    if (k->len == 0 || k->len > STORE_KEY_MAX) {
        return STORE_EINVAL;
    }
    if (mode == STORE_APPEND || mode == STORE_PREPEND) {
        return store_concat(t, c, mode, k, in, hv, cas_out);
    }
    if (total > s->item_max) {
        return STORE_E2BIG;
    }
    /* Allocate and copy before locking: the stripe is held only to link. */
    nit = store_mem_item_alloc(s, total, c->now);
    if (nit == NULL) {
        return STORE_ENOMEM;
    }
    item_fill(nit, k, in->len, in->flags, in->exptime, c->now);
    if (in->len > 0) {
        memcpy(item_value(nit), in->data, in->len);
    }

    pthread_mutex_lock(m);
    old = find_live(t, hv, k, c->now, false);
    rc = store_check(mode, in->cas, old);
    if (in->cas != 0 && old != NULL) {
        mem_ctr_inc(&t->ctr.cls[old->clsid][rc == STORE_OK ? CTR_CAS_HITS
                                                           : CTR_CAS_BADVAL]);
    }
    if (rc == STORE_OK) {
        mem_ctr_inc(&t->ctr.cls[nit->clsid][CTR_CMD_SET]);
        commit(t, hv, nit, old);
        *cas_out = nit->cas;
        nit = NULL;
    }
    pthread_mutex_unlock(m);
    if (nit != NULL) {
        store_mem_item_free(s, &nit);
    }
    return rc;
}

static store_rc_e
mem_del(struct store_thr *t, struct store_call *c, const struct store_key *k,
        uint64_t cas)
{
    struct store *s = t->s;
    uint64_t hv = store_mem_hash(s->seed, k->data, k->len);
    pthread_mutex_t *m = mem_stripe(s, hv);
    struct item *it;
    store_rc_e rc = STORE_OK;

    note_now(s, c->now);
    pthread_mutex_lock(m);
    it = find_live(t, hv, k, c->now, false);
    if (it == NULL) {
        rc = STORE_ENOENT;
    } else if (cas != 0 && cas != it->cas) {
        rc = STORE_EEXISTS;
    } else {
        mem_ctr_inc(&t->ctr.cls[it->clsid][CTR_DELETE_HITS]);
        store_mem_unlink(s, hv, it);
    }
    pthread_mutex_unlock(m);
    return rc;
}

/*
 * Links a decimal value for key in place of old, padded to old's length
 * as memcached's in-place rewrite leaves it; caller holds the stripe.
 */
static store_rc_e
arith_put(struct store_thr *t, struct store_call *c, uint64_t hv,
          const struct store_key *k, uint64_t v, uint32_t flags,
          uint32_t exptime, struct item *old, uint64_t *cas_out)
{
    size_t old_len = old != NULL ? old->vlen : 0;
    size_t n = arith_len(v, old_len);
    struct item *nit = store_mem_item_alloc(t->s, mem_item_total(k->len, n),
                                            c->now);

    if (nit == NULL) {
        return STORE_ENOMEM;
    }
    item_fill(nit, k, (uint32_t)n, flags, exptime, c->now);
    (void)arith_format(v, old_len, (char *)item_value(nit));
    commit(t, hv, nit, old);
    *cas_out = nit->cas;
    return STORE_OK;
}

static store_rc_e
mem_arith(struct store_thr *t, struct store_call *c, const struct store_key *k,
          const struct store_delta *d, uint64_t *value, uint64_t *cas_out)
{
    struct store *s = t->s;
    uint64_t hv = store_mem_hash(s->seed, k->data, k->len);
    pthread_mutex_t *m = mem_stripe(s, hv);
    struct item *it;
    uint64_t v;
    store_rc_e rc;

    note_now(s, c->now);
    if (k->len == 0 || k->len > STORE_KEY_MAX) {
        return STORE_EINVAL;
    }
    pthread_mutex_lock(m);
    it = find_live(t, hv, k, c->now, false);
    if (it == NULL) {
        /* memcached creates even when a CAS was given. */
        if (!d->create) {
            rc = STORE_ENOENT;
        } else {
            v = d->initial;
            rc = arith_put(t, c, hv, k, v, 0, d->exptime, NULL, cas_out);
        }
    } else if (it->vlen == 0) {
        rc = STORE_EDELTA;
    } else if (d->cas != 0 && d->cas != it->cas) {
        rc = STORE_EEXISTS;
    } else if (!arith_parse((const char *)item_value(it), it->vlen, &v)) {
        rc = STORE_EDELTA;
    } else {
        mem_ctr_inc(&t->ctr.cls[it->clsid][d->decr ? CTR_DECR_HITS
                                                   : CTR_INCR_HITS]);
        v = arith_apply(v, d->by, d->decr);
        rc = arith_put(t, c, hv, k, v, it->flags, it->exptime, it, cas_out);
    }
    pthread_mutex_unlock(m);
    if (rc == STORE_OK) {
        *value = v;
    }
    return rc;
}

static store_rc_e
mem_touch(struct store_thr *t, struct store_call *c, const struct store_key *k,
          uint32_t exptime)
{
    struct store *s = t->s;
    uint64_t hv = store_mem_hash(s->seed, k->data, k->len);
    pthread_mutex_t *m = mem_stripe(s, hv);
    struct item *it;

    note_now(s, c->now);
    pthread_mutex_lock(m);
    it = find_live(t, hv, k, c->now, true);
    if (it != NULL) {
        it->exptime = exptime;
        mem_ctr_inc(&t->ctr.cls[it->clsid][CTR_TOUCH_HITS]);
    }
    pthread_mutex_unlock(m);
    return it != NULL ? STORE_OK : STORE_ENOENT;
}

static store_rc_e
mem_flush(struct store_thr *t, struct store_call *c, uint32_t when)
{
    struct store *s = t->s;

    note_now(s, c->now);
    if (when <= c->now) {
        /* Every CAS handed out so far is dead; a pending delay is moot. */
        atomic_store_explicit(&s->flush_time, 0, memory_order_relaxed);
        atomic_store_explicit(&s->flush_cas,
                              atomic_load_explicit(&s->cas_next,
                                                   memory_order_relaxed),
                              memory_order_relaxed);
    } else {
        atomic_store_explicit(&s->flush_time, when, memory_order_relaxed);
    }
    return STORE_OK;
}

static store_rc_e
mem_attach(struct store *s, struct store_thr **out)
{
    struct store_thr *t = calloc(1, sizeof(*t));

    if (t == NULL) {
        return STORE_ENOMEM;
    }
    t->s = s;
    pthread_mutex_lock(&s->thr_lock);
    t->next = s->thrs;
    if (s->thrs != NULL) {
        s->thrs->prev = t;
    }
    s->thrs = t;
    pthread_mutex_unlock(&s->thr_lock);
    *out = t;
    return STORE_OK;
}

static void
mem_detach(struct store_thr **tp)
{
    struct store_thr *t = *tp;
    struct store *s;

    if (t == NULL) {
        return;
    }
    s = t->s;
    pthread_mutex_lock(&s->thr_lock);
    store_mem_ctr_retire(s, &t->ctr);
    if (t->prev != NULL) {
        t->prev->next = t->next;
    } else {
        s->thrs = t->next;
    }
    if (t->next != NULL) {
        t->next->prev = t->prev;
    }
    pthread_mutex_unlock(&s->thr_lock);
    free(t);
    *tp = NULL;
}

/* What open has set up so far, so that a failure undoes exactly that. */
struct open_state {
    unsigned stripes;
    bool     thr_lock;
    bool     maint_sync;
    bool     slabs;
};

static void
mem_destroy(struct store *s, const struct open_state *st)
{
    store_mem_table_destroy(&s->tab);
    store_mem_table_destroy(&s->old);
    if (st->slabs) {
        store_mem_slab_teardown(s);
    }
    if (st->maint_sync) {
        pthread_cond_destroy(&s->maint_cond);
        pthread_mutex_destroy(&s->maint_lock);
    }
    if (st->thr_lock) {
        pthread_mutex_destroy(&s->thr_lock);
    }
    for (unsigned i = 0; i < st->stripes; i++) {
        pthread_mutex_destroy(&s->stripe[i]);
    }
    free(s);
}

static bool
maint_sync_init(struct store *s)
{
    pthread_condattr_t ca;
    bool ok;

    if (pthread_mutex_init(&s->maint_lock, NULL) != 0) {
        return false;
    }
    /* Timed waits on the monotonic clock: wall clock jumps must not stall. */
    if (pthread_condattr_init(&ca) != 0) {
        pthread_mutex_destroy(&s->maint_lock);
        return false;
    }
    ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
         pthread_cond_init(&s->maint_cond, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!ok) {
        pthread_mutex_destroy(&s->maint_lock);
    }
    return ok;
}

/* Tells the opener why, when it gave room for a reason. */
static void
open_err(const struct store_cfg *cfg, const char *why)
{
    if (cfg->err != NULL && cfg->errlen > 0) {
        snprintf(cfg->err, cfg->errlen, "memory: %s", why);
    }
}

static store_rc_e
mem_open(const struct store_cfg *cfg, struct store **out)
{
    struct open_state st = { 0, false, false, false };
    struct store *s;
    uint32_t chunk_min = cfg->chunk_min != 0 ? cfg->chunk_min
                                              : DEFAULT_CHUNK_MIN;
    double factor = cfg->factor != 0.0 ? cfg->factor : DEFAULT_FACTOR;
    store_rc_e rc = STORE_ENOMEM;

    *out = NULL;
    /* Class locks sit on their own cache lines: calloc is not enough. */
    s = aligned_alloc(_Alignof(struct store), sizeof(*s));
    if (s == NULL) {
        return STORE_ENOMEM;
    }
    memset(s, 0, sizeof(*s));
    s->mem_limit = cfg->mem_limit != 0 ? cfg->mem_limit : DEFAULT_MEM_LIMIT;
    s->item_max = cfg->item_max != 0 ? cfg->item_max : DEFAULT_ITEM_MAX;
    s->no_evict = cfg->no_evict;
    s->seed = HASH_SEED;
    atomic_init(&s->now_seen, cfg->now);
    for (; st.stripes < MEM_NSTRIPE; st.stripes++) {
        if (pthread_mutex_init(&s->stripe[st.stripes], NULL) != 0) {
            goto fail;
        }
    }
    st.thr_lock = pthread_mutex_init(&s->thr_lock, NULL) == 0;
    if (!st.thr_lock) {
        goto fail;
    }
    st.maint_sync = maint_sync_init(s);
    if (!st.maint_sync) {
        goto fail;
    }
    if (s->item_max < ITEM_MAX_LOWEST || s->item_max > ITEM_MAX_HIGHEST) {
        open_err(cfg, "item size limit must be 1 KB to 1 GB");
        rc = STORE_EINVAL;
        goto fail;
    }
    if (!(factor > 1.0) || factor > 100.0) {
        open_err(cfg, "growth factor must be above 1");
        rc = STORE_EINVAL;
        goto fail;
    }
    st.slabs = store_mem_slab_setup(s, chunk_min, factor);
    if (!st.slabs) {
        open_err(cfg, "smallest chunk larger than the item size limit");
        rc = STORE_EINVAL;
        goto fail;
    }
    s->tab = store_mem_table_create(MEM_HASH_POWER0);
    if (s->tab == NULL) {
        goto fail;
    }
    if (!store_mem_maint_start(s)) {
        goto fail;
    }
    *out = s;
    return STORE_OK;
fail:
    mem_destroy(s, &st);
    return rc;
}

static void
mem_close(struct store **sp)
{
    struct store *s = *sp;
    struct open_state st = { MEM_NSTRIPE, true, true, true };

    if (s == NULL) {
        return;
    }
    store_mem_maint_stop(s);
    mem_destroy(s, &st);
    *sp = NULL;
}

const struct store_ops store_mem_ops = {
    .version = STORE_OPS_V1,
    .name = "memory",
    .open = mem_open,
    .close = mem_close,
    .attach = mem_attach,
    .detach = mem_detach,
    .get = mem_get,
    .release = mem_release,
    .store = mem_store,
    .del = mem_del,
    .arith = mem_arith,
    .touch = mem_touch,
    .flush = mem_flush,
    .stats = store_mem_stats,
    .stats_group = store_mem_stats_group,
};
