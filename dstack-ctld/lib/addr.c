/* Parsing of listen / connect addresses. */

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "lib/addr.h"
#include "parse.h"


int
addr_spec_parse(const char *spec, struct addr_spec *out)
{
    host_port_t  hp;

    memset(out, 0, sizeof(*out));
    if (strncmp(spec, "unix:", 5) == 0) {
        if (spec[5] != '/' || strlen(spec + 5) >= sizeof(out->path)) {
            return -1;
        }
        out->is_unix = true;
        snprintf(out->path, sizeof(out->path), "%s", spec + 5);
        return 0;
    }

    if (!parse_host_port(spec, strlen(spec), &hp)
        || hp.host_len >= sizeof(out->host))
    {
        return -1;
    }
    memcpy(out->host, hp.host, hp.host_len);
    out->host[hp.host_len] = '\0';
    snprintf(out->port, sizeof(out->port), "%u", (unsigned) hp.port);
    return 0;
}
