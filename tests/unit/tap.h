/*
 * Minimal TAP producer for the C unit tests; `prove` reads the output.
 */

#ifndef DSTACK_TAP_H
#define DSTACK_TAP_H

#include <stdio.h>

static int  tap_run, tap_failed;

#define ok(cond, ...)                                                     \
    do {                                                                  \
        int  tap_ok_ = (cond) ? 1 : 0;                                    \
        tap_run++;                                                        \
        tap_failed += !tap_ok_;                                           \
        printf("%sok %d - ", tap_ok_ ? "" : "not ", tap_run);             \
        printf(__VA_ARGS__);                                              \
        printf("\n");                                                     \
        if (!tap_ok_) {                                                   \
            printf("#   failed at %s line %d\n", __FILE__, __LINE__);     \
        }                                                                 \
    } while (0)

static inline int
tap_done(void)
{
    printf("1..%d\n", tap_run);
    return tap_failed ? 1 : 0;
}

#endif /* DSTACK_TAP_H */
