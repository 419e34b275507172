/*
 * An invariant of a fuzz target: abort(), which libFuzzer reports as a
 * crash with the input that broke it.
 */

#ifndef DSTACK_FUZZ_CHECK_H
#define DSTACK_FUZZ_CHECK_H

#include <stdlib.h>

static inline void
check(int ok)
{
    if (!ok) {
        abort();
    }
}

#endif /* DSTACK_FUZZ_CHECK_H */
