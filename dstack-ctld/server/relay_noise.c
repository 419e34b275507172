/*
 * The first steps of WireGuard's Noise IKpsk2 handshake on the responder's
 * side, only as far as the initiator's static key (relay_noise.h):
 *
 *   C = HASH(CONSTRUCTION); H = HASH(HASH(C || IDENTIFIER) || S_r)
 *   C = KDF1(C, E_i); H = HASH(H || E_i)
 *   (C, k) = KDF2(C, DH(S_r, E_i))
 *   S_i = AEAD-open(k, 0, encrypted_static, H)
 *
 * HASH is BLAKE2s-256, KDF is HKDF over HMAC-BLAKE2s, AEAD is
 * ChaCha20-Poly1305, DH is X25519: all OpenSSL's.
 */

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "server/relay_noise.h"

static const char  construction[] = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
static const char  identifier[] = "WireGuard v1 zx2c4 Jason@zx2c4.com";


static int
hash2(uint8_t out[32], const void *a, size_t alen, const void *b, size_t blen)
{
    EVP_MD_CTX  *ctx = EVP_MD_CTX_new();
    unsigned     n = 32;
    int          ok;

    ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_blake2s256(), NULL)
         && EVP_DigestUpdate(ctx, a, alen)
         && (blen == 0 || EVP_DigestUpdate(ctx, b, blen))
         && EVP_DigestFinal_ex(ctx, out, &n);
    EVP_MD_CTX_free(ctx);
    return ok ? 0 : -1;
}


static int
hmac(uint8_t out[32], const uint8_t key[32], const void *a, size_t alen,
     const void *b, size_t blen)
{
    EVP_MAC       *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX   *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM     params[2];
    size_t         n = 0;
    int            ok;

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 (char *) "BLAKE2S-256", 0);
    params[1] = OSSL_PARAM_construct_end();
    ok = ctx != NULL && EVP_MAC_init(ctx, key, 32, params)
         && EVP_MAC_update(ctx, a, alen)
         && (blen == 0 || EVP_MAC_update(ctx, b, blen))
         && EVP_MAC_final(ctx, out, &n, 32) && n == 32;
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    return ok ? 0 : -1;
}


/* HKDF with n outputs (1 or 2) */
static int
kdf(const uint8_t chain[32], const uint8_t *in, size_t in_len, uint8_t t1[32],
    uint8_t *t2)
{
    uint8_t  prk[32], one = 1, two = 2;
    int      rc;

    rc = hmac(prk, chain, in, in_len, NULL, 0) == 0
         && hmac(t1, prk, &one, 1, NULL, 0) == 0
         && (t2 == NULL || hmac(t2, prk, t1, 32, &two, 1) == 0) ? 0 : -1;
    OPENSSL_cleanse(prk, sizeof(prk));
    return rc;
}


static int
x25519(uint8_t out[32], const uint8_t priv[32], const uint8_t pub[32])
{
    EVP_PKEY      *a = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, priv, 32);
    EVP_PKEY      *b = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, pub, 32);
    EVP_PKEY_CTX  *ctx = a ? EVP_PKEY_CTX_new(a, NULL) : NULL;
    size_t         n = 32;
    int            ok;

    ok = ctx != NULL && b != NULL && EVP_PKEY_derive_init(ctx) > 0
         && EVP_PKEY_derive_set_peer(ctx, b) > 0
         && EVP_PKEY_derive(ctx, out, &n) > 0 && n == 32;
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
    return ok ? 0 : -1;
}


static int
aead_open(uint8_t *out, const uint8_t key[32], const uint8_t *ct, size_t ct_len,
          const uint8_t ad[32])
{
    EVP_CIPHER_CTX  *ctx = EVP_CIPHER_CTX_new();
    uint8_t          nonce[12] = { 0 };
    size_t           len = ct_len - 16;
    int              n, ok;

    ok = ctx != NULL
         && EVP_DecryptInit_ex(ctx, EVP_chacha20_poly1305(), NULL, key, nonce)
         && EVP_DecryptUpdate(ctx, NULL, &n, ad, 32)
         && EVP_DecryptUpdate(ctx, out, &n, ct, (int) len)
         && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16,
                                (void *) (ct + len))
         && EVP_DecryptFinal_ex(ctx, out + n, &n);
    EVP_CIPHER_CTX_free(ctx);
    return ok ? 0 : -1;
}


int
noise_responder_init(struct noise_responder *r, const uint8_t priv[32],
                     const uint8_t pub[32])
{
    uint8_t  h[32];

    memcpy(r->priv, priv, 32);
    return hash2(r->chain0, construction, sizeof(construction) - 1, NULL, 0) == 0
           && hash2(h, r->chain0, 32, identifier, sizeof(identifier) - 1) == 0
           && hash2(r->hash0, h, 32, pub, 32) == 0 ? 0 : -1;
}


int
noise_initiator_key(const struct noise_responder *r, const uint8_t *msg,
                    size_t len, uint8_t key[32])
{
    const uint8_t  *eph = msg + 8, *sealed = msg + 40;
    uint8_t         chain[32], h[32], dh[32], k[32];
    int             rc = -1;

    if (len != WG_INITIATION_LEN || msg[0] != WG_MSG_INITIATION) {
        return -1;
    }
    if (kdf(r->chain0, eph, 32, chain, NULL) == 0
        && hash2(h, r->hash0, 32, eph, 32) == 0
        && x25519(dh, r->priv, eph) == 0
        && kdf(chain, dh, 32, chain, k) == 0
        && aead_open(key, k, sealed, 48, h) == 0)
    {
        rc = 0;
    }
    OPENSSL_cleanse(chain, sizeof(chain));
    OPENSSL_cleanse(dh, sizeof(dh));
    OPENSSL_cleanse(k, sizeof(k));
    return rc;
}
