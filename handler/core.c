/*
 * Protocol-neutral operations. Every counter memcached keeps per command is
 * bumped here, once, so text and binary agree on what stats say.
 */
#include "handler/core.h"
#include "handler/text.h"
#include "storage/rules.h"

#include <string.h>

uint32_t
handler_exptime(int64_t ttl, uint32_t now)
{
    if (ttl == 0) {
        return 0;
    }
    if (ttl < 0) {
        return 1;   /* already expired: any time before now */
    }
    if (ttl > HANDLER_MAX_RELATIVE) {
        return ttl > UINT32_MAX ? UINT32_MAX : (uint32_t)ttl;
    }
    if ((uint64_t)now + (uint64_t)ttl > UINT32_MAX) {
        return UINT32_MAX;
    }
    return now + (uint32_t)ttl;
}

void
hcore_settle(struct hctx *cx, const void *key, size_t keylen)
{
    if (cx->defer != NULL) {
        cx->defer->settle(cx->defer, key, keylen);
    }
}

void
handler_set_done(struct hctx *cx, const struct hset *hs, store_rc_e rc,
                 uint64_t cas)
{
    hcore_store_count(cx, 0, rc);
    if (rc == STORE_E2BIG || rc == STORE_ENOMEM) {
        /* As a set run at once: the old value must not stay readable. */
        hcore_drop(cx, hs->key, hs->keylen);
    }
    if (hs->bin) {
        hbin_set_reply(cx, hs->opcode, hs->opaque, hs->quiet, rc, cas);
    } else {
        htext_set_reply(cx, hs->quiet, rc);
    }
}

size_t
handler_set_failure(const struct hset *hs, char *out)
{
    if (hs->bin) {
        struct proto_bin_req rq;

        memset(&rq, 0, sizeof(rq));
        rq.opcode = hs->opcode;
        rq.opaque = hs->opaque;
        return handler_bin_failure(&rq, out);
    } else {
        struct proto_text_req rq;

        memset(&rq, 0, sizeof(rq));
        rq.cmd = PROTO_TEXT_SET;
        rq.noreply = hs->quiet;
        return handler_text_failure(&rq, out);
    }
}

struct store_call
hcore_call(struct hctx *cx)
{
    struct store_call c = { cx->now, &cx->out->sink, cx->wait, false };

    return c;
}

void
hcore_after(struct hctx *cx, const struct store_call *c)
{
    if (c->pending) {
        cx->pending++;
    }
}

bool
hcore_too_large(const struct hctx *cx, size_t keylen, uint32_t flags,
                size_t vlen)
{
    return store_too_large(cx->set->item_size_max, keylen, flags, vlen);
}

store_rc_e
hcore_get(struct hctx *cx, const void *key, size_t keylen,
          const uint32_t *touch, struct store_item *out)
{
    struct store_call c = hcore_call(cx);
    struct store_key k = { key, keylen };
    store_rc_e rc;

    if (touch != NULL) {
        hcore_settle(cx, NULL, 0);
    } else {
        hcore_settle(cx, key, keylen);
    }
    rc = cx->ops->get(cx->thr, &c, &k, touch, out);

    hcore_after(cx, &c);
    if (touch != NULL) {
        HSTAT_INC(cx->st, cmd_touch);
        if (rc == STORE_OK) {
            HSTAT_INC(cx->st, touch_hits);
        } else {
            HSTAT_INC(cx->st, touch_misses);
        }
    } else {
        HSTAT_INC(cx->st, cmd_get);
        if (rc == STORE_OK) {
            HSTAT_INC(cx->st, get_hits);
        } else {
            HSTAT_INC(cx->st, get_misses);
        }
    }
    return rc;
}

void
hcore_drop(struct hctx *cx, const void *key, size_t keylen)
{
    struct store_call c = hcore_call(cx);
    struct store_key k = { key, keylen };

    hcore_settle(cx, NULL, 0);
    (void)cx->ops->del(cx->thr, &c, &k, 0);
    hcore_after(cx, &c);
}

store_rc_e
hcore_store(struct hctx *cx, store_mode_e m, const void *key, size_t keylen,
            const void *val, size_t vlen, uint32_t flags, uint32_t exptime,
            uint64_t cas, uint64_t *cas_out)
{
    struct store_call c = hcore_call(cx);
    struct store_key k = { key, keylen };
    struct store_item in = { val, (uint32_t)vlen, flags, exptime, cas, NULL };
    store_rc_e rc;

    HSTAT_INC(cx->st, cmd_set);
    if (hcore_too_large(cx, keylen, flags, vlen)) {
        rc = STORE_E2BIG;
    } else {
        hcore_settle(cx, NULL, 0);
        rc = cx->ops->store(cx->thr, &c, m, &k, &in, cas_out);
        hcore_after(cx, &c);
        if (rc == STORE_E2BIG && (m == STORE_APPEND || m == STORE_PREPEND)) {
            /* The piece fits but the joined item does not: memcached
             * fails that allocation and says only "not stored". */
            rc = STORE_NOT_STORED;
        }
    }
    hcore_store_count(cx, cas, rc);
    return rc;
}

void
hcore_store_count(struct hctx *cx, uint64_t cas, store_rc_e rc)
{
    if (rc == STORE_E2BIG) {
        HSTAT_INC(cx->st, store_too_large);
    } else if (rc == STORE_ENOMEM) {
        HSTAT_INC(cx->st, store_no_memory);
    }
    if (cas != 0) {
        if (rc == STORE_OK) {
            HSTAT_INC(cx->st, cas_hits);
        } else if (rc == STORE_EEXISTS) {
            HSTAT_INC(cx->st, cas_badval);
        } else if (rc == STORE_ENOENT) {
            HSTAT_INC(cx->st, cas_misses);
        }
    }
}

store_rc_e
hcore_delete(struct hctx *cx, const void *key, size_t keylen, uint64_t cas)
{
    struct store_call c = hcore_call(cx);
    struct store_key k = { key, keylen };
    store_rc_e rc;

    hcore_settle(cx, NULL, 0);
    rc = cx->ops->del(cx->thr, &c, &k, cas);
    hcore_after(cx, &c);
    if (rc == STORE_OK) {
        HSTAT_INC(cx->st, delete_hits);
    } else if (rc == STORE_ENOENT) {
        HSTAT_INC(cx->st, delete_misses);
    }
    return rc;
}

store_rc_e
hcore_arith(struct hctx *cx, const void *key, size_t keylen,
            const struct store_delta *d, uint64_t *value, uint64_t *cas_out)
{
    struct store_call c = hcore_call(cx);
    struct store_key k = { key, keylen };
    store_rc_e rc;

    hcore_settle(cx, NULL, 0);
    rc = cx->ops->arith(cx->thr, &c, &k, d, value, cas_out);
    hcore_after(cx, &c);
    if (rc == STORE_ENOENT) {
        if (d->decr) {
            HSTAT_INC(cx->st, decr_misses);
        } else {
            HSTAT_INC(cx->st, incr_misses);
        }
    } else if (rc == STORE_OK) {
        if (d->decr) {
            HSTAT_INC(cx->st, decr_hits);
        } else {
            HSTAT_INC(cx->st, incr_hits);
        }
    }
    return rc;
}

store_rc_e
hcore_touch(struct hctx *cx, const void *key, size_t keylen,
            uint32_t exptime)
{
    struct store_call c = hcore_call(cx);
    struct store_key k = { key, keylen };
    store_rc_e rc;

    hcore_settle(cx, NULL, 0);
    rc = cx->ops->touch(cx->thr, &c, &k, exptime);
    hcore_after(cx, &c);
    HSTAT_INC(cx->st, cmd_touch);
    if (rc == STORE_OK) {
        HSTAT_INC(cx->st, touch_hits);
    } else {
        HSTAT_INC(cx->st, touch_misses);
    }
    return rc;
}

store_rc_e
hcore_flush(struct hctx *cx, int64_t delay)
{
    struct store_call c = hcore_call(cx);
    uint32_t when = delay > 0 ? handler_exptime(delay, cx->now) : cx->now;
    store_rc_e rc;

    hcore_settle(cx, NULL, 0);
    rc = cx->ops->flush(cx->thr, &c, when);
    hcore_after(cx, &c);
    HSTAT_INC(cx->st, cmd_flush);
    return rc;
}
