/* <data-dir>/history: the highest (epoch, version) handed out. */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/util.h"
#include "lib/wire.h"
#include "server/history.h"

/* "<16 hex> <up to 20 digits>\n" */
#define HISTORY_MAX  (EPOCH_LEN + 1 + 20 + 1)


int
history_open(struct history *h, const char *data_dir)
{
    char  path[PATH_MAX];

    h->fd = -1;
    h->write_failed = false;
    if (snprintf(path, sizeof(path), "%s/" HISTORY_FILE, data_dir) >= (int) sizeof(path)) {
        log_error("%s: path too long", data_dir);
        return -1;
    }
    h->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (h->fd < 0) {
        log_error("cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}


bool
history_continues(struct history *h, const char *epoch, uint64_t version,
                  bool db_created, char *why, size_t whysz)
{
    char      text[HISTORY_MAX + 1], *sp;
    ssize_t   n;
    uint64_t  noted;

    n = pread(h->fd, text, sizeof(text) - 1, 0);
    if (n <= 0) {
        snprintf(why, whysz, "no history recorded beside the database");
        return db_created;
    }
    text[n] = '\0';
    text[strcspn(text, "\n")] = '\0';
    sp = strchr(text, ' ');
    if (sp == NULL || sp - text != EPOCH_LEN || !parse_u64(sp + 1, INT64_MAX, &noted)) {
        snprintf(why, whysz, "the history file is unreadable");
        return false;
    }
    *sp = '\0';
    if (strcmp(text, epoch) != 0) {
        snprintf(why, whysz, "the database's epoch %s is not the recorded %s",
                 epoch, text);
        return false;
    }
    if (version < noted) {
        snprintf(why, whysz, "the database's version %" PRIu64 " is below the"
                 " %" PRIu64 " already handed out", version, noted);
        return false;
    }
    return true;
}


void
history_note(struct history *h, const char *epoch, uint64_t version, bool sync)
{
    char  text[HISTORY_MAX + 1];
    int   n;

    if (h == NULL || h->fd < 0) {
        return;
    }
    /* fixed width: a shorter record never leaves a tail of the last one */
    n = snprintf(text, sizeof(text), "%s %020" PRIu64 "\n", epoch, version);
    if (pwrite(h->fd, text, (size_t) n, 0) != n || (sync && fdatasync(h->fd) != 0)) {
        if (!h->write_failed) {
            log_error("cannot write the history file: %s", strerror(errno));
        }
        h->write_failed = true;
    }
}


void
history_close(struct history *h)
{
    if (h->fd >= 0) {
        fdatasync(h->fd);
        close(h->fd);
        h->fd = -1;
    }
}
