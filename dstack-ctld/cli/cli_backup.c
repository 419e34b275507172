/*
 * Admin CLI: `dstack-ctld backup <file>` and `dstack-ctld restore <file>`.
 *
 * backup copies <data-dir>/ctld.db with SQLite's online backup API into
 * one self-contained file, whether the server runs or not (WAL lets it
 * write meanwhile; the copy is one consistent version).  restore puts such
 * a copy back while the server is stopped (it takes the data directory's
 * lock) and gives it a new epoch: the copy's versions were handed out
 * before, with other contents, so every node must take a snapshot rather
 * than a delta from another history.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "cli/cli.h"
#include "lib/log.h"
#include "lib/util.h"
#include "server/history.h"
#include "server/server.h"
#include "server/store.h"

#define DB_FILE  "ctld.db"


static void
backup_usage(FILE *out, const char *cmd)
{
    fprintf(out,
        "usage: dstack-ctld %s <file> [--config FILE] [--data-dir DIR]\n"
        "\n"
        "%s",
        cmd, strcmp(cmd, "backup") == 0
        ? "Copies <data-dir>/" DB_FILE " into <file> (0600), consistently, while\n"
          "the server runs or not.  The secrets beside it (admin.token, wg.key,\n"
          "shared_key) are files of their own: keep them apart.\n"
        : "Replaces <data-dir>/" DB_FILE " with the backup <file>; the server must\n"
          "be stopped.  The restored database gets a new epoch, so every node\n"
          "takes a fresh snapshot of the peer set.  Nodes that joined after the\n"
          "backup must join again.\n");
}


/* the settings the server reads, and the one file argument */
static int
load_settings(struct server *srv, int argc, char **argv, const char *cmd,
              char **file)
{
    char  *pos[1];
    int    npos = 0, rc;

    rc = server_config_load(&srv->cfg, argc, argv, pos, 1, &npos);
    if (rc == 1) {
        backup_usage(stdout, cmd);
        return 0;
    }
    if (rc != 0 || npos != 1) {
        backup_usage(stderr, cmd);
        return 2;
    }
    if (log_setup("cli", srv->cfg.log_level, srv->cfg.log_format) != 0) {
        return 2;
    }
    *file = pos[0];
    return -1;
}


static sqlite3 *
open_db(const char *path, int flags)
{
    sqlite3  *db = NULL;

    if (sqlite3_open_v2(path, &db, flags, NULL) != SQLITE_OK) {
        fprintf(stderr, "cannot open %s: %s\n", path,
                db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, 5000);
    return db;
}


static int
copy_db(sqlite3 *from, sqlite3 *to, const char *what)
{
    sqlite3_backup  *b;
    int              rc;

    b = sqlite3_backup_init(to, "main", from, "main");
    if (b == NULL) {
        fprintf(stderr, "%s: %s\n", what, sqlite3_errmsg(to));
        return -1;
    }
    /* all pages in one step: one read transaction, one consistent copy */
    rc = sqlite3_backup_step(b, -1);
    sqlite3_backup_finish(b);
    if (rc != SQLITE_DONE) {
        fprintf(stderr, "%s: %s\n", what, sqlite3_errstr(rc));
        return -1;
    }
    return 0;
}


static int
fsync_path(const char *path, int flags)
{
    int  fd, rc;

    fd = open(path, flags | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    rc = fsync(fd);
    close(fd);
    return rc;
}


/* version, epoch and node count of a ctld database, for the messages */
static int
describe(sqlite3 *db, uint64_t *version, char epoch[EPOCH_LEN + 1], uint64_t *nodes)
{
    sqlite3_stmt  *st;
    int            rc = -1;

    if (meta_get_int(db, "version", version) != 0
        || meta_get_text(db, "epoch", epoch, EPOCH_LEN + 1) != 0
        || strlen(epoch) != EPOCH_LEN)
    {
        return -1;
    }
    st = db_prepare(db, "SELECT count(*) FROM nodes");
    if (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
        *nodes = (uint64_t) sqlite3_column_int64(st, 0);
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}


int
cli_backup(int argc, char **argv)
{
    struct server  *srv;
    sqlite3        *from = NULL, *to = NULL;
    char           *file = NULL, src[PATH_MAX], tmp[PATH_MAX], dir[PATH_MAX];
    char            epoch[EPOCH_LEN + 1];
    uint64_t        version, nodes;
    int             rc;
    struct stat     sb;

    srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        return 1;
    }
    rc = load_settings(srv, argc, argv, "backup", &file);
    if (rc >= 0) {
        goto done;
    }
    rc = 1;
    if (snprintf(src, sizeof(src), "%s/" DB_FILE, srv->cfg.data_dir) >= (int) sizeof(src)
        || snprintf(tmp, sizeof(tmp), "%s.partial", file) >= (int) sizeof(tmp))
    {
        fprintf(stderr, "path too long\n");
        goto done;
    }
    if (stat(src, &sb) != 0) {
        fprintf(stderr, "no database at %s: %s\n", src, strerror(errno));
        goto done;
    }

    /* the copy holds token hashes: nobody else reads it */
    umask(077);
    unlink(tmp);
    from = open_db(src, SQLITE_OPEN_READONLY);
    to = open_db(tmp, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    if (from == NULL || to == NULL || copy_db(from, to, "backup") != 0
        /* one self-contained file, no -wal beside it */
        || db_exec(to, "PRAGMA journal_mode = DELETE") != 0
        || describe(to, &version, epoch, &nodes) != 0)
    {
        goto failed;
    }
    if (sqlite3_close(to) != SQLITE_OK) {
        fprintf(stderr, "%s: %s\n", tmp, sqlite3_errmsg(to));
        goto failed;
    }
    to = NULL;

    /* durable before it takes the name, and the name durable too */
    snprintf(dir, sizeof(dir), "%s", file);
    if (fsync_path(tmp, O_RDONLY) != 0 || rename(tmp, file) != 0
        || fsync_path(dirname(dir), O_RDONLY | O_DIRECTORY) != 0)
    {
        fprintf(stderr, "cannot write %s: %s\n", file, strerror(errno));
        goto failed;
    }
    printf("backed up %s to %s: peer version %" PRIu64 ", epoch %s, %" PRIu64
           " nodes\n", src, file, version, epoch, nodes);
    rc = 0;
    goto done;

failed:
    sqlite3_close(to);
    to = NULL;
    unlink(tmp);
    rc = 1;

done:
    sqlite3_close(from);
    server_config_free(srv);
    free(srv);
    return rc;
}


/* a ctld database this binary can serve, whole */
static int
check_backup(sqlite3 *db, const char *file)
{
    sqlite3_stmt  *st;
    const char    *ok;
    int            schema = -1, good = 0;

    st = db_prepare(db, "PRAGMA integrity_check(1)");
    if (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
        ok = (const char *) sqlite3_column_text(st, 0);
        good = ok != NULL && strcmp(ok, "ok") == 0;
    }
    sqlite3_finalize(st);
    st = db_prepare(db, "PRAGMA user_version");
    if (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
        schema = sqlite3_column_int(st, 0);
    }
    sqlite3_finalize(st);

    if (!good) {
        fprintf(stderr, "%s is not an intact SQLite database\n", file);
        return -1;
    }
    if (schema < 1 || schema > store_schema_version()) {
        fprintf(stderr, "%s has schema version %d; this binary serves 1 to %d\n",
                file, schema, store_schema_version());
        return -1;
    }
    return 0;
}


int
cli_restore(int argc, char **argv)
{
    struct server   *srv;
    struct history   history = { .fd = -1 };
    sqlite3         *from = NULL, *to = NULL;
    char            *file = NULL, dst[PATH_MAX], epoch[EPOCH_LEN + 1];
    char             old_epoch[EPOCH_LEN + 1];
    uint64_t         version, nodes;
    int              rc, lock_fd = -1;

    srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        return 1;
    }
    rc = load_settings(srv, argc, argv, "restore", &file);
    if (rc >= 0) {
        goto done;
    }
    rc = 1;
    if (snprintf(dst, sizeof(dst), "%s/" DB_FILE, srv->cfg.data_dir) >= (int) sizeof(dst)) {
        fprintf(stderr, "path too long\n");
        goto done;
    }

    umask(077);
    from = open_db(file, SQLITE_OPEN_READONLY);
    if (from == NULL || check_backup(from, file) != 0
        || describe(from, &version, old_epoch, &nodes) != 0)
    {
        if (from != NULL) {
            fprintf(stderr, "%s is not a dstack-ctld backup\n", file);
        }
        goto done;
    }

    /* the server's own lock: never under a running server */
    if (dir_ensure(srv->cfg.data_dir, 0700) != 0) {
        fprintf(stderr, "cannot create %s: %s\n", srv->cfg.data_dir, strerror(errno));
        goto done;
    }
    lock_fd = dir_lock(srv->cfg.data_dir, "lock", "dstack-ctld server");
    if (lock_fd < 0) {
        fprintf(stderr, "stop the server of %s first\n", srv->cfg.data_dir);
        goto done;
    }

    to = open_db(dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    if (to == NULL || copy_db(from, to, "restore") != 0
        || db_exec(to, "BEGIN IMMEDIATE") != 0
        || store_rotate_epoch(to, epoch) != 0
        || db_exec(to, "COMMIT") != 0
        || history_open(&history, srv->cfg.data_dir) != 0)
    {
        fprintf(stderr, "restoring %s into %s failed\n", file, dst);
        goto done;
    }
    history_note(&history, epoch, version, true);
    if (history.write_failed) {
        goto done;
    }
    printf("restored %s into %s: peer version %" PRIu64 ", %" PRIu64 " nodes,"
           " new epoch %s (was %s)\n", file, dst, version, nodes, epoch, old_epoch);
    rc = 0;

done:
    history_close(&history);
    sqlite3_close(to);
    sqlite3_close(from);
    if (lock_fd >= 0) {
        close(lock_fd);
    }
    server_config_free(srv);
    free(srv);
    return rc;
}
