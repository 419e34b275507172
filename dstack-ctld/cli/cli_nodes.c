/*
 * Admin CLI: `dstack-ctld nodes list|remove`.  It talks to the running
 * server over its listen address with the admin token from the data
 * directory, so the server makes the change itself: versions, tombstones
 * and waking long pollers all happen as for any API call, and nothing
 * writes the database behind the server's back.
 */

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "cli/cli.h"
#include "lib/log.h"
#include "lib/admin_token.h"
#include "lib/http_client.h"
#include "lib/validate.h"
#include "server/server.h"


static void
nodes_usage(FILE *out)
{
    fprintf(out,
        "usage: dstack-ctld nodes list [--json] [options]\n"
        "       dstack-ctld nodes remove <id|name> [options]\n"
        "\n"
        "Asks the running server (at its --listen address) with the admin\n"
        "token in <data-dir>/" ADMIN_TOKEN_FILE ".  It reads the same settings\n"
        "as the server (--config, section [server]); these matter:\n"
        "  --config FILE, --listen ADDR, --data-dir DIR\n");
}


static const char *
json_str(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));

    return s ? s : "-";
}


static int
print_list(const char *body, bool as_json)
{
    json_t   *doc, *nodes, *n;
    size_t    i;

    if (as_json) {
        printf("%s\n", body);
        return 0;
    }
    doc = json_loads(body, 0, NULL);
    nodes = json_object_get(doc, "nodes");
    if (!json_is_array(nodes)) {
        fprintf(stderr, "unexpected answer from the server\n");
        json_decref(doc);
        return 1;
    }
    printf("%-6s %-24s %-16s %-22s %s\n", "ID", "NAME", "ADDRESS", "ENDPOINT",
           "APP_ID/INSTANCE_ID");
    json_array_foreach(nodes, i, n) {
        printf("%-6lld %-24s %-16s %-22s %s/%s\n",
               (long long) json_integer_value(json_object_get(n, "id")),
               json_str(n, "name"), json_str(n, "address"), json_str(n, "endpoint"),
               json_str(n, "app_id"), json_str(n, "instance_id"));
    }
    printf("%zu nodes, peer version %lld\n", json_array_size(nodes),
           (long long) json_integer_value(json_object_get(doc, "version")));
    json_decref(doc);
    return 0;
}


int
cli_nodes(int argc, char **argv)
{
    struct server         *srv;
    struct http_response   resp;
    char                  *pos[2], token[TOKEN_HEX_LEN + 1], path[128], err[512];
    char                  *errtext;
    int                    npos, rc = 2, keep = 0;
    bool                   as_json = false;

    /* --json is this command's own; the rest are the server's settings */
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            as_json = true;
        } else {
            argv[keep++] = argv[i];
        }
    }
    argc = keep;

    srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        return 1;
    }
    npos = 0;
    rc = server_config_load(&srv->cfg, argc, argv, pos, 2, &npos);
    if (rc == 1) {
        nodes_usage(stdout);
        rc = 0;
        goto done;
    }
    rc = 2;
    if (log_setup("cli", srv->cfg.log_level, srv->cfg.log_format) != 0) {
        goto done;
    }
    if (npos == 0
        || !((strcmp(pos[0], "list") == 0 && npos == 1)
             || (strcmp(pos[0], "remove") == 0 && npos == 2)))
    {
        nodes_usage(stderr);
        goto done;
    }
    if (addr_spec_parse(srv->cfg.listen, &srv->listen) != 0) {
        fprintf(stderr, "listen: \"%s\" is not HOST:PORT or unix:/PATH\n",
                srv->cfg.listen);
        goto done;
    }
    if (admin_token_read(srv->cfg.data_dir, token) != 0) {
        fprintf(stderr, "cannot read the admin token %s/" ADMIN_TOKEN_FILE ": %s\n",
                srv->cfg.data_dir, errno == EINVAL ? "malformed" : strerror(errno));
        rc = 1;
        goto done;
    }

    if (strcmp(pos[0], "list") == 0) {
        snprintf(path, sizeof(path), PATH_NODES);
        rc = http_client_request(&srv->listen, "GET", path, token, NULL, NULL,
                                 30, &resp, err, sizeof(err));
    } else {
        char sel[DNS_LABEL_MAX + 1];

        /* ids and names are DNS-label characters: nothing to escape */
        snprintf(sel, sizeof(sel), "%s", pos[1]);
        if (strlen(pos[1]) > DNS_LABEL_MAX || !dns_label_normalize(sel)) {
            fprintf(stderr, "\"%s\" is neither a node id nor a node name\n", pos[1]);
            goto done;
        }
        snprintf(path, sizeof(path), PATH_NODES "/%s", sel);
        rc = http_client_request(&srv->listen, "DELETE", path, token, NULL,
                                 NULL, 30, &resp, err, sizeof(err));
    }
    OPENSSL_cleanse(token, sizeof(token));
    if (rc != 0) {
        fprintf(stderr, "cannot reach the server: %s\n", err);
        rc = 1;
        goto done;
    }

    if (resp.status != 200) {
        json_t *doc = json_loads(resp.body ? resp.body : "", 0, NULL);
        errtext = (char *) json_string_value(json_object_get(doc, "error"));
        fprintf(stderr, "server answered %ld: %s\n", resp.status,
                errtext ? errtext : "(no error text)");
        json_decref(doc);
        rc = 1;
    } else if (strcmp(pos[0], "list") == 0) {
        rc = print_list(resp.body, as_json);
    } else {
        json_t *doc = json_loads(resp.body, 0, NULL);
        json_t *removed = json_object_get(doc, "removed");
        if (as_json) {
            printf("%s\n", resp.body);
        } else {
            printf("removed node %lld (%s, %s); peer version %lld\n",
                   (long long) json_integer_value(json_object_get(removed, "id")),
                   json_str(removed, "name"), json_str(removed, "address"),
                   (long long) json_integer_value(json_object_get(doc, "version")));
        }
        json_decref(doc);
        rc = 0;
    }
    http_response_free(&resp);

done:
    server_config_free(srv);
    free(srv);
    return rc;
}
