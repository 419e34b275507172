/*
 * The node's DNS server: UDP and TCP on one loopback address (default
 * 127.0.0.153:53), in a thread of its own.  Names in dstack.internal come
 * from the name table (node_dns_answer.c); everything else goes to the
 * resolvers the CVM had (node_resolv.c).
 *
 * UDP forwarding does not block: a forwarded query gets a fresh random id
 * and waits in a bounded table (the oldest is dropped when it is full)
 * until the answer, from that resolver's address with that id, comes back,
 * or DNS_FORWARD_MS passes and the next resolver is tried; after the last,
 * SERVFAIL.  A truncated answer goes back as it is, and the client asks
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
#define DNS_PENDING     512
#define DNS_TCP_MAX     16
#define DNS_TCP_QUERIES 32          /* per connection */
#define DNS_TCP_READ_MS 5000        /* to send them all */
#define DNS_MSG_MAX     65535

struct pending {
    bool                     used;
    uint16_t                 id;         /* ours, toward the resolver */
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
    int                     udp, tcp, fwd4, fwd6;
    int                     wake[2];
    pthread_t               thread;
    unsigned                tcp_active;  /* atomic */
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


static int
fwd_socket(const struct dns_server *s, size_t i)
{
    return s->up.addr[i].ss_family == AF_INET6 ? s->fwd6 : s->fwd4;
}


/* sends p's query to its resolver: 0, or -1 when none is left */
static int
forward_send(struct dns_server *s, struct pending *p)
{
    for (; p->upstream < s->up.n; p->upstream++) {
        int fd = fwd_socket(s, p->upstream);

        if (fd >= 0
            && sendto(fd, p->query, p->len, 0,
                      (struct sockaddr *) &s->up.addr[p->upstream],
                      s->up.len[p->upstream]) == (ssize_t) p->len)
        {
            p->deadline = now_ms() + DNS_FORWARD_MS;
            return 0;
        }
    }
    return -1;
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
    free(p->query);
    p->query = NULL;
    p->used = false;
}


static void
forward_udp(struct dns_server *s, const uint8_t *q, size_t len,
            const struct sockaddr_storage *from, socklen_t from_len)
{
    struct pending  *p = NULL, *oldest = &s->pending[0];
    uint16_t         id;

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
        free(oldest->query);            /* a flood: the oldest gives way */
        p = oldest;
    }
    memset(p, 0, sizeof(*p));
    p->query = malloc(len);
    if (p->query == NULL) {
        return;
    }
    /* an id no other pending query has toward the resolvers */
    do {
        id = random_id();
        for (size_t i = 0; i < DNS_PENDING; i++) {
            if (s->pending[i].used && s->pending[i].id == id) {
                id = 0;
                break;
            }
        }
    } while (id == 0);
    memcpy(p->query, q, len);
    p->len = len;
    p->client_id = LDNS_ID_WIRE(q);
    p->id = id;
    ldns_write_uint16(p->query, id);
    memcpy(&p->client, from, from_len);
    p->client_len = from_len;
    p->used = true;
    if (forward_send(s, p) != 0) {
        pending_fail(s, p);
    }
}


static bool
same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family) {
        return false;
    }
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *) a, *y = (const void *) b;

        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *) a, *y = (const void *) b;

    return x->sin6_port == y->sin6_port
           && memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}


/* an answer from a resolver: to the client that asked, with its id */
static void
upstream_answer(struct dns_server *s, int fd)
{
    struct sockaddr_storage  from;
    socklen_t                from_len = sizeof(from);
    ssize_t                  n;

    n = recvfrom(fd, s->buf, sizeof(s->buf), MSG_DONTWAIT,
                 (struct sockaddr *) &from, &from_len);
    if (n < LDNS_HEADER_SIZE || !LDNS_QR_WIRE(s->buf)) {
        return;
    }
    for (size_t i = 0; i < DNS_PENDING; i++) {
        struct pending *p = &s->pending[i];

        if (p->used && p->id == LDNS_ID_WIRE(s->buf)
            && same_addr(&from, &s->up.addr[p->upstream]))
        {
            ldns_write_uint16(s->buf, p->client_id);
            reply_udp(s, s->buf, (size_t) n, &p->client, p->client_len);
            free(p->query);
            p->query = NULL;
            p->used = false;
            return;
        }
    }
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

    for (size_t i = 0; i < s->up.n; i++) {
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
             && *ans_len >= LDNS_HEADER_SIZE
             && LDNS_ID_WIRE(ans) == LDNS_ID_WIRE(q);
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
    close(c->fd);
    free(c);
    __atomic_sub_fetch(&s->tcp_active, 1, __ATOMIC_RELEASE);
    return NULL;
}


static void
accept_tcp(struct dns_server *s)
{
    struct tcp_conn  *c;
    pthread_attr_t    attr;
    pthread_t         t;
    int               fd;

    fd = accept4(s->tcp, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
        return;
    }
    c = malloc(sizeof(*c));
    if (c == NULL || __atomic_load_n(&s->tcp_active, __ATOMIC_ACQUIRE) >= DNS_TCP_MAX) {
        free(c);
        close(fd);              /* busy: the client tries again */
        return;
    }
    c->s = s;
    c->fd = fd;
    __atomic_add_fetch(&s->tcp_active, 1, __ATOMIC_ACQ_REL);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    if (pthread_create(&t, &attr, tcp_thread, c) != 0) {
        __atomic_sub_fetch(&s->tcp_active, 1, __ATOMIC_RELEASE);
        close(fd);
        free(c);
    }
    pthread_attr_destroy(&attr);
}


/* --- the thread --- */

static void *
dns_thread(void *arg)
{
    struct dns_server  *s = arg;
    struct pollfd       pfd[5];
    uint64_t            now, next;
    int                 timeout;

    pfd[0] = (struct pollfd) { .fd = s->wake[0], .events = POLLIN };
    pfd[1] = (struct pollfd) { .fd = s->udp, .events = POLLIN };
    pfd[2] = (struct pollfd) { .fd = s->tcp, .events = POLLIN };
    pfd[3] = (struct pollfd) { .fd = s->fwd4, .events = POLLIN };
    pfd[4] = (struct pollfd) { .fd = s->fwd6, .events = POLLIN };
    for (;;) {
        now = now_ms();
        next = UINT64_MAX;
        for (size_t i = 0; i < DNS_PENDING; i++) {
            struct pending *p = &s->pending[i];

            if (p->used && p->deadline <= now) {
                p->upstream++;          /* no answer: the next resolver */
                if (forward_send(s, p) != 0) {
                    pending_fail(s, p);
                }
            }
            if (p->used && p->deadline < next) {
                next = p->deadline;
            }
        }
        timeout = next == UINT64_MAX ? -1 : (int) (next - now);
        if (poll(pfd, 5, timeout) < 0 && errno != EINTR) {
            log_error("dns: poll: %s", strerror(errno));
            break;
        }
        if (pfd[0].revents) {
            break;
        }
        if (pfd[1].revents & POLLIN) {
            query_udp(s);
        }
        if (pfd[2].revents & POLLIN) {
            accept_tcp(s);
        }
        for (int i = 3; i < 5; i++) {
            if (pfd[i].revents & POLLIN) {
                upstream_answer(s, pfd[i].fd);
            }
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


static int
fwd_open(int family)
{
    return socket(family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
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
    s->fwd4 = fwd_open(AF_INET);
    s->fwd6 = fwd_open(AF_INET6);       /* -1 without IPv6: fine */
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
    int  fds[6];

    if (s == NULL) {
        return;
    }
    if (s->thread != 0) {
        (void) !write(s->wake[1], "x", 1);
        pthread_join(s->thread, NULL);
    }
    fds[0] = s->udp; fds[1] = s->tcp; fds[2] = s->fwd4; fds[3] = s->fwd6;
    fds[4] = s->wake[0]; fds[5] = s->wake[1];
    for (int i = 0; i < 6; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }
    for (size_t i = 0; i < DNS_PENDING; i++) {
        free(s->pending[i].query);
    }
    /* a TCP thread ends within its timeouts; until then it needs s */
    for (int i = 0; i < 100 && __atomic_load_n(&s->tcp_active, __ATOMIC_ACQUIRE) > 0; i++) {
        usleep(50 * 1000);
    }
    if (__atomic_load_n(&s->tcp_active, __ATOMIC_ACQUIRE) == 0) {
        free(s);
    }
}
