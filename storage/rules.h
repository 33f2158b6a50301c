/*
 * memcached's rules for items that every backend applies the same way: the
 * item size limit, and incr/decr arithmetic on a stored value, read and
 * written exactly as memcached 1.6 does (leading blanks and a sign
 * accepted, the number ending at a blank, a NUL or the end of the value, a
 * shorter result padded with spaces to the old length, because memcached
 * rewrites a number in place).
 */
#ifndef STASHD_STORAGE_RULES_H
#define STASHD_STORAGE_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * memcached 1.6's item size rule on 64-bit: a 48-byte header, the key and
 * its NUL, the flags when non-zero, the value with its "\r\n", the CAS.
 * True when such an item would exceed item_max.
 */
static inline bool
store_too_large(uint32_t item_max, size_t keylen, uint32_t flags,
                size_t vlen)
{
    return 48 + keylen + 1 + (flags != 0 ? 4 : 0) + vlen + 2 + 8 >
           (size_t)item_max;
}

/* Longest value arith_format writes when it cannot pad in place. */
#define ARITH_NUM_MAX 20

/* Reads p[0, len) as memcached's safe_strtoull would; false: not a number. */
bool arith_parse(const char *p, size_t len, uint64_t *out);

/* incr wraps modulo 2^64; decr stops at 0. */
uint64_t arith_apply(uint64_t v, uint64_t by, bool decr);

/* The length arith_format will write for v over a value of old_len. */
size_t arith_len(uint64_t v, size_t old_len);

/*
 * Writes v in decimal into out; when that is no longer than old_len the
 * result is old_len bytes, space padded, else just the digits. out must
 * hold arith_len(v, old_len) bytes. Returns the length written.
 */
size_t arith_format(uint64_t v, size_t old_len, char *out);

#endif
