/*
 * dstack-agent-sim: a stand-in for the dstack guest agent (dstack.sock) for
 * tests and demos.  Declarations shared by its files:
 *
 *   main.c     command line, identity of the simulated CVM, unix socket
 *   ca.c       the test KMS CA directory, created once and shared
 *   issue.c    P-256 keys and certificates
 *   request.c  GetTlsKey arguments, from a JSON body or a query string
 *   http.c     the HTTP API on libmicrohttpd
 *   log.c      one line per event on stderr
 */

#ifndef DSTACK_AGENT_SIM_H
#define DSTACK_AGENT_SIM_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "ratls.h"


#define SIM_NAME                "dstack-agent-sim"

/* validity of a leaf when the request names none */
#define SIM_LEAF_BACKDATE       3600
#define SIM_LEAF_LIFETIME       (365 * 86400)

/* 9999-12-31T23:59:59Z, the last instant an X.509 time can express */
#define SIM_TIME_MAX            INT64_C(253402300799)
#define SIM_TIME_UNSET          INT64_C(-1)

#define SIM_ALT_NAMES_MAX       64
#define SIM_DNS_NAME_MAX        253


/* the identity of the simulated CVM, fixed at start */
typedef struct {
    unsigned char   app_id[APP_ID_BYTES_MAX];
    size_t          app_id_len;
    char            app_id_hex[APP_ID_HEX_MAX + 1];
    char            instance_id_hex[APP_ID_HEX_MAX + 1];
    char            device_id_hex[2 * 32 + 1];
    const char     *app_name;
    X509_NAME      *subject;        /* CN = app_name, the default subject */
    int64_t         validity;       /* seconds from now of a leaf whose
                                       request names no time; 0: the
                                       default backdate and lifetime */
} sim_app_t;

/* the test KMS CA that every simulator on one CA directory shares */
typedef struct {
    X509           *cert;
    EVP_PKEY       *key;
    char           *pem;            /* cert, last element of every chain */
} sim_ca_t;

/* a validated GetTlsKey request */
typedef struct {
    X509_NAME      *subject;        /* NULL: the app's default subject */
    GENERAL_NAMES  *alt_names;      /* NULL: no subjectAltName */
    int             usage_ra_tls;
    int             usage_server_auth;
    int             usage_client_auth;
    int64_t         not_before;     /* unix seconds or SIM_TIME_UNSET */
    int64_t         not_after;
    unsigned        seen;           /* query fields given, by index */
} sim_tls_req_t;

/* a fresh key and its leaf certificate, both PEM */
typedef struct {
    char           *key;
    char           *cert;
} sim_issued_t;

/* what the HTTP handlers read; lives as long as the daemon */
typedef struct {
    const sim_app_t *app;
    const sim_ca_t  *ca;
    struct json_t   *info;          /* the /Info answer, built once */
} sim_server_t;

struct MHD_Daemon;


/* log.c */
void sim_log(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
/* the same, followed by the reason on top of OpenSSL's error queue */
void sim_log_ssl(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
void sim_logv(const char *fmt, va_list ap);

/* ca.c */
int sim_ca_open(sim_ca_t *ca, const char *dir);
void sim_ca_free(sim_ca_t *ca);

/* issue.c */
EVP_PKEY *sim_key_new(void);
X509_NAME *sim_name_cn(const char *cn, size_t len);
X509 *sim_cert_new(const X509_NAME *subject, const X509_NAME *issuer,
    EVP_PKEY *key, int64_t not_before, int64_t not_after);
int sim_cert_add_ext(X509 *cert, X509V3_CTX *ctx, int nid,
    const char *value);
int sim_issue(const sim_ca_t *ca, const sim_app_t *app,
    const sim_tls_req_t *req, sim_issued_t *out);
void sim_issued_free(sim_issued_t *issued);
char *sim_pem_cert(X509 *cert);
char *sim_pem_key(EVP_PKEY *key);

/* request.c: each returns 0, or the HTTP status (400, 500) with the
   reason for the client in err */
void sim_tls_req_init(sim_tls_req_t *req);
void sim_tls_req_free(sim_tls_req_t *req);
int sim_tls_req_json(sim_tls_req_t *req, const char *body, size_t len,
    char *err, size_t err_size);
int sim_tls_req_arg(sim_tls_req_t *req, const char *key, size_t key_len,
    const char *value, size_t len, char *err, size_t err_size);
int sim_tls_req_finish(sim_tls_req_t *req, const sim_app_t *app, int64_t now,
    char *err, size_t err_size);

/* http.c */
int sim_server_init(sim_server_t *srv, const sim_app_t *app,
    const sim_ca_t *ca);
void sim_server_free(sim_server_t *srv);
/* serves on listen_fd, which the daemon then owns; NULL on failure */
struct MHD_Daemon *sim_http_start(int listen_fd, sim_server_t *srv);

#endif /* DSTACK_AGENT_SIM_H */
