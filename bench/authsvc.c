/*
 * authsvc: the original dstack-mesh inbound design, as the baseline of the
 * auth_request comparison (see README.md).
 *
 * nginx sends every request's client certificate here through auth_request,
 * as $ssl_client_escaped_cert in X-Client-Cert.  Like the original, each
 * request is handled from scratch: URL-decode, parse the PEM, read the RA-TLS
 * app_id extension, answer 200 with X-Dstack-App-Id (or 401).  It is made as
 * cheap as the design allows (one epoll thread, libmicrohttpd's turbo mode,
 * a unix socket, keepalive from nginx) so the comparison measures the
 * design, not a slow stand-in.
 *
 * usage: authsvc SOCKET_PATH   (runs until SIGTERM or SIGINT)
 */

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "hex.h"
#include "ratls.h"


/* %XX-decodes src into dst (at least strlen(src) bytes); length, or -1 if malformed */
static long
url_decode(const char *src, char *dst)
{
    char *out = dst;

    while (*src != '\0') {
        if (*src != '%') {
            *out++ = *src++;
            continue;
        }
        int hi = hex_digit(src[1]);
        int lo = hi < 0 ? -1 : hex_digit(src[2]);
        if (lo < 0) {
            return -1;
        }
        *out++ = (char) (hi * 16 + lo);
        src += 3;
    }
    return out - dst;
}

/* the app_id of the escaped PEM certificate, in hex (APP_ID_HEX_MAX + 1 bytes) */
static int
app_id_of(const char *escaped, char *hex)
{
    size_t len = strlen(escaped), hex_len;
    char *pem = malloc(len + 1);
    int ok = 0;

    if (pem == NULL) {
        return 0;
    }

    long n = url_decode(escaped, pem);
    if (n > 0) {
        BIO *bio = BIO_new_mem_buf(pem, (int) n);
        X509 *cert = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;

        ok = cert != NULL && ratls_app_id_hex(cert, hex, &hex_len) == RATLS_OK;
        X509_free(cert);
        BIO_free(bio);
    }

    /* a bad certificate is a 401, not a reason to keep errors queued */
    ERR_clear_error();
    free(pem);
    return ok;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **req_cls)
{
    static int  headers_seen;

    (void) cls; (void) url; (void) method; (void) version;
    (void) upload_data; (void) upload_data_size;

    /*
     * The first call comes with the headers.  libmicrohttpd closes the
     * connection after a response queued then (the body might still be
     * coming), so answer on the second call, after the empty body, to keep
     * nginx's upstream connection alive.
     */
    if (*req_cls == NULL) {
        *req_cls = &headers_seen;
        return MHD_YES;
    }

    char hex[APP_ID_HEX_MAX + 1];
    const char *escaped = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                      "X-Client-Cert");
    int ok = escaped != NULL && app_id_of(escaped, hex);

    struct MHD_Response *resp =
        MHD_create_response_from_buffer(0, (void *) "", MHD_RESPMEM_PERSISTENT);
    if (resp == NULL) {
        return MHD_NO;
    }

    enum MHD_Result r = MHD_YES;
    if (ok) {
        r = MHD_add_response_header(resp, "X-Dstack-App-Id", hex);
    }
    if (r == MHD_YES) {
        r = MHD_queue_response(conn, ok ? MHD_HTTP_OK : MHD_HTTP_UNAUTHORIZED, resp);
    }
    MHD_destroy_response(resp);
    return r;
}

static int
listen_unix(const char *path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };

    if (strlen(path) >= sizeof addr.sun_path) {
        fprintf(stderr, "authsvc: socket path too long\n");
        return -1;
    }
    strcpy(addr.sun_path, path);

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0
        || (unlink(path) != 0 && errno != ENOENT)
        || bind(fd, (struct sockaddr *) &addr, sizeof addr) != 0
        || listen(fd, 1024) != 0)
    {
        fprintf(stderr, "authsvc: %s: %s\n", path, strerror(errno));
        if (fd >= 0) {
            (void) close(fd);
        }
        return -1;
    }
    return fd;
}

int
main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: authsvc SOCKET_PATH\n");
        return 2;
    }

    /* block the stop signals before the server thread starts, so it inherits the mask */
    sigset_t stop;
    int sig;
    if (sigemptyset(&stop) != 0 || sigaddset(&stop, SIGTERM) != 0
        || sigaddset(&stop, SIGINT) != 0
        || pthread_sigmask(SIG_BLOCK, &stop, NULL) != 0)
    {
        fprintf(stderr, "authsvc: cannot block signals\n");
        return 1;
    }

    int fd = listen_unix(argv[1]);
    if (fd < 0) {
        return 1;
    }

    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_TURBO | MHD_USE_ERROR_LOG,
        0, NULL, NULL, on_request, NULL,
        MHD_OPTION_LISTEN_SOCKET, fd,
        MHD_OPTION_CONNECTION_LIMIT, 1000u,
        MHD_OPTION_END);
    if (d == NULL) {
        fprintf(stderr, "authsvc: MHD_start_daemon() failed\n");
        return 1;
    }

    int rc = sigwait(&stop, &sig) == 0 ? 0 : 1;

    MHD_stop_daemon(d);
    if (unlink(argv[1]) != 0) {
        fprintf(stderr, "authsvc: unlink %s: %s\n", argv[1], strerror(errno));
        rc = 1;
    }
    return rc;
}
