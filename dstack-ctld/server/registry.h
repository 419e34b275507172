/*
 * The node registry: nodes that joined the VPC with a one-time key, their
 * addresses, tokens and the peer-set version.
 *
 * Versions: every change of the peer set (a join, a re-join, a removal,
 * a change of the hub's own identity) takes the next version number; a
 * node row keeps the version of its creation and of its last change, a
 * removal leaves a tombstone with its version.  "What changed since v" is
 * then three indexed range scans.  Tombstones older than the retention are
 * pruned and the highest pruned version becomes the floor: a poller from
 * below the floor gets a full snapshot instead of a diff.
 *
 * Write operations run on the writer thread (see writer.h); reads on any
 * thread with its own read connection.
 */

#ifndef CTLD_REGISTRY_H
#define CTLD_REGISTRY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <sqlite3.h>

#include "lib/util.h"
#include "lib/validate.h"
#include "lib/wire.h"
#include "server/answers.h"
#include "server/history.h"
#include "server/ipam.h"
#include "server/longpoll.h"
#include "server/names.h"
#include "server/writer.h"


struct registry {
    /* writer thread only */
    struct ipam        ipam;
    uint64_t           wversion;
    uint64_t           wfloor;
    uint64_t           wnodes;

    /* published after each commit, read anywhere */
    _Atomic uint64_t   version;
    _Atomic uint64_t   nodes;
    _Atomic uint64_t   commits;             /* what cached record lists follow */

    struct answer_cache  *answers;          /* shared answers (answers.h) */

    struct longpoll   *longpoll;
    struct history    *history;             /* noted at every new version */
    uint64_t           tombstone_ttl;       /* seconds */
    uint64_t           key_retention;       /* seconds after expiry or use */
    struct name_reservations  reserved;     /* --reserve-name */
    uint64_t           record_ttl;          /* legacy records, seconds */
    uint64_t           quota_keys;          /* per app: unused keys */
    uint64_t           quota_nodes;         /* per app: nodes */

    /* the hub: the server's own WireGuard peer, fixed while running */
    char               epoch[EPOCH_LEN + 1];
    char               hub_name[DNS_LABEL_MAX + 1];
    char               hub_public_key[WG_KEY_B64_LEN + 1];
    char               hub_address[IPAM_ADDR_LEN];
    char               hub_endpoint[ENDPOINT_MAX + 1];     /* "" when none */
    char               pool_cidr[IPAM_CIDR_LEN];
};

/* one node as stored */
struct node {
    int64_t   id;
    char      app_id[APP_ID_HEX_MAX + 1];
    char      instance_id[INSTANCE_ID_MAX + 1];
    char      name[DNS_LABEL_MAX + 1];
    char      public_key[WG_KEY_B64_LEN + 1];
    char      endpoint[ENDPOINT_MAX + 1];           /* "" when none */
    uint32_t  address;
    uint64_t  created_version;
    uint64_t  version;
    int64_t   created_at;
    int64_t   updated_at;
};

/*
 * Loads versions and addresses and records the hub; called once before
 * the writer starts, on the writer's connection.  Bumps the version when
 * the hub's identity differs from the one stored.  Refuses (-1, naming
 * them) nodes whose address the pool and the server address leave them:
 * outside the pool, its network or broadcast address, or the hub's.
 */
int   registry_open(struct registry *reg, sqlite3 *db, uint32_t pool_base,
                    unsigned pool_prefix, uint32_t hub_addr);
void  registry_close(struct registry *reg);

/* writer hooks */
void  registry_committed(void *reg);
int   registry_aborted(void *reg, sqlite3 *db);
int   registry_maintain(void *reg, sqlite3 *db);

/* --- one-time keys --- */

struct register_op {
    struct write_op    op;
    struct registry   *reg;
    unsigned char      key_hash[SHA256_LEN];
    char               app_id[APP_ID_HEX_MAX + 1];
    char               instance_id[INSTANCE_ID_MAX + 1];
    char               node_name[DNS_LABEL_MAX + 1];    /* "" when none */
    uint64_t           lifetime;
};

enum key_failure {
    KEY_OK,
    KEY_UNKNOWN,
    KEY_USED,
    KEY_EXPIRED,
    KEY_OTHER_APP
};

struct join_op {
    struct write_op    op;
    struct registry   *reg;
    /* in */
    unsigned char      key_hash[SHA256_LEN];
    char               app_id[APP_ID_HEX_MAX + 1];
    char               public_key[WG_KEY_B64_LEN + 1];
    char               endpoint[ENDPOINT_MAX + 1];      /* "" when none */
    char               name[DNS_LABEL_MAX + 1];         /* "" = key's */
    unsigned char      token_hash[SHA256_LEN];
    /* the node's current token, which a new public key needs */
    bool               has_node_token;
    unsigned char      node_token_hash[SHA256_LEN];
    /* out */
    enum key_failure   key_failure;
    struct node        node;
    bool               rejoined;
    bool               rekeyed;     /* rejoined with another public key */
};

/* who asks for a removal: the admin, or a node for itself */
struct remove_op {
    struct write_op    op;
    struct registry   *reg;
    /* in */
    char               selector[DNS_LABEL_MAX + 1];     /* id or name */
    int64_t            requester;                       /* 0 = admin */
    /* out */
    struct node        node;
    uint64_t           version;
};

void  register_op_init(struct register_op *op, struct registry *reg);
void  join_op_init(struct join_op *op, struct registry *reg);
void  remove_op_init(struct remove_op *op, struct registry *reg);

/* --- reads (any thread, its own read connection) --- */

/* 1 found, 0 not found, -1 error */
int   registry_node_by_token(sqlite3 *db, const unsigned char hash[SHA256_LEN],
                             struct node *out);
/* a token of a removed node: 1 (with who removed it), 0 not, -1 error */
int   registry_token_removed(sqlite3 *db, const unsigned char hash[SHA256_LEN],
                             int64_t *node_id, bool *by_admin);
int   registry_node_fill(sqlite3_stmt *st, struct node *out);
extern const char  registry_node_columns[];

#endif
