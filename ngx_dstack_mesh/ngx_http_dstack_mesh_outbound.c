
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
 * and puts its own content handler in front of the proxy's.  That handler
 * validates the target, decides the route (gateway passthrough with the
 * app_id pinned, gateway-terminated TLS, or the local guest agent) and
 * removes the x-dstack-target-* and x-dstack-app-id request headers.  The
 * "dstack_mesh_gateway" upstream is this module's balancer (see
 * ngx_http_dstack_mesh_upstream.c), which connects, pins and pools.
 */


#include "ngx_http_dstack_mesh.h"


extern ngx_module_t  ngx_http_proxy_module;


static ngx_int_t ngx_http_dstack_mesh_target_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_dstack_mesh_route(ngx_http_request_t *r,
    ngx_http_dstack_mesh_ctx_t *ctx);
static ngx_int_t ngx_http_dstack_mesh_bad_target(ngx_http_request_t *r,
    const char *reason);
static ngx_int_t ngx_http_dstack_mesh_set_address(ngx_http_request_t *r,
    ngx_http_dstack_mesh_ctx_t *ctx, struct sockaddr *sockaddr,
    socklen_t socklen);
static ngx_int_t ngx_http_dstack_mesh_resolve(ngx_http_request_t *r,
    ngx_http_dstack_mesh_ctx_t *ctx);
static void ngx_http_dstack_mesh_resolve_handler(ngx_resolver_ctx_t *rctx);
static void ngx_http_dstack_mesh_resolve_cleanup(void *data);
static char *ngx_http_dstack_mesh_proxy_directive(ngx_conf_t *cf,
    ngx_str_t *args, ngx_uint_t nargs);
static char *ngx_http_dstack_mesh_target_param(ngx_conf_t *cf,
    ngx_str_t *value, ngx_http_complex_value_t **cv);
static ngx_uint_t ngx_http_dstack_mesh_valid_host(ngx_str_t *host,
    const char *extra);
static void ngx_http_dstack_mesh_identity_cleanup(void *data);
static void ngx_http_dstack_mesh_store_cleanup(void *data);


/* the proxy module's content handler, which ours calls */
static ngx_http_handler_pt  ngx_http_dstack_mesh_proxy_handler;


static ngx_str_t  ngx_http_dstack_mesh_forwarded_names[] = {
    ngx_string("x-dstack-target-*"),
    ngx_string(NGX_HTTP_DSTACK_MESH_APP_ID_HEADER),
    ngx_null_string
};


static ngx_int_t
ngx_http_dstack_mesh_target_handler(ngx_http_request_t *r)
{
    ngx_int_t                    rc;
    ngx_http_dstack_mesh_ctx_t  *ctx;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_dstack_mesh_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->conf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_mesh_module);

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

    if (ctx->key.socklen == 0) {
        return ngx_http_dstack_mesh_resolve(r, ctx);
    }

    return ngx_http_dstack_mesh_proxy_handler(r);
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

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
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


static ngx_int_t
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
    ngx_http_dstack_mesh_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_mesh_module);

    if (ctx == NULL || ctx->host.len == 0) {
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


/* configuration */


char *
ngx_http_dstack_mesh_target(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dstack_mesh_loc_conf_t *mlcf = conf;

    char                                *rv;
    ngx_str_t                           *value;
    ngx_uint_t                           i;
    ngx_http_core_loc_conf_t            *clcf;
    ngx_http_upstream_srv_conf_t        *uscf;
    ngx_http_compile_complex_value_t     ccv;
    ngx_http_dstack_mesh_target_conf_t  *tcf;

    static ngx_str_t  proxy_pass[] = {
        ngx_string("proxy_pass"), ngx_string("https://dstack_mesh_gateway")
    };
    static ngx_str_t  http_version[] = {
        ngx_string("proxy_http_version"), ngx_string("1.1")
    };
    static ngx_str_t  host[] = {
        ngx_string("proxy_set_header"), ngx_string("Host"),
        ngx_string("$mesh_target_host")
    };
    static ngx_str_t  connection[] = {
        ngx_string("proxy_set_header"), ngx_string("Connection"),
        ngx_string("$mesh_connection")
    };
    static ngx_str_t  upgrade[] = {
        ngx_string("proxy_set_header"), ngx_string("Upgrade"),
        ngx_string("$http_upgrade")
    };

    if (mlcf->target) {
        return "is duplicate";
    }

    tcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_dstack_mesh_target_conf_t));
    if (tcf == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &value[1];
    ccv.complex_value = &tcf->app;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "port=", 5) == 0) {
            rv = ngx_http_dstack_mesh_target_param(cf, &value[i], &tcf->port);

        } else if (ngx_strncmp(value[i].data, "instance=", 9) == 0) {
            rv = ngx_http_dstack_mesh_target_param(cf, &value[i],
                                                   &tcf->instance);

        } else if (ngx_strncmp(value[i].data, "tls=", 4) == 0) {
            rv = ngx_http_dstack_mesh_target_param(cf, &value[i], &tcf->tls);

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

    mlcf->target = tcf;

    uscf = ngx_http_dstack_mesh_upstream_add(cf);
    if (uscf == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_dstack_mesh_proxy_directive(cf, proxy_pass, 2)
           != NGX_CONF_OK
        || ngx_http_dstack_mesh_proxy_directive(cf, http_version, 2)
           != NGX_CONF_OK
        || ngx_http_dstack_mesh_proxy_directive(cf, host, 3) != NGX_CONF_OK
        || ngx_http_dstack_mesh_proxy_directive(cf, connection, 3)
           != NGX_CONF_OK
        || ngx_http_dstack_mesh_proxy_directive(cf, upgrade, 3)
           != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    ngx_http_dstack_mesh_proxy_handler = clcf->handler;
    clcf->handler = ngx_http_dstack_mesh_target_handler;

    return NGX_CONF_OK;
}


static char *
ngx_http_dstack_mesh_target_param(ngx_conf_t *cf, ngx_str_t *value,
    ngx_http_complex_value_t **cv)
{
    ngx_str_t                          v;
    ngx_http_compile_complex_value_t   ccv;

    if (*cv) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate parameter \"%V\"", value);
        return NGX_CONF_ERROR;
    }

    v.data = (u_char *) ngx_strchr(value->data, '=') + 1;
    v.len = value->data + value->len - v.data;

    *cv = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
    if (*cv == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &v;
    ccv.complex_value = *cv;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * Runs one of the proxy module's directives in the current context, as if
 * the configuration said it.
 */

static char *
ngx_http_dstack_mesh_proxy_directive(ngx_conf_t *cf, ngx_str_t *args,
    ngx_uint_t nargs)
{
    char           *rv;
    void          **confp;
    ngx_array_t     a, *saved;
    ngx_command_t  *cmd;

    for (cmd = ngx_http_proxy_module.commands; cmd->name.len; cmd++) {
        if (cmd->name.len == args[0].len
            && ngx_strncmp(cmd->name.data, args[0].data, args[0].len) == 0)
        {
            break;
        }
    }

    if (cmd->name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "mesh_target: the proxy module has no \"%V\"",
                           &args[0]);
        return NGX_CONF_ERROR;
    }

    a.elts = args;
    a.nelts = nargs;
    a.size = sizeof(ngx_str_t);
    a.nalloc = nargs;
    a.pool = cf->pool;

    saved = cf->args;
    cf->args = &a;

    confp = *(void **) ((char *) cf->ctx + cmd->conf);
    rv = cmd->set(cf, cmd, confp[ngx_http_proxy_module.ctx_index]);

    cf->args = saved;

    if (rv == NGX_CONF_OK) {
        return NGX_CONF_OK;
    }

    if (rv != NGX_CONF_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "mesh_target: \"%V\" %s", &args[0], rv);
    }

    return NGX_CONF_ERROR;
}


/*
 * mesh_gateway <domain[:port]> [address=<host:port>];
 * mesh_gateway fixed/<host:port>;
 */

char *
ngx_http_dstack_mesh_gateway(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dstack_mesh_loc_conf_t *mlcf = conf;

    ngx_url_t                        u;
    ngx_str_t                       *value, address;
    ngx_uint_t                       i;
    ngx_http_dstack_mesh_gateway_t  *gw;

    if (mlcf->gateway != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    gw = ngx_pcalloc(cf->pool, sizeof(ngx_http_dstack_mesh_gateway_t));
    if (gw == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;
    ngx_str_null(&address);

    if (ngx_strncmp(value[1].data, "fixed/", 6) == 0) {
        if (cf->args->nelts != 2) {
            return "takes no \"address=\" with \"fixed/\"";
        }

        address.data = value[1].data + 6;
        address.len = value[1].len - 6;

    } else {
        for (i = 2; i < cf->args->nelts; i++) {
            if (ngx_strncmp(value[i].data, "address=", 8) != 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid parameter \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            address.data = value[i].data + 8;
            address.len = value[i].len - 8;
        }

        ngx_memzero(&u, sizeof(ngx_url_t));

        u.url = value[1];
        u.default_port = 443;
        u.no_resolve = 1;

        if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.host.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid gateway domain \"%V\"%s%s",
                               &value[1], u.err ? ": " : "",
                               u.err ? u.err : "");
            return NGX_CONF_ERROR;
        }

        if (!ngx_http_dstack_mesh_valid_host(&u.host, "-.")) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid gateway domain \"%V\"", &u.host);
            return NGX_CONF_ERROR;
        }

        gw->domain = u.host;
        gw->port = u.port;
    }

    if (address.len) {
        ngx_memzero(&u, sizeof(ngx_url_t));

        u.url = address;
        u.default_port = 443;

        if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid gateway address \"%V\"%s%s",
                               &address, u.err ? ": " : "",
                               u.err ? u.err : "");
            return NGX_CONF_ERROR;
        }

        gw->address = &u.addrs[0];

        if (gw->domain.len == 0) {
            if (!ngx_http_dstack_mesh_valid_host(&u.host, "-.:[]")) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid gateway host \"%V\"", &u.host);
                return NGX_CONF_ERROR;
            }

            gw->fixed_host = u.host;
            gw->port = u.port;
        }
    }

    mlcf->gateway = gw;

    return NGX_CONF_OK;
}


char *
ngx_http_dstack_mesh_trusted_certificate(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    X509_STORE          **store, *s;
    ngx_str_t            *value, file;
    ngx_pool_cleanup_t   *cln;

    store = (X509_STORE **) ((char *) conf + cmd->offset);

    if (*store != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;
    file = value[1];

    if (ngx_conf_full_name(cf->cycle, &file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    s = X509_STORE_new();
    if (s == NULL) {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        X509_STORE_free(s);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_dstack_mesh_store_cleanup;
    cln->data = s;

    if (X509_STORE_load_locations(s, (char *) file.data, NULL) != 1) {
        ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"%V\": cannot load CA certificates from \"%s\"",
                      &cmd->name, file.data);
        return NGX_CONF_ERROR;
    }

    *store = s;

    return NGX_CONF_OK;
}


char *
ngx_http_dstack_mesh_agent_socket(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_dstack_mesh_loc_conf_t *mlcf = conf;

    ngx_url_t   u;
    ngx_str_t  *value;

    if (mlcf->agent != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url.len = value[1].len + sizeof("unix:") - 1;
    u.url.data = ngx_pnalloc(cf->pool, u.url.len);
    if (u.url.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_sprintf(u.url.data, "unix:%V", &value[1]);

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid guest agent socket \"%V\"%s%s",
                           &value[1], u.err ? ": " : "", u.err ? u.err : "");
        return NGX_CONF_ERROR;
    }

    mlcf->agent = &u.addrs[0];

    return NGX_CONF_OK;
}


ngx_http_dstack_mesh_identity_t *
ngx_http_dstack_mesh_load_identity(ngx_conf_t *cf, ngx_str_t *certificate,
    ngx_str_t *key)
{
    BIO                              *bio;
    X509                             *x509;
    ngx_str_t                         cert_file, key_file;
    ngx_pool_cleanup_t               *cln;
    ngx_http_dstack_mesh_identity_t  *id;

    cert_file = *certificate;
    key_file = *key;

    if (ngx_conf_full_name(cf->cycle, &cert_file, 1) != NGX_OK
        || ngx_conf_full_name(cf->cycle, &key_file, 1) != NGX_OK)
    {
        return NULL;
    }

    id = ngx_pcalloc(cf->pool, sizeof(ngx_http_dstack_mesh_identity_t));
    if (id == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_dstack_mesh_identity_cleanup;
    cln->data = id;

    id->chain = sk_X509_new_null();
    if (id->chain == NULL) {
        return NULL;
    }

    /* the chain as GetTlsKey returns it: leaf first */

    bio = BIO_new_file((char *) cert_file.data, "r");
    if (bio == NULL) {
        goto failed;
    }

    id->certificate = PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL);

    while (id->certificate) {
        x509 = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (x509 == NULL) {
            /* the end of the file is an error to OpenSSL, not to us */
            ERR_clear_error();
            break;
        }

        if (sk_X509_push(id->chain, x509) == 0) {
            X509_free(x509);
            BIO_free(bio);
            goto failed;
        }
    }

    BIO_free(bio);

    if (id->certificate == NULL) {
        goto failed;
    }

    bio = BIO_new_file((char *) key_file.data, "r");
    if (bio == NULL) {
        goto failed;
    }

    id->key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);

    if (id->key == NULL || X509_check_private_key(id->certificate, id->key)
                           != 1)
    {
        goto failed;
    }

    return id;

failed:

    ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                  "cannot load mesh certificate \"%s\" and key \"%s\"",
                  cert_file.data, key_file.data);
    return NULL;
}


/*
 * A location that routes to other apps must be able to prove who it is and
 * to check who answers; nothing leaves without the app_id pinned.
 */

char *
ngx_http_dstack_mesh_check_target(ngx_conf_t *cf,
    ngx_http_dstack_mesh_loc_conf_t *conf)
{
    ngx_http_upstream_conf_t  *ucf;

    if (conf->gateway == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mesh_target\" needs \"mesh_gateway\"");
        return NGX_CONF_ERROR;
    }

    if (conf->identity == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mesh_target\" needs \"mesh_certificate\" and "
                           "\"mesh_certificate_key\": the identity it "
                           "presents to other apps");
        return NGX_CONF_ERROR;
    }

    if (conf->trusted == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mesh_target\" needs "
                           "\"mesh_trusted_certificate\": without the CA "
                           "the peer's app_id cannot be verified");
        return NGX_CONF_ERROR;
    }

    /*
     * The app_id is pinned from the balancer's set_session hook, which the
     * upstream code calls only with session reuse on.  The proxy module's
     * location configuration starts with its ngx_http_upstream_conf_t.
     */

    ucf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_proxy_module);

    if (!ucf->ssl_session_reuse) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mesh_target\" needs "
                           "\"proxy_ssl_session_reuse on\" (the default): "
                           "the peer's app_id is checked from its hook");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* host names end up in SNI, Host headers and JSON: letters, digits, extra */

static ngx_uint_t
ngx_http_dstack_mesh_valid_host(ngx_str_t *host, const char *extra)
{
    u_char  *p;

    for (p = host->data; p < host->data + host->len; p++) {
        if (!ngx_http_dstack_mesh_isalnum(*p) && ngx_strchr(extra, *p) == NULL)
        {
            return 0;
        }
    }

    return host->len > 0;
}


static void
ngx_http_dstack_mesh_identity_cleanup(void *data)
{
    ngx_http_dstack_mesh_identity_t  *id = data;

    X509_free(id->certificate);
    EVP_PKEY_free(id->key);

    if (id->chain) {
        sk_X509_pop_free(id->chain, X509_free);
    }
}


static void
ngx_http_dstack_mesh_store_cleanup(void *data)
{
    X509_STORE_free(data);
}
