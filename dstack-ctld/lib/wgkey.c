/* X25519 keys with OpenSSL for the WireGuard identity. */

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>

#include "lib/log.h"
#include "lib/wgkey.h"


static int
key_generate(unsigned char priv[WG_KEY_LEN])
{
    EVP_PKEY_CTX  *ctx;
    EVP_PKEY      *pkey = NULL;
    size_t         len = WG_KEY_LEN;
    int            rc = -1;

    ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_X25519, NULL);
    if (ctx != NULL && EVP_PKEY_keygen_init(ctx) == 1
        && EVP_PKEY_keygen(ctx, &pkey) == 1
        && EVP_PKEY_get_raw_private_key(pkey, priv, &len) == 1
        && len == WG_KEY_LEN)
    {
        rc = 0;
    }
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(ctx);
    return rc;
}


static int
key_public(const unsigned char priv[WG_KEY_LEN], unsigned char pub[WG_KEY_LEN])
{
    EVP_PKEY  *pkey;
    size_t     len = WG_KEY_LEN;
    int        rc;

    pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, priv, WG_KEY_LEN);
    if (pkey == NULL) {
        return -1;
    }
    rc = EVP_PKEY_get_raw_public_key(pkey, pub, &len) == 1 && len == WG_KEY_LEN
         ? 0 : -1;
    EVP_PKEY_free(pkey);
    return rc;
}


static int
key_load(const char *path, bool create, unsigned char priv_out[WG_KEY_LEN],
         char pub_b64[WG_KEY_B64_LEN + 1])
{
    char           text[128];
    unsigned char  priv[WG_KEY_LEN], pub[WG_KEY_LEN];
    size_t         len;
    ssize_t        n;
    struct stat    st;
    int            rc = -1;

    n = file_read_small(path, text, sizeof(text));
    if (n < 0 && errno == ENOENT && !create) {
        return -1;

    } else if (n < 0 && errno == ENOENT) {
        if (key_generate(priv) != 0) {
            log_error("cannot generate an X25519 key");
            return -1;
        }
        b64_encode(priv, WG_KEY_LEN, text);
        strcat(text, "\n");
        if (file_write_atomic(path, text, strlen(text), 0600) != 0) {
            log_error("cannot write %s: %s", path, strerror(errno));
            goto done;
        }
        log_info("generated WireGuard key %s", path);

    } else if (n < 0) {
        log_error("cannot read %s: %s", path, strerror(errno));
        return -1;

    } else {
        if (stat(path, &st) == 0 && (st.st_mode & 077) != 0) {
            log_error("%s is readable by others (mode %03o); chmod 600 it",
                      path, (unsigned) (st.st_mode & 0777));
            goto done;
        }
        len = strcspn(text, "\r\n");
        if (b64_decode(text, len, priv, sizeof(priv), &len) != 0
            || len != WG_KEY_LEN)
        {
            log_error("%s does not hold a base64 WireGuard key", path);
            goto done;
        }
    }

    if (key_public(priv, pub) != 0) {
        log_error("cannot derive the public key of %s", path);
        goto done;
    }
    b64_encode(pub, WG_KEY_LEN, pub_b64);
    if (priv_out != NULL) {
        memcpy(priv_out, priv, WG_KEY_LEN);
    }
    rc = 0;

done:
    OPENSSL_cleanse(priv, sizeof(priv));
    OPENSSL_cleanse(text, sizeof(text));
    return rc;
}


int
wgkey_load_or_create(const char *path, unsigned char priv[WG_KEY_LEN],
                     char pub_b64[WG_KEY_B64_LEN + 1])
{
    return key_load(path, true, priv, pub_b64);
}


int
wgkey_load(const char *path, unsigned char priv[WG_KEY_LEN],
           char pub_b64[WG_KEY_B64_LEN + 1])
{
    return key_load(path, false, priv, pub_b64);
}
