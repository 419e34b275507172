
/*
 * dstack mesh: removing and replacing request headers.
 *
 * Names compare case-insensitively on their letters and digits alone:
 * with underscores_in_headers on or ignore_invalid_headers off, CGI-style
 * backends map "x_dstack_app_id" and "x.dstack.app.id" to the same
 * HTTP_X_DSTACK_APP_ID as "x-dstack-app-id".
 */


#include "ngx_http_dstack_mesh.h"


static ngx_uint_t ngx_http_dstack_mesh_count_headers(ngx_http_request_t *r,
    const ngx_str_t *names, ngx_uint_t *total);
static ngx_int_t ngx_http_dstack_mesh_copy_headers(ngx_http_request_t *r,
    const ngx_str_t *names, ngx_uint_t size);
static ngx_uint_t ngx_http_dstack_mesh_header_matches(ngx_str_t *key,
    const ngx_str_t *names);


/*
 * Removes every header matching one of "names" (lowercase, a terminating
 * empty string; a trailing '*' matches any rest).  ngx_list_t cannot drop
 * elements, so the list is rebuilt, which only happens when one matched.
 */

ngx_int_t
ngx_http_dstack_mesh_remove_headers(ngx_http_request_t *r,
    const ngx_str_t *names)
{
    ngx_uint_t  n;

    if (ngx_http_dstack_mesh_count_headers(r, names, &n) == 0) {
        return NGX_OK;
    }

    return ngx_http_dstack_mesh_copy_headers(r, names, n);
}


/*
 * Replaces every header matching "names" with "key: value", always on a
 * new list: a subrequest's list is a copy of its parent's list head, whose
 * parts it shares, so appending to it would write into the parent's.
 */

ngx_int_t
ngx_http_dstack_mesh_replace_header(ngx_http_request_t *r,
    const ngx_str_t *names, ngx_str_t *key, ngx_str_t *value)
{
    ngx_uint_t        n;
    ngx_table_elt_t  *h;

    (void) ngx_http_dstack_mesh_count_headers(r, names, &n);

    if (ngx_http_dstack_mesh_copy_headers(r, names, n + 1) != NGX_OK) {
        return NGX_ERROR;
    }

    h = ngx_list_push(&r->headers_in.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->key = *key;
    h->value = *value;

    /* nginx finds headers by the lowercased name */

    h->lowcase_key = ngx_pnalloc(r->pool, key->len);
    if (h->lowcase_key == NULL) {
        return NGX_ERROR;
    }

    h->hash = ngx_hash_strlow(h->lowcase_key, key->data, key->len);
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif

    return NGX_OK;
}


/* returns how many headers match "names"; "total" gets how many there are */

static ngx_uint_t
ngx_http_dstack_mesh_count_headers(ngx_http_request_t *r,
    const ngx_str_t *names, ngx_uint_t *total)
{
    ngx_uint_t        i, n, found;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    found = 0;
    n = 0;

    for (part = &r->headers_in.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            n++;
            found += ngx_http_dstack_mesh_header_matches(&h[i].key, names);
        }
    }

    *total = n;

    return found;
}


/* a new list of "size" slots holding the headers that match no name */

static ngx_int_t
ngx_http_dstack_mesh_copy_headers(ngx_http_request_t *r,
    const ngx_str_t *names, ngx_uint_t size)
{
    ngx_uint_t        i;
    ngx_list_t        old;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *copy;

    /* the list head embeds its first part: walk a copy */
    old = r->headers_in.headers;

    if (ngx_list_init(&r->headers_in.headers, r->pool, ngx_max(size, 1),
                      sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (part = &old.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            if (ngx_http_dstack_mesh_header_matches(&h[i].key, names)) {
                continue;
            }

            copy = ngx_list_push(&r->headers_in.headers);
            if (copy == NULL) {
                return NGX_ERROR;
            }

            *copy = h[i];
        }
    }

    return NGX_OK;
}


static ngx_uint_t
ngx_http_dstack_mesh_header_matches(ngx_str_t *key, const ngx_str_t *names)
{
    u_char      *k, *kend, *n, *nend;
    ngx_uint_t   prefix;

    for ( /* void */ ; names->len; names++) {

        n = names->data;
        nend = n + names->len;
        prefix = (nend[-1] == '*');
        nend -= prefix;

        k = key->data;
        kend = k + key->len;

        for ( ;; ) {
            while (n < nend && !ngx_http_dstack_mesh_isalnum(*n)) {
                n++;
            }

            while (k < kend && !ngx_http_dstack_mesh_isalnum(*k)) {
                k++;
            }

            if (n == nend || k == kend || ngx_tolower(*k) != *n) {
                break;
            }

            n++;
            k++;
        }

        if (n == nend && (prefix || k == kend)) {
            return 1;
        }
    }

    return 0;
}


ngx_int_t
ngx_http_dstack_mesh_send_json(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *body)
{
    ngx_int_t    rc;
    ngx_buf_t   *b;
    ngx_chain_t  out;

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = body->len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = body->data;
    b->last = body->data + body->len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}
