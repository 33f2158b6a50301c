/*
 * The text protocol's entry points into the handler: a request the text
 * codec decoded, or one it refused, becomes storage calls and reply lines.
 */
#ifndef STASHD_HANDLER_TEXT_H
#define STASHD_HANDLER_TEXT_H

#include "handler/handler.h"
#include "protocol/text.h"

/* Executes one well-formed text request. */
handler_act_e handler_text(struct hctx *cx, const struct proto_text_req *rq);

/*
 * The reply a text request gets instead of its own when a write it made
 * was left pending and then could not be made durable; written to out
 * (HANDLER_FAIL_MAX bytes at most). Its length: 0 for noreply.
 */
size_t handler_text_failure(const struct proto_text_req *rq, char *out);

/* Answers a text request the codec refused (rc != PROTO_OK/NEED_MORE). */
handler_act_e handler_text_refused(struct hctx *cx, proto_rc_e rc,
                                   const struct proto_text_req *rq);

#endif
