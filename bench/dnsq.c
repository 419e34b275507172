/*
 * dnsq: name lookups per second the way an application makes them,
 * getaddrinfo() (IPv4, so one A query over DNS), for random names of a
 * list, for a number of seconds; prints {"lookups":N,"failed":N,"seconds":S}.
 *
 *   dnsq hosts SECONDS NAMES           the system's /etc/hosts and resolver
 *   dnsq dns SECONDS NAMES SMALL_HOSTS /etc/hosts replaced by SMALL_HOSTS in
 *                                      a mount namespace of its own (root),
 *                                      so every lookup misses the file and
 *                                      goes to the resolver
 *
 * Run under "ip netns exec" whose /etc/netns/<ns>/hosts holds the 10,000
 * names and whose resolv.conf points at the node's DNS server.
 */

#include <netdb.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <time.h>

static double
now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

int
main(int argc, char **argv)
{
    struct addrinfo   hints = { .ai_family = AF_INET, .ai_socktype = SOCK_DGRAM };
    struct addrinfo  *res;
    char            **names = NULL, line[512];
    size_t            n = 0, cap = 0;
    unsigned long     lookups = 0, failed = 0;
    double            t0, t, seconds;
    FILE             *f;

    if (argc < 4 || (strcmp(argv[1], "dns") == 0 && argc < 5)) {
        fprintf(stderr, "usage: dnsq hosts|dns SECONDS NAMES [SMALL_HOSTS]\n");
        return 2;
    }
    seconds = atof(argv[2]);
    f = fopen(argv[3], "r");
    if (f == NULL) {
        perror(argv[3]);
        return 1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            names = realloc(names, cap * sizeof(*names));
        }
        names[n++] = strdup(line);
    }
    fclose(f);
    if (n == 0) {
        return 1;
    }
    if (strcmp(argv[1], "dns") == 0
        && (unshare(CLONE_NEWNS) != 0
            || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0
            || mount(argv[4], "/etc/hosts", NULL, MS_BIND, NULL) != 0))
    {
        perror("mount namespace");
        return 1;
    }
    srandom((unsigned) time(NULL));
    t0 = now();
    do {
        for (int i = 0; i < 64; i++) {
            if (getaddrinfo(names[(size_t) random() % n], NULL, &hints, &res) == 0) {
                freeaddrinfo(res);
            } else {
                failed++;
            }
            lookups++;
        }
        t = now() - t0;
    } while (t < seconds);
    printf("{\"lookups\":%lu,\"failed\":%lu,\"seconds\":%.6f}\n", lookups, failed, t);
    return 0;
}
