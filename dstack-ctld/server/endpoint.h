/*
 * A joining node's endpoint: where the other nodes send its WireGuard
 * packets.  It must be a unicast address: a loopback, unspecified,
 * multicast, link-local or broadcast one would point every node of the
 * VPC at itself or at nothing.  A DNS name is resolved here, once, with a
 * bounded wait, so that the peer set carries an address that every node
 * uses as it is (and no node depends on a resolver of its own).
 */

#ifndef CTLD_ENDPOINT_H
#define CTLD_ENDPOINT_H

#include "lib/validate.h"

/*
 * in: a checked endpoint_valid() string.  0 with the numeric endpoint in
 * out, or an HTTP status (400 refused, 503 try later) with *why set.
 */
unsigned  endpoint_resolve(const char *in, char out[ENDPOINT_MAX + 1],
                           const char **why);

#endif
