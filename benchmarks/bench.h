/*
 * stashd-bench: a closed-loop load generator for servers that speak
 * memcached's binary or text protocol. This header holds what its modules
 * share: the run configuration, the latency histogram, the request
 * generator and the reply parser. Nothing on a per-request path may
 * allocate, log or make a syscall other than the one read and the one write
 * per batch: on a 2-core machine every cycle the client spends is taken from
 * the server it measures.
 */
#ifndef STASHD_BENCH_H
#define STASHD_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum bench_proto { BENCH_BINARY = 0, BENCH_TEXT } bench_proto_e;
typedef enum bench_dist { BENCH_UNIFORM = 0, BENCH_ZIPF } bench_dist_e;
typedef enum bench_op { BENCH_GET = 0, BENCH_SET } bench_op_e;
typedef enum bench_parse {
    BENCH_PARSE_OK = 0,  /* one whole reply; *used = its size */
    BENCH_PARSE_MORE,    /* incomplete; *used = size needed, or 0 unknown */
    BENCH_PARSE_BAD      /* not a reply to what was sent: desync */
} bench_parse_e;

/* Everything a run is told on the command line; ro once parsed. */
struct bench_cfg {
    const char   *host;
    const char   *port;
    bench_proto_e proto;
    uint32_t      conns;         /* total, spread over the threads */
    uint32_t      threads;
    bool          pin;           /* pin thread i to CPU i mod ncpu */
    bool          per_thread;    /* print each thread's figures too */
    uint32_t      depth;         /* requests in flight per connection */
    bool          window;        /* refill per reply, not per whole batch */
    uint32_t      set_weight;    /* set:get ratio */
    uint32_t      get_weight;
    uint32_t      vmin;          /* value size, uniform in [vmin, vmax] */
    uint32_t      vmax;
    uint64_t      keys;          /* key space: key indexes [0, keys) */
    uint32_t      key_size;      /* bytes per key, e.g. "key:000000000042" */
    bench_dist_e  dist;
    double        theta;         /* zipf skew */
    bool          prefill;       /* set every key once before the load */
    uint32_t      prefill_depth; /* pipeline depth of prefill and verify */
    bool          verify;        /* get every key once, report hits */
    double        warmup_s;
    double        duration_s;    /* 0: prefill/verify only */
    double        stall_s;       /* fail when replies are this late */
    uint64_t      seed;
    long          server_pid;    /* > 0: also report its CPU per op */
    const char   *label;         /* echoed in the RESULT line */
    bool          wait_hit;      /* probe mode: time to first hit */
    bool          wait_listen;   /* probe mode: stop at the first accept */
    double        timeout_s;
    uint64_t      probe_key;
    char        **exec_argv;     /* probe mode: start this server first */
};

/*
 * Latency histogram with log-linear buckets (HdrHistogram's layout): values
 * below 2^SUB_BITS are exact, above that every power of two is split into
 * 2^(SUB_BITS-1) equal buckets, so any value is kept within 1/128 of itself
 * in a fixed 58 KB array. Values are nanoseconds.
 */
#define BENCH_HIST_SUB_BITS 8
#define BENCH_HIST_SUB      (1u << BENCH_HIST_SUB_BITS)
#define BENCH_HIST_HALF     (BENCH_HIST_SUB / 2)
#define BENCH_HIST_BUCKETS \
    ((64 - BENCH_HIST_SUB_BITS) * BENCH_HIST_HALF + BENCH_HIST_SUB)

struct bench_hist {
    uint64_t count;
    uint64_t max;
    uint64_t sum;
    uint64_t bucket[BENCH_HIST_BUCKETS];
};

static inline uint32_t
bench_hist_index(uint64_t v)
{
    uint32_t msb, shift;

    if (v < BENCH_HIST_SUB) {
        return (uint32_t)v;
    }
    msb = 63u - (uint32_t)__builtin_clzll(v);
    shift = msb - BENCH_HIST_SUB_BITS + 1;
    return shift * BENCH_HIST_HALF + (uint32_t)(v >> shift);
}

/* Adds one value. Not thread-safe: one histogram per thread. */
static inline void
bench_hist_record(struct bench_hist *h, uint64_t v)
{
    h->bucket[bench_hist_index(v)]++;
    h->count++;
    h->sum += v;
    if (v > h->max) {
        h->max = v;
    }
}

/* Adds every count of src to dst. */
void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src);

/* The highest value equivalent to the p-th percentile (0 < p <= 100). */
uint64_t bench_hist_percentile(const struct bench_hist *h, double p);

/* xorshift64*: a fast generator; the state must not be 0. */
static inline uint64_t
bench_rng_next(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Uniform in [0, n) for n <= 2^32, by multiply-shift (no division). */
static inline uint64_t
bench_rng_below(uint64_t *s, uint64_t n)
{
    return ((bench_rng_next(s) >> 32) * n) >> 32;
}

/*
 * Everything requests are built from, computed once before the threads
 * start; ro afterwards and shared by every thread.
 */
struct bench_gen {
    const struct bench_cfg *cfg;
    char     *keys;         /* keys * key_size bytes, no separators */
    uint8_t  *value;        /* vmax filler bytes */
    uint8_t   get_hdr[24];  /* binary GET header: the same for every key */
    uint8_t   set_hdr[24];  /* binary SET header; bodylen patched per size */
    uint64_t  set_below;    /* (rng >> 32) < set_below picks a SET */
    size_t    max_req;      /* largest request encoded */
    size_t    max_resp;     /* largest reply expected */
    /* zipf (Gray et al., "Quickly generating billion-record synthetic
       databases", SIGMOD 1994) */
    double    zetan;
    double    alpha;
    double    eta;
    double    half_pow;     /* 1 + 0.5^theta */
};

/* Builds keys, filler and templates. Returns -1 with a message on stderr. */
int bench_gen_init(struct bench_gen *g, const struct bench_cfg *cfg);

/* Frees what init allocated; g may be half initialized. */
void bench_gen_deinit(struct bench_gen *g);

/* A key index drawn from the configured distribution. */
uint64_t bench_gen_key(const struct bench_gen *g, uint64_t *rng);

/* A value size drawn from [vmin, vmax]. */
static inline uint32_t
bench_gen_vlen(const struct bench_gen *g, uint64_t *rng)
{
    const struct bench_cfg *c = g->cfg;

    if (c->vmin == c->vmax) {
        return c->vmin;
    }
    return c->vmin + (uint32_t)bench_rng_below(rng, c->vmax - c->vmin + 1);
}

/*
 * Writes one request for key index key into out (at least max_req bytes)
 * and returns its size. vlen is used by BENCH_SET only.
 */
size_t bench_gen_encode(const struct bench_gen *g, bench_op_e op,
                        uint64_t key, uint32_t vlen, uint8_t *out);

/*
 * Parses the reply to op at p[0, len) in place. On BENCH_PARSE_OK *result
 * is 1 for a hit or a stored value, 0 for a miss and -1 for an error reply
 * (NOT_STORED, out of memory, ...).
 */
bench_parse_e bench_parse_reply(const struct bench_gen *g, bench_op_e op,
                                const uint8_t *p, size_t len, size_t *used,
                                int *result);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t bench_now_ns(void);

/* Counts one thread (or, merged, the run) gathered. */
struct bench_stats {
    uint64_t          ops;
    uint64_t          gets;
    uint64_t          hits;
    uint64_t          sets;
    uint64_t          errors;
    struct bench_hist hist;
};

/* What a load run measured, merged over its threads. */
struct bench_report {
    struct bench_stats measured;     /* the measured phase only */
    uint64_t           prefill_sets;
    uint64_t           prefill_errors;  /* sets refused (out of memory) */
    uint64_t           verify_gets;
    uint64_t           verify_hits;
    double             prefill_s;
    double             verify_s;
    double             measured_s;
    double             client_cpu_s; /* user + sys over the measured phase */
    double             server_cpu_s; /* of server_pid, or < 0 if unknown */
};

/*
 * Connects, prefills, verifies and runs the load as cfg says. Returns 0, or
 * -1 after printing why (a refused connection, a closed connection, a reply
 * that does not parse).
 */
int bench_run(const struct bench_cfg *cfg, const struct bench_gen *g,
              struct bench_report *out);

/*
 * Probe mode: optionally starts exec_argv, then connects and gets
 * probe_key until it hits, and prints how long that took in a RESULT line.
 * The started server keeps running; its pid is printed.
 */
int bench_probe(const struct bench_cfg *cfg, const struct bench_gen *g);

/* Opens a blocking TCP connection with TCP_NODELAY, or returns -1. */
int bench_connect(const struct bench_cfg *cfg, bool quiet);

#endif /* STASHD_BENCH_H */
