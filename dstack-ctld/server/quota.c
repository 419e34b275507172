/* Per-app quotas, counted in the writer's transaction. */

#include <inttypes.h>

#include "lib/log.h"
#include "lib/util.h"
#include "server/metrics.h"
#include "server/quota.h"
#include "server/store.h"

const char *const  quota_names[QUOTA_COUNT] = { "keys", "nodes", "records" };

/*
 * Unused keys expire, so they are counted (the count stops at the quota:
 * its cost is bounded by it); nodes and records are kept counted by the
 * schema's triggers (app_counts), one lookup however many an app has.
 */
static const char *const  count_sql[QUOTA_COUNT] = {
    "SELECT count(*) FROM (SELECT 1 FROM preauth_keys WHERE app_id = ?1"
    " AND used_at IS NULL AND expires_at > ?3 LIMIT ?2)",
    "SELECT coalesce((SELECT n FROM app_counts WHERE app_id = ?1"
    " AND kind = 'nodes'), 0)",
    "SELECT coalesce((SELECT n FROM app_counts WHERE app_id = ?1"
    " AND kind = 'records'), 0)",
};

static const char *const  refusal[QUOTA_COUNT] = {
    "too many unused pre-auth keys for this app",
    "node quota of this app reached",
    "record quota of this app reached",
};


int
quota_check(struct write_op *op, sqlite3 *db, enum quota q, const char *app_id,
            uint64_t max)
{
    sqlite3_stmt  *st;
    uint64_t       n = 0;
    int            rc;

    st = db_prepare(db, count_sql[q]);
    if (st == NULL) {
        goto failed;
    }
    sqlite3_bind_text(st, 1, app_id, -1, SQLITE_STATIC);
    if (q == QUOTA_KEYS) {
        sqlite3_bind_int64(st, 2,
                           max > INT64_MAX ? INT64_MAX : (sqlite3_int64) max);
        sqlite3_bind_int64(st, 3, clock_unix());
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        n = (uint64_t) sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW) {
        goto failed;
    }
    if (n < max) {
        return 0;
    }
    metrics_quota_refusal(q);
    log_info("app %s is at its quota of %" PRIu64 " %s", app_id, max, quota_names[q]);
    op->status = 429;
    op->error = refusal[q];
    return -1;

failed:
    op->status = 500;
    op->error = "storage error";
    return -1;
}
