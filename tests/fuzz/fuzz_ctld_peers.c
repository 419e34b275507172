/*
 * libFuzzer target: the node's check of a server answer (peer_set_update)
 * and the WireGuard peers it leads to (peer_set_effective).
 *
 * Input: one byte of flags, then the answer's bytes.  Bit 0: the hub
 * asks (else a node at 100.128.0.9); bit 1: the answer is taken as
 * following a known snapshot (so a delta can apply), else as the first;
 * bit 2: the node has an endpoint of its own.
 *
 * DNS names in endpoints are not resolved here: this getaddrinfo()
 * answers "no such name", so a run sends nothing to the network.
 */

#include <arpa/inet.h>
#include <netdb.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "lib/log.h"
#include "node/node.h"

#define BASE_EPOCH  "0123456789abcdef"


int
getaddrinfo(const char *node, const char *service,
            const struct addrinfo *hints, struct addrinfo **res)
{
    (void) node;
    (void) service;
    (void) hints;
    *res = NULL;
    return EAI_NONAME;
}



static json_t *
peer(int id, uint8_t key_byte, const char *name, const char *addr,
     const char *allowed, const char *endpoint)
{
    uint8_t  key[WG_KEY_LEN];
    char     b64[WG_KEY_B64_LEN + 1];

    memset(key, key_byte, sizeof(key));
    b64_encode(key, sizeof(key), b64);
    return json_pack("{s:i, s:s, s:s, s:s, s:[s], s:s?, s:b}", "id", id,
                     "name", name, "public_key", b64, "address", addr,
                     "allowed_ips", allowed, "endpoint", endpoint,
                     "hub", id == 0);
}


/* what a server would send first: the hub and two nodes */
static json_t *
base_snapshot(void)
{
    return json_pack("{s:s, s:i, s:b, s:[o, o, o]}", "epoch", BASE_EPOCH,
                     "version", 5, "snapshot", 1, "peers",
                     peer(0, 1, "vpc-server", "100.128.0.1", "100.128.0.0/10",
                          "192.0.2.1:51820"),
                     peer(1, 2, "db-1", "100.128.0.2", "100.128.0.2/32",
                          "192.0.2.2:51820"),
                     peer(2, 3, "db-2", "100.128.0.3", "100.128.0.3/32", NULL));
}


static void
self_of(unsigned flags, struct vpc_self *self)
{
    memset(self, 0, sizeof(*self));
    self->hub = flags & 1;
    memset(self->key, self->hub ? 1 : 9, WG_KEY_LEN);
    self->has_address = true;
    inet_pton(AF_INET, self->hub ? "100.128.0.1" : "100.128.0.9", &self->address);
    ip_prefix_parse("100.128.0.0/10", &self->pool);
    self->has_endpoint = !self->hub && (flags & 4);
    self->keepalive = self->has_endpoint ? 0 : 25;
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) argc;
    (void) argv;
    log_set_level(LOG_LEVEL_ERROR);
    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vpc_self         self;
    struct peer_set         set;
    struct peer_changes     ch;
    struct wg_peer         *eff;
    json_t                 *answer, *snap;
    unsigned                flags;
    size_t                  n_eff, before;
    bool                    pool_changed;

    if (size == 0) {
        return 0;
    }
    flags = data[0] & 7;
    self_of(flags, &self);
    memset(&set, 0, sizeof(set));
    if (flags & 2) {
        snap = base_snapshot();
        check(peer_set_update(&set, false, snap, &self, "the server's", &ch,
                              &pool_changed) == 0);
        peer_changes_free(&ch);
        json_decref(snap);
    }
    before = set.n;

    answer = json_loadb((const char *) data + 1, size - 1,
                        JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(answer)) {
        json_decref(answer);
        peer_set_free(&set);
        return 0;
    }
    if (peer_set_update(&set, flags & 2, answer, &self, "the server's", &ch,
                        &pool_changed) == 0)
    {
        check(set.n >= 1 && set.v[0].id == 0);
        for (size_t i = 0; i < set.n; i++) {
            check(peer_index_find(&set, BY_ID, &set.v[i].id) == i);
            check(peer_index_find(&set, BY_KEY, set.v[i].key) == i);
            check(i == 0 || memcmp(set.v[i].key, self.key, WG_KEY_LEN) != 0);
        }
        if (peer_set_effective(&set, &self, &eff, &n_eff) == 0) {
            check(n_eff <= set.n);
            free(eff);
        }
        peer_changes_free(&ch);
    } else {
        check(set.n == before);
    }
    peer_set_free(&set);
    json_decref(answer);
    return 0;
}
