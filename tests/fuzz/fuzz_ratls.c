/*
 * libFuzzer target: arbitrary bytes as the extnValue content of the app_id
 * and special-usage extensions of an otherwise valid certificate.
 */

#include <stdint.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "app_id.h"
#include "ratls.h"


static X509 *
cert_with_ext(const char *oid, const uint8_t *data, size_t size)
{
    X509               *cert;
    ASN1_OBJECT        *obj;
    X509_EXTENSION     *ext;
    ASN1_OCTET_STRING  *value;

    cert = X509_new();
    obj = OBJ_txt2obj(oid, 1);
    value = ASN1_OCTET_STRING_new();

    if (cert != NULL && obj != NULL && value != NULL
        && ASN1_OCTET_STRING_set(value, data, (int) size))
    {
        ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, value);
        if (ext != NULL) {
            X509_add_ext(cert, ext, -1);
            X509_EXTENSION_free(ext);
        }
    }

    ASN1_OCTET_STRING_free(value);
    ASN1_OBJECT_free(obj);

    return cert;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char    hex[APP_ID_HEX_MAX + 1], text[RATLS_CERT_USAGE_MAX + 1];
    size_t  len;
    X509   *cert;

    if (size > 4096) {
        return 0;
    }

    cert = cert_with_ext(RATLS_OID_APP_ID, data, size);
    if (cert != NULL) {
        if (ratls_app_id_hex(cert, hex, &len) == RATLS_OK
            && (len != strlen(hex) || len > APP_ID_HEX_MAX))
        {
            __builtin_trap();
        }

        X509_free(cert);
    }

    cert = cert_with_ext(RATLS_OID_CERT_USAGE, data, size);
    if (cert != NULL) {
        if (ratls_cert_usage(cert, text, &len) == RATLS_OK
            && len != strlen(text))
        {
            __builtin_trap();
        }

        X509_free(cert);
    }

    /* what passes as an app id is lowercase hex of the same length */

    if (app_id_parse((const char *) data, size, APP_ID_HEX_MAX, hex)
        && (strlen(hex) != size || strspn(hex, "0123456789abcdef") != size))
    {
        __builtin_trap();
    }

    return 0;
}
