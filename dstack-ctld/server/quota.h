/*
 * Per-app quotas: unused pre-auth keys, nodes, original-API records.  An
 * allowed app can fill neither the database nor the address pool: the
 * write that would pass its quota is refused with 429, inside the same
 * transaction that counts, so concurrent writes cannot overshoot it.
 */

#ifndef CTLD_QUOTA_H
#define CTLD_QUOTA_H

#include <stdint.h>

#include <sqlite3.h>

#include "server/writer.h"

enum quota {
    QUOTA_KEYS,
    QUOTA_NODES,
    QUOTA_RECORDS,
    QUOTA_COUNT
};

/* "keys", "nodes", "records": the metric's label */
extern const char *const  quota_names[QUOTA_COUNT];

/*
 * 0 when app_id holds fewer than max of q; else -1 with op refused: 429
 * over the quota (counted in /metrics), 500 on a storage error.
 */
int   quota_check(struct write_op *op, sqlite3 *db, enum quota q,
                  const char *app_id, uint64_t max);

#endif
