/*
 * The one strict parser of numbers, durations, host:port and app ids
 * (common/parse.c, common/app_id.c) that the module, the daemon and the
 * tools share.
 */

#include <stdint.h>
#include <string.h>

#include "app_id.h"
#include "parse.h"
#include "tap.h"


static int
uint_is(const char *s, uint64_t max, uint64_t want)
{
    uint64_t  v = 12345;

    return parse_uint(s, strlen(s), max, &v) && v == want;
}


static int
uint_refused(const char *s, uint64_t max)
{
    uint64_t  v = 12345;

    return !parse_uint(s, strlen(s), max, &v) && v == 12345;
}


static int
hp_is(const char *s, const char *host, int bracketed, unsigned port)
{
    host_port_t  hp;

    return parse_host_port(s, strlen(s), &hp)
           && hp.host_len == strlen(host)
           && memcmp(hp.host, host, hp.host_len) == 0
           && hp.bracketed == bracketed && hp.port == port;
}


static int
hp_refused(const char *s)
{
    host_port_t  hp;

    return !parse_host_port(s, strlen(s), &hp);
}


int
main(void)
{
    uint64_t  v;
    char      id[APP_ID_HEX_MAX + 1];

    ok(uint_is("0", 10, 0), "0");
    ok(uint_is("65535", 65535, 65535), "the maximum itself");
    ok(uint_refused("65536", 65535), "one above the maximum");
    ok(uint_is("18446744073709551615", UINT64_MAX, UINT64_MAX), "2^64-1");
    ok(uint_refused("18446744073709551616", UINT64_MAX), "2^64 overflows");
    ok(uint_refused("99999999999999999999", UINT64_MAX), "20 nines overflow");
    ok(uint_refused("000000000000000000001", UINT64_MAX), "21 digits");
    ok(uint_refused("7", 5), "a digit above a small maximum");
    ok(uint_is("5", 5, 5), "a digit equal to a small maximum");
    ok(uint_refused("", 10), "empty");
    ok(uint_refused("+1", 10), "a sign");
    ok(uint_refused("-1", 10), "a minus");
    ok(uint_refused(" 1", 10), "a leading blank");
    ok(uint_refused("1 ", 10), "a trailing blank");
    ok(uint_refused("0x1", 100), "a base prefix");
    ok(uint_refused("1e3", 10000), "an exponent");
    ok(!parse_uint("12\0" "3", 4, 10000, &v), "a NUL inside the length");
    ok(parse_uint("123", 2, 100, &v) && v == 12, "reads only len bytes");

    ok(parse_duration("90", 2, 3600, &v) && v == 90, "90");
    ok(parse_duration("90s", 3, 3600, &v) && v == 90, "90s");
    ok(parse_duration("15m", 3, 3600, &v) && v == 900, "15m");
    ok(parse_duration("1h", 2, 3600, &v) && v == 3600, "1h");
    ok(!parse_duration("2h", 2, 3600, &v), "2h above a 1h maximum");
    ok(parse_duration("7d", 2, 7 * 86400, &v) && v == 7 * 86400, "7d");
    ok(!parse_duration("s", 1, 3600, &v), "a unit alone");
    ok(!parse_duration("", 0, 3600, &v), "empty");
    ok(!parse_duration("1w", 2, 1 << 30, &v), "an unknown unit");
    ok(!parse_duration("1hs", 3, 1 << 30, &v), "two units");
    ok(!parse_duration("18446744073709551615d", 21, UINT64_MAX, &v),
       "days that overflow");

    ok(hp_is("127.0.0.1:8000", "127.0.0.1", 0, 8000), "IPv4");
    ok(hp_is("gw.example.com:443", "gw.example.com", 0, 443), "a name");
    ok(hp_is("[::1]:51820", "::1", 1, 51820), "bracketed IPv6");
    ok(hp_is("h:0", "h", 0, 0), "port 0 is the caller's to refuse");
    ok(hp_refused("::1:80"), "bare IPv6");
    ok(hp_refused("host"), "no port");
    ok(hp_refused("host:"), "empty port");
    ok(hp_refused(":80"), "empty host");
    ok(hp_refused("[]:80"), "empty brackets");
    ok(hp_refused("[::1]80"), "no colon after the bracket");
    ok(hp_refused("[::1]"), "brackets, no port");
    ok(hp_refused("[::1:80"), "an unclosed bracket");
    ok(hp_refused("host:65536"), "port above 65535");
    ok(hp_refused("host:80x"), "junk after the port");
    ok(hp_refused("host:+80"), "a signed port");

    ok(app_id_parse("aaBB0019", 8, APP_ID_HEX_MAX, id)
       && strcmp(id, "aabb0019") == 0, "mixed case, lowercased");
    ok(!app_id_parse("abc", 3, APP_ID_HEX_MAX, NULL), "odd length");
    ok(!app_id_parse("", 0, APP_ID_HEX_MAX, NULL), "empty");
    ok(!app_id_parse("abzz", 4, APP_ID_HEX_MAX, NULL), "not hex");
    ok(!app_id_parse("aabb", 4, 2, NULL), "over the caller's maximum");

    return tap_done();
}
