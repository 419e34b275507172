/* Peer snapshots and deltas from the registry's version columns. */

#include <string.h>

#include "lib/log.h"
#include "server/ipam.h"
#include "server/peers.h"
#include "server/store.h"


static json_t *
peer_json(int64_t id, const char *name, const char *public_key,
          const char *address, const char *allowed, const char *endpoint,
          int hub)
{
    return json_pack("{s:I, s:s, s:s++, s:s, s:s, s:[s], s:o, s:b}",
                     "id", (json_int_t) id,
                     "name", name,
                     "dns_name", name, ".", DNS_DOMAIN,
                     "public_key", public_key,
                     "address", address,
                     "allowed_ips", allowed,
                     "endpoint", endpoint[0] ? json_string(endpoint) : json_null(),
                     "hub", hub);
}


static json_t *
peer_node_json(const struct node *n)
{
    char  addr[IPAM_ADDR_LEN], cidr[IPAM_CIDR_LEN];

    ipam_format(n->address, addr);
    ipam_format_cidr(n->address, 32, cidr);
    return peer_json(n->id, n->name, n->public_key, addr, cidr, n->endpoint, 0);
}


static json_t *
hub_json(const struct registry *reg)
{
    return peer_json(0, reg->hub_name, reg->hub_public_key, reg->hub_address,
                     reg->pool_cidr, reg->hub_endpoint, 1);
}


/* appends the nodes a query gives (registry_node_columns) to arr */
static int
append_nodes(sqlite3_stmt *st, json_t *arr)
{
    struct node  n;
    int          rc;

    if (st == NULL) {
        return -1;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        registry_node_fill(st, &n);
        json_array_append_new(arr, peer_node_json(&n));
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}


static sqlite3_stmt *
nodes_where(sqlite3 *db, const char *where, int64_t self, uint64_t since)
{
    char           sql[512];
    sqlite3_stmt  *st;

    /* a delta sorts by "+id": sorting must not make SQLite walk the whole
     * table in id order instead of seeking the version index (a delta is
     * O(changes)); a snapshot reads the whole table in id order anyway */
    snprintf(sql, sizeof(sql), "SELECT %s FROM nodes WHERE id != ?1 %s ORDER BY %s",
             registry_node_columns, where, where[0] ? "+id" : "id");
    st = db_prepare(db, sql);
    if (st != NULL) {
        sqlite3_bind_int64(st, 1, self);
        if (sqlite3_bind_parameter_count(st) >= 2) {
            sqlite3_bind_int64(st, 2, (sqlite3_int64) since);
        }
    }
    return st;
}


static int
append_removed(sqlite3 *db, uint64_t since, json_t *arr)
{
    sqlite3_stmt  *st;
    int            rc;

    /* a node born and removed after `since` was never seen: skip it */
    st = db_prepare(db, "SELECT node_id, public_key FROM tombstones"
                        " WHERE version > ?1 AND created_version <= ?1"
                        " ORDER BY +node_id");
    if (st == NULL) {
        return -1;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64) since);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_array_append_new(arr, json_pack("{s:I, s:s}",
            "id", (json_int_t) sqlite3_column_int64(st, 0),
            "public_key", (const char *) sqlite3_column_text(st, 1)));
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}


json_t *
peers_since(struct registry *reg, sqlite3 *db, int64_t self, uint64_t since,
            const char *epoch)
{
    uint64_t  version, floor, hub_version;
    json_t   *out, *peers, *added, *changed, *removed;

    if (meta_get_int(db, "version", &version) != 0
        || meta_get_int(db, "tombstone_floor", &floor) != 0
        || meta_get_int(db, "hub_version", &hub_version) != 0)
    {
        return NULL;
    }

    out = json_pack("{s:s, s:I}", "epoch", reg->epoch, "version", (json_int_t) version);

    if (since == 0 || since > version || since < floor
        || (epoch != NULL && strcmp(epoch, reg->epoch) != 0))
    {
        peers = json_array();
        json_array_append_new(peers, hub_json(reg));
        json_object_set_new(out, "snapshot", json_true());
        json_object_set_new(out, "peers", peers);
        if (append_nodes(nodes_where(db, "", self, 0), peers) != 0) {
            goto failed;
        }
        return out;
    }

    added = json_array();
    changed = json_array();
    removed = json_array();
    json_object_set_new(out, "snapshot", json_false());
    json_object_set_new(out, "added", added);
    json_object_set_new(out, "changed", changed);
    json_object_set_new(out, "removed", removed);

    if (hub_version > since) {
        json_array_append_new(changed, hub_json(reg));
    }
    if (append_nodes(nodes_where(db, "AND version > ?2 AND created_version > ?2",
                                      self, since), added) != 0
        || append_nodes(nodes_where(db, "AND version > ?2 AND created_version <= ?2",
                                         self, since), changed) != 0
        || append_removed(db, since, removed) != 0)
    {
        goto failed;
    }
    return out;

failed:
    json_decref(out);
    return NULL;
}
