/*
 * fsyncrate: how many durable writes per second the disk under FILE takes,
 * the way SQLite's WAL commits with synchronous=FULL: write SIZE bytes
 * into an already allocated file (the WAL is reused from its start after
 * each checkpoint), then fdatasync(), again and again for SECONDS.
 *
 *   fsyncrate FILE SECONDS [SIZE]
 *
 * Prints one JSON object: syncs, seconds, rate, p50_us, p99_us.  FILE is
 * created (64 blocks of SIZE, synced before the clock starts) and removed.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hist.h"

#define BLOCKS  64

static uint64_t
now_ns(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static void
fail(const char *what, const char *path)
{
    fprintf(stderr, "fsyncrate: %s %s: %s\n", what, path, strerror(errno));
    unlink(path);
    exit(1);
}

int
main(int argc, char **argv)
{
    static struct hist  h;
    uint64_t            t0, t, end, n = 0;
    size_t              size = 4096;
    double              secs;
    char               *buf;
    int                 fd;

    if (argc < 3 || argc > 4 || atof(argv[2]) <= 0
        || (argc == 4 && (size = (size_t) atol(argv[3])) == 0))
    {
        fprintf(stderr, "usage: fsyncrate FILE SECONDS [SIZE]\n");
        return 2;
    }
    buf = malloc(size);
    if (buf == NULL) {
        return 1;
    }
    memset(buf, 'x', size);

    fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        fail("open", argv[1]);
    }
    for (int i = 0; i < BLOCKS; i++) {
        if (write(fd, buf, size) != (ssize_t) size) {
            fail("write", argv[1]);
        }
    }
    if (fsync(fd) != 0) {
        fail("fsync", argv[1]);
    }

    t0 = now_ns();
    end = t0 + (uint64_t) (atof(argv[2]) * 1e9);
    for (t = t0; t < end; n++) {
        uint64_t  s = t;

        if (pwrite(fd, buf, size, (off_t) ((n % BLOCKS) * size)) != (ssize_t) size) {
            fail("pwrite", argv[1]);
        }
        if (fdatasync(fd) != 0) {
            fail("fdatasync", argv[1]);
        }
        t = now_ns();
        hist_add(&h, (t - s) / 1000);
    }
    secs = (double) (t - t0) / 1e9;
    close(fd);
    unlink(argv[1]);

    printf("{\"syncs\":%llu,\"seconds\":%.6f,\"rate\":%.1f,\"p50_us\":%llu,"
           "\"p99_us\":%llu}\n", (unsigned long long) n, secs, (double) n / secs,
           (unsigned long long) hist_quantile(&h, 0.5),
           (unsigned long long) hist_quantile(&h, 0.99));
    return 0;
}
