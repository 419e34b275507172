/*
 * Logging: one line per event on stderr, written with a single write(2) so
 * that lines of the HTTP thread and the main thread never interleave.
 */

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>

#include "agent_sim.h"


#define SIM_LOG_LINE  1024


static void sim_log_write(char *line, size_t len);
static size_t sim_log_ssl_reason(char *buf, size_t size);


void
sim_logv(const char *fmt, va_list ap)
{
    int     n;
    char    line[SIM_LOG_LINE];

    n = vsnprintf(line, sizeof(line), fmt, ap);
    if (n < 0) {
        return;
    }

    sim_log_write(line, ((size_t) n < sizeof(line)) ? (size_t) n
                                                    : sizeof(line) - 1);
}


void
sim_log(const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    sim_logv(fmt, ap);
    va_end(ap);
}


void
sim_log_ssl(const char *fmt, ...)
{
    int      n;
    size_t   len;
    va_list  ap;
    char     line[SIM_LOG_LINE];

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);

    if (n < 0) {
        ERR_clear_error();
        return;
    }

    len = ((size_t) n < sizeof(line)) ? (size_t) n : sizeof(line) - 1;
    len += sim_log_ssl_reason(line + len, sizeof(line) - len);

    sim_log_write(line, len);
}


/*
 * ": reason" of the oldest queued OpenSSL error, the one that started the
 * failure; the queue is emptied so the next request starts clean.
 */
static size_t
sim_log_ssl_reason(char *buf, size_t size)
{
    int            n;
    unsigned long  code;
    char           reason[256];

    code = ERR_get_error();
    ERR_clear_error();

    if (code == 0) {
        return 0;
    }

    ERR_error_string_n(code, reason, sizeof(reason));

    n = snprintf(buf, size, ": %s", reason);
    if (n < 0) {
        return 0;
    }

    return ((size_t) n < size) ? (size_t) n : size - 1;
}


/*
 * Request paths and field names come from clients: control characters are
 * replaced so that a request can never forge or garble a log line.
 */
static void
sim_log_write(char *line, size_t len)
{
    int      n;
    size_t   i, total;
    char     out[SIM_LOG_LINE + 64];

    while (len > 0 && line[len - 1] == '\n') {
        len--;
    }

    for (i = 0; i < len; i++) {
        if ((unsigned char) line[i] < 0x20 || line[i] == 0x7f) {
            line[i] = '?';
        }
    }

    n = snprintf(out, sizeof(out), SIM_NAME "[%ld]: %.*s\n",
                 (long) getpid(), (int) len, line);
    if (n < 0) {
        return;
    }

    total = ((size_t) n < sizeof(out)) ? (size_t) n : sizeof(out) - 1;

    /* nothing sensible is left to do when stderr itself fails */
    if (write(STDERR_FILENO, out, total) < 0) {
        return;
    }
}
