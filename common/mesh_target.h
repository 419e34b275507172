/*
 * Outbound mesh targets: the app (and optionally instance and port) a
 * request names, validated, and the gateway host name that reaches it.
 *
 * Plain C, no nginx types, so the fuzz target exercises exactly this code.
 */

#ifndef DSTACK_MESH_TARGET_H
#define DSTACK_MESH_TARGET_H

#include <stddef.h>
#include <stdint.h>


/*
 * "ID-65535s" must fit in one DNS label (63 characters), which bounds an
 * app or instance id at 56 hex digits; dstack ids are 40.
 */
#define MESH_TARGET_ID_MAX       56

/* "ID-PPPPPs." + the gateway domain (a DNS name is at most 253 characters) */
#define MESH_TARGET_HOST_MAX     (MESH_TARGET_ID_MAX + 8 + 253)

#define MESH_TARGET_DEFAULT_PORT 443


typedef struct {
    char      app_id[MESH_TARGET_ID_MAX + 1];    /* lowercase; the pin */
    char      host_id[MESH_TARGET_ID_MAX + 1];   /* instance, else app */
    uint16_t  port;
    int       tls;                               /* passthrough + mTLS */
} mesh_target_t;


typedef enum {
    MESH_TARGET_OK = 0,
    MESH_TARGET_NO_APP,          /* empty app: the request is for the agent */
    MESH_TARGET_BAD_APP,
    MESH_TARGET_BAD_INSTANCE,
    MESH_TARGET_BAD_PORT,
    MESH_TARGET_BAD_TLS
} mesh_target_status_t;


/*
 * Parses the four target values as given (header values or configuration);
 * empty port means 443, empty tls means on, empty instance means none.
 */
mesh_target_status_t mesh_target_parse(mesh_target_t *t,
    const char *app, size_t app_len, const char *port, size_t port_len,
    const char *instance, size_t instance_len, const char *tls,
    size_t tls_len);

/*
 * Writes "ID-Ps.DOMAIN" (tls on) or "ID-P.DOMAIN" into "out" of "size"
 * bytes, NUL-terminated; returns its length, or 0 if it does not fit or the
 * domain is not a plausible DNS name.
 */
size_t mesh_target_host(const mesh_target_t *t, const char *domain,
    size_t domain_len, char *out, size_t size);

const char *mesh_target_strerror(mesh_target_status_t status);

#endif /* DSTACK_MESH_TARGET_H */
