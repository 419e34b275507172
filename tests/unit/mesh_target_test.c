/*
 * Target parsing and gateway naming (SPEC: "ID-Ps.D" passthrough, "ID-P.D"
 * gateway-terminated TLS).
 */

#include <string.h>

#include "mesh_target.h"
#include "tap.h"


#define B  "bbbb000000000000000000000000000000000002"


static mesh_target_status_t
parse(mesh_target_t *t, const char *app, const char *port,
    const char *instance, const char *tls)
{
    return mesh_target_parse(t, app, strlen(app), port, strlen(port),
                             instance, strlen(instance), tls, strlen(tls));
}


static const char *
host(const char *app, const char *port, const char *instance,
    const char *tls, const char *domain)
{
    static char    out[MESH_TARGET_HOST_MAX + 1];
    mesh_target_t  t;

    if (parse(&t, app, port, instance, tls) != MESH_TARGET_OK
        || mesh_target_host(&t, domain, strlen(domain), out, sizeof(out))
           == 0)
    {
        return "(error)";
    }

    return out;
}


int
main(void)
{
    char           long_id[80];
    mesh_target_t  t;

    ok(strcmp(host(B, "", "", "", "gw.example.com"),
              B "-443s.gw.example.com") == 0,
       "empty port means 443, empty tls means passthrough");

    ok(strcmp(host(B, "8080", "", "off", "gw.example.com"),
              B "-8080.gw.example.com") == 0,
       "tls=off names the gateway-terminated host");

    ok(strcmp(host("BBBB00", "443", "AbCd", "true", "gw"), "abcd-443s.gw")
       == 0, "the instance names the host, lowercased");

    ok(parse(&t, "BBBB00", "", "AbCd", "1") == MESH_TARGET_OK
       && strcmp(t.app_id, "bbbb00") == 0 && t.tls == 1,
       "the app stays the pin when an instance is named");

    ok(parse(&t, "", "443", "", "") == MESH_TARGET_NO_APP,
       "empty app: the request is for the guest agent");

    ok(parse(&t, "zz00", "", "", "") == MESH_TARGET_BAD_APP, "non-hex app");
    ok(parse(&t, "bb\r\nX: y", "", "", "") == MESH_TARGET_BAD_APP,
       "CR/LF in the app");
    ok(parse(&t, "bbb", "", "", "") == MESH_TARGET_BAD_APP,
       "odd-length app");

    memset(long_id, 'a', sizeof(long_id));
    long_id[MESH_TARGET_ID_MAX] = '\0';
    ok(parse(&t, long_id, "", "", "") == MESH_TARGET_OK,
       "%d hex digits fit a DNS label with the port", MESH_TARGET_ID_MAX);
    long_id[MESH_TARGET_ID_MAX] = 'a';
    long_id[79] = '\0';
    ok(parse(&t, long_id, "", "", "") == MESH_TARGET_BAD_APP,
       "79 hex digits do not");

    ok(parse(&t, B, "0", "", "") == MESH_TARGET_BAD_PORT, "port 0");
    ok(parse(&t, B, "65536", "", "") == MESH_TARGET_BAD_PORT, "port 65536");
    ok(parse(&t, B, "80x", "", "") == MESH_TARGET_BAD_PORT, "port 80x");
    ok(parse(&t, B, "+80", "", "") == MESH_TARGET_BAD_PORT, "port +80");
    ok(parse(&t, B, "000443", "", "") == MESH_TARGET_BAD_PORT,
       "port with six digits");
    ok(parse(&t, B, "65535", "", "") == MESH_TARGET_OK && t.port == 65535,
       "port 65535");

    ok(parse(&t, B, "", "xyz", "") == MESH_TARGET_BAD_INSTANCE,
       "non-hex instance");
    ok(parse(&t, B, "", "abc", "") == MESH_TARGET_BAD_INSTANCE,
       "odd-length instance");
    ok(parse(&t, B, "", "", "maybe") == MESH_TARGET_BAD_TLS, "tls=maybe");
    ok(parse(&t, B, "", "", "FALSE") == MESH_TARGET_OK && t.tls == 0,
       "tls=FALSE");

    ok(strcmp(host(B, "", "", "", "gw.exa mple"), "(error)") == 0,
       "a domain with a space makes no host name");

    return tap_done();
}
