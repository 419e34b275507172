/*
 * The WireGuard interface through wg.h and netdev.h: the device (key,
 * port, address, link up; filtered forwarding on the hub), a snapshot as
 * wg_replace_peers(), which keeps the peers that stay and their sessions,
 * and a delta as one wg_apply() of exactly what changed.
 *
 * Nothing here tears the interface down: on an error the device is left
 * as it is and the caller tries again later.
 */

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/log.h"
#include "node/node.h"

#define SYSCTL_IPV4  "/proc/sys/net/ipv4/"


/* sets a sysctl of our namespace unless it has the value already (then
 * /proc/sys may well be read-only, as in a container) */
static int
sysctl_set(const char *name, const char *value)
{
    char     path[128], cur[16] = "";
    size_t   len = strlen(value);
    ssize_t  w;
    int      fd;

    snprintf(path, sizeof(path), SYSCTL_IPV4 "%s", name);
    if (file_read_small(path, cur, sizeof(cur)) > 0
        && strncmp(cur, value, len) == 0 && cur[len] == '\n')
    {
        return 0;
    }
    fd = open(path, O_WRONLY | O_CLOEXEC);
    w = fd < 0 ? -1 : write(fd, value, len);
    if (w != (ssize_t) len) {
        log_error("cannot set %s to %s: %s", path, value, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    close(fd);
    log_info("set %s to %s", path, value);
    return 0;
}


/*
 * The hub routes between its peers (/proc/sys/net is per namespace), and
 * between them only: the forwarding filter comes first.  A
 * packet it forwards leaves by the interface it came in on, so by default
 * the kernel would also answer each one with an ICMP redirect ("go to
 * 100.128.0.9 directly"), which a node cannot follow: there is no direct
 * peer, which is why the packet came to the hub.  The kernel sends
 * redirects when "all" or the interface says so: both are turned off.
 */
static int
hub_routing(struct vpc_node *n)
{
    const char  *ifname = n->cfg.interface;
    char         name[64], cur[16] = "";
    int          left;

    left = firewall_hub_install(ifname, &n->self.pool);
    if (left < 0) {
        return -1;
    }
    /* ours to turn off again: off now, or turned on by a hub that died */
    if (left == 1
        || (file_read_small(SYSCTL_IPV4 "ip_forward", cur, sizeof(cur)) > 0
            && cur[0] == '0'))
    {
        n->forwarding_on = true;
    }
    if (sysctl_set("ip_forward", "1") != 0) {
        return -1;
    }
    snprintf(name, sizeof(name), "conf/%s/send_redirects", ifname);
    if (sysctl_set("conf/all/send_redirects", "0") != 0
        || sysctl_set(name, "0") != 0)
    {
        log_warn("the hub will send ICMP redirects to the nodes; harmless,"
                 " but noisy");
    }
    return 0;
}


void
apply_close(struct vpc_node *n)
{
    wg_close(n->dev);
    n->dev = NULL;
    n->dev_up = false;
    n->peers_synced = false;
}


/* a hub that stops leaves no forwarding behind: filter and sysctl */
void
apply_hub_stop(struct vpc_node *n)
{
    if (n->forwarding_on && sysctl_set("ip_forward", "0") == 0) {
        n->forwarding_on = false;
    }
    firewall_hub_remove();
}


bool
apply_device_present(const struct vpc_node *n)
{
    return if_nametoindex(n->cfg.interface) != 0;
}


int
apply_device(struct vpc_node *n)
{
    struct ip_prefix  addr;
    char              text[IP_PREFIX_STRLEN];
    int               rc;

    if (n->dev == NULL) {
        rc = wg_open(&n->dev, n->cfg.interface, n->backend,
                     WG_OPEN_START_USERSPACE);
        if (rc < 0) {
            log_error("%s: cannot open the WireGuard interface: %s",
                      n->cfg.interface, strerror(-rc));
            return rc;
        }
        /*
         * The UAPI socket is a path in the file system, shared by every
         * network namespace that shares /var/run: the one answering may
         * drive an interface of that name in another namespace.
         */
        if (!apply_device_present(n)) {
            log_error("%s: a userspace WireGuard answers on its UAPI socket,"
                      " but there is no such interface in this network"
                      " namespace: choose another --interface, or give"
                      " each namespace its own /var/run/wireguard",
                      n->cfg.interface);
            apply_close(n);
            return -1;
        }
    }

    addr = n->self.pool;
    addr.addr.v4 = n->self.address;
    rc = wg_set_device(n->dev, n->private_key, (uint16_t) n->cfg.listen_port);
    if (rc == 0) {
        rc = netdev_set_address(n->cfg.interface, &addr);
    }
    if (rc == 0) {
        rc = netdev_up(n->cfg.interface, (unsigned) n->cfg.mtu);
    }
    if (rc == 0 && n->self.hub) {
        rc = hub_routing(n);
    }
    if (rc != 0) {
        log_error("%s: cannot configure the interface; will try again",
                  n->cfg.interface);
        apply_close(n);
        return -1;
    }
    n->dev_up = true;
    log_info("%s: up (%s backend), address %s, port %u", n->cfg.interface,
             wg_backend_name(wg_backend_of(n->dev)),
             ip_prefix_format(&addr, text), (unsigned) n->cfg.listen_port);
    return 0;
}


int
apply_snapshot(struct vpc_node *n)
{
    struct wg_peer  *eff;
    size_t           n_eff;
    int              rc;

    if (peer_set_effective(&n->peers, &n->self, &eff, &n_eff) != 0) {
        n->peers_synced = false;
        return -1;
    }
    node_relay_adjust(n, &n->peers, eff, &n_eff);   /* the paths as they are */
    rc = wg_replace_peers(n->dev, eff, n_eff);
    free(eff);
    if (rc < 0) {
        log_error("%s: applying a snapshot of %zu peers failed; will try"
                  " again", n->cfg.interface, n_eff);
        n->peers_synced = false;
        return -1;
    }
    n->peers_synced = true;
    log_info("%s: %zu WireGuard peers (snapshot)", n->cfg.interface, n_eff);
    return 0;
}


/* exactly what the delta changed: WireGuard never sees the other peers */
int
apply_delta(struct vpc_node *n, const struct peer_changes *ch)
{
    struct wg_changes  c = {
        .listen_port = -1,
        .remove = (const uint8_t (*)[WG_KEY_LEN]) ch->remove,
        .n_remove = ch->n_remove,
        .set = ch->set,
        .n_set = ch->n_set
    };

    node_relay_adjust(n, &n->peers, ch->set, &c.n_set);
    if (c.n_remove + c.n_set == 0) {
        return 0;
    }
    if (wg_apply(n->dev, &c) < 0) {
        log_error("%s: applying a delta failed; will resynchronise",
                  n->cfg.interface);
        n->peers_synced = false;
        return -1;
    }
    log_info("%s: %zu WireGuard peers set, %zu removed", n->cfg.interface,
             c.n_set, c.n_remove);
    return 0;
}
