
/*
 * dstack mesh, inbound: the caller's app_id from its RA-TLS client
 * certificate, checked against mesh_allow_apps in the access phase.
 *
 * The certificate is examined once per TLS connection; the outcome hangs
 * off the SSL object, so every request of a keepalive connection and every
 * stream of an HTTP/2 connection reuses it.
 */


#include "ngx_http_dstack_mesh.h"


static ngx_http_dstack_mesh_peer_t *ngx_http_dstack_mesh_peer(
    ngx_connection_t *c);
static ngx_int_t ngx_http_dstack_mesh_access_handler(ngx_http_request_t *r);
static ngx_uint_t ngx_http_dstack_mesh_app_allowed(ngx_array_t *apps,
    ngx_str_t *app_id);
static ngx_int_t ngx_http_dstack_mesh_set_app_id_header(ngx_http_request_t *r,
    ngx_str_t *app_id);


/* SSL ex_data slot holding the connection's ngx_http_dstack_mesh_peer_t */
static int  ngx_http_dstack_mesh_peer_index = -1;

static ngx_http_dstack_mesh_peer_t  ngx_http_dstack_mesh_no_tls = {
    NGX_HTTP_DSTACK_MESH_PEER_NO_TLS, "not a TLS connection",
    ngx_null_string, ""
};


ngx_int_t
ngx_http_dstack_mesh_inbound_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    if (ngx_http_dstack_mesh_ssl_index(cf, &ngx_http_dstack_mesh_peer_index)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_dstack_mesh_access_handler;

    return NGX_OK;
}


char *
ngx_http_dstack_mesh_allow_apps(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_dstack_mesh_loc_conf_t *mlcf = conf;

    ngx_str_t   *value, *app;
    ngx_uint_t   i;

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

        if (!ratls_app_id_text_valid((char *) value[i].data, value[i].len)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid app id \"%V\" in \"%V\": expected "
                               "an even number of hex digits, at most %d",
                               &value[i], &cmd->name, RATLS_APP_ID_HEX_MAX);
            return NGX_CONF_ERROR;
        }

        app = ngx_array_push(mlcf->allow_apps);
        if (app == NULL) {
            return NGX_CONF_ERROR;
        }

        app->len = value[i].len;
        app->data = ngx_pnalloc(cf->pool, app->len);
        if (app->data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_strlow(app->data, value[i].data, app->len);
    }

    return NGX_CONF_OK;
}


static ngx_http_dstack_mesh_peer_t *
ngx_http_dstack_mesh_peer(ngx_connection_t *c)
{
    SSL                          *ssl;
    long                          rc;
    X509                         *cert;
    size_t                        len;
    ratls_status_t                status;
    ngx_connection_t             *tc;
    ngx_http_dstack_mesh_peer_t  *peer;

    if (c->ssl == NULL) {
        return &ngx_http_dstack_mesh_no_tls;
    }

    ssl = c->ssl->connection;

    peer = SSL_get_ex_data(ssl, ngx_http_dstack_mesh_peer_index);
    if (peer != NULL) {
        return peer;
    }

    /* under HTTP/2 "c" is a stream; the TLS connection owns the result */

    tc = ngx_ssl_get_connection(ssl);

    peer = ngx_pcalloc(tc->pool, sizeof(ngx_http_dstack_mesh_peer_t));
    if (peer == NULL) {
        return NULL;
    }

    cert = SSL_get_peer_certificate(ssl);

    if (cert == NULL) {
        peer->status = NGX_HTTP_DSTACK_MESH_PEER_NO_CERT;
        peer->reason = "no client certificate";

    } else {
        rc = SSL_get_verify_result(ssl);

        if (rc != X509_V_OK) {
            peer->status = NGX_HTTP_DSTACK_MESH_PEER_NOT_VERIFIED;
            peer->reason = X509_verify_cert_error_string(rc);

        } else {
            status = ratls_app_id_hex(cert, (char *) peer->hex, &len);

            if (status == RATLS_OK) {
                peer->status = NGX_HTTP_DSTACK_MESH_PEER_OK;
                peer->app_id.len = len;
                peer->app_id.data = peer->hex;

            } else {
                peer->status = NGX_HTTP_DSTACK_MESH_PEER_NO_APP_ID;
                peer->reason = ratls_strerror(status);
            }
        }

        X509_free(cert);
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "mesh: parsed peer certificate: status:%d app_id:\"%V\" %s",
                   peer->status, &peer->app_id,
                   peer->reason ? peer->reason : "");

    if (SSL_set_ex_data(ssl, ngx_http_dstack_mesh_peer_index, peer) == 0) {
        ngx_ssl_error(NGX_LOG_ALERT, c->log, 0, "SSL_set_ex_data() failed");
        return NULL;
    }

    return peer;
}


static ngx_int_t
ngx_http_dstack_mesh_access_handler(ngx_http_request_t *r)
{
    ngx_http_dstack_mesh_peer_t      *peer;
    ngx_http_dstack_mesh_loc_conf_t  *mlcf;

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_mesh_module);

    if (!mlcf->auth) {
        return NGX_DECLINED;
    }

    peer = ngx_http_dstack_mesh_peer(r->connection);
    if (peer == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * The client's own copies go first, whatever the outcome: with
     * "satisfy any" another access module may still let the request pass.
     */

    if (ngx_http_dstack_mesh_set_app_id_header(r, &peer->app_id) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (peer->status != NGX_HTTP_DSTACK_MESH_PEER_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mesh: caller not authenticated: %s", peer->reason);
        return NGX_HTTP_UNAUTHORIZED;
    }

    if (!ngx_http_dstack_mesh_app_allowed(mlcf->allow_apps, &peer->app_id)) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mesh: app \"%V\" is not allowed", &peer->app_id);
        return NGX_HTTP_FORBIDDEN;
    }

    return NGX_OK;
}


static ngx_uint_t
ngx_http_dstack_mesh_app_allowed(ngx_array_t *apps, ngx_str_t *app_id)
{
    ngx_str_t   *app;
    ngx_uint_t   i;

    if (apps == NULL) {
        return 1;
    }

    app = apps->elts;

    for (i = 0; i < apps->nelts; i++) {
        if (app[i].len == app_id->len
            && ngx_memcmp(app[i].data, app_id->data, app_id->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/*
 * The client's own x-dstack-app-id headers go, in every spelling; the
 * verified value, when there is one, takes their place.
 */

static ngx_int_t
ngx_http_dstack_mesh_set_app_id_header(ngx_http_request_t *r,
    ngx_str_t *app_id)
{
    static ngx_str_t  key = ngx_string("X-Dstack-App-Id");
    static ngx_str_t  names[] = {
        ngx_string(NGX_HTTP_DSTACK_MESH_APP_ID_HEADER),
        ngx_null_string
    };

    if (ngx_http_dstack_mesh_remove_headers(r, names) != NGX_OK) {
        return NGX_ERROR;
    }

    if (app_id->len == 0) {
        return NGX_OK;
    }

    return ngx_http_dstack_mesh_add_header(r, &key, app_id);
}


ngx_int_t
ngx_http_dstack_mesh_app_id_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_dstack_mesh_peer_t  *peer;

    peer = ngx_http_dstack_mesh_peer(r->connection);
    if (peer == NULL) {
        return NGX_ERROR;
    }

    if (peer->app_id.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = peer->app_id.len;
    v->data = peer->app_id.data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}
