
/*
 * dstack mesh: the module definition, its directives, variables and
 * configuration (the directive handlers are in ngx_http_dstack_mesh_conf.c).
 */


#include "ngx_http_dstack_mesh.h"


static void *ngx_http_dstack_mesh_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_dstack_mesh_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_dstack_mesh_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_dstack_mesh_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static ngx_int_t ngx_http_dstack_mesh_merge_identity(ngx_conf_t *cf,
    ngx_http_dstack_mesh_loc_conf_t *conf,
    ngx_http_dstack_mesh_loc_conf_t *prev);
static ngx_int_t ngx_http_dstack_mesh_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_dstack_mesh_init(ngx_conf_t *cf);


static ngx_command_t  ngx_http_dstack_mesh_commands[] = {

    { ngx_string("mesh_auth"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dstack_mesh_loc_conf_t, auth),
      NULL },

    { ngx_string("mesh_allow_apps"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_dstack_mesh_allow_apps,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mesh_target"),
      NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_dstack_mesh_target,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mesh_gateway"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_TAKE12,
      ngx_http_dstack_mesh_gateway,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mesh_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dstack_mesh_loc_conf_t, certificate),
      NULL },

    { ngx_string("mesh_certificate_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dstack_mesh_loc_conf_t, certificate_key),
      NULL },

    { ngx_string("mesh_trusted_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_dstack_mesh_trusted_certificate,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dstack_mesh_loc_conf_t, trusted),
      NULL },

    { ngx_string("mesh_gateway_trusted_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_dstack_mesh_trusted_certificate,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dstack_mesh_loc_conf_t, gateway_trusted),
      NULL },

    { ngx_string("mesh_agent_socket"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_dstack_mesh_agent_socket,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mesh_agent_methods"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_dstack_mesh_agent_methods,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mesh_keepalive"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_mesh_main_conf_t, cache_size),
      NULL },

    { ngx_string("mesh_keepalive_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_mesh_main_conf_t, cache_timeout),
      NULL },

    { ngx_string("mesh_keepalive_requests"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_mesh_main_conf_t, requests),
      NULL },

    { ngx_string("mesh_keepalive_time"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_mesh_main_conf_t, time),
      NULL },

    { ngx_string("mesh_ssl_session_cache_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_mesh_main_conf_t, sessions_size),
      NULL },

    { ngx_string("mesh_metrics_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_dstack_mesh_metrics_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mesh_metrics"),
      NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_dstack_mesh_metrics,
      0,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_variable_t  ngx_http_dstack_mesh_vars[] = {

    { ngx_string("mesh_app_id"), NULL,
      ngx_http_dstack_mesh_app_id_variable, 0, 0, 0 },

    { ngx_string("mesh_target_host"), NULL,
      ngx_http_dstack_mesh_target_host_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("mesh_connection"), NULL,
      ngx_http_dstack_mesh_connection_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_http_module_t  ngx_http_dstack_mesh_module_ctx = {
    ngx_http_dstack_mesh_add_variables,    /* preconfiguration */
    ngx_http_dstack_mesh_init,             /* postconfiguration */

    ngx_http_dstack_mesh_create_main_conf, /* create main configuration */
    ngx_http_dstack_mesh_init_main_conf,   /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_dstack_mesh_create_loc_conf,  /* create location configuration */
    ngx_http_dstack_mesh_merge_loc_conf    /* merge location configuration */
};


ngx_module_t  ngx_http_dstack_mesh_module = {
    NGX_MODULE_V1,
    &ngx_http_dstack_mesh_module_ctx,      /* module context */
    ngx_http_dstack_mesh_commands,         /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_http_dstack_mesh_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_dstack_mesh_main_conf_t  *mmcf;

    mmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_dstack_mesh_main_conf_t));
    if (mmcf == NULL) {
        return NULL;
    }

    mmcf->cache_size = NGX_CONF_UNSET_UINT;
    mmcf->cache_timeout = NGX_CONF_UNSET_MSEC;
    mmcf->requests = NGX_CONF_UNSET_UINT;
    mmcf->time = NGX_CONF_UNSET_MSEC;
    mmcf->sessions_size = NGX_CONF_UNSET_UINT;

    /*
     * set by ngx_pcalloc():
     *
     *     mmcf->metrics_zone = NULL;
     *     mmcf->metrics = NULL;
     *     mmcf->metrics_file = NULL;
     */

    if (ngx_http_dstack_mesh_metrics_init_apps(cf, &mmcf->callers) != NGX_OK
        || ngx_http_dstack_mesh_metrics_init_apps(cf, &mmcf->targets)
           != NGX_OK)
    {
        return NULL;
    }

    return mmcf;
}


static char *
ngx_http_dstack_mesh_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_dstack_mesh_main_conf_t *mmcf = conf;

    ngx_conf_init_uint_value(mmcf->cache_size, 32);
    ngx_conf_init_msec_value(mmcf->cache_timeout, 60000);
    ngx_conf_init_uint_value(mmcf->requests, 1000);
    ngx_conf_init_msec_value(mmcf->time, 3600000);
    ngx_conf_init_uint_value(mmcf->sessions_size, 64);

    return ngx_http_dstack_mesh_metrics_check(cf, mmcf);
}


static void *
ngx_http_dstack_mesh_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_dstack_mesh_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_dstack_mesh_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->target = NULL;
     *     conf->target_location = NULL;
     *     conf->certificate = { 0, NULL };
     *     conf->certificate_key = { 0, NULL };
     */

    conf->auth = NGX_CONF_UNSET;
    conf->allow_apps = NGX_CONF_UNSET_PTR;
    conf->gateway = NGX_CONF_UNSET_PTR;
    conf->identity = NGX_CONF_UNSET_PTR;
    conf->trusted = NGX_CONF_UNSET_PTR;
    conf->gateway_trusted = NGX_CONF_UNSET_PTR;
    conf->agent = NGX_CONF_UNSET_PTR;
    conf->agent_methods = NGX_CONF_UNSET_PTR;

    return conf;
}


static char *
ngx_http_dstack_mesh_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_dstack_mesh_loc_conf_t *prev = parent;
    ngx_http_dstack_mesh_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t  *clcf;

    ngx_conf_merge_value(conf->auth, prev->auth, 0);
    ngx_conf_merge_ptr_value(conf->allow_apps, prev->allow_apps, NULL);

    if (conf->auth && ngx_http_dstack_mesh_check_auth(cf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_conf_merge_ptr_value(conf->gateway, prev->gateway, NULL);

    if (ngx_http_dstack_mesh_merge_identity(cf, conf, prev) != NGX_OK) {
        return NGX_CONF_ERROR;
    }
    ngx_conf_merge_ptr_value(conf->trusted, prev->trusted, NULL);
    ngx_conf_merge_ptr_value(conf->gateway_trusted, prev->gateway_trusted,
                             NULL);
    ngx_conf_merge_ptr_value(conf->agent, prev->agent, NULL);
    ngx_conf_merge_ptr_value(conf->agent_methods, prev->agent_methods, NULL);

    /*
     * "if" and "limit_except" blocks are part of their location: inside a
     * mesh_target location they route to the same target.  An "if" block
     * runs the location's content handler; the proxy module gives a
     * "limit_except" block its own, which is put back to ours (this merge
     * runs after the proxy module's).
     */

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (conf->target == NULL && prev->target != NULL
        && (clcf->noname || clcf->lmt_excpt))
    {
        conf->target = prev->target;

        if (clcf->lmt_excpt) {
            clcf->handler = ngx_http_dstack_mesh_target_handler;
        }
    }

    if (conf->target) {
        return ngx_http_dstack_mesh_check_target(cf, conf);
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_dstack_mesh_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_dstack_mesh_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


/*
 * Like ssl_certificate, the pair is given together at one level and loaded
 * once there.  The http level is never merged as a child, so it is loaded
 * when its first server inherits it.
 */

static ngx_int_t
ngx_http_dstack_mesh_merge_identity(ngx_conf_t *cf,
    ngx_http_dstack_mesh_loc_conf_t *conf,
    ngx_http_dstack_mesh_loc_conf_t *prev)
{
    ngx_http_dstack_mesh_loc_conf_t  *level;

    if (conf->certificate.data || conf->certificate_key.data) {
        level = conf;

    } else if (prev->identity == NGX_CONF_UNSET_PTR) {
        level = prev;

    } else {
        conf->identity = prev->identity;
        return NGX_OK;
    }

    if (level->certificate.data == NULL && level->certificate_key.data == NULL)
    {
        level->identity = NULL;
        conf->identity = NULL;
        return NGX_OK;
    }

    if (level->certificate.data == NULL || level->certificate_key.data == NULL)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mesh_certificate\" and "
                           "\"mesh_certificate_key\" go together");
        return NGX_ERROR;
    }

    level->identity = ngx_http_dstack_mesh_load_identity(cf,
                                                    &level->certificate,
                                                    &level->certificate_key);
    if (level->identity == NULL) {
        return NGX_ERROR;
    }

    conf->identity = level->identity;

    return NGX_OK;
}


static ngx_int_t
ngx_http_dstack_mesh_init(ngx_conf_t *cf)
{
    if (ngx_http_dstack_mesh_inbound_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_dstack_mesh_upstream_init(cf);
}


/* SSL ex_data slots are process-wide: allocated once, kept across reloads */

ngx_int_t
ngx_http_dstack_mesh_ssl_index(ngx_conf_t *cf, int *index)
{
    if (*index != -1) {
        return NGX_OK;
    }

    *index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);

    if (*index == -1) {
        ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                      "SSL_get_ex_new_index() failed");
        return NGX_ERROR;
    }

    return NGX_OK;
}
