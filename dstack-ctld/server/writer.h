/*
 * Group commit: one thread owns the read-write connection and runs every
 * write of the daemon.  Requests queue a write_op and wait (their HTTP
 * connection suspended); the thread takes everything queued, runs it in one
 * transaction (each op inside its own savepoint, so a refused op leaves no
 * trace and does not sink its neighbours), commits with synchronous=FULL,
 * and only then reports each op done.  One fsync serves the whole batch.
 */

#ifndef CTLD_WRITER_H
#define CTLD_WRITER_H

#include <stdbool.h>
#include <stdint.h>

#include <sqlite3.h>

struct write_op {
    /*
     * Runs inside the batch's transaction.  0: keep its changes; -1: its
     * savepoint is rolled back, and exec must have undone any in-memory
     * change it made itself.
     */
    int              (*exec)(struct write_op *op, sqlite3 *db);
    /* after the commit (or failure); committed false means nothing of the
     * op is stored, whatever exec returned */
    void             (*done)(struct write_op *op, bool committed);
    struct write_op   *next;
    void              *ctx;         /* the submitter's, for done() */
    /* set by exec when it refuses: HTTP status and a static message; the
     * writer sets 503 when storage failed (full disk, I/O error) */
    unsigned           status;
    const char        *error;
};

struct writer_hooks {
    void   *arg;
    /* the batch is durable: publish in-memory state that went with it */
    void  (*committed)(void *arg);
    /* the batch was rolled back: reload in-memory state from the database;
     * -1 when it cannot (writes are refused, 503, until a reload succeeds) */
    int   (*aborted)(void *arg, sqlite3 *db);
    /* periodic housekeeping, run in its own transaction */
    int   (*maintain)(void *arg, sqlite3 *db);
    unsigned  maintain_every_ms;
    /* the disk failed at commit (SQLITE_IOERR*): the writer refuses every
     * later write (503); optional */
    void  (*failed)(void *failed_arg);
    void   *failed_arg;
};

struct writer;

struct writer *writer_start(sqlite3 *db, const struct writer_hooks *hooks);
/* -1 when the writer is stopping; op->done is then never called */
int   writer_submit(struct writer *w, struct write_op *op);
/* runs what is queued, then stops the thread; later submits are refused
 * and writer_stats() still answers, until writer_free() */
void  writer_stop(struct writer *w);
void  writer_free(struct writer *w);

struct writer_stats {
    uint64_t  batches;
    uint64_t  ops;
    uint64_t  failed_commits;
};
void  writer_stats(struct writer *w, struct writer_stats *out);

#endif
