/*
 * Network interfaces over rtnetlink (libnl-route-3), shared by both
 * WireGuard backends: create and delete a link, give it its one address,
 * set its MTU and bring it up.  Never shells out to ip(8).
 *
 * Every function returns 0 or a negative errno after logging one line.
 */

#ifndef CTLD_NETDEV_H
#define CTLD_NETDEV_H

#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>

#define NETDEV_MTU_DEFAULT  1420    /* 1500 less WireGuard's IPv6 overhead */

/* "255.255.255.255/32" or the longest IPv6 form with "/128", terminated */
#define IP_PREFIX_STRLEN    (INET6_ADDRSTRLEN + 4)

/* An IPv4 or IPv6 address with a prefix length. */
struct ip_prefix {
    int                  family;        /* AF_INET or AF_INET6 */
    uint8_t              len;           /* 0..32 or 0..128 */
    union {
        struct in_addr   v4;
        struct in6_addr  v6;
    } addr;
};

/* strict "a.b.c.d/n" or "x:y::z/n"; -EINVAL (and no log) when malformed */
int          ip_prefix_parse(const char *s, struct ip_prefix *p);
/* no host bits set: what a route or a WireGuard allowed IP names */
bool         ip_prefix_is_network(const struct ip_prefix *p);
const char  *ip_prefix_format(const struct ip_prefix *p,
                              char buf[IP_PREFIX_STRLEN]);
/*
 * NULL when p can be an interface's own address (a host address with the
 * prefix it lives in, such as 100.128.0.5/10), else why not: unspecified,
 * loopback, multicast, link-local, the network or broadcast address of the
 * prefix, a /0.
 */
const char  *ip_prefix_host_error(const struct ip_prefix *p);

/*
 * Creates the link with the given kind ("wireguard"); an existing link of
 * that kind is fine, one of another kind is -EEXIST.
 */
int  netdev_create(const char *ifname, const char *kind);
int  netdev_delete(const char *ifname);

/*
 * Makes addr the link's only address of its family, so the kernel installs
 * the prefix route with it; -EINVAL when ip_prefix_host_error() refuses it.
 */
int  netdev_set_address(const char *ifname, const struct ip_prefix *addr);

/* sets the MTU (NETDEV_MTU_DEFAULT when 0) and brings the link up */
int  netdev_up(const char *ifname, unsigned mtu);

#endif
