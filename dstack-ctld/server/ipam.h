/*
 * The VPN address pool: an IPv4 prefix, its network and broadcast
 * addresses and the server's own address reserved, the rest handed to
 * nodes.  A bitmap (one bit per address, 512 KiB for a /10) owned by the
 * store's writer thread finds a free address in O(pool/64) worst case;
 * the database's UNIQUE constraint on the address stays the final guard.
 */

#ifndef CTLD_IPAM_H
#define CTLD_IPAM_H

#include <stdbool.h>
#include <stdint.h>

#define IPAM_MIN_PREFIX  8
#define IPAM_MAX_PREFIX  30
#define IPAM_ADDR_LEN    16             /* "255.255.255.255" and NUL */
#define IPAM_CIDR_LEN    19

struct ipam {
    uint32_t   base;        /* network address, host byte order */
    unsigned   prefix;
    uint32_t   size;        /* addresses in the prefix */
    uint32_t   server;      /* the server's own VPN address */
    uint32_t   cursor;      /* next-fit search start, as an offset */
    uint32_t   used;        /* node addresses in use */
    uint64_t  *bits;
};

int   ipam_parse_cidr(const char *s, uint32_t *base, unsigned *prefix);
int   ipam_parse_addr(const char *s, uint32_t *addr);
void  ipam_format(uint32_t addr, char out[IPAM_ADDR_LEN]);
void  ipam_format_cidr(uint32_t base, unsigned prefix, char out[IPAM_CIDR_LEN]);

int   ipam_init(struct ipam *p, uint32_t base, unsigned prefix, uint32_t server);
void  ipam_free(struct ipam *p);
/* forget every node address (before reloading them from the database) */
void  ipam_clear(struct ipam *p);
bool  ipam_is_node_addr(const struct ipam *p, uint32_t addr);
/* marks an address taken; false when it is reserved or outside the pool */
bool  ipam_mark(struct ipam *p, uint32_t addr);
/* -1 when the pool is exhausted */
int   ipam_alloc(struct ipam *p, uint32_t *addr);
void  ipam_release(struct ipam *p, uint32_t addr);
uint32_t  ipam_capacity(const struct ipam *p);

#endif
