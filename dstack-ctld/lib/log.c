/* Logging: timestamped lines on stderr, written with one write(2) each. */

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/log.h"


static atomic_int  log_level = LOG_LEVEL_INFO;

static const char *const level_names[] = { "error", "warn", "info", "debug" };


static int
log_parse_level(const char *name)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            return (int) i;
        }
    }
    return -1;
}


int
log_set_level_name(const char *name)
{
    int  level = log_parse_level(name);

    if (level < 0) {
        fprintf(stderr, "log-level: \"%s\" is not error, warn, info or debug\n",
                name);
        return -1;
    }
    log_set_level((enum log_level) level);
    return 0;
}


void
log_set_level(enum log_level level)
{
    atomic_store(&log_level, level);
}


int
log_enabled(enum log_level level)
{
    return (int) level <= atomic_load(&log_level);
}


void
log_write(enum log_level level, const char *fmt, ...)
{
    char             line[2048];
    size_t           len;
    int              n;
    va_list          ap;
    struct tm        tm;
    struct timespec  ts;

    if (!log_enabled(level)) {
        return;
    }

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    len = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n = snprintf(line + len, sizeof(line) - len, ".%03ldZ %-5s ",
                 ts.tv_nsec / 1000000, level_names[level]);
    len += (size_t) n;

    va_start(ap, fmt);
    n = vsnprintf(line + len, sizeof(line) - len - 1, fmt, ap);
    va_end(ap);

    if (n < 0) {
        n = 0;
    }
    len += (size_t) n;
    if (len > sizeof(line) - 2) {
        len = sizeof(line) - 2;
    }
    line[len++] = '\n';

    /* one write per line keeps lines from different threads apart */
    if (write(STDERR_FILENO, line, len) < 0) {
        return;
    }
}


const char *
log_quote(char *dst, size_t dstsz, const char *src, size_t n)
{
    static const char  hex[] = "0123456789abcdef";
    size_t             i, o = 0;
    unsigned char      c;

    if (src == NULL) {
        snprintf(dst, dstsz, "-");
        return dst;
    }

    for (i = 0; i < n && src[i] != '\0'; i++) {
        if (o + 8 >= dstsz) {
            memcpy(dst + o, "...", 3);
            o += 3;
            break;
        }
        c = (unsigned char) src[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            dst[o++] = (char) c;
        } else {
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 0xf];
        }
    }
    dst[o] = '\0';
    return dst;
}
