
/*
 * dstack mesh: requests without a target app go to the local guest agent,
 * as with the original client proxy.  The last path segment names the
 * agent's method in PascalCase ("/get-tls-key" is "/GetTlsKey"), and
 * "GET /gateway" answers the gateway domain this node uses.
 */


#include "ngx_http_dstack_mesh.h"


#define NGX_HTTP_DSTACK_MESH_METHOD_MAX  64


static ngx_int_t ngx_http_dstack_mesh_agent_method(ngx_http_request_t *r,
    ngx_str_t *method);
static ngx_int_t ngx_http_dstack_mesh_gateway_domain(ngx_http_request_t *r,
    ngx_http_dstack_mesh_gateway_t *gw);


ngx_int_t
ngx_http_dstack_mesh_agent_request(ngx_http_request_t *r,
    ngx_http_dstack_mesh_ctx_t *ctx)
{
    ngx_str_t    uri;
    ngx_addr_t  *agent;

    static ngx_str_t  no_agent =
        ngx_string("{\"error\":\"no target app, and no guest agent socket "
                   "is configured\"}");
    static ngx_str_t  bad_method =
        ngx_string("{\"error\":\"the path does not name a guest agent "
                   "method\"}");

    if (r->uri.len == sizeof("/gateway") - 1
        && ngx_strncmp(r->uri.data, "/gateway", sizeof("/gateway") - 1) == 0
        && (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD)))
    {
        return ngx_http_dstack_mesh_gateway_domain(r, ctx->conf->gateway);
    }

    agent = ctx->conf->agent;

    if (agent == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mesh: no target app and no mesh_agent_socket");
        return ngx_http_dstack_mesh_send_json(r, NGX_HTTP_BAD_REQUEST,
                                              &no_agent);
    }

    if (ngx_http_dstack_mesh_agent_method(r, &uri) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mesh: \"%V\" names no guest agent method", &r->uri);
        return ngx_http_dstack_mesh_send_json(r, NGX_HTTP_BAD_REQUEST,
                                              &bad_method);
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


/* "/any/prefix/get-tls-key" -> "/GetTlsKey" */

static ngx_int_t
ngx_http_dstack_mesh_agent_method(ngx_http_request_t *r, ngx_str_t *method)
{
    u_char      *p, *last, *segment, *d;
    ngx_uint_t   upper;

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

    method->data = ngx_pnalloc(r->pool, 1 + (last - segment));
    if (method->data == NULL) {
        return NGX_ERROR;
    }

    d = method->data;
    *d++ = '/';
    upper = 1;

    for (p = segment; p < last; p++) {

        if (*p == '-' || *p == '_') {
            upper = 1;
            continue;
        }

        if (!ngx_http_dstack_mesh_isalnum(*p)) {
            return NGX_DECLINED;
        }

        *d++ = upper ? ngx_toupper(*p) : *p;
        upper = 0;
    }

    method->len = d - method->data;

    return method->len > 1 ? NGX_OK : NGX_DECLINED;
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
