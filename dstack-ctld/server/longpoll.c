/* Long-poll waiting room: deadline heap, timer thread, wake on new version. */

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/log.h"
#include "lib/util.h"
#include "server/longpoll.h"


#define OWNER_BUCKETS  4096         /* a power of two */
#define SWEEP_MS       1000         /* how often hung-up clients are looked for */

struct longpoll {
    pthread_mutex_t    lock;
    pthread_cond_t     cond;
    pthread_t          timer;
    struct waiter    **heap;
    size_t             n, cap;
    /* taken out by a new version, woken by the timer thread */
    struct waiter    **woken;
    size_t             nwoken, cwoken;
    uint64_t           version;
    bool               stopping;
    unsigned           per_owner;
    uint64_t           superseded, hung_up;
    /* waiters by owner, oldest first: a list per bucket */
    struct waiter     *oldest[OWNER_BUCKETS];
    struct waiter     *newest[OWNER_BUCKETS];
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


static size_t
bucket_of(int64_t owner)
{
    return (size_t) ((uint64_t) owner * 0x9e3779b97f4a7c15u >> 52) & (OWNER_BUCKETS - 1);
}


static void
owner_link(struct longpoll *lp, struct waiter *w)
{
    size_t  b = bucket_of(w->owner);

    w->newer = NULL;
    w->older = lp->newest[b];
    if (w->older != NULL) {
        w->older->newer = w;
    } else {
        lp->oldest[b] = w;
    }
    lp->newest[b] = w;
}


static void
owner_unlink(struct longpoll *lp, struct waiter *w)
{
    size_t  b = bucket_of(w->owner);

    if (w->older != NULL) {
        w->older->newer = w->newer;
    } else {
        lp->oldest[b] = w->newer;
    }
    if (w->newer != NULL) {
        w->newer->older = w->older;
    } else {
        lp->newest[b] = w->older;
    }
}


/* takes w out of the room, then wakes it */
static void
leave(struct longpoll *lp, struct waiter *w, bool timed_out)
{
    size_t          i = w->slot;
    struct waiter  *last = lp->heap[--lp->n];

    if (i < lp->n) {
        heap_place(lp, i, last);
        heap_up(lp, i);
        heap_down(lp, last->slot);
    }
    owner_unlink(lp, w);
    w->wake(w, timed_out);
}


static void
wake_all(struct longpoll *lp)
{
    /* every waiter goes: no need to keep heap order while emptying */
    for (size_t i = 0; i < lp->n; i++) {
        lp->heap[i]->wake(lp->heap[i], false);
    }
    lp->n = 0;
    memset(lp->oldest, 0, sizeof(lp->oldest));
    memset(lp->newest, 0, sizeof(lp->newest));
}


/*
 * A new version: every parked waiter leaves the room at once (O(1) for
 * the publisher, which is the writer thread) and the timer thread wakes
 * them outside the lock.  false when that needs memory there is none of.
 */
static bool
hand_over(struct longpoll *lp)
{
    if (lp->nwoken == 0) {
        struct waiter **h = lp->woken;
        size_t          c = lp->cwoken;

        lp->woken = lp->heap;
        lp->cwoken = lp->cap;
        lp->nwoken = lp->n;
        lp->heap = h;
        lp->cap = c;
    } else {
        if (lp->nwoken + lp->n > lp->cwoken) {
            size_t          c = 2 * (lp->nwoken + lp->n);
            struct waiter **w = realloc(lp->woken, c * sizeof(*w));

            if (w == NULL) {
                return false;
            }
            lp->woken = w;
            lp->cwoken = c;
        }
        memcpy(lp->woken + lp->nwoken, lp->heap, lp->n * sizeof(*lp->heap));
        lp->nwoken += lp->n;
    }
    lp->n = 0;
    memset(lp->oldest, 0, sizeof(lp->oldest));
    memset(lp->newest, 0, sizeof(lp->newest));
    return true;
}


/* wakes what a new version took out, without the lock: nothing else
 * reaches these waiters any more */
static void
wake_handed_over(struct longpoll *lp)
{
    struct waiter **w = lp->woken;
    size_t          n = lp->nwoken;

    lp->woken = NULL;
    lp->nwoken = 0;
    lp->cwoken = 0;
    pthread_mutex_unlock(&lp->lock);
    for (size_t i = 0; i < n; i++) {
        w[i]->wake(w[i], false);
    }
    free(w);
    pthread_mutex_lock(&lp->lock);
}


/* ends the polls whose client has closed its connection */
static void
sweep(struct longpoll *lp)
{
    struct pollfd  *fds;
    struct waiter **gone;
    size_t          n = lp->n, ngone = 0;

    fds = malloc(n * sizeof(*fds));
    gone = malloc(n * sizeof(*gone));
    if (fds == NULL || gone == NULL) {
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        fds[i] = (struct pollfd) { .fd = lp->heap[i]->fd, .events = POLLRDHUP };
    }
    if (poll(fds, n, 0) > 0) {
        for (size_t i = 0; i < n; i++) {
            if (fds[i].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) {
                gone[ngone++] = lp->heap[i];
            }
        }
    }
    /* woken after the scan: leaving reorders the heap */
    for (size_t i = 0; i < ngone; i++) {
        lp->hung_up++;
        leave(lp, gone[i], true);
    }
    if (ngone > 0) {
        log_debug("%zu parked polls ended: their clients hung up", ngone);
    }

done:
    free(fds);
    free(gone);
}


static void *
timer_main(void *arg)
{
    struct longpoll  *lp = arg;
    struct timespec   ts;
    uint64_t          now, due, next_sweep = 0;

    pthread_mutex_lock(&lp->lock);
    while (!lp->stopping || lp->nwoken > 0) {
        if (lp->nwoken > 0) {
            wake_handed_over(lp);
            continue;
        }
        if (lp->n == 0) {
            pthread_cond_wait(&lp->cond, &lp->lock);
            continue;
        }
        now = clock_mono_ms();
        if (now >= next_sweep) {
            sweep(lp);
            next_sweep = now + SWEEP_MS;
            continue;
        }
        due = lp->heap[0]->deadline_ms;
        if (due <= now) {
            leave(lp, lp->heap[0], true);
            continue;
        }
        if (due > next_sweep) {
            due = next_sweep;
        }
        ts.tv_sec = (time_t) (due / 1000);
        ts.tv_nsec = (long) (due % 1000) * 1000000;
        pthread_cond_timedwait(&lp->cond, &lp->lock, &ts);
    }
    pthread_mutex_unlock(&lp->lock);
    return NULL;
}


struct longpoll *
longpoll_start(uint64_t version, unsigned per_owner)
{
    struct longpoll     *lp;
    pthread_condattr_t   attr;

    lp = calloc(1, sizeof(*lp));
    if (lp == NULL) {
        return NULL;
    }
    lp->version = version;
    lp->per_owner = per_owner;
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
    struct waiter  *o, *first = NULL;
    unsigned        same = 0;

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
    /* the owner's oldest poll makes room: it answers now */
    for (o = lp->oldest[bucket_of(w->owner)]; o != NULL; o = o->newer) {
        if (o->owner == w->owner && same++ == 0) {
            first = o;
        }
    }
    if (same >= lp->per_owner) {
        lp->superseded++;
        leave(lp, first, true);
    }
    lp->heap[lp->n] = w;
    heap_up(lp, lp->n++);
    owner_link(lp, w);
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
        if (lp->n > 0) {
            if (hand_over(lp)) {
                pthread_cond_signal(&lp->cond);
            } else {
                wake_all(lp);
            }
        }
    }
    pthread_mutex_unlock(&lp->lock);
}


void
longpoll_stats(struct longpoll *lp, struct longpoll_stats *out)
{
    pthread_mutex_lock(&lp->lock);
    out->waiting = lp->n;
    out->superseded = lp->superseded;
    out->hung_up = lp->hung_up;
    pthread_mutex_unlock(&lp->lock);
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
    free(lp->woken);
    free(lp);
}
