/*
 * The wire format both roles speak: what a node sends to join and what the
 * server answers with, the peer-set shapes, and the limits both check.
 * The server writes these shapes (server/peers.c, server/server_api_v1.c),
 * the node reads them (node/node_state.c, node/node_peers.c); neither
 * includes the other's headers.
 *
 * POST /api/v1/join   {"pre_auth_key","public_key"[,"endpoint","name",
 *                      "with_peers":bool,"snapshot":bool]}
 *   -> {"node_id","name","dns_name","address","prefix","node_token",
 *       "epoch","version","snapshot":true,"peers":[peer...]}
 *   "snapshot":false (a node resuming from the peer set it saved, which
 *   polls from its saved version next): the answer carries no peers,
 *   only "epoch","version","snapshot":false.
 * GET  /api/v1/peers?since=V&wait=S     (Authorization: Bearer <node_token>)
 *   -> snapshot: {"epoch","version","snapshot":true,"peers":[peer...]}
 *   -> delta:    {"epoch","version","snapshot":false,"added":[peer...],
 *                 "changed":[peer...],"removed":[{"id","public_key"}...]}
 *
 * peer: {"id","name","dns_name","public_key","address","allowed_ips":[cidr],
 *        "endpoint":"host:port"|null,"hub":bool}; the hub is id 0 with the
 *        whole pool as its allowed IPs, every node has its /32.
 */

#ifndef CTLD_WIRE_H
#define CTLD_WIRE_H

#define DNS_DOMAIN         "dstack.internal"
#define INSTANCE_ID_MAX    128
#define EPOCH_LEN          16              /* hex: a database's history */

/* the calls a node or the admin CLI makes; the server routes the same */
#define PATH_REGISTER      "/api/register"          /* the original's */
#define PATH_NODES_UPDATE  "/api/nodes/update"      /* the original's */
#define PATH_JOIN          "/api/v1/join"
#define PATH_PEERS         "/api/v1/peers"
#define PATH_NODES         "/api/v1/nodes"          /* GET; DELETE .../ID */

/* join body member: false asks for no peer snapshot in the answer */
#define WIRE_JOIN_SNAPSHOT  "snapshot"

#endif
