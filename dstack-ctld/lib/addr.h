/* "host:port", "[v6]:port" or "unix:/path": where to listen or connect. */

#ifndef CTLD_ADDR_H
#define CTLD_ADDR_H

#include <stdbool.h>

struct addr_spec {
    bool   is_unix;
    char   path[108];               /* sun_path */
    char   host[256];
    char   port[8];
};

int  addr_spec_parse(const char *spec, struct addr_spec *out);

#endif
