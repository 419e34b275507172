
/*
 * dstack mesh: the module definition, its directives and configuration.
 */


#include "ngx_http_dstack_mesh.h"


static void *ngx_http_dstack_mesh_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_dstack_mesh_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
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

      ngx_null_command
};


static ngx_http_module_t  ngx_http_dstack_mesh_module_ctx = {
    ngx_http_dstack_mesh_add_variables,    /* preconfiguration */
    ngx_http_dstack_mesh_init,             /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

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
ngx_http_dstack_mesh_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_dstack_mesh_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_dstack_mesh_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->auth = NGX_CONF_UNSET;
    conf->allow_apps = NGX_CONF_UNSET_PTR;

    return conf;
}


static char *
ngx_http_dstack_mesh_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_dstack_mesh_loc_conf_t *prev = parent;
    ngx_http_dstack_mesh_loc_conf_t *conf = child;

    ngx_conf_merge_value(conf->auth, prev->auth, 0);
    ngx_conf_merge_ptr_value(conf->allow_apps, prev->allow_apps, NULL);

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_dstack_mesh_init(ngx_conf_t *cf)
{
    return ngx_http_dstack_mesh_inbound_init(cf);
}
