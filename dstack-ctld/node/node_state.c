/*
 * What a node keeps across restarts besides its key: the join's outcome
 * (node id, name, address, pool, token) and what it was made with, in
 * <state-dir>/node.state, JSON, mode 0600 (the token is a secret); and
 * the last peer set the server gave, with its version and epoch, in
 * <state-dir>/node.peers (0600), so that a node started while the server
 * is away has its peers, and a restarted node polls from that version.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "lib/log.h"
#include "node/node.h"

#define STATE_MAX  4096


static int
dir_file(const char *dir, const char *name, char path[PATH_MAX])
{
    if (snprintf(path, PATH_MAX, "%s/%s", dir, name) >= PATH_MAX) {
        log_error("state-dir path too long");
        return -1;
    }
    return 0;
}


static int
state_path(const char *dir, char path[PATH_MAX])
{
    return dir_file(dir, NODE_STATE_FILE, path);
}


/* a string member copied into out; absent, too long or with a NUL: -1 */
static int
member_copy(json_t *doc, const char *key, char *out, size_t outsz)
{
    json_t      *v = json_object_get(doc, key);
    const char  *s = json_string_value(v);

    if (s == NULL || json_string_length(v) >= outsz
        || strlen(s) != json_string_length(v))
    {
        return -1;
    }
    memcpy(out, s, json_string_length(v) + 1);
    return 0;
}


/* address inside prefix, a usable host address there: 0, else -1 */
static int
check_address(const char *address, const char *prefix)
{
    struct ip_prefix  pool, host;
    struct in_addr    a;

    if (ip_prefix_parse(prefix, &pool) != 0 || pool.family != AF_INET
        || !ip_prefix_is_network(&pool) || pool.len < 8 || pool.len > 30
        || inet_pton(AF_INET, address, &a) != 1)
    {
        return -1;
    }
    host = pool;
    host.addr.v4 = a;
    if (ip_prefix_host_error(&host) != NULL) {
        return -1;
    }
    /* same network: the host bits cleared give the pool back */
    host.addr.v4.s_addr &= htonl(~(uint32_t) 0 << (32 - pool.len));
    return host.addr.v4.s_addr == pool.addr.v4.s_addr ? 0 : -1;
}


static int
fill(struct node_state *st, json_t *doc, bool saved)
{
    json_t  *id = json_object_get(doc, "node_id");

    if (!json_is_integer(id) || json_integer_value(id) <= 0
        || member_copy(doc, "name", st->name, sizeof(st->name)) != 0
        || !dns_label_normalize(st->name)
        || member_copy(doc, "address", st->address, sizeof(st->address)) != 0
        || member_copy(doc, "prefix", st->prefix, sizeof(st->prefix)) != 0
        || check_address(st->address, st->prefix) != 0
        || member_copy(doc, "node_token", st->token, sizeof(st->token)) != 0
        || strlen(st->token) != TOKEN_HEX_LEN
        || !ident_valid(st->token, TOKEN_HEX_LEN))
    {
        return -1;
    }
    st->node_id = json_integer_value(id);
    if (saved
        && (member_copy(doc, "app_id", st->app_id, sizeof(st->app_id)) != 0
            || member_copy(doc, "instance_id", st->instance_id,
                           sizeof(st->instance_id)) != 0
            || member_copy(doc, "server", st->server, sizeof(st->server)) != 0
            || member_copy(doc, "public_key", st->public_key,
                           sizeof(st->public_key)) != 0
            || member_copy(doc, "endpoint", st->endpoint,
                           sizeof(st->endpoint)) != 0
            || member_copy(doc, "requested_name", st->requested_name,
                           sizeof(st->requested_name)) != 0))
    {
        return -1;
    }
    return 0;
}


int
node_state_from_join(struct node_state *st, json_t *answer)
{
    if (fill(st, answer, false) != 0) {
        log_error("join: the answer has no valid node_id, name, address in"
                  " prefix, or node_token");
        return -1;
    }
    return 0;
}


int
node_state_load(const char *dir, struct node_state *st)
{
    char     path[PATH_MAX], text[STATE_MAX];
    ssize_t  len;
    json_t  *doc;
    int      rc = 0;

    memset(st, 0, sizeof(*st));
    if (state_path(dir, path) != 0) {
        return -1;
    }
    len = file_read_small(path, text, sizeof(text));
    if (len < 0) {
        if (errno != ENOENT) {
            log_warn("cannot read %s: %s; joining afresh", path, strerror(errno));
        }
        return -1;
    }
    doc = json_loadb(text, (size_t) len, JSON_REJECT_DUPLICATES, NULL);
    if (fill(st, doc, true) != 0) {
        log_warn("%s is malformed; joining afresh", path);
        memset(st, 0, sizeof(*st));
        rc = -1;
    }
    json_decref(doc);
    OPENSSL_cleanse(text, sizeof(text));
    return rc;
}


int
node_state_save(const char *dir, const struct node_state *st)
{
    char     path[PATH_MAX];
    char    *text;
    json_t  *doc;
    int      rc = -1;

    if (state_path(dir, path) != 0) {
        return -1;
    }
    doc = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}",
                    "node_id", (json_int_t) st->node_id,
                    "name", st->name,
                    "address", st->address,
                    "prefix", st->prefix,
                    "node_token", st->token,
                    "app_id", st->app_id,
                    "instance_id", st->instance_id,
                    "server", st->server,
                    "public_key", st->public_key,
                    "endpoint", st->endpoint,
                    "requested_name", st->requested_name);
    text = doc ? json_dumps(doc, JSON_INDENT(2)) : NULL;
    json_decref(doc);
    if (text == NULL) {
        log_error("cannot encode the node state");
        return -1;
    }
    if (file_write_atomic(path, text, strlen(text), 0600) != 0) {
        log_error("cannot write %s: %s", path, strerror(errno));
    } else {
        rc = 0;
    }
    OPENSSL_cleanse(text, strlen(text));
    free(text);
    return rc;
}


void
node_state_forget(const char *dir)
{
    static const char *const  files[] = { NODE_STATE_FILE, NODE_PEERS_FILE };
    char                      path[PATH_MAX];

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        if (dir_file(dir, files[i], path) == 0 && unlink(path) != 0
            && errno != ENOENT)
        {
            log_error("cannot remove %s: %s", path, strerror(errno));
        }
    }
}


/* {"node_id": N, "answer": <the set as a snapshot answer>} */
int
node_peers_save(const char *dir, int64_t node_id, const struct peer_set *s)
{
    char     path[PATH_MAX];
    char    *text;
    json_t  *doc;
    int      rc = -1;

    if (dir_file(dir, NODE_PEERS_FILE, path) != 0) {
        return -1;
    }
    doc = json_pack("{s:I, s:o*}", "node_id", (json_int_t) node_id,
                    "answer", peer_set_json(s));
    text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (text == NULL) {
        log_error("cannot encode the peer set");
        return -1;
    }
    if (file_write_atomic(path, text, strlen(text), 0600) != 0) {
        log_error("cannot write %s: %s", path, strerror(errno));
    } else {
        rc = 0;
    }
    free(text);
    return rc;
}


json_t *
node_peers_load(const char *dir, int64_t node_id)
{
    char          path[PATH_MAX];
    json_t       *doc, *id, *answer = NULL;
    json_error_t  err;

    if (dir_file(dir, NODE_PEERS_FILE, path) != 0) {
        return NULL;
    }
    doc = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
    if (doc == NULL) {
        if (access(path, F_OK) == 0) {
            log_warn("%s is malformed (%s); waiting for the server's peers",
                     path, err.text);
        }
        return NULL;
    }
    id = json_object_get(doc, "node_id");
    if (json_is_integer(id) && json_integer_value(id) == node_id) {
        answer = json_incref(json_object_get(doc, "answer"));
    } else {
        log_warn("%s is of another join; waiting for the server's peers", path);
    }
    json_decref(doc);
    return answer;
}
