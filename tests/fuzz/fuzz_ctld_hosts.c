/*
 * libFuzzer target: the hosts block rewrite (hosts_splice), on any old
 * hosts file.  Input: one byte choosing the block, then the old file.
 *
 * What must hold: the new text holds the block between its marks; the
 * text before an old block (or the whole file, when it has none) stays;
 * and writing the same block again changes nothing, so a node does not
 * rewrite, or grow, the file on every update.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "node/node.h"

#define BEGIN_LINE  "# BEGIN dstack-ctld\n"
#define END_LINE    "# END dstack-ctld\n"



int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const blocks[] = {
        "",
        "100.128.0.1 vpc-server.dstack.internal\n",
        "100.128.0.2 db-1.dstack.internal\n100.128.0.1 vpc-server.dstack.internal\n",
    };
    const char  *block;
    char        *old, *text, *again, *want;
    size_t       old_len, len, again_len, want_len;
    bool         unterminated;

    if (size == 0) {
        return 0;
    }
    block = blocks[data[0] % (sizeof(blocks) / sizeof(blocks[0]))];
    /* as the node reads a file: its bytes and a NUL after them */
    old_len = size - 1;
    old = malloc(old_len + 1);
    check(old != NULL);
    memcpy(old, data + 1, old_len);
    old[old_len] = '\0';

    text = hosts_splice(old, old_len, block, &len, &unterminated);
    check(text != NULL && text[len] == '\0');

    want_len = strlen(BEGIN_LINE) + strlen(block) + strlen(END_LINE);
    want = malloc(want_len + 1);
    check(want != NULL);
    strcpy(want, BEGIN_LINE);
    strcat(want, block);
    strcat(want, END_LINE);
    check(memmem(text, len, want, want_len) != NULL);
    if (memmem(old, old_len, "# BEGIN dstack-ctld", 19) == NULL) {
        check(len >= old_len && memcmp(text, old, old_len) == 0);
    }

    again = hosts_splice(text, len, block, &again_len, &unterminated);
    check(again != NULL && !unterminated);
    check(again_len == len && memcmp(again, text, len) == 0);

    free(again);
    free(want);
    free(text);
    free(old);
    return 0;
}
