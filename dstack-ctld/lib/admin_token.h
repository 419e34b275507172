/*
 * The admin token: a random secret the server keeps in its data directory
 * (0600) and the hub and the admin CLI read from there to prove
 * themselves.  The server holds only its hash in memory.
 */

#ifndef CTLD_ADMIN_TOKEN_H
#define CTLD_ADMIN_TOKEN_H

#include "lib/util.h"

#define ADMIN_TOKEN_FILE  "admin.token"

/*
 * Reads <data_dir>/admin.token into token; -1 with errno set (EINVAL:
 * the file is malformed) and nothing logged, so each caller says it in
 * its own words.
 */
int  admin_token_read(const char *data_dir, char token[TOKEN_HEX_LEN + 1]);

/* the server: reads the token, or makes one on first start; its hash */
int  admin_token_load_or_create(const char *data_dir,
                                unsigned char hash[SHA256_LEN]);

#endif
