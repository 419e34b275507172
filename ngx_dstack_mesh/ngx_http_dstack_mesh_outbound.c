
/*
 * dstack mesh, outbound: mesh_target turns a location into an mTLS client
 * of another app, reached through the dstack gateway.
 *
 * The proxy module does the HTTP work (streaming bodies, upgrades, timeouts):
 * mesh_target configures the location as if it said
 *
 *     proxy_pass https://dstack_mesh_gateway;
 *     proxy_http_version 1.1;
 *     proxy_set_header Host $mesh_target_host;
 *     proxy_set_header Connection $mesh_connection;
 *     proxy_set_header Upgrade $http_upgrade;
 *
 * and puts its own content handler in front of the proxy's (see
 * ngx_http_dstack_mesh_conf.c; at server level, these settings go to a
 * location of their own).  That handler, here, validates the target,
 * decides the route (gateway passthrough with the app_id pinned,
 * gateway-terminated TLS, or the local guest agent) and removes the
 * x-dstack-target-* and x-dstack-app-id request headers.  The
 * "dstack_mesh_gateway" upstream is this module's balancer (see
 * ngx_http_dstack_mesh_upstream.c), which connects, pins and caches.
 */


#include "ngx_http_dstack_mesh.h"


static ngx_int_t ngx_http_dstack_mesh_route(ngx_http_request_t *r,
    ngx_http_dstack_mesh_ctx_t *ctx);
static ngx_int_t ngx_http_dstack_mesh_bad_target(ngx_http_request_t *r,
    const char *reason);
static ngx_int_t ngx_http_dstack_mesh_resolve(ngx_http_request_t *r,
    ngx_http_dstack_mesh_ctx_t *ctx);
static void ngx_http_dstack_mesh_resolve_handler(ngx_resolver_ctx_t *rctx);
static void ngx_http_dstack_mesh_resolve_cleanup(void *data);


/* the proxy module's content handler, which ours calls; set by mesh_target */
ngx_http_handler_pt  ngx_http_dstack_mesh_proxy_handler;

/* the proxy module's $proxy_host; set by mesh_target */
ngx_int_t  ngx_http_dstack_mesh_proxy_host_index = NGX_ERROR;


static ngx_str_t  ngx_http_dstack_mesh_forwarded_names[] = {
    ngx_string("x-dstack-target-*"),
    ngx_string(NGX_HTTP_DSTACK_MESH_APP_ID_HEADER),
    ngx_null_string
};


ngx_int_t
ngx_http_dstack_mesh_target_handler(ngx_http_request_t *r)
{
    ngx_int_t                    rc;
    ngx_http_dstack_mesh_ctx_t  *ctx;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_dstack_mesh_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->conf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_mesh_module);

    if (ctx->conf->target == NULL) {
        /* a block the merge did not give the target: never route unpinned */
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "mesh: no mesh_target in this location's configuration");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_dstack_mesh_route(r, ctx);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (ngx_http_dstack_mesh_remove_headers(r,
                                      ngx_http_dstack_mesh_forwarded_names)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_set_ctx(r, ctx, ngx_http_dstack_mesh_module);

    if (ngx_http_dstack_mesh_key_complete(r, ctx) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->key.socklen == 0) {
        return ngx_http_dstack_mesh_resolve(r, ctx);
    }

    return ngx_http_dstack_mesh_proxy_handler(r);
}


/*
 * mesh_target at server level, for requests that match no location: they
 * move to the implicit location that holds its proxy settings (see
 * ngx_http_dstack_mesh_target()), as requests move into an "if" block.
 */

ngx_int_t
ngx_http_dstack_mesh_server_target_handler(ngx_http_request_t *r)
{
    ngx_http_dstack_mesh_loc_conf_t  *mlcf;

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_mesh_module);

    r->loc_conf = mlcf->target_location;
    ngx_http_update_location_config(r);

    return ngx_http_dstack_mesh_target_handler(r);
}


/*
 * Fills ctx->key from the target and declines, for the proxy to go on; or
 * answers the request itself: 400 for a malformed target, the agent
 * fallback's own answers.
 */

static ngx_int_t
ngx_http_dstack_mesh_route(ngx_http_request_t *r,
    ngx_http_dstack_mesh_ctx_t *ctx)
{
    ngx_str_t                            app, port, instance, tls;
    ngx_addr_t                          *addr;
    mesh_target_t                        t;
    mesh_target_status_t                 status;
    ngx_http_dstack_mesh_gateway_t      *gw;
    ngx_http_dstack_mesh_target_conf_t  *tcf;

    tcf = ctx->conf->target;
    gw = ctx->conf->gateway;

    ngx_str_null(&port);
    ngx_str_null(&instance);
    ngx_str_null(&tls);

    if (ngx_http_complex_value(r, &tcf->app, &app) != NGX_OK
        || (tcf->port && ngx_http_complex_value(r, tcf->port, &port) != NGX_OK)
        || (tcf->instance
            && ngx_http_complex_value(r, tcf->instance, &instance) != NGX_OK)
        || (tcf->tls && ngx_http_complex_value(r, tcf->tls, &tls) != NGX_OK))
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    status = mesh_target_parse(&t, (char *) app.data, app.len,
                               (char *) port.data, port.len,
                               (char *) instance.data, instance.len,
                               (char *) tls.data, tls.len);

    if (status == MESH_TARGET_NO_APP) {
        return ngx_http_dstack_mesh_agent_request(r, ctx);
    }

    if (status != MESH_TARGET_OK) {
        return ngx_http_dstack_mesh_bad_target(r,
                                               mesh_target_strerror(status));
    }

    if (!t.tls && ctx->conf->gateway_trusted == NULL) {
        return ngx_http_dstack_mesh_bad_target(r,
                           "tls=off needs mesh_gateway_trusted_certificate");
    }

    ctx->key.route = t.tls ? NGX_HTTP_DSTACK_MESH_PINNED
                           : NGX_HTTP_DSTACK_MESH_GATEWAY_TLS;

    ngx_memcpy(ctx->key.app_id, t.app_id, ngx_strlen(t.app_id) + 1);

    if (gw->domain.len) {
        ctx->key.host_len = mesh_target_host(&t, (char *) gw->domain.data,
                                             gw->domain.len,
                                             (char *) ctx->key.host,
                                             sizeof(ctx->key.host));
        if (ctx->key.host_len == 0) {
            return ngx_http_dstack_mesh_bad_target(r,
                                        "target host name is too long");
        }

    } else {
        ctx->key.host_len = gw->fixed_host.len;
        ngx_memcpy(ctx->key.host, gw->fixed_host.data, gw->fixed_host.len);
    }

    ctx->host.len = ctx->key.host_len;
    ctx->host.data = ctx->key.host;

    addr = gw->address;

    if (addr == NULL) {
        /* resolved per target name before proxying */
        return NGX_DECLINED;
    }

    if (ngx_http_dstack_mesh_set_address(r, ctx, addr->sockaddr,
                                         addr->socklen)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_dstack_mesh_bad_target(ngx_http_request_t *r, const char *reason)
{
    ngx_str_t  body;

    /* the client's mistake: "info", like nginx's own client errors */
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "mesh: bad target: %s", reason);

    body.data = ngx_pnalloc(r->pool, sizeof("{\"error\":\"\"}") - 1
                                     + ngx_strlen(reason));
    if (body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* reasons are fixed ASCII text without quotes or backslashes */
    body.len = ngx_sprintf(body.data, "{\"error\":\"%s\"}", reason)
               - body.data;

    return ngx_http_dstack_mesh_send_json(r, NGX_HTTP_BAD_REQUEST, &body);
}


ngx_int_t
ngx_http_dstack_mesh_set_address(ngx_http_request_t *r,
    ngx_http_dstack_mesh_ctx_t *ctx, struct sockaddr *sockaddr,
    socklen_t socklen)
{
    ngx_memcpy(&ctx->key.sockaddr, sockaddr, socklen);
    ctx->key.socklen = socklen;

    ctx->name.data = ngx_pnalloc(r->pool, NGX_SOCKADDR_STRLEN);
    if (ctx->name.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->name.len = ngx_sock_ntop(sockaddr, socklen, ctx->name.data,
                                  NGX_SOCKADDR_STRLEN, 1);

    return NGX_OK;
}


/*
 * Without "address=", each target name resolves on its own with the
 * location's resolver, as the gateway's wildcard DNS intends.
 */

static ngx_int_t
ngx_http_dstack_mesh_resolve(ngx_http_request_t *r,
    ngx_http_dstack_mesh_ctx_t *ctx)
{
    ngx_resolver_ctx_t        *rctx, temp;
    ngx_http_cleanup_t        *cln;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    temp.name = ctx->host;

    rctx = ngx_resolve_start(clcf->resolver, &temp);
    if (rctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rctx == NGX_NO_RESOLVER) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mesh: no resolver defined to resolve %V", &ctx->host);
        return NGX_HTTP_BAD_GATEWAY;
    }

    cln = ngx_http_cleanup_add(r, 0);
    if (cln == NULL) {
        ngx_resolve_name_done(rctx);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_dstack_mesh_resolve_cleanup;
    cln->data = ctx;

    rctx->name = ctx->host;
    rctx->handler = ngx_http_dstack_mesh_resolve_handler;
    rctx->data = r;
    rctx->timeout = clcf->resolver_timeout;

    ctx->resolving = rctx;

    /*
     * Held until the content handler returns NGX_DONE; taken first as the
     * handler may run before ngx_resolve_name() returns.
     */
    r->main->count++;

    if (ngx_resolve_name(rctx) != NGX_OK) {
        ctx->resolving = NULL;
        r->main->count--;
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_DONE;
}


static void
ngx_http_dstack_mesh_resolve_handler(ngx_resolver_ctx_t *rctx)
{
    ngx_int_t                    rc;
    ngx_connection_t            *c;
    ngx_http_request_t          *r;
    ngx_http_dstack_mesh_ctx_t  *ctx;

    r = rctx->data;
    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_mesh_module);

    ctx->resolving = NULL;

    if (rctx->state || rctx->naddrs == 0) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "mesh: %V could not be resolved (%i: %s)",
                      &ctx->host, rctx->state,
                      ngx_resolver_strerror(rctx->state));
        rc = NGX_HTTP_BAD_GATEWAY;

        ngx_http_dstack_mesh_count_outbound(
                 ngx_http_get_module_main_conf(r, ngx_http_dstack_mesh_module),
                 ctx, NGX_HTTP_DSTACK_MESH_OUT_CONNECT_FAILURE);

    } else {
        ngx_inet_set_port(rctx->addrs[0].sockaddr,
                          ctx->conf->gateway->port);

        rc = ngx_http_dstack_mesh_set_address(r, ctx,
                                              rctx->addrs[0].sockaddr,
                                              rctx->addrs[0].socklen);
        if (rc == NGX_OK) {
            rc = ngx_http_dstack_mesh_proxy_handler(r);
        }
    }

    ngx_resolve_name_done(rctx);

    /* the reference taken in ngx_http_dstack_mesh_resolve() went with the
     * content handler's NGX_DONE; this one is the proxy's, if any */
    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_dstack_mesh_resolve_cleanup(void *data)
{
    ngx_http_dstack_mesh_ctx_t  *ctx = data;

    if (ctx->resolving) {
        ngx_resolve_name_done(ctx->resolving);
        ctx->resolving = NULL;
    }
}


ngx_int_t
ngx_http_dstack_mesh_target_host_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_variable_value_t   *proxy_host;
    ngx_http_dstack_mesh_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_mesh_module);

    if (ctx == NULL) {
        /*
         * A location nested in a mesh_target one, with a proxy_pass of its
         * own, inherits "proxy_set_header Host $mesh_target_host": it gets
         * the proxy's default Host instead of none.  Without any
         * mesh_target the variable is simply not found.
         */

        if (ngx_http_dstack_mesh_proxy_host_index == NGX_ERROR) {
            v->not_found = 1;
            return NGX_OK;
        }

        proxy_host = ngx_http_get_indexed_variable(r,
                                       ngx_http_dstack_mesh_proxy_host_index);
        if (proxy_host == NULL) {
            return NGX_ERROR;
        }

        *v = *proxy_host;
        return NGX_OK;
    }

    if (ctx->host.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = ctx->host.len;
    v->data = ctx->host.data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


/* "upgrade" when the client asks for one, else empty: keepalive upstream */

ngx_int_t
ngx_http_dstack_mesh_connection_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    if (r->headers_in.upgrade) {
        v->len = sizeof("upgrade") - 1;
        v->data = (u_char *) "upgrade";

    } else {
        v->len = 0;
        v->data = (u_char *) "";
    }

    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}
