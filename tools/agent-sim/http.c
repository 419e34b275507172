/*
 * The guest-agent HTTP API on libmicrohttpd: GET|POST /Info and
 * GET|POST /GetTlsKey.  Every answer is JSON; every error is
 * {"error": "..."} with one log line.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <microhttpd.h>

#include "agent_sim.h"


#define SIM_BODY_MAX      (64 * 1024)
#define SIM_ERR_MAX       256
#define SIM_IDLE_TIMEOUT  30        /* seconds */
#define SIM_MR_HEX        (2 * 48)  /* a TDX measurement register, in hex */


typedef struct sim_route_s  sim_route_t;

/* one HTTP request, from its headers to its answer */
typedef struct {
    const sim_route_t  *route;
    unsigned            refuse;     /* 404, 405, 413: the body is dropped */
    char               *body;
    size_t              len;
    size_t              size;
} sim_request_t;

/* returns the status and sets *out to the JSON answer (NULL: no memory) */
typedef unsigned (*sim_handler_pt)(const sim_server_t *srv,
    struct MHD_Connection *c, int post, const sim_request_t *r,
    json_t **out);

struct sim_route_s {
    const char      *path;
    sim_handler_pt   handler;
};

typedef struct {
    sim_tls_req_t   *req;
    char            *err;
    size_t           err_size;
    int              rc;
} sim_query_t;


static unsigned sim_info(const sim_server_t *srv, struct MHD_Connection *c,
    int post, const sim_request_t *r, json_t **out);
static unsigned sim_get_tls_key(const sim_server_t *srv,
    struct MHD_Connection *c, int post, const sim_request_t *r,
    json_t **out);
static int sim_tls_req_query(struct MHD_Connection *c, sim_tls_req_t *req,
    char *err, size_t err_size);
static enum MHD_Result sim_query_arg(void *cls, enum MHD_ValueKind kind,
    const char *key, size_t key_size, const char *value, size_t value_size);
static enum MHD_Result sim_access(void *cls, struct MHD_Connection *c,
    const char *url, const char *method, const char *version,
    const char *upload, size_t *upload_size, void **con_cls);
static sim_request_t *sim_request_new(const char *url, const char *method);
static int sim_request_append(sim_request_t *r, const char *data,
    size_t len);
static void sim_request_done(void *cls, struct MHD_Connection *c,
    void **con_cls, enum MHD_RequestTerminationCode toe);
static enum MHD_Result sim_respond(struct MHD_Connection *c,
    const char *method, const char *url, unsigned status, json_t *body);
static json_t *sim_refusal(unsigned status);
static json_t *sim_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static char *sim_tcb_info(void);
static void sim_mhd_log(void *cls, const char *fmt, va_list ap);


static const sim_route_t  sim_routes[] = {
    { "/Info", sim_info },
    { "/GetTlsKey", sim_get_tls_key },
};


int
sim_server_init(sim_server_t *srv, const sim_app_t *app, const sim_ca_t *ca)
{
    char           *tcb_info;
    char            err[SIM_ERR_MAX];
    sim_issued_t    app_cert;
    sim_tls_req_t   req;

    srv->app = app;
    srv->ca = ca;
    srv->info = NULL;

    /* the real agent shows a certificate of the app; ours is a default leaf */

    sim_tls_req_init(&req);

    if (sim_tls_req_finish(&req, app, (int64_t) time(NULL), err, sizeof(err))
        != 0
        || sim_issue(ca, app, &req, &app_cert) != 0)
    {
        sim_log("cannot issue the app certificate");
        return -1;
    }

    tcb_info = sim_tcb_info();

    if (tcb_info != NULL) {
        srv->info = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}",
                              "app_id", app->app_id_hex,
                              "instance_id", app->instance_id_hex,
                              "app_name", app->app_name,
                              "device_id", app->device_id_hex,
                              "app_cert", app_cert.cert,
                              "tcb_info", tcb_info);
    }

    free(tcb_info);
    sim_issued_free(&app_cert);

    if (srv->info == NULL) {
        sim_log("cannot build the /Info answer");
        return -1;
    }

    return 0;
}


void
sim_server_free(sim_server_t *srv)
{
    json_decref(srv->info);
    srv->info = NULL;
}


/*
 * tcb_info is a JSON document inside a string, as the real agent sends it;
 * the registers are zero since no TDX module measured anything.
 */
static char *
sim_tcb_info(void)
{
    char    *text;
    json_t  *tcb;
    char     zero[SIM_MR_HEX + 1];

    memset(zero, '0', SIM_MR_HEX);
    zero[SIM_MR_HEX] = '\0';

    tcb = json_pack("{s:s, s:s, s:s, s:s, s:s, s:[]}",
                    "mrtd", zero, "rtmr0", zero, "rtmr1", zero,
                    "rtmr2", zero, "rtmr3", zero, "event_log");
    if (tcb == NULL) {
        return NULL;
    }

    text = json_dumps(tcb, JSON_COMPACT);
    json_decref(tcb);

    return text;
}


struct MHD_Daemon *
sim_http_start(int listen_fd, sim_server_t *srv)
{
    struct MHD_Daemon  *daemon;

    daemon = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG,
                              0, NULL, NULL, sim_access, srv,
                              MHD_OPTION_EXTERNAL_LOGGER, sim_mhd_log, NULL,
                              MHD_OPTION_LISTEN_SOCKET, (MHD_socket) listen_fd,
                              MHD_OPTION_NOTIFY_COMPLETED,
                              sim_request_done, NULL,
                              MHD_OPTION_CONNECTION_TIMEOUT,
                              (unsigned int) SIM_IDLE_TIMEOUT,
                              MHD_OPTION_END);
    if (daemon == NULL) {
        sim_log("cannot start the HTTP server");
    }

    return daemon;
}


static void
sim_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void) cls;

    sim_logv(fmt, ap);
}


/*
 * libmicrohttpd calls this once when the headers are in (*con_cls is still
 * NULL), once per piece of body, and once more when the request is whole.
 *
 * Every answer waits for the whole request, refusals included: answering
 * early makes libmicrohttpd close the connection under a client that is
 * still sending, and the client then sees EPIPE instead of the answer.
 */
static enum MHD_Result
sim_access(void *cls, struct MHD_Connection *c, const char *url,
    const char *method, const char *version, const char *upload,
    size_t *upload_size, void **con_cls)
{
    json_t         *body;
    unsigned        status;
    sim_request_t  *r;

    (void) version;

    r = *con_cls;

    if (r == NULL) {
        r = sim_request_new(url, method);
        if (r == NULL) {
            sim_log("%s %s: out of memory", method, url);
            return MHD_NO;
        }

        *con_cls = r;
        return MHD_YES;
    }

    if (*upload_size > 0) {
        if (sim_request_append(r, upload, *upload_size) != 0) {
            sim_log("%s %s: out of memory", method, url);
            return MHD_NO;
        }

        *upload_size = 0;
        return MHD_YES;
    }

    if (r->refuse != 0) {
        status = r->refuse;
        body = sim_refusal(status);

    } else {
        status = r->route->handler(cls, c,
                                   strcmp(method, MHD_HTTP_METHOD_POST) == 0,
                                   r, &body);
    }

    return sim_respond(c, method, url, status, body);
}


static sim_request_t *
sim_request_new(const char *url, const char *method)
{
    size_t          i;
    sim_request_t  *r;

    r = calloc(1, sizeof(sim_request_t));
    if (r == NULL) {
        return NULL;
    }

    for (i = 0; i < sizeof(sim_routes) / sizeof(sim_routes[0]); i++) {
        if (strcmp(url, sim_routes[i].path) == 0) {
            r->route = &sim_routes[i];
        }
    }

    if (r->route == NULL) {
        r->refuse = MHD_HTTP_NOT_FOUND;

    } else if (strcmp(method, MHD_HTTP_METHOD_GET) != 0
               && strcmp(method, MHD_HTTP_METHOD_POST) != 0)
    {
        r->refuse = MHD_HTTP_METHOD_NOT_ALLOWED;
    }

    return r;
}


/* past the limit, or for a refused request, the body is read and dropped */
static int
sim_request_append(sim_request_t *r, const char *data, size_t len)
{
    char    *body;
    size_t   size;

    if (r->refuse != 0) {
        return 0;
    }

    if (len > SIM_BODY_MAX - r->len) {
        r->refuse = MHD_HTTP_CONTENT_TOO_LARGE;
        free(r->body);
        r->body = NULL;
        return 0;
    }

    if (r->len + len > r->size) {
        size = (r->size == 0) ? 1024 : r->size;

        while (size < r->len + len) {
            size *= 2;
        }

        body = realloc(r->body, size);
        if (body == NULL) {
            return -1;
        }

        r->body = body;
        r->size = size;
    }

    memcpy(r->body + r->len, data, len);
    r->len += len;

    return 0;
}


static void
sim_request_done(void *cls, struct MHD_Connection *c, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
    sim_request_t  *r;

    (void) cls;
    (void) c;
    (void) toe;

    r = *con_cls;

    if (r != NULL) {
        free(r->body);
        free(r);
        *con_cls = NULL;
    }
}


static unsigned
sim_info(const sim_server_t *srv, struct MHD_Connection *c, int post,
    const sim_request_t *r, json_t **out)
{
    (void) c;
    (void) post;
    (void) r;

    *out = json_incref(srv->info);

    return MHD_HTTP_OK;
}


/* a POST with a body is read as JSON, whatever its Content-Type, as curl
 * -d sends form-urlencoded; any other request takes the query string */
static unsigned
sim_get_tls_key(const sim_server_t *srv, struct MHD_Connection *c, int post,
    const sim_request_t *r, json_t **out)
{
    int             rc;
    char            err[SIM_ERR_MAX];
    sim_issued_t    issued;
    sim_tls_req_t   req;

    sim_tls_req_init(&req);

    if (post && r->len > 0) {
        rc = sim_tls_req_json(&req, r->body, r->len, err, sizeof(err));
    } else {
        rc = sim_tls_req_query(c, &req, err, sizeof(err));
    }

    if (rc == 0) {
        rc = sim_tls_req_finish(&req, srv->app, (int64_t) time(NULL), err,
                                sizeof(err));
    }

    if (rc == 0 && sim_issue(srv->ca, srv->app, &req, &issued) != 0) {
        rc = MHD_HTTP_INTERNAL_SERVER_ERROR;
        snprintf(err, sizeof(err), "cannot issue the certificate");
    }

    sim_tls_req_free(&req);

    if (rc != 0) {
        *out = sim_error("%s", err);
        return (unsigned) rc;
    }

    *out = json_pack("{s:s, s:[s, s]}", "key", issued.key,
                     "certificate_chain", issued.cert, srv->ca->pem);

    sim_issued_free(&issued);

    return MHD_HTTP_OK;
}


static int
sim_tls_req_query(struct MHD_Connection *c, sim_tls_req_t *req, char *err,
    size_t err_size)
{
    sim_query_t  q;

    q.req = req;
    q.err = err;
    q.err_size = err_size;
    q.rc = 0;

    MHD_get_connection_values_n(c, MHD_GET_ARGUMENT_KIND, sim_query_arg, &q);

    return q.rc;
}


static enum MHD_Result
sim_query_arg(void *cls, enum MHD_ValueKind kind, const char *key,
    size_t key_size, const char *value, size_t value_size)
{
    sim_query_t  *q;

    (void) kind;

    q = cls;
    q->rc = sim_tls_req_arg(q->req, key, key_size, value, value_size, q->err,
                            q->err_size);

    return (q->rc == 0) ? MHD_YES : MHD_NO;
}


static enum MHD_Result
sim_respond(struct MHD_Connection *c, const char *method, const char *url,
    unsigned status, json_t *body)
{
    char                 *text;
    const char           *error;
    enum MHD_Result       rc;
    struct MHD_Response  *response;

    if (body == NULL) {
        sim_log("%s %s: out of memory", method, url);
        return MHD_NO;
    }

    error = json_string_value(json_object_get(body, "error"));

    sim_log("%s %s %u%s%s", method, url, status, error ? " " : "",
            error ? error : "");

    text = json_dumps(body, JSON_COMPACT);
    json_decref(body);

    if (text == NULL) {
        return MHD_NO;
    }

    response = MHD_create_response_from_buffer_with_free_callback(
                   strlen(text), text, free);
    if (response == NULL) {
        free(text);
        return MHD_NO;
    }

    if (MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE,
                                "application/json") != MHD_YES
        || (status == MHD_HTTP_METHOD_NOT_ALLOWED
            && MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW,
                                       "GET, POST") != MHD_YES))
    {
        MHD_destroy_response(response);
        return MHD_NO;
    }

    rc = MHD_queue_response(c, status, response);
    MHD_destroy_response(response);

    return rc;
}


static json_t *
sim_refusal(unsigned status)
{
    switch (status) {
    case MHD_HTTP_NOT_FOUND:
        return sim_error("no such endpoint");
    case MHD_HTTP_METHOD_NOT_ALLOWED:
        return sim_error("method not allowed");
    default: /* MHD_HTTP_CONTENT_TOO_LARGE */
        return sim_error("request body over %d bytes", SIM_BODY_MAX);
    }
}


/*
 * {"error": "..."}.  Messages may quote client bytes, which need not be
 * UTF-8 (jansson would refuse them): anything outside printable ASCII
 * becomes '?'.
 */
static json_t *
sim_error(const char *fmt, ...)
{
    char     *p;
    va_list   ap;
    char      msg[SIM_ERR_MAX];

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    for (p = msg; *p != '\0'; p++) {
        if ((unsigned char) *p < 0x20 || (unsigned char) *p > 0x7e) {
            *p = '?';
        }
    }

    return json_pack("{s:s}", "error", msg);
}
