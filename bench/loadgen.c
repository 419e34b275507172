/*
 * loadgen: closed-loop HTTP/1.1 load generator for bench/ (see README.md).
 *
 * Fixed concurrency: each connection has exactly one request in flight and
 * sends the next when the previous response is complete.  Keepalive (many
 * requests per connection) or --close (one request per connection, so each
 * request pays a TCP and a full TLS handshake).  Plain HTTP, or TLS with a
 * client certificate, which wrk cannot present.
 *
 * After the warm-up the counters restart and the CPU time of every --watch
 * process is read from /proc, and again at the end, so the request count and
 * the server CPU cover exactly the same window.  Prints one JSON object.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "hist.h"

#define MAX_CONNS     1024
#define MAX_WATCH     8
#define MAX_REQUEST   4096
#define RESP_MAX      16384
/* a misconfigured server makes every request fail: stop, don't spin */
#define MAX_ERRORS    100
/* only the first few failures are worth printing */
#define MAX_REPORTED  5

enum state { ST_DOWN, ST_CONNECTING, ST_HANDSHAKE, ST_WRITING, ST_READING };

/* what one step of a connection's state machine achieved */
enum step { AGAIN, PROGRESS, FAIL };

struct conn {
    int         fd;
    SSL        *ssl;
    enum state  state;
    uint32_t    interest;   /* epoll events registered for fd */
    uint64_t    start_ns;   /* start of the request being timed */
    size_t      sent;       /* request bytes written */
    size_t      have;       /* response bytes read */
    size_t      need;       /* whole response size, 0 until the head is in */
    int         status;
    int         close_after;    /* the server answered Connection: close */
    char        buf[RESP_MAX];
};

struct gen {
    /* options */
    struct sockaddr_storage  addr;
    socklen_t                addr_len;
    unsigned                 nconns;
    double                   seconds;
    double                   warmup;
    uint64_t                 max_requests;
    int                      one_per_conn;
    SSL_CTX                 *ssl_ctx;
    pid_t                    watch[MAX_WATCH];
    unsigned                 nwatch;
    char                     request[MAX_REQUEST];
    size_t                   request_len;

    /* run state */
    int                      epfd;
    int                      measuring;
    struct conn             *conns;

    /* counters of the measured window */
    uint64_t                 done;
    uint64_t                 non2xx;
    uint64_t                 opened;
    unsigned                 errors;    /* whole run, warm-up included */
    struct hist              hist;
};


static uint64_t
now_ns(void)
{
    struct timespec ts;

    /* CLOCK_MONOTONIC cannot fail with a valid pointer */
    (void) clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static void
fatal(const char *what)
{
    fprintf(stderr, "loadgen: %s\n", what);
    exit(2);
}

static void
report_error(struct gen *g, const char *what)
{
    if (g->errors < MAX_REPORTED) {
        fprintf(stderr, "loadgen: %s\n", what);
        ERR_print_errors_fp(stderr);
    }
    ERR_clear_error();
    g->errors++;
}

/* utime + stime of a process (all its threads), in microseconds */
static uint64_t
proc_cpu_us(pid_t pid)
{
    char path[64], buf[1024];
    unsigned long utime, stime;

    snprintf(path, sizeof path, "/proc/%d/stat", (int) pid);

    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "loadgen: %s: %s\n", path, strerror(errno));
        exit(2);
    }

    size_t n = fread(buf, 1, sizeof buf - 1, f);
    if (fclose(f) != 0 || n == 0) {
        fprintf(stderr, "loadgen: cannot read %s\n", path);
        exit(2);
    }
    buf[n] = '\0';

    /* the command name may hold spaces and parentheses: fields start after the last ')' */
    char *p = strrchr(buf, ')');
    if (p == NULL
        || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                  &utime, &stime) != 2)
    {
        fprintf(stderr, "loadgen: cannot parse %s\n", path);
        exit(2);
    }

    long hz = sysconf(_SC_CLK_TCK);
    if (hz <= 0) {
        fatal("sysconf(_SC_CLK_TCK) failed");
    }

    return (uint64_t) (utime + stime) * 1000000u / (uint64_t) hz;
}

static uint64_t
watched_cpu_us(const struct gen *g)
{
    uint64_t sum = 0;

    for (unsigned i = 0; i < g->nwatch; i++) {
        sum += proc_cpu_us(g->watch[i]);
    }
    return sum;
}


static void
set_interest(struct gen *g, struct conn *c, uint32_t events)
{
    if (c->interest == events) {
        return;
    }

    struct epoll_event ev = { .events = events, .data.ptr = c };
    if (epoll_ctl(g->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        fatal("epoll_ctl(MOD) failed");
    }
    c->interest = events;
}

static void
conn_close(struct conn *c)
{
    if (c->ssl != NULL) {
        /* no close_notify: the server already has its whole response sent */
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        /* closing the only descriptor also removes it from the epoll set */
        (void) close(c->fd);
        c->fd = -1;
    }
    c->state = ST_DOWN;
}

/* starts a connection; on failure the connection stays ST_DOWN for a retry */
static void
conn_open(struct gen *g, struct conn *c)
{
    c->fd = socket(g->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        report_error(g, "socket() failed");
        c->state = ST_DOWN;
        return;
    }

    if (g->addr.ss_family == AF_INET) {
        int one = 1;

        /* requests are one small write each: never wait for Nagle */
        if (setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
            report_error(g, "setsockopt(TCP_NODELAY) failed");
            conn_close(c);
            return;
        }
    }

    if (connect(c->fd, (struct sockaddr *) &g->addr, g->addr_len) != 0
        && errno != EINPROGRESS)
    {
        report_error(g, strerror(errno));
        conn_close(c);
        return;
    }

    c->interest = EPOLLOUT;
    struct epoll_event ev = { .events = c->interest, .data.ptr = c };
    if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        fatal("epoll_ctl(ADD) failed");
    }

    c->state = ST_CONNECTING;
    c->sent = 0;
    /* one request per connection: its latency includes connect and handshake */
    c->start_ns = now_ns();
    if (g->measuring) {
        g->opened++;
    }
}

static enum step
ssl_wait(struct gen *g, struct conn *c, int ret, const char *what)
{
    switch (SSL_get_error(c->ssl, ret)) {
    case SSL_ERROR_WANT_READ:
        set_interest(g, c, EPOLLIN);
        return AGAIN;
    case SSL_ERROR_WANT_WRITE:
        set_interest(g, c, EPOLLOUT);
        return AGAIN;
    default:
        report_error(g, what);
        return FAIL;
    }
}

static enum step
finish_connect(struct gen *g, struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
        report_error(g, err != 0 ? strerror(err) : "getsockopt(SO_ERROR) failed");
        return FAIL;
    }

    if (g->ssl_ctx == NULL) {
        c->state = ST_WRITING;
        return PROGRESS;
    }

    c->ssl = SSL_new(g->ssl_ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
        report_error(g, "SSL_new() failed");
        return FAIL;
    }
    SSL_set_connect_state(c->ssl);
    c->state = ST_HANDSHAKE;
    return PROGRESS;
}

static enum step
handshake(struct gen *g, struct conn *c)
{
    int r = SSL_do_handshake(c->ssl);

    if (r != 1) {
        return ssl_wait(g, c, r, "TLS handshake failed");
    }
    c->state = ST_WRITING;
    return PROGRESS;
}

static enum step
write_request(struct gen *g, struct conn *c)
{
    if (c->sent == 0 && !g->one_per_conn) {
        c->start_ns = now_ns();
    }

    if (c->ssl != NULL) {
        /* without partial writes SSL_write sends all or nothing, and a retry passes the same buffer */
        int r = SSL_write(c->ssl, g->request, (int) g->request_len);
        if (r <= 0) {
            return ssl_wait(g, c, r, "SSL_write() failed");
        }
        c->sent = g->request_len;

    } else {
        ssize_t n = send(c->fd, g->request + c->sent, g->request_len - c->sent,
                         MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) {
                set_interest(g, c, EPOLLOUT);
                return AGAIN;
            }
            report_error(g, strerror(errno));
            return FAIL;
        }
        c->sent += (size_t) n;
        if (c->sent < g->request_len) {
            return PROGRESS;
        }
    }

    c->state = ST_READING;
    c->have = 0;
    c->need = 0;
    c->close_after = 0;
    /* the answer cannot be there yet: wait instead of a read that finds nothing */
    set_interest(g, c, EPOLLIN);
    return AGAIN;
}

/* "name: value" line of len bytes; the value with leading blanks skipped, or NULL */
static const char *
header_value(const char *line, size_t len, const char *name, size_t *vlen)
{
    size_t n = strlen(name);

    if (len <= n || line[n] != ':' || strncasecmp(line, name, n) != 0) {
        return NULL;
    }

    const char *v = line + n + 1;
    const char *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t')) {
        v++;
    }
    *vlen = (size_t) (end - v);
    return v;
}

/* -1: malformed or unsupported, 0: head incomplete, 1: c->need is known */
static int
parse_head(struct conn *c)
{
    const char *buf = c->buf;
    const char *end = memmem(buf, c->have, "\r\n\r\n", 4);

    if (end == NULL) {
        return 0;
    }

    if (end - buf < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' '
        || buf[9] < '1' || buf[9] > '5' || buf[10] < '0' || buf[10] > '9'
        || buf[11] < '0' || buf[11] > '9')
    {
        return -1;
    }
    c->status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');

    long long length = -1;
    const char *line = memmem(buf, (size_t) (end + 2 - buf), "\r\n", 2) + 2;

    while (line < end + 2) {
        const char *eol = memmem(line, (size_t) (end + 2 - line), "\r\n", 2);
        size_t len = (size_t) (eol - line), vlen;
        const char *v;

        if ((v = header_value(line, len, "content-length", &vlen)) != NULL) {
            length = 0;
            for (size_t i = 0; i < vlen; i++) {
                if (v[i] < '0' || v[i] > '9' || length > RESP_MAX) {
                    return -1;
                }
                length = length * 10 + (v[i] - '0');
            }
        } else if ((v = header_value(line, len, "connection", &vlen)) != NULL) {
            c->close_after = vlen == 5 && strncasecmp(v, "close", 5) == 0;
        } else if (header_value(line, len, "transfer-encoding", &vlen) != NULL) {
            /* the servers under test answer small fixed bodies */
            return -1;
        }
        line = eol + 2;
    }

    if (length < 0) {
        return -1;
    }
    c->need = (size_t) (end + 4 - buf) + (size_t) length;
    return 1;
}

static enum step
response_done(struct gen *g, struct conn *c)
{
    if (g->measuring) {
        hist_add(&g->hist, (now_ns() - c->start_ns) / 1000);
        g->done++;
        if (c->status < 200 || c->status > 299) {
            g->non2xx++;
        }
    }

    if (g->one_per_conn || c->close_after) {
        conn_close(c);
        conn_open(g, c);
        return AGAIN;
    }

    c->state = ST_WRITING;
    c->sent = 0;
    return PROGRESS;
}

static enum step
read_response(struct gen *g, struct conn *c)
{
    for ( ;; ) {
        size_t room = sizeof c->buf - c->have;
        ssize_t n;

        if (room == 0) {
            report_error(g, "response too large");
            return FAIL;
        }

        if (c->ssl != NULL) {
            int r = SSL_read(c->ssl, c->buf + c->have, (int) room);
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e != SSL_ERROR_ZERO_RETURN && e != SSL_ERROR_SYSCALL) {
                    return ssl_wait(g, c, r, "SSL_read() failed");
                }
                r = 0;
            }
            n = r;

        } else {
            n = recv(c->fd, c->buf + c->have, room, 0);
            if (n < 0) {
                if (errno == EAGAIN) {
                    set_interest(g, c, EPOLLIN);
                    return AGAIN;
                }
                report_error(g, strerror(errno));
                return FAIL;
            }
        }

        if (n == 0) {
            report_error(g, "connection closed before the response was complete");
            return FAIL;
        }
        c->have += (size_t) n;

        if (c->need == 0) {
            int r = parse_head(c);
            if (r < 0) {
                report_error(g, "malformed or unsupported response head");
                return FAIL;
            }
            if (r == 0) {
                continue;
            }
        }

        if (c->have > c->need) {
            report_error(g, "more data than the response announced");
            return FAIL;
        }
        if (c->have == c->need) {
            return response_done(g, c);
        }
    }
}

static void
drive(struct gen *g, struct conn *c)
{
    enum step s = PROGRESS;

    while (s == PROGRESS) {
        switch (c->state) {
        case ST_CONNECTING: s = finish_connect(g, c); break;
        case ST_HANDSHAKE:  s = handshake(g, c); break;
        case ST_WRITING:    s = write_request(g, c); break;
        case ST_READING:    s = read_response(g, c); break;
        case ST_DOWN:       s = AGAIN; break;
        }
    }

    if (s == FAIL) {
        conn_close(c);
        conn_open(g, c);
    }
}


static void
usage(void)
{
    fprintf(stderr,
"usage: loadgen --addr 127.0.0.1:PORT|unix:PATH [options]\n"
"  -c, --concurrency N   connections, one request in flight each (16)\n"
"  -d, --duration S      measured seconds (5)\n"
"  -w, --warmup S        seconds before measuring (1)\n"
"  -n, --requests N      stop the measured window after N responses\n"
"  -1, --close           one request per connection (Connection: close)\n"
"  -T, --tls             TLS; the server certificate is not verified\n"
"  -C, --cert FILE       client certificate chain (PEM); implies --tls\n"
"  -K, --key FILE        its key (PEM)\n"
"  -p, --path PATH       request target (/)\n"
"  -h, --host HOST       Host header (localhost)\n"
"  -H, --header 'N: V'   extra request header, repeatable\n"
"  -W, --watch PID       add this process's CPU time to cpu_us, repeatable\n");
    exit(2);
}

static void
parse_addr(struct gen *g, const char *s)
{
    memset(&g->addr, 0, sizeof g->addr);

    if (strncmp(s, "unix:", 5) == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *) &g->addr;
        if (strlen(s + 5) >= sizeof un->sun_path) {
            fatal("unix socket path too long");
        }
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, s + 5);
        g->addr_len = sizeof *un;
        return;
    }

    struct sockaddr_in *in = (struct sockaddr_in *) &g->addr;
    char host[64];
    unsigned port;

    if (sscanf(s, "%63[0-9.]:%u", host, &port) != 2 || port == 0 || port > 65535
        || inet_pton(AF_INET, host, &in->sin_addr) != 1)
    {
        fatal("--addr wants IPv4:PORT or unix:PATH");
    }
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t) port);
    g->addr_len = sizeof *in;
}

static SSL_CTX *
client_ctx(const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (ctx == NULL) {
        fatal("SSL_CTX_new() failed");
    }

    /*
     * The server's chain is the same in every variant compared, and checking
     * it would only slow the generator, which shares the machine with the
     * server.  No session cache: every connection is a full handshake.
     */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);

    if (cert != NULL
        && (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1
            || SSL_CTX_use_PrivateKey_file(ctx, key != NULL ? key : cert,
                                           SSL_FILETYPE_PEM) != 1
            || SSL_CTX_check_private_key(ctx) != 1))
    {
        ERR_print_errors_fp(stderr);
        fatal("cannot load the client certificate or key");
    }
    return ctx;
}

/* a number in [0, max], or exit */
static double
number(const char *s, const char *what, double max)
{
    char *end;
    double v = strtod(s, &end);

    if (end == s || *end != '\0' || !(v >= 0) || v > max) {
        fprintf(stderr, "loadgen: bad %s \"%s\"\n", what, s);
        exit(2);
    }
    return v;
}

static void
parse_options(struct gen *g, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "addr",        required_argument, NULL, 'a' },
        { "concurrency", required_argument, NULL, 'c' },
        { "duration",    required_argument, NULL, 'd' },
        { "warmup",      required_argument, NULL, 'w' },
        { "requests",    required_argument, NULL, 'n' },
        { "close",       no_argument,       NULL, '1' },
        { "tls",         no_argument,       NULL, 'T' },
        { "cert",        required_argument, NULL, 'C' },
        { "key",         required_argument, NULL, 'K' },
        { "path",        required_argument, NULL, 'p' },
        { "host",        required_argument, NULL, 'h' },
        { "header",      required_argument, NULL, 'H' },
        { "watch",       required_argument, NULL, 'W' },
        { NULL, 0, NULL, 0 }
    };
    const char *addr = NULL, *cert = NULL, *key = NULL;
    const char *path = "/", *host = "localhost";
    char headers[MAX_REQUEST] = "";
    size_t hlen = 0;
    int tls = 0, opt;

    g->nconns = 16;
    g->seconds = 5;
    g->warmup = 1;

    while ((opt = getopt_long(argc, argv, "a:c:d:w:n:1TC:K:p:h:H:W:", longopts,
                              NULL)) != -1)
    {
        switch (opt) {
        case 'a': addr = optarg; break;
        case 'c': g->nconns = (unsigned) number(optarg, "concurrency", MAX_CONNS); break;
        case 'd': g->seconds = number(optarg, "duration", 86400); break;
        case 'w': g->warmup = number(optarg, "warm-up", 86400); break;
        case 'n': g->max_requests = (uint64_t) number(optarg, "request count", 1e15); break;
        case '1': g->one_per_conn = 1; break;
        case 'T': tls = 1; break;
        case 'C': cert = optarg; tls = 1; break;
        case 'K': key = optarg; break;
        case 'p': path = optarg; break;
        case 'h': host = optarg; break;
        case 'H': {
            int n = snprintf(headers + hlen, sizeof headers - hlen, "%s\r\n", optarg);
            if (n < 0 || (size_t) n >= sizeof headers - hlen) {
                fatal("headers too long");
            }
            hlen += (size_t) n;
            break;
        }
        case 'W':
            if (g->nwatch == MAX_WATCH) {
                fatal("too many --watch");
            }
            g->watch[g->nwatch++] = (pid_t) number(optarg, "pid", 4194304);
            break;
        default:
            usage();
        }
    }

    if (addr == NULL || optind != argc || g->nconns == 0 || g->seconds <= 0)
    {
        usage();
    }
    parse_addr(g, addr);

    if (tls) {
        g->ssl_ctx = client_ctx(cert, key);
    }

    int n = snprintf(g->request, sizeof g->request,
                     "GET %s HTTP/1.1\r\nHost: %s\r\n%s%s\r\n", path, host,
                     headers, g->one_per_conn ? "Connection: close\r\n" : "");
    if (n < 0 || (size_t) n >= sizeof g->request) {
        fatal("request too long");
    }
    g->request_len = (size_t) n;
}


int
main(int argc, char **argv)
{
    static struct gen g;
    struct epoll_event events[64];

    parse_options(&g, argc, argv);

    /* a server closing mid-write must show as an error, not kill us */
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        fatal("signal() failed");
    }

    g.epfd = epoll_create1(EPOLL_CLOEXEC);
    g.conns = calloc(g.nconns, sizeof *g.conns);
    if (g.epfd < 0 || g.conns == NULL) {
        fatal("out of resources");
    }

    for (unsigned i = 0; i < g.nconns; i++) {
        g.conns[i].fd = -1;
        conn_open(&g, &g.conns[i]);
    }

    uint64_t window_start = now_ns() + (uint64_t) (g.warmup * 1e9);
    uint64_t window_end = 0;
    uint64_t cpu_start = 0;

    for ( ;; ) {
        uint64_t now = now_ns();

        if (!g.measuring && now >= window_start) {
            g.measuring = 1;
            window_start = now;
            window_end = now + (uint64_t) (g.seconds * 1e9);
            cpu_start = watched_cpu_us(&g);
        }
        if (g.measuring
            && (now >= window_end || (g.max_requests && g.done >= g.max_requests)))
        {
            break;
        }
        if (g.errors >= MAX_ERRORS) {
            break;
        }

        /* wake for the next phase change, sooner when a connection awaits a retry */
        uint64_t next = g.measuring ? window_end : window_start;
        int timeout = (int) ((next - now) / 1000000 + 1);
        for (unsigned i = 0; i < g.nconns; i++) {
            if (g.conns[i].state == ST_DOWN) {
                conn_open(&g, &g.conns[i]);
                timeout = 10;
            }
        }

        int n = epoll_wait(g.epfd, events, 64, timeout);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            fatal("epoll_wait() failed");
        }
        for (int i = 0; i < n; i++) {
            drive(&g, events[i].data.ptr);
        }
    }

    uint64_t window_ns = now_ns() - window_start;
    uint64_t cpu_us = g.measuring ? watched_cpu_us(&g) - cpu_start : 0;
    double secs = (double) window_ns / 1e9;

    int out = printf("{\"requests\":%llu,\"errors\":%u,\"non2xx\":%llu,\"connections\":%llu,"
           "\"seconds\":%.3f,\"rps\":%.1f,\"p50_us\":%llu,\"p99_us\":%llu,"
           "\"cpu_us\":%llu,\"cpu_us_per_req\":%.3f}\n",
           (unsigned long long) g.done, g.errors, (unsigned long long) g.non2xx,
           (unsigned long long) g.opened, secs,
           secs > 0 ? (double) g.done / secs : 0.0,
           (unsigned long long) hist_quantile(&g.hist, 0.50),
           (unsigned long long) hist_quantile(&g.hist, 0.99),
           (unsigned long long) cpu_us,
           g.done > 0 ? (double) cpu_us / (double) g.done : 0.0);
    /* the driver reads this line: a lost one must not look like a run */
    if (out < 0 || fflush(stdout) != 0) {
        fatal("cannot write the result");
    }

    for (unsigned i = 0; i < g.nconns; i++) {
        conn_close(&g.conns[i]);
    }
    free(g.conns);
    SSL_CTX_free(g.ssl_ctx);

    return g.errors == 0 && g.done > 0 ? 0 : 1;
}
