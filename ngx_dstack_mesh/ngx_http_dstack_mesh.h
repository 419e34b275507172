
/*
 * dstack mesh: RA-TLS identity for nginx.
 */


#ifndef _NGX_HTTP_DSTACK_MESH_H_INCLUDED_
#define _NGX_HTTP_DSTACK_MESH_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ratls.h"


#define NGX_HTTP_DSTACK_MESH_APP_ID_HEADER  "x-dstack-app-id"


typedef struct {
    ngx_flag_t                  auth;
    /* ngx_str_t lowercase hex app ids; NULL means "any" */
    ngx_array_t                *allow_apps;
} ngx_http_dstack_mesh_loc_conf_t;


/* the peer of one TLS connection, established once per connection */

typedef enum {
    NGX_HTTP_DSTACK_MESH_PEER_NO_TLS = 0,
    NGX_HTTP_DSTACK_MESH_PEER_NO_CERT,
    NGX_HTTP_DSTACK_MESH_PEER_NOT_VERIFIED,
    NGX_HTTP_DSTACK_MESH_PEER_NO_APP_ID,
    NGX_HTTP_DSTACK_MESH_PEER_OK
} ngx_http_dstack_mesh_peer_status_e;


typedef struct {
    ngx_http_dstack_mesh_peer_status_e  status;
    /* why the certificate has no usable app id, or the X509 verify error */
    const char                         *reason;
    ngx_str_t                           app_id;
    u_char                              hex[RATLS_APP_ID_HEX_MAX + 1];
} ngx_http_dstack_mesh_peer_t;


extern ngx_module_t  ngx_http_dstack_mesh_module;


ngx_int_t ngx_http_dstack_mesh_inbound_init(ngx_conf_t *cf);
ngx_int_t ngx_http_dstack_mesh_add_variables(ngx_conf_t *cf);
char *ngx_http_dstack_mesh_allow_apps(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


#endif /* _NGX_HTTP_DSTACK_MESH_H_INCLUDED_ */
