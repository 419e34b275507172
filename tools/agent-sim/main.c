/*
 * dstack-agent-sim: the command line, the identity of the simulated CVM,
 * the unix socket, and the wait for SIGTERM or SIGINT.
 */

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/err.h>

#include "agent_sim.h"


#define SIM_INSTANCE_ID_LEN  20     /* bytes, as the real agent's */
#define SIM_DEVICE_ID_LEN    32


typedef struct {
    const char  *socket_path;
    const char  *ca_dir;
    const char  *app_id;
    const char  *instance_id;
    const char  *app_name;
    const char  *validity;
} sim_args_t;


static int sim_args_parse(sim_args_t *args, int argc, char **argv);
static int sim_app_init(sim_app_t *app, const sim_args_t *args);
static int sim_seconds(const char *text, int64_t *out);
static int sim_hex_id(const char *text, const char *option, char *out);
static int sim_derive_id(char *out, size_t len, const char *what,
    const char *a, const char *b);
static void sim_hex(const unsigned char *in, size_t len, char *out);
static int sim_listen(const char *path);
static int sim_socket_free(const char *path);


static const char  sim_usage[] =
    "usage: " SIM_NAME " --socket PATH --ca-dir DIR --app-id HEX\n"
    "           [--instance-id HEX] [--app-name NAME] [--validity SECONDS]\n"
    "\n"
    "A stand-in for the dstack guest agent: serves /Info and /GetTlsKey on\n"
    "a unix socket and issues P-256 certificates carrying the app_id\n"
    "extension, signed by a test KMS CA.  Test use only.\n"
    "\n"
    "  -s, --socket PATH      unix socket to serve on (mode 0660); the path\n"
    "                         appears once connections are accepted\n"
    "  -c, --ca-dir DIR       test CA directory (ca.crt, ca.key), created on\n"
    "                         first use; simulators may share one\n"
    "  -a, --app-id HEX       app id, an even number of hex digits\n"
    "  -i, --instance-id HEX  instance id; default: derived from the app id\n"
    "                         and the socket path\n"
    "  -n, --app-name NAME    app name, the default certificate subject;\n"
    "                         default: the app id\n"
    "  -v, --validity SECONDS leaves valid from now for SECONDS (1 to\n"
    "                         31536000) unless the request says; default:\n"
    "                         from an hour ago for 365 days\n"
    "  -h, --help             show this text\n"
    "\n"
    "Runs in the foreground, logs to stderr, stops on SIGTERM or SIGINT.\n"
    "Exit status: 0 after a signal, 1 on failure, 2 on a usage error.\n";

static const struct option  sim_options[] = {
    { "socket", required_argument, NULL, 's' },
    { "ca-dir", required_argument, NULL, 'c' },
    { "app-id", required_argument, NULL, 'a' },
    { "instance-id", required_argument, NULL, 'i' },
    { "app-name", required_argument, NULL, 'n' },
    { "validity", required_argument, NULL, 'v' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
};


int
main(int argc, char **argv)
{
    int                 fd, rc, sig;
    sigset_t            stop;
    sim_ca_t            ca;
    sim_app_t           app;
    sim_args_t          args;
    sim_server_t        srv;
    struct sigaction    sa;
    struct MHD_Daemon  *daemon;

    rc = sim_args_parse(&args, argc, argv);
    if (rc != -1) {
        return rc;
    }

    memset(&ca, 0, sizeof(ca));
    memset(&srv, 0, sizeof(srv));

    if (sim_app_init(&app, &args) != 0) {
        X509_NAME_free(app.subject);
        return 2;
    }

    /*
     * sigwait() below takes SIGTERM and SIGINT: they are blocked before the
     * HTTP thread exists so that it inherits the mask.  A client hanging up
     * must never kill the simulator, hence SIGPIPE is ignored.
     */

    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;

    rc = 1;

    if (pthread_sigmask(SIG_BLOCK, &stop, NULL) != 0
        || sigaction(SIGPIPE, &sa, NULL) != 0)
    {
        sim_log("cannot set up signals");
        goto done;
    }

    if (sim_ca_open(&ca, args.ca_dir) != 0
        || sim_server_init(&srv, &app, &ca) != 0)
    {
        goto done;
    }

    fd = sim_listen(args.socket_path);
    if (fd == -1) {
        goto done;
    }

    daemon = sim_http_start(fd, &srv);
    if (daemon == NULL) {
        close(fd);
        unlink(args.socket_path);
        goto done;
    }

    sim_log("serving app %s (%s), instance %s, on %s", app.app_id_hex,
            app.app_name, app.instance_id_hex, args.socket_path);

    if (sigwait(&stop, &sig) == 0) {
        sim_log("%s, exiting", strsignal(sig));
        rc = 0;
    }

    /* closes the listening socket too */
    MHD_stop_daemon(daemon);

    if (unlink(args.socket_path) != 0) {
        sim_log("unlink %s: %s", args.socket_path, strerror(errno));
    }

done:

    sim_server_free(&srv);
    sim_ca_free(&ca);
    X509_NAME_free(app.subject);

    return rc;
}


/* -1 to go on, or the exit status */
static int
sim_args_parse(sim_args_t *args, int argc, char **argv)
{
    int  opt;

    memset(args, 0, sizeof(*args));

    while ((opt = getopt_long(argc, argv, "s:c:a:i:n:v:h", sim_options, NULL))
           != -1)
    {
        switch (opt) {
        case 's':
            args->socket_path = optarg;
            break;
        case 'c':
            args->ca_dir = optarg;
            break;
        case 'a':
            args->app_id = optarg;
            break;
        case 'i':
            args->instance_id = optarg;
            break;
        case 'n':
            args->app_name = optarg;
            break;
        case 'v':
            args->validity = optarg;
            break;
        case 'h':
            fputs(sim_usage, stdout);
            return 0;
        default:
            /* getopt has said what is wrong */
            fprintf(stderr, "try '" SIM_NAME " --help'\n");
            return 2;
        }
    }

    if (optind < argc) {
        sim_log("unexpected argument: %s", argv[optind]);
        return 2;
    }

    if (args->socket_path == NULL || args->ca_dir == NULL
        || args->app_id == NULL)
    {
        sim_log("--socket, --ca-dir and --app-id are required (see --help)");
        return 2;
    }

    return -1;
}


static int
sim_app_init(sim_app_t *app, const sim_args_t *args)
{
    char  host[256];

    memset(app, 0, sizeof(*app));

    if (sim_hex_id(args->app_id, "--app-id", app->app_id_hex) != 0) {
        return -1;
    }

    if (!OPENSSL_hexstr2buf_ex(app->app_id, sizeof(app->app_id),
                               &app->app_id_len, app->app_id_hex, '\0'))
    {
        sim_log_ssl("--app-id: cannot decode");
        return -1;
    }

    if (args->instance_id != NULL) {
        if (sim_hex_id(args->instance_id, "--instance-id",
                       app->instance_id_hex) != 0)
        {
            return -1;
        }

    } else if (sim_derive_id(app->instance_id_hex, SIM_INSTANCE_ID_LEN,
                             "instance", app->app_id_hex, args->socket_path)
               != 0)
    {
        return -1;
    }

    /* one "device" per machine, as simulated CVMs share their host */

    if (gethostname(host, sizeof(host)) != 0) {
        sim_log("gethostname: %s", strerror(errno));
        return -1;
    }

    host[sizeof(host) - 1] = '\0';

    if (sim_derive_id(app->device_id_hex, SIM_DEVICE_ID_LEN, "device", host,
                      "") != 0)
    {
        return -1;
    }

    if (args->validity != NULL && sim_seconds(args->validity, &app->validity)
                                  != 0)
    {
        sim_log("--validity: expected 1 to %d seconds", SIM_LEAF_LIFETIME);
        return -1;
    }

    app->app_name = (args->app_name != NULL) ? args->app_name
                                              : app->app_id_hex;

    app->subject = sim_name_cn(app->app_name, strlen(app->app_name));
    if (app->subject == NULL) {
        ERR_clear_error();
        sim_log("--app-name: must be 1 to 64 characters of UTF-8");
        return -1;
    }

    return 0;
}


/* a whole number of seconds, 1..SIM_LEAF_LIFETIME */
static int
sim_seconds(const char *text, int64_t *out)
{
    char       *end;
    long long   v;

    errno = 0;
    v = strtoll(text, &end, 10);

    if (errno != 0 || end == text || *end != '\0' || text[0] == '-'
        || text[0] == '+' || v < 1 || v > SIM_LEAF_LIFETIME)
    {
        return -1;
    }

    *out = v;

    return 0;
}


/* a hex id as given on the command line, checked and lowercased */
static int
sim_hex_id(const char *text, const char *option, char *out)
{
    size_t  i, len;

    len = strlen(text);

    if (!app_id_parse(text, len, APP_ID_HEX_MAX, NULL)) {
        sim_log("%s: expected an even number (2 to %d) of hex digits",
                option, APP_ID_HEX_MAX);
        return -1;
    }

    for (i = 0; i < len; i++) {
        out[i] = (text[i] >= 'A' && text[i] <= 'F') ? text[i] - 'A' + 'a'
                                                    : text[i];
    }

    out[len] = '\0';

    return 0;
}


/* the first "len" bytes of SHA-256 over a labelled input, in hex */
static int
sim_derive_id(char *out, size_t len, const char *what, const char *a,
    const char *b)
{
    int            n;
    char           input[512];
    size_t         md_len;
    unsigned char  md[EVP_MAX_MD_SIZE];

    n = snprintf(input, sizeof(input), SIM_NAME " %s\n%s\n%s", what, a, b);
    if (n < 0 || (size_t) n >= sizeof(input)) {
        sim_log("cannot derive the %s id: input too long", what);
        return -1;
    }

    if (!EVP_Q_digest(NULL, "SHA256", NULL, input, (size_t) n, md, &md_len)
        || md_len < len)
    {
        sim_log_ssl("cannot derive the %s id", what);
        return -1;
    }

    sim_hex(md, len, out);

    return 0;
}


static void
sim_hex(const unsigned char *in, size_t len, char *out)
{
    size_t             i;
    static const char  digits[] = "0123456789abcdef";

    for (i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }

    out[2 * len] = '\0';
}


/*
 * The socket is bound under a temporary name and renamed into place once
 * it listens: whoever sees the path can connect, and a stale socket of a
 * dead simulator is replaced atomically.
 */
static int
sim_listen(const char *path)
{
    int                 fd, n, rc;
    mode_t              mask;
    struct sockaddr_un  sa;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;

    n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s.%ld", path,
                 (long) getpid());
    if (n < 0 || (size_t) n >= sizeof(sa.sun_path)) {
        sim_log("socket path too long: %s", path);
        return -1;
    }

    if (sim_socket_free(path) != 0) {
        return -1;
    }

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        sim_log("socket: %s", strerror(errno));
        return -1;
    }

    /* a leftover of an earlier process that had our pid; usually absent */
    (void) unlink(sa.sun_path);

    /* bind() creates the path: set its mode 0660 without a chmod() race */

    mask = umask(0117);
    rc = bind(fd, (struct sockaddr *) &sa, sizeof(sa));
    umask(mask);

    if (rc != 0) {
        sim_log("bind %s: %s", sa.sun_path, strerror(errno));
        close(fd);
        return -1;
    }

    if (listen(fd, SOMAXCONN) != 0 || rename(sa.sun_path, path) != 0) {
        sim_log("listen on %s: %s", path, strerror(errno));
        unlink(sa.sun_path);
        close(fd);
        return -1;
    }

    return fd;
}


/* refuse a path that is not a socket or where a live server answers */
static int
sim_socket_free(const char *path)
{
    int                 fd, rc, err;
    struct stat         st;
    struct sockaddr_un  sa;

    if (lstat(path, &st) != 0) {
        if (errno == ENOENT) {
            return 0;
        }

        sim_log("stat %s: %s", path, strerror(errno));
        return -1;
    }

    if (!S_ISSOCK(st.st_mode)) {
        sim_log("%s exists and is not a socket", path);
        return -1;
    }

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        sim_log("socket: %s", strerror(errno));
        return -1;
    }

    /* the caller has checked that the path fits */

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path));

    rc = connect(fd, (struct sockaddr *) &sa, sizeof(sa));
    err = errno;
    close(fd);

    if (rc == 0) {
        sim_log("%s: another server is answering there", path);
        return -1;
    }

    if (err != ECONNREFUSED) {
        sim_log("connect %s: %s", path, strerror(err));
        return -1;
    }

    return 0;
}
