/*
 * Strict parsing: see parse.h.
 */

#include <string.h>

#include "parse.h"


int
parse_uint(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    size_t    i;
    uint64_t  v, d;

    if (len == 0 || len > 20) {
        return 0;
    }

    v = 0;

    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }

        d = (uint64_t) (s[i] - '0');

        if (v > (max - d) / 10 || d > max) {
            return 0;
        }

        v = v * 10 + d;
    }

    *out = v;
    return 1;
}


int
parse_duration(const char *s, size_t len, uint64_t max, uint64_t *seconds)
{
    uint64_t  v, unit;

    if (len == 0) {
        return 0;
    }

    switch (s[len - 1]) {
    case 's': unit = 1; len--; break;
    case 'm': unit = 60; len--; break;
    case 'h': unit = 3600; len--; break;
    case 'd': unit = 86400; len--; break;
    default: unit = 1; break;
    }

    if (!parse_uint(s, len, max / unit, &v)) {
        return 0;
    }

    *seconds = v * unit;
    return 1;
}


int
parse_host_port(const char *s, size_t len, host_port_t *hp)
{
    const char  *colon, *end;
    uint64_t     port;

    end = s + len;

    if (len > 0 && s[0] == '[') {
        colon = memchr(s, ']', len);

        if (colon == NULL || colon + 1 == end || colon[1] != ':') {
            return 0;
        }

        hp->host = s + 1;
        hp->host_len = (size_t) (colon - hp->host);
        hp->bracketed = 1;
        colon++;

    } else {
        colon = memchr(s, ':', len);

        if (colon == NULL || memchr(colon + 1, ':', end - colon - 1) != NULL) {
            return 0;
        }

        hp->host = s;
        hp->host_len = (size_t) (colon - s);
        hp->bracketed = 0;
    }

    if (hp->host_len == 0
        || !parse_uint(colon + 1, (size_t) (end - colon - 1), 65535, &port))
    {
        return 0;
    }

    hp->port = (uint16_t) port;
    return 1;
}
