/*
 * dstack-ctld/node/: the node role and the hub (WireGuard, names, polls).
 *
 * The node role: one CVM's WireGuard interface, peer set and hosts block,
 * kept in step with the VPC server's long poll; or, with --hub, the
 * server CVM's own interface that every node peers with.
 *
 *   node.c          life cycle, the poll loop, backoff, signals
 *   node_config.c   settings: defaults, config file, environment, flags
 *   node_agent.c    who this CVM is (guest agent /Info)
 *   node_api.c      calls to the server through the mesh entry point
 *   node_state.c    the token and address kept across restarts
 *   node_peers.c    server answers checked into a peer set; which peers
 *                   WireGuard gets (the reachability rule)
 *   node_apply.c    the interface: device, address, peers, forwarding
 *   node_firewall.c the hub's forwarding filter (nftables)
 *   node_hosts.c    the marked block of the hosts file
 *   node_relay.c    the path to the hub: UDP, or the relay stream
 */

#ifndef CTLD_NODE_H
#define CTLD_NODE_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "lib/addr.h"
#include "lib/config.h"
#include "lib/util.h"
#include "lib/validate.h"
#include "lib/wire.h"
#include "wg/wg.h"

#define NODE_KEY_FILE     "node.key"
#define NODE_STATE_FILE   "node.state"
#define NODE_PEERS_FILE   "node.peers"
#define NODE_LOCK_FILE    "node.lock"
#define HUB_LOCK_FILE     "hub.lock"
#define HUB_KEY_FILE      "wg.key"          /* made by the server */

/* exit status of a node the server removed while it ran */
#define NODE_EXIT_REMOVED  3

/* everything the config file and the flags can set */
struct node_config {
    char      *server_url;
    char      *server_app_id;
    char      *agent_socket;
    char      *name;
    char      *node_type;
    char      *endpoint;
    char      *state_dir;
    char      *interface;
    char      *backend;
    char      *hosts_file;
    char      *data_dir;
    char      *log_level;
    char      *transport;
    uint64_t   server_port;
    uint64_t   listen_port;
    uint64_t   mtu;
    uint64_t   keepalive;
    uint64_t   poll_wait;
    uint64_t   retry_max;
    bool       hub;
};

extern const struct opt  node_opts[];

/* how the node reaches the server */
enum node_route {
    ROUTE_MESH,         /* the mesh entry point; x-dstack-target-app */
    ROUTE_DIRECT,       /* the server itself; we claim x-dstack-app-id */
    ROUTE_ADMIN         /* the hub: the server itself, admin token */
};

/* what the node saved after joining (node_state.c) */
struct node_state {
    int64_t   node_id;
    char      name[DNS_LABEL_MAX + 1];
    char      address[INET_ADDRSTRLEN];
    char      prefix[IP_PREFIX_STRLEN];
    char      token[TOKEN_HEX_LEN + 1];
    /* what the join was made with: a change means joining again */
    char      app_id[APP_ID_HEX_MAX + 1];
    char      instance_id[INSTANCE_ID_MAX + 1];
    char      server[512];
    char      public_key[WG_KEY_B64_LEN + 1];
    char      endpoint[ENDPOINT_MAX + 1];
    char      requested_name[DNS_LABEL_MAX + 1];
};

/* one member of the VPC as the server describes it */
struct vpc_peer {
    int64_t          id;                /* 0: the hub */
    char             name[DNS_LABEL_MAX + 1];
    uint8_t          key[WG_KEY_LEN];
    struct in_addr   address;
    struct ip_prefix allowed;           /* the pool (hub), or address/32 */
    char             endpoint[ENDPOINT_MAX + 1];    /* "" when none */
    bool             reachable;         /* the endpoint resolved: */
    union {
        struct sockaddr      sa;
        struct sockaddr_in   sin;
        struct sockaddr_in6  sin6;
    }                sockaddr;          /* as struct wg_peer has it */
    bool             fresh;             /* parsed from the last answer */
};

/* the whole VPC as last checked, sorted by id; the hub is at [0] */
struct peer_set {
    struct vpc_peer  *v;
    size_t            n;
    char              epoch[EPOCH_LEN + 1];
    uint64_t          version;
    struct ip_prefix  pool;             /* the hub's allowed IPs */
};

/* who the checks and the reachability rule are about */
struct vpc_self {
    bool              hub;
    uint8_t           key[WG_KEY_LEN];
    bool              has_address;      /* a node: from its join */
    struct in_addr    address;
    struct ip_prefix  pool;             /* a node: from its join */
    bool              has_endpoint;     /* reachable without the hub */
    uint16_t          keepalive;        /* toward the hub, without endpoint */
};

/* how WireGuard reaches the hub now */
enum node_transport { NODE_TRANSPORT_UDP, NODE_TRANSPORT_RELAY };

/* --transport */
enum transport_mode { TRANSPORT_AUTO, TRANSPORT_UDP, TRANSPORT_RELAY };

struct node_relay;

struct vpc_node {
    struct node_config    cfg;
    enum wg_backend       backend;
    enum node_route       route;
    struct addr_spec      server;
    char                  agent_app_id[APP_ID_HEX_MAX + 1];
    char                  instance_id[INSTANCE_ID_MAX + 1];
    char                  target_app[APP_ID_HEX_MAX + 1];
    char                  admin_token[TOKEN_HEX_LEN + 1];
    uint8_t               private_key[WG_KEY_LEN];
    char                  public_key[WG_KEY_B64_LEN + 1];

    struct node_state     state;
    bool                  joined;       /* state holds a usable token */
    unsigned              refused;      /* 401s in a row for the token */
    bool                  reported;     /* nodes/update done */

    struct vpc_self       self;
    struct peer_set       peers;
    bool                  have_peers;   /* peers came from the server */
    bool                  want_snapshot;    /* after an answer was refused */
    struct wg_peer       *eff;          /* what WireGuard has, by key */
    size_t                n_eff;

    struct wg_device     *dev;
    bool                  dev_up;       /* key, port, address, link up */
    bool                  peers_synced; /* the device has eff */
    bool                  forwarding_on;    /* the hub turned ip_forward on */
    char                 *hosts_block;  /* last written */

    enum transport_mode   transport_mode;
    struct node_relay    *relay;        /* the path chooser's thread */
    /* written by that thread under its lock (node_relay_transport()) */
    enum node_transport   hub_transport;        /* path to the hub now */
    time_t                hub_transport_since;  /* when it last changed (wall clock) */
};

/* node_config.c */
int   node_config_load(struct node_config *cfg, int argc, char **argv);
int   node_config_apply(struct vpc_node *n);
void  node_config_free(struct vpc_node *n);
void  node_usage(FILE *out);

/* node.c */
int   node_main(int argc, char **argv);
bool  node_stopping(void);

/* node_agent.c: 0, or -1 logged */
int   agent_info(const char *socket_path, char app_id[APP_ID_HEX_MAX + 1],
                 char instance_id[INSTANCE_ID_MAX + 1]);

/* node_api.c */
enum api_result {
    API_OK,             /* 200 and a JSON object */
    API_AUTH,           /* 401: the token or key is refused (nginx, server) */
    API_GONE,           /* 410: the server removed this node */
    API_REFUSED,        /* another 4xx: the server will not, as asked */
    API_FAILED          /* transport, 5xx, garbage: try again later */
};

/* the headers of the route (x-dstack-target-app...), NULL-ended in h */
void  node_api_route_headers(const struct vpc_node *n, char buf[2][APP_ID_HEX_MAX + 64],
                             const char *h[3]);
enum api_result  node_api_register(struct vpc_node *n, char key[TOKEN_HEX_LEN + 1]);
enum api_result  node_api_join(struct vpc_node *n, const char *key, json_t **answer);
enum api_result  node_api_report(struct vpc_node *n);
enum api_result  node_api_poll(struct vpc_node *n, uint64_t wait, json_t **answer);

/* node_state.c */
int   node_state_load(const char *dir, struct node_state *st);
int   node_state_save(const char *dir, const struct node_state *st);
void  node_state_forget(const char *dir);
/* fills st from a join answer (checked); -1 logged */
int   node_state_from_join(struct node_state *st, json_t *answer);
/* the last peer set, for a start while the server is away; node.peers */
int   node_peers_save(const char *dir, int64_t node_id, const struct peer_set *s);
/* the saved set as a snapshot answer of node node_id, or NULL */
json_t *node_peers_load(const char *dir, int64_t node_id);

/* node_peers.c */
/*
 * Checks a snapshot or a delta (a join answer or a poll answer) whole and
 * gives the peer set it leads to from cur, or -1 after logging why;
 * nothing is applied from an answer that fails.  *pool_changed is set
 * when a node's pool differs from the one it joined with.
 */
int   peer_set_next(const struct peer_set *cur, json_t *answer,
                    const struct vpc_self *self, struct peer_set *next,
                    bool *pool_changed);
void  peer_set_free(struct peer_set *s);
/* s as the snapshot answer that gives it back */
json_t *peer_set_json(const struct peer_set *s);
/* the hub's entry, or NULL */
const struct vpc_peer *peer_set_hub(const struct peer_set *s);
/*
 * The reachability rule: the WireGuard peers self should have, sorted
 * by key.  A node: the hub with the whole pool, plus a /32 for each node
 * that has an endpoint when self has one too; every other node is reached
 * through the hub.  The hub: every node as a /32.
 */
int   peer_set_effective(const struct peer_set *s, const struct vpc_self *self,
                         struct wg_peer **out, size_t *n);

/* node_apply.c */
int   apply_device(struct vpc_node *n);
int   apply_snapshot(struct vpc_node *n, struct wg_peer *eff, size_t n_eff);
int   apply_delta(struct vpc_node *n, struct wg_peer *eff, size_t n_eff);
bool  apply_device_present(const struct vpc_node *n);
void  apply_close(struct vpc_node *n);
void  apply_hub_stop(struct vpc_node *n);

/* node_relay.c: the path to the hub (--transport) */
/* starts the chooser once the node is joined and its device up: 0, -1 */
int   node_relay_start(struct vpc_node *n);
void  node_relay_stop(struct vpc_node *n);
/* eff as the paths are: the hub's entry with the endpoint of the current
 * path, without the direct peers given up (*n_eff shrinks); keeps the
 * hub's own endpoint and the token for the chooser */
void  node_relay_adjust(struct vpc_node *n, const struct peer_set *s,
                        struct wg_peer *eff, size_t *n_eff);
/* the node moved to the relay: its endpoint is withdrawn (true: join
 * again without it) */
bool  node_relay_withdraw(struct vpc_node *n);
/* a consistent reading of hub_transport and hub_transport_since */
enum node_transport  node_relay_transport(struct vpc_node *n, time_t *since);

/* node_firewall.c: the hub forwards only pool to pool over ifname; 1
 * when it replaced a table left by a hub that died, 0, or -1 logged */
int   firewall_hub_install(const char *ifname, const struct ip_prefix *pool);
void  firewall_hub_remove(void);

/* node_hosts.c: the block "<address> <name>.dstack.internal" lines */
int   hosts_write_block(const char *path, const char *block);
/* the text of a hosts file (old_len bytes, any of them) with block in
 * place: the first block replaced, or appended; NULL: out of memory */
char *hosts_splice(const char *old, size_t old_len, const char *block,
                   size_t *len, bool *unterminated);

#endif
