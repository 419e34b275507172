/*
 * The server role's life cycle: data directory and its secrets, storage,
 * the writer and long-poll threads, the HTTP front end, and an orderly
 * stop on SIGINT/SIGTERM.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "lib/admin_token.h"
#include "lib/log.h"
#include "lib/wgkey.h"
#include "server/http.h"
#include "server/relay.h"
#include "server/server.h"

/* how long a stop waits for the requests in flight */
#define STOP_DRAIN_MS  5000


static int
data_path(const struct server *srv, const char *name, char *out, size_t outsz)
{
    if (snprintf(out, outsz, "%s/%s", srv->cfg.data_dir, name) >= (int) outsz) {
        log_error("data-dir path too long");
        return -1;
    }
    return 0;
}


/* the original's shared_key: 64 random bytes, base64, made once */
static int
load_shared_key(struct server *srv)
{
    char           path[PATH_MAX], text[256];
    unsigned char  raw[SHARED_KEY_BYTES];
    ssize_t        n;
    size_t         len;

    if (data_path(srv, "shared_key", path, sizeof(path)) != 0) {
        return -1;
    }
    n = file_read_small(path, text, sizeof(text));
    if (n < 0 && errno == ENOENT) {
        if (random_bytes(raw, sizeof(raw)) != 0) {
            return -1;
        }
        b64_encode(raw, sizeof(raw), srv->shared_key);
        OPENSSL_cleanse(raw, sizeof(raw));
        if (file_write_atomic(path, srv->shared_key, strlen(srv->shared_key), 0600) != 0) {
            log_error("cannot write %s: %s", path, strerror(errno));
            return -1;
        }
        log_info("generated the shared key %s", path);
        return 0;
    }
    if (n < 0) {
        log_error("cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    len = strcspn(text, "\r\n");
    if (b64_decode(text, len, raw, sizeof(raw), &len) != 0
        || len != SHARED_KEY_BYTES)
    {
        log_error("%s does not hold 64 base64 bytes", path);
        return -1;
    }
    b64_encode(raw, sizeof(raw), srv->shared_key);
    OPENSSL_cleanse(raw, sizeof(raw));
    OPENSSL_cleanse(text, sizeof(text));
    return 0;
}


/* descriptors the server needs besides its connections: the listen
 * socket, epoll, SQLite's files, logs */
#define FD_MARGIN  64

/* enough descriptors for max-connections long polls, or no start: past
 * the limit accept() fails and clients would see resets, not a 503 */
static int
raise_fd_limit(struct server *srv)
{
    struct rlimit  rl;
    uint64_t       need = srv->cfg.max_connections + FD_MARGIN;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < need) {
        log_error("the open file limit (%llu) is below max-connections + %d"
                  " (%" PRIu64 "): raise it (ulimit -n, LimitNOFILE=) or lower"
                  " --max-connections", (unsigned long long) rl.rlim_cur,
                  FD_MARGIN, need);
        return -1;
    }
    return 0;
}


/* the writer's disk failed: stop in order, and exit 1 for the supervisor */
static void
storage_failed(void *arg)
{
    struct server *srv = arg;

    atomic_store(&srv->storage_failed, true);
    kill(getpid(), SIGTERM);
}


/*
 * A database whose history does not provably continue what this data
 * directory handed out (restored by hand, copied in, or from before the
 * history file) gets a new epoch: nodes then take a snapshot instead of
 * applying a delta from another history.
 */
static int
history_check(struct server *srv)
{
    sqlite3   *db = srv->store.wdb;
    char       epoch[EPOCH_LEN + 1], why[160];
    uint64_t   version;

    if (history_open(&srv->history, srv->cfg.data_dir) != 0
        || meta_get_text(db, "epoch", epoch, sizeof(epoch)) != 0
        || meta_get_int(db, "version", &version) != 0)
    {
        return -1;
    }
    if (!history_continues(&srv->history, epoch, version, srv->store.created,
                           why, sizeof(why)))
    {
        if (store_rotate_epoch(db, epoch) != 0) {
            return -1;
        }
        log_warn("the peer-set history cannot be proven continuous (%s):"
                 " new epoch %s, every node will take a snapshot", why, epoch);
    }
    history_note(&srv->history, epoch, version, true);
    srv->reg.history = &srv->history;
    return 0;
}


static int
server_run(struct server *srv)
{
    char                 path[PATH_MAX];
    struct writer_hooks  hooks;
    sigset_t             stop_signals;
    int                  sig, lock_fd, rc = 1;
    unsigned             every;

    /*
     * Peer snapshots and discovery answers are built and freed whole, a few
     * MB with 10 000 nodes; by default glibc gives such memory back to the
     * kernel at once and faults it in again on the next request, which
     * costs more than building the JSON.  Keep up to 64 MB around instead.
     */
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);

    /* the database and its WAL hold token hashes: nobody else reads them */
    umask(077);
    if (dir_ensure(srv->cfg.data_dir, 0700) != 0) {
        log_error("cannot create %s: %s", srv->cfg.data_dir, strerror(errno));
        return 1;
    }
    /* one server per data directory */
    lock_fd = dir_lock(srv->cfg.data_dir, "lock", "dstack-ctld server");
    if (lock_fd < 0 || load_shared_key(srv) != 0 || admin_token_load_or_create(srv->cfg.data_dir,
                                      srv->admin_token_hash) != 0
        || data_path(srv, "wg.key", path, sizeof(path)) != 0
        || wgkey_load_or_create(path, NULL, srv->reg.hub_public_key) != 0
        || relay_init(srv) != 0
        || data_path(srv, "ctld.db", path, sizeof(path)) != 0)
    {
        return 1;
    }

    /* stop signals are taken by sigwait() below; every thread inherits
     * the mask, so none of them is interrupted by one */
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (raise_fd_limit(srv) != 0) {
        goto done;
    }

    srv->history.fd = -1;
    if (store_open(&srv->store, path) != 0
        || history_check(srv) != 0
        || registry_open(&srv->reg, srv->store.wdb, srv->pool_base,
                         srv->pool_prefix, srv->hub_addr) != 0)
    {
        goto done;
    }
    srv->reg.longpoll = longpoll_start(atomic_load(&srv->reg.version),
                                       (unsigned) srv->cfg.max_polls_per_token);
    srv->reg.answers = answer_cache_new();
    if (srv->reg.longpoll == NULL || srv->reg.answers == NULL) {
        goto done;
    }

    /* housekeeping often enough that a short tombstone-ttl is honoured */
    every = srv->cfg.tombstone_ttl / 2 < 60 ? (unsigned) srv->cfg.tombstone_ttl / 2 : 60;
    hooks = (struct writer_hooks) {
        .arg = &srv->reg,
        .committed = registry_committed,
        .aborted = registry_aborted,
        .maintain = registry_maintain,
        .maintain_every_ms = (every ? every : 1) * 1000,
        .failed = storage_failed,
        .failed_arg = srv,
    };
    srv->writer = writer_start(srv->store.wdb, &hooks);
    if (srv->writer == NULL || http_start(srv) != 0) {
        goto done;
    }

    log_info("dstack-ctld server listening on %s; pool %s, hub %s (%s),"
             " peer version %" PRIu64 ", %" PRIu64 " nodes, epoch %s",
             srv->cfg.listen, srv->reg.pool_cidr, srv->reg.hub_address,
             srv->reg.hub_public_key, atomic_load(&srv->reg.version),
             atomic_load(&srv->reg.nodes), srv->reg.epoch);

    do {
        if (sigwait(&stop_signals, &sig) != 0) {
            sig = SIGTERM;
        }
    } while (sig != SIGINT && sig != SIGTERM);
    if (atomic_load(&srv->storage_failed)) {
        log_error("stopping: the database's disk failed; a restart recovers"
                  " what was committed");
    } else {
        log_info("signal %d: stopping", sig);
        rc = 0;
    }

done:
    /*
     * Order matters.  No new connection is accepted; parked polls are
     * woken and no new one parks; the writer runs what is queued
     * (resuming those requests) and refuses more, so no connection stays
     * suspended.  Requests already begun are answered (within a bound),
     * and only once libmicrohttpd's threads are gone is the state they
     * use freed.
     */
    http_quiesce(srv);
    relay_shutdown(srv);
    if (srv->reg.longpoll != NULL) {
        longpoll_shutdown(srv->reg.longpoll);
    }
    if (srv->writer != NULL) {
        writer_stop(srv->writer);
    }
    http_drain(srv, STOP_DRAIN_MS);
    http_stop(srv);
    if (srv->writer != NULL) {
        writer_free(srv->writer);
    }
    if (srv->reg.longpoll != NULL) {
        longpoll_free(srv->reg.longpoll);
    }
    answer_cache_free(srv->reg.answers);
    history_close(&srv->history);
    registry_close(&srv->reg);
    store_close(&srv->store);
    if (lock_fd >= 0) {
        close(lock_fd);
    }
    return rc;
}


int
server_main(int argc, char **argv)
{
    struct server  *srv;
    char           *extra[1];
    int             npos, rc;

    srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        return 1;
    }
    rc = server_config_load(&srv->cfg, argc, argv, extra, 1, &npos);
    if (rc == 1) {
        server_usage(stdout);
        rc = 0;
    } else if (rc != 0 || npos != 0) {
        if (npos != 0) {
            fprintf(stderr, "server: unexpected argument \"%s\"\n", extra[0]);
        }
        rc = 2;
    } else if (server_config_apply(srv) != 0) {
        rc = 2;
    } else {
        rc = server_run(srv);
    }
    server_config_free(srv);
    free(srv);
    return rc;
}
