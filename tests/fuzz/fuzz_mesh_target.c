/*
 * libFuzzer target: the target header values (app, port, instance, tls),
 * taken from the input split at newlines, then the gateway host name.
 */

#include <stdint.h>
#include <string.h>

#include "mesh_target.h"


static const char *
next_field(const char **p, const char *end, size_t *len)
{
    const char  *start, *nl;

    start = *p;
    nl = memchr(start, '\n', (size_t) (end - start));

    *len = (size_t) ((nl ? nl : end) - start);
    *p = nl ? nl + 1 : end;

    return start;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char                  host[MESH_TARGET_HOST_MAX + 1];
    size_t                i, n, len[5];
    const char           *p, *end, *field[5];
    mesh_target_t         t;
    mesh_target_status_t  status;

    p = (const char *) data;
    end = p + size;

    for (i = 0; i < 5; i++) {
        field[i] = next_field(&p, end, &len[i]);
    }

    status = mesh_target_parse(&t, field[0], len[0], field[1], len[1],
                               field[2], len[2], field[3], len[3]);
    if (status != MESH_TARGET_OK) {
        return 0;
    }

    /* what passes must be safe to put in SNI, a Host header and a log */

    for (i = 0; t.app_id[i]; i++) {
        if (!((t.app_id[i] >= '0' && t.app_id[i] <= '9')
              || (t.app_id[i] >= 'a' && t.app_id[i] <= 'f')))
        {
            __builtin_trap();
        }
    }

    if (i == 0 || i > MESH_TARGET_ID_MAX || t.port == 0) {
        __builtin_trap();
    }

    n = mesh_target_host(&t, field[4], len[4], host, sizeof(host));

    if (n >= sizeof(host) || (n && strlen(host) != n)) {
        __builtin_trap();
    }

    return 0;
}
