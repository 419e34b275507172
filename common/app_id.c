/*
 * App ids as text: see app_id.h.
 */

#include "app_id.h"
#include "hex.h"


int
app_id_parse(const char *s, size_t len, size_t max, char *out)
{
    size_t  i;

    if (len == 0 || len > max || len % 2 != 0) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (hex_digit(s[i]) < 0) {
            return 0;
        }
    }

    if (out != NULL) {
        for (i = 0; i < len; i++) {
            out[i] = (s[i] >= 'A' && s[i] <= 'F') ? (char) (s[i] - 'A' + 'a')
                                                  : s[i];
        }

        out[len] = '\0';
    }

    return 1;
}
