
/*
 * dstack mesh, the "dstack_mesh_gateway" upstream: connections to other apps.
 *
 * Every outbound request says where it goes (the gateway's address and the
 * host name it asks the gateway for in SNI) and whom it must reach (the
 * app_id).  Together they are the key, ngx_http_dstack_mesh_key_t, under
 * which this balancer keeps idle connections and TLS sessions, so neither
 * ever serves another target.  The stock keepalive module matches cached
 * connections by socket address alone, which all targets share; it is kept
 * out of this upstream (ngx_http_dstack_mesh_upstream_init).
 *
 * Pinning.  The set_session hook runs on every new TLS connection after
 * SSL_new() and before the handshake.  It gives the connection its own
 * verification: the mesh_trusted_certificate store, SSL_VERIFY_PEER and a
 * callback that compares the leaf's app_id with the expected one.  A broken
 * chain or another app fails the handshake, so not one request byte is
 * written to the wrong peer.  A resumed session skips verification; a
 * session is only ever offered to connections with the key it was made
 * under, after its peer passed that verification.
 */


#include "ngx_http_dstack_mesh.h"


#define NGX_HTTP_DSTACK_MESH_UPSTREAM  "dstack_mesh_gateway"


typedef struct {
    ngx_queue_t                         queue;
    ngx_http_dstack_mesh_main_conf_t   *mmcf;
    ngx_connection_t                   *connection;
    ngx_http_dstack_mesh_key_t          key;
} ngx_http_dstack_mesh_idle_t;


typedef struct {
    ngx_queue_t                         queue;
    ngx_ssl_session_t                  *session;
    ngx_http_dstack_mesh_key_t          key;
} ngx_http_dstack_mesh_session_t;


typedef struct {
    ngx_http_request_t                 *request;
    ngx_http_dstack_mesh_ctx_t         *ctx;
    ngx_http_dstack_mesh_main_conf_t   *mmcf;
} ngx_http_dstack_mesh_peer_data_t;


static ngx_int_t ngx_http_dstack_mesh_init_upstream(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us);
static ngx_int_t ngx_http_dstack_mesh_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us);
static ngx_int_t ngx_http_dstack_mesh_get_peer(ngx_peer_connection_t *pc,
    void *data);
static void ngx_http_dstack_mesh_free_peer(ngx_peer_connection_t *pc,
    void *data, ngx_uint_t state);
static ngx_int_t ngx_http_dstack_mesh_set_session(ngx_peer_connection_t *pc,
    void *data);
static void ngx_http_dstack_mesh_save_session(ngx_peer_connection_t *pc,
    void *data);
static int ngx_http_dstack_mesh_verify_pin(int ok, X509_STORE_CTX *store);
static int ngx_http_dstack_mesh_verify_gateway(int ok, X509_STORE_CTX *store);
static ngx_http_dstack_mesh_session_t *ngx_http_dstack_mesh_session_find(
    ngx_http_dstack_mesh_main_conf_t *mmcf, ngx_http_dstack_mesh_key_t *key);
static ngx_http_dstack_mesh_key_t *ngx_http_dstack_mesh_verified_key(
    X509_STORE_CTX *store, ngx_connection_t **c);
static ngx_uint_t ngx_http_dstack_mesh_key_equal(
    ngx_http_dstack_mesh_key_t *a, ngx_http_dstack_mesh_key_t *b);
static void ngx_http_dstack_mesh_idle_close_handler(ngx_event_t *ev);
static void ngx_http_dstack_mesh_idle_dummy_handler(ngx_event_t *ev);
static void ngx_http_dstack_mesh_close(ngx_connection_t *c);


/* SSL ex_data slot: the key a connection must match, for the callbacks */
static int  ngx_http_dstack_mesh_key_index = -1;

static ngx_str_t  ngx_http_dstack_mesh_upstream_name =
    ngx_string(NGX_HTTP_DSTACK_MESH_UPSTREAM);


ngx_http_upstream_srv_conf_t *
ngx_http_dstack_mesh_upstream_add(ngx_conf_t *cf)
{
    ngx_url_t                      u;
    ngx_http_upstream_srv_conf_t  *uscf;

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = ngx_http_dstack_mesh_upstream_name;
    u.no_resolve = 1;

    uscf = ngx_http_upstream_add(cf, &u, 0);
    if (uscf == NULL) {
        return NULL;
    }

    if (uscf->flags & NGX_HTTP_UPSTREAM_CREATE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the upstream name \"%V\" is reserved by "
                           "mesh_target", &u.host);
        return NULL;
    }

    uscf->peer.init_upstream = ngx_http_dstack_mesh_init_upstream;

    return uscf;
}


/*
 * After every module's upstream initialisation: whatever wrapped this
 * upstream's peer init (a keepalive that matches by address alone), the
 * balancer here is the one that runs.
 */

ngx_int_t
ngx_http_dstack_mesh_upstream_init(ngx_conf_t *cf)
{
    ngx_uint_t                         i;
    ngx_http_dstack_mesh_idle_t       *idle;
    ngx_http_upstream_srv_conf_t     **uscfp;
    ngx_http_dstack_mesh_session_t    *sessions;
    ngx_http_upstream_main_conf_t     *umcf;
    ngx_http_dstack_mesh_main_conf_t  *mmcf;

    if (ngx_http_dstack_mesh_ssl_index(cf, &ngx_http_dstack_mesh_key_index)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    umcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_upstream_module);
    uscfp = umcf->upstreams.elts;

    for (i = 0; i < umcf->upstreams.nelts; i++) {
        if (uscfp[i]->peer.init_upstream
            == ngx_http_dstack_mesh_init_upstream)
        {
            uscfp[i]->peer.init = ngx_http_dstack_mesh_init_peer;
        }
    }

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_dstack_mesh_module);

    ngx_queue_init(&mmcf->cache);
    ngx_queue_init(&mmcf->free);
    ngx_queue_init(&mmcf->sessions);
    ngx_queue_init(&mmcf->sessions_free);

    if (mmcf->cache_size == 0) {
        return NGX_OK;
    }

    idle = ngx_pcalloc(cf->pool,
                       sizeof(ngx_http_dstack_mesh_idle_t) * mmcf->cache_size);
    sessions = ngx_pcalloc(cf->pool, sizeof(ngx_http_dstack_mesh_session_t)
                                     * mmcf->cache_size);
    if (idle == NULL || sessions == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < mmcf->cache_size; i++) {
        idle[i].mmcf = mmcf;
        ngx_queue_insert_head(&mmcf->free, &idle[i].queue);
        ngx_queue_insert_head(&mmcf->sessions_free, &sessions[i].queue);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_dstack_mesh_init_upstream(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us)
{
    us->peer.init = ngx_http_dstack_mesh_init_peer;

    return NGX_OK;
}


static ngx_int_t
ngx_http_dstack_mesh_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us)
{
    ngx_http_upstream_t               *u;
    ngx_http_dstack_mesh_ctx_t        *ctx;
    ngx_http_dstack_mesh_peer_data_t  *pd;

    u = r->upstream;
    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_mesh_module);

    if (ctx == NULL || ctx->key.socklen == 0) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "mesh: \"" NGX_HTTP_DSTACK_MESH_UPSTREAM "\" is only "
                      "for mesh_target locations");
        return NGX_ERROR;
    }

    if (ctx->key.route == NGX_HTTP_DSTACK_MESH_AGENT) {
        /* the guest agent speaks plain HTTP on its unix socket */
        u->ssl = 0;

    } else if (!u->conf->ssl_session_reuse) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "mesh: proxy_ssl_session_reuse is off, refusing to "
                      "connect without pinning the peer's app_id");
        return NGX_ERROR;
    }

    pd = ngx_palloc(r->pool, sizeof(ngx_http_dstack_mesh_peer_data_t));
    if (pd == NULL) {
        return NGX_ERROR;
    }

    pd->request = r;
    pd->ctx = ctx;
    pd->mmcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_mesh_module);

    u->peer.data = pd;
    u->peer.get = ngx_http_dstack_mesh_get_peer;
    u->peer.free = ngx_http_dstack_mesh_free_peer;
    u->peer.set_session = ngx_http_dstack_mesh_set_session;
    u->peer.save_session = ngx_http_dstack_mesh_save_session;
    u->peer.tries = 1;

    return NGX_OK;
}


static ngx_int_t
ngx_http_dstack_mesh_get_peer(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_dstack_mesh_peer_data_t *pd = data;

    ngx_queue_t                  *q;
    ngx_connection_t             *c;
    ngx_http_dstack_mesh_key_t   *key;
    ngx_http_dstack_mesh_idle_t  *item;

    key = &pd->ctx->key;

    pc->sockaddr = &key->sockaddr.sockaddr;
    pc->socklen = key->socklen;
    pc->name = &pd->ctx->name;

    for (q = ngx_queue_head(&pd->mmcf->cache);
         q != ngx_queue_sentinel(&pd->mmcf->cache);
         q = ngx_queue_next(q))
    {
        item = ngx_queue_data(q, ngx_http_dstack_mesh_idle_t, queue);

        if (!ngx_http_dstack_mesh_key_equal(&item->key, key)) {
            continue;
        }

        ngx_queue_remove(q);
        ngx_queue_insert_head(&pd->mmcf->free, q);

        c = item->connection;

        c->idle = 0;
        c->sent = 0;
        c->data = NULL;
        c->log = pc->log;
        c->read->log = pc->log;
        c->write->log = pc->log;
        c->pool->log = pc->log;

        if (c->read->timer_set) {
            ngx_del_timer(c->read);
        }

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                       "mesh: reusing connection %p to \"%s\"",
                       c, key->host);

        pc->connection = c;
        pc->cached = 1;

        return NGX_DONE;
    }

    return NGX_OK;
}


static void
ngx_http_dstack_mesh_free_peer(ngx_peer_connection_t *pc, void *data,
    ngx_uint_t state)
{
    ngx_http_dstack_mesh_peer_data_t *pd = data;

    ngx_queue_t                       *q;
    ngx_connection_t                  *c;
    ngx_http_upstream_t               *u;
    ngx_http_dstack_mesh_idle_t       *item;
    ngx_http_dstack_mesh_main_conf_t  *mmcf;

    if (pc->tries) {
        pc->tries--;
    }

    c = pc->connection;
    u = pd->request->upstream;
    mmcf = pd->mmcf;

    if (state & NGX_PEER_FAILED
        || c == NULL
        || c->read->eof
        || c->read->error
        || c->read->timedout
        || c->write->error
        || c->write->timedout
        || !u->keepalive
        || !u->request_body_sent
        || ngx_terminate
        || ngx_exiting
        || mmcf->cache_size == 0
        || ngx_handle_read_event(c->read, 0) != NGX_OK)
    {
        return;
    }

    if (ngx_queue_empty(&mmcf->free)) {
        q = ngx_queue_last(&mmcf->cache);
        ngx_queue_remove(q);

        item = ngx_queue_data(q, ngx_http_dstack_mesh_idle_t, queue);
        ngx_http_dstack_mesh_close(item->connection);

    } else {
        q = ngx_queue_head(&mmcf->free);
        ngx_queue_remove(q);

        item = ngx_queue_data(q, ngx_http_dstack_mesh_idle_t, queue);
    }

    ngx_queue_insert_head(&mmcf->cache, q);

    item->connection = c;
    item->key = pd->ctx->key;

    pc->connection = NULL;

    c->read->delayed = 0;
    ngx_add_timer(c->read, mmcf->cache_timeout);

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    c->write->handler = ngx_http_dstack_mesh_idle_dummy_handler;
    c->read->handler = ngx_http_dstack_mesh_idle_close_handler;

    c->data = item;
    c->idle = 1;
    c->log = ngx_cycle->log;
    c->read->log = ngx_cycle->log;
    c->write->log = ngx_cycle->log;
    c->pool->log = ngx_cycle->log;

    if (c->read->ready) {
        ngx_http_dstack_mesh_idle_close_handler(c->read);
    }
}


/* a cached connection that the peer closes, or that times out, goes */

static void
ngx_http_dstack_mesh_idle_close_handler(ngx_event_t *ev)
{
    int                           n;
    char                          buf[1];
    ngx_connection_t             *c;
    ngx_http_dstack_mesh_idle_t  *item;

    c = ev->data;

    if (c->close || c->read->timedout) {
        goto close;
    }

    n = recv(c->fd, buf, 1, MSG_PEEK);

    if (n == -1 && ngx_socket_errno == NGX_EAGAIN) {
        ev->ready = 0;

        if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
            goto close;
        }

        return;
    }

close:

    item = c->data;

    ngx_http_dstack_mesh_close(c);

    ngx_queue_remove(&item->queue);
    ngx_queue_insert_head(&item->mmcf->free, &item->queue);
}


static void
ngx_http_dstack_mesh_idle_dummy_handler(ngx_event_t *ev)
{
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                   "mesh: idle connection dummy handler");
}


static void
ngx_http_dstack_mesh_close(ngx_connection_t *c)
{
    if (c->ssl) {
        c->ssl->no_wait_shutdown = 1;
        c->ssl->no_send_shutdown = 1;

        if (ngx_ssl_shutdown(c) == NGX_AGAIN) {
            c->ssl->handler = ngx_http_dstack_mesh_close;
            return;
        }
    }

    ngx_destroy_pool(c->pool);
    ngx_close_connection(c);
}


static ngx_int_t
ngx_http_dstack_mesh_set_session(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_dstack_mesh_peer_data_t *pd = data;

    SSL                              *ssl;
    X509_STORE                       *store;
    ngx_connection_t                 *c;
    ngx_http_dstack_mesh_key_t       *key;
    ngx_http_dstack_mesh_session_t   *s;
    ngx_http_dstack_mesh_identity_t  *id;

    c = pc->connection;
    ssl = c->ssl->connection;
    key = &pd->ctx->key;
    id = pd->ctx->conf->identity;

    if (SSL_set_ex_data(ssl, ngx_http_dstack_mesh_key_index, key) == 0) {
        goto failed;
    }

    if (key->route == NGX_HTTP_DSTACK_MESH_PINNED) {
        store = pd->ctx->conf->trusted;
        SSL_set_verify(ssl, SSL_VERIFY_PEER, ngx_http_dstack_mesh_verify_pin);

    } else {
        /* the gateway's own certificate, for its name: no app to pin */
        store = pd->ctx->conf->gateway_trusted;
        SSL_set_verify(ssl, SSL_VERIFY_PEER,
                       ngx_http_dstack_mesh_verify_gateway);

        if (SSL_set1_host(ssl, (char *) key->host) != 1) {
            goto failed;
        }
    }

    if (SSL_set1_verify_cert_store(ssl, store) != 1
        || SSL_use_cert_and_key(ssl, id->certificate, id->key, id->chain, 1)
           != 1)
    {
        goto failed;
    }

    /* SNI names a host, never an address literal (RFC 6066) */

    if (ngx_inet_addr(key->host, key->host_len) == INADDR_NONE
        && SSL_set_tlsext_host_name(ssl, (char *) key->host) != 1)
    {
        goto failed;
    }

    s = ngx_http_dstack_mesh_session_find(pd->mmcf, key);
    if (s == NULL) {
        return NGX_OK;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "mesh: offering TLS session for \"%s\"", key->host);

    return ngx_ssl_set_session(c, s->session);

failed:

    ngx_ssl_error(NGX_LOG_ERR, pc->log, 0,
                  "mesh: cannot set up TLS to \"%s\"", key->host);
    return NGX_ERROR;
}


static void
ngx_http_dstack_mesh_save_session(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_dstack_mesh_peer_data_t *pd = data;

    ngx_queue_t                     *q;
    ngx_ssl_session_t               *session;
    ngx_http_dstack_mesh_session_t  *s;

    session = ngx_ssl_get_session(pc->connection);
    if (session == NULL) {
        return;
    }

    s = ngx_http_dstack_mesh_session_find(pd->mmcf, &pd->ctx->key);
    if (s) {
        q = &s->queue;
        goto found;
    }

    if (ngx_queue_empty(&pd->mmcf->sessions_free)) {
        if (ngx_queue_empty(&pd->mmcf->sessions)) {
            /* mesh_keepalive 0: no room for sessions either */
            ngx_ssl_free_session(session);
            return;
        }

        q = ngx_queue_last(&pd->mmcf->sessions);

    } else {
        q = ngx_queue_head(&pd->mmcf->sessions_free);
    }

    s = ngx_queue_data(q, ngx_http_dstack_mesh_session_t, queue);
    s->key = pd->ctx->key;

found:

    if (s->session) {
        ngx_ssl_free_session(s->session);
    }

    s->session = session;

    ngx_queue_remove(q);
    ngx_queue_insert_head(&pd->mmcf->sessions, q);
}


/*
 * Called by OpenSSL for each certificate of the peer's chain, leaf last.
 * The one log line of a refusal says whom we expected and whom we got.
 */

static int
ngx_http_dstack_mesh_verify_pin(int ok, X509_STORE_CTX *store)
{
    size_t                       len;
    const char                  *got, *why;
    ratls_status_t               status;
    ngx_connection_t            *c;
    ngx_http_dstack_mesh_key_t  *key;
    u_char                       hex[APP_ID_HEX_MAX + 1];

    if (ok && X509_STORE_CTX_get_error_depth(store) != 0) {
        return 1;
    }

    key = ngx_http_dstack_mesh_verified_key(store, &c);

    status = ratls_app_id_hex(X509_STORE_CTX_get0_cert(store), (char *) hex,
                              &len);
    got = (status == RATLS_OK) ? (char *) hex : "none";

    if (!ok) {
        why = X509_verify_cert_error_string(X509_STORE_CTX_get_error(store));

    } else if (status != RATLS_OK) {
        why = ratls_strerror(status);

    } else if (len != ngx_strlen(key->app_id)
               || ngx_memcmp(hex, key->app_id, len) != 0)
    {
        why = "another app";

    } else {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "mesh: \"%s\" is app %s", key->host, hex);
        return 1;
    }

    ngx_log_error(NGX_LOG_ERR, c->log, 0,
                  "mesh: peer \"%s\" refused: expected %s, got %s (%s)",
                  key->host, key->app_id, got, why);

    if (ok) {
        X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
    }

    return 0;
}


static int
ngx_http_dstack_mesh_verify_gateway(int ok, X509_STORE_CTX *store)
{
    ngx_connection_t            *c;
    ngx_http_dstack_mesh_key_t  *key;

    if (ok) {
        return 1;
    }

    key = ngx_http_dstack_mesh_verified_key(store, &c);

    ngx_log_error(NGX_LOG_ERR, c->log, 0,
                  "mesh: gateway certificate for \"%s\" refused: %s",
                  key->host,
                  X509_verify_cert_error_string(
                      X509_STORE_CTX_get_error(store)));

    return 0;
}


static ngx_http_dstack_mesh_session_t *
ngx_http_dstack_mesh_session_find(ngx_http_dstack_mesh_main_conf_t *mmcf,
    ngx_http_dstack_mesh_key_t *key)
{
    ngx_queue_t                     *q;
    ngx_http_dstack_mesh_session_t  *s;

    for (q = ngx_queue_head(&mmcf->sessions);
         q != ngx_queue_sentinel(&mmcf->sessions);
         q = ngx_queue_next(q))
    {
        s = ngx_queue_data(q, ngx_http_dstack_mesh_session_t, queue);

        if (ngx_http_dstack_mesh_key_equal(&s->key, key)) {
            return s;
        }
    }

    return NULL;
}


/* the connection being verified and the key set on it in set_session */

static ngx_http_dstack_mesh_key_t *
ngx_http_dstack_mesh_verified_key(X509_STORE_CTX *store, ngx_connection_t **c)
{
    SSL  *ssl;

    ssl = X509_STORE_CTX_get_ex_data(store,
                                     SSL_get_ex_data_X509_STORE_CTX_idx());
    *c = ngx_ssl_get_connection(ssl);

    return SSL_get_ex_data(ssl, ngx_http_dstack_mesh_key_index);
}


static ngx_uint_t
ngx_http_dstack_mesh_key_equal(ngx_http_dstack_mesh_key_t *a,
    ngx_http_dstack_mesh_key_t *b)
{
    return a->route == b->route
           && a->host_len == b->host_len
           && ngx_memcmp(a->host, b->host, a->host_len) == 0
           && ngx_strcmp(a->app_id, b->app_id) == 0
           && ngx_cmp_sockaddr(&a->sockaddr.sockaddr, a->socklen,
                               &b->sockaddr.sockaddr, b->socklen, 1)
              == NGX_OK;
}
