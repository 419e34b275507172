/*
 * GetTlsKey arguments, from a JSON body or from query-string pairs, checked
 * into a sim_tls_req_t.  Functions return 0, or the HTTP status to answer
 * (400 for the client's mistakes, 500 for ours) with the reason in "err".
 *
 * Unknown fields are ignored, as the real agent ignores them, but logged so
 * that a misspelt field does not pass unnoticed.
 */

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/err.h>

#include "agent_sim.h"
#include "parse.h"


typedef enum {
    SIM_FIELD_SUBJECT,
    SIM_FIELD_ALT_NAMES,
    SIM_FIELD_BOOL,
    SIM_FIELD_TIME
} sim_field_kind_t;

typedef struct {
    const char        *name;
    sim_field_kind_t   kind;
    size_t             offset;      /* of the member, for BOOL and TIME */
    const char        *json_type;   /* for the error on a wrong type */
} sim_field_t;

static const sim_field_t  sim_fields[] = {
    { "subject", SIM_FIELD_SUBJECT, 0, "a string" },
    { "alt_names", SIM_FIELD_ALT_NAMES, 0, "an array of strings" },
    { "usage_ra_tls", SIM_FIELD_BOOL,
      offsetof(sim_tls_req_t, usage_ra_tls), "a boolean" },
    { "usage_server_auth", SIM_FIELD_BOOL,
      offsetof(sim_tls_req_t, usage_server_auth), "a boolean" },
    { "usage_client_auth", SIM_FIELD_BOOL,
      offsetof(sim_tls_req_t, usage_client_auth), "a boolean" },
    { "not_before", SIM_FIELD_TIME,
      offsetof(sim_tls_req_t, not_before), "an integer (unix seconds)" },
    { "not_after", SIM_FIELD_TIME,
      offsetof(sim_tls_req_t, not_after), "an integer (unix seconds)" },
};

#define SIM_NFIELDS  (sizeof(sim_fields) / sizeof(sim_fields[0]))


static const sim_field_t *sim_field_find(const char *name, size_t len);
static int sim_field_json(sim_tls_req_t *req, const sim_field_t *f,
    json_t *value, char *err, size_t err_size);
static int sim_alt_names_text(sim_tls_req_t *req, const char *value,
    size_t len, char *err, size_t err_size);
static int sim_set_subject(sim_tls_req_t *req, const char *s, size_t len,
    char *err, size_t err_size);
static int sim_add_alt_name(sim_tls_req_t *req, const char *s, size_t len,
    char *err, size_t err_size);
static int sim_dns_name_valid(const char *s, size_t len);
static int sim_set_time(const sim_field_t *f, int64_t *field, long long t,
    char *err, size_t err_size);
static int sim_parse_bool(const char *s, size_t len, int *out);
static int sim_parse_time(const char *s, size_t len, long long *out);
static int sim_fail(int status, char *err, size_t err_size,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));


void
sim_tls_req_init(sim_tls_req_t *req)
{
    memset(req, 0, sizeof(*req));
    req->not_before = SIM_TIME_UNSET;
    req->not_after = SIM_TIME_UNSET;
}


void
sim_tls_req_free(sim_tls_req_t *req)
{
    X509_NAME_free(req->subject);
    GENERAL_NAMES_free(req->alt_names);
    req->subject = NULL;
    req->alt_names = NULL;
}


int
sim_tls_req_json(sim_tls_req_t *req, const char *body, size_t len,
    char *err, size_t err_size)
{
    int                 rc;
    json_t             *root, *value;
    const char         *key;
    json_error_t        jerr;
    const sim_field_t  *f;

    /* jansson refuses \u0000 in strings unless told otherwise */

    root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        return sim_fail(400, err, err_size, "malformed JSON: %s", jerr.text);
    }

    if (!json_is_object(root)) {
        json_decref(root);
        return sim_fail(400, err, err_size, "the body must be a JSON object");
    }

    rc = 0;

    json_object_foreach(root, key, value) {
        f = sim_field_find(key, strlen(key));

        if (f == NULL) {
            sim_log("GetTlsKey: ignoring unknown field \"%.64s\"", key);
            continue;
        }

        /* null is taken for an absent field */

        if (json_is_null(value)) {
            continue;
        }

        rc = sim_field_json(req, f, value, err, err_size);
        if (rc != 0) {
            break;
        }
    }

    json_decref(root);
    return rc;
}


static int
sim_field_json(sim_tls_req_t *req, const sim_field_t *f, json_t *value,
    char *err, size_t err_size)
{
    int      rc;
    size_t   i;
    json_t  *item;
    char    *member;

    member = (char *) req + f->offset;

    switch (f->kind) {

    case SIM_FIELD_SUBJECT:
        if (!json_is_string(value)) {
            break;
        }

        return sim_set_subject(req, json_string_value(value),
                               json_string_length(value), err, err_size);

    case SIM_FIELD_ALT_NAMES:
        if (!json_is_array(value)) {
            break;
        }

        json_array_foreach(value, i, item) {
            if (!json_is_string(item)) {
                return sim_fail(400, err, err_size,
                                "alt_names: expected an array of strings");
            }

            rc = sim_add_alt_name(req, json_string_value(item),
                                  json_string_length(item), err, err_size);
            if (rc != 0) {
                return rc;
            }
        }

        return 0;

    case SIM_FIELD_BOOL:
        if (!json_is_boolean(value)) {
            break;
        }

        *(int *) member = json_is_true(value);
        return 0;

    case SIM_FIELD_TIME:
        if (!json_is_integer(value)) {
            break;
        }

        return sim_set_time(f, (int64_t *) member, json_integer_value(value),
                            err, err_size);
    }

    return sim_fail(400, err, err_size, "%s: expected %s", f->name,
                    f->json_type);
}


/*
 * One query-string pair.  alt_names may repeat and may hold a comma
 * separated list; every other field may be given once.
 */
int
sim_tls_req_arg(sim_tls_req_t *req, const char *key, size_t key_len,
    const char *value, size_t len, char *err, size_t err_size)
{
    int                 rc;
    char               *member;
    unsigned            bit;
    long long           t;
    const sim_field_t  *f;

    f = sim_field_find(key, key_len);
    if (f == NULL) {
        sim_log("GetTlsKey: ignoring unknown argument \"%.64s\"", key);
        return 0;
    }

    if (value == NULL) {
        value = "";
        len = 0;
    }

    bit = 1u << (f - sim_fields);

    if ((req->seen & bit) && f->kind != SIM_FIELD_ALT_NAMES) {
        return sim_fail(400, err, err_size, "%s: given more than once",
                        f->name);
    }

    req->seen |= bit;
    member = (char *) req + f->offset;
    rc = 0;

    switch (f->kind) {

    case SIM_FIELD_SUBJECT:
        rc = sim_set_subject(req, value, len, err, err_size);
        break;

    case SIM_FIELD_ALT_NAMES:
        rc = sim_alt_names_text(req, value, len, err, err_size);
        break;

    case SIM_FIELD_BOOL:
        if (sim_parse_bool(value, len, (int *) member) != 0) {
            rc = sim_fail(400, err, err_size,
                          "%s: expected true, false, 1 or 0", f->name);
        }

        break;

    case SIM_FIELD_TIME:
        rc = (sim_parse_time(value, len, &t) == 0)
             ? sim_set_time(f, (int64_t *) member, t, err, err_size)
             : sim_fail(400, err, err_size, "%s: expected %s", f->name,
                        f->json_type);
        break;
    }

    return rc;
}


int
sim_tls_req_finish(sim_tls_req_t *req, const sim_app_t *app, int64_t now,
    char *err, size_t err_size)
{
    /* --validity: short-lived leaves for rotation tests, not backdated */

    if (req->not_before == SIM_TIME_UNSET) {
        req->not_before = app->validity ? now : now - SIM_LEAF_BACKDATE;
    }

    if (req->not_after == SIM_TIME_UNSET) {
        req->not_after = now + (app->validity ? app->validity
                                              : SIM_LEAF_LIFETIME);
    }

    if (req->not_after <= req->not_before) {
        return sim_fail(400, err, err_size,
                        "not_after must be later than not_before");
    }

    return 0;
}


static const sim_field_t *
sim_field_find(const char *name, size_t len)
{
    size_t  i;

    for (i = 0; i < SIM_NFIELDS; i++) {
        if (strlen(sim_fields[i].name) == len
            && memcmp(sim_fields[i].name, name, len) == 0)
        {
            return &sim_fields[i];
        }
    }

    return NULL;
}


/* empty pieces ("a,,b", a trailing comma) are skipped */
static int
sim_alt_names_text(sim_tls_req_t *req, const char *value, size_t len,
    char *err, size_t err_size)
{
    int          rc;
    const char  *p, *end, *comma;

    p = value;
    end = value + len;

    while (p < end) {
        comma = memchr(p, ',', (size_t) (end - p));
        if (comma == NULL) {
            comma = end;
        }

        if (comma > p) {
            rc = sim_add_alt_name(req, p, (size_t) (comma - p), err,
                                  err_size);
            if (rc != 0) {
                return rc;
            }
        }

        p = comma + 1;
    }

    return 0;
}


/* an empty subject means the default, the app name */
static int
sim_set_subject(sim_tls_req_t *req, const char *s, size_t len, char *err,
    size_t err_size)
{
    if (len == 0) {
        return 0;
    }

    X509_NAME_free(req->subject);

    req->subject = sim_name_cn(s, len);
    if (req->subject == NULL) {
        ERR_clear_error();
        return sim_fail(400, err, err_size,
                        "subject: must be 1 to 64 characters of UTF-8");
    }

    return 0;
}


/* an IPv4 or IPv6 address becomes an iPAddress, anything else a dNSName */
static int
sim_add_alt_name(sim_tls_req_t *req, const char *s, size_t len, char *err,
    size_t err_size)
{
    int             type, n;
    char            name[SIM_DNS_NAME_MAX + 1];
    ASN1_STRING    *value;
    GENERAL_NAME   *gen;
    unsigned char   ip[16];

    if (req->alt_names != NULL
        && sk_GENERAL_NAME_num(req->alt_names) >= SIM_ALT_NAMES_MAX)
    {
        return sim_fail(400, err, err_size, "alt_names: more than %d names",
                        SIM_ALT_NAMES_MAX);
    }

    if (len == 0 || len > SIM_DNS_NAME_MAX || memchr(s, '\0', len) != NULL) {
        return sim_fail(400, err, err_size,
                        "alt_names: empty, too long or holding NUL");
    }

    memcpy(name, s, len);
    name[len] = '\0';

    if (inet_pton(AF_INET, name, ip) == 1) {
        type = GEN_IPADD;
        n = 4;

    } else if (inet_pton(AF_INET6, name, ip) == 1) {
        type = GEN_IPADD;
        n = 16;

    } else if (sim_dns_name_valid(name, len)) {
        type = GEN_DNS;
        n = (int) len;

    } else {
        return sim_fail(400, err, err_size,
                        "alt_names: \"%.64s\" is neither a DNS name nor an "
                        "IP address", name);
    }

    value = (type == GEN_IPADD) ? ASN1_OCTET_STRING_new()
                                : ASN1_IA5STRING_new();

    if (value == NULL
        || !ASN1_STRING_set(value, (type == GEN_IPADD) ? (void *) ip
                                                       : (void *) name, n))
    {
        ASN1_STRING_free(value);
        return sim_fail(500, err, err_size, "out of memory");
    }

    gen = GENERAL_NAME_new();
    if (gen == NULL) {
        ASN1_STRING_free(value);
        return sim_fail(500, err, err_size, "out of memory");
    }

    GENERAL_NAME_set0_value(gen, type, value);

    if (req->alt_names == NULL) {
        req->alt_names = GENERAL_NAMES_new();
    }

    if (req->alt_names == NULL || !sk_GENERAL_NAME_push(req->alt_names, gen)) {
        GENERAL_NAME_free(gen);
        return sim_fail(500, err, err_size, "out of memory");
    }

    return 0;
}


/* letters, digits, '-', '.', and '_' and '*' as found in real names */
static int
sim_dns_name_valid(const char *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')
              || (s[i] >= '0' && s[i] <= '9')
              || s[i] == '-' || s[i] == '.' || s[i] == '_' || s[i] == '*'))
        {
            return 0;
        }
    }

    return 1;
}


static int
sim_set_time(const sim_field_t *f, int64_t *field, long long t, char *err,
    size_t err_size)
{
    if (t < 0 || t > SIM_TIME_MAX) {
        return sim_fail(400, err, err_size,
                        "%s: out of range (0 to %lld)", f->name,
                        (long long) SIM_TIME_MAX);
    }

    *field = t;
    return 0;
}


static int
sim_parse_bool(const char *s, size_t len, int *out)
{
    if ((len == 4 && memcmp(s, "true", 4) == 0) || (len == 1 && *s == '1')) {
        *out = 1;
        return 0;
    }

    if ((len == 5 && memcmp(s, "false", 5) == 0) || (len == 1 && *s == '0')) {
        *out = 0;
        return 0;
    }

    return -1;
}


/* decimal digits only (common/parse.h): a time in seconds */
static int
sim_parse_time(const char *s, size_t len, long long *out)
{
    uint64_t  v;

    if (!parse_uint(s, len, INT64_MAX, &v)) {
        return -1;
    }

    *out = (long long) v;
    return 0;
}


static int
sim_fail(int status, char *err, size_t err_size, const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);

    return status;
}
