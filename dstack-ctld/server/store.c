/* SQLite: connections, pragmas, migrations, small statement helpers. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "server/store.h"


/*
 * Migrations, applied in order inside one transaction each; the database's
 * user_version is the number applied.  Never edit a released entry: append.
 */
static const char *const migrations[] = {
    /* 1: registry, one-time keys, peer versions, legacy discovery */
    "CREATE TABLE meta ("
    "  key    TEXT PRIMARY KEY,"
    "  value  NOT NULL"
    ") WITHOUT ROWID;"
    "INSERT INTO meta (key, value) VALUES"
    "  ('version', 0), ('tombstone_floor', 0), ('hub_version', 0),"
    "  ('hub', ''), ('epoch', lower(hex(randomblob(8))));"

    "CREATE TABLE preauth_keys ("
    "  key_hash     BLOB PRIMARY KEY CHECK (length(key_hash) = 32),"
    "  app_id       TEXT NOT NULL,"
    "  instance_id  TEXT NOT NULL,"
    "  node_name    TEXT,"
    "  created_at   INTEGER NOT NULL,"
    "  expires_at   INTEGER NOT NULL,"
    "  used_at      INTEGER"
    ") WITHOUT ROWID;"
    "CREATE INDEX preauth_keys_expiry ON preauth_keys (expires_at);"

    "CREATE TABLE nodes ("
    "  id               INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  app_id           TEXT NOT NULL,"
    "  instance_id      TEXT NOT NULL,"
    "  name             TEXT NOT NULL UNIQUE,"
    "  public_key       TEXT NOT NULL UNIQUE CHECK (length(public_key) = 44),"
    "  endpoint         TEXT,"
    "  address          INTEGER NOT NULL UNIQUE"
    "                   CHECK (address BETWEEN 1 AND 4294967294),"
    "  token_hash       BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),"
    "  created_version  INTEGER NOT NULL,"
    "  version          INTEGER NOT NULL CHECK (version >= created_version),"
    "  created_at       INTEGER NOT NULL,"
    "  updated_at       INTEGER NOT NULL,"
    "  UNIQUE (app_id, instance_id)"
    ");"
    "CREATE INDEX nodes_version ON nodes (version);"

    "CREATE TABLE tombstones ("
    "  node_id          INTEGER PRIMARY KEY,"
    "  public_key       TEXT NOT NULL,"
    "  created_version  INTEGER NOT NULL,"
    "  version          INTEGER NOT NULL,"
    "  removed_at       INTEGER NOT NULL"
    ");"
    "CREATE INDEX tombstones_version ON tombstones (version);"
    "CREATE INDEX tombstones_removed ON tombstones (removed_at);"

    "CREATE TABLE legacy_nodes ("
    "  uuid             TEXT PRIMARY KEY,"
    "  name             TEXT NOT NULL,"
    "  node_type        TEXT NOT NULL DEFAULT '',"
    "  tailscale_ip     TEXT,"
    "  actual_hostname  TEXT,"
    "  app_id           TEXT NOT NULL,"
    "  updated_at       INTEGER NOT NULL"
    ");"
    "CREATE INDEX legacy_nodes_type ON legacy_nodes (node_type);",

    /* 2: tokens of removed nodes (answered 410), per-app quotas, expiry */
    "CREATE TABLE removed_tokens ("
    "  token_hash  BLOB PRIMARY KEY CHECK (length(token_hash) = 32),"
    "  node_id     INTEGER NOT NULL,"
    "  by_admin    INTEGER NOT NULL,"
    "  removed_at  INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE INDEX removed_tokens_at ON removed_tokens (removed_at);"
    "CREATE INDEX preauth_keys_app ON preauth_keys (app_id, expires_at);"
    "CREATE INDEX legacy_nodes_app ON legacy_nodes (app_id);"
    "CREATE INDEX legacy_nodes_updated ON legacy_nodes (updated_at);",

    /* 3: the key quota counts unused keys only: an index of those keeps
     * its cost bounded by the quota, not by every key issued */
    "DROP INDEX preauth_keys_app;"
    "CREATE INDEX preauth_keys_unused ON preauth_keys (app_id, expires_at)"
    " WHERE used_at IS NULL;",
};

#define SCHEMA_VERSION  ((int) (sizeof(migrations) / sizeof(migrations[0])))


static _Thread_local sqlite3  *thread_reader;

/* statements kept per connection; a connection is used by one thread */
#define STMT_CACHE  64
struct cached_stmt {
    sqlite3       *db;
    sqlite3_stmt  *st;
};
static _Thread_local struct cached_stmt  stmt_cache[STMT_CACHE];
static _Thread_local size_t              stmt_cached;


sqlite3_stmt *
db_prepare(sqlite3 *db, const char *sql)
{
    sqlite3_stmt  *stmt;

    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        log_error("sqlite prepare \"%.40s\": %s", sql, sqlite3_errmsg(db));
        return NULL;
    }
    return stmt;
}


sqlite3_stmt *
db_cached(sqlite3 *db, const char *sql)
{
    sqlite3_stmt  *st;

    for (size_t i = 0; i < stmt_cached; i++) {
        if (stmt_cache[i].db == db && strcmp(sqlite3_sql(stmt_cache[i].st), sql) == 0) {
            return stmt_cache[i].st;
        }
    }
    if (stmt_cached == STMT_CACHE) {
        log_error("sqlite prepare \"%.40s\": too many statements kept", sql);
        return NULL;
    }
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
        log_error("sqlite prepare \"%.40s\": %s", sql, sqlite3_errmsg(db));
        return NULL;
    }
    stmt_cache[stmt_cached++] = (struct cached_stmt) { db, st };
    return st;
}


void
db_release(sqlite3_stmt *st)
{
    if (st != NULL) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
}


int
db_exec(sqlite3 *db, const char *sql)
{
    char  *err = NULL;

    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        log_error("sqlite \"%.40s\": %s", sql, err ? err : sqlite3_errmsg(db));
        sqlite3_free(err);
        return -1;
    }
    return 0;
}


int
db_step_done(sqlite3_stmt *st, sqlite3 *db)
{
    int  rc;

    if (st == NULL) {
        return -1;
    }
    rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) {
        log_error("sqlite: %s", sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}


void
db_bind_opt_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s[0] == '\0') {
        sqlite3_bind_null(st, i);
    } else {
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    }
}


int
db_begin_read(sqlite3 *db)
{
    /* every poll opens one: kept prepared */
    sqlite3_stmt  *st = db_cached(db, "BEGIN");
    int            rc = st ? sqlite3_step(st) : SQLITE_ERROR;

    db_release(st);
    if (rc != SQLITE_DONE) {
        log_error("sqlite BEGIN: %s", sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}


int
db_end_read(sqlite3 *db)
{
    /* a read transaction has nothing to keep: rollback never fails it */
    sqlite3_stmt  *st;

    if (sqlite3_get_autocommit(db)) {
        return 0;
    }
    st = db_cached(db, "ROLLBACK");
    if (st == NULL || sqlite3_step(st) != SQLITE_DONE) {
        db_release(st);
        return db_exec(db, "ROLLBACK");
    }
    db_release(st);
    return 0;
}


int
meta_get_int(sqlite3 *db, const char *key, uint64_t *value)
{
    sqlite3_stmt  *st;
    int            rc = -1;

    st = db_cached(db, "SELECT value FROM meta WHERE key = ?1");
    if (st == NULL) {
        return -1;
    }
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        *value = (uint64_t) sqlite3_column_int64(st, 0);
        rc = 0;
    } else {
        log_error("meta \"%s\" missing: %s", key, sqlite3_errmsg(db));
    }
    db_release(st);
    return rc;
}


/* one row of meta, as an integer (text == NULL) or as text */
static int
meta_set(sqlite3 *db, const char *key, const char *text, uint64_t value)
{
    sqlite3_stmt  *st;
    int            rc;

    st = db_prepare(db, "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)");
    if (st == NULL) {
        return -1;
    }
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (text != NULL) {
        sqlite3_bind_text(st, 2, text, -1, SQLITE_STATIC);
    } else {
        sqlite3_bind_int64(st, 2, (sqlite3_int64) value);
    }
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
    if (rc != 0) {
        log_error("meta \"%s\" not written: %s", key, sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
    return rc;
}


int
meta_set_int(sqlite3 *db, const char *key, uint64_t value)
{
    return meta_set(db, key, NULL, value);
}


int
meta_get_text(sqlite3 *db, const char *key, char *buf, size_t bufsz)
{
    sqlite3_stmt  *st;
    const char    *v;

    st = db_prepare(db, "SELECT value FROM meta WHERE key = ?1");
    if (st == NULL) {
        return -1;
    }
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    buf[0] = '\0';
    if (sqlite3_step(st) == SQLITE_ROW) {
        v = (const char *) sqlite3_column_text(st, 0);
        snprintf(buf, bufsz, "%s", v ? v : "");
    }
    sqlite3_finalize(st);
    return 0;
}


int
meta_set_text(sqlite3 *db, const char *key, const char *value)
{
    return meta_set(db, key, value, 0);
}


int
store_schema_version(void)
{
    return SCHEMA_VERSION;
}


int
store_rotate_epoch(sqlite3 *db, char epoch[EPOCH_LEN + 1])
{
    if (db_exec(db, "UPDATE meta SET value = lower(hex(randomblob(8)))"
                    " WHERE key = 'epoch'") != 0)
    {
        return -1;
    }
    return meta_get_text(db, "epoch", epoch, EPOCH_LEN + 1);
}


static int
migrate(sqlite3 *db, const char *path, bool *created)
{
    sqlite3_stmt  *st;
    int            current;

    if (db_exec(db, "BEGIN IMMEDIATE") != 0) {
        return -1;
    }
    st = db_prepare(db, "PRAGMA user_version");
    if (st == NULL || sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        goto failed;
    }
    current = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    *created = current == 0;

    if (current > SCHEMA_VERSION) {
        log_error("%s has schema version %d, newer than this binary's %d",
                  path, current, SCHEMA_VERSION);
        goto failed;
    }
    for (int v = current; v < SCHEMA_VERSION; v++) {
        char  pragma[64];

        if (db_exec(db, migrations[v]) != 0) {
            log_error("%s: migration to schema version %d failed", path, v + 1);
            goto failed;
        }
        snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d", v + 1);
        if (db_exec(db, pragma) != 0) {
            goto failed;
        }
        log_info("%s: migrated to schema version %d", path, v + 1);
    }
    return db_exec(db, "COMMIT");

failed:
    db_exec(db, "ROLLBACK");
    return -1;
}


static sqlite3 *
open_conn(const char *path, int flags)
{
    sqlite3  *db;

    /* each connection is used by one thread at a time: no SQLite mutexes */
    if (sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        log_error("cannot open %s: %s", path, db ? sqlite3_errmsg(db) : "no memory");
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, 5000);
    return db;
}


int
store_open(struct store *st, const char *path)
{
    sqlite3_stmt  *s;
    const char    *mode = NULL;

    memset(st, 0, sizeof(*st));
    pthread_mutex_init(&st->lock, NULL);
    st->path = strdup(path);
    if (st->path == NULL) {
        return -1;
    }

    st->wdb = open_conn(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    if (st->wdb == NULL) {
        return -1;
    }

    s = db_prepare(st->wdb, "PRAGMA journal_mode = WAL");
    if (s != NULL && sqlite3_step(s) == SQLITE_ROW) {
        mode = (const char *) sqlite3_column_text(s, 0);
    }
    if (mode == NULL || strcmp(mode, "wal") != 0) {
        log_error("%s: cannot switch to WAL mode", path);
        sqlite3_finalize(s);
        return -1;
    }
    sqlite3_finalize(s);

    /* FULL: the WAL is synced at every commit, so an answered write
     * survives a power cut, not just a crash of this process */
    if (db_exec(st->wdb, "PRAGMA synchronous = FULL;"
                         "PRAGMA foreign_keys = ON;"
                         "PRAGMA secure_delete = ON;") != 0
        || migrate(st->wdb, path, &st->created) != 0)
    {
        return -1;
    }
    return 0;
}


sqlite3 *
store_reader(struct store *st)
{
    sqlite3  *db;

    if (thread_reader != NULL) {
        return thread_reader;
    }
    db = open_conn(st->path, SQLITE_OPEN_READONLY);
    if (db == NULL || db_exec(db, "PRAGMA query_only = ON") != 0) {
        sqlite3_close(db);
        return NULL;
    }

    pthread_mutex_lock(&st->lock);
    if (st->nreaders == st->creaders) {
        size_t    n = st->creaders ? 2 * st->creaders : 8;
        sqlite3 **r = realloc(st->readers, n * sizeof(*r));
        if (r == NULL) {
            pthread_mutex_unlock(&st->lock);
            sqlite3_close(db);
            return NULL;
        }
        st->readers = r;
        st->creaders = n;
    }
    st->readers[st->nreaders++] = db;
    pthread_mutex_unlock(&st->lock);

    thread_reader = db;
    return db;
}


/* the statements kept by db_cached() */
static void
finalize_all(sqlite3 *db)
{
    sqlite3_stmt  *st;

    while (db != NULL && (st = sqlite3_next_stmt(db, NULL)) != NULL) {
        sqlite3_finalize(st);
    }
}


void
store_close(struct store *st)
{
    /* called after every thread that read is gone */
    for (size_t i = 0; i < st->nreaders; i++) {
        finalize_all(st->readers[i]);
        sqlite3_close(st->readers[i]);
    }
    free(st->readers);
    finalize_all(st->wdb);
    if (st->wdb != NULL && sqlite3_close(st->wdb) != SQLITE_OK) {
        log_error("closing %s: %s", st->path, sqlite3_errmsg(st->wdb));
    }
    free(st->path);
    pthread_mutex_destroy(&st->lock);
    memset(st, 0, sizeof(*st));
}
