
/*
 * dstack mesh: removing and adding request headers.
 *
 * Names compare case-insensitively with '_' equal to '-': with
 * underscores_in_headers on, CGI-style backends map "x_dstack_app_id" and
 * "x-dstack-app-id" to the same HTTP_X_DSTACK_APP_ID.
 */


#include "ngx_http_dstack_mesh.h"


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
    ngx_uint_t        i, n, found;
    ngx_list_t        old;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *copy;

    found = 0;
    n = 0;

    for (part = &r->headers_in.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            n++;
            found += ngx_http_dstack_mesh_header_matches(&h[i].key, names);
        }
    }

    if (!found) {
        return NGX_OK;
    }

    /* the list head embeds its first part: walk a copy */
    old = r->headers_in.headers;

    if (ngx_list_init(&r->headers_in.headers, r->pool, n,
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


/* appends "key: value"; nginx finds headers by the lowercased name */

ngx_int_t
ngx_http_dstack_mesh_add_header(ngx_http_request_t *r, ngx_str_t *key,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_in.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->key = *key;
    h->value = *value;

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


static ngx_uint_t
ngx_http_dstack_mesh_header_matches(ngx_str_t *key, const ngx_str_t *names)
{
    u_char      c;
    size_t      len;
    ngx_uint_t  i, prefix;

    for ( /* void */ ; names->len; names++) {

        prefix = (names->data[names->len - 1] == '*');
        len = names->len - prefix;

        if (prefix ? key->len < len : key->len != len) {
            continue;
        }

        for (i = 0; i < len; i++) {
            c = ngx_tolower(key->data[i]);

            if (c == '_') {
                c = '-';
            }

            if (c != names->data[i]) {
                break;
            }
        }

        if (i == len) {
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
