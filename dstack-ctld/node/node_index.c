/*
 * The peer set's indexes: its members by id, by public key and by
 * address, each an open-addressing table of positions in the set's array
 * (linear probing, deletion by backward shift), so that a delta of one
 * peer costs one lookup, not a search or a sort of the whole set.
 *
 * The hash is seeded per process: keys and addresses come from the server,
 * and colliding ones must not turn lookups into scans.
 */

#include <stdlib.h>
#include <string.h>

#include "node/node.h"

#define INDEX_EMPTY     UINT32_MAX
#define INDEX_MIN_CAP   16


static uint64_t
mix(uint64_t x)
{
    /* the finaliser of splitmix64 */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}


static uint64_t
seed(void)
{
    static uint64_t  s;

    if (s == 0 && (random_bytes(&s, sizeof(s)) != 0 || s == 0)) {
        s = 0x9e3779b97f4a7c15ULL;
    }
    return s;
}


static uint64_t
hash_key(const uint8_t key[WG_KEY_LEN])
{
    uint64_t  h = seed(), w;

    for (size_t i = 0; i < WG_KEY_LEN; i += sizeof(w)) {
        memcpy(&w, key + i, sizeof(w));
        h = mix(h ^ w);
    }
    return h;
}


static uint64_t
hash_of(enum peer_index_kind kind, const void *k)
{
    switch (kind) {
    case BY_ID:
        return mix(seed() ^ (uint64_t) *(const int64_t *) k);
    case BY_KEY:
        return hash_key(k);
    default:
        return mix(seed() ^ *(const uint32_t *) k);
    }
}


static const void *
field(const struct vpc_peer *p, enum peer_index_kind kind)
{
    switch (kind) {
    case BY_ID:
        return &p->id;
    case BY_KEY:
        return p->key;
    default:
        return &p->address.s_addr;
    }
}


static bool
same(enum peer_index_kind kind, const struct vpc_peer *p, const void *k)
{
    switch (kind) {
    case BY_ID:
        return p->id == *(const int64_t *) k;
    case BY_KEY:
        return memcmp(p->key, k, WG_KEY_LEN) == 0;
    default:
        return p->address.s_addr == *(const uint32_t *) k;
    }
}


/* the table cell of k: its entry, or the empty cell where it would go */
static size_t
probe(const struct peer_set *s, enum peer_index_kind kind, const void *k)
{
    size_t     mask = s->index_cap - 1, i = hash_of(kind, k) & mask;
    uint32_t  *t = s->index[kind];

    while (t[i] != INDEX_EMPTY && !same(kind, &s->v[t[i]], k)) {
        i = (i + 1) & mask;
    }
    return i;
}


uint32_t
peer_index_find(const struct peer_set *s, enum peer_index_kind kind, const void *k)
{
    return s->index_cap == 0 ? PEER_NONE : s->index[kind][probe(s, kind, k)];
}


/* slot into every table; false (nothing changed) when one has its value */
static bool
insert(struct peer_set *s, uint32_t slot, enum peer_index_kind *dup)
{
    size_t  cell[PEER_INDEXES];

    for (int k = 0; k < PEER_INDEXES; k++) {
        cell[k] = probe(s, k, field(&s->v[slot], k));
        if (s->index[k][cell[k]] != INDEX_EMPTY) {
            *dup = k;
            return false;
        }
    }
    for (int k = 0; k < PEER_INDEXES; k++) {
        s->index[k][cell[k]] = slot;
    }
    return true;
}


static int
rebuild(struct peer_set *s, size_t cap, enum peer_index_kind *dup)
{
    uint32_t  *t[PEER_INDEXES] = { NULL };

    for (int k = 0; k < PEER_INDEXES; k++) {
        t[k] = malloc(cap * sizeof(*t[k]));
        if (t[k] == NULL) {
            while (k-- > 0) {
                free(t[k]);
            }
            return -1;
        }
        memset(t[k], 0xff, cap * sizeof(*t[k]));
    }
    for (int k = 0; k < PEER_INDEXES; k++) {
        free(s->index[k]);
        s->index[k] = t[k];
    }
    s->index_cap = cap;
    for (size_t i = 0; i < s->n; i++) {
        if (!insert(s, (uint32_t) i, dup)) {
            return 1;
        }
    }
    return 0;
}


int
peer_index_build(struct peer_set *s, enum peer_index_kind *dup)
{
    size_t  cap = INDEX_MIN_CAP;

    while (cap < 2 * (s->n + 1)) {
        cap *= 2;
    }
    return rebuild(s, cap, dup);
}


int
peer_index_reserve(struct peer_set *s, size_t n)
{
    enum peer_index_kind  dup;
    size_t                cap = s->index_cap ? s->index_cap : INDEX_MIN_CAP;

    /* at most half full: probes stay short */
    while (cap < 2 * (n + 1)) {
        cap *= 2;
    }
    return cap == s->index_cap ? 0 : rebuild(s, cap, &dup) == 0 ? 0 : -1;
}


/* empties cell i of table kind, shifting back what probed past it */
static void
erase(struct peer_set *s, enum peer_index_kind kind, size_t i)
{
    size_t     mask = s->index_cap - 1, j = i, home;
    uint32_t  *t = s->index[kind];

    for (;;) {
        j = (j + 1) & mask;
        if (t[j] == INDEX_EMPTY) {
            break;
        }
        home = hash_of(kind, field(&s->v[t[j]], kind)) & mask;
        /* t[j] may move to i when i lies cyclically in [home, j) */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            t[i] = t[j];
            i = j;
        }
    }
    t[i] = INDEX_EMPTY;
}


void
peer_index_del(struct peer_set *s, uint32_t slot, unsigned kinds)
{
    for (int k = 0; k < PEER_INDEXES; k++) {
        if (kinds & (1u << k)) {
            erase(s, k, probe(s, k, field(&s->v[slot], k)));
        }
    }
}


int
peer_index_put(struct peer_set *s, uint32_t slot, unsigned kinds)
{
    for (int k = 0; k < PEER_INDEXES; k++) {
        if (kinds & (1u << k)) {
            size_t  c = probe(s, k, field(&s->v[slot], k));

            if (s->index[k][c] != INDEX_EMPTY) {
                return -1;
            }
            s->index[k][c] = slot;
        }
    }
    return 0;
}


void
peer_index_move(struct peer_set *s, uint32_t to)
{
    for (int k = 0; k < PEER_INDEXES; k++) {
        s->index[k][probe(s, k, field(&s->v[to], k))] = to;
    }
}


void
peer_index_free(struct peer_set *s)
{
    for (int k = 0; k < PEER_INDEXES; k++) {
        free(s->index[k]);
        s->index[k] = NULL;
    }
    s->index_cap = 0;
}
