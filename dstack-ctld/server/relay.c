/*
 * The relay endpoint (GET /api/v1/relay, upgraded; lib/relay_wire.h).
 *
 * Who may relay: a joined node, by its token, whose app is the caller's
 * (x-dstack-app-id, set by nginx mesh_auth).  The stream is bound to that
 * node: one live stream per node (a new one ends the old), and a
 * handshake initiation must carry the node's own WireGuard key, which the
 * hub's private key reveals (relay_noise.c); other datagrams are
 * WireGuard's own sessions, which only the key holders can produce.
 *
 * Each stream has its own thread and its own UDP socket, connected to the
 * hub's WireGuard port on the loopback: WireGuard sees one endpoint per
 * relayed node, and nothing else is reachable.  Sockets are non-blocking
 * and the queue toward the node is fixed: a slow stream drops datagrams,
 * as UDP would, and never holds another.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "lib/log.h"
#include "lib/relay_wire.h"
#include "lib/wgkey.h"
#include "server/http.h"
#include "server/relay.h"
#include "server/relay_noise.h"

#define STREAM_STACK      (256 * 1024)
#define SHUTDOWN_WAIT_MS  3000
#define UDP_BURST         64
/* handshake initiations checked per stream: a burst, then one each
 * INIT_EVERY_MS (WireGuard starts one every few seconds at most); each
 * costs an X25519, which a flood must not turn into the server's work */
#define INIT_BURST        8
#define INIT_EVERY_MS     100

struct stream {
    struct stream                     *next;
    int64_t                            node_id;
    char                               name[DNS_LABEL_MAX + 1];
    uint8_t                            key[WG_KEY_LEN];
    int                                tcp;
    int                                udp;
    int                                wake;        /* eventfd: end now */
    _Atomic(const char *)              end_why;     /* set before a wake */
    bool                               warned_key;
    bool                               warned_rate;
    unsigned                           init_tokens;
    uint64_t                           init_refill_ms;
    struct MHD_UpgradeResponseHandle  *urh;
    struct relay_conn                  conn;
};

/* what the 101 answer hands to the upgrade callback */
struct pending {
    int64_t   node_id;
    char      name[DNS_LABEL_MAX + 1];
    uint8_t   key[WG_KEY_LEN];
};

static pthread_mutex_t          lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t           gone = PTHREAD_COND_INITIALIZER;
static struct stream           *streams;
static unsigned                 nstreams;
static bool                     stopping;
static struct noise_responder   hub;
static struct sockaddr_in       hub_addr;


int
relay_init(struct server *srv)
{
    char     path[4096], pub_b64[WG_KEY_B64_LEN + 1];
    uint8_t  priv[WG_KEY_LEN], pub[WG_KEY_LEN];
    size_t   len;
    int      rc;

    snprintf(path, sizeof(path), "%s/wg.key", srv->cfg.data_dir);
    if (wgkey_load(path, priv, pub_b64) != 0
        || b64_decode(pub_b64, strlen(pub_b64), pub, sizeof(pub), &len) != 0
        || len != WG_KEY_LEN)
    {
        log_error("relay: cannot read the hub's key %s", path);
        return -1;
    }
    rc = noise_responder_init(&hub, priv, pub);
    OPENSSL_cleanse(priv, sizeof(priv));
    hub_addr.sin_family = AF_INET;
    hub_addr.sin_port = htons((uint16_t) srv->cfg.wg_port);
    hub_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return rc;
}


/* --- one stream --- */

static ssize_t
tcp_send(void *ctx, void *buf, size_t n)
{
    struct stream *s = ctx;
    ssize_t        k = send(s->tcp, buf, n, MSG_NOSIGNAL);

    if (k < 0) {
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
    }
    return k;
}


static ssize_t
tcp_recv(void *ctx, void *buf, size_t n)
{
    struct stream *s = ctx;
    ssize_t        k = recv(s->tcp, buf, n, 0);

    if (k < 0) {
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
    }
    return k == 0 ? -1 : k;
}


static bool
init_allowed(struct stream *s)
{
    uint64_t  now = clock_mono_ms();
    uint64_t  add = (now - s->init_refill_ms) / INIT_EVERY_MS;

    if (add > 0) {
        s->init_tokens = add >= INIT_BURST - s->init_tokens
                         ? INIT_BURST : s->init_tokens + (unsigned) add;
        s->init_refill_ms += add * INIT_EVERY_MS;
    }
    if (s->init_tokens == 0) {
        if (!s->warned_rate) {
            s->warned_rate = true;
            log_warn("relay: node %" PRId64 " (%s) sends handshakes faster"
                     " than WireGuard does: the excess dropped", s->node_id,
                     s->name);
        }
        return false;
    }
    s->init_tokens--;
    return true;
}


/*
 * What may go to the hub: the four WireGuard message types at their
 * sizes, and an initiation only with the stream's own key.
 */
static void
to_hub(void *arg, const uint8_t *d, size_t len)
{
    struct stream  *s = arg;
    uint8_t         key[WG_KEY_LEN];
    bool            ok;

    if (len < 4 || d[1] != 0 || d[2] != 0 || d[3] != 0) {
        return;
    }
    switch (d[0]) {
    case WG_MSG_INITIATION:
        if (!init_allowed(s)) {
            return;
        }
        ok = noise_initiator_key(&hub, d, len, key) == 0
             && CRYPTO_memcmp(key, s->key, WG_KEY_LEN) == 0;
        if (!ok && !s->warned_key) {
            s->warned_key = true;
            log_warn("relay: node %" PRId64 " (%s) sent a handshake that is not"
                     " its key's: dropped", s->node_id, s->name);
        }
        break;
    case WG_MSG_RESPONSE:
        ok = len == 92;
        break;
    case WG_MSG_COOKIE:
        ok = len == 64;
        break;
    case WG_MSG_DATA:
        ok = len >= 32;
        break;
    default:
        ok = false;
    }
    if (ok) {
        /* a full socket buffer drops it, as the network would */
        send(s->udp, d, len, MSG_DONTWAIT);
    }
}


static void
from_hub(struct stream *s)
{
    uint8_t  buf[RELAY_FRAME_MAX];

    for (int i = 0; i < UDP_BURST; i++) {
        ssize_t  k = recv(s->udp, buf, sizeof(buf), MSG_DONTWAIT);

        if (k <= 0) {
            return;
        }
        relay_enqueue(&s->conn, buf, (size_t) k);
    }
}


static const char *
pump(struct stream *s)
{
    struct pollfd  p[3];
    const char    *why = NULL;

    for (;;) {
        p[0] = (struct pollfd) { .fd = s->tcp, .events = POLLIN };
        p[1] = (struct pollfd) { .fd = s->udp, .events = POLLIN };
        p[2] = (struct pollfd) { .fd = s->wake, .events = POLLIN };
        if (relay_pending(&s->conn)) {
            p[0].events |= POLLOUT;
        }
        if (poll(p, 3, RELAY_KEEPALIVE_MS / 3) < 0 && errno != EINTR) {
            return "poll failed";
        }
        if (p[2].revents) {
            why = atomic_load(&s->end_why);
            return why != NULL ? why : "the server stops";
        }
        /* POLLERR: the hub's port refused (it restarts); reading clears it */
        if (p[1].revents & (POLLIN | POLLERR)) {
            from_hub(s);
        }
        if ((p[0].revents & (POLLIN | POLLHUP | POLLERR))
            && relay_input(&s->conn, NULL, 0, to_hub, s, &why) != 0)
        {
            return why;
        }
        if (relay_idle(&s->conn)) {
            return "nothing received for three keepalive intervals";
        }
        relay_keepalive(&s->conn);
        if (relay_flush(&s->conn) != 0) {
            return "closed";
        }
    }
}


static void *
stream_main(void *arg)
{
    struct stream  *s = arg, **pp;
    const char     *why;

    why = pump(s);
    log_info("relay: node %" PRId64 " (%s): stream ended: %s (%" PRIu64
             " datagrams dropped on a full queue)", s->node_id, s->name, why,
             s->conn.dropped);

    pthread_mutex_lock(&lock);
    for (pp = &streams; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    nstreams--;
    pthread_cond_broadcast(&gone);
    pthread_mutex_unlock(&lock);

    MHD_upgrade_action(s->urh, MHD_UPGRADE_ACTION_CLOSE);
    close(s->udp);
    close(s->wake);
    free(s);
    return NULL;
}


static void
wake(struct stream *s)
{
    uint64_t  one = 1;

    if (write(s->wake, &one, sizeof(one)) < 0) {
        shutdown(s->tcp, SHUT_RDWR);
    }
}


/* under the lock: the stream's thread ends, saying why (the first why) */
static void
end(struct stream *s, const char *why)
{
    const char  *none = NULL;

    if (atomic_compare_exchange_strong(&s->end_why, &none, why)) {
        wake(s);
    }
}


static void
on_upgraded(void *cls, struct MHD_Connection *conn, void *con_cls,
            const char *extra_in, size_t extra_in_size, MHD_socket sock,
            struct MHD_UpgradeResponseHandle *urh)
{
    struct pending   *p = cls;
    struct stream    *s, *old;
    pthread_attr_t    attr;
    pthread_t         th;
    const char       *why = NULL;

    (void) conn;
    (void) con_cls;
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        goto fail;
    }
    s->node_id = p->node_id;
    memcpy(s->name, p->name, sizeof(s->name));
    memcpy(s->key, p->key, WG_KEY_LEN);
    s->tcp = sock;
    s->urh = urh;
    s->init_tokens = INIT_BURST;
    s->init_refill_ms = clock_mono_ms();
    s->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    s->udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    relay_conn_init(&s->conn, tcp_send, tcp_recv, s);
    if (s->wake < 0 || s->udp < 0
        || connect(s->udp, (struct sockaddr *) &hub_addr, sizeof(hub_addr)) != 0
        || fcntl(sock, F_SETFL, fcntl(sock, F_GETFL) | O_NONBLOCK) != 0)
    {
        log_error("relay: node %" PRId64 ": %s", p->node_id, strerror(errno));
        goto fail;
    }
    if (extra_in_size > 0
        && relay_input(&s->conn, (const uint8_t *) extra_in, extra_in_size,
                       to_hub, s, &why) != 0)
    {
        log_warn("relay: node %" PRId64 " (%s): %s", p->node_id, p->name, why);
        goto fail;
    }

    pthread_mutex_lock(&lock);
    if (stopping) {
        pthread_mutex_unlock(&lock);
        goto fail;
    }
    for (old = streams; old != NULL; old = old->next) {
        if (old->node_id == s->node_id) {
            end(old, "replaced by a new stream");
        }
    }
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, STREAM_STACK);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &attr, stream_main, s) != 0) {
        pthread_attr_destroy(&attr);
        pthread_mutex_unlock(&lock);
        log_error("relay: node %" PRId64 ": cannot start a thread", p->node_id);
        goto fail;
    }
    pthread_attr_destroy(&attr);
    s->next = streams;
    streams = s;
    nstreams++;
    pthread_mutex_unlock(&lock);
    log_info("relay: node %" PRId64 " (%s): stream open", p->node_id, p->name);
    return;

fail:
    if (s != NULL) {
        if (s->udp >= 0) {
            close(s->udp);
        }
        if (s->wake >= 0) {
            close(s->wake);
        }
        free(s);
    }
    MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
}


void
relay_node_gone(int64_t node_id, const char *why)
{
    pthread_mutex_lock(&lock);
    for (struct stream *s = streams; s != NULL; s = s->next) {
        if (s->node_id == node_id) {
            end(s, why);
        }
    }
    pthread_mutex_unlock(&lock);
}


void
relay_shutdown(struct server *srv)
{
    struct timespec  until;

    (void) srv;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += SHUTDOWN_WAIT_MS / 1000;
    pthread_mutex_lock(&lock);
    stopping = true;
    for (struct stream *s = streams; s != NULL; s = s->next) {
        wake(s);
    }
    while (nstreams > 0) {
        if (pthread_cond_timedwait(&gone, &lock, &until) != 0) {
            log_warn("relay: %u streams did not end", nstreams);
            break;
        }
    }
    pthread_mutex_unlock(&lock);
}


/* --- the request --- */

enum MHD_Result
api_v1_relay(struct http_req *r)
{
    const char            *up;
    unsigned char          hash[SHA256_LEN];
    struct node            self;
    struct pending        *p;
    struct MHD_Response   *resp;
    sqlite3               *db;
    size_t                 len;
    int                    rc;

    up = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                     MHD_HTTP_HEADER_UPGRADE);
    if (up == NULL || strcasecmp(up, RELAY_PROTOCOL) != 0) {
        return http_error(r, 400, "Upgrade: " RELAY_PROTOCOL " required");
    }
    if (!http_bearer_hash(r, hash)) {
        return http_unauthorized_bearer(r, "node token required");
    }
    db = store_reader(&r->srv->store);
    if (db == NULL || db_begin_read(db) != 0) {
        return http_error(r, 500, "storage error");
    }
    rc = registry_node_by_token(db, hash, &self);
    db_end_read(db);
    if (rc < 0) {
        return http_error(r, 500, "storage error");
    }
    if (rc == 0) {
        return http_unauthorized_bearer(r, "unknown node token");
    }
    if (strcmp(self.app_id, r->app_id) != 0) {
        return http_error(r, 403, "node token belongs to another app");
    }
    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return http_error(r, 500, "out of memory");
    }
    p->node_id = self.id;
    memcpy(p->name, self.name, sizeof(p->name));
    if (b64_decode(self.public_key, strlen(self.public_key), p->key,
                   sizeof(p->key), &len) != 0 || len != WG_KEY_LEN)
    {
        free(p);
        return http_error(r, 500, "storage error");
    }
    /* the request owns p: freed when it completes, which libmicrohttpd
     * reports after on_upgraded, or without it when the client went away
     * before the upgrade */
    r->data = p;
    r->data_free = free;
    resp = MHD_create_response_for_upgrade(on_upgraded, p);
    if (resp == NULL) {
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_UPGRADE, RELAY_PROTOCOL);
    r->status = MHD_HTTP_SWITCHING_PROTOCOLS;
    r->responded = true;
    if (MHD_queue_response(r->conn, MHD_HTTP_SWITCHING_PROTOCOLS, resp) != MHD_YES) {
        MHD_destroy_response(resp);
        return MHD_NO;
    }
    MHD_destroy_response(resp);
    return MHD_YES;
}
