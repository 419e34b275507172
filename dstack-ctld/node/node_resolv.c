/*
 * The CVM's resolver pointed at the node's DNS server, as Tailscale's
 * MagicDNS does: resolv.conf is replaced by one naming only our address
 * (its search and options lines kept), and the original is saved in the
 * state directory, read for the resolvers names outside dstack.internal
 * are forwarded to, and put back when the daemon stops.
 *
 * A daemon that died without restoring finds its own file (the first
 * line marks it) and takes the saved original again.  Under "ip netns
 * exec" (and in Docker) resolv.conf is a bind mount, which rename()
 * cannot replace (EBUSY): file_replace() rewrites it in place then.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/log.h"
#include "node/node.h"

#define RESOLV_MARK     "# dstack-ctld:"
#define RESOLV_MAX      65536


/* the whole of a small text file; NULL with errno set */
static char *
read_text(const char *path)
{
    char    *buf;
    size_t   n;
    FILE    *f = fopen(path, "re");     /* a symbolic link is followed */

    if (f == NULL) {
        return NULL;
    }
    buf = malloc(RESOLV_MAX + 1);
    n = buf ? fread(buf, 1, RESOLV_MAX + 1, f) : 0;
    fclose(f);
    if (buf == NULL || n > RESOLV_MAX || memchr(buf, '\0', n) != NULL) {
        free(buf);
        errno = buf ? EFBIG : ENOMEM;
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}


/* the nameserver lines of text, but for our own listen address */
static void
parse_upstreams(const char *text, const struct sockaddr_in *self,
                struct dns_upstreams *up)
{
    char         line[512], addr[256];
    const char  *p = text, *nl;
    size_t       len;

    up->n = 0;
    while (*p != '\0' && up->n < DNS_UPSTREAMS_MAX) {
        nl = strchr(p, '\n');
        len = nl ? (size_t) (nl - p) : strlen(p);
        snprintf(line, sizeof(line), "%.*s", (int) (len < sizeof(line) ? len : 0), p);
        p += len + (nl != NULL);

        struct sockaddr_in6  *s6 = (struct sockaddr_in6 *) &up->addr[up->n];
        struct sockaddr_in   *s4 = (struct sockaddr_in *) &up->addr[up->n];

        if (sscanf(line, " nameserver %255s", addr) != 1) {
            continue;
        }
        memset(&up->addr[up->n], 0, sizeof(up->addr[0]));
        if (inet_pton(AF_INET, addr, &s4->sin_addr) == 1) {
            if (s4->sin_addr.s_addr == self->sin_addr.s_addr) {
                continue;       /* never forward to ourselves */
            }
            s4->sin_family = AF_INET;
            s4->sin_port = htons(53);
            up->len[up->n++] = sizeof(*s4);
        } else if (inet_pton(AF_INET6, addr, &s6->sin6_addr) == 1) {
            s6->sin6_family = AF_INET6;
            s6->sin6_port = htons(53);
            up->len[up->n++] = sizeof(*s6);
        }
    }
}


/* ours: our address, and the original's search and options lines */
static char *
our_text(const char *orig, const char *saved, const struct sockaddr_in *self)
{
    char         addr[INET_ADDRSTRLEN];
    const char  *p = orig, *nl;
    char        *text, *q;
    size_t       len;

    text = q = malloc(strlen(orig) + strlen(saved) + 256);
    if (text == NULL) {
        return NULL;
    }
    inet_ntop(AF_INET, &self->sin_addr, addr, sizeof(addr));
    q += sprintf(q, RESOLV_MARK " names under " DNS_DOMAIN " answered here;"
                 " the original is %s, put back when dstack-ctld stops\n"
                 "nameserver %s\n", saved, addr);
    while (*p != '\0') {
        nl = strchr(p, '\n');
        len = nl ? (size_t) (nl - p) : strlen(p);
        if ((len > 7 && strncmp(p, "search", 6) == 0 && (p[6] == ' ' || p[6] == '\t'))
            || (len > 7 && strncmp(p, "domain", 6) == 0 && (p[6] == ' ' || p[6] == '\t'))
            || (len > 8 && strncmp(p, "options", 7) == 0 && (p[7] == ' ' || p[7] == '\t')))
        {
            memcpy(q, p, len);
            q += len;
            *q++ = '\n';
        }
        p += len + (nl != NULL);
    }
    *q = '\0';
    return text;
}


int
resolv_take_over(const char *path, const char *saved,
                 const struct sockaddr_in *self, bool rewrite,
                 struct dns_upstreams *up)
{
    struct stat  st;
    char        *cur, *orig, *ours;
    int          rc;

    if (rewrite && lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
        /* systemd-resolved's stub file, say: its owner rewrites it */
        log_warn("%s is a symbolic link, managed elsewhere: left as it is"
                 " (point the resolver at the node's DNS server there, or"
                 " use --names hosts)", path);
        rewrite = false;
    }
    cur = read_text(path);
    if (cur == NULL && errno != ENOENT) {
        log_error("cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    if (cur != NULL && strncmp(cur, RESOLV_MARK, strlen(RESOLV_MARK)) == 0) {
        /* ours, left by a daemon that did not stop cleanly */
        orig = read_text(saved);
        if (orig == NULL) {
            log_warn("%s is ours but %s is gone: no resolvers to forward"
                     " other names to", path, saved);
            orig = strdup("");
        }
        free(cur);
    } else {
        orig = cur != NULL ? cur : strdup("");
        if (orig != NULL && rewrite
            && file_write_atomic(saved, orig, strlen(orig), 0644) != 0)
        {
            log_error("cannot write %s: %s", saved, strerror(errno));
            free(orig);
            return -1;
        }
    }
    if (orig == NULL) {
        log_error("out of memory");
        return -1;
    }
    parse_upstreams(orig, self, up);
    if (up->n == 0) {
        log_warn("%s names no resolver: names outside " DNS_DOMAIN
                 " get SERVFAIL", path);
    }
    if (!rewrite) {
        free(orig);
        return 0;
    }
    rc = -1;
    ours = our_text(orig, saved, self);
    if (ours != NULL && file_replace(path, ours, strlen(ours), 0644) == 0) {
        log_info("%s points at the node's DNS server; the original is in %s",
                 path, saved);
        rc = 1;
    } else {
        log_error("cannot write %s: %s", path, ours ? strerror(errno)
                                                     : "out of memory");
    }
    free(ours);
    free(orig);
    return rc;
}


void
resolv_restore(const char *path, const char *saved)
{
    char  *cur = read_text(path), *orig = read_text(saved);

    if (orig == NULL) {
        log_warn("cannot read %s: %s is left as it is", saved, path);
    } else if (cur == NULL || strncmp(cur, RESOLV_MARK, strlen(RESOLV_MARK)) != 0) {
        log_info("%s was changed by someone else: left as it is", path);
        unlink(saved);
    } else if (file_replace(path, orig, strlen(orig), 0644) != 0) {
        log_error("cannot restore %s: %s", path, strerror(errno));
    } else {
        log_info("%s restored", path);
        unlink(saved);
    }
    free(cur);
    free(orig);
}
