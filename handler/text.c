/*
 * Text protocol commands: one function per command, dispatched through a
 * table indexed by the decoded command. Semantics come from hcore; this
 * file only chooses memcached's reply line for each outcome, and honours
 * noreply by sending nothing at all.
 */
#include "handler/core.h"
#include "handler/text.h"

#include <stdio.h>
#include <string.h>

typedef handler_act_e (*text_fn)(struct hctx *cx,
                                 const struct proto_text_req *rq);

static void
line(struct hctx *cx, const char *s)
{
    size_t n = strlen(s);
    char *p = reply_reserve(cx->out, n + 2);

    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\r';
        p[n + 1] = '\n';
    }
}

static void
fixed(struct hctx *cx, const struct proto_text_req *rq, proto_text_reply_e r)
{
    if (!rq->noreply) {
        line(cx, proto_text_reply_text(r));
    }
}

/* A backend failure memcached cannot have, as a SERVER_ERROR line. */
static void
server_error(struct hctx *cx, store_rc_e rc)
{
    char buf[96];

    snprintf(buf, sizeof(buf), "SERVER_ERROR %s", store_strerror(rc));
    line(cx, buf);
}

/*
 * True when rc is a failure of the store itself (an I/O error, damage, a
 * lock held elsewhere), which memcached cannot have: the command did not
 * happen and must never be answered as if it had (NOT_FOUND, OK).
 */
static bool
store_failed(store_rc_e rc)
{
    return rc == STORE_EIO || rc == STORE_ECORRUPT || rc == STORE_ELOCKED ||
           rc == STORE_EINVAL;
}

/* A store failure, answered unless the client asked for no reply. */
static void
failed(struct hctx *cx, const struct proto_text_req *rq, store_rc_e rc)
{
    if (!rq->noreply) {
        server_error(cx, rc);
    }
}

/* One storage result as the text line memcached sends for it. */
static proto_text_reply_e
text_reply_for(store_rc_e rc, bool cas)
{
    switch (rc) {
    case STORE_OK:
        return PROTO_TEXT_R_STORED;
    case STORE_EEXISTS:
        return PROTO_TEXT_R_EXISTS;
    case STORE_ENOENT:
        return cas ? PROTO_TEXT_R_NOT_FOUND : PROTO_TEXT_R_NOT_STORED;
    case STORE_ENOMEM:
        return PROTO_TEXT_R_NO_MEMORY;
    default:
        return PROTO_TEXT_R_NOT_STORED;
    }
}

/* Queues one VALUE line, the data and its "\r\n"; takes over the pin. */
static void
value(struct hctx *cx, const char *key, size_t keylen, struct store_item *it,
      bool with_cas)
{
    char *p = reply_reserve(cx->out, PROTO_TEXT_VALUE_HDR_MAX);

    if (p == NULL) {
        cx->ops->release(cx->thr, it);
        return;
    }
    reply_trim(cx->out, PROTO_TEXT_VALUE_HDR_MAX -
               proto_text_value_header(p, PROTO_TEXT_VALUE_HDR_MAX, key,
                                       keylen, it->flags, it->len, with_cas,
                                       it->cas));
    reply_item(cx->out, it);
    reply_append(cx->out, "\r\n", 2);
}

/*
 * get, gets, gat, gats. Past cx->out_max queued bytes the rest of the keys
 * wait for the client to read, and past cx->keys_max keys for the other
 * clients' turn (false, cx->resume set): a copying backend copies every
 * value it returns, so a line naming one big value many times would cost a
 * copy per key at once, and a line of a million keys would hold up every
 * other connection of the thread while it runs. At least one key runs per
 * call, so the line always progresses. A failure of the store (it could
 * not read, or for gat write, a key) stops the line: *rc says which.
 */
static bool
get_keys(struct hctx *cx, const struct proto_text_req *rq, store_rc_e *rc)
{
    bool with_cas = rq->cmd == PROTO_TEXT_GETS || rq->cmd == PROTO_TEXT_GATS;
    bool touch = rq->cmd == PROTO_TEXT_GAT || rq->cmd == PROTO_TEXT_GATS;
    uint32_t exp = touch ? handler_exptime(rq->exptime, cx->now) : 0;
    size_t pos = 0;
    const char *key;
    size_t keylen;

    cx->keys_run = 0;
    while (proto_text_next_key(rq, &pos, &key, &keylen)) {
        struct store_item it;

        if (cx->keys_run > 0 &&
            ((cx->out_max != 0 && reply_backlog(cx->out) > cx->out_max) ||
             (cx->keys_max != 0 && cx->keys_run >= cx->keys_max))) {
            cx->resume = key;
            return false;
        }
        cx->keys_run++;
        *rc = hcore_get(cx, key, keylen, touch ? &exp : NULL, &it);
        if (*rc == STORE_OK) {
            value(cx, key, keylen, &it, with_cas);
        } else if (store_failed(*rc) || (touch && *rc != STORE_ENOENT)) {
            /* An error ends the reply, never a silent miss. */
            return true;
        }
    }
    *rc = STORE_OK;
    return true;
}

static handler_act_e
text_get(struct hctx *cx, const struct proto_text_req *rq)
{
    store_rc_e rc = STORE_OK;

    if (!get_keys(cx, rq, &rc)) {
        return HANDLER_SUSPEND;
    }
    if (rc != STORE_OK) {
        server_error(cx, rc);
        /* The rest of a line still arriving would be answered after the
         * error: end the connection instead. */
        return rq->partial ? HANDLER_CLOSE_AFTER_WRITE : HANDLER_CONTINUE;
    }
    if (!rq->partial) {
        line(cx, "END");
    }
    return HANDLER_CONTINUE;
}

/* The reply to a storage command that ran with result rc. */
static void
store_reply(struct hctx *cx, bool noreply, bool cas, store_rc_e rc)
{
    if (noreply) {
        return;
    }
    if (rc == STORE_E2BIG) {
        line(cx, proto_text_error_text(PROTO_TEXT_E_TOO_LARGE));
    } else if (store_failed(rc)) {
        /* memcached has no such failure; say what happened. */
        server_error(cx, rc);
    } else {
        line(cx, proto_text_reply_text(text_reply_for(rc, cas)));
    }
}

static handler_act_e
text_store(struct hctx *cx, const struct proto_text_req *rq)
{
    store_mode_e m = STORE_SET;
    uint32_t exp = handler_exptime(rq->exptime, cx->now);
    uint64_t cas = 0;
    store_rc_e rc;

    switch (rq->cmd) {
    case PROTO_TEXT_ADD:
        m = STORE_ADD;
        break;
    case PROTO_TEXT_REPLACE:
        m = STORE_REPLACE;
        break;
    case PROTO_TEXT_APPEND:
        m = STORE_APPEND;
        break;
    case PROTO_TEXT_PREPEND:
        m = STORE_PREPEND;
        break;
    default:
        break;
    }
    if (rq->cmd == PROTO_TEXT_CAS && rq->cas == 0 &&
        !hcore_too_large(cx, rq->keylen, rq->flags, rq->vlen)) {
        /* No item ever has CAS 0, so memcached's compare always fails:
         * EXISTS when the key is there, NOT_FOUND when not (a value too
         * large is refused first: memcached sizes the item before). */
        struct store_call c = hcore_call(cx);
        struct store_key k = { rq->key, rq->keylen };
        struct store_item it;

        HSTAT_INC(cx->st, cmd_set);
        hcore_settle(cx, rq->key, rq->keylen);
        rc = cx->ops->get(cx->thr, &c, &k, NULL, &it);
        if (rc == STORE_OK) {
            cx->ops->release(cx->thr, &it);
            HSTAT_INC(cx->st, cas_badval);
            fixed(cx, rq, PROTO_TEXT_R_EXISTS);
        } else {
            HSTAT_INC(cx->st, cas_misses);
            fixed(cx, rq, PROTO_TEXT_R_NOT_FOUND);
        }
        return HANDLER_CONTINUE;
    }
    if (rq->cmd == PROTO_TEXT_SET && cx->defer != NULL &&
        !hcore_too_large(cx, rq->keylen, rq->flags, rq->vlen)) {
        struct hset hs = { false, rq->noreply, 0, 0, rq->key, rq->keylen,
                           rq->value, rq->vlen, rq->flags, exp };

        if (cx->defer->take(cx->defer, cx, &hs)) {
            HSTAT_INC(cx->st, cmd_set);
            return HANDLER_CONTINUE;
        }
    }
    rc = hcore_store(cx, m, rq->key, rq->keylen, rq->value, rq->vlen,
                     rq->flags, exp, rq->cmd == PROTO_TEXT_CAS ? rq->cas : 0,
                     &cas);
    if ((rc == STORE_E2BIG || rc == STORE_ENOMEM) &&
        rq->cmd == PROTO_TEXT_SET) {
        hcore_drop(cx, rq->key, rq->keylen);
    }
    store_reply(cx, rq->noreply, rq->cmd == PROTO_TEXT_CAS, rc);
    return HANDLER_CONTINUE;
}

void
htext_set_reply(struct hctx *cx, bool noreply, store_rc_e rc)
{
    store_reply(cx, noreply, false, rc);
}

static handler_act_e
text_delete(struct hctx *cx, const struct proto_text_req *rq)
{
    store_rc_e rc = hcore_delete(cx, rq->key, rq->keylen, 0);

    if (rc != STORE_OK && rc != STORE_ENOENT) {
        failed(cx, rq, rc);
        return HANDLER_CONTINUE;
    }
    fixed(cx, rq, rc == STORE_OK ? PROTO_TEXT_R_DELETED
                                 : PROTO_TEXT_R_NOT_FOUND);
    return HANDLER_CONTINUE;
}

static handler_act_e
text_arith(struct hctx *cx, const struct proto_text_req *rq)
{
    struct store_delta d;
    uint64_t v = 0;
    uint64_t cas = 0;
    store_rc_e rc;

    memset(&d, 0, sizeof(d));
    d.by = rq->delta;
    d.decr = rq->cmd == PROTO_TEXT_DECR;
    rc = hcore_arith(cx, rq->key, rq->keylen, &d, &v, &cas);
    if (rq->noreply) {
        return HANDLER_CONTINUE;
    }
    if (rc == STORE_OK) {
        char *p = reply_reserve(cx->out, PROTO_TEXT_U64_MAX + 2);

        if (p != NULL) {
            size_t n = proto_text_put_u64(p, v);

            p[n] = '\r';
            p[n + 1] = '\n';
            reply_trim(cx->out, PROTO_TEXT_U64_MAX - n);
        }
    } else if (rc == STORE_EDELTA) {
        line(cx, proto_text_reply_text(PROTO_TEXT_R_NON_NUMERIC));
    } else if (rc == STORE_ENOMEM) {
        line(cx, proto_text_reply_text(PROTO_TEXT_R_NO_MEMORY));
    } else if (store_failed(rc)) {
        server_error(cx, rc);
    } else {
        line(cx, proto_text_reply_text(PROTO_TEXT_R_NOT_FOUND));
    }
    return HANDLER_CONTINUE;
}

static handler_act_e
text_touch(struct hctx *cx, const struct proto_text_req *rq)
{
    store_rc_e rc = hcore_touch(cx, rq->key, rq->keylen,
                                handler_exptime(rq->exptime, cx->now));

    if (rc != STORE_OK && rc != STORE_ENOENT) {
        failed(cx, rq, rc);
        return HANDLER_CONTINUE;
    }
    fixed(cx, rq, rc == STORE_OK ? PROTO_TEXT_R_TOUCHED
                                 : PROTO_TEXT_R_NOT_FOUND);
    return HANDLER_CONTINUE;
}

static handler_act_e
text_flush(struct hctx *cx, const struct proto_text_req *rq)
{
    store_rc_e rc = hcore_flush(cx, rq->delay);

    if (rc != STORE_OK) {
        failed(cx, rq, rc);
        return HANDLER_CONTINUE;
    }
    fixed(cx, rq, PROTO_TEXT_R_OK);
    return HANDLER_CONTINUE;
}

static handler_act_e
text_version(struct hctx *cx, const struct proto_text_req *rq)
{
    (void)rq;
    line(cx, "VERSION " STASHD_VERSION);
    return HANDLER_CONTINUE;
}

static handler_act_e
text_verbosity(struct hctx *cx, const struct proto_text_req *rq)
{
    atomic_store(&cx->set->verbosity, (int)(rq->level > 2 ? 2 : rq->level));
    fixed(cx, rq, PROTO_TEXT_R_OK);
    return HANDLER_CONTINUE;
}

static handler_act_e
text_quit(struct hctx *cx, const struct proto_text_req *rq)
{
    /* Replies to the requests before quit still go out. */
    (void)cx;
    (void)rq;
    return HANDLER_CLOSE_AFTER_WRITE;
}

/*
 * shutdown [graceful], with -A. Both modes take the SIGTERM path, which
 * already finishes what was read and closes the store cleanly: memcached's
 * graceful mode differs only for its restartable memory file (-e).
 */
static handler_act_e
text_shutdown(struct hctx *cx, const struct proto_text_req *rq)
{
    size_t pos = 0;
    const char *mode = NULL;
    size_t len = 0;
    size_t nargs = 0;

    if (!cx->set->shutdown) {
        line(cx, proto_text_reply_text(PROTO_TEXT_R_SHUTDOWN_OFF));
        return HANDLER_CONTINUE;
    }
    while (nargs < 2 && proto_text_next_key(rq, &pos, &mode, &len)) {
        nargs++;
    }
    if (nargs == 0 ||
        (nargs == 1 && len == 8 && memcmp(mode, "graceful", 8) == 0)) {
        return HANDLER_SHUTDOWN;
    }
    line(cx, proto_text_reply_text(PROTO_TEXT_R_SHUTDOWN_MODE));
    return HANDLER_CONTINUE;
}

static handler_act_e
text_mn(struct hctx *cx, const struct proto_text_req *rq)
{
    (void)rq;
    line(cx, proto_text_reply_text(PROTO_TEXT_R_MN));
    return HANDLER_CONTINUE;
}

static void
stat_line(void *arg, const char *name, const char *val)
{
    struct hctx *cx = arg;
    size_t nl = strlen(name);
    size_t vl = strlen(val);
    char *p = reply_reserve(cx->out, 5 + nl + 1 + vl + 2);

    if (p != NULL) {
        memcpy(p, "STAT ", 5);
        memcpy(p + 5, name, nl);
        p[5 + nl] = ' ';
        memcpy(p + 6 + nl, val, vl);
        memcpy(p + 6 + nl + vl, "\r\n", 2);
    }
}

/*
 * stats detail: stashd keeps no per-prefix figures, so "on" and "off" are
 * accepted and "dump" lists nothing, as memcached's does with detail off.
 */
static void
text_stats_detail(struct hctx *cx, const struct proto_text_req *rq)
{
    size_t pos = 0;
    const char *tok = NULL;
    size_t len = 0;

    /* args holds "detail <what>": skip the first token. */
    (void)proto_text_next_key(rq, &pos, &tok, &len);
    if (!proto_text_next_key(rq, &pos, &tok, &len)) {
        len = 0;
    }
    if ((len == 2 && memcmp(tok, "on", 2) == 0) ||
        (len == 3 && memcmp(tok, "off", 3) == 0)) {
        line(cx, proto_text_reply_text(PROTO_TEXT_R_OK));
    } else if (len == 4 && memcmp(tok, "dump", 4) == 0) {
        line(cx, proto_text_reply_text(PROTO_TEXT_R_END));
    } else {
        line(cx, proto_text_reply_text(PROTO_TEXT_R_DETAIL_USAGE));
    }
}

static handler_act_e
text_stats(struct hctx *cx, const struct proto_text_req *rq)
{
    char group[PROTO_KEY_MAX + 1];
    size_t n = rq->keylen < PROTO_KEY_MAX ? rq->keylen : PROTO_KEY_MAX;

    if (n > 0) {
        memcpy(group, rq->key, n);
    }
    group[n] = '\0';
    if (strcmp(group, "reset") == 0) {
        (void)handler_stats(cx, group, stat_line, cx);
        line(cx, proto_text_reply_text(PROTO_TEXT_R_RESET));
        return HANDLER_CONTINUE;
    }
    if (strcmp(group, "detail") == 0) {
        text_stats_detail(cx, rq);
        return HANDLER_CONTINUE;
    }
    if (!handler_stats(cx, group, stat_line, cx)) {
        line(cx, proto_text_reply_text(PROTO_TEXT_R_ERROR));
        return HANDLER_CONTINUE;
    }
    line(cx, proto_text_reply_text(PROTO_TEXT_R_END));
    return HANDLER_CONTINUE;
}

static handler_act_e
text_meta(struct hctx *cx, const struct proto_text_req *rq)
{
    /* The meta protocol comes with its own issue; until then its commands
     * are unknown, as in a memcached built without them. */
    (void)rq;
    line(cx, proto_text_reply_text(PROTO_TEXT_R_ERROR));
    return HANDLER_CONTINUE;
}

static const text_fn by_cmd[] = {
    [PROTO_TEXT_GET] = text_get,
    [PROTO_TEXT_GETS] = text_get,
    [PROTO_TEXT_GAT] = text_get,
    [PROTO_TEXT_GATS] = text_get,
    [PROTO_TEXT_SET] = text_store,
    [PROTO_TEXT_ADD] = text_store,
    [PROTO_TEXT_REPLACE] = text_store,
    [PROTO_TEXT_APPEND] = text_store,
    [PROTO_TEXT_PREPEND] = text_store,
    [PROTO_TEXT_CAS] = text_store,
    [PROTO_TEXT_DELETE] = text_delete,
    [PROTO_TEXT_INCR] = text_arith,
    [PROTO_TEXT_DECR] = text_arith,
    [PROTO_TEXT_TOUCH] = text_touch,
    [PROTO_TEXT_FLUSH_ALL] = text_flush,
    [PROTO_TEXT_VERSION] = text_version,
    [PROTO_TEXT_VERBOSITY] = text_verbosity,
    [PROTO_TEXT_QUIT] = text_quit,
    [PROTO_TEXT_STATS] = text_stats,
    [PROTO_TEXT_MN] = text_mn,
    [PROTO_TEXT_SHUTDOWN] = text_shutdown,
    [PROTO_TEXT_META] = text_meta,
};

handler_act_e
handler_text(struct hctx *cx, const struct proto_text_req *rq)
{
    text_fn fn = (size_t)rq->cmd < sizeof(by_cmd) / sizeof(by_cmd[0])
                 ? by_cmd[rq->cmd] : NULL;

    if (fn == NULL) {
        line(cx, proto_text_reply_text(PROTO_TEXT_R_ERROR));
        return HANDLER_CONTINUE;
    }
    return fn(cx, rq);
}

size_t
handler_text_failure(const struct proto_text_req *rq, char *out)
{
    if (rq->noreply) {
        return 0;
    }
    return (size_t)snprintf(out, HANDLER_FAIL_MAX, "SERVER_ERROR %s\r\n",
                            store_strerror(STORE_EIO));
}

handler_act_e
handler_text_refused(struct hctx *cx, proto_rc_e rc,
                     const struct proto_text_req *rq)
{
    switch (rc) {
    case PROTO_EUNKNOWN:
        line(cx, proto_text_reply_text(PROTO_TEXT_R_ERROR));
        return HANDLER_CONTINUE;
    case PROTO_E2BIG:
        if (rq->cmd == PROTO_TEXT_SET) {
            hcore_drop(cx, rq->key, rq->keylen);
        }
        if (!rq->noreply) {
            line(cx, proto_text_error_text(PROTO_TEXT_E_TOO_LARGE));
        }
        return HANDLER_CONTINUE;
    case PROTO_EINVAL:
        /* A get with a bad key among good ones: memcached takes back the
         * values it found and sends only the error. */
        if (!rq->noreply) {
            line(cx, proto_text_error_text(rq->err));
        }
        return HANDLER_CONTINUE;
    default:
        /* Not our protocol: nothing more is read, but replies to the
         * requests before it still go out, as memcached's do. */
        return HANDLER_CLOSE_AFTER_WRITE;
    }
}
