/* Long-poll waiting room: deadline heap, timer thread, wake on new version. */

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "lib/log.h"
#include "lib/util.h"
#include "server/longpoll.h"


struct longpoll {
    pthread_mutex_t    lock;
    pthread_cond_t     cond;
    pthread_t          timer;
    struct waiter    **heap;
    size_t             n, cap;
    uint64_t           version;
    bool               stopping;
};


static void
heap_place(struct longpoll *lp, size_t i, struct waiter *w)
{
    lp->heap[i] = w;
    w->slot = i;
}


static void
heap_up(struct longpoll *lp, size_t i)
{
    struct waiter *w = lp->heap[i];

    while (i > 0 && lp->heap[(i - 1) / 2]->deadline_ms > w->deadline_ms) {
        heap_place(lp, i, lp->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_place(lp, i, w);
}


static void
heap_down(struct longpoll *lp, size_t i)
{
    struct waiter *w = lp->heap[i];

    for ( ;; ) {
        size_t c = 2 * i + 1;
        if (c >= lp->n) {
            break;
        }
        if (c + 1 < lp->n && lp->heap[c + 1]->deadline_ms < lp->heap[c]->deadline_ms) {
            c++;
        }
        if (lp->heap[c]->deadline_ms >= w->deadline_ms) {
            break;
        }
        heap_place(lp, i, lp->heap[c]);
        i = c;
    }
    heap_place(lp, i, w);
}


static struct waiter *
heap_pop(struct longpoll *lp)
{
    struct waiter *top = lp->heap[0];

    if (--lp->n > 0) {
        lp->heap[0] = lp->heap[lp->n];
        heap_down(lp, 0);
    }
    return top;
}


static void
wake_all(struct longpoll *lp)
{
    /* every waiter goes: no need to keep heap order while emptying */
    for (size_t i = 0; i < lp->n; i++) {
        lp->heap[i]->wake(lp->heap[i], false);
    }
    lp->n = 0;
}


static void *
timer_main(void *arg)
{
    struct longpoll  *lp = arg;
    struct timespec   ts;
    uint64_t          now, due;

    pthread_mutex_lock(&lp->lock);
    while (!lp->stopping) {
        if (lp->n == 0) {
            pthread_cond_wait(&lp->cond, &lp->lock);
            continue;
        }
        now = clock_mono_ms();
        due = lp->heap[0]->deadline_ms;
        if (due <= now) {
            struct waiter *w = heap_pop(lp);
            w->wake(w, true);
            continue;
        }
        ts.tv_sec = (time_t) (due / 1000);
        ts.tv_nsec = (long) (due % 1000) * 1000000;
        pthread_cond_timedwait(&lp->cond, &lp->lock, &ts);
    }
    pthread_mutex_unlock(&lp->lock);
    return NULL;
}


struct longpoll *
longpoll_start(uint64_t version)
{
    struct longpoll     *lp;
    pthread_condattr_t   attr;

    lp = calloc(1, sizeof(*lp));
    if (lp == NULL) {
        return NULL;
    }
    lp->version = version;
    pthread_mutex_init(&lp->lock, NULL);
    pthread_condattr_init(&attr);
    /* deadlines come from clock_mono_ms(): the same clock */
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&lp->cond, &attr);
    pthread_condattr_destroy(&attr);

    if (pthread_create(&lp->timer, NULL, timer_main, lp) != 0) {
        log_error("cannot start the long-poll timer thread");
        free(lp);
        return NULL;
    }
    return lp;
}


bool
longpoll_wait(struct longpoll *lp, struct waiter *w, uint64_t since)
{
    pthread_mutex_lock(&lp->lock);
    if (lp->stopping || lp->version != since) {
        pthread_mutex_unlock(&lp->lock);
        return false;
    }
    if (lp->n == lp->cap) {
        size_t          cap = lp->cap ? 2 * lp->cap : 64;
        struct waiter **h = realloc(lp->heap, cap * sizeof(*h));
        if (h == NULL) {
            pthread_mutex_unlock(&lp->lock);
            return false;
        }
        lp->heap = h;
        lp->cap = cap;
    }
    lp->heap[lp->n] = w;
    heap_up(lp, lp->n++);
    /* a new earliest deadline: the timer must re-arm */
    if (w->slot == 0) {
        pthread_cond_signal(&lp->cond);
    }
    pthread_mutex_unlock(&lp->lock);
    return true;
}


void
longpoll_publish(struct longpoll *lp, uint64_t version)
{
    pthread_mutex_lock(&lp->lock);
    if (version != lp->version) {
        lp->version = version;
        wake_all(lp);
    }
    pthread_mutex_unlock(&lp->lock);
}


size_t
longpoll_waiting(struct longpoll *lp)
{
    size_t  n;

    pthread_mutex_lock(&lp->lock);
    n = lp->n;
    pthread_mutex_unlock(&lp->lock);
    return n;
}


void
longpoll_shutdown(struct longpoll *lp)
{
    pthread_mutex_lock(&lp->lock);
    lp->stopping = true;
    wake_all(lp);
    pthread_cond_signal(&lp->cond);
    pthread_mutex_unlock(&lp->lock);
    pthread_join(lp->timer, NULL);
}


void
longpoll_free(struct longpoll *lp)
{
    pthread_cond_destroy(&lp->cond);
    pthread_mutex_destroy(&lp->lock);
    free(lp->heap);
    free(lp);
}
