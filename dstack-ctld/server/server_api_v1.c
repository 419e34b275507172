/*
 * The VPC API: join with a one-time key, peer updates as a long poll,
 * node listing and removal, metrics.  See README.md for the shapes.
 */

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "lib/log.h"
#include "lib/validate.h"
#include "server/endpoint.h"
#include "server/http.h"
#include "server/metrics.h"
#include "server/peers.h"
#include "server/relay.h"
#include "server/registry.h"
#include "server/store.h"


static bool
admin_token(struct http_req *r, const unsigned char hash[SHA256_LEN])
{
    return CRYPTO_memcmp(hash, r->srv->admin_token_hash, SHA256_LEN) == 0;
}


/* --- join --- */

struct join_state {
    struct join_op  op;
    char            token[TOKEN_HEX_LEN + 1];
    bool            with_peers;
    bool            snapshot;       /* false: the node resumes from its own */
};


static void
join_state_free(void *p)
{
    OPENSSL_cleanse(p, sizeof(struct join_state));
    free(p);
}


static enum MHD_Result
join_answer(struct http_req *r, struct join_state *st)
{
    struct registry  *reg = &r->srv->reg;
    struct node      *n = &st->op.node;
    struct write_op  *op = &st->op.op;
    char              addr[IPAM_ADDR_LEN], *text;
    json_t           *out;
    struct answer    *peers;
    sqlite3          *db;

    if (r->async == ASYNC_REFUSED) {
        return http_error(r, 503, "server is shutting down");
    }
    if (op->status != 0) {
        static const char *const why[] = {
            NULL, "unknown key", "key already used", "key expired",
            "key of another app"
        };
        if (st->op.key_failure != KEY_OK) {
            metrics_key_failure(st->op.key_failure);
        }
        if (op->status == 503 && strcmp(op->error, "address pool exhausted") == 0) {
            metrics_inc(M_POOL_EXHAUSTED);
        }
        return http_error_why(r, op->status, op->error, why[st->op.key_failure]);
    }
    if (!r->committed) {
        return http_error(r, 500, "storage error");
    }

    metrics_inc(M_JOINS);
    if (st->op.rejoined) {
        metrics_inc(M_REJOINS);
    }
    if (st->op.rekeyed) {
        relay_node_gone(n->id, "the node joined again with another key");
    }
    ipam_format(n->address, addr);
    log_info("node %s (id %" PRId64 ", app %s, instance %s) %s at %s, version %"
             PRIu64, n->name, n->id, n->app_id, n->instance_id,
             st->op.rejoined ? "re-joined" : "joined", addr, n->version);

    out = json_pack("{s:I, s:s, s:s++, s:s, s:s, s:s}",
                    "node_id", (json_int_t) n->id,
                    "name", n->name,
                    "dns_name", n->name, ".", DNS_DOMAIN,
                    "address", addr,
                    "prefix", reg->pool_cidr,
                    "node_token", st->token);
    if (out == NULL) {
        return http_error(r, 500, "out of memory");
    }

    if (!st->with_peers || !st->snapshot) {
        json_object_set_new(out, "epoch", json_string(reg->epoch));
        json_object_set_new(out, "version", json_integer((json_int_t) n->version));
        if (!st->snapshot) {
            json_object_set_new(out, "snapshot", json_false());
        }
        return http_json(r, 200, out);
    }

    /* the shared snapshot as of now, at least as new as this join, after
     * this node's own members: {"node_id",...,"node_token", + its bytes
     * past '{', without this node's own entry */
    text = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    if (text == NULL) {
        return http_error(r, 500, "out of memory");
    }
    text[strlen(text) - 1] = ',';
    db = store_reader(&r->srv->store);
    peers = NULL;
    if (db != NULL && db_begin_read(db) == 0) {
        peers = peers_answer(reg, db, 0, NULL);
        db_end_read(db);
    }
    if (peers == NULL) {
        /* the join itself is stored: the node can fetch peers with a poll */
        free(text);
        return http_error(r, 500, "storage error reading the peer set");
    }
    return http_answer(r, 200, text, peers, 1, n->id);
}


enum MHD_Result
api_v1_join(struct http_req *r)
{
    struct join_state  *st = r->data;
    char                msg[API_MSG_MAX];
    json_t             *body;
    unsigned            status;

    if (st != NULL) {
        return join_answer(r, st);
    }

    body = http_json_body(r);
    if (body == NULL) {
        return MHD_YES;
    }
    st = calloc(1, sizeof(*st));
    if (st == NULL) {
        json_decref(body);
        return http_error(r, 500, "out of memory");
    }
    r->data = st;
    r->data_free = join_state_free;
    join_op_init(&st->op, &r->srv->reg);
    st->with_peers = true;
    st->snapshot = true;

    status = api_join_body(body, &st->op, &st->with_peers, &st->snapshot, msg);
    json_decref(body);
    if (status == 401) {
        metrics_key_failure(KEY_UNKNOWN);
        return http_error_why(r, 401, msg, "malformed key");
    }
    if (status != 0) {
        return http_error(r, status, msg);
    }

    /* a checked endpoint becomes the numeric one every node will use */
    if (st->op.endpoint[0] != '\0') {
        char         given[ENDPOINT_MAX + 1];
        const char  *why;

        memcpy(given, st->op.endpoint, sizeof(given));
        status = endpoint_resolve(given, st->op.endpoint, &why);
        if (status != 0) {
            return http_error(r, status, why);
        }
    }

    snprintf(st->op.app_id, sizeof(st->op.app_id), "%s", r->app_id);
    if (token_new(st->token, st->op.token_hash) != 0) {
        return http_error(r, 500, "no randomness");
    }
    return http_submit(r, &st->op.op);
}


/* --- peers: the long poll --- */

/* a token that is no node's: 410 when its node was removed, else 401 */
static enum MHD_Result
unknown_token(struct http_req *r, sqlite3 *db, const unsigned char hash[SHA256_LEN])
{
    int64_t      id = 0;
    bool         by_admin = false;
    const char  *why;
    int          rc;

    rc = registry_token_removed(db, hash, &id, &by_admin);
    if (rc <= 0) {
        return rc < 0 ? http_error(r, 500, "storage error")
                      : http_unauthorized_bearer(r, "unknown node token");
    }
    why = by_admin ? "removed by the admin" : "removed by itself";
    log_info("410 %s: the token of node %" PRId64 ", %s", r->method, id, why);
    return http_json(r, 410, json_pack("{s:s, s:s, s:I}",
                                       "error", "node removed from the VPC",
                                       "reason", why, "node_id", (json_int_t) id));
}


struct poll_state {
    uint64_t  since;
    uint64_t  deadline_ms;
    char      epoch[EPOCH_LEN + 1];
    bool      has_epoch;
};


static enum MHD_Result
poll_answer(struct http_req *r, struct poll_state *ps)
{
    struct server    *srv = r->srv;
    struct registry  *reg = &srv->reg;
    unsigned char     hash[SHA256_LEN];
    struct node       self;
    struct answer    *out;
    sqlite3          *db;
    int               rc;
    bool              same_epoch;

    if (!http_bearer_hash(r, hash)) {
        return http_unauthorized_bearer(r, "node token required");
    }

    db = store_reader(&srv->store);
    if (db == NULL || db_begin_read(db) != 0) {
        return http_error(r, 500, "storage error");
    }
    if (admin_token(r, hash)) {
        /* the hub (`dstack-ctld node --hub`): every node, and the hub's
         * own entry, which tells it its address and the pool; no node
         * has id 0, so nobody is left out */
        self.id = 0;
    } else {
        /* checked on every wake-up too: a removed node learns it at once */
        rc = registry_node_by_token(db, hash, &self);
        if (rc <= 0) {
            enum MHD_Result  ret;

            ret = rc < 0 ? http_error(r, 500, "storage error")
                         : unknown_token(r, db, hash);
            db_end_read(db);
            return ret;
        }
    }
    if (self.id != 0 && r->app_id[0] == '\0') {
        const char *app = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                      "x-dstack-app-id");
        if (app != NULL) {
            snprintf(r->app_id, sizeof(r->app_id), "%s", app);
            if (strlen(app) >= sizeof(r->app_id) || !app_id_normalize(r->app_id)
                || strcmp(r->app_id, self.app_id) != 0)
            {
                /* behind nginx a token only works for the app it was issued to */
                db_end_read(db);
                r->app_id[0] = '\0';
                return http_error(r, 403, "node token belongs to another app");
            }
        }
    }

    same_epoch = !ps->has_epoch || strcmp(ps->epoch, reg->epoch) == 0;
    if (same_epoch && ps->since == atomic_load(&reg->version)
        && !r->timed_out && ps->deadline_ms > clock_mono_ms())
    {
        db_end_read(db);
        return http_park(r, ps->since, ps->deadline_ms, self.id);
    }

    out = peers_answer(reg, db, ps->since, ps->has_epoch ? ps->epoch : NULL);
    db_end_read(db);
    if (out == NULL) {
        return http_error(r, 500, "storage error");
    }
    /* the shared answer, without the poller's own entry (the hub's view
     * keeps every entry: its own is id 0) */
    return http_answer(r, 200, NULL, out, 0, self.id != 0 ? self.id : -1);
}


enum MHD_Result
api_v1_peers(struct http_req *r)
{
    struct poll_state  *ps = r->data;
    struct api_arg      since, wait, epoch;
    struct peers_args   args;
    const char         *why;
    uint64_t            wait_s;

    if (ps != NULL) {
        return poll_answer(r, ps);
    }
    ps = calloc(1, sizeof(*ps));
    if (ps == NULL) {
        return http_error(r, 500, "out of memory");
    }
    r->data = ps;
    r->data_free = free;

    http_arg_get(r, "since", &since);
    http_arg_get(r, "wait", &wait);
    http_arg_get(r, "epoch", &epoch);
    why = api_peers_args(&since, &wait, &epoch, &args);
    if (why != NULL) {
        return http_error(r, 400, why);
    }
    ps->since = args.since;
    if (args.has_epoch) {
        memcpy(ps->epoch, args.epoch, sizeof(ps->epoch));
        ps->has_epoch = true;
    }
    wait_s = args.wait < r->srv->cfg.max_wait ? args.wait : r->srv->cfg.max_wait;
    ps->deadline_ms = clock_mono_ms() + wait_s * 1000;
    return poll_answer(r, ps);
}


/* --- admin: list and remove --- */

static json_t *
node_admin_json(const struct node *n)
{
    char  addr[IPAM_ADDR_LEN];

    ipam_format(n->address, addr);
    return json_pack("{s:I, s:s, s:s++, s:s, s:s, s:s, s:s, s:o, s:I, s:I, s:I}",
                     "id", (json_int_t) n->id,
                     "name", n->name,
                     "dns_name", n->name, ".", DNS_DOMAIN,
                     "app_id", n->app_id,
                     "instance_id", n->instance_id,
                     "address", addr,
                     "public_key", n->public_key,
                     "endpoint", n->endpoint[0] ? json_string(n->endpoint) : json_null(),
                     "version", (json_int_t) n->version,
                     "created_at", (json_int_t) n->created_at,
                     "updated_at", (json_int_t) n->updated_at);
}


enum MHD_Result
api_v1_nodes(struct http_req *r)
{
    unsigned char   hash[SHA256_LEN];
    sqlite3        *db;
    sqlite3_stmt   *st = NULL;
    json_t         *nodes;
    uint64_t        version = 0;
    struct node     n;
    char            sql[256];
    int             rc = SQLITE_ERROR;

    if (!http_bearer_hash(r, hash) || !admin_token(r, hash)) {
        return http_unauthorized_bearer(r, "admin token required");
    }

    db = store_reader(&r->srv->store);
    if (db == NULL || db_begin_read(db) != 0) {
        return http_error(r, 500, "storage error");
    }
    nodes = json_array();
    snprintf(sql, sizeof(sql), "SELECT %s FROM nodes ORDER BY id", registry_node_columns);
    if (meta_get_int(db, "version", &version) == 0
        && (st = db_prepare(db, sql)) != NULL)
    {
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            registry_node_fill(st, &n);
            json_array_append_new(nodes, node_admin_json(&n));
        }
    }
    sqlite3_finalize(st);
    db_end_read(db);
    if (rc != SQLITE_DONE) {
        json_decref(nodes);
        return http_error(r, 500, "storage error");
    }
    return http_json(r, 200, json_pack("{s:I, s:I, s:o}",
                                       "count", (json_int_t) json_array_size(nodes),
                                       "version", (json_int_t) version,
                                       "nodes", nodes));
}


enum MHD_Result
api_v1_node_remove(struct http_req *r)
{
    struct remove_op  *op = r->data;
    unsigned char      hash[SHA256_LEN];
    struct node        self;
    sqlite3           *db;
    char               addr[IPAM_ADDR_LEN];
    int                rc;

    if (op != NULL) {
        if (r->async == ASYNC_REFUSED) {
            return http_error(r, 503, "server is shutting down");
        }
        if (op->op.status != 0 || !r->committed) {
            return http_error(r, op->op.status ? op->op.status : 500,
                              op->op.error ? op->op.error : "storage error");
        }
        metrics_inc(M_REMOVALS);
        relay_node_gone(op->node.id, "the node was removed");
        ipam_format(op->node.address, addr);
        log_info("node %s (id %" PRId64 ", %s) removed by %s, version %" PRIu64,
                 op->node.name, op->node.id, addr,
                 op->requester ? "itself" : "the admin", op->version);
        return http_json(r, 200, json_pack("{s:{s:I, s:s, s:s}, s:I}",
                                           "removed", "id", (json_int_t) op->node.id,
                                           "name", op->node.name, "address", addr,
                                           "version", (json_int_t) op->version));
    }

    if (!http_bearer_hash(r, hash)) {
        return http_unauthorized_bearer(r, "admin or node token required");
    }
    op = calloc(1, sizeof(*op));
    if (op == NULL) {
        return http_error(r, 500, "out of memory");
    }
    r->data = op;
    r->data_free = free;
    remove_op_init(op, &r->srv->reg);

    if (!admin_token(r, hash)) {
        /* a node may leave: its own token removes itself */
        db = store_reader(&r->srv->store);
        rc = db ? registry_node_by_token(db, hash, &self) : -1;
        if (rc <= 0) {
            return rc < 0 ? http_error(r, 500, "storage error")
                          : http_unauthorized_bearer(r, "admin or node token required");
        }
        op->requester = self.id;
    }

    snprintf(op->selector, sizeof(op->selector), "%s", r->param);
    if (strlen(r->param) > DNS_LABEL_MAX || !dns_label_normalize(op->selector)) {
        return http_error(r, 400, "a node is named by its id or its name");
    }
    return http_submit(r, &op->op);
}


enum MHD_Result
api_metrics(struct http_req *r)
{
    struct server          *srv = r->srv;
    struct metrics_gauges   g;
    struct writer_stats     ws;
    struct longpoll_stats   ls;
    char                   *text;

    writer_stats(srv->writer, &ws);
    longpoll_stats(srv->reg.longpoll, &ls);
    g.nodes = atomic_load(&srv->reg.nodes);
    g.version = atomic_load(&srv->reg.version);
    g.longpolls_waiting = ls.waiting;
    g.longpolls_superseded = ls.superseded;
    g.longpolls_hung_up = ls.hung_up;
    g.write_batches = ws.batches;
    g.write_ops = ws.ops;
    g.write_failed_commits = ws.failed_commits;
    answer_cache_builds(srv->reg.answers, g.answer_builds);

    text = metrics_render(&g);
    if (text == NULL) {
        return http_error(r, 500, "out of memory");
    }
    return http_text_owned(r, 200, text, "text/plain; version=0.0.4; charset=utf-8");
}
