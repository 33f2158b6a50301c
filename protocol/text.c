/*
 * The text protocol codec. It reproduces how memcached 1.6.18 reads a
 * line: '\n' ends it and one '\r' before it is dropped, a NUL byte ends it
 * early, only ' ' separates tokens, at most 23 tokens are split off, and
 * numbers are read the way libc's strtol/strtoul read them and then cut to
 * 32 bits where memcached stores them in 32 bits. Every quirk is pinned by
 * a row of tests/notes/text-oracle.md. No I/O, no allocation, no state.
 */
#include "protocol/text.h"

#include <stdint.h>
#include <string.h>

/* One token of the line: never empty, never contains ' '. */
struct tok {
    const char *p;
    size_t      n;
};

struct ctx {
    const char *buf;
    size_t      len;
    size_t      line_used;              /* the line and its '\n' */
    size_t      max_value;
    size_t      ntok;                   /* at most PROTO_TEXT_TOKENS_MAX */
    struct tok  tok[PROTO_TEXT_TOKENS_MAX];
};

typedef proto_rc_e (*parse_fn)(const struct ctx *cx, struct proto_text_req *rq,
                               size_t *used);

static proto_rc_e parse_get(const struct ctx *cx, struct proto_text_req *rq,
                            size_t *used);
static proto_rc_e parse_store(const struct ctx *cx, struct proto_text_req *rq,
                              size_t *used);
static proto_rc_e parse_delete(const struct ctx *cx,
                               struct proto_text_req *rq, size_t *used);
static proto_rc_e parse_arith(const struct ctx *cx, struct proto_text_req *rq,
                              size_t *used);
static proto_rc_e parse_touch(const struct ctx *cx, struct proto_text_req *rq,
                              size_t *used);
static proto_rc_e parse_flush(const struct ctx *cx, struct proto_text_req *rq,
                              size_t *used);
static proto_rc_e parse_verbosity(const struct ctx *cx,
                                  struct proto_text_req *rq, size_t *used);
static proto_rc_e parse_args(const struct ctx *cx, struct proto_text_req *rq,
                             size_t *used);

#define ANY PROTO_TEXT_TOKENS_MAX

/*
 * The only place command shapes live. min/max count tokens with the
 * command itself (memcached's WANT_TOKENS less its terminal token); outside
 * them the reply is "ERROR". A NULL parser with cmd NONE is a command
 * memcached has and stashd does not: "ERROR", but never the HTTP close.
 */
static const struct {
    const char      *name;
    proto_text_cmd_e cmd;
    uint8_t          min, max;
    parse_fn         parse;
} text_cmds[] = {
    { "get",         PROTO_TEXT_GET,       2, ANY, parse_get },
    { "gets",        PROTO_TEXT_GETS,      2, ANY, parse_get },
    { "gat",         PROTO_TEXT_GAT,       2, ANY, parse_get },
    { "gats",        PROTO_TEXT_GATS,      2, ANY, parse_get },
    { "bget",        PROTO_TEXT_GET,       2, ANY, parse_get },
    { "set",         PROTO_TEXT_SET,       5, 6,   parse_store },
    { "add",         PROTO_TEXT_ADD,       5, 6,   parse_store },
    { "replace",     PROTO_TEXT_REPLACE,   5, 6,   parse_store },
    { "append",      PROTO_TEXT_APPEND,    5, 6,   parse_store },
    { "prepend",     PROTO_TEXT_PREPEND,   5, 6,   parse_store },
    { "cas",         PROTO_TEXT_CAS,       6, 7,   parse_store },
    { "delete",      PROTO_TEXT_DELETE,    2, 4,   parse_delete },
    { "incr",        PROTO_TEXT_INCR,      3, 4,   parse_arith },
    { "decr",        PROTO_TEXT_DECR,      3, 4,   parse_arith },
    { "touch",       PROTO_TEXT_TOUCH,     3, 4,   parse_touch },
    { "flush_all",   PROTO_TEXT_FLUSH_ALL, 1, 3,   parse_flush },
    { "version",     PROTO_TEXT_VERSION,   1, ANY, parse_args },
    { "verbosity",   PROTO_TEXT_VERBOSITY, 2, 3,   parse_verbosity },
    { "quit",        PROTO_TEXT_QUIT,      1, ANY, parse_args },
    { "stats",       PROTO_TEXT_STATS,     1, ANY, parse_args },
    { "mn",          PROTO_TEXT_MN,        1, ANY, parse_args },
    { "shutdown",    PROTO_TEXT_SHUTDOWN,  1, ANY, parse_args },
    { "mg",          PROTO_TEXT_META,      1, ANY, parse_args },
    { "ms",          PROTO_TEXT_META,      1, ANY, parse_args },
    { "md",          PROTO_TEXT_META,      1, ANY, parse_args },
    { "ma",          PROTO_TEXT_META,      1, ANY, parse_args },
    { "me",          PROTO_TEXT_META,      1, ANY, parse_args },
    { "lru_crawler", PROTO_TEXT_NONE,      1, ANY, NULL },
    { "watch",       PROTO_TEXT_NONE,      1, ANY, NULL },
    { "lru",         PROTO_TEXT_NONE,      1, ANY, NULL },
    { "extstore",    PROTO_TEXT_NONE,      1, ANY, NULL },
};
#define NCMDS (sizeof(text_cmds) / sizeof(text_cmds[0]))

static const char *const error_text[] = {
    [PROTO_TEXT_E_NONE] = "",
    [PROTO_TEXT_E_ERROR] = "ERROR",
    [PROTO_TEXT_E_FORMAT] = "CLIENT_ERROR bad command line format",
    [PROTO_TEXT_E_DELETE_USAGE] = ("CLIENT_ERROR bad command line format."
                                   "  Usage: delete <key> [noreply]"),
    [PROTO_TEXT_E_DELTA] = "CLIENT_ERROR invalid numeric delta argument",
    [PROTO_TEXT_E_EXPTIME] = "CLIENT_ERROR invalid exptime argument",
    [PROTO_TEXT_E_CHUNK] = "CLIENT_ERROR bad data chunk",
    [PROTO_TEXT_E_TOO_LARGE] = "SERVER_ERROR object too large for cache",
    [PROTO_TEXT_E_LINE_TOO_LONG] = "",
    [PROTO_TEXT_E_HTTP] = "",
};

static const char *const reply_text[PROTO_TEXT_R_COUNT] = {
    [PROTO_TEXT_R_STORED] = "STORED",
    [PROTO_TEXT_R_NOT_STORED] = "NOT_STORED",
    [PROTO_TEXT_R_EXISTS] = "EXISTS",
    [PROTO_TEXT_R_NOT_FOUND] = "NOT_FOUND",
    [PROTO_TEXT_R_DELETED] = "DELETED",
    [PROTO_TEXT_R_TOUCHED] = "TOUCHED",
    [PROTO_TEXT_R_OK] = "OK",
    [PROTO_TEXT_R_RESET] = "RESET",
    [PROTO_TEXT_R_END] = "END",
    [PROTO_TEXT_R_MN] = "MN",
    [PROTO_TEXT_R_ERROR] = "ERROR",
    [PROTO_TEXT_R_NON_NUMERIC] = ("CLIENT_ERROR cannot increment or decrement"
                                  " non-numeric value"),
    [PROTO_TEXT_R_NO_MEMORY] = "SERVER_ERROR out of memory storing object",
    [PROTO_TEXT_R_DETAIL_USAGE] = ("CLIENT_ERROR usage: stats detail"
                                   " on|off|dump"),
    [PROTO_TEXT_R_SHUTDOWN_OFF] = "ERROR: shutdown not enabled",
    [PROTO_TEXT_R_SHUTDOWN_MODE] = "CLIENT_ERROR invalid shutdown mode",
};

/* ---- tokens ---- */

static bool
tok_is(const struct tok *t, const char *s)
{
    size_t n = strlen(s);

    return t->n == n && memcmp(t->p, s, n) == 0;
}

/* memcached's tokenize_command: ' ' only, runs of them are one. */
static void
tokenize(const char *line, size_t len, struct ctx *cx)
{
    size_t i = 0;

    cx->ntok = 0;
    while (cx->ntok < PROTO_TEXT_TOKENS_MAX) {
        size_t start;

        while (i < len && line[i] == ' ') {
            i++;
        }
        if (i == len) {
            break;
        }
        start = i;
        while (i < len && line[i] != ' ') {
            i++;
        }
        cx->tok[cx->ntok].p = line + start;
        cx->tok[cx->ntok].n = i - start;
        cx->ntok++;
    }
}

/* memcached's set_noreply_maybe: the last token is exactly "noreply". */
static bool
last_is_noreply(const struct ctx *cx)
{
    return tok_is(&cx->tok[cx->ntok - 1], "noreply");
}

/* ---- numbers, as libc's strto* and memcached's safe_strto* read them ---- */

static bool
is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' ||
           c == '\r';
}

/* What strtoull/strtoll see in a token that memcached NUL-terminated. */
struct num {
    uint64_t mag;       /* the digits' value, when !range */
    bool     neg;       /* a '-' sign */
    bool     range;     /* the digits overflow 64 bits */
    bool     ok;        /* digits, then the token's end or a space byte */
};

static struct num
scan_num(const struct tok *t)
{
    struct num r = { 0, false, false, false };
    size_t i = 0, digits;

    while (i < t->n && is_space(t->p[i])) {
        i++;
    }
    if (i < t->n && (t->p[i] == '+' || t->p[i] == '-')) {
        r.neg = t->p[i] == '-';
        i++;
    }
    digits = i;
    while (i < t->n && t->p[i] >= '0' && t->p[i] <= '9') {
        unsigned d = (unsigned)(t->p[i] - '0');

        if (r.mag > (UINT64_MAX - d) / 10) {
            r.range = true;
        } else {
            r.mag = r.mag * 10 + d;
        }
        i++;
    }
    r.ok = i > digits && (i == t->n || is_space(t->p[i]));
    return r;
}

/* safe_strtoull: strtoull, refusing ERANGE and a '-' that wrapped. */
static bool
mc_strtoull(const struct tok *t, uint64_t *out)
{
    struct num r = scan_num(t);
    uint64_t v;

    if (!r.ok || r.range) {
        return false;
    }
    v = r.neg ? (uint64_t)0 - r.mag : r.mag;
    if (r.neg && v > (uint64_t)INT64_MAX) {
        return false;
    }
    *out = v;
    return true;
}

/* safe_strtoul: the same on a 64-bit long, then stored in 32 bits. */
static bool
mc_strtoul(const struct tok *t, uint32_t *out)
{
    uint64_t v;

    if (!mc_strtoull(t, &v)) {
        return false;
    }
    *out = (uint32_t)v;
    return true;
}

/* safe_strtol: strtol on a 64-bit long, then stored in an int32_t. */
static bool
mc_strtol(const struct tok *t, int32_t *out)
{
    struct num r = scan_num(t);
    uint64_t v;
    uint32_t low;

    if (!r.ok || r.range) {
        return false;
    }
    if (r.mag > (uint64_t)INT64_MAX + (r.neg ? 1 : 0)) {
        return false;
    }
    v = r.neg ? (uint64_t)0 - r.mag : r.mag;
    low = (uint32_t)v;
    *out = low <= INT32_MAX ? (int32_t)low
                            : (int32_t)(low - (uint32_t)INT32_MAX - 1) +
                                  INT32_MIN;
    return true;
}

/* ---- one parser per command shape ---- */

static proto_rc_e
fail(struct proto_text_req *rq, proto_text_err_e err, size_t *used,
     size_t n)
{
    rq->err = err;
    *used = n;
    return PROTO_EINVAL;
}

static bool
key_ok(const struct tok *t)
{
    return t->n <= PROTO_KEY_MAX;
}

static void
set_key(struct proto_text_req *rq, const struct tok *t)
{
    rq->key = t->p;
    rq->keylen = t->n;
}

/* rq->args = the line from token i on (empty when there is none). */
static void
set_args(const struct ctx *cx, struct proto_text_req *rq, size_t i)
{
    const char *end = rq->line + rq->line_len;

    rq->args = i < cx->ntok ? cx->tok[i].p : end;
    rq->args_len = (size_t)(end - rq->args);
}

/*
 * get/gets/bget <key>*, gat/gats <exptime> <key>*. memcached checks each
 * key's length as it reaches it, so one long key anywhere fails the whole
 * command (and, there, drops the replies still queued before it).
 */
static proto_rc_e
parse_get(const struct ctx *cx, struct proto_text_req *rq, size_t *used)
{
    size_t first = 1, pos = 0, keylen;
    const char *key;

    if (rq->cmd == PROTO_TEXT_GAT || rq->cmd == PROTO_TEXT_GATS) {
        if (!mc_strtol(&cx->tok[1], &rq->exptime)) {
            return fail(rq, PROTO_TEXT_E_EXPTIME, used, cx->line_used);
        }
        first = 2;
    }
    set_args(cx, rq, first);
    while (proto_text_next_key(rq, &pos, &key, &keylen)) {
        if (keylen > PROTO_KEY_MAX) {
            return fail(rq, PROTO_TEXT_E_FORMAT, used, cx->line_used);
        }
        if (rq->nkeys == 0) {
            rq->key = key;
            rq->keylen = keylen;
        }
        rq->nkeys++;
    }
    *used = cx->line_used;
    return PROTO_OK;
}

/*
 * set/add/replace/append/prepend <key> <flags> <exptime> <bytes> [noreply],
 * cas <key> <flags> <exptime> <bytes> <cas unique> [noreply], then the data
 * block: exactly bytes + 2 bytes, the last two "\r\n".
 */
static proto_rc_e
parse_store(const struct ctx *cx, struct proto_text_req *rq, size_t *used)
{
    int32_t vlen;
    size_t need;

    rq->noreply = last_is_noreply(cx);
    set_key(rq, &cx->tok[1]);
    if (!key_ok(&cx->tok[1]) || !mc_strtoul(&cx->tok[2], &rq->flags) ||
        !mc_strtol(&cx->tok[3], &rq->exptime) ||
        !mc_strtol(&cx->tok[4], &vlen) ||
        (rq->cmd == PROTO_TEXT_CAS && !mc_strtoull(&cx->tok[5], &rq->cas)) ||
        vlen < 0 || vlen > INT32_MAX - 2) {
        return fail(rq, PROTO_TEXT_E_FORMAT, used, cx->line_used);
    }
    rq->vlen = (uint32_t)vlen;
    if ((size_t)rq->vlen > cx->max_value) {
        rq->err = PROTO_TEXT_E_TOO_LARGE;
        rq->swallow = (size_t)rq->vlen + 2;
        *used = cx->line_used;
        return PROTO_E2BIG;
    }
    if ((size_t)rq->vlen + 2 > SIZE_MAX - cx->line_used) {
        *used = SIZE_MAX;
        return PROTO_NEED_MORE;
    }
    need = cx->line_used + rq->vlen + 2;
    if (cx->len < need) {
        *used = need;
        return PROTO_NEED_MORE;
    }
    rq->value = cx->buf + cx->line_used;
    if (cx->buf[need - 2] != '\r' || cx->buf[need - 1] != '\n') {
        return fail(rq, PROTO_TEXT_E_CHUNK, used, need);
    }
    *used = need;
    return PROTO_OK;
}

/*
 * delete <key> [0] [noreply]: a second argument must be "0" or "noreply",
 * a third "noreply" after "0"; noreply counts only with an argument.
 */
static proto_rc_e
parse_delete(const struct ctx *cx, struct proto_text_req *rq, size_t *used)
{
    set_key(rq, &cx->tok[1]);
    if (cx->ntok > 2) {
        bool zero = tok_is(&cx->tok[2], "0");

        rq->noreply = last_is_noreply(cx);
        if (!((cx->ntok == 3 && (zero || rq->noreply)) ||
              (cx->ntok == 4 && zero && rq->noreply))) {
            return fail(rq, PROTO_TEXT_E_DELETE_USAGE, used, cx->line_used);
        }
    }
    if (!key_ok(&cx->tok[1])) {
        return fail(rq, PROTO_TEXT_E_FORMAT, used, cx->line_used);
    }
    *used = cx->line_used;
    return PROTO_OK;
}

/* incr/decr <key> <delta> [noreply]; a third argument is ignored. */
static proto_rc_e
parse_arith(const struct ctx *cx, struct proto_text_req *rq, size_t *used)
{
    rq->noreply = last_is_noreply(cx);
    set_key(rq, &cx->tok[1]);
    if (!key_ok(&cx->tok[1])) {
        return fail(rq, PROTO_TEXT_E_FORMAT, used, cx->line_used);
    }
    if (!mc_strtoull(&cx->tok[2], &rq->delta)) {
        return fail(rq, PROTO_TEXT_E_DELTA, used, cx->line_used);
    }
    *used = cx->line_used;
    return PROTO_OK;
}

/* touch <key> <exptime> [noreply]; a third argument is ignored. */
static proto_rc_e
parse_touch(const struct ctx *cx, struct proto_text_req *rq, size_t *used)
{
    rq->noreply = last_is_noreply(cx);
    set_key(rq, &cx->tok[1]);
    if (!key_ok(&cx->tok[1])) {
        return fail(rq, PROTO_TEXT_E_FORMAT, used, cx->line_used);
    }
    if (!mc_strtol(&cx->tok[2], &rq->exptime)) {
        return fail(rq, PROTO_TEXT_E_EXPTIME, used, cx->line_used);
    }
    *used = cx->line_used;
    return PROTO_OK;
}

/*
 * flush_all [delay] [noreply]: the first argument is read as the delay
 * whenever there is one besides a final "noreply"; a third is ignored.
 */
static proto_rc_e
parse_flush(const struct ctx *cx, struct proto_text_req *rq, size_t *used)
{
    rq->noreply = last_is_noreply(cx);
    if (cx->ntok != (rq->noreply ? 2u : 1u) &&
        !mc_strtol(&cx->tok[1], &rq->delay)) {
        return fail(rq, PROTO_TEXT_E_EXPTIME, used, cx->line_used);
    }
    *used = cx->line_used;
    return PROTO_OK;
}

/* verbosity <level> [noreply]; a second argument is ignored. */
static proto_rc_e
parse_verbosity(const struct ctx *cx, struct proto_text_req *rq,
                size_t *used)
{
    rq->noreply = last_is_noreply(cx);
    if (!mc_strtoul(&cx->tok[1], &rq->level)) {
        return fail(rq, PROTO_TEXT_E_FORMAT, used, cx->line_used);
    }
    *used = cx->line_used;
    return PROTO_OK;
}

/*
 * version, quit, mn (arguments ignored), stats [sub [args]], shutdown
 * [mode] and the meta commands: key = the first argument (meta: the
 * command), args = the arguments.
 */
static proto_rc_e
parse_args(const struct ctx *cx, struct proto_text_req *rq, size_t *used)
{
    if (rq->cmd == PROTO_TEXT_META) {
        set_key(rq, &cx->tok[0]);
    } else if (cx->ntok > 1) {
        set_key(rq, &cx->tok[1]);
    }
    set_args(cx, rq, 1);
    *used = cx->line_used;
    return PROTO_OK;
}

/*
 * An unknown command: "ERROR", except that memcached closes the connection
 * when the last token starts with "HTTP/" and the command's first letter
 * is not one it dispatches on first (a c d g i s t, and m with 2 letters).
 */
static proto_rc_e
unknown(const struct ctx *cx, struct proto_text_req *rq, size_t *used)
{
    const struct tok *cmd = &cx->tok[0], *last = &cx->tok[cx->ntok - 1];
    bool branch = memchr("acdgist", cmd->p[0], 7) != NULL ||
                  (cmd->p[0] == 'm' && cmd->n == 2);

    if (!branch && last->n >= 5 && memcmp(last->p, "HTTP/", 5) == 0) {
        rq->err = PROTO_TEXT_E_HTTP;
        *used = 0;
        return PROTO_EMAGIC;
    }
    rq->err = PROTO_TEXT_E_ERROR;
    *used = cx->line_used;
    return PROTO_EUNKNOWN;
}

static bool
starts_with(const char *p, size_t n, const char *s)
{
    size_t sn = strlen(s);

    return n >= sn && memcmp(p, s, sn) == 0;
}

/*
 * The lines memcached reads past PROTO_TEXT_LINE_MAX: at most
 * PROTO_TEXT_LEAD_MAX spaces, then "get " or "gets ". Returns the bytes
 * before the keys and sets *cmd, or returns 0.
 */
static size_t
long_get(const char *buf, size_t len, proto_text_cmd_e *cmd)
{
    size_t i = 0;

    while (i < len && buf[i] == ' ') {
        i++;
    }
    if (i > PROTO_TEXT_LEAD_MAX) {
        return 0;
    }
    if (starts_with(buf + i, len - i, "get ")) {
        *cmd = PROTO_TEXT_GET;
        return i + 4;
    }
    if (starts_with(buf + i, len - i, "gets ")) {
        *cmd = PROTO_TEXT_GETS;
        return i + 5;
    }
    return 0;
}

/* No '\n' yet: wait, or give up on a line that cannot be memcached's. */
static proto_rc_e
unterminated(const char *buf, size_t len, struct proto_text_req *rq,
             size_t *used)
{
    proto_text_cmd_e cmd;

    if (len > PROTO_TEXT_LINE_MAX && long_get(buf, len, &cmd) == 0) {
        rq->err = PROTO_TEXT_E_LINE_TOO_LONG;
        *used = 0;
        return PROTO_EMAGIC;
    }
    *used = len + 1;
    return PROTO_NEED_MORE;
}

proto_rc_e
proto_text_decode(const char *buf, size_t len, size_t max_value,
                  struct proto_text_req *rq, size_t *used)
{
    struct ctx cx;
    const char *nl, *nul;
    size_t line_len;

    memset(rq, 0, sizeof(*rq));
    if (len == 0) {
        *used = 1;
        return PROTO_NEED_MORE;
    }
    nl = memchr(buf, '\n', len);
    if (nl == NULL) {
        return unterminated(buf, len, rq, used);
    }
    if ((size_t)(nl - buf) >= PROTO_TEXT_READ_MAX) {
        /* memcached reads at most this much at once, so it never sees
         * this '\n' before judging the line unterminated. */
        proto_rc_e rc = unterminated(buf, PROTO_TEXT_READ_MAX, rq, used);

        if (rc == PROTO_EMAGIC) {
            return rc;
        }
        memset(rq, 0, sizeof(*rq));
    }
    line_len = (size_t)(nl - buf);
    cx.buf = buf;
    cx.len = len;
    cx.line_used = line_len + 1;
    cx.max_value = max_value;
    /* memcached drops the '\r' only from a line of two bytes or more */
    if (line_len > 1 && buf[line_len - 1] == '\r') {
        line_len--;
    }
    nul = memchr(buf, '\0', line_len);
    if (nul != NULL) {
        line_len = (size_t)(nul - buf);
    }
    rq->line = buf;
    rq->line_len = line_len;
    tokenize(buf, line_len, &cx);
    if (cx.ntok == 0 || cx.tok[0].n < 2) {
        rq->err = PROTO_TEXT_E_ERROR;
        *used = cx.line_used;
        return PROTO_EUNKNOWN;
    }
    for (size_t i = 0; i < NCMDS; i++) {
        if (!tok_is(&cx.tok[0], text_cmds[i].name)) {
            continue;
        }
        if (text_cmds[i].parse == NULL || cx.ntok < text_cmds[i].min ||
            cx.ntok > text_cmds[i].max) {
            rq->err = PROTO_TEXT_E_ERROR;
            *used = cx.line_used;
            return PROTO_EUNKNOWN;
        }
        rq->cmd = text_cmds[i].cmd;
        return text_cmds[i].parse(&cx, rq, used);
    }
    return unknown(&cx, rq, used);
}

bool
proto_text_stream_start(struct proto_text_stream *st, const char *buf,
                        size_t len, size_t *used)
{
    proto_text_cmd_e cmd = PROTO_TEXT_NONE;
    size_t n = long_get(buf, len, &cmd);

    if (n == 0) {
        return false;
    }
    memset(st, 0, sizeof(*st));
    st->cmd = cmd;
    *used = n;
    return true;
}

/* The rest of a line after a NUL or a refused key: nothing to run but,
 * after a NUL, the "END" when the line ends. */
static proto_rc_e
skip_rest(struct proto_text_stream *st, const char *buf, size_t len,
          struct proto_text_req *rq, size_t *used)
{
    const char *nl = memchr(buf, '\n', len);

    *used = nl != NULL ? (size_t)(nl - buf) + 1 : len;
    rq->cmd = st->cut && nl != NULL ? st->cmd : PROTO_TEXT_NONE;
    rq->partial = nl == NULL;
    if (nl != NULL) {
        memset(st, 0, sizeof(*st));
    }
    return PROTO_OK;
}

/* The end of the token at buf[i]: its first ' ', '\n' or NUL, or len. */
static size_t
token_end(const char *buf, size_t len, size_t i)
{
    while (i < len && buf[i] != ' ' && buf[i] != '\n' && buf[i] != '\0') {
        i++;
    }
    return i;
}

proto_rc_e
proto_text_decode_more(struct proto_text_stream *st, const char *buf,
                       size_t len, size_t max_keys,
                       struct proto_text_req *rq, size_t *used)
{
    size_t i = 0;
    size_t last = 0;

    memset(rq, 0, sizeof(*rq));
    *used = 0;
    if (len == 0) {
        return PROTO_NEED_MORE;
    }
    if (st->cut || st->failed) {
        return skip_rest(st, buf, len, rq, used);
    }
    rq->cmd = st->cmd;
    rq->exptime = st->exptime;
    rq->partial = true;
    /* Token by token, never further than the keys it returns: a long line
     * runs a few hundred keys at a time, each piece costing only its own. */
    for (;;) {
        size_t end;
        size_t keylen;

        while (i < len && buf[i] == ' ') {
            i++;
        }
        *used = i;
        if (i == len || (max_keys != 0 && rq->nkeys == max_keys)) {
            break;
        }
        if (buf[i] == '\n' || buf[i] == '\0') {
            if (rq->nkeys > 0) {
                break;      /* the end is the next call's */
            }
            /* The line ends, or a NUL ends it: skip to its '\n'. */
            st->cut = buf[i] == '\0';
            if (buf[i] == '\n') {
                *used = i + 1;
                rq->partial = false;
                memset(st, 0, sizeof(*st));
                return PROTO_OK;
            }
            (void)skip_rest(st, buf + i, len - i, rq, used);
            *used += i;
            return PROTO_OK;
        }
        end = token_end(buf, len, i);
        keylen = end - i;
        if (end < len && buf[end] == '\n' && buf[end - 1] == '\r') {
            keylen--;       /* the line's "\r\n" */
        }
        if (keylen > PROTO_KEY_MAX +
            (end == len && buf[end - 1] == '\r' ? 1u : 0u)) {
            goto too_long;  /* even if a last '\r' is the line's */
        }
        if (end == len) {
            break;          /* the key may go on in the next read */
        }
        if (keylen > 0) {
            if (rq->nkeys == 0) {
                rq->key = buf + i;
                rq->keylen = keylen;
            }
            last = i + keylen;
            rq->nkeys++;
        }
        i = end;
    }
    if (rq->nkeys == 0) {
        return *used > 0 ? PROTO_OK : PROTO_NEED_MORE;
    }
    rq->line = rq->args = rq->key;
    rq->line_len = rq->args_len = (size_t)(buf + last - rq->key);
    return PROTO_OK;

too_long:
    /* memcached refuses the whole line for it; what was already run of
     * it cannot be taken back, and the rest is skipped. */
    rq->err = PROTO_TEXT_E_FORMAT;
    st->failed = true;
    {
        struct proto_text_req skip;

        (void)skip_rest(st, buf, len, &skip, used);
    }
    return PROTO_EINVAL;
}

bool
proto_text_next_key(const struct proto_text_req *rq, size_t *pos,
                    const char **key, size_t *keylen)
{
    size_t i = *pos, start;

    while (i < rq->args_len && rq->args[i] == ' ') {
        i++;
    }
    if (i >= rq->args_len) {
        *pos = i;
        return false;
    }
    start = i;
    while (i < rq->args_len && rq->args[i] != ' ') {
        i++;
    }
    *key = rq->args + start;
    *keylen = i - start;
    *pos = i;
    return true;
}

const char *
proto_text_error_text(proto_text_err_e err)
{
    if ((unsigned)err >= sizeof(error_text) / sizeof(error_text[0])) {
        return "";
    }
    return error_text[err];
}

const char *
proto_text_reply_text(proto_text_reply_e r)
{
    if ((unsigned)r >= PROTO_TEXT_R_COUNT) {
        return "";
    }
    return reply_text[r];
}

size_t
proto_text_put_u64(char out[PROTO_TEXT_U64_MAX], uint64_t v)
{
    char tmp[PROTO_TEXT_U64_MAX];
    size_t n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++) {
        out[i] = tmp[n - 1 - i];
    }
    return n;
}

size_t
proto_text_value_header(char *out, size_t cap, const char *key,
                        size_t keylen, uint32_t flags, uint32_t vlen,
                        bool with_cas, uint64_t cas)
{
    char f[PROTO_TEXT_U64_MAX], b[PROTO_TEXT_U64_MAX], c[PROTO_TEXT_U64_MAX];
    size_t fn = proto_text_put_u64(f, flags);
    size_t bn = proto_text_put_u64(b, vlen);
    size_t cn = with_cas ? proto_text_put_u64(c, cas) : 0;
    size_t n = 6 + keylen + 1 + fn + 1 + bn + (with_cas ? 1 + cn : 0) + 2;
    char *p = out;

    if (keylen > cap || n > cap) {
        return 0;
    }
    memcpy(p, "VALUE ", 6);
    p += 6;
    memcpy(p, key, keylen);
    p += keylen;
    *p++ = ' ';
    memcpy(p, f, fn);
    p += fn;
    *p++ = ' ';
    memcpy(p, b, bn);
    p += bn;
    if (with_cas) {
        *p++ = ' ';
        memcpy(p, c, cn);
        p += cn;
    }
    *p++ = '\r';
    *p++ = '\n';
    return n;
}
