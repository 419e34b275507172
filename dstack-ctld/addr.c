/* Parsing of listen / connect addresses. */

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "addr.h"
#include "util.h"


int
addr_spec_parse(const char *spec, struct addr_spec *out)
{
    const char  *colon, *host;
    size_t       hlen;
    uint64_t     port;

    memset(out, 0, sizeof(*out));
    if (strncmp(spec, "unix:", 5) == 0) {
        if (spec[5] != '/' || strlen(spec + 5) >= sizeof(out->path)) {
            return -1;
        }
        out->is_unix = true;
        snprintf(out->path, sizeof(out->path), "%s", spec + 5);
        return 0;
    }

    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (close == NULL || close[1] != ':') {
            return -1;
        }
        host = spec + 1;
        hlen = (size_t) (close - host);
        colon = close + 1;
    } else {
        colon = strrchr(spec, ':');
        if (colon == NULL) {
            return -1;
        }
        host = spec;
        hlen = (size_t) (colon - spec);
    }
    if (hlen == 0 || hlen >= sizeof(out->host)
        || !parse_u64(colon + 1, 65535, &port))
    {
        return -1;
    }
    memcpy(out->host, host, hlen);
    out->host[hlen] = '\0';
    snprintf(out->port, sizeof(out->port), "%u", (unsigned) port);
    return 0;
}
