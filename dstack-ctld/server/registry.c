/* Node registry: joins, removals, one-time keys, versions, housekeeping. */

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "lib/log.h"
#include "server/legacy.h"
#include "server/quota.h"
#include "server/registry.h"
#include "server/store.h"


const char  registry_node_columns[] =
    "id, app_id, instance_id, name, public_key, endpoint, address,"
    " created_version, version, created_at, updated_at";


static void
copy_column(sqlite3_stmt *st, int col, char *dst, size_t dstsz)
{
    const char *v = (const char *) sqlite3_column_text(st, col);

    snprintf(dst, dstsz, "%s", v ? v : "");
}


int
registry_node_fill(sqlite3_stmt *st, struct node *n)
{
    n->id = sqlite3_column_int64(st, 0);
    copy_column(st, 1, n->app_id, sizeof(n->app_id));
    copy_column(st, 2, n->instance_id, sizeof(n->instance_id));
    copy_column(st, 3, n->name, sizeof(n->name));
    copy_column(st, 4, n->public_key, sizeof(n->public_key));
    copy_column(st, 5, n->endpoint, sizeof(n->endpoint));
    n->address = (uint32_t) sqlite3_column_int64(st, 6);
    n->created_version = (uint64_t) sqlite3_column_int64(st, 7);
    n->version = (uint64_t) sqlite3_column_int64(st, 8);
    n->created_at = sqlite3_column_int64(st, 9);
    n->updated_at = sqlite3_column_int64(st, 10);
    return 0;
}


/* runs a prepared lookup expected to give at most one node */
static int
node_lookup(sqlite3_stmt *st, struct node *out)
{
    int  rc;

    if (st == NULL) {
        return -1;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        registry_node_fill(st, out);
        rc = 1;
    } else {
        rc = rc == SQLITE_DONE ? 0 : -1;
    }
    db_release(st);
    return rc;
}


static sqlite3_stmt *
node_query(sqlite3 *db, const char *where)
{
    char  sql[512];

    snprintf(sql, sizeof(sql), "SELECT %s FROM nodes WHERE %s",
             registry_node_columns, where);
    return db_cached(db, sql);
}


int
registry_node_by_token(sqlite3 *db, const unsigned char hash[SHA256_LEN],
                       struct node *out)
{
    sqlite3_stmt  *st = node_query(db, "token_hash = ?1");

    if (st != NULL) {
        sqlite3_bind_blob(st, 1, hash, SHA256_LEN, SQLITE_STATIC);
    }
    return node_lookup(st, out);
}


int
registry_token_removed(sqlite3 *db, const unsigned char hash[SHA256_LEN],
                       int64_t *node_id, bool *by_admin)
{
    sqlite3_stmt  *st;
    int            rc;

    st = db_cached(db, "SELECT node_id, by_admin FROM removed_tokens"
                       " WHERE token_hash = ?1");
    if (st == NULL) {
        return -1;
    }
    sqlite3_bind_blob(st, 1, hash, SHA256_LEN, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *node_id = sqlite3_column_int64(st, 0);
        *by_admin = sqlite3_column_int(st, 1) != 0;
    }
    db_release(st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}


static int
refuse(struct write_op *op, unsigned status, const char *error)
{
    op->status = status;
    op->error = error;
    return -1;
}


/* the next version, recorded in the same transaction as the change */
static int
version_next(struct registry *reg, sqlite3 *db, uint64_t *v)
{
    if (meta_set_int(db, "version", reg->wversion + 1) != 0) {
        return -1;
    }
    *v = ++reg->wversion;
    /* before any client can see it, even if this transaction fails */
    history_note(reg->history, reg->epoch, *v, false);
    return 0;
}


static int
load_addresses(struct registry *reg, sqlite3 *db)
{
    sqlite3_stmt  *st;
    int            rc;

    ipam_clear(&reg->ipam);
    reg->wnodes = 0;
    st = db_prepare(db, "SELECT address FROM nodes");
    if (st == NULL) {
        return -1;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        reg->wnodes++;
        ipam_mark(&reg->ipam, (uint32_t) sqlite3_column_int64(st, 0));
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}


/*
 * Every node's address must stay a node address of the pool: a node on
 * the hub's address, or outside the pool, makes every node refuse the peer
 * set.  Names the first few, so the operator knows whom to move.
 */
static int
check_addresses(struct registry *reg, sqlite3 *db)
{
    sqlite3_stmt  *st;
    char           list[512], addr[IPAM_ADDR_LEN];
    size_t         len = 0;
    uint64_t       bad = 0;
    int            rc;

    st = db_prepare(db, "SELECT id, name, address FROM nodes ORDER BY id");
    if (st == NULL) {
        return -1;
    }
    list[0] = '\0';
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        uint32_t a = (uint32_t) sqlite3_column_int64(st, 2);

        if (ipam_is_node_addr(&reg->ipam, a)) {
            continue;
        }
        if (++bad <= 8 && len < sizeof(list)) {
            ipam_format(a, addr);
            len += (size_t) snprintf(list + len, sizeof(list) - len, "%s%s (id %lld, %s)",
                                     bad > 1 ? ", " : "",
                                     (const char *) sqlite3_column_text(st, 1),
                                     (long long) sqlite3_column_int64(st, 0), addr);
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        return -1;
    }
    if (bad > 0) {
        log_error("pool %s with server address %s leaves %" PRIu64 " nodes without"
                  " a valid address: %s%s; start with the settings they joined"
                  " under, or remove them (dstack-ctld nodes remove)",
                  reg->pool_cidr, reg->hub_address, bad, list,
                  bad > 8 ? ", ..." : "");
        return -1;
    }
    return 0;
}


static int
load_state(struct registry *reg, sqlite3 *db)
{
    return meta_get_int(db, "version", &reg->wversion) == 0
           && meta_get_int(db, "tombstone_floor", &reg->wfloor) == 0
           && load_addresses(reg, db) == 0 ? 0 : -1;
}


int
registry_open(struct registry *reg, sqlite3 *db, uint32_t pool_base,
              unsigned pool_prefix, uint32_t hub_addr)
{
    char  hub[512], stored[512];

    ipam_format_cidr(pool_base, pool_prefix, reg->pool_cidr);
    ipam_format(hub_addr, reg->hub_address);
    if (ipam_init(&reg->ipam, pool_base, pool_prefix, hub_addr) != 0) {
        log_error("cannot set up the address pool %s", reg->pool_cidr);
        return -1;
    }
    if (check_addresses(reg, db) != 0
        || load_state(reg, db) != 0
        || meta_get_text(db, "epoch", reg->epoch, sizeof(reg->epoch)) != 0
        || meta_get_text(db, "hub", stored, sizeof(stored)) != 0)
    {
        return -1;
    }

    /* the hub is in every peer set: a new identity is a peer-set change */
    snprintf(hub, sizeof(hub), "%s|%s|%s|%s|%s", reg->hub_name,
             reg->hub_public_key, reg->hub_address, reg->hub_endpoint,
             reg->pool_cidr);
    if (strcmp(hub, stored) != 0) {
        uint64_t v;

        if (db_exec(db, "BEGIN IMMEDIATE") != 0) {
            return -1;
        }
        if (version_next(reg, db, &v) != 0
            || meta_set_int(db, "hub_version", v) != 0
            || meta_set_text(db, "hub", hub) != 0
            || db_exec(db, "COMMIT") != 0)
        {
            db_exec(db, "ROLLBACK");
            return -1;
        }
        log_info("hub identity recorded at version %" PRIu64, v);
    }

    atomic_store(&reg->version, reg->wversion);
    atomic_store(&reg->nodes, reg->wnodes);
    return 0;
}


void
registry_close(struct registry *reg)
{
    ipam_free(&reg->ipam);
}


void
registry_committed(void *arg)
{
    struct registry *reg = arg;

    atomic_store(&reg->nodes, reg->wnodes);
    atomic_fetch_add(&reg->commits, 1);
    if (atomic_exchange(&reg->version, reg->wversion) != reg->wversion) {
        longpoll_publish(reg->longpoll, reg->wversion);
    }
}


int
registry_aborted(void *arg, sqlite3 *db)
{
    return load_state(arg, db);
}


int
registry_maintain(void *arg, sqlite3 *db)
{
    struct registry  *reg = arg;
    sqlite3_stmt     *st;
    int64_t           now = clock_unix();
    uint64_t          floor = 0;
    int               changes;

    st = db_prepare(db, "DELETE FROM preauth_keys"
                        " WHERE expires_at < ?1 OR used_at < ?1");
    if (st == NULL) {
        return -1;
    }
    sqlite3_bind_int64(st, 1, now - (int64_t) reg->key_retention);
    if (db_step_done(st, db) != 0) {
        return -1;
    }
    changes = sqlite3_changes(db);
    if (changes > 0) {
        log_debug("pruned %d used or expired pre-auth keys", changes);
    }

    /* a removed node's token answers 410 as long as its tombstone lasts */
    st = db_prepare(db, "DELETE FROM removed_tokens WHERE removed_at <= ?1");
    if (st == NULL) {
        return -1;
    }
    sqlite3_bind_int64(st, 1, now - (int64_t) reg->tombstone_ttl);
    if (db_step_done(st, db) != 0) {
        return -1;
    }

    if (legacy_expire(db, reg->record_ttl) != 0) {
        return -1;
    }

    /* prune by version, not time alone: every tombstone above the floor
     * must still exist for diffs to stay exact */
    st = db_prepare(db, "SELECT max(version) FROM tombstones WHERE removed_at <= ?1");
    if (st == NULL) {
        return -1;
    }
    sqlite3_bind_int64(st, 1, now - (int64_t) reg->tombstone_ttl);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
        floor = (uint64_t) sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    if (floor <= reg->wfloor) {
        return 0;
    }

    st = db_prepare(db, "DELETE FROM tombstones WHERE version <= ?1");
    if (st == NULL) {
        return -1;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64) floor);
    if (db_step_done(st, db) != 0 || meta_set_int(db, "tombstone_floor", floor) != 0) {
        return -1;
    }
    reg->wfloor = floor;
    log_info("pruned tombstones up to version %" PRIu64, floor);
    return 0;
}


/* --- register: store the hash of a new one-time key --- */

static int
register_exec(struct write_op *wop, sqlite3 *db)
{
    struct register_op  *op = (struct register_op *) wop;
    sqlite3_stmt        *st;
    int64_t              now = clock_unix();

    if (quota_check(wop, db, QUOTA_KEYS, op->app_id, op->reg->quota_keys) != 0) {
        return -1;
    }

    st = db_prepare(db, "INSERT INTO preauth_keys (key_hash, app_id, instance_id,"
                        " node_name, created_at, expires_at)"
                        " VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    if (st == NULL) {
        return refuse(wop, 500, "storage error");
    }
    sqlite3_bind_blob(st, 1, op->key_hash, SHA256_LEN, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, op->app_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, op->instance_id, -1, SQLITE_STATIC);
    db_bind_opt_text(st, 4, op->node_name);
    sqlite3_bind_int64(st, 5, now);
    sqlite3_bind_int64(st, 6, now + (int64_t) op->lifetime);
    if (db_step_done(st, db) != 0) {
        return refuse(wop, 500, "storage error");
    }
    return 0;
}


void
register_op_init(struct register_op *op, struct registry *reg)
{
    memset(op, 0, sizeof(*op));
    op->op.exec = register_exec;
    op->reg = reg;
}


/* --- join: spend a key, get (or keep) an address --- */

static int
key_check(struct join_op *op, sqlite3 *db, char *instance_id, size_t idsz,
          char *key_name, size_t namesz)
{
    sqlite3_stmt  *st;
    int            rc;
    bool           used, expired, other_app;

    st = db_prepare(db, "SELECT app_id, instance_id, node_name, expires_at,"
                        " used_at FROM preauth_keys WHERE key_hash = ?1");
    if (st == NULL) {
        return refuse(&op->op, 500, "storage error");
    }
    sqlite3_bind_blob(st, 1, op->key_hash, SHA256_LEN, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) {
            return refuse(&op->op, 500, "storage error");
        }
        op->key_failure = KEY_UNKNOWN;
        return refuse(&op->op, 401, "invalid pre-auth key");
    }

    other_app = strcmp((const char *) sqlite3_column_text(st, 0), op->app_id) != 0;
    expired = sqlite3_column_int64(st, 3) <= clock_unix();
    used = sqlite3_column_type(st, 4) != SQLITE_NULL;
    copy_column(st, 1, instance_id, idsz);
    copy_column(st, 2, key_name, namesz);
    sqlite3_finalize(st);

    /* same answer for used and expired: a key's state is nobody's business */
    if (other_app) {
        op->key_failure = KEY_OTHER_APP;
        return refuse(&op->op, 403, "pre-auth key belongs to another app");
    }
    if (used) {
        op->key_failure = KEY_USED;
        return refuse(&op->op, 401, "invalid pre-auth key");
    }
    if (expired) {
        op->key_failure = KEY_EXPIRED;
        return refuse(&op->op, 401, "invalid pre-auth key");
    }
    return 0;
}


/* another node holding the same value in a UNIQUE column */
static int
taken_by_other(sqlite3 *db, const char *column, const char *value, int64_t self)
{
    char           sql[128];
    sqlite3_stmt  *st;
    int            rc;

    snprintf(sql, sizeof(sql), "SELECT 1 FROM nodes WHERE %s = ?1 AND id != ?2",
             column);
    st = db_prepare(db, sql);
    if (st == NULL) {
        return -1;
    }
    sqlite3_bind_text(st, 1, value, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, self);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}


/* a re-join that replaces the key must prove it is that node: 1 yes */
static int
holds_token(sqlite3 *db, int64_t id, const struct join_op *op)
{
    sqlite3_stmt  *st;
    int            rc;

    if (!op->has_node_token) {
        return 0;
    }
    st = db_prepare(db, "SELECT 1 FROM nodes WHERE id = ?1 AND token_hash = ?2");
    if (st == NULL) {
        return -1;
    }
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_blob(st, 2, op->node_token_hash, SHA256_LEN, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}


static int
join_exec(struct write_op *wop, sqlite3 *db)
{
    struct join_op   *op = (struct join_op *) wop;
    struct registry  *reg = op->reg;
    struct node      *n = &op->node;
    sqlite3_stmt     *st;
    char              key_name[DNS_LABEL_MAX + 1];
    enum name_holder  holder;
    int64_t           now = clock_unix();
    uint64_t          version;
    int               rc;

    if (key_check(op, db, n->instance_id, sizeof(n->instance_id),
                  key_name, sizeof(key_name)) != 0)
    {
        return -1;
    }

    snprintf(n->name, sizeof(n->name), "%s", op->name[0] ? op->name : key_name);
    if (n->name[0] == '\0') {
        return refuse(wop, 400, "name is required");
    }
    if (strcmp(n->name, reg->hub_name) == 0) {
        return refuse(wop, 409, "name is taken by the VPC server");
    }

    st = node_query(db, "app_id = ?1 AND instance_id = ?2");
    if (st != NULL) {
        sqlite3_bind_text(st, 1, op->app_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, n->instance_id, -1, SQLITE_STATIC);
    }
    struct node  old;
    rc = node_lookup(st, &old);
    if (rc < 0) {
        return refuse(wop, 500, "storage error");
    }
    op->rejoined = rc == 1;
    op->rekeyed = op->rejoined && strcmp(old.public_key, op->public_key) != 0;
    if (!op->rejoined
        && quota_check(wop, db, QUOTA_NODES, op->app_id, reg->quota_nodes) != 0)
    {
        return -1;
    }

    if (op->rejoined && strcmp(old.public_key, op->public_key) != 0) {
        rc = holds_token(db, old.id, op);
        if (rc <= 0) {
            return rc < 0 ? refuse(wop, 500, "storage error")
                          : refuse(wop, 409, "instance is joined with another public"
                                   " key: a new key needs the node's node_token");
        }
    }

    holder = names_check(&reg->reserved, db, n->name, op->app_id,
                         op->rejoined ? old.id : 0);
    if (holder != NAME_FREE) {
        return refuse(wop, holder == NAME_ERROR ? 500 : 409, names_why(holder));
    }
    rc = taken_by_other(db, "public_key", op->public_key, op->rejoined ? old.id : 0);
    if (rc != 0) {
        return rc < 0 ? refuse(wop, 500, "storage error")
                      : refuse(wop, 409, "public key is used by another node");
    }

    /* the key is spent in the same transaction that uses it */
    st = db_prepare(db, "UPDATE preauth_keys SET used_at = ?2 WHERE key_hash = ?1");
    if (st != NULL) {
        sqlite3_bind_blob(st, 1, op->key_hash, SHA256_LEN, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, now);
    }
    if (db_step_done(st, db) != 0) {
        return refuse(wop, 500, "storage error");
    }

    if (op->rejoined) {
        n->address = old.address;
        n->id = old.id;
        n->created_version = old.created_version;
        n->created_at = old.created_at;
    } else if (ipam_alloc(&reg->ipam, &n->address) != 0) {
        return refuse(wop, 503, "address pool exhausted");
    }

    if (version_next(reg, db, &version) != 0) {
        goto failed;
    }

    if (op->rejoined) {
        st = db_prepare(db, "UPDATE nodes SET name = ?2, public_key = ?3,"
                            " endpoint = ?4, token_hash = ?5, version = ?6,"
                            " updated_at = ?7 WHERE id = ?1");
        if (st != NULL) {
            sqlite3_bind_int64(st, 1, n->id);
        }
    } else {
        n->created_version = version;
        n->created_at = now;
        st = db_prepare(db, "INSERT INTO nodes (name, public_key, endpoint,"
                            " token_hash, version, updated_at, app_id,"
                            " instance_id, address, created_version, created_at)"
                            " VALUES (?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?6, ?7)");
        if (st != NULL) {
            sqlite3_bind_text(st, 8, op->app_id, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 9, n->instance_id, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 10, n->address);
        }
    }
    if (st != NULL) {
        sqlite3_bind_text(st, 2, n->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, op->public_key, -1, SQLITE_STATIC);
        db_bind_opt_text(st, 4, op->endpoint);
        sqlite3_bind_blob(st, 5, op->token_hash, SHA256_LEN, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, (sqlite3_int64) version);
        sqlite3_bind_int64(st, 7, now);
    }
    if (db_step_done(st, db) != 0) {
        reg->wversion--;
        goto failed;
    }

    if (!op->rejoined) {
        n->id = sqlite3_last_insert_rowid(db);
        reg->wnodes++;
    }
    snprintf(n->app_id, sizeof(n->app_id), "%s", op->app_id);
    snprintf(n->public_key, sizeof(n->public_key), "%s", op->public_key);
    snprintf(n->endpoint, sizeof(n->endpoint), "%s", op->endpoint);
    n->version = version;
    n->updated_at = now;
    return 0;

failed:
    if (!op->rejoined) {
        ipam_release(&reg->ipam, n->address);
    }
    return refuse(wop, 500, "storage error");
}


void
join_op_init(struct join_op *op, struct registry *reg)
{
    memset(op, 0, sizeof(*op));
    op->op.exec = join_exec;
    op->reg = reg;
}


/* --- removal: the row goes, a tombstone carries the version --- */

static int
remove_exec(struct write_op *wop, sqlite3 *db)
{
    struct remove_op  *op = (struct remove_op *) wop;
    struct registry   *reg = op->reg;
    struct node       *n = &op->node;
    sqlite3_stmt      *st;
    uint64_t           id;
    int                rc;

    if (parse_u64(op->selector, INT64_MAX, &id)) {
        st = node_query(db, "id = ?1");
        if (st != NULL) {
            sqlite3_bind_int64(st, 1, (sqlite3_int64) id);
        }
    } else {
        st = node_query(db, "name = ?1");
        if (st != NULL) {
            sqlite3_bind_text(st, 1, op->selector, -1, SQLITE_STATIC);
        }
    }
    rc = node_lookup(st, n);
    if (rc <= 0) {
        return rc < 0 ? refuse(wop, 500, "storage error")
                      : refuse(wop, 404, "no such node");
    }
    if (op->requester != 0 && op->requester != n->id) {
        return refuse(wop, 403, "a node can only remove itself");
    }

    if (version_next(reg, db, &op->version) != 0) {
        return refuse(wop, 500, "storage error");
    }

    /* its token now answers 410: the node learns it was removed */
    st = db_prepare(db, "INSERT OR REPLACE INTO removed_tokens (token_hash,"
                        " node_id, by_admin, removed_at)"
                        " SELECT token_hash, id, ?2, ?3 FROM nodes WHERE id = ?1");
    if (st != NULL) {
        sqlite3_bind_int64(st, 1, n->id);
        sqlite3_bind_int(st, 2, op->requester == 0);
        sqlite3_bind_int64(st, 3, clock_unix());
    }
    if (db_step_done(st, db) != 0) {
        goto failed;
    }
    st = db_prepare(db, "DELETE FROM nodes WHERE id = ?1");
    if (st != NULL) {
        sqlite3_bind_int64(st, 1, n->id);
    }
    if (db_step_done(st, db) != 0) {
        goto failed;
    }
    st = db_prepare(db, "INSERT OR REPLACE INTO tombstones (node_id, public_key,"
                        " created_version, version, removed_at)"
                        " VALUES (?1, ?2, ?3, ?4, ?5)");
    if (st != NULL) {
        sqlite3_bind_int64(st, 1, n->id);
        sqlite3_bind_text(st, 2, n->public_key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, (sqlite3_int64) n->created_version);
        sqlite3_bind_int64(st, 4, (sqlite3_int64) op->version);
        sqlite3_bind_int64(st, 5, clock_unix());
    }
    if (db_step_done(st, db) != 0) {
        goto failed;
    }
    /* the node's discovery record (legacy API, uuid = instance id) goes too */
    st = db_prepare(db, "DELETE FROM legacy_nodes WHERE uuid = ?1 AND app_id = ?2");
    if (st != NULL) {
        sqlite3_bind_text(st, 1, n->instance_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, n->app_id, -1, SQLITE_STATIC);
    }
    if (db_step_done(st, db) != 0) {
        goto failed;
    }

    ipam_release(&reg->ipam, n->address);
    reg->wnodes--;
    return 0;

failed:
    reg->wversion--;
    return refuse(wop, 500, "storage error");
}


void
remove_op_init(struct remove_op *op, struct registry *reg)
{
    memset(op, 0, sizeof(*op));
    op->op.exec = remove_exec;
    op->reg = reg;
}
