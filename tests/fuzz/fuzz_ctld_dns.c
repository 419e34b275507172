/*
 * libFuzzer target: the node's DNS query path (dns_answer), on any
 * datagram or TCP message, against a table of a few names.  Input: one
 * byte choosing UDP or TCP and whether the table is ready, then the query.
 *
 * What must hold: no crash or leak; an answer parses (ldns), is an
 * answer (QR) with the query's id, holds at most one answer record, and
 * over UDP fits 512 bytes, or 1232 with EDNS; a forwarded query is one
 * outside the zone with one question; SERVFAIL for a query that parses.
 * The same bytes taken as a resolver's answer (dns_answers_query) to a
 * fixed query: matched only with the query's id and question.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <ldns/ldns.h>

#include "fuzz_check.h"
#include "node/node.h"


static struct name_table *
table(bool ready)
{
    static struct name_table  t[2];
    static bool               made;
    static struct vpc_peer    peers[3];
    struct peer_set           s = { .v = peers, .n = 3 };
    struct node_name          self = { .name = "n1" };

    if (!made) {
        static const char *const names[] = { "vpc-server", "n2", "db-1" };

        for (int i = 0; i < 3; i++) {
            snprintf(peers[i].name, sizeof(peers[i].name), "%s", names[i]);
            peers[i].address.s_addr = htonl(0x64800001 + i);
        }
        self.addr.s_addr = htonl(0x64800009);
        check(name_table_init(&t[0]) == 0 && name_table_init(&t[1]) == 0);
        check(name_table_sync(&t[1], &self, &s) == 0);
        made = true;
    }
    return &t[ready];
}


/* the input as what a resolver sent back to a query for n2.example.test */
static void
answer(const uint8_t *a, size_t len)
{
    static const uint8_t  q[] = {
        0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
        2, 'n', '2', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 4, 't', 'e', 's', 't', 0,
        0, 1, 0, 1
    };

    if (dns_answers_query(q, sizeof(q), a, len)) {
        check(len >= sizeof(q) && LDNS_QR_WIRE(a) && LDNS_ID_WIRE(a) == 0x1234);
        check(LDNS_QDCOUNT(a) == 1);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ldns_pkt          *r = NULL, *q = NULL;
    enum dns_verdict   v;
    uint8_t           *out;
    size_t             out_len;
    bool               tcp;
    static ldns_rdf   *apex;

    if (apex == NULL) {
        apex = ldns_dname_new_frm_str(DNS_DOMAIN ".");
    }
    if (size == 0) {
        return 0;
    }
    tcp = data[0] & 1;
    v = dns_answer(table(data[0] & 2), data + 1, size - 1, tcp, &out, &out_len);
    if (v == DNS_REPLY) {
        check(out != NULL && out_len >= LDNS_HEADER_SIZE);
        check(tcp || out_len <= 1232);
        check(ldns_wire2pkt(&r, out, out_len) == LDNS_STATUS_OK);
        check(ldns_pkt_qr(r) && ldns_pkt_id(r) == LDNS_ID_WIRE(data + 1));
        check(ldns_pkt_ancount(r) <= 1);
        if (!tcp && (ldns_wire2pkt(&q, data + 1, size - 1) != LDNS_STATUS_OK
                     || !ldns_pkt_edns(q)))
        {
            check(out_len <= 512);
        }
        ldns_pkt_free(q);
        ldns_pkt_free(r);
    } else {
        check(out == NULL);
    }
    free(out);
    if (v == DNS_FORWARD) {
        check(ldns_wire2pkt(&q, data + 1, size - 1) == LDNS_STATUS_OK);
        check(ldns_pkt_qdcount(q) == 1);
        check(!ldns_dname_is_subdomain(ldns_rr_owner(ldns_rr_list_rr(
                  ldns_pkt_question(q), 0)), apex));
        ldns_pkt_free(q);
        check(dns_servfail(data + 1, size - 1, &out, &out_len) == DNS_REPLY);
        free(out);
    }
    answer(data + 1, size - 1);
    return 0;
}
