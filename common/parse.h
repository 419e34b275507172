/*
 * Strict parsing of numbers, durations and "host:port" from hostile text:
 * no sign, no blanks, no base prefix, no overflow, nothing left over.
 *
 * Plain C, no nginx types: compiled into the module, the daemon and the
 * tools, so one rule holds everywhere.  Each call reads exactly s[0..len)
 * (no NUL needed) and returns 1 on success, 0 otherwise.
 */

#ifndef DSTACK_PARSE_H
#define DSTACK_PARSE_H

#include <stddef.h>
#include <stdint.h>


/* 1..20 decimal digits whose value is at most "max" */
int parse_uint(const char *s, size_t len, uint64_t max, uint64_t *out);

/*
 * A number of seconds with an optional unit: "90", "90s", "15m", "1h",
 * "7d"; the result is at most "max" seconds.
 */
int parse_duration(const char *s, size_t len, uint64_t max,
    uint64_t *seconds);


typedef struct {
    const char  *host;          /* points into the parsed text */
    size_t       host_len;      /* without the brackets */
    int          bracketed;     /* "[v6]:port" */
    uint16_t     port;          /* 0..65535: callers refuse 0 if they must */
} host_port_t;

/*
 * "host:port" or "[v6]:port": a non-empty host (its characters are the
 * caller's to check: an address or a DNS name) and a decimal port.  An
 * unbracketed host holds no ':'.
 */
int parse_host_port(const char *s, size_t len, host_port_t *hp);

#endif /* DSTACK_PARSE_H */
