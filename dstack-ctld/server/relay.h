/*
 * The relay endpoint: WireGuard over the mesh for nodes without a UDP
 * path to the hub (wire format: lib/relay_wire.h).
 */

#ifndef CTLD_RELAY_H
#define CTLD_RELAY_H

#include <stdint.h>

struct server;

/* loads the hub's key; 0, or -1 logged */
int   relay_init(struct server *srv);
/* ends every stream and waits for their threads (bounded) */
void  relay_shutdown(struct server *srv);
/* ends the node's stream, bound to a token and key it no longer has */
void  relay_node_gone(int64_t node_id, const char *why);

#endif
