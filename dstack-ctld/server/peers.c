/* Peer snapshots and deltas from the registry's version columns. */

#include <inttypes.h>
#include <stdlib.h>
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


static void
append_peer(struct answer *a, unsigned list, int64_t id, json_t *peer)
{
    char  *text = peer ? json_dumps(peer, JSON_COMPACT) : NULL;

    json_decref(peer);
    if (text == NULL) {
        a->failed = true;
        return;
    }
    answer_list_entry(a, list, id, text);
    free(text);
}


/* appends the nodes of the query `where` (?1: since) to list */
static int
append_nodes(struct answer *a, unsigned list, sqlite3 *db, const char *where,
             uint64_t since)
{
    char           sql[512];
    sqlite3_stmt  *st;
    struct node    n;
    int            rc;

    /* a delta sorts by "+id": sorting must not make SQLite walk the whole
     * table in id order instead of seeking the version index (a delta is
     * O(changes)); a snapshot reads the whole table in id order anyway */
    snprintf(sql, sizeof(sql), "SELECT %s FROM nodes %s ORDER BY %s",
             registry_node_columns, where, where[0] ? "+id" : "id");
    st = db_cached(db, sql);
    if (st == NULL) {
        return -1;
    }
    if (sqlite3_bind_parameter_count(st) >= 1) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64) since);
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        registry_node_fill(st, &n);
        append_peer(a, list, n.id, peer_node_json(&n));
    }
    db_release(st);
    return rc == SQLITE_DONE ? 0 : -1;
}


static int
append_removed(struct answer *a, sqlite3 *db, uint64_t since)
{
    sqlite3_stmt  *st;
    json_t        *e;
    char          *text;
    bool           first = true;
    int            rc;

    /* a node born and removed after `since` was never seen: skip it */
    st = db_cached(db, "SELECT node_id, public_key FROM tombstones"
                       " WHERE version > ?1 AND created_version <= ?1"
                       " ORDER BY +node_id");
    if (st == NULL) {
        return -1;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64) since);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        e = json_pack("{s:I, s:s}",
                      "id", (json_int_t) sqlite3_column_int64(st, 0),
                      "public_key", (const char *) sqlite3_column_text(st, 1));
        text = e ? json_dumps(e, JSON_COMPACT) : NULL;
        json_decref(e);
        if (text == NULL) {
            a->failed = true;
            continue;
        }
        if (!first) {
            answer_append(a, ",", 1);
        }
        answer_append_str(a, text);
        free(text);
        first = false;
    }
    db_release(st);
    return rc == SQLITE_DONE ? 0 : -1;
}


struct build {
    struct registry  *reg;
    sqlite3          *db;
    uint64_t          version, since, hub_version;
};


static struct answer *
header(const struct build *b, bool snapshot)
{
    struct answer  *a = answer_new();
    char            text[128];

    if (a != NULL) {
        snprintf(text, sizeof(text), "{\"epoch\":\"%s\",\"version\":%" PRIu64
                 ",\"snapshot\":%s,", b->reg->epoch, b->version,
                 snapshot ? "true" : "false");
        answer_append_str(a, text);
    }
    return a;
}


static struct answer *
build_snapshot(void *ctx)
{
    struct build   *b = ctx;
    struct answer  *a = header(b, true);

    if (a == NULL) {
        return NULL;
    }
    answer_append_str(a, "\"peers\":[");
    append_peer(a, 0, 0, hub_json(b->reg));
    if (append_nodes(a, 0, b->db, "", 0) != 0) {
        answer_unref(a);
        return NULL;
    }
    answer_append_str(a, "]}");
    return a;
}


static struct answer *
build_delta(void *ctx)
{
    struct build   *b = ctx;
    struct answer  *a = header(b, false);

    if (a == NULL) {
        return NULL;
    }
    answer_append_str(a, "\"added\":[");
    if (append_nodes(a, 0, b->db, "WHERE version > ?1 AND created_version > ?1",
                     b->since) != 0)
    {
        goto failed;
    }
    answer_append_str(a, "],\"changed\":[");
    if (b->hub_version > b->since) {
        append_peer(a, 1, 0, hub_json(b->reg));
    }
    if (append_nodes(a, 1, b->db, "WHERE version > ?1 AND created_version <= ?1",
                     b->since) != 0)
    {
        goto failed;
    }
    answer_append_str(a, "],\"removed\":[");
    if (append_removed(a, b->db, b->since) != 0) {
        goto failed;
    }
    answer_append_str(a, "]}");
    return a;

failed:
    answer_unref(a);
    return NULL;
}


struct answer *
peers_answer(struct registry *reg, sqlite3 *db, uint64_t since, const char *epoch)
{
    struct build       b = { .reg = reg, .db = db, .since = since };
    struct answer_key  key = { 0 };
    uint64_t           floor;

    if (meta_get_int(db, "version", &b.version) != 0
        || meta_get_int(db, "tombstone_floor", &floor) != 0
        || meta_get_int(db, "hub_version", &b.hub_version) != 0)
    {
        return NULL;
    }
    key.a = b.version;
    if (since == 0 || since > b.version || since < floor
        || (epoch != NULL && strcmp(epoch, reg->epoch) != 0))
    {
        key.kind = ANSWER_SNAPSHOT;
        return answer_get(reg->answers, &key, build_snapshot, &b);
    }
    key.kind = ANSWER_DELTA;
    key.b = since;
    return answer_get(reg->answers, &key, build_delta, &b);
}
