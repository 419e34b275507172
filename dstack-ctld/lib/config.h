/*
 * Options shared by the command line and the config file.
 *
 * A role describes its settings once, as a table of struct opt; the same
 * table parses `--name value` / `--name=value` flags, reads `name = value`
 * lines of the config file and prints --help.
 *
 * Config file: `# comment`, `[section]`, `name = value`.  Lines before the
 * first section apply to every role; a role reads its own section and
 * ignores the others.  Values run to the end of the line (trimmed).
 */

#ifndef CTLD_CONFIG_H
#define CTLD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum opt_type {
    OPT_STRING,         /* char *, replaced on each set */
    OPT_BOOL,           /* bool; a bare --flag sets it */
    OPT_UINT,           /* uint64_t, 0..max */
    OPT_DURATION,       /* uint64_t seconds ("90", "15m", "1h"), 0..max */
    OPT_OCTAL,          /* uint64_t written in octal (file modes), 0..max */
    OPT_LIST            /* char *, repeatable: each set appends ",value" */
};

struct opt {
    const char     *name;
    enum opt_type   type;
    size_t          offset;     /* of the field in the settings struct */
    uint64_t        max;
    const char     *arg;        /* shown in --help */
    const char     *help;
    const char     *def;        /* default, as a config file writes it */
};

/* an environment variable that sets an option (empty means unset) */
struct opt_env {
    const char     *var;
    const char     *opt;
};

/*
 * A role's settings, each source overriding the one before: the table's
 * defaults, the config file (--config FILE, else $DSTACK_CTLD_CONFIG;
 * its "section"), the environment (env[0..nenv), later entries winning),
 * then argv.  Returns 0, 1 after --help, or -1 after printing why.
 */
int   settings_load(const struct opt *opts, void *cfg, const char *section,
                    const struct opt_env *env, size_t nenv,
                    int argc, char **argv,
                    char **positional, int max_pos, int *npos);

/*
 * Parses argv[0..argc) into cfg.  Non-option words are collected into
 * positional (at most max_pos); "--help" / "-h" set *help.  Errors are
 * printed to stderr; returns -1 then.
 */
int   opts_parse_argv(const struct opt *opts, void *cfg, int argc, char **argv,
                      char **positional, int max_pos, int *npos, bool *help);
int   opts_set(const struct opt *opts, void *cfg, const char *name,
               const char *value, const char *where);
int   config_load(const char *path, const char *section,
                  const struct opt *opts, void *cfg);
void  opts_usage(FILE *out, const struct opt *opts);
void  opts_free(const struct opt *opts, void *cfg);

/* finds "--config FILE" / "--config=FILE" in argv; NULL if absent */
const char *opts_find_config(int argc, char **argv);

#endif
