/*
 * Parsing of the option table. Everything about an option lives in its
 * row in options.h; this file only interprets rows.
 */
#include "cmd/options.h"

#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

struct row {
    const char *name;
    int         sh;
    const char *lg;
    opt_type_e  type;
    const char *def;
    uint64_t    min;
    uint64_t    max;
    const char *help;
    size_t      off;
};

#define OPT_ROW(n, sh, lg, t, def, mn, mx, h) \
    { #n, sh, lg, t, def, mn, mx, h, offsetof(struct options, n) },
static const struct row rows[] = {
    STASHD_OPTIONS(OPT_ROW)
};
#undef OPT_ROW

#define NROWS (sizeof(rows) / sizeof(rows[0]))

static int
parse_uint(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (s[0] < '0' || s[0] > '9') {
        return -1;
    }
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0') {
        return -1;
    }
    *out = v;
    return 0;
}

static int
parse_size(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    uint64_t mul = 1;

    if (s[0] < '0' || s[0] > '9') {
        return -1;
    }
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0) {
        return -1;
    }
    switch (*end) {
    case '\0':
        break;
    case 'k':
    case 'K':
        mul = 1024;
        end++;
        break;
    case 'm':
    case 'M':
        mul = 1024 * 1024;
        end++;
        break;
    case 'g':
    case 'G':
        mul = 1024 * 1024 * 1024;
        end++;
        break;
    default:
        return -1;
    }
    if (*end != '\0' || v > UINT64_MAX / mul) {
        return -1;
    }
    *out = v * mul;
    return 0;
}

static int
set_value(const struct row *r, struct opt *o, const char *arg, FILE *err)
{
    switch (r->type) {
    case OPT_FLAG:
        o->u = 1;
        return 0;
    case OPT_COUNT:
        o->u++;
        return 0;
    case OPT_STR:
        o->s = arg;
        return 0;
    case OPT_DOUBLE: {
        char *end;

        errno = 0;
        o->d = strtod(arg, &end);
        if (errno != 0 || *end != '\0' || end == arg ||
            !(o->d > (double)r->min) || o->d > 1e6) {
            fprintf(err, "stashd: --%s: '%s' is not a number above %llu\n",
                    r->lg, arg, (unsigned long long)r->min);
            return -1;
        }
        return 0;
    }
    case OPT_UINT:
    case OPT_SIZE: {
        int rc = r->type == OPT_UINT ? parse_uint(arg, &o->u)
                                     : parse_size(arg, &o->u);

        if (rc != 0 || o->u < r->min || o->u > r->max) {
            fprintf(err, "stashd: --%s: '%s' is not %s from %llu to %llu\n",
                    r->lg, arg, r->type == OPT_SIZE ? "a size" : "a number",
                    (unsigned long long)r->min, (unsigned long long)r->max);
            return -1;
        }
        return 0;
    }
    }
    return -1;
}

int
options_parse(struct options *o, int argc, char **argv, FILE *err)
{
    struct option lopts[NROWS + 1];
    char sopts[NROWS * 2 + 2];
    size_t ns = 0;
    int c;
    int idx;

    memset(o, 0, sizeof(*o));
    sopts[ns++] = ':';
    for (size_t i = 0; i < NROWS; i++) {
        const struct row *r = &rows[i];
        struct opt *op = (struct opt *)((char *)o + r->off);
        bool arg = r->type != OPT_FLAG && r->type != OPT_COUNT;

        lopts[i].name = r->lg;
        lopts[i].has_arg = arg ? required_argument : no_argument;
        lopts[i].flag = NULL;
        lopts[i].val = r->sh != 0 ? r->sh : 256 + (int)i;
        if (r->sh != 0) {
            sopts[ns++] = (char)r->sh;
            if (arg) {
                sopts[ns++] = ':';
            }
        }
        if (r->def != NULL && set_value(r, op, r->def, err) != 0) {
            return -1;
        }
    }
    memset(&lopts[NROWS], 0, sizeof(lopts[0]));
    sopts[ns] = '\0';
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, sopts, lopts, &idx)) != -1) {
        const struct row *r = NULL;

        if (c == '?') {
            if (optopt != 0) {
                fprintf(err, "stashd: unknown option -%c\n", optopt);
            } else {
                fprintf(err, "stashd: unknown option %s\n",
                        argv[optind - 1]);
            }
            return -1;
        }
        if (c == ':') {
            fprintf(err, "stashd: option %s needs a value\n",
                    argv[optind - 1]);
            return -1;
        }
        for (size_t i = 0; i < NROWS; i++) {
            if ((rows[i].sh != 0 && rows[i].sh == c) || 256 + (int)i == c) {
                r = &rows[i];
                break;
            }
        }
        if (r == NULL) {
            return -1;
        }
        if (set_value(r, (struct opt *)((char *)o + r->off), optarg,
                      err) != 0) {
            return -1;
        }
        ((struct opt *)((char *)o + r->off))->set = true;
    }
    if (optind < argc) {
        fprintf(err, "stashd: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    return 0;
}

void
options_help(FILE *out)
{
    fprintf(out, "Usage: stashd [options]\n"
            "A memcached-compatible server whose data can survive "
            "restarts.\n\n");
    for (size_t i = 0; i < NROWS; i++) {
        const struct row *r = &rows[i];
        char left[64];
        bool arg = r->type != OPT_FLAG && r->type != OPT_COUNT;

        if (r->sh != 0) {
            snprintf(left, sizeof(left), "-%c, --%s%s", r->sh, r->lg,
                     arg ? "=VALUE" : "");
        } else {
            snprintf(left, sizeof(left), "    --%s%s", r->lg,
                     arg ? "=VALUE" : "");
        }
        fprintf(out, "  %-32s %s", left, r->help);
        if (r->def != NULL) {
            fprintf(out, " (default: %s)", r->def);
        }
        fputc('\n', out);
    }
}
