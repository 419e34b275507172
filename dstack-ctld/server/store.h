/*
 * SQLite storage: one database file in the data directory, WAL mode,
 * synchronous=FULL, schema versioned with PRAGMA user_version.
 *
 * The writer thread owns the one read-write connection; every other thread
 * reads through its own read-only connection (store_reader()), which WAL
 * lets run next to the writer without blocking it.
 */

#ifndef CTLD_STORE_H
#define CTLD_STORE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <sqlite3.h>

#include "lib/wire.h"

struct store {
    char             *path;
    sqlite3          *wdb;          /* the writer's connection */
    pthread_mutex_t   lock;         /* protects readers[] */
    sqlite3         **readers;
    size_t            nreaders;
    size_t            creaders;
    bool              created;      /* the database was made by this open */
};

int       store_open(struct store *st, const char *path);
void      store_close(struct store *st);
/* the number of migrations this binary knows (a database's user_version) */
int       store_schema_version(void);
/* a new random epoch for the database's history (in the caller's
 * transaction, if any) */
int       store_rotate_epoch(sqlite3 *db, char epoch[EPOCH_LEN + 1]);
/* this thread's read-only connection, opened on first use; NULL on error */
sqlite3  *store_reader(struct store *st);

/* statement helpers: errors are logged with the SQL's first words */
sqlite3_stmt *db_prepare(sqlite3 *db, const char *sql);
/* the statement prepared once for this connection and kept
 * (SQLITE_PREPARE_PERSISTENT): bind, step, then db_release(), never
 * finalize; a connection is used by one thread at a time */
sqlite3_stmt *db_cached(sqlite3 *db, const char *sql);
/* resets a db_cached() statement for its next use (NULL allowed) */
void      db_release(sqlite3_stmt *st);
int       db_exec(sqlite3 *db, const char *sql);
/* steps a statement that gives no rows, then finalizes it (NULL allowed) */
int       db_step_done(sqlite3_stmt *st, sqlite3 *db);
/* binds s, or NULL when s is empty */
void      db_bind_opt_text(sqlite3_stmt *st, int i, const char *s);
int       db_begin_read(sqlite3 *db);
int       db_end_read(sqlite3 *db);
int       meta_get_int(sqlite3 *db, const char *key, uint64_t *value);
int       meta_set_int(sqlite3 *db, const char *key, uint64_t value);
/* copies the text value into buf (empty string when missing) */
int       meta_get_text(sqlite3 *db, const char *key, char *buf, size_t bufsz);
int       meta_set_text(sqlite3 *db, const char *key, const char *value);

#endif
