/*
 * Who a WireGuard handshake initiation says it is: the initiator's static
 * public key, which the first message carries encrypted to the responder
 * (Noise IKpsk2, WireGuard whitepaper section 5.4.2).  The relay decrypts
 * it with the hub's private key to hold each stream to its node's key.
 */

#ifndef CTLD_RELAY_NOISE_H
#define CTLD_RELAY_NOISE_H

#include <stddef.h>
#include <stdint.h>

#define WG_MSG_INITIATION       1
#define WG_MSG_RESPONSE         2
#define WG_MSG_COOKIE           3
#define WG_MSG_DATA             4
#define WG_INITIATION_LEN       148

/* the hub's keys: the responder's hash chain starts from its public key */
struct noise_responder {
    uint8_t   priv[32];
    uint8_t   hash0[32];        /* HASH(HASH(HASH(C) || ID) || S_pub) */
    uint8_t   chain0[32];       /* HASH(CONSTRUCTION) */
};

int   noise_responder_init(struct noise_responder *r, const uint8_t priv[32],
                           const uint8_t pub[32]);
/* 0 and the initiator's key from a 148-byte initiation, -1 if it does not
 * decrypt (not for this hub, or corrupt) */
int   noise_initiator_key(const struct noise_responder *r, const uint8_t *msg,
                          size_t len, uint8_t key[32]);

#endif
