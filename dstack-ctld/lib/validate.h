/*
 * Validation of everything that arrives from outside: names, identifiers,
 * endpoints, WireGuard keys, free text.  Each check is strict and bounded;
 * callers store only what passed.
 */

#ifndef CTLD_VALIDATE_H
#define CTLD_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>

#include "app_id.h"

#define DNS_LABEL_MAX   63
#define ENDPOINT_MAX    (253 + 8)              /* "[name]:65535" */
#define WG_KEY_LEN      32
#define WG_KEY_B64_LEN  44

/* lowercases in place, then checks RFC 1123 label rules */
bool  dns_label_normalize(char *s);
/* [A-Za-z0-9._-]{1,max} */
bool  ident_valid(const char *s, size_t max);
/* common/app_id.h's rule (hex, an even count), lowercased in place */
bool  app_id_normalize(char *s);
/* host:port with host an IPv4 address, [IPv6] or a DNS name */
bool  endpoint_valid(const char *s);
/* base64 of exactly 32 bytes */
bool  wg_key_valid(const char *s);
bool  ip_valid(const char *s);
/* valid UTF-8, no control characters, 1..max bytes */
bool  text_valid(const char *s, size_t len, size_t max);

#endif
