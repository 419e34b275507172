
/*
 * dstack mesh: RA-TLS identity for nginx.
 *
 *   ngx_http_dstack_mesh_module.c    the module, its directives and variables,
 *                                    create and merge configuration
 *   ngx_http_dstack_mesh_conf.c      directive handlers, certificate, CA and
 *                                    key files, configuration checks
 *   ngx_http_dstack_mesh_inbound.c   the caller's app_id, mesh_auth
 *   ngx_http_dstack_mesh_outbound.c  mesh_target requests: the target, the
 *                                    route, the gateway's address
 *   ngx_http_dstack_mesh_upstream.c  the balancer: pinning, the connection
 *                                    cache, TLS sessions
 *   ngx_http_dstack_mesh_agent.c     the guest-agent fallback and its
 *                                    mesh_agent_methods allowlist
 *   ngx_http_dstack_mesh_headers.c   request-header edits, JSON answers
 *   ngx_http_dstack_mesh_metrics.c   counters in a shared zone, mesh_metrics
 */


#ifndef _NGX_HTTP_DSTACK_MESH_H_INCLUDED_
#define _NGX_HTTP_DSTACK_MESH_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "app_id.h"
#include "ratls.h"
#include "mesh_target.h"


#define NGX_HTTP_DSTACK_MESH_APP_ID_HEADER  "x-dstack-app-id"

#define ngx_http_dstack_mesh_isalnum(c)                                      \
    (((c) >= '0' && (c) <= '9') || ((c) >= 'a' && (c) <= 'z')                 \
     || ((c) >= 'A' && (c) <= 'Z'))


/* mesh_certificate + mesh_certificate_key, loaded once at configuration */

typedef struct {
    X509                       *certificate;
    STACK_OF(X509)             *chain;
    EVP_PKEY                   *key;
} ngx_http_dstack_mesh_identity_t;


/* mesh_gateway */

typedef struct {
    ngx_str_t                   domain;      /* empty in fixed/ mode */
    ngx_str_t                   fixed_host;  /* the SNI in fixed/ mode */
    in_port_t                   port;
    ngx_addr_t                 *address;     /* address= or fixed/; else DNS */
} ngx_http_dstack_mesh_gateway_t;


/* mesh_target <app> [port=] [instance=] [tls=], all complex values */

typedef struct {
    ngx_http_complex_value_t    app;
    ngx_http_complex_value_t   *port;
    ngx_http_complex_value_t   *instance;
    ngx_http_complex_value_t   *tls;
    /* the app's counters in the main conf's targets; 0: found per request */
    ngx_uint_t                  app_index;
} ngx_http_dstack_mesh_target_conf_t;


/*
 * Idle connections or TLS sessions: a fixed number of entries, the used
 * ones in LRU order and chained by the hash of their key, the rest free.
 */

typedef struct {
    ngx_queue_t                 used;        /* most recently used first */
    ngx_queue_t                 free;
    ngx_queue_t                *buckets;     /* used entries by key hash */
    ngx_uint_t                  mask;
} ngx_http_dstack_mesh_table_t;


/* mesh_metrics_zone: the counters, in ngx_http_dstack_mesh_metrics.c */

typedef struct ngx_http_dstack_mesh_metrics_s  ngx_http_dstack_mesh_metrics_t;
typedef struct ngx_http_dstack_mesh_app_metrics_s
    ngx_http_dstack_mesh_app_metrics_t;


/* an app that has counters, or "other" (index 0 of its list) */

typedef struct {
    ngx_str_t                            name;
    ngx_http_dstack_mesh_app_metrics_t  *metrics;    /* its zone record */
} ngx_http_dstack_mesh_app_t;


/* the outcome of a connection attempt to another app */

typedef enum {
    NGX_HTTP_DSTACK_MESH_OUT_OK = 0,
    NGX_HTTP_DSTACK_MESH_OUT_PIN_REFUSED,       /* the peer's certificate */
    NGX_HTTP_DSTACK_MESH_OUT_CONNECT_FAILURE,   /* no connection or TLS */
    NGX_HTTP_DSTACK_MESH_OUT_TIMEOUT,
    NGX_HTTP_DSTACK_MESH_OUT_ERROR,             /* after the handshake */
    NGX_HTTP_DSTACK_MESH_OUT_N
} ngx_http_dstack_mesh_outcome_e;


/*
 * mesh_keepalive, mesh_keepalive_timeout, mesh_keepalive_requests,
 * mesh_keepalive_time, mesh_ssl_session_cache_size; the two tables;
 * mesh_metrics_zone and the apps that have counters
 */

typedef struct {
    ngx_uint_t                       cache_size;
    ngx_msec_t                       cache_timeout;
    ngx_uint_t                       requests;
    ngx_msec_t                       time;
    ngx_uint_t                       sessions_size;
    ngx_http_dstack_mesh_table_t     idle;
    ngx_http_dstack_mesh_table_t     sessions;

    ngx_shm_zone_t                  *metrics_zone;
    ngx_http_dstack_mesh_metrics_t  *metrics;       /* NULL: no counting */
    ngx_array_t                      callers;       /* mesh_allow_apps' */
    ngx_array_t                      targets;       /* mesh_target's */
    u_char                          *metrics_file;  /* the first mesh_metrics */
    ngx_uint_t                       metrics_line;
} ngx_http_dstack_mesh_main_conf_t;


typedef struct {
    /* inbound */
    ngx_flag_t                           auth;
    ngx_array_t                         *allow_apps;  /* ngx_str_t; NULL: any */

    /* outbound */
    ngx_http_dstack_mesh_target_conf_t  *target;      /* this level only */
    /* mesh_target at server level: the implicit location it set up */
    void                               **target_location;
    ngx_http_dstack_mesh_gateway_t      *gateway;
    ngx_str_t                            certificate;
    ngx_str_t                            certificate_key;
    ngx_http_dstack_mesh_identity_t     *identity;
    X509_STORE                          *trusted;
    X509_STORE                          *gateway_trusted;
    ngx_addr_t                          *agent;
    ngx_array_t                         *agent_methods; /* NULL: default */
} ngx_http_dstack_mesh_loc_conf_t;


/* the caller of an inbound TLS connection, established once per connection */

typedef enum {
    NGX_HTTP_DSTACK_MESH_CALLER_NO_TLS = 0,
    NGX_HTTP_DSTACK_MESH_CALLER_NO_CERT,
    NGX_HTTP_DSTACK_MESH_CALLER_NOT_VERIFIED,
    NGX_HTTP_DSTACK_MESH_CALLER_NO_APP_ID,
    NGX_HTTP_DSTACK_MESH_CALLER_OK,
    NGX_HTTP_DSTACK_MESH_CALLER_MISDIRECTED   /* another server verified it */
} ngx_http_dstack_mesh_caller_status_e;


typedef struct {
    ngx_http_dstack_mesh_caller_status_e  status;
    /* why the certificate has no usable app id, or the X509 verify error */
    const char                           *reason;
    ngx_str_t                             app_id;
    u_char                                hex[APP_ID_HEX_MAX + 1];
    /* the app's counters, looked up at its first counted request */
    ngx_http_dstack_mesh_app_metrics_t   *metrics;
} ngx_http_dstack_mesh_caller_t;


/*
 * Where an outbound request goes, whom it must reach and how the location
 * connects: what connections and TLS sessions are keyed by, so they are
 * never shared across targets or locations that connect differently.
 */

typedef enum {
    NGX_HTTP_DSTACK_MESH_PINNED = 0,     /* passthrough, app_id pinned */
    NGX_HTTP_DSTACK_MESH_GATEWAY_TLS,    /* gateway terminates TLS */
    NGX_HTTP_DSTACK_MESH_AGENT           /* the local guest agent */
} ngx_http_dstack_mesh_route_e;


typedef struct {
    ngx_http_dstack_mesh_route_e        route;
    /*
     * What the location decides: the gateway (its port, for names resolved
     * per request), the identity presented, the store the peer is verified
     * against, the proxy_ssl_* context; all NULL toward the guest agent
     */
    ngx_http_dstack_mesh_gateway_t     *gateway;
    ngx_http_dstack_mesh_identity_t    *identity;
    X509_STORE                         *trusted;
    ngx_ssl_t                          *ssl;
    uint32_t                            hash;       /* all but the address */
    socklen_t                           socklen;
    ngx_sockaddr_t                      sockaddr;
    size_t                              host_len;
    u_char                              host[MESH_TARGET_HOST_MAX + 1];
    u_char                              app_id[MESH_TARGET_ID_MAX + 1];
} ngx_http_dstack_mesh_key_t;


/* per outbound request */

typedef struct {
    ngx_http_dstack_mesh_key_t          key;
    ngx_str_t                           name;       /* key.sockaddr as text */
    ngx_str_t                           host;       /* key.host */
    ngx_http_dstack_mesh_loc_conf_t    *conf;
    ngx_resolver_ctx_t                 *resolving;
} ngx_http_dstack_mesh_ctx_t;


extern ngx_module_t  ngx_http_dstack_mesh_module;


ngx_int_t ngx_http_dstack_mesh_ssl_index(ngx_conf_t *cf, int *index);

/* configuration: directive handlers, certificate, CA and key files */
char *ngx_http_dstack_mesh_allow_apps(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_dstack_mesh_target(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_dstack_mesh_gateway(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_dstack_mesh_trusted_certificate(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_http_dstack_mesh_agent_socket(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_http_dstack_mesh_identity_t *ngx_http_dstack_mesh_load_identity(
    ngx_conf_t *cf, ngx_str_t *certificate, ngx_str_t *key);
char *ngx_http_dstack_mesh_check_target(ngx_conf_t *cf,
    ngx_http_dstack_mesh_loc_conf_t *conf);

/* inbound */
ngx_int_t ngx_http_dstack_mesh_inbound_init(ngx_conf_t *cf);
char *ngx_http_dstack_mesh_check_auth(ngx_conf_t *cf);
ngx_int_t ngx_http_dstack_mesh_app_id_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

/*
 * outbound: mesh_target puts the target handler in front of the proxy
 * module's content handler, which it keeps here for the handler to call,
 * with the index of the proxy's $proxy_host
 */
extern ngx_http_handler_pt  ngx_http_dstack_mesh_proxy_handler;
extern ngx_int_t            ngx_http_dstack_mesh_proxy_host_index;

ngx_int_t ngx_http_dstack_mesh_target_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_dstack_mesh_server_target_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_dstack_mesh_target_host_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
ngx_int_t ngx_http_dstack_mesh_connection_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

/* the upstream: target-keyed connection cache, TLS sessions, app_id pin */
ngx_http_upstream_srv_conf_t *ngx_http_dstack_mesh_upstream_add(
    ngx_conf_t *cf);
ngx_int_t ngx_http_dstack_mesh_upstream_init(ngx_conf_t *cf);
ngx_int_t ngx_http_dstack_mesh_key_complete(ngx_http_request_t *r,
    ngx_http_dstack_mesh_ctx_t *ctx);
ngx_int_t ngx_http_dstack_mesh_set_address(ngx_http_request_t *r,
    ngx_http_dstack_mesh_ctx_t *ctx, struct sockaddr *sockaddr,
    socklen_t socklen);

/* the guest-agent fallback for requests without a target app */
ngx_int_t ngx_http_dstack_mesh_agent_request(ngx_http_request_t *r,
    ngx_http_dstack_mesh_ctx_t *ctx);
char *ngx_http_dstack_mesh_agent_methods(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* request headers */
ngx_int_t ngx_http_dstack_mesh_remove_headers(ngx_http_request_t *r,
    const ngx_str_t *names);
ngx_int_t ngx_http_dstack_mesh_replace_header(ngx_http_request_t *r,
    const ngx_str_t *names, ngx_str_t *key, ngx_str_t *value);

/* metrics */
char *ngx_http_dstack_mesh_metrics_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_dstack_mesh_metrics(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_dstack_mesh_metrics_init_apps(ngx_conf_t *cf,
    ngx_array_t *apps);
ngx_int_t ngx_http_dstack_mesh_metrics_app(ngx_conf_t *cf, ngx_array_t *apps,
    u_char *name, size_t len);
char *ngx_http_dstack_mesh_metrics_check(ngx_conf_t *cf,
    ngx_http_dstack_mesh_main_conf_t *mmcf);
void ngx_http_dstack_mesh_count_inbound(ngx_http_request_t *r,
    ngx_http_dstack_mesh_caller_t *caller, ngx_int_t rc);
void ngx_http_dstack_mesh_count_outbound(ngx_http_dstack_mesh_main_conf_t *mmcf,
    ngx_http_dstack_mesh_ctx_t *ctx, ngx_http_dstack_mesh_outcome_e outcome);
void ngx_http_dstack_mesh_count_attempt(ngx_http_dstack_mesh_main_conf_t *mmcf,
    ngx_http_dstack_mesh_ctx_t *ctx, ngx_peer_connection_t *pc,
    ngx_uint_t state);
void ngx_http_dstack_mesh_count_idle(ngx_http_dstack_mesh_main_conf_t *mmcf,
    ngx_uint_t hit);

/* a short JSON answer, {"error": "..."} or the agent's /gateway */
ngx_int_t ngx_http_dstack_mesh_send_json(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *body);


#endif /* _NGX_HTTP_DSTACK_MESH_H_INCLUDED_ */
