/*
 * WireGuard identity: an X25519 private key kept in a 0600 file in the
 * format of `wg genkey` (base64 and a newline), so wg(8) can read it too.
 */

#ifndef CTLD_WGKEY_H
#define CTLD_WGKEY_H

#include "lib/util.h"
#include "lib/validate.h"

/*
 * Loads the key at path, creating it first when missing; gives the public
 * key, and the private key too when priv is not NULL (cleanse it after use).
 */
int  wgkey_load_or_create(const char *path, unsigned char priv[WG_KEY_LEN],
                          char pub_b64[WG_KEY_B64_LEN + 1]);
/* the same for a key someone else makes: -1 with errno ENOENT (not
 * logged) while it does not exist yet */
int  wgkey_load(const char *path, unsigned char priv[WG_KEY_LEN],
                char pub_b64[WG_KEY_B64_LEN + 1]);

#endif
