/*
 * RA-TLS certificate extensions: see ratls.h.
 *
 * OpenSSL does the ASN.1; this file only checks that what it decoded is
 * exactly one OCTET STRING with no trailing bytes, and bounds every copy.
 */

#include <string.h>

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

#include "ratls.h"


static X509_EXTENSION *ratls_find_ext(X509 *cert, const ASN1_OBJECT *obj,
    ratls_status_t *status);


static X509_EXTENSION *
ratls_find_ext(X509 *cert, const ASN1_OBJECT *obj, ratls_status_t *status)
{
    int             i, n;
    X509_EXTENSION *ext, *found;

    found = NULL;
    n = X509_get_ext_count(cert);

    /* RFC 5280 forbids repeating an extension; a second copy is an attack */

    for (i = 0; i < n; i++) {
        ext = X509_get_ext(cert, i);

        if (OBJ_cmp(X509_EXTENSION_get_object(ext), obj) != 0) {
            continue;
        }

        if (found != NULL) {
            *status = RATLS_DUPLICATE;
            return NULL;
        }

        found = ext;
    }

    *status = (found != NULL) ? RATLS_OK : RATLS_ABSENT;
    return found;
}


ratls_status_t
ratls_ext_value(X509 *cert, const char *oid, unsigned char *out, size_t size,
    size_t *len)
{
    long                  outer_len;
    ASN1_OBJECT          *obj;
    ratls_status_t        status;
    X509_EXTENSION       *ext;
    ASN1_OCTET_STRING    *outer, *inner;
    const unsigned char  *p, *end;

    obj = OBJ_txt2obj(oid, 1);
    if (obj == NULL) {
        return RATLS_NO_MEMORY;
    }

    ext = ratls_find_ext(cert, obj, &status);
    ASN1_OBJECT_free(obj);

    if (ext == NULL) {
        return status;
    }

    outer = X509_EXTENSION_get_data(ext);
    p = ASN1_STRING_get0_data(outer);
    outer_len = ASN1_STRING_length(outer);
    end = p + outer_len;

    inner = d2i_ASN1_OCTET_STRING(NULL, &p, outer_len);
    if (inner == NULL) {
        /* a hostile certificate is an answer, not an error to leave queued */
        ERR_clear_error();
        return RATLS_MALFORMED;
    }

    if (p != end) {
        status = RATLS_MALFORMED;

    } else if (ASN1_STRING_length(inner) == 0) {
        status = RATLS_EMPTY;

    } else if ((size_t) ASN1_STRING_length(inner) > size) {
        status = RATLS_TOO_LONG;

    } else {
        *len = ASN1_STRING_length(inner);
        memcpy(out, ASN1_STRING_get0_data(inner), *len);
        status = RATLS_OK;
    }

    ASN1_OCTET_STRING_free(inner);
    return status;
}


ratls_status_t
ratls_app_id_hex(X509 *cert, char *hex, size_t *hex_len)
{
    size_t                i, len;
    ratls_status_t        status;
    unsigned char         raw[APP_ID_BYTES_MAX];
    static const char     digits[] = "0123456789abcdef";

    status = ratls_ext_value(cert, RATLS_OID_APP_ID, raw, sizeof(raw), &len);
    if (status != RATLS_OK) {
        return status;
    }

    for (i = 0; i < len; i++) {
        hex[2 * i] = digits[raw[i] >> 4];
        hex[2 * i + 1] = digits[raw[i] & 0x0f];
    }

    hex[2 * len] = '\0';
    *hex_len = 2 * len;

    return RATLS_OK;
}


ratls_status_t
ratls_cert_usage(X509 *cert, char *text, size_t *text_len)
{
    size_t          len;
    ratls_status_t  status;
    ASN1_STRING    *check;

    status = ratls_ext_value(cert, RATLS_OID_CERT_USAGE,
                             (unsigned char *) text, RATLS_CERT_USAGE_MAX,
                             &len);
    if (status != RATLS_OK) {
        return status;
    }

    if (memchr(text, '\0', len) != NULL) {
        return RATLS_BAD_UTF8;
    }

    /* let OpenSSL's UTF-8 decoder judge the bytes */

    check = NULL;
    if (ASN1_mbstring_copy(&check, (unsigned char *) text, (int) len,
                           MBSTRING_UTF8, B_ASN1_UTF8STRING) < 0)
    {
        ERR_clear_error();
        return RATLS_BAD_UTF8;
    }

    ASN1_STRING_free(check);

    text[len] = '\0';
    *text_len = len;

    return RATLS_OK;
}


X509_EXTENSION *
ratls_ext_new(const char *oid, const unsigned char *value, size_t len)
{
    int                 der_len;
    ASN1_OBJECT        *obj;
    unsigned char      *der;
    X509_EXTENSION     *ext;
    ASN1_OCTET_STRING  *inner, *outer;

    ext = NULL;
    der = NULL;
    outer = NULL;

    obj = OBJ_txt2obj(oid, 1);
    inner = ASN1_OCTET_STRING_new();

    if (obj == NULL || inner == NULL
        || !ASN1_OCTET_STRING_set(inner, value, (int) len))
    {
        goto done;
    }

    der_len = i2d_ASN1_OCTET_STRING(inner, &der);
    if (der_len <= 0) {
        goto done;
    }

    outer = ASN1_OCTET_STRING_new();
    if (outer == NULL || !ASN1_OCTET_STRING_set(outer, der, der_len)) {
        goto done;
    }

    ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, outer);

done:

    ASN1_OBJECT_free(obj);
    ASN1_OCTET_STRING_free(inner);
    ASN1_OCTET_STRING_free(outer);
    OPENSSL_free(der);

    return ext;
}


const char *
ratls_strerror(ratls_status_t status)
{
    switch (status) {
    case RATLS_OK:
        return "ok";
    case RATLS_ABSENT:
        return "extension absent";
    case RATLS_DUPLICATE:
        return "extension present more than once";
    case RATLS_MALFORMED:
        return "extension value is not one OCTET STRING";
    case RATLS_EMPTY:
        return "extension value is empty";
    case RATLS_TOO_LONG:
        return "extension value too long";
    case RATLS_BAD_UTF8:
        return "extension value is not UTF-8 text";
    case RATLS_NO_MEMORY:
        return "out of memory";
    }

    return "unknown error";
}
