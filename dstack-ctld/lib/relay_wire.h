/*
 * The relay stream both roles speak: WireGuard datagrams carried inside
 * one upgraded HTTP/1.1 connection through the mesh, when a node has no
 * UDP path to the hub.
 *
 *   GET /api/v1/relay HTTP/1.1
 *   Connection: Upgrade
 *   Upgrade: dstack-wg-relay/1
 *   Authorization: Bearer <node_token>
 *   -> HTTP/1.1 101 Switching Protocols, Upgrade: dstack-wg-relay/1
 *
 * Then, both ways, frames: a 4-byte big-endian length and that many bytes
 * of one datagram.  Length 0 is a keepalive (nginx closes idle upgraded
 * connections); a length over RELAY_FRAME_MAX ends the stream.
 *
 * Each side keeps a fixed queue toward the stream: a datagram that does
 * not fit is dropped, as UDP would drop it, and nothing else waits.
 */

#ifndef CTLD_RELAY_WIRE_H
#define CTLD_RELAY_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PATH_RELAY          "/api/v1/relay"
#define RELAY_PROTOCOL      "dstack-wg-relay/1"
#define RELAY_HEADER_LEN    4
#define RELAY_FRAME_MAX     65535
#define RELAY_QUEUE_BYTES   (256 * 1024)
#define RELAY_KEEPALIVE_MS  15000
/* each side sends within a keepalive interval (and its loop's tick): a
 * stream silent three times that long is dead without having closed (a
 * gateway gone without a reset) */
#define RELAY_IDLE_MS       (3 * RELAY_KEEPALIVE_MS)

/* the transport: n bytes moved, 0 when it would block, -1 closed or failed */
typedef ssize_t (*relay_io)(void *ctx, void *buf, size_t n);

struct relay_conn {
    relay_io   send;
    relay_io   recv;
    void      *ctx;
    uint64_t   last_tx_ms;
    uint64_t   last_rx_ms;
    uint64_t   dropped;             /* datagrams the full queue refused */
    size_t     in_len;
    size_t     out_off;
    size_t     out_len;
    uint8_t    in[RELAY_HEADER_LEN + RELAY_FRAME_MAX];
    uint8_t    out[RELAY_QUEUE_BYTES];
};

/* what arrived: one datagram (len 1..RELAY_FRAME_MAX) */
typedef void (*relay_deliver)(void *arg, const uint8_t *dgram, size_t len);

void  relay_conn_init(struct relay_conn *c, relay_io send, relay_io recv, void *ctx);
/* a new stream for the same queue: input afresh, what is queued goes first */
void  relay_conn_attach(struct relay_conn *c);
/* queues one datagram; false when the queue is full and it was dropped */
bool  relay_enqueue(struct relay_conn *c, const void *dgram, size_t len);
/* a keepalive frame when nothing went out for RELAY_KEEPALIVE_MS */
void  relay_keepalive(struct relay_conn *c);
bool  relay_pending(const struct relay_conn *c);
/* nothing received for RELAY_IDLE_MS */
bool  relay_idle(const struct relay_conn *c);
/* writes what the transport takes: 0, or -1 when it failed */
int   relay_flush(struct relay_conn *c);
/*
 * Takes bytes already read (after the upgrade's headers), or reads from
 * the transport when data is NULL (one read: a peer that never stops
 * sending cannot keep the caller from its other work), and delivers every
 * whole frame: 0, or -1 with *why set ("closed", or what was malformed).
 */
int   relay_input(struct relay_conn *c, const uint8_t *data, size_t n,
                  relay_deliver deliver, void *arg, const char **why);

#endif
