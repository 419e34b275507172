/*
 * Latency histogram for loadgen: log-linear buckets (64 per power of two),
 * so any value is kept within 1.6 % with a fixed 30 KB table and O(1)
 * inserts; exact below 64 µs.
 */

#ifndef BENCH_HIST_H
#define BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS  6
#define HIST_SUB       (1u << HIST_SUB_BITS)
#define HIST_BUCKETS   ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

struct hist {
    uint64_t  count[HIST_BUCKETS];
    uint64_t  total;
};

void hist_add(struct hist *h, uint64_t value);

/* The value at quantile q (0 < q <= 1), the middle of its bucket; 0 when empty. */
uint64_t hist_quantile(const struct hist *h, double q);

#endif /* BENCH_HIST_H */
