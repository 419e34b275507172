
/*
 * dstack mesh, the "dstack_mesh_gateway" upstream: connections to other apps.
 *
 * Every outbound request says where it goes (the gateway's address and the
 * host name it asks the gateway for in SNI), whom it must reach (the
 * app_id) and, from its location, what the connection presents and trusts
 * (the identity, the CA store, the proxy_ssl_* context).  Together they are
 * the key, ngx_http_dstack_mesh_key_t, under which this balancer keeps idle
 * connections and TLS sessions, so neither ever serves another target, nor
 * a location that would not have accepted the peer or would have presented
 * another identity.  The stock keepalive module matches cached connections
 * by socket address alone, which all targets share; it is kept out of this
 * upstream (ngx_http_dstack_mesh_upstream_init).
 *
 * Pinning.  The set_session hook runs on every new TLS connection after
 * SSL_new() and before the handshake.  It gives the connection its own
 * verification: the mesh_trusted_certificate store, SSL_VERIFY_PEER and a
 * callback that compares the leaf's app_id with the expected one, which is
 * copied into the connection's pool so it lives as long as the connection.
 * A broken chain or another app fails the handshake, so not one request
 * byte is written to the wrong peer.  Pinned links are TLS 1.3 only (both
 * ends are this module, and in 1.3 the client certificate is encrypted);
 * renegotiation is refused, so the peer cannot run the callback again
 * later.  A resumed session skips verification; a session is only ever
 * offered to connections with the key it was made under, after its peer
 * passed that verification.
 */


#include "ngx_http_dstack_mesh.h"


#define NGX_HTTP_DSTACK_MESH_UPSTREAM  "dstack_mesh_gateway"


extern ngx_module_t  ngx_http_proxy_module;


/* what idle connections and TLS sessions have in common: a keyed entry */

typedef struct {
    ngx_queue_t                         queue;   /* table's used or free */
    ngx_queue_t                         bucket;
    ngx_http_dstack_mesh_key_t          key;
} ngx_http_dstack_mesh_entry_t;


typedef struct {
    ngx_http_dstack_mesh_entry_t        entry;
    ngx_connection_t                   *connection;
} ngx_http_dstack_mesh_idle_t;


typedef struct {
    ngx_http_dstack_mesh_entry_t        entry;
    ngx_ssl_session_t                  *session;
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
static ngx_int_t ngx_http_dstack_mesh_set_protocols(SSL *ssl,
    ngx_http_dstack_mesh_route_e route);
static int ngx_http_dstack_mesh_verify_pin(int ok, X509_STORE_CTX *store);
static int ngx_http_dstack_mesh_verify_gateway(int ok, X509_STORE_CTX *store);
static ngx_http_dstack_mesh_key_t *ngx_http_dstack_mesh_verified_key(
    X509_STORE_CTX *store, ngx_connection_t **c);
static ngx_uint_t ngx_http_dstack_mesh_key_equal(
    ngx_http_dstack_mesh_key_t *a, ngx_http_dstack_mesh_key_t *b,
    ngx_uint_t any_address);
static ngx_int_t ngx_http_dstack_mesh_table_init(ngx_conf_t *cf,
    ngx_http_dstack_mesh_table_t *t, ngx_uint_t n, size_t size);
static ngx_http_dstack_mesh_entry_t *ngx_http_dstack_mesh_table_find(
    ngx_http_dstack_mesh_table_t *t, ngx_http_dstack_mesh_key_t *key,
    ngx_uint_t any_address);
static void ngx_http_dstack_mesh_table_insert(ngx_http_dstack_mesh_table_t *t,
    ngx_http_dstack_mesh_entry_t *e, ngx_http_dstack_mesh_key_t *key);
static void ngx_http_dstack_mesh_table_remove(ngx_http_dstack_mesh_table_t *t,
    ngx_http_dstack_mesh_entry_t *e);
static void ngx_http_dstack_mesh_idle_close_handler(ngx_event_t *ev);
static void ngx_http_dstack_mesh_idle_dummy_handler(ngx_event_t *ev);
static void ngx_http_dstack_mesh_idle_drop(ngx_http_dstack_mesh_idle_t *item);
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
 * balancer here is the one that runs.  An "upstream dstack_mesh_gateway"
 * block, before or after the first mesh_target, is refused.
 */

ngx_int_t
ngx_http_dstack_mesh_upstream_init(ngx_conf_t *cf)
{
    ngx_uint_t                         i;
    ngx_http_upstream_srv_conf_t     **uscfp;
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

        if (uscfp[i]->host.len == ngx_http_dstack_mesh_upstream_name.len
            && ngx_strncmp(uscfp[i]->host.data,
                           ngx_http_dstack_mesh_upstream_name.data,
                           uscfp[i]->host.len) == 0
            && (uscfp[i]->flags & NGX_HTTP_UPSTREAM_CREATE))
        {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "the upstream name \"%V\" is reserved by "
                          "mesh_target, in %s:%ui", &uscfp[i]->host,
                          uscfp[i]->file_name, uscfp[i]->line);
            return NGX_ERROR;
        }

        if (uscfp[i]->peer.init_upstream
            == ngx_http_dstack_mesh_init_upstream)
        {
            uscfp[i]->peer.init = ngx_http_dstack_mesh_init_peer;
        }
    }

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_dstack_mesh_module);

    if (ngx_http_dstack_mesh_table_init(cf, &mmcf->idle, mmcf->cache_size,
                                        sizeof(ngx_http_dstack_mesh_idle_t))
        != NGX_OK
        || ngx_http_dstack_mesh_table_init(cf, &mmcf->sessions,
                                       mmcf->sessions_size,
                                       sizeof(ngx_http_dstack_mesh_session_t))
           != NGX_OK)
    {
        return NGX_ERROR;
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


/*
 * Adds the location's part to the key the route filled in, and its hash.
 * Without "address=" the target's name would be resolved next; an idle
 * connection for the same key, not yet too old to be reused, went to an
 * address that name resolved to, and is taken as is, without asking the
 * resolver.
 */

ngx_int_t
ngx_http_dstack_mesh_key_complete(ngx_http_request_t *r,
    ngx_http_dstack_mesh_ctx_t *ctx)
{
    uint32_t                           hash;
    ngx_http_upstream_conf_t          *ucf;
    ngx_http_dstack_mesh_key_t        *key;
    ngx_http_dstack_mesh_idle_t       *item;
    ngx_http_dstack_mesh_main_conf_t  *mmcf;

    key = &ctx->key;

    if (key->route != NGX_HTTP_DSTACK_MESH_AGENT) {
        /* the proxy module's location configuration starts with this */
        ucf = ngx_http_get_module_loc_conf(r, ngx_http_proxy_module);

        key->gateway = ctx->conf->gateway;
        key->identity = ctx->conf->identity;
        key->trusted = (key->route == NGX_HTTP_DSTACK_MESH_PINNED)
                       ? ctx->conf->trusted : ctx->conf->gateway_trusted;
        key->ssl = ucf->ssl;
    }

    ngx_crc32_init(hash);
    ngx_crc32_update(&hash, (u_char *) &key->route, sizeof(key->route));
    ngx_crc32_update(&hash, (u_char *) &key->gateway, sizeof(key->gateway));
    ngx_crc32_update(&hash, (u_char *) &key->identity,
                     sizeof(key->identity));
    ngx_crc32_update(&hash, (u_char *) &key->trusted, sizeof(key->trusted));
    ngx_crc32_update(&hash, (u_char *) &key->ssl, sizeof(key->ssl));
    ngx_crc32_update(&hash, key->host, key->host_len);
    ngx_crc32_update(&hash, key->app_id, ngx_strlen(key->app_id));
    ngx_crc32_final(hash);

    key->hash = hash;

    if (key->socklen) {
        return NGX_OK;
    }

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_mesh_module);

    item = (ngx_http_dstack_mesh_idle_t *)
               ngx_http_dstack_mesh_table_find(&mmcf->idle, key, 1);

    if (item == NULL
        || ngx_current_msec - item->connection->start_time > mmcf->time)
    {
        return NGX_OK;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "mesh: \"%s\" has an idle connection, not resolving",
                   key->host);

    return ngx_http_dstack_mesh_set_address(r, ctx,
                                            &item->entry.key.sockaddr.sockaddr,
                                            item->entry.key.socklen);
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

    ngx_connection_t                  *c;
    ngx_http_dstack_mesh_key_t        *key;
    ngx_http_dstack_mesh_idle_t       *item;
    ngx_http_dstack_mesh_main_conf_t  *mmcf;

    key = &pd->ctx->key;
    mmcf = pd->mmcf;

    pc->sockaddr = &key->sockaddr.sockaddr;
    pc->socklen = key->socklen;
    pc->name = &pd->ctx->name;

    for ( ;; ) {
        item = (ngx_http_dstack_mesh_idle_t *)
                   ngx_http_dstack_mesh_table_find(&mmcf->idle, key, 0);

        if (item == NULL) {
            ngx_http_dstack_mesh_count_idle(mmcf, 0);
            return NGX_OK;
        }

        c = item->connection;

        if (ngx_current_msec - c->start_time <= mmcf->time) {
            break;
        }

        /* mesh_keepalive_time has passed while it was idle */
        ngx_http_dstack_mesh_idle_drop(item);
    }

    ngx_http_dstack_mesh_table_remove(&mmcf->idle, &item->entry);
    ngx_http_dstack_mesh_count_idle(mmcf, 1);

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
                   "mesh: reusing connection %p to \"%s\"", c, key->host);

    pc->connection = c;
    pc->cached = 1;

    return NGX_DONE;
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

    ngx_http_dstack_mesh_count_attempt(mmcf, pd->ctx, pc, state);

    if (state & NGX_PEER_FAILED
        || c == NULL
        || c->read->eof
        || c->read->error
        || c->read->timedout
        || c->write->error
        || c->write->timedout
        || c->requests >= mmcf->requests
        || ngx_current_msec - c->start_time > mmcf->time
        || !u->keepalive
        || !u->request_body_sent
        || ngx_terminate
        || ngx_exiting
        || mmcf->cache_size == 0
        || ngx_handle_read_event(c->read, 0) != NGX_OK)
    {
        return;
    }

    if (ngx_queue_empty(&mmcf->idle.free)) {
        q = ngx_queue_last(&mmcf->idle.used);
        item = ngx_queue_data(q, ngx_http_dstack_mesh_idle_t, entry.queue);
        ngx_http_dstack_mesh_idle_drop(item);
    }

    q = ngx_queue_head(&mmcf->idle.free);
    item = ngx_queue_data(q, ngx_http_dstack_mesh_idle_t, entry.queue);

    ngx_http_dstack_mesh_table_insert(&mmcf->idle, &item->entry,
                                      &pd->ctx->key);
    item->connection = c;

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
    int                n;
    char               buf[1];
    ngx_connection_t  *c;

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

    ngx_http_dstack_mesh_idle_drop(c->data);
}


static void
ngx_http_dstack_mesh_idle_dummy_handler(ngx_event_t *ev)
{
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                   "mesh: idle connection dummy handler");
}


/* idle connections live in worker processes, under the cycle's table */

static void
ngx_http_dstack_mesh_idle_drop(ngx_http_dstack_mesh_idle_t *item)
{
    ngx_http_dstack_mesh_main_conf_t  *mmcf;

    mmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_dstack_mesh_module);

    ngx_http_dstack_mesh_table_remove(&mmcf->idle, &item->entry);
    ngx_http_dstack_mesh_close(item->connection);
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
    ngx_str_t                         name;
    ngx_connection_t                 *c;
    ngx_http_dstack_mesh_key_t       *key;
    ngx_http_dstack_mesh_session_t   *s;
    ngx_http_dstack_mesh_identity_t  *id;

    c = pc->connection;
    ssl = c->ssl->connection;
    id = pd->ctx->conf->identity;

    /* the callbacks may run as long as the connection lives */

    key = ngx_palloc(c->pool, sizeof(ngx_http_dstack_mesh_key_t));
    if (key == NULL) {
        return NGX_ERROR;
    }

    *key = pd->ctx->key;

    if (SSL_set_ex_data(ssl, ngx_http_dstack_mesh_key_index, key) == 0
        || ngx_http_dstack_mesh_set_protocols(ssl, key->route) != NGX_OK)
    {
        goto failed;
    }

    /* a name in brackets is an IPv6 address: verified, never sent in SNI */

    name.data = key->host;
    name.len = key->host_len;

    if (name.len > 2 && name.data[0] == '[') {
        name.data = ngx_pnalloc(c->pool, name.len - 1);
        if (name.data == NULL) {
            return NGX_ERROR;
        }

        name.len -= 2;
        ngx_cpystrn(name.data, key->host + 1, name.len + 1);
    }

    if (key->route == NGX_HTTP_DSTACK_MESH_PINNED) {
        SSL_set_verify(ssl, SSL_VERIFY_PEER, ngx_http_dstack_mesh_verify_pin);

    } else {
        /* the gateway's own certificate, for its name: no app to pin */
        SSL_set_verify(ssl, SSL_VERIFY_PEER,
                       ngx_http_dstack_mesh_verify_gateway);

        if (SSL_set1_host(ssl, (char *) name.data) != 1) {
            goto failed;
        }
    }

    if (SSL_set1_verify_cert_store(ssl, key->trusted) != 1
        || SSL_use_cert_and_key(ssl, id->certificate, id->key, id->chain, 1)
           != 1)
    {
        goto failed;
    }

    /* SNI names a host, never an address literal (RFC 6066) */

    if (name.data == key->host
        && ngx_inet_addr(name.data, name.len) == INADDR_NONE
        && SSL_set_tlsext_host_name(ssl, (char *) name.data) != 1)
    {
        goto failed;
    }

    s = (ngx_http_dstack_mesh_session_t *)
            ngx_http_dstack_mesh_table_find(&pd->mmcf->sessions, key, 0);
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


/*
 * Whatever proxy_ssl_protocols says: TLS 1.3 only for pinned links, TLS
 * 1.2 or 1.3 to a gateway that terminates TLS; never a renegotiation.
 */

static ngx_int_t
ngx_http_dstack_mesh_set_protocols(SSL *ssl, ngx_http_dstack_mesh_route_e route)
{
    int  min;

    min = (route == NGX_HTTP_DSTACK_MESH_PINNED) ? TLS1_3_VERSION
                                                 : TLS1_2_VERSION;

    SSL_clear_options(ssl, SSL_OP_NO_TLSv1_2|SSL_OP_NO_TLSv1_3);
    SSL_set_options(ssl, SSL_OP_NO_RENEGOTIATION);

    if (SSL_set_min_proto_version(ssl, min) != 1
        || SSL_set_max_proto_version(ssl, 0) != 1)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_dstack_mesh_save_session(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_dstack_mesh_peer_data_t *pd = data;

    ngx_queue_t                     *q;
    ngx_ssl_session_t               *session;
    ngx_http_dstack_mesh_table_t    *t;
    ngx_http_dstack_mesh_session_t  *s;

    t = &pd->mmcf->sessions;

    if (pd->mmcf->sessions_size == 0) {
        return;
    }

    session = ngx_ssl_get_session(pc->connection);
    if (session == NULL) {
        return;
    }

    s = (ngx_http_dstack_mesh_session_t *)
            ngx_http_dstack_mesh_table_find(t, &pd->ctx->key, 0);

    if (s == NULL && ngx_queue_empty(&t->free)) {
        q = ngx_queue_last(&t->used);
        s = ngx_queue_data(q, ngx_http_dstack_mesh_session_t, entry.queue);
    }

    if (s) {
        ngx_ssl_free_session(s->session);
        ngx_http_dstack_mesh_table_remove(t, &s->entry);
    }

    q = ngx_queue_head(&t->free);
    s = ngx_queue_data(q, ngx_http_dstack_mesh_session_t, entry.queue);

    ngx_http_dstack_mesh_table_insert(t, &s->entry, &pd->ctx->key);
    s->session = session;
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
    ngx_http_dstack_mesh_key_t *b, ngx_uint_t any_address)
{
    return a->hash == b->hash
           && a->route == b->route
           && a->gateway == b->gateway
           && a->identity == b->identity
           && a->trusted == b->trusted
           && a->ssl == b->ssl
           && a->host_len == b->host_len
           && ngx_memcmp(a->host, b->host, a->host_len) == 0
           && ngx_strcmp(a->app_id, b->app_id) == 0
           && (any_address
               || ngx_cmp_sockaddr(&a->sockaddr.sockaddr, a->socklen,
                                   &b->sockaddr.sockaddr, b->socklen, 1)
                  == NGX_OK);
}


/* n entries of "size" bytes, each starting with an entry; hash buckets */

static ngx_int_t
ngx_http_dstack_mesh_table_init(ngx_conf_t *cf, ngx_http_dstack_mesh_table_t *t,
    ngx_uint_t n, size_t size)
{
    u_char      *p;
    ngx_uint_t   i, buckets;

    ngx_queue_init(&t->used);
    ngx_queue_init(&t->free);

    for (buckets = 1; buckets < n; buckets <<= 1) { /* void */ }

    t->mask = buckets - 1;
    t->buckets = ngx_palloc(cf->pool, buckets * sizeof(ngx_queue_t));
    p = ngx_pcalloc(cf->pool, n * size);

    if (t->buckets == NULL || p == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < buckets; i++) {
        ngx_queue_init(&t->buckets[i]);
    }

    for (i = 0; i < n; i++, p += size) {
        ngx_queue_insert_tail(&t->free,
                              &((ngx_http_dstack_mesh_entry_t *) p)->queue);
    }

    return NGX_OK;
}


static ngx_http_dstack_mesh_entry_t *
ngx_http_dstack_mesh_table_find(ngx_http_dstack_mesh_table_t *t,
    ngx_http_dstack_mesh_key_t *key, ngx_uint_t any_address)
{
    ngx_queue_t                   *q, *bucket;
    ngx_http_dstack_mesh_entry_t  *e;

    bucket = &t->buckets[key->hash & t->mask];

    for (q = ngx_queue_head(bucket);
         q != ngx_queue_sentinel(bucket);
         q = ngx_queue_next(q))
    {
        e = ngx_queue_data(q, ngx_http_dstack_mesh_entry_t, bucket);

        if (ngx_http_dstack_mesh_key_equal(&e->key, key, any_address)) {
            return e;
        }
    }

    return NULL;
}


/* a free entry becomes the most recently used one, under "key" */

static void
ngx_http_dstack_mesh_table_insert(ngx_http_dstack_mesh_table_t *t,
    ngx_http_dstack_mesh_entry_t *e, ngx_http_dstack_mesh_key_t *key)
{
    e->key = *key;

    ngx_queue_remove(&e->queue);
    ngx_queue_insert_head(&t->used, &e->queue);
    ngx_queue_insert_head(&t->buckets[key->hash & t->mask], &e->bucket);
}


static void
ngx_http_dstack_mesh_table_remove(ngx_http_dstack_mesh_table_t *t,
    ngx_http_dstack_mesh_entry_t *e)
{
    ngx_queue_remove(&e->bucket);
    ngx_queue_remove(&e->queue);
    ngx_queue_insert_head(&t->free, &e->queue);
}
