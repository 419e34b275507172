/*
 * Userspace WireGuard (wireguard-go and the like) over the cross-platform
 * UAPI: a unix socket /var/run/wireguard/<ifname>.sock speaking key=value
 * lines, "set=1" or "get=1" first, a blank line last; the reply ends with
 * "errno=N" and a blank line.  One connection per operation, as wg(8) does,
 * so a restarted implementation is picked up without ceremony.
 *
 * The socket's path is in a shared directory: before anything (a private
 * key above all) is sent to it, the directory and the socket must belong
 * to root or to us and be writable by nobody else, and the process that
 * listens must run as root or as us (SO_PEERCRED).
 *
 * The reply is parsed strictly with bounded lines: anything malformed is
 * an error.  Unknown keys are skipped, as wg(8) does, so newer
 * implementations stay readable.
 */

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hex.h"
#include "parse.h"
#include "wg/wg_backend.h"

#define UAPI_DIR        "/var/run/wireguard"
#define UAPI_TIMEOUT_S  10      /* a wedged implementation fails, not hangs */
#define UAPI_LINE_MAX   1024    /* the longest real line is under 100 */

struct wg_uapi {
    struct wg_device  dev;
    char              path[sizeof(((struct sockaddr_un *) 0)->sun_path)];
};

/* the request being built */
struct text {
    char    *p;
    size_t   len;
    size_t   cap;
    bool     oom;
};

/* a bounded line reader over the reply */
struct reader {
    int     fd;
    size_t  start;
    size_t  end;
    char    buf[UAPI_LINE_MAX];
};


static void
socket_path(char *path, size_t n, const char *ifname)
{
    /* ifname is at most 15 checked characters: always fits */
    snprintf(path, n, UAPI_DIR "/%s.sock", ifname);
}


static bool
trusted_uid(uid_t uid)
{
    return uid == 0 || uid == geteuid();
}


/* root's or ours, and writable by nobody else: NULL, else why not */
static const char *
untrusted_file(const struct stat *st)
{
    if (!trusted_uid(st->st_uid)) {
        return "is owned by another user";
    }
    if (st->st_mode & (S_IWGRP | S_IWOTH)) {
        return "is writable by group or others";
    }
    return NULL;
}


static int
uapi_connect(const char *path)
{
    struct sockaddr_un  sun = { .sun_family = AF_UNIX };
    struct timeval      tv = { .tv_sec = UAPI_TIMEOUT_S };
    struct stat         st;
    struct ucred        cred;
    socklen_t           len = sizeof(cred);
    const char         *why, *what = path;
    int                 fd, err;

    if (lstat(path, &st) != 0) {
        return -errno;
    }
    why = S_ISSOCK(st.st_mode) ? untrusted_file(&st) : "is not a socket";
    if (why == NULL) {
        if (lstat(UAPI_DIR, &st) != 0) {
            return -errno;
        }
        why = S_ISDIR(st.st_mode) ? untrusted_file(&st) : "is not a directory";
        what = UAPI_DIR;
    }
    if (why != NULL) {
        wg_log("refusing %s: it %s", what, why);
        return -EPERM;
    }

    strcpy(sun.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0
        || setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0
        || connect(fd, (struct sockaddr *) &sun, sizeof(sun)) < 0
        || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
    {
        err = errno;
        close(fd);
        return -err;
    }
    if (!trusted_uid(cred.uid)) {
        wg_log("refusing %s: the process listening on it runs as uid %u",
               path, (unsigned) cred.uid);
        close(fd);
        return -EPERM;
    }
    return fd;
}


/* 0: an implementation we trust answers; -EPERM: one we do not */
static int
uapi_probe(const char *ifname)
{
    char  path[sizeof(((struct sockaddr_un *) 0)->sun_path)];
    int   fd;

    socket_path(path, sizeof(path), ifname);
    fd = uapi_connect(path);
    if (fd < 0) {
        return fd;
    }
    close(fd);
    return 0;
}


bool
wg_uapi_running(const char *ifname)
{
    return uapi_probe(ifname) == 0;
}


/* room for n more bytes and a terminator; grows by copying, never realloc,
 * so that no stray copy of a key is left behind */
static bool
text_room(struct text *t, size_t n)
{
    size_t   cap = t->cap ? t->cap : 4096;
    char    *p;

    while (cap - t->len <= n) {
        cap *= 2;
    }
    if (cap == t->cap) {
        return true;
    }
    p = malloc(cap);
    if (p == NULL) {
        return false;
    }
    if (t->len) {
        memcpy(p, t->p, t->len);
    }
    if (t->p != NULL) {
        explicit_bzero(t->p, t->cap);
        free(t->p);
    }
    t->p = p;
    t->cap = cap;
    return true;
}


static void
text_add(struct text *t, const char *fmt, ...)
{
    va_list  ap;
    int      n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (t->oom || n < 0 || !text_room(t, n)) {
        t->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    t->len += n;
}


static void
text_key(struct text *t, const char *name, const uint8_t key[WG_KEY_LEN])
{
    char  hex[2 * WG_KEY_LEN + 1];
    int   i;

    for (i = 0; i < WG_KEY_LEN; i++) {
        hex[2 * i] = "0123456789abcdef"[key[i] >> 4];
        hex[2 * i + 1] = "0123456789abcdef"[key[i] & 0xf];
    }
    hex[2 * WG_KEY_LEN] = '\0';
    text_add(t, "%s=%s\n", name, hex);
    explicit_bzero(hex, sizeof(hex));
}


static void
text_free(struct text *t)
{
    if (t->p != NULL) {
        explicit_bzero(t->p, t->cap);
        free(t->p);
    }
}


static int
send_all(int fd, const char *p, size_t n)
{
    ssize_t  w;

    while (n > 0) {
        /* MSG_NOSIGNAL: an implementation that goes away is an error */
        w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno == EAGAIN ? -ETIMEDOUT : -errno;
        }
        p += w;
        n -= w;
    }
    return 0;
}


/*
 * The next line, its '\n' cut off; NULL with *err 0 at a clean end of the
 * stream, -EBADMSG for a line that is too long, holds a NUL or is cut
 * short, or another -errno.
 */
static char *
read_line(struct reader *r, int *err)
{
    char     *line, *nl;
    ssize_t   n;

    for ( ;; ) {
        nl = memchr(r->buf + r->start, '\n', r->end - r->start);
        if (nl != NULL) {
            *nl = '\0';
            line = r->buf + r->start;
            r->start = nl + 1 - r->buf;
            if (memchr(line, '\0', nl - line) != NULL) {
                *err = -EBADMSG;
                return NULL;
            }
            return line;
        }
        if (r->start > 0) {
            memmove(r->buf, r->buf + r->start, r->end - r->start);
            r->end -= r->start;
            r->start = 0;
        }
        if (r->end == UAPI_LINE_MAX) {
            *err = -EBADMSG;
            return NULL;
        }
        n = read(r->fd, r->buf + r->end, UAPI_LINE_MAX - r->end);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            *err = errno == EAGAIN ? -ETIMEDOUT : -errno;
            return NULL;
        }
        if (n == 0) {
            *err = r->end == 0 ? 0 : -EBADMSG;
            return NULL;
        }
        r->end += n;
    }
}


/* common/parse.h on a NUL-terminated value */
static bool
parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    return parse_uint(s, strlen(s), max, out);
}


static bool
parse_key(const char *s, uint8_t key[WG_KEY_LEN])
{
    int  i, hi, lo;

    if (strlen(s) != 2 * WG_KEY_LEN) {
        return false;
    }
    for (i = 0; i < WG_KEY_LEN; i++) {
        hi = hex_digit(s[2 * i]);
        lo = hex_digit(s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return false;
        }
        key[i] = (uint8_t) (hi << 4 | lo);
    }
    return true;
}


/* "errno=N": the implementation's verdict, as a negative errno */
static int
parse_errno(const char *value, int *err)
{
    uint64_t  v;

    /* wireguard-go writes its codes negated, others positive */
    if (*value == '-') {
        value++;
    }
    if (!parse_u64(value, 4095, &v)) {
        return -EBADMSG;
    }
    *err = -(int) v;
    return 0;
}


/* one request and its reply; on_line sees every line but "errno" */
static int
transact(struct wg_uapi *u, const char *req, size_t len, const char *what,
         int (*on_line)(struct wg_uapi *u, char *key, char *value, void *arg),
         void *arg)
{
    struct reader  *r;
    char           *line, *eq;
    int             fd, rc, err = 1;

    fd = uapi_connect(u->path);
    if (fd < 0) {
        wg_log("%s: %s: connecting to %s: %s",
               u->dev.ifname, what, u->path, strerror(-fd));
        return fd;
    }
    r = malloc(sizeof(*r));
    if (r == NULL) {
        wg_log("%s: %s: out of memory", u->dev.ifname, what);
        close(fd);
        return -ENOMEM;
    }
    r->fd = fd;
    r->start = r->end = 0;

    rc = send_all(fd, req, len);
    if (rc < 0) {
        wg_log("%s: %s: sending: %s", u->dev.ifname, what, strerror(-rc));
        goto out;
    }

    for ( ;; ) {
        line = read_line(r, &rc);
        if (line == NULL) {
            if (rc == 0 || rc == -EBADMSG) {
                wg_log("%s: %s: malformed reply (%s)", u->dev.ifname, what,
                       rc == 0 ? "cut short" : "bad line");
                rc = -EBADMSG;
            } else {
                wg_log("%s: %s: reading: %s",
                       u->dev.ifname, what, strerror(-rc));
            }
            goto out;
        }
        if (*line == '\0') {
            break;
        }
        eq = strchr(line, '=');
        if (eq == NULL || eq == line || err <= 0) {
            wg_log("%s: %s: malformed reply (%s)", u->dev.ifname, what,
                   err <= 0 ? "data after errno" : "not key=value");
            rc = -EBADMSG;
            goto out;
        }
        *eq++ = '\0';
        if (strcmp(line, "errno") == 0) {
            rc = parse_errno(eq, &err);
        } else {
            rc = on_line != NULL ? on_line(u, line, eq, arg) : -EBADMSG;
        }
        if (rc < 0) {
            /* on_line refuses only keys it knows: safe to print */
            if (rc == -EBADMSG) {
                wg_log("%s: %s: malformed reply (%s%s)", u->dev.ifname, what,
                       on_line ? "bad " : "unexpected key",
                       on_line ? line : "");
            }
            goto out;
        }
    }

    rc = err;
    if (err > 0) {
        wg_log("%s: %s: malformed reply (no errno)", u->dev.ifname, what);
        rc = -EBADMSG;
    } else if (err < 0) {
        wg_log("%s: %s: %s", u->dev.ifname, what, strerror(-err));
    }

out:
    explicit_bzero(r->buf, sizeof(r->buf));     /* a get has the private key */
    free(r);
    close(fd);
    return rc;
}


static int
uapi_apply(struct wg_device *dev, const struct wg_changes *c)
{
    struct wg_uapi        *u = (struct wg_uapi *) dev;
    struct text            t = { 0 };
    const struct wg_peer  *p;
    char                   buf[IP_PREFIX_STRLEN > WG_ENDPOINT_STRLEN
                               ? IP_PREFIX_STRLEN : WG_ENDPOINT_STRLEN];
    size_t                 i, j;
    int                    rc;

    text_add(&t, "set=1\n");
    if (c->private_key != NULL) {
        text_key(&t, "private_key", c->private_key);
    }
    if (c->listen_port >= 0) {
        text_add(&t, "listen_port=%d\n", c->listen_port);
    }
    for (i = 0; i < c->n_remove; i++) {
        text_key(&t, "public_key", c->remove[i]);
        text_add(&t, "remove=true\n");
    }
    for (i = 0; i < c->n_set; i++) {
        p = &c->set[i];
        text_key(&t, "public_key", p->public_key);
        text_add(&t, "replace_allowed_ips=true\n");
        if (p->has_endpoint) {
            text_add(&t, "endpoint=%s\n", wg_endpoint_format(p, buf));
        }
        text_add(&t, "persistent_keepalive_interval=%u\n",
                 p->persistent_keepalive);
        for (j = 0; j < p->n_allowed_ips; j++) {
            text_add(&t, "allowed_ip=%s\n",
                     ip_prefix_format(&p->allowed_ips[j], buf));
        }
    }
    text_add(&t, "\n");

    if (t.oom) {
        wg_log("%s: set device: out of memory", dev->ifname);
        rc = -ENOMEM;
    } else {
        rc = transact(u, t.p, t.len, "set device", NULL, NULL);
    }
    text_free(&t);
    return rc;
}


struct get_state {
    struct wg_peer  **peers;
    size_t           *n;
    size_t            cap;
    struct wg_peer   *cur;
};


static int
on_get_line(struct wg_uapi *u, char *key, char *value, void *arg)
{
    struct get_state  *st = arg;
    struct wg_peer    *p = st->cur;
    uint8_t            pub[WG_KEY_LEN];
    uint64_t           v;

    if (strcmp(key, "public_key") == 0) {
        if (!parse_key(value, pub)) {
            return -EBADMSG;
        }
        st->cur = wg_peer_next(&u->dev, st->peers, st->n, &st->cap, pub);
        return st->cur != NULL ? 0 : -ENOMEM;
    }
    if (strcmp(key, "private_key") == 0 || strcmp(key, "listen_port") == 0
        || strcmp(key, "fwmark") == 0)
    {
        return p == NULL ? 0 : -EBADMSG;        /* device keys come first */
    }
    if (p == NULL) {
        return strcmp(key, "endpoint") == 0 || strcmp(key, "allowed_ip") == 0
               ? -EBADMSG : 0;
    }

    if (strcmp(key, "endpoint") == 0) {
        return wg_endpoint_parse(value, p) == 0 ? 0 : -EBADMSG;
    }
    if (strcmp(key, "allowed_ip") == 0) {
        if (p->n_allowed_ips == WG_ALLOWED_IPS_MAX) {
            wg_log("%s: get device: a peer has more than %d allowed IPs",
                   u->dev.ifname, WG_ALLOWED_IPS_MAX);
            return -EOVERFLOW;
        }
        return ip_prefix_parse(value, &p->allowed_ips[p->n_allowed_ips++])
               == 0 ? 0 : -EBADMSG;
    }
    if (strcmp(key, "persistent_keepalive_interval") == 0) {
        if (!parse_u64(value, UINT16_MAX, &v)) {
            return -EBADMSG;
        }
        p->persistent_keepalive = (uint16_t) v;
        return 0;
    }
    if (strcmp(key, "last_handshake_time_sec") == 0) {
        if (!parse_u64(value, INT64_MAX, &v)) {
            return -EBADMSG;
        }
        p->last_handshake.tv_sec = (time_t) v;
        return 0;
    }
    if (strcmp(key, "last_handshake_time_nsec") == 0) {
        if (!parse_u64(value, 999999999, &v)) {
            return -EBADMSG;
        }
        p->last_handshake.tv_nsec = (long) v;
        return 0;
    }
    if (strcmp(key, "rx_bytes") == 0) {
        return parse_u64(value, UINT64_MAX, &p->rx_bytes) ? 0 : -EBADMSG;
    }
    if (strcmp(key, "tx_bytes") == 0) {
        return parse_u64(value, UINT64_MAX, &p->tx_bytes) ? 0 : -EBADMSG;
    }
    return 0;       /* preshared_key, protocol_version, newer keys */
}


static int
uapi_get_peers(struct wg_device *dev, struct wg_peer **peers, size_t *n)
{
    static const char  req[] = "get=1\n\n";
    struct get_state   st = { .peers = peers, .n = n };

    return transact((struct wg_uapi *) dev, req, sizeof(req) - 1,
                    "get device", on_get_line, &st);
}


static void
uapi_close(struct wg_device *dev)
{
    free(dev);
}


static const struct wg_backend_ops  uapi_ops = {
    .kind = WG_BACKEND_UAPI,
    .apply = uapi_apply,
    .get_peers = uapi_get_peers,
    .close = uapi_close,
};


/*
 * Runs the userspace implementation, which daemonizes once its TUN device
 * and UAPI socket exist: its exit status says whether they do.  Its stdout
 * goes nowhere (it would hold a caller's pipe open for ever); its stderr is
 * ours, where its errors belong.
 */
static int
uapi_start(const char *ifname)
{
    posix_spawn_file_actions_t  fa;
    const char                 *prog;
    char                       *argv[3];
    pid_t                       pid;
    int                         rc, status;

    prog = getenv("WG_QUICK_USERSPACE_IMPLEMENTATION");
    if (prog == NULL || *prog == '\0') {
        prog = "wireguard-go";
    }
    argv[0] = (char *) prog;
    argv[1] = (char *) ifname;
    argv[2] = NULL;

    rc = posix_spawn_file_actions_init(&fa);
    if (rc != 0) {
        wg_log("%s: starting %s: %s", ifname, prog, strerror(rc));
        return -rc;
    }
    rc = posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null",
                                          O_RDONLY, 0);
    if (rc == 0) {
        rc = posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null",
                                              O_WRONLY, 0);
    }
    if (rc == 0) {
        /* posix_spawn, not fork: the daemon may have threads by now */
        rc = posix_spawnp(&pid, prog, &fa, NULL, argv, environ);
    }
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        wg_log("%s: starting %s: %s", ifname, prog, strerror(rc));
        return -rc;
    }

    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            rc = errno;
            wg_log("%s: waiting for %s: %s", ifname, prog, strerror(rc));
            return -rc;
        }
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        wg_log("%s: %s failed (%s %d)", ifname, prog,
               WIFEXITED(status) ? "exit status" : "signal",
               WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        return -EIO;
    }
    return 0;
}


int
wg_uapi_open(const char *ifname, bool start, struct wg_device **dev)
{
    struct wg_uapi  *u;
    int              rc;

    rc = uapi_probe(ifname);
    if (rc == -EPERM) {
        return rc;              /* logged: nothing is sent to that socket */
    }
    if (rc != 0) {
        if (!start) {
            wg_log("%s: no userspace WireGuard answers on "
                   UAPI_DIR "/%s.sock", ifname, ifname);
            return -ENOENT;
        }
        rc = uapi_start(ifname);
        if (rc < 0) {
            return rc;
        }
        if (!wg_uapi_running(ifname)) {
            wg_log("%s: started, but nothing answers on "
                   UAPI_DIR "/%s.sock", ifname, ifname);
            return -EIO;
        }
    }

    u = calloc(1, sizeof(*u));
    if (u == NULL) {
        wg_log("%s: out of memory", ifname);
        return -ENOMEM;
    }
    u->dev.ops = &uapi_ops;
    strcpy(u->dev.ifname, ifname);      /* checked by wg_open() */
    socket_path(u->path, sizeof(u->path), ifname);
    *dev = &u->dev;
    return 0;
}
