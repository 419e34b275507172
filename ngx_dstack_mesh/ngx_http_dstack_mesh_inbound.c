
/*
 * dstack mesh, inbound: the caller's app_id from its RA-TLS client
 * certificate, checked against mesh_allow_apps.
 *
 * The certificate is examined once per TLS connection; the outcome hangs
 * off the SSL object, so every request of a keepalive connection and every
 * stream of an HTTP/2 connection reuses it.
 *
 * Two handlers share the verdict.  The pre-access one runs for every
 * request reaching a mesh_auth location, subrequests included: it replaces
 * the client's x-dstack-app-id with the verified and allowed app id, or
 * with nothing, and refuses a subrequest, for which nginx skips the access
 * phase.  The access one refuses a main request, where "satisfy" applies.
 */


#include "ngx_http_dstack_mesh.h"


static ngx_http_dstack_mesh_caller_t *ngx_http_dstack_mesh_caller(
    ngx_connection_t *c);
static ngx_http_dstack_mesh_caller_t *ngx_http_dstack_mesh_request_caller(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_dstack_mesh_verdict(ngx_http_request_t *r,
    ngx_http_dstack_mesh_loc_conf_t *mlcf,
    ngx_http_dstack_mesh_caller_t **caller);
static ngx_int_t ngx_http_dstack_mesh_refuse(ngx_http_request_t *r,
    ngx_http_dstack_mesh_caller_t *caller, ngx_int_t rc);
static ngx_int_t ngx_http_dstack_mesh_preaccess_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_dstack_mesh_access_handler(ngx_http_request_t *r);
static ngx_uint_t ngx_http_dstack_mesh_app_allowed(ngx_array_t *apps,
    ngx_str_t *app_id);
static ngx_int_t ngx_http_dstack_mesh_set_app_id_header(ngx_http_request_t *r,
    ngx_str_t *app_id);


/* SSL ex_data slot holding the connection's ngx_http_dstack_mesh_caller_t */
static int  ngx_http_dstack_mesh_caller_index = -1;

/* $http_x_dstack_app_id, whose cached value goes when the header changes */
static ngx_int_t  ngx_http_dstack_mesh_header_variable_index;

static ngx_http_dstack_mesh_caller_t  ngx_http_dstack_mesh_no_tls = {
    NGX_HTTP_DSTACK_MESH_CALLER_NO_TLS, "not a TLS connection",
    ngx_null_string, "", NULL
};

static ngx_http_dstack_mesh_caller_t  ngx_http_dstack_mesh_misdirected = {
    NGX_HTTP_DSTACK_MESH_CALLER_MISDIRECTED,
    "the certificate was verified by another server "
    "(the TLS server name and Host pick different servers)",
    ngx_null_string, "", NULL
};


ngx_int_t
ngx_http_dstack_mesh_inbound_init(ngx_conf_t *cf)
{
    ngx_int_t                   index;
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    static ngx_str_t  header_variable = ngx_string("http_x_dstack_app_id");

    if (ngx_http_dstack_mesh_ssl_index(cf, &ngx_http_dstack_mesh_caller_index)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    index = ngx_http_get_variable_index(cf, &header_variable);
    if (index == NGX_ERROR) {
        return NGX_ERROR;
    }

    ngx_http_dstack_mesh_header_variable_index = index;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    /*
     * Handlers of a phase run in the reverse order of their registration;
     * registered after the built-in modules, ours runs before limit_req and
     * limit_conn, which may read the header.
     */

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_dstack_mesh_preaccess_handler;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_dstack_mesh_access_handler;

    return NGX_OK;
}


/*
 * "mesh_auth on" in a server that does not ask for client certificates
 * could only see certificates verified by another server's CA.
 */

char *
ngx_http_dstack_mesh_check_auth(ngx_conf_t *cf)
{
    ngx_http_ssl_srv_conf_t   *sscf;
    ngx_http_core_srv_conf_t  *cscf;

    sscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_ssl_module);

    if (sscf->verify) {
        return NGX_CONF_OK;
    }

    cscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_core_module);

    ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                  "\"mesh_auth\" needs \"ssl_verify_client\" in its server "
                  "(the server in %s:%ui)", cscf->file_name, cscf->line);

    return NGX_CONF_ERROR;
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


/*
 * The caller as this request's server sees it: the handshake verified the
 * certificate with the SSL context of the server the client named in SNI
 * (of the default server without SNI), while the Host header picks the
 * request's server, which may trust another CA.
 */

static ngx_http_dstack_mesh_caller_t *
ngx_http_dstack_mesh_request_caller(ngx_http_request_t *r)
{
    ngx_http_ssl_srv_conf_t        *sscf;
    ngx_http_dstack_mesh_caller_t  *caller;

    caller = ngx_http_dstack_mesh_caller(r->connection);

    if (caller == NULL || caller->status != NGX_HTTP_DSTACK_MESH_CALLER_OK) {
        return caller;
    }

    sscf = ngx_http_get_module_srv_conf(r, ngx_http_ssl_module);

    if (sscf->ssl.ctx != SSL_get_SSL_CTX(r->connection->ssl->connection)) {
        return &ngx_http_dstack_mesh_misdirected;
    }

    return caller;
}


/*
 * NGX_OK for a verified and allowed caller, else the status refusing it;
 * NGX_HTTP_INTERNAL_SERVER_ERROR without a caller.
 */

static ngx_int_t
ngx_http_dstack_mesh_verdict(ngx_http_request_t *r,
    ngx_http_dstack_mesh_loc_conf_t *mlcf,
    ngx_http_dstack_mesh_caller_t **caller)
{
    *caller = ngx_http_dstack_mesh_request_caller(r);

    if (*caller == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    switch ((*caller)->status) {

    case NGX_HTTP_DSTACK_MESH_CALLER_OK:
        return ngx_http_dstack_mesh_app_allowed(mlcf->allow_apps,
                                                &(*caller)->app_id)
               ? NGX_OK : NGX_HTTP_FORBIDDEN;

    case NGX_HTTP_DSTACK_MESH_CALLER_MISDIRECTED:
        return NGX_HTTP_MISDIRECTED_REQUEST;

    default:
        return NGX_HTTP_UNAUTHORIZED;
    }
}


/* one line per refusal, at "info" as the client caused it */

static ngx_int_t
ngx_http_dstack_mesh_refuse(ngx_http_request_t *r,
    ngx_http_dstack_mesh_caller_t *caller, ngx_int_t rc)
{
    if (rc == NGX_HTTP_FORBIDDEN) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mesh: app \"%V\" is not allowed", &caller->app_id);

    } else if (rc != NGX_HTTP_INTERNAL_SERVER_ERROR) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mesh: caller not authenticated: %s", caller->reason);
    }

    return rc;
}


static ngx_int_t
ngx_http_dstack_mesh_preaccess_handler(ngx_http_request_t *r)
{
    ngx_int_t                         rc;
    ngx_http_dstack_mesh_caller_t    *caller;
    ngx_http_dstack_mesh_loc_conf_t  *mlcf;

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_mesh_module);

    if (!mlcf->auth) {
        return NGX_DECLINED;
    }

    rc = ngx_http_dstack_mesh_verdict(r, mlcf, &caller);

    if (rc == NGX_HTTP_INTERNAL_SERVER_ERROR) {
        return rc;
    }

    /*
     * Whatever the outcome: "satisfy any" or an error_page may still let
     * the request reach a backend.
     */

    if (ngx_http_dstack_mesh_set_app_id_header(r,
                                      rc == NGX_OK ? &caller->app_id : NULL)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (r != r->main && rc != NGX_OK) {
        return ngx_http_dstack_mesh_refuse(r, caller, rc);
    }

    return NGX_DECLINED;
}


/* main requests only: nginx skips the access phase in subrequests */

static ngx_int_t
ngx_http_dstack_mesh_access_handler(ngx_http_request_t *r)
{
    ngx_int_t                         rc;
    ngx_http_dstack_mesh_caller_t    *caller;
    ngx_http_dstack_mesh_loc_conf_t  *mlcf;

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_mesh_module);

    if (!mlcf->auth) {
        return NGX_DECLINED;
    }

    rc = ngx_http_dstack_mesh_verdict(r, mlcf, &caller);

    ngx_http_dstack_mesh_count_inbound(r, caller, rc);

    if (rc == NGX_OK) {
        return NGX_OK;
    }

    return ngx_http_dstack_mesh_refuse(r, caller, rc);
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
 * verified and allowed app id, when there is one, takes their place.
 * nginx caches $http_x_dstack_app_id once read (by "set", say): the cached
 * value goes, so later reads see the new header.
 */

static ngx_int_t
ngx_http_dstack_mesh_set_app_id_header(ngx_http_request_t *r,
    ngx_str_t *app_id)
{
    ngx_int_t                   rc;
    ngx_http_variable_value_t  *v;

    static ngx_str_t  key = ngx_string("X-Dstack-App-Id");
    static ngx_str_t  names[] = {
        ngx_string(NGX_HTTP_DSTACK_MESH_APP_ID_HEADER),
        ngx_null_string
    };

    if (app_id == NULL) {
        rc = ngx_http_dstack_mesh_remove_headers(r, names);

    } else {
        rc = ngx_http_dstack_mesh_replace_header(r, names, &key, app_id);
    }

    v = &r->variables[ngx_http_dstack_mesh_header_variable_index];
    v->valid = 0;
    v->not_found = 0;

    return rc;
}


ngx_int_t
ngx_http_dstack_mesh_app_id_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_dstack_mesh_caller_t  *caller;

    caller = ngx_http_dstack_mesh_request_caller(r);
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
