/* Server settings: defaults, config file, environment, flags, checks. */

#include <arpa/inet.h>
#include <netdb.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/validate.h"
#include "server/ipam.h"
#include "server/server.h"

#define O(field)  offsetof(struct server_config, field)

const struct opt  server_opts[] = {
    { "listen", OPT_STRING, O(listen), 0, "ADDR",
      "127.0.0.1:8000 (default), [::1]:8000 or unix:/path/to.sock",
      "127.0.0.1:8000" },
    { "data-dir", OPT_STRING, O(data_dir), 0, "DIR",
      "database, keys and admin token (default /var/lib/dstack-ctld)",
      "/var/lib/dstack-ctld" },
    { "allowed-apps", OPT_STRING, O(allowed_apps), 0, "LIST",
      "comma-separated app ids allowed to register, or \"any\"\n"
      "(default: the server-app-id alone; environment ALLOWED_APPS)",
      NULL },
    { "reserve-name", OPT_LIST, O(reserve_name), 0, "NAME=APP_ID",
      "node name only that app may take (repeatable)",
      NULL },
    { "key-lifetime", OPT_DURATION, O(key_lifetime), 315360000, "DURATION",
      "validity of a pre-auth key (default 1h)",
      "1h" },
    { "pool", OPT_STRING, O(pool), 0, "CIDR",
      "VPN address pool, /8 to /30 (default 100.128.0.0/10)",
      "100.128.0.0/10" },
    { "server-address", OPT_STRING, O(server_address), 0, "IP",
      "the server's own VPN address (default: first host of the pool)",
      NULL },
    { "server-name", OPT_STRING, O(server_name), 0, "LABEL",
      "the server's name in the VPC (default vpc-server)",
      "vpc-server" },
    { "wg-endpoint", OPT_STRING, O(wg_endpoint), 0, "HOST:PORT",
      "where nodes reach the server's WireGuard (default: none)",
      NULL },
    { "wg-port", OPT_UINT, O(wg_port), 65535, "PORT",
      "the hub's WireGuard UDP port on this CVM, where the relay delivers\n"
      "nodes' datagrams on the loopback (default 51820)",
      "51820" },
    { "server-url", OPT_STRING, O(server_url), 0, "URL",
      "server_url handed out by register (environment VPC_SERVER_URL;\n"
      "default https://<server-app-id>-443s.<gateway-domain>)",
      NULL },
    { "server-app-id", OPT_STRING, O(server_app_id), 0, "ID",
      "the server's own app id: the default allowed-apps and server_url",
      NULL },
    { "gateway-domain", OPT_STRING, O(gateway_domain), 0, "DOMAIN",
      "the dstack gateway domain, for the default server_url",
      NULL },
    { "allow-remote", OPT_BOOL, O(allow_remote), 0, NULL,
      "allow a non-loopback listen address (only behind nginx mesh_auth)",
      NULL },
    { "max-wait", OPT_DURATION, O(max_wait), 3600, "DURATION",
      "upper bound of a peer long poll's wait (default 300s)",
      "300s" },
    { "max-polls-per-token", OPT_UINT, O(max_polls_per_token), 64, "N",
      "parked long polls per token; a new one ends the oldest (default 4)",
      "4" },
    { "max-keys-per-app", OPT_UINT, O(max_keys_per_app), 1000000, "N",
      "unused, unexpired pre-auth keys per app (default 1024)",
      "1024" },
    { "max-nodes-per-app", OPT_UINT, O(max_nodes_per_app), 4194304, "N",
      "VPC nodes per app (default 16384)",
      "16384" },
    { "max-records-per-app", OPT_UINT, O(max_records_per_app), 1000000, "N",
      "original-API node records per app (default 16384)",
      "16384" },
    { "record-ttl", OPT_DURATION, O(record_ttl), 315360000, "DURATION",
      "an original-API record not updated for this long goes, unless it\n"
      "is a live node's (default 7d)",
      "7d" },
    { "tombstone-ttl", OPT_DURATION, O(tombstone_ttl), 315360000, "DURATION",
      "how long removals stay diffable (default 7d)",
      "7d" },
    { "threads", OPT_UINT, O(threads), 64, "N",
      "HTTP threads, each with its own epoll loop (default 2)",
      "2" },
    { "max-connections", OPT_UINT, O(max_connections), 1000000, "N",
      "concurrent HTTP connections, long polls included (default 16384)",
      "16384" },
    { "max-body", OPT_UINT, O(max_body), 16777216, "BYTES",
      "largest request body accepted (default 65536)",
      "65536" },
    { "socket-mode", OPT_OCTAL, O(socket_mode), 0777, "MODE",
      "permissions of a unix listen socket, octal (default 0660)",
      "0660" },
    { "log-level", OPT_STRING, O(log_level), 0, "LEVEL",
      "error, warn, info (default) or debug",
      "info" },
    { "log-format", OPT_STRING, O(log_format), 0, "FORMAT",
      "text (default) or json: one JSON object per line\n"
      "(environment VPC_LOG_FORMAT)",
      "text" },
    { NULL, 0, 0, 0, NULL, NULL, NULL }
};


/* the original server's environment */
static const struct opt_env  server_env[] = {
    { "ALLOWED_APPS",   "allowed-apps" },
    { "VPC_SERVER_URL", "server-url" },
    { "VPC_LOG_FORMAT", "log-format" },
};


int
server_config_load(struct server_config *cfg, int argc, char **argv,
                   char **positional, int max_pos, int *npos)
{
    memset(cfg, 0, sizeof(*cfg));
    return settings_load(server_opts, cfg, "server", server_env,
                         sizeof(server_env) / sizeof(server_env[0]),
                         argc, argv, positional, max_pos, npos);
}


static int
parse_allowed_apps(struct server *srv)
{
    const char  *given = srv->cfg.allowed_apps;
    char        *list, *save = NULL, *tok;

    /* closed by default: the server's own app, whose CVMs are the VPC */
    if (given == NULL) {
        given = srv->cfg.server_app_id;
        if (given == NULL) {
            fprintf(stderr, "allowed-apps: neither --allowed-apps nor"
                    " --server-app-id is set, and the server admits no app"
                    " by default; give --server-app-id (this server's app id:"
                    " its own app may join) or --allowed-apps ID,ID (or"
                    " \"any\" for every app the KMS certifies)\n");
            return -1;
        }
        log_info("allowed-apps not set: only the server's own app %s may"
                 " join", given);
    }
    if (strcmp(given, "any") == 0) {
        log_warn("allowed-apps is \"any\": every app whose certificate"
                 " chains to the KMS can join the VPC, learn every member"
                 " and reach every node through the hub");
        srv->allow_any_app = true;
        return 0;
    }
    list = strdup(given);
    if (list == NULL) {
        return -1;
    }
    for (tok = strtok_r(list, ", \t", &save); tok != NULL;
         tok = strtok_r(NULL, ", \t", &save))
    {
        char **grown;

        if (!app_id_normalize(tok)) {
            fprintf(stderr, "allowed-apps: \"%s\" is not an app id\n", tok);
            free(list);
            return -1;
        }
        grown = realloc(srv->allowed_apps, (srv->nallowed_apps + 1) * sizeof(char *));
        if (grown == NULL || (grown[srv->nallowed_apps] = strdup(tok)) == NULL) {
            srv->allowed_apps = grown ? grown : srv->allowed_apps;
            free(list);
            return -1;
        }
        srv->allowed_apps = grown;
        srv->nallowed_apps++;
    }
    free(list);
    /* an empty list admits nobody, as in the original; say so */
    if (srv->nallowed_apps == 0) {
        log_warn("allowed-apps is empty: every register call will be refused");
    }
    return 0;
}


int
server_config_apply(struct server *srv)
{
    struct server_config  *cfg = &srv->cfg;
    struct registry       *reg = &srv->reg;

    if (log_setup("server", cfg->log_level, cfg->log_format) != 0) {
        return -1;
    }

    if (addr_spec_parse(cfg->listen, &srv->listen) != 0) {
        fprintf(stderr, "listen: \"%s\" is not HOST:PORT, [V6]:PORT or unix:/PATH\n",
                cfg->listen);
        return -1;
    }
    if (cfg->server_app_id != NULL && !app_id_normalize(cfg->server_app_id)) {
        fprintf(stderr, "server-app-id: \"%s\" is not an app id\n",
                cfg->server_app_id);
        return -1;
    }
    if (parse_allowed_apps(srv) != 0
        || names_parse(cfg->reserve_name, &reg->reserved) != 0)
    {
        return -1;
    }
    /* the server trusts x-dstack-app-id: its socket is nginx's alone */
    if (cfg->socket_mode & 0007) {
        fprintf(stderr, "socket-mode: %04llo lets every local user claim any"
                " app id; use 0660 (the socket's group: nginx's) or 0600\n",
                (unsigned long long) cfg->socket_mode);
        return -1;
    }

    if (ipam_parse_cidr(cfg->pool, &srv->pool_base, &srv->pool_prefix) != 0) {
        fprintf(stderr, "pool: \"%s\" is not an IPv4 prefix /%d../%d with the"
                " host bits clear\n", cfg->pool, IPAM_MIN_PREFIX, IPAM_MAX_PREFIX);
        return -1;
    }
    srv->hub_addr = srv->pool_base + 1;
    if (cfg->server_address != NULL) {
        uint32_t size = (uint32_t) 1 << (32 - srv->pool_prefix);
        if (ipam_parse_addr(cfg->server_address, &srv->hub_addr) != 0
            || srv->hub_addr <= srv->pool_base
            || srv->hub_addr >= srv->pool_base + size - 1)
        {
            fprintf(stderr, "server-address: \"%s\" is not a host address of %s\n",
                    cfg->server_address, cfg->pool);
            return -1;
        }
    }

    snprintf(reg->hub_name, sizeof(reg->hub_name), "%s", cfg->server_name);
    if (strlen(cfg->server_name) >= sizeof(reg->hub_name)
        || !dns_label_normalize(reg->hub_name))
    {
        fprintf(stderr, "server-name: \"%s\" is not a DNS label\n", cfg->server_name);
        return -1;
    }
    if (cfg->wg_endpoint != NULL) {
        if (!endpoint_valid(cfg->wg_endpoint)) {
            fprintf(stderr, "wg-endpoint: \"%s\" is not HOST:PORT\n", cfg->wg_endpoint);
            return -1;
        }
        snprintf(reg->hub_endpoint, sizeof(reg->hub_endpoint), "%s", cfg->wg_endpoint);
    }

    if (cfg->server_url != NULL) {
        srv->server_url = strdup(cfg->server_url);
    } else if (cfg->server_app_id != NULL && cfg->gateway_domain != NULL) {
        /* the original's rule, on the mesh port: <app_id>-443s.<domain> */
        size_t n = strlen(cfg->server_app_id) + strlen(cfg->gateway_domain) + 16;
        srv->server_url = malloc(n);
        if (srv->server_url != NULL) {
            snprintf(srv->server_url, n, "https://%s-443s.%s",
                     cfg->server_app_id, cfg->gateway_domain);
        }
    } else {
        log_warn("no server-url, nor server-app-id and gateway-domain:"
                 " register answers with an empty server_url");
        srv->server_url = strdup("");
    }
    if (srv->server_url == NULL) {
        return -1;
    }

    if (cfg->threads == 0 || cfg->max_connections < 16 || cfg->max_body < 1024) {
        fprintf(stderr, "threads must be at least 1, max-connections 16,"
                " max-body 1024\n");
        return -1;
    }
    if (cfg->max_polls_per_token == 0 || cfg->record_ttl == 0) {
        fprintf(stderr, "max-polls-per-token and record-ttl must be at least 1\n");
        return -1;
    }
    reg->quota_keys = cfg->max_keys_per_app;
    reg->quota_nodes = cfg->max_nodes_per_app;
    reg->record_ttl = cfg->record_ttl;
    reg->tombstone_ttl = cfg->tombstone_ttl;
    reg->key_retention = 3600;
    return 0;
}


void
server_config_free(struct server *srv)
{
    for (size_t i = 0; i < srv->nallowed_apps; i++) {
        free(srv->allowed_apps[i]);
    }
    free(srv->allowed_apps);
    names_free(&srv->reg.reserved);
    free(srv->server_url);
    opts_free(server_opts, &srv->cfg);
}


void
server_usage(FILE *out)
{
    fprintf(out,
        "usage: dstack-ctld server [options]\n"
        "\n"
        "Runs the VPC server: node registry, one-time join keys, address pool,\n"
        "peer updates, and the original dstack-vpc API.  It trusts the\n"
        "x-dstack-app-id header, so it must sit behind nginx with mesh_auth.\n"
        "\n"
        "Settings come from the defaults, then the config file (--config, or\n"
        "the environment's DSTACK_CTLD_CONFIG; section [server]), then the\n"
        "environment (ALLOWED_APPS, VPC_SERVER_URL), then these flags:\n"
        "\n");
    opts_usage(out, server_opts);
}
