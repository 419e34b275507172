/*
 * Outbound mesh targets: see mesh_target.h.
 */

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "app_id.h"
#include "mesh_target.h"
#include "parse.h"


static int
parse_port(uint16_t *port, const char *s, size_t len)
{
    uint64_t  n;

    if (len == 0) {
        *port = MESH_TARGET_DEFAULT_PORT;
        return 1;
    }

    /* five digits at most, so "000443" is refused */

    if (len > 5 || !parse_uint(s, len, 65535, &n) || n == 0) {
        return 0;
    }

    *port = (uint16_t) n;
    return 1;
}


static int
parse_tls(int *tls, const char *s, size_t len)
{
    static const char  *on[] = { "on", "true", "1" };
    static const char  *off[] = { "off", "false", "0" };
    size_t              i;

    if (len == 0) {
        *tls = 1;
        return 1;
    }

    for (i = 0; i < sizeof(on) / sizeof(on[0]); i++) {
        if (len == strlen(on[i]) && strncasecmp(s, on[i], len) == 0) {
            *tls = 1;
            return 1;
        }

        if (len == strlen(off[i]) && strncasecmp(s, off[i], len) == 0) {
            *tls = 0;
            return 1;
        }
    }

    return 0;
}


mesh_target_status_t
mesh_target_parse(mesh_target_t *t, const char *app, size_t app_len,
    const char *port, size_t port_len, const char *instance,
    size_t instance_len, const char *tls, size_t tls_len)
{
    if (app_len == 0) {
        return MESH_TARGET_NO_APP;
    }

    if (!app_id_parse(app, app_len, MESH_TARGET_ID_MAX, t->app_id)) {
        return MESH_TARGET_BAD_APP;
    }

    if (instance_len == 0) {
        memcpy(t->host_id, t->app_id, app_len + 1);

    } else if (!app_id_parse(instance, instance_len, MESH_TARGET_ID_MAX,
                             t->host_id))
    {
        return MESH_TARGET_BAD_INSTANCE;
    }

    if (!parse_port(&t->port, port, port_len)) {
        return MESH_TARGET_BAD_PORT;
    }

    if (!parse_tls(&t->tls, tls, tls_len)) {
        return MESH_TARGET_BAD_TLS;
    }

    return MESH_TARGET_OK;
}


size_t
mesh_target_host(const mesh_target_t *t, const char *domain,
    size_t domain_len, char *out, size_t size)
{
    int     n;
    size_t  i;

    if (domain_len == 0 || domain_len > 253) {
        return 0;
    }

    for (i = 0; i < domain_len; i++) {
        if (!((domain[i] >= 'a' && domain[i] <= 'z')
              || (domain[i] >= 'A' && domain[i] <= 'Z')
              || (domain[i] >= '0' && domain[i] <= '9')
              || domain[i] == '-' || domain[i] == '.'))
        {
            return 0;
        }
    }

    n = snprintf(out, size, "%s-%u%s.%.*s", t->host_id, (unsigned) t->port,
                 t->tls ? "s" : "", (int) domain_len, domain);

    if (n < 0 || (size_t) n >= size) {
        return 0;
    }

    return (size_t) n;
}


const char *
mesh_target_strerror(mesh_target_status_t status)
{
    switch (status) {
    case MESH_TARGET_OK:
        return "ok";
    case MESH_TARGET_NO_APP:
        return "no target app";
    case MESH_TARGET_BAD_APP:
        return "target app must be an even number of 2 to 56 hex digits";
    case MESH_TARGET_BAD_INSTANCE:
        return "target instance must be an even number of 2 to 56 hex digits";
    case MESH_TARGET_BAD_PORT:
        return "target port must be a number from 1 to 65535";
    case MESH_TARGET_BAD_TLS:
        return "target tls must be on, off, true, false, 1 or 0";
    }

    return "invalid target";
}
