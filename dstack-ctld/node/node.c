/*
 * The node role's life cycle: who we are, joining (or resuming with the
 * saved token), then one loop: keep the interface configured, report to
 * the original discovery API, long-poll the server and apply what it
 * says.  Any failure is retried with capped exponential backoff and full
 * jitter; no failure tears the interface down.  SIGTERM stops the loop
 * and leaves the interface as it is, for the next start to resume.
 *
 * Restart with a saved token: the node does not join again, it polls
 * from version 0 and applies the snapshot as a diff (wg_replace_peers
 * keeps every peer that stays, and its session).  Joining again would
 * cost the server a durable write and bump the peer-set version for
 * every other node, for nothing.  It joins again only when the saved
 * join no longer fits (another key, endpoint, name, instance or server)
 * or the server keeps refusing the token (401: a replaced database).
 *
 * Only the server's 410 (this node was removed) ends the node; a 401 can
 * be nginx's (a certificate rotation, a misconfiguration) and is retried.
 * The last peer set is saved (node.peers) and applied at start, so a node
 * rebooted while the server is away comes back with its tunnels.
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


static int handle_answer(struct vpc_node *n, json_t *answer);

/* the saved peer set, checked like an answer, until the server answers */
static void
resume_peers(struct vpc_node *n)
{
    json_t  *saved = node_peers_load(n->cfg.state_dir, n->state.node_id);

    if (saved != NULL && handle_answer(n, saved) == 0) {
        log_info("the saved peer set (version %" PRIu64 ", %zu members) in"
                 " place until the server answers", n->peers.version, n->peers.n);
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
    int              rc = -1;

    res = node_api_register(n, key);
    if (res != API_OK) {
        return -1;
    }
    res = node_api_join(n, key, &answer);
    OPENSSL_cleanse(key, sizeof(key));
    if (res != API_OK) {
        return -1;
    }

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

    peer_set_free(&n->peers);
    n->have_peers = false;
    adopt_state(n);
    n->refused = 0;
    rc = 0;
    handle_answer(n, answer);   /* a refused peer set comes again by poll */

done:
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

    if (strcmp(n->cfg.hosts_file, "none") == 0 || !n->have_peers) {
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


static int
handle_answer(struct vpc_node *n, json_t *answer)
{
    struct peer_set   next;
    struct wg_peer   *eff;
    size_t            n_eff;
    bool              pool_changed, snapshot, changed;

    /* a delta follows only the version asked from: none after a refusal */
    if (peer_set_next(n->have_peers && !n->want_snapshot ? &n->peers : NULL,
                      answer, &n->self, &next, &pool_changed) != 0)
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
    snapshot = json_is_true(json_object_get(answer, "snapshot"));
    if (n->self.hub) {
        hub_self(n, &next);
    } else if (snapshot && !n->self.has_endpoint && !next.v[0].reachable) {
        log_warn("neither the hub nor this node has an endpoint: no tunnel"
                 " can form (give the server --wg-endpoint)");
    }
    if (peer_set_effective(&next, &n->self, &eff, &n_eff) != 0) {
        peer_set_free(&next);
        return -1;
    }
    node_relay_adjust(n, &next, eff, &n_eff);

    if (n->dev_up) {
        if (snapshot || !n->peers_synced) {
            apply_snapshot(n, eff, n_eff);
        } else {
            apply_delta(n, eff, n_eff);
        }
    } else {
        n->peers_synced = false;    /* set with the device (a new address) */
    }
    changed = !n->have_peers || next.version != n->peers.version
              || strcmp(next.epoch, n->peers.epoch) != 0;
    /* what the device should have, whether or not it has it yet */
    free(n->eff);
    n->eff = eff;
    n->n_eff = n_eff;
    peer_set_free(&n->peers);
    n->peers = next;
    n->have_peers = true;
    n->want_snapshot = false;
    log_write(snapshot ? LOG_LEVEL_INFO : LOG_LEVEL_DEBUG,
              "peer set version %" PRIu64 " (%s): %zu members, %zu WireGuard"
              " peers", n->peers.version, snapshot ? "snapshot" : "delta",
              n->peers.n, n->n_eff);
    if (changed && !n->self.hub) {
        /* a node that cannot save it still works; it waits for the
         * server after a restart */
        node_peers_save(n->cfg.state_dir, n->state.node_id, &n->peers);
    }
    update_hosts(n);
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
    if (n->have_peers && !n->peers_synced
        && apply_snapshot(n, n->eff, n->n_eff) != 0)
    {
        return -1;
    }
    return 0;
}


/* --- the loop --- */

/* one poll and what follows from it: 0 ok, -1 try again, 1 removed */
static int
poll_once(struct vpc_node *n, uint64_t wait)
{
    json_t          *answer = NULL;
    enum api_result  res;
    int              rc;

    res = node_api_poll(n, wait, &answer);
    switch (res) {
    case API_OK:
        n->refused = 0;
        rc = handle_answer(n, answer);
        json_decref(answer);
        return rc;

    case API_GONE:
        if (n->self.hub) {
            return -1;          /* not an answer to the admin token */
        }
        node_state_forget(n->cfg.state_dir);
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
                identified = hub_secrets(n) == 0;
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
                if (resume(n) < 0) {
                    node_state_forget(n->cfg.state_dir);
                }
            }
            if (!n->joined && join(n) != 0) {
                goto next;
            }
        }

        ok = sync_device(n) == 0;
        if (ok && n->joined && n->have_peers && !n->self.hub) {
            ok = node_relay_start(n) == 0;
            if (node_relay_withdraw(n)) {
                n->joined = false;      /* joins again without the endpoint */
                continue;
            }
        }
        if (n->joined && !n->reported) {
            enum api_result res = node_api_report(n);

            /* a refusal will not change by asking again */
            n->reported = res == API_OK || res == API_REFUSED;
            ok = ok && n->reported;
        }
        /* while something is broken, come back soon (after the backoff) */
        rc = poll_once(n, ok ? n->cfg.poll_wait : 0);
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
    log_info("dstack-ctld node%s starting: interface %s, backend %s, port %"
             PRIu64 "%s%s", n->self.hub ? " (hub)" : "", n->cfg.interface,
             n->cfg.backend, n->cfg.listen_port,
             n->self.hub ? "" : n->cfg.endpoint ? ", endpoint "
                              : ", no endpoint: reached through the hub",
             n->cfg.endpoint ? n->cfg.endpoint : "");
    rc = node_loop(n);

done:
    node_relay_stop(n);
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
    free(n->eff);
    free(n->hosts_block);
    node_config_free(n);
    OPENSSL_cleanse(n, sizeof(*n));
    free(n);
    return rc;
}
