/*
 * A small blocking HTTP client on libcurl, over TCP or a unix socket, for
 * the admin CLI and the node role's calls to the server and the agent.
 */

#ifndef CTLD_HTTP_CLIENT_H
#define CTLD_HTTP_CLIENT_H

#include <signal.h>
#include <stddef.h>

#include "lib/addr.h"

struct http_response {
    long     status;
    char    *body;          /* malloc'd, NUL-terminated */
    size_t   len;
};

/*
 * 0 when an answer arrived (whatever its status), -1 with err filled on a
 * transport failure.  bearer, headers ("Name: value" lines, NULL-ended)
 * and json_body may be NULL.  A listen address of 0.0.0.0 or :: is
 * reached on the loopback.
 */
int   http_client_request(const struct addr_spec *to, const char *method,
                          const char *path, const char *bearer,
                          const char *const *headers, const char *json_body,
                          long timeout_s, struct http_response *out,
                          char *err, size_t errsz);
void  http_response_free(struct http_response *resp);

/*
 * Points curl (a CURL *) at to: the unix socket, or the URL's host and
 * port; url gets "http://HOST:PORT" + path.  Gives the host, as a Host
 * header names it.  A listen address of 0.0.0.0 or :: is the loopback.
 */
const char *http_client_target(void *curl, const struct addr_spec *to,
                               const char *path, char *url, size_t urlsz);

/*
 * From now on a transfer in progress is abandoned (within a second) once
 * *flag is non-zero, as when a signal handler asks the process to stop.
 */
void  http_client_set_cancel(const volatile sig_atomic_t *flag);

#endif
