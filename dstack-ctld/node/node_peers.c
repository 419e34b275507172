/*
 * Server answers into peer sets, and peer sets into WireGuard peers.
 *
 * Everything in an answer is checked before any of it is used: the shape
 * of the JSON, each peer (id, name, key, address, allowed IPs, endpoint),
 * then the whole set it leads to (one hub, the pool, every address a host
 * of the pool, no key, address or id twice, ours nowhere, a sane count).
 * An answer that fails any check changes nothing.
 */

#include <arpa/inet.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "node/node.h"
#include "parse.h"

/* a prefix of /8 has 2^24 addresses; WireGuard's limit is lower anyway */
#define PEERS_LIST_MAX  WG_PEERS_MAX


/* --- one peer --- */

static const char *
parse_peer(json_t *o, struct vpc_peer *p)
{
    json_t         *id, *hub, *name, *key, *addr, *allowed, *ep;
    const char     *s;
    unsigned char   raw[WG_KEY_LEN];
    size_t          len;
    struct ip_prefix  a;

    memset(p, 0, sizeof(*p));
    if (!json_is_object(o)) {
        return "a peer is not an object";
    }
    id = json_object_get(o, "id");
    hub = json_object_get(o, "hub");
    name = json_object_get(o, "name");
    key = json_object_get(o, "public_key");
    addr = json_object_get(o, "address");
    allowed = json_object_get(o, "allowed_ips");
    ep = json_object_get(o, "endpoint");

    if (!json_is_integer(id) || json_integer_value(id) < 0) {
        return "a peer's id is not a number";
    }
    p->id = json_integer_value(id);
    if (!json_is_boolean(hub) || json_is_true(hub) != (p->id == 0)) {
        return "a peer's hub flag does not match its id";
    }

    s = json_string_value(name);
    if (s == NULL || json_string_length(name) > DNS_LABEL_MAX
        || strlen(s) != json_string_length(name))
    {
        return "a peer's name is not a DNS label";
    }
    memcpy(p->name, s, strlen(s) + 1);
    if (!dns_label_normalize(p->name)) {
        return "a peer's name is not a DNS label";
    }

    s = json_string_value(key);
    if (s == NULL || !wg_key_valid(s)
        || b64_decode(s, strlen(s), raw, sizeof(raw), &len) != 0
        || len != WG_KEY_LEN)
    {
        return "a peer's public key is not a WireGuard key";
    }
    memcpy(p->key, raw, WG_KEY_LEN);

    s = json_string_value(addr);
    if (s == NULL || inet_pton(AF_INET, s, &p->address) != 1) {
        return "a peer's address is not an IPv4 address";
    }

    if (!json_is_array(allowed) || json_array_size(allowed) != 1
        || (s = json_string_value(json_array_get(allowed, 0))) == NULL
        || ip_prefix_parse(s, &p->allowed) != 0
        || p->allowed.family != AF_INET || !ip_prefix_is_network(&p->allowed))
    {
        return "a peer's allowed_ips is not one IPv4 prefix";
    }
    a = p->allowed;
    if (p->id != 0 && (a.len != 32 || a.addr.v4.s_addr != p->address.s_addr)) {
        return "a node's allowed_ips is not its address/32";
    }

    if (ep != NULL && !json_is_null(ep)) {
        s = json_string_value(ep);
        if (s == NULL || json_string_length(ep) > ENDPOINT_MAX
            || strlen(s) != json_string_length(ep) || !endpoint_valid(s))
        {
            return "a peer's endpoint is not HOST:PORT";
        }
        memcpy(p->endpoint, s, strlen(s) + 1);
    }
    return NULL;
}


/* a numeric endpoint at once; a DNS name through the resolver */
static void
resolve(struct vpc_peer *p)
{
    struct addrinfo   hints, *res = NULL;
    struct wg_peer    w;
    char              host[ENDPOINT_MAX + 1], port[8];
    host_port_t       hp;
    int               rc;

    _Static_assert(sizeof(p->sockaddr) == sizeof(w.endpoint),
                   "a peer's endpoint as struct wg_peer holds it");
    p->reachable = false;
    if (p->endpoint[0] == '\0') {
        return;
    }
    if (wg_endpoint_parse(p->endpoint, &w) == 0) {
        memcpy(&p->sockaddr, &w.endpoint, sizeof(p->sockaddr));
        p->reachable = true;
        return;
    }
    /* endpoint_valid() let it through: "name:port" */
    if (!parse_host_port(p->endpoint, strlen(p->endpoint), &hp)) {
        return;
    }
    memcpy(host, hp.host, hp.host_len);
    host[hp.host_len] = '\0';
    snprintf(port, sizeof(port), "%u", (unsigned) hp.port);

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_NUMERICSERV;
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || res == NULL || res->ai_addrlen > sizeof(p->sockaddr)) {
        log_warn("peer %s: cannot resolve its endpoint %s (%s); it is"
                 " reached through the hub", p->name, p->endpoint,
                 rc ? gai_strerror(rc) : "no address");
    } else {
        memset(&p->sockaddr, 0, sizeof(p->sockaddr));
        memcpy(&p->sockaddr, res->ai_addr, res->ai_addrlen);
        p->reachable = true;
    }
    freeaddrinfo(res);
}


/* --- the set --- */

#define ALL_INDEXES  ((1u << BY_ID) | (1u << BY_KEY) | (1u << BY_ADDR))
#define KEY_ADDR     ((1u << BY_KEY) | (1u << BY_ADDR))

static int
id_cmp(const void *a, const void *b)
{
    int64_t  x = ((const struct vpc_peer *) a)->id;
    int64_t  y = ((const struct vpc_peer *) b)->id;

    return x < y ? -1 : x > y;
}


static int
key_cmp(const void *a, const void *b)
{
    return memcmp((*(const struct vpc_peer *const *) a)->key,
                  (*(const struct vpc_peer *const *) b)->key, WG_KEY_LEN);
}


static int
addr_cmp(const void *a, const void *b)
{
    uint32_t  x = ntohl((*(const struct vpc_peer *const *) a)->address.s_addr);
    uint32_t  y = ntohl((*(const struct vpc_peer *const *) b)->address.s_addr);

    return x < y ? -1 : x > y;
}


/*
 * Parses a JSON array of peers, appending to *v (grown as needed, so
 * memory follows what parses, not what the array claims to hold).
 */
static const char *
parse_list(json_t *arr, struct vpc_peer **v, size_t *n, size_t *cap)
{
    struct vpc_peer  *grown;
    json_t           *o;
    size_t            i;
    const char       *why;

    json_array_foreach(arr, i, o) {
        if (*n == *cap) {
            *cap = *cap ? *cap * 2 : 16;
            grown = realloc(*v, *cap * sizeof(**v));
            if (grown == NULL) {
                return "out of memory";
            }
            *v = grown;
        }
        why = parse_peer(o, &(*v)[*n]);
        if (why != NULL) {
            return why;
        }
        (*n)++;
    }
    return NULL;
}


static bool
in_pool(const struct ip_prefix *pool, struct in_addr a)
{
    uint32_t  mask = pool->len ? ~(uint32_t) 0 << (32 - pool->len) : 0;
    uint32_t  host = ntohl(a.s_addr), net = ntohl(pool->addr.v4.s_addr);

    /* in the prefix, and neither its network nor its broadcast address */
    return (host & mask) == net && host != net && host != (net | ~mask);
}


/* the hub's pool: its size, and for a node, the one it joined */
static const char *
check_pool(const struct ip_prefix *pool, size_t n, const struct vpc_self *self,
           bool *pool_changed)
{
    if (pool->len < 8 || pool->len > 30) {
        return "the hub's allowed_ips is not a pool of /8 to /30";
    }
    if (n - 1 > ((size_t) 1 << (32 - pool->len)) - 3) {
        return "more peers than the pool has addresses";
    }
    if (!self->hub
        && (pool->len != self->pool.len
            || pool->addr.v4.s_addr != self->pool.addr.v4.s_addr))
    {
        *pool_changed = true;
        return "the pool is not the one this node joined";
    }
    return NULL;
}


/* one member on its own: in the pool, neither our address nor our key */
static const char *
check_member(const struct vpc_peer *p, const struct ip_prefix *pool,
             const struct vpc_self *self)
{
    bool  our_hub = self->hub && p->id == 0;

    if (!in_pool(pool, p->address)) {
        return "an address outside the pool";
    }
    if (self->has_address && !our_hub
        && p->address.s_addr == self->address.s_addr)
    {
        return "a peer has this node's own address";
    }
    if ((memcmp(p->key, self->key, WG_KEY_LEN) == 0) != our_hub) {
        return our_hub ? "the hub's key is not ours"
                       : "a peer has this node's own key";
    }
    return NULL;
}


/* the checks on a whole set (a snapshot); next is sorted by id */
static const char *
check_set(struct peer_set *next, const struct vpc_self *self, bool *pool_changed)
{
    enum peer_index_kind  dup;
    const char           *why;
    size_t                i;
    int                   rc;

    if (next->n == 0 || next->v[0].id != 0) {
        return "the hub is missing";
    }
    for (i = 1; i < next->n; i++) {
        if (next->v[i].id == next->v[i - 1].id) {
            return "a peer id appears twice";
        }
    }
    why = check_pool(&next->v[0].allowed, next->n, self, pool_changed);
    if (why != NULL) {
        return why;
    }
    next->pool = next->v[0].allowed;
    for (i = 0; i < next->n; i++) {
        why = check_member(&next->v[i], &next->pool, self);
        if (why != NULL) {
            return why;
        }
    }
    rc = peer_index_build(next, &dup);
    return rc < 0 ? "out of memory"
           : rc == 0 ? NULL
           : dup == BY_KEY ? "a public key appears twice"
           : "an address appears twice";
}


static int
int64_cmp(const void *a, const void *b)
{
    int64_t  x = *(const int64_t *) a, y = *(const int64_t *) b;

    return x < y ? -1 : x > y;
}


/* the delta's removals: ids, sorted; each with a valid key */
static const char *
parse_removed(json_t *arr, int64_t **gone, size_t *n_gone)
{
    json_t      *o, *id, *key;
    size_t       i;

    *gone = malloc((json_array_size(arr) + 1) * sizeof(**gone));
    if (*gone == NULL) {
        return "out of memory";
    }
    *n_gone = 0;
    json_array_foreach(arr, i, o) {
        id = json_object_get(o, "id");
        key = json_object_get(o, "public_key");
        if (!json_is_integer(id) || json_integer_value(id) <= 0
            || !json_is_string(key) || !wg_key_valid(json_string_value(key)))
        {
            return "a removal is not {id, public_key}";
        }
        (*gone)[(*n_gone)++] = json_integer_value(id);
    }
    qsort(*gone, *n_gone, sizeof(**gone), int64_cmp);
    return NULL;
}


/* what a delta says: upserts sorted by id, removals sorted */
struct delta {
    struct vpc_peer  *up;
    size_t            n_up;
    int64_t          *gone;
    size_t            n_gone;
    uint32_t         *slot;         /* up[i]'s position in the set, or none */
};


static const char *
parse_delta(json_t *answer, struct delta *d)
{
    json_t      *added, *changed, *removed;
    size_t       cap = 0, i, j;
    const char  *why;

    added = json_object_get(answer, "added");
    changed = json_object_get(answer, "changed");
    removed = json_object_get(answer, "removed");
    if (!json_is_array(added) || !json_is_array(changed) || !json_is_array(removed)) {
        return "a delta without added, changed and removed lists";
    }
    if (json_array_size(added) + json_array_size(changed) > PEERS_LIST_MAX
        || json_array_size(removed) > PEERS_LIST_MAX)
    {
        return "a delta with more peers than WireGuard takes";
    }

    why = parse_list(added, &d->up, &d->n_up, &cap);
    if (why == NULL) {
        why = parse_list(changed, &d->up, &d->n_up, &cap);
    }
    if (why == NULL) {
        why = parse_removed(removed, &d->gone, &d->n_gone);
    }
    if (why != NULL) {
        return why;
    }
    if (d->n_up > 1) {
        qsort(d->up, d->n_up, sizeof(*d->up), id_cmp);
    }
    for (i = 1; i < d->n_up; i++) {
        if (d->up[i].id == d->up[i - 1].id) {
            return "a delta names a peer twice";
        }
    }
    /* set and removed at once: which one is meant? */
    for (i = 0, j = 0; i < d->n_up; i++) {
        while (j < d->n_gone && d->gone[j] < d->up[i].id) {
            j++;
        }
        if (j < d->n_gone && d->gone[j] == d->up[i].id) {
            return "a delta both sets and removes a peer";
        }
    }
    return NULL;
}


/* the delta names id: the set's entry of it is replaced or removed */
static bool
touched(const struct delta *d, int64_t id)
{
    struct vpc_peer  key = { .id = id };

    return bsearch(&id, d->gone, d->n_gone, sizeof(id), int64_cmp) != NULL
           || bsearch(&key, d->up, d->n_up, sizeof(key), id_cmp) != NULL;
}


/* two of the delta's peers with one value: cmp over pointers to them */
static const char *
dup_within(const struct delta *d, int (*cmp)(const void *, const void *))
{
    const struct vpc_peer  **by;
    const char              *why = NULL;

    if (d->n_up < 2) {
        return NULL;
    }
    by = malloc(d->n_up * sizeof(*by));
    if (by == NULL) {
        return "out of memory";
    }
    for (size_t i = 0; i < d->n_up; i++) {
        by[i] = &d->up[i];
    }
    qsort(by, d->n_up, sizeof(*by), cmp);
    for (size_t i = 1; i < d->n_up && why == NULL; i++) {
        if (cmp(&by[i - 1], &by[i]) == 0) {
            why = "";
        }
    }
    free(by);
    return why;
}


/*
 * The checks of check_set() on the set the delta leads to, at the cost of
 * the delta: the members it keeps passed them already, so only what it
 * sets is checked, against itself and against the members it keeps.
 */
static const char *
check_delta(const struct peer_set *s, struct delta *d,
            const struct vpc_self *self, bool *pool_changed,
            struct ip_prefix *pool)
{
    const struct vpc_peer  *hub = &s->v[0];
    size_t                  n = s->n, i;
    uint32_t                at;
    const char             *why;

    for (i = 0; i < d->n_gone; i++) {
        n -= peer_index_find(s, BY_ID, &d->gone[i]) != PEER_NONE;
    }
    for (i = 0; i < d->n_up; i++) {
        d->slot[i] = peer_index_find(s, BY_ID, &d->up[i].id);
        n += d->slot[i] == PEER_NONE;
        if (d->up[i].id == 0) {
            hub = &d->up[i];
        }
    }
    *pool = hub->allowed;
    why = check_pool(pool, n, self, pool_changed);
    if (why != NULL) {
        return why;
    }
    /* a hub's new pool: every member it keeps is checked against it */
    if (pool->len != s->pool.len || pool->addr.v4.s_addr != s->pool.addr.v4.s_addr) {
        for (i = 0; i < s->n; i++) {
            if (!touched(d, s->v[i].id) && !in_pool(pool, s->v[i].address)) {
                return "an address outside the pool";
            }
        }
    }
    for (i = 0; i < d->n_up; i++) {
        why = check_member(&d->up[i], pool, self);
        if (why != NULL) {
            return why;
        }
    }
    if (dup_within(d, key_cmp) != NULL) {
        return "a public key appears twice";
    }
    if (dup_within(d, addr_cmp) != NULL) {
        return "an address appears twice";
    }
    for (i = 0; i < d->n_up; i++) {
        at = peer_index_find(s, BY_KEY, d->up[i].key);
        if (at != PEER_NONE && s->v[at].id != d->up[i].id
            && !touched(d, s->v[at].id))
        {
            return "a public key appears twice";
        }
        at = peer_index_find(s, BY_ADDR, &d->up[i].address.s_addr);
        if (at != PEER_NONE && s->v[at].id != d->up[i].id
            && !touched(d, s->v[at].id))
        {
            return "an address appears twice";
        }
    }
    return NULL;
}


static bool
same_endpoint(const struct wg_peer *a, const struct wg_peer *b)
{
    const struct sockaddr  *x = &a->endpoint.sa, *y = &b->endpoint.sa;

    if (!a->has_endpoint) {
        return true;
    }
    if (x->sa_family != y->sa_family) {
        return false;
    }
    if (x->sa_family == AF_INET) {
        return a->endpoint.sin.sin_port == b->endpoint.sin.sin_port
               && a->endpoint.sin.sin_addr.s_addr == b->endpoint.sin.sin_addr.s_addr;
    }
    return x->sa_family != AF_INET6
           || (a->endpoint.sin6.sin6_port == b->endpoint.sin6.sin6_port
               && memcmp(&a->endpoint.sin6.sin6_addr, &b->endpoint.sin6.sin6_addr,
                         sizeof(struct in6_addr)) == 0);
}


/* WireGuard has a as b would configure it */
static bool
same_peer(const struct wg_peer *a, const struct wg_peer *b)
{
    if (memcmp(a->public_key, b->public_key, WG_KEY_LEN) != 0
        || a->has_endpoint != b->has_endpoint
        || a->persistent_keepalive != b->persistent_keepalive
        || a->n_allowed_ips != b->n_allowed_ips || !same_endpoint(a, b))
    {
        return false;
    }
    for (size_t i = 0; i < a->n_allowed_ips; i++) {
        const struct ip_prefix *p = &a->allowed_ips[i], *q = &b->allowed_ips[i];

        if (p->family != q->family || p->len != q->len
            || memcmp(&p->addr, &q->addr, p->family == AF_INET
                                          ? sizeof(p->addr.v4)
                                          : sizeof(p->addr.v6)) != 0)
        {
            return false;
        }
    }
    return true;
}


static int
wg_key_cmp(const void *a, const void *b)
{
    return memcmp(((const struct wg_peer *) a)->public_key,
                  ((const struct wg_peer *) b)->public_key, WG_KEY_LEN);
}


/* v[slot] out of the set: the last member takes its place */
static void
drop(struct peer_set *s, uint32_t slot)
{
    peer_index_del(s, slot, ALL_INDEXES);
    if (slot != s->n - 1) {
        s->v[slot] = s->v[s->n - 1];
        peer_index_move(s, slot);
    }
    s->n--;
}


/*
 * The checked delta into s, and what it changes in WireGuard: a key to
 * remove when a peer leaves WireGuard or changes its key; a peer to set
 * when it is new there or configured differently.  A key both removed
 * and set is only set, which keeps its session.
 */
static const char *
merge(struct peer_set *s, struct delta *d, const struct vpc_self *self,
      struct peer_changes *ch)
{
    struct wg_peer  *old, w;
    bool            *had;
    size_t           i, k;
    uint32_t         at;

    old = malloc((d->n_up + 1) * sizeof(*old));
    had = calloc(d->n_up + 1, sizeof(*had));
    ch->remove = malloc((d->n_up + d->n_gone + 1) * sizeof(*ch->remove));
    ch->set = malloc((d->n_up + 1) * sizeof(*ch->set));
    if (old == NULL || had == NULL || ch->remove == NULL || ch->set == NULL) {
        free(old);
        free(had);
        return "out of memory";
    }
    if (s->n + d->n_up > s->cap) {
        /* by a quarter: amortised O(1), and little memory idle */
        size_t            cap = s->n + d->n_up + s->n / 4 + 16;
        struct vpc_peer  *grown;

        grown = realloc(s->v, cap * sizeof(*s->v));
        if (grown == NULL) {
            free(old);
            free(had);
            return "out of memory";
        }
        s->v = grown;
        s->cap = cap;
    }
    if (peer_index_reserve(s, s->n + d->n_up) != 0) {
        free(old);
        free(had);
        return "out of memory";
    }

    /* nothing fails from here on */
    for (i = 0; i < d->n_gone; i++) {
        at = peer_index_find(s, BY_ID, &d->gone[i]);
        if (at == PEER_NONE) {
            continue;
        }
        if (peer_effective(&s->v[at], self, &w)) {
            memcpy(ch->remove[ch->n_remove++], w.public_key, WG_KEY_LEN);
        }
        drop(s, at);
    }
    /* positions after the removals; the old keys and addresses out first,
     * so that two peers may swap theirs */
    for (i = 0; i < d->n_up; i++) {
        d->slot[i] = peer_index_find(s, BY_ID, &d->up[i].id);
        if (d->slot[i] != PEER_NONE) {
            had[i] = peer_effective(&s->v[d->slot[i]], self, &old[i]);
            peer_index_del(s, d->slot[i], KEY_ADDR);
        }
    }
    for (i = 0; i < d->n_up; i++) {
        struct vpc_peer *p = &d->up[i];

        if (self->hub || p->id == 0 || self->has_endpoint) {
            resolve(p);
        }
        if (d->slot[i] != PEER_NONE) {
            s->v[d->slot[i]] = *p;
            peer_index_put(s, d->slot[i], KEY_ADDR);
        } else {
            s->v[s->n] = *p;
            peer_index_put(s, (uint32_t) s->n++, ALL_INDEXES);
        }
        if (peer_effective(p, self, &w)) {
            if (!had[i] || !same_peer(&old[i], &w)) {
                ch->set[ch->n_set++] = w;
            }
            if (had[i] && memcmp(old[i].public_key, w.public_key, WG_KEY_LEN) == 0) {
                had[i] = false;     /* set in place, or unchanged */
            }
        }
        if (had[i]) {
            memcpy(ch->remove[ch->n_remove++], old[i].public_key, WG_KEY_LEN);
        }
    }
    /* a key that leaves one peer and comes with another is only set */
    if (ch->n_set > 1) {
        qsort(ch->set, ch->n_set, sizeof(*ch->set), wg_key_cmp);
    }
    for (i = 0, k = 0; i < ch->n_remove; i++) {
        memcpy(w.public_key, ch->remove[i], WG_KEY_LEN);
        if (bsearch(&w, ch->set, ch->n_set, sizeof(w), wg_key_cmp) == NULL) {
            memmove(ch->remove[k++], ch->remove[i], WG_KEY_LEN);
        }
    }
    ch->n_remove = k;
    free(old);
    free(had);
    return NULL;
}


static const char *
update_delta(struct peer_set *s, json_t *answer, const struct vpc_self *self,
             struct peer_changes *ch, bool *pool_changed)
{
    struct delta      d = { NULL, 0, NULL, 0, NULL };
    struct ip_prefix  pool;
    const char       *why;

    why = parse_delta(answer, &d);
    if (why == NULL) {
        d.slot = malloc((d.n_up + 1) * sizeof(*d.slot));
        why = d.slot == NULL ? "out of memory"
              : check_delta(s, &d, self, pool_changed, &pool);
    }
    if (why == NULL) {
        why = merge(s, &d, self, ch);
    }
    if (why == NULL) {
        s->pool = pool;
    }
    free(d.up);
    free(d.gone);
    free(d.slot);
    return why;
}


static const char *
parse_snapshot(json_t *answer, struct peer_set *next)
{
    json_t  *peers = json_object_get(answer, "peers");

    if (!json_is_array(peers)) {
        return "a snapshot without a peers list";
    }
    if (json_array_size(peers) > PEERS_LIST_MAX) {
        return "a snapshot with more peers than WireGuard takes";
    }
    next->n = 0;
    return parse_list(peers, &next->v, &next->n, &next->cap);
}


int
peer_set_update(struct peer_set *s, bool follows, json_t *answer,
                const struct vpc_self *self, const char *from,
                struct peer_changes *ch, bool *pool_changed)
{
    struct peer_set  next;
    json_t          *epoch, *version, *snapshot;
    const char      *why = NULL, *e;
    uint64_t         v = 0;

    memset(&next, 0, sizeof(next));
    memset(ch, 0, sizeof(*ch));
    *pool_changed = false;

    epoch = json_object_get(answer, "epoch");
    version = json_object_get(answer, "version");
    snapshot = json_object_get(answer, "snapshot");
    e = json_string_value(epoch);
    if (e == NULL || strlen(e) != EPOCH_LEN || !ident_valid(e, EPOCH_LEN)
        || !json_is_integer(version) || json_integer_value(version) < 0
        || !json_is_boolean(snapshot))
    {
        why = "no valid epoch, version and snapshot flag";
        goto refused;
    }
    v = (uint64_t) json_integer_value(version);

    if (json_is_false(snapshot)) {
        /* we asked from s's version of s's epoch: anything else is wrong */
        if (!follows || s->n == 0 || strcmp(e, s->epoch) != 0 || v < s->version) {
            why = "a delta that does not follow the version asked from";
            goto refused;
        }
        why = update_delta(s, answer, self, ch, pool_changed);
        if (why != NULL) {
            goto refused;
        }
        s->version = v;
        return 0;
    }

    why = parse_snapshot(answer, &next);
    if (why == NULL && next.n > 1) {
        qsort(next.v, next.n, sizeof(*next.v), id_cmp);
    }
    if (why == NULL) {
        why = check_set(&next, self, pool_changed);
    }
    if (why != NULL) {
        goto refused;
    }
    memcpy(next.epoch, e, EPOCH_LEN + 1);
    next.version = v;
    /* parsing doubled the array: what it does not use goes back */
    if (next.cap > next.n + next.n / 4 + 16) {
        struct vpc_peer *v2 = realloc(next.v, (next.n + 16) * sizeof(*next.v));

        if (v2 != NULL) {
            next.v = v2;
            next.cap = next.n + 16;
        }
    }
    /* only what WireGuard may use needs an address to send to */
    for (size_t i = 0; i < next.n; i++) {
        struct vpc_peer *p = &next.v[i];

        if (self->hub || p->id == 0 || self->has_endpoint) {
            resolve(p);
        }
    }
    peer_set_free(s);
    *s = next;
    ch->snapshot = true;
    return 0;

refused:
    log_error("refused %s %s (version %" PRIu64 "): %s; nothing applied", from,
              !json_is_boolean(snapshot) ? "answer"
              : json_is_true(snapshot) ? "snapshot" : "delta", v, why);
    peer_set_free(&next);
    peer_changes_free(ch);
    return -1;
}


void
peer_changes_free(struct peer_changes *ch)
{
    free(ch->remove);
    free(ch->set);
    memset(ch, 0, sizeof(*ch));
}


void
peer_set_free(struct peer_set *s)
{
    free(s->v);
    s->v = NULL;
    s->n = 0;
    s->cap = 0;
    peer_index_free(s);
}


const struct vpc_peer *
peer_set_hub(const struct peer_set *s)
{
    return s->n > 0 && s->v[0].id == 0 ? &s->v[0] : NULL;
}


bool
peer_effective(const struct vpc_peer *p, const struct vpc_self *self,
               struct wg_peer *w)
{
    if (self->hub ? p->id == 0
                  : p->id != 0 && !(self->has_endpoint && p->reachable))
    {
        /* the hub is not its own peer; a node without a direct path
         * goes through the hub's pool route, a /32 would black-hole it */
        return false;
    }
    memset(w, 0, sizeof(*w));
    memcpy(w->public_key, p->key, WG_KEY_LEN);
    w->has_endpoint = p->reachable;
    memcpy(&w->endpoint, &p->sockaddr, sizeof(w->endpoint));
    w->n_allowed_ips = 1;
    w->allowed_ips[0] = p->allowed;
    /* toward the hub behind a NAT, so the hub can reach us */
    w->persistent_keepalive = !self->hub && p->id == 0 ? self->keepalive : 0;
    return true;
}


int
peer_set_effective(const struct peer_set *s, const struct vpc_self *self,
                   struct wg_peer **out, size_t *n)
{
    struct wg_peer  *eff;

    eff = calloc(s->n + 1, sizeof(*eff));
    if (eff == NULL) {
        log_error("out of memory");
        return -1;
    }
    *n = 0;
    for (size_t i = 0; i < s->n; i++) {
        *n += peer_effective(&s->v[i], self, &eff[*n]);
    }
    qsort(eff, *n, sizeof(*eff), wg_key_cmp);
    *out = eff;
    return 0;
}


json_t *
peer_set_json(const struct peer_set *s)
{
    json_t  *peers = json_array();
    char     key[WG_KEY_B64_LEN + 1], addr[INET_ADDRSTRLEN];
    char     allowed[IP_PREFIX_STRLEN];

    for (size_t i = 0; peers != NULL && i < s->n; i++) {
        const struct vpc_peer *p = &s->v[i];

        b64_encode(p->key, WG_KEY_LEN, key);
        inet_ntop(AF_INET, &p->address, addr, sizeof(addr));
        if (json_array_append_new(peers, json_pack("{s:I, s:s, s:s, s:s, s:[s], s:o, s:b}",
                "id", (json_int_t) p->id, "name", p->name, "public_key", key,
                "address", addr, "allowed_ips", ip_prefix_format(&p->allowed, allowed),
                "endpoint", p->endpoint[0] ? json_string(p->endpoint) : json_null(),
                "hub", p->id == 0)) != 0)
        {
            json_decref(peers);
            return NULL;
        }
    }
    return peers ? json_pack("{s:s, s:I, s:b, s:o}", "epoch", s->epoch,
                             "version", (json_int_t) s->version,
                             "snapshot", 1, "peers", peers) : NULL;
}
