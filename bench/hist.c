/* Log-linear latency histogram (see hist.h). */

#include <math.h>

#include "hist.h"

static unsigned
bucket_of(uint64_t v)
{
    if (v < HIST_SUB) {
        return (unsigned) v;
    }

    /* k: position of the top bit, >= HIST_SUB_BITS here */
    unsigned k = 63u - (unsigned) __builtin_clzll(v);
    unsigned sub = (unsigned) (v >> (k - HIST_SUB_BITS)) - HIST_SUB;

    return ((k - HIST_SUB_BITS + 1) << HIST_SUB_BITS) + sub;
}

static uint64_t
bucket_middle(unsigned i)
{
    if (i < HIST_SUB) {
        return i;
    }

    unsigned k = (i >> HIST_SUB_BITS) + HIST_SUB_BITS - 1;
    uint64_t width = (uint64_t) 1 << (k - HIST_SUB_BITS);
    uint64_t low = (uint64_t) (HIST_SUB + (i & (HIST_SUB - 1))) * width;

    return low + width / 2;
}

void
hist_add(struct hist *h, uint64_t value)
{
    h->count[bucket_of(value)]++;
    h->total++;
}

uint64_t
hist_quantile(const struct hist *h, double q)
{
    if (h->total == 0) {
        return 0;
    }

    uint64_t rank = (uint64_t) ceil(q * (double) h->total);
    if (rank == 0) {
        rank = 1;
    }

    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->count[i];
        if (seen >= rank) {
            return bucket_middle(i);
        }
    }

    return bucket_middle(HIST_BUCKETS - 1);
}
