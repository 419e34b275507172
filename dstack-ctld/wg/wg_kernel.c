/*
 * Kernel WireGuard: generic netlink family "wireguard" through libnl-genl-3,
 * the link itself over rtnetlink (netdev.c).
 *
 * A SET_DEVICE message is bounded (WG_NL_MSG_SIZE here, as wireguard-tools
 * bounds its own by the socket buffer), so a large change goes out as
 * several messages, as <linux/wireguard.h> describes: each message carries
 * as many peer fragments as fit, a peer whose allowed IPs do not all fit
 * continues in the next message under its public key again, and only its
 * first fragment carries WGPEER_F_REPLACE_ALLOWEDIPS.  The GET dump comes
 * back the same way and is stitched together by wg_peer_next().
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <linux/time_types.h>
#include <linux/wireguard.h>
#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <netlink/netlink.h>

#include "wg/wg_backend.h"

#ifndef WG_NL_MSG_SIZE          /* tests shrink it so that every peer splits */
#define WG_NL_MSG_SIZE  8192
#endif
#define WG_DUMP_TRIES   5       /* a dump the configuration changed under */

struct wg_kernel {
    struct wg_device   dev;
    struct nl_sock    *sk;
    int                family;
};

/* where the next message resumes: peer index (removals first), allowed IP */
struct cursor {
    size_t  peer;
    size_t  ip;
};

/* the state of one request, filled in by the callbacks */
struct reply {
    int              err;       /* 1 while waiting, then 0 or -errno */
    struct wg_device *dev;
    struct wg_peer  **peers;    /* GET only */
    size_t           *n;
    size_t            cap;
    int               parse_err;
    bool              interrupted;
};


static int
connect_genl(struct nl_sock **sk, int *family)
{
    int  rc;

    *sk = nl_socket_alloc();
    if (*sk == NULL) {
        return -NLE_NOMEM;
    }
    rc = genl_connect(*sk);
    if (rc == 0) {
        rc = genl_ctrl_resolve(*sk, WG_GENL_NAME);
    }
    if (rc < 0) {
        nl_socket_free(*sk);
        *sk = NULL;
        return rc;
    }
    *family = rc;
    /* ACKs are asked for where wanted, not added to dump requests too */
    nl_socket_disable_auto_ack(*sk);
    return 0;
}


bool
wg_kernel_available(void)
{
    struct nl_sock  *sk;
    int              family;

    /* resolving loads the module through its genl family alias */
    if (connect_genl(&sk, &family) < 0) {
        return false;
    }
    nl_socket_free(sk);
    return true;
}


static int
on_error(struct sockaddr_nl *nla, struct nlmsgerr *e, void *arg)
{
    (void) nla;
    ((struct reply *) arg)->err = e->error;     /* the kernel's -errno */
    return NL_STOP;
}


static int
on_done(struct nl_msg *msg, void *arg)
{
    (void) msg;
    ((struct reply *) arg)->err = 0;
    return NL_STOP;
}


/* the peers changed during the dump (NLM_F_DUMP_INTR): read on, then redo */
static int
on_interrupted(struct nl_msg *msg, void *arg)
{
    (void) msg;
    ((struct reply *) arg)->interrupted = true;
    return NL_OK;
}


/* sends msg and reads until the kernel's ACK, DONE or error */
static int
talk(struct wg_kernel *k, struct nl_msg *msg, struct reply *r,
     nl_recvmsg_msg_cb_t on_valid, const char *what)
{
    struct nl_cb  *cb;
    int            rc;

    cb = nl_cb_alloc(NL_CB_DEFAULT);
    if (cb == NULL) {
        wg_log("%s: %s: out of memory", k->dev.ifname, what);
        return -ENOMEM;
    }
    r->err = 1;
    nl_cb_err(cb, NL_CB_CUSTOM, on_error, r);
    nl_cb_set(cb, NL_CB_ACK, NL_CB_CUSTOM, on_done, r);
    nl_cb_set(cb, NL_CB_FINISH, NL_CB_CUSTOM, on_done, r);
    if (on_valid != NULL) {
        nl_cb_set(cb, NL_CB_VALID, NL_CB_CUSTOM, on_valid, r);
        nl_cb_set(cb, NL_CB_DUMP_INTR, NL_CB_CUSTOM, on_interrupted, r);
    }

    rc = nl_send_auto(k->sk, msg);
    while (rc >= 0 && r->err > 0) {
        rc = nl_recvmsgs(k->sk, cb);
    }
    nl_cb_put(cb);

    if (r->err > 0) {           /* libnl failed before the kernel answered */
        wg_log("%s: %s: %s", k->dev.ifname, what, nl_geterror(rc));
        return -EIO;
    }
    if (r->err < 0) {
        wg_log("%s: %s: %s", k->dev.ifname, what, strerror(-r->err));
    }
    return r->err;
}


static struct nl_msg *
request(struct wg_kernel *k, uint8_t cmd, int flags)
{
    struct nl_msg  *msg;

    msg = nlmsg_alloc_size(WG_NL_MSG_SIZE);
    if (msg == NULL) {
        return NULL;
    }
    if (genlmsg_put(msg, NL_AUTO_PORT, NL_AUTO_SEQ, k->family, 0, flags, cmd,
                    WG_GENL_VERSION) == NULL
        || nla_put_string(msg, WGDEVICE_A_IFNAME, k->dev.ifname) < 0)
    {
        nlmsg_free(msg);
        return NULL;
    }
    return msg;
}


/*
 * Appends the fragment of the peer at cur: 1 when the peer is complete,
 * 0 when the message is full (cur says where to resume), -EMSGSIZE when an
 * attribute nest overflows.  A fragment carries at least one allowed IP
 * unless the peer has none left, so a message never ends on a bare key.
 */
static int
put_peer(struct nl_msg *msg, const struct wg_changes *c, struct cursor *cur)
{
    bool                   remove = cur->peer < c->n_remove;
    const struct wg_peer  *p = remove ? NULL : &c->set[cur->peer - c->n_remove];
    const uint8_t         *key = remove ? c->remove[cur->peer] : p->public_key;
    struct nlattr         *peer, *ips, *ip;
    const struct ip_prefix *a;
    size_t                 first = cur->ip;
    uint32_t               flags = 0;
    socklen_t              salen;

    peer = nla_nest_start(msg, NLA_F_NESTED);
    if (peer == NULL) {
        return 0;
    }
    if (nla_put(msg, WGPEER_A_PUBLIC_KEY, WG_KEY_LEN, key) < 0) {
        goto full;
    }

    if (remove) {
        flags = WGPEER_F_REMOVE_ME;
    } else if (first == 0) {
        flags = WGPEER_F_REPLACE_ALLOWEDIPS;
        if (p->has_endpoint) {
            salen = p->endpoint.sa.sa_family == AF_INET
                    ? sizeof(p->endpoint.sin) : sizeof(p->endpoint.sin6);
            if (nla_put(msg, WGPEER_A_ENDPOINT, salen, &p->endpoint) < 0) {
                goto full;
            }
        }
        if (nla_put_u16(msg, WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL,
                        p->persistent_keepalive) < 0)
        {
            goto full;
        }
    }
    if (flags && nla_put_u32(msg, WGPEER_A_FLAGS, flags) < 0) {
        goto full;
    }

    if (!remove && first < p->n_allowed_ips) {
        ips = nla_nest_start(msg, NLA_F_NESTED | WGPEER_A_ALLOWEDIPS);
        if (ips == NULL) {
            goto full;
        }
        for (; cur->ip < p->n_allowed_ips; cur->ip++) {
            a = &p->allowed_ips[cur->ip];
            ip = nla_nest_start(msg, NLA_F_NESTED);
            if (ip == NULL) {
                break;
            }
            if (nla_put_u16(msg, WGALLOWEDIP_A_FAMILY, a->family) < 0
                || nla_put(msg, WGALLOWEDIP_A_IPADDR,
                           a->family == AF_INET ? 4 : 16, &a->addr) < 0
                || nla_put_u8(msg, WGALLOWEDIP_A_CIDR_MASK, a->len) < 0)
            {
                nla_nest_cancel(msg, ip);
                break;
            }
            if (nla_nest_end(msg, ip) < 0) {
                return -EMSGSIZE;
            }
        }
        if (cur->ip == first) {
            goto full;
        }
        if (nla_nest_end(msg, ips) < 0) {
            return -EMSGSIZE;
        }
    }

    if (nla_nest_end(msg, peer) < 0) {
        return -EMSGSIZE;
    }
    if (!remove && cur->ip < p->n_allowed_ips) {
        return 0;
    }
    cur->peer++;
    cur->ip = 0;
    return 1;

full:
    nla_nest_cancel(msg, peer);
    cur->ip = first;
    return 0;
}


static int
kernel_apply(struct wg_device *dev, const struct wg_changes *c)
{
    struct wg_kernel  *k = (struct wg_kernel *) dev;
    struct cursor      cur = { 0, 0 }, was;
    struct reply       r = { .dev = dev };
    struct nl_msg     *msg;
    struct nlattr     *peers;
    size_t             total = c->n_remove + c->n_set;
    bool               first = true, device;
    int                rc;

    do {
        msg = request(k, WG_CMD_SET_DEVICE, NLM_F_REQUEST | NLM_F_ACK);
        if (msg == NULL) {
            wg_log("%s: set device: out of memory", dev->ifname);
            return -ENOMEM;
        }

        rc = 0;
        device = first && (c->private_key != NULL || c->listen_port >= 0);
        if (first && c->private_key != NULL) {
            rc = nla_put(msg, WGDEVICE_A_PRIVATE_KEY, WG_KEY_LEN,
                         c->private_key);
        }
        if (rc == 0 && first && c->listen_port >= 0) {
            rc = nla_put_u16(msg, WGDEVICE_A_LISTEN_PORT,
                             (uint16_t) c->listen_port);
        }
        if (rc < 0) {
            rc = -EMSGSIZE;
            goto fail;
        }

        was = cur;
        if (cur.peer < total) {
            peers = nla_nest_start(msg, NLA_F_NESTED | WGDEVICE_A_PEERS);
            while (peers != NULL && cur.peer < total) {
                rc = put_peer(msg, c, &cur);
                if (rc <= 0) {
                    break;
                }
            }
            if (rc < 0 || (peers != NULL && nla_nest_end(msg, peers) < 0)) {
                rc = -EMSGSIZE;
                goto fail;
            }
            /* not even one fragment fits an empty message: never will */
            if (cur.peer == was.peer && cur.ip == was.ip && !device) {
                rc = -EMSGSIZE;
                goto fail;
            }
        }

        rc = talk(k, msg, &r, NULL, "set device");
        if (first && c->private_key != NULL) {
            explicit_bzero(nlmsg_hdr(msg), nlmsg_hdr(msg)->nlmsg_len);
        }
        nlmsg_free(msg);
        if (rc < 0) {
            return rc;
        }
        first = false;
    } while (cur.peer < total);

    return 0;

fail:
    wg_log("%s: set device: a peer does not fit a netlink message",
           dev->ifname);
    if (first && c->private_key != NULL) {
        explicit_bzero(nlmsg_hdr(msg), nlmsg_hdr(msg)->nlmsg_len);
    }
    nlmsg_free(msg);
    return rc;
}


static const struct nla_policy  device_policy[WGDEVICE_A_MAX + 1] = {
    [WGDEVICE_A_PEERS]          = { .type = NLA_NESTED },
};

static const struct nla_policy  peer_policy[WGPEER_A_MAX + 1] = {
    [WGPEER_A_PUBLIC_KEY]       = { .minlen = WG_KEY_LEN },
    [WGPEER_A_ENDPOINT]         = { .minlen = sizeof(struct sockaddr_in) },
    [WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL] = { .type = NLA_U16 },
    [WGPEER_A_LAST_HANDSHAKE_TIME] =
                          { .minlen = sizeof(struct __kernel_timespec) },
    [WGPEER_A_RX_BYTES]         = { .type = NLA_U64 },
    [WGPEER_A_TX_BYTES]         = { .type = NLA_U64 },
    [WGPEER_A_ALLOWEDIPS]       = { .type = NLA_NESTED },
};

static const struct nla_policy  allowedip_policy[WGALLOWEDIP_A_MAX + 1] = {
    [WGALLOWEDIP_A_FAMILY]      = { .type = NLA_U16 },
    [WGALLOWEDIP_A_IPADDR]      = { .minlen = 4 },
    [WGALLOWEDIP_A_CIDR_MASK]   = { .type = NLA_U8 },
};


static int
parse_allowed_ip(struct wg_peer *p, struct nlattr *attr)
{
    struct nlattr     *tb[WGALLOWEDIP_A_MAX + 1];
    struct ip_prefix  *a;

    if (nla_parse_nested(tb, WGALLOWEDIP_A_MAX, attr, allowedip_policy) < 0
        || tb[WGALLOWEDIP_A_FAMILY] == NULL || tb[WGALLOWEDIP_A_IPADDR] == NULL
        || tb[WGALLOWEDIP_A_CIDR_MASK] == NULL)
    {
        return -EBADMSG;
    }
    if (p->n_allowed_ips == WG_ALLOWED_IPS_MAX) {
        return -EOVERFLOW;
    }
    a = &p->allowed_ips[p->n_allowed_ips];
    a->family = nla_get_u16(tb[WGALLOWEDIP_A_FAMILY]);
    a->len = nla_get_u8(tb[WGALLOWEDIP_A_CIDR_MASK]);
    if (!(a->family == AF_INET && a->len <= 32
          && nla_len(tb[WGALLOWEDIP_A_IPADDR]) == 4)
        && !(a->family == AF_INET6 && a->len <= 128
             && nla_len(tb[WGALLOWEDIP_A_IPADDR]) == 16))
    {
        return -EBADMSG;
    }
    memcpy(&a->addr, nla_data(tb[WGALLOWEDIP_A_IPADDR]),
           nla_len(tb[WGALLOWEDIP_A_IPADDR]));
    p->n_allowed_ips++;
    return 0;
}


static int
parse_peer(struct reply *r, struct nlattr *attr)
{
    struct nlattr               *tb[WGPEER_A_MAX + 1], *ip;
    struct wg_peer              *p;
    struct __kernel_timespec     ts;
    const struct sockaddr       *sa;
    int                          rem, rc;

    if (nla_parse_nested(tb, WGPEER_A_MAX, attr, peer_policy) < 0
        || tb[WGPEER_A_PUBLIC_KEY] == NULL
        || nla_len(tb[WGPEER_A_PUBLIC_KEY]) != WG_KEY_LEN)
    {
        return -EBADMSG;
    }
    p = wg_peer_next(r->dev, r->peers, r->n, &r->cap,
                     nla_data(tb[WGPEER_A_PUBLIC_KEY]));
    if (p == NULL) {
        return -ENOMEM;
    }

    if (tb[WGPEER_A_ENDPOINT] != NULL) {
        sa = nla_data(tb[WGPEER_A_ENDPOINT]);
        if (sa->sa_family == AF_INET
            && nla_len(tb[WGPEER_A_ENDPOINT]) == sizeof(p->endpoint.sin))
        {
            memcpy(&p->endpoint.sin, sa, sizeof(p->endpoint.sin));
        } else if (sa->sa_family == AF_INET6
                   && nla_len(tb[WGPEER_A_ENDPOINT])
                      == sizeof(p->endpoint.sin6))
        {
            memcpy(&p->endpoint.sin6, sa, sizeof(p->endpoint.sin6));
        } else {
            return -EBADMSG;
        }
        p->has_endpoint = true;
    }
    if (tb[WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL] != NULL) {
        p->persistent_keepalive =
            nla_get_u16(tb[WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL]);
    }
    if (tb[WGPEER_A_LAST_HANDSHAKE_TIME] != NULL) {
        memcpy(&ts, nla_data(tb[WGPEER_A_LAST_HANDSHAKE_TIME]), sizeof(ts));
        p->last_handshake.tv_sec = ts.tv_sec;
        p->last_handshake.tv_nsec = ts.tv_nsec;
    }
    if (tb[WGPEER_A_RX_BYTES] != NULL) {
        p->rx_bytes = nla_get_u64(tb[WGPEER_A_RX_BYTES]);
    }
    if (tb[WGPEER_A_TX_BYTES] != NULL) {
        p->tx_bytes = nla_get_u64(tb[WGPEER_A_TX_BYTES]);
    }
    if (tb[WGPEER_A_ALLOWEDIPS] != NULL) {
        nla_for_each_nested(ip, tb[WGPEER_A_ALLOWEDIPS], rem) {
            rc = parse_allowed_ip(p, ip);
            if (rc < 0) {
                return rc;
            }
        }
    }
    return 0;
}


/* one message of the GET dump; errors are kept and the dump drained */
static int
on_device(struct nl_msg *msg, void *arg)
{
    struct reply   *r = arg;
    struct nlattr  *tb[WGDEVICE_A_MAX + 1], *peer;
    int             rem, rc;

    if (r->parse_err != 0) {
        return NL_SKIP;
    }
    if (genlmsg_parse(nlmsg_hdr(msg), 0, tb, WGDEVICE_A_MAX, device_policy)
        < 0)
    {
        r->parse_err = -EBADMSG;
        return NL_SKIP;
    }
    if (tb[WGDEVICE_A_PEERS] != NULL) {
        nla_for_each_nested(peer, tb[WGDEVICE_A_PEERS], rem) {
            rc = parse_peer(r, peer);
            if (rc < 0) {
                r->parse_err = rc;
                break;
            }
        }
    }
    return NL_SKIP;
}


static int
kernel_get_peers(struct wg_device *dev, struct wg_peer **peers, size_t *n)
{
    struct wg_kernel  *k = (struct wg_kernel *) dev;
    struct reply       r = { .dev = dev, .peers = peers, .n = n };
    struct nl_msg     *msg;
    int                rc, tries = 0;

    do {
        msg = request(k, WG_CMD_GET_DEVICE, NLM_F_REQUEST | NLM_F_DUMP);
        if (msg == NULL) {
            wg_log("%s: get device: out of memory", dev->ifname);
            return -ENOMEM;
        }
        *n = 0;
        r.interrupted = false;
        rc = talk(k, msg, &r, on_device, "get device");
        nlmsg_free(msg);
    } while (rc == 0 && r.parse_err == 0 && r.interrupted
             && ++tries < WG_DUMP_TRIES);

    if (rc == 0 && r.interrupted) {
        wg_log("%s: get device: the peers keep changing during the dump",
               dev->ifname);
        return -EAGAIN;
    }
    if (rc == 0 && r.parse_err != 0) {
        if (r.parse_err == -EOVERFLOW) {
            wg_log("%s: get device: a peer has more than %d allowed IPs",
                   dev->ifname, WG_ALLOWED_IPS_MAX);
        } else if (r.parse_err == -EBADMSG) {
            wg_log("%s: get device: malformed reply", dev->ifname);
        }                       /* else wg_peer_next() said why */
        rc = r.parse_err;
    }
    return rc;
}


static void
kernel_close(struct wg_device *dev)
{
    struct wg_kernel  *k = (struct wg_kernel *) dev;

    nl_socket_free(k->sk);
    free(k);
}


static const struct wg_backend_ops  kernel_ops = {
    .kind = WG_BACKEND_KERNEL,
    .apply = kernel_apply,
    .get_peers = kernel_get_peers,
    .close = kernel_close,
};


int
wg_kernel_open(const char *ifname, struct wg_device **dev)
{
    struct wg_kernel  *k;
    int                rc;

    k = calloc(1, sizeof(*k));
    if (k == NULL) {
        wg_log("%s: out of memory", ifname);
        return -ENOMEM;
    }
    k->dev.ops = &kernel_ops;
    strcpy(k->dev.ifname, ifname);      /* checked by wg_open() */

    rc = connect_genl(&k->sk, &k->family);
    if (rc < 0) {
        wg_log("%s: kernel WireGuard (genl family %s): %s",
               ifname, WG_GENL_NAME, nl_geterror(rc));
        free(k);
        return -EPROTONOSUPPORT;
    }

    rc = netdev_create(ifname, "wireguard");
    if (rc < 0) {
        nl_socket_free(k->sk);
        free(k);
        return rc;
    }
    *dev = &k->dev;
    return 0;
}
