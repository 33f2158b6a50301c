/*
 * Binary protocol commands: one function per command, dispatched through a
 * table indexed by opcode. Each turns a decoded request into hcore calls and
 * formats the answer as memcached 1.6 does, including which replies a quiet
 * variant swallows (successes, and misses for GETQ/GETKQ/GATQ/GATKQ).
 */
#include "handler/core.h"

#include <stdio.h>
#include <string.h>

/* memcached defines 0x84 for server-side failures it never reports; a
 * disk backend that fails an I/O does. */
#define BIN_EINTERNAL 0x84

typedef handler_act_e (*bin_fn)(struct hctx *cx,
                                const struct proto_bin_req *rq);

/* Queues one response: header, extras, key and value, in that order. */
static void
bin_reply(struct hctx *cx, const struct proto_bin_req *rq, uint16_t status,
          const void *ext, uint8_t extlen, const void *key, uint16_t keylen,
          const void *val, uint32_t vlen, uint64_t cas)
{
    uint8_t *p = (uint8_t *)reply_reserve(cx->out, PROTO_BIN_HDR + extlen +
                                          keylen + vlen);

    if (p == NULL) {
        return;
    }
    proto_bin_encode_header(p, rq->opcode, status, extlen, keylen, vlen,
                            rq->opaque, cas);
    p += PROTO_BIN_HDR;
    if (extlen > 0) {
        memcpy(p, ext, extlen);
        p += extlen;
    }
    if (keylen > 0) {
        memcpy(p, key, keylen);
        p += keylen;
    }
    if (vlen > 0) {
        memcpy(p, val, vlen);
    }
}

/* An error reply: memcached's text for the status as the body. */
static void
bin_error(struct hctx *cx, const struct proto_bin_req *rq, uint16_t status)
{
    const char *msg = proto_bin_status_text(status);

    bin_reply(cx, rq, status, NULL, 0, NULL, 0, msg, (uint32_t)strlen(msg),
              0);
}

/*
 * A failed command: the status for rc, with memcached's text, or for a
 * failure of the store itself (no status of memcached's fits) what failed.
 */
static void
bin_fail(struct hctx *cx, const struct proto_bin_req *rq, store_rc_e rc);

/* The single place a storage result becomes a wire status. */
static uint16_t
bin_status(store_rc_e rc)
{
    switch (rc) {
    case STORE_OK:
        return PROTO_BIN_OK;
    case STORE_ENOENT:
        return PROTO_BIN_ENOENT;
    case STORE_EEXISTS:
        return PROTO_BIN_EEXISTS;
    case STORE_NOT_STORED:
        return PROTO_BIN_NOT_STORED;
    case STORE_E2BIG:
        return PROTO_BIN_E2BIG;
    case STORE_EDELTA:
        return PROTO_BIN_EDELTA;
    case STORE_ENOMEM:
        return PROTO_BIN_ENOMEM;
    default:
        return BIN_EINTERNAL;
    }
}

static void
bin_fail(struct hctx *cx, const struct proto_bin_req *rq, store_rc_e rc)
{
    uint16_t status = bin_status(rc);
    const char *msg = status == BIN_EINTERNAL ? store_strerror(rc)
                                              : proto_bin_status_text(status);

    bin_reply(cx, rq, status, NULL, 0, NULL, 0, msg, (uint32_t)strlen(msg),
              0);
}

static handler_act_e
bin_get(struct hctx *cx, const struct proto_bin_req *rq)
{
    struct store_item it;
    uint32_t exp = 0;
    bool touch = rq->base_op == PROTO_BIN_TOUCH ||
                 rq->base_op == PROTO_BIN_GAT;
    store_rc_e rc;

    if (touch) {
        exp = handler_exptime(rq->exptime, cx->now);
    }
    rc = hcore_get(cx, rq->key, rq->keylen, touch ? &exp : NULL, &it);
    if (rc == STORE_OK) {
        uint8_t flags[4];
        bool value = rq->base_op != PROTO_BIN_TOUCH;
        uint16_t klen = rq->want_key ? rq->keylen : 0;
        uint32_t vlen = value ? it.len : 0;
        uint8_t *p = (uint8_t *)reply_reserve(cx->out, PROTO_BIN_HDR + 4 +
                                              klen);

        proto_put_u32(flags, it.flags);
        if (p != NULL) {
            proto_bin_encode_header(p, rq->opcode, PROTO_BIN_OK, 4, klen,
                                    vlen, rq->opaque, it.cas);
            memcpy(p + PROTO_BIN_HDR, flags, 4);
            memcpy(p + PROTO_BIN_HDR + 4, rq->key, klen);
        }
        if (value) {
            reply_item(cx->out, &it);
        } else {
            cx->ops->release(cx->thr, &it);
        }
        return HANDLER_CONTINUE;
    }
    if (rq->quiet && rc == STORE_ENOENT) {
        return HANDLER_CONTINUE;
    }
    if (rc == STORE_ENOENT && rq->want_key) {
        /* memcached answers a GETK miss with the key and no message. */
        bin_reply(cx, rq, PROTO_BIN_ENOENT, NULL, 0, rq->key, rq->keylen,
                  NULL, 0, 0);
        return HANDLER_CONTINUE;
    }
    bin_fail(cx, rq, rc);
    return HANDLER_CONTINUE;
}

static handler_act_e
bin_store(struct hctx *cx, const struct proto_bin_req *rq)
{
    store_mode_e m;
    uint32_t flags = rq->flags;
    uint32_t exp = 0;
    uint64_t cas = 0;
    store_rc_e rc;

    switch (rq->base_op) {
    case PROTO_BIN_ADD:
        m = STORE_ADD;
        break;
    case PROTO_BIN_REPLACE:
        m = STORE_REPLACE;
        break;
    case PROTO_BIN_APPEND:
        m = STORE_APPEND;
        break;
    case PROTO_BIN_PREPEND:
        m = STORE_PREPEND;
        break;
    default:
        m = STORE_SET;
        break;
    }
    if (m == STORE_APPEND || m == STORE_PREPEND) {
        flags = 0;
    } else {
        exp = handler_exptime(rq->exptime, cx->now);
    }
    if (m == STORE_SET && rq->cas == 0 && cx->defer != NULL &&
        !hcore_too_large(cx, rq->keylen, flags, rq->vlen)) {
        struct hset hs = { true, rq->quiet, rq->opcode, rq->opaque, rq->key,
                           rq->keylen, rq->value, rq->vlen, flags, exp };

        if (cx->defer->take(cx->defer, cx, &hs)) {
            HSTAT_INC(cx->st, cmd_set);
            return HANDLER_CONTINUE;
        }
    }
    rc = hcore_store(cx, m, rq->key, rq->keylen, rq->value, rq->vlen, flags,
                     exp, rq->cas, &cas);
    if ((rc == STORE_E2BIG || rc == STORE_ENOMEM) &&
        rq->base_op == PROTO_BIN_SET) {
        hcore_drop(cx, rq->key, rq->keylen);
    }
    if (rc == STORE_OK) {
        if (!rq->quiet) {
            bin_reply(cx, rq, PROTO_BIN_OK, NULL, 0, NULL, 0, NULL, 0, cas);
        }
        return HANDLER_CONTINUE;
    }
    if (rc == STORE_NOT_STORED) {
        /* memcached reports add/replace failures as exists/not found. */
        if (m == STORE_ADD) {
            rc = STORE_EEXISTS;
        } else if (m == STORE_REPLACE) {
            rc = STORE_ENOENT;
        }
    } else if (rc == STORE_ENOENT && (m == STORE_APPEND ||
                                      m == STORE_PREPEND)) {
        rc = STORE_NOT_STORED;
    }
    bin_fail(cx, rq, rc);
    return HANDLER_CONTINUE;
}

void
hbin_set_reply(struct hctx *cx, uint8_t opcode, uint32_t opaque, bool quiet,
               store_rc_e rc, uint64_t cas)
{
    struct proto_bin_req rq;

    memset(&rq, 0, sizeof(rq));
    rq.opcode = opcode;
    rq.opaque = opaque;
    if (rc != STORE_OK) {
        bin_fail(cx, &rq, rc);
    } else if (!quiet) {
        bin_reply(cx, &rq, PROTO_BIN_OK, NULL, 0, NULL, 0, NULL, 0, cas);
    }
}

static handler_act_e
bin_delete(struct hctx *cx, const struct proto_bin_req *rq)
{
    store_rc_e rc = hcore_delete(cx, rq->key, rq->keylen, rq->cas);

    if (rc == STORE_OK) {
        if (!rq->quiet) {
            bin_reply(cx, rq, PROTO_BIN_OK, NULL, 0, NULL, 0, NULL, 0, 0);
        }
        return HANDLER_CONTINUE;
    }
    bin_fail(cx, rq, rc);
    return HANDLER_CONTINUE;
}

static handler_act_e
bin_arith(struct hctx *cx, const struct proto_bin_req *rq)
{
    struct store_delta d;
    uint64_t value = 0;
    uint64_t cas = 0;
    store_rc_e rc;

    memset(&d, 0, sizeof(d));
    d.by = rq->delta;
    d.initial = rq->initial;
    d.decr = rq->base_op == PROTO_BIN_DECR;
    d.create = rq->exptime != 0xffffffffu;
    d.exptime = d.create ? handler_exptime(rq->exptime, cx->now) : 0;
    d.cas = rq->cas;
    rc = hcore_arith(cx, rq->key, rq->keylen, &d, &value, &cas);
    if (rc == STORE_OK) {
        if (!rq->quiet) {
            uint8_t v[8];

            proto_put_u64(v, value);
            bin_reply(cx, rq, PROTO_BIN_OK, NULL, 0, NULL, 0, v, 8, cas);
        }
        return HANDLER_CONTINUE;
    }
    bin_fail(cx, rq, rc);
    return HANDLER_CONTINUE;
}

static handler_act_e
bin_quit(struct hctx *cx, const struct proto_bin_req *rq)
{
    /* QUITQ adds no reply, but those before it still go out. */
    if (!rq->quiet) {
        bin_reply(cx, rq, PROTO_BIN_OK, NULL, 0, NULL, 0, NULL, 0, 0);
    }
    return HANDLER_CLOSE_AFTER_WRITE;
}

static handler_act_e
bin_flush(struct hctx *cx, const struct proto_bin_req *rq)
{
    store_rc_e rc = hcore_flush(cx, rq->has_exptime ? rq->exptime : 0);

    if (rc != STORE_OK) {
        bin_fail(cx, rq, rc);
    } else if (!rq->quiet) {
        bin_reply(cx, rq, PROTO_BIN_OK, NULL, 0, NULL, 0, NULL, 0, 0);
    }
    return HANDLER_CONTINUE;
}

static handler_act_e
bin_noop(struct hctx *cx, const struct proto_bin_req *rq)
{
    bin_reply(cx, rq, PROTO_BIN_OK, NULL, 0, NULL, 0, NULL, 0, 0);
    return HANDLER_CONTINUE;
}

static handler_act_e
bin_version(struct hctx *cx, const struct proto_bin_req *rq)
{
    bin_reply(cx, rq, PROTO_BIN_OK, NULL, 0, NULL, 0, STASHD_VERSION,
              (uint32_t)strlen(STASHD_VERSION), 0);
    return HANDLER_CONTINUE;
}

struct bin_stat_arg {
    struct hctx                 *cx;
    const struct proto_bin_req *rq;
};

static void
bin_stat_line(void *arg, const char *name, const char *value)
{
    struct bin_stat_arg *a = arg;

    bin_reply(a->cx, a->rq, PROTO_BIN_OK, NULL, 0, name,
              (uint16_t)strlen(name), value, (uint32_t)strlen(value), 0);
}

static handler_act_e
bin_stat(struct hctx *cx, const struct proto_bin_req *rq)
{
    char group[PROTO_KEY_MAX + 1];
    struct bin_stat_arg a = { cx, rq };

    if (rq->keylen > 0) {
        memcpy(group, rq->key, rq->keylen);
    }
    group[rq->keylen] = '\0';
    if (strcmp(group, "conns") == 0) {
        /* memcached lists connections over the text protocol only. */
        bin_error(cx, rq, PROTO_BIN_ENOENT);
        return HANDLER_CONTINUE;
    }
    if (strcmp(group, "reset") == 0) {
        handler_stats(cx, group, bin_stat_line, &a);
        bin_reply(cx, rq, PROTO_BIN_OK, NULL, 0, NULL, 0, NULL, 0, 0);
        return HANDLER_CONTINUE;
    }
    if (!handler_stats(cx, group, bin_stat_line, &a)) {
        bin_error(cx, rq, PROTO_BIN_ENOENT);
        return HANDLER_CONTINUE;
    }
    bin_reply(cx, rq, PROTO_BIN_OK, NULL, 0, NULL, 0, NULL, 0, 0);
    return HANDLER_CONTINUE;
}

static const bin_fn by_op[256] = {
    [PROTO_BIN_GET] = bin_get,
    [PROTO_BIN_TOUCH] = bin_get,
    [PROTO_BIN_GAT] = bin_get,
    [PROTO_BIN_SET] = bin_store,
    [PROTO_BIN_ADD] = bin_store,
    [PROTO_BIN_REPLACE] = bin_store,
    [PROTO_BIN_APPEND] = bin_store,
    [PROTO_BIN_PREPEND] = bin_store,
    [PROTO_BIN_DELETE] = bin_delete,
    [PROTO_BIN_INCR] = bin_arith,
    [PROTO_BIN_DECR] = bin_arith,
    [PROTO_BIN_QUIT] = bin_quit,
    [PROTO_BIN_FLUSH] = bin_flush,
    [PROTO_BIN_NOOP] = bin_noop,
    [PROTO_BIN_VERSION] = bin_version,
    [PROTO_BIN_STAT] = bin_stat,
};

handler_act_e
handler_bin(struct hctx *cx, const struct proto_bin_req *rq)
{
    bin_fn fn = by_op[rq->base_op];

    if (fn == NULL) {
        bin_error(cx, rq, PROTO_BIN_UNKNOWN);
        return HANDLER_CONTINUE;
    }
    return fn(cx, rq);
}

size_t
handler_bin_failure(const struct proto_bin_req *rq, char *out)
{
    const char *msg = store_strerror(STORE_EIO);
    size_t n = strlen(msg);

    /* Quiet or not: an error is always sent. */
    proto_bin_encode_header((uint8_t *)out, rq->opcode, BIN_EINTERNAL, 0, 0,
                            (uint32_t)n, rq->opaque, 0);
    memcpy(out + PROTO_BIN_HDR, msg, n);
    return PROTO_BIN_HDR + n;
}

handler_act_e
handler_bin_refused(struct hctx *cx, proto_rc_e rc,
                    const struct proto_bin_req *rq)
{
    switch (rc) {
    case PROTO_EUNKNOWN:
        bin_error(cx, rq, PROTO_BIN_UNKNOWN);
        return HANDLER_CONTINUE;
    case PROTO_E2BIG:
        if (rq->base_op == PROTO_BIN_SET && rq->key != NULL) {
            hcore_drop(cx, rq->key, rq->keylen);
        }
        bin_error(cx, rq, PROTO_BIN_E2BIG);
        return HANDLER_CONTINUE;
    case PROTO_EINVAL:
        bin_error(cx, rq, PROTO_BIN_EINVAL);
        return HANDLER_CLOSE_AFTER_WRITE;
    case PROTO_EFRAME:
        /* memcached reads past the packet it cannot frame, answers
         * "unknown command" and gives up on the connection. */
        bin_error(cx, rq, PROTO_BIN_UNKNOWN);
        return HANDLER_CLOSE_AFTER_WRITE;
    default:
        /* Not our protocol: nothing more is read, but replies to the
         * requests before it still go out, as memcached's do. */
        return HANDLER_CLOSE_AFTER_WRITE;
    }
}
