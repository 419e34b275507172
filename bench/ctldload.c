/*
 * ctldload: HTTP/1.1 load for the dstack-ctld comparisons (bench/README.md).
 * Plain HTTP over TCP or a unix socket, epoll, one thread, keepalive.
 *
 *   ctldload requests --addr A --input FILE [options]
 *
 * Sends the requests of FILE, one per line ("METHOD PATH [BODY]", the body
 * is the rest of the line), over --concurrency connections with one request
 * in flight each.  Without --duration every line is sent once and the
 * window runs from the first request to the last response; with it the
 * lines are sent round and round, --warmup seconds first, then a measured
 * window of --duration seconds.  --output FILE writes the body of the
 * answer to line i as line i (every line once only).  Any answer but 200,
 * a connection error or a malformed answer ends the run (exit 1).  Prints
 * one JSON object: requests, seconds, rps, p50_us, p99_us, max_us,
 * body_bytes (of the last answer), cpu_us (of the --watch processes).
 *
 *   ctldload poll --addr A --tokens FILE --since V [options]
 *
 * Long pollers: one connection per node token of FILE, each holding
 * GET /api/v1/peers?since=V&wait=W.  Prints "sent N" once every poll of a
 * round is written.  When every poller has an answer that is a delta with
 * an added peer at a higher version (an idle answer at the same version is
 * polled again and not counted), it prints one JSON line: round, pollers,
 * first_ns, last_ns (CLOCK_MONOTONIC of the first and last complete
 * answers), cpu_ns (the --watch processes' CPU time, read right after the
 * last answer), version; then every poller polls again from that version.
 * Runs until stdin is closed.  A round not complete --timeout seconds after
 * its first answer ends the run (exit 1).
 *
 * CPU time is the sum of /proc/PID/task/<tid>/schedstat (run time in ns,
 * the same utime + stime as /proc/PID/stat without its 10 ms ticks).
 */

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "hist.h"

#define MAX_WATCH       8
#define MAX_HEADERS     8
#define MAX_RESPONSE    (256u << 20)
#define MAX_LINE        (1u << 20)
#define EVENTS          1024

enum state { ST_IDLE, ST_QUEUED, ST_CONNECTING, ST_WRITING, ST_READING };

struct conn {
    int         fd;
    enum state  state;
    uint32_t    interest;
    size_t      index;      /* requests: line in flight; poll: token */
    char       *req;        /* the request being written */
    size_t      req_cap;
    size_t      req_len;
    size_t      sent;
    char       *buf;        /* the answer being read */
    size_t      cap;
    size_t      have;
    size_t      need;       /* whole answer, 0 until the head is in */
    size_t      body_at;
    int         status;
    int         close_after;
    int         retried;    /* resent once after a keepalive close */
    uint64_t    start_ns;
    unsigned long long since;
};

struct line {
    const char *method;
    const char *path;
    const char *body;       /* NULL: none */
};

static struct {
    /* options */
    struct sockaddr_storage  addr;
    socklen_t                addr_len;
    struct sockaddr_in       bind_addr;     /* --bind: the source address */
    int                      bind;
    unsigned                 nconns;
    double                   duration;
    double                   warmup;
    const char              *headers[MAX_HEADERS];
    unsigned                 nheaders;
    pid_t                    watch[MAX_WATCH];
    unsigned                 nwatch;
    unsigned                 connect_max;
    unsigned                 wait;
    double                   timeout;

    int                      epfd;
    struct conn             *conns;
    unsigned                 connecting;
    struct conn            **queue;     /* waiting to connect, a ring */
    size_t                   queue_head;
    size_t                   queued;

    /* requests */
    struct line             *lines;
    size_t                   nlines;
    size_t                   next;
    size_t                   done;
    int                      cycle;
    int                      measuring;
    char                   **bodies;
    size_t                   last_body;
    struct hist              hist;

    /* poll */
    char                   **tokens;
    size_t                   ntokens;
    size_t                   round_done;
    size_t                   round_sent;
    uint64_t                 round_first_ns;
    uint64_t                 round_last_ns;
    unsigned long long       round_version;
    unsigned                 round;
} g;


static void __attribute__((format(printf, 1, 2), noreturn))
die(const char *fmt, ...)
{
    va_list  ap;

    fputs("ctldload: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static void *
xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (p == NULL) {
        die("out of memory");
    }
    return p;
}

static uint64_t
now_ns(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

/* run time of every thread of pid, in ns */
static uint64_t
proc_cpu_ns(pid_t pid)
{
    char            path[64], file[128];
    struct dirent  *d;
    uint64_t        sum = 0;
    DIR            *dir;

    snprintf(path, sizeof path, "/proc/%d/task", (int) pid);
    dir = opendir(path);
    if (dir == NULL) {
        die("%s: %s", path, strerror(errno));
    }
    while ((d = readdir(dir)) != NULL) {
        unsigned long long  ns;
        FILE               *f;

        if (d->d_name[0] == '.') {
            continue;
        }
        snprintf(file, sizeof file, "%s/%.32s/schedstat", path, d->d_name);
        f = fopen(file, "r");
        if (f == NULL) {
            continue;           /* the thread just ended */
        }
        if (fscanf(f, "%llu", &ns) == 1) {
            sum += ns;
        }
        fclose(f);
    }
    closedir(dir);
    return sum;
}

static uint64_t
watched_cpu_ns(void)
{
    uint64_t  sum = 0;

    for (unsigned i = 0; i < g.nwatch; i++) {
        sum += proc_cpu_ns(g.watch[i]);
    }
    return sum;
}


static void
set_interest(struct conn *c, uint32_t events)
{
    struct epoll_event  ev = { .events = events, .data.ptr = c };

    if (c->interest == events) {
        return;
    }
    if (epoll_ctl(g.epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        die("epoll_ctl: %s", strerror(errno));
    }
    c->interest = events;
}

static void
conn_close(struct conn *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    if (c->state == ST_CONNECTING) {
        g.connecting--;
    }
    c->state = ST_IDLE;
}

/* connects, or leaves c queued when --connect-max connects are under way */
static void
conn_open(struct conn *c)
{
    struct epoll_event  ev;
    int                 one = 1;

    if (g.connect_max && g.connecting >= g.connect_max) {
        g.queue[(g.queue_head + g.queued++) % g.nconns] = c;
        c->state = ST_QUEUED;
        return;
    }
    c->fd = socket(g.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        die("socket: %s", strerror(errno));
    }
    if (g.addr.ss_family == AF_INET) {
        (void) setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (g.bind && bind(c->fd, (struct sockaddr *) &g.bind_addr, sizeof g.bind_addr) != 0) {
        die("bind: %s", strerror(errno));
    }
    if (connect(c->fd, (struct sockaddr *) &g.addr, g.addr_len) != 0
        && errno != EINPROGRESS)
    {
        die("connect: %s", strerror(errno));
    }
    c->interest = EPOLLOUT;
    ev.events = c->interest;
    ev.data.ptr = c;
    if (epoll_ctl(g.epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        die("epoll_ctl: %s", strerror(errno));
    }
    c->state = ST_CONNECTING;
    g.connecting++;
}

static void
open_queued(void)
{
    while (g.queued && g.connecting < g.connect_max) {
        struct conn  *c = g.queue[g.queue_head];

        g.queue_head = (g.queue_head + 1) % g.nconns;
        g.queued--;
        conn_open(c);
    }
}


/* "name: value" of a head line; the value without leading blanks, or NULL */
static const char *
header_value(const char *line, size_t len, const char *name, size_t *vlen)
{
    size_t       n = strlen(name);
    const char  *v, *end = line + len;

    if (len <= n || line[n] != ':' || strncasecmp(line, name, n) != 0) {
        return NULL;
    }
    v = line + n + 1;
    while (v < end && (*v == ' ' || *v == '\t')) {
        v++;
    }
    *vlen = (size_t) (end - v);
    return v;
}

/* -1 malformed, 0 incomplete, 1 c->need known */
static int
parse_head(struct conn *c)
{
    const char          *buf = c->buf, *end, *line;
    unsigned long long   length = 0;
    int                  have_length = 0;

    end = memmem(buf, c->have, "\r\n\r\n", 4);
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
    c->close_after = 0;

    line = (const char *) memmem(buf, (size_t) (end + 2 - buf), "\r\n", 2) + 2;
    while (line < end + 2) {
        const char  *eol = memmem(line, (size_t) (end + 2 - line), "\r\n", 2);
        const char  *v;
        size_t       len = (size_t) (eol - line), vlen;

        if ((v = header_value(line, len, "content-length", &vlen)) != NULL) {
            have_length = 1;
            for (size_t i = 0; i < vlen; i++) {
                if (v[i] < '0' || v[i] > '9' || length > MAX_RESPONSE) {
                    return -1;
                }
                length = length * 10 + (unsigned) (v[i] - '0');
            }
        } else if ((v = header_value(line, len, "connection", &vlen)) != NULL) {
            c->close_after = vlen == 5 && strncasecmp(v, "close", 5) == 0;
        } else if (header_value(line, len, "transfer-encoding", &vlen) != NULL) {
            return -1;
        }
        line = eol + 2;
    }
    if (!have_length || length > MAX_RESPONSE) {
        return -1;
    }
    c->body_at = (size_t) (end + 4 - buf);
    c->need = c->body_at + (size_t) length;
    return 1;
}


/* requests mode ---------------------------------------------------------- */

static size_t
fmt_request(char **out, size_t *cap, const struct line *l, const char *auth)
{
    size_t  need, len, blen = l->body ? strlen(l->body) : 0;
    int     n;

    need = strlen(l->method) + strlen(l->path) + blen + 256;
    for (unsigned i = 0; i < g.nheaders; i++) {
        need += strlen(g.headers[i]) + 2;
    }
    if (auth) {
        need += strlen(auth) + 32;
    }
    if (*cap < need) {
        *cap = need;
        *out = xrealloc(*out, need);
    }
    n = snprintf(*out, *cap, "%s %s HTTP/1.1\r\nHost: localhost\r\n",
                 l->method, l->path);
    len = (size_t) n;
    for (unsigned i = 0; i < g.nheaders; i++) {
        len += (size_t) snprintf(*out + len, *cap - len, "%s\r\n", g.headers[i]);
    }
    if (auth) {
        len += (size_t) snprintf(*out + len, *cap - len,
                                 "Authorization: Bearer %s\r\n", auth);
    }
    if (l->body) {
        len += (size_t) snprintf(*out + len, *cap - len,
                                 "Content-Type: application/json\r\n"
                                 "Content-Length: %zu\r\n\r\n%s", blen, l->body);
    } else if (strcmp(l->method, "POST") == 0 || strcmp(l->method, "PUT") == 0) {
        len += (size_t) snprintf(*out + len, *cap - len,
                                 "Content-Length: 0\r\n\r\n");
    } else {
        len += (size_t) snprintf(*out + len, *cap - len, "\r\n");
    }
    return len;
}

/* takes the next line for c; 0 when there is none */
static int
next_request(struct conn *c)
{
    if (g.next >= g.nlines) {
        if (!g.cycle) {
            return 0;
        }
        g.next = 0;
    }
    c->index = g.next++;
    c->req_len = fmt_request(&c->req, &c->req_cap, &g.lines[c->index], NULL);
    c->sent = 0;
    c->retried = 0;
    return 1;
}

static void
requests_done(struct conn *c)
{
    if (c->status != 200) {
        die("%s %s: status %d: %.*s", g.lines[c->index].method,
            g.lines[c->index].path, c->status,
            (int) (c->have - c->body_at > 300 ? 300 : c->have - c->body_at),
            c->buf + c->body_at);
    }
    if (g.measuring) {
        hist_add(&g.hist, (now_ns() - c->start_ns) / 1000);
        g.done++;
    }
    g.last_body = c->need - c->body_at;
    if (g.bodies) {
        if (memchr(c->buf + c->body_at, '\n', g.last_body) != NULL) {
            die("--output: an answer holds a newline");
        }
        free(g.bodies[c->index]);
        g.bodies[c->index] = xrealloc(NULL, g.last_body + 1);
        memcpy(g.bodies[c->index], c->buf + c->body_at, g.last_body);
        g.bodies[c->index][g.last_body] = '\0';
    }
}


/* poll mode -------------------------------------------------------------- */

static void
poll_request(struct conn *c)
{
    char         path[128];
    struct line  l = { "GET", path, NULL };

    snprintf(path, sizeof path, "/api/v1/peers?since=%llu&wait=%u",
             c->since, g.wait);
    c->req_len = fmt_request(&c->req, &c->req_cap, &l, g.tokens[c->index]);
    c->sent = 0;
    c->retried = 0;
}

static unsigned long long
json_number(const char *body, size_t len, const char *key)
{
    char        pat[64];
    const char *p;
    size_t      n = (size_t) snprintf(pat, sizeof pat, "\"%s\":", key);

    p = memmem(body, len, pat, n);
    if (p == NULL) {
        return 0;
    }
    return strtoull(p + n, NULL, 10);
}

static void write_step(struct conn *c);

static void
poll_done(struct conn *c)
{
    const char          *body = c->buf + c->body_at;
    size_t               blen = c->need - c->body_at;
    unsigned long long   v;

    if (c->status != 200) {
        die("poll %zu: status %d: %.*s", c->index, c->status,
            (int) (blen > 300 ? 300 : blen), body);
    }
    v = json_number(body, blen, "version");
    if (v == c->since) {
        /* the wait ended without a change: poll again, not counted */
        c->state = ST_WRITING;
        return;
    }
    if (v < c->since || memmem(body, blen, "\"snapshot\":false", 16) == NULL
        || memmem(body, blen, "\"added\":[{", 10) == NULL)
    {
        die("poll %zu: not a delta with an added peer after version %llu: %.*s",
            c->index, c->since, (int) (blen > 300 ? 300 : blen), body);
    }
    if (g.round_done == 0) {
        g.round_first_ns = now_ns();
        g.round_version = v;
    } else if (v != g.round_version) {
        die("poll %zu: version %llu, others got %llu (more than one change?)",
            c->index, v, g.round_version);
    }
    c->since = v;
    c->state = ST_IDLE;
    if (++g.round_done == g.ntokens) {
        uint64_t  t = now_ns(), cpu = watched_cpu_ns();

        g.round_last_ns = t;
        printf("{\"round\":%u,\"pollers\":%zu,\"first_ns\":%llu,\"last_ns\":%llu,"
               "\"cpu_ns\":%llu,\"version\":%llu}\n", ++g.round, g.ntokens,
               (unsigned long long) g.round_first_ns,
               (unsigned long long) g.round_last_ns,
               (unsigned long long) cpu, v);
        fflush(stdout);
        g.round_done = 0;
        g.round_sent = 0;
        for (size_t i = 0; i < g.nconns; i++) {
            struct conn  *p = &g.conns[i];

            if (p->state != ST_IDLE) {
                continue;
            }
            poll_request(p);
            if (p->fd >= 0) {
                p->state = ST_WRITING;
                write_step(p);
            } else {
                conn_open(p);
            }
        }
    }
}


/* the connection state machine ------------------------------------------ */

static int poll_mode;

static void
response_done(struct conn *c)
{
    if (c->close_after) {
        /* the next request, if any, goes on a new connection */
        close(c->fd);
        c->fd = -1;
    }
    if (poll_mode) {
        poll_done(c);
        if (c->state == ST_WRITING) {
            poll_request(c);        /* again from the same version */
        }
    } else {
        requests_done(c);
        if (next_request(c)) {
            c->state = ST_WRITING;
        } else {
            conn_close(c);
        }
    }
    if (c->state == ST_WRITING && c->fd < 0) {
        conn_open(c);
    }
}

static void
write_step(struct conn *c)
{
    while (c->sent < c->req_len) {
        ssize_t  n = send(c->fd, c->req + c->sent, c->req_len - c->sent,
                          MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) {
                set_interest(c, EPOLLOUT);
                return;
            }
            die("send: %s", strerror(errno));
        }
        if (c->sent == 0) {
            c->start_ns = now_ns();
        }
        c->sent += (size_t) n;
    }
    c->state = ST_READING;
    c->have = 0;
    c->need = 0;
    if (poll_mode && ++g.round_sent == g.ntokens) {
        printf("sent %zu\n", g.ntokens);
        fflush(stdout);
    }
    set_interest(c, EPOLLIN);
}

/* 1: answer complete, 0: wait, -1: closed before any byte of an answer */
static int
read_step(struct conn *c)
{
    for ( ;; ) {
        ssize_t  n;

        if (c->cap - c->have < 4096) {
            c->cap = c->cap ? 2 * c->cap : 16384;
            if (c->cap > MAX_RESPONSE + 65536) {
                die("answer too large");
            }
            c->buf = xrealloc(c->buf, c->cap);
        }
        n = recv(c->fd, c->buf + c->have, c->cap - c->have, 0);
        if (n < 0) {
            if (errno == EAGAIN) {
                return 0;
            }
            if (errno == ECONNRESET && c->have == 0) {
                return -1;
            }
            die("recv: %s", strerror(errno));
        }
        if (n == 0) {
            if (c->have == 0) {
                return -1;
            }
            die("connection closed in the middle of an answer");
        }
        c->have += (size_t) n;
        if (c->need == 0) {
            int  r = parse_head(c);

            if (r < 0) {
                die("malformed or unsupported answer: %.*s",
                    (int) (c->have > 200 ? 200 : c->have), c->buf);
            }
            if (r == 0) {
                continue;
            }
            if (c->cap < c->need + 1) {
                c->cap = c->need + 1;
                c->buf = xrealloc(c->buf, c->cap);
            }
        }
        if (c->have > c->need) {
            die("more data than the answer announced");
        }
        if (c->have == c->need) {
            return 1;
        }
    }
}

static void
on_event(struct conn *c)
{
    for ( ;; ) {
        switch (c->state) {
        case ST_CONNECTING: {
            int        err = 0;
            socklen_t  len = sizeof err;

            if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err) {
                die("connect: %s", strerror(err ? err : errno));
            }
            g.connecting--;
            c->state = ST_WRITING;
            if (g.connect_max) {
                open_queued();
            }
            break;
        }
        case ST_WRITING:
            write_step(c);
            return;             /* the answer cannot be there yet */
        case ST_READING: {
            int  r = read_step(c);

            if (r == 0) {
                return;
            }
            if (r < 0) {
                /* a keepalive connection the server closed: resend once */
                if (c->retried) {
                    die("the server closed the connection twice");
                }
                conn_close(c);
                c->sent = 0;
                c->retried = 1;
                conn_open(c);
                if (c->state == ST_QUEUED) {
                    return;
                }
                continue;
            }
            response_done(c);
            if (c->state != ST_WRITING) {
                return;
            }
            break;
        }
        case ST_IDLE:
            if (c->fd >= 0) {
                /* between rounds: only a close of the server can come */
                char  b[512];

                if (recv(c->fd, b, sizeof b, 0) != 0 && errno == EAGAIN) {
                    return;
                }
                close(c->fd);
                c->fd = -1;
            }
            return;
        default:
            return;
        }
    }
}


/* options ---------------------------------------------------------------- */

static void
usage(void)
{
    fprintf(stderr,
"usage: ctldload requests --addr A --input FILE [--output FILE]\n"
"                [--concurrency N] [--duration S [--warmup S]]\n"
"                [--header 'N: V']... [--watch PID]...\n"
"       ctldload poll --addr A --tokens FILE --since V [--wait S]\n"
"                [--connect-max N] [--timeout S] [--watch PID]...\n"
"--bind IP: the source address of every connection (several pollers\n"
"           of one server each take another 127.0.0.x: ports per source)\n"
"A: 127.0.0.1:PORT or unix:PATH (see the comment at the top of ctldload.c)\n");
    exit(2);
}

static void
parse_addr(const char *s)
{
    struct sockaddr_in  *in = (struct sockaddr_in *) &g.addr;
    struct sockaddr_un  *un = (struct sockaddr_un *) &g.addr;
    unsigned             port;
    char                 host[64];

    memset(&g.addr, 0, sizeof g.addr);
    if (strncmp(s, "unix:", 5) == 0) {
        if (strlen(s + 5) >= sizeof un->sun_path) {
            die("unix socket path too long");
        }
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, s + 5);
        g.addr_len = sizeof *un;
        return;
    }
    if (sscanf(s, "%63[0-9.]:%u", host, &port) != 2 || port == 0 || port > 65535
        || inet_pton(AF_INET, host, &in->sin_addr) != 1)
    {
        die("--addr wants IPv4:PORT or unix:PATH");
    }
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t) port);
    g.addr_len = sizeof *in;
}

static double
number(const char *s, const char *what, double max)
{
    char    *end;
    double   v = strtod(s, &end);

    if (end == s || *end != '\0' || !(v >= 0) || v > max) {
        die("bad %s \"%s\"", what, s);
    }
    return v;
}

/* the lines of path, newlines removed; blank lines skipped */
static char **
read_lines(const char *path, size_t *n)
{
    char    **v = NULL, *line = NULL;
    size_t    cap = 0, vcap = 0;
    ssize_t   len;
    FILE     *f = fopen(path, "r");

    if (f == NULL) {
        die("%s: %s", path, strerror(errno));
    }
    *n = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        if (len > (ssize_t) MAX_LINE) {
            die("%s: line too long", path);
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) {
            line[--len] = '\0';
        }
        if (len == 0) {
            continue;
        }
        if (*n == vcap) {
            vcap = vcap ? 2 * vcap : 1024;
            v = xrealloc(v, vcap * sizeof *v);
        }
        v[(*n)++] = strdup(line);
    }
    free(line);
    fclose(f);
    if (*n == 0) {
        die("%s: empty", path);
    }
    return v;
}

static void
raise_nofile(size_t need)
{
    struct rlimit  rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return;
    }
    if (rl.rlim_cur < need + 64 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void) setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < need + 64) {
        die("open file limit %llu is too low for %zu connections",
            (unsigned long long) rl.rlim_cur, need);
    }
}


static void
run_requests(const char *input, const char *output)
{
    struct epoll_event   ev[EVENTS];
    char               **raw;
    uint64_t             t0 = 0, t_end = 0, t_measure = 0, cpu0 = 0, cpu1;
    double               secs;

    raw = read_lines(input, &g.nlines);
    g.lines = xrealloc(NULL, g.nlines * sizeof *g.lines);
    for (size_t i = 0; i < g.nlines; i++) {
        char  *sp1 = strchr(raw[i], ' '), *sp2;

        if (sp1 == NULL) {
            die("%s:%zu: want METHOD PATH [BODY]", input, i + 1);
        }
        *sp1 = '\0';
        sp2 = strchr(sp1 + 1, ' ');
        if (sp2) {
            *sp2 = '\0';
        }
        g.lines[i] = (struct line) { raw[i], sp1 + 1, sp2 ? sp2 + 1 : NULL };
    }
    if (output) {
        if (g.cycle) {
            die("--output needs every line sent once (no --duration)");
        }
        g.bodies = calloc(g.nlines, sizeof *g.bodies);
        if (g.bodies == NULL) {
            die("out of memory");
        }
    }
    if (!g.cycle && g.nconns > g.nlines) {
        g.nconns = (unsigned) g.nlines;
    }
    raise_nofile(g.nconns);

    g.conns = calloc(g.nconns, sizeof *g.conns);
    g.queue = calloc(g.nconns, sizeof *g.queue);
    if (g.conns == NULL || g.queue == NULL) {
        die("out of memory");
    }

    g.measuring = !g.cycle || g.warmup == 0;
    t0 = now_ns();
    cpu0 = watched_cpu_ns();
    if (g.cycle) {
        t_measure = t0 + (uint64_t) (g.warmup * 1e9);
        t_end = t_measure + (uint64_t) (g.duration * 1e9);
    }
    for (unsigned i = 0; i < g.nconns; i++) {
        g.conns[i].fd = -1;
        next_request(&g.conns[i]);
        conn_open(&g.conns[i]);
    }

    for ( ;; ) {
        int  open = 0;

        for (unsigned i = 0; i < g.nconns; i++) {
            open += g.conns[i].state != ST_IDLE;
        }
        if (!open) {
            break;
        }
        if (g.cycle) {
            uint64_t  t = now_ns();

            if (!g.measuring && t >= t_measure) {
                g.measuring = 1;
                g.done = 0;
                memset(&g.hist, 0, sizeof g.hist);
                t0 = t;
                cpu0 = watched_cpu_ns();
            }
            if (t >= t_end) {
                break;
            }
        }
        int n = epoll_wait(g.epfd, ev, EVENTS, 100);
        if (n < 0 && errno != EINTR) {
            die("epoll_wait: %s", strerror(errno));
        }
        for (int i = 0; i < n; i++) {
            on_event(ev[i].data.ptr);
        }
    }
    cpu1 = watched_cpu_ns();
    secs = (double) (now_ns() - t0) / 1e9;

    if (output) {
        FILE  *f = fopen(output, "w");

        if (f == NULL) {
            die("%s: %s", output, strerror(errno));
        }
        for (size_t i = 0; i < g.nlines; i++) {
            fprintf(f, "%s\n", g.bodies[i] ? g.bodies[i] : "");
        }
        if (fclose(f) != 0) {
            die("%s: %s", output, strerror(errno));
        }
    }
    printf("{\"requests\":%zu,\"seconds\":%.6f,\"rps\":%.1f,\"p50_us\":%llu,"
           "\"p99_us\":%llu,\"max_us\":%llu,\"body_bytes\":%zu,\"cpu_us\":%.1f}\n",
           g.done, secs, (double) g.done / secs,
           (unsigned long long) hist_quantile(&g.hist, 0.5),
           (unsigned long long) hist_quantile(&g.hist, 0.99),
           (unsigned long long) hist_quantile(&g.hist, 1.0),
           g.last_body, (double) (cpu1 - cpu0) / 1e3);
}


static void
run_poll(const char *tokens, unsigned long long since)
{
    struct epoll_event  ev[EVENTS], sev = { .events = EPOLLIN, .data.ptr = NULL };

    poll_mode = 1;
    g.tokens = read_lines(tokens, &g.ntokens);
    g.nconns = (unsigned) g.ntokens;
    raise_nofile(g.nconns);
    g.conns = calloc(g.nconns, sizeof *g.conns);
    g.queue = calloc(g.nconns, sizeof *g.queue);
    if (g.conns == NULL || g.queue == NULL) {
        die("out of memory");
    }
    if (epoll_ctl(g.epfd, EPOLL_CTL_ADD, 0, &sev) != 0) {
        die("stdin: epoll_ctl: %s", strerror(errno));
    }
    for (unsigned i = 0; i < g.nconns; i++) {
        struct conn  *c = &g.conns[i];

        c->fd = -1;
        c->index = i;
        c->since = since;
        poll_request(c);
        conn_open(c);
    }

    for ( ;; ) {
        int  n = epoll_wait(g.epfd, ev, EVENTS, 1000);

        if (n < 0 && errno != EINTR) {
            die("epoll_wait: %s", strerror(errno));
        }
        for (int i = 0; i < n; i++) {
            if (ev[i].data.ptr == NULL) {
                char  buf[256];

                if (read(0, buf, sizeof buf) <= 0) {
                    return;     /* stdin closed: done */
                }
                continue;
            }
            on_event(ev[i].data.ptr);
        }
        if (g.round_done
            && (double) (now_ns() - g.round_first_ns) / 1e9 > g.timeout)
        {
            die("round %u: %zu of %zu pollers answered within %.0f s",
                g.round + 1, g.round_done, g.ntokens, g.timeout);
        }
    }
}


int
main(int argc, char **argv)
{
    static const struct option  longopts[] = {
        { "addr",        required_argument, NULL, 'a' },
        { "concurrency", required_argument, NULL, 'c' },
        { "duration",    required_argument, NULL, 'd' },
        { "warmup",      required_argument, NULL, 'w' },
        { "input",       required_argument, NULL, 'i' },
        { "output",      required_argument, NULL, 'o' },
        { "header",      required_argument, NULL, 'H' },
        { "watch",       required_argument, NULL, 'W' },
        { "tokens",      required_argument, NULL, 't' },
        { "since",       required_argument, NULL, 's' },
        { "wait",        required_argument, NULL, 'x' },
        { "connect-max", required_argument, NULL, 'm' },
        { "timeout",     required_argument, NULL, 'T' },
        { "bind",        required_argument, NULL, 'b' },
        { NULL, 0, NULL, 0 }
    };
    const char          *mode, *input = NULL, *output = NULL, *tokens = NULL;
    unsigned long long   since = 0;
    int                  opt, have_addr = 0, have_since = 0;

    if (argc < 2) {
        usage();
    }
    mode = argv[1];
    g.nconns = 64;
    g.connect_max = 256;
    g.wait = 120;
    g.timeout = 60;
    optind = 2;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'a': parse_addr(optarg); have_addr = 1; break;
        case 'c': g.nconns = (unsigned) number(optarg, "concurrency", 60000); break;
        case 'd': g.duration = number(optarg, "duration", 3600); g.cycle = 1; break;
        case 'w': g.warmup = number(optarg, "warmup", 3600); break;
        case 'i': input = optarg; break;
        case 'o': output = optarg; break;
        case 'H':
            if (g.nheaders == MAX_HEADERS) {
                die("too many --header");
            }
            g.headers[g.nheaders++] = optarg;
            break;
        case 'W':
            if (g.nwatch == MAX_WATCH) {
                die("too many --watch");
            }
            g.watch[g.nwatch++] = (pid_t) number(optarg, "pid", 1e9);
            break;
        case 't': tokens = optarg; break;
        case 's': since = (unsigned long long) number(optarg, "since", 1e18); have_since = 1; break;
        case 'x': g.wait = (unsigned) number(optarg, "wait", 86400); break;
        case 'm': g.connect_max = (unsigned) number(optarg, "connect-max", 60000); break;
        case 'T': g.timeout = number(optarg, "timeout", 86400); break;
        case 'b':
            if (inet_pton(AF_INET, optarg, &g.bind_addr.sin_addr) != 1) {
                die("--bind wants an IPv4 address");
            }
            g.bind_addr.sin_family = AF_INET;
            g.bind = 1;
            break;
        default: usage();
        }
    }
    if (!have_addr || optind != argc || g.nconns == 0) {
        usage();
    }
    signal(SIGPIPE, SIG_IGN);
    g.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (g.epfd < 0) {
        die("epoll_create1: %s", strerror(errno));
    }

    if (strcmp(mode, "requests") == 0 && input && !tokens) {
        if (!g.cycle) {
            g.connect_max = 0;
        }
        run_requests(input, output);
    } else if (strcmp(mode, "poll") == 0 && tokens && have_since && !input) {
        run_poll(tokens, since);
    } else {
        usage();
    }
    return 0;
}
