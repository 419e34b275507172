/*
 * Logging: one line per event on stderr, written with one write(2) each so
 * lines from different threads never interleave.  Plain text by default;
 * with the "log-format json" setting one JSON object per line, built with
 * jansson, for log collectors.
 */

#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "lib/log.h"


#define LOG_LINE_MAX    2048
/* a message that fits PIPE_BUF even with every byte a \u00XX escape,
   twice over (msg and fields) */
#define LOG_JSON_SHORT  300

static atomic_int   log_level = LOG_LEVEL_INFO;
static atomic_int   log_format = LOG_FORMAT_TEXT;
static const char  *log_role = "cli";

static const char *const level_names[] = { "error", "warn", "info", "debug" };
static const char *const format_names[] = { "text", "json" };


static int
log_lookup(const char *name, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(name, names[i]) == 0) {
            return (int) i;
        }
    }
    return -1;
}


static int
log_set_level_name(const char *name)
{
    int  level = log_lookup(name, level_names,
                            sizeof(level_names) / sizeof(level_names[0]));

    if (level < 0) {
        fprintf(stderr, "log-level: \"%s\" is not error, warn, info or debug\n",
                name);
        return -1;
    }
    log_set_level((enum log_level) level);
    return 0;
}


static int
log_set_format_name(const char *name)
{
    int  format = log_lookup(name, format_names,
                             sizeof(format_names) / sizeof(format_names[0]));

    if (format < 0) {
        fprintf(stderr, "log-format: \"%s\" is not text or json\n", name);
        return -1;
    }
    atomic_store(&log_format, format);
    return 0;
}


int
log_setup(const char *role, const char *level, const char *format)
{
    log_role = role;
    if (log_set_level_name(level) != 0 || log_set_format_name(format) != 0) {
        return -1;
    }
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


/*
 * The "key=value" words of a message ("app=ab12"), as JSON fields: a key
 * is [a-z][a-z0-9_]* after a space or the start; the value runs to the next
 * space, without a trailing ':' or ','.
 */
static json_t *
log_fields(const char *msg)
{
    json_t      *fields, *v;
    const char  *p, *k, *eq, *end;
    char         key[64];

    fields = json_object();
    if (fields == NULL) {
        return NULL;
    }

    for (p = msg; *p != '\0'; p = end) {
        end = p + strcspn(p, " ");
        k = p;
        if (*end == ' ') {
            end++;
        }
        if (*k < 'a' || *k > 'z') {
            continue;
        }
        eq = k + strspn(k, "abcdefghijklmnopqrstuvwxyz0123456789_");
        if (*eq != '=' || (size_t) (eq - k) >= sizeof(key)) {
            continue;
        }
        memcpy(key, k, (size_t) (eq - k));
        key[eq - k] = '\0';

        size_t vlen = strcspn(eq + 1, " ");
        while (vlen > 0 && (eq[vlen] == ':' || eq[vlen] == ',')) {
            vlen--;
        }
        v = json_stringn(eq + 1, vlen);
        if (v != NULL) {
            json_object_set_new(fields, key, v);
        }
    }

    return fields;
}


static void
log_put(const char *line, size_t len)
{
    /* stderr gone: nothing left to tell */
    if (write(STDERR_FILENO, line, len) < 0) {
        return;
    }
}


/* the message as one JSON object and a newline, for free(); NULL if not */
static char *
log_json(const char *stamp, enum log_level level, const char *msg)
{
    json_t  *obj, *text, *fields;
    char     safe[LOG_LINE_MAX], *dump, *line;
    size_t   len;

    /* jansson takes UTF-8 only: anything else is escaped as \xNN first */
    text = json_string(msg);
    if (text == NULL) {
        text = json_string(log_quote(safe, sizeof(safe), msg, strlen(msg)));
    }
    obj = text ? json_pack("{s:s, s:s, s:s, s:o}", "time", stamp,
                           "level", level_names[level], "role", log_role,
                           "msg", text)
               : NULL;
    fields = obj ? log_fields(msg) : NULL;
    if (fields != NULL && json_object_size(fields) != 0) {
        json_object_set(obj, "fields", fields);
    }
    json_decref(fields);

    dump = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (dump == NULL) {
        return NULL;
    }
    len = strlen(dump);
    line = realloc(dump, len + 2);
    if (line == NULL) {
        free(dump);
        return NULL;
    }
    line[len] = '\n';
    line[len + 1] = '\0';
    return line;
}


void
log_write(enum log_level level, const char *fmt, ...)
{
    char             line[LOG_LINE_MAX], msg[LOG_LINE_MAX], stamp[40], *json;
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
    len = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + len, sizeof(stamp) - len, ".%03ldZ",
             ts.tv_nsec / 1000000);

    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0) {
        msg[0] = '\0';
    }

    /* one write per line keeps lines from different threads apart */
    if (atomic_load(&log_format) == LOG_FORMAT_JSON) {
        json = log_json(stamp, level, msg);
        if (json != NULL && strlen(json) > PIPE_BUF
            && strlen(msg) > LOG_JSON_SHORT)
        {
            /* escapes grew it past one atomic pipe write: a shorter msg */
            free(json);
            memcpy(msg + LOG_JSON_SHORT, "...", 4);
            json = log_json(stamp, level, msg);
        }
        if (json != NULL) {
            log_put(json, strlen(json));
            free(json);
            return;
        }
        /* out of memory: the plain line below still says it */
    }

    n = snprintf(line, sizeof(line), "%s %-5s %s", stamp, level_names[level],
                 msg);
    len = n < 0 ? 0 : (size_t) n;
    if (len > sizeof(line) - 2) {
        len = sizeof(line) - 2;
    }
    line[len++] = '\n';
    log_put(line, len);
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
