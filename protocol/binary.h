/*
 * memcached's binary protocol (BinaryProtocolRevamped) as a pure codec:
 * bytes in, structs out, and response headers encoded into caller memory.
 * It owns the shape of every packet (which opcodes exist, which extras, key
 * and value each takes) and must never do I/O, allocate, log or keep state.
 * Byte order is converted here and nowhere else.
 */
#ifndef STASHD_PROTOCOL_BINARY_H
#define STASHD_PROTOCOL_BINARY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROTO_BIN_REQ 0x80
#define PROTO_BIN_RES 0x81
#define PROTO_BIN_HDR 24
#define PROTO_KEY_MAX 250

enum proto_bin_op {
    PROTO_BIN_GET = 0x00,
    PROTO_BIN_SET = 0x01,
    PROTO_BIN_ADD = 0x02,
    PROTO_BIN_REPLACE = 0x03,
    PROTO_BIN_DELETE = 0x04,
    PROTO_BIN_INCR = 0x05,
    PROTO_BIN_DECR = 0x06,
    PROTO_BIN_QUIT = 0x07,
    PROTO_BIN_FLUSH = 0x08,
    PROTO_BIN_GETQ = 0x09,
    PROTO_BIN_NOOP = 0x0a,
    PROTO_BIN_VERSION = 0x0b,
    PROTO_BIN_GETK = 0x0c,
    PROTO_BIN_GETKQ = 0x0d,
    PROTO_BIN_APPEND = 0x0e,
    PROTO_BIN_PREPEND = 0x0f,
    PROTO_BIN_STAT = 0x10,
    PROTO_BIN_SETQ = 0x11,
    PROTO_BIN_ADDQ = 0x12,
    PROTO_BIN_REPLACEQ = 0x13,
    PROTO_BIN_DELETEQ = 0x14,
    PROTO_BIN_INCRQ = 0x15,
    PROTO_BIN_DECRQ = 0x16,
    PROTO_BIN_QUITQ = 0x17,
    PROTO_BIN_FLUSHQ = 0x18,
    PROTO_BIN_APPENDQ = 0x19,
    PROTO_BIN_PREPENDQ = 0x1a,
    PROTO_BIN_TOUCH = 0x1c,
    PROTO_BIN_GAT = 0x1d,
    PROTO_BIN_GATQ = 0x1e,
    PROTO_BIN_SASL_LIST = 0x20,
    PROTO_BIN_SASL_AUTH = 0x21,
    PROTO_BIN_SASL_STEP = 0x22,
    PROTO_BIN_GATK = 0x23,
    PROTO_BIN_GATKQ = 0x24
};

enum proto_bin_status {
    PROTO_BIN_OK = 0x00,
    PROTO_BIN_ENOENT = 0x01,
    PROTO_BIN_EEXISTS = 0x02,
    PROTO_BIN_E2BIG = 0x03,
    PROTO_BIN_EINVAL = 0x04,
    PROTO_BIN_NOT_STORED = 0x05,
    PROTO_BIN_EDELTA = 0x06,
    PROTO_BIN_AUTH_ERROR = 0x20,
    PROTO_BIN_AUTH_CONTINUE = 0x21,
    PROTO_BIN_UNKNOWN = 0x81,
    PROTO_BIN_ENOMEM = 0x82
};

typedef enum proto_rc {
    PROTO_OK = 0,     /* a complete, well-shaped request */
    PROTO_NEED_MORE,  /* *used = total bytes the request needs */
    PROTO_EMAGIC,     /* not a request magic: close without a reply */
    PROTO_EINVAL,     /* bad shape: reply EINVAL, then close */
    PROTO_EUNKNOWN,   /* unknown opcode: reply UNKNOWN, skip the body */
    PROTO_E2BIG,      /* value over max_value: reply E2BIG, skip the body */
    PROTO_EFRAME      /* extlen + keylen > bodylen: reply UNKNOWN, then
                         close (memcached's answer to a broken frame) */
} proto_rc_e;

/* A decoded request; every pointer aims into the caller's buffer. */
struct proto_bin_req {
    uint8_t        opcode;     /* as sent, e.g. SETQ */
    uint8_t        base_op;    /* quiet and key echo folded away:
                                  SETQ -> SET, GETKQ -> GET, GATK -> GAT;
                                  unknown and SASL opcodes: as sent */
    bool           quiet;      /* a quiet variant (GETQ, SETQ, ...) */
    bool           want_key;   /* GETK, GETKQ, GATK, GATKQ */
    uint8_t        datatype;
    uint16_t       vbucket;
    uint8_t        extlen;
    uint16_t       keylen;
    uint32_t       bodylen;
    uint32_t       vlen;
    uint32_t       opaque;     /* echoed as sent */
    uint64_t       cas;
    const uint8_t *extras;
    const uint8_t *key;
    const uint8_t *value;
    /* extras, decoded when the opcode has them */
    uint32_t       flags;      /* SET/ADD/REPLACE */
    uint32_t       exptime;    /* SET.., INCR/DECR, TOUCH/GAT, FLUSH */
    bool           has_exptime;/* an exptime was sent: always for SET..,
                                  INCR/DECR, TOUCH/GAT; FLUSH only with
                                  its 4-byte extras */
    uint64_t       delta;      /* INCR/DECR */
    uint64_t       initial;    /* INCR/DECR */
};

/*
 * Decodes one request from buf[0, len). PROTO_OK: *used = its size.
 * PROTO_NEED_MORE: *used = the size needed so far (at least len + 1).
 * PROTO_EUNKNOWN / PROTO_E2BIG: *used = 24 and rq->bodylen bytes follow that
 * the caller must skip. PROTO_EINVAL / PROTO_EFRAME / PROTO_EMAGIC: *used is
 * undefined. Only the header is needed to return anything but OK.
 * Checks run in memcached's order: magic, extlen + keylen > bodylen, keylen
 * > 250, unknown opcode, the opcode's shape (SASL: then UNKNOWN), value
 * over max_value (value-carrying opcodes only).
 * Except after EMAGIC, rq's header fields (opcode, opaque, ...) are filled
 * for every rc but NEED_MORE-before-24-bytes, so an error reply can echo
 * them; extras/key/value and the decoded extras are set only on PROTO_OK.
 * Pure: reads only buf[0, len), writes only *rq and *used.
 */
proto_rc_e proto_bin_decode(const uint8_t *buf, size_t len, size_t max_value,
                            struct proto_bin_req *rq, size_t *used);

/*
 * Writes a 24-byte response header into out, echoing the request's opcode
 * and opaque; bodylen = extlen + keylen + vlen.
 */
void proto_bin_encode_header(uint8_t out[PROTO_BIN_HDR], uint8_t opcode,
                             uint16_t status, uint8_t extlen, uint16_t keylen,
                             uint32_t vlen, uint32_t opaque, uint64_t cas);

/*
 * memcached's error text for a status ("Not found", ...), "" for OK and
 * AUTH_CONTINUE, "UNHANDLED ERROR" for a status memcached has no text for.
 */
const char *proto_bin_status_text(uint16_t status);

/* A short English description of rc, for logs. */
const char *proto_strerror(proto_rc_e rc);

/* Stores v big-endian at p. */
void proto_put_u32(uint8_t *p, uint32_t v);
void proto_put_u64(uint8_t *p, uint64_t v);

#endif /* STASHD_PROTOCOL_BINARY_H */
