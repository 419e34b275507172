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
 *   node_state.c    the token, address and peer set kept across restarts
 *   node_peers.c    server answers checked into a peer set; which peers
 *                   WireGuard gets (the reachability rule)
 *   node_index.c    the peer set's members by id, key and address
 *   node_apply.c    the interface: device, address, peers, forwarding
 *   node_firewall.c the hub's forwarding filter (nftables)
 *   node_hosts.c    the marked block of the hosts file
 *   node_status.c   `dstack-ctld status`: a unix socket, a thread of its own
 *   node_names.c    the names the DNS server answers (a hash table)
 *   node_dns.c      the DNS server: sockets, its thread, forwarding
 *   node_dns_answer.c  one query: answered, forwarded or dropped (ldns)
 *   node_resolv.c   resolv.conf pointed at the DNS server, and restored
 *   node_relay.c    the path to the hub: UDP, or the relay stream
 */

#ifndef CTLD_NODE_H
#define CTLD_NODE_H

#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <netinet/in.h>
#include <sys/socket.h>

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
#define NODE_STATUS_SOCKET "node.sock"      /* in --state-dir */
#define HUB_STATUS_SOCKET  "hub.sock"       /* the hub: in --data-dir */
#define RESOLV_SAVED_FILE "resolv.conf.orig"  /* the CVM's, while we run */

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
    char      *names;
    char      *dns_listen;
    char      *resolv_conf;
    char      *data_dir;
    char      *log_level;
    char      *log_format;
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

/* where names under dstack.internal come from (--names) */
enum node_names {
    NAMES_DNS = 1,      /* the node's DNS server, resolv.conf pointed at it */
    NAMES_HOSTS = 2,    /* the marked block of the hosts file */
    NAMES_BOTH = NAMES_DNS | NAMES_HOSTS
};

/* one name of the table: <name>.dstack.internal */
struct node_name {
    char            name[DNS_LABEL_MAX + 1];
    struct in_addr  addr;
};

/* node_names.c: the names the DNS server answers, label -> address */
struct name_entry;
struct name_table {
    pthread_rwlock_t    lock;       /* readers: the DNS threads */
    struct name_entry  *slots;
    size_t              cap, count; /* cap: a power of two */
    uint32_t            sync;
    bool                ready;      /* a peer set was synced (atomic) */
};

#define DNS_UPSTREAMS_MAX   3       /* resolv.conf's MAXNS */
#define DNS_TTL             5       /* seconds: names follow the VPC */

/* the resolvers of the CVM's original resolv.conf */
struct dns_upstreams {
    struct sockaddr_storage  addr[DNS_UPSTREAMS_MAX];
    socklen_t                len[DNS_UPSTREAMS_MAX];
    size_t                   n;
};

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
};

enum peer_index_kind { BY_ID, BY_KEY, BY_ADDR, PEER_INDEXES };
#define PEER_NONE  UINT32_MAX

/*
 * The whole VPC as last checked: the hub at [0], the others in no order;
 * found by id, key or address through the indexes (node_index.c), so a
 * delta costs what it changes.
 */
struct peer_set {
    struct vpc_peer  *v;
    size_t            n;
    size_t            cap;
    uint32_t         *index[PEER_INDEXES];  /* positions in v */
    size_t            index_cap;            /* a power of two, > 2 n */
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

/* how this node's WireGuard datagrams reach the hub */
enum node_transport { NODE_TRANSPORT_UDP, NODE_TRANSPORT_RELAY };

/* --transport */
enum transport_mode { TRANSPORT_AUTO, TRANSPORT_UDP, TRANSPORT_RELAY };

struct node_relay;
struct node_status;

/*
 * The status thread (node_status.c) reads this under node_status_lock();
 * the loop changes what it reads (the peer set, state, self, the device)
 * under that lock too; the transport is read with node_relay_transport().
 */
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
    bool                  resumed;      /* the token came from node.state
                                           and no answer has taken it yet */
    unsigned              refused;      /* 401s in a row for the token */
    bool                  reported;     /* nodes/update done */

    struct vpc_self       self;
    struct peer_set       peers;
    bool                  have_peers;   /* peers came from the server */
    bool                  want_snapshot;    /* after an answer was refused */
    bool                  peers_dirty;  /* newer than node.peers */
    uint64_t              peers_saved_ms;   /* when node.peers was written */
    uint64_t              answer_us;    /* when the last answer arrived */

    struct wg_device     *dev;
    bool                  dev_up;       /* key, port, address, link up */
    bool                  peers_synced; /* the device has eff */
    bool                  forwarding_on;    /* the hub turned ip_forward on */
    char                 *hosts_block;  /* last written */

    struct node_status   *status;       /* node_status.c; NULL: not served */
    enum node_names       names_mode;
    struct sockaddr_in    dns_addr;     /* --dns-listen */
    struct name_table     names;
    struct dns_server    *dns;
    bool                  resolv_taken; /* resolv.conf is ours until exit */
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
enum api_result  node_api_join(struct vpc_node *n, const char *key,
                               bool snapshot_not_needed, json_t **answer);
enum api_result  node_api_report(struct vpc_node *n);
enum api_result  node_api_poll(struct vpc_node *n, uint64_t wait, json_t **answer);

/* node_state.c */
/* <dir>/<name> into path: 0, or -1 logged (too long) */
int   dir_file(const char *dir, const char *name, char path[PATH_MAX]);
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

/* what an answer changed in WireGuard's peers */
struct peer_changes {
    bool              snapshot;     /* all of them: peer_set_effective() */
    uint8_t         (*remove)[WG_KEY_LEN];
    size_t            n_remove;
    struct wg_peer   *set;          /* new, or configured differently */
    size_t            n_set;
};

/*
 * Checks a snapshot or a delta (a join answer or a poll answer) whole and
 * brings s to the set it leads to, or returns -1 after logging why (from
 * names the source: "the server's", "the saved"); nothing is applied from
 * an answer that fails, and s stays as it was.  A delta applies only when
 * follows (s is the version it was asked from), at a cost that follows
 * the delta's size, not the set's; *ch says what WireGuard has to change.
 * *pool_changed is set when a node's pool differs from the one it joined.
 */
int   peer_set_update(struct peer_set *s, bool follows, json_t *answer,
                      const struct vpc_self *self, const char *from,
                      struct peer_changes *ch, bool *pool_changed);
void  peer_changes_free(struct peer_changes *ch);
void  peer_set_free(struct peer_set *s);
/* s as the snapshot answer that gives it back */
json_t *peer_set_json(const struct peer_set *s);
/* the hub's entry, or NULL */
const struct vpc_peer *peer_set_hub(const struct peer_set *s);
/* the reachability rule for one peer: whether WireGuard gets p, as *w */
bool  peer_effective(const struct vpc_peer *p, const struct vpc_self *self,
                     struct wg_peer *w);
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
int   apply_snapshot(struct vpc_node *n);
int   apply_delta(struct vpc_node *n, const struct peer_changes *ch);
bool  apply_device_present(const struct vpc_node *n);
void  apply_close(struct vpc_node *n);
void  apply_hub_stop(struct vpc_node *n);

/* node_index.c: lookups, PEER_NONE when absent */
uint32_t  peer_index_find(const struct peer_set *s, enum peer_index_kind kind,
                          const void *k);
/* all of s->v indexed: 0, 1 with *dup the index that has a value twice,
 * or -1 out of memory */
int   peer_index_build(struct peer_set *s, enum peer_index_kind *dup);
/* room for n members without growing the indexes: 0, or -1 */
int   peer_index_reserve(struct peer_set *s, size_t n);
/* v[slot] out of, or into, the indexes of kinds (a mask of 1 << kind);
 * put gives -1 when one has the value already */
void  peer_index_del(struct peer_set *s, uint32_t slot, unsigned kinds);
int   peer_index_put(struct peer_set *s, uint32_t slot, unsigned kinds);
/* v[to] holds what the indexes knew at another position: now at to */
void  peer_index_move(struct peer_set *s, uint32_t to);
void  peer_index_free(struct peer_set *s);
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
enum node_transport  node_relay_transport(const struct vpc_node *n, time_t *since);

/* node_firewall.c: the hub forwards only pool to pool over ifname; 1
 * when it replaced a table left by a hub that died, 0, or -1 logged */
int   firewall_hub_install(const char *ifname, const struct ip_prefix *pool);
void  firewall_hub_remove(void);

/* node_status.c: 0, or -1 logged (the node runs without it) */
int   node_status_start(struct vpc_node *n);
void  node_status_stop(struct vpc_node *n);
/* recursive; no I/O on the status thread while it is held */
void  node_status_lock(struct vpc_node *n);
void  node_status_unlock(struct vpc_node *n);
const char *node_transport_name(enum node_transport t);

/* node_hosts.c: the block "<address> <name>.dstack.internal" lines */
int   hosts_write_block(const char *path, const char *block);
/* the text of a hosts file (old_len bytes, any of them) with block in
 * place: the first block replaced, or appended; NULL: out of memory */
char *hosts_splice(const char *old, size_t old_len, const char *block,
                   size_t *len, bool *unterminated);

/* node_hosts.c: the block emptied, when the file has one (--names dns) */
int   hosts_clear_block(const char *path);

/* node_names.c */
int   name_table_init(struct name_table *t);
void  name_table_free(struct name_table *t);
/* the table made to hold self (if not NULL) and the set's names: each
 * name added, moved or removed alone; -1 logged (out of memory) */
int   name_table_sync(struct name_table *t, const struct node_name *self,
                      const struct peer_set *s);
/* the address of label s[0, len), any case */
bool  name_table_lookup(struct name_table *t, const char *s, size_t len,
                        struct in_addr *addr);
bool  name_table_ready(struct name_table *t);

/* node_dns_answer.c */
enum dns_verdict {
    DNS_DROP,           /* no answer at all */
    DNS_REPLY,          /* *out (malloc'd) is the answer */
    DNS_FORWARD         /* not ours: to the CVM's resolvers */
};
/* one query (a datagram, or a TCP message without its length) */
enum dns_verdict  dns_answer(struct name_table *t, const uint8_t *q, size_t len,
                             bool tcp, uint8_t **out, size_t *out_len);
/* SERVFAIL to q: DNS_REPLY, or DNS_DROP when q cannot be parsed */
enum dns_verdict  dns_servfail(const uint8_t *q, size_t len, uint8_t **out,
                               size_t *out_len);
/* a is an answer to q: its id, and its question (name, type, class) */
bool  dns_answers_query(const uint8_t *q, size_t q_len, const uint8_t *a,
                        size_t a_len);

/* node_dns.c: the server's thread; NULL logged */
struct dns_server;
struct dns_server *dns_start(struct name_table *names,
                             const struct sockaddr_in *listen,
                             const struct dns_upstreams *up);
void  dns_stop(struct dns_server *s);

/* node_resolv.c: the resolvers of path's original (saved while path is
 * ours) into up; with rewrite, the original saved to saved and path
 * pointed at self.  1: path rewritten, 0: not, -1 logged */
int   resolv_take_over(const char *path, const char *saved,
                       const struct sockaddr_in *self, bool rewrite,
                       struct dns_upstreams *up);
void  resolv_restore(const char *path, const char *saved);

#endif
