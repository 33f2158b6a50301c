/*
 * Number handling for incr/decr. memcached parses the value in place with
 * strtoull, where the value is followed by "\r\n"; here the value has no
 * terminator, so the end of the buffer plays the part of that '\r'.
 */
#include "storage/rules.h"

#include <string.h>

static bool
is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' ||
           c == '\r';
}

bool
arith_parse(const char *p, size_t len, uint64_t *out)
{
    size_t i = 0;
    size_t digits = 0;
    bool neg = false;
    bool overflow = false;
    uint64_t v = 0;

    if (len == 0) {
        return false;
    }
    while (i < len && is_space(p[i])) {
        i++;
    }
    if (i < len && (p[i] == '+' || p[i] == '-')) {
        neg = p[i] == '-';
        i++;
    }
    for (; i < len && p[i] >= '0' && p[i] <= '9'; i++, digits++) {
        uint64_t d = (uint64_t)(p[i] - '0');

        if (v > (UINT64_MAX - d) / 10) {
            overflow = true;
        }
        v = v * 10 + d;
    }
    if (digits == 0 || overflow) {
        return false;
    }
    if (i < len && !is_space(p[i]) && p[i] != '\0') {
        return false;
    }
    if (neg) {
        v = (uint64_t)0 - v;    /* what strtoull makes of a minus sign */
    }
    if ((int64_t)v < 0 && memchr(p, '-', i) != NULL) {
        return false;
    }
    *out = v;
    return true;
}

uint64_t
arith_apply(uint64_t v, uint64_t by, bool decr)
{
    if (decr) {
        return by > v ? 0 : v - by;
    }
    return v + by;
}

size_t
arith_len(uint64_t v, size_t old_len)
{
    size_t n = 1;

    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n <= old_len ? old_len : n;
}

size_t
arith_format(uint64_t v, size_t old_len, char *out)
{
    char tmp[ARITH_NUM_MAX];
    size_t n = 0;

    do {
        tmp[ARITH_NUM_MAX - 1 - n] = (char)('0' + v % 10);
        v /= 10;
        n++;
    } while (v != 0);
    memcpy(out, tmp + ARITH_NUM_MAX - n, n);
    if (n <= old_len) {
        memset(out + n, ' ', old_len - n);
        return old_len;
    }
    return n;
}
