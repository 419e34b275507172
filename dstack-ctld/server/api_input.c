/*
 * The API's input checks, apart from HTTP (see api_input.h).  The error
 * texts are the ones clients see, the original API's included.
 */

#include <stdio.h>
#include <string.h>

#include "lib/util.h"
#include "lib/validate.h"
#include "server/api_input.h"


int
api_arg_value(const struct api_arg *a, size_t max, const char **value)
{
    if (!a->present) {
        return 0;
    }
    if (a->value == NULL) {
        *value = "";
        return 1;
    }
    /* "%00" is what libmicrohttpd's unescape() leaves of an encoded NUL */
    if (strlen(a->value) != a->len || a->len > max
        || strstr(a->value, "%00") != NULL)
    {
        return -1;
    }
    *value = a->value;
    return 1;
}


json_t *
api_json_object(const char *body, size_t len, const char **why)
{
    json_error_t  err;
    json_t       *obj;

    if (len == 0) {
        *why = "a JSON object body is required";
        return NULL;
    }
    obj = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);
    if (obj == NULL) {
        *why = "malformed JSON body";
        return NULL;
    }
    if (!json_is_object(obj)) {
        json_decref(obj);
        *why = "the JSON body must be an object";
        return NULL;
    }
    return obj;
}


/* --- the original API --- */

const char *
api_register_args(const struct api_arg *instance_id,
                  const struct api_arg *node_name, struct register_op *op)
{
    const char  *instance, *name;
    int          rc;

    rc = api_arg_value(instance_id, INSTANCE_ID_MAX, &instance);
    if (rc < 0) {
        return "invalid instance_id";
    }
    if (rc == 0 || instance[0] == '\0') {
        return "Missing required parameters";
    }
    if (!ident_valid(instance, INSTANCE_ID_MAX)) {
        return "invalid instance_id";
    }
    snprintf(op->instance_id, sizeof(op->instance_id), "%s", instance);

    rc = api_arg_value(node_name, DNS_LABEL_MAX, &name);
    if (rc < 0) {
        return "invalid node_name";
    }
    if (rc == 1 && name[0] != '\0') {
        snprintf(op->node_name, sizeof(op->node_name), "%s", name);
        if (!dns_label_normalize(op->node_name)) {
            return "invalid node_name";
        }
    } else {
        /* the original's default; kept only when it is a usable DNS label */
        snprintf(op->node_name, sizeof(op->node_name), "node-%.*s",
                 DNS_LABEL_MAX - 5, instance);
        if (strlen(instance) > DNS_LABEL_MAX - 5
            || !dns_label_normalize(op->node_name))
        {
            op->node_name[0] = '\0';
        }
    }
    return NULL;
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


/* an optional argument copied after its check; false when it fails */
static bool
update_arg(const struct api_arg *a, char *dst, size_t dstsz,
           bool (*valid)(const char *s))
{
    const char  *v;
    int          rc;

    rc = api_arg_value(a, dstsz - 1, &v);
    if (rc < 0 || (rc == 1 && v[0] != '\0' && !valid(v))) {
        return false;
    }
    snprintf(dst, dstsz, "%s", rc == 1 ? v : "");
    return true;
}


const char *
api_update_args(const struct api_arg *uuid, const struct api_arg *node_type,
                const struct api_arg *tailscale_ip, const struct api_arg *hostname,
                struct legacy_update_op *op)
{
    if (!update_arg(uuid, op->uuid, sizeof(op->uuid), uuid_valid)) {
        return "invalid uuid";
    }
    if (op->uuid[0] == '\0') {
        return "uuid parameter is required";
    }
    if (!update_arg(node_type, op->node_type, sizeof(op->node_type),
                    node_type_valid))
    {
        return "invalid node_type";
    }
    if (!update_arg(tailscale_ip, op->tailscale_ip, sizeof(op->tailscale_ip),
                    ip_valid))
    {
        return "invalid tailscale_ip";
    }
    if (!update_arg(hostname, op->hostname, sizeof(op->hostname),
                    hostname_valid))
    {
        return "invalid hostname";
    }
    return NULL;
}


/* --- the VPC API --- */

const char *
api_peers_args(const struct api_arg *since, const struct api_arg *wait,
               const struct api_arg *epoch, struct peers_args *out)
{
    const char  *v;
    int          rc;

    memset(out, 0, sizeof(*out));
    rc = api_arg_value(since, 20, &v);
    if (rc < 0 || (rc == 1 && !parse_u64(v, INT64_MAX, &out->since))) {
        return "since must be a version number";
    }
    rc = api_arg_value(wait, 20, &v);
    if (rc < 0 || (rc == 1 && !parse_u64(v, UINT32_MAX, &out->wait))) {
        return "wait must be a number of seconds";
    }
    rc = api_arg_value(epoch, EPOCH_LEN, &v);
    if (rc < 0 || (rc == 1 && (strlen(v) != EPOCH_LEN || !ident_valid(v, EPOCH_LEN)))) {
        return "epoch must be the 16 characters a server gave";
    }
    if (rc == 1) {
        memcpy(out->epoch, v, EPOCH_LEN + 1);
        out->has_epoch = true;
    }
    return NULL;
}


/* a string member: 1 present, 0 absent or null, -1 refused (msg says why) */
static int
member_string(json_t *obj, const char *key, const char **out,
              char msg[API_MSG_MAX])
{
    json_t  *v = json_object_get(obj, key);

    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    if (!json_is_string(v)) {
        snprintf(msg, API_MSG_MAX, "%s must be a string", key);
        return -1;
    }
    *out = json_string_value(v);
    /* an embedded NUL (\u0000) would make the C string lie about its length */
    if (strlen(*out) != json_string_length(v)) {
        snprintf(msg, API_MSG_MAX, "invalid %s", key);
        return -1;
    }
    return 1;
}


#define REFUSE(text)  (snprintf(msg, API_MSG_MAX, "%s", text), 400)

unsigned
api_join_body(json_t *body, struct join_op *op, bool *with_peers,
              bool *snapshot, char msg[API_MSG_MAX])
{
    const char  *key = NULL, *pub = NULL, *endpoint = NULL, *name = NULL;
    const char  *node_token = NULL;
    json_t      *wp, *sn;
    int          rc;

    rc = member_string(body, "pre_auth_key", &key, msg);
    if (rc <= 0) {
        return rc < 0 ? 400 : REFUSE("pre_auth_key is required");
    }
    rc = member_string(body, "public_key", &pub, msg);
    if (rc <= 0) {
        return rc < 0 ? 400 : REFUSE("public_key is required");
    }
    if (member_string(body, "endpoint", &endpoint, msg) < 0
        || member_string(body, "name", &name, msg) < 0
        || member_string(body, "node_token", &node_token, msg) < 0)
    {
        return 400;
    }
    wp = json_object_get(body, "with_peers");
    if (wp != NULL && !json_is_boolean(wp)) {
        return REFUSE("with_peers must be a boolean");
    }
    *with_peers = wp == NULL || json_is_true(wp);
    sn = json_object_get(body, WIRE_JOIN_SNAPSHOT);
    if (sn != NULL && !json_is_boolean(sn)) {
        return REFUSE(WIRE_JOIN_SNAPSHOT " must be a boolean");
    }
    *snapshot = sn == NULL || json_is_true(sn);

    if (!wg_key_valid(pub)) {
        return REFUSE("public_key must be a base64 WireGuard key (32 bytes)");
    }
    snprintf(op->public_key, sizeof(op->public_key), "%s", pub);

    if (endpoint != NULL && endpoint[0] != '\0') {
        if (!endpoint_valid(endpoint)) {
            return REFUSE("endpoint must be HOST:PORT");
        }
        snprintf(op->endpoint, sizeof(op->endpoint), "%s", endpoint);
    }
    if (name != NULL) {
        if (strlen(name) > DNS_LABEL_MAX) {
            return REFUSE("name must be a DNS label");
        }
        snprintf(op->name, sizeof(op->name), "%s", name);
        if (!dns_label_normalize(op->name)) {
            return REFUSE("name must be a DNS label");
        }
    }

    /* a key of the wrong shape cannot exist: refused like an unknown one */
    if (strlen(key) != TOKEN_HEX_LEN || !ident_valid(key, TOKEN_HEX_LEN)) {
        snprintf(msg, API_MSG_MAX, "invalid pre-auth key");
        return 401;
    }
    sha256(key, TOKEN_HEX_LEN, op->key_hash);

    /* a re-join with a new public key proves it is the node by its token */
    if (node_token != NULL) {
        if (strlen(node_token) != TOKEN_HEX_LEN
            || !ident_valid(node_token, TOKEN_HEX_LEN))
        {
            return REFUSE("node_token must be a node token");
        }
        sha256(node_token, TOKEN_HEX_LEN, op->node_token_hash);
        op->has_node_token = true;
    }
    return 0;
}
