/*
 * One HTTP/1.1 connection upgraded to another protocol (the relay
 * stream): libcurl connects (TCP or a unix socket), http-parser reads the
 * answer, and the connection is then a byte stream both ways.
 */

#ifndef CTLD_HTTP_UPGRADE_H
#define CTLD_HTTP_UPGRADE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "lib/addr.h"

struct http_upgrade {
    void      *curl;
    int        fd;              /* to poll() */
    size_t     extra_len;       /* stream bytes read with the answer */
    uint8_t    extra[4096];
};

/*
 * Sends "GET path" asking for protocol, with bearer and headers ("Name:
 * value", NULL-ended), and reads the answer within timeout_ms.  0: 101
 * with that protocol, *u open; else -1, *status the answer's (0 when none
 * came) and err filled.
 */
int      http_upgrade_open(struct http_upgrade *u, const struct addr_spec *to,
                           const char *path, const char *protocol,
                           const char *bearer, const char *const *headers,
                           long timeout_ms, long *status, char *err, size_t errsz);
/* n bytes moved, 0 when it would block, -1 closed or failed */
ssize_t  http_upgrade_send(void *u, void *buf, size_t n);
ssize_t  http_upgrade_recv(void *u, void *buf, size_t n);
void     http_upgrade_close(struct http_upgrade *u);

#endif
