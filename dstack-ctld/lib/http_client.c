/* Blocking HTTP requests with libcurl. */

#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "lib/http_client.h"

/* answers above this are cut: nothing the server sends is near it */
#define RESPONSE_MAX  (64u << 20)

static const volatile sig_atomic_t  *cancel_flag;


void
http_client_set_cancel(const volatile sig_atomic_t *flag)
{
    cancel_flag = flag;
}


/* libcurl calls this about once a second even while nothing moves */
static int
on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
            curl_off_t ulnow)
{
    (void) arg;
    (void) dltotal;
    (void) dlnow;
    (void) ultotal;
    (void) ulnow;
    return *cancel_flag != 0;
}


static size_t
on_data(char *data, size_t size, size_t n, void *arg)
{
    struct http_response  *resp = arg;
    size_t                 len = size * n;
    char                  *grown;

    if (resp->len + len > RESPONSE_MAX) {
        return 0;
    }
    grown = realloc(resp->body, resp->len + len + 1);
    if (grown == NULL) {
        return 0;
    }
    memcpy(grown + resp->len, data, len);
    resp->body = grown;
    resp->len += len;
    resp->body[resp->len] = '\0';
    return len;
}


const char *
http_client_target(void *curl, const struct addr_spec *to, const char *path,
                   char *url, size_t urlsz)
{
    const char  *host = to->host;

    if (to->is_unix) {
        curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, to->path);
        snprintf(url, urlsz, "http://localhost%s", path);
        return "localhost";
    }
    if (strcmp(host, "0.0.0.0") == 0) {
        host = "127.0.0.1";
    } else if (strcmp(host, "::") == 0) {
        host = "::1";
    }
    snprintf(url, urlsz, strchr(host, ':') ? "http://[%s]:%s%s" : "http://%s:%s%s",
             host, to->port, path);
    return host;
}


int
http_client_request(const struct addr_spec *to, const char *method,
                    const char *path, const char *bearer,
                    const char *const *extra, const char *json_body,
                    long timeout_s, struct http_response *out, char *err,
                    size_t errsz)
{
    CURL               *curl;
    CURLcode            rc;
    struct curl_slist  *headers = NULL;
    char                url[512], auth[128];

    memset(out, 0, sizeof(*out));
    curl = curl_easy_init();
    if (curl == NULL) {
        snprintf(err, errsz, "cannot initialise libcurl");
        return -1;
    }

    http_client_target(curl, to, path, url, sizeof(url));

    if (bearer != NULL) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", bearer);
        headers = curl_slist_append(headers, auth);
    }
    for (; extra != NULL && *extra != NULL; extra++) {
        headers = curl_slist_append(headers, *extra);
    }
    if (json_body != NULL) {
        headers = curl_slist_append(headers, "Content-Type: application/json");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, json_body);
    }
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, timeout_s);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http");
    if (cancel_flag != NULL) {
        curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    }

    rc = curl_easy_perform(curl);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &out->status);
    } else {
        snprintf(err, errsz, "%s: %s", url, curl_easy_strerror(rc));
    }
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    OPENSSL_cleanse(auth, sizeof(auth));
    if (rc != CURLE_OK) {
        http_response_free(out);
        return -1;
    }
    return 0;
}


void
http_response_free(struct http_response *resp)
{
    free(resp->body);
    resp->body = NULL;
    resp->len = 0;
}
