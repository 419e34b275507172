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


struct writer {
    sqlite3              *db;
    struct writer_hooks   hooks;
    pthread_t             thread;
    pthread_mutex_t       lock;
    pthread_cond_t        cond;
    struct write_op      *head, *tail;
    bool                  stopping;
    struct writer_stats   stats;
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


static void
run_maintenance(struct writer *w)
{
    if (db_exec(w->db, "BEGIN IMMEDIATE") != 0) {
        return;
    }
    if (w->hooks.maintain(w->hooks.arg, w->db) == 0
        && db_exec(w->db, "COMMIT") == 0)
    {
        w->hooks.committed(w->hooks.arg);
        return;
    }
    db_exec(w->db, "ROLLBACK");
    w->hooks.aborted(w->hooks.arg, w->db);
}


static void
run_batch(struct writer *w, struct write_op *batch, unsigned n)
{
    struct write_op  *op, *next;
    bool              committed = false;

    if (db_exec(w->db, "BEGIN IMMEDIATE") == 0) {
        for (op = batch; op != NULL; op = op->next) {
            if (db_exec(w->db, "SAVEPOINT op") != 0) {
                break;
            }
            if (op->exec(op, w->db) != 0) {
                db_exec(w->db, "ROLLBACK TO op");
            }
            db_exec(w->db, "RELEASE op");
            /* I/O errors and the like roll the whole transaction back
             * behind our back: nothing of the batch is left to commit */
            if (sqlite3_get_autocommit(w->db)) {
                break;
            }
        }
        /* an op that could not even open its savepoint fails the batch */
        if (op == NULL && db_exec(w->db, "COMMIT") == 0) {
            committed = true;
        } else {
            db_exec(w->db, "ROLLBACK");
        }
    }

    if (committed) {
        w->hooks.committed(w->hooks.arg);
    } else {
        log_error("write batch of %u ops rolled back", n);
        w->hooks.aborted(w->hooks.arg, w->db);
    }

    pthread_mutex_lock(&w->lock);
    w->stats.batches++;
    w->stats.ops += n;
    w->stats.failed_commits += committed ? 0 : 1;
    pthread_mutex_unlock(&w->lock);

    /* done() hands the op back to its request: never touch it afterwards */
    for (op = batch; op != NULL; op = next) {
        next = op->next;
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
