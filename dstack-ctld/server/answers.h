/*
 * Shared answers.  An answer many requests give (the peer snapshot of a
 * version, the delta between two versions, a discovery list, the record
 * list) is built once and its bytes are shared, refcounted, by every
 * response that sends them.
 *
 * A peer list is indexed by id, so that a node's own entry is left out of
 * what it is sent without a copy: its response is two or three slices of
 * the shared bytes.  Every caller thus gets exactly what a per-caller
 * build would give.
 *
 * The cache holds answers by what their bytes depend on (answer_key).  The
 * first request that needs one builds it, on its own thread and inside its
 * own read transaction (so the bytes match the version that transaction
 * sees); requests for the same key meanwhile wait for that build instead
 * of doing it again.  An answer of a newer version evicts the older ones
 * of its kind; answers being sent live on until their last response goes.
 */

#ifndef CTLD_ANSWERS_H
#define CTLD_ANSWERS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum answer_kind {
    ANSWER_SNAPSHOT,        /* a: peer version */
    ANSWER_DELTA,           /* a: peer version, b: since */
    ANSWER_DISCOVER,        /* a: commits, type */
    ANSWER_NODES,           /* a: commits */
    ANSWER_KINDS
};

#define ANSWER_LISTS  2     /* indexed peer lists: snapshot 1, delta 2 */
#define ANSWER_TYPE_MAX  64

struct answer_key {
    enum answer_kind  kind;
    uint64_t          a, b;
    char              type[ANSWER_TYPE_MAX + 1];
};

/* one entry of an indexed list: [start, end) holds its text, with the
 * comma before it unless it is the list's first */
struct answer_entry {
    int64_t  id;
    size_t   start, end;
};

struct answer_list {
    struct answer_entry  *v;
    size_t                n, cap;
};

struct answer {
    _Atomic unsigned     refs;
    char                *buf;
    size_t               len, cap;
    size_t               count;         /* entries, for what answers 404 on none */
    struct answer_list   lists[ANSWER_LISTS];
    bool                 failed;        /* out of memory while building */
};

/* a slice of an answer's bytes */
struct answer_slice {
    size_t  off, len;
};

struct answer  *answer_new(void);
void            answer_unref(struct answer *a);
void            answer_append(struct answer *a, const char *s, size_t n);
void            answer_append_str(struct answer *a, const char *s);
/* opens list `list` ('[' is the caller's), then entries, in increasing id */
void            answer_list_entry(struct answer *a, unsigned list, int64_t id,
                                  const char *text);

/*
 * The bytes from `from` on without the entry `skip` of each list (-1:
 * none): at most ANSWER_LISTS + 1 slices, their count returned.
 */
size_t  answer_slices(const struct answer *a, size_t from, int64_t skip,
                      struct answer_slice out[ANSWER_LISTS + 1]);

struct answer_cache;

typedef struct answer *(*answer_build)(void *ctx);

struct answer_cache  *answer_cache_new(void);
void                  answer_cache_free(struct answer_cache *c);
/*
 * The answer for key, built by build(ctx) if nobody has it or is building
 * it; a reference the caller drops with answer_unref().  NULL when the
 * build failed.
 */
struct answer  *answer_get(struct answer_cache *c, const struct answer_key *key,
                           answer_build build, void *ctx);
/* answers built so far, by kind */
void            answer_cache_builds(struct answer_cache *c, uint64_t out[ANSWER_KINDS]);

#endif
