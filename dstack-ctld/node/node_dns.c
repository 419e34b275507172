/*
 * The node's DNS server: UDP and TCP on one loopback address (default
 * 127.0.0.153:53), in a thread of its own.  Names in dstack.internal come
 * from the name table (node_dns_answer.c); everything else goes to the
 * resolvers the CVM had (node_resolv.c).
 *
 * UDP forwarding does not block: a forwarded query gets a fresh random id
 * and a socket of its own, connected to the resolver (so a random source
 * port, and the kernel drops datagrams from anyone else), and waits in a
 * bounded table (the oldest is dropped when it is full) until an answer
 * with that id and the query's question comes back, or DNS_FORWARD_MS
 * passes or the resolver refuses (ICMP) and the next resolver is tried;
 * after the last, SERVFAIL.  An off-path attacker must guess the port and
 * the id at once, as with any resolver that randomises both.  A truncated answer goes back as it is, and the client asks
 * again over TCP.  Each TCP connection (at most DNS_TCP_MAX at once) has
 * a thread, which forwards over TCP.  Every step has a deadline, and a
 * connection's queries must all arrive within DNS_TCP_READ_MS: a client
 * that trickles bytes holds a slot that long, not for ever.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <ldns/ldns.h>

#include "lib/log.h"
#include "node/node.h"

#define DNS_FORWARD_MS  2000
#define DNS_PENDING     256         /* one socket each */
#define DNS_TCP_MAX     16
#define DNS_TCP_QUERIES 32          /* per connection */
#define DNS_TCP_READ_MS 5000        /* to send them all */
#define DNS_MSG_MAX     65535

struct pending {
    bool                     used;
    int                      fd;         /* connected to its resolver */
    uint16_t                 client_id;
    size_t                   upstream;
    uint64_t                 deadline;   /* ms */
    struct sockaddr_storage  client;
    socklen_t                client_len;
    uint8_t                 *query;
    size_t                   len;
};

struct dns_server {
    struct name_table      *names;
    struct dns_upstreams    up;
    int                     udp, tcp;
    int                     wake[2];
    pthread_t               thread;
    /* the TCP connections' sockets, by slot (-1: free): dns_stop shuts
     * them down and waits for their threads, which use this struct */
    pthread_mutex_t         tcp_lock;
    pthread_cond_t          tcp_gone;
    int                     tcp_fd[DNS_TCP_MAX];
    unsigned                tcp_active;
    bool                    stopping;
    struct pending          pending[DNS_PENDING];
    uint8_t                 buf[DNS_MSG_MAX];
};


static uint64_t
now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}


static uint16_t
random_id(void)
{
    uint16_t  id = 0;

    while (getrandom(&id, sizeof(id), 0) < 0 && errno == EINTR) {
    }
    return id;
}


static void
pending_close(struct pending *p)
{
    if (p->fd >= 0) {
        close(p->fd);
        p->fd = -1;
    }
}


/* sends p's query to its resolver from a new port: 0, or -1 when none is
 * left */
static int
forward_send(struct dns_server *s, struct pending *p)
{
    for (; p->upstream < s->up.n; p->upstream++) {
        pending_close(p);
        p->fd = socket(s->up.addr[p->upstream].ss_family,
                       SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (p->fd >= 0
            && connect(p->fd, (struct sockaddr *) &s->up.addr[p->upstream],
                       s->up.len[p->upstream]) == 0
            && send(p->fd, p->query, p->len, 0) == (ssize_t) p->len)
        {
            p->deadline = now_ms() + DNS_FORWARD_MS;
            return 0;
        }
    }
    pending_close(p);
    return -1;
}


static void
pending_free(struct pending *p)
{
    pending_close(p);
    free(p->query);
    p->query = NULL;
    p->used = false;
}


static void
reply_udp(struct dns_server *s, const uint8_t *msg, size_t len,
          const struct sockaddr_storage *to, socklen_t to_len)
{
    sendto(s->udp, msg, len, 0, (const struct sockaddr *) to, to_len);
}


static void
pending_fail(struct dns_server *s, struct pending *p)
{
    uint8_t  *out;
    size_t    out_len;

    ldns_write_uint16(p->query, p->client_id);
    if (dns_servfail(p->query, p->len, &out, &out_len) == DNS_REPLY) {
        reply_udp(s, out, out_len, &p->client, p->client_len);
    }
    free(out);
    pending_free(p);
}


static void
forward_udp(struct dns_server *s, const uint8_t *q, size_t len,
            const struct sockaddr_storage *from, socklen_t from_len)
{
    struct pending  *p = NULL, *oldest = &s->pending[0];

    for (size_t i = 0; i < DNS_PENDING; i++) {
        if (!s->pending[i].used) {
            p = &s->pending[i];
            break;
        }
        if (s->pending[i].deadline < oldest->deadline) {
            oldest = &s->pending[i];
        }
    }
    if (p == NULL) {
        /* a flood: the oldest gives way, and its client hears so at once
         * rather than at its own timeout */
        pending_fail(s, oldest);
        p = oldest;
    }
    memset(p, 0, sizeof(*p));
    p->fd = -1;
    p->query = malloc(len);
    if (p->query == NULL) {
        return;
    }
    memcpy(p->query, q, len);
    p->len = len;
    p->client_id = LDNS_ID_WIRE(q);
    ldns_write_uint16(p->query, random_id());
    memcpy(&p->client, from, from_len);
    p->client_len = from_len;
    p->used = true;
    if (forward_send(s, p) != 0) {
        pending_fail(s, p);
    }
}


/* what came on p's socket: the answer goes to the client that asked, with
 * its id; anything else is dropped; a refusal moves on to the next
 * resolver */
static void
upstream_answer(struct dns_server *s, struct pending *p)
{
    ssize_t  n;

    n = recv(p->fd, s->buf, sizeof(s->buf), MSG_DONTWAIT);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            return;
        }
        p->upstream++;          /* ICMP unreachable: no need to wait */
        if (forward_send(s, p) != 0) {
            pending_fail(s, p);
        }
        return;
    }
    if (!dns_answers_query(p->query, p->len, s->buf, (size_t) n)) {
        return;
    }
    ldns_write_uint16(s->buf, p->client_id);
    reply_udp(s, s->buf, (size_t) n, &p->client, p->client_len);
    pending_free(p);
}


static void
query_udp(struct dns_server *s)
{
    struct sockaddr_storage  from;
    socklen_t                from_len = sizeof(from);
    uint8_t                 *out;
    size_t                   out_len;
    ssize_t                  n;

    n = recvfrom(s->udp, s->buf, sizeof(s->buf), MSG_DONTWAIT,
                 (struct sockaddr *) &from, &from_len);
    if (n < 0) {
        return;
    }
    switch (dns_answer(s->names, s->buf, (size_t) n, false, &out, &out_len)) {
    case DNS_REPLY:
        reply_udp(s, out, out_len, &from, from_len);
        break;
    case DNS_FORWARD:
        forward_udp(s, s->buf, (size_t) n, &from, from_len);
        break;
    case DNS_DROP:
        break;
    }
    free(out);
}


/* --- TCP --- */

/*
 * All of buf, by the deadline (ms): a peer that sends or takes a byte at a
 * time cannot stretch one message past it, as it could per-call timeouts.
 */
static int
io_all(int fd, void *buf, size_t len, bool writing, uint64_t deadline)
{
    struct pollfd  p = { .fd = fd, .events = writing ? POLLOUT : POLLIN };
    uint8_t       *b = buf;
    uint64_t       now;

    while (len > 0) {
        ssize_t r;

        now = now_ms();
        if (now >= deadline) {
            return -1;
        }
        r = poll(&p, 1, (int) (deadline - now));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return -1;
        }
        r = writing ? send(fd, b, len, MSG_NOSIGNAL | MSG_DONTWAIT)
                    : recv(fd, b, len, MSG_DONTWAIT);
        if (r < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) {
            continue;
        }
        if (r <= 0) {
            return -1;
        }
        b += r;
        len -= (size_t) r;
    }
    return 0;
}


/* one length-prefixed message; *len is the buffer's size, then its length */
static int
tcp_read_msg(int fd, uint8_t *buf, size_t *len, uint64_t deadline)
{
    uint8_t  hdr[2];
    size_t   n;

    if (io_all(fd, hdr, 2, false, deadline) != 0) {
        return -1;
    }
    n = ldns_read_uint16(hdr);
    if (n == 0 || n > *len || io_all(fd, buf, n, false, deadline) != 0) {
        return -1;
    }
    *len = n;
    return 0;
}


static int
tcp_write_msg(int fd, const uint8_t *msg, size_t len, uint64_t deadline)
{
    uint8_t  hdr[2];

    ldns_write_uint16(hdr, (uint16_t) len);
    return io_all(fd, hdr, 2, true, deadline) == 0
           ? io_all(fd, (void *) msg, len, true, deadline) : -1;
}


/* q over TCP to each resolver in turn: the first answer, or -1 */
static int
forward_tcp(struct dns_server *s, const uint8_t *q, size_t len, uint8_t *ans,
            size_t *ans_len)
{
    struct timeval  tv = { .tv_sec = DNS_FORWARD_MS / 1000 };
    size_t          cap = *ans_len;
    uint64_t        deadline;

    for (size_t i = 0; i < s->up.n && !__atomic_load_n(&s->stopping, __ATOMIC_ACQUIRE); i++) {
        int  fd = socket(s->up.addr[i].ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int  ok;

        if (fd < 0) {
            continue;
        }
        /* SO_SNDTIMEO bounds connect(); the deadline the whole exchange */
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        deadline = now_ms() + DNS_FORWARD_MS;
        *ans_len = cap;
        ok = connect(fd, (struct sockaddr *) &s->up.addr[i], s->up.len[i]) == 0
             && tcp_write_msg(fd, q, len, deadline) == 0
             && tcp_read_msg(fd, ans, ans_len, deadline) == 0
             && dns_answers_query(q, len, ans, *ans_len);
        close(fd);
        if (ok) {
            return 0;
        }
    }
    return -1;
}


struct tcp_conn {
    struct dns_server  *s;
    int                 fd;
    unsigned            slot;
};


static void *
tcp_thread(void *arg)
{
    struct tcp_conn    *c = arg;
    struct dns_server  *s = c->s;
    uint8_t            *q = malloc(DNS_MSG_MAX), *ans = malloc(DNS_MSG_MAX);
    uint8_t            *out;
    size_t              len, out_len;
    uint64_t            reads_end;

    /* all the connection's queries by one deadline: a client that
     * trickles bytes cannot keep one of the DNS_TCP_MAX slots for long */
    reads_end = now_ms() + DNS_TCP_READ_MS;
    for (int i = 0; q != NULL && ans != NULL && i < DNS_TCP_QUERIES; i++) {
        len = DNS_MSG_MAX;
        if (tcp_read_msg(c->fd, q, &len, reads_end) != 0) {
            break;
        }
        switch (dns_answer(s->names, q, len, true, &out, &out_len)) {
        case DNS_DROP:
            goto done;
        case DNS_FORWARD:
            out_len = DNS_MSG_MAX;
            if (forward_tcp(s, q, len, ans, &out_len) == 0) {
                if (tcp_write_msg(c->fd, ans, out_len,
                                  now_ms() + DNS_FORWARD_MS) != 0)
                {
                    goto done;
                }
                continue;
            }
            if (dns_servfail(q, len, &out, &out_len) != DNS_REPLY) {
                goto done;
            }
            /* fall through */
        case DNS_REPLY:
            if (tcp_write_msg(c->fd, out, out_len, now_ms() + DNS_FORWARD_MS)
                != 0)
            {
                free(out);
                goto done;
            }
            free(out);
            break;
        }
    }
done:
    free(q);
    free(ans);
    pthread_mutex_lock(&s->tcp_lock);
    s->tcp_fd[c->slot] = -1;
    close(c->fd);               /* under the lock: dns_stop shuts fds down */
    s->tcp_active--;
    pthread_cond_broadcast(&s->tcp_gone);
    pthread_mutex_unlock(&s->tcp_lock);
    free(c);
    return NULL;
}


static void
accept_tcp(struct dns_server *s)
{
    struct tcp_conn  *c;
    pthread_attr_t    attr;
    pthread_t         t;
    unsigned          slot = DNS_TCP_MAX;
    int               fd;

    fd = accept4(s->tcp, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
        return;
    }
    c = malloc(sizeof(*c));
    pthread_mutex_lock(&s->tcp_lock);
    for (unsigned i = 0; c != NULL && i < DNS_TCP_MAX; i++) {
        if (s->tcp_fd[i] < 0) {
            slot = i;
            break;
        }
    }
    if (slot == DNS_TCP_MAX) {
        pthread_mutex_unlock(&s->tcp_lock);
        free(c);
        close(fd);              /* busy: the client tries again */
        return;
    }
    c->s = s;
    c->fd = fd;
    c->slot = slot;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    if (pthread_create(&t, &attr, tcp_thread, c) != 0) {
        close(fd);
        free(c);
    } else {
        s->tcp_fd[slot] = fd;
        s->tcp_active++;
    }
    pthread_attr_destroy(&attr);
    pthread_mutex_unlock(&s->tcp_lock);
}


/* --- the thread --- */

static void *
dns_thread(void *arg)
{
    struct dns_server  *s = arg;
    struct pollfd       pfd[3 + DNS_PENDING];
    struct pending     *waiting[DNS_PENDING];
    uint64_t            now, next;
    nfds_t              n;
    int                 timeout;

    pfd[0] = (struct pollfd) { .fd = s->wake[0], .events = POLLIN };
    pfd[1] = (struct pollfd) { .fd = s->udp, .events = POLLIN };
    pfd[2] = (struct pollfd) { .fd = s->tcp, .events = POLLIN };
    for (;;) {
        now = now_ms();
        next = UINT64_MAX;
        n = 3;
        for (size_t i = 0; i < DNS_PENDING; i++) {
            struct pending *p = &s->pending[i];

            if (p->used && p->deadline <= now) {
                p->upstream++;          /* no answer: the next resolver */
                if (forward_send(s, p) != 0) {
                    pending_fail(s, p);
                }
            }
            if (p->used) {
                next = p->deadline < next ? p->deadline : next;
                waiting[n - 3] = p;
                pfd[n++] = (struct pollfd) { .fd = p->fd, .events = POLLIN };
            }
        }
        timeout = next == UINT64_MAX ? -1 : (int) (next - now);
        if (poll(pfd, n, timeout) < 0 && errno != EINTR) {
            log_error("dns: poll: %s", strerror(errno));
            break;
        }
        if (pfd[0].revents) {
            break;
        }
        /* answers first: a new query may take the slot of the oldest */
        for (nfds_t i = 3; i < n; i++) {
            if (pfd[i].revents && waiting[i - 3]->used) {
                upstream_answer(s, waiting[i - 3]);
            }
        }
        if (pfd[1].revents & POLLIN) {
            query_udp(s);
        }
        if (pfd[2].revents & POLLIN) {
            accept_tcp(s);
        }
    }
    return NULL;
}


static int
listen_socket(int type, const struct sockaddr_in *addr)
{
    int  fd = socket(AF_INET, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int  one = 1;

    if (fd < 0) {
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *) addr, sizeof(*addr)) != 0
        || (type == SOCK_STREAM && listen(fd, 64) != 0))
    {
        close(fd);
        return -1;
    }
    return fd;
}


struct dns_server *
dns_start(struct name_table *names, const struct sockaddr_in *listen,
          const struct dns_upstreams *up)
{
    struct dns_server  *s = calloc(1, sizeof(*s));
    char                addr[INET_ADDRSTRLEN];

    if (s == NULL) {
        log_error("out of memory");
        return NULL;
    }
    inet_ntop(AF_INET, &listen->sin_addr, addr, sizeof(addr));
    s->names = names;
    s->up = *up;
    pthread_mutex_init(&s->tcp_lock, NULL);
    pthread_cond_init(&s->tcp_gone, NULL);
    for (unsigned i = 0; i < DNS_TCP_MAX; i++) {
        s->tcp_fd[i] = -1;
    }
    s->udp = listen_socket(SOCK_DGRAM, listen);
    s->tcp = s->udp >= 0 ? listen_socket(SOCK_STREAM, listen) : -1;
    s->wake[0] = s->wake[1] = -1;
    if (s->udp < 0 || s->tcp < 0) {
        log_error("dns: cannot listen on %s:%u: %s", addr,
                  ntohs(listen->sin_port), strerror(errno));
        goto failed;
    }
    if (pipe2(s->wake, O_CLOEXEC) != 0
        || pthread_create(&s->thread, NULL, dns_thread, s) != 0)
    {
        log_error("dns: cannot start: %s", strerror(errno));
        goto failed;
    }
    log_info("dns: answering " DNS_DOMAIN " on %s:%u (udp, tcp); other names"
             " to the CVM's resolvers (%zu)", addr, ntohs(listen->sin_port),
             up->n);
    return s;

failed:
    s->thread = 0;
    dns_stop(s);
    return NULL;
}


void
dns_stop(struct dns_server *s)
{
    int  fds[4];

    if (s == NULL) {
        return;
    }
    if (s->thread != 0) {
        (void) !write(s->wake[1], "x", 1);
        pthread_join(s->thread, NULL);
    }
    fds[0] = s->udp; fds[1] = s->tcp; fds[2] = s->wake[0]; fds[3] = s->wake[1];
    for (int i = 0; i < 4; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }
    for (size_t i = 0; i < DNS_PENDING; i++) {
        if (s->pending[i].used) {
            pending_free(&s->pending[i]);
        }
    }
    /* the TCP threads: their clients cut, they end at once, or after the
     * resolver they are waiting for (DNS_FORWARD_MS) */
    pthread_mutex_lock(&s->tcp_lock);
    __atomic_store_n(&s->stopping, true, __ATOMIC_RELEASE);
    for (unsigned i = 0; i < DNS_TCP_MAX; i++) {
        if (s->tcp_fd[i] >= 0) {
            shutdown(s->tcp_fd[i], SHUT_RDWR);
        }
    }
    while (s->tcp_active > 0) {
        pthread_cond_wait(&s->tcp_gone, &s->tcp_lock);
    }
    pthread_mutex_unlock(&s->tcp_lock);
    pthread_mutex_destroy(&s->tcp_lock);
    pthread_cond_destroy(&s->tcp_gone);
    free(s);
}
