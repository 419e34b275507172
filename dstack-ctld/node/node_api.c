/*
 * The node's calls to the VPC server.
 *
 * In production (ROUTE_MESH) every call goes to the CVM's local mesh entry
 * point as plain HTTP naming the server's app in x-dstack-target-app; nginx
 * carries it over mutual RA-TLS to the server CVM, whose nginx verifies our
 * certificate and sets x-dstack-app-id.  The node sends no identity of its
 * own: the mesh proves it.
 *
 * ROUTE_DIRECT (--server-app-id none) skips the mesh for tests and for a
 * node on the server's own host: the node then sets x-dstack-app-id itself,
 * exactly as the server's nginx would after checking the certificate.
 * The server accepts that only on its loopback or unix socket.
 *
 * ROUTE_ADMIN is the hub on the server CVM: the server's own listen
 * address, the admin token, no app identity.
 */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "lib/http_client.h"
#include "lib/log.h"
#include "node/node.h"

#define CALL_TIMEOUT_S   30
#define POLL_SLACK_S     30     /* on top of the wait, for a slow answer */


void
node_api_route_headers(const struct vpc_node *n, char buf[2][APP_ID_HEX_MAX + 64],
                       const char *h[3])
{
    h[0] = h[1] = h[2] = NULL;
    switch (n->route) {
    case ROUTE_MESH:
        snprintf(buf[0], sizeof(buf[0]), "x-dstack-target-app: %s", n->target_app);
        snprintf(buf[1], sizeof(buf[1]), "x-dstack-target-port: %" PRIu64,
                 n->cfg.server_port);
        h[0] = buf[0];
        h[1] = buf[1];
        break;
    case ROUTE_DIRECT:
        /* standing in for the server's nginx mesh_auth: see above */
        snprintf(buf[0], sizeof(buf[0]), "x-dstack-app-id: %s", n->agent_app_id);
        h[0] = buf[0];
        break;
    case ROUTE_ADMIN:
        break;
    }
}


/*
 * One call.  API_OK leaves the answer's JSON object in *answer (when
 * answer is not NULL); every other result has been logged.
 */
static enum api_result
call(struct vpc_node *n, const char *method, const char *path, const char *bearer,
     const char *body, long timeout_s, json_t **answer)
{
    struct http_response  resp;
    char                  hbuf[2][APP_ID_HEX_MAX + 64], err[512], q[256];
    const char           *headers[3] = { NULL, NULL, NULL };
    const char           *what;
    json_t               *doc, *msg;
    enum api_result       res;

    node_api_route_headers(n, hbuf, headers);

    /* the path's query may hold nothing secret, but keep log lines short */
    what = log_quote(q, sizeof(q), path, strcspn(path, "?"));
    if (http_client_request(&n->server, method, path, bearer, headers, body,
                            timeout_s, &resp, err, sizeof(err)) != 0)
    {
        if (!node_stopping()) {
            log_warn("%s %s: %s", method, what, err);
        }
        return API_FAILED;
    }
    n->answer_us = clock_mono_us();

    doc = json_loadb(resp.body ? resp.body : "", resp.len,
                     JSON_REJECT_DUPLICATES, NULL);
    if (resp.status == 200 && json_is_object(doc)) {
        if (answer != NULL) {
            *answer = doc;
            doc = NULL;
        }
        res = API_OK;
    } else {
        char  text[200];

        msg = json_object_get(doc, "error");
        log_quote(text, sizeof(text), json_string_value(msg), 160);
        if (resp.status == 200) {
            log_error("%s %s: the answer is not a JSON object", method, what);
            res = API_FAILED;
        } else if (resp.status == 401) {
            log_warn("%s %s: 401 %s", method, what, text);
            res = API_AUTH;
        } else if (resp.status == 410) {
            char  reason[200];

            log_quote(reason, sizeof(reason),
                      json_string_value(json_object_get(doc, "reason")), 160);
            log_error("%s %s: 410 %s (%s)", method, what, text, reason);
            res = API_GONE;
        } else if (resp.status >= 400 && resp.status < 500) {
            log_error("%s %s: %ld %s", method, what, resp.status, text);
            res = API_REFUSED;
        } else {
            log_warn("%s %s: %ld %s", method, what, resp.status, text);
            res = API_FAILED;
        }
    }
    json_decref(doc);
    if (resp.body != NULL) {
        /* join and register answers carry a token or a key */
        OPENSSL_cleanse(resp.body, resp.len);
    }
    http_response_free(&resp);
    return res;
}


enum api_result
node_api_register(struct vpc_node *n, char key[TOKEN_HEX_LEN + 1])
{
    char             path[512];
    json_t          *answer;
    json_t          *v;
    const char      *s;
    enum api_result  res;

    /* instance ids and names are checked identifiers: nothing to escape */
    snprintf(path, sizeof(path), PATH_REGISTER "?instance_id=%s%s%s",
             n->instance_id, n->cfg.name ? "&node_name=" : "",
             n->cfg.name ? n->cfg.name : "");
    res = call(n, "GET", path, NULL, NULL, CALL_TIMEOUT_S, &answer);
    if (res != API_OK) {
        return res;
    }
    v = json_object_get(answer, "pre_auth_key");
    s = json_string_value(v);
    if (s == NULL || json_string_length(v) != TOKEN_HEX_LEN
        || !ident_valid(s, TOKEN_HEX_LEN))
    {
        log_error("register: the answer has no valid pre_auth_key");
        res = API_FAILED;
    } else {
        memcpy(key, s, TOKEN_HEX_LEN + 1);
    }
    json_decref(answer);
    return res;
}


enum api_result
node_api_join(struct vpc_node *n, const char *key, bool snapshot_not_needed,
              json_t **answer)
{
    json_t          *body;
    char            *text;
    enum api_result  res;

    body = json_pack("{s:s, s:s, s:o, s:b}",
                     "pre_auth_key", key,
                     "public_key", n->public_key,
                     "endpoint", n->cfg.endpoint ? json_string(n->cfg.endpoint)
                                                 : json_null(),
                     "with_peers", 1);
    if (body != NULL && n->cfg.name != NULL) {
        json_object_set_new(body, "name", json_string(n->cfg.name));
    }
    /* it polls from the peer set it holds: the answer need not carry one */
    if (body != NULL && snapshot_not_needed) {
        json_object_set_new(body, WIRE_JOIN_SNAPSHOT, json_false());
    }
    /* a re-join proves it is this node, which a new public key needs */
    if (body != NULL && n->state.token[0] != '\0') {
        json_object_set_new(body, "node_token", json_string(n->state.token));
    }
    text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL) {
        log_error("join: out of memory");
        return API_FAILED;
    }
    res = call(n, "POST", PATH_JOIN, NULL, text, CALL_TIMEOUT_S, answer);
    OPENSSL_cleanse(text, strlen(text));
    free(text);
    return res;
}


enum api_result
node_api_report(struct vpc_node *n)
{
    char  path[512];

    /* the original's discovery record: uuid = instance id */
    snprintf(path, sizeof(path),
             PATH_NODES_UPDATE "?uuid=%s&tailscale_ip=%s&hostname=%s." DNS_DOMAIN
             "%s%s", n->instance_id, n->state.address, n->state.name,
             n->cfg.node_type ? "&node_type=" : "",
             n->cfg.node_type ? n->cfg.node_type : "");
    return call(n, "POST", path, NULL, "", CALL_TIMEOUT_S, NULL);
}


enum api_result
node_api_poll(struct vpc_node *n, uint64_t wait, json_t **answer)
{
    char      path[128];
    char      epoch[EPOCH_LEN + 8] = "";
    uint64_t  since = 0;

    /* from 0 (a snapshot) until a peer set is known, or after a refused one */
    if (n->have_peers && !n->want_snapshot) {
        since = n->peers.version;
        snprintf(epoch, sizeof(epoch), "&epoch=%s", n->peers.epoch);
    }
    snprintf(path, sizeof(path), PATH_PEERS "?since=%" PRIu64 "&wait=%" PRIu64
             "%s", since, wait, epoch);
    log_debug("polling from version %" PRIu64 "%s%s", since,
              since ? " of epoch " : "", since ? n->peers.epoch : "");
    return call(n, "GET", path,
                n->route == ROUTE_ADMIN ? n->admin_token : n->state.token,
                NULL, (long) (wait + POLL_SLACK_S), answer);
}
