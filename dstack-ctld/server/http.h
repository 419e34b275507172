/*
 * The server's HTTP layer as the API handlers see it: one struct http_req
 * per request, reply helpers that always answer JSON errors, and the two
 * ways a handler waits without holding a thread:
 *
 *   http_submit()  hands a write to the writer thread; the connection is
 *                  suspended until the batch holding it is committed;
 *   http_park()    parks a long poll until the peer version moves or its
 *                  deadline passes.
 *
 * Either way the handler is called again afterwards with r->async set to
 * ASYNC_DONE (or ASYNC_REFUSED when the server is stopping) and answers.
 */

#ifndef CTLD_HTTP_H
#define CTLD_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <microhttpd.h>

#include "lib/relay_wire.h"
#include "server/answers.h"
#include "server/api_input.h"
#include "server/longpoll.h"
#include "server/server.h"
#include "server/writer.h"

enum async_state {
    ASYNC_NONE,
    ASYNC_PENDING,
    ASYNC_DONE,
    ASYNC_REFUSED
};

struct route;

struct http_req {
    struct server          *srv;
    struct MHD_Connection  *conn;
    const char             *method;
    const char             *path;
    const char             *param;          /* tail of a prefix route */
    const struct route     *route;

    char                   *body;
    size_t                  body_len;
    size_t                  body_seen;
    bool                    body_too_large;

    uint64_t                start_us;
    unsigned                status;         /* what was answered */
    bool                    responded;
    bool                    parked;         /* a long poll that waited */
    unsigned                waits;          /* submits and parks so far */
    bool                    www_auth;       /* 401 names the Bearer scheme */
    char                    app_id[APP_ID_HEX_MAX + 1];   /* when verified */

    _Atomic int             async;          /* enum async_state */
    bool                    committed;
    struct waiter           waiter;
    bool                    timed_out;

    void                   *data;           /* the handler's own state */
    void                  (*data_free)(void *data);
};

typedef enum MHD_Result (*http_handler)(struct http_req *r);

/* replies: each queues the response and returns what MHD expects */
enum MHD_Result  http_json(struct http_req *r, unsigned status, json_t *body);
/*
 * A shared answer (answers.h; the caller's reference is taken): prefix
 * (malloc'd and taken, or NULL), then the answer's bytes from `from` on
 * without the list entries of id `skip` (-1: none).  No copy is made.
 */
enum MHD_Result  http_answer(struct http_req *r, unsigned status, char *prefix,
                             struct answer *a, size_t from, int64_t skip);
enum MHD_Result  http_text(struct http_req *r, unsigned status, const char *text,
                           const char *content_type);
/* takes a malloc'd text */
enum MHD_Result  http_text_owned(struct http_req *r, unsigned status, char *text,
                                 const char *content_type);
/* {"error": msg}, plus one log line (the message is ours, never the client's) */
enum MHD_Result  http_error(struct http_req *r, unsigned status, const char *msg);
/* the same, with a detail for the log line only */
enum MHD_Result  http_error_why(struct http_req *r, unsigned status,
                                const char *msg, const char *why);
enum MHD_Result  http_unauthorized_bearer(struct http_req *r, const char *msg);

/*
 * A query argument: 1 present (value "" when given without one), 0 absent,
 * -1 malformed (embedded NUL, longer than max).
 */
int   http_arg(struct http_req *r, const char *name, size_t max, const char **value);
/* the same, unchecked, for api_input.h */
void  http_arg_get(struct http_req *r, const char *name, struct api_arg *a);
/* the JSON object in the body, or NULL after answering 400 */
json_t *http_json_body(struct http_req *r);
/* the token of "Authorization: Bearer <64 hex>" hashed, false if none */
bool  http_bearer_hash(struct http_req *r, unsigned char hash[SHA256_LEN]);

enum MHD_Result  http_submit(struct http_req *r, struct write_op *op);
/* owner: the node whose token polls (0: the admin), a few polls each */
enum MHD_Result  http_park(struct http_req *r, uint64_t since, uint64_t deadline_ms,
                           int64_t owner);

/* handlers: server_api_legacy.c */
enum MHD_Result  api_health(struct http_req *r);
enum MHD_Result  api_ping(struct http_req *r);
enum MHD_Result  api_register(struct http_req *r);
enum MHD_Result  api_nodes_update(struct http_req *r);
enum MHD_Result  api_discover(struct http_req *r);
enum MHD_Result  api_nodes(struct http_req *r);

/* handlers: server_api_v1.c */
enum MHD_Result  api_v1_join(struct http_req *r);
enum MHD_Result  api_v1_peers(struct http_req *r);
enum MHD_Result  api_v1_nodes(struct http_req *r);
enum MHD_Result  api_v1_node_remove(struct http_req *r);
enum MHD_Result  api_metrics(struct http_req *r);

/* handler: relay.c */
enum MHD_Result  api_v1_relay(struct http_req *r);

#endif
