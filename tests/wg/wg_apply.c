/*
 * wg-apply: drives dstack-ctld's WireGuard layer (wg.h, netdev.h) for tests.
 *
 *   wg-apply --if IFNAME [--backend kernel|uapi|auto] [--start-userspace]
 *            [--private-key-file F] [--port N] [--address CIDR] [--mtu N]
 *
 * opens (creating) the interface, sets the key and port given, makes CIDR
 * its address and brings it up, then runs the commands on stdin:
 *
 *   peer <base64 key> [endpoint=ip:port] [allowed=<cidr>[,<cidr>...]]
 *        [keepalive=N]                add or update one peer
 *   remove <base64 key>               remove one peer
 *   snapshot                          the peer lines up to "end" become
 *                                     the whole peer set
 *   dump                              print the peers read back
 *   delete                            delete the interface
 *
 * Everything is read and checked before anything is applied, so one bad
 * option or line changes nothing (exit status 2).  Each command applied
 * prints one line with the time it took.
 */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "parse.h"
#include "wg/wg.h"

#define LINE_MAX_LEN  4096
#define KEY_B64_LEN   44            /* base64 of WG_KEY_LEN bytes */

enum cmd_kind { CMD_PEER, CMD_REMOVE, CMD_SNAPSHOT, CMD_DUMP, CMD_DELETE };

struct cmd {
    enum cmd_kind    kind;
    struct wg_peer   peer;          /* CMD_PEER; CMD_REMOVE: its key only */
    struct wg_peer  *peers;         /* CMD_SNAPSHOT */
    size_t           n_peers;
};

struct cmds {
    struct cmd  *v;
    size_t       n;
};


static void __attribute__((format(printf, 1, 2), noreturn))
usage_error(const char *fmt, ...)
{
    va_list  ap;

    fputs("wg-apply: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (nothing applied)\n", stderr);
    exit(2);
}


static void *
grow(void *v, size_t n, size_t size)
{
    /* doubling at powers of two */
    if (n != 0 && (n & (n - 1)) != 0) {
        return v;
    }
    v = realloc(v, (n ? 2 * n : 1) * size);
    if (v == NULL) {
        fputs("wg-apply: out of memory\n", stderr);
        exit(1);
    }
    return v;
}


/* canonical base64 of 32 bytes, as wg(8) writes keys */
static bool
key_from_base64(const char *s, uint8_t key[WG_KEY_LEN])
{
    unsigned char  raw[WG_KEY_LEN + 1], again[KEY_B64_LEN + 1];
    bool           ok;

    /* the round trip refuses whitespace, missing padding, stray bits */
    ok = strlen(s) == KEY_B64_LEN
         && EVP_DecodeBlock(raw, (const unsigned char *) s, KEY_B64_LEN)
            == WG_KEY_LEN + 1
         && EVP_EncodeBlock(again, raw, WG_KEY_LEN) == KEY_B64_LEN
         && strcmp((const char *) again, s) == 0;
    if (ok) {
        memcpy(key, raw, WG_KEY_LEN);
    }
    explicit_bzero(raw, sizeof(raw));       /* it may be the private key */
    explicit_bzero(again, sizeof(again));
    return ok;
}


static const char *
key_to_base64(const uint8_t key[WG_KEY_LEN], char out[KEY_B64_LEN + 1])
{
    EVP_EncodeBlock((unsigned char *) out, key, WG_KEY_LEN);
    return out;
}


static void
read_private_key(const char *path, uint8_t key[WG_KEY_LEN])
{
    char     buf[128];
    ssize_t  n;
    int      fd;
    bool     ok;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        usage_error("%s: %s", path, strerror(errno));
    }
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n < 0) {
        usage_error("%s: %s", path, strerror(errno));
    }
    if (n > 0 && buf[n - 1] == '\n') {
        n--;
    }
    buf[n] = '\0';
    ok = key_from_base64(buf, key);
    explicit_bzero(buf, sizeof(buf));
    if (!ok) {
        usage_error("%s: not a base64 WireGuard key", path);
    }
}


static unsigned long
number(const char *s, unsigned long min, unsigned long max, const char *what,
       unsigned lineno)
{
    uint64_t  v;

    if (!parse_uint(s, strlen(s), max, &v) || v < min) {
        if (lineno) {
            usage_error("line %u: bad %s '%s'", lineno, what, s);
        }
        usage_error("bad %s '%s'", what, s);
    }
    return (unsigned long) v;
}


static void
parse_allowed(char *list, struct wg_peer *p, unsigned lineno)
{
    char  *ip, *save = NULL;

    for (ip = strtok_r(list, ",", &save); ip; ip = strtok_r(NULL, ",", &save)) {
        if (p->n_allowed_ips == WG_ALLOWED_IPS_MAX) {
            usage_error("line %u: more than %d allowed IPs",
                        lineno, WG_ALLOWED_IPS_MAX);
        }
        if (ip_prefix_parse(ip, &p->allowed_ips[p->n_allowed_ips]) < 0) {
            usage_error("line %u: bad CIDR '%s'", lineno, ip);
        }
        if (!ip_prefix_is_network(&p->allowed_ips[p->n_allowed_ips])) {
            usage_error("line %u: '%s' has host bits set", lineno, ip);
        }
        p->n_allowed_ips++;
    }
}


/* "peer KEY [endpoint=..] [allowed=..] [keepalive=..]", after "peer" */
static void
parse_peer(char *args, struct wg_peer *p, unsigned lineno)
{
    char  *tok, *save = NULL, *key;
    bool   seen_allowed = false, seen_keepalive = false;

    memset(p, 0, sizeof(*p));
    key = strtok_r(args, " \t", &save);
    if (key == NULL || !key_from_base64(key, p->public_key)) {
        usage_error("line %u: bad base64 public key", lineno);   /* no echo */
    }
    while ((tok = strtok_r(NULL, " \t", &save)) != NULL) {
        if (strncmp(tok, "endpoint=", 9) == 0 && !p->has_endpoint) {
            if (wg_endpoint_parse(tok + 9, p) < 0) {
                usage_error("line %u: bad endpoint '%s' (ip:port)",
                            lineno, tok + 9);
            }
        } else if (strncmp(tok, "allowed=", 8) == 0 && !seen_allowed) {
            seen_allowed = true;
            parse_allowed(tok + 8, p, lineno);
        } else if (strncmp(tok, "keepalive=", 10) == 0 && !seen_keepalive) {
            seen_keepalive = true;
            p->persistent_keepalive =
                (uint16_t) number(tok + 10, 0, 65535, "keepalive", lineno);
        } else {
            usage_error("line %u: unexpected '%s'", lineno, tok);
        }
    }
}


static char *
next_line(char **buf, size_t *cap, unsigned *lineno)
{
    ssize_t  n;

    n = getline(buf, cap, stdin);
    if (n < 0) {
        return NULL;
    }
    ++*lineno;
    if (n > LINE_MAX_LEN) {
        usage_error("line %u: too long", *lineno);
    }
    if (n > 0 && (*buf)[n - 1] == '\n') {
        (*buf)[n - 1] = '\0';
    }
    return *buf;
}


static void
read_commands(struct cmds *cmds)
{
    struct cmd  *c;
    char        *line = NULL, *word, *rest;
    size_t       cap = 0;
    unsigned     lineno = 0;

    while (next_line(&line, &cap, &lineno) != NULL) {
        rest = line + strspn(line, " \t");
        if (*rest == '\0' || *rest == '#') {
            continue;
        }
        word = rest;
        rest += strcspn(rest, " \t");
        if (*rest != '\0') {
            *rest++ = '\0';
        }

        cmds->v = grow(cmds->v, cmds->n, sizeof(*cmds->v));
        c = &cmds->v[cmds->n++];
        memset(c, 0, sizeof(*c));

        if (strcmp(word, "peer") == 0) {
            c->kind = CMD_PEER;
            parse_peer(rest, &c->peer, lineno);
        } else if (strcmp(word, "remove") == 0) {
            c->kind = CMD_REMOVE;
            word = strtok_r(rest, " \t", &rest);
            if (word == NULL || !key_from_base64(word, c->peer.public_key)
                || strtok_r(NULL, " \t", &rest) != NULL)
            {
                usage_error("line %u: remove takes one base64 public key",
                            lineno);
            }
        } else if (strcmp(word, "snapshot") == 0 && *rest == '\0') {
            c->kind = CMD_SNAPSHOT;
            for ( ;; ) {
                if (next_line(&line, &cap, &lineno) == NULL) {
                    usage_error("snapshot without \"end\"");
                }
                rest = line + strspn(line, " \t");
                if (strcmp(rest, "end") == 0) {
                    break;
                }
                if (strncmp(rest, "peer", 4) != 0
                    || (rest[4] != ' ' && rest[4] != '\t'))
                {
                    usage_error("line %u: only peer lines in a snapshot",
                                lineno);
                }
                c->peers = grow(c->peers, c->n_peers, sizeof(*c->peers));
                parse_peer(rest + 5, &c->peers[c->n_peers++], lineno);
            }
        } else if (strcmp(word, "dump") == 0 && *rest == '\0') {
            c->kind = CMD_DUMP;
        } else if (strcmp(word, "delete") == 0 && *rest == '\0') {
            c->kind = CMD_DELETE;
        } else {
            usage_error("line %u: unknown command '%s'", lineno, word);
        }
    }
    if (ferror(stdin)) {
        usage_error("reading stdin: %s", strerror(errno));
    }
    free(line);
}


static double
now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}


static int
dump(struct wg_device *dev)
{
    struct wg_peer  *peers;
    char             key[KEY_B64_LEN + 1], ep[WG_ENDPOINT_STRLEN];
    char             ip[IP_PREFIX_STRLEN];
    size_t           n, i, j;
    int              rc;

    rc = wg_get_peers(dev, &peers, &n);
    if (rc < 0) {
        return rc;
    }
    for (i = 0; i < n; i++) {
        printf("peer %s endpoint=%s allowed=", key_to_base64(peers[i].public_key,
               key), wg_endpoint_format(&peers[i], ep));
        for (j = 0; j < peers[i].n_allowed_ips; j++) {
            printf("%s%s", j ? "," : "",
                   ip_prefix_format(&peers[i].allowed_ips[j], ip));
        }
        printf(" keepalive=%u handshake=%lld rx=%llu tx=%llu\n",
               peers[i].persistent_keepalive,
               (long long) peers[i].last_handshake.tv_sec,
               (unsigned long long) peers[i].rx_bytes,
               (unsigned long long) peers[i].tx_bytes);
    }
    printf("peers %zu\n", n);
    free(peers);
    return 0;
}


static int
run(struct wg_device *dev, const struct cmd *c)
{
    double  t0 = now_ms();
    int     rc;

    switch (c->kind) {
    case CMD_PEER:
        rc = wg_set_peer(dev, &c->peer);
        if (rc == 0) {
            printf("applied peer in %.3f ms\n", now_ms() - t0);
        }
        return rc;
    case CMD_REMOVE:
        rc = wg_remove_peer(dev, c->peer.public_key);
        if (rc == 0) {
            printf("applied remove in %.3f ms\n", now_ms() - t0);
        }
        return rc;
    case CMD_SNAPSHOT:
        rc = wg_replace_peers(dev, c->peers, c->n_peers);
        if (rc == 0) {
            printf("applied snapshot of %zu peers in %.3f ms\n",
                   c->n_peers, now_ms() - t0);
        }
        return rc;
    case CMD_DUMP:
        return dump(dev);
    case CMD_DELETE:
        rc = netdev_delete(wg_ifname(dev));
        if (rc == 0) {
            printf("deleted %s\n", wg_ifname(dev));
        }
        return rc;
    }
    return -EINVAL;
}


int
main(int argc, char **argv)
{
    static const struct option  opts[] = {
        { "if",               required_argument, NULL, 'i' },
        { "backend",          required_argument, NULL, 'b' },
        { "start-userspace",  no_argument,       NULL, 's' },
        { "private-key-file", required_argument, NULL, 'k' },
        { "port",             required_argument, NULL, 'p' },
        { "address",          required_argument, NULL, 'a' },
        { "mtu",              required_argument, NULL, 'm' },
        { NULL, 0, NULL, 0 }
    };
    struct wg_changes  dc = { .listen_port = -1 };
    struct wg_device  *dev;
    struct ip_prefix   addr;
    struct cmds        cmds = { 0 };
    enum wg_backend    backend = WG_BACKEND_AUTO;
    const char        *ifname = NULL, *why;
    uint8_t            private_key[WG_KEY_LEN];
    unsigned           flags = 0, mtu = 0;
    bool               have_addr = false;
    size_t             i;
    int                o, rc;

    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'i':
            ifname = optarg;
            break;
        case 'b':
            if (strcmp(optarg, "kernel") == 0) {
                backend = WG_BACKEND_KERNEL;
            } else if (strcmp(optarg, "uapi") == 0) {
                backend = WG_BACKEND_UAPI;
            } else if (strcmp(optarg, "auto") != 0) {
                usage_error("--backend takes kernel, uapi or auto");
            }
            break;
        case 's':
            flags |= WG_OPEN_START_USERSPACE;
            break;
        case 'k':
            read_private_key(optarg, private_key);
            dc.private_key = private_key;
            break;
        case 'p':
            dc.listen_port = (int) number(optarg, 0, 65535, "port", 0);
            break;
        case 'a':
            if (ip_prefix_parse(optarg, &addr) < 0) {
                usage_error("bad address '%s' (want ip/prefix)", optarg);
            }
            why = ip_prefix_host_error(&addr);
            if (why != NULL) {
                usage_error("address %s %s", optarg, why);
            }
            have_addr = true;
            break;
        case 'm':
            mtu = (unsigned) number(optarg, 1280, 65535, "MTU", 0);
            break;
        default:
            usage_error("see the comment at the top of tests/wg/wg_apply.c");
        }
    }
    if (ifname == NULL || optind != argc) {
        usage_error("usage: wg-apply --if IFNAME [--backend kernel|uapi|auto]"
                    " [--start-userspace] [--private-key-file F] [--port N]"
                    " [--address CIDR] [--mtu N] < commands");
    }
    read_commands(&cmds);

    rc = wg_open(&dev, ifname, backend, flags);
    if (rc < 0) {
        return 1;
    }
    printf("interface %s backend %s\n",
           wg_ifname(dev), wg_backend_name(wg_backend_of(dev)));

    if (dc.private_key != NULL || dc.listen_port >= 0) {
        rc = wg_apply(dev, &dc);
        explicit_bzero(private_key, sizeof(private_key));
    }
    if (rc == 0 && have_addr) {
        rc = netdev_set_address(ifname, &addr);
        if (rc == 0) {
            rc = netdev_up(ifname, mtu);
        }
    }
    for (i = 0; rc == 0 && i < cmds.n; i++) {
        rc = run(dev, &cmds.v[i]);
    }

    wg_close(dev);
    for (i = 0; i < cmds.n; i++) {
        free(cmds.v[i].peers);
    }
    free(cmds.v);
    return rc == 0 ? 0 : 1;
}
