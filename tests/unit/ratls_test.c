/*
 * RA-TLS extension parsing against certificates with crafted extension DER.
 *
 * Every certificate is signed, encoded to DER and decoded again before it is
 * examined, so the parser sees what it sees in a TLS handshake.
 */

#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

#include "app_id.h"
#include "ratls.h"
#include "tap.h"


typedef struct {
    const char           *oid;
    const unsigned char  *der;      /* the extnValue content, as crafted */
    size_t                len;
} test_ext_t;


static EVP_PKEY  *key;


static X509 *
make_cert(const test_ext_t *exts, size_t n)
{
    size_t               i;
    X509                *cert, *decoded;
    ASN1_OBJECT         *obj;
    unsigned char       *der;
    X509_EXTENSION      *ext;
    const unsigned char *p;
    ASN1_OCTET_STRING   *value;
    int                  der_len;

    cert = X509_new();
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_ASC,
                               (const unsigned char *) "test", -1, -1, 0);
    X509_set_issuer_name(cert, X509_get_subject_name(cert));
    X509_gmtime_adj(X509_getm_notBefore(cert), 0);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_set_pubkey(cert, key);

    for (i = 0; i < n; i++) {
        obj = OBJ_txt2obj(exts[i].oid, 1);
        value = ASN1_OCTET_STRING_new();
        ASN1_OCTET_STRING_set(value, exts[i].der, (int) exts[i].len);
        ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, value);
        X509_add_ext(cert, ext, -1);
        X509_EXTENSION_free(ext);
        ASN1_OCTET_STRING_free(value);
        ASN1_OBJECT_free(obj);
    }

    X509_sign(cert, key, EVP_sha256());

    der = NULL;
    der_len = i2d_X509(cert, &der);
    X509_free(cert);

    p = der;
    decoded = d2i_X509(NULL, &p, der_len);
    OPENSSL_free(der);

    return decoded;
}


static ratls_status_t
app_id_of(const unsigned char *der, size_t len, char *hex)
{
    size_t          hex_len;
    X509           *cert;
    test_ext_t      ext = { RATLS_OID_APP_ID, der, len };
    ratls_status_t  status;

    cert = make_cert(&ext, 1);
    status = ratls_app_id_hex(cert, hex, &hex_len);
    X509_free(cert);

    if (status == RATLS_OK && hex_len != strlen(hex)) {
        return RATLS_NO_MEMORY;
    }

    return status;
}


static ratls_status_t
usage_of(const unsigned char *der, size_t len, char *text)
{
    size_t          text_len;
    X509           *cert;
    test_ext_t      ext = { RATLS_OID_CERT_USAGE, der, len };
    ratls_status_t  status;

    cert = make_cert(&ext, 1);
    status = ratls_cert_usage(cert, text, &text_len);
    X509_free(cert);

    return status;
}


/* DER of an OCTET STRING holding "len" (< 64 KiB) bytes */

static size_t
octet_string(unsigned char *out, const unsigned char *v, size_t len)
{
    size_t  h;

    out[0] = 0x04;

    if (len < 0x80) {
        out[1] = (unsigned char) len;
        h = 2;

    } else if (len < 0x100) {
        out[1] = 0x81;
        out[2] = (unsigned char) len;
        h = 3;

    } else {
        out[1] = 0x82;
        out[2] = (unsigned char) (len >> 8);
        out[3] = (unsigned char) len;
        h = 4;
    }

    memcpy(out + h, v, len);
    return h + len;
}


static void
test_app_id(void)
{
    char            hex[APP_ID_HEX_MAX + 1];
    size_t          n;
    unsigned char   raw[80], der[100];
    ratls_status_t  s;

    static const unsigned char  app[20] = {
        0xAA, 0xBB, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
        0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0xF0, 0xFF
    };

    n = octet_string(der, app, sizeof(app));
    s = app_id_of(der, n, hex);
    ok(s == RATLS_OK
       && strcmp(hex, "aabb000102030405060708090a0b0c0d0e0ff0ff") == 0,
       "20-byte app_id read as lowercase hex (%s)", ratls_strerror(s));

    s = app_id_of(NULL, 0, hex);
    ok(s == RATLS_MALFORMED, "empty extnValue is malformed");

    der[0] = 0x04;
    der[1] = 0x00;
    ok(app_id_of(der, 2, hex) == RATLS_EMPTY, "empty inner OCTET STRING");

    n = octet_string(der, app, sizeof(app));
    der[0] = 0x0C;
    ok(app_id_of(der, n, hex) == RATLS_MALFORMED,
       "inner UTF8String instead of OCTET STRING");

    der[0] = 0x30;
    ok(app_id_of(der, n, hex) == RATLS_MALFORMED, "inner SEQUENCE");

    ok(ERR_peek_error() == 0,
       "a malformed value leaves no error in OpenSSL's queue");

    n = octet_string(der, app, sizeof(app));
    ok(app_id_of(der, n - 5, hex) == RATLS_MALFORMED,
       "inner length beyond the extension (truncated)");

    ok(app_id_of(der, 1, hex) == RATLS_MALFORMED, "tag without length");

    n = octet_string(der, app, sizeof(app));
    der[n++] = 0x00;
    ok(app_id_of(der, n, hex) == RATLS_MALFORMED,
       "trailing byte after the inner OCTET STRING");

    ok(app_id_of(app, sizeof(app), hex) == RATLS_MALFORMED,
       "raw value without the inner OCTET STRING");

    memset(raw, 0x5a, sizeof(raw));

    n = octet_string(der, raw, APP_ID_BYTES_MAX);
    s = app_id_of(der, n, hex);
    ok(s == RATLS_OK && strlen(hex) == APP_ID_HEX_MAX,
       "%d-byte app_id is the longest accepted", APP_ID_BYTES_MAX);

    n = octet_string(der, raw, APP_ID_BYTES_MAX + 1);
    ok(app_id_of(der, n, hex) == RATLS_TOO_LONG,
       "%d-byte app_id is too long", APP_ID_BYTES_MAX + 1);

    der[0] = 0x04;
    der[1] = 0x84;
    der[2] = der[3] = der[4] = der[5] = 0xFF;
    ok(app_id_of(der, 6, hex) == RATLS_MALFORMED,
       "4 GiB inner length in a 6-byte extension");
}


static void
test_absent_and_duplicate(void)
{
    char            hex[APP_ID_HEX_MAX + 1];
    size_t          len, n;
    X509           *cert;
    unsigned char   der[32];
    test_ext_t      exts[2];

    static const unsigned char  a[1] = { 0x01 }, b[1] = { 0x02 };

    n = octet_string(der, a, 1);
    exts[0] = (test_ext_t) { RATLS_OID_CERT_USAGE, der, n };

    cert = make_cert(exts, 1);
    ok(ratls_app_id_hex(cert, hex, &len) == RATLS_ABSENT,
       "certificate with another RA-TLS extension only: app_id absent");
    X509_free(cert);

    cert = make_cert(NULL, 0);
    ok(ratls_app_id_hex(cert, hex, &len) == RATLS_ABSENT,
       "certificate without extensions: app_id absent");
    X509_free(cert);

    exts[0] = (test_ext_t) { RATLS_OID_APP_ID, der, n };
    exts[1] = (test_ext_t) { RATLS_OID_APP_ID, der + 16, 0 };
    octet_string(der + 16, b, 1);
    exts[1].len = 3;

    cert = make_cert(exts, 2);
    ok(ratls_app_id_hex(cert, hex, &len) == RATLS_DUPLICATE,
       "app_id extension present twice is refused");
    X509_free(cert);
}


static void
test_cert_usage(void)
{
    char            text[RATLS_CERT_USAGE_MAX + 1];
    size_t          n;
    unsigned char   der[RATLS_CERT_USAGE_MAX + 16], big[RATLS_CERT_USAGE_MAX + 1];
    ratls_status_t  s;

    n = octet_string(der, (const unsigned char *) "app:\xc3\xa9t\xc3\xa9", 9);
    s = usage_of(der, n, text);
    ok(s == RATLS_OK && strcmp(text, "app:\xc3\xa9t\xc3\xa9") == 0,
       "UTF-8 special usage read as text (%s)", ratls_strerror(s));

    n = octet_string(der, (const unsigned char *) "ra\xff\xfe", 4);
    ok(usage_of(der, n, text) == RATLS_BAD_UTF8 && ERR_peek_error() == 0,
       "invalid UTF-8 refused, no error left queued");

    n = octet_string(der, (const unsigned char *) "ra\0tls", 6);
    ok(usage_of(der, n, text) == RATLS_BAD_UTF8, "embedded NUL refused");

    memset(big, 'x', sizeof(big));
    n = octet_string(der, big, RATLS_CERT_USAGE_MAX);
    ok(usage_of(der, n, text) == RATLS_OK
       && strlen(text) == RATLS_CERT_USAGE_MAX,
       "%d-byte usage is the longest accepted", RATLS_CERT_USAGE_MAX);

    n = octet_string(der, big, RATLS_CERT_USAGE_MAX + 1);
    ok(usage_of(der, n, text) == RATLS_TOO_LONG,
       "%d-byte usage is too long", RATLS_CERT_USAGE_MAX + 1);
}


static void
test_ext_new(void)
{
    char             hex[APP_ID_HEX_MAX + 1];
    size_t           len;
    X509            *cert;
    X509_EXTENSION  *ext;

    static const unsigned char  app[3] = { 0x01, 0xAB, 0xFF };

    ext = ratls_ext_new(RATLS_OID_APP_ID, app, sizeof(app));
    cert = make_cert(NULL, 0);
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);

    ok(ratls_app_id_hex(cert, hex, &len) == RATLS_OK
       && strcmp(hex, "01abff") == 0 && len == 6,
       "ratls_ext_new writes what ratls_app_id_hex reads");
    X509_free(cert);
}


/* app ids as text (configuration, headers, options): common/app_id.c */

static void
test_app_id_text(void)
{
    char  long_id[APP_ID_HEX_MAX + 3], out[APP_ID_HEX_MAX + 1];

    ok(app_id_parse("aaBB0019", 8, APP_ID_HEX_MAX, NULL),
       "mixed-case hex is valid");
    ok(app_id_parse("aaBB0019", 8, APP_ID_HEX_MAX, out)
       && strcmp(out, "aabb0019") == 0,
       "and is written out lowercased");
    ok(!app_id_parse("", 0, APP_ID_HEX_MAX, NULL), "empty is invalid");
    ok(!app_id_parse("abc", 3, APP_ID_HEX_MAX, NULL),
       "odd length is invalid");
    ok(!app_id_parse("abzz", 4, APP_ID_HEX_MAX, NULL), "non-hex is invalid");
    ok(!app_id_parse("ab\r\n", 4, APP_ID_HEX_MAX, NULL), "CR/LF is invalid");
    ok(!app_id_parse("ab\0d", 4, APP_ID_HEX_MAX, NULL), "NUL is invalid");

    memset(long_id, 'a', sizeof(long_id));
    ok(app_id_parse(long_id, APP_ID_HEX_MAX, APP_ID_HEX_MAX, NULL),
       "%d hex digits are valid", APP_ID_HEX_MAX);
    ok(!app_id_parse(long_id, APP_ID_HEX_MAX + 2, APP_ID_HEX_MAX, NULL),
       "%d hex digits are too many", APP_ID_HEX_MAX + 2);
    ok(!app_id_parse(long_id, 6, 4, NULL),
       "the caller's own bound holds too");
}


int
main(void)
{
    key = EVP_EC_gen("P-256");
    if (key == NULL) {
        printf("Bail out! cannot generate a P-256 key\n");
        return 1;
    }

    test_app_id();
    test_absent_and_duplicate();
    test_cert_usage();
    test_ext_new();
    test_app_id_text();

    EVP_PKEY_free(key);

    return tap_done();
}
