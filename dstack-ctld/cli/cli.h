/*
 * dstack-ctld/cli/: commands that ask a running server or node.
 *
 * Subcommands other than the roles: the admin CLI, and `status`, which
 * asks a running node.
 */

#ifndef CTLD_CLI_H
#define CTLD_CLI_H

int  cli_nodes(int argc, char **argv);
int  cli_backup(int argc, char **argv);
int  cli_restore(int argc, char **argv);
int  cli_status(int argc, char **argv);

#endif
