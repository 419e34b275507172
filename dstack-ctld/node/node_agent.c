/* Who this CVM is: app_id and instance_id from the dstack guest agent. */

#include <string.h>

#include <jansson.h>

#include "lib/http_client.h"
#include "lib/log.h"
#include "node/node.h"

#define AGENT_TIMEOUT_S  10


/* a string member that passes ident_valid(), lowercased for app ids */
static int
member_ident(json_t *doc, const char *key, char *out, size_t outsz)
{
    json_t      *v = json_object_get(doc, key);
    const char  *s = json_string_value(v);

    if (s == NULL || strlen(s) != json_string_length(v) || strlen(s) >= outsz
        || !ident_valid(s, outsz - 1))
    {
        return -1;
    }
    memcpy(out, s, strlen(s) + 1);
    return 0;
}


int
agent_info(const char *socket_path, char app_id[APP_ID_HEX_MAX + 1],
           char instance_id[INSTANCE_ID_MAX + 1])
{
    struct addr_spec      to = { .is_unix = true };
    struct http_response  resp;
    char                  err[512];
    json_t               *doc;
    int                   rc = -1;

    if (strlen(socket_path) >= sizeof(to.path)) {
        log_error("agent socket path too long");
        return -1;
    }
    memcpy(to.path, socket_path, strlen(socket_path) + 1);

    if (http_client_request(&to, "GET", "/Info", NULL, NULL, NULL,
                            AGENT_TIMEOUT_S, &resp, err, sizeof(err)) != 0)
    {
        log_warn("guest agent: %s", err);
        return -1;
    }
    if (resp.status != 200) {
        log_warn("guest agent: GET /Info answered %ld", resp.status);
        http_response_free(&resp);
        return -1;
    }
    doc = json_loadb(resp.body, resp.len, JSON_REJECT_DUPLICATES, NULL);
    if (member_ident(doc, "app_id", app_id, APP_ID_HEX_MAX + 1) != 0
        || !app_id_normalize(app_id)
        || member_ident(doc, "instance_id", instance_id, INSTANCE_ID_MAX + 1) != 0)
    {
        log_error("guest agent: /Info has no valid app_id and instance_id");
    } else {
        rc = 0;
    }
    json_decref(doc);
    http_response_free(&resp);
    return rc;
}
