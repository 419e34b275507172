/*
 * Logging to stderr, one line per event, safe to call from any thread:
 * plain text, or one JSON object per line (time, level, role, msg and the
 * message's key=value words as "fields").
 *
 * Hostile strings (paths, names, header values) go through log_quote()
 * first so a client cannot forge log lines with CR/LF or terminal escapes.
 * Secrets are never passed here.
 */

#ifndef CTLD_LOG_H
#define CTLD_LOG_H

#include <stddef.h>

enum log_level {
    LOG_LEVEL_ERROR,
    LOG_LEVEL_WARN,
    LOG_LEVEL_INFO,
    LOG_LEVEL_DEBUG
};

enum log_format {
    LOG_FORMAT_TEXT,
    LOG_FORMAT_JSON
};

/*
 * The "log-level" and "log-format" settings and the role every line names
 * ("server", "node", "hub" or "cli", a static string), set before any
 * thread starts: -1 after saying on stderr what is wrong.
 */
int  log_setup(const char *role, const char *level, const char *format);
void log_set_level(enum log_level level);
int  log_enabled(enum log_level level);

void log_write(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_error(...)  log_write(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...)   log_write(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...)   log_write(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...)  log_write(LOG_LEVEL_DEBUG, __VA_ARGS__)

/*
 * Copies at most n bytes of src into dst (size dstsz, always terminated),
 * escaping anything outside printable ASCII as \xNN and truncating with
 * "..." when it does not fit.  src may be NULL (gives "-").
 */
const char *log_quote(char *dst, size_t dstsz, const char *src, size_t n);

#endif
