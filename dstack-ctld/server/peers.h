/*
 * Peer sets as nodes see them: the hub (allowed IPs = the whole pool) and
 * every other node (allowed IPs = its /32), either as a full snapshot or
 * as the changes since a version.  The asking node is left out of its own
 * peer set.
 *
 * Snapshot: {"epoch","version","snapshot":true,"peers":[peer...]}
 * Delta:    {"epoch","version","snapshot":false,"added":[peer...],
 *            "changed":[peer...],"removed":[{"id","public_key"}...]}
 */

#ifndef CTLD_PEERS_H
#define CTLD_PEERS_H

#include <stdint.h>

#include <jansson.h>
#include <sqlite3.h>

#include "server/registry.h"

/*
 * Runs inside the caller's read transaction.  since 0, a version from
 * another epoch, above the current one or below the tombstone floor gives
 * a snapshot.  NULL on storage error.
 */
json_t *peers_since(struct registry *reg, sqlite3 *db, int64_t self,
                    uint64_t since, const char *epoch);

#endif
