/* Option tables: command line, config file and --help from one description. */

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lib/config.h"
#include "lib/util.h"


static const struct opt *
opt_find(const struct opt *opts, const char *name, size_t len)
{
    for (; opts->name != NULL; opts++) {
        if (strlen(opts->name) == len && strncmp(opts->name, name, len) == 0) {
            return opts;
        }
    }
    return NULL;
}


static int
opt_apply(const struct opt *o, void *cfg, const char *value, const char *where)
{
    char      *field = (char *) cfg + o->offset;
    uint64_t   v;
    bool       b;
    char      *copy;

    switch (o->type) {
    case OPT_STRING:
        copy = strdup(value);
        if (copy == NULL) {
            fprintf(stderr, "%s: out of memory\n", where);
            return -1;
        }
        free(*(char **) field);
        *(char **) field = copy;
        return 0;

    case OPT_LIST:
        /* every source adds to the list: config lines, then flags */
        if (*(char **) field == NULL) {
            copy = strdup(value);
        } else if (asprintf(&copy, "%s,%s", *(char **) field, value) < 0) {
            copy = NULL;
        }
        if (copy == NULL) {
            fprintf(stderr, "%s: out of memory\n", where);
            return -1;
        }
        free(*(char **) field);
        *(char **) field = copy;
        return 0;

    case OPT_BOOL:
        if (!parse_bool(value, &b)) {
            fprintf(stderr, "%s: %s wants yes or no, not \"%s\"\n",
                    where, o->name, value);
            return -1;
        }
        *(bool *) field = b;
        return 0;

    case OPT_UINT:
        if (!parse_u64(value, o->max, &v)) {
            fprintf(stderr, "%s: %s wants a number 0..%llu, not \"%s\"\n",
                    where, o->name, (unsigned long long) o->max, value);
            return -1;
        }
        *(uint64_t *) field = v;
        return 0;

    case OPT_OCTAL:
        v = 0;
        for (const char *c = value; ; c++) {
            if (*c == '\0' && c != value) {
                break;
            }
            if (*c < '0' || *c > '7' || v > o->max / 8) {
                fprintf(stderr, "%s: %s wants an octal number up to %llo,"
                        " not \"%s\"\n", where, o->name,
                        (unsigned long long) o->max, value);
                return -1;
            }
            v = v * 8 + (uint64_t) (*c - '0');
        }
        if (v > o->max) {
            fprintf(stderr, "%s: %s is above %llo\n", where, o->name,
                    (unsigned long long) o->max);
            return -1;
        }
        *(uint64_t *) field = v;
        return 0;

    case OPT_DURATION:
        if (!parse_duration_s(value, &v) || v > o->max) {
            fprintf(stderr, "%s: %s wants a duration up to %llus "
                    "(e.g. 30s, 15m, 1h), not \"%s\"\n",
                    where, o->name, (unsigned long long) o->max, value);
            return -1;
        }
        *(uint64_t *) field = v;
        return 0;
    }
    return -1;
}


int
opts_set(const struct opt *opts, void *cfg, const char *name,
         const char *value, const char *where)
{
    const struct opt *o = opt_find(opts, name, strlen(name));

    if (o == NULL) {
        fprintf(stderr, "%s: unknown option \"%s\"\n", where, name);
        return -1;
    }
    return opt_apply(o, cfg, value, where);
}


int
opts_parse_argv(const struct opt *opts, void *cfg, int argc, char **argv,
                char **positional, int max_pos, int *npos, bool *help)
{
    *npos = 0;
    *help = false;

    for (int i = 0; i < argc; i++) {
        const char        *a = argv[i], *eq, *value;
        const struct opt  *o;
        size_t             len;

        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            *help = true;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            for (i++; i < argc; i++) {
                if (*npos == max_pos) {
                    fprintf(stderr, "unexpected argument \"%s\"\n", argv[i]);
                    return -1;
                }
                positional[(*npos)++] = argv[i];
            }
            break;
        }
        if (strncmp(a, "--", 2) != 0) {
            if (*npos == max_pos) {
                fprintf(stderr, "unexpected argument \"%s\"\n", a);
                return -1;
            }
            positional[(*npos)++] = argv[i];
            continue;
        }

        a += 2;
        eq = strchr(a, '=');
        len = eq ? (size_t) (eq - a) : strlen(a);

        if (len == 6 && strncmp(a, "config", 6) == 0) {
            /* read before everything else by opts_find_config() */
            i += eq ? 0 : 1;
            continue;
        }
        o = opt_find(opts, a, len);
        if (o == NULL) {
            fprintf(stderr, "unknown option --%.*s (see --help)\n", (int) len, a);
            return -1;
        }
        if (eq != NULL) {
            value = eq + 1;
        } else if (o->type == OPT_BOOL) {
            value = "yes";
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            fprintf(stderr, "option --%s needs a value\n", o->name);
            return -1;
        }
        if (opt_apply(o, cfg, value, "command line") != 0) {
            return -1;
        }
    }
    return 0;
}


const char *
opts_find_config(int argc, char **argv)
{
    const char *path = NULL;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            break;
        }
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            path = argv[i] + 9;
        }
    }
    return path;
}


static char *
trim(char *s)
{
    char *end;

    while (isspace((unsigned char) *s)) {
        s++;
    }
    end = s + strlen(s);
    while (end > s && isspace((unsigned char) end[-1])) {
        *--end = '\0';
    }
    return s;
}


int
config_load(const char *path, const char *section, const struct opt *opts,
            void *cfg)
{
    FILE    *f;
    char     line[4096], where[512];
    char    *p, *eq, *hash;
    int      lineno = 0, rc = 0;
    bool     mine = true;       /* lines before any [section] are for all */

    f = fopen(path, "re");
    if (f == NULL) {
        fprintf(stderr, "cannot open config %s: %s\n", path, strerror(errno));
        return -1;
    }

    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        snprintf(where, sizeof(where), "%s:%d", path, lineno);

        if (strchr(line, '\n') == NULL && !feof(f)) {
            fprintf(stderr, "%s: line too long\n", where);
            rc = -1;
            break;
        }
        hash = strchr(line, '#');
        if (hash != NULL) {
            *hash = '\0';
        }
        p = trim(line);
        if (*p == '\0') {
            continue;
        }
        if (*p == '[') {
            char *close = strchr(p, ']');
            if (close == NULL || close[1] != '\0') {
                fprintf(stderr, "%s: malformed section header\n", where);
                rc = -1;
                break;
            }
            *close = '\0';
            mine = strcmp(trim(p + 1), section) == 0;
            continue;
        }
        eq = strchr(p, '=');
        if (eq == NULL) {
            fprintf(stderr, "%s: expected \"name = value\"\n", where);
            rc = -1;
            break;
        }
        if (!mine) {
            continue;
        }
        *eq = '\0';
        if (opts_set(opts, cfg, trim(p), trim(eq + 1), where) != 0) {
            rc = -1;
            break;
        }
    }

    fclose(f);
    return rc;
}


void
opts_usage(FILE *out, const struct opt *opts)
{
    char  left[64];

    fprintf(out, "  %-28s %s\n", "--config FILE",
            "read settings from FILE first (flags override it)");
    for (; opts->name != NULL; opts++) {
        snprintf(left, sizeof(left), "--%s%s%s", opts->name,
                 opts->arg ? " " : "", opts->arg ? opts->arg : "");
        fprintf(out, "  %-28s ", left);
        /* continuation lines of a help text line up under its first line */
        for (const char *h = opts->help; *h != '\0'; h++) {
            if (*h == '\n') {
                fprintf(out, "\n  %-28s ", "");
            } else {
                fputc(*h, out);
            }
        }
        fputc('\n', out);
    }
}


void
opts_free(const struct opt *opts, void *cfg)
{
    for (; opts->name != NULL; opts++) {
        if (opts->type == OPT_STRING || opts->type == OPT_LIST) {
            char **field = (char **) ((char *) cfg + opts->offset);
            free(*field);
            *field = NULL;
        }
    }
}


int
settings_load(const struct opt *opts, void *cfg, const char *section,
              const struct opt_env *env, size_t nenv, int argc, char **argv,
              char **positional, int max_pos, int *npos)
{
    const char  *path, *value;
    bool         help;

    for (const struct opt *o = opts; o->name != NULL; o++) {
        if (o->def != NULL && opt_apply(o, cfg, o->def, "default") != 0) {
            return -1;
        }
    }

    path = opts_find_config(argc, argv);
    if (path == NULL) {
        path = getenv("DSTACK_CTLD_CONFIG");
    }
    if (path != NULL && config_load(path, section, opts, cfg) != 0) {
        return -1;
    }

    for (size_t i = 0; i < nenv; i++) {
        value = getenv(env[i].var);
        if (value != NULL && value[0] != '\0'
            && opts_set(opts, cfg, env[i].opt, value, env[i].var) != 0)
        {
            return -1;
        }
    }

    if (opts_parse_argv(opts, cfg, argc, argv, positional, max_pos, npos,
                        &help) != 0)
    {
        return -1;
    }
    return help ? 1 : 0;
}
