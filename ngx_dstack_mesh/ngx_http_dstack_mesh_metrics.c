
/*
 * dstack mesh, metrics: counters in the shared memory zone of
 * mesh_metrics_zone, shown by mesh_metrics in the Prometheus text format.
 *
 * The zone holds a header with the counters that have fixed labels and,
 * per app, a record with its inbound and outbound counters.  Which apps
 * have records is decided by the configuration: the apps of every
 * mesh_allow_apps list and of every mesh_target without variables, and
 * "other" for the rest, so a caller or target cannot grow the zone.  The
 * records are found by name when the zone is set up (in the master, before
 * workers start) and the configuration keeps pointers to them; a request
 * only adds to a counter, with an atomic add and no lock.
 *
 * A reload with the same zone name and size keeps the zone and its
 * counters: the new configuration finds the records the old one made and
 * adds records for apps it names for the first time.  Records of apps no
 * longer named stay (old workers may still count into them) until nginx
 * restarts or the zone is resized.  When a reload finds the zone full, the
 * apps it cannot give a record are counted as "other" (and said so once):
 * a metrics zone never stands in the way of a new allowlist.
 */


#include "ngx_http_dstack_mesh.h"


/* inbound counters: the caller status, "not_allowed" after them */
#define NGX_HTTP_DSTACK_MESH_NOT_ALLOWED                                     \
    (NGX_HTTP_DSTACK_MESH_CALLER_MISDIRECTED + 1)
#define NGX_HTTP_DSTACK_MESH_IN_N       (NGX_HTTP_DSTACK_MESH_NOT_ALLOWED + 1)


struct ngx_http_dstack_mesh_app_metrics_s {
    ngx_atomic_t                         allowed;
    ngx_atomic_t                         not_allowed;
    ngx_atomic_t                         outbound[NGX_HTTP_DSTACK_MESH_OUT_N];
    ngx_http_dstack_mesh_app_metrics_t  *next;
    size_t                               len;
    u_char                               name[1];
};


struct ngx_http_dstack_mesh_metrics_s {
    ngx_atomic_t                         inbound[NGX_HTTP_DSTACK_MESH_IN_N];
    ngx_atomic_t                         handshakes[2];   /* full, resumed */
    ngx_atomic_t                         idle[2];         /* hit, miss */
    ngx_http_dstack_mesh_app_metrics_t  *apps;
    ngx_uint_t                           full;  /* set up by the master */
};


static ngx_int_t ngx_http_dstack_mesh_metrics_init_zone(
    ngx_shm_zone_t *shm_zone, void *data);
static ngx_int_t ngx_http_dstack_mesh_metrics_attach(ngx_slab_pool_t *shpool,
    ngx_http_dstack_mesh_metrics_t *sh, ngx_array_t *apps);
static ngx_uint_t ngx_http_dstack_mesh_metrics_find(ngx_array_t *apps,
    u_char *name, size_t len);
static ngx_uint_t ngx_http_dstack_mesh_metrics_records(
    ngx_http_dstack_mesh_main_conf_t *mmcf, size_t *bytes);
static size_t ngx_http_dstack_mesh_slab_size(size_t size);
static ngx_int_t ngx_http_dstack_mesh_metrics_handler(ngx_http_request_t *r);


/* label values, in the order of the counters */

static ngx_str_t  ngx_http_dstack_mesh_inbound_outcomes[] = {
    ngx_string("no_tls"),              /* NGX_HTTP_DSTACK_MESH_CALLER_NO_TLS */
    ngx_string("no_certificate"),
    ngx_string("unverified"),
    ngx_string("no_app_id"),
    ngx_string("allowed"),
    ngx_string("misdirected"),
    ngx_string("not_allowed")
};

static ngx_str_t  ngx_http_dstack_mesh_outbound_outcomes[] = {
    ngx_string("ok"),
    ngx_string("pin_refused"),
    ngx_string("connect_failure"),
    ngx_string("timeout"),
    ngx_string("error")
};


#define NGX_HTTP_DSTACK_MESH_FAMILY(name, help)                              \
    "# HELP " name " " help "\n# TYPE " name " counter\n"

#define NGX_HTTP_DSTACK_MESH_INBOUND  "dstack_mesh_inbound_requests_total"
#define NGX_HTTP_DSTACK_MESH_INBOUND_APP                                     \
    "dstack_mesh_inbound_app_requests_total"
#define NGX_HTTP_DSTACK_MESH_OUTBOUND "dstack_mesh_outbound_requests_total"
#define NGX_HTTP_DSTACK_MESH_HANDSHAKES                                      \
    "dstack_mesh_upstream_tls_handshakes_total"
#define NGX_HTTP_DSTACK_MESH_IDLE     "dstack_mesh_idle_cache_lookups_total"

static u_char  ngx_http_dstack_mesh_inbound_family[] =
    NGX_HTTP_DSTACK_MESH_FAMILY(NGX_HTTP_DSTACK_MESH_INBOUND,
        "Requests checked by mesh_auth, by outcome.");

static u_char  ngx_http_dstack_mesh_inbound_app_family[] =
    NGX_HTTP_DSTACK_MESH_FAMILY(NGX_HTTP_DSTACK_MESH_INBOUND_APP,
        "Requests checked by mesh_auth from verified callers, by caller app "
        "(apps in no mesh_allow_apps list: other).");

static u_char  ngx_http_dstack_mesh_outbound_family[] =
    NGX_HTTP_DSTACK_MESH_FAMILY(NGX_HTTP_DSTACK_MESH_OUTBOUND,
        "Connection attempts of mesh_target requests to other apps, by "
        "target app (apps no mesh_target names: other) and outcome.");

static u_char  ngx_http_dstack_mesh_handshakes_family[] =
    NGX_HTTP_DSTACK_MESH_FAMILY(NGX_HTTP_DSTACK_MESH_HANDSHAKES,
        "TLS handshakes of new mesh_target connections, by type.");

static u_char  ngx_http_dstack_mesh_idle_family[] =
    NGX_HTTP_DSTACK_MESH_FAMILY(NGX_HTTP_DSTACK_MESH_IDLE,
        "Lookups of mesh_target requests in the idle connection cache, "
        "by result.");

/* the longest sample line: an app id, the longest outcome, a counter */
#define NGX_HTTP_DSTACK_MESH_SAMPLE_MAX                                      \
    (sizeof(NGX_HTTP_DSTACK_MESH_OUTBOUND "{app=\"\",outcome=\"\"} \n")       \
     + APP_ID_HEX_MAX + sizeof("connect_failure") + NGX_ATOMIC_T_LEN)


/* mesh_metrics_zone name size; */

char *
ngx_http_dstack_mesh_metrics_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_dstack_mesh_main_conf_t *mmcf = conf;

    ssize_t     size;
    ngx_str_t  *value;

    if (mmcf->metrics_zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    size = ngx_parse_size(&value[2]);

    if (size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone size \"%V\"", &value[2]);
        return NGX_CONF_ERROR;
    }

    if (size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is too small: %uzk at least",
                           &value[1], 8 * ngx_pagesize / 1024);
        return NGX_CONF_ERROR;
    }

    mmcf->metrics_zone = ngx_shared_memory_add(cf, &value[1], size,
                                               &ngx_http_dstack_mesh_module);
    if (mmcf->metrics_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (mmcf->metrics_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is already used", &value[1]);
        return NGX_CONF_ERROR;
    }

    mmcf->metrics_zone->init = ngx_http_dstack_mesh_metrics_init_zone;
    mmcf->metrics_zone->data = mmcf;

    return NGX_CONF_OK;
}


/* mesh_metrics; the content handler of its location, as stub_status */

char *
ngx_http_dstack_mesh_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t          *clcf;
    ngx_http_dstack_mesh_main_conf_t  *mmcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_dstack_mesh_metrics_handler;

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_dstack_mesh_module);

    if (mmcf->metrics_file == NULL) {
        mmcf->metrics_file = cf->conf_file->file.name.data;
        mmcf->metrics_line = cf->conf_file->line;
    }

    return NGX_CONF_OK;
}


/* the apps that have counters: "other" first, then those named, once each */

ngx_int_t
ngx_http_dstack_mesh_metrics_init_apps(ngx_conf_t *cf, ngx_array_t *apps)
{
    ngx_http_dstack_mesh_app_t  *app;

    if (ngx_array_init(apps, cf->pool, 4, sizeof(ngx_http_dstack_mesh_app_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    app = ngx_array_push(apps);
    if (app == NULL) {
        return NGX_ERROR;
    }

    ngx_str_set(&app->name, "other");
    app->metrics = NULL;

    return NGX_OK;
}


/* the index of an app id (lowercase hex) in "apps", added if new */

ngx_int_t
ngx_http_dstack_mesh_metrics_app(ngx_conf_t *cf, ngx_array_t *apps,
    u_char *name, size_t len)
{
    ngx_uint_t                   i;
    ngx_http_dstack_mesh_app_t  *app;

    i = ngx_http_dstack_mesh_metrics_find(apps, name, len);
    if (i) {
        return i;
    }

    app = ngx_array_push(apps);
    if (app == NULL) {
        return NGX_ERROR;
    }

    app->name.data = ngx_pnalloc(cf->pool, len);
    if (app->name.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(app->name.data, name, len);
    app->name.len = len;
    app->metrics = NULL;

    return apps->nelts - 1;
}


/* 0, "other", for an app not in "apps" */

static ngx_uint_t
ngx_http_dstack_mesh_metrics_find(ngx_array_t *apps, u_char *name, size_t len)
{
    ngx_uint_t                   i;
    ngx_http_dstack_mesh_app_t  *app;

    app = apps->elts;

    for (i = 1; i < apps->nelts; i++) {
        if (app[i].name.len == len
            && ngx_memcmp(app[i].name.data, name, len) == 0)
        {
            return i;
        }
    }

    return 0;
}


/*
 * At the end of the http block: mesh_metrics needs the zone, and the zone
 * must hold a record for every app the configuration names.  nginx -t does
 * not create zones, so this is where it can refuse one that is too small.
 */

char *
ngx_http_dstack_mesh_metrics_check(ngx_conf_t *cf,
    ngx_http_dstack_mesh_main_conf_t *mmcf)
{
    size_t      bytes, min;
    ngx_uint_t  n, pages, avail;

    if (mmcf->metrics_zone == NULL) {
        if (mmcf->metrics_file) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"mesh_metrics\" needs \"mesh_metrics_zone\" "
                          "at http level, in %s:%ui",
                          mmcf->metrics_file, mmcf->metrics_line);
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    n = ngx_http_dstack_mesh_metrics_records(mmcf, &bytes);

    /*
     * The slab allocator rounds records up to a power of two and keeps
     * each size on pages of its own (the header's, and up to two sizes of
     * records); its own bookkeeping takes a page and a descriptor per page.
     */

    pages = (bytes + ngx_pagesize - 1) / ngx_pagesize + 3;
    avail = (mmcf->metrics_zone->shm.size - 2 * ngx_pagesize)
            / (ngx_pagesize + sizeof(ngx_slab_page_t));

    if (pages <= avail) {
        return NGX_CONF_OK;
    }

    min = (pages + 2) * (ngx_pagesize + sizeof(ngx_slab_page_t));

    ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                  "mesh_metrics_zone \"%V\" is too small for the %ui apps of "
                  "mesh_allow_apps and mesh_target: %uzk at least",
                  &mmcf->metrics_zone->shm.name, n, (min + 1023) / 1024);

    return NGX_CONF_ERROR;
}


/* the records the configuration needs, and their bytes in the slab pool */

static ngx_uint_t
ngx_http_dstack_mesh_metrics_records(ngx_http_dstack_mesh_main_conf_t *mmcf,
    size_t *bytes)
{
    size_t                       size;
    ngx_uint_t                   i, n, t;
    ngx_array_t                 *apps;
    ngx_http_dstack_mesh_app_t  *app;

    n = 0;
    *bytes = ngx_http_dstack_mesh_slab_size(
                                       sizeof(ngx_http_dstack_mesh_metrics_t));

    for (t = 0; t < 2; t++) {
        apps = t ? &mmcf->targets : &mmcf->callers;
        app = apps->elts;

        for (i = 0; i < apps->nelts; i++) {
            if (t && (i == 0 || ngx_http_dstack_mesh_metrics_find(
                                    &mmcf->callers, app[i].name.data,
                                    app[i].name.len)))
            {
                /* "other" and the apps of both lists have one record */
                continue;
            }

            size = offsetof(ngx_http_dstack_mesh_app_metrics_t, name)
                   + app[i].name.len;
            *bytes += ngx_http_dstack_mesh_slab_size(size);
            n++;
        }
    }

    return n - 1;
}


/* what the slab allocator takes for "size" bytes: a power of two, 8 or more */

static size_t
ngx_http_dstack_mesh_slab_size(size_t size)
{
    size_t  n;

    for (n = 8; n < size; n <<= 1) { /* void */ }

    return n;
}


static ngx_int_t
ngx_http_dstack_mesh_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_dstack_mesh_main_conf_t *omcf = data;

    ngx_slab_pool_t                   *shpool;
    ngx_http_dstack_mesh_metrics_t    *sh;
    ngx_http_dstack_mesh_main_conf_t  *mmcf;

    mmcf = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (omcf) {
        /* the same zone after a reload: its counters go on */
        sh = omcf->metrics;

    } else {
        /* a full zone is reported below, once */
        shpool->log_nomem = 0;

        sh = ngx_slab_calloc(shpool, sizeof(ngx_http_dstack_mesh_metrics_t));
        if (sh == NULL) {
            return NGX_ERROR;
        }
    }

    mmcf->metrics = sh;

    if (ngx_http_dstack_mesh_metrics_attach(shpool, sh, &mmcf->callers)
        != NGX_OK
        || ngx_http_dstack_mesh_metrics_attach(shpool, sh, &mmcf->targets)
           != NGX_OK)
    {
        /* not even "other": a zone too small for its first configuration */
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "mesh_metrics_zone \"%V\" is too small",
                      &shm_zone->shm.name);
        return NGX_ERROR;
    }

    if (sh->full) {
        ngx_log_error(NGX_LOG_WARN, shm_zone->shm.log, 0,
                      "mesh_metrics_zone \"%V\" is full: apps new to this "
                      "configuration are counted as \"other\" until nginx "
                      "restarts; give it a larger size", &shm_zone->shm.name);
        sh->full = 0;
    }

    return NGX_OK;
}


/* each app's record, found by name or made */

static ngx_int_t
ngx_http_dstack_mesh_metrics_attach(ngx_slab_pool_t *shpool,
    ngx_http_dstack_mesh_metrics_t *sh, ngx_array_t *apps)
{
    ngx_uint_t                           i;
    ngx_http_dstack_mesh_app_t          *app;
    ngx_http_dstack_mesh_app_metrics_t  *m;

    app = apps->elts;

    for (i = 0; i < apps->nelts; i++) {

        for (m = sh->apps; m; m = m->next) {
            if (m->len == app[i].name.len
                && ngx_memcmp(m->name, app[i].name.data, m->len) == 0)
            {
                break;
            }
        }

        if (m == NULL) {
            m = ngx_slab_calloc(shpool,
                                offsetof(ngx_http_dstack_mesh_app_metrics_t,
                                         name)
                                + app[i].name.len);
            if (m == NULL) {
                if (i == 0) {
                    return NGX_ERROR;
                }

                /* counted, and shown, as "other" */
                sh->full = 1;
                app[i].metrics = app[0].metrics;
                continue;
            }

            m->len = app[i].name.len;
            ngx_memcpy(m->name, app[i].name.data, m->len);

            /* workers of the old configuration never walk the list */
            m->next = sh->apps;
            sh->apps = m;
        }

        app[i].metrics = m;
    }

    return NGX_OK;
}


/* an access check of mesh_auth: "rc" is its verdict */

/* the mark of a request counted already, in its pool: it survives the
 * internal redirects that clear module contexts (as realip keeps its own) */

static void
ngx_http_dstack_mesh_counted(void *data)
{
}


void
ngx_http_dstack_mesh_count_inbound(ngx_http_request_t *r,
    ngx_http_dstack_mesh_caller_t *caller, ngx_int_t rc)
{
    ngx_uint_t                         i;
    ngx_pool_cleanup_t                *cln;
    ngx_http_dstack_mesh_app_t        *app;
    ngx_http_dstack_mesh_main_conf_t  *mmcf;

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_mesh_module);

    if (mmcf->metrics == NULL || caller == NULL) {
        return;
    }

    /* a request is counted at its first check: an index file, try_files
     * or error_page in a mesh_auth location checks it again */

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_dstack_mesh_counted) {
            return;
        }
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln) {
        cln->handler = ngx_http_dstack_mesh_counted;
    }

    if (caller->status != NGX_HTTP_DSTACK_MESH_CALLER_OK) {
        ngx_atomic_fetch_add(&mmcf->metrics->inbound[caller->status], 1);
        return;
    }

    /* the caller's record is looked up once per connection */

    if (caller->metrics == NULL) {
        app = mmcf->callers.elts;
        i = ngx_http_dstack_mesh_metrics_find(&mmcf->callers,
                                              caller->app_id.data,
                                              caller->app_id.len);
        caller->metrics = app[i].metrics;
    }

    if (rc == NGX_OK) {
        ngx_atomic_fetch_add(&mmcf->metrics->inbound[caller->status], 1);
        ngx_atomic_fetch_add(&caller->metrics->allowed, 1);

    } else {
        ngx_atomic_fetch_add(
            &mmcf->metrics->inbound[NGX_HTTP_DSTACK_MESH_NOT_ALLOWED], 1);
        ngx_atomic_fetch_add(&caller->metrics->not_allowed, 1);
    }
}


/* a mesh_target request's outcome, under its target app */

void
ngx_http_dstack_mesh_count_outbound(ngx_http_dstack_mesh_main_conf_t *mmcf,
    ngx_http_dstack_mesh_ctx_t *ctx, ngx_http_dstack_mesh_outcome_e outcome)
{
    ngx_uint_t                   i;
    ngx_http_dstack_mesh_app_t  *app;

    if (mmcf->metrics == NULL) {
        return;
    }

    i = ctx->conf->target->app_index;

    if (i == 0) {
        /* a target with variables: its app is looked up per request */
        i = ngx_http_dstack_mesh_metrics_find(&mmcf->targets,
                                              ctx->key.app_id,
                                              ngx_strlen(ctx->key.app_id));
    }

    app = mmcf->targets.elts;

    ngx_atomic_fetch_add(&app[i].metrics->outbound[outcome], 1);
}


/*
 * The end of one connection attempt of the balancer, from its free hook:
 * the outcome, and the TLS handshake of a new connection.  An attempt on a
 * cached connection that fails, not by a timeout, is not counted: nginx
 * tries again with a new one, and that attempt counts.  Nor is an attempt
 * the request ended during its handshake (a client that went away): a
 * failed attempt ends with NGX_PEER_FAILED, this one with no state.
 */

void
ngx_http_dstack_mesh_count_attempt(ngx_http_dstack_mesh_main_conf_t *mmcf,
    ngx_http_dstack_mesh_ctx_t *ctx, ngx_peer_connection_t *pc,
    ngx_uint_t state)
{
    ngx_connection_t                *c;
    ngx_http_dstack_mesh_outcome_e   outcome;

    if (mmcf->metrics == NULL || ctx->key.route == NGX_HTTP_DSTACK_MESH_AGENT)
    {
        return;
    }

    c = pc->connection;

    if (state == 0 && c && !(c->ssl && c->ssl->handshaked)
        && !c->read->timedout && !c->write->timedout)
    {
        return;
    }

    if (c == NULL) {
        outcome = NGX_HTTP_DSTACK_MESH_OUT_CONNECT_FAILURE;

    } else if (c->read->timedout || c->write->timedout) {
        outcome = NGX_HTTP_DSTACK_MESH_OUT_TIMEOUT;

    } else if (c->ssl == NULL || !c->ssl->handshaked) {
        outcome = (c->ssl && SSL_get_verify_result(c->ssl->connection)
                             != X509_V_OK)
                  ? NGX_HTTP_DSTACK_MESH_OUT_PIN_REFUSED
                  : NGX_HTTP_DSTACK_MESH_OUT_CONNECT_FAILURE;

    } else if (state & NGX_PEER_FAILED) {
        if (pc->cached) {
            return;
        }

        outcome = NGX_HTTP_DSTACK_MESH_OUT_ERROR;

    } else {
        outcome = NGX_HTTP_DSTACK_MESH_OUT_OK;
    }

    if (c && c->ssl && c->ssl->handshaked && !pc->cached) {
        ngx_atomic_fetch_add(
            &mmcf->metrics->handshakes[SSL_session_reused(c->ssl->connection)
                                       ? 1 : 0], 1);
    }

    ngx_http_dstack_mesh_count_outbound(mmcf, ctx, outcome);
}


void
ngx_http_dstack_mesh_count_idle(ngx_http_dstack_mesh_main_conf_t *mmcf,
    ngx_uint_t hit)
{
    if (mmcf->metrics) {
        ngx_atomic_fetch_add(&mmcf->metrics->idle[hit ? 0 : 1], 1);
    }
}


/*
 * Label values are app ids (hex, checked when the configuration was read),
 * "other" and the fixed words above: none needs escaping.
 */

static ngx_int_t
ngx_http_dstack_mesh_metrics_handler(ngx_http_request_t *r)
{
    size_t                               size;
    ngx_int_t                            rc;
    ngx_buf_t                           *b;
    ngx_uint_t                           i, j;
    ngx_chain_t                          out;
    ngx_http_dstack_mesh_app_t          *app;
    ngx_http_dstack_mesh_metrics_t      *sh;
    ngx_http_dstack_mesh_app_metrics_t  *m;
    ngx_http_dstack_mesh_main_conf_t    *mmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_mesh_module);
    sh = mmcf->metrics;

    ngx_str_set(&r->headers_out.content_type,
                "text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.content_type_len = sizeof("text/plain") - 1;
    r->headers_out.content_type_lowcase = NULL;

    size = sizeof(ngx_http_dstack_mesh_inbound_family)
           + sizeof(ngx_http_dstack_mesh_inbound_app_family)
           + sizeof(ngx_http_dstack_mesh_outbound_family)
           + sizeof(ngx_http_dstack_mesh_handshakes_family)
           + sizeof(ngx_http_dstack_mesh_idle_family)
           + (NGX_HTTP_DSTACK_MESH_IN_N + 4
              + 2 * mmcf->callers.nelts
              + NGX_HTTP_DSTACK_MESH_OUT_N * mmcf->targets.nelts)
             * NGX_HTTP_DSTACK_MESH_SAMPLE_MAX;

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_cpymem(b->last, ngx_http_dstack_mesh_inbound_family,
                         sizeof(ngx_http_dstack_mesh_inbound_family) - 1);

    for (i = 0; i < NGX_HTTP_DSTACK_MESH_IN_N; i++) {
        b->last = ngx_sprintf(b->last,
                              NGX_HTTP_DSTACK_MESH_INBOUND
                              "{outcome=\"%V\"} %uA\n",
                              &ngx_http_dstack_mesh_inbound_outcomes[i],
                              sh->inbound[i]);
    }

    b->last = ngx_cpymem(b->last, ngx_http_dstack_mesh_inbound_app_family,
                         sizeof(ngx_http_dstack_mesh_inbound_app_family) - 1);

    app = mmcf->callers.elts;

    for (i = 0; i < mmcf->callers.nelts; i++) {
        m = app[i].metrics;

        if (i > 0 && m == app[0].metrics) {
            continue;               /* no record of its own: in "other" */
        }

        b->last = ngx_sprintf(b->last,
                              NGX_HTTP_DSTACK_MESH_INBOUND_APP
                              "{app=\"%V\",outcome=\"allowed\"} %uA\n"
                              NGX_HTTP_DSTACK_MESH_INBOUND_APP
                              "{app=\"%V\",outcome=\"not_allowed\"} %uA\n",
                              &app[i].name, m->allowed,
                              &app[i].name, m->not_allowed);
    }

    b->last = ngx_cpymem(b->last, ngx_http_dstack_mesh_outbound_family,
                         sizeof(ngx_http_dstack_mesh_outbound_family) - 1);

    app = mmcf->targets.elts;

    for (i = 0; i < mmcf->targets.nelts; i++) {
        if (i > 0 && app[i].metrics == app[0].metrics) {
            continue;
        }

        for (j = 0; j < NGX_HTTP_DSTACK_MESH_OUT_N; j++) {
            b->last = ngx_sprintf(b->last,
                                  NGX_HTTP_DSTACK_MESH_OUTBOUND
                                  "{app=\"%V\",outcome=\"%V\"} %uA\n",
                                  &app[i].name,
                                  &ngx_http_dstack_mesh_outbound_outcomes[j],
                                  app[i].metrics->outbound[j]);
        }
    }

    b->last = ngx_cpymem(b->last, ngx_http_dstack_mesh_handshakes_family,
                         sizeof(ngx_http_dstack_mesh_handshakes_family) - 1);
    b->last = ngx_sprintf(b->last,
                          NGX_HTTP_DSTACK_MESH_HANDSHAKES
                          "{type=\"full\"} %uA\n"
                          NGX_HTTP_DSTACK_MESH_HANDSHAKES
                          "{type=\"resumed\"} %uA\n",
                          sh->handshakes[0], sh->handshakes[1]);

    b->last = ngx_cpymem(b->last, ngx_http_dstack_mesh_idle_family,
                         sizeof(ngx_http_dstack_mesh_idle_family) - 1);
    b->last = ngx_sprintf(b->last,
                          NGX_HTTP_DSTACK_MESH_IDLE "{result=\"hit\"} %uA\n"
                          NGX_HTTP_DSTACK_MESH_IDLE "{result=\"miss\"} %uA\n",
                          sh->idle[0], sh->idle[1]);

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}
