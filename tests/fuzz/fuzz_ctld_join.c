/*
 * libFuzzer target: the body of POST /api/v1/join, from the bytes
 * received to the checked fields of the join (api_input.h).
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "lib/validate.h"
#include "server/api_input.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct join_op  op;
    char            msg[API_MSG_MAX], label[DNS_LABEL_MAX + 1];
    const char     *why = NULL;
    json_t         *body;
    unsigned        status;
    bool            with_peers = true, snapshot = true;

    body = api_json_object((const char *) data, size, &why);
    if (body == NULL) {
        check(why != NULL);
        return 0;
    }
    memset(&op, 0, sizeof(op));
    msg[0] = '\0';
    status = api_join_body(body, &op, &with_peers, &snapshot, msg);
    json_decref(body);

    check(status == 0 || status == 400 || status == 401);
    if (status != 0) {
        check(msg[0] != '\0');
        return 0;
    }
    check(wg_key_valid(op.public_key));
    check(op.endpoint[0] == '\0' || endpoint_valid(op.endpoint));
    memcpy(label, op.name, sizeof(label));
    check(op.name[0] == '\0'
          || (dns_label_normalize(label) && strcmp(label, op.name) == 0));
    return 0;
}
