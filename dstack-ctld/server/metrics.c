/* Prometheus text exposition of the daemon's counters. */

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "server/metrics.h"
#include "server/quota.h"

/* upper bounds in microseconds: 0.25 ms .. 2.5 s */
static const uint64_t  bucket_us[] = {
    250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
    500000, 1000000, 2500000
};
#define NBUCKETS  (sizeof(bucket_us) / sizeof(bucket_us[0]))

static const char *const  answer_names[ANSWER_KINDS] = {
    "snapshot", "delta", "discover", "nodes"
};

static _Atomic uint64_t  counters[M_COUNTERS];
static _Atomic uint64_t  key_failures[KEY_OTHER_APP + 1];
static _Atomic uint64_t  quota_refusals[QUOTA_COUNT];
static _Atomic uint64_t  by_class[6];                   /* 1xx .. 5xx */
static _Atomic uint64_t  buckets[NBUCKETS + 1];         /* last: +Inf */
static _Atomic uint64_t  latency_sum_us;
static _Atomic uint64_t  latency_count;


void
metrics_inc(enum metric_counter c)
{
    atomic_fetch_add_explicit(&counters[c], 1, memory_order_relaxed);
}


void
metrics_key_failure(enum key_failure reason)
{
    atomic_fetch_add_explicit(&key_failures[reason], 1, memory_order_relaxed);
}


void
metrics_quota_refusal(unsigned q)
{
    if (q < QUOTA_COUNT) {
        atomic_fetch_add_explicit(&quota_refusals[q], 1, memory_order_relaxed);
    }
}


void
metrics_request(unsigned status, uint64_t us, bool timed)
{
    size_t  b = 0;

    if (status >= 100 && status < 600) {
        atomic_fetch_add_explicit(&by_class[status / 100], 1, memory_order_relaxed);
    }
    if (!timed) {
        return;
    }
    while (b < NBUCKETS && us > bucket_us[b]) {
        b++;
    }
    atomic_fetch_add_explicit(&buckets[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&latency_sum_us, us, memory_order_relaxed);
    atomic_fetch_add_explicit(&latency_count, 1, memory_order_relaxed);
}


#define LOAD(x)  ((unsigned long long) atomic_load_explicit(&(x), memory_order_relaxed))

char *
metrics_render(const struct metrics_gauges *g)
{
    static const char *const reasons[] = { "", "unknown", "used", "expired", "other_app" };
    char                    *buf = NULL;
    size_t                   len = 0;
    unsigned long long       cum = 0;
    FILE                    *f;

    f = open_memstream(&buf, &len);
    if (f == NULL) {
        return NULL;
    }

    fprintf(f,
        "# HELP dstack_ctld_nodes Nodes registered in the VPC.\n"
        "# TYPE dstack_ctld_nodes gauge\n"
        "dstack_ctld_nodes %llu\n"
        "# HELP dstack_ctld_peer_version Current peer-set version.\n"
        "# TYPE dstack_ctld_peer_version gauge\n"
        "dstack_ctld_peer_version %llu\n"
        "# HELP dstack_ctld_longpolls_waiting Peer long polls parked right now.\n"
        "# TYPE dstack_ctld_longpolls_waiting gauge\n"
        "dstack_ctld_longpolls_waiting %llu\n",
        (unsigned long long) g->nodes, (unsigned long long) g->version,
        (unsigned long long) g->longpolls_waiting);

    fprintf(f,
        "# HELP dstack_ctld_longpolls_ended_total Parked polls ended early.\n"
        "# TYPE dstack_ctld_longpolls_ended_total counter\n"
        "dstack_ctld_longpolls_ended_total{reason=\"superseded\"} %llu\n"
        "dstack_ctld_longpolls_ended_total{reason=\"hung_up\"} %llu\n",
        (unsigned long long) g->longpolls_superseded,
        (unsigned long long) g->longpolls_hung_up);

    fprintf(f,
        "# HELP dstack_ctld_registers_total Pre-auth keys issued.\n"
        "# TYPE dstack_ctld_registers_total counter\n"
        "dstack_ctld_registers_total %llu\n"
        "# HELP dstack_ctld_joins_total Successful joins (re-joins included).\n"
        "# TYPE dstack_ctld_joins_total counter\n"
        "dstack_ctld_joins_total %llu\n"
        "# HELP dstack_ctld_rejoins_total Joins of an app/instance already known.\n"
        "# TYPE dstack_ctld_rejoins_total counter\n"
        "dstack_ctld_rejoins_total %llu\n"
        "# HELP dstack_ctld_removals_total Nodes removed.\n"
        "# TYPE dstack_ctld_removals_total counter\n"
        "dstack_ctld_removals_total %llu\n"
        "# HELP dstack_ctld_pool_exhausted_total Joins refused for want of an address.\n"
        "# TYPE dstack_ctld_pool_exhausted_total counter\n"
        "dstack_ctld_pool_exhausted_total %llu\n",
        LOAD(counters[M_REGISTERS]), LOAD(counters[M_JOINS]),
        LOAD(counters[M_REJOINS]), LOAD(counters[M_REMOVALS]),
        LOAD(counters[M_POOL_EXHAUSTED]));

    fprintf(f, "# HELP dstack_ctld_key_failures_total Joins refused for their pre-auth key.\n"
               "# TYPE dstack_ctld_key_failures_total counter\n");
    for (int r = KEY_UNKNOWN; r <= KEY_OTHER_APP; r++) {
        fprintf(f, "dstack_ctld_key_failures_total{reason=\"%s\"} %llu\n",
                reasons[r], LOAD(key_failures[r]));
    }

    fprintf(f, "# HELP dstack_ctld_quota_refusals_total Writes refused (429)"
               " for an app's quota.\n"
               "# TYPE dstack_ctld_quota_refusals_total counter\n");
    for (int q = 0; q < QUOTA_COUNT; q++) {
        fprintf(f, "dstack_ctld_quota_refusals_total{quota=\"%s\"} %llu\n",
                quota_names[q], LOAD(quota_refusals[q]));
    }

    fprintf(f,
        "# HELP dstack_ctld_write_batches_total Transactions committed by the writer.\n"
        "# TYPE dstack_ctld_write_batches_total counter\n"
        "dstack_ctld_write_batches_total %llu\n"
        "# HELP dstack_ctld_write_ops_total Write operations run by the writer.\n"
        "# TYPE dstack_ctld_write_ops_total counter\n"
        "dstack_ctld_write_ops_total %llu\n"
        "# HELP dstack_ctld_write_failed_commits_total Batches rolled back.\n"
        "# TYPE dstack_ctld_write_failed_commits_total counter\n"
        "dstack_ctld_write_failed_commits_total %llu\n",
        (unsigned long long) g->write_batches, (unsigned long long) g->write_ops,
        (unsigned long long) g->write_failed_commits);

    fprintf(f, "# HELP dstack_ctld_answer_builds_total Shared answers built (each is"
               " sent to every request that needs it until the data changes).\n"
               "# TYPE dstack_ctld_answer_builds_total counter\n");
    for (int k = 0; k < ANSWER_KINDS; k++) {
        fprintf(f, "dstack_ctld_answer_builds_total{answer=\"%s\"} %llu\n",
                answer_names[k], (unsigned long long) g->answer_builds[k]);
    }

    fprintf(f, "# HELP dstack_ctld_http_requests_total HTTP requests answered.\n"
               "# TYPE dstack_ctld_http_requests_total counter\n");
    for (int c = 1; c <= 5; c++) {
        fprintf(f, "dstack_ctld_http_requests_total{code=\"%dxx\"} %llu\n",
                c, LOAD(by_class[c]));
    }

    fprintf(f, "# HELP dstack_ctld_http_request_duration_seconds Time to answer"
               " a request (long-poll waits excluded).\n"
               "# TYPE dstack_ctld_http_request_duration_seconds histogram\n");
    for (size_t b = 0; b <= NBUCKETS; b++) {
        cum += LOAD(buckets[b]);
        if (b < NBUCKETS) {
            fprintf(f, "dstack_ctld_http_request_duration_seconds_bucket"
                       "{le=\"%g\"} %llu\n", (double) bucket_us[b] / 1e6, cum);
        } else {
            fprintf(f, "dstack_ctld_http_request_duration_seconds_bucket"
                       "{le=\"+Inf\"} %llu\n", cum);
        }
    }
    fprintf(f, "dstack_ctld_http_request_duration_seconds_sum %.6f\n"
               "dstack_ctld_http_request_duration_seconds_count %llu\n",
            (double) LOAD(latency_sum_us) / 1e6, LOAD(latency_count));

    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}
