/*
 * Between wg.c and the backends (wg_kernel.c, wg_uapi.c): what a backend
 * implements.  wg.c validates every change before a backend sees it.
 */

#ifndef CTLD_WG_BACKEND_H
#define CTLD_WG_BACKEND_H

#include <net/if.h>

#include "wg/wg.h"

struct wg_backend_ops {
    enum wg_backend  kind;
    int   (*apply)(struct wg_device *dev, const struct wg_changes *changes);
    /* appends to a growing array; wg.c frees it on error */
    int   (*get_peers)(struct wg_device *dev, struct wg_peer **peers,
                       size_t *n);
    void  (*close)(struct wg_device *dev);
};

/* the first member of each backend's own device structure */
struct wg_device {
    const struct wg_backend_ops  *ops;
    char                          ifname[IFNAMSIZ];
};

bool  wg_kernel_available(void);
int   wg_kernel_open(const char *ifname, struct wg_device **dev);

bool  wg_uapi_running(const char *ifname);
int   wg_uapi_open(const char *ifname, bool start, struct wg_device **dev);

/*
 * For the readers of a device: the peer that a fragment with this key
 * belongs to.  A peer split across dump messages (kernel) repeats its key,
 * so a key equal to the last one continues that peer; otherwise a new
 * zeroed peer is appended.  NULL (logged) past WG_PEERS_MAX or out of
 * memory.
 */
struct wg_peer  *wg_peer_next(struct wg_device *dev, struct wg_peer **peers,
                              size_t *n, size_t *cap,
                              const uint8_t key[WG_KEY_LEN]);

/* one line on stderr: "wg: <message>"; the daemon's log replaces it later */
void  wg_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
