/* Strict checks of hostile input. */

#include <arpa/inet.h>
#include <string.h>

#include "lib/util.h"
#include "lib/validate.h"
#include "parse.h"


bool
dns_label_normalize(char *s)
{
    size_t  len = strlen(s);

    if (len == 0 || len > DNS_LABEL_MAX || s[0] == '-' || s[len - 1] == '-') {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] >= 'A' && s[i] <= 'Z') {
            s[i] = (char) (s[i] - 'A' + 'a');
        }
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')
              || s[i] == '-'))
        {
            return false;
        }
    }
    return true;
}


bool
ident_valid(const char *s, size_t max)
{
    size_t  len = strlen(s);

    if (len == 0 || len > max) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
        {
            return false;
        }
    }
    return true;
}


bool
app_id_normalize(char *s)
{
    return app_id_parse(s, strlen(s), APP_ID_HEX_MAX, s);
}


static bool
dns_name_valid(const char *s, size_t len)
{
    char    label[DNS_LABEL_MAX + 1];
    size_t  start = 0;

    if (len == 0 || len > 253) {
        return false;
    }
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == '.') {
            size_t n = i - start;
            if (n == 0 || n > DNS_LABEL_MAX) {
                return false;
            }
            memcpy(label, s + start, n);
            label[n] = '\0';
            if (!dns_label_normalize(label)) {
                return false;
            }
            start = i + 1;
        }
    }
    return true;
}


bool
endpoint_valid(const char *s)
{
    char           host[254];
    unsigned char  addr[16];
    host_port_t    hp;

    if (strlen(s) > ENDPOINT_MAX || !parse_host_port(s, strlen(s), &hp)
        || hp.port == 0 || hp.host_len >= sizeof(host))
    {
        return false;
    }
    memcpy(host, hp.host, hp.host_len);
    host[hp.host_len] = '\0';

    if (hp.bracketed) {
        return inet_pton(AF_INET6, host, addr) == 1;
    }
    return inet_pton(AF_INET, host, addr) == 1
           || dns_name_valid(host, hp.host_len);
}


bool
wg_key_valid(const char *s)
{
    unsigned char  key[WG_KEY_LEN];
    size_t         len;

    return strlen(s) == WG_KEY_B64_LEN
           && b64_decode(s, WG_KEY_B64_LEN, key, sizeof(key), &len) == 0
           && len == WG_KEY_LEN;
}


bool
ip_valid(const char *s)
{
    unsigned char  addr[16];

    return inet_pton(AF_INET, s, addr) == 1 || inet_pton(AF_INET6, s, addr) == 1;
}


bool
text_valid(const char *s, size_t len, size_t max)
{
    const unsigned char *p = (const unsigned char *) s;
    size_t               i = 0;

    if (len == 0 || len > max) {
        return false;
    }
    while (i < len) {
        unsigned char  c = p[i];
        size_t         n;
        uint32_t       cp;

        if (c < 0x20 || c == 0x7f) {
            return false;
        }
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xe0) == 0xc0) {
            n = 1; cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2; cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3; cp = c & 0x07;
        } else {
            return false;
        }
        if (i + n >= len) {
            return false;
        }
        for (size_t k = 1; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                return false;
            }
            cp = cp << 6 | (p[i + k] & 0x3f);
        }
        /* no overlong forms, surrogates, C1 controls or values past U+10FFFF */
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800)
            || (n == 3 && cp < 0x10000) || cp > 0x10ffff
            || (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp < 0xa0))
        {
            return false;
        }
        i += n + 1;
    }
    return true;
}
