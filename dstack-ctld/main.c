/*
 * dstack-ctld: one binary, roles and admin commands as subcommands.
 * This file only dispatches; each subcommand parses its own options.
 */

#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "cli/cli.h"
#include "node/node.h"
#include "server/server.h"

#define CTLD_VERSION  "0.1.0"

struct command {
    const char  *name;
    int        (*run)(int argc, char **argv);
    const char  *summary;
};

static const struct command  commands[] = {
    { "server", server_main, "run the VPC server (registry, keys, addresses, peers)" },
    { "node",   node_main,   "join this CVM to the VPC and drive its WireGuard (or --hub)" },
    { "nodes",  cli_nodes,   "list or remove nodes of a running server (admin)" },
    { "backup", cli_backup,  "copy the server's database, running or not (admin)" },
    { "restore", cli_restore, "put a backup back, server stopped; new epoch (admin)" },
    { "status", cli_status,  "the VPC as the running node (or --hub) sees it" },
};


static void
usage(FILE *out)
{
    fprintf(out,
        "usage: dstack-ctld <command> [options]\n"
        "       dstack-ctld <command> --help\n"
        "\n"
        "The dstack VPC control daemon.\n"
        "\n"
        "commands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    }
    fprintf(out,
        "  %-8s %s\n\n", "version", "print the version");
    server_usage(out);
}


int
main(int argc, char **argv)
{
    int  rc;

    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0
        || strcmp(argv[1], "help") == 0)
    {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("dstack-ctld %s\n", CTLD_VERSION);
        return 0;
    }

    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(argv[1], commands[i].name) == 0) {
            curl_global_init(CURL_GLOBAL_DEFAULT);
            rc = commands[i].run(argc - 2, argv + 2);
            curl_global_cleanup();
            return rc;
        }
    }
    fprintf(stderr, "dstack-ctld: unknown command \"%s\" (see --help)\n", argv[1]);
    return 2;
}
