/* Encodings, randomness, hashing, clocks, parsing and secret files. */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "lib/log.h"
#include "lib/util.h"
#include "parse.h"


size_t
b64_encode(const unsigned char *in, size_t n, char *out)
{
    return (size_t) EVP_EncodeBlock((unsigned char *) out, in, (int) n);
}


int
b64_decode(const char *in, size_t n, unsigned char *out, size_t outsz,
           size_t *outlen)
{
    unsigned char  buf[512];
    size_t         pad = 0;
    int            len;

    /* EVP_DecodeBlock skips blanks and ignores padding; be stricter */
    if (n == 0 || n % 4 != 0 || n / 4 * 3 > sizeof(buf)) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (c == '=') {
            if (i < n - 2) {
                return -1;
            }
            pad++;
        } else if (pad != 0
                   || !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
                        || (c >= '0' && c <= '9') || c == '+' || c == '/'))
        {
            return -1;
        }
    }

    len = EVP_DecodeBlock(buf, (const unsigned char *) in, (int) n);
    if (len < 0 || (size_t) len < pad || (size_t) len - pad > outsz) {
        return -1;
    }
    len -= (int) pad;

    /* canonical form only: re-encoding must give the same text */
    char again[b64_len(sizeof(buf)) + 1];
    if (b64_encode(buf, (size_t) len, again) != n || memcmp(again, in, n) != 0) {
        return -1;
    }

    memcpy(out, buf, (size_t) len);
    *outlen = (size_t) len;
    return 0;
}


void
hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char  digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0xf];
    }
    out[2 * n] = '\0';
}


int
random_bytes(void *buf, size_t n)
{
    return RAND_bytes(buf, (int) n) == 1 ? 0 : -1;
}


int
token_new(char hex[TOKEN_HEX_LEN + 1], unsigned char hash[SHA256_LEN])
{
    unsigned char  raw[TOKEN_BYTES];

    if (random_bytes(raw, sizeof(raw)) != 0) {
        return -1;
    }
    hex_encode(raw, sizeof(raw), hex);
    sha256(hex, TOKEN_HEX_LEN, hash);
    OPENSSL_cleanse(raw, sizeof(raw));
    return 0;
}


void
sha256(const void *data, size_t n, unsigned char out[SHA256_LEN])
{
    SHA256(data, n, out);
}


uint64_t
clock_mono_us(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}


uint64_t
clock_mono_ms(void)
{
    return clock_mono_us() / 1000;
}


int64_t
clock_unix(void)
{
    return (int64_t) time(NULL);
}


bool
parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    return s != NULL && parse_uint(s, strlen(s), max, out);
}


bool
parse_duration_s(const char *s, uint64_t *seconds)
{
    /* ten years is more than any lifetime or retention here */
    return s != NULL && parse_duration(s, strlen(s), 315360000, seconds);
}


bool
parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = { "1", "yes", "true", "on" };
    static const char *const no[] = { "0", "no", "false", "off" };

    for (size_t i = 0; i < 4; i++) {
        if (strcmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}


static int
dir_make(const char *path, mode_t mode)
{
    struct stat  st;

    if (mkdir(path, mode) == 0) {
        return 0;
    }
    if (errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        return 0;
    }
    if (errno == EEXIST) {
        errno = ENOTDIR;
    }
    return -1;
}


int
dir_ensure(const char *path, mode_t mode)
{
    char  buf[PATH_MAX];

    if (snprintf(buf, sizeof(buf), "%s", path) >= (int) sizeof(buf)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    /* missing parents as mkdir -p makes them; only the last gets `mode` */
    for (char *p = buf + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            if (dir_make(buf, 0755) != 0) {
                return -1;
            }
            *p = '/';
        }
    }
    return dir_make(buf, mode);
}


static int
fsync_parent(const char *path)
{
    char        dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    int         fd, rc;

    if (slash == NULL) {
        snprintf(dir, sizeof(dir), ".");
    } else if (slash == path) {
        snprintf(dir, sizeof(dir), "/");
    } else {
        snprintf(dir, sizeof(dir), "%.*s", (int) (slash - path), path);
    }
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    rc = fsync(fd);
    close(fd);
    return rc;
}


int
file_write_atomic(const char *path, const void *data, size_t n, mode_t mode)
{
    char         tmp[PATH_MAX];
    const char  *p = data;
    int          fd, saved;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path) >= (int) sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    /* a name of its own: two writers of one file (daemons in network
     * namespaces share /etc) must not rename each other's; created 0600,
     * then given its mode: never a moment with wider access */
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    if (fchmod(fd, mode) != 0) {
        goto failed;
    }
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            goto failed;
        }
        p += w;
        n -= (size_t) w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        fd = -1;
        goto failed;
    }
    if (rename(tmp, path) != 0) {
        fd = -1;
        goto failed;
    }
    return fsync_parent(path);

failed:
    saved = errno;
    if (fd >= 0) {
        close(fd);
    }
    unlink(tmp);
    errno = saved;
    return -1;
}


static int
write_in_place(const char *path, const char *p, size_t n)
{
    size_t  len = n;
    int     fd, rc = -1;

    /* no O_TRUNC: the file is never seen empty, the tail goes last */
    fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        return -1;
    }
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t) (len - n));
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0) {
            goto out;
        }
        p += w;
        n -= (size_t) w;
    }
    if (ftruncate(fd, (off_t) len) == 0) {
        rc = fsync(fd);
    }
out:
    close(fd);
    return rc;
}


int
file_replace(const char *path, const void *data, size_t n, mode_t mode)
{
    int  rc;

    /* file_write_atomic sets the mode itself (fchmod): no process-wide
     * umask change, which other threads would see */
    rc = file_write_atomic(path, data, n, mode);
    if (rc != 0 && (errno == EBUSY || errno == EXDEV || errno == EROFS)) {
        /* a bind mount, or the one writable file of a read-only /etc */
        log_warn("%s cannot be renamed over (%s): rewriting it in place",
                 path, strerror(errno));
        rc = write_in_place(path, data, n);
    }
    return rc;
}


ssize_t
file_read_small(const char *path, char *buf, size_t bufsz)
{
    size_t   len = 0;
    ssize_t  r;
    int      fd;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        return -1;
    }
    for ( ;; ) {
        char  extra;

        /* one byte past the buffer tells "too big" from "exactly full" */
        if (len == bufsz - 1) {
            r = read(fd, &extra, 1);
            if (r > 0) {
                close(fd);
                errno = EFBIG;
                return -1;
            }
        } else {
            r = read(fd, buf + len, bufsz - 1 - len);
        }
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            int saved = errno;
            close(fd);
            errno = saved;
            return -1;
        }
        if (r == 0) {
            break;
        }
        len += (size_t) r;
    }
    close(fd);
    buf[len] = '\0';
    return (ssize_t) len;
}


int
dir_lock(const char *dir, const char *name, const char *who)
{
    char  path[PATH_MAX];
    int   fd;

    if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int) sizeof(path)) {
        log_error("%s: path too long", dir);
        return -1;
    }
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        log_error("cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        log_error("%s is in use by another %s", dir, who);
        close(fd);
        return -1;
    }
    return fd;
}
