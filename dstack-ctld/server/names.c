/* Node names: operator reservations and the app that holds a name. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/names.h"
#include "server/store.h"


int
names_parse(const char *list, struct name_reservations *out)
{
    char  *copy, *save = NULL, *tok, *eq;

    memset(out, 0, sizeof(*out));
    if (list == NULL) {
        return 0;
    }
    copy = strdup(list);
    if (copy == NULL) {
        return -1;
    }
    for (tok = strtok_r(copy, ", \t", &save); tok != NULL;
         tok = strtok_r(NULL, ", \t", &save))
    {
        struct name_reservation  r, *grown;

        memset(&r, 0, sizeof(r));
        eq = strchr(tok, '=');
        if (eq == NULL || (size_t) (eq - tok) > DNS_LABEL_MAX
            || strlen(eq + 1) > APP_ID_HEX_MAX)
        {
            goto bad;
        }
        memcpy(r.name, tok, (size_t) (eq - tok));
        snprintf(r.app_id, sizeof(r.app_id), "%s", eq + 1);
        if (!dns_label_normalize(r.name) || !app_id_normalize(r.app_id)) {
            goto bad;
        }
        for (size_t i = 0; i < out->n; i++) {
            if (strcmp(out->v[i].name, r.name) == 0
                && strcmp(out->v[i].app_id, r.app_id) != 0)
            {
                fprintf(stderr, "reserve-name: \"%s\" is reserved for two apps\n",
                        r.name);
                free(copy);
                return -1;
            }
        }
        grown = realloc(out->v, (out->n + 1) * sizeof(*grown));
        if (grown == NULL) {
            free(copy);
            return -1;
        }
        out->v = grown;
        out->v[out->n++] = r;
    }
    free(copy);
    return 0;

bad:
    fprintf(stderr, "reserve-name: \"%s\" is not NAME=APP_ID (a DNS label and"
            " a hex app id)\n", tok);
    free(copy);
    return -1;
}


void
names_free(struct name_reservations *res)
{
    free(res->v);
    res->v = NULL;
    res->n = 0;
}


enum name_holder
names_check(const struct name_reservations *res, sqlite3 *db,
            const char *name, const char *app_id, int64_t self)
{
    sqlite3_stmt      *st;
    enum name_holder   h;
    int                rc;

    for (size_t i = 0; i < res->n; i++) {
        if (strcmp(res->v[i].name, name) == 0
            && strcmp(res->v[i].app_id, app_id) != 0)
        {
            return NAME_RESERVED;
        }
    }

    st = db_prepare(db, "SELECT app_id FROM nodes WHERE name = ?1 AND id != ?2");
    if (st == NULL) {
        return NAME_ERROR;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, self);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *holder = (const char *) sqlite3_column_text(st, 0);

        h = holder != NULL && strcmp(holder, app_id) == 0 ? NAME_SAME_APP
                                                          : NAME_OTHER_APP;
    } else {
        h = rc == SQLITE_DONE ? NAME_FREE : NAME_ERROR;
    }
    sqlite3_finalize(st);
    return h;
}


const char *
names_why(enum name_holder h)
{
    switch (h) {
    case NAME_RESERVED:
        return "name is reserved for another app";
    case NAME_OTHER_APP:
        return "name is held by a node of another app";
    case NAME_SAME_APP:
        return "name is taken by another node";
    default:
        return "storage error";
    }
}
