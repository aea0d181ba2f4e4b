/* Shared pieces of the offline tools; see cli.h. */
#include "tools/cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static const char *cli__prog = "derrd";

void cli_init(const char *prog) { cli__prog = prog; }

_Noreturn void cli_die_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "%s: ", cli__prog);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(see %s --help)\n", cli__prog);
    exit(CLI_EXIT_USAGE);
}

long cli_parse_long(const char *opt, const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "%s: %s: '%s' is not an integer in [%ld, %ld]\n", cli__prog, opt, s, lo,
                hi);
        exit(CLI_EXIT_USAGE);
    }
    return v;
}

double cli_parse_double(const char *opt, const char *s, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "%s: %s: '%s' is not a number in [%g, %g]\n", cli__prog, opt, s, lo, hi);
        exit(CLI_EXIT_USAGE);
    }
    return v;
}

double cli_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cli_json_metrics(const char *name, const metrics_t *m)
{
    printf("\"%s\": {", name);
    for (int k = 0; k < METRICS_NK; k++)
        printf("%s\"HR@%d\": %.6f, \"NDCG@%d\": %.6f, \"MRR@%d\": %.6f", k ? ", " : "",
               metrics_k[k], m->hr[k], metrics_k[k], m->ndcg[k], metrics_k[k], m->mrr[k]);
    printf("}");
}
