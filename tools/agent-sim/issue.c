/*
 * Keys and certificates: P-256 keys, the CA skeleton shared with ca.c, and
 * the leaves GetTlsKey returns, shaped like the ones the dstack KMS signs.
 */

#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/pem.h>

#include "agent_sim.h"


/* 159 random bits: positive and at most 20 octets (RFC 5280 4.1.2.2) */
#define SIM_SERIAL_BITS  159


static int sim_set_serial(X509 *cert);
static int sim_set_time(ASN1_TIME *field, int64_t t);
static int sim_leaf_exts(X509 *leaf, const sim_ca_t *ca, const sim_app_t *app,
    const sim_tls_req_t *req);
static int sim_add_ratls_ext(X509 *cert, const char *oid,
    const unsigned char *value, size_t len);
static const char *sim_eku(const sim_tls_req_t *req);
static char *sim_bio_string(BIO *bio);


EVP_PKEY *
sim_key_new(void)
{
    EVP_PKEY  *key;

    key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (key == NULL) {
        sim_log_ssl("P-256 key generation failed");
    }

    return key;
}


/* NULL when "cn" is not 1..64 characters of UTF-8 (X.520 ub-common-name) */
X509_NAME *
sim_name_cn(const char *cn, size_t len)
{
    X509_NAME  *name;

    /* 64 characters take at most 256 bytes, which also keeps (int) safe */

    if (len == 0 || len > 4 * 64 || memchr(cn, '\0', len) != NULL) {
        return NULL;
    }

    name = X509_NAME_new();
    if (name == NULL) {
        return NULL;
    }

    /* OpenSSL checks the UTF-8 and the length bound of commonName */

    if (!X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
                                    (const unsigned char *) cn, (int) len,
                                    -1, 0))
    {
        X509_NAME_free(name);
        return NULL;
    }

    return name;
}


/* a v3 certificate with everything but the extensions and the signature */
X509 *
sim_cert_new(const X509_NAME *subject, const X509_NAME *issuer,
    EVP_PKEY *key, int64_t not_before, int64_t not_after)
{
    X509  *cert;

    cert = X509_new();
    if (cert == NULL) {
        return NULL;
    }

    if (!X509_set_version(cert, X509_VERSION_3)
        || !sim_set_serial(cert)
        || !X509_set_subject_name(cert, subject)
        || !X509_set_issuer_name(cert, issuer)
        || !sim_set_time(X509_getm_notBefore(cert), not_before)
        || !sim_set_time(X509_getm_notAfter(cert), not_after)
        || !X509_set_pubkey(cert, key))
    {
        X509_free(cert);
        return NULL;
    }

    return cert;
}


int
sim_cert_add_ext(X509 *cert, X509V3_CTX *ctx, int nid, const char *value)
{
    int              ok;
    X509_EXTENSION  *ext;

    ext = X509V3_EXT_nconf_nid(NULL, ctx, nid, value);
    if (ext == NULL) {
        return 0;
    }

    ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);

    return ok;
}


static int
sim_set_serial(X509 *cert)
{
    int           ok;
    BIGNUM       *bn;
    ASN1_INTEGER *serial;

    bn = BN_new();
    if (bn == NULL) {
        return 0;
    }

    /* the top bit set keeps the serial non-zero */

    ok = BN_rand(bn, SIM_SERIAL_BITS, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY);

    serial = ok ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
    ok = serial != NULL && X509_set_serialNumber(cert, serial);

    ASN1_INTEGER_free(serial);
    BN_free(bn);

    return ok;
}


static int
sim_set_time(ASN1_TIME *field, int64_t t)
{
    /* callers bound t to 0..SIM_TIME_MAX, which time_t holds on LP64 */
    return ASN1_TIME_set(field, (time_t) t) != NULL;
}


int
sim_issue(const sim_ca_t *ca, const sim_app_t *app, const sim_tls_req_t *req,
    sim_issued_t *out)
{
    int        rc;
    X509      *leaf;
    EVP_PKEY  *key;

    rc = -1;
    leaf = NULL;
    out->key = NULL;
    out->cert = NULL;

    key = sim_key_new();
    if (key == NULL) {
        return -1;
    }

    leaf = sim_cert_new(req->subject ? req->subject : app->subject,
                        X509_get_subject_name(ca->cert), key,
                        req->not_before, req->not_after);

    if (leaf == NULL
        || !sim_leaf_exts(leaf, ca, app, req)
        || X509_sign(leaf, ca->key, EVP_sha256()) <= 0)
    {
        sim_log_ssl("cannot build the leaf certificate");
        goto done;
    }

    out->key = sim_pem_key(key);
    out->cert = sim_pem_cert(leaf);

    if (out->key == NULL || out->cert == NULL) {
        sim_issued_free(out);
        goto done;
    }

    rc = 0;

done:

    X509_free(leaf);
    EVP_PKEY_free(key);

    return rc;
}


void
sim_issued_free(sim_issued_t *issued)
{
    free(issued->key);
    free(issued->cert);
    issued->key = NULL;
    issued->cert = NULL;
}


static int
sim_leaf_exts(X509 *leaf, const sim_ca_t *ca, const sim_app_t *app,
    const sim_tls_req_t *req)
{
    const char  *eku;
    X509V3_CTX   ctx;

    X509V3_set_ctx(&ctx, ca->cert, leaf, NULL, NULL, 0);

    if (!sim_cert_add_ext(leaf, &ctx, NID_basic_constraints,
                          "critical,CA:FALSE")
        || !sim_cert_add_ext(leaf, &ctx, NID_key_usage,
                             "critical,digitalSignature")
        || !sim_cert_add_ext(leaf, &ctx, NID_subject_key_identifier, "hash")
        || !sim_cert_add_ext(leaf, &ctx, NID_authority_key_identifier,
                             "keyid:always"))
    {
        return 0;
    }

    /* as the real agent: no extendedKeyUsage unless a usage was asked for */

    eku = sim_eku(req);
    if (eku != NULL && !sim_cert_add_ext(leaf, &ctx, NID_ext_key_usage, eku)) {
        return 0;
    }

    if (req->alt_names != NULL
        && X509_add1_ext_i2d(leaf, NID_subject_alt_name, req->alt_names, 0,
                             X509V3_ADD_DEFAULT) != 1)
    {
        return 0;
    }

    if (!sim_add_ratls_ext(leaf, RATLS_OID_APP_ID, app->app_id,
                           app->app_id_len))
    {
        return 0;
    }

    /* the marker only: no TDX quote exists outside a real CVM */

    return !req->usage_ra_tls
           || sim_add_ratls_ext(leaf, RATLS_OID_CERT_USAGE,
                                (const unsigned char *) "ra-tls", 6);
}


static const char *
sim_eku(const sim_tls_req_t *req)
{
    if (req->usage_server_auth && req->usage_client_auth) {
        return "serverAuth,clientAuth";
    }

    if (req->usage_server_auth) {
        return "serverAuth";
    }

    return req->usage_client_auth ? "clientAuth" : NULL;
}


static int
sim_add_ratls_ext(X509 *cert, const char *oid, const unsigned char *value,
    size_t len)
{
    int              ok;
    X509_EXTENSION  *ext;

    ext = ratls_ext_new(oid, value, len);
    if (ext == NULL) {
        return 0;
    }

    ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);

    return ok;
}


char *
sim_pem_cert(X509 *cert)
{
    BIO   *bio;
    char  *pem;

    bio = BIO_new(BIO_s_mem());
    if (bio == NULL) {
        return NULL;
    }

    pem = PEM_write_bio_X509(bio, cert) ? sim_bio_string(bio) : NULL;
    BIO_free(bio);

    if (pem == NULL) {
        sim_log_ssl("cannot encode a certificate");
    }

    return pem;
}


/* PKCS#8, unencrypted: "BEGIN PRIVATE KEY", as the real agent answers */
char *
sim_pem_key(EVP_PKEY *key)
{
    BIO   *bio;
    char  *pem;

    bio = BIO_new(BIO_s_mem());
    if (bio == NULL) {
        return NULL;
    }

    pem = PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL)
          ? sim_bio_string(bio) : NULL;
    BIO_free(bio);

    if (pem == NULL) {
        sim_log_ssl("cannot encode a private key");
    }

    return pem;
}


/* the memory BIO's content as a NUL-terminated string for free() */
static char *
sim_bio_string(BIO *bio)
{
    long   len;
    char  *data, *s;

    len = BIO_get_mem_data(bio, &data);
    if (len <= 0) {
        return NULL;
    }

    s = malloc((size_t) len + 1);
    if (s == NULL) {
        return NULL;
    }

    memcpy(s, data, (size_t) len);
    s[len] = '\0';

    return s;
}
