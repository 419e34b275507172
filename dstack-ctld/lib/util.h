/*
 * dstack-ctld/lib/: what both roles use (no role's headers here).
 *
 * Small helpers shared by every role: encodings, randomness, hashing,
 * clocks, strict number and duration parsing, secret files.
 */

#ifndef CTLD_UTIL_H
#define CTLD_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SHA256_LEN      32
#define TOKEN_BYTES     32                      /* pre-auth keys, tokens */
#define TOKEN_HEX_LEN   (2 * TOKEN_BYTES)

/* base64 of n bytes needs b64_len(n) + 1 bytes with the terminator */
#define b64_len(n)      (((n) + 2) / 3 * 4)

size_t  b64_encode(const unsigned char *in, size_t n, char *out);
/* strict: canonical padding, no whitespace; returns -1 on any error */
int     b64_decode(const char *in, size_t n, unsigned char *out, size_t outsz,
                   size_t *outlen);
void    hex_encode(const unsigned char *in, size_t n, char *out);

int     random_bytes(void *buf, size_t n);
/* a fresh random token as lowercase hex and its SHA-256 */
int     token_new(char hex[TOKEN_HEX_LEN + 1], unsigned char hash[SHA256_LEN]);
void    sha256(const void *data, size_t n, unsigned char out[SHA256_LEN]);

uint64_t  clock_mono_ms(void);
uint64_t  clock_mono_us(void);
int64_t   clock_unix(void);

/* common/parse.h on NUL-terminated text: digits only, value <= max */
bool    parse_u64(const char *s, uint64_t max, uint64_t *out);
/* "90", "90s", "15m", "1h", "7d" -> seconds, at most ten years */
bool    parse_duration_s(const char *s, uint64_t *seconds);
bool    parse_bool(const char *s, bool *out);

/* mkdir -p; the last directory gets mode */
int     dir_ensure(const char *path, mode_t mode);
/* atomically replace path with data (temp file, fsync, rename, fsync dir) */
int     file_write_atomic(const char *path, const void *data, size_t n,
                          mode_t mode);
/*
 * Locks <dir>/<name> (created 0600) so one process at a time uses dir;
 * the fd stays open, and the lock held, until exit (the kernel drops it if
 * the process dies).  -1 after logging why; "who" names the holder.
 */
/*
 * file_write_atomic, and where path is a mount point (a bind-mounted
 * /etc/hosts or /etc/resolv.conf: Docker, "ip netns exec"), where rename()
 * fails with EBUSY or EXDEV, or a file left writable in a read-only /etc
 * (EROFS), path rewritten in place instead (written from its start,
 * cut to length, fsync) after one warning.  The file keeps the given mode.
 */
int     file_replace(const char *path, const void *data, size_t n, mode_t mode);
int     dir_lock(const char *dir, const char *name, const char *who);
/* reads a small file whole; -1 with errno ENOENT when it does not exist */
ssize_t file_read_small(const char *path, char *buf, size_t bufsz);

#endif
