/*
 * `dstack-ctld status`, the daemon's side: a unix socket in the state
 * directory (the hub: the server's data directory), served by a thread
 * of its own.  Each connection gets one JSON document, then the socket
 * is closed; nothing is read from the client.
 *
 * The loop's thread blocks in long polls for up to a minute, so it cannot
 * answer; and a client must never be able to hold it up.  The status
 * thread copies what it needs from struct vpc_node under the status lock
 * (memory only, never I/O), then reads handshakes and byte counters from
 * the WireGuard device through its own wg/ handle, so they are those of
 * the moment of the request, and writes the answer with a deadline.
 *
 * Who may ask: the socket is 0600 in a 0700 directory, and a client whose
 * uid is neither root nor ours (SO_PEERCRED) is closed at once.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "lib/log.h"
#include "node/node.h"

/* a client that does not take its answer within this long is dropped */
#define STATUS_SEND_MS   2000
#define STATUS_BACKLOG   16

struct node_status {
    pthread_mutex_t    lock;            /* recursive: see node.h */
    pthread_t          thread;
    int                listen_fd;
    int                wake[2];         /* a byte: stop */
    char               path[sizeof(((struct sockaddr_un *) 0)->sun_path)];
    struct vpc_node   *n;
    struct wg_device  *dev;             /* the thread's own handle */
};

/* one member, copied under the lock */
struct status_peer {
    char             name[DNS_LABEL_MAX + 1];
    struct in_addr   address;
    uint8_t          key[WG_KEY_LEN];
    bool             direct;            /* a WireGuard peer of ours */
};

/* what the answer says, copied under the lock */
struct status_view {
    bool                 hub_role;
    bool                 up;
    enum wg_backend      backend;
    char                 name[DNS_LABEL_MAX + 1];
    bool                 has_address;
    struct in_addr       address;
    char                 public_key[WG_KEY_B64_LEN + 1];
    char                 ifname[IFNAMSIZ];
    uint64_t             listen_port;
    char                 endpoint[ENDPOINT_MAX + 1];
    bool                 have_peers;
    uint64_t             version;
    char                 epoch[EPOCH_LEN + 1];
    enum node_transport  transport;
    time_t               since;
    bool                 has_hub;
    struct status_peer   hub;
    struct status_peer  *peers;
    size_t               n_peers;
};


void
node_status_lock(struct vpc_node *n)
{
    if (n->status != NULL) {
        pthread_mutex_lock(&n->status->lock);
    }
}


void
node_status_unlock(struct vpc_node *n)
{
    if (n->status != NULL) {
        pthread_mutex_unlock(&n->status->lock);
    }
}


const char *
node_transport_name(enum node_transport t)
{
    return t == NODE_TRANSPORT_RELAY ? "relay" : "udp";
}


static int
device_key_cmp(const void *key, const void *peer)
{
    return memcmp(key, ((const struct wg_peer *) peer)->public_key, WG_KEY_LEN);
}


static void
copy_peer(const struct vpc_node *n, const struct vpc_peer *p,
          struct status_peer *out)
{
    struct wg_peer  w;

    memcpy(out->name, p->name, sizeof(out->name));
    out->address = p->address;
    memcpy(out->key, p->key, WG_KEY_LEN);
    /* the reachability rule's answer, as the device was given it */
    out->direct = peer_effective(p, &n->self, &w);
}


/* under the lock: memory only */
static int
view_copy(const struct vpc_node *n, struct status_view *v)
{
    const struct vpc_peer  *hub;
    size_t                  i;

    memset(v, 0, sizeof(*v));
    v->hub_role = n->self.hub;
    v->up = n->dev_up && n->dev != NULL;
    if (v->up) {
        v->backend = wg_backend_of(n->dev);
    }
    v->has_address = n->self.has_address;
    v->address = n->self.address;
    memcpy(v->public_key, n->public_key, sizeof(v->public_key));
    snprintf(v->ifname, sizeof(v->ifname), "%s", n->cfg.interface);
    v->listen_port = n->cfg.listen_port;
    snprintf(v->endpoint, sizeof(v->endpoint), "%s",
             n->cfg.endpoint && !n->self.hub ? n->cfg.endpoint : "");
    v->transport = node_relay_transport(n, &v->since);
    if (!n->self.hub && n->joined) {
        memcpy(v->name, n->state.name, sizeof(v->name));
    }
    if (!n->have_peers) {
        return 0;
    }
    v->have_peers = true;
    v->version = n->peers.version;
    memcpy(v->epoch, n->peers.epoch, sizeof(v->epoch));
    hub = peer_set_hub(&n->peers);
    if (hub != NULL) {
        if (n->self.hub) {
            memcpy(v->name, hub->name, sizeof(v->name));
        } else {
            v->has_hub = true;
            copy_peer(n, hub, &v->hub);
        }
    }
    v->peers = calloc(n->peers.n + 1, sizeof(*v->peers));
    if (v->peers == NULL) {
        return -1;
    }
    for (i = 0; i < n->peers.n; i++) {
        if (n->peers.v[i].id != 0) {
            copy_peer(n, &n->peers.v[i], &v->peers[v->n_peers++]);
        }
    }
    return 0;
}


/* the device's peers now, sorted by key; NULL when it cannot tell */
static struct wg_peer *
device_peers(struct node_status *st, const struct status_view *v, size_t *n)
{
    struct wg_peer  *peers = NULL;

    *n = 0;
    if (!v->up || if_nametoindex(v->ifname) == 0) {
        return NULL;            /* no handle may create it */
    }
    if (st->dev == NULL && wg_open(&st->dev, v->ifname, v->backend, 0) < 0) {
        st->dev = NULL;
        return NULL;
    }
    if (wg_get_peers(st->dev, &peers, n) < 0) {
        wg_close(st->dev);      /* opened again next time */
        st->dev = NULL;
        return NULL;
    }
    qsort(peers, *n, sizeof(*peers), device_key_cmp);
    return peers;
}


static json_t *
json_unix_or_null(int64_t t)
{
    return t > 0 ? json_integer(t) : json_null();
}


/* one member as the answer shows it, live counters from dev[] */
static json_t *
peer_json(const struct status_peer *p, const struct wg_peer *dev, size_t n_dev,
          int64_t now)
{
    const struct wg_peer  *w = NULL;
    char                   key[WG_KEY_B64_LEN + 1], addr[INET_ADDRSTRLEN];
    char                   dns[DNS_LABEL_MAX + sizeof(DNS_DOMAIN) + 1];
    char                   ep[WG_ENDPOINT_STRLEN];
    int64_t                hs = 0;
    json_t                *o;

    if (p->direct && dev != NULL) {
        w = bsearch(p->key, dev, n_dev, sizeof(*dev), device_key_cmp);
    }
    if (w != NULL) {
        hs = (int64_t) w->last_handshake.tv_sec;
    }
    b64_encode(p->key, WG_KEY_LEN, key);
    inet_ntop(AF_INET, &p->address, addr, sizeof(addr));
    snprintf(dns, sizeof(dns), "%s." DNS_DOMAIN, p->name);
    o = json_pack("{s:s, s:s, s:s, s:s, s:s}", "name", p->name, "dns_name", dns,
                  "address", addr, "public_key", key,
                  "path", p->direct ? "direct" : "via_hub");
    if (o == NULL) {
        return NULL;
    }
    json_object_set_new(o, "endpoint", w != NULL && w->has_endpoint
                        ? json_string(wg_endpoint_format(w, ep)) : json_null());
    json_object_set_new(o, "latest_handshake", json_unix_or_null(hs));
    json_object_set_new(o, "handshake_age", hs > 0
                        ? json_integer(now > hs ? now - hs : 0) : json_null());
    json_object_set_new(o, "rx_bytes", w != NULL
                        ? json_integer((json_int_t) w->rx_bytes) : json_null());
    json_object_set_new(o, "tx_bytes", w != NULL
                        ? json_integer((json_int_t) w->tx_bytes) : json_null());
    return o;
}


static json_t *
status_json(const struct status_view *v, const struct wg_peer *dev,
            size_t n_dev)
{
    int64_t   now = clock_unix();
    char      addr[INET_ADDRSTRLEN];
    char      dns[DNS_LABEL_MAX + sizeof(DNS_DOMAIN) + 1];
    json_t   *o, *peers, *hub;

    peers = json_array();
    for (size_t i = 0; peers != NULL && i < v->n_peers; i++) {
        if (json_array_append_new(peers, peer_json(&v->peers[i], dev, n_dev,
                                                   now)) != 0)
        {
            json_decref(peers);
            return NULL;
        }
    }
    hub = json_null();
    if (v->has_hub) {
        hub = peer_json(&v->hub, dev, n_dev, now);
        if (hub != NULL) {
            json_object_del(hub, "path");
            json_object_set_new(hub, "transport",
                                json_string(node_transport_name(v->transport)));
            json_object_set_new(hub, "transport_since",
                                json_unix_or_null((int64_t) v->since));
        }
    }
    snprintf(dns, sizeof(dns), "%s." DNS_DOMAIN, v->name);
    o = json_pack("{s:s, s:I, s:o, s:o, s:o, s:o, s:s, s:s, s:b, s:I, s:o,"
                  " s:o, s:o, s:o, s:o}",
        "role", v->hub_role ? "hub" : "node",
        "time", (json_int_t) now,
        "name", v->name[0] ? json_string(v->name) : json_null(),
        "dns_name", v->name[0] ? json_string(dns) : json_null(),
        "address", v->has_address
                   ? json_string(inet_ntop(AF_INET, &v->address, addr,
                                           sizeof(addr)))
                   : json_null(),
        "public_key", v->public_key[0] ? json_string(v->public_key) : json_null(),
        "interface", v->ifname,
        "backend", v->up ? wg_backend_name(v->backend) : "none",
        "interface_up", v->up,
        "listen_port", (json_int_t) v->listen_port,
        "endpoint", v->endpoint[0] ? json_string(v->endpoint) : json_null(),
        "peer_set_version", v->have_peers ? json_integer((json_int_t) v->version)
                                          : json_null(),
        "epoch", v->have_peers ? json_string(v->epoch) : json_null(),
        "hub", hub ? hub : json_null(),
        "peers", peers ? peers : json_null());
    return o;
}


/* the whole of buf within STATUS_SEND_MS, or -1 */
static int
send_all(int fd, const char *buf, size_t len)
{
    uint64_t       deadline = clock_mono_ms() + STATUS_SEND_MS, now;
    struct pollfd  p = { .fd = fd, .events = POLLOUT };
    ssize_t        w;

    while (len > 0) {
        w = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            buf += w;
            len -= (size_t) w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            return -1;
        }
        now = clock_mono_ms();
        if (now >= deadline || poll(&p, 1, (int) (deadline - now)) < 0) {
            return -1;
        }
    }
    return 0;
}


static void
serve(struct node_status *st, int fd)
{
    struct status_view   v;
    struct wg_peer      *dev = NULL;
    struct ucred         cred;
    socklen_t            len = sizeof(cred);
    size_t               n_dev = 0;
    json_t              *doc = NULL;
    char                *text = NULL;
    int                  rc;

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0
        || (cred.uid != 0 && cred.uid != geteuid()))
    {
        log_warn("status: refused a client of uid %ld",
                 len == sizeof(cred) ? (long) cred.uid : -1L);
        return;
    }
    pthread_mutex_lock(&st->lock);
    rc = view_copy(st->n, &v);
    pthread_mutex_unlock(&st->lock);
    if (rc == 0) {
        dev = device_peers(st, &v, &n_dev);
        doc = status_json(&v, dev, n_dev);
    }
    text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    if (text == NULL) {
        log_error("status: out of memory");
    } else if (send_all(fd, text, strlen(text)) != 0
               || send_all(fd, "\n", 1) != 0)
    {
        log_debug("status: a client did not take its answer");
    }
    free(text);
    json_decref(doc);
    free(dev);
    free(v.peers);
}


static void *
status_thread(void *arg)
{
    struct node_status  *st = arg;
    struct pollfd        p[2] = { { .fd = st->listen_fd, .events = POLLIN },
                                  { .fd = st->wake[0], .events = POLLIN } };
    int                  fd;

    for (;;) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            log_error("status: poll: %s", strerror(errno));
            break;
        }
        if (p[1].revents) {
            break;
        }
        fd = accept4(st->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                poll(NULL, 0, 100);     /* rather than spin until one closes */
            }
            continue;           /* or gone before we took it */
        }
        serve(st, fd);
        close(fd);
    }
    return NULL;
}


/* a socket bound at path, 0600; the caller holds the directory's lock */
static int
status_listen(const char *path)
{
    struct sockaddr_un  sa;
    mode_t              mask;
    int                 fd, rc;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return -1;
    }
    unlink(path);               /* left by a daemon that died */
    /* created 0600, not chmod()ed after: a path swapped for a symbolic
     * link in between would take the chmod elsewhere */
    mask = umask(0177);
    rc = bind(fd, (struct sockaddr *) &sa, sizeof(sa));
    umask(mask);
    if (rc != 0 || listen(fd, STATUS_BACKLOG) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}


int
node_status_start(struct vpc_node *n)
{
    struct node_status   *st;
    pthread_mutexattr_t   ma;
    sigset_t              all, old;
    const char           *dir = n->self.hub ? n->cfg.data_dir : n->cfg.state_dir;
    int                   rc;

    st = calloc(1, sizeof(*st));
    if (st == NULL) {
        return -1;
    }
    st->n = n;
    st->listen_fd = st->wake[0] = st->wake[1] = -1;
    if (snprintf(st->path, sizeof(st->path), "%s/%s", dir,
                 n->self.hub ? HUB_STATUS_SOCKET : NODE_STATUS_SOCKET)
        >= (int) sizeof(st->path))
    {
        log_warn("%s: path too long for the status socket; `dstack-ctld"
                 " status` will not find this daemon", dir);
        free(st);
        return -1;
    }
    st->listen_fd = status_listen(st->path);
    if (st->listen_fd < 0 || pipe2(st->wake, O_CLOEXEC) != 0) {
        log_warn("cannot serve %s: %s; `dstack-ctld status` will not find"
                 " this daemon", st->path, strerror(errno));
        goto failed;
    }
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&st->lock, &ma);
    pthread_mutexattr_destroy(&ma);

    /* SIGTERM and SIGINT are the loop's: its waits must see them */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    rc = pthread_create(&st->thread, NULL, status_thread, st);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        log_warn("cannot start the status thread: %s", strerror(rc));
        pthread_mutex_destroy(&st->lock);
        goto failed;
    }
    n->status = st;
    log_info("status: %s", st->path);
    return 0;

failed:
    if (st->listen_fd >= 0) {
        close(st->listen_fd);
        unlink(st->path);
    }
    if (st->wake[0] >= 0) {
        close(st->wake[0]);
        close(st->wake[1]);
    }
    free(st);
    return -1;
}


void
node_status_stop(struct vpc_node *n)
{
    struct node_status  *st = n->status;

    if (st == NULL) {
        return;
    }
    /* a client being served ends within STATUS_SEND_MS */
    while (write(st->wake[1], "x", 1) != 1 && errno == EINTR) {
    }
    pthread_join(st->thread, NULL);
    n->status = NULL;
    unlink(st->path);
    close(st->listen_fd);
    close(st->wake[0]);
    close(st->wake[1]);
    wg_close(st->dev);
    pthread_mutex_destroy(&st->lock);
    free(st);
}
