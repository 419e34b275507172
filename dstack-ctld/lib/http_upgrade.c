/*
 * An upgraded HTTP/1.1 connection (lib/http_upgrade.h).  libcurl has no
 * generic upgrade (its WebSocket support is off in Debian's build), so it
 * only connects (CURLOPT_CONNECT_ONLY) and moves bytes; the answer is
 * parsed by http-parser, which stops where the new protocol begins.
 */

#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <http_parser.h>
#include <openssl/crypto.h>

#include "lib/http_client.h"
#include "lib/http_upgrade.h"
#include "lib/util.h"

#define REQUEST_MAX  2048

struct answer {
    const char  *protocol;
    bool         in_upgrade;        /* the header being read is Upgrade */
    bool         protocol_ok;
    bool         done;
};


static int
on_field(http_parser *p, const char *at, size_t len)
{
    struct answer *a = p->data;

    a->in_upgrade = len == 7 && strncasecmp(at, "upgrade", 7) == 0;
    return 0;
}


static int
on_value(http_parser *p, const char *at, size_t len)
{
    struct answer *a = p->data;

    if (a->in_upgrade) {
        a->protocol_ok = len == strlen(a->protocol)
                         && strncasecmp(at, a->protocol, len) == 0;
    }
    return 0;
}


static int
on_headers_complete(http_parser *p)
{
    struct answer *a = p->data;

    a->done = true;
    return 1;               /* no body is read: 1 is "skip it" */
}


/* waits for fd to be readable (or writable) until deadline: 0, or -1 */
static int
wait_fd(int fd, bool out, uint64_t deadline)
{
    uint64_t       now = clock_mono_ms();
    struct pollfd  p = { .fd = fd, .events = out ? POLLOUT : POLLIN };

    if (now >= deadline) {
        return -1;
    }
    return poll(&p, 1, (int) (deadline - now)) > 0 ? 0 : -1;
}


int
http_upgrade_open(struct http_upgrade *u, const struct addr_spec *to,
                  const char *path, const char *protocol, const char *bearer,
                  const char *const *headers, long timeout_ms, long *status,
                  char *err, size_t errsz)
{
    CURL                  *curl;
    CURLcode               rc;
    curl_socket_t          fd;
    http_parser            parser;
    http_parser_settings   settings;
    struct answer          a = { .protocol = protocol };
    char                   url[512], req[REQUEST_MAX], buf[4096];
    const char            *host;
    uint64_t               deadline = clock_mono_ms() + (uint64_t) timeout_ms;
    size_t                 len = 0, off = 0, k, parsed;
    int                    n;

    memset(u, 0, sizeof(*u));
    u->fd = -1;
    *status = 0;
    curl = curl_easy_init();
    if (curl == NULL) {
        snprintf(err, errsz, "cannot initialise libcurl");
        return -1;
    }
    host = http_client_target(curl, to, "/", url, sizeof(url));
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CONNECT_ONLY, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http");
    rc = curl_easy_perform(curl);
    if (rc != CURLE_OK
        || curl_easy_getinfo(curl, CURLINFO_ACTIVESOCKET, &fd) != CURLE_OK
        || fd == CURL_SOCKET_BAD)
    {
        snprintf(err, errsz, "%s: %s", url, curl_easy_strerror(rc));
        curl_easy_cleanup(curl);
        return -1;
    }
    u->curl = curl;
    u->fd = fd;

    n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\n"
                 "Connection: Upgrade\r\nUpgrade: %s\r\n", path, host, protocol);
    if (bearer != NULL && n > 0 && (size_t) n < sizeof(req)) {
        n += snprintf(req + n, sizeof(req) - (size_t) n,
                      "Authorization: Bearer %s\r\n", bearer);
    }
    for (; headers != NULL && *headers != NULL && n > 0 && (size_t) n < sizeof(req);
         headers++)
    {
        n += snprintf(req + n, sizeof(req) - (size_t) n, "%s\r\n", *headers);
    }
    if (n > 0 && (size_t) n < sizeof(req)) {
        n += snprintf(req + n, sizeof(req) - (size_t) n, "\r\n");
    }
    if (n <= 0 || (size_t) n >= sizeof(req)) {
        snprintf(err, errsz, "the request is too long");
        goto fail;
    }
    len = (size_t) n;
    while (off < len) {
        rc = curl_easy_send(curl, req + off, len - off, &k);
        if (rc == CURLE_AGAIN) {
            if (wait_fd(fd, true, deadline) != 0) {
                snprintf(err, errsz, "%s: timed out sending", url);
                goto fail;
            }
            continue;
        }
        if (rc != CURLE_OK) {
            snprintf(err, errsz, "%s: %s", url, curl_easy_strerror(rc));
            goto fail;
        }
        off += k;
    }
    OPENSSL_cleanse(req, sizeof(req));

    http_parser_init(&parser, HTTP_RESPONSE);
    parser.data = &a;
    http_parser_settings_init(&settings);
    settings.on_header_field = on_field;
    settings.on_header_value = on_value;
    settings.on_headers_complete = on_headers_complete;
    while (!a.done) {
        rc = curl_easy_recv(curl, buf, sizeof(buf), &k);
        if (rc == CURLE_AGAIN) {
            if (wait_fd(fd, false, deadline) != 0) {
                snprintf(err, errsz, "%s: no answer in time", url);
                goto fail;
            }
            continue;
        }
        if (rc != CURLE_OK || k == 0) {
            snprintf(err, errsz, "%s: %s", url, rc != CURLE_OK
                     ? curl_easy_strerror(rc) : "closed before answering");
            goto fail;
        }
        parsed = http_parser_execute(&parser, &settings, buf, k);
        if (HTTP_PARSER_ERRNO(&parser) != HPE_OK && !a.done) {
            snprintf(err, errsz, "%s: a malformed answer (%s)", url,
                     http_errno_name(HTTP_PARSER_ERRNO(&parser)));
            goto fail;
        }
        if (a.done) {
            *status = (long) parser.status_code;
            /* http-parser stops before a 101's stream, or after our
             * on_headers_complete when it is no upgrade */
            if (parser.status_code != 101 || !parser.upgrade || !a.protocol_ok) {
                snprintf(err, errsz, "%s: answered %u%s", url, parser.status_code,
                         parser.status_code == 101 ? " with another protocol" : "");
                goto fail;
            }
            if (parsed < k) {
                u->extra_len = k - parsed;
                memcpy(u->extra, buf + parsed, u->extra_len);
            }
        }
    }
    return 0;

fail:
    OPENSSL_cleanse(req, sizeof(req));
    http_upgrade_close(u);
    return -1;
}


ssize_t
http_upgrade_send(void *arg, void *buf, size_t n)
{
    struct http_upgrade *u = arg;
    size_t               k = 0;
    CURLcode             rc = curl_easy_send(u->curl, buf, n, &k);

    return rc == CURLE_AGAIN ? 0 : rc == CURLE_OK ? (ssize_t) k : -1;
}


ssize_t
http_upgrade_recv(void *arg, void *buf, size_t n)
{
    struct http_upgrade *u = arg;
    size_t               k = 0;
    CURLcode             rc = curl_easy_recv(u->curl, buf, n, &k);

    if (rc == CURLE_AGAIN) {
        return 0;
    }
    return rc == CURLE_OK && k > 0 ? (ssize_t) k : -1;
}


void
http_upgrade_close(struct http_upgrade *u)
{
    if (u->curl != NULL) {
        curl_easy_cleanup(u->curl);
    }
    u->curl = NULL;
    u->fd = -1;
}
