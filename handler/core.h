/*
 * The protocol-neutral half of the handler: each memcached operation with
 * its statistics, over the storage interface. The binary and text command
 * functions call these and only format the outcome.
 */
#ifndef STASHD_HANDLER_CORE_H
#define STASHD_HANDLER_CORE_H

#include "handler/handler.h"

/*
 * Runs the sets cx->defer took that an operation on key (NULL: on any key,
 * or on the whole store) must see. No-op without cx->defer.
 */
void hcore_settle(struct hctx *cx, const void *key, size_t keylen);

/* Counts a store's outcome as memcached does (cas: a CAS store). */
void hcore_store_count(struct hctx *cx, uint64_t cas, store_rc_e rc);

/* Queues a text set's reply for rc (noreply: failures only). */
void htext_set_reply(struct hctx *cx, bool noreply, store_rc_e rc);

/* Queues a binary SET/SETQ reply for rc and cas. */
void hbin_set_reply(struct hctx *cx, uint8_t opcode, uint32_t opaque,
                    bool quiet, store_rc_e rc, uint64_t cas);

/* A fresh per-request storage call for cx. */
struct store_call hcore_call(struct hctx *cx);

/* Accounts for a call that left a write pending. */
void hcore_after(struct hctx *cx, const struct store_call *c);

/* memcached's item size rule: true when the item would be refused. */
bool hcore_too_large(const struct hctx *cx, size_t keylen, uint32_t flags,
                     size_t vlen);

/* get; with touch != NULL a GAT (abs exptime), counted as a touch. */
store_rc_e hcore_get(struct hctx *cx, const void *key, size_t keylen,
                     const uint32_t *touch, struct store_item *out);

/*
 * set/add/replace/append/prepend; cas != 0 is a CAS store. Applies
 * memcached's item size rule first.
 */
store_rc_e hcore_store(struct hctx *cx, store_mode_e m, const void *key,
                       size_t keylen, const void *val, size_t vlen,
                       uint32_t flags, uint32_t exptime, uint64_t cas,
                       uint64_t *cas_out);

/*
 * Drops key without counting a delete: memcached does so when a set fails,
 * so that a reader never sees the value the client meant to replace.
 */
void hcore_drop(struct hctx *cx, const void *key, size_t keylen);

/* delete; cas != 0 makes it conditional. */
store_rc_e hcore_delete(struct hctx *cx, const void *key, size_t keylen,
                        uint64_t cas);

/* incr/decr, counted as memcached counts them. */
store_rc_e hcore_arith(struct hctx *cx, const void *key, size_t keylen,
                       const struct store_delta *d, uint64_t *value,
                       uint64_t *cas_out);

/* touch with an absolute exptime. */
store_rc_e hcore_touch(struct hctx *cx, const void *key, size_t keylen,
                       uint32_t exptime);

/* flush_all: delay 0 is now, else a TTL-style time. */
store_rc_e hcore_flush(struct hctx *cx, int64_t delay);

#endif
