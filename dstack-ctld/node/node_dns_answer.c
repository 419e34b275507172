/*
 * One DNS query, as the node's server sees it: answered from the name
 * table (the zone dstack.internal), handed on to the CVM's resolvers, or
 * dropped.  Packets are parsed and built with ldns, never by hand.
 *
 * Hostile input: a datagram shorter than a header, or one with QR set (an
 * answer: answering answers makes loops and reflections) is dropped; what
 * ldns cannot parse, or a query without exactly one question, gets
 * FORMERR; any other opcode NOTIMP.  Answers hold at most the one A
 * record asked for (ANY gets the same) and the zone's SOA, and are
 * truncated (TC, no records) past 512 bytes, or the EDNS size up to 1232,
 * over UDP.
 */

#include <string.h>

#include <ldns/ldns.h>

#include "node/node.h"

#define ZONE_SOA  DNS_DOMAIN ". %u IN SOA ns." DNS_DOMAIN ". hostmaster." \
                  DNS_DOMAIN ". 1 3600 600 86400 %u"
#define UDP_PLAIN   512
#define UDP_EDNS    1232
/* a question and an OPT record fit with room to spare; what is longer, or
 * carries other records, is refused before ldns reads it: compression
 * pointers make parsing cost grow with the message, not with its names */
#define QUERY_MAX   4096

static ldns_rdf    *zone_apex;
static ldns_rr     *zone_soa;
static pthread_once_t  zone_once = PTHREAD_ONCE_INIT;


static void
zone_init(void)
{
    char  soa[256];

    snprintf(soa, sizeof(soa), ZONE_SOA, DNS_TTL, DNS_TTL);
    zone_apex = ldns_dname_new_frm_str(DNS_DOMAIN ".");
    if (ldns_rr_new_frm_str(&zone_soa, soa, 0, NULL, NULL) != LDNS_STATUS_OK) {
        zone_soa = NULL;
    }
}


/* the header of an answer to a query ldns could not parse, or NULL */
static ldns_pkt *
reply_raw(const uint8_t *q, uint8_t rcode)
{
    ldns_pkt  *r = ldns_pkt_new();

    if (r != NULL) {
        ldns_pkt_set_id(r, LDNS_ID_WIRE(q));
        ldns_pkt_set_qr(r, true);
        ldns_pkt_set_opcode(r, LDNS_OPCODE_WIRE(q));
        ldns_pkt_set_rd(r, LDNS_RD_WIRE(q) != 0);
        ldns_pkt_set_ra(r, true);
        ldns_pkt_set_rcode(r, rcode);
    }
    return r;
}


/* a query as ldns reads it, or NULL: what a query can carry, no more */
static ldns_pkt *
query_parse(const uint8_t *wire, size_t len)
{
    ldns_pkt  *q = NULL;

    if (len > QUERY_MAX || LDNS_ANCOUNT(wire) != 0 || LDNS_NSCOUNT(wire) != 0
        || LDNS_ARCOUNT(wire) > 1 || ldns_wire2pkt(&q, wire, len) != LDNS_STATUS_OK)
    {
        return NULL;
    }
    return q;
}


/* an answer to q with its question, no records yet */
static ldns_pkt *
reply_to(const ldns_pkt *q, const uint8_t *wire, uint8_t rcode)
{
    ldns_pkt  *r = reply_raw(wire, rcode);
    ldns_rr   *question;

    if (r == NULL) {
        return NULL;
    }
    if (ldns_pkt_qdcount(q) == 1) {
        question = ldns_rr_clone(ldns_rr_list_rr(ldns_pkt_question(q), 0));
        if (question == NULL
            || !ldns_pkt_push_rr(r, LDNS_SECTION_QUESTION, question))
        {
            ldns_rr_free(question);
            ldns_pkt_free(r);
            return NULL;
        }
    }
    if (ldns_pkt_edns(q)) {
        ldns_pkt_set_edns_udp_size(r, UDP_EDNS);
    }
    return r;
}


static bool
push_clone(ldns_pkt *r, ldns_pkt_section section, const ldns_rr *rr)
{
    ldns_rr  *c = ldns_rr_clone(rr);

    if (c == NULL || !ldns_pkt_push_rr(r, section, c)) {
        ldns_rr_free(c);
        return false;
    }
    return true;
}


static bool
push_a(ldns_pkt *r, const ldns_rdf *owner, struct in_addr addr)
{
    ldns_rr   *rr = ldns_rr_new_frm_type(LDNS_RR_TYPE_A);
    ldns_rdf  *o = ldns_rdf_clone(owner);
    ldns_rdf  *a = ldns_rdf_new_frm_data(LDNS_RDF_TYPE_A, 4, &addr.s_addr);

    if (rr == NULL || o == NULL || a == NULL) {
        ldns_rr_free(rr);
        ldns_rdf_deep_free(o);
        ldns_rdf_deep_free(a);
        return false;
    }
    ldns_rr_set_owner(rr, o);
    ldns_rr_set_ttl(rr, DNS_TTL);
    ldns_rr_set_class(rr, LDNS_RR_CLASS_IN);
    ldns_rr_a_set_address(rr, a);
    return ldns_pkt_push_rr(r, LDNS_SECTION_ANSWER, rr);
}


/* the answer to a question in the zone */
static ldns_pkt *
zone_answer(struct name_table *t, const ldns_pkt *q, const uint8_t *wire,
            const ldns_rr *question)
{
    const ldns_rdf  *qname = ldns_rr_owner(question);
    ldns_rr_type     type = ldns_rr_get_type(question);
    ldns_rr_class    cls = ldns_rr_get_class(question);
    const uint8_t   *label;
    struct in_addr   addr;
    ldns_pkt        *r;
    bool             any = type == LDNS_RR_TYPE_ANY, ok = true, found;
    uint8_t          labels;

    if (cls != LDNS_RR_CLASS_IN && cls != LDNS_RR_CLASS_ANY) {
        return reply_to(q, wire, LDNS_RCODE_REFUSED);
    }
    if (!name_table_ready(t)) {
        return reply_to(q, wire, LDNS_RCODE_SERVFAIL);  /* no peers yet */
    }
    labels = ldns_dname_label_count(qname);
    if (labels == ldns_dname_label_count(zone_apex)) {
        r = reply_to(q, wire, LDNS_RCODE_NOERROR);
        if (r != NULL) {
            ok = push_clone(r, type == LDNS_RR_TYPE_SOA || any
                               ? LDNS_SECTION_ANSWER : LDNS_SECTION_AUTHORITY,
                            zone_soa);
        }
    } else {
        /* <name>.dstack.internal: the first label, its length byte first */
        label = ldns_rdf_data(qname);
        found = labels == ldns_dname_label_count(zone_apex) + 1
                && name_table_lookup(t, (const char *) label + 1, label[0],
                                     &addr);
        r = reply_to(q, wire, found ? LDNS_RCODE_NOERROR : LDNS_RCODE_NXDOMAIN);
        if (r != NULL) {
            ok = found && (type == LDNS_RR_TYPE_A || any)
                 ? push_a(r, qname, addr)
                 : push_clone(r, LDNS_SECTION_AUTHORITY, zone_soa);
        }
    }
    if (r != NULL) {
        ldns_pkt_set_aa(r, true);
    }
    if (!ok) {
        ldns_pkt_free(r);
        r = reply_to(q, wire, LDNS_RCODE_SERVFAIL);
    }
    return r;
}


static enum dns_verdict
to_wire(ldns_pkt *r, const ldns_pkt *q, const uint8_t *wire, size_t max,
        uint8_t **out, size_t *out_len)
{
    ldns_pkt  *small;

    if (r == NULL || ldns_pkt2wire(out, r, out_len) != LDNS_STATUS_OK) {
        ldns_pkt_free(r);
        return DNS_DROP;
    }
    ldns_pkt_free(r);
    if (*out_len <= max) {
        return DNS_REPLY;
    }
    /* too big for the datagram: the question and TC, the client asks by TCP */
    free(*out);
    *out = NULL;
    small = q != NULL ? reply_to(q, wire, LDNS_RCODE_NOERROR) : NULL;
    if (small == NULL) {
        return DNS_DROP;
    }
    ldns_pkt_set_tc(small, true);
    ldns_pkt_set_aa(small, true);
    return to_wire(small, NULL, wire, SIZE_MAX, out, out_len);
}


enum dns_verdict
dns_answer(struct name_table *t, const uint8_t *wire, size_t len, bool tcp,
           uint8_t **out, size_t *out_len)
{
    const ldns_rr     *question;
    const ldns_rdf    *qname;
    ldns_pkt          *q = NULL, *r;
    enum dns_verdict   v;
    size_t             max = tcp ? UINT16_MAX : UDP_PLAIN;

    *out = NULL;
    *out_len = 0;
    pthread_once(&zone_once, zone_init);
    if (len < LDNS_HEADER_SIZE || LDNS_QR_WIRE(wire) || zone_soa == NULL) {
        return DNS_DROP;
    }
    q = query_parse(wire, len);
    if (q == NULL) {
        return to_wire(reply_raw(wire, LDNS_RCODE_FORMERR), NULL, wire, max,
                       out, out_len);
    }
    if (!tcp && ldns_pkt_edns(q)) {
        max = ldns_pkt_edns_udp_size(q) > UDP_EDNS ? UDP_EDNS
              : ldns_pkt_edns_udp_size(q) < UDP_PLAIN ? UDP_PLAIN
              : ldns_pkt_edns_udp_size(q);
    }
    if (ldns_pkt_get_opcode(q) != LDNS_PACKET_QUERY) {
        r = reply_to(q, wire, LDNS_RCODE_NOTIMPL);
    } else if (ldns_pkt_qdcount(q) != 1) {
        r = reply_to(q, wire, LDNS_RCODE_FORMERR);
    } else {
        question = ldns_rr_list_rr(ldns_pkt_question(q), 0);
        qname = ldns_rr_owner(question);
        if (ldns_dname_compare(qname, zone_apex) != 0
            && !ldns_dname_is_subdomain(qname, zone_apex))
        {
            ldns_pkt_free(q);
            return DNS_FORWARD;
        }
        r = zone_answer(t, q, wire, question);
    }
    v = to_wire(r, q, wire, max, out, out_len);
    ldns_pkt_free(q);
    return v;
}


enum dns_verdict
dns_servfail(const uint8_t *wire, size_t len, uint8_t **out, size_t *out_len)
{
    ldns_pkt  *q = NULL;
    enum dns_verdict  v;

    *out = NULL;
    if (len < LDNS_HEADER_SIZE || (q = query_parse(wire, len)) == NULL) {
        return DNS_DROP;
    }
    v = to_wire(reply_to(q, wire, LDNS_RCODE_SERVFAIL), q, wire, UINT16_MAX,
                out, out_len);
    ldns_pkt_free(q);
    return v;
}


/* the one question of a message, or NULL */
static ldns_rr *
question_of(const uint8_t *wire, size_t len)
{
    ldns_rr  *rr = NULL;
    size_t    pos = LDNS_HEADER_SIZE;

    if (len < LDNS_HEADER_SIZE || LDNS_QDCOUNT(wire) != 1
        || ldns_wire2rr(&rr, wire, len, &pos, LDNS_SECTION_QUESTION)
           != LDNS_STATUS_OK)
    {
        return NULL;
    }
    return rr;
}


bool
dns_answers_query(const uint8_t *q, size_t q_len, const uint8_t *a, size_t a_len)
{
    ldns_rr  *qq, *aq;
    bool      same;

    /* the header and question only: a truncated answer may end anywhere
     * after them */
    if (a_len < LDNS_HEADER_SIZE || q_len < LDNS_HEADER_SIZE
        || !LDNS_QR_WIRE(a) || LDNS_ID_WIRE(a) != LDNS_ID_WIRE(q))
    {
        return false;
    }
    qq = question_of(q, q_len);
    aq = question_of(a, a_len);
    same = qq != NULL && aq != NULL
           && ldns_rr_get_type(qq) == ldns_rr_get_type(aq)
           && ldns_rr_get_class(qq) == ldns_rr_get_class(aq)
           && ldns_dname_compare(ldns_rr_owner(qq), ldns_rr_owner(aq)) == 0;
    ldns_rr_free(qq);
    ldns_rr_free(aq);
    return same;
}
