/*
 * libFuzzer target: the relay stream's framing (lib/relay_wire.c), both
 * ends.  Input: one byte, the size of the reads the hostile bytes arrive
 * in, then the bytes.
 *
 * What must hold: whole frames are delivered, each 1..65535 bytes, never
 * more bytes than arrived; a stream is refused only for a frame over
 * 65535; and what the datagrams delivered are, queued again at the other
 * end and read back, they are again, in order.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "lib/relay_wire.h"

struct pipe {
    const uint8_t  *p;
    size_t          n, off, chunk;
    uint8_t        *out;
    size_t          out_len, out_cap;
};

struct seen {
    uint8_t  *buf;
    size_t    len, count;
    int       replaying;        /* compare with buf instead of appending */
    size_t    pos;
};

static struct relay_conn  a, b;


static ssize_t
pipe_recv(void *ctx, void *buf, size_t n)
{
    struct pipe *p = ctx;
    size_t       k = p->n - p->off;

    if (k == 0) {
        return -1;
    }
    k = k < n ? k : n;
    k = k < p->chunk ? k : p->chunk;
    memcpy(buf, p->p + p->off, k);
    p->off += k;
    return (ssize_t) k;
}


static ssize_t
pipe_send(void *ctx, void *buf, size_t n)
{
    struct pipe *p = ctx;

    if (p->out_len + n > p->out_cap) {
        size_t   cap = (p->out_len + n) * 2;
        uint8_t *g = realloc(p->out, cap);

        check(g != NULL);
        p->out = g;
        p->out_cap = cap;
    }
    memcpy(p->out + p->out_len, buf, n);
    p->out_len += n;
    return (ssize_t) n;
}


static void
deliver(void *arg, const uint8_t *d, size_t len)
{
    struct seen *s = arg;

    check(len >= 1 && len <= RELAY_FRAME_MAX);
    if (s->replaying) {
        check(s->pos + len <= s->len && memcmp(s->buf + s->pos, d, len) == 0);
        s->pos += len;
    } else {
        uint8_t *g = realloc(s->buf, s->len + len);

        check(g != NULL);
        s->buf = g;
        memcpy(s->buf + s->len, d, len);
        s->len += len;
    }
    s->count++;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pipe   in = { 0 }, wire = { 0 };
    struct seen   seen = { 0 };
    const char   *why = NULL;
    int           rc;
    size_t        off = 0, k, count;

    if (size == 0) {
        return 0;
    }
    in.p = data + 1;
    in.n = size - 1;
    in.chunk = data[0] ? data[0] : 1;
    relay_conn_init(&a, pipe_send, pipe_recv, &in);
    /* one read per call: called until the input ends */
    while ((rc = relay_input(&a, NULL, 0, deliver, &seen, &why)) == 0) {
    }
    check(rc == -1 && why != NULL);
    check(seen.len + RELAY_HEADER_LEN * seen.count <= in.n);
    if (strcmp(why, "closed") != 0) {
        check(strcmp(why, "a frame over 65535 bytes") == 0);
    }

    /* the datagrams again, through a queue and a parser */
    relay_conn_init(&b, pipe_send, pipe_recv, &wire);
    count = seen.count;
    seen.replaying = 1;
    /* re-split seen.buf as it was delivered: replay the input's frames */
    for (size_t i = 0; i + RELAY_HEADER_LEN <= in.n && count > 0; i += RELAY_HEADER_LEN + k) {
        k = (size_t) in.p[i] << 24 | (size_t) in.p[i + 1] << 16
            | (size_t) in.p[i + 2] << 8 | in.p[i + 3];
        if (k > RELAY_FRAME_MAX || i + RELAY_HEADER_LEN + k > in.n) {
            break;
        }
        if (k == 0) {
            continue;
        }
        if (!relay_enqueue(&b, seen.buf + off, k)) {
            check(relay_flush(&b) == 0);
            check(relay_enqueue(&b, seen.buf + off, k));
        }
        off += k;
        count--;
    }
    check(count == 0 && off == seen.len);
    check(relay_flush(&b) == 0);
    wire.p = wire.out;
    wire.n = wire.out_len;
    wire.chunk = in.chunk;
    relay_conn_init(&a, pipe_send, pipe_recv, &wire);
    seen.count = 0;
    while ((rc = relay_input(&a, NULL, 0, deliver, &seen, &why)) == 0) {
    }
    check(rc == -1);
    check(strcmp(why, "closed") == 0 && seen.pos == seen.len);
    free(seen.buf);
    free(wire.out);
    return 0;
}
