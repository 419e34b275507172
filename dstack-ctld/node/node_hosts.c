/*
 * The node's block of the hosts file:
 *
 *     # BEGIN dstack-ctld
 *     100.128.0.1 vpc-server.dstack.internal
 *     ...
 *     # END dstack-ctld
 *
 * Lines outside the block are kept byte for byte.  The file is replaced
 * atomically (a temporary file in the same directory, fsync, rename), and
 * only when the text changes.  A hosts file that is a bind mount (as
 * Docker gives containers) cannot be renamed over, nor can one made the
 * only writable file of a read-only /etc (systemd's ProtectSystem=strict
 * with ReadWritePaths=/etc/hosts): those are rewritten in place, with a
 * warning.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/log.h"
#include "node/node.h"

#define BEGIN_MARK  "# BEGIN dstack-ctld"
#define END_MARK    "# END dstack-ctld"
#define BEGIN_LINE  BEGIN_MARK "\n"
#define END_LINE    END_MARK "\n"
#define HOSTS_MAX   (4u << 20)


static char *
read_all(const char *path, size_t *len, mode_t *mode)
{
    struct stat  st;
    char        *buf;
    ssize_t      r;
    size_t       got = 0;
    int          fd;

    *len = 0;
    *mode = 0644;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return errno == ENOENT ? strdup("") : NULL;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > HOSTS_MAX) {
        close(fd);
        errno = EINVAL;         /* not a regular file of a sane size */
        return NULL;
    }
    *mode = st.st_mode & 0777;
    buf = malloc((size_t) st.st_size + 1);
    while (buf != NULL && got < (size_t) st.st_size) {
        r = read(fd, buf + got, (size_t) st.st_size - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;              /* shorter than fstat said: take what is there */
        }
        got += (size_t) r;
    }
    close(fd);
    if (buf != NULL) {
        buf[got] = '\0';
        *len = got;
    }
    return buf;
}


/*
 * Where a line that is exactly mark starts in text[0, len), at or after
 * from: at the start of a line, up to a newline or the end of the text
 * (a file may hold any byte, NUL included).  *after: just past the line.
 */
static const char *
find_line(const char *text, size_t len, size_t from, const char *mark,
          size_t *after)
{
    const char  *end = text + len;
    size_t       m = strlen(mark);

    for (const char *p = text + from;
         (p = memmem(p, (size_t) (end - p), mark, m)) != NULL; p++)
    {
        if ((p == text || p[-1] == '\n') && (p + m == end || p[m] == '\n')) {
            *after = (size_t) (p + m - text) + (p + m < end);
            return p;
        }
    }
    return NULL;
}


char *
hosts_splice(const char *old, size_t old_len, const char *block, size_t *len,
             bool *unterminated)
{
    const char  *begin, *end;
    char        *text;
    size_t       head, after, tail_at, n;

    begin = find_line(old, old_len, 0, BEGIN_MARK, &after);
    end = begin ? find_line(old, old_len, after, END_MARK, &tail_at) : NULL;
    *unterminated = begin != NULL && end == NULL;
    if (begin != NULL) {
        head = (size_t) (begin - old);
        if (end == NULL) {
            tail_at = old_len;
        }
    } else {
        head = tail_at = old_len;
    }

    /* old head, a newline if it lacks one, the block, old tail */
    n = head + 1 + strlen(BEGIN_LINE) + strlen(block) + strlen(END_LINE)
        + (old_len - tail_at);
    text = malloc(n + 1);
    if (text == NULL) {
        return NULL;
    }
    n = 0;
    memcpy(text, old, head);
    n += head;
    if (head > 0 && text[head - 1] != '\n') {
        text[n++] = '\n';
    }
    n += (size_t) sprintf(text + n, "%s%s%s", BEGIN_LINE, block, END_LINE);
    memcpy(text + n, old + tail_at, old_len - tail_at);
    n += old_len - tail_at;
    text[n] = '\0';
    *len = n;
    return text;
}


int
hosts_write_block(const char *path, const char *block)
{
    char        *old, *text;
    size_t       old_len, len;
    mode_t       mode;
    bool         unterminated;
    int          rc;

    old = read_all(path, &old_len, &mode);
    if (old == NULL) {
        log_error("cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    text = hosts_splice(old, old_len, block, &len, &unterminated);
    if (unterminated) {
        log_warn("%s: \"# BEGIN dstack-ctld\" without its END line; the"
                 " block is taken to run to the end of the file", path);
    }
    if (text == NULL) {
        free(old);
        log_error("out of memory");
        return -1;
    }

    rc = 0;
    if (len != old_len || memcmp(text, old, len) != 0) {
        rc = file_replace(path, text, len, mode);
        if (rc != 0) {
            log_error("cannot write %s: %s", path, strerror(errno));
        }
    }
    free(text);
    free(old);
    return rc;
}


int
hosts_clear_block(const char *path)
{
    char    *old;
    size_t   len, after;
    mode_t   mode;
    bool     has;

    old = read_all(path, &len, &mode);
    has = old != NULL && find_line(old, len, 0, BEGIN_MARK, &after) != NULL;
    free(old);
    return has ? hosts_write_block(path, "") : 0;
}
