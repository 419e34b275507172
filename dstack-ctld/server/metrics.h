/*
 * Prometheus counters and the request latency histogram, process-wide and
 * lock-free (C11 atomics); rendered in the text exposition format.
 */

#ifndef CTLD_METRICS_H
#define CTLD_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "server/answers.h"
#include "server/registry.h"

enum metric_counter {
    M_REGISTERS,
    M_JOINS,
    M_REJOINS,
    M_REMOVALS,
    M_POOL_EXHAUSTED,
    M_COUNTERS
};

/* values sampled at render time */
struct metrics_gauges {
    uint64_t  nodes;
    uint64_t  version;
    uint64_t  longpolls_waiting;
    uint64_t  longpolls_superseded;
    uint64_t  longpolls_hung_up;
    uint64_t  write_batches;
    uint64_t  write_ops;
    uint64_t  write_failed_commits;
    uint64_t  answer_builds[ANSWER_KINDS];
};

void   metrics_inc(enum metric_counter c);
void   metrics_key_failure(enum key_failure reason);
/* a write refused with 429; q is an enum quota (quota.h) */
void   metrics_quota_refusal(unsigned q);
/* every answered request; long polls that waited stay out of the latency
 * histogram, whose point is the time the server itself takes */
void   metrics_request(unsigned status, uint64_t us, bool timed);
/* malloc'd text, NULL on allocation failure */
char  *metrics_render(const struct metrics_gauges *g);

#endif
