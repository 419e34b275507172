/*
 * libFuzzer target: the query arguments of the server's register,
 * nodes/update and peer poll, as libmicrohttpd hands them over (a value
 * with its length, which may hide a NUL; or no value; or no argument).
 *
 * Input: one byte choosing the call, then the arguments split at '&';
 * an argument's first byte 0 means absent, 1 present without a value,
 * anything else a value of the bytes that follow.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/validate.h"
#include "server/api_input.h"

#define ARGS  4


static void
check(int ok)
{
    if (!ok) {
        abort();
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct api_arg           a[ARGS];
    struct register_op       reg;
    struct legacy_update_op  upd;
    struct peers_args        peers;
    char                    *buf[ARGS] = { NULL }, label[DNS_LABEL_MAX + 1];
    const char              *p, *end, *amp, *why;
    size_t                   i, len;

    if (size == 0) {
        return 0;
    }
    p = (const char *) data + 1;
    end = (const char *) data + size;
    for (i = 0; i < ARGS; i++) {
        memset(&a[i], 0, sizeof(a[i]));
        if (p >= end) {
            continue;
        }
        amp = memchr(p, '&', (size_t) (end - p));
        len = (size_t) ((amp ? amp : end) - p);
        if (len > 0 && p[0] != 0) {
            a[i].present = true;
            if (p[0] != 1) {
                /* a copy of its own, so ASan sees every overread */
                buf[i] = malloc(len);
                memcpy(buf[i], p + 1, len - 1);
                buf[i][len - 1] = '\0';
                a[i].value = buf[i];
                a[i].len = len - 1;
            }
        }
        p = amp ? amp + 1 : end;
    }

    switch (data[0] % 3) {
    case 0:
        memset(&reg, 0, sizeof(reg));
        why = api_register_args(&a[0], &a[1], &reg);
        if (why == NULL) {
            check(ident_valid(reg.instance_id, INSTANCE_ID_MAX));
            memcpy(label, reg.node_name, sizeof(label));
            check(label[0] == '\0'
                  || (dns_label_normalize(label)
                      && strcmp(label, reg.node_name) == 0));
        }
        break;
    case 1:
        memset(&upd, 0, sizeof(upd));
        why = api_update_args(&a[0], &a[1], &a[2], &a[3], &upd);
        if (why == NULL) {
            check(upd.uuid[0] != '\0'
                  && text_valid(upd.uuid, strlen(upd.uuid), LEGACY_UUID_MAX));
            check(upd.node_type[0] == '\0'
                  || ident_valid(upd.node_type, LEGACY_TYPE_MAX));
            check(upd.tailscale_ip[0] == '\0' || ip_valid(upd.tailscale_ip));
            check(strchr(upd.hostname, ' ') == NULL);
        }
        break;
    default:
        why = api_peers_args(&a[0], &a[1], &a[2], &peers);
        if (why == NULL) {
            check(peers.since <= INT64_MAX && peers.wait <= UINT32_MAX);
            check(!peers.has_epoch || strlen(peers.epoch) == EPOCH_LEN);
        }
        break;
    }
    check(why == NULL || (why[0] != '\0' && strlen(why) < API_MSG_MAX));

    for (i = 0; i < ARGS; i++) {
        free(buf[i]);
    }
    return 0;
}
