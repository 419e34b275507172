/*
 * The test KMS CA: ca.crt and ca.key (mode 0600) in a directory that every
 * simulated CVM of one test shares.
 *
 * Simulators started at the same moment must end up with the same CA: the
 * directory itself is flock()ed while the CA is looked for and, if absent,
 * created.  Files are written to temporary names and renamed into place,
 * the key before the certificate, so a ca.crt that exists is always whole
 * and always has its key next to it.
 */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <openssl/pem.h>

#include "agent_sim.h"


#define SIM_CA_CN        "dstack-agent-sim test KMS CA"
#define SIM_CA_ORG       "dstack-vpc test"
#define SIM_CA_LIFETIME  (10 * 365 * 86400)


static int sim_ca_load(sim_ca_t *ca, const char *crt, const char *key);
static int sim_ca_create(sim_ca_t *ca, int dir_fd, const char *dir,
    const char *crt, const char *key);
static X509 *sim_ca_cert_new(EVP_PKEY *key);
static int sim_write_file(const char *dir, const char *path, const char *data,
    mode_t mode);
static int sim_write_all(int fd, const char *data, size_t len);


int
sim_ca_open(sim_ca_t *ca, const char *dir)
{
    int          fd, rc;
    char         crt[PATH_MAX], key[PATH_MAX];
    struct stat  st;

    ca->cert = NULL;
    ca->key = NULL;
    ca->pem = NULL;

    if ((size_t) snprintf(crt, sizeof(crt), "%s/ca.crt", dir) >= sizeof(crt)
        || (size_t) snprintf(key, sizeof(key), "%s/ca.key", dir)
           >= sizeof(key))
    {
        sim_log("CA directory path too long: %s", dir);
        return -1;
    }

    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        sim_log("mkdir %s: %s", dir, strerror(errno));
        return -1;
    }

    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd == -1) {
        sim_log("open %s: %s", dir, strerror(errno));
        return -1;
    }

    if (flock(fd, LOCK_EX) != 0) {
        sim_log("flock %s: %s", dir, strerror(errno));
        close(fd);
        return -1;
    }

    if (stat(crt, &st) == 0) {
        rc = sim_ca_load(ca, crt, key);

    } else if (errno == ENOENT) {
        /* a lone ca.key is the remnant of an interrupted creation */
        rc = sim_ca_create(ca, fd, dir, crt, key);

    } else {
        sim_log("stat %s: %s", crt, strerror(errno));
        rc = -1;
    }

    /* closing the descriptor releases the lock */
    close(fd);

    if (rc == 0) {
        ca->pem = sim_pem_cert(ca->cert);
        rc = (ca->pem != NULL) ? 0 : -1;
    }

    if (rc != 0) {
        sim_ca_free(ca);
    }

    return rc;
}


void
sim_ca_free(sim_ca_t *ca)
{
    X509_free(ca->cert);
    EVP_PKEY_free(ca->key);
    free(ca->pem);

    ca->cert = NULL;
    ca->key = NULL;
    ca->pem = NULL;
}


static int
sim_ca_load(sim_ca_t *ca, const char *crt, const char *key)
{
    BIO  *bio;

    bio = BIO_new_file(crt, "r");
    if (bio != NULL) {
        ca->cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        BIO_free(bio);
    }

    if (ca->cert == NULL) {
        sim_log_ssl("cannot read the CA certificate %s", crt);
        return -1;
    }

    bio = BIO_new_file(key, "r");
    if (bio != NULL) {
        ca->key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
        BIO_free(bio);
    }

    if (ca->key == NULL) {
        sim_log_ssl("cannot read the CA key %s", key);
        return -1;
    }

    if (!X509_check_private_key(ca->cert, ca->key)) {
        sim_log_ssl("%s does not match %s", key, crt);
        return -1;
    }

    if (X509_check_ca(ca->cert) == 0) {
        sim_log("%s is not a CA certificate", crt);
        return -1;
    }

    return 0;
}


static int
sim_ca_create(sim_ca_t *ca, int dir_fd, const char *dir, const char *crt,
    const char *key)
{
    int    rc;
    char  *key_pem, *crt_pem;

    ca->key = sim_key_new();
    if (ca->key == NULL) {
        return -1;
    }

    ca->cert = sim_ca_cert_new(ca->key);
    if (ca->cert == NULL) {
        sim_log_ssl("cannot build the CA certificate");
        return -1;
    }

    key_pem = sim_pem_key(ca->key);
    crt_pem = sim_pem_cert(ca->cert);

    rc = (key_pem != NULL && crt_pem != NULL
          && sim_write_file(dir, key, key_pem, 0600) == 0
          && sim_write_file(dir, crt, crt_pem, 0644) == 0)
         ? 0 : -1;

    /* make both renames durable before any leaf chains to this CA */

    if (rc == 0 && fsync(dir_fd) != 0) {
        sim_log("fsync %s: %s", dir, strerror(errno));
        rc = -1;
    }

    if (rc == 0) {
        sim_log("created the test CA in %s", dir);
    }

    free(key_pem);
    free(crt_pem);

    return rc;
}


static X509 *
sim_ca_cert_new(EVP_PKEY *key)
{
    X509        *cert;
    time_t       now;
    X509_NAME   *name;
    X509V3_CTX   ctx;

    name = X509_NAME_new();
    if (name == NULL
        || !X509_NAME_add_entry_by_NID(name, NID_organizationName,
                                       MBSTRING_UTF8,
                                       (const unsigned char *) SIM_CA_ORG,
                                       -1, -1, 0)
        || !X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
                                       (const unsigned char *) SIM_CA_CN,
                                       -1, -1, 0))
    {
        X509_NAME_free(name);
        return NULL;
    }

    now = time(NULL);
    cert = sim_cert_new(name, name, key, (int64_t) now - SIM_LEAF_BACKDATE,
                        (int64_t) now + SIM_CA_LIFETIME);
    X509_NAME_free(name);

    if (cert == NULL) {
        return NULL;
    }

    X509V3_set_ctx(&ctx, cert, cert, NULL, NULL, 0);

    if (!sim_cert_add_ext(cert, &ctx, NID_basic_constraints,
                          "critical,CA:TRUE")
        || !sim_cert_add_ext(cert, &ctx, NID_key_usage,
                             "critical,keyCertSign,cRLSign")
        || !sim_cert_add_ext(cert, &ctx, NID_subject_key_identifier, "hash")
        || X509_sign(cert, key, EVP_sha256()) <= 0)
    {
        X509_free(cert);
        return NULL;
    }

    return cert;
}


/* write "data" to "path" through a temporary file in "dir" and a rename */
static int
sim_write_file(const char *dir, const char *path, const char *data,
    mode_t mode)
{
    int    fd;
    char   tmp[PATH_MAX];

    if ((size_t) snprintf(tmp, sizeof(tmp), "%s/.ca.XXXXXX", dir)
        >= sizeof(tmp))
    {
        sim_log("CA directory path too long: %s", dir);
        return -1;
    }

    /* mkostemp creates the file 0600: the key is never readable by others */

    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd == -1) {
        sim_log("mkostemp %s: %s", tmp, strerror(errno));
        return -1;
    }

    if (fchmod(fd, mode) != 0
        || sim_write_all(fd, data, strlen(data)) != 0
        || fsync(fd) != 0)
    {
        sim_log("write %s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }

    if (close(fd) != 0) {
        sim_log("close %s: %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }

    if (rename(tmp, path) != 0) {
        sim_log("rename %s to %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        return -1;
    }

    return 0;
}


static int
sim_write_all(int fd, const char *data, size_t len)
{
    ssize_t  n;

    while (len > 0) {
        n = write(fd, data, len);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }

            return -1;
        }

        data += n;
        len -= (size_t) n;
    }

    return 0;
}
