/*
 * Unit tests for the binary codec (protocol/binary.c). Expected shapes are
 * written out here again, independently of the codec's table, from what
 * memcached 1.6.18 answered on the wire (tests/notes/binary-oracle.md).
 * Every buffer handed to the decoder is a heap copy of exactly len bytes,
 * so an ASan build catches any read past len.
 */
#include "protocol/binary.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_VALUE (1024u * 1024u)
#define PKT_MAX   (PROTO_BIN_HDR + 255 + 65535 + 64)

/* ---- the expected shape of every opcode memcached 1.6 parses ---- */

enum key_rule { KEY_NO, KEY_REQ, KEY_OPT };

struct op_spec {
    uint8_t op;
    uint8_t ext_a, ext_b;    /* the allowed extlens (usually equal) */
    uint8_t key;             /* enum key_rule */
    bool    value;           /* a value is allowed */
    bool    sasl;            /* well shaped still means UNKNOWN */
    uint8_t base;
    bool    quiet, want_key;
};

static const struct op_spec specs[] = {
    { 0x00,  0,  0, KEY_REQ, false, false, 0x00, false, false }, /* GET */
    { 0x01,  8,  8, KEY_REQ, true,  false, 0x01, false, false }, /* SET */
    { 0x02,  8,  8, KEY_REQ, true,  false, 0x02, false, false }, /* ADD */
    { 0x03,  8,  8, KEY_REQ, true,  false, 0x03, false, false }, /* REPLACE */
    { 0x04,  0,  0, KEY_REQ, false, false, 0x04, false, false }, /* DELETE */
    { 0x05, 20, 20, KEY_REQ, false, false, 0x05, false, false }, /* INCR */
    { 0x06, 20, 20, KEY_REQ, false, false, 0x06, false, false }, /* DECR */
    { 0x07,  0,  0, KEY_NO,  false, false, 0x07, false, false }, /* QUIT */
    { 0x08,  0,  4, KEY_NO,  false, false, 0x08, false, false }, /* FLUSH */
    { 0x09,  0,  0, KEY_REQ, false, false, 0x00, true,  false }, /* GETQ */
    { 0x0a,  0,  0, KEY_NO,  false, false, 0x0a, false, false }, /* NOOP */
    { 0x0b,  0,  0, KEY_NO,  false, false, 0x0b, false, false }, /* VERSION */
    { 0x0c,  0,  0, KEY_REQ, false, false, 0x00, false, true  }, /* GETK */
    { 0x0d,  0,  0, KEY_REQ, false, false, 0x00, true,  true  }, /* GETKQ */
    { 0x0e,  0,  0, KEY_REQ, true,  false, 0x0e, false, false }, /* APPEND */
    { 0x0f,  0,  0, KEY_REQ, true,  false, 0x0f, false, false }, /* PREPEND */
    { 0x10,  0,  0, KEY_OPT, false, false, 0x10, false, false }, /* STAT */
    { 0x11,  8,  8, KEY_REQ, true,  false, 0x01, true,  false }, /* SETQ */
    { 0x12,  8,  8, KEY_REQ, true,  false, 0x02, true,  false }, /* ADDQ */
    { 0x13,  8,  8, KEY_REQ, true,  false, 0x03, true,  false }, /* REPLACEQ */
    { 0x14,  0,  0, KEY_REQ, false, false, 0x04, true,  false }, /* DELETEQ */
    { 0x15, 20, 20, KEY_REQ, false, false, 0x05, true,  false }, /* INCRQ */
    { 0x16, 20, 20, KEY_REQ, false, false, 0x06, true,  false }, /* DECRQ */
    { 0x17,  0,  0, KEY_NO,  false, false, 0x07, true,  false }, /* QUITQ */
    { 0x18,  0,  4, KEY_NO,  false, false, 0x08, true,  false }, /* FLUSHQ */
    { 0x19,  0,  0, KEY_REQ, true,  false, 0x0e, true,  false }, /* APPENDQ */
    { 0x1a,  0,  0, KEY_REQ, true,  false, 0x0f, true,  false }, /* PREPENDQ */
    { 0x1c,  4,  4, KEY_REQ, false, false, 0x1c, false, false }, /* TOUCH */
    { 0x1d,  4,  4, KEY_REQ, false, false, 0x1d, false, false }, /* GAT */
    { 0x1e,  4,  4, KEY_REQ, false, false, 0x1d, true,  false }, /* GATQ */
    { 0x23,  4,  4, KEY_REQ, false, false, 0x1d, false, true  }, /* GATK */
    { 0x24,  4,  4, KEY_REQ, false, false, 0x1d, true,  true  }, /* GATKQ */
    { 0x20,  0,  0, KEY_NO,  false, true,  0x20, false, false }, /* SASL_LIST */
    { 0x21,  0,  0, KEY_REQ, true,  true,  0x21, false, false }, /* SASL_AUTH */
    { 0x22,  0,  0, KEY_REQ, true,  true,  0x22, false, false }, /* SASL_STEP */
};
#define NSPECS ((int)(sizeof(specs) / sizeof(specs[0])))

static const struct op_spec *
spec_of(unsigned op)
{
    for (int i = 0; i < NSPECS; i++) {
        if (specs[i].op == op) {
            return &specs[i];
        }
    }
    return NULL;
}

/* ---- packet building and exact-size decoding ---- */

static uint32_t
rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

static uint64_t
rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) << 32 | rd32(p + 4);
}

/* Writes a request header; bodylen is given, not computed. */
static void
put_hdr(uint8_t *p, uint8_t magic, uint8_t op, uint16_t keylen,
        uint8_t extlen, uint32_t bodylen, uint32_t opaque, uint64_t cas)
{
    p[0] = magic;
    p[1] = op;
    p[2] = (uint8_t)(keylen >> 8);
    p[3] = (uint8_t)keylen;
    p[4] = extlen;
    p[5] = 0;
    p[6] = 0;
    p[7] = 0;
    proto_put_u32(p + 8, bodylen);
    proto_put_u32(p + 12, opaque);
    proto_put_u64(p + 16, cas);
}

/* Builds a whole request with extras 01 02 03 ..., returns its size. */
static size_t
build(uint8_t *out, uint8_t op, uint8_t extlen, const char *key,
      const char *value)
{
    size_t kl = strlen(key), vl = strlen(value);

    put_hdr(out, PROTO_BIN_REQ, op, (uint16_t)kl, extlen,
            (uint32_t)(extlen + kl + vl), 0xA1B2C3D4u, 0x0102030405060708ull);
    for (unsigned i = 0; i < extlen; i++) {
        out[PROTO_BIN_HDR + i] = (uint8_t)(i + 1);
    }
    memcpy(out + PROTO_BIN_HDR + extlen, key, kl);
    memcpy(out + PROTO_BIN_HDR + extlen + kl, value, vl);
    return PROTO_BIN_HDR + extlen + kl + vl;
}

/* Decodes a heap copy of exactly len bytes of pkt; *copy keeps it. */
static proto_rc_e
decode_copy(const uint8_t *pkt, size_t len, size_t max_value,
            struct proto_bin_req *rq, size_t *used, uint8_t **copy)
{
    uint8_t *b = malloc(len > 0 ? len : 1);

    ck_assert_ptr_nonnull(b);
    if (len > 0) {
        memcpy(b, pkt, len);
    }
    *copy = b;
    return proto_bin_decode(b, len, max_value, rq, used);
}

static proto_rc_e
decode_once(const uint8_t *pkt, size_t len, size_t max_value,
            struct proto_bin_req *rq, size_t *used)
{
    uint8_t *copy;
    proto_rc_e rc = decode_copy(pkt, len, max_value, rq, used, &copy);

    free(copy);
    return rc;
}

/* Decodes only the 24-byte header, with bodylen, keylen and extlen as given. */
static proto_rc_e
decode_hdr(uint8_t op, uint16_t keylen, uint8_t extlen, uint32_t bodylen,
           size_t max_value, struct proto_bin_req *rq, size_t *used)
{
    uint8_t h[PROTO_BIN_HDR];

    put_hdr(h, PROTO_BIN_REQ, op, keylen, extlen, bodylen, 0x55667788u, 9);
    return decode_once(h, sizeof(h), max_value, rq, used);
}

/* Variant v of spec s: 0 = minimal, 1 = everything the opcode allows. */
static size_t
build_variant(uint8_t *out, const struct op_spec *s, int v,
              const char **key, const char **value, uint8_t *extlen)
{
    *extlen = v == 0 ? s->ext_a : s->ext_b;
    *key = s->key == KEY_REQ ? "some:key" :
           (s->key == KEY_OPT && v == 1) ? "items" : "";
    *value = s->value && v == 1 ? "the value" : "";
    return build(out, s->op, *extlen, *key, *value);
}

static void
check_extras(const struct proto_bin_req *rq, uint8_t extlen)
{
    switch (extlen) {
    case 8:
        ck_assert_uint_eq(rq->flags, 0x01020304u);
        ck_assert_uint_eq(rq->exptime, 0x05060708u);
        ck_assert(rq->has_exptime);
        break;
    case 20:
        ck_assert_uint_eq(rq->delta, 0x0102030405060708ull);
        ck_assert_uint_eq(rq->initial, 0x090a0b0c0d0e0f10ull);
        ck_assert_uint_eq(rq->exptime, 0x11121314u);
        ck_assert(rq->has_exptime);
        break;
    case 4:
        ck_assert_uint_eq(rq->exptime, 0x01020304u);
        ck_assert(rq->has_exptime);
        break;
    default:
        ck_assert(!rq->has_exptime);
        ck_assert_uint_eq(rq->exptime, 0);
        ck_assert_uint_eq(rq->flags, 0);
        ck_assert_uint_eq(rq->delta, 0);
        break;
    }
}

/* ---- every opcode decodes ---- */

START_TEST(decode_every_opcode)
{
    const struct op_spec *s = &specs[_i / 2];
    static uint8_t pkt[PKT_MAX];
    const char *key, *value;
    uint8_t extlen, *copy;
    struct proto_bin_req rq;
    size_t n = build_variant(pkt, s, _i % 2, &key, &value, &extlen), used;
    proto_rc_e rc;

    rc = decode_copy(pkt, n, MAX_VALUE, &rq, &used, &copy);
    ck_assert_uint_eq(rq.opcode, s->op);
    ck_assert_uint_eq(rq.extlen, extlen);
    ck_assert_uint_eq(rq.keylen, strlen(key));
    ck_assert_uint_eq(rq.vlen, strlen(value));
    ck_assert_uint_eq(rq.bodylen, n - PROTO_BIN_HDR);
    ck_assert_uint_eq(rq.opaque, 0xA1B2C3D4u);
    ck_assert_uint_eq(rq.cas, 0x0102030405060708ull);
    if (s->sasl) {
        ck_assert_int_eq(rc, PROTO_EUNKNOWN);
        ck_assert_uint_eq(used, PROTO_BIN_HDR);
        ck_assert_uint_eq(rq.base_op, s->op);
        free(copy);
        return;
    }
    ck_assert_int_eq(rc, PROTO_OK);
    ck_assert_uint_eq(used, n);
    ck_assert_uint_eq(rq.base_op, s->base);
    ck_assert(rq.quiet == s->quiet);
    ck_assert(rq.want_key == s->want_key);
    ck_assert_uint_eq(rq.datatype, 0);
    ck_assert_uint_eq(rq.vbucket, 0);
    if (extlen > 0) {
        ck_assert_ptr_eq(rq.extras, copy + PROTO_BIN_HDR);
    } else {
        ck_assert_ptr_null(rq.extras);
    }
    if (*key != '\0') {
        ck_assert_ptr_eq(rq.key, copy + PROTO_BIN_HDR + extlen);
        ck_assert_mem_eq(rq.key, key, strlen(key));
    } else {
        ck_assert_ptr_null(rq.key);
    }
    if (*value != '\0') {
        ck_assert_ptr_eq(rq.value, copy + PROTO_BIN_HDR + extlen +
                         strlen(key));
        ck_assert_mem_eq(rq.value, value, strlen(value));
    } else {
        ck_assert_ptr_null(rq.value);
    }
    check_extras(&rq, extlen);
    free(copy);

    /* bytes of the next request after it change nothing */
    memset(pkt + n, 0x80, 40);
    ck_assert_int_eq(decode_once(pkt, n + 40, MAX_VALUE, &rq, &used),
                     PROTO_OK);
    ck_assert_uint_eq(used, n);
}
END_TEST

/* Every prefix of every valid packet asks for more, and for the right size. */
START_TEST(prefix_needs_more)
{
    const struct op_spec *s = &specs[_i / 2];
    static uint8_t pkt[PKT_MAX];
    const char *key, *value;
    uint8_t extlen;
    struct proto_bin_req rq;
    size_t n = build_variant(pkt, s, _i % 2, &key, &value, &extlen), used;

    for (size_t p = 0; p < n; p++) {
        proto_rc_e rc = decode_once(pkt, p, MAX_VALUE, &rq, &used);

        if (s->sasl && p >= PROTO_BIN_HDR) {
            ck_assert_int_eq(rc, PROTO_EUNKNOWN);   /* header decides */
            continue;
        }
        ck_assert_msg(rc == PROTO_NEED_MORE, "op %02x prefix %zu: rc %d",
                      s->op, p, rc);
        ck_assert_uint_eq(used, p < PROTO_BIN_HDR ? PROTO_BIN_HDR : n);
        ck_assert_uint_gt(used, p);
    }
}
END_TEST

/* Two requests back to back decode one after the other. */
START_TEST(pipelined)
{
    static uint8_t pkt[PKT_MAX];
    struct proto_bin_req rq;
    size_t n = 0, used, off = 0;
    uint8_t *copy;

    n += build(pkt + n, PROTO_BIN_SETQ, 8, "a", "1");
    n += build(pkt + n, PROTO_BIN_GETKQ, 0, "a", "");
    n += build(pkt + n, PROTO_BIN_NOOP, 0, "", "");
    ck_assert_int_eq(decode_copy(pkt, n, MAX_VALUE, &rq, &used, &copy),
                     PROTO_OK);
    ck_assert_uint_eq(rq.opcode, PROTO_BIN_SETQ);
    off += used;
    ck_assert_int_eq(proto_bin_decode(copy + off, n - off, MAX_VALUE, &rq,
                                      &used), PROTO_OK);
    ck_assert_uint_eq(rq.opcode, PROTO_BIN_GETKQ);
    ck_assert_mem_eq(rq.key, "a", 1);
    off += used;
    ck_assert_int_eq(proto_bin_decode(copy + off, n - off, MAX_VALUE, &rq,
                                      &used), PROTO_OK);
    ck_assert_uint_eq(rq.opcode, PROTO_BIN_NOOP);
    off += used;
    ck_assert_uint_eq(off, n);
    free(copy);
}
END_TEST

/* ---- length errors, decided from the header alone ---- */

static uint16_t
good_keylen(const struct op_spec *s)
{
    return s->key == KEY_REQ ? 3 : 0;
}

START_TEST(wrong_extlen_is_einval)
{
    const struct op_spec *s = &specs[_i];
    uint16_t kl = good_keylen(s);
    struct proto_bin_req rq;
    size_t used;

    for (unsigned el = 0; el < 256; el++) {
        if (el == s->ext_a || el == s->ext_b) {
            continue;
        }
        ck_assert_msg(decode_hdr(s->op, kl, (uint8_t)el, el + kl, MAX_VALUE,
                                 &rq, &used) == PROTO_EINVAL,
                      "op %02x extlen %u", s->op, el);
        ck_assert_uint_eq(rq.opcode, s->op);
        ck_assert_uint_eq(rq.opaque, 0x55667788u);
    }
}
END_TEST

START_TEST(key_rules)
{
    const struct op_spec *s = &specs[_i];
    struct proto_bin_req rq;
    size_t used;
    proto_rc_e rc;

    /* no key (a header-only packet is complete when ext_a is 0) */
    rc = decode_hdr(s->op, 0, s->ext_a, s->ext_a, MAX_VALUE, &rq, &used);
    if (s->key == KEY_REQ) {
        ck_assert_int_eq(rc, PROTO_EINVAL);
    } else if (s->sasl) {
        ck_assert_int_eq(rc, PROTO_EUNKNOWN);
    } else {
        ck_assert_int_eq(rc, s->ext_a > 0 ? PROTO_NEED_MORE : PROTO_OK);
    }
    /* a key */
    rc = decode_hdr(s->op, 3, s->ext_a, s->ext_a + 3u, MAX_VALUE, &rq, &used);
    if (s->key == KEY_NO) {
        ck_assert_int_eq(rc, PROTO_EINVAL);
    } else {
        ck_assert_int_eq(rc, (s->sasl ? PROTO_EUNKNOWN : PROTO_NEED_MORE));
        if (!s->sasl) {
            ck_assert_uint_eq(used, PROTO_BIN_HDR + s->ext_a + 3u);
        }
    }
}
END_TEST

START_TEST(value_rules)
{
    const struct op_spec *s = &specs[_i];
    uint16_t kl = good_keylen(s);
    uint32_t fixed = s->ext_a + (uint32_t)kl;
    struct proto_bin_req rq;
    size_t used;
    proto_rc_e rc;

    rc = decode_hdr(s->op, kl, s->ext_a, fixed + 1, MAX_VALUE, &rq, &used);
    if (s->op == 0x10 || s->op == 0x1c || s->op == 0x1d || s->op == 0x1e ||
        s->op == 0x23 || s->op == 0x24) {
        /* memcached reads only extras and key of these; what the body
         * length counts beyond them is the next request. */
        ck_assert_int_eq(rc, fixed == 0 ? PROTO_OK : PROTO_NEED_MORE);
        ck_assert_uint_eq(rq.vlen, 0);
        ck_assert_uint_eq(rq.bodylen, fixed);
        ck_assert_uint_eq(used, PROTO_BIN_HDR + fixed);
    } else if (!s->value) {
        ck_assert_int_eq(rc, PROTO_EINVAL);
        /* forbidden beats too large: EINVAL even for a huge body */
        ck_assert_int_eq(decode_hdr(s->op, kl, s->ext_a, 0xffffffffu,
                                    MAX_VALUE, &rq, &used), PROTO_EINVAL);
    } else {
        ck_assert_int_eq(rc, (s->sasl ? PROTO_EUNKNOWN : PROTO_NEED_MORE));
        ck_assert_uint_eq(rq.vlen, 1);
    }
}
END_TEST

START_TEST(frame_shorter_than_extras_and_key)
{
    const struct op_spec *s = &specs[_i];
    uint16_t kl = good_keylen(s);
    struct proto_bin_req rq;
    size_t used;

    if (s->ext_a + kl > 0) {
        ck_assert_int_eq(decode_hdr(s->op, kl, s->ext_a, s->ext_a + kl - 1u,
                                    MAX_VALUE, &rq, &used), PROTO_EFRAME);
        ck_assert_uint_eq(rq.opcode, s->op);
        ck_assert_uint_eq(rq.opaque, 0x55667788u);
    }
    ck_assert_int_eq(decode_hdr(s->op, 1, 0, 0, MAX_VALUE, &rq, &used),
                     PROTO_EFRAME);
    ck_assert_int_eq(decode_hdr(s->op, 0, 1, 0, MAX_VALUE, &rq, &used),
                     PROTO_EFRAME);
    ck_assert_int_eq(decode_hdr(s->op, 0xffff, 0xff, 0xffff + 0xfe,
                                MAX_VALUE, &rq, &used), PROTO_EFRAME);
    /* memcached checks the frame before the key length */
    ck_assert_int_eq(decode_hdr(s->op, 251, 0, 0, MAX_VALUE, &rq, &used),
                     PROTO_EFRAME);
}
END_TEST

START_TEST(key_over_250)
{
    const struct op_spec *s = &specs[_i];
    struct proto_bin_req rq;
    size_t used;
    proto_rc_e rc;

    ck_assert_int_eq(decode_hdr(s->op, 251, s->ext_a, s->ext_a + 251u,
                                MAX_VALUE, &rq, &used), PROTO_EINVAL);
    ck_assert_int_eq(decode_hdr(s->op, 0xffff, s->ext_a, 0xffffffffu,
                                MAX_VALUE, &rq, &used), PROTO_EINVAL);
    rc = decode_hdr(s->op, 250, s->ext_a, s->ext_a + 250u, MAX_VALUE, &rq,
                    &used);
    if (s->key == KEY_NO) {
        ck_assert_int_eq(rc, PROTO_EINVAL);
    } else if (s->sasl) {
        ck_assert_int_eq(rc, PROTO_EUNKNOWN);
    } else {
        ck_assert_int_eq(rc, PROTO_NEED_MORE);
        ck_assert_uint_eq(used, PROTO_BIN_HDR + s->ext_a + 250u);
    }
}
END_TEST

/* GET and SET with 250- and 251-byte keys, whole packets. */
START_TEST(key_250_251_get_set)
{
    static uint8_t pkt[PKT_MAX];
    char key[252];
    struct proto_bin_req rq;
    size_t n, used;

    memset(key, 'k', 251);
    key[251] = '\0';
    n = build(pkt, PROTO_BIN_GET, 0, key, "");
    ck_assert_int_eq(decode_once(pkt, n, MAX_VALUE, &rq, &used),
                     PROTO_EINVAL);
    n = build(pkt, PROTO_BIN_SET, 8, key, "v");
    ck_assert_int_eq(decode_once(pkt, n, MAX_VALUE, &rq, &used),
                     PROTO_EINVAL);
    key[250] = '\0';
    n = build(pkt, PROTO_BIN_GET, 0, key, "");
    ck_assert_int_eq(decode_once(pkt, n, MAX_VALUE, &rq, &used), PROTO_OK);
    ck_assert_uint_eq(rq.keylen, 250);
    n = build(pkt, PROTO_BIN_SET, 8, key, "v");
    ck_assert_int_eq(decode_once(pkt, n, MAX_VALUE, &rq, &used), PROTO_OK);
    ck_assert_uint_eq(rq.keylen, 250);
    ck_assert_uint_eq(rq.vlen, 1);
}
END_TEST

/* ---- magic, unknown opcodes, SASL ---- */

START_TEST(bad_magic)
{
    uint8_t magic = (uint8_t)(_i >= 0x80 ? _i + 1 : _i);   /* skip 0x80 */
    uint8_t h[PROTO_BIN_HDR];
    struct proto_bin_req rq;
    size_t used;

    put_hdr(h, magic, PROTO_BIN_NOOP, 0, 0, 0, 0, 0);
    ck_assert_int_eq(decode_once(h, sizeof(h), MAX_VALUE, &rq, &used),
                     PROTO_EMAGIC);
    /* fewer than 24 bytes still only asks for the header */
    ck_assert_int_eq(decode_once(h, 1, MAX_VALUE, &rq, &used),
                     PROTO_NEED_MORE);
    ck_assert_uint_eq(used, PROTO_BIN_HDR);
}
END_TEST

START_TEST(unknown_opcodes)
{
    const struct op_spec *s = spec_of((unsigned)_i);
    struct proto_bin_req rq;
    size_t used;
    proto_rc_e rc;

    rc = decode_hdr((uint8_t)_i, 0, 0, 0, MAX_VALUE, &rq, &used);
    ck_assert_uint_eq(rq.opcode, (unsigned)_i);
    ck_assert_uint_eq(rq.opaque, 0x55667788u);
    if (s == NULL) {
        ck_assert_int_eq(rc, PROTO_EUNKNOWN);
        ck_assert_uint_eq(used, PROTO_BIN_HDR);
        ck_assert_uint_eq(rq.base_op, (unsigned)_i);
        /* with a body: skip exactly bodylen after the header */
        ck_assert_int_eq(decode_hdr((uint8_t)_i, 1, 4, 8, MAX_VALUE, &rq,
                                    &used), PROTO_EUNKNOWN);
        ck_assert_uint_eq(used, PROTO_BIN_HDR);
        ck_assert_uint_eq(rq.bodylen, 8);
        ck_assert_int_eq(decode_hdr((uint8_t)_i, 0, 0, 0xffffffffu,
                                    MAX_VALUE, &rq, &used), PROTO_EUNKNOWN);
        ck_assert_uint_eq(rq.bodylen, 0xffffffffu);
        /* a too long key is refused before the opcode is looked at */
        ck_assert_int_eq(decode_hdr((uint8_t)_i, 251, 0, 251, MAX_VALUE,
                                    &rq, &used), PROTO_EINVAL);
    } else if (s->sasl && s->key == KEY_NO) {
        ck_assert_int_eq(rc, PROTO_EUNKNOWN);
    } else if (s->key == KEY_REQ || s->ext_a != 0) {
        ck_assert_int_eq(rc, PROTO_EINVAL);
    } else {
        ck_assert_int_eq(rc, PROTO_OK);
        ck_assert_uint_eq(used, PROTO_BIN_HDR);
    }
}
END_TEST

START_TEST(named_unknown_opcodes)
{
    static const uint8_t ops[] = { 0x1b, 0x1f, 0x25, 0x30, 0x3c, 0x50,
                                   0x80, 0xff };
    struct proto_bin_req rq;
    size_t used;

    for (size_t i = 0; i < sizeof(ops); i++) {
        ck_assert_int_eq(decode_hdr(ops[i], 0, 4, 4, MAX_VALUE, &rq, &used),
                         PROTO_EUNKNOWN);
        ck_assert_uint_eq(used, PROTO_BIN_HDR);
        ck_assert_int_eq(decode_hdr(ops[i], 0, 0, 5, MAX_VALUE, &rq, &used),
                         PROTO_EUNKNOWN);
        ck_assert_uint_eq(rq.bodylen, 5);
    }
}
END_TEST

START_TEST(sasl_without_sasl)
{
    static uint8_t pkt[PKT_MAX];
    struct proto_bin_req rq;
    size_t n, used;

    n = build(pkt, PROTO_BIN_SASL_LIST, 0, "", "");
    ck_assert_int_eq(decode_once(pkt, n, MAX_VALUE, &rq, &used),
                     PROTO_EUNKNOWN);
    ck_assert_uint_eq(used, PROTO_BIN_HDR);
    n = build(pkt, PROTO_BIN_SASL_LIST, 0, "PLAIN", "");
    ck_assert_int_eq(decode_once(pkt, n, MAX_VALUE, &rq, &used),
                     PROTO_EINVAL);
    n = build(pkt, PROTO_BIN_SASL_LIST, 0, "", "x");
    ck_assert_int_eq(decode_once(pkt, n, MAX_VALUE, &rq, &used),
                     PROTO_EINVAL);
    for (uint8_t op = PROTO_BIN_SASL_AUTH; op <= PROTO_BIN_SASL_STEP; op++) {
        n = build(pkt, op, 0, "PLAIN", "\001u\001pw");
        ck_assert_int_eq(decode_once(pkt, n, MAX_VALUE, &rq, &used),
                         PROTO_EUNKNOWN);
        ck_assert_uint_eq(used, PROTO_BIN_HDR);
        ck_assert_uint_eq(rq.bodylen, 10);
        n = build(pkt, op, 0, "PLAIN", "");
        ck_assert_int_eq(decode_once(pkt, n, MAX_VALUE, &rq, &used),
                         PROTO_EUNKNOWN);
        n = build(pkt, op, 0, "", "\001u\001pw");
        ck_assert_int_eq(decode_once(pkt, n, MAX_VALUE, &rq, &used),
                         PROTO_EINVAL);
        n = build(pkt, op, 4, "k", "");
        ck_assert_int_eq(decode_once(pkt, n, MAX_VALUE, &rq, &used),
                         PROTO_EINVAL);
        /* never E2BIG: memcached swallows the body as UNKNOWN */
        ck_assert_int_eq(decode_hdr(op, 5, 0, 0xffffffffu, 16, &rq, &used),
                         PROTO_EUNKNOWN);
    }
}
END_TEST

/* ---- values over max_value ---- */

static const uint8_t value_ops[] = {
    PROTO_BIN_SET, PROTO_BIN_ADD, PROTO_BIN_REPLACE, PROTO_BIN_APPEND,
    PROTO_BIN_PREPEND, PROTO_BIN_SETQ, PROTO_BIN_ADDQ, PROTO_BIN_REPLACEQ,
    PROTO_BIN_APPENDQ, PROTO_BIN_PREPENDQ
};
#define NVALUE_OPS ((int)sizeof(value_ops))

START_TEST(value_too_large)
{
    const struct op_spec *s = spec_of(value_ops[_i]);
    uint32_t fixed = s->ext_a + 3u;
    struct proto_bin_req rq;
    size_t used;

    ck_assert_int_eq(decode_hdr(s->op, 3, s->ext_a, fixed + MAX_VALUE + 1,
                                MAX_VALUE, &rq, &used), PROTO_E2BIG);
    ck_assert_uint_eq(used, PROTO_BIN_HDR);
    ck_assert_uint_eq(rq.bodylen, fixed + MAX_VALUE + 1);
    ck_assert_uint_eq(rq.vlen, MAX_VALUE + 1);
    ck_assert_uint_eq(rq.opcode, s->op);
    ck_assert_int_eq(decode_hdr(s->op, 3, s->ext_a, 0xffffffffu, MAX_VALUE,
                                &rq, &used), PROTO_E2BIG);
    ck_assert_int_eq(decode_hdr(s->op, 3, s->ext_a, 0x7fffffffu, MAX_VALUE,
                                &rq, &used), PROTO_E2BIG);
    /* exactly max_value is fine */
    ck_assert_int_eq(decode_hdr(s->op, 3, s->ext_a, fixed + MAX_VALUE,
                                MAX_VALUE, &rq, &used), PROTO_NEED_MORE);
    ck_assert_uint_eq(used, PROTO_BIN_HDR + fixed + MAX_VALUE);
    /* a zero limit allows only empty values */
    ck_assert_int_eq(decode_hdr(s->op, 3, s->ext_a, fixed + 1, 0, &rq,
                                &used), PROTO_E2BIG);
    ck_assert_int_eq(decode_hdr(s->op, 3, s->ext_a, fixed, 0, &rq, &used),
                     PROTO_NEED_MORE);
    /* no limit: a 4 GB body is just a long wait */
    ck_assert_int_eq(decode_hdr(s->op, 3, s->ext_a, 0xffffffffu, SIZE_MAX,
                                &rq, &used), PROTO_NEED_MORE);
    ck_assert_uint_eq(used, (size_t)PROTO_BIN_HDR + 0xffffffffu);
}
END_TEST

START_TEST(whole_value_limits)
{
    size_t n = PROTO_BIN_HDR + 8 + 1 + MAX_VALUE + 1;
    uint8_t *pkt = calloc(1, n);
    struct proto_bin_req rq;
    size_t used;

    ck_assert_ptr_nonnull(pkt);
    put_hdr(pkt, PROTO_BIN_REQ, PROTO_BIN_SET, 1, 8, 8 + 1 + MAX_VALUE + 1,
            1, 0);
    ck_assert_int_eq(decode_once(pkt, n, MAX_VALUE, &rq, &used),
                     PROTO_E2BIG);
    ck_assert_uint_eq(used, PROTO_BIN_HDR);
    put_hdr(pkt, PROTO_BIN_REQ, PROTO_BIN_SET, 1, 8, 8 + 1 + MAX_VALUE, 1, 0);
    ck_assert_int_eq(decode_once(pkt, n - 1, MAX_VALUE, &rq, &used),
                     PROTO_OK);
    ck_assert_uint_eq(used, n - 1);
    ck_assert_uint_eq(rq.vlen, MAX_VALUE);
    free(pkt);
}
END_TEST

/* Opcodes without a value refuse a huge body as a bad shape. */
START_TEST(huge_body_without_value)
{
    struct proto_bin_req rq;
    size_t used;

    ck_assert_int_eq(decode_hdr(PROTO_BIN_GET, 1, 0, 0x7fffffffu, SIZE_MAX,
                                &rq, &used), PROTO_EINVAL);
    ck_assert_int_eq(decode_hdr(PROTO_BIN_GET, 1, 0, 0xffffffffu, SIZE_MAX,
                                &rq, &used), PROTO_EINVAL);
    ck_assert_int_eq(decode_hdr(PROTO_BIN_NOOP, 0, 0, 0xffffffffu, SIZE_MAX,
                                &rq, &used), PROTO_EINVAL);
    ck_assert_int_eq(decode_hdr(PROTO_BIN_SET, 1, 4, 0x7fffffffu, MAX_VALUE,
                                &rq, &used), PROTO_EINVAL);
}
END_TEST

/* ---- extras ---- */

START_TEST(extras_decode)
{
    static uint8_t pkt[PKT_MAX];
    struct proto_bin_req rq;
    size_t n, used;

    n = build(pkt, PROTO_BIN_SET, 8, "k", "v");
    proto_put_u32(pkt + 24, 0xdeadbeefu);
    proto_put_u32(pkt + 28, 0xffffffffu);
    ck_assert_int_eq(decode_once(pkt, n, MAX_VALUE, &rq, &used), PROTO_OK);
    ck_assert_uint_eq(rq.flags, 0xdeadbeefu);
    ck_assert_uint_eq(rq.exptime, 0xffffffffu);

    n = build(pkt, PROTO_BIN_DECRQ, 20, "k", "");
    proto_put_u64(pkt + 24, UINT64_MAX);
    proto_put_u64(pkt + 32, 0x8000000000000001ull);
    proto_put_u32(pkt + 40, 0xffffffffu);
    ck_assert_int_eq(decode_once(pkt, n, MAX_VALUE, &rq, &used), PROTO_OK);
    ck_assert_uint_eq(rq.delta, UINT64_MAX);
    ck_assert_uint_eq(rq.initial, 0x8000000000000001ull);
    ck_assert_uint_eq(rq.exptime, 0xffffffffu);
    ck_assert_uint_eq(rq.base_op, PROTO_BIN_DECR);
    ck_assert(rq.quiet);

    n = build(pkt, PROTO_BIN_GATKQ, 4, "k", "");
    proto_put_u32(pkt + 24, 2592000);
    ck_assert_int_eq(decode_once(pkt, n, MAX_VALUE, &rq, &used), PROTO_OK);
    ck_assert_uint_eq(rq.exptime, 2592000);
    ck_assert(rq.want_key && rq.quiet);

    n = build(pkt, PROTO_BIN_FLUSH, 0, "", "");
    ck_assert_int_eq(decode_once(pkt, n, MAX_VALUE, &rq, &used), PROTO_OK);
    ck_assert(!rq.has_exptime);
    n = build(pkt, PROTO_BIN_FLUSHQ, 4, "", "");
    proto_put_u32(pkt + 24, 100);
    ck_assert_int_eq(decode_once(pkt, n, MAX_VALUE, &rq, &used), PROTO_OK);
    ck_assert(rq.has_exptime);
    ck_assert_uint_eq(rq.exptime, 100);
    n = build(pkt, PROTO_BIN_FLUSH, 8, "", "");
    ck_assert_int_eq(decode_once(pkt, n, MAX_VALUE, &rq, &used),
                     PROTO_EINVAL);
}
END_TEST

/* datatype and vbucket are carried, not judged (memcached ignores them). */
START_TEST(datatype_vbucket_ignored)
{
    static uint8_t pkt[PKT_MAX];
    struct proto_bin_req rq;
    size_t n, used;

    n = build(pkt, PROTO_BIN_SET, 8, "k", "v");
    pkt[5] = 0xff;
    pkt[6] = 0x12;
    pkt[7] = 0x34;
    ck_assert_int_eq(decode_once(pkt, n, MAX_VALUE, &rq, &used), PROTO_OK);
    ck_assert_uint_eq(rq.datatype, 0xff);
    ck_assert_uint_eq(rq.vbucket, 0x1234);
}
END_TEST

/* ---- random and corrupted input never reads out of bounds ---- */

static uint64_t
xorshift(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

static void
check_invariants(const uint8_t *buf, size_t len, proto_rc_e rc,
                 const struct proto_bin_req *rq, size_t used)
{
    switch (rc) {
    case PROTO_OK:
        ck_assert_uint_ge(len, used);
        ck_assert_uint_eq(used, PROTO_BIN_HDR + (size_t)rq->bodylen);
        ck_assert_uint_eq(rq->bodylen,
                          (uint32_t)rq->extlen + rq->keylen + rq->vlen);
        ck_assert_uint_le(rq->keylen, PROTO_KEY_MAX);
        if (rq->vlen > 0) {
            ck_assert_ptr_eq(rq->value + rq->vlen, buf + used);
        }
        if (rq->keylen > 0) {
            ck_assert(rq->key >= buf + PROTO_BIN_HDR &&
                      rq->key + rq->keylen <= buf + len);
        }
        break;
    case PROTO_NEED_MORE:
        ck_assert_uint_gt(used, len);
        break;
    case PROTO_EUNKNOWN:
    case PROTO_E2BIG:
        ck_assert_uint_eq(used, PROTO_BIN_HDR);
        break;
    case PROTO_EMAGIC:
    case PROTO_EINVAL:
    case PROTO_EFRAME:
        break;
    default:
        ck_abort_msg("rc %d out of range", rc);
    }
}

START_TEST(random_headers)
{
    static const uint8_t ops[] = { 0x00, 0x01, 0x05, 0x08, 0x0a, 0x0e,
                                   0x10, 0x18, 0x1b, 0x1c, 0x20, 0x21,
                                   0x24, 0x25, 0x30, 0xff };
    uint64_t seed = 0x9E3779B97F4A7C15ull * (uint64_t)(_i + 1);
    uint8_t pkt[PROTO_BIN_HDR + 600];

    for (int iter = 0; iter < 20000; iter++) {
        uint64_t r = xorshift(&seed);
        struct proto_bin_req rq;
        size_t len, used;
        uint16_t kl;
        uint8_t el;
        uint32_t bl;
        proto_rc_e rc;

        for (size_t i = 0; i < sizeof(pkt); i += 8) {
            proto_put_u64(pkt + i, xorshift(&seed));
        }
        kl = (uint16_t)(r & 0x7 ? (r >> 8) % 300 : r >> 16);
        el = (uint8_t)(r & 0x30 ? (r >> 24) % 24 : r >> 32);
        bl = (uint32_t)(r & 0x300 ? (r >> 40) % 600 : r >> 32);
        put_hdr(pkt, (r & 0xc00) ? PROTO_BIN_REQ : (uint8_t)(r >> 44),
                (r & 0x1000) ? ops[(r >> 48) % sizeof(ops)] : (uint8_t)r,
                kl, el, bl, (uint32_t)r, r);
        len = (size_t)(xorshift(&seed) % sizeof(pkt));
        {
            uint8_t *copy;

            rc = decode_copy(pkt, len, (r & 0x2000) ? 300 : SIZE_MAX, &rq,
                             &used, &copy);
            check_invariants(copy, len, rc, &rq, used);
            free(copy);
        }
    }
}
END_TEST

START_TEST(corrupted_packets)
{
    const struct op_spec *s = &specs[_i / 2];
    static uint8_t pkt[PKT_MAX], bad[PKT_MAX];
    uint64_t seed = 0xD1B54A32D192ED03ull ^ (uint64_t)_i;
    const char *key, *value;
    uint8_t extlen;
    size_t n = build_variant(pkt, s, _i % 2, &key, &value, &extlen);

    for (int iter = 0; iter < 3000; iter++) {
        struct proto_bin_req rq;
        size_t used, len;
        uint8_t *copy;
        proto_rc_e rc;
        int flips = 1 + (int)(xorshift(&seed) % 3);

        memcpy(bad, pkt, n);
        while (flips-- > 0) {
            uint64_t r = xorshift(&seed);
            size_t at = (r & 1) ? (size_t)(r >> 8) % PROTO_BIN_HDR
                                : (size_t)(r >> 8) % n;

            bad[at] = (r & 2) ? (uint8_t)(r >> 40) : (uint8_t)(bad[at] ^
                      (1u << ((r >> 40) % 8)));
        }
        len = (size_t)(xorshift(&seed) % (n + 1));
        rc = decode_copy(bad, len, 64, &rq, &used, &copy);
        check_invariants(copy, len, rc, &rq, used);
        free(copy);
    }
}
END_TEST

/* ---- encoding ---- */

START_TEST(encode_header_fields)
{
    static const uint8_t want[PROTO_BIN_HDR] = {
        0x81, 0x0c, 0x01, 0x02, 0x04, 0x00, 0x00, 0x81,
        0x00, 0x03, 0x01, 0x0a, 0xde, 0xad, 0xbe, 0xef,
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08
    };
    uint8_t out[PROTO_BIN_HDR];

    memset(out, 0xee, sizeof(out));
    /* keylen 0x0102 + extlen 4 + vlen 0x30004 = bodylen 0x3010a */
    proto_bin_encode_header(out, PROTO_BIN_GETK, PROTO_BIN_UNKNOWN, 4, 0x0102,
                            0x30004, 0xdeadbeefu, 0x0102030405060708ull);
    ck_assert_mem_eq(out, want, sizeof(want));
}
END_TEST

START_TEST(encode_header_roundtrip)
{
    uint64_t seed = 12345;

    for (int i = 0; i < 10000; i++) {
        uint64_t a = xorshift(&seed), b = xorshift(&seed);
        uint8_t op = (uint8_t)a, ext = (uint8_t)(a >> 8);
        uint16_t st = (uint16_t)(a >> 16), kl = (uint16_t)(a >> 32);
        uint32_t vl = (uint32_t)(b % 0x7fff0000u), opq = (uint32_t)(b >> 32);
        uint64_t cas = a ^ b;
        uint8_t out[PROTO_BIN_HDR];

        proto_bin_encode_header(out, op, st, ext, kl, vl, opq, cas);
        ck_assert_uint_eq(out[0], PROTO_BIN_RES);
        ck_assert_uint_eq(out[1], op);
        ck_assert_uint_eq((unsigned)out[2] << 8 | out[3], kl);
        ck_assert_uint_eq(out[4], ext);
        ck_assert_uint_eq(out[5], 0);
        ck_assert_uint_eq((unsigned)out[6] << 8 | out[7], st);
        ck_assert_uint_eq(rd32(out + 8), (uint32_t)ext + kl + vl);
        ck_assert_uint_eq(rd32(out + 12), opq);
        ck_assert_uint_eq(rd64(out + 16), cas);
    }
}
END_TEST

START_TEST(put_big_endian)
{
    uint8_t b[8];

    proto_put_u32(b, 0x0a0b0c0du);
    ck_assert_mem_eq(b, "\x0a\x0b\x0c\x0d", 4);
    proto_put_u64(b, 0x0102030405060708ull);
    ck_assert_mem_eq(b, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
    ck_assert_uint_eq(rd64(b), 0x0102030405060708ull);
}
END_TEST

/* ---- status texts: memcached 1.6.18's exact strings ---- */

static const struct {
    uint16_t    status;
    const char *text;
} texts[] = {
    { PROTO_BIN_OK, "" },
    { PROTO_BIN_ENOENT, "Not found" },
    { PROTO_BIN_EEXISTS, "Data exists for key." },
    { PROTO_BIN_E2BIG, "Too large." },
    { PROTO_BIN_EINVAL, "Invalid arguments" },
    { PROTO_BIN_NOT_STORED, "Not stored." },
    { PROTO_BIN_EDELTA, "Non-numeric server-side value for incr or decr" },
    { PROTO_BIN_AUTH_ERROR, "Auth failure." },
    { PROTO_BIN_AUTH_CONTINUE, "" },
    { PROTO_BIN_UNKNOWN, "Unknown command" },
    { PROTO_BIN_ENOMEM, "Out of memory" },
    { 0x07, "UNHANDLED ERROR" },
    { 0xffff, "UNHANDLED ERROR" },
};

START_TEST(status_texts)
{
    ck_assert_str_eq(proto_bin_status_text(texts[_i].status), texts[_i].text);
}
END_TEST

START_TEST(strerror_every_rc)
{
    for (int rc = PROTO_OK; rc <= PROTO_EFRAME; rc++) {
        const char *s = proto_strerror((proto_rc_e)rc);

        ck_assert_ptr_nonnull(s);
        ck_assert_str_ne(s, "unknown proto_rc");
    }
    ck_assert_str_eq(proto_strerror((proto_rc_e)99), "unknown proto_rc");
}
END_TEST

static Suite *
proto_binary_suite(void)
{
    Suite *s = suite_create("proto_binary");
    TCase *tc;

    tc = tcase_create("decode");
    tcase_add_loop_test(tc, decode_every_opcode, 0, NSPECS * 2);
    tcase_add_loop_test(tc, prefix_needs_more, 0, NSPECS * 2);
    tcase_add_test(tc, pipelined);
    tcase_add_test(tc, extras_decode);
    tcase_add_test(tc, datatype_vbucket_ignored);
    suite_add_tcase(s, tc);

    tc = tcase_create("lengths");
    tcase_add_loop_test(tc, wrong_extlen_is_einval, 0, NSPECS);
    tcase_add_loop_test(tc, key_rules, 0, NSPECS);
    tcase_add_loop_test(tc, value_rules, 0, NSPECS);
    tcase_add_loop_test(tc, frame_shorter_than_extras_and_key, 0, NSPECS);
    tcase_add_loop_test(tc, key_over_250, 0, NSPECS);
    tcase_add_test(tc, key_250_251_get_set);
    tcase_add_loop_test(tc, value_too_large, 0, NVALUE_OPS);
    tcase_add_test(tc, whole_value_limits);
    tcase_add_test(tc, huge_body_without_value);
    suite_add_tcase(s, tc);

    tc = tcase_create("opcodes");
    tcase_add_loop_test(tc, bad_magic, 0, 255);
    tcase_add_loop_test(tc, unknown_opcodes, 0, 256);
    tcase_add_test(tc, named_unknown_opcodes);
    tcase_add_test(tc, sasl_without_sasl);
    suite_add_tcase(s, tc);

    tc = tcase_create("robustness");
    tcase_add_loop_test(tc, random_headers, 0, 16);
    tcase_add_loop_test(tc, corrupted_packets, 0, NSPECS * 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("encode");
    tcase_add_test(tc, encode_header_fields);
    tcase_add_test(tc, encode_header_roundtrip);
    tcase_add_test(tc, put_big_endian);
    tcase_add_loop_test(tc, status_texts, 0,
                        (int)(sizeof(texts) / sizeof(texts[0])));
    tcase_add_test(tc, strerror_every_rc);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(proto_binary_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
