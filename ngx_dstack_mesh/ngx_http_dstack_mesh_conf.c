
/*
 * dstack mesh: configuration.  The directive handlers, the certificate, CA
 * and key files they load, and the checks a mesh_target location must pass;
 * nothing here runs per request.
 */


#include "ngx_http_dstack_mesh.h"


extern ngx_module_t  ngx_http_proxy_module;


static char *ngx_http_dstack_mesh_target_param(ngx_conf_t *cf,
    ngx_str_t *value, ngx_http_complex_value_t **cv);
static char *ngx_http_dstack_mesh_proxy_to_target(ngx_conf_t *cf);
static ngx_http_conf_ctx_t *ngx_http_dstack_mesh_implicit_location(
    ngx_conf_t *cf);
static char *ngx_http_dstack_mesh_proxy_directive(ngx_conf_t *cf,
    ngx_str_t *args, ngx_uint_t nargs);
static char *ngx_http_dstack_mesh_check_literal_target(ngx_conf_t *cf,
    ngx_http_dstack_mesh_target_conf_t *tcf);
static ngx_int_t ngx_http_dstack_mesh_target_app(ngx_conf_t *cf,
    ngx_http_dstack_mesh_target_conf_t *tcf);
static ngx_uint_t ngx_http_dstack_mesh_valid_host(ngx_str_t *host,
    const char *extra);
static ngx_int_t ngx_http_dstack_mesh_check_validity(ngx_conf_t *cf,
    X509 *x509, ngx_str_t *file);
static void ngx_http_dstack_mesh_identity_cleanup(void *data);
static void ngx_http_dstack_mesh_store_cleanup(void *data);


/* mesh_allow_apps any | app_id ...; */

char *
ngx_http_dstack_mesh_allow_apps(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_dstack_mesh_loc_conf_t *mlcf = conf;

    ngx_str_t                         *value, *app;
    ngx_uint_t                         i;
    ngx_http_dstack_mesh_main_conf_t  *mmcf;

    if (mlcf->allow_apps != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "any") == 0) {
        mlcf->allow_apps = NULL;
        return NGX_CONF_OK;
    }

    mlcf->allow_apps = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                        sizeof(ngx_str_t));
    if (mlcf->allow_apps == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strcmp(value[i].data, "any") == 0) {
            return "\"any\" cannot be combined with app ids";
        }

        app = ngx_array_push(mlcf->allow_apps);
        if (app == NULL) {
            return NGX_CONF_ERROR;
        }

        app->data = ngx_pnalloc(cf->pool, value[i].len + 1);
        if (app->data == NULL) {
            return NGX_CONF_ERROR;
        }

        /* checked and lowercased, as the caller's app_id is written */

        if (!app_id_parse((char *) value[i].data, value[i].len,
                          APP_ID_HEX_MAX, (char *) app->data))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid app id \"%V\" in \"%V\": expected "
                               "an even number of hex digits, at most %d",
                               &value[i], &cmd->name, APP_ID_HEX_MAX);
            return NGX_CONF_ERROR;
        }

        app->len = value[i].len;

        /* each allowed app has counters of its own */

        mmcf = ngx_http_conf_get_module_main_conf(cf,
                                                  ngx_http_dstack_mesh_module);

        if (ngx_http_dstack_mesh_metrics_app(cf, &mmcf->callers, app->data,
                                             app->len)
            == NGX_ERROR)
        {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/* mesh_target <app> [port=] [instance=] [tls=]; */

char *
ngx_http_dstack_mesh_target(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dstack_mesh_loc_conf_t *mlcf = conf;

    char                                *rv;
    ngx_str_t                           *value;
    ngx_uint_t                           i;
    ngx_http_conf_ctx_t                 *ctx, *pctx;
    ngx_http_core_loc_conf_t            *clcf;
    ngx_http_dstack_mesh_loc_conf_t     *tlcf;
    ngx_http_compile_complex_value_t     ccv;
    ngx_http_dstack_mesh_target_conf_t  *tcf;

    if (mlcf->target || mlcf->target_location) {
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

    rv = ngx_http_dstack_mesh_check_literal_target(cf, tcf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (ngx_http_dstack_mesh_target_app(cf, tcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (cf->cmd_type != NGX_HTTP_SRV_CONF) {
        mlcf->target = tcf;
        return ngx_http_dstack_mesh_proxy_to_target(cf);
    }

    /*
     * At server level, the proxy settings go to a location of their own,
     * as those of "if" and "limit_except" blocks do, so that the server's
     * locations inherit none of them; requests that match no location are
     * switched to it.
     */

    ctx = ngx_http_dstack_mesh_implicit_location(cf);
    if (ctx == NULL) {
        return NGX_CONF_ERROR;
    }

    tlcf = ctx->loc_conf[ngx_http_dstack_mesh_module.ctx_index];
    tlcf->target = tcf;

    pctx = cf->ctx;
    cf->ctx = ctx;
    rv = ngx_http_dstack_mesh_proxy_to_target(cf);
    cf->ctx = pctx;

    if (rv != NGX_CONF_OK) {
        return rv;
    }

    mlcf->target_location = ctx->loc_conf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_dstack_mesh_server_target_handler;

    return NGX_CONF_OK;
}


/*
 * The current level proxies to the mesh as if it said
 *
 *     proxy_pass https://dstack_mesh_gateway;
 *     proxy_http_version 1.1;
 *     proxy_set_header Host $mesh_target_host;
 *     proxy_set_header Connection $mesh_connection;
 *     proxy_set_header Upgrade $http_upgrade;
 *
 * with the target handler in front of the proxy's.
 */

static char *
ngx_http_dstack_mesh_proxy_to_target(ngx_conf_t *cf)
{
    ngx_http_core_loc_conf_t  *clcf;

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
    static ngx_str_t  proxy_host = ngx_string("proxy_host");

    if (ngx_http_dstack_mesh_upstream_add(cf) == NULL) {
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

    ngx_http_dstack_mesh_proxy_host_index =
                                  ngx_http_get_variable_index(cf, &proxy_host);
    if (ngx_http_dstack_mesh_proxy_host_index == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    ngx_http_dstack_mesh_proxy_handler = clcf->handler;
    clcf->handler = ngx_http_dstack_mesh_target_handler;

    return NGX_CONF_OK;
}


/*
 * A location without a name under the current one, configured by nothing
 * but what mesh_target sets and what it inherits, made as nginx makes the
 * locations of "if" blocks: merged with the others, never matched by URI.
 */

static ngx_http_conf_ctx_t *
ngx_http_dstack_mesh_implicit_location(ngx_conf_t *cf)
{
    void                      *mconf;
    ngx_uint_t                 i;
    ngx_http_module_t         *module;
    ngx_http_conf_ctx_t       *ctx, *pctx;
    ngx_http_core_loc_conf_t  *clcf, *pclcf;

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_http_conf_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    pctx = cf->ctx;
    ctx->main_conf = pctx->main_conf;
    ctx->srv_conf = pctx->srv_conf;

    ctx->loc_conf = ngx_pcalloc(cf->pool,
                                sizeof(void *) * ngx_http_max_module);
    if (ctx->loc_conf == NULL) {
        return NULL;
    }

    for (i = 0; cf->cycle->modules[i]; i++) {
        if (cf->cycle->modules[i]->type != NGX_HTTP_MODULE) {
            continue;
        }

        module = cf->cycle->modules[i]->ctx;

        if (module->create_loc_conf) {
            mconf = module->create_loc_conf(cf);
            if (mconf == NULL) {
                return NULL;
            }

            ctx->loc_conf[cf->cycle->modules[i]->ctx_index] = mconf;
        }
    }

    pclcf = pctx->loc_conf[ngx_http_core_module.ctx_index];

    clcf = ctx->loc_conf[ngx_http_core_module.ctx_index];
    clcf->loc_conf = ctx->loc_conf;
    clcf->name = pclcf->name;
    clcf->noname = 1;

    if (ngx_http_add_location(cf, &pclcf->locations, clcf) != NGX_OK) {
        return NULL;
    }

    return ctx;
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


/* a target without variables is checked by nginx -t, not per request */

static char *
ngx_http_dstack_mesh_check_literal_target(ngx_conf_t *cf,
    ngx_http_dstack_mesh_target_conf_t *tcf)
{
    ngx_str_t              empty, *port, *instance, *tls;
    mesh_target_t          t;
    mesh_target_status_t   status;

    ngx_str_null(&empty);

    if (tcf->app.lengths
        || (tcf->port && tcf->port->lengths)
        || (tcf->instance && tcf->instance->lengths)
        || (tcf->tls && tcf->tls->lengths))
    {
        return NGX_CONF_OK;
    }

    port = tcf->port ? &tcf->port->value : &empty;
    instance = tcf->instance ? &tcf->instance->value : &empty;
    tls = tcf->tls ? &tcf->tls->value : &empty;

    status = mesh_target_parse(&t, (char *) tcf->app.value.data,
                               tcf->app.value.len,
                               (char *) port->data, port->len,
                               (char *) instance->data, instance->len,
                               (char *) tls->data, tls->len);

    if (status != MESH_TARGET_OK && status != MESH_TARGET_NO_APP) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid mesh_target: %s",
                           mesh_target_strerror(status));
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* a target app without variables has counters of its own */

static ngx_int_t
ngx_http_dstack_mesh_target_app(ngx_conf_t *cf,
    ngx_http_dstack_mesh_target_conf_t *tcf)
{
    ngx_int_t                          index;
    ngx_http_dstack_mesh_main_conf_t  *mmcf;
    u_char                             app[MESH_TARGET_ID_MAX + 1];

    if (tcf->app.lengths
        || !app_id_parse((char *) tcf->app.value.data, tcf->app.value.len,
                         MESH_TARGET_ID_MAX, (char *) app))
    {
        /* looked up per request; an empty app is the agent's, not counted */
        return NGX_OK;
    }

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_dstack_mesh_module);

    index = ngx_http_dstack_mesh_metrics_app(cf, &mmcf->targets, app,
                                             tcf->app.value.len);
    if (index == NGX_ERROR) {
        return NGX_ERROR;
    }

    tcf->app_index = index;

    return NGX_OK;
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
    int                               i;
    BIO                              *bio;
    X509                             *x509;
    u_long                            n;
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
            n = ERR_peek_last_error();

            if (ERR_GET_LIB(n) == ERR_LIB_PEM
                && ERR_GET_REASON(n) == PEM_R_NO_START_LINE)
            {
                /* the end of the file is an error to OpenSSL, not to us */
                ERR_clear_error();
                break;
            }

            /* a damaged certificate: never a silently shorter chain */
            BIO_free(bio);
            goto failed;
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

    if (ngx_http_dstack_mesh_check_validity(cf, id->certificate, &cert_file)
        != NGX_OK)
    {
        return NULL;
    }

    for (i = 0; i < sk_X509_num(id->chain); i++) {
        if (ngx_http_dstack_mesh_check_validity(cf, sk_X509_value(id->chain, i),
                                                &cert_file)
            != NGX_OK)
        {
            return NULL;
        }
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

    /*
     * The balancer's set_session hook verifies the peer; nginx's own
     * check, as "proxy_ssl_verify on" here or at an enclosing level asks,
     * would want the name "dstack_mesh_gateway" in the certificate and
     * refuse every target.  Proxy settings are merged before this
     * module's, so nested locations have inherited the setting already.
     */

    ucf->ssl_verify = 0;

    if (!ucf->ssl_session_reuse) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mesh_target\" needs "
                           "\"proxy_ssl_session_reuse on\" (the default): "
                           "the peer's app_id is checked from its hook");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * Peers refuse an expired certificate, so every mesh call would fail:
 * refused at load.  One that expires within a week is worth a warning.
 */

static ngx_int_t
ngx_http_dstack_mesh_check_validity(ngx_conf_t *cf, X509 *x509,
    ngx_str_t *file)
{
    int                days, secs;
    time_t             soon;
    const ASN1_TIME   *not_after;

    not_after = X509_get0_notAfter(x509);

    if (X509_cmp_time(not_after, NULL) != 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "mesh certificate \"%s\" has expired or has no "
                           "valid end date", file->data);
        return NGX_ERROR;
    }

    soon = ngx_time() + 7 * 86400;

    if (X509_cmp_time(not_after, &soon) != 1
        && ASN1_TIME_diff(&days, &secs, NULL, not_after) == 1)
    {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "mesh certificate \"%s\" expires in %d days "
                           "%d hours", file->data, days, secs / 3600);
    }

    return NGX_OK;
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
