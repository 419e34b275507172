/*
 * Proof that a data directory's peer-set history is continuous.
 *
 * Nodes apply deltas between versions of one epoch.  A database put back
 * from an older copy keeps its epoch while its version moves back, so a
 * node could apply a delta from another history.  <data-dir>/history holds
 * "<epoch> <version>": the highest version the server of this directory
 * has handed out (noted whenever a version is taken, before any client can
 * see it).  At start the database must carry the same epoch and at least
 * that version; otherwise (an older copy, another database, no history
 * file beside an existing database) its history cannot be proven
 * continuous and the server gives it a new epoch, so every node takes a
 * snapshot.
 */

#ifndef CTLD_HISTORY_H
#define CTLD_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HISTORY_FILE  "history"

struct history {
    int   fd;               /* -1 when not open */
    bool  write_failed;     /* logged once */
};

/* opens (creates) <data_dir>/history; -1 after logging why */
int   history_open(struct history *h, const char *data_dir);
/*
 * Whether the database's (epoch, version) continues what the file holds;
 * a database created just now continues nothing and needs no proof.  why
 * receives the reason when it does not.
 */
bool  history_continues(struct history *h, const char *epoch, uint64_t version,
                        bool db_created, char *why, size_t whysz);
/* records (epoch, version); sync also makes it durable */
void  history_note(struct history *h, const char *epoch, uint64_t version,
                   bool sync);
void  history_close(struct history *h);

#endif
