/*
 * Long-poll waiting room.  A poller whose peer version is current parks
 * here (its HTTP connection suspended, no thread held) until the version
 * advances or its deadline passes.  A min-heap on the deadline and one
 * timer thread serve any number of pollers; a version change wakes them
 * all at once.
 *
 * The version check and the insertion happen under one lock with the
 * publication of a new version, so a change can never slip between a
 * poller's "nothing new" and its going to sleep.  The publisher (the
 * writer thread) only takes the parked waiters out, in O(1); the timer
 * thread resumes them, outside the lock, and each builds nothing: its
 * answer is the shared one (answers.h).
 *
 * Bounds: a token (its owner) parks at most per_owner polls, a new one
 * ends its oldest; and since libmicrohttpd does not watch a suspended
 * connection, the timer thread looks at every parked client's socket
 * once a second and ends the polls whose client hung up.
 */

#ifndef CTLD_LONGPOLL_H
#define CTLD_LONGPOLL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct waiter {
    uint64_t   deadline_ms;         /* clock_mono_ms() */
    int64_t    owner;               /* whose token: a node id, 0 the admin */
    int        fd;                  /* the client's socket */
    size_t     slot;                /* position in the heap */
    struct waiter  *older, *newer;  /* in the owner's bucket, by arrival */
    /* called once, under the room's lock: resume the request, nothing more */
    void     (*wake)(struct waiter *w, bool timed_out);
};

struct longpoll;

struct longpoll_stats {
    uint64_t  waiting;
    uint64_t  superseded;           /* ended by a newer poll of its token */
    uint64_t  hung_up;              /* ended because the client left */
};

struct longpoll *longpoll_start(uint64_t version, unsigned per_owner);
/* parks w if version is still since; false (w not parked) otherwise or
 * when stopping */
bool    longpoll_wait(struct longpoll *lp, struct waiter *w, uint64_t since);
/* a new version: every parked poller wakes */
void    longpoll_publish(struct longpoll *lp, uint64_t version);
void    longpoll_stats(struct longpoll *lp, struct longpoll_stats *out);
/* wakes everyone and refuses new waiters */
void    longpoll_shutdown(struct longpoll *lp);
void    longpoll_free(struct longpoll *lp);

#endif
