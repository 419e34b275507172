/*
 * `dstack-ctld status`: the VPC as the running node (or hub) sees it.  It
 * reads the node's settings (--config, --state-dir; --hub and --data-dir
 * for the hub), connects to the daemon's status socket, and prints the
 * one JSON document the daemon answers (node/node_status.c) as it is
 * (--json) or as a table.  Nothing is guessed: no daemon, no status.
 */

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli/cli.h"
#include "node/node.h"

/* the answer of a VPC of 2^20 members fits */
#define STATUS_MAX_BYTES  (512u << 20)
#define STATUS_WAIT_MS    10000


static void
status_usage(FILE *out)
{
    fprintf(out,
        "usage: dstack-ctld status [--json] [--state-dir DIR]\n"
        "       dstack-ctld status --hub [--json] [--data-dir DIR]\n"
        "\n"
        "Asks the running node (<state-dir>/" NODE_STATUS_SOCKET ") or hub\n"
        "(<data-dir>/" HUB_STATUS_SOCKET ") how it sees the VPC. It reads the\n"
        "same settings as `dstack-ctld node` (--config, section [node]).\n"
        "Exit status: 0, 1 no daemon answers, 2 usage.\n");
}


/* the daemon's whole answer, NUL-terminated; NULL after saying why */
static char *
fetch(const char *path)
{
    struct sockaddr_un  sa;
    struct pollfd       p;
    char               *buf = NULL, *nb;
    size_t              len = 0, cap = 0;
    ssize_t             r;
    int                 fd;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "dstack-ctld status: %s: path too long\n", path);
        return NULL;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0) {
        fprintf(stderr, "dstack-ctld status: no daemon answers on %s: %s\n",
                path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return NULL;
    }
    p.fd = fd;
    p.events = POLLIN;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 65536;
            nb = cap <= STATUS_MAX_BYTES + 1 ? realloc(buf, cap) : NULL;
            if (nb == NULL) {
                fprintf(stderr, "dstack-ctld status: the answer is too large\n");
                goto failed;
            }
            buf = nb;
        }
        if (poll(&p, 1, STATUS_WAIT_MS) != 1) {
            fprintf(stderr, "dstack-ctld status: %s did not answer within"
                    " %d s\n", path, STATUS_WAIT_MS / 1000);
            goto failed;
        }
        r = read(fd, buf + len, cap - len - 1);
        if (r == 0) {
            break;
        }
        if (r < 0 && errno != EINTR) {
            fprintf(stderr, "dstack-ctld status: reading %s: %s\n", path,
                    strerror(errno));
            goto failed;
        }
        len += r > 0 ? (size_t) r : 0;
    }
    close(fd);
    buf[len] = '\0';
    return buf;

failed:
    close(fd);
    free(buf);
    return NULL;
}


static const char *
str_or(json_t *o, const char *key, const char *none)
{
    const char  *s = json_string_value(json_object_get(o, key));

    return s ? s : none;
}


/* "12s", "3m4s", "5h2m", "3d4h" */
static const char *
age_text(long long s, char *buf, size_t size)
{
    if (s < 60) {
        snprintf(buf, size, "%llds", s);
    } else if (s < 3600) {
        snprintf(buf, size, "%lldm%llds", s / 60, s % 60);
    } else if (s < 86400) {
        snprintf(buf, size, "%lldh%lldm", s / 3600, s % 3600 / 60);
    } else {
        snprintf(buf, size, "%lldd%lldh", s / 86400, s % 86400 / 3600);
    }
    return buf;
}


static void
print_handshake(json_t *p, char *buf, size_t size)
{
    json_t  *age = json_object_get(p, "handshake_age");
    char     text[32];

    if (json_is_integer(age)) {
        snprintf(buf, size, "%s ago",
                 age_text(json_integer_value(age), text, sizeof(text)));
    } else {
        snprintf(buf, size, "%s", json_is_integer(json_object_get(p, "rx_bytes"))
                                  ? "never" : "-");
    }
}


static const char *
bytes_text(json_t *v, char *buf, size_t size)
{
    if (!json_is_integer(v)) {
        return "-";
    }
    snprintf(buf, size, "%lld", (long long) json_integer_value(v));
    return buf;
}


static int
print_table(json_t *doc)
{
    json_t      *hub = json_object_get(doc, "hub"), *peers, *p;
    char         hs[48], rx[32], tx[32], since[64], age[32];
    long long    t, now = json_integer_value(json_object_get(doc, "time"));
    struct tm    tm;
    time_t       tt;
    size_t       i;

    peers = json_object_get(doc, "peers");
    printf("%s %s (%s, %s %s)\n", str_or(doc, "dns_name", "(not joined yet)"),
           str_or(doc, "address", "-"), str_or(doc, "role", "?"),
           str_or(doc, "interface", "?"),
           json_is_true(json_object_get(doc, "interface_up")) ? "up" : "down");
    if (json_is_object(hub)) {
        t = json_integer_value(json_object_get(hub, "transport_since"));
        snprintf(since, sizeof(since), "-");
        if (t > 0) {
            tt = (time_t) t;
            gmtime_r(&tt, &tm);
            strftime(since, sizeof(since), "%Y-%m-%dT%H:%M:%SZ", &tm);
            snprintf(since + strlen(since), sizeof(since) - strlen(since),
                     " (%s)", age_text(now > t ? now - t : 0, age, sizeof(age)));
        }
        print_handshake(hub, hs, sizeof(hs));
        printf("hub %s %s transport %s since %s endpoint %s handshake %s"
               " rx %s tx %s\n", str_or(hub, "name", "?"),
               str_or(hub, "address", "-"), str_or(hub, "transport", "?"), since,
               str_or(hub, "endpoint", "-"), hs,
               bytes_text(json_object_get(hub, "rx_bytes"), rx, sizeof(rx)),
               bytes_text(json_object_get(hub, "tx_bytes"), tx, sizeof(tx)));
    }
    if (!json_is_array(peers) || json_array_size(peers) == 0) {
        printf("no peers\n");
        return 0;
    }
    printf("%-24s %-16s %-8s %-24s %-12s %14s %14s\n", "NAME", "ADDRESS", "PATH",
           "ENDPOINT", "HANDSHAKE", "RX", "TX");
    json_array_foreach(peers, i, p) {
        const char *path = str_or(p, "path", "?");

        print_handshake(p, hs, sizeof(hs));
        printf("%-24s %-16s %-8s %-24s %-12s %14s %14s\n", str_or(p, "name", "?"),
               str_or(p, "address", "-"),
               strcmp(path, "via_hub") == 0 ? "via hub" : path,
               str_or(p, "endpoint", "-"), hs,
               bytes_text(json_object_get(p, "rx_bytes"), rx, sizeof(rx)),
               bytes_text(json_object_get(p, "tx_bytes"), tx, sizeof(tx)));
    }
    return 0;
}


int
cli_status(int argc, char **argv)
{
    struct node_config   cfg;
    char                 path[PATH_MAX], *text;
    json_t              *doc;
    json_error_t         err;
    bool                 as_json = false;
    int                  keep = 0, rc;

    /* --json is this command's own; the rest are the node's settings */
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            as_json = true;
        } else {
            argv[keep++] = argv[i];
        }
    }
    rc = node_config_load(&cfg, keep, argv);
    if (rc != 0) {
        if (rc == 1) {
            status_usage(stdout);
        }
        opts_free(node_opts, &cfg);
        return rc == 1 ? 0 : 2;
    }
    snprintf(path, sizeof(path), "%s/%s", cfg.hub ? cfg.data_dir : cfg.state_dir,
             cfg.hub ? HUB_STATUS_SOCKET : NODE_STATUS_SOCKET);
    opts_free(node_opts, &cfg);

    text = fetch(path);
    if (text == NULL) {
        return 1;
    }
    doc = json_loads(text, JSON_REJECT_DUPLICATES, &err);
    if (!json_is_object(doc)) {
        fprintf(stderr, "dstack-ctld status: %s answered something that is not"
                " a status document\n", path);
        json_decref(doc);
        free(text);
        return 1;
    }
    if (as_json) {
        fputs(text, stdout);
    } else {
        rc = print_table(doc);
    }
    json_decref(doc);
    free(text);
    return rc;
}
