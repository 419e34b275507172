/*
 * Who may hold a node name.  A name is one DNS label, <name>.dstack.internal
 * on every node, so it belongs to one app: the app the operator reserved it
 * for (--reserve-name NAME=APP_ID), else the app whose node holds it.  Other
 * apps are refused with 409 and a reason, never silently served.
 */

#ifndef CTLD_NAMES_H
#define CTLD_NAMES_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "lib/validate.h"

struct name_reservation {
    char  name[DNS_LABEL_MAX + 1];
    char  app_id[APP_ID_HEX_MAX + 1];
};

struct name_reservations {
    struct name_reservation  *v;
    size_t                    n;
};

/* "NAME=APP_ID,NAME=APP_ID" (NULL: none); -1 after printing why */
int   names_parse(const char *list, struct name_reservations *out);
void  names_free(struct name_reservations *res);

enum name_holder {
    NAME_ERROR = -1,            /* storage error */
    NAME_FREE,
    NAME_RESERVED,              /* reserved for another app */
    NAME_OTHER_APP,             /* a node of another app has it */
    NAME_SAME_APP               /* another node of this app has it */
};

/* may app_id's node `self` (0: a node not yet stored) be called `name`?
 * Runs on any connection. */
enum name_holder  names_check(const struct name_reservations *res, sqlite3 *db,
                              const char *name, const char *app_id,
                              int64_t self);
/* the 409 answer's reason */
const char       *names_why(enum name_holder h);

#endif
