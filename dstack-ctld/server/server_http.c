/*
 * HTTP front end on libmicrohttpd: listen socket, request life cycle,
 * routing, identity check of the original API, reply helpers and the
 * suspend/resume plumbing for writes and long polls.
 *
 * Threads: MHD runs `threads` event loops (epoll, internal polling
 * threads); a request that waits for the writer or for a peer change is
 * suspended, so no thread is held while it waits.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "lib/log.h"
#include "server/http.h"
#include "server/metrics.h"

#define M_GET     1u
#define M_HEAD    2u
#define M_POST    4u
#define M_DELETE  8u

/* per connection: request heads up to about 2 KiB (nginx sends a few
 * hundred bytes) */
#define CONN_MEMORY  3072

/* a client streaming more than this past max-body is cut off */
#define DISCARD_FACTOR  16

enum route_auth {
    AUTH_NONE,          /* public, or the handler checks a token */
    AUTH_APP            /* x-dstack-app-id, checked against the allowlist */
};

struct route {
    const char       *path;
    bool              prefix;       /* path + one non-empty segment */
    unsigned          methods;
    enum route_auth   auth;
    http_handler      handler;
};

static const struct route  routes[] = {
    { "/health",           false, M_GET | M_HEAD, AUTH_NONE, api_health },
    { "/api/ping",         false, M_GET | M_HEAD, AUTH_NONE, api_ping },
    { "/metrics",          false, M_GET | M_HEAD, AUTH_NONE, api_metrics },
    { PATH_REGISTER,       false, M_GET,          AUTH_APP,  api_register },
    { PATH_NODES_UPDATE,   false, M_POST,         AUTH_APP,  api_nodes_update },
    { "/api/discover/",    true,  M_GET,          AUTH_APP,  api_discover },
    { "/api/nodes",        false, M_GET,          AUTH_APP,  api_nodes },
    { PATH_JOIN,           false, M_POST,         AUTH_APP,  api_v1_join },
    { PATH_PEERS,          false, M_GET,          AUTH_NONE, api_v1_peers },
    { PATH_NODES,          false, M_GET,          AUTH_NONE, api_v1_nodes },
    { PATH_NODES "/",      true,  M_DELETE,       AUTH_NONE, api_v1_node_remove },
    { PATH_RELAY,          false, M_GET,          AUTH_APP,  api_v1_relay },
};

#define NROUTES  (sizeof(routes) / sizeof(routes[0]))

/* requests between their first callback and their completion: what a stop
 * lets finish before libmicrohttpd and the state behind it go */
static _Atomic unsigned long  requests_in_flight;
/* set by http_quiesce(): answers then close their connection */
static _Atomic bool           quiescing;


/* --- replies --- */

static enum MHD_Result
queue(struct http_req *r, unsigned status, struct MHD_Response *resp,
      const char *content_type)
{
    enum MHD_Result  ret;

    if (resp == NULL) {
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    /* answers may carry keys and tokens: never cached anywhere */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (r->www_auth) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    }
    if (atomic_load(&quiescing)) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    }
    if (status == 405 && r->route != NULL) {
        char      allow[64];
        unsigned  m = r->route->methods;

        snprintf(allow, sizeof(allow), "%s%s%s%s",
                 m & M_GET ? ", GET" : "", m & M_HEAD ? ", HEAD" : "",
                 m & M_POST ? ", POST" : "", m & M_DELETE ? ", DELETE" : "");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow + 2);
    }
    ret = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    r->status = status;
    r->responded = true;
    return ret;
}


enum MHD_Result
http_json(struct http_req *r, unsigned status, json_t *body)
{
    char  *text;

    text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL) {
        log_error("cannot encode a JSON answer (out of memory?)");
        static char  oom[] = "{\"error\":\"out of memory\"}";
        return queue(r, 500,
                     MHD_create_response_from_buffer(sizeof(oom) - 1, oom,
                                                     MHD_RESPMEM_PERSISTENT),
                     "application/json; charset=utf-8");
    }
    return queue(r, status,
                 MHD_create_response_from_buffer(strlen(text), text,
                                                 MHD_RESPMEM_MUST_FREE),
                 "application/json; charset=utf-8");
}


/* what a response built on a shared answer holds until it is gone */
struct answer_send {
    struct answer  *answer;
    char           *prefix;
};


static void
answer_sent(void *cls)
{
    struct answer_send *s = cls;

    answer_unref(s->answer);
    free(s->prefix);
    free(s);
}


enum MHD_Result
http_answer(struct http_req *r, unsigned status, char *prefix, struct answer *a,
            size_t from, int64_t skip)
{
    struct answer_slice   sl[ANSWER_LISTS + 1];
    struct MHD_IoVec      iov[ANSWER_LISTS + 2];
    struct answer_send   *s;
    struct MHD_Response  *resp;
    size_t                n, k = 0;

    s = malloc(sizeof(*s));
    if (s == NULL) {
        answer_unref(a);
        free(prefix);
        return http_error(r, 500, "out of memory");
    }
    *s = (struct answer_send) { a, prefix };
    if (prefix != NULL) {
        iov[k++] = (struct MHD_IoVec) { prefix, strlen(prefix) };
    }
    n = answer_slices(a, from, skip, sl);
    for (size_t i = 0; i < n; i++) {
        iov[k++] = (struct MHD_IoVec) { a->buf + sl[i].off, sl[i].len };
    }
    resp = MHD_create_response_from_iovec(iov, (unsigned int) k, answer_sent, s);
    if (resp == NULL) {
        answer_sent(s);
        return http_error(r, 500, "out of memory");
    }
    return queue(r, status, resp, "application/json; charset=utf-8");
}


enum MHD_Result
http_text(struct http_req *r, unsigned status, const char *text,
          const char *content_type)
{
    return queue(r, status,
                 MHD_create_response_from_buffer(strlen(text), (void *) text,
                                                 MHD_RESPMEM_MUST_COPY),
                 content_type);
}


enum MHD_Result
http_text_owned(struct http_req *r, unsigned status, char *text,
                const char *content_type)
{
    return queue(r, status,
                 MHD_create_response_from_buffer(strlen(text), text,
                                                 MHD_RESPMEM_MUST_FREE),
                 content_type);
}


enum MHD_Result
http_error_why(struct http_req *r, unsigned status, const char *msg,
               const char *why)
{
    char  path[128];

    log_write(status >= 500 ? LOG_LEVEL_ERROR : LOG_LEVEL_INFO,
              "%u %s %s app=%s: %s%s%s%s", status, r->method,
              log_quote(path, sizeof(path), r->path, 256),
              r->app_id[0] ? r->app_id : "-", msg,
              why ? " (" : "", why ? why : "", why ? ")" : "");
    return http_json(r, status, json_pack("{s:s}", "error", msg));
}


enum MHD_Result
http_error(struct http_req *r, unsigned status, const char *msg)
{
    return http_error_why(r, status, msg, NULL);
}


enum MHD_Result
http_unauthorized_bearer(struct http_req *r, const char *msg)
{
    r->www_auth = true;
    return http_error(r, 401, msg);
}


/* --- request data --- */

void
http_arg_get(struct http_req *r, const char *name, struct api_arg *a)
{
    a->value = NULL;
    a->len = 0;
    a->present = MHD_lookup_connection_value_n(r->conn, MHD_GET_ARGUMENT_KIND,
                                               name, strlen(name), &a->value,
                                               &a->len) == MHD_YES;
}


int
http_arg(struct http_req *r, const char *name, size_t max, const char **value)
{
    struct api_arg  a;

    http_arg_get(r, name, &a);
    return api_arg_value(&a, max, value);
}


json_t *
http_json_body(struct http_req *r)
{
    const char  *why;
    json_t      *obj;

    obj = api_json_object(r->body, r->body_len, &why);
    if (obj == NULL) {
        http_error(r, 400, why);
    }
    return obj;
}


bool
http_bearer_hash(struct http_req *r, unsigned char hash[SHA256_LEN])
{
    const char  *auth;
    size_t       len;

    auth = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                       MHD_HTTP_HEADER_AUTHORIZATION);
    if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0) {
        return false;
    }
    auth += 7;
    len = strlen(auth);
    if (len != TOKEN_HEX_LEN) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (!((auth[i] >= '0' && auth[i] <= '9') || (auth[i] >= 'a' && auth[i] <= 'f'))) {
            return false;
        }
    }
    sha256(auth, len, hash);
    return true;
}


/* --- waiting without a thread --- */

static void
write_done(struct write_op *op, bool committed)
{
    struct http_req *r = op->ctx;

    r->committed = committed;
    atomic_store(&r->async, ASYNC_DONE);
    MHD_resume_connection(r->conn);
}


enum MHD_Result
http_submit(struct http_req *r, struct write_op *op)
{
    op->ctx = r;
    op->done = write_done;
    r->waits++;
    atomic_store(&r->async, ASYNC_PENDING);

    /* suspend first: the writer may resume us before we return */
    MHD_suspend_connection(r->conn);
    if (writer_submit(r->srv->writer, op) != 0) {
        atomic_store(&r->async, ASYNC_REFUSED);
        MHD_resume_connection(r->conn);
    }
    return MHD_YES;
}


static void
poll_wake(struct waiter *w, bool timed_out)
{
    struct http_req *r = (struct http_req *) ((char *) w - offsetof(struct http_req, waiter));

    r->timed_out = timed_out;
    atomic_store(&r->async, ASYNC_DONE);
    MHD_resume_connection(r->conn);
}


enum MHD_Result
http_park(struct http_req *r, uint64_t since, uint64_t deadline_ms, int64_t owner)
{
    const union MHD_ConnectionInfo  *ci;

    ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    r->waiter.fd = ci != NULL ? ci->connect_fd : -1;
    r->waiter.owner = owner;
    r->waiter.deadline_ms = deadline_ms;
    r->waiter.wake = poll_wake;
    r->timed_out = false;
    r->parked = true;
    r->waits++;
    atomic_store(&r->async, ASYNC_PENDING);

    MHD_suspend_connection(r->conn);
    if (!longpoll_wait(r->srv->reg.longpoll, &r->waiter, since)) {
        /* the version moved meanwhile, or the server is stopping: answer
         * now, and do not try to park again */
        r->timed_out = true;
        atomic_store(&r->async, ASYNC_DONE);
        MHD_resume_connection(r->conn);
    }
    return MHD_YES;
}


/* --- routing --- */

static unsigned
method_bit(const char *m)
{
    return strcmp(m, "GET") == 0 ? M_GET
           : strcmp(m, "HEAD") == 0 ? M_HEAD
           : strcmp(m, "POST") == 0 ? M_POST
           : strcmp(m, "DELETE") == 0 ? M_DELETE : 0;
}


static const struct route *
route_find(const char *path, const char **param)
{
    for (size_t i = 0; i < NROUTES; i++) {
        const struct route *rt = &routes[i];
        size_t              n = strlen(rt->path);

        if (!rt->prefix) {
            if (strcmp(path, rt->path) == 0) {
                *param = NULL;
                return rt;
            }
        } else if (strncmp(path, rt->path, n) == 0 && path[n] != '\0'
                   && strchr(path + n, '/') == NULL)
        {
            *param = path + n;
            return rt;
        }
    }
    return NULL;
}


/* the original server's middleware: identity, then the allowlist */
static bool
app_check(struct http_req *r)
{
    struct server  *srv = r->srv;
    const char     *v = NULL;
    size_t          len = 0;

    if (MHD_lookup_connection_value_n(r->conn, MHD_HEADER_KIND, "x-dstack-app-id",
                                      15, &v, &len) != MHD_YES
        || v == NULL || len == 0)
    {
        http_error(r, 401, "Unauthorized");
        return false;
    }
    if (len >= sizeof(r->app_id) || strlen(v) != len) {
        http_error(r, 401, "Unauthorized");
        return false;
    }
    memcpy(r->app_id, v, len + 1);
    if (!app_id_normalize(r->app_id)) {
        r->app_id[0] = '\0';
        http_error(r, 401, "Unauthorized");
        return false;
    }
    if (srv->allow_any_app) {
        return true;
    }
    for (size_t i = 0; i < srv->nallowed_apps; i++) {
        if (strcmp(srv->allowed_apps[i], r->app_id) == 0) {
            return true;
        }
    }
    http_error(r, 403, "Forbidden");
    return false;
}


static enum MHD_Result
dispatch(struct http_req *r)
{
    const struct route  *rt;
    const char          *param = NULL;

    if (r->route != NULL) {
        return r->route->handler(r);          /* back from waiting */
    }

    rt = route_find(r->path, &param);
    if (rt == NULL) {
        /* like the original, identity comes first anywhere under /api/ */
        if (strncmp(r->path, "/api/", 5) == 0 && !app_check(r)) {
            return MHD_YES;
        }
        return http_error(r, 404, "Not found");
    }
    r->route = rt;
    r->param = param;

    if (rt->auth == AUTH_APP && !app_check(r)) {
        return MHD_YES;
    }
    if ((rt->methods & method_bit(r->method)) == 0) {
        return http_error(r, 405, "Method not allowed");
    }
    return rt->handler(r);
}


static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url,
           const char *method, const char *version, const char *upload_data,
           size_t *upload_data_size, void **con_cls)
{
    struct server    *srv = cls;
    struct http_req  *r = *con_cls;
    enum MHD_Result   ret;
    unsigned          waits;

    (void) version;

    if (r == NULL) {
        const char  *cl;
        uint64_t     len = UINT64_MAX;

        r = calloc(1, sizeof(*r));
        if (r == NULL) {
            return MHD_NO;
        }
        r->srv = srv;
        r->conn = conn;
        r->method = method;
        r->path = url;
        r->start_us = clock_mono_us();
        *con_cls = r;
        atomic_fetch_add(&requests_in_flight, 1);

        /*
         * A body announced too large is read and dropped, then refused:
         * clients read no answer before they have sent their body.  One
         * far too large is refused at once and the connection closed.
         */
        cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                         MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl != NULL && (!parse_u64(cl, UINT64_MAX, &len) || len > srv->cfg.max_body)) {
            r->body_too_large = true;
            if (len > DISCARD_FACTOR * srv->cfg.max_body) {
                return http_error(r, 413, "request body too large");
            }
        }
        return MHD_YES;
    }

    r->conn = conn;
    r->method = method;
    r->path = url;

    if (*upload_data_size != 0) {
        size_t n = *upload_data_size;

        *upload_data_size = 0;
        r->body_seen += n;
        if (r->responded) {
            return MHD_YES;
        }
        if (r->body_too_large || r->body_len + n > srv->cfg.max_body) {
            r->body_too_large = true;
            free(r->body);
            r->body = NULL;
            r->body_len = 0;
            return r->body_seen > DISCARD_FACTOR * srv->cfg.max_body ? MHD_NO : MHD_YES;
        }
        char *grown = realloc(r->body, r->body_len + n + 1);
        if (grown == NULL) {
            return MHD_NO;
        }
        memcpy(grown + r->body_len, upload_data, n);
        r->body = grown;
        r->body_len += n;
        r->body[r->body_len] = '\0';
        return MHD_YES;
    }

    if (r->responded) {
        return MHD_YES;
    }
    if (r->body_too_large) {
        return http_error(r, 413, "request body too large");
    }
    if (strstr(url, "%00") != NULL) {
        return http_error(r, 400, "NUL in the request path");
    }

    waits = r->waits;
    ret = dispatch(r);
    if (ret == MHD_YES && !r->responded && r->waits == waits) {
        /* a handler that neither answered nor waits is a bug: say so */
        return http_error(r, 500, "internal error");
    }
    return ret;
}


static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    struct http_req *r = *con_cls;

    (void) cls;
    (void) conn;
    (void) toe;

    if (r == NULL) {
        return;
    }
    metrics_request(r->status, clock_mono_us() - r->start_us, !r->parked);
    if (r->data_free != NULL) {
        r->data_free(r->data);
    }
    free(r->body);
    free(r);
    *con_cls = NULL;
    atomic_fetch_sub(&requests_in_flight, 1);
}


/*
 * Percent-decoding of the path and query arguments, except that a string
 * holding %00 stays encoded: a NUL would silently cut it short in C (the
 * path "/api/discover/a%00b" would become "/api/discover/a").  Requests
 * and arguments still holding "%00" are then refused.
 */
static size_t
unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    (void) cls;
    (void) conn;

    for (const char *p = s; (p = strchr(p, '%')) != NULL; p++) {
        if (p[1] == '0' && p[2] == '0') {
            return strlen(s);
        }
    }
    return MHD_http_unescape(s);
}


static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
    char  msg[512];

    (void) cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    log_info("libmicrohttpd: %s", msg);
}


/* --- listen socket --- */

static bool
is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *) sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) sa;
        return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr)
               || (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)
                   && in6->sin6_addr.s6_addr[12] == 127);
    }
    return false;
}


static int
listen_unix(struct server *srv)
{
    struct sockaddr_un   sun;
    struct stat          st;
    int                  fd;
    mode_t               old;
    const char          *path = srv->listen.path;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            log_error("%s exists and is not a socket", path);
            goto failed;
        }
        /* a socket nobody answers on is a leftover of a killed server */
        if (connect(fd, (struct sockaddr *) &sun, sizeof(sun)) == 0) {
            log_error("%s: another server is listening there", path);
            goto failed;
        }
        unlink(path);
    }

    /* created with the final permissions: no window with wider access */
    old = umask((mode_t) (~srv->cfg.socket_mode & 0777));
    if (bind(fd, (struct sockaddr *) &sun, sizeof(sun)) != 0) {
        umask(old);
        log_error("cannot bind %s: %s", path, strerror(errno));
        goto failed;
    }
    umask(old);
    if (listen(fd, 1024) != 0) {
        goto failed;
    }
    return fd;

failed:
    close(fd);
    return -1;
}


static int
listen_tcp(struct server *srv)
{
    struct addrinfo   hints, *res = NULL;
    int               fd, one = 1, rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    rc = getaddrinfo(srv->listen.host, srv->listen.port, &hints, &res);
    if (rc != 0) {
        log_error("listen %s: %s", srv->cfg.listen, gai_strerror(rc));
        return -1;
    }

    if (!is_loopback(res->ai_addr)) {
        if (!srv->cfg.allow_remote) {
            log_error("listen %s is not a loopback address: the server trusts"
                      " x-dstack-app-id, so only nginx with mesh_auth may reach"
                      " it; pass --allow-remote if that is the case",
                      srv->cfg.listen);
            freeaddrinfo(res);
            return -1;
        }
        log_warn("listening on non-loopback %s (--allow-remote): anyone who"
                 " reaches it can claim any app id", srv->cfg.listen);
    }

    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0
        || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0
        || bind(fd, res->ai_addr, res->ai_addrlen) != 0
        || listen(fd, 1024) != 0)
    {
        log_error("cannot listen on %s: %s", srv->cfg.listen, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    return fd;
}


int
http_start(struct server *srv)
{
    unsigned  flags;
    int       fd;

    fd = srv->listen.is_unix ? listen_unix(srv) : listen_tcp(srv);
    if (fd < 0) {
        return -1;
    }
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
        close(fd);
        return -1;
    }

    /* ITC: a thread pool can only be quiesced with it (http_quiesce) */
    flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL
            | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | MHD_USE_ITC
            | MHD_ALLOW_UPGRADE;

    srv->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, srv,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket) fd,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int) srv->cfg.threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int) srv->cfg.max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) 60,
        /* a connection's buffer for a request head and the answer's: each
         * is cleared between requests, and a parked poll keeps its own,
         * so its size is CPU per change and memory per node */
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) CONN_MEMORY,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
        MHD_OPTION_END);
    if (srv->mhd == NULL) {
        log_error("cannot start the HTTP server on %s", srv->cfg.listen);
        close(fd);
        return -1;
    }
    return 0;
}


void
http_quiesce(struct server *srv)
{
    MHD_socket  fd;

    if (srv->mhd == NULL) {
        return;
    }
    atomic_store(&quiescing, true);
    /* our listen socket: libmicrohttpd hands it back and forgets it */
    fd = MHD_quiesce_daemon(srv->mhd);
    if (fd != MHD_INVALID_SOCKET) {
        close(fd);
    }
}


bool
http_drain(struct server *srv, unsigned timeout_ms)
{
    uint64_t  deadline = clock_mono_ms() + timeout_ms;

    while (atomic_load(&requests_in_flight) > 0) {
        if (srv->mhd == NULL || clock_mono_ms() >= deadline) {
            log_warn("stopping with %lu requests unanswered",
                     atomic_load(&requests_in_flight));
            return false;
        }
        usleep(10000);
    }
    return true;
}


void
http_stop(struct server *srv)
{
    if (srv->mhd == NULL) {
        return;
    }
    MHD_stop_daemon(srv->mhd);
    srv->mhd = NULL;
    if (srv->listen.is_unix) {
        unlink(srv->listen.path);
    }
}
