/* Node settings: defaults, config file, environment, flags, checks. */

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>

#include "lib/log.h"
#include "node/node.h"

#define O(field)  offsetof(struct node_config, field)

#define MESH_URL_DEFAULT    "http://127.0.0.1:80"
#define SERVER_URL_DEFAULT  "http://127.0.0.1:8000"     /* server --listen */
#define DNS_LISTEN_DEFAULT  "127.0.0.153:53"

const struct opt  node_opts[] = {
    { "server-url", OPT_STRING, O(server_url), 0, "URL",
      "http://HOST:PORT or unix:/PATH: the mesh entry\n"
      "point (default " MESH_URL_DEFAULT "); with\n"
      "--server-app-id none or --hub the server itself\n"
      "(default " SERVER_URL_DEFAULT "); environment\n"
      "DSTACK_MESH_URL",
      NULL },
    { "server-app-id", OPT_STRING, O(server_app_id), 0, "ID",
      "the VPC server's app id (required; environment\n"
      "VPC_SERVER_APP_ID); \"self\": this CVM's own;\n"
      "\"none\": no mesh, call --server-url directly and\n"
      "claim our own app id (tests, the server's host)",
      NULL },
    { "server-port", OPT_UINT, O(server_port), 65535, "PORT",
      "x-dstack-target-port of the server (default 443;\n"
      "environment VPC_SERVER_PORT)",
      "443" },
    { "agent-socket", OPT_STRING, O(agent_socket), 0, "PATH",
      "the guest agent (default /var/run/dstack.sock)",
      "/var/run/dstack.sock" },
    { "name", OPT_STRING, O(name), 0, "LABEL",
      "node name, <name>.dstack.internal (default: the\n"
      "server's node-<instance_id>; environment\n"
      "VPC_NODE_NAME or NODE_NAME)",
      NULL },
    { "node-type", OPT_STRING, O(node_type), 0, "TYPE",
      "node_type reported for discover (environment\n"
      "VPC_NODE_TYPE)",
      NULL },
    { "endpoint", OPT_STRING, O(endpoint), 0, "HOST:PORT",
      "where other nodes reach our WireGuard port\n"
      "(default: none, reached through the hub)",
      NULL },
    { "state-dir", OPT_STRING, O(state_dir), 0, "DIR",
      "key, token and address kept across restarts\n"
      "(default /var/lib/dstack-ctld)",
      "/var/lib/dstack-ctld" },
    { "interface", OPT_STRING, O(interface), 0, "NAME",
      "the WireGuard interface (default wg-dstack)",
      "wg-dstack" },
    { "backend", OPT_STRING, O(backend), 0, "B",
      "auto (default: the kernel's when it has one),\n"
      "kernel, or uapi (wireguard-go, started if needed)",
      "auto" },
    { "listen-port", OPT_UINT, O(listen_port), 65535, "PORT",
      "WireGuard UDP port (default 51820)",
      "51820" },
    { "mtu", OPT_UINT, O(mtu), 65535, "BYTES",
      "interface MTU (default 1420)",
      NULL },
    { "keepalive", OPT_UINT, O(keepalive), 65535, "SECONDS",
      "persistent keepalive toward the hub when we have\n"
      "no endpoint (default 25, 0: off)",
      "25" },
    { "transport", OPT_STRING, O(transport), 0, "T",
      "the path to the hub: auto (default: UDP when a\n"
      "handshake completes, else the relay), udp, or\n"
      "relay (through the mesh; environment\n"
      "VPC_WG_TRANSPORT)",
      "auto" },
    { "hosts-file", OPT_STRING, O(hosts_file), 0, "PATH",
      "hosts file with our marked block (default\n"
      "/etc/hosts; \"none\": leave it alone)",
      "/etc/hosts" },
    { "names", OPT_STRING, O(names), 0, "MODE",
      "where <name>." DNS_DOMAIN " comes from: dns\n"
      "(default: the node's DNS server, resolv.conf\n"
      "pointed at it), hosts (the hosts file's block) or\n"
      "both (environment VPC_NAMES)",
      "dns" },
    { "dns-listen", OPT_STRING, O(dns_listen), 0, "ADDR[:PORT]",
      "the DNS server's loopback IPv4 address (default\n"
      DNS_LISTEN_DEFAULT "; resolv.conf needs port 53)",
      DNS_LISTEN_DEFAULT },
    { "resolv-conf", OPT_STRING, O(resolv_conf), 0, "PATH",
      "the resolver file pointed at the DNS server and\n"
      "restored on exit (default /etc/resolv.conf;\n"
      "\"none\": leave it alone, forward to its resolvers)",
      "/etc/resolv.conf" },
    { "poll-wait", OPT_DURATION, O(poll_wait), 3600, "DURATION",
      "long-poll wait (default 50s, below nginx's)",
      "50s" },
    { "retry-max", OPT_DURATION, O(retry_max), 3600, "DURATION",
      "cap of the retry backoff (default 60s)",
      "60s" },
    { "hub", OPT_BOOL, O(hub), 0, NULL,
      "run the hub on the server's CVM, not a node",
      NULL },
    { "data-dir", OPT_STRING, O(data_dir), 0, "DIR",
      "hub: the server's data directory, for wg.key and\n"
      "admin.token (default /var/lib/dstack-ctld)",
      "/var/lib/dstack-ctld" },
    { "log-level", OPT_STRING, O(log_level), 0, "LEVEL",
      "error, warn, info (default) or debug",
      "info" },
    { "log-format", OPT_STRING, O(log_format), 0, "FORMAT",
      "text (default) or json: one JSON object per line\n"
      "(environment VPC_LOG_FORMAT)",
      "text" },
    { NULL, 0, 0, 0, NULL, NULL, NULL }
};

/* the original node's environment, applied between the file and flags */
static const struct opt_env  node_env[] = {
    { "DSTACK_MESH_URL",   "server-url" },
    { "VPC_SERVER_APP_ID", "server-app-id" },
    { "VPC_SERVER_PORT",   "server-port" },
    { "NODE_NAME",         "name" },
    { "VPC_NODE_NAME",     "name" },        /* wins over NODE_NAME */
    { "VPC_NODE_TYPE",     "node-type" },
    { "VPC_NAMES",         "names" },
    { "VPC_LOG_FORMAT",    "log-format" },
    { "VPC_WG_TRANSPORT",  "transport" },
};


int
node_config_load(struct node_config *cfg, int argc, char **argv)
{
    char  *extra[1];
    int    npos, rc;

    memset(cfg, 0, sizeof(*cfg));
    cfg->mtu = NETDEV_MTU_DEFAULT;
    rc = settings_load(node_opts, cfg, "node", node_env,
                       sizeof(node_env) / sizeof(node_env[0]),
                       argc, argv, extra, 1, &npos);
    if (rc == 0 && npos != 0) {
        fprintf(stderr, "node: unexpected argument \"%s\"\n", extra[0]);
        return -1;
    }
    return rc;
}


/* "http://HOST[:PORT][/]" or "unix:/PATH" */
static int
parse_server_url(const char *url, struct addr_spec *out)
{
    char    buf[512];
    size_t  len;

    if (strncmp(url, "unix:", 5) == 0) {
        return addr_spec_parse(url, out);
    }
    if (strncmp(url, "http://", 7) != 0) {
        return -1;
    }
    snprintf(buf, sizeof(buf), "%s", url + 7);
    len = strlen(buf);
    if (len > 0 && buf[len - 1] == '/') {
        buf[--len] = '\0';
    }
    if (len == 0 || len + 4 >= sizeof(buf) || strchr(buf, '/') != NULL
        || strchr(buf, '@') != NULL)
    {
        return -1;
    }
    /* no port: 80, unless the host is a bare [v6] that ends in ']' */
    if (strrchr(buf, ':') == NULL || buf[len - 1] == ']') {
        strcat(buf, ":80");
    }
    return addr_spec_parse(buf, out);
}


/* --names and the DNS server's address: "A.B.C.D[:PORT]" */
static int
parse_names(struct vpc_node *n)
{
    struct node_config  *cfg = &n->cfg;
    char                 host[INET_ADDRSTRLEN + 8], *colon;
    uint64_t             port = 53;

    if (strcmp(cfg->names, "dns") == 0) {
        n->names_mode = NAMES_DNS;
    } else if (strcmp(cfg->names, "hosts") == 0) {
        n->names_mode = NAMES_HOSTS;
    } else if (strcmp(cfg->names, "both") == 0) {
        n->names_mode = NAMES_BOTH;
    } else {
        fprintf(stderr, "names: \"%s\" is not dns, hosts or both\n", cfg->names);
        return -1;
    }
    snprintf(host, sizeof(host), "%s", cfg->dns_listen);
    colon = strchr(host, ':');
    if (colon != NULL) {
        *colon = '\0';
        if (!parse_u64(colon + 1, 65535, &port)) {
            port = 0;
        }
    }
    memset(&n->dns_addr, 0, sizeof(n->dns_addr));
    n->dns_addr.sin_family = AF_INET;
    n->dns_addr.sin_port = htons((uint16_t) port);
    if (strlen(cfg->dns_listen) >= sizeof(host) || port == 0
        || inet_pton(AF_INET, host, &n->dns_addr.sin_addr) != 1)
    {
        fprintf(stderr, "dns-listen: \"%s\" is not A.B.C.D[:PORT]\n",
                cfg->dns_listen);
        return -1;
    }
    if ((ntohl(n->dns_addr.sin_addr.s_addr) >> 24) != 127) {
        /* anywhere else it would be an open resolver for the network */
        fprintf(stderr, "dns-listen: \"%s\" is not a loopback address"
                " (127.0.0.0/8)\n", cfg->dns_listen);
        return -1;
    }
    if ((n->names_mode & NAMES_DNS) && port != 53
        && strcmp(cfg->resolv_conf, "none") != 0)
    {
        fprintf(stderr, "dns-listen: resolv.conf can only name port 53"
                " (or give --resolv-conf none)\n");
        return -1;
    }
    return 0;
}


static int
check_node_settings(struct vpc_node *n)
{
    struct node_config  *cfg = &n->cfg;
    char                 label[DNS_LABEL_MAX + 1];

    if (cfg->server_app_id == NULL) {
        fprintf(stderr, "server-app-id is required: the VPC server's app id,"
                " \"self\" or \"none\"\n");
        return -1;
    }
    if (strcmp(cfg->server_app_id, "none") == 0) {
        n->route = ROUTE_DIRECT;
    } else if (strcmp(cfg->server_app_id, "self") != 0) {
        snprintf(n->target_app, sizeof(n->target_app), "%s", cfg->server_app_id);
        if (strlen(cfg->server_app_id) >= sizeof(n->target_app)
            || !app_id_normalize(n->target_app))
        {
            fprintf(stderr, "server-app-id: \"%s\" is not an app id\n",
                    cfg->server_app_id);
            return -1;
        }
    }
    if (cfg->name != NULL) {
        snprintf(label, sizeof(label), "%s", cfg->name);
        if (strlen(cfg->name) > DNS_LABEL_MAX || !dns_label_normalize(label)) {
            fprintf(stderr, "name: \"%s\" is not a DNS label\n", cfg->name);
            return -1;
        }
        free(cfg->name);
        cfg->name = strdup(label);
        if (cfg->name == NULL) {
            return -1;
        }
    }
    /* instance ids and types are [A-Za-z0-9._-]: nothing to escape in a query */
    if (cfg->node_type != NULL && !ident_valid(cfg->node_type, 64)) {
        fprintf(stderr, "node-type: \"%s\" is not [A-Za-z0-9._-]{1,64}\n",
                cfg->node_type);
        return -1;
    }
    if (cfg->endpoint != NULL && !endpoint_valid(cfg->endpoint)) {
        fprintf(stderr, "endpoint: \"%s\" is not HOST:PORT\n", cfg->endpoint);
        return -1;
    }
    if (strcmp(cfg->transport, "auto") == 0) {
        n->transport_mode = TRANSPORT_AUTO;
    } else if (strcmp(cfg->transport, "udp") == 0) {
        n->transport_mode = TRANSPORT_UDP;
    } else if (strcmp(cfg->transport, "relay") == 0) {
        n->transport_mode = TRANSPORT_RELAY;
        n->hub_transport = NODE_TRANSPORT_RELAY;
        if (cfg->endpoint != NULL) {
            /* nothing reaches us over UDP: a pair is direct on both
             * sides or on neither */
            log_warn("endpoint %s is not advertised: with --transport relay"
                     " every node reaches this one through the hub", cfg->endpoint);
            free(cfg->endpoint);
            cfg->endpoint = NULL;
        }
    } else {
        fprintf(stderr, "transport: \"%s\" is not auto, udp or relay\n",
                cfg->transport);
        return -1;
    }
    n->hub_transport_since = time(NULL);
    n->self.has_endpoint = cfg->endpoint != NULL;
    n->self.keepalive = n->self.has_endpoint ? 0 : (uint16_t) cfg->keepalive;
    return 0;
}


int
node_config_apply(struct vpc_node *n)
{
    struct node_config  *cfg = &n->cfg;

    if (log_setup(cfg->hub ? "hub" : "node", cfg->log_level,
                  cfg->log_format) != 0)
    {
        return -1;
    }

    if (strcmp(cfg->backend, "auto") == 0) {
        n->backend = WG_BACKEND_AUTO;
    } else if (strcmp(cfg->backend, "kernel") == 0) {
        n->backend = WG_BACKEND_KERNEL;
    } else if (strcmp(cfg->backend, "uapi") == 0) {
        n->backend = WG_BACKEND_UAPI;
    } else {
        fprintf(stderr, "backend: \"%s\" is not auto, kernel or uapi\n",
                cfg->backend);
        return -1;
    }
    if (cfg->listen_port == 0) {
        fprintf(stderr, "listen-port must be 1..65535\n");
        return -1;
    }
    if (cfg->server_port == 0) {
        fprintf(stderr, "server-port must be 1..65535\n");
        return -1;
    }
    if (cfg->mtu < 1280) {
        fprintf(stderr, "mtu must be at least 1280\n");
        return -1;
    }
    if (cfg->poll_wait == 0 || cfg->retry_max == 0) {
        fprintf(stderr, "poll-wait and retry-max must be at least 1s\n");
        return -1;
    }
    if (parse_names(n) != 0) {
        return -1;
    }
    if (cfg->server_url == NULL) {
        cfg->server_url = strdup(cfg->hub ? SERVER_URL_DEFAULT
                                          : MESH_URL_DEFAULT);
        if (parse_names(n) != 0) {
        return -1;
    }
    if (cfg->server_url == NULL) {
            return -1;
        }
    }
    if (parse_server_url(cfg->server_url, &n->server) != 0) {
        fprintf(stderr, "server-url: \"%s\" is not http://HOST:PORT or"
                " unix:/PATH\n", cfg->server_url);
        return -1;
    }

    if (cfg->hub) {
        /* the hub is the server's own CVM: no mesh, no identity of its
         * own, no join; its endpoint is the server's --wg-endpoint */
        n->route = ROUTE_ADMIN;
        n->self.hub = true;
        if (cfg->endpoint != NULL) {
            fprintf(stderr, "endpoint: the hub's endpoint is the server's"
                    " --wg-endpoint\n");
            return -1;
        }
        return 0;
    }
    n->route = ROUTE_MESH;
    return check_node_settings(n);
}


void
node_config_free(struct vpc_node *n)
{
    opts_free(node_opts, &n->cfg);
}


void
node_usage(FILE *out)
{
    fprintf(out,
        "usage: dstack-ctld node --server-app-id ID|self|none [options]\n"
        "       dstack-ctld node --hub [options]\n"
        "\n"
        "Joins this CVM to the VPC and keeps its WireGuard interface, peers and\n"
        "hosts block in step with the server.  The server is reached through\n"
        "the local mesh entry point, which proves this CVM's app id; with\n"
        "--hub, runs the server CVM's hub interface instead (every node as a\n"
        "peer, forwarding between them), using the server's data directory.\n"
        "\n"
        "Settings come from the defaults, then the config file (--config, or\n"
        "the environment's DSTACK_CTLD_CONFIG; section [node]), then the\n"
        "environment (DSTACK_MESH_URL, VPC_SERVER_APP_ID, VPC_SERVER_PORT,\n"
        "VPC_NODE_NAME or NODE_NAME, VPC_NODE_TYPE, VPC_NAMES,\n"
        "VPC_WG_TRANSPORT), then these flags:\n"
        "\n");
    opts_usage(out, node_opts);
    fprintf(out,
        "\n"
        "Exit status: 0 stopped by SIGTERM/SIGINT (the interface stays up),\n"
        "1 cannot start, 2 usage, 3 removed from the VPC by the server.\n");
}
