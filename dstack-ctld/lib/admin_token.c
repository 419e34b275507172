/* The admin token file: see admin_token.h. */

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "lib/admin_token.h"
#include "lib/log.h"
#include "lib/validate.h"


static int
token_path(const char *data_dir, char path[PATH_MAX])
{
    if (snprintf(path, PATH_MAX, "%s/" ADMIN_TOKEN_FILE, data_dir)
        >= PATH_MAX)
    {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}


int
admin_token_read(const char *data_dir, char token[TOKEN_HEX_LEN + 1])
{
    char     path[PATH_MAX], text[TOKEN_HEX_LEN + 8];
    ssize_t  n;
    int      rc = -1;

    if (token_path(data_dir, path) != 0) {
        return -1;
    }
    n = file_read_small(path, text, sizeof(text));
    if (n < 0) {
        return -1;
    }
    if (n >= TOKEN_HEX_LEN) {
        text[TOKEN_HEX_LEN] = '\0';
        if (ident_valid(text, TOKEN_HEX_LEN)) {
            memcpy(token, text, TOKEN_HEX_LEN + 1);
            rc = 0;
        }
    }
    OPENSSL_cleanse(text, sizeof(text));
    if (rc != 0) {
        errno = EINVAL;
    }
    return rc;
}


int
admin_token_load_or_create(const char *data_dir,
                           unsigned char hash[SHA256_LEN])
{
    char  path[PATH_MAX], text[TOKEN_HEX_LEN + 2];
    int   rc = 0;

    if (token_path(data_dir, path) != 0) {
        log_error("%s: path too long", data_dir);
        return -1;
    }
    if (admin_token_read(data_dir, text) == 0) {
        sha256(text, TOKEN_HEX_LEN, hash);

    } else if (errno == ENOENT) {
        if (token_new(text, hash) != 0) {
            return -1;
        }
        strcat(text, "\n");
        if (file_write_atomic(path, text, strlen(text), 0600) != 0) {
            log_error("cannot write %s: %s", path, strerror(errno));
            rc = -1;
        }

    } else {
        log_error("%s is unreadable or malformed; delete it to make a new one",
                  path);
        rc = -1;
    }
    OPENSSL_cleanse(text, sizeof(text));
    return rc;
}
