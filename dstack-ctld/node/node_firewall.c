/*
 * The hub's forwarding filter: nftables through libnftables.
 *
 * The hub turns on IPv4 forwarding for its whole network namespace; this
 * table limits what is forwarded to the VPC itself: in by the WireGuard
 * interface, out by the same interface, source and destination in the
 * pool.  Everything else forwarded is dropped, so a member cannot use the
 * hub as a router into the networks the server's CVM reaches, nor can
 * those networks reach the members through it.
 *
 * The table is ours alone and replaced whole in one transaction (the
 * kernel sees the old rules or the new ones, never none).  A hub that
 * stops removes it; one that dies leaves it, still filtering.
 */

#include <net/if.h>
#include <string.h>

#include <nftables/libnftables.h>

#include "lib/log.h"
#include "node/node.h"

#define HUB_TABLE  "inet dstack_ctld_hub"

/* "table X" first makes "delete table X" valid when there is none */
#define HUB_TABLE_RESET  "table " HUB_TABLE "\ndelete table " HUB_TABLE "\n"


static bool  installed;          /* by this process */


/* runs one nft transaction; -1 after logging its first error line,
 * unless what is NULL */
static int
nft_run(const char *what, const char *rules)
{
    struct nft_ctx  *nft;
    const char      *err;
    int              rc;

    nft = nft_ctx_new(NFT_CTX_DEFAULT);
    if (nft == NULL) {
        log_error("%s: cannot create an nftables context",
                  what != NULL ? what : "nftables");
        return -1;
    }
    nft_ctx_buffer_output(nft);
    nft_ctx_buffer_error(nft);
    rc = nft_run_cmd_from_buffer(nft, rules);
    if (rc != 0 && what != NULL) {
        err = nft_ctx_get_error_buffer(nft);
        log_error("%s: nftables refused: %.*s", what,
                  err != NULL ? (int) strcspn(err, "\n") : 0,
                  err != NULL ? err : "");
    }
    nft_ctx_free(nft);
    return rc == 0 ? 0 : -1;
}


int
firewall_hub_install(const char *ifname, const struct ip_prefix *pool)
{
    char  rules[1024], prefix[IP_PREFIX_STRLEN];
    bool  left;

    /* the name goes into the rules as a quoted string */
    if (!ident_valid(ifname, IFNAMSIZ - 1) || pool->family != AF_INET) {
        log_error("%s: no forwarding filter for this interface or pool",
                  ifname);
        return -1;
    }
    /* a table we did not make was left by a hub that died */
    left = !installed && nft_run(NULL, "list table " HUB_TABLE "\n") == 0;
    ip_prefix_format(pool, prefix);
    snprintf(rules, sizeof(rules),
             HUB_TABLE_RESET
             "table %s {\n"
             "  chain forward {\n"
             "    type filter hook forward priority filter; policy drop;\n"
             "    iifname \"%s\" oifname \"%s\""
             " ip saddr %s ip daddr %s accept\n"
             "  }\n"
             "}\n",
             HUB_TABLE, ifname, ifname, prefix, prefix);
    if (nft_run("hub forwarding filter", rules) != 0) {
        return -1;
    }
    installed = true;
    log_info("nftables: %s forwards only %s to %s over %s", HUB_TABLE,
             prefix, prefix, ifname);
    return left ? 1 : 0;
}


void
firewall_hub_remove(void)
{
    if (nft_run("removing the hub forwarding filter", HUB_TABLE_RESET) == 0) {
        log_info("nftables: %s removed", HUB_TABLE);
        installed = false;
    }
}
