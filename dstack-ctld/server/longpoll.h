/*
 * Long-poll waiting room.  A poller whose peer version is current parks
 * here (its HTTP connection suspended, no thread held) until the version
 * advances or its deadline passes.  A min-heap on the deadline and one
 * timer thread serve any number of pollers; a version change wakes them
 * all at once.
 *
 * The version check and the insertion happen under one lock with the
 * publication of a new version, so a change can never slip between a
 * poller's "nothing new" and its going to sleep.
 */

#ifndef CTLD_LONGPOLL_H
#define CTLD_LONGPOLL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct waiter {
    uint64_t   deadline_ms;         /* clock_mono_ms() */
    size_t     slot;                /* position in the heap */
    /* called once, under the room's lock: resume the request, nothing more */
    void     (*wake)(struct waiter *w, bool timed_out);
};

struct longpoll;

struct longpoll *longpoll_start(uint64_t version);
/* parks w if version is still since; false (w not parked) otherwise or
 * when stopping */
bool    longpoll_wait(struct longpoll *lp, struct waiter *w, uint64_t since);
/* a new version: every parked poller wakes */
void    longpoll_publish(struct longpoll *lp, uint64_t version);
size_t  longpoll_waiting(struct longpoll *lp);
/* wakes everyone and refuses new waiters */
void    longpoll_shutdown(struct longpoll *lp);
void    longpoll_free(struct longpoll *lp);

#endif
