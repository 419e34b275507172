/* Shared, refcounted answers and their cache: built once per key. */

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "server/answers.h"

/* a handful of versions and sinces in flight, and a few discovery types */
#define CACHE_SLOTS  64

struct slot {
    struct answer_key   key;
    struct answer      *answer;         /* NULL while building */
    bool                used;
    bool                building;
    uint64_t            last_use;
};

struct answer_cache {
    pthread_mutex_t     lock;
    pthread_cond_t      built;
    struct slot         slots[CACHE_SLOTS];
    uint64_t            tick;
    _Atomic uint64_t    builds[ANSWER_KINDS];
};


struct answer *
answer_new(void)
{
    struct answer *a = calloc(1, sizeof(*a));

    if (a != NULL) {
        atomic_init(&a->refs, 1);
    }
    return a;
}


void
answer_unref(struct answer *a)
{
    if (a == NULL || atomic_fetch_sub(&a->refs, 1) != 1) {
        return;
    }
    for (unsigned i = 0; i < ANSWER_LISTS; i++) {
        free(a->lists[i].v);
    }
    free(a->buf);
    free(a);
}


void
answer_append(struct answer *a, const char *s, size_t n)
{
    if (a->failed) {
        return;
    }
    if (a->len + n > a->cap) {
        size_t  cap = a->cap ? a->cap : 4096;
        char   *b;

        while (cap < a->len + n) {
            cap *= 2;
        }
        b = realloc(a->buf, cap);
        if (b == NULL) {
            a->failed = true;
            return;
        }
        a->buf = b;
        a->cap = cap;
    }
    memcpy(a->buf + a->len, s, n);
    a->len += n;
}


void
answer_append_str(struct answer *a, const char *s)
{
    answer_append(a, s, strlen(s));
}


void
answer_list_entry(struct answer *a, unsigned list, int64_t id, const char *text)
{
    struct answer_list  *l = &a->lists[list];
    size_t               start = a->len;

    if (a->failed) {
        return;
    }
    if (l->n == l->cap) {
        size_t                cap = l->cap ? 2 * l->cap : 64;
        struct answer_entry  *v = realloc(l->v, cap * sizeof(*v));

        if (v == NULL) {
            a->failed = true;
            return;
        }
        l->v = v;
        l->cap = cap;
    }
    if (l->n > 0) {
        answer_append(a, ",", 1);
    }
    answer_append_str(a, text);
    l->v[l->n++] = (struct answer_entry) { id, start, a->len };
    a->count++;
}


static const struct answer_entry *
find(const struct answer_list *l, int64_t id)
{
    size_t  lo = 0, hi = l->n;

    while (lo < hi) {
        size_t  mid = lo + (hi - lo) / 2;

        if (l->v[mid].id == id) {
            return &l->v[mid];
        }
        if (l->v[mid].id < id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return NULL;
}


size_t
answer_slices(const struct answer *a, size_t from, int64_t skip,
              struct answer_slice out[ANSWER_LISTS + 1])
{
    size_t  n = 0, pos = from;

    for (unsigned i = 0; skip >= 0 && i < ANSWER_LISTS; i++) {
        const struct answer_list   *l = &a->lists[i];
        const struct answer_entry  *e = find(l, skip);
        size_t                      cut, end;

        if (e == NULL || e->start < pos) {
            continue;
        }
        cut = e->start;
        end = e->end;
        /* the first entry goes with the comma of the second */
        if (e == &l->v[0] && l->n > 1) {
            end = l->v[1].start + 1;
        }
        out[n++] = (struct answer_slice) { pos, cut - pos };
        pos = end;
    }
    out[n++] = (struct answer_slice) { pos, a->len - pos };
    return n;
}


struct answer_cache *
answer_cache_new(void)
{
    struct answer_cache *c = calloc(1, sizeof(*c));

    if (c != NULL) {
        pthread_mutex_init(&c->lock, NULL);
        pthread_cond_init(&c->built, NULL);
    }
    return c;
}


void
answer_cache_free(struct answer_cache *c)
{
    if (c == NULL) {
        return;
    }
    for (size_t i = 0; i < CACHE_SLOTS; i++) {
        answer_unref(c->slots[i].answer);
    }
    pthread_cond_destroy(&c->built);
    pthread_mutex_destroy(&c->lock);
    free(c);
}


static bool
key_eq(const struct answer_key *x, const struct answer_key *y)
{
    return x->kind == y->kind && x->a == y->a && x->b == y->b
           && strcmp(x->type, y->type) == 0;
}


static void
slot_clear(struct slot *s)
{
    answer_unref(s->answer);
    memset(s, 0, sizeof(*s));
}


/* a slot for key: a free one, else the least recently used not building */
static struct slot *
slot_take(struct answer_cache *c, const struct answer_key *key)
{
    struct slot  *victim = NULL;

    /* what a newer version (or commit) of the same kind makes stale */
    for (size_t i = 0; i < CACHE_SLOTS; i++) {
        struct slot *s = &c->slots[i];

        if (s->used && !s->building && s->key.kind == key->kind && s->key.a < key->a) {
            slot_clear(s);
        }
    }
    for (size_t i = 0; i < CACHE_SLOTS; i++) {
        struct slot *s = &c->slots[i];

        if (!s->used) {
            return s;
        }
        if (!s->building && (victim == NULL || s->last_use < victim->last_use)) {
            victim = s;
        }
    }
    if (victim != NULL) {
        slot_clear(victim);
    }
    return victim;
}


struct answer *
answer_get(struct answer_cache *c, const struct answer_key *key,
           answer_build build, void *ctx)
{
    struct answer  *a;
    struct slot    *s;

    pthread_mutex_lock(&c->lock);
    for ( ;; ) {
        s = NULL;
        for (size_t i = 0; i < CACHE_SLOTS; i++) {
            if (c->slots[i].used && key_eq(&c->slots[i].key, key)) {
                s = &c->slots[i];
                break;
            }
        }
        if (s == NULL || !s->building) {
            break;
        }
        pthread_cond_wait(&c->built, &c->lock);
    }
    if (s != NULL) {
        s->last_use = ++c->tick;
        atomic_fetch_add(&s->answer->refs, 1);
        pthread_mutex_unlock(&c->lock);
        return s->answer;
    }

    /* ours to build, outside the lock; every slot building: build alone */
    s = slot_take(c, key);
    if (s != NULL) {
        s->key = *key;
        s->used = true;
        s->building = true;
    }
    pthread_mutex_unlock(&c->lock);

    a = build(ctx);
    atomic_fetch_add(&c->builds[key->kind], 1);
    if (a != NULL && a->failed) {
        log_error("out of memory building an answer");
        answer_unref(a);
        a = NULL;
    }
    if (s == NULL) {
        return a;
    }

    pthread_mutex_lock(&c->lock);
    if (a != NULL) {
        atomic_fetch_add(&a->refs, 1);
        s->answer = a;
        s->building = false;
        s->last_use = ++c->tick;
    } else {
        /* waiters find no slot and build themselves */
        memset(s, 0, sizeof(*s));
    }
    pthread_cond_broadcast(&c->built);
    pthread_mutex_unlock(&c->lock);
    return a;
}


void
answer_cache_builds(struct answer_cache *c, uint64_t out[ANSWER_KINDS])
{
    for (unsigned k = 0; k < ANSWER_KINDS; k++) {
        out[k] = atomic_load(&c->builds[k]);
    }
}
