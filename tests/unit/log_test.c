/*
 * dstack-ctld's log lines (lib/log.c), written to a file standing in for
 * stderr: JSON lines that parse whatever the message holds (quotes, raw
 * control characters, bytes that are not UTF-8), a long message cut to fit
 * one atomic pipe write, key=value words as fields, threads that never mix
 * their lines, plain text by default and bad settings refused.
 */

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "lib/log.h"
#include "tap.h"

#define THREADS  4
#define LINES    500

static FILE  *out;


/* the lines written since the last call, each without its newline */
static char **
take_lines(size_t *n)
{
    static char  buf[1 << 20];
    size_t       len;
    char       **lines = NULL, *p, *nl;

    fflush(out);
    len = fread(buf, 1, sizeof(buf) - 1, out);
    buf[len] = '\0';
    *n = 0;
    for (p = buf; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
        *nl = '\0';
        lines = realloc(lines, (*n + 1) * sizeof(*lines));
        lines[(*n)++] = p;
    }
    return lines;
}


/* the one line logged by "fmt": its JSON object (or NULL) and length */
static json_t *
one_json(size_t *len)
{
    size_t   n;
    char   **lines = take_lines(&n);
    json_t  *obj = NULL;

    *len = 0;
    if (n == 1) {
        *len = strlen(lines[0]) + 1;
        obj = json_loads(lines[0], JSON_REJECT_DUPLICATES, NULL);
    }
    free(lines);
    return obj;
}


static const char *
str(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "";
}


static void *
writer(void *arg)
{
    for (int i = 0; i < LINES; i++) {
        log_info("thread %d line %d path=\"/x\\\"y\" with a tail to make it longer"
                 " than a cache line or two, so that torn writes would show",
                 (int) (long) arg, i);
    }
    return NULL;
}


int
main(void)
{
    char       long_msg[2100];
    size_t     n, len;
    json_t    *o;
    char     **lines;
    pthread_t  t[THREADS];
    int        good;

    char  path[] = "/tmp/log_test.XXXXXX";
    int   fd = mkstemp(path);

    /* stderr appends to the file; "out" reads it with an offset of its own */
    if (fd < 0 || dup2(open(path, O_WRONLY | O_APPEND), STDERR_FILENO) < 0
        || (out = fopen(path, "r")) == NULL)
    {
        return 99;
    }
    unlink(path);
    close(fd);

    ok(log_setup("node", "info", "yaml") == -1, "log-format yaml: refused");
    ok(log_setup("node", "loud", "json") == -1, "log-level loud: refused");
    free(take_lines(&n));

    /* plain text is what "text" gives */
    ok(log_setup("server", "info", "text") == 0, "text");
    log_info("plain app=ab");
    lines = take_lines(&n);
    ok(n == 1 && strlen(lines[0]) > 30
       && strcmp(lines[0] + 24, " info  plain app=ab") == 0,
       "text: \"<time> info  msg\" (%s)", n ? lines[0] : "");
    free(lines);

    ok(log_setup("hub", "info", "json") == 0, "json");

    log_warn("name \"a\\b\" said \x01\x1b[31m\n\r\t ok");
    o = one_json(&len);
    ok(o != NULL, "quotes, backslash, raw control characters: one JSON line");
    ok(strcmp(str(o, "msg"), "name \"a\\b\" said \x01\x1b[31m\n\r\t ok") == 0,
       "  msg round-trips exactly");
    ok(strcmp(str(o, "level"), "warn") == 0 && strcmp(str(o, "role"), "hub") == 0,
       "  level warn, role hub");
    ok(strlen(str(o, "time")) == 24 && str(o, "time")[10] == 'T'
       && str(o, "time")[19] == '.' && str(o, "time")[23] == 'Z',
       "  time: RFC 3339, UTC, milliseconds (%s)", str(o, "time"));
    ok(json_object_get(o, "fields") == NULL, "  no key=value word: no fields");
    json_decref(o);

    log_info("bad byte \xff\xfe here");
    o = one_json(&len);
    ok(o != NULL && strcmp(str(o, "msg"), "bad byte \\xff\\xfe here") == 0,
       "not UTF-8: escaped as \\xNN (%s)", o ? str(o, "msg") : "no JSON");
    json_decref(o);

    log_info("joined app=ab12 name=n1: ok, peers=3, Bad=x =y a=");
    o = one_json(&len);
    ok(o != NULL && json_object_size(json_object_get(o, "fields")) == 4
       && strcmp(str(json_object_get(o, "fields"), "app"), "ab12") == 0
       && strcmp(str(json_object_get(o, "fields"), "name"), "n1") == 0
       && strcmp(str(json_object_get(o, "fields"), "peers"), "3") == 0
       && strcmp(str(json_object_get(o, "fields"), "a"), "") == 0,
       "key=value words: fields app, name, peers, a");
    json_decref(o);

    memset(long_msg, 0x01, sizeof(long_msg) - 1);
    long_msg[sizeof(long_msg) - 1] = '\0';
    log_error("%s", long_msg);
    o = one_json(&len);
    ok(o != NULL && len <= PIPE_BUF, "2 KiB of control characters: one line of"
       " %zu bytes, at most PIPE_BUF", len);
    ok(o != NULL && strlen(str(o, "msg")) < 400
       && strcmp(str(o, "msg") + strlen(str(o, "msg")) - 3, "...") == 0,
       "  msg cut, and says so");
    json_decref(o);

    log_debug("below the level");
    free(take_lines(&n));
    ok(n == 0, "debug below info: nothing");

    for (long i = 0; i < THREADS; i++) {
        pthread_create(&t[i], NULL, writer, (void *) i);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
    }
    lines = take_lines(&n);
    good = 0;
    for (size_t i = 0; i < n; i++) {
        o = json_loads(lines[i], 0, NULL);
        good += o != NULL && strncmp(str(o, "msg"), "thread ", 7) == 0;
        json_decref(o);
    }
    free(lines);
    ok(n == THREADS * LINES && good == THREADS * LINES,
       "%d threads: %zu lines, %d whole JSON objects", THREADS, n, good);

    return tap_done();
}
