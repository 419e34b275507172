/*
 * The node's peer set kept up to date delta by delta (peer_set_update, at
 * the cost of the delta) against a full recomputation: over random delta
 * sequences, for a node with and without an endpoint and for the hub,
 *   - a delta is accepted exactly when the whole set it leads to, sent as a
 *     snapshot, is accepted (the incremental checks are the full ones);
 *   - a refused delta leaves the set as it was;
 *   - a device that starts from the full rule's peers and gets only each
 *     delta's removals and sets ends with the full rule's peers;
 *   - the indexes find every member where it is.
 * Endpoints are numeric, so nothing is resolved through DNS.
 */

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/log.h"
#include "node/node.h"
#include "tap.h"

#define EPOCH   "0123456789abcdef"
#define POOL    "100.64.0.0/24"
#define MAXP    48
#define STEPS   1500

struct mpeer {
    int64_t  id;
    uint8_t  key[WG_KEY_LEN];
    int      host;              /* 100.64.0.<host> */
    int      ep;                /* 192.0.2.<ep>:51820, 0: none */
};

struct model {
    struct mpeer  p[MAXP + 1];  /* [0]: the hub */
    size_t        n;
    int64_t       next_id;
    unsigned      next_key;
    uint64_t      version;
};

static struct vpc_self  self;


static void
new_key(struct model *m, uint8_t key[WG_KEY_LEN])
{
    memset(key, 0x5a, WG_KEY_LEN);
    m->next_key++;
    memcpy(key, &m->next_key, sizeof(m->next_key));
}


static json_t *
peer_json(const struct mpeer *p)
{
    char  key[WG_KEY_B64_LEN + 1], addr[32], allowed[32], ep[32];

    b64_encode(p->key, WG_KEY_LEN, key);
    snprintf(addr, sizeof(addr), "100.64.0.%d", p->host);
    snprintf(allowed, sizeof(allowed), p->id == 0 ? POOL : "%s/32", addr);
    snprintf(ep, sizeof(ep), "192.0.2.%d:51820", p->ep);
    return json_pack("{s:I, s:s, s:s, s:s, s:[s], s:s?, s:b}",
                     "id", (json_int_t) p->id, "name", p->id ? "n" : "vpc-server",
                     "public_key", key, "address", addr, "allowed_ips", allowed,
                     "endpoint", p->ep ? ep : NULL, "hub", p->id == 0);
}


static json_t *
snapshot_of(const struct model *m)
{
    json_t  *peers = json_array();

    for (size_t i = 0; i < m->n; i++) {
        json_array_append_new(peers, peer_json(&m->p[i]));
    }
    return json_pack("{s:s, s:I, s:b, s:o}", "epoch", EPOCH,
                     "version", (json_int_t) m->version, "snapshot", 1,
                     "peers", peers);
}


static bool
same_wg(const struct wg_peer *a, const struct wg_peer *b)
{
    return memcmp(a->public_key, b->public_key, WG_KEY_LEN) == 0
           && a->has_endpoint == b->has_endpoint
           && (!a->has_endpoint
               || memcmp(&a->endpoint.sin, &b->endpoint.sin, sizeof(a->endpoint.sin)) == 0)
           && a->persistent_keepalive == b->persistent_keepalive
           && a->n_allowed_ips == b->n_allowed_ips
           && a->allowed_ips[0].len == b->allowed_ips[0].len
           && a->allowed_ips[0].addr.v4.s_addr == b->allowed_ips[0].addr.v4.s_addr;
}


/* a simulated device: its peers, in no order */
struct device {
    struct wg_peer  p[2 * MAXP + 4];
    size_t          n;
};


static void
device_apply(struct device *d, const struct peer_changes *ch)
{
    for (size_t r = 0; r < ch->n_remove; r++) {
        for (size_t i = 0; i < d->n; i++) {
            if (memcmp(d->p[i].public_key, ch->remove[r], WG_KEY_LEN) == 0) {
                d->p[i] = d->p[--d->n];
                break;
            }
        }
    }
    for (size_t s = 0; s < ch->n_set; s++) {
        size_t  i;

        for (i = 0; i < d->n; i++) {
            if (memcmp(d->p[i].public_key, ch->set[s].public_key, WG_KEY_LEN) == 0) {
                break;
            }
        }
        if (i == d->n) {
            d->n++;
        }
        d->p[i] = ch->set[s];
    }
}


/* the device has exactly the full rule's peers for the set */
static bool
device_matches(const struct device *d, const struct peer_set *s)
{
    struct wg_peer  *eff;
    size_t           n, found = 0;
    bool             ok;

    if (peer_set_effective(s, &self, &eff, &n) != 0) {
        return false;
    }
    ok = n == d->n;
    for (size_t i = 0; ok && i < n; i++) {
        for (size_t j = 0; j < d->n; j++) {
            if (same_wg(&eff[i], &d->p[j])) {
                found++;
                break;
            }
        }
    }
    free(eff);
    return ok && found == n;
}


/* the full recomputation: the model as a snapshot, into a fresh set */
static bool
same_as_full(const struct peer_set *s, const struct model *m)
{
    struct peer_set      full = { 0 };
    struct peer_changes  ch;
    struct device        d = { .n = 0 };
    struct wg_peer      *eff;
    size_t               n;
    json_t              *snap = snapshot_of(m);
    bool                 pc, ok;

    ok = peer_set_update(&full, false, snap, &self, "the test's", &ch, &pc) == 0
         && full.n == s->n && peer_set_effective(&full, &self, &eff, &n) == 0;
    json_decref(snap);
    if (ok) {
        memcpy(d.p, eff, n * sizeof(*eff));
        d.n = n;
        free(eff);
        ok = device_matches(&d, s);
    }
    peer_changes_free(&ch);
    peer_set_free(&full);
    return ok;
}


static bool
indexes_right(const struct peer_set *s)
{
    for (size_t i = 0; i < s->n; i++) {
        if (peer_index_find(s, BY_ID, &s->v[i].id) != i
            || peer_index_find(s, BY_KEY, s->v[i].key) != i
            || peer_index_find(s, BY_ADDR, &s->v[i].address.s_addr) != i)
        {
            return false;
        }
    }
    return s->n > 0 && s->v[0].id == 0;
}


/*
 * A random delta from m: its JSON, and in *to the model it leads to.
 * Addresses are drawn from a small range and keys sometimes reused, so
 * that many deltas collide and must be refused.
 */
static json_t *
random_delta(const struct model *m, struct model *to)
{
    json_t   *added = json_array(), *changed = json_array(), *removed = json_array();
    bool      named[MAXP + 1] = { false };
    unsigned  ops = 1 + (unsigned) rand() % 4;

    *to = *m;
    to->version++;
    for (unsigned o = 0; o < ops; o++) {
        int     what = rand() % 10;
        size_t  i = 1 + (size_t) rand() % (to->n > 1 ? to->n - 1 : 1);

        if (what < 3 && to->n < MAXP) {                 /* a new node */
            struct mpeer *p = &to->p[to->n];

            p->id = ++to->next_id;
            new_key(to, p->key);
            if (rand() % 8 == 0 && m->n > 1) {          /* a key in use */
                memcpy(p->key, m->p[1 + rand() % (m->n - 1)].key, WG_KEY_LEN);
            }
            p->host = 2 + rand() % 80;
            p->ep = rand() % 2 ? 1 + rand() % 200 : 0;
            named[to->n] = true;
            json_array_append_new(added, peer_json(p));
            to->n++;
        } else if (what < 8 && to->n > 1 && !named[i]) { /* a change */
            struct mpeer *p = &to->p[i];

            switch (rand() % 4) {
            case 0:
                p->ep = p->ep ? 0 : 1 + rand() % 200;
                break;
            case 1:
                new_key(to, p->key);
                break;
            case 2:
                p->host = 2 + rand() % 80;
                break;
            default:                                    /* two swap keys */
                {
                    size_t  j = 1 + (size_t) rand() % (to->n - 1);
                    uint8_t k[WG_KEY_LEN];

                    if (j != i && !named[j]) {
                        memcpy(k, p->key, WG_KEY_LEN);
                        memcpy(p->key, to->p[j].key, WG_KEY_LEN);
                        memcpy(to->p[j].key, k, WG_KEY_LEN);
                        named[j] = true;
                        json_array_append_new(changed, peer_json(&to->p[j]));
                    }
                }
            }
            named[i] = true;
            json_array_append_new(changed, peer_json(p));
        } else if (what < 9 && !named[0]) {             /* the hub moves */
            to->p[0].ep = 1 + rand() % 200;
            named[0] = true;
            json_array_append_new(changed, peer_json(&to->p[0]));
        } else if (to->n > 1 && !named[i]) {            /* a node leaves */
            char  key[WG_KEY_B64_LEN + 1];

            b64_encode(to->p[i].key, WG_KEY_LEN, key);
            json_array_append_new(removed, json_pack("{s:I, s:s}", "id",
                                  (json_int_t) to->p[i].id, "public_key", key));
            to->p[i] = to->p[to->n - 1];
            named[i] = named[to->n - 1];
            to->n--;
        }
    }
    return json_pack("{s:s, s:I, s:b, s:o, s:o, s:o}", "epoch", EPOCH,
                     "version", (json_int_t) to->version, "snapshot", 0,
                     "added", added, "changed", changed, "removed", removed);
}


static void
run(const char *what, bool hub, bool endpoint)
{
    struct model         m = { .n = 1, .next_id = 0, .next_key = 0, .version = 1 };
    struct model         to;
    struct peer_set      s = { 0 }, full;
    struct peer_changes  ch;
    struct device        d = { .n = 0 };
    struct wg_peer      *eff;
    size_t               n, accepted = 0, refused = 0, steps_ok = 0;
    bool                 pc, want;
    json_t              *j;

    memset(&self, 0, sizeof(self));
    self.hub = hub;
    memset(self.key, 0x11, WG_KEY_LEN);
    self.has_address = true;
    inet_pton(AF_INET, hub ? "100.64.0.1" : "100.64.0.250", &self.address);
    ip_prefix_parse(POOL, &self.pool);
    self.has_endpoint = endpoint;
    self.keepalive = endpoint ? 0 : 25;

    m.p[0].id = 0;
    if (hub) {
        memcpy(m.p[0].key, self.key, WG_KEY_LEN);
    } else {
        new_key(&m, m.p[0].key);
    }
    m.p[0].host = 1;
    m.p[0].ep = 1;
    j = snapshot_of(&m);
    ok(peer_set_update(&s, false, j, &self, "the test's", &ch, &pc) == 0
       && ch.snapshot, "%s: the first snapshot", what);
    json_decref(j);
    peer_changes_free(&ch);
    peer_set_effective(&s, &self, &eff, &n);
    memcpy(d.p, eff, n * sizeof(*eff));
    d.n = n;
    free(eff);

    for (int step = 0; step < STEPS; step++) {
        bool  good = true;

        j = random_delta(&m, &to);
        /* what the full checks say of the set it leads to */
        {
            json_t *snap = snapshot_of(&to);

            memset(&full, 0, sizeof(full));
            want = peer_set_update(&full, false, snap, &self, "the test's",
                                   &ch, &pc) == 0;
            peer_changes_free(&ch);
            peer_set_free(&full);
            json_decref(snap);
        }
        if (peer_set_update(&s, true, j, &self, "the test's", &ch, &pc) == 0) {
            good = want && !ch.snapshot && s.version == to.version;
            device_apply(&d, &ch);
            peer_changes_free(&ch);
            m = to;
            accepted++;
        } else {
            good = !want;
            refused++;
        }
        json_decref(j);
        good = good && device_matches(&d, &s) && same_as_full(&s, &m)
               && indexes_right(&s);
        steps_ok += good;
        if (!good) {
            printf("# %s: step %d differs (delta %s)\n", what, step,
                   want ? "wanted" : "unwanted");
            break;
        }
    }
    ok(steps_ok == STEPS, "%s: %d random deltas, incremental = full"
       " recomputation (%zu accepted, %zu refused)", what, STEPS, accepted, refused);
    ok(accepted > STEPS / 4 && refused > STEPS / 20,
       "%s: the sequence had both kinds", what);
    peer_set_free(&s);
}


int
main(void)
{
    /* refusals are expected and logged: onto a file, shown on a failure */
    FILE  *logs = tmpfile();
    int    saved = dup(2), c;

    if (logs != NULL && saved >= 0) {
        dup2(fileno(logs), 2);
    }
    srand(14);
    run("a node with an endpoint", false, true);
    run("a node without one", false, false);
    run("the hub", true, false);
    if (logs != NULL && saved >= 0) {
        dup2(saved, 2);
        if (tap_failed) {
            rewind(logs);
            while ((c = fgetc(logs)) != EOF) {
                fputc(c, stderr);
            }
        }
        fclose(logs);
    }
    return tap_done();
}
