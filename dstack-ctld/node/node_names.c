/*
 * The names the node's DNS server answers: label -> IPv4 address, an open
 * addressing hash table (linear probing, deletion by backward shift, so no
 * tombstones), O(1) per lookup at any VPC size.
 *
 * One writer (the node's loop) and many readers (the DNS threads): the
 * writer reads the table without the lock, since only it changes it, and
 * takes the write lock only for each actual change, so a peer set in
 * which one name changed holds the readers back for one entry, not N.
 */

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "node/node.h"

struct name_entry {
    char            name[DNS_LABEL_MAX + 1];    /* "": a free slot */
    struct in_addr  addr;
    uint32_t        seen;       /* the last sync that had it */
};

#define TABLE_MIN  64


static uint64_t
name_hash(const char *s, size_t len)
{
    uint64_t  h = 0xcbf29ce484222325ULL;       /* FNV-1a */

    for (size_t i = 0; i < len; i++) {
        h = (h ^ (uint8_t) tolower((unsigned char) s[i])) * 0x100000001b3ULL;
    }
    return h;
}


static bool
name_eq(const struct name_entry *e, const char *s, size_t len)
{
    return strncasecmp(e->name, s, len) == 0 && e->name[len] == '\0';
}


/* the slot holding s, or the free slot where it would go */
static size_t
find_slot(const struct name_table *t, const char *s, size_t len)
{
    size_t  i = name_hash(s, len) & (t->cap - 1);

    while (t->slots[i].name[0] != '\0' && !name_eq(&t->slots[i], s, len)) {
        i = (i + 1) & (t->cap - 1);
    }
    return i;
}


int
name_table_init(struct name_table *t)
{
    memset(t, 0, sizeof(*t));
    t->cap = TABLE_MIN;
    t->slots = calloc(t->cap, sizeof(*t->slots));
    if (t->slots == NULL) {
        return -1;
    }
    if (pthread_rwlock_init(&t->lock, NULL) != 0) {
        free(t->slots);
        return -1;
    }
    return 0;
}


void
name_table_free(struct name_table *t)
{
    if (t->slots != NULL) {
        pthread_rwlock_destroy(&t->lock);
        free(t->slots);
        t->slots = NULL;
    }
}


bool
name_table_lookup(struct name_table *t, const char *s, size_t len,
                  struct in_addr *addr)
{
    bool  found = false;
    size_t  i;

    if (len == 0 || len > DNS_LABEL_MAX) {
        return false;
    }
    pthread_rwlock_rdlock(&t->lock);
    i = find_slot(t, s, len);
    if (t->slots[i].name[0] != '\0') {
        *addr = t->slots[i].addr;
        found = true;
    }
    pthread_rwlock_unlock(&t->lock);
    return found;
}


/* doubles the table (write lock held): amortised O(1) per name */
static int
grow(struct name_table *t)
{
    struct name_entry  *old = t->slots;
    size_t              old_cap = t->cap, i;

    t->slots = calloc(old_cap * 2, sizeof(*t->slots));
    if (t->slots == NULL) {
        t->slots = old;
        return -1;
    }
    t->cap = old_cap * 2;
    for (size_t j = 0; j < old_cap; j++) {
        if (old[j].name[0] != '\0') {
            i = find_slot(t, old[j].name, strlen(old[j].name));
            t->slots[i] = old[j];
        }
    }
    free(old);
    return 0;
}


/* name -> addr, seen now; only a change takes the lock */
static int
set_name(struct name_table *t, const char *name, struct in_addr addr)
{
    size_t  len = strlen(name), i;
    int     rc = 0;

    i = find_slot(t, name, len);
    if (t->slots[i].name[0] != '\0') {
        t->slots[i].seen = t->sync;             /* readers never read it */
        if (t->slots[i].addr.s_addr == addr.s_addr) {
            return 0;
        }
        pthread_rwlock_wrlock(&t->lock);
        t->slots[i].addr = addr;
        pthread_rwlock_unlock(&t->lock);
        return 0;
    }
    pthread_rwlock_wrlock(&t->lock);
    if ((t->count + 1) * 2 > t->cap && grow(t) != 0) {
        rc = -1;
    } else {
        i = find_slot(t, name, len);
        memcpy(t->slots[i].name, name, len + 1);
        t->slots[i].addr = addr;
        t->slots[i].seen = t->sync;
        t->count++;
    }
    pthread_rwlock_unlock(&t->lock);
    return rc;
}


/* frees slot i and moves up the entries of its probe run (lock held) */
static void
remove_slot(struct name_table *t, size_t i)
{
    size_t  j = i, k, mask = t->cap - 1;

    t->slots[i].name[0] = '\0';
    for (;;) {
        j = (j + 1) & mask;
        if (t->slots[j].name[0] == '\0') {
            break;
        }
        k = name_hash(t->slots[j].name, strlen(t->slots[j].name)) & mask;
        /* j stays when its home k lies cyclically in (i, j] */
        if (i <= j ? (i < k && k <= j) : (i < k || k <= j)) {
            continue;
        }
        t->slots[i] = t->slots[j];
        t->slots[j].name[0] = '\0';
        i = j;
    }
    t->count--;
}


int
name_table_sync(struct name_table *t, const struct node_name *self,
                const struct peer_set *s)
{
    size_t  i;
    int     rc = 0;

    t->sync++;
    if (self != NULL) {
        rc |= set_name(t, self->name, self->addr);
    }
    for (i = 0; i < s->n; i++) {
        rc |= set_name(t, s->v[i].name, s->v[i].address);
    }
    /* what this sync did not see has left; scanning needs no lock */
    for (i = 0; i < t->cap; i++) {
        while (t->slots[i].name[0] != '\0' && t->slots[i].seen != t->sync) {
            pthread_rwlock_wrlock(&t->lock);
            remove_slot(t, i);          /* may move another name into i */
            pthread_rwlock_unlock(&t->lock);
        }
    }
    __atomic_store_n(&t->ready, true, __ATOMIC_RELEASE);
    if (rc != 0) {
        log_error("out of memory: some names are not served");
    }
    return rc;
}


bool
name_table_ready(struct name_table *t)
{
    return __atomic_load_n(&t->ready, __ATOMIC_ACQUIRE);
}
