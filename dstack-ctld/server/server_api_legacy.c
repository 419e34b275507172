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


enum MHD_Result
api_register(struct http_req *r)
{
    struct register_state  *st = r->data;
    const char             *instance, *name;
    int                     rc;

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

    rc = http_arg(r, "instance_id", INSTANCE_ID_MAX, &instance);
    if (rc < 0) {
        return http_error(r, 400, "invalid instance_id");
    }
    if (rc == 0 || instance[0] == '\0') {
        return http_error(r, 400, "Missing required parameters");
    }
    if (!ident_valid(instance, INSTANCE_ID_MAX)) {
        return http_error(r, 400, "invalid instance_id");
    }

    st = calloc(1, sizeof(*st));
    if (st == NULL) {
        return http_error(r, 500, "out of memory");
    }
    r->data = st;
    r->data_free = register_state_free;
    register_op_init(&st->op, &r->srv->reg);

    rc = http_arg(r, "node_name", DNS_LABEL_MAX, &name);
    if (rc < 0) {
        return http_error(r, 400, "invalid node_name");
    }
    if (rc == 1 && name[0] != '\0') {
        snprintf(st->op.node_name, sizeof(st->op.node_name), "%s", name);
        if (!dns_label_normalize(st->op.node_name)) {
            return http_error(r, 400, "invalid node_name");
        }
    } else {
        /* the original's default; kept only when it is a usable DNS label */
        snprintf(st->op.node_name, sizeof(st->op.node_name), "node-%.*s",
                 DNS_LABEL_MAX - 5, instance);
        if (strlen(instance) > DNS_LABEL_MAX - 5
            || !dns_label_normalize(st->op.node_name))
        {
            st->op.node_name[0] = '\0';
        }
    }

    snprintf(st->op.app_id, sizeof(st->op.app_id), "%s", r->app_id);
    snprintf(st->op.instance_id, sizeof(st->op.instance_id), "%s", instance);
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


/* copies an optional query argument after checking it; false after 400 */
static bool
update_arg(struct http_req *r, const char *name, char *dst, size_t dstsz,
           bool (*valid)(const char *s))
{
    const char  *v;
    int          rc;
    char         msg[64];

    rc = http_arg(r, name, dstsz - 1, &v);
    if (rc == 1 && v[0] != '\0' && !valid(v)) {
        rc = -1;
    }
    if (rc < 0) {
        snprintf(msg, sizeof(msg), "invalid %s", name);
        http_error(r, 400, msg);
        return false;
    }
    snprintf(dst, dstsz, "%s", rc == 1 ? v : "");
    return true;
}


static bool
node_type_valid(const char *s)
{
    return ident_valid(s, LEGACY_TYPE_MAX);
}


static bool
hostname_valid(const char *s)
{
    return text_valid(s, strlen(s), LEGACY_HOSTNAME_MAX) && strchr(s, ' ') == NULL;
}


static bool
uuid_valid(const char *s)
{
    return text_valid(s, strlen(s), LEGACY_UUID_MAX);
}


enum MHD_Result
api_nodes_update(struct http_req *r)
{
    struct legacy_update_op  *op = r->data;

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

    if (!update_arg(r, "uuid", op->uuid, sizeof(op->uuid), uuid_valid)) {
        return MHD_YES;
    }
    if (op->uuid[0] == '\0') {
        return http_error(r, 400, "uuid parameter is required");
    }
    if (!update_arg(r, "node_type", op->node_type, sizeof(op->node_type),
                    node_type_valid)
        || !update_arg(r, "tailscale_ip", op->tailscale_ip,
                       sizeof(op->tailscale_ip), ip_valid)
        || !update_arg(r, "hostname", op->hostname, sizeof(op->hostname),
                       hostname_valid))
    {
        return MHD_YES;
    }
    snprintf(op->app_id, sizeof(op->app_id), "%s", r->app_id);
    op->quota = r->srv->cfg.max_records_per_app;
    return http_submit(r, &op->op);
}


/* --- discovery --- */

enum MHD_Result
api_discover(struct http_req *r)
{
    sqlite3  *db;
    json_t   *nodes;
    char      msg[128];
    size_t    n;

    if (!ident_valid(r->param, LEGACY_TYPE_MAX)) {
        return http_error(r, 400, "invalid node type");
    }
    db = store_reader(&r->srv->store);
    nodes = db ? legacy_discover(db, r->param) : NULL;
    if (nodes == NULL) {
        return http_error(r, 500, "storage error");
    }
    n = json_array_size(nodes);
    if (n == 0) {
        json_decref(nodes);
        snprintf(msg, sizeof(msg), "No %s nodes found", r->param);
        return http_error(r, 404, msg);
    }
    return http_json(r, 200, json_pack("{s:I, s:s, s:o}", "count", (json_int_t) n,
                                       "node_type", r->param, "nodes", nodes));
}


enum MHD_Result
api_nodes(struct http_req *r)
{
    sqlite3  *db;
    json_t   *nodes;

    db = store_reader(&r->srv->store);
    nodes = db ? legacy_list(db) : NULL;
    if (nodes == NULL) {
        return http_error(r, 500, "storage error");
    }
    return http_json(r, 200, json_pack("{s:I, s:o}",
                                       "count", (json_int_t) json_array_size(nodes),
                                       "nodes", nodes));
}
