/*
 * memcached's text protocol (protocol.txt, 1.6) as a pure codec: one command
 * line, plus its data block for storage commands, in; a decoded request out;
 * and the few reply pieces every text handler writes. It owns how a line is
 * split and how every argument is read, byte for byte as memcached 1.6.18
 * does it (tests/notes/text-oracle.md), and must never do I/O, allocate,
 * log or keep state. Semantics (CAS, TTL, what a reply says) live in the
 * handler; this file only says which reply a malformed request earns.
 */
#ifndef STASHD_PROTOCOL_TEXT_H
#define STASHD_PROTOCOL_TEXT_H

#include "protocol/binary.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * An unterminated line longer than this closes the connection, unless it
 * starts (after at most PROTO_TEXT_LEAD_MAX spaces) with "get " or "gets ",
 * which may grow without bound (memcached try_read_command_ascii). A line
 * whose '\n' is already in the buffer is parsed, if that '\n' lies within
 * the first PROTO_TEXT_READ_MAX bytes.
 */
#define PROTO_TEXT_LINE_MAX 2048
/*
 * memcached reads at most this many bytes at a time: a non-get line whose
 * '\n' comes later is judged without it, and closes the connection.
 */
#define PROTO_TEXT_READ_MAX 16384
#define PROTO_TEXT_LEAD_MAX 100
/* memcached splits at most this many tokens off a line, then the rest. */
#define PROTO_TEXT_TOKENS_MAX 23
/* "VALUE " key " " flags " " bytes " " cas "\r\n" */
#define PROTO_TEXT_VALUE_HDR_MAX (6 + PROTO_KEY_MAX + 3 * 21 + 2)
/* A u64 in decimal, without a terminator. */
#define PROTO_TEXT_U64_MAX 20

typedef enum proto_text_cmd {
    PROTO_TEXT_NONE = 0,    /* no command decoded (an error, NEED_MORE) */
    PROTO_TEXT_GET,         /* get, and memcached's old alias bget */
    PROTO_TEXT_GETS,
    PROTO_TEXT_GAT,
    PROTO_TEXT_GATS,
    PROTO_TEXT_SET,
    PROTO_TEXT_ADD,
    PROTO_TEXT_REPLACE,
    PROTO_TEXT_APPEND,
    PROTO_TEXT_PREPEND,
    PROTO_TEXT_CAS,
    PROTO_TEXT_DELETE,
    PROTO_TEXT_INCR,
    PROTO_TEXT_DECR,
    PROTO_TEXT_TOUCH,
    PROTO_TEXT_FLUSH_ALL,
    PROTO_TEXT_VERSION,
    PROTO_TEXT_VERBOSITY,
    PROTO_TEXT_QUIT,
    PROTO_TEXT_STATS,
    PROTO_TEXT_MN,          /* meta no-op: reply "MN" */
    PROTO_TEXT_SHUTDOWN,    /* shutdown [graceful]: args as for stats */
    PROTO_TEXT_META         /* mg ms md ma me: line only, see below */
} proto_text_cmd_e;

/*
 * Why a request failed; proto_text_error_text() gives memcached's exact
 * reply line for each (without "\r\n").
 */
typedef enum proto_text_err {
    PROTO_TEXT_E_NONE = 0,
    PROTO_TEXT_E_ERROR,         /* "ERROR": unknown command, token count */
    PROTO_TEXT_E_FORMAT,        /* "CLIENT_ERROR bad command line format" */
    PROTO_TEXT_E_DELETE_USAGE,  /* "... format.  Usage: delete <key> ..." */
    PROTO_TEXT_E_DELTA,         /* "CLIENT_ERROR invalid numeric delta ..." */
    PROTO_TEXT_E_EXPTIME,       /* "CLIENT_ERROR invalid exptime argument" */
    PROTO_TEXT_E_CHUNK,         /* "CLIENT_ERROR bad data chunk" */
    PROTO_TEXT_E_TOO_LARGE,     /* "SERVER_ERROR object too large for cache" */
    PROTO_TEXT_E_LINE_TOO_LONG, /* close without a reply */
    PROTO_TEXT_E_HTTP           /* close without a reply */
} proto_text_err_e;

/*
 * A decoded request. Every pointer aims into the caller's buffer and lives
 * as long as it; no string is NUL-terminated. Fields a command does not use
 * are zero. Numbers are what memcached 1.6.18 makes of the text, truncation
 * included (flags "4294967297" is 1, exptime "4294967396" is 100).
 */
struct proto_text_req {
    proto_text_cmd_e cmd;       /* ro */
    proto_text_err_e err;       /* ro: PROTO_TEXT_E_NONE on PROTO_OK */
    bool             noreply;   /* ro: send nothing back, errors included */
    const char      *line;      /* ro: the line memcached sees: no "\r\n", */
    size_t           line_len;  /*     and cut at its first NUL byte */
    const char      *key;       /* ro: the key; get family: the first key; */
    size_t           keylen;    /*     stats, shutdown: the first argument; */
                                /*     meta: "mg".. */
    const char      *args;      /* ro: get family: the keys; stats, */
    size_t           args_len;  /*     shutdown, meta: all after the */
                                /*     command; walk it with */
                                /*     proto_text_next_key() */
    size_t           nkeys;     /* ro: get family: the number of keys; with */
                                /*     E_FORMAT: the index of the long key */
    uint32_t         flags;     /* ro: storage commands */
    int32_t          exptime;   /* ro: storage, touch, gat, gats (<0: gone) */
    uint32_t         vlen;      /* ro: storage commands: the data's length */
    uint64_t         cas;       /* ro: cas */
    uint64_t         delta;     /* ro: incr, decr */
    int32_t          delay;     /* ro: flush_all; 0 when not given */
    uint32_t         level;     /* ro: verbosity, as sent (not clamped) */
    const char      *value;     /* ro: storage commands: vlen bytes */
    size_t           swallow;   /* ro: PROTO_E2BIG: bytes after *used */
    bool             partial;   /* ro: get family, from decode_more: the */
                                /*     line goes on (no "END" yet) */
};

/*
 * Decodes one command from buf[0, len). The results:
 * PROTO_OK: *used = the command's size, data block and its "\r\n" included.
 * PROTO_NEED_MORE: *used = the size needed (a storage command's line, data
 *   and "\r\n"), or len + 1 while no '\n' has arrived. Fields are partial.
 * PROTO_EUNKNOWN: reply "ERROR"; *used = the line. rq->noreply is false.
 * PROTO_EINVAL: reply proto_text_error_text(rq->err) unless rq->noreply and
 *   keep the connection; *used = the line (for E_CHUNK: line, data, and the
 *   two bytes that were not "\r\n"). What follows is the next command.
 * PROTO_E2BIG: a storage command's vlen is over max_value: reply
 *   "SERVER_ERROR object too large for cache" unless rq->noreply (for set,
 *   memcached also unlinks the key); *used = the line, then rq->swallow
 *   bytes (vlen + 2, maybe not in buf yet) must be discarded unread.
 * PROTO_EMAGIC: not memcached's protocol (rq->err E_LINE_TOO_LONG or
 *   E_HTTP): close the connection without a reply; *used = 0.
 * The caller keeps buf, and may call again with a longer buf after
 * NEED_MORE. mg/ms/md/ma/me decode as PROTO_TEXT_META with *used = the line
 * only: ms's data block is left to the meta codec.
 * Thread-safe; reads nothing outside buf[0, len).
 */
proto_rc_e proto_text_decode(const char *buf, size_t len, size_t max_value,
                             struct proto_text_req *rq, size_t *used);

/*
 * A get-family line decoded a piece at a time, for a caller that cannot or
 * will not hold it whole: memcached serves get and gets lines of any length
 * (tests/notes/text-oracle.md), and a multi-get stopped half-way by
 * back-pressure goes on from where it stopped. The caller owns it; all
 * zero is "no line open".
 */
struct proto_text_stream {
    proto_text_cmd_e cmd;       /* the line's command; NONE: none open */
    int32_t          exptime;   /* gat, gats */
    bool             cut;       /* a NUL ended the line: skip to its '\n' */
    bool             failed;    /* a key was too long and the error is out: */
                                /*     skip to the '\n', silently */
};

/*
 * Opens st on the unterminated get or gets line that starts buf[0, len)
 * (at most PROTO_TEXT_LEAD_MAX spaces, then "get " or "gets "): true, with
 * *used = the bytes before its keys. false when buf starts no such line.
 */
bool proto_text_stream_start(struct proto_text_stream *st, const char *buf,
                             size_t len, size_t *used);

/*
 * Decodes what follows in the line st has open from buf[0, len), reading
 * it as proto_text_decode reads a whole line (NUL, "\r\n", ' ' only), and
 * at most max_keys keys of it (0: no limit), reading no further:
 * PROTO_OK: rq is a st->cmd request for complete keys in buf (perhaps
 *   none); rq->partial unless the line ended in buf, which closes st.
 *   *used = those bytes, the '\n' included when it ended. rq->cmd is
 *   PROTO_TEXT_NONE when there is nothing to run (bytes skipped).
 * PROTO_NEED_MORE: buf holds only the start of a key; *used = 0.
 * PROTO_EINVAL: a key longer than PROTO_KEY_MAX (rq->err E_FORMAT): reply
 *   with its text; none of this call's keys is to be run, and the rest of
 *   the line is skipped (st->failed until its '\n'). *used as for OK.
 * Thread-safe; reads nothing outside buf[0, len).
 */
proto_rc_e proto_text_decode_more(struct proto_text_stream *st,
                                  const char *buf, size_t len,
                                  size_t max_keys,
                                  struct proto_text_req *rq, size_t *used);

/*
 * Walks the space-separated tokens of rq->args (the keys of a get-family
 * request). Start with *pos = 0; each call stores the next token and
 * returns true, or returns false at the end. Tokens are split on ' ' only,
 * as memcached does: tabs and other control bytes belong to the key.
 */
bool proto_text_next_key(const struct proto_text_req *rq, size_t *pos,
                         const char **key, size_t *keylen);

/* memcached's reply line for a decode error, without "\r\n"; "" for
 * E_NONE and for the two that close without a reply. */
const char *proto_text_error_text(proto_text_err_e err);

/* The fixed reply lines a text handler sends, without "\r\n". */
typedef enum proto_text_reply {
    PROTO_TEXT_R_STORED = 0,
    PROTO_TEXT_R_NOT_STORED,
    PROTO_TEXT_R_EXISTS,
    PROTO_TEXT_R_NOT_FOUND,
    PROTO_TEXT_R_DELETED,
    PROTO_TEXT_R_TOUCHED,
    PROTO_TEXT_R_OK,
    PROTO_TEXT_R_RESET,
    PROTO_TEXT_R_END,
    PROTO_TEXT_R_MN,
    PROTO_TEXT_R_ERROR,
    PROTO_TEXT_R_NON_NUMERIC,   /* incr/decr on a value that is no number */
    PROTO_TEXT_R_NO_MEMORY,     /* storing failed for want of memory */
    PROTO_TEXT_R_DETAIL_USAGE,  /* stats detail without on|off|dump */
    PROTO_TEXT_R_SHUTDOWN_OFF,  /* shutdown, without -A */
    PROTO_TEXT_R_SHUTDOWN_MODE, /* shutdown, with -A, but not [graceful] */
    PROTO_TEXT_R_COUNT
} proto_text_reply_e;

/* The line for r, without "\r\n"; "" when r is out of range. */
const char *proto_text_reply_text(proto_text_reply_e r);

/*
 * Writes "VALUE <key> <flags> <vlen>[ <cas>]\r\n" into out (cap bytes, no
 * terminator); the cas is written when with_cas. Returns the length, or 0
 * when it does not fit. PROTO_TEXT_VALUE_HDR_MAX always fits a key of up
 * to PROTO_KEY_MAX bytes.
 */
size_t proto_text_value_header(char *out, size_t cap, const char *key,
                               size_t keylen, uint32_t flags, uint32_t vlen,
                               bool with_cas, uint64_t cas);

/* Writes v in decimal into out (no terminator); returns the length. */
size_t proto_text_put_u64(char out[PROTO_TEXT_U64_MAX], uint64_t v);

#endif /* STASHD_PROTOCOL_TEXT_H */
