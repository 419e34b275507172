/*
 * Framing of the relay stream (lib/relay_wire.h): a bounded queue out, a
 * frame parser in.  No allocation: a stream's memory is fixed.
 */

#include <string.h>

#include "lib/relay_wire.h"
#include "lib/util.h"


void
relay_conn_init(struct relay_conn *c, relay_io send, relay_io recv, void *ctx)
{
    c->send = send;
    c->recv = recv;
    c->ctx = ctx;
    c->last_tx_ms = c->last_rx_ms = clock_mono_ms();
    c->dropped = 0;
    c->in_len = 0;
    c->out_off = 0;
    c->out_len = 0;
}


void
relay_conn_attach(struct relay_conn *c)
{
    c->last_tx_ms = c->last_rx_ms = clock_mono_ms();
    c->in_len = 0;
}


static bool
put_frame(struct relay_conn *c, const void *p, size_t len)
{
    size_t  need = RELAY_HEADER_LEN + len;

    if (c->out_off + c->out_len + need > sizeof(c->out)) {
        /* room at the front from what was sent already */
        memmove(c->out, c->out + c->out_off, c->out_len);
        c->out_off = 0;
        if (c->out_len + need > sizeof(c->out)) {
            c->dropped++;
            return false;
        }
    }
    uint8_t *w = c->out + c->out_off + c->out_len;
    w[0] = (uint8_t) (len >> 24);
    w[1] = (uint8_t) (len >> 16);
    w[2] = (uint8_t) (len >> 8);
    w[3] = (uint8_t) len;
    if (len > 0) {
        memcpy(w + RELAY_HEADER_LEN, p, len);
    }
    c->out_len += need;
    return true;
}


bool
relay_enqueue(struct relay_conn *c, const void *dgram, size_t len)
{
    if (len == 0 || len > RELAY_FRAME_MAX) {
        return false;
    }
    return put_frame(c, dgram, len);
}


void
relay_keepalive(struct relay_conn *c)
{
    if (c->out_len == 0 && clock_mono_ms() - c->last_tx_ms >= RELAY_KEEPALIVE_MS) {
        put_frame(c, NULL, 0);
    }
}


bool
relay_pending(const struct relay_conn *c)
{
    return c->out_len > 0;
}


int
relay_flush(struct relay_conn *c)
{
    while (c->out_len > 0) {
        ssize_t  k = c->send(c->ctx, c->out + c->out_off, c->out_len);

        if (k < 0) {
            return -1;
        }
        if (k == 0) {
            break;
        }
        c->out_off += (size_t) k;
        c->out_len -= (size_t) k;
        c->last_tx_ms = clock_mono_ms();
    }
    if (c->out_len == 0) {
        c->out_off = 0;
    }
    return 0;
}


/* every whole frame in c->in, the rest moved to the front */
static int
parse(struct relay_conn *c, relay_deliver deliver, void *arg, const char **why)
{
    size_t  off = 0;

    while (c->in_len - off >= RELAY_HEADER_LEN) {
        const uint8_t *h = c->in + off;
        uint32_t       len = (uint32_t) h[0] << 24 | (uint32_t) h[1] << 16
                             | (uint32_t) h[2] << 8 | h[3];

        if (len > RELAY_FRAME_MAX) {
            *why = "a frame over 65535 bytes";
            return -1;
        }
        if (c->in_len - off < RELAY_HEADER_LEN + len) {
            break;
        }
        if (len > 0) {
            deliver(arg, h + RELAY_HEADER_LEN, len);
        }
        off += RELAY_HEADER_LEN + len;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    return 0;
}


bool
relay_idle(const struct relay_conn *c)
{
    return clock_mono_ms() - c->last_rx_ms > RELAY_IDLE_MS;
}


int
relay_input(struct relay_conn *c, const uint8_t *data, size_t n,
            relay_deliver deliver, void *arg, const char **why)
{
    ssize_t  k;

    if (data != NULL) {
        while (n > 0) {
            size_t  room = sizeof(c->in) - c->in_len;

            room = room < n ? room : n;
            memcpy(c->in + c->in_len, data, room);
            c->in_len += room;
            data += room;
            n -= room;
            if (parse(c, deliver, arg, why) != 0) {
                return -1;
            }
        }
        return 0;
    }
    k = c->recv(c->ctx, c->in + c->in_len, sizeof(c->in) - c->in_len);
    if (k < 0) {
        *why = "closed";
        return -1;
    }
    if (k == 0) {
        return 0;
    }
    c->last_rx_ms = clock_mono_ms();
    c->in_len += (size_t) k;
    return parse(c, deliver, arg, why);
}
