/*
 * The original server's discovery registry (`/api/nodes/update`,
 * `/api/discover/{type}`, `/api/nodes`), kept durable in SQLite instead of
 * a map in memory.  Independent of the WireGuard registry: nodes report
 * their VPN address and hostname here so that discovery works for clients
 * of the original API.
 */

#ifndef CTLD_LEGACY_H
#define CTLD_LEGACY_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <sqlite3.h>

#include "lib/validate.h"
#include "server/writer.h"

#define LEGACY_UUID_MAX       256
#define LEGACY_TYPE_MAX       64
#define LEGACY_HOSTNAME_MAX   253

struct legacy_update_op {
    struct write_op  op;
    /* in: "" leaves a field unchanged */
    char             app_id[APP_ID_HEX_MAX + 1];
    char             uuid[LEGACY_UUID_MAX + 1];
    char             node_type[LEGACY_TYPE_MAX + 1];
    char             tailscale_ip[64];
    char             hostname[LEGACY_HOSTNAME_MAX + 1];
    uint64_t         quota;         /* records per app */
    /* out */
    bool             created;
    json_t          *node;          /* the record after the update */
};

void    legacy_update_op_init(struct legacy_update_op *op);
/* deletes records not updated for ttl seconds, but a live node's (writer) */
int     legacy_expire(sqlite3 *db, uint64_t ttl);

/* NULL on storage error */
json_t *legacy_discover(sqlite3 *db, const char *node_type);
json_t *legacy_list(sqlite3 *db);

#endif
