
/*
 * dstack mesh: requests without a target app go to the local guest agent,
 * as with the original client proxy.  The last path segment names the
 * agent's method in PascalCase ("/prpc/get-tls-key" is "/prpc/GetTlsKey"),
 * and only the methods of mesh_agent_methods may be called.  nginx answers
 * "GET /health" (the entry point is up) and "GET /gateway" (the gateway
 * domain this node uses) itself.
 */


#include "ngx_http_dstack_mesh.h"


#define NGX_HTTP_DSTACK_MESH_METHOD_MAX  64

#define ngx_http_dstack_mesh_islower(c)  ((c) >= 'a' && (c) <= 'z')
#define ngx_http_dstack_mesh_isupper(c)  ((c) >= 'A' && (c) <= 'Z')


/* where a word boundary may fall, as in the original's case conversion */

typedef enum {
    NGX_HTTP_DSTACK_MESH_WORD_START = 0,
    NGX_HTTP_DSTACK_MESH_WORD_LOWER,
    NGX_HTTP_DSTACK_MESH_WORD_UPPER
} ngx_http_dstack_mesh_word_e;


static ngx_int_t ngx_http_dstack_mesh_agent_uri(ngx_http_request_t *r,
    ngx_str_t *uri, ngx_str_t *method);
static size_t ngx_http_dstack_mesh_pascal_case(u_char *dst, u_char *src,
    size_t len);
static ngx_uint_t ngx_http_dstack_mesh_method_allowed(
    ngx_http_dstack_mesh_loc_conf_t *conf, ngx_str_t *method);
static ngx_int_t ngx_http_dstack_mesh_method_refused(ngx_http_request_t *r,
    ngx_str_t *method);
static ngx_int_t ngx_http_dstack_mesh_gateway_domain(ngx_http_request_t *r,
    ngx_http_dstack_mesh_gateway_t *gw);


/* without mesh_agent_methods: what apps need and hands out no key */

static ngx_str_t  ngx_http_dstack_mesh_default_methods[] = {
    ngx_string("Info"),
    ngx_string("GetQuote")
};


ngx_int_t
ngx_http_dstack_mesh_agent_request(ngx_http_request_t *r,
    ngx_http_dstack_mesh_ctx_t *ctx)
{
    ngx_str_t    uri, method;
    ngx_addr_t  *agent;

    static ngx_str_t  healthy = ngx_string("{\"status\":\"ok\"}");
    static ngx_str_t  no_agent =
        ngx_string("{\"error\":\"no target app, and no guest agent socket "
                   "is configured\"}");
    static ngx_str_t  bad_method =
        ngx_string("{\"error\":\"the path does not name a guest agent "
                   "method\"}");

    if (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD)) {

        if (r->uri.len == sizeof("/health") - 1
            && ngx_strncmp(r->uri.data, "/health", sizeof("/health") - 1)
               == 0)
        {
            return ngx_http_dstack_mesh_send_json(r, NGX_HTTP_OK, &healthy);
        }

        if (r->uri.len == sizeof("/gateway") - 1
            && ngx_strncmp(r->uri.data, "/gateway", sizeof("/gateway") - 1)
               == 0)
        {
            return ngx_http_dstack_mesh_gateway_domain(r, ctx->conf->gateway);
        }
    }

    agent = ctx->conf->agent;

    if (agent == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mesh: no target app and no mesh_agent_socket");
        return ngx_http_dstack_mesh_send_json(r, NGX_HTTP_BAD_REQUEST,
                                              &no_agent);
    }

    switch (ngx_http_dstack_mesh_agent_uri(r, &uri, &method)) {

    case NGX_OK:
        break;

    case NGX_DECLINED:
        /* the client's mistake: info, as for the other refusals */
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mesh: \"%V\" names no guest agent method",
                      &r->unparsed_uri);
        return ngx_http_dstack_mesh_send_json(r, NGX_HTTP_BAD_REQUEST,
                                              &bad_method);

    default:
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (!ngx_http_dstack_mesh_method_allowed(ctx->conf, &method)) {
        return ngx_http_dstack_mesh_method_refused(r, &method);
    }

    r->uri = uri;
    r->valid_unparsed_uri = 0;

    ctx->key.route = NGX_HTTP_DSTACK_MESH_AGENT;
    ctx->key.socklen = agent->socklen;
    ngx_memcpy(&ctx->key.sockaddr, agent->sockaddr, agent->socklen);
    ctx->name = agent->name;

    ngx_str_set(&ctx->host, "localhost");

    return NGX_DECLINED;
}


/*
 * "/prpc/get-tls-key" -> "/prpc/GetTlsKey": the prefix is kept, the last
 * segment converted; "method" points at the converted segment.
 */

static ngx_int_t
ngx_http_dstack_mesh_agent_uri(ngx_http_request_t *r, ngx_str_t *uri,
    ngx_str_t *method)
{
    u_char  *last, *segment;
    size_t   prefix;

    last = r->uri.data + r->uri.len;
    segment = last;

    while (segment > r->uri.data && segment[-1] != '/') {
        segment--;
    }

    if (segment == last
        || last - segment > NGX_HTTP_DSTACK_MESH_METHOD_MAX)
    {
        return NGX_DECLINED;
    }

    prefix = segment - r->uri.data;

    uri->data = ngx_pnalloc(r->pool, r->uri.len);
    if (uri->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(uri->data, r->uri.data, prefix);

    method->data = uri->data + prefix;
    method->len = ngx_http_dstack_mesh_pascal_case(method->data, segment,
                                                   last - segment);
    if (method->len == 0) {
        return NGX_DECLINED;
    }

    uri->len = prefix + method->len;

    return NGX_OK;
}


/*
 * The original's conversion (heck's PascalCase) for what a method name may
 * hold: words split at '-' and '_', after a lower-case letter followed by a
 * capital ("getTls": "get", "Tls"), and before the last capital of a run
 * followed by a lower-case letter ("TLSKey": "TLS", "Key"); each word is
 * capitalised and the rest of it lower-cased.  "GET_TLS_KEY", "getTLSKey"
 * and "get-tls-key" are all "GetTlsKey".  Returns the length written to
 * "dst" (at most "len"), 0 for an empty name or any other character.
 */

static size_t
ngx_http_dstack_mesh_pascal_case(u_char *dst, u_char *src, size_t len)
{
    u_char                       c, next, *d, *p, *last;
    ngx_uint_t                   starts, next_starts;
    ngx_http_dstack_mesh_word_e  mode, m;

    d = dst;
    last = src + len;
    starts = 1;
    mode = NGX_HTTP_DSTACK_MESH_WORD_START;

    for (p = src; p < last; p++) {
        c = *p;

        if (c == '-' || c == '_') {
            starts = 1;
            mode = NGX_HTTP_DSTACK_MESH_WORD_START;
            continue;
        }

        if (!ngx_http_dstack_mesh_isalnum(c)) {
            return 0;
        }

        next = (p + 1 < last) ? p[1] : '\0';
        next_starts = 0;

        if (mode == NGX_HTTP_DSTACK_MESH_WORD_UPPER
            && ngx_http_dstack_mesh_isupper(c)
            && ngx_http_dstack_mesh_islower(next))
        {
            starts = 1;
            mode = NGX_HTTP_DSTACK_MESH_WORD_START;

        } else {
            if (ngx_http_dstack_mesh_islower(c)) {
                m = NGX_HTTP_DSTACK_MESH_WORD_LOWER;

            } else if (ngx_http_dstack_mesh_isupper(c)) {
                m = NGX_HTTP_DSTACK_MESH_WORD_UPPER;

            } else {
                m = mode;  /* a digit continues the word it is in */
            }

            if (m == NGX_HTTP_DSTACK_MESH_WORD_LOWER
                && ngx_http_dstack_mesh_isupper(next))
            {
                next_starts = 1;
                mode = NGX_HTTP_DSTACK_MESH_WORD_START;

            } else {
                mode = m;
            }
        }

        *d++ = starts ? ngx_toupper(c) : ngx_tolower(c);
        starts = next_starts;
    }

    return d - dst;
}


static ngx_uint_t
ngx_http_dstack_mesh_method_allowed(ngx_http_dstack_mesh_loc_conf_t *conf,
    ngx_str_t *method)
{
    ngx_str_t   *allowed;
    ngx_uint_t   i, n;

    if (conf->agent_methods) {
        allowed = conf->agent_methods->elts;
        n = conf->agent_methods->nelts;

    } else {
        allowed = ngx_http_dstack_mesh_default_methods;
        n = sizeof(ngx_http_dstack_mesh_default_methods) / sizeof(ngx_str_t);
    }

    for (i = 0; i < n; i++) {
        if (allowed[i].len == method->len
            && ngx_strncmp(allowed[i].data, method->data, method->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


static ngx_int_t
ngx_http_dstack_mesh_method_refused(ngx_http_request_t *r,
    ngx_str_t *method)
{
    ngx_str_t  body;

    /* a client's refusal: info, as nginx logs client certificate errors */
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "mesh: guest agent method \"%V\" is not allowed by "
                  "mesh_agent_methods", method);

    body.data = ngx_pnalloc(r->pool, sizeof("{\"error\":\"guest agent method "
                                            "\\\"\\\" is not allowed\"}") - 1
                                     + method->len);
    if (body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the name is letters and digits, as converted */
    body.len = ngx_sprintf(body.data, "{\"error\":\"guest agent method "
                                      "\\\"%V\\\" is not allowed\"}", method)
               - body.data;

    return ngx_http_dstack_mesh_send_json(r, NGX_HTTP_FORBIDDEN, &body);
}


/* mesh_agent_methods Method ...; names as requests are converted to */

char *
ngx_http_dstack_mesh_agent_methods(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_dstack_mesh_loc_conf_t *mlcf = conf;

    u_char      *canonical;
    size_t       len;
    ngx_str_t   *value, *method;
    ngx_uint_t   i;

    if (mlcf->agent_methods != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    mlcf->agent_methods = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                           sizeof(ngx_str_t));
    if (mlcf->agent_methods == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (value[i].len > NGX_HTTP_DSTACK_MESH_METHOD_MAX) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\": a guest agent method name is at "
                               "most %d characters", &value[i],
                               NGX_HTTP_DSTACK_MESH_METHOD_MAX);
            return NGX_CONF_ERROR;
        }

        canonical = ngx_pnalloc(cf->pool, value[i].len);
        if (canonical == NULL) {
            return NGX_CONF_ERROR;
        }

        len = ngx_http_dstack_mesh_pascal_case(canonical, value[i].data,
                                               value[i].len);
        if (len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" is not a guest agent method name: "
                               "letters and digits, in PascalCase",
                               &value[i]);
            return NGX_CONF_ERROR;
        }

        /* a name no request converts to would never match */

        if (len != value[i].len
            || ngx_strncmp(canonical, value[i].data, len) != 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" is not in PascalCase as requests "
                               "are converted: \"%*s\"", &value[i],
                               len, canonical);
            return NGX_CONF_ERROR;
        }

        method = ngx_array_push(mlcf->agent_methods);
        if (method == NULL) {
            return NGX_CONF_ERROR;
        }

        *method = value[i];
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_dstack_mesh_gateway_domain(ngx_http_request_t *r,
    ngx_http_dstack_mesh_gateway_t *gw)
{
    ngx_str_t   body, *domain;

    domain = gw->domain.len ? &gw->domain : &gw->fixed_host;

    body.data = ngx_pnalloc(r->pool, sizeof("{\"gateway_domain\":\"\"}") - 1
                                     + domain->len);
    if (body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the domain was checked at configuration: letters, digits, - and . */
    body.len = ngx_sprintf(body.data, "{\"gateway_domain\":\"%V\"}", domain)
               - body.data;

    return ngx_http_dstack_mesh_send_json(r, NGX_HTTP_OK, &body);
}
