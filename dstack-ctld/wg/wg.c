/*
 * The backend-neutral half of the WireGuard layer: backend choice, checks
 * on every change before a backend sees it, and the snapshot as a delta.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"
#include "wg/wg_backend.h"


void
wg_log(const char *fmt, ...)
{
    char     line[512];
    va_list  ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "wg: %s\n", line);
}


/* wg-quick's rule; the name also ends up in a socket path and argv */
static bool
ifname_valid(const char *s)
{
    size_t  n = strlen(s);

    return n >= 1 && n < IFNAMSIZ
           && strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                        "0123456789_=+.-") == n
           && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}


int
wg_open(struct wg_device **dev, const char *ifname, enum wg_backend backend,
        unsigned flags)
{
    *dev = NULL;

    if (!ifname_valid(ifname)) {
        wg_log("invalid interface name");
        return -EINVAL;
    }

    if (backend == WG_BACKEND_AUTO) {
        /* a running userspace instance owns the name, whatever the kernel */
        if (!wg_uapi_running(ifname) && wg_kernel_available()) {
            backend = WG_BACKEND_KERNEL;
        } else {
            backend = WG_BACKEND_UAPI;
        }
    }

    if (backend == WG_BACKEND_KERNEL) {
        return wg_kernel_open(ifname, dev);
    }
    return wg_uapi_open(ifname, flags & WG_OPEN_START_USERSPACE, dev);
}


void
wg_close(struct wg_device *dev)
{
    if (dev != NULL) {
        dev->ops->close(dev);
    }
}


const char *
wg_ifname(const struct wg_device *dev)
{
    return dev->ifname;
}


enum wg_backend
wg_backend_of(const struct wg_device *dev)
{
    return dev->ops->kind;
}


const char *
wg_backend_name(enum wg_backend backend)
{
    switch (backend) {
    case WG_BACKEND_KERNEL:  return "kernel";
    case WG_BACKEND_UAPI:    return "uapi";
    case WG_BACKEND_AUTO:    break;
    }
    return "auto";
}


static int
peer_check(const struct wg_device *dev, const struct wg_peer *p)
{
    const struct ip_prefix  *a;
    size_t                   i;

    if (p->n_allowed_ips > WG_ALLOWED_IPS_MAX) {
        wg_log("%s: a peer has more than %d allowed IPs",
               dev->ifname, WG_ALLOWED_IPS_MAX);
        return -EINVAL;
    }
    for (i = 0; i < p->n_allowed_ips; i++) {
        a = &p->allowed_ips[i];
        if ((a->family != AF_INET || a->len > 32)
            && (a->family != AF_INET6 || a->len > 128))
        {
            wg_log("%s: a peer has an invalid allowed IP", dev->ifname);
            return -EINVAL;
        }
    }
    if (p->has_endpoint
        && !(p->endpoint.sa.sa_family == AF_INET && p->endpoint.sin.sin_port)
        && !(p->endpoint.sa.sa_family == AF_INET6
             && p->endpoint.sin6.sin6_port))
    {
        wg_log("%s: a peer has an invalid endpoint", dev->ifname);
        return -EINVAL;
    }
    return 0;
}


static int
key_cmp(const void *a, const void *b)
{
    return memcmp(*(const uint8_t *const *) a, *(const uint8_t *const *) b,
                  WG_KEY_LEN);
}


/*
 * The keys of peers[] sorted in *sorted (free() it), or -EINVAL if one
 * appears twice: which of the two should win is not ours to guess.
 */
static int
keys_sorted(const struct wg_device *dev, const struct wg_peer *peers, size_t n,
            const uint8_t ***sorted)
{
    const uint8_t  **keys;
    size_t           i;

    keys = malloc((n ? n : 1) * sizeof(*keys));
    if (keys == NULL) {
        wg_log("%s: out of memory", dev->ifname);
        return -ENOMEM;
    }
    for (i = 0; i < n; i++) {
        keys[i] = peers[i].public_key;
    }
    qsort(keys, n, sizeof(*keys), key_cmp);
    for (i = 1; i < n; i++) {
        if (memcmp(keys[i - 1], keys[i], WG_KEY_LEN) == 0) {
            wg_log("%s: the same peer appears twice in one change",
                   dev->ifname);
            free(keys);
            return -EINVAL;
        }
    }
    *sorted = keys;
    return 0;
}


int
wg_apply(struct wg_device *dev, const struct wg_changes *c)
{
    const uint8_t  **keys;
    size_t           i;
    int              rc;

    if (c->listen_port < -1 || c->listen_port > 65535) {
        wg_log("%s: invalid listen port %d", dev->ifname, c->listen_port);
        return -EINVAL;
    }
    for (i = 0; i < c->n_set; i++) {
        rc = peer_check(dev, &c->set[i]);
        if (rc < 0) {
            return rc;
        }
    }
    if (c->n_set > 1) {
        rc = keys_sorted(dev, c->set, c->n_set, &keys);
        if (rc < 0) {
            return rc;
        }
        free(keys);
    }
    return dev->ops->apply(dev, c);
}


int
wg_set_device(struct wg_device *dev, const uint8_t private_key[WG_KEY_LEN],
              uint16_t listen_port)
{
    struct wg_changes  c = { .private_key = private_key,
                             .listen_port = listen_port };

    return wg_apply(dev, &c);
}


int
wg_set_peer(struct wg_device *dev, const struct wg_peer *peer)
{
    struct wg_changes  c = { .listen_port = -1, .set = peer, .n_set = 1 };

    return wg_apply(dev, &c);
}


int
wg_remove_peer(struct wg_device *dev, const uint8_t public_key[WG_KEY_LEN])
{
    struct wg_changes  c = { .listen_port = -1,
                             .remove = (const uint8_t (*)[WG_KEY_LEN])
                                       public_key,
                             .n_remove = 1 };

    return wg_apply(dev, &c);
}


int
wg_replace_peers(struct wg_device *dev, const struct wg_peer *peers, size_t n)
{
    struct wg_changes   c = { .listen_port = -1, .set = peers, .n_set = n };
    struct wg_peer     *cur = NULL;
    const uint8_t     **keys = NULL;
    uint8_t           (*gone)[WG_KEY_LEN] = NULL;
    const uint8_t      *key;
    size_t              n_cur, i;
    int                 rc;

    for (i = 0; i < n; i++) {
        rc = peer_check(dev, &peers[i]);
        if (rc < 0) {
            return rc;
        }
    }
    rc = keys_sorted(dev, peers, n, &keys);
    if (rc < 0) {
        return rc;
    }

    /*
     * Remove only what is not in the snapshot instead of REPLACE_PEERS /
     * replace_peers=true: those drop every peer first, and with it every
     * session, so a node resyncing after a server restart would cut all
     * its tunnels for nothing.
     */
    rc = wg_get_peers(dev, &cur, &n_cur);
    if (rc < 0) {
        goto out;
    }
    gone = malloc((n_cur ? n_cur : 1) * sizeof(*gone));
    if (gone == NULL) {
        wg_log("%s: out of memory", dev->ifname);
        rc = -ENOMEM;
        goto out;
    }
    for (i = 0; i < n_cur; i++) {
        key = cur[i].public_key;
        if (bsearch(&key, keys, n, sizeof(*keys), key_cmp) == NULL) {
            memcpy(gone[c.n_remove++], key, WG_KEY_LEN);
        }
    }
    c.remove = (const uint8_t (*)[WG_KEY_LEN]) gone;

    rc = dev->ops->apply(dev, &c);

out:
    free(gone);
    free(cur);
    free(keys);
    return rc;
}


int
wg_get_peers(struct wg_device *dev, struct wg_peer **peers, size_t *n)
{
    int  rc;

    *peers = NULL;
    *n = 0;
    rc = dev->ops->get_peers(dev, peers, n);
    if (rc < 0) {
        free(*peers);
        *peers = NULL;
        *n = 0;
    }
    return rc;
}


struct wg_peer *
wg_peer_next(struct wg_device *dev, struct wg_peer **peers, size_t *n,
             size_t *cap, const uint8_t key[WG_KEY_LEN])
{
    struct wg_peer  *p;
    size_t           ncap;

    if (*n > 0 && memcmp((*peers)[*n - 1].public_key, key, WG_KEY_LEN) == 0) {
        return &(*peers)[*n - 1];
    }
    if (*n == WG_PEERS_MAX) {
        wg_log("%s: more than %u peers", dev->ifname, WG_PEERS_MAX);
        return NULL;
    }
    if (*n == *cap) {
        ncap = *cap ? *cap * 2 : 64;
        p = realloc(*peers, ncap * sizeof(*p));
        if (p == NULL) {
            wg_log("%s: out of memory", dev->ifname);
            return NULL;
        }
        *peers = p;
        *cap = ncap;
    }
    p = &(*peers)[(*n)++];
    memset(p, 0, sizeof(*p));
    memcpy(p->public_key, key, WG_KEY_LEN);
    return p;
}


int
wg_endpoint_parse(const char *s, struct wg_peer *peer)
{
    char         host[INET6_ADDRSTRLEN];
    host_port_t  hp;

    if (!parse_host_port(s, strlen(s), &hp) || hp.port == 0
        || hp.host_len >= sizeof(host))
    {
        return -EINVAL;
    }
    memcpy(host, hp.host, hp.host_len);
    host[hp.host_len] = '\0';

    memset(&peer->endpoint, 0, sizeof(peer->endpoint));
    if (!hp.bracketed && inet_pton(AF_INET, host, &peer->endpoint.sin.sin_addr)
                       == 1)
    {
        peer->endpoint.sin.sin_family = AF_INET;
        peer->endpoint.sin.sin_port = htons(hp.port);
    } else if (hp.bracketed
               && inet_pton(AF_INET6, host, &peer->endpoint.sin6.sin6_addr)
                  == 1)
    {
        peer->endpoint.sin6.sin6_family = AF_INET6;
        peer->endpoint.sin6.sin6_port = htons(hp.port);
    } else {
        return -EINVAL;
    }
    peer->has_endpoint = true;
    return 0;
}


const char *
wg_endpoint_format(const struct wg_peer *peer, char buf[WG_ENDPOINT_STRLEN])
{
    char  host[INET6_ADDRSTRLEN];

    if (!peer->has_endpoint) {
        return "(none)";
    }
    if (peer->endpoint.sa.sa_family == AF_INET) {
        inet_ntop(AF_INET, &peer->endpoint.sin.sin_addr, host, sizeof(host));
        snprintf(buf, WG_ENDPOINT_STRLEN, "%s:%u",
                 host, ntohs(peer->endpoint.sin.sin_port));
    } else {
        inet_ntop(AF_INET6, &peer->endpoint.sin6.sin6_addr, host,
                  sizeof(host));
        snprintf(buf, WG_ENDPOINT_STRLEN, "[%s]:%u",
                 host, ntohs(peer->endpoint.sin6.sin6_port));
    }
    return buf;
}
