
/*
 * dstack mesh, inbound: the caller's app_id from its RA-TLS client
 * certificate, checked against mesh_allow_apps in the access phase.
 *
 * The certificate is examined once per TLS connection; the outcome hangs
 * off the SSL object, so every request of a keepalive connection and every
 * stream of an HTTP/2 connection reuses it.
 */


#include "ngx_http_dstack_mesh.h"


static ngx_http_dstack_mesh_caller_t *ngx_http_dstack_mesh_caller(
    ngx_connection_t *c);
static ngx_int_t ngx_http_dstack_mesh_access_handler(ngx_http_request_t *r);
static ngx_uint_t ngx_http_dstack_mesh_app_allowed(ngx_array_t *apps,
    ngx_str_t *app_id);
static ngx_int_t ngx_http_dstack_mesh_set_app_id_header(ngx_http_request_t *r,
    ngx_str_t *app_id);


/* SSL ex_data slot holding the connection's ngx_http_dstack_mesh_caller_t */
static int  ngx_http_dstack_mesh_caller_index = -1;

static ngx_http_dstack_mesh_caller_t  ngx_http_dstack_mesh_no_tls = {
    NGX_HTTP_DSTACK_MESH_CALLER_NO_TLS, "not a TLS connection",
    ngx_null_string, ""
};


ngx_int_t
ngx_http_dstack_mesh_inbound_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    if (ngx_http_dstack_mesh_ssl_index(cf, &ngx_http_dstack_mesh_caller_index)
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


static ngx_http_dstack_mesh_caller_t *
ngx_http_dstack_mesh_caller(ngx_connection_t *c)
{
    SSL                            *ssl;
    long                            rc;
    X509                           *cert;
    size_t                          len;
    ratls_status_t                  status;
    ngx_connection_t               *tc;
    ngx_http_dstack_mesh_caller_t  *caller;

    if (c->ssl == NULL) {
        return &ngx_http_dstack_mesh_no_tls;
    }

    ssl = c->ssl->connection;

    caller = SSL_get_ex_data(ssl, ngx_http_dstack_mesh_caller_index);
    if (caller != NULL) {
        return caller;
    }

    /* under HTTP/2 "c" is a stream; the TLS connection owns the result */

    tc = ngx_ssl_get_connection(ssl);

    caller = ngx_pcalloc(tc->pool, sizeof(ngx_http_dstack_mesh_caller_t));
    if (caller == NULL) {
        return NULL;
    }

    cert = SSL_get_peer_certificate(ssl);

    if (cert == NULL) {
        caller->status = NGX_HTTP_DSTACK_MESH_CALLER_NO_CERT;
        caller->reason = "no client certificate";

    } else {
        rc = SSL_get_verify_result(ssl);

        if (rc != X509_V_OK) {
            caller->status = NGX_HTTP_DSTACK_MESH_CALLER_NOT_VERIFIED;
            caller->reason = X509_verify_cert_error_string(rc);

        } else {
            status = ratls_app_id_hex(cert, (char *) caller->hex, &len);

            if (status == RATLS_OK) {
                caller->status = NGX_HTTP_DSTACK_MESH_CALLER_OK;
                caller->app_id.len = len;
                caller->app_id.data = caller->hex;

            } else {
                caller->status = NGX_HTTP_DSTACK_MESH_CALLER_NO_APP_ID;
                caller->reason = ratls_strerror(status);
            }
        }

        X509_free(cert);
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "mesh: parsed peer certificate: status:%d app_id:\"%V\" %s",
                   caller->status, &caller->app_id,
                   caller->reason ? caller->reason : "");

    if (SSL_set_ex_data(ssl, ngx_http_dstack_mesh_caller_index, caller) == 0) {
        ngx_ssl_error(NGX_LOG_ALERT, c->log, 0, "SSL_set_ex_data() failed");
        return NULL;
    }

    return caller;
}


static ngx_int_t
ngx_http_dstack_mesh_access_handler(ngx_http_request_t *r)
{
    ngx_http_dstack_mesh_caller_t    *caller;
    ngx_http_dstack_mesh_loc_conf_t  *mlcf;

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_mesh_module);

    if (!mlcf->auth) {
        return NGX_DECLINED;
    }

    caller = ngx_http_dstack_mesh_caller(r->connection);
    if (caller == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * The client's own copies go first, whatever the outcome: with
     * "satisfy any" another access module may still let the request pass.
     */

    if (ngx_http_dstack_mesh_set_app_id_header(r, &caller->app_id) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (caller->status != NGX_HTTP_DSTACK_MESH_CALLER_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mesh: caller not authenticated: %s", caller->reason);
        return NGX_HTTP_UNAUTHORIZED;
    }

    if (!ngx_http_dstack_mesh_app_allowed(mlcf->allow_apps, &caller->app_id)) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mesh: app \"%V\" is not allowed", &caller->app_id);
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
    ngx_http_dstack_mesh_caller_t  *caller;

    caller = ngx_http_dstack_mesh_caller(r->connection);
    if (caller == NULL) {
        return NGX_ERROR;
    }

    if (caller->app_id.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = caller->app_id.len;
    v->data = caller->app_id.data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}
