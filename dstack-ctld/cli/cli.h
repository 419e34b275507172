/*
 * dstack-ctld/cli/: admin commands that ask a running server.
 *
 * Subcommands other than the roles: the admin CLI.
 */

#ifndef CTLD_CLI_H
#define CTLD_CLI_H

int  cli_nodes(int argc, char **argv);
int  cli_backup(int argc, char **argv);
int  cli_restore(int argc, char **argv);

#endif
