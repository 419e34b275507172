/*
 * RA-TLS certificate extensions issued by the dstack guest agent.
 *
 * Plain C on OpenSSL, no nginx types: compiled into the nginx module, the
 * control daemon and the guest-agent simulator alike.
 *
 * Every extension's extnValue OCTET STRING holds the DER encoding of a second
 * OCTET STRING whose content is the raw value (dstack `ra-tls` crate).
 */

#ifndef DSTACK_RATLS_H
#define DSTACK_RATLS_H

#include <stddef.h>
#include <openssl/x509.h>

#include "app_id.h"


#define RATLS_OID_TDX_QUOTE      "1.3.6.1.4.1.62397.1.1"
#define RATLS_OID_EVENT_LOG      "1.3.6.1.4.1.62397.1.2"
#define RATLS_OID_APP_ID         "1.3.6.1.4.1.62397.1.3"
#define RATLS_OID_CERT_USAGE     "1.3.6.1.4.1.62397.1.4"
#define RATLS_OID_ATTESTATION    "1.3.6.1.4.1.62397.1.8"
#define RATLS_OID_APP_INFO       "1.3.6.1.4.1.62397.1.9"

#define RATLS_CERT_USAGE_MAX     256


typedef enum {
    RATLS_OK = 0,
    RATLS_ABSENT,           /* the certificate has no such extension */
    RATLS_DUPLICATE,        /* the extension appears more than once */
    RATLS_MALFORMED,        /* inner value is not exactly one OCTET STRING */
    RATLS_EMPTY,            /* inner OCTET STRING has no content */
    RATLS_TOO_LONG,         /* value exceeds the caller's bound */
    RATLS_BAD_UTF8,         /* text value is not valid UTF-8 or holds NUL */
    RATLS_NO_MEMORY
} ratls_status_t;


/*
 * The app_id as lowercase hex, NUL-terminated, in "hex" which must hold
 * APP_ID_HEX_MAX + 1 bytes; *hex_len receives the length without NUL.
 */
ratls_status_t ratls_app_id_hex(X509 *cert, char *hex, size_t *hex_len);

/*
 * The special certificate usage (UTF-8 text), NUL-terminated, in "text"
 * which must hold RATLS_CERT_USAGE_MAX + 1 bytes.
 */
ratls_status_t ratls_cert_usage(X509 *cert, char *text, size_t *text_len);

/*
 * The raw value of the extension "oid" (dotted text), copied into "out" of
 * "size" bytes.  The building block of the two calls above.
 */
ratls_status_t ratls_ext_value(X509 *cert, const char *oid,
    unsigned char *out, size_t size, size_t *len);

/*
 * A new extension "oid" holding "value" in the dstack encoding, for issuing
 * certificates (simulator, tests).  NULL on failure.
 */
X509_EXTENSION *ratls_ext_new(const char *oid, const unsigned char *value,
    size_t len);

const char *ratls_strerror(ratls_status_t status);

#endif /* DSTACK_RATLS_H */
