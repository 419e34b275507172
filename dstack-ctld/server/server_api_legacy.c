/*
 * The original dstack-vpc API, wire compatible: /health, /api/ping,
 * /api/register, /api/nodes/update, /api/discover/{type}, /api/nodes.
 * Status codes, field names and error texts are the original's.
 */

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "lib/log.h"
#include "lib/validate.h"
#include "server/http.h"
#include "server/legacy.h"
#include "server/metrics.h"
#include "server/registry.h"
#include "server/store.h"


enum MHD_Result
api_health(struct http_req *r)
{
    return http_text(r, 200, "OK", "text/plain; charset=utf-8");
}


enum MHD_Result
api_ping(struct http_req *r)
{
    return http_text(r, 200, "pong", "text/plain; charset=utf-8");
}


/* --- register: a one-time key bound to the caller's app and instance --- */

struct register_state {
    struct register_op  op;
    char                key[TOKEN_HEX_LEN + 1];
};


static void
register_state_free(void *p)
{
    OPENSSL_cleanse(p, sizeof(struct register_state));
    free(p);
}


/* a name another app holds or has reserved is refused now, not at join
 * (another node of the caller's app may be the one re-joining); false
 * after answering */
static bool
register_name_free(struct http_req *r, const char *name)
{
    sqlite3           *db = store_reader(&r->srv->store);
    enum name_holder   h;

    h = db ? names_check(&r->srv->reg.reserved, db, name, r->app_id, 0)
           : NAME_ERROR;
    if (h == NAME_FREE || h == NAME_SAME_APP) {
        return true;
    }
    http_error(r, h == NAME_ERROR ? 500 : 409, names_why(h));
    return false;
}


enum MHD_Result
api_register(struct http_req *r)
{
    struct register_state  *st = r->data;
    struct api_arg          instance, name;
    const char             *why;

    if (st != NULL) {
        if (r->async == ASYNC_REFUSED) {
            return http_error(r, 503, "server is shutting down");
        }
        if (!r->committed || st->op.op.status != 0) {
            return http_error(r, st->op.op.status ? st->op.op.status : 500,
                              st->op.op.error ? st->op.op.error : "storage error");
        }
        metrics_inc(M_REGISTERS);
        log_info("pre-auth key issued to app %s instance %s (node name %s,"
                 " valid %" PRIu64 "s)", st->op.app_id, st->op.instance_id,
                 st->op.node_name[0] ? st->op.node_name : "-", st->op.lifetime);
        return http_json(r, 200, json_pack("{s:s, s:s, s:s}",
                                           "pre_auth_key", st->key,
                                           "shared_key", r->srv->shared_key,
                                           "server_url", r->srv->server_url));
    }

    st = calloc(1, sizeof(*st));
    if (st == NULL) {
        return http_error(r, 500, "out of memory");
    }
    r->data = st;
    r->data_free = register_state_free;
    register_op_init(&st->op, &r->srv->reg);

    http_arg_get(r, "instance_id", &instance);
    http_arg_get(r, "node_name", &name);
    why = api_register_args(&instance, &name, &st->op);
    if (why != NULL) {
        return http_error(r, 400, why);
    }
    /* a name asked for must be free for this app already at register */
    if (name.present && name.len != 0
        && !register_name_free(r, st->op.node_name))
    {
        return MHD_YES;
    }

    snprintf(st->op.app_id, sizeof(st->op.app_id), "%s", r->app_id);
    st->op.lifetime = r->srv->cfg.key_lifetime;
    if (token_new(st->key, st->op.key_hash) != 0) {
        return http_error(r, 500, "no randomness");
    }
    return http_submit(r, &st->op.op);
}


/* --- nodes/update: a node reports its type, VPN address and hostname --- */

static void
update_state_free(void *p)
{
    struct legacy_update_op *op = p;

    json_decref(op->node);
    free(op);
}


enum MHD_Result
api_nodes_update(struct http_req *r)
{
    struct legacy_update_op  *op = r->data;
    struct api_arg            uuid, node_type, tailscale_ip, hostname;
    const char               *why;

    if (op != NULL) {
        if (r->async == ASYNC_REFUSED) {
            return http_error(r, 503, "server is shutting down");
        }
        if (!r->committed || op->op.status != 0) {
            return http_error(r, op->op.status ? op->op.status : 500,
                              op->op.error ? op->op.error : "storage error");
        }
        log_info("node record %s %s by app %s", op->uuid,
                 op->created ? "created" : "updated", op->app_id);
        json_t *node = op->node;
        op->node = NULL;
        return http_json(r, 200, json_pack("{s:s, s:o, s:s}",
            "message", op->created ? "Node created" : "Node updated",
            "node", node,
            "status", op->created ? "created" : "updated"));
    }

    op = calloc(1, sizeof(*op));
    if (op == NULL) {
        return http_error(r, 500, "out of memory");
    }
    legacy_update_op_init(op);
    r->data = op;
    r->data_free = update_state_free;

    http_arg_get(r, "uuid", &uuid);
    http_arg_get(r, "node_type", &node_type);
    http_arg_get(r, "tailscale_ip", &tailscale_ip);
    http_arg_get(r, "hostname", &hostname);
    why = api_update_args(&uuid, &node_type, &tailscale_ip, &hostname, op);
    if (why != NULL) {
        return http_error(r, 400, why);
    }
    snprintf(op->app_id, sizeof(op->app_id), "%s", r->app_id);
    op->quota = r->srv->cfg.max_records_per_app;
    return http_submit(r, &op->op);
}


/* --- discovery: answers shared until the next commit --- */

struct list_build {
    sqlite3     *db;
    const char  *type;          /* NULL: every record */
};


static struct answer *
build_list(void *ctx)
{
    struct list_build  *b = ctx;
    struct answer      *a;
    json_t             *nodes, *out;
    char               *text;
    size_t              n;

    nodes = b->type ? legacy_discover(b->db, b->type) : legacy_list(b->db);
    if (nodes == NULL) {
        return NULL;
    }
    n = json_array_size(nodes);
    out = b->type ? json_pack("{s:I, s:s, s:o}", "count", (json_int_t) n,
                              "node_type", b->type, "nodes", nodes)
                  : json_pack("{s:I, s:o}", "count", (json_int_t) n, "nodes", nodes);
    text = out ? json_dumps(out, JSON_COMPACT) : NULL;
    json_decref(out);
    a = text ? answer_new() : NULL;
    if (a != NULL) {
        answer_append_str(a, text);
        a->count = n;
    }
    free(text);
    return a;
}


/* the records as of the last commit at least (read before the query) */
static struct answer *
records(struct http_req *r, const char *type)
{
    struct registry    *reg = &r->srv->reg;
    struct answer_key   key = { .kind = type ? ANSWER_DISCOVER : ANSWER_NODES };
    struct list_build   b = { .type = type };

    key.a = atomic_load(&reg->commits);
    if (type != NULL) {
        snprintf(key.type, sizeof(key.type), "%s", type);
    }
    b.db = store_reader(&r->srv->store);
    return b.db ? answer_get(reg->answers, &key, build_list, &b) : NULL;
}


enum MHD_Result
api_discover(struct http_req *r)
{
    struct answer  *a;
    char            msg[128];

    if (!ident_valid(r->param, LEGACY_TYPE_MAX)) {
        return http_error(r, 400, "invalid node type");
    }
    a = records(r, r->param);
    if (a == NULL) {
        return http_error(r, 500, "storage error");
    }
    if (a->count == 0) {
        answer_unref(a);
        snprintf(msg, sizeof(msg), "No %s nodes found", r->param);
        return http_error(r, 404, msg);
    }
    return http_answer(r, 200, NULL, a, 0, -1);
}


enum MHD_Result
api_nodes(struct http_req *r)
{
    struct answer  *a = records(r, NULL);

    if (a == NULL) {
        return http_error(r, 500, "storage error");
    }
    return http_answer(r, 200, NULL, a, 0, -1);
}
