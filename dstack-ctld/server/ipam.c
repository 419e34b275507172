/* Address pool: bitmap allocation inside an IPv4 prefix. */

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/util.h"
#include "server/ipam.h"
#include "wg/netdev.h"          /* ip_prefix_parse() */


int
ipam_parse_addr(const char *s, uint32_t *addr)
{
    struct in_addr  in;

    if (inet_pton(AF_INET, s, &in) != 1) {
        return -1;
    }
    *addr = ntohl(in.s_addr);
    return 0;
}


int
ipam_parse_cidr(const char *s, uint32_t *base, unsigned *prefix)
{
    struct ip_prefix  p;
    uint32_t          a, mask;

    if (ip_prefix_parse(s, &p) != 0 || p.family != AF_INET
        || p.len < IPAM_MIN_PREFIX || p.len > IPAM_MAX_PREFIX)
    {
        return -1;
    }
    a = ntohl(p.addr.v4.s_addr);
    mask = (uint32_t) (0xffffffffu << (32 - p.len));
    if ((a & ~mask) != 0) {
        return -1;              /* host bits set: almost surely a typo */
    }
    *base = a;
    *prefix = p.len;
    return 0;
}


void
ipam_format(uint32_t addr, char out[IPAM_ADDR_LEN])
{
    snprintf(out, IPAM_ADDR_LEN, "%u.%u.%u.%u", addr >> 24, (addr >> 16) & 0xff,
             (addr >> 8) & 0xff, addr & 0xff);
}


void
ipam_format_cidr(uint32_t base, unsigned prefix, char out[IPAM_CIDR_LEN])
{
    char  a[IPAM_ADDR_LEN];

    ipam_format(base, a);
    snprintf(out, IPAM_CIDR_LEN, "%s/%u", a, prefix);
}


static void
bit_set(struct ipam *p, uint32_t off)
{
    p->bits[off / 64] |= (uint64_t) 1 << (off % 64);
}


static void
bit_clear(struct ipam *p, uint32_t off)
{
    p->bits[off / 64] &= ~((uint64_t) 1 << (off % 64));
}


static bool
bit_test(const struct ipam *p, uint32_t off)
{
    return (p->bits[off / 64] >> (off % 64)) & 1;
}


void
ipam_clear(struct ipam *p)
{
    memset(p->bits, 0, (p->size + 63) / 64 * sizeof(uint64_t));
    bit_set(p, 0);                              /* network */
    bit_set(p, p->size - 1);                    /* broadcast */
    bit_set(p, p->server - p->base);
    p->used = 0;
    p->cursor = 1;
}


int
ipam_init(struct ipam *p, uint32_t base, unsigned prefix, uint32_t server)
{
    memset(p, 0, sizeof(*p));
    if (prefix < IPAM_MIN_PREFIX || prefix > IPAM_MAX_PREFIX) {
        return -1;
    }
    p->base = base;
    p->prefix = prefix;
    p->size = (uint32_t) 1 << (32 - prefix);
    if (server <= base || server >= base + p->size - 1) {
        return -1;
    }
    p->server = server;
    p->bits = calloc((p->size + 63) / 64, sizeof(uint64_t));
    if (p->bits == NULL) {
        return -1;
    }
    ipam_clear(p);
    return 0;
}


void
ipam_free(struct ipam *p)
{
    free(p->bits);
    p->bits = NULL;
}


uint32_t
ipam_capacity(const struct ipam *p)
{
    return p->size - 3;
}


bool
ipam_is_node_addr(const struct ipam *p, uint32_t addr)
{
    return addr > p->base && addr < p->base + p->size - 1 && addr != p->server;
}


bool
ipam_mark(struct ipam *p, uint32_t addr)
{
    if (!ipam_is_node_addr(p, addr)) {
        return false;
    }
    if (!bit_test(p, addr - p->base)) {
        bit_set(p, addr - p->base);
        p->used++;
    }
    return true;
}


int
ipam_alloc(struct ipam *p, uint32_t *addr)
{
    uint32_t  words = (p->size + 63) / 64;
    uint32_t  w = p->cursor / 64;

    if (p->used >= ipam_capacity(p)) {
        return -1;
    }

    /* next fit from the cursor, whole words at a time; wraps once */
    for (uint32_t n = 0; n <= words; n++, w = (w + 1) % words) {
        uint64_t  free_bits = ~p->bits[w];

        if (n == 0) {
            free_bits &= ~(((uint64_t) 1 << (p->cursor % 64)) - 1);
        }
        if (free_bits == 0) {
            continue;
        }
        uint32_t off = w * 64 + (uint32_t) __builtin_ctzll(free_bits);
        if (off >= p->size) {
            continue;
        }
        bit_set(p, off);
        p->used++;
        p->cursor = off + 1 < p->size ? off + 1 : 1;
        *addr = p->base + off;
        return 0;
    }
    return -1;
}


void
ipam_release(struct ipam *p, uint32_t addr)
{
    if (ipam_is_node_addr(p, addr) && bit_test(p, addr - p->base)) {
        bit_clear(p, addr - p->base);
        p->used--;
    }
}
