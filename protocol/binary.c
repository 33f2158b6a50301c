/*
 * The binary codec: one const table says what every opcode looks like, and
 * proto_bin_decode checks a request against it using the 24-byte header
 * alone, before it does any arithmetic on the lengths or touches the body.
 * It must never read past len, allocate, log or keep state. Every rc choice
 * follows memcached 1.6.18 as observed on the wire (tests/notes/
 * binary-oracle.md); where memcached misreads the stream we close instead.
 */
#include "protocol/binary.h"

#include <string.h>

/* How a part of the body may appear. */
enum bin_part {
    PART_FORBIDDEN = 0,
    PART_REQUIRED,
    PART_OPTIONAL,
    PART_TRAILING     /* not part of the packet: see bin_shape[] */
};

/* What the extras hold, so the decoder knows how to unpack them. */
enum bin_extras {
    EXTRAS_NONE = 0,
    EXTRAS_STORE,     /* flags u32, exptime u32 */
    EXTRAS_DELTA,     /* delta u64, initial u64, exptime u32 */
    EXTRAS_EXPTIME    /* exptime u32 */
};

struct bin_shape {
    bool    known;       /* memcached 1.6 parses this opcode */
    bool    unsupported; /* well shaped, still answered UNKNOWN (SASL) */
    bool    quiet;
    bool    want_key;    /* the reply echoes the key */
    uint8_t base;        /* quiet and key echo folded away */
    uint8_t ext_min;     /* extlen must equal ext_min or ext_max, */
    uint8_t ext_max;     /* nothing between (FLUSH: 0 or 4) */
    uint8_t key;         /* enum bin_part */
    uint8_t value;       /* enum bin_part; REQUIRED is never used */
    uint8_t extras;      /* enum bin_extras */
};

#define SHAPE(base_, quiet_, wkey_, emin_, emax_, key_, value_, extras_) \
    { .known = true, .unsupported = false, .quiet = (quiet_),             \
      .want_key = (wkey_), .base = (base_), .ext_min = (emin_),          \
      .ext_max = (emax_), .key = (key_), .value = (value_),              \
      .extras = (extras_) }

/* SASL without SASL: memcached checks the shape, then answers UNKNOWN. */
#define SASL(key_, value_)                                                \
    { .known = true, .unsupported = true, .quiet = false,                \
      .want_key = false, .base = 0, .ext_min = 0, .ext_max = 0,          \
      .key = (key_), .value = (value_), .extras = EXTRAS_NONE }

#define GET_LIKE(base_, q_, k_) \
    SHAPE(base_, q_, k_, 0, 0, PART_REQUIRED, PART_FORBIDDEN, EXTRAS_NONE)
#define STORE_LIKE(base_, q_) \
    SHAPE(base_, q_, false, 8, 8, PART_REQUIRED, PART_OPTIONAL, EXTRAS_STORE)
#define CONCAT_LIKE(base_, q_) \
    SHAPE(base_, q_, false, 0, 0, PART_REQUIRED, PART_OPTIONAL, EXTRAS_NONE)
#define ARITH_LIKE(base_, q_) \
    SHAPE(base_, q_, false, 20, 20, PART_REQUIRED, PART_FORBIDDEN,       \
          EXTRAS_DELTA)
#define BARE(base_, q_) \
    SHAPE(base_, q_, false, 0, 0, PART_FORBIDDEN, PART_FORBIDDEN,        \
          EXTRAS_NONE)
#define TOUCH_LIKE(base_, q_, k_) \
    SHAPE(base_, q_, k_, 4, 4, PART_REQUIRED, PART_TRAILING, EXTRAS_EXPTIME)

/*
 * The only place packet shapes live. memcached 1.6.18 reads only the extras
 * and key of TOUCH, the GAT family and STAT and parses any bytes the body
 * length counts beyond them as the next request (PART_TRAILING). We do the
 * same, so a client's stream is cut into requests exactly as memcached
 * cuts it: what would run there runs here, and nothing else.
 */
static const struct bin_shape bin_shape[256] = {
    [PROTO_BIN_GET]       = GET_LIKE(PROTO_BIN_GET, false, false),
    [PROTO_BIN_GETQ]      = GET_LIKE(PROTO_BIN_GET, true, false),
    [PROTO_BIN_GETK]      = GET_LIKE(PROTO_BIN_GET, false, true),
    [PROTO_BIN_GETKQ]     = GET_LIKE(PROTO_BIN_GET, true, true),
    [PROTO_BIN_SET]       = STORE_LIKE(PROTO_BIN_SET, false),
    [PROTO_BIN_SETQ]      = STORE_LIKE(PROTO_BIN_SET, true),
    [PROTO_BIN_ADD]       = STORE_LIKE(PROTO_BIN_ADD, false),
    [PROTO_BIN_ADDQ]      = STORE_LIKE(PROTO_BIN_ADD, true),
    [PROTO_BIN_REPLACE]   = STORE_LIKE(PROTO_BIN_REPLACE, false),
    [PROTO_BIN_REPLACEQ]  = STORE_LIKE(PROTO_BIN_REPLACE, true),
    [PROTO_BIN_APPEND]    = CONCAT_LIKE(PROTO_BIN_APPEND, false),
    [PROTO_BIN_APPENDQ]   = CONCAT_LIKE(PROTO_BIN_APPEND, true),
    [PROTO_BIN_PREPEND]   = CONCAT_LIKE(PROTO_BIN_PREPEND, false),
    [PROTO_BIN_PREPENDQ]  = CONCAT_LIKE(PROTO_BIN_PREPEND, true),
    [PROTO_BIN_DELETE]    = GET_LIKE(PROTO_BIN_DELETE, false, false),
    [PROTO_BIN_DELETEQ]   = GET_LIKE(PROTO_BIN_DELETE, true, false),
    [PROTO_BIN_INCR]      = ARITH_LIKE(PROTO_BIN_INCR, false),
    [PROTO_BIN_INCRQ]     = ARITH_LIKE(PROTO_BIN_INCR, true),
    [PROTO_BIN_DECR]      = ARITH_LIKE(PROTO_BIN_DECR, false),
    [PROTO_BIN_DECRQ]     = ARITH_LIKE(PROTO_BIN_DECR, true),
    [PROTO_BIN_QUIT]      = BARE(PROTO_BIN_QUIT, false),
    [PROTO_BIN_QUITQ]     = BARE(PROTO_BIN_QUIT, true),
    [PROTO_BIN_FLUSH]     = SHAPE(PROTO_BIN_FLUSH, false, false, 0, 4,
                                  PART_FORBIDDEN, PART_FORBIDDEN,
                                  EXTRAS_EXPTIME),
    [PROTO_BIN_FLUSHQ]    = SHAPE(PROTO_BIN_FLUSH, true, false, 0, 4,
                                  PART_FORBIDDEN, PART_FORBIDDEN,
                                  EXTRAS_EXPTIME),
    [PROTO_BIN_NOOP]      = BARE(PROTO_BIN_NOOP, false),
    [PROTO_BIN_VERSION]   = BARE(PROTO_BIN_VERSION, false),
    [PROTO_BIN_STAT]      = SHAPE(PROTO_BIN_STAT, false, false, 0, 0,
                                  PART_OPTIONAL, PART_TRAILING,
                                  EXTRAS_NONE),
    [PROTO_BIN_TOUCH]     = TOUCH_LIKE(PROTO_BIN_TOUCH, false, false),
    [PROTO_BIN_GAT]       = TOUCH_LIKE(PROTO_BIN_GAT, false, false),
    [PROTO_BIN_GATQ]      = TOUCH_LIKE(PROTO_BIN_GAT, true, false),
    [PROTO_BIN_GATK]      = TOUCH_LIKE(PROTO_BIN_GAT, false, true),
    [PROTO_BIN_GATKQ]     = TOUCH_LIKE(PROTO_BIN_GAT, true, true),
    [PROTO_BIN_SASL_LIST] = SASL(PART_FORBIDDEN, PART_FORBIDDEN),
    [PROTO_BIN_SASL_AUTH] = SASL(PART_REQUIRED, PART_OPTIONAL),
    [PROTO_BIN_SASL_STEP] = SASL(PART_REQUIRED, PART_OPTIONAL),
};

static uint16_t
get_u16(const uint8_t *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static uint32_t
get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

static uint64_t
get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

static void
put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

void
proto_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

void
proto_put_u64(uint8_t *p, uint64_t v)
{
    proto_put_u32(p, (uint32_t)(v >> 32));
    proto_put_u32(p + 4, (uint32_t)v);
}

static bool
part_ok(uint8_t rule, uint32_t len)
{
    switch (rule) {
    case PART_REQUIRED:
        return len > 0;
    case PART_FORBIDDEN:
        return len == 0;
    default:
        return true;
    }
}

/* Whether lengths that already add up fit the opcode's shape. */
static bool
shape_ok(const struct bin_shape *sh, uint8_t extlen, uint16_t keylen,
         uint32_t vlen)
{
    if (extlen != sh->ext_min && extlen != sh->ext_max) {
        return false;
    }
    return part_ok(sh->key, keylen) && part_ok(sh->value, vlen);
}

static void
decode_extras(const struct bin_shape *sh, struct proto_bin_req *rq)
{
    const uint8_t *x = rq->extras;

    switch (sh->extras) {
    case EXTRAS_STORE:
        rq->flags = get_u32(x);
        rq->exptime = get_u32(x + 4);
        rq->has_exptime = true;
        break;
    case EXTRAS_DELTA:
        rq->delta = get_u64(x);
        rq->initial = get_u64(x + 8);
        rq->exptime = get_u32(x + 16);
        rq->has_exptime = true;
        break;
    case EXTRAS_EXPTIME:
        if (rq->extlen == 4) {
            rq->exptime = get_u32(x);
            rq->has_exptime = true;
        }
        break;
    default:
        break;
    }
}

proto_rc_e
proto_bin_decode(const uint8_t *buf, size_t len, size_t max_value,
                 struct proto_bin_req *rq, size_t *used)
{
    const struct bin_shape *sh;
    uint32_t fixed;
    uint64_t total;

    if (len < PROTO_BIN_HDR) {
        *used = PROTO_BIN_HDR;
        return PROTO_NEED_MORE;
    }
    memset(rq, 0, sizeof(*rq));
    *used = PROTO_BIN_HDR;
    if (buf[0] != PROTO_BIN_REQ) {
        return PROTO_EMAGIC;
    }
    rq->opcode = buf[1];
    rq->keylen = get_u16(buf + 2);
    rq->extlen = buf[4];
    rq->datatype = buf[5];
    rq->vbucket = get_u16(buf + 6);
    rq->bodylen = get_u32(buf + 8);
    rq->opaque = get_u32(buf + 12);
    rq->cas = get_u64(buf + 16);

    sh = &bin_shape[rq->opcode];
    rq->base_op = sh->known && !sh->unsupported ? sh->base : rq->opcode;
    rq->quiet = sh->quiet;
    rq->want_key = sh->want_key;

    /* Both terms are small, so the sum cannot wrap; compare, then subtract. */
    fixed = (uint32_t)rq->extlen + rq->keylen;
    if (fixed > rq->bodylen) {
        return PROTO_EFRAME;
    }
    rq->vlen = rq->bodylen - fixed;
    if (rq->keylen > PROTO_KEY_MAX) {
        return PROTO_EINVAL;
    }
    if (!sh->known) {
        return PROTO_EUNKNOWN;
    }
    if (!shape_ok(sh, rq->extlen, rq->keylen, rq->vlen)) {
        return PROTO_EINVAL;
    }
    if (sh->unsupported) {
        return PROTO_EUNKNOWN;
    }
    if (sh->value == PART_TRAILING) {
        rq->bodylen = fixed;
        rq->vlen = 0;
    }
    if (sh->value != PART_FORBIDDEN && rq->vlen > max_value) {
        return PROTO_E2BIG;
    }
    total = (uint64_t)PROTO_BIN_HDR + rq->bodylen;
#if SIZE_MAX < UINT64_MAX
    if (total > SIZE_MAX) {
        return PROTO_E2BIG;   /* only a value can be this big */
    }
#endif
    if ((uint64_t)len < total) {
        *used = (size_t)total;
        return PROTO_NEED_MORE;
    }
    rq->extras = buf + PROTO_BIN_HDR;
    rq->key = rq->extras + rq->extlen;
    rq->value = rq->key + rq->keylen;
    if (rq->extlen == 0) {
        rq->extras = NULL;
    }
    if (rq->keylen == 0) {
        rq->key = NULL;
    }
    if (rq->vlen == 0) {
        rq->value = NULL;
    }
    decode_extras(sh, rq);
    *used = (size_t)total;
    return PROTO_OK;
}

void
proto_bin_encode_header(uint8_t out[PROTO_BIN_HDR], uint8_t opcode,
                        uint16_t status, uint8_t extlen, uint16_t keylen,
                        uint32_t vlen, uint32_t opaque, uint64_t cas)
{
    out[0] = PROTO_BIN_RES;
    out[1] = opcode;
    put_u16(out + 2, keylen);
    out[4] = extlen;
    out[5] = 0;                               /* datatype: raw bytes */
    put_u16(out + 6, status);
    proto_put_u32(out + 8, (uint32_t)extlen + keylen + vlen);
    proto_put_u32(out + 12, opaque);
    proto_put_u64(out + 16, cas);
}

const char *
proto_bin_status_text(uint16_t status)
{
    switch (status) {
    case PROTO_BIN_OK:
        return "";
    case PROTO_BIN_ENOENT:
        return "Not found";
    case PROTO_BIN_EEXISTS:
        return "Data exists for key.";
    case PROTO_BIN_E2BIG:
        return "Too large.";
    case PROTO_BIN_EINVAL:
        return "Invalid arguments";
    case PROTO_BIN_NOT_STORED:
        return "Not stored.";
    case PROTO_BIN_EDELTA:
        return "Non-numeric server-side value for incr or decr";
    case PROTO_BIN_AUTH_ERROR:
        return "Auth failure.";
    case PROTO_BIN_AUTH_CONTINUE:
        return "";                    /* its body is the SASL challenge */
    case PROTO_BIN_UNKNOWN:
        return "Unknown command";
    case PROTO_BIN_ENOMEM:
        return "Out of memory";
    default:
        return "UNHANDLED ERROR";
    }
}

const char *
proto_strerror(proto_rc_e rc)
{
    switch (rc) {
    case PROTO_OK:
        return "ok";
    case PROTO_NEED_MORE:
        return "incomplete request";
    case PROTO_EMAGIC:
        return "bad request magic";
    case PROTO_EINVAL:
        return "request shape invalid for its opcode";
    case PROTO_EUNKNOWN:
        return "unknown opcode";
    case PROTO_E2BIG:
        return "value too large";
    case PROTO_EFRAME:
        return "extras and key longer than the body";
    default:
        return "unknown proto_rc";
    }
}
