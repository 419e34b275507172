/*
 * The node role's life cycle: who we are, joining (or resuming with the
 * saved token), then one loop: keep the interface configured, report to
 * the original discovery API, long-poll the server and apply what it
 * says.  Any failure is retried with capped exponential backoff and full
 * jitter; no failure tears the interface down.  SIGTERM stops the loop
 * and leaves the interface as it is, for the next start to resume.
 *
 * Restart with a saved token: the node does not join again, it puts the
 * saved peer set (node.peers) in place and polls from its version, so the
 * server answers with what changed meanwhile, not a snapshot.  When the
 * server no longer knows that version (another epoch: a restored backup;
 * history compacted) it answers with a snapshot, which is applied as a
 * diff (wg_replace_peers keeps every peer that stays, and its session).
 * Joining again would cost the server a durable write and bump the
 * peer-set version for every other node, for nothing.  It joins again
 * only when the saved join no longer fits (another key, endpoint, name,
 * instance or server) or the server keeps refusing the token (401: a
 * replaced database); a join by a node that keeps its set asks for no
 * snapshot ("snapshot": false).
 *
 * Only the server's 410 (this node was removed) ends the node; a 401 can
 * be nginx's (a certificate rotation, a misconfiguration) and is retried.
 * The last peer set is saved (node.peers) and applied at start, so a node
 * rebooted while the server is away comes back with its tunnels.  A
 * snapshot is saved at once; deltas at most every PEERS_SAVE_MS and when
 * the node stops, so a change costs the node what it changes, not a write
 * of the whole set (a node that crashes resumes from an older version,
 * which the server answers with a longer delta).
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "lib/admin_token.h"
#include "lib/http_client.h"
#include "lib/log.h"
#include "lib/wgkey.h"
#include "node/node.h"

#define BACKOFF_BASE_MS  1000
/* the first retry's window grows with the VPC: 1000 nodes, 10 s */
#define SPREAD_MS_PER_PEER  10
/* 401s in a row before the token is taken for unknown and the node joins
 * again (the server's database was replaced) */
#define REFUSALS_BEFORE_REJOIN  3
/* node.peers after deltas: at most this often, and when stopping */
#define PEERS_SAVE_MS  5000

static volatile sig_atomic_t  stop_signal;

struct backoff {
    unsigned  attempt;
    uint64_t  cap_ms;
    uint64_t  base_ms;      /* the first attempt's window */
};


static void
on_stop(int sig)
{
    stop_signal = sig;
}


bool
node_stopping(void)
{
    return stop_signal != 0;
}


/* sleeps up to ms, waking at once for SIGTERM/SIGINT */
static void
nap(uint64_t ms)
{
    struct timespec  ts = { .tv_sec = (time_t) (ms / 1000),
                            .tv_nsec = (long) (ms % 1000) * 1000000 };
    sigset_t         stop, old;

    /* blocked between the check and ppoll(), which unblocks atomically */
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigprocmask(SIG_BLOCK, &stop, &old);
    if (!stop_signal) {
        ppoll(NULL, 0, &ts, &old);
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
}


/*
 * "Full jitter": a uniform wait in [0, min(cap, base * 2^attempt)].  The
 * base grows with the VPC, so that when the server comes back (a restart)
 * its nodes do not all come at once.
 */
static void
backoff_wait(struct backoff *b)
{
    uint64_t  ceiling = b->cap_ms, r = 0;

    if (b->attempt < 30 && b->base_ms < (UINT64_MAX >> 31)
        && (b->base_ms << b->attempt) < ceiling)
    {
        ceiling = b->base_ms << b->attempt;
    }
    b->attempt++;
    if (random_bytes(&r, sizeof(r)) != 0) {
        r = ceiling / 2;
    }
    r %= ceiling + 1;
    log_debug("retrying in %" PRIu64 " ms (window %" PRIu64 " ms)", r, ceiling);
    nap(r);
}


static int
decode_key(const char *b64, uint8_t key[WG_KEY_LEN])
{
    size_t  len;

    return b64_decode(b64, strlen(b64), key, WG_KEY_LEN, &len) == 0
           && len == WG_KEY_LEN ? 0 : -1;
}


/* --- identity --- */

static int
node_key(struct vpc_node *n)
{
    char  path[PATH_MAX];

    snprintf(path, sizeof(path), "%s/" NODE_KEY_FILE, n->cfg.state_dir);
    if (wgkey_load_or_create(path, n->private_key, n->public_key) != 0) {
        return -1;
    }
    return decode_key(n->public_key, n->self.key);
}


/* the hub's key and the admin token are the server's, in its data dir */
static int
hub_secrets(struct vpc_node *n)
{
    char     path[PATH_MAX];
    uint8_t  before[WG_KEY_LEN];

    memcpy(before, n->self.key, WG_KEY_LEN);
    snprintf(path, sizeof(path), "%s/" HUB_KEY_FILE, n->cfg.data_dir);
    if (wgkey_load(path, n->private_key, n->public_key) != 0) {
        if (errno == ENOENT) {
            log_warn("%s does not exist yet: is the server running with"
                     " --data-dir %s?", path, n->cfg.data_dir);
        }
        return -1;
    }
    if (decode_key(n->public_key, n->self.key) != 0) {
        return -1;
    }
    if (memcmp(before, n->self.key, WG_KEY_LEN) != 0) {
        n->dev_up = false;      /* a new key for the interface */
    }
    if (admin_token_read(n->cfg.data_dir, n->admin_token) != 0) {
        log_warn("cannot read the admin token %s/" ADMIN_TOKEN_FILE ": %s",
                 n->cfg.data_dir, errno == EINVAL ? "malformed" : strerror(errno));
        return -1;
    }
    return 0;
}


static int
identify(struct vpc_node *n)
{
    if (agent_info(n->cfg.agent_socket, n->agent_app_id, n->instance_id) != 0) {
        return -1;
    }
    if (n->route == ROUTE_MESH && strcmp(n->cfg.server_app_id, "self") == 0) {
        memcpy(n->target_app, n->agent_app_id, sizeof(n->target_app));
    }
    log_info("this CVM: app %s, instance %s; the server: %s%s%s", n->agent_app_id,
             n->instance_id, n->cfg.server_url,
             n->route == ROUTE_MESH ? ", app " : " (directly, no mesh)",
             n->route == ROUTE_MESH ? n->target_app : "");
    return 0;
}


/* --- joining --- */

/* what a join is made with: when any of it changes, join again */
static void
join_params(const struct vpc_node *n, struct node_state *st)
{
    snprintf(st->app_id, sizeof(st->app_id), "%s", n->agent_app_id);
    snprintf(st->instance_id, sizeof(st->instance_id), "%s", n->instance_id);
    snprintf(st->server, sizeof(st->server), "%s %s", n->cfg.server_url,
             n->cfg.server_app_id);
    snprintf(st->public_key, sizeof(st->public_key), "%s", n->public_key);
    snprintf(st->endpoint, sizeof(st->endpoint), "%s",
             n->cfg.endpoint ? n->cfg.endpoint : "");
    snprintf(st->requested_name, sizeof(st->requested_name), "%s",
             n->cfg.name ? n->cfg.name : "");
}


/* the joined address and pool become self; a new address needs the device */
static void
adopt_state(struct vpc_node *n)
{
    struct in_addr  a;

    inet_pton(AF_INET, n->state.address, &a);
    if (!n->self.has_address || a.s_addr != n->self.address.s_addr) {
        n->dev_up = false;
    }
    n->self.has_address = true;
    n->self.address = a;
    ip_prefix_parse(n->state.prefix, &n->self.pool);
    n->joined = true;
    n->reported = false;
}


static bool
same_join(const struct node_state *a, const struct node_state *b)
{
    return strcmp(a->app_id, b->app_id) == 0
           && strcmp(a->instance_id, b->instance_id) == 0
           && strcmp(a->server, b->server) == 0
           && strcmp(a->public_key, b->public_key) == 0
           && strcmp(a->endpoint, b->endpoint) == 0
           && strcmp(a->requested_name, b->requested_name) == 0;
}


static int handle_answer(struct vpc_node *n, json_t *answer, const char *from);

/* the saved peer set, checked like an answer, until the server answers */
static void
resume_peers(struct vpc_node *n)
{
    json_t  *saved = node_peers_load(n->cfg.state_dir, n->state.node_id);

    if (saved != NULL && handle_answer(n, saved, "the saved") == 0) {
        log_info("the saved peer set (version %" PRIu64 ", %zu members) in"
                 " place; polling from its version", n->peers.version, n->peers.n);
    }
    json_decref(saved);
    n->joined = true;       /* a saved set of another pool is not a reason */
    n->want_snapshot = false;
}


/*
 * 0: resumed with the saved join; -1: none; 1: it was made with another
 * key, endpoint or name, so join again.  Then only its token is kept: the
 * join presents it, which a new public key needs (node_api_join).
 */
static int
resume(struct vpc_node *n)
{
    struct node_state  want;
    char               token[TOKEN_HEX_LEN + 1];
    bool               same_node;

    if (node_state_load(n->cfg.state_dir, &n->state) != 0) {
        return -1;
    }
    join_params(n, &want);
    if (!same_join(&want, &n->state)) {
        log_info("the saved join was made with other settings; joining again");
        /* a token goes to the server that made it, for the node it names */
        same_node = strcmp(want.app_id, n->state.app_id) == 0
                    && strcmp(want.instance_id, n->state.instance_id) == 0
                    && strcmp(want.server, n->state.server) == 0;
        memcpy(token, n->state.token, sizeof(token));
        OPENSSL_cleanse(&n->state, sizeof(n->state));
        if (same_node) {
            memcpy(n->state.token, token, sizeof(token));
        }
        OPENSSL_cleanse(token, sizeof(token));
        return same_node ? 1 : -1;
    }
    adopt_state(n);
    n->resumed = true;
    log_info("resuming as %s (node %" PRId64 ") at %s with the saved token",
             n->state.name, n->state.node_id, n->state.address);
    resume_peers(n);
    return 0;
}

static int
join(struct vpc_node *n)
{
    char             key[TOKEN_HEX_LEN + 1];
    json_t          *answer = NULL;
    enum api_result  res;
    int64_t          was = n->state.node_id;
    const char      *epoch;
    bool             keep = n->have_peers && !n->want_snapshot;
    int              rc = -1;

    res = node_api_register(n, key);
    if (res != API_OK) {
        return -1;
    }
    res = node_api_join(n, key, keep, &answer);
    OPENSSL_cleanse(key, sizeof(key));
    if (res != API_OK) {
        return -1;
    }

    node_status_lock(n);
    memset(&n->state, 0, sizeof(n->state));
    if (node_state_from_join(&n->state, answer) != 0) {
        goto done;
    }
    join_params(n, &n->state);
    /* a node that cannot save its token still works; it joins again
     * after a restart */
    node_state_save(n->cfg.state_dir, &n->state);
    log_info("joined as %s.%s (node %" PRId64 ") at %s in %s", n->state.name,
             DNS_DOMAIN, n->state.node_id, n->state.address, n->state.prefix);

    epoch = json_string_value(json_object_get(answer, "epoch"));
    if (!keep || n->state.node_id != was || epoch == NULL
        || strcmp(epoch, n->peers.epoch) != 0)
    {
        /* the set held is of another node or epoch: a snapshot follows */
        peer_set_free(&n->peers);
        n->have_peers = false;
        n->want_snapshot = false;
    }
    adopt_state(n);
    n->resumed = false;
    n->refused = 0;
    rc = 0;
    if (json_object_get(answer, "peers") != NULL) {
        /* a refused peer set comes again by poll */
        handle_answer(n, answer, "the server's");
    } else if (n->have_peers) {
        log_info("joined without a snapshot: polling from version %" PRIu64,
                 n->peers.version);
    }

done:
    node_status_unlock(n);
    json_decref(answer);
    return rc;
}


/* --- applying --- */

static void
update_hosts(struct vpc_node *n)
{
    char        *block, *p;
    size_t       cap;
    char         addr[INET_ADDRSTRLEN];

    if (strcmp(n->cfg.hosts_file, "none") == 0 || !n->have_peers
        || !(n->names_mode & NAMES_HOSTS))
    {
        return;
    }
    cap = (n->peers.n + 1) * (INET_ADDRSTRLEN + DNS_LABEL_MAX + 32) + 1;
    block = p = malloc(cap);
    if (block == NULL) {
        log_error("out of memory");
        return;
    }
    *p = '\0';
    if (!n->self.hub) {
        p += sprintf(p, "%s %s." DNS_DOMAIN "\n", n->state.address, n->state.name);
    }
    for (size_t i = 0; i < n->peers.n; i++) {
        inet_ntop(AF_INET, &n->peers.v[i].address, addr, sizeof(addr));
        p += sprintf(p, "%s %s." DNS_DOMAIN "\n", addr, n->peers.v[i].name);
    }
    if (n->hosts_block != NULL && strcmp(n->hosts_block, block) == 0) {
        free(block);
        return;
    }
    if (hosts_write_block(n->cfg.hosts_file, block) != 0) {
        free(block);            /* tried again after the next poll */
        return;
    }
    log_info("%s: %zu names", n->cfg.hosts_file, n->peers.n + !n->self.hub);
    free(n->hosts_block);
    n->hosts_block = block;
}


/* the DNS server's names: the same the hosts block has */
static void
update_names(struct vpc_node *n)
{
    struct node_name  self;

    if (n->dns == NULL || !n->have_peers) {
        return;
    }
    if (!n->self.hub) {
        snprintf(self.name, sizeof(self.name), "%s", n->state.name);
        inet_pton(AF_INET, n->state.address, &self.addr);
    }
    name_table_sync(&n->names, n->self.hub ? NULL : &self, &n->peers);
}


/* the DNS server, and the CVM's resolver pointed at it: 0, or -1 logged */
static int
names_start(struct vpc_node *n, const char *dir)
{
    struct dns_upstreams  up;
    char                  saved[PATH_MAX];
    const char           *path = n->cfg.resolv_conf;
    bool                  rewrite = strcmp(path, "none") != 0;
    int                   rc;

    if (!(n->names_mode & NAMES_DNS)) {
        return 0;
    }
    /* a block a --names hosts run left would hide the server's names */
    if (!(n->names_mode & NAMES_HOSTS) && strcmp(n->cfg.hosts_file, "none") != 0) {
        hosts_clear_block(n->cfg.hosts_file);
    }
    if (dir_file(dir, RESOLV_SAVED_FILE, saved) != 0
        || name_table_init(&n->names) != 0)
    {
        return -1;
    }
    if (resolv_take_over(rewrite ? path : "/etc/resolv.conf", saved,
                         &n->dns_addr, false, &up) < 0)
    {
        return -1;
    }
    n->dns = dns_start(&n->names, &n->dns_addr, &up);
    if (n->dns == NULL) {
        return -1;
    }
    if (rewrite) {
        rc = resolv_take_over(path, saved, &n->dns_addr, true, &up);
        if (rc < 0) {
            return -1;
        }
        n->resolv_taken = rc == 1;
    }
    return 0;
}


static void
names_stop(struct vpc_node *n, const char *dir)
{
    char  saved[PATH_MAX];

    if (n->resolv_taken && dir_file(dir, RESOLV_SAVED_FILE, saved) == 0) {
        resolv_restore(n->cfg.resolv_conf, saved);
    }
    dns_stop(n->dns);
    n->dns = NULL;
    name_table_free(&n->names);
}


/* a hub follows the hub entry: its own address and the pool */
static void
hub_self(struct vpc_node *n, const struct peer_set *s)
{
    const struct vpc_peer  *me = peer_set_hub(s);

    if (!n->self.has_address || me->address.s_addr != n->self.address.s_addr
        || s->pool.len != n->self.pool.len
        || s->pool.addr.v4.s_addr != n->self.pool.addr.v4.s_addr)
    {
        n->dev_up = false;
    }
    n->self.has_address = true;
    n->self.address = me->address;
    n->self.pool = s->pool;
}


/* node.peers when it is behind: now when forced, else at most every
 * PEERS_SAVE_MS */
static void
save_peers(struct vpc_node *n, bool force)
{
    uint64_t  now = clock_mono_ms();

    if (!n->peers_dirty || n->self.hub
        || (!force && now - n->peers_saved_ms < PEERS_SAVE_MS))
    {
        return;
    }
    /* a node that cannot save it still works; it polls from an older
     * version, or from 0, after a restart */
    node_peers_save(n->cfg.state_dir, n->state.node_id, &n->peers);
    n->peers_dirty = false;
    n->peers_saved_ms = now;
}


static int
handle_answer(struct vpc_node *n, json_t *answer, const char *from)
{
    struct peer_changes  ch;
    uint64_t             version = n->peers.version;
    char                 epoch[EPOCH_LEN + 1];
    bool                 pool_changed, changed, snapshot, had = n->have_peers;

    memcpy(epoch, n->peers.epoch, sizeof(epoch));
    /* a delta follows only the version asked from: none after a refusal */
    if (peer_set_update(&n->peers, n->have_peers && !n->want_snapshot, answer,
                        &n->self, from, &ch, &pool_changed) != 0)
    {
        if (pool_changed) {
            log_warn("the server's pool changed: joining again");
            n->joined = false;
        }
        if (n->self.hub) {
            hub_secrets(n);     /* the server may have a new key */
        }
        n->want_snapshot = true;
        return -1;
    }
    if (n->self.hub) {
        hub_self(n, &n->peers);
    } else if (ch.snapshot && !n->self.has_endpoint && !n->peers.v[0].reachable) {
        log_warn("neither the hub nor this node has an endpoint: no tunnel"
                 " can form (give the server --wg-endpoint)");
    }

    if (n->dev_up) {
        bool  whole = ch.snapshot || !n->peers_synced;

        if ((whole ? apply_snapshot(n) : apply_delta(n, &ch)) == 0
            && strcmp(from, "the saved") != 0)
        {
            log_debug("%s applied in %" PRIu64 " us from its arrival",
                      whole ? "snapshot" : "delta", clock_mono_us() - n->answer_us);
        }
    } else {
        n->peers_synced = false;    /* set with the device (a new address) */
    }
    snapshot = ch.snapshot;
    peer_changes_free(&ch);
    changed = !had || n->peers.version != version
              || strcmp(n->peers.epoch, epoch) != 0;
    n->have_peers = true;
    n->want_snapshot = false;
    log_write(snapshot ? LOG_LEVEL_INFO : LOG_LEVEL_DEBUG,
              "peer set version %" PRIu64 " (%s): %zu members",
              n->peers.version, snapshot ? "snapshot" : "delta", n->peers.n);
    if (changed && !n->self.hub && strcmp(from, "the saved") != 0) {
        n->peers_dirty = true;
        /* a snapshot costs the whole set anyway: saved at once */
        save_peers(n, snapshot);
    }
    update_hosts(n);
    update_names(n);
    return 0;
}


/* the interface as it should be: 0, or -1 to try again later */
static int
sync_device(struct vpc_node *n)
{
    if (!n->self.has_address) {
        return 0;               /* nothing to configure before a join */
    }
    if (n->dev_up && !apply_device_present(n)) {
        log_warn("%s has gone away: creating it again", n->cfg.interface);
        apply_close(n);
    }
    if (!n->dev_up && apply_device(n) != 0) {
        return -1;
    }
    /* the saved peers are not known before the first answer: until then
     * the device keeps whatever peers it has, and their sessions */
    if (n->have_peers && !n->peers_synced && apply_snapshot(n) != 0)
    {
        return -1;
    }
    return 0;
}


/* --- the loop --- */

/* what a poll's answer leads to: 0 ok, -1 try again, 1 removed */
static int
poll_result(struct vpc_node *n, enum api_result res, json_t *answer)
{
    switch (res) {
    case API_OK:
        n->refused = 0;
        n->resumed = false;
        return handle_answer(n, answer, "the server's");

    case API_GONE:
        if (n->self.hub) {
            return -1;          /* not an answer to the admin token */
        }
        if (n->have_peers && !n->want_snapshot) {
            /* maybe the version asked from is gone: a snapshot tells */
            log_warn("410 to a poll from version %" PRIu64 ": polling from 0",
                     n->peers.version);
            n->want_snapshot = true;
            return -1;
        }
        node_state_forget(n->cfg.state_dir);
        if (n->resumed) {
            /* removed while this daemon was stopped: starting again
             * joins again, as a restart after the exit below would */
            log_warn("this node was removed from the VPC while it was"
                     " stopped: joining afresh");
            OPENSSL_cleanse(n->state.token, sizeof(n->state.token));
            n->resumed = false;
            n->joined = false;
            n->want_snapshot = false;
            return -1;
        }
        log_error("this node was removed from the VPC by the server");
        return 1;

    case API_AUTH:
        if (n->self.hub) {
            hub_secrets(n);     /* the server may have a new admin token */
            return -1;
        }
        /* nginx refusing, or a server that lost the token: the state and
         * the interface stay; after a few, the token is taken for lost */
        if (++n->refused < REFUSALS_BEFORE_REJOIN) {
            log_warn("the node token was refused (%u in a row); trying again",
                     n->refused);
        } else {
            log_warn("the node token was refused %u times in a row: joining"
                     " again", n->refused);
            n->refused = 0;
            n->joined = false;
        }
        return -1;

    case API_REFUSED:
    case API_FAILED:
        break;
    }
    return -1;
}


/* one poll and what follows from it: 0 ok, -1 try again, 1 removed */
static int
poll_once(struct vpc_node *n, uint64_t wait)
{
    json_t          *answer = NULL;
    enum api_result  res;
    int              rc;

    res = node_api_poll(n, wait, &answer);
    node_status_lock(n);
    rc = poll_result(n, res, answer);
    node_status_unlock(n);
    json_decref(answer);
    return rc;
}


static int
node_loop(struct vpc_node *n)
{
    struct backoff  b = { .cap_ms = n->cfg.retry_max * 1000 };
    bool            identified = false, ok;
    int             rc;

    while (!node_stopping()) {
        ok = false;
        if (n->self.hub) {
            if (!identified) {
                node_status_lock(n);
                identified = hub_secrets(n) == 0;
                node_status_unlock(n);
                if (!identified) {
                    goto next;
                }
            }
        } else {
            if (!identified) {
                identified = identify(n) == 0;
                if (!identified) {
                    goto next;
                }
                /* a join with other settings keeps the file (and its
                 * token) until the new join replaces it */
                node_status_lock(n);
                if (resume(n) < 0) {
                    node_state_forget(n->cfg.state_dir);
                }
                node_status_unlock(n);
            }
            if (!n->joined && join(n) != 0) {
                goto next;
            }
        }

        node_status_lock(n);
        ok = sync_device(n) == 0;
        if (ok && n->joined && n->have_peers && !n->self.hub) {
            ok = node_relay_start(n) == 0;
            if (node_relay_withdraw(n)) {
                n->joined = false;      /* joins again without the endpoint */
                /* which peers are direct follows this node's endpoint
                 * too: the whole set again, not only what the server
                 * changes */
                n->peers_synced = false;
                node_status_unlock(n);
                continue;
            }
        }
        node_status_unlock(n);
        if (n->joined && !n->reported) {
            enum api_result res = node_api_report(n);

            /* a refusal will not change by asking again */
            n->reported = res == API_OK || res == API_REFUSED;
            ok = ok && n->reported;
        }
        save_peers(n, false);
        /* while something is broken, come back soon (after the backoff);
         * with a set to save, in time to save it */
        rc = poll_once(n, !ok ? 0 : n->peers_dirty && n->cfg.poll_wait > PEERS_SAVE_MS / 1000
                          ? PEERS_SAVE_MS / 1000 : n->cfg.poll_wait);
        if (rc == 1) {
            return NODE_EXIT_REMOVED;
        }
        ok = ok && rc == 0;

    next:
        if (ok) {
            b.attempt = 0;
        } else if (!node_stopping()) {
            b.base_ms = BACKOFF_BASE_MS;
            if (n->have_peers && n->peers.n > BACKOFF_BASE_MS / SPREAD_MS_PER_PEER) {
                b.base_ms = n->peers.n * SPREAD_MS_PER_PEER;
            }
            backoff_wait(&b);
        }
    }
    save_peers(n, true);
    log_info("signal %d: stopping; %s stays as it is", (int) stop_signal,
             n->cfg.interface);
    return 0;
}


static int
node_run(struct vpc_node *n)
{
    struct sigaction  sa;
    const char       *dir = n->self.hub ? n->cfg.data_dir : n->cfg.state_dir;
    int               lock_fd, rc = 1;

    /* no SA_RESTART: a signal interrupts what blocks */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    http_client_set_cancel(&stop_signal);

    if (dir_ensure(dir, 0700) != 0) {
        log_error("cannot create %s: %s", dir, strerror(errno));
        return 1;
    }
    lock_fd = dir_lock(dir, n->self.hub ? HUB_LOCK_FILE : NODE_LOCK_FILE,
                       n->self.hub ? "dstack-ctld hub" : "dstack-ctld node");
    if (lock_fd < 0) {
        return 1;
    }
    if (!n->self.hub && node_key(n) != 0) {
        goto done;
    }
    if (names_start(n, dir) != 0) {
        goto done;
    }
    node_status_start(n);       /* a node without it still runs */
    log_info("dstack-ctld node%s starting: interface %s, backend %s, port %"
             PRIu64 "%s%s", n->self.hub ? " (hub)" : "", n->cfg.interface,
             n->cfg.backend, n->cfg.listen_port,
             n->self.hub ? "" : n->cfg.endpoint ? ", endpoint "
                              : ", no endpoint: reached through the hub",
             n->cfg.endpoint ? n->cfg.endpoint : "");
    rc = node_loop(n);

done:
    node_status_stop(n);        /* it reads the relay's transport */
    node_relay_stop(n);
    names_stop(n, dir);
    if (n->self.hub) {
        apply_hub_stop(n);
    }
    apply_close(n);             /* closes the handle; the interface stays */
    close(lock_fd);
    return rc;
}


int
node_main(int argc, char **argv)
{
    struct vpc_node  *n;
    int           rc;

    n = calloc(1, sizeof(*n));
    if (n == NULL) {
        return 1;
    }
    rc = node_config_load(&n->cfg, argc, argv);
    if (rc == 1) {
        node_usage(stdout);
        rc = 0;
    } else if (rc != 0 || node_config_apply(n) != 0) {
        rc = 2;
    } else {
        rc = node_run(n);
    }
    peer_set_free(&n->peers);
    free(n->hosts_block);
    node_config_free(n);
    OPENSSL_cleanse(n, sizeof(*n));
    free(n);
    return rc;
}
