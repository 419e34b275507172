/*
 * Peer sets as nodes see them: the hub (allowed IPs = the whole pool) and
 * every other node (allowed IPs = its /32), either as a full snapshot or
 * as the changes since a version.  Answers hold every node and are shared
 * by every poller (answers.h); each poller is sent them without its own
 * entry (answer_slices() with its id).
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

#include "server/answers.h"
#include "server/registry.h"

/*
 * The shared answer to a poll from `since` (epoch: the poller's, NULL:
 * any), as of the caller's read transaction: since 0, a version from
 * another epoch, above the current one or below the tombstone floor gives
 * a snapshot.  A reference (answer_unref()); NULL on storage error.
 */
struct answer *peers_answer(struct registry *reg, sqlite3 *db, uint64_t since,
                            const char *epoch);

#endif
