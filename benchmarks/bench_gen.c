/*
 * Request generation and reply parsing for stashd-bench. Init precomputes
 * every key, the value filler and the binary header templates, so building
 * a request is two or three memcpy calls into the connection's write buffer
 * and parsing a reply reads it where it lies in the read buffer. Nothing
 * here allocates after setup or touches a socket.
 */
#include "benchmarks/bench.h"
#include "protocol/binary.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KEY_PREFIX     "key:"
#define KEY_PREFIX_LEN 4
#define TEXT_LINE_MAX  2048  /* a reply line longer than this is garbage */

uint64_t
bench_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void
zipf_setup(struct bench_gen *g)
{
    const struct bench_cfg *c = g->cfg;
    double zeta2, zetan = 0.0;
    uint64_t i;

    for (i = 1; i <= c->keys; i++) {
        zetan += 1.0 / pow((double)i, c->theta);
    }
    zeta2 = 1.0 + 1.0 / pow(2.0, c->theta);
    g->zetan = zetan;
    g->alpha = 1.0 / (1.0 - c->theta);
    g->eta = (1.0 - pow(2.0 / (double)c->keys, 1.0 - c->theta)) /
             (1.0 - zeta2 / zetan);
    g->half_pow = 1.0 + pow(0.5, c->theta);
}

int
bench_gen_init(struct bench_gen *g, const struct bench_cfg *cfg)
{
    uint32_t digits = cfg->key_size - KEY_PREFIX_LEN;
    char fmt[32], tmp[300];
    uint64_t i;

    memset(g, 0, sizeof(*g));
    g->cfg = cfg;
    snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)(cfg->keys - 1));
    if (cfg->key_size > PROTO_KEY_MAX || cfg->key_size <= KEY_PREFIX_LEN ||
        strlen(tmp) > digits) {
        fprintf(stderr, "stashd-bench: --key-size %u cannot hold %llu keys "
                "(\"%s\" + digits, at most %d bytes)\n", cfg->key_size,
                (unsigned long long)cfg->keys, KEY_PREFIX, PROTO_KEY_MAX);
        return -1;
    }
    g->keys = malloc(cfg->keys * cfg->key_size + 1);
    g->value = malloc(cfg->vmax + 1);
    if (g->keys == NULL || g->value == NULL) {
        fprintf(stderr, "stashd-bench: out of memory for %llu keys\n",
                (unsigned long long)cfg->keys);
        return -1;
    }
    snprintf(fmt, sizeof(fmt), "%s%%0%ullu", KEY_PREFIX, digits);
    for (i = 0; i < cfg->keys; i++) {
        snprintf(tmp, sizeof(tmp), fmt, (unsigned long long)i);
        memcpy(g->keys + i * cfg->key_size, tmp, cfg->key_size);
    }
    for (i = 0; i < cfg->vmax; i++) {
        g->value[i] = (uint8_t)('a' + i % 26);
    }

    proto_bin_encode_header(g->get_hdr, PROTO_BIN_GET, 0, 0,
                            (uint16_t)cfg->key_size, 0, 0, 0);
    g->get_hdr[0] = PROTO_BIN_REQ;
    proto_bin_encode_header(g->set_hdr, PROTO_BIN_SET, 0, 8,
                            (uint16_t)cfg->key_size, cfg->vmin, 0, 0);
    g->set_hdr[0] = PROTO_BIN_REQ;

    g->set_below = ((uint64_t)cfg->set_weight << 32) /
                   (cfg->set_weight + cfg->get_weight);
    /* binary: header + extras + key + value; text: "set k 0 0 n\r\nv\r\n" */
    g->max_req = 64 + cfg->key_size + cfg->vmax;
    /* binary: header + flags + key + value; text: VALUE line + v + END */
    g->max_resp = 64 + cfg->key_size + cfg->vmax;
    if (cfg->dist == BENCH_ZIPF) {
        zipf_setup(g);
    }
    return 0;
}

void
bench_gen_deinit(struct bench_gen *g)
{
    free(g->keys);
    g->keys = NULL;
    free(g->value);
    g->value = NULL;
}

uint64_t
bench_gen_key(const struct bench_gen *g, uint64_t *rng)
{
    const struct bench_cfg *c = g->cfg;
    double u, uz;
    uint64_t k;

    if (c->dist == BENCH_UNIFORM) {
        return bench_rng_below(rng, c->keys);
    }
    /* 53 random bits as a double in [0, 1) */
    u = (double)(bench_rng_next(rng) >> 11) * (1.0 / 9007199254740992.0);
    uz = u * g->zetan;
    if (uz < 1.0) {
        return 0;
    }
    if (uz < g->half_pow) {
        return 1;
    }
    k = (uint64_t)((double)c->keys * pow(g->eta * u - g->eta + 1.0,
                                         g->alpha));
    return k < c->keys ? k : c->keys - 1;
}

/* Decimal digits of v at out; returns how many. */
static size_t
put_dec(uint8_t *out, uint32_t v)
{
    uint8_t tmp[10];
    size_t n = 0, i;

    do {
        tmp[n++] = (uint8_t)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (i = 0; i < n; i++) {
        out[i] = tmp[n - 1 - i];
    }
    return n;
}

size_t
bench_gen_encode(const struct bench_gen *g, bench_op_e op, uint64_t key,
                 uint32_t vlen, uint8_t *out)
{
    uint32_t ks = g->cfg->key_size;
    const char *k = g->keys + key * ks;
    uint8_t *p = out;

    if (g->cfg->proto == BENCH_BINARY) {
        if (op == BENCH_GET) {
            memcpy(p, g->get_hdr, PROTO_BIN_HDR);
            memcpy(p + PROTO_BIN_HDR, k, ks);
            return PROTO_BIN_HDR + ks;
        }
        memcpy(p, g->set_hdr, PROTO_BIN_HDR);
        proto_put_u32(p + 8, 8 + ks + vlen);
        memset(p + PROTO_BIN_HDR, 0, 8);        /* flags, exptime */
        p += PROTO_BIN_HDR + 8;
        memcpy(p, k, ks);
        memcpy(p + ks, g->value, vlen);
        return PROTO_BIN_HDR + 8 + ks + vlen;
    }
    if (op == BENCH_GET) {
        memcpy(p, "get ", 4);
        memcpy(p + 4, k, ks);
        memcpy(p + 4 + ks, "\r\n", 2);
        return 6 + ks;
    }
    memcpy(p, "set ", 4);
    p += 4;
    memcpy(p, k, ks);
    p += ks;
    memcpy(p, " 0 0 ", 5);
    p += 5;
    p += put_dec(p, vlen);
    memcpy(p, "\r\n", 2);
    p += 2;
    memcpy(p, g->value, vlen);
    p += vlen;
    memcpy(p, "\r\n", 2);
    return (size_t)(p + 2 - out);
}

static uint32_t
get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

static bench_parse_e
parse_binary(bench_op_e op, const uint8_t *p, size_t len, size_t *used,
             int *result)
{
    uint16_t status;
    size_t total;

    if (len < PROTO_BIN_HDR) {
        *used = PROTO_BIN_HDR;
        return BENCH_PARSE_MORE;
    }
    if (p[0] != PROTO_BIN_RES) {
        return BENCH_PARSE_BAD;
    }
    total = PROTO_BIN_HDR + (size_t)get_be32(p + 8);
    if (len < total) {
        *used = total;
        return BENCH_PARSE_MORE;
    }
    if (p[1] != (op == BENCH_GET ? PROTO_BIN_GET : PROTO_BIN_SET)) {
        return BENCH_PARSE_BAD;
    }
    status = (uint16_t)(p[6] << 8 | p[7]);
    if (status == PROTO_BIN_OK) {
        *result = 1;
    } else if (status == PROTO_BIN_ENOENT && op == BENCH_GET) {
        *result = 0;
    } else {
        *result = -1;
    }
    *used = total;
    return BENCH_PARSE_OK;
}

/* "VALUE <key> <flags> <bytes>[ <cas>]": the size of the data block. */
static bool
value_bytes(const uint8_t *p, size_t n, uint64_t *bytes)
{
    size_t i = 6, field;
    uint64_t v = 0;

    for (field = 0; field < 2; field++) {      /* skip key, flags */
        while (i < n && p[i] != ' ') {
            i++;
        }
        while (i < n && p[i] == ' ') {
            i++;
        }
    }
    if (i >= n || p[i] < '0' || p[i] > '9') {
        return false;
    }
    while (i < n && p[i] >= '0' && p[i] <= '9') {
        v = v * 10 + (uint64_t)(p[i] - '0');
        i++;
    }
    *bytes = v;
    return true;
}

static bench_parse_e
parse_text(bench_op_e op, const uint8_t *p, size_t len, size_t *used,
           int *result)
{
    const uint8_t *nl = memchr(p, '\n', len < TEXT_LINE_MAX ? len
                                                            : TEXT_LINE_MAX);
    size_t line, total;
    uint64_t bytes;

    if (nl == NULL) {
        *used = 0;
        return len < TEXT_LINE_MAX ? BENCH_PARSE_MORE : BENCH_PARSE_BAD;
    }
    line = (size_t)(nl - p) + 1;
    if (op == BENCH_SET) {
        *result = line == 8 && memcmp(p, "STORED\r\n", 8) == 0 ? 1 : -1;
        *used = line;
        return BENCH_PARSE_OK;
    }
    if (line == 5 && memcmp(p, "END\r\n", 5) == 0) {
        *result = 0;
        *used = line;
        return BENCH_PARSE_OK;
    }
    if (line < 7 || memcmp(p, "VALUE ", 6) != 0) {
        *result = -1;                          /* ERROR, SERVER_ERROR .. */
        *used = line;
        return BENCH_PARSE_OK;
    }
    if (!value_bytes(p, line, &bytes)) {
        return BENCH_PARSE_BAD;
    }
    total = line + (size_t)bytes + 2 + 5;
    if (len < total) {
        *used = total;
        return BENCH_PARSE_MORE;
    }
    if (memcmp(p + line + bytes, "\r\nEND\r\n", 7) != 0) {
        return BENCH_PARSE_BAD;
    }
    *result = 1;
    *used = total;
    return BENCH_PARSE_OK;
}

bench_parse_e
bench_parse_reply(const struct bench_gen *g, bench_op_e op, const uint8_t *p,
                  size_t len, size_t *used, int *result)
{
    if (g->cfg->proto == BENCH_BINARY) {
        return parse_binary(op, p, len, used, result);
    }
    return parse_text(op, p, len, used, result);
}
