/*
 * dstack-ctld/server/: the VPC server role (registry, API, long polls).
 *
 * The server role: settings, the state shared by its threads, and the
 * entry points main.c dispatches to.
 */

#ifndef CTLD_SERVER_H
#define CTLD_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/addr.h"
#include "lib/config.h"
#include "server/registry.h"
#include "server/store.h"
#include "server/writer.h"

#define SHARED_KEY_BYTES        64

/* everything the config file and the flags can set */
struct server_config {
    char      *listen;
    char      *data_dir;
    char      *allowed_apps;
    char      *reserve_name;
    char      *pool;
    char      *server_address;
    char      *server_name;
    char      *wg_endpoint;
    char      *server_url;
    char      *server_app_id;
    char      *gateway_domain;
    char      *log_level;
    char      *log_format;
    uint64_t   key_lifetime;
    uint64_t   max_wait;
    uint64_t   max_polls_per_token;
    uint64_t   max_keys_per_app;
    uint64_t   max_nodes_per_app;
    uint64_t   max_records_per_app;
    uint64_t   record_ttl;
    uint64_t   tombstone_ttl;
    uint64_t   threads;
    uint64_t   max_connections;
    uint64_t   max_body;
    uint64_t   socket_mode;
    uint64_t   wg_port;
    bool       allow_remote;
};

extern const struct opt  server_opts[];

struct server {
    struct server_config   cfg;
    struct addr_spec       listen;
    bool                   allow_any_app;
    char                 **allowed_apps;
    size_t                 nallowed_apps;
    uint32_t               pool_base;
    unsigned               pool_prefix;
    uint32_t               hub_addr;
    char                  *server_url;
    char                   shared_key[b64_len(SHARED_KEY_BYTES) + 1];
    unsigned char          admin_token_hash[SHA256_LEN];

    struct store           store;
    struct history         history;
    struct registry        reg;
    struct writer         *writer;
    struct MHD_Daemon     *mhd;
    _Atomic bool           storage_failed;      /* exit 1 for the supervisor */
};

/* defaults, then the config file, the environment and argv; 0 on success,
 * 1 after --help, -1 on error.  positional receives non-option words. */
int   server_config_load(struct server_config *cfg, int argc, char **argv,
                         char **positional, int max_pos, int *npos);
/* checks and resolves the settings into srv */
int   server_config_apply(struct server *srv);
void  server_config_free(struct server *srv);
void  server_usage(FILE *out);

int   server_main(int argc, char **argv);

/* HTTP front end (server_http.c) */
int   http_start(struct server *srv);
/* stop accepting connections; those open are still served */
void  http_quiesce(struct server *srv);
/* wait up to timeout_ms for every request begun to be answered */
bool  http_drain(struct server *srv, unsigned timeout_ms);
void  http_stop(struct server *srv);

#endif
