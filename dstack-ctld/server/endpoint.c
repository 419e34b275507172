/* Join endpoints: unicast addresses only; names resolved by the server. */

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/log.h"
#include "lib/util.h"
#include "parse.h"
#include "server/endpoint.h"
#include "wg/netdev.h"

/* a join waits this long for the resolver, holding an HTTP thread */
#define LOOKUP_TIMEOUT_MS  3000
/* lookups at once: a flood of slow names cannot hold every thread */
#define LOOKUPS_MAX        8

/* shared by the join and the lookup thread; the last one out frees it */
struct lookup {
    pthread_mutex_t   lock;
    pthread_cond_t    cond;
    int               refs;
    bool              done;
    int               rc;
    struct addrinfo  *res;
    char              host[ENDPOINT_MAX + 1];
    char              port[8];
};

static _Atomic int  lookups;


static void
lookup_release(struct lookup *l)
{
    int  refs;

    pthread_mutex_lock(&l->lock);
    refs = --l->refs;
    pthread_mutex_unlock(&l->lock);
    if (refs == 0) {
        freeaddrinfo(l->res);
        pthread_cond_destroy(&l->cond);
        pthread_mutex_destroy(&l->lock);
        free(l);
    }
}


static void *
lookup_main(void *arg)
{
    struct lookup    *l = arg;
    struct addrinfo   hints, *res = NULL;
    int               rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_NUMERICSERV;
    rc = getaddrinfo(l->host, l->port, &hints, &res);

    pthread_mutex_lock(&l->lock);
    l->rc = rc;
    l->res = rc == 0 ? res : NULL;
    l->done = true;
    pthread_cond_signal(&l->cond);
    pthread_mutex_unlock(&l->lock);
    atomic_fetch_sub(&lookups, 1);
    lookup_release(l);
    return NULL;
}


/* getaddrinfo() with a deadline: the results, or NULL and *why */
static struct addrinfo *
resolve(const char *host, const char *port, unsigned *status, const char **why)
{
    struct lookup       *l;
    struct addrinfo     *res = NULL;
    pthread_condattr_t   ca;
    pthread_attr_t       ta;
    pthread_t            tid;
    struct timespec      ts;
    uint64_t             due = clock_mono_ms() + LOOKUP_TIMEOUT_MS;
    int                  rc;

    *status = 503;
    *why = "too many endpoint names being resolved; try again";
    if (atomic_fetch_add(&lookups, 1) >= LOOKUPS_MAX) {
        atomic_fetch_sub(&lookups, 1);
        return NULL;
    }
    l = calloc(1, sizeof(*l));
    if (l == NULL) {
        atomic_fetch_sub(&lookups, 1);
        *why = "out of memory";
        return NULL;
    }
    snprintf(l->host, sizeof(l->host), "%s", host);
    snprintf(l->port, sizeof(l->port), "%s", port);
    l->refs = 2;
    pthread_mutex_init(&l->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cond, &ca);
    pthread_condattr_destroy(&ca);

    pthread_attr_init(&ta);
    pthread_attr_setdetachstate(&ta, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&tid, &ta, lookup_main, l);
    pthread_attr_destroy(&ta);
    if (rc != 0) {
        atomic_fetch_sub(&lookups, 1);
        l->refs = 1;
        lookup_release(l);
        *why = "cannot resolve the endpoint now; try again";
        return NULL;
    }

    ts.tv_sec = (time_t) (due / 1000);
    ts.tv_nsec = (long) (due % 1000) * 1000000;
    pthread_mutex_lock(&l->lock);
    while (!l->done
           && pthread_cond_timedwait(&l->cond, &l->lock, &ts) != ETIMEDOUT)
    {
    }
    if (!l->done) {
        *why = "the endpoint's name did not resolve in time; try again";
    } else if (l->rc == EAI_AGAIN) {
        *why = "the endpoint's name did not resolve now; try again";
    } else if (l->rc != 0) {
        *status = 400;
        *why = "the endpoint's name does not resolve";
    } else {
        res = l->res;
        l->res = NULL;
    }
    pthread_mutex_unlock(&l->lock);
    lookup_release(l);
    return res;
}


/* NULL when addr may be an endpoint, else why not */
static const char *
unicast_error(const struct sockaddr *sa)
{
    struct ip_prefix  p;

    memset(&p, 0, sizeof(p));
    p.family = sa->sa_family;
    if (sa->sa_family == AF_INET) {
        p.len = 32;
        p.addr.v4 = ((const struct sockaddr_in *) sa)->sin_addr;
    } else if (sa->sa_family == AF_INET6) {
        p.len = 128;
        p.addr.v6 = ((const struct sockaddr_in6 *) sa)->sin6_addr;
    } else {
        return "is not an IP address";
    }
    return ip_prefix_host_error(&p);
}


unsigned
endpoint_resolve(const char *in, char out[ENDPOINT_MAX + 1], const char **why)
{
    char                  host[ENDPOINT_MAX + 1], port[8], text[INET6_ADDRSTRLEN];
    host_port_t           hp;
    struct sockaddr_in    sin = { .sin_family = AF_INET };
    struct sockaddr_in6   sin6 = { .sin6_family = AF_INET6 };
    struct addrinfo      *res = NULL, *ai;
    const struct sockaddr *use = NULL;
    const char           *bad = NULL;
    unsigned              status = 0;

    if (!parse_host_port(in, strlen(in), &hp) || hp.host_len >= sizeof(host)) {
        *why = "endpoint must be HOST:PORT";
        return 400;
    }
    memcpy(host, hp.host, hp.host_len);
    host[hp.host_len] = '\0';
    snprintf(port, sizeof(port), "%u", (unsigned) hp.port);

    if (inet_pton(AF_INET6, host, &sin6.sin6_addr) == 1) {
        use = (struct sockaddr *) &sin6;
    } else if (inet_pton(AF_INET, host, &sin.sin_addr) == 1) {
        use = (struct sockaddr *) &sin;
    } else {
        res = resolve(host, port, &status, why);
        if (res == NULL) {
            log_info("join endpoint %s: %s", in, *why);
            return status;
        }
        /* the first address that can be one */
        for (ai = res; ai != NULL && use == NULL; ai = ai->ai_next) {
            bad = unicast_error(ai->ai_addr);
            use = bad == NULL ? ai->ai_addr : NULL;
        }
        if (use == NULL) {
            freeaddrinfo(res);
            log_info("join endpoint %s: resolves to no unicast address (%s)",
                     in, bad ? bad : "none");
            *why = "the endpoint's name resolves to no unicast address";
            return 400;
        }
    }

    bad = unicast_error(use);
    if (bad != NULL) {
        *why = "endpoint must be a unicast address (not loopback, unspecified,"
               " multicast, link-local or broadcast)";
        return 400;
    }
    if (use->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *) use)->sin_addr,
                  text, sizeof(text));
        snprintf(out, ENDPOINT_MAX + 1, "%s:%s", text, port);
    } else {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *) use)->sin6_addr,
                  text, sizeof(text));
        snprintf(out, ENDPOINT_MAX + 1, "[%s]:%s", text, port);
    }
    freeaddrinfo(res);
    return 0;
}
