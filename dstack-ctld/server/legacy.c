/* Storage of the original API's node records. */

#include <inttypes.h>
#include <string.h>

#include "lib/log.h"
#include "lib/util.h"
#include "server/legacy.h"
#include "server/quota.h"
#include "server/store.h"


static json_t *
text_or_null(sqlite3_stmt *st, int col)
{
    const char *v = (const char *) sqlite3_column_text(st, col);

    return v ? json_string(v) : json_null();
}


/* the original's NodeInfo, field order included */
static json_t *
record_json(sqlite3_stmt *st)
{
    return json_pack("{s:s, s:s, s:s, s:o, s:o}",
                     "uuid", (const char *) sqlite3_column_text(st, 0),
                     "name", (const char *) sqlite3_column_text(st, 1),
                     "node_type", (const char *) sqlite3_column_text(st, 2),
                     "tailscale_ip", text_or_null(st, 3),
                     "actual_hostname", text_or_null(st, 4));
}






static int
refuse(struct legacy_update_op *op, const char *why)
{
    op->op.status = 403;
    op->op.error = why;
    return -1;
}


/* 1 when a node of app_id (same) or of another app (!same) is the
 * instance named uuid, 0 when none, -1 on error */
static int
instance_of(sqlite3 *db, const char *app_id, const char *uuid, bool same)
{
    sqlite3_stmt  *st;
    int            rc;

    st = db_prepare(db, same ? "SELECT 1 FROM nodes WHERE app_id = ?1"
                               " AND instance_id = ?2"
                             : "SELECT 1 FROM nodes WHERE app_id != ?1"
                               " AND instance_id = ?2 LIMIT 1");
    if (st == NULL) {
        return -1;
    }
    sqlite3_bind_text(st, 1, app_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, uuid, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}


/*
 * Hardening over the original, where a uuid belonged to whoever wrote it
 * first.  A uuid that is the instance id of a joined node belongs to that
 * node's app; any other uuid to the app that created its record.  0 when
 * op's app may write it (a record another app pre-empted is deleted
 * then) and op->created says whether the record is new; -1 refused or
 * failed.
 */
static int
owner_check(struct legacy_update_op *op, sqlite3 *db)
{
    sqlite3_stmt  *st;
    char           owner[APP_ID_HEX_MAX + 1] = "";
    int            rc, mine, theirs;

    st = db_prepare(db, "SELECT app_id FROM legacy_nodes WHERE uuid = ?1");
    if (st == NULL) {
        return -1;
    }
    sqlite3_bind_text(st, 1, op->uuid, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *v = (const char *) sqlite3_column_text(st, 0);
        snprintf(owner, sizeof(owner), "%s", v ? v : "");
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        return -1;
    }
    op->created = rc == SQLITE_DONE;
    if (rc == SQLITE_ROW && strcmp(owner, op->app_id) == 0) {
        return 0;
    }

    mine = instance_of(db, op->app_id, op->uuid, true);
    if (mine < 0) {
        return -1;
    }
    if (rc == SQLITE_DONE) {
        theirs = mine ? 0 : instance_of(db, op->app_id, op->uuid, false);
        if (theirs != 0) {
            return theirs < 0 ? -1 : refuse(op, "uuid is the instance id of a"
                                            " node of another app");
        }
        return 0;
    }

    theirs = mine ? instance_of(db, owner, op->uuid, true) : 1;
    if (theirs != 0) {
        return theirs < 0 ? -1 : refuse(op, "uuid belongs to another app");
    }
    /* the record was written first by an app that has no such node */
    st = db_prepare(db, "DELETE FROM legacy_nodes WHERE uuid = ?1");
    if (st != NULL) {
        sqlite3_bind_text(st, 1, op->uuid, -1, SQLITE_STATIC);
    }
    if (db_step_done(st, db) != 0) {
        return -1;
    }
    op->created = true;
    log_warn("node record %s of app %s replaced: the uuid is an instance of"
             " app %s", op->uuid, owner, op->app_id);
    return 0;
}


static int
update_exec(struct write_op *wop, sqlite3 *db)
{
    struct legacy_update_op  *op = (struct legacy_update_op *) wop;
    sqlite3_stmt             *st;

    if (owner_check(op, db) != 0) {
        if (wop->status != 0) {
            return -1;
        }
        goto failed;
    }
    if (op->created
        && quota_check(wop, db, QUOTA_RECORDS, op->app_id, op->quota) != 0)
    {
        return -1;
    }

    /* legacy special case of the original: only the newest etcd node
     * stays, among the records of the caller's app */
    if (strcmp(op->node_type, "etcd") == 0) {
        st = db_prepare(db, "DELETE FROM legacy_nodes"
                            " WHERE node_type = 'etcd' AND uuid != ?1"
                            " AND app_id = ?2");
        if (st != NULL) {
            sqlite3_bind_text(st, 1, op->uuid, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, op->app_id, -1, SQLITE_STATIC);
        }
        if (db_step_done(st, db) != 0) {
            goto failed;
        }
    }

    if (op->created) {
        st = db_prepare(db, "INSERT INTO legacy_nodes (uuid, name, node_type,"
                            " tailscale_ip, actual_hostname, app_id, updated_at)"
                            " VALUES (?1, ?1, coalesce(?2, ''), ?3, ?4, ?5, ?6)");
    } else {
        st = db_prepare(db, "UPDATE legacy_nodes SET"
                            " node_type = coalesce(?2, node_type),"
                            " tailscale_ip = coalesce(?3, tailscale_ip),"
                            " actual_hostname = coalesce(?4, actual_hostname),"
                            " updated_at = ?6 WHERE uuid = ?1 AND app_id = ?5");
    }
    if (st == NULL) {
        goto failed;
    }
    sqlite3_bind_text(st, 1, op->uuid, -1, SQLITE_STATIC);
    db_bind_opt_text(st, 2, op->node_type);
    db_bind_opt_text(st, 3, op->tailscale_ip);
    db_bind_opt_text(st, 4, op->hostname);
    sqlite3_bind_text(st, 5, op->app_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, clock_unix());
    if (db_step_done(st, db) != 0) {
        goto failed;
    }

    st = db_prepare(db, "SELECT uuid, name, node_type, tailscale_ip,"
                        " actual_hostname FROM legacy_nodes WHERE uuid = ?1");
    if (st == NULL) {
        goto failed;
    }
    sqlite3_bind_text(st, 1, op->uuid, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        op->node = record_json(st);
    }
    sqlite3_finalize(st);
    if (op->node == NULL) {
        goto failed;
    }
    return 0;

failed:
    wop->status = 500;
    wop->error = "storage error";
    return -1;
}


int
legacy_expire(sqlite3 *db, uint64_t ttl)
{
    sqlite3_stmt  *st;
    int            n;

    /* a node's own record lives as long as the node (removal deletes it) */
    st = db_prepare(db, "DELETE FROM legacy_nodes WHERE updated_at <= ?1"
                        " AND NOT EXISTS (SELECT 1 FROM nodes WHERE"
                        " nodes.app_id = legacy_nodes.app_id"
                        " AND nodes.instance_id = legacy_nodes.uuid)");
    if (st == NULL) {
        return -1;
    }
    sqlite3_bind_int64(st, 1, clock_unix() - (int64_t) ttl);
    if (db_step_done(st, db) != 0) {
        return -1;
    }
    n = sqlite3_changes(db);
    if (n > 0) {
        log_info("%d node records expired (not updated for %" PRIu64 "s)", n, ttl);
    }
    return 0;
}


void
legacy_update_op_init(struct legacy_update_op *op)
{
    memset(op, 0, sizeof(*op));
    op->op.exec = update_exec;
}


json_t *
legacy_discover(sqlite3 *db, const char *node_type)
{
    sqlite3_stmt  *st;
    json_t        *nodes;
    bool           etcd = strcmp(node_type, "etcd") == 0;
    int            rc;

    st = db_prepare(db, "SELECT actual_hostname, tailscale_ip, uuid"
                        " FROM legacy_nodes WHERE node_type = ?1"
                        " AND actual_hostname IS NOT NULL AND actual_hostname != ''"
                        " ORDER BY rowid");
    if (st == NULL) {
        return NULL;
    }
    sqlite3_bind_text(st, 1, node_type, -1, SQLITE_STATIC);
    nodes = json_array();

    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *host = (const char *) sqlite3_column_text(st, 0);
        json_t     *e;

        /* keys in the original's (sorted map) order */
        e = json_pack("{s:s}", "hostname", host);
        if (etcd) {
            json_object_set_new(e, "hostname_with_port",
                                json_sprintf("%s:2379", host));
        }
        json_object_set_new(e, "tailscale_ip", text_or_null(st, 1));
        json_object_set_new(e, "uuid",
                            json_string((const char *) sqlite3_column_text(st, 2)));
        json_array_append_new(nodes, e);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        json_decref(nodes);
        return NULL;
    }
    return nodes;
}


json_t *
legacy_list(sqlite3 *db)
{
    sqlite3_stmt  *st;
    json_t        *nodes;
    int            rc;

    st = db_prepare(db, "SELECT uuid, name, node_type, tailscale_ip,"
                        " actual_hostname FROM legacy_nodes ORDER BY rowid");
    if (st == NULL) {
        return NULL;
    }
    nodes = json_array();
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_array_append_new(nodes, record_json(st));
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        json_decref(nodes);
        return NULL;
    }
    return nodes;
}
