/* Links and addresses over rtnetlink with libnl-route-3. */

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <net/if.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>

#include "parse.h"
#include "wg/netdev.h"
#include "wg/wg_backend.h"         /* wg_log() */


int
ip_prefix_parse(const char *s, struct ip_prefix *p)
{
    char           host[INET6_ADDRSTRLEN];
    const char    *slash;
    uint64_t       n;

    slash = strchr(s, '/');
    if (slash == NULL || (size_t) (slash - s) >= sizeof(host)) {
        return -EINVAL;
    }
    memcpy(host, s, slash - s);
    host[slash - s] = '\0';

    memset(p, 0, sizeof(*p));
    if (inet_pton(AF_INET, host, &p->addr.v4) == 1) {
        p->family = AF_INET;
    } else if (inet_pton(AF_INET6, host, &p->addr.v6) == 1) {
        p->family = AF_INET6;
    } else {
        return -EINVAL;
    }

    if (!parse_uint(slash + 1, strlen(slash + 1),
                    p->family == AF_INET ? 32 : 128, &n))
    {
        return -EINVAL;
    }
    p->len = (uint8_t) n;
    return 0;
}


static const uint8_t *
prefix_bytes(const struct ip_prefix *p, size_t *n)
{
    *n = p->family == AF_INET ? 4 : 16;
    return p->family == AF_INET ? (const uint8_t *) &p->addr.v4
                                : p->addr.v6.s6_addr;
}


/* are the bits past the prefix all zero (ones: false) / all one (true)? */
static bool
host_bits_all(const struct ip_prefix *p, bool ones)
{
    size_t          n, i;
    const uint8_t  *b = prefix_bytes(p, &n);
    uint8_t         mask, want;

    for (i = p->len / 8; i < n; i++) {
        mask = i == p->len / 8 ? (uint8_t) (0xff >> (p->len % 8)) : 0xff;
        want = ones ? mask : 0;
        if ((b[i] & mask) != want) {
            return false;
        }
    }
    return true;
}


bool
ip_prefix_is_network(const struct ip_prefix *p)
{
    return host_bits_all(p, false);
}


const char *
ip_prefix_format(const struct ip_prefix *p, char buf[IP_PREFIX_STRLEN])
{
    size_t  n;

    if (inet_ntop(p->family, &p->addr, buf, INET6_ADDRSTRLEN) == NULL) {
        return "?";
    }
    n = strlen(buf);
    snprintf(buf + n, IP_PREFIX_STRLEN - n, "/%u", p->len);
    return buf;
}


const char *
ip_prefix_host_error(const struct ip_prefix *p)
{
    const uint8_t  *b;
    size_t          n;

    b = prefix_bytes(p, &n);

    if (p->len == 0) {
        return "is a /0, which takes in every address";
    }

    if (p->family == AF_INET) {
        if (b[0] == 0) {
            return "is in 0.0.0.0/8";
        }
        if (b[0] == 127) {
            return "is a loopback address";
        }
        if (b[0] >= 224) {
            return "is multicast, reserved or broadcast";
        }
        if (b[0] == 169 && b[1] == 254) {
            return "is link-local";
        }
        /* /31 and /32 have no network or broadcast address (RFC 3021) */
        if (p->len < 31 && host_bits_all(p, false)) {
            return "is the network address of its prefix";
        }
        if (p->len < 31 && host_bits_all(p, true)) {
            return "is the broadcast address of its prefix";
        }
        return NULL;
    }

    if (IN6_IS_ADDR_UNSPECIFIED(&p->addr.v6)) {
        return "is the unspecified address";
    }
    if (IN6_IS_ADDR_LOOPBACK(&p->addr.v6)) {
        return "is the loopback address";
    }
    if (IN6_IS_ADDR_MULTICAST(&p->addr.v6)) {
        return "is multicast";
    }
    if (IN6_IS_ADDR_LINKLOCAL(&p->addr.v6)) {
        return "is link-local";
    }
    if (IN6_IS_ADDR_V4MAPPED(&p->addr.v6)) {
        return "is an IPv4-mapped address";
    }
    if (p->len < 127 && host_bits_all(p, false)) {
        return "is the subnet-router anycast address of its prefix";
    }
    return NULL;
}


/* libnl-route reports libnl codes; callers act on a few as errnos */
static int
nl_errno(int nlerr)
{
    switch (-nlerr) {
    case NLE_EXIST:         return -EEXIST;
    case NLE_NODEV:
    case NLE_OBJ_NOTFOUND:  return -ENODEV;
    case NLE_PERM:          return -EPERM;
    case NLE_NOMEM:         return -ENOMEM;
    case NLE_OPNOTSUPP:     return -EOPNOTSUPP;
    case NLE_INVAL:         return -EINVAL;
    default:                return -EIO;
    }
}


static struct nl_sock *
route_socket(const char *ifname)
{
    struct nl_sock  *sk;
    int              rc;

    sk = nl_socket_alloc();
    if (sk == NULL) {
        wg_log("%s: rtnetlink socket: out of memory", ifname);
        return NULL;
    }
    rc = nl_connect(sk, NETLINK_ROUTE);
    if (rc < 0) {
        wg_log("%s: rtnetlink socket: %s", ifname, nl_geterror(rc));
        nl_socket_free(sk);
        return NULL;
    }
    return sk;
}


static int
link_get(struct nl_sock *sk, const char *ifname, struct rtnl_link **link)
{
    int  rc;

    rc = rtnl_link_get_kernel(sk, 0, ifname, link);
    if (rc < 0) {
        wg_log("%s: %s", ifname, nl_geterror(rc));
        return nl_errno(rc);
    }
    return 0;
}


/* a connected route socket and an empty link object to describe ifname */
static int
link_request(const char *ifname, struct nl_sock **sk, struct rtnl_link **link)
{
    *sk = route_socket(ifname);
    if (*sk == NULL) {
        return -EIO;
    }
    *link = rtnl_link_alloc();
    if (*link == NULL) {
        wg_log("%s: out of memory", ifname);
        nl_socket_free(*sk);
        return -ENOMEM;
    }
    return 0;
}


int
netdev_create(const char *ifname, const char *kind)
{
    struct nl_sock    *sk;
    struct rtnl_link  *link, *cur = NULL;
    const char        *cur_kind;
    int                rc;

    rc = link_request(ifname, &sk, &link);
    if (rc < 0) {
        return rc;
    }
    rtnl_link_set_name(link, ifname);
    rc = rtnl_link_set_type(link, kind);
    if (rc < 0) {
        wg_log("%s: link kind %s: %s", ifname, kind, nl_geterror(rc));
        rc = nl_errno(rc);
        goto out;
    }

    rc = rtnl_link_add(sk, link, NLM_F_CREATE | NLM_F_EXCL);
    if (rc == 0) {
        goto out;
    }
    if (rc != -NLE_EXIST) {
        wg_log("%s: creating a link of kind %s: %s",
               ifname, kind, nl_geterror(rc));
        rc = nl_errno(rc);
        goto out;
    }

    /* there already: ours from an earlier run, or someone else's */
    rc = link_get(sk, ifname, &cur);
    if (rc < 0) {
        goto out;
    }
    cur_kind = rtnl_link_get_type(cur);
    if (cur_kind == NULL || strcmp(cur_kind, kind) != 0) {
        wg_log("%s: exists as a link of kind %s, not %s",
               ifname, cur_kind ? cur_kind : "(none)", kind);
        rc = -EEXIST;
    }

out:
    rtnl_link_put(cur);
    rtnl_link_put(link);
    nl_socket_free(sk);
    return rc;
}


int
netdev_delete(const char *ifname)
{
    struct nl_sock    *sk;
    struct rtnl_link  *link;
    int                rc;

    rc = link_request(ifname, &sk, &link);
    if (rc < 0) {
        return rc;
    }
    rtnl_link_set_name(link, ifname);
    rc = rtnl_link_delete(sk, link);
    if (rc < 0) {
        wg_log("%s: deleting the link: %s", ifname, nl_geterror(rc));
        rc = nl_errno(rc);
    }
    rtnl_link_put(link);
    nl_socket_free(sk);
    return rc;
}


static bool
addr_equal(struct rtnl_addr *a, const struct ip_prefix *p)
{
    struct nl_addr  *local = rtnl_addr_get_local(a);
    const uint8_t   *want;
    size_t           n;

    want = prefix_bytes(p, &n);
    return local != NULL
           && rtnl_addr_get_prefixlen(a) == p->len
           && nl_addr_get_len(local) == n
           && memcmp(nl_addr_get_binary_addr(local), want, n) == 0;
}


int
netdev_set_address(const char *ifname, const struct ip_prefix *p)
{
    struct nl_sock    *sk;
    struct rtnl_link  *link = NULL;
    struct nl_cache   *cache = NULL;
    struct nl_object  *obj;
    struct rtnl_addr  *a, *want = NULL;
    struct nl_addr    *local = NULL;
    const uint8_t     *bytes;
    const char        *why;
    char               text[IP_PREFIX_STRLEN];
    bool               have = false;
    size_t             n;
    int                ifindex, rc;

    ip_prefix_format(p, text);
    why = ip_prefix_host_error(p);
    if (why != NULL) {
        wg_log("%s: refusing address %s: %s", ifname, text, why);
        return -EINVAL;
    }

    sk = route_socket(ifname);
    if (sk == NULL) {
        return -EIO;
    }
    rc = link_get(sk, ifname, &link);
    if (rc < 0) {
        goto out;
    }
    ifindex = rtnl_link_get_ifindex(link);

    rc = rtnl_addr_alloc_cache(sk, &cache);
    if (rc < 0) {
        wg_log("%s: reading addresses: %s", ifname, nl_geterror(rc));
        rc = nl_errno(rc);
        goto out;
    }

    /*
     * Stale addresses (an earlier join) go first: deleting a primary
     * address after adding the new one would take the new one, then a
     * secondary, with it unless promote_secondaries is set.
     */
    for (obj = nl_cache_get_first(cache); obj; obj = nl_cache_get_next(obj)) {
        a = (struct rtnl_addr *) obj;
        if (rtnl_addr_get_ifindex(a) != ifindex
            || rtnl_addr_get_family(a) != p->family)
        {
            continue;
        }
        if (addr_equal(a, p)) {
            have = true;
            continue;
        }
        rc = rtnl_addr_delete(sk, a, 0);
        if (rc < 0) {
            wg_log("%s: removing a stale address: %s",
                   ifname, nl_geterror(rc));
            rc = nl_errno(rc);
            goto out;
        }
    }
    rc = 0;
    if (have) {
        goto out;
    }

    bytes = prefix_bytes(p, &n);
    want = rtnl_addr_alloc();
    local = nl_addr_build(p->family, bytes, n);
    if (want == NULL || local == NULL) {
        wg_log("%s: out of memory", ifname);
        rc = -ENOMEM;
        goto out;
    }
    nl_addr_set_prefixlen(local, p->len);
    rtnl_addr_set_ifindex(want, ifindex);
    rc = rtnl_addr_set_local(want, local);
    if (rc == 0) {
        rtnl_addr_set_prefixlen(want, p->len);
        rc = rtnl_addr_add(sk, want, 0);
    }
    if (rc < 0) {
        wg_log("%s: adding address %s: %s", ifname, text, nl_geterror(rc));
        rc = nl_errno(rc);
    }

out:
    nl_addr_put(local);
    rtnl_addr_put(want);
    nl_cache_free(cache);
    rtnl_link_put(link);
    nl_socket_free(sk);
    return rc;
}


int
netdev_up(const char *ifname, unsigned mtu)
{
    struct nl_sock    *sk;
    struct rtnl_link  *link = NULL, *change;
    int                rc;

    rc = link_request(ifname, &sk, &change);
    if (rc < 0) {
        return rc;
    }
    rc = link_get(sk, ifname, &link);
    if (rc < 0) {
        goto out;
    }
    rtnl_link_set_mtu(change, mtu ? mtu : NETDEV_MTU_DEFAULT);
    rtnl_link_set_flags(change, IFF_UP);
    rc = rtnl_link_change(sk, link, change, 0);
    if (rc < 0) {
        wg_log("%s: setting MTU and up: %s", ifname, nl_geterror(rc));
        rc = nl_errno(rc);
    }

out:
    rtnl_link_put(link);
    rtnl_link_put(change);
    nl_socket_free(sk);
    return rc;
}
