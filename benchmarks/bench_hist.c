/*
 * The latency histogram's cold half: merging the per-thread histograms and
 * reading percentiles. Recording is inline in bench.h; nothing here runs
 * while requests are in flight.
 */
#include "benchmarks/bench.h"

#include <math.h>

void
bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src)
{
    uint32_t i;

    for (i = 0; i < BENCH_HIST_BUCKETS; i++) {
        dst->bucket[i] += src->bucket[i];
    }
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->max > dst->max) {
        dst->max = src->max;
    }
}

/* The highest value that lands in bucket i. */
static uint64_t
bucket_top(uint32_t i)
{
    uint32_t shift;
    uint64_t mantissa;

    if (i < BENCH_HIST_SUB) {
        return i;
    }
    shift = i / BENCH_HIST_HALF - 1;
    mantissa = i - (uint64_t)shift * BENCH_HIST_HALF;
    return ((mantissa + 1) << shift) - 1;
}

uint64_t
bench_hist_percentile(const struct bench_hist *h, double p)
{
    uint64_t want, seen = 0;
    uint32_t i;

    if (h->count == 0) {
        return 0;
    }
    want = (uint64_t)ceil(p / 100.0 * (double)h->count);
    if (want == 0) {
        want = 1;
    }
    for (i = 0; i < BENCH_HIST_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen >= want) {
            uint64_t top = bucket_top(i);

            return top < h->max ? top : h->max;
        }
    }
    return h->max;
}
