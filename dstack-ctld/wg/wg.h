/*
 * dstack-ctld/wg/: the WireGuard layer, a library of its own.
 *
 * The node's WireGuard device behind one interface, whichever implementation
 * runs it: the kernel module (generic netlink, wg_kernel.c) or a userspace
 * one such as wireguard-go (the cross-platform UAPI socket, wg_uapi.c), as
 * wireguard-tools splits ipc-linux.h and ipc-uapi.h.
 *
 * Peers change one at a time or as one delta; a full replace is only for a
 * snapshot, and even then the peers it keeps are updated in place, so their
 * sessions survive.  The interface outlives the handle: wg_close() leaves
 * it configured, as a restarted daemon expects to find it.
 *
 * Every function returns 0 or a negative errno after logging one line on
 * stderr.  Keys are never logged.  A change is not atomic: the kernel takes
 * a large one in several messages, a userspace implementation line by line,
 * so a failure can leave part of it applied.  Every change is idempotent:
 * apply it again.  A handle is for one thread at a time.
 */

#ifndef CTLD_WG_H
#define CTLD_WG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <netinet/in.h>

#include "wg/netdev.h"

#define WG_KEY_LEN          32
#define WG_ALLOWED_IPS_MAX  16          /* per peer; a node has one or two */
#define WG_PEERS_MAX        (1U << 20)  /* the kernel's limit per device */

/* "[v6]:port", terminated */
#define WG_ENDPOINT_STRLEN  (INET6_ADDRSTRLEN + 8)

enum wg_backend {
    WG_BACKEND_AUTO,        /* uapi if a userspace instance owns the name,
                               else kernel if it has WireGuard, else uapi */
    WG_BACKEND_KERNEL,
    WG_BACKEND_UAPI
};

/* wg_open() flags */
#define WG_OPEN_START_USERSPACE  0x1    /* uapi: run wireguard-go if needed */

struct wg_peer {
    uint8_t              public_key[WG_KEY_LEN];
    bool                 has_endpoint;  /* false: leave the endpoint as is */
    union {
        struct sockaddr      sa;
        struct sockaddr_in   sin;
        struct sockaddr_in6  sin6;
    } endpoint;
    uint16_t             persistent_keepalive;     /* seconds, 0: off */
    size_t               n_allowed_ips;
    struct ip_prefix     allowed_ips[WG_ALLOWED_IPS_MAX];

    /* filled by wg_get_peers() only */
    struct timespec      last_handshake;           /* zero: never */
    uint64_t             rx_bytes;
    uint64_t             tx_bytes;
};

/* One delta, applied as: device fields, then removals, then peers set. */
struct wg_changes {
    const uint8_t        *private_key;       /* NULL: unchanged */
    int                   listen_port;       /* -1: unchanged, 0: random */
    const uint8_t       (*remove)[WG_KEY_LEN];
    size_t                n_remove;
    const struct wg_peer *set;               /* add or update each, its */
    size_t                n_set;             /* allowed IPs replaced */
};

struct wg_device;

/*
 * Opens the WireGuard interface ifname ([A-Za-z0-9_=+.-]{1,15}), creating
 * it when missing: kernel, a link of kind wireguard over rtnetlink; uapi,
 * by running $WG_QUICK_USERSPACE_IMPLEMENTATION (default wireguard-go)
 * when flags has WG_OPEN_START_USERSPACE, as wg-quick does.
 */
int   wg_open(struct wg_device **dev, const char *ifname,
              enum wg_backend backend, unsigned flags);
void  wg_close(struct wg_device *dev);

const char       *wg_ifname(const struct wg_device *dev);
enum wg_backend   wg_backend_of(const struct wg_device *dev);
const char       *wg_backend_name(enum wg_backend backend);

int   wg_set_device(struct wg_device *dev,
                    const uint8_t private_key[WG_KEY_LEN],
                    uint16_t listen_port);
/* adds or updates the peer; its allowed IPs become exactly peer's */
int   wg_set_peer(struct wg_device *dev, const struct wg_peer *peer);
/* removing a peer the device does not have is not an error */
int   wg_remove_peer(struct wg_device *dev,
                     const uint8_t public_key[WG_KEY_LEN]);
int   wg_apply(struct wg_device *dev, const struct wg_changes *changes);
/*
 * Snapshot: afterwards the device has exactly these peers.  Peers missing
 * from the list are removed, the others set as wg_set_peer() does, so
 * the peers that stay keep their sessions (wg syncconf, not setconf).
 */
int   wg_replace_peers(struct wg_device *dev,
                       const struct wg_peer *peers, size_t n);
/* the device's peers in *peers (free() it), *n of them */
int   wg_get_peers(struct wg_device *dev, struct wg_peer **peers, size_t *n);

/* numeric "a.b.c.d:port" or "[x:y::z]:port" (port 1..65535); -EINVAL */
int          wg_endpoint_parse(const char *s, struct wg_peer *peer);
const char  *wg_endpoint_format(const struct wg_peer *peer,
                                char buf[WG_ENDPOINT_STRLEN]);

#endif
