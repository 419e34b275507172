/*
 * What the API reads from a request, checked apart from libmicrohttpd:
 * the query arguments of register, nodes/update and the peer poll, and
 * the join body.  The handlers call these with what libmicrohttpd
 * parsed; tests/fuzz/ calls them with anything at all.
 *
 * Each check fills its op (or its result) and gives NULL, or the message
 * of the 400 to answer.
 */

#ifndef CTLD_API_INPUT_H
#define CTLD_API_INPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "server/legacy.h"
#include "server/registry.h"

#define API_MSG_MAX  64

/* a query argument as libmicrohttpd gives it: value NULL for "?name" */
struct api_arg {
    bool         present;
    const char  *value;
    size_t       len;
};

/*
 * 1 present (value "" when given without one), 0 absent, -1 malformed
 * (an embedded or encoded NUL, longer than max).
 */
int   api_arg_value(const struct api_arg *a, size_t max, const char **value);

/* the body as a JSON object (duplicate members refused), or NULL and *why */
json_t *api_json_object(const char *body, size_t len, const char **why);

/* /api/register: instance_id, node_name; op's instance and name */
const char *api_register_args(const struct api_arg *instance_id,
                              const struct api_arg *node_name,
                              struct register_op *op);

/* /api/nodes/update: uuid, node_type, tailscale_ip, hostname */
const char *api_update_args(const struct api_arg *uuid,
                            const struct api_arg *node_type,
                            const struct api_arg *tailscale_ip,
                            const struct api_arg *hostname,
                            struct legacy_update_op *op);

/* /api/v1/peers: since, wait (not capped here), epoch */
struct peers_args {
    uint64_t  since;
    uint64_t  wait;
    char      epoch[EPOCH_LEN + 1];
    bool      has_epoch;
};

const char *api_peers_args(const struct api_arg *since, const struct api_arg *wait,
                           const struct api_arg *epoch, struct peers_args *out);

/*
 * /api/v1/join: the body's members into op (key hash, public key,
 * endpoint, name, node token hash), *with_peers and *snapshot (both true
 * when absent).  0, or the status to answer with msg:
 * 400, or 401 for a key of the wrong shape (it cannot exist).
 */
unsigned api_join_body(json_t *body, struct join_op *op, bool *with_peers,
                       bool *snapshot, char msg[API_MSG_MAX]);

#endif
