/* The single writer thread and its batches. */

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/log.h"
#include "lib/util.h"
#include "server/store.h"
#include "server/writer.h"

/* bounds the time the first op of a batch waits for the last one to run */
#define BATCH_MAX  512


enum writer_health {
    WRITER_OK,
    WRITER_STALE,           /* in-memory state not reloaded after a rollback */
    WRITER_FAILED           /* the disk failed at commit: no more writes */
};

struct writer {
    sqlite3              *db;
    struct writer_hooks   hooks;
    pthread_t             thread;
    pthread_mutex_t       lock;
    pthread_cond_t        cond;
    struct write_op      *head, *tail;
    bool                  stopping;
    struct writer_stats   stats;
    /* writer thread only */
    enum writer_health    health;
    bool                  disk_full;        /* at the last commit */
};


static void
deadline_after(struct timespec *ts, unsigned ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long) (ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}


/* in-memory state from the database again; writes wait until it is */
static void
reload(struct writer *w)
{
    bool  ok;

    if (!sqlite3_get_autocommit(w->db)) {
        db_exec(w->db, "ROLLBACK");
    }
    ok = sqlite3_get_autocommit(w->db) && w->hooks.aborted(w->hooks.arg, w->db) == 0;
    if (ok && w->health == WRITER_STALE) {
        log_info("state reloaded from the database: writes resume");
    } else if (!ok && w->health != WRITER_STALE) {
        log_error("cannot reload the state from the database: writes are"
                  " refused until it can be");
    }
    w->health = ok ? WRITER_OK : WRITER_STALE;
}


/*
 * The transaction is over; what it means for the writer.  SQLITE_FULL is
 * temporary: the batch fails, state is reloaded, later writes may pass.
 * SQLITE_IOERR* at commit means the disk did not take what was written (a
 * failed write or fsync): the file's state is then unknown, so the writer
 * stops for good and the server exits for its supervisor.  State that
 * cannot be reloaded makes writes wait (503) until it can.
 */
static bool
finish(struct writer *w, bool commit)
{
    int  err;

    if (commit && db_exec(w->db, "COMMIT") == 0) {
        w->hooks.committed(w->hooks.arg);
        return true;
    }
    err = sqlite3_extended_errcode(w->db);
    if (commit && (err & 0xff) == SQLITE_IOERR) {
        log_error("the disk failed at commit (sqlite error %d): writes stop", err);
        w->health = WRITER_FAILED;
        if (w->hooks.failed != NULL) {
            w->hooks.failed(w->hooks.failed_arg);
        }
    } else if (commit && (err & 0xff) == SQLITE_FULL) {
        w->disk_full = true;
    }
    if (w->health != WRITER_FAILED) {
        reload(w);
    } else if (!sqlite3_get_autocommit(w->db)) {
        db_exec(w->db, "ROLLBACK");
    }
    return false;
}


static void
run_maintenance(struct writer *w)
{
    if (w->health != WRITER_OK || db_exec(w->db, "BEGIN IMMEDIATE") != 0) {
        return;
    }
    finish(w, w->hooks.maintain(w->hooks.arg, w->db) == 0);
}


static void
run_batch(struct writer *w, struct write_op *batch, unsigned n)
{
    struct write_op  *op, *next;
    const char       *refusal = NULL;
    bool              committed = false;

    w->disk_full = false;
    if (w->health == WRITER_STALE) {
        reload(w);
    }

    if (w->health == WRITER_FAILED) {
        refusal = "storage failed";
    } else if (w->health == WRITER_STALE) {
        refusal = "storage unavailable";
    } else if (db_exec(w->db, "BEGIN IMMEDIATE") == 0) {
        /*
         * Any savepoint error fails the batch: a refused op whose writes
         * could not be rolled back, or an op that could not be released,
         * must not commit with the others.  I/O errors and the like may
         * also roll the whole transaction back behind our back.
         */
        for (op = batch; op != NULL; op = op->next) {
            if (db_exec(w->db, "SAVEPOINT op") != 0
                || (op->exec(op, w->db) != 0
                    && db_exec(w->db, "ROLLBACK TO op") != 0)
                || db_exec(w->db, "RELEASE op") != 0
                || sqlite3_get_autocommit(w->db))
            {
                break;
            }
        }
        committed = finish(w, op == NULL);
    }

    if (!committed && refusal == NULL) {
        log_error("write batch of %u ops rolled back", n);
        if (w->disk_full) {
            refusal = "storage full";
        }
    }

    pthread_mutex_lock(&w->lock);
    w->stats.batches++;
    w->stats.ops += n;
    w->stats.failed_commits += committed ? 0 : 1;
    pthread_mutex_unlock(&w->lock);

    /* done() hands the op back to its request: never touch it afterwards */
    for (op = batch; op != NULL; op = next) {
        next = op->next;
        if (refusal != NULL && op->status == 0) {
            op->status = 503;
            op->error = refusal;
        }
        op->done(op, committed);
    }
}


static void *
writer_main(void *arg)
{
    struct writer    *w = arg;
    struct write_op  *batch;
    struct timespec   next_maintenance;
    unsigned          n;

    deadline_after(&next_maintenance, w->hooks.maintain_every_ms);

    for ( ;; ) {
        pthread_mutex_lock(&w->lock);
        while (w->head == NULL && !w->stopping) {
            if (pthread_cond_timedwait(&w->cond, &w->lock, &next_maintenance)
                == ETIMEDOUT)
            {
                break;
            }
        }
        if (w->head == NULL) {
            bool stop = w->stopping;
            pthread_mutex_unlock(&w->lock);
            if (stop) {
                return NULL;
            }
            run_maintenance(w);
            deadline_after(&next_maintenance, w->hooks.maintain_every_ms);
            continue;
        }

        batch = w->head;
        n = 1;
        struct write_op *last = batch;
        while (last->next != NULL && n < BATCH_MAX) {
            last = last->next;
            n++;
        }
        w->head = last->next;
        if (w->head == NULL) {
            w->tail = NULL;
        }
        last->next = NULL;
        pthread_mutex_unlock(&w->lock);

        run_batch(w, batch, n);
    }
}


struct writer *
writer_start(sqlite3 *db, const struct writer_hooks *hooks)
{
    struct writer       *w;
    pthread_condattr_t   attr;

    w = calloc(1, sizeof(*w));
    if (w == NULL) {
        return NULL;
    }
    w->db = db;
    w->hooks = *hooks;
    pthread_mutex_init(&w->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &attr);
    pthread_condattr_destroy(&attr);

    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        log_error("cannot start the writer thread");
        free(w);
        return NULL;
    }
    return w;
}


int
writer_submit(struct writer *w, struct write_op *op)
{
    op->next = NULL;

    pthread_mutex_lock(&w->lock);
    if (w->stopping) {
        pthread_mutex_unlock(&w->lock);
        return -1;
    }
    if (w->tail != NULL) {
        w->tail->next = op;
    } else {
        w->head = op;
    }
    w->tail = op;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    return 0;
}


void
writer_stop(struct writer *w)
{
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);

    pthread_join(w->thread, NULL);
}


void
writer_free(struct writer *w)
{
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w);
}


void
writer_stats(struct writer *w, struct writer_stats *out)
{
    pthread_mutex_lock(&w->lock);
    *out = w->stats;
    pthread_mutex_unlock(&w->lock);
}
