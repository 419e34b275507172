/*
 * The path to the hub (--transport auto|udp|relay) and the relay client.
 *
 * One thread, started once the node has joined and its interface is up,
 * owns a loopback UDP socket that stands in for the hub: on the relay,
 * WireGuard's hub peer has that socket as its endpoint, and the thread
 * carries what WireGuard sends to it through one upgraded stream to the
 * server's relay endpoint (lib/relay_wire.h), and back.  On UDP the
 * socket is idle and the hub peer has the hub's own endpoint.
 *
 * auto: UDP when the hub has an endpoint and something comes back from it
 * (a handshake, an answer to a probe) within HANDSHAKE_WAIT_MS; otherwise, and once nothing has come from the hub
 * for two keepalive intervals (a probe is sent after one), the relay.
 * The relay is kept from then on (going back would lose traffic each time
 * UDP is tried and still fails), unless the relay endpoint cannot be
 * reached at all: then UDP is tried again.
 *
 * The stream, when cut, is opened again at once, then after backoff
 * doubling from 50 ms up to 500 ms: traffic resumes within about half a
 * second of the path being back.  What WireGuard sends meanwhile stays in
 * the stream's fixed queue and goes first on the new stream, so that a
 * TCP connection inside the tunnel, whose retransmissions back off while
 * the path is cut, hears an answer then rather than at its next try.
 *
 * A direct peer (another node, both with endpoints) that has had traffic
 * to send for DIRECT_WAIT_MS without ever completing a handshake is given
 * up: its /32 goes, and its traffic follows the pool route to the hub.
 * The other side, sending nothing over a path that does not work either,
 * does the same, so the pair ends up through the hub on both sides.
 *
 * The main thread computes the peers and applies them; node_relay_adjust()
 * gives the hub entry the endpoint of the current path, and the thread
 * sets it in the device when the path changes (and again if something
 * else set it back).
 */

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "lib/http_upgrade.h"
#include "lib/log.h"
#include "lib/relay_wire.h"
#include "node/node.h"

/* two of WireGuard's handshake attempts (REKEY_TIMEOUT, 5 s): the hub may
 * learn of this node a moment after it starts */
#define HANDSHAKE_WAIT_MS   12000
#define TICK_MS             250
#define CHECK_MS            1000
#define RETRY_FIRST_MS      50
#define RETRY_MAX_MS        500
#define RETRIES_LOGGED      8
/* a stream that lived this long was a working one: its loss is retried at
 * once; one that ends sooner (another daemon with this node's token, a
 * server that refuses it after the upgrade) backs off as a failed open */
#define STREAM_STABLE_MS    10000
/* a relay that cannot be opened for this long: try UDP again (a gateway
 * restart is over well before) */
#define RELAY_GIVE_UP_MS    30000
#define OPEN_TIMEOUT_MS     10000
#define PROBE_PORT          9       /* discard: the hub answers "unreachable" */
#define DIRECT_WAIT_MS      15000
#define DIRECT_MAX          256     /* direct peers followed at once */

/* a direct peer waiting for its first handshake */
struct direct {
    uint8_t   key[WG_KEY_LEN];
    uint64_t  since;            /* when it first had traffic (mono) */
};

struct node_relay {
    struct vpc_node     *n;
    pthread_t            thread;
    pthread_mutex_t      lock;
    int                  wake;      /* eventfd: stop */
    int                  udp;       /* WireGuard's hub endpoint on the relay */
    struct sockaddr_in   local;     /* its address */

    /* set by the main thread (node_relay_adjust), under lock */
    bool                 have_hub;
    struct wg_peer       hub;       /* with the hub's own endpoint */
    char                 token[TOKEN_HEX_LEN + 1];
    struct in_addr       hub_address;
    uint8_t            (*failed)[WG_KEY_LEN];  /* direct peers given up */
    size_t               n_failed;

    /* the thread's own */
    struct wg_device    *dev;
    bool                 open;
    struct http_upgrade  up;
    unsigned             attempt;
    uint64_t             retry_at;
    uint64_t             failing_since; /* first failed open in a row (mono) */
    uint64_t             opened_at;     /* the stream's (mono) */
    uint64_t             udp_since;     /* when UDP was chosen (mono) */
    uint64_t             rx;            /* from the hub, last seen */
    uint64_t             rx_at;         /* when it last grew (mono) */
    uint64_t             probe_at;
    struct direct        waiting[DIRECT_MAX];
    size_t               n_waiting;
    struct relay_conn    conn;
};


enum node_transport
node_relay_transport(const struct vpc_node *n, time_t *since)
{
    enum node_transport  t;

    if (n->relay == NULL) {
        *since = n->hub_transport_since;
        return n->hub_transport;
    }
    pthread_mutex_lock(&n->relay->lock);
    t = n->hub_transport;
    *since = n->hub_transport_since;
    pthread_mutex_unlock(&n->relay->lock);
    return t;
}


static void
set_transport(struct node_relay *r, enum node_transport t, const char *why)
{
    struct vpc_node  *n = r->n;

    pthread_mutex_lock(&r->lock);
    n->hub_transport = t;
    n->hub_transport_since = time(NULL);
    pthread_mutex_unlock(&r->lock);
    log_info("the path to the hub: %s (%s)", t == NODE_TRANSPORT_RELAY
             ? "the relay through the mesh" : "UDP", why);
}


static bool
given_up(const struct node_relay *r, const uint8_t key[WG_KEY_LEN])
{
    for (size_t i = 0; i < r->n_failed; i++) {
        if (memcmp(r->failed[i], key, WG_KEY_LEN) == 0) {
            return true;
        }
    }
    return false;
}


void
node_relay_adjust(struct vpc_node *n, const struct peer_set *s,
                  struct wg_peer *eff, size_t *n_eff)
{
    struct node_relay      *r = n->relay;
    const struct vpc_peer  *hub = peer_set_hub(s);
    struct wg_peer         *w = NULL;
    size_t                  k = 0;

    if (r != NULL) {
        /* the direct peers given up go through the hub, as the
         * reachability rule has it for those without an endpoint */
        pthread_mutex_lock(&r->lock);
        for (size_t i = 0; i < *n_eff; i++) {
            if (!given_up(r, eff[i].public_key)) {
                eff[k++] = eff[i];
            }
        }
        *n_eff = k;
        pthread_mutex_unlock(&r->lock);
    }
    for (size_t i = 0; hub != NULL && i < *n_eff; i++) {
        if (memcmp(eff[i].public_key, hub->key, WG_KEY_LEN) == 0) {
            w = &eff[i];
            break;
        }
    }
    if (w == NULL) {
        return;
    }
    if (r == NULL) {
        return;
    }
    pthread_mutex_lock(&r->lock);
    r->hub = *w;
    r->have_hub = true;
    r->hub_address = hub->address;
    memcpy(r->token, n->state.token, sizeof(r->token));
    if (n->hub_transport == NODE_TRANSPORT_RELAY) {
        w->has_endpoint = true;
        memcpy(&w->endpoint.sin, &r->local, sizeof(r->local));
    }
    pthread_mutex_unlock(&r->lock);
}


bool
node_relay_withdraw(struct vpc_node *n)
{
    time_t  since;

    if (node_relay_transport(n, &since) != NODE_TRANSPORT_RELAY
        || n->cfg.endpoint == NULL)
    {
        return false;
    }
    log_info("on the relay, UDP to this node's endpoint %s does not come"
             " through either: withdrawing it, every node goes through the"
             " hub", n->cfg.endpoint);
    free(n->cfg.endpoint);
    n->cfg.endpoint = NULL;
    n->self.has_endpoint = false;
    /* as any node without an endpoint: the hub must be able to reach it */
    n->self.keepalive = (uint16_t) n->cfg.keepalive;
    return true;
}


static void probe(struct node_relay *r);

/* --- the stream --- */

static void
to_wireguard(void *arg, const uint8_t *d, size_t len)
{
    struct node_relay  *r = arg;

    /* WireGuard's port; a full socket buffer drops it, as UDP would */
    send(r->udp, d, len, MSG_DONTWAIT);
}


/* the next open after a backoff doubling from RETRY_FIRST_MS */
static void
retry_later(struct node_relay *r)
{
    uint64_t  delay = r->attempt == 0 ? 0 : RETRY_FIRST_MS << (r->attempt - 1);

    if (r->failing_since == 0) {
        r->failing_since = clock_mono_ms();
    }
    if (r->attempt < RETRIES_LOGGED) {
        r->attempt++;
    }
    delay = delay > RETRY_MAX_MS ? RETRY_MAX_MS : delay;
    r->retry_at = clock_mono_ms() + delay;
}


static void
stream_close(struct node_relay *r, const char *why)
{
    if (!r->open) {
        return;
    }
    log_warn("relay stream closed: %s (%" PRIu64 " datagrams dropped on a"
             " full queue)", why, r->conn.dropped);
    http_upgrade_close(&r->up);
    /* a frame may be half sent: the next stream starts from an empty queue */
    relay_conn_init(&r->conn, http_upgrade_send, http_upgrade_recv, &r->up);
    r->open = false;
    if (clock_mono_ms() - r->opened_at >= STREAM_STABLE_MS) {
        r->attempt = 0;
        r->retry_at = 0;        /* again at once */
    } else {
        retry_later(r);
    }
}


static void
stream_open(struct node_relay *r)
{
    struct vpc_node  *n = r->n;
    char              hbuf[2][APP_ID_HEX_MAX + 64], err[512], token[TOKEN_HEX_LEN + 1];
    const char       *h[3], *why = NULL;
    long              status;
    int               rc;

    if (clock_mono_ms() < r->retry_at) {
        return;
    }
    node_api_route_headers(n, hbuf, h);
    pthread_mutex_lock(&r->lock);
    memcpy(token, r->token, sizeof(token));
    pthread_mutex_unlock(&r->lock);
    rc = http_upgrade_open(&r->up, &n->server, PATH_RELAY, RELAY_PROTOCOL,
                           token, h, OPEN_TIMEOUT_MS, &status, err, sizeof(err));
    OPENSSL_cleanse(token, sizeof(token));
    if (rc != 0) {
        retry_later(r);
        if (r->attempt <= 2 || r->attempt == RETRIES_LOGGED) {
            log_warn("relay stream: %s", err);
        }
        return;
    }
    /* what WireGuard sent while there was no stream (a TCP retransmission
     * inside the tunnel) goes out first: the first answer to it restarts
     * the transfer, rather than TCP's next, backed-off, retransmission */
    relay_conn_attach(&r->conn);
    r->open = true;
    r->opened_at = clock_mono_ms();
    r->failing_since = 0;
    log_info("relay stream open");
    /* the hub answers at the stream's new socket once it hears from us
     * there: a datagram into the tunnel now, not at the next keepalive */
    probe(r);
    if (r->up.extra_len > 0
        && relay_input(&r->conn, r->up.extra, r->up.extra_len, to_wireguard, r,
                       &why) != 0)
    {
        stream_close(r, why);
    }
}


static void
from_wireguard(struct node_relay *r)
{
    uint8_t  buf[RELAY_FRAME_MAX];
    time_t   since;

    for (int i = 0; i < 64; i++) {
        ssize_t  k = recv(r->udp, buf, sizeof(buf), MSG_DONTWAIT);

        if (k <= 0) {
            return;
        }
        /* held in the fixed queue while the stream is opened again */
        if (r->open || node_relay_transport(r->n, &since) == NODE_TRANSPORT_RELAY) {
            relay_enqueue(&r->conn, buf, (size_t) k);
        }
    }
}


/* --- the choice --- */

static bool
same_endpoint(const struct wg_peer *p, const struct sockaddr_in *a)
{
    return p->has_endpoint && p->endpoint.sa.sa_family == AF_INET
           && p->endpoint.sin.sin_port == a->sin_port
           && p->endpoint.sin.sin_addr.s_addr == a->sin_addr.s_addr;
}


/* a datagram into the tunnel that the hub answers (port unreachable) */
static void
probe(struct node_relay *r)
{
    struct sockaddr_in  to = { .sin_family = AF_INET, .sin_port = htons(PROBE_PORT) };
    int                 fd;

    pthread_mutex_lock(&r->lock);
    to.sin_addr = r->hub_address;
    pthread_mutex_unlock(&r->lock);
    fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        sendto(fd, "", 0, MSG_DONTWAIT, (struct sockaddr *) &to, sizeof(to));
        close(fd);
    }
}


/* direct peers with traffic and no handshake: given up after DIRECT_WAIT_MS */
static void
follow_direct(struct node_relay *r, const uint8_t hub[WG_KEY_LEN],
              const struct wg_peer *peers, size_t np, uint64_t now)
{
    struct direct  keep[DIRECT_MAX];
    size_t         nk = 0;
    char           b64[WG_KEY_B64_LEN + 1];

    for (size_t i = 0; i < np; i++) {
        const struct wg_peer *p = &peers[i];
        uint64_t              since = now;
        void                 *grown;

        if (memcmp(p->public_key, hub, WG_KEY_LEN) == 0
            || p->last_handshake.tv_sec != 0 || p->tx_bytes == 0)
        {
            continue;
        }
        for (size_t j = 0; j < r->n_waiting; j++) {
            if (memcmp(r->waiting[j].key, p->public_key, WG_KEY_LEN) == 0) {
                since = r->waiting[j].since;
            }
        }
        if (now - since < DIRECT_WAIT_MS) {
            if (nk < DIRECT_MAX) {
                memcpy(keep[nk].key, p->public_key, WG_KEY_LEN);
                keep[nk++].since = since;
            }
            continue;
        }
        pthread_mutex_lock(&r->lock);
        grown = realloc(r->failed, (r->n_failed + 1) * sizeof(*r->failed));
        if (grown != NULL) {
            r->failed = grown;
            memcpy(r->failed[r->n_failed++], p->public_key, WG_KEY_LEN);
        }
        pthread_mutex_unlock(&r->lock);
        if (grown != NULL) {
            b64_encode(p->public_key, WG_KEY_LEN, b64);
            log_warn("no handshake with the direct peer %s in %d s: reaching"
                     " it through the hub", b64, DIRECT_WAIT_MS / 1000);
            wg_remove_peer(r->dev, p->public_key);
        }
    }
    memcpy(r->waiting, keep, nk * sizeof(keep[0]));
    r->n_waiting = nk;
}


static void
check(struct node_relay *r)
{
    struct vpc_node  *n = r->n;
    struct wg_peer   *peers = NULL, hub;
    size_t            np = 0;
    uint64_t          now = clock_mono_ms();
    bool              have, on_relay;
    time_t            since;

    pthread_mutex_lock(&r->lock);
    have = r->have_hub;
    hub = r->hub;
    pthread_mutex_unlock(&r->lock);
    if (!have) {
        return;
    }
    if (r->dev == NULL && wg_open(&r->dev, n->cfg.interface, n->backend, 0) != 0) {
        r->dev = NULL;
        return;
    }
    if (wg_get_peers(r->dev, &peers, &np) != 0) {
        wg_close(r->dev);
        r->dev = NULL;
        return;
    }
    on_relay = node_relay_transport(n, &since) == NODE_TRANSPORT_RELAY;
    follow_direct(r, hub.public_key, peers, np, now);
    for (size_t i = 0; i < np; i++) {
        if (memcmp(peers[i].public_key, hub.public_key, WG_KEY_LEN) != 0) {
            continue;
        }
        if (peers[i].rx_bytes != r->rx) {
            r->rx = peers[i].rx_bytes;
            r->rx_at = now;
        }
        if (!on_relay && n->transport_mode == TRANSPORT_AUTO) {
            uint64_t  quiet = now - (r->rx_at > r->udp_since ? r->rx_at : r->udp_since);
            uint64_t  ka = n->cfg.keepalive ? n->cfg.keepalive * 1000 : 25000;

            if (!hub.has_endpoint) {
                set_transport(r, NODE_TRANSPORT_RELAY, "the hub has no endpoint");
                on_relay = true;
            } else if (r->rx_at <= r->udp_since && now - r->udp_since > HANDSHAKE_WAIT_MS) {
                set_transport(r, NODE_TRANSPORT_RELAY, "no UDP handshake with the hub");
                on_relay = true;
            } else if (r->rx_at > r->udp_since && quiet > 2 * ka) {
                /* a path that worked and went quiet; before the first
                 * answer, the handshake's wait above decides */
                set_transport(r, NODE_TRANSPORT_RELAY, "nothing from the hub over UDP"
                              " for two keepalive intervals");
                on_relay = true;
            } else if (quiet > ka / 2 && now - r->probe_at > ka / 2) {
                r->probe_at = now;
                probe(r);
            }
        }
        if (on_relay && n->transport_mode == TRANSPORT_AUTO && hub.has_endpoint
            && !r->open && r->failing_since != 0
            && now - r->failing_since > RELAY_GIVE_UP_MS)
        {
            /* neither path works: try UDP again rather than wait on a
             * relay that does not answer */
            set_transport(r, NODE_TRANSPORT_UDP, "the relay endpoint cannot be reached");
            on_relay = false;
            r->attempt = 0;
            r->retry_at = 0;
            r->failing_since = 0;
            r->udp_since = r->rx_at = now;
            wg_set_peer(r->dev, &hub);
        }
        /* the endpoint the path wants, whoever set another */
        if (on_relay && !same_endpoint(&peers[i], &r->local)) {
            hub.has_endpoint = true;
            memcpy(&hub.endpoint.sin, &r->local, sizeof(r->local));
            hub.persistent_keepalive = (uint16_t) n->cfg.keepalive;
            wg_set_peer(r->dev, &hub);
        }
        break;
    }
    free(peers);
}


static void *
relay_main(void *arg)
{
    struct node_relay  *r = arg;
    struct pollfd       p[3];
    uint64_t            checked = 0;
    const char         *why = NULL;
    int                 timeout;
    bool                relayed;
    time_t              since;

    r->udp_since = r->rx_at = clock_mono_ms();
    probe(r);
    for (;;) {
        if (clock_mono_ms() - checked >= CHECK_MS) {
            checked = clock_mono_ms();
            check(r);
        }
        relayed = node_relay_transport(r->n, &since) == NODE_TRANSPORT_RELAY;
        if (relayed && !r->open) {
            stream_open(r);
        }
        p[0] = (struct pollfd) { .fd = r->wake, .events = POLLIN };
        p[1] = (struct pollfd) { .fd = r->udp, .events = POLLIN };
        p[2] = (struct pollfd) { .fd = r->open ? r->up.fd : -1, .events = POLLIN };
        if (r->open && relay_pending(&r->conn)) {
            p[2].events |= POLLOUT;
        }
        timeout = TICK_MS;
        if (relayed && !r->open && r->retry_at > 0) {
            /* the next attempt on time, not at the next tick */
            uint64_t  now = clock_mono_ms();

            timeout = r->retry_at <= now ? 0
                      : r->retry_at - now < TICK_MS ? (int) (r->retry_at - now)
                      : TICK_MS;
        }
        if (poll(p, 3, timeout) < 0 && errno != EINTR) {
            break;
        }
        if (p[0].revents) {
            break;
        }
        /* POLLERR: WireGuard's port refused a datagram; reading clears it */
        if (p[1].revents & (POLLIN | POLLERR)) {
            from_wireguard(r);
        }
        if (r->open && (p[2].revents & (POLLIN | POLLHUP | POLLERR))
            && relay_input(&r->conn, NULL, 0, to_wireguard, r, &why) != 0)
        {
            stream_close(r, why);
        }
        if (r->open && relay_idle(&r->conn)) {
            stream_close(r, "nothing received for three keepalive intervals");
        }
        if (r->open) {
            relay_keepalive(&r->conn);
            if (relay_flush(&r->conn) != 0) {
                stream_close(r, "closed");
            }
        }
    }
    if (r->open) {
        http_upgrade_close(&r->up);
    }
    if (r->dev != NULL) {
        wg_close(r->dev);
    }
    return NULL;
}


int
node_relay_start(struct vpc_node *n)
{
    struct node_relay  *r;
    socklen_t           len = sizeof(struct sockaddr_in);
    sigset_t            stop, old;
    int                 rc;
    struct sockaddr_in  wg = { .sin_family = AF_INET,
                               .sin_port = htons((uint16_t) n->cfg.listen_port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

    if (n->relay != NULL || n->self.hub) {
        return 0;
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return -1;
    }
    r->n = n;
    relay_conn_init(&r->conn, http_upgrade_send, http_upgrade_recv, &r->up);
    pthread_mutex_init(&r->lock, NULL);
    r->local.sin_family = AF_INET;
    r->local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    r->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    r->udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    /* only WireGuard's own port may send to it */
    if (r->wake < 0 || r->udp < 0
        || bind(r->udp, (struct sockaddr *) &r->local, sizeof(r->local)) != 0
        || getsockname(r->udp, (struct sockaddr *) &r->local, &len) != 0
        || connect(r->udp, (struct sockaddr *) &wg, sizeof(wg)) != 0)
    {
        log_error("relay: a loopback socket: %s", strerror(errno));
        goto fail;
    }
    n->relay = r;
    n->hub_transport = n->transport_mode == TRANSPORT_RELAY
                       ? NODE_TRANSPORT_RELAY : NODE_TRANSPORT_UDP;
    n->hub_transport_since = time(NULL);
    if (n->have_peers) {
        /* the hub's entry and the token, for the thread */
        const struct vpc_peer  *hub = peer_set_hub(&n->peers);
        struct wg_peer          w;
        size_t                  one = 1;

        if (hub != NULL && peer_effective(hub, &n->self, &w)) {
            node_relay_adjust(n, &n->peers, &w, &one);
        }
    }
    /* SIGTERM and SIGINT go to the main thread, whose waits they end */
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, &old);
    rc = pthread_create(&r->thread, NULL, relay_main, r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        n->relay = NULL;
        log_error("relay: cannot start its thread");
        goto fail;
    }
    if (n->hub_transport == NODE_TRANSPORT_RELAY) {
        log_info("the path to the hub: the relay through the mesh (--transport relay)");
    }
    return 0;

fail:
    if (r->udp >= 0) {
        close(r->udp);
    }
    if (r->wake >= 0) {
        close(r->wake);
    }
    pthread_mutex_destroy(&r->lock);
    free(r);
    return -1;
}


void
node_relay_stop(struct vpc_node *n)
{
    struct node_relay  *r = n->relay;
    uint64_t            one = 1;

    if (r == NULL) {
        return;
    }
    if (write(r->wake, &one, sizeof(one)) != sizeof(one)) {
        log_warn("relay: cannot wake its thread");
    }
    pthread_join(r->thread, NULL);
    n->relay = NULL;
    close(r->udp);
    close(r->wake);
    pthread_mutex_destroy(&r->lock);
    OPENSSL_cleanse(r->token, sizeof(r->token));
    free(r->failed);
    free(r);
}
