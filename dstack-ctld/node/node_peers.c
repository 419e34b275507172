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
    p->fresh = true;
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


/* the checks on the whole set; next is sorted by id */
static const char *
check_set(struct peer_set *next, const struct vpc_self *self, bool *pool_changed)
{
    const struct vpc_peer  **by;
    const struct ip_prefix  *pool;
    size_t                   i;
    const char              *why = NULL;

    if (next->n == 0 || next->v[0].id != 0) {
        return "the hub is missing";
    }
    for (i = 1; i < next->n; i++) {
        if (next->v[i].id == next->v[i - 1].id) {
            return "a peer id appears twice";
        }
    }

    pool = &next->v[0].allowed;
    if (pool->len < 8 || pool->len > 30) {
        return "the hub's allowed_ips is not a pool of /8 to /30";
    }
    if (next->n - 1 > ((size_t) 1 << (32 - pool->len)) - 3) {
        return "more peers than the pool has addresses";
    }
    if (!self->hub
        && (pool->len != self->pool.len
            || pool->addr.v4.s_addr != self->pool.addr.v4.s_addr))
    {
        *pool_changed = true;
        return "the pool is not the one this node joined";
    }
    next->pool = *pool;

    for (i = 0; i < next->n; i++) {
        if (!in_pool(pool, next->v[i].address)) {
            return "an address outside the pool";
        }
        if (self->has_address && !(self->hub && i == 0)
            && next->v[i].address.s_addr == self->address.s_addr)
        {
            return "a peer has this node's own address";
        }
        if ((memcmp(next->v[i].key, self->key, WG_KEY_LEN) == 0)
            != (self->hub && i == 0))
        {
            return self->hub && i == 0 ? "the hub's key is not ours"
                                       : "a peer has this node's own key";
        }
    }

    by = malloc(next->n * sizeof(*by));
    if (by == NULL) {
        return "out of memory";
    }
    for (i = 0; i < next->n; i++) {
        by[i] = &next->v[i];
    }
    qsort(by, next->n, sizeof(*by), key_cmp);
    for (i = 1; i < next->n && why == NULL; i++) {
        if (key_cmp(&by[i - 1], &by[i]) == 0) {
            why = "a public key appears twice";
        }
    }
    qsort(by, next->n, sizeof(*by), addr_cmp);
    for (i = 1; i < next->n && why == NULL; i++) {
        if (addr_cmp(&by[i - 1], &by[i]) == 0) {
            why = "an address appears twice";
        }
    }
    free(by);
    return why;
}


/* cur with the delta's removals and upserts (both sorted by id) */
static const char *
merge(const struct peer_set *cur, const int64_t *gone, size_t n_gone,
      const struct vpc_peer *up, size_t n_up, struct peer_set *next)
{
    size_t  i = 0, g = 0, u = 0;

    next->v = malloc((cur->n + n_up + 1) * sizeof(*next->v));
    if (next->v == NULL) {
        return "out of memory";
    }
    next->n = 0;
    while (i < cur->n || u < n_up) {
        int64_t  id;

        if (u < n_up && (i == cur->n || up[u].id <= cur->v[i].id)) {
            id = up[u].id;
            next->v[next->n++] = up[u++];
            if (i < cur->n && cur->v[i].id == id) {
                i++;                            /* changed */
            }
        } else {
            id = cur->v[i].id;
            while (g < n_gone && gone[g] < id) {
                g++;
            }
            if (g < n_gone && gone[g] == id) {
                i++;                            /* removed */
                continue;
            }
            next->v[next->n] = cur->v[i++];
            next->v[next->n++].fresh = false;
        }
    }
    return NULL;
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


static const char *
parse_delta(const struct peer_set *cur, json_t *answer, struct peer_set *next)
{
    json_t           *added, *changed, *removed;
    struct vpc_peer  *up = NULL;
    int64_t          *gone = NULL;
    size_t            n_up = 0, cap = 0, n_gone = 0, i, j;
    const char       *why;

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

    why = parse_list(added, &up, &n_up, &cap);
    if (why == NULL) {
        why = parse_list(changed, &up, &n_up, &cap);
    }
    if (why == NULL) {
        why = parse_removed(removed, &gone, &n_gone);
    }
    if (why == NULL) {
        if (n_up > 1) {
            qsort(up, n_up, sizeof(*up), id_cmp);
        }
        for (i = 1, j = 0; i < n_up && why == NULL; i++) {
            if (up[i].id == up[i - 1].id) {
                why = "a delta names a peer twice";
            }
        }
        /* set and removed at once: which one is meant? */
        for (i = 0; i < n_up && why == NULL; i++) {
            while (j < n_gone && gone[j] < up[i].id) {
                j++;
            }
            if (j < n_gone && gone[j] == up[i].id) {
                why = "a delta both sets and removes a peer";
            }
        }
    }
    if (why == NULL) {
        why = merge(cur, gone, n_gone, up, n_up, next);
    }
    free(up);
    free(gone);
    return why;
}


static const char *
parse_snapshot(json_t *answer, struct peer_set *next)
{
    json_t  *peers = json_object_get(answer, "peers");
    size_t   cap = 0;

    if (!json_is_array(peers)) {
        return "a snapshot without a peers list";
    }
    if (json_array_size(peers) > PEERS_LIST_MAX) {
        return "a snapshot with more peers than WireGuard takes";
    }
    next->n = 0;
    return parse_list(peers, &next->v, &next->n, &cap);
}


int
peer_set_next(const struct peer_set *cur, json_t *answer,
              const struct vpc_self *self, struct peer_set *next,
              bool *pool_changed)
{
    json_t      *epoch, *version, *snapshot;
    const char  *why = NULL, *e;
    bool         is_snapshot;

    memset(next, 0, sizeof(*next));
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
    memcpy(next->epoch, e, EPOCH_LEN + 1);
    next->version = (uint64_t) json_integer_value(version);
    is_snapshot = json_is_true(snapshot);

    if (!is_snapshot) {
        /* we asked from cur->version of cur->epoch: anything else is wrong */
        if (cur == NULL || strcmp(next->epoch, cur->epoch) != 0
            || next->version < cur->version)
        {
            why = "a delta that does not follow the version asked from";
            goto refused;
        }
        why = parse_delta(cur, answer, next);
    } else {
        why = parse_snapshot(answer, next);
        if (why == NULL && next->n > 1) {
            qsort(next->v, next->n, sizeof(*next->v), id_cmp);
        }
    }
    if (why == NULL) {
        why = check_set(next, self, pool_changed);
    }
    if (why != NULL) {
        goto refused;
    }

    /* only what WireGuard may use needs an address to send to */
    for (size_t i = 0; i < next->n; i++) {
        struct vpc_peer *p = &next->v[i];

        if (p->fresh && (self->hub || p->id == 0 || self->has_endpoint)) {
            resolve(p);
        }
    }
    return 0;

refused:
    log_error("refused the server's %s (version %" PRIu64 "): %s; nothing"
              " applied", !json_is_boolean(snapshot) ? "answer"
                          : json_is_true(snapshot) ? "snapshot" : "delta",
              next->version, why);
    peer_set_free(next);
    return -1;
}


void
peer_set_free(struct peer_set *s)
{
    free(s->v);
    s->v = NULL;
    s->n = 0;
}


const struct vpc_peer *
peer_set_hub(const struct peer_set *s)
{
    return s->n > 0 && s->v[0].id == 0 ? &s->v[0] : NULL;
}


static int
wg_key_cmp(const void *a, const void *b)
{
    return memcmp(((const struct wg_peer *) a)->public_key,
                  ((const struct wg_peer *) b)->public_key, WG_KEY_LEN);
}


int
peer_set_effective(const struct peer_set *s, const struct vpc_self *self,
                   struct wg_peer **out, size_t *n)
{
    struct wg_peer  *eff, *w;
    size_t           i;

    eff = calloc(s->n + 1, sizeof(*eff));
    if (eff == NULL) {
        log_error("out of memory");
        return -1;
    }
    *n = 0;
    for (i = 0; i < s->n; i++) {
        const struct vpc_peer *p = &s->v[i];

        if (self->hub ? p->id == 0
                      : p->id != 0 && !(self->has_endpoint && p->reachable))
        {
            /* the hub is not its own peer; a node without a direct path
             * goes through the hub's pool route, a /32 would black-hole it */
            continue;
        }
        w = &eff[(*n)++];
        memcpy(w->public_key, p->key, WG_KEY_LEN);
        w->has_endpoint = p->reachable;
        memcpy(&w->endpoint, &p->sockaddr, sizeof(w->endpoint));
        w->n_allowed_ips = 1;
        w->allowed_ips[0] = p->allowed;
        /* toward the hub behind a NAT, so the hub can reach us */
        w->persistent_keepalive = !self->hub && p->id == 0 ? self->keepalive : 0;
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
