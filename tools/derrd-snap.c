/*
 * derrd-snap: verify, describe, query and evaluate a student snapshot
 * (docs/SNAPSHOT.md), the way serving will read it.
 *
 *   derrd-snap verify FILE|DIR
 *   derrd-snap info FILE|DIR [--json]
 *   derrd-snap recommend FILE|DIR --user ID [-k N] [--exclude ID,ID...]
 *   derrd-snap eval FILE|DIR --data DIR [--json] [--threads N]
 *
 * A DIR means DIR/latest. Exit 0 on success, 1 when the snapshot does not
 * verify or the query fails, 2 on usage errors. Run with --help for more.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io/dataset.h"
#include "io/snapshot.h"
#include "model/metrics.h"
#include "model/mf.h"
#include "model/pool.h"

#define EXIT_USAGE 2

static const char *usage_text =
    "usage: derrd-snap COMMAND FILE|DIR [options]\n"
    "\n"
    "Reads a derrd student snapshot (student-<version>.dsnap; a directory means\n"
    "its `latest`), verifying every checksum and count first.\n"
    "\n"
    "  verify FILE|DIR             print \"ok: <summary>\", or the reason it is refused\n"
    "  info FILE|DIR [--json]      metadata, Kafka offsets, quality, sizes\n"
    "  recommend FILE|DIR --user ID [-k N] [--exclude ID,ID...]\n"
    "                              top-N items for a user: rank, item id, score\n"
    "  eval FILE|DIR --data DIR [--json] [--threads N]\n"
    "                              leave-one-out HR/NDCG/MRR on a dataset directory\n"
    "\n"
    "`derrd-snap COMMAND --help` describes one command. Exit status: 0 ok, 1 the\n"
    "snapshot does not verify or the query fails, 2 usage errors.\n";

static const char *verify_usage =
    "usage: derrd-snap verify FILE|DIR\n"
    "\n"
    "Reads and verifies the snapshot (header and payload checksums, the zstd\n"
    "frame checksum, every count and length, unique ids, finite embeddings).\n"
    "Prints \"ok: <summary>\" and exits 0, or prints the reason and exits 1.\n";

static const char *info_usage =
    "usage: derrd-snap info FILE|DIR [--json]\n"
    "\n"
    "Prints the snapshot's metadata: version, creation time, teacher version,\n"
    "training round, dim, users, items, the Kafka topic and offsets it covers,\n"
    "the round's quality figures, and its file and raw (decompressed) sizes.\n"
    "\n"
    "  --json    one JSON object instead of text\n";

static const char *recommend_usage =
    "usage: derrd-snap recommend FILE|DIR --user ID [-k N] [--exclude ID,ID...]\n"
    "\n"
    "Prints the N highest-scoring items for user ID (score = dot product), one\n"
    "per line: rank (from 1), item id, score, tab-separated. Unknown user: exit 1.\n"
    "\n"
    "  --user ID          external user id\n"
    "  -k, --k N          how many items (default 10)\n"
    "  --exclude LIST     comma-separated item ids to leave out (unknown ones are\n"
    "                     ignored with a warning)\n";

static const char *eval_usage =
    "usage: derrd-snap eval FILE|DIR --data DIR [--json] [--threads N]\n"
    "\n"
    "Leave-one-out HR, NDCG and MRR at 5, 10, 20 of the snapshot on a dataset in\n"
    "the shared format (DIR/train.tsv, valid.tsv, test.tsv, candidates.tsv),\n"
    "computed exactly as derrd-train does. The snapshot's ids must be the\n"
    "decimal dataset ids (\"42\"); users without a snapshot row are left out and\n"
    "counted, items without one score 0.\n"
    "\n"
    "  --data DIR         dataset directory\n"
    "  --json             one JSON object as the last line of stdout\n"
    "  --threads N        worker threads (default: online CPUs)\n";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static _Noreturn void die_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "derrd-snap: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(see derrd-snap --help)\n");
    exit(EXIT_USAGE);
}

static long parse_long(const char *opt, const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "derrd-snap: %s: '%s' is not an integer in [%ld, %ld]\n", opt, s, lo, hi);
        exit(EXIT_USAGE);
    }
    return v;
}

/* Opens and verifies, or exits 1 with the reason. */
static snapshot_t *open_or_die(const char *path)
{
    snapshot_t *s;
    char err[1024];
    if (snapshot_open(path, &s, err, sizeof(err)) < 0) {
        fprintf(stderr, "derrd-snap: %s\n", err);
        exit(1);
    }
    return s;
}

/* After a command's getopt_long loop (which moves the operands to the end):
 * takes the one operand, the snapshot FILE or DIR, into *path, or exits 2. */
static void need_path(int argc, char **argv, const char **path, const char *cmd)
{
    if (optind < argc && !*path)
        *path = argv[optind++];
    if (optind < argc)
        die_usage("unexpected argument '%s'", argv[optind]);
    if (!*path)
        die_usage("%s needs a snapshot FILE or DIR", cmd);
}

static void json_str(const char *s, size_t n)
{
    putchar('"');
    for (size_t k = 0; k < n; k++) {
        unsigned char ch = (unsigned char)s[k];
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static void json_num(double v)
{
    if (isfinite(v))
        printf("%.9g", v);
    else
        printf("null");
}

static int64_t count_empty(const uint16_t *len, int64_t n)
{
    int64_t e = 0;
    for (int64_t r = 0; r < n; r++)
        e += len[r] == 0;
    return e;
}

/* ---- verify, info --------------------------------------------------------- */

static int cmd_verify(int argc, char **argv)
{
    const char *path = NULL;
    enum { O_HELP = 256 };
    static const struct option opts[] = { { "help", no_argument, 0, O_HELP }, { 0, 0, 0, 0 } };
    int c;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case O_HELP: fputs(verify_usage, stdout); return 0;
        case ':': die_usage("option '%s' needs a value", argv[optind - 1]);
        default: die_usage("unknown option '%s'", argv[optind - 1]);
        }
    }
    need_path(argc, argv, &path, "verify");
    snapshot_t *s = open_or_die(path);
    const snapshot_desc_t *d = snapshot_desc(s);
    snapshot_size_t sz;
    snapshot_size(s, &sz);
    printf("ok: %s: version %" PRIu64 ", round %" PRIu64 ", dim %d, %" PRId64 " users, %" PRId64
           " items, %" PRIu64 " bytes (%" PRIu64 " raw)\n", path, d->version, d->round, d->dim,
           d->n_users, d->n_items, sz.file_bytes, sz.raw_bytes);
    snapshot_free(s);
    return 0;
}

static int cmd_info(int argc, char **argv)
{
    const char *path = NULL;
    int json = 0;
    enum { O_JSON = 256, O_HELP };
    static const struct option opts[] = {
        { "json", no_argument, 0, O_JSON },
        { "help", no_argument, 0, O_HELP },
        { 0, 0, 0, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case O_JSON: json = 1; break;
        case O_HELP: fputs(info_usage, stdout); return 0;
        case ':': die_usage("option '%s' needs a value", argv[optind - 1]);
        default: die_usage("unknown option '%s'", argv[optind - 1]);
        }
    }
    need_path(argc, argv, &path, "info");
    snapshot_t *s = open_or_die(path);
    const snapshot_desc_t *d = snapshot_desc(s);
    const snapshot_quality_t *q = &d->quality;
    snapshot_size_t sz;
    snapshot_size(s, &sz);
    int64_t eu = count_empty(d->user_id_len, d->n_users);
    int64_t ei = count_empty(d->item_id_len, d->n_items);
    if (json) {
        printf("{\"version\": %" PRIu64 ", \"created_ms\": %" PRIu64 ", \"teacher_version\": %"
               PRIu64 ", \"round\": %" PRIu64 ", \"dim\": %d, \"n_users\": %" PRId64
               ", \"n_items\": %" PRId64 ", \"users_without_id\": %" PRId64
               ", \"items_without_id\": %" PRId64 ", \"topic\": ", d->version, d->created_ms,
               d->teacher_version, d->round, d->dim, d->n_users, d->n_items, eu, ei);
        json_str(d->topic, strlen(d->topic));
        printf(", \"offsets\": [");
        for (int32_t k = 0; k < d->n_pos; k++)
            printf("%s{\"partition\": %d, \"offset\": %" PRId64 "}", k ? ", " : "",
                   d->pos[k].partition, d->pos[k].offset);
        printf("], \"quality\": {\"hr10\": ");
        json_num(q->hr10);
        printf(", \"ndcg10\": ");
        json_num(q->ndcg10);
        printf(", \"teacher_hr10\": ");
        json_num(q->teacher_hr10);
        printf(", \"teacher_ndcg10\": ");
        json_num(q->teacher_ndcg10);
        printf(", \"eval_users\": %" PRId64 "}, \"file_bytes\": %" PRIu64 ", \"raw_bytes\": %"
               PRIu64 "}\n", q->eval_users, sz.file_bytes, sz.raw_bytes);
    } else {
        time_t t = (time_t)(d->created_ms / 1000);
        struct tm tm;
        char when[64] = "?";
        if (gmtime_r(&t, &tm))
            strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
        printf("version          %" PRIu64 "\n", d->version);
        printf("created          %s.%03uZ (%" PRIu64 " ms)\n", when,
               (unsigned)(d->created_ms % 1000), d->created_ms);
        printf("teacher version  %" PRIu64 "\n", d->teacher_version);
        printf("round            %" PRIu64 "\n", d->round);
        printf("dim              %d\n", d->dim);
        printf("users            %" PRId64 " (%" PRId64 " erased)\n", d->n_users, eu);
        printf("items            %" PRId64 " (%" PRId64 " without id)\n", d->n_items, ei);
        printf("topic            %s\n", d->topic[0] ? d->topic : "(none)");
        printf("offsets          %d partition%s", d->n_pos, d->n_pos == 1 ? "" : "s");
        for (int32_t k = 0; k < d->n_pos; k++)
            printf("%s%d:%" PRId64, k ? " " : ": ", d->pos[k].partition, d->pos[k].offset);
        printf("\n");
        if (isnan(q->hr10) && isnan(q->ndcg10))
            printf("quality          not measured\n");
        else if (isnan(q->teacher_hr10) && isnan(q->teacher_ndcg10))
            printf("quality          HR@10 %.4f NDCG@10 %.4f on %" PRId64 " users (teacher not "
                   "measured)\n", q->hr10, q->ndcg10, q->eval_users);
        else
            printf("quality          HR@10 %.4f NDCG@10 %.4f on %" PRId64 " users (teacher "
                   "HR@10 %.4f NDCG@10 %.4f)\n", q->hr10, q->ndcg10, q->eval_users,
                   q->teacher_hr10, q->teacher_ndcg10);
        printf("size             %" PRIu64 " bytes, %" PRIu64 " raw (%.2fx)\n", sz.file_bytes,
               sz.raw_bytes, sz.file_bytes ? (double)sz.raw_bytes / (double)sz.file_bytes : 0.0);
    }
    snapshot_free(s);
    return 0;
}

/* ---- recommend ------------------------------------------------------------- */

static int cmd_recommend(int argc, char **argv)
{
    const char *path = NULL, *user = NULL, *exclude = NULL;
    long k = 10;
    enum { O_USER = 256, O_EXCLUDE, O_HELP };
    static const struct option opts[] = {
        { "user", required_argument, 0, O_USER },
        { "k", required_argument, 0, 'k' },
        { "exclude", required_argument, 0, O_EXCLUDE },
        { "help", no_argument, 0, O_HELP },
        { 0, 0, 0, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, ":k:", opts, NULL)) != -1) {
        switch (c) {
        case O_USER: user = optarg; break;
        case 'k': k = parse_long("-k", optarg, 1, 1000000); break;
        case O_EXCLUDE: exclude = optarg; break;
        case O_HELP: fputs(recommend_usage, stdout); return 0;
        case ':': die_usage("option '%s' needs a value", argv[optind - 1]);
        default: die_usage("unknown option '%s'", argv[optind - 1]);
        }
    }
    need_path(argc, argv, &path, "recommend");
    if (!user)
        die_usage("%s", "recommend needs --user ID");
    snapshot_t *s = open_or_die(path);
    const snapshot_desc_t *d = snapshot_desc(s);
    int status = 1;
    int64_t *ex = NULL, *items = NULL;
    float *scores = NULL;
    int n_ex = 0;
    int64_t u = snapshot_user_row(s, user, strlen(user));
    if (u < 0) {
        fprintf(stderr, "derrd-snap: unknown user '%s'\n", user);
        goto out;
    }
    if (exclude) {
        size_t cap = 1;
        for (const char *p = exclude; *p; p++)
            cap += *p == ',';
        ex = malloc(cap * sizeof(*ex));
        if (!ex)
            goto nomem;
        for (const char *p = exclude;;) {
            const char *q = strchr(p, ',');
            size_t n = q ? (size_t)(q - p) : strlen(p);
            int64_t row = snapshot_item_row(s, p, n);
            if (row >= 0)
                ex[n_ex++] = row;
            else if (n)
                fprintf(stderr, "derrd-snap: --exclude: unknown item '%.*s' (ignored)\n",
                        (int)n, p);
            if (!q)
                break;
            p = q + 1;
        }
    }
    items = malloc((size_t)k * sizeof(*items));
    scores = malloc((size_t)k * sizeof(*scores));
    if (!items || !scores)
        goto nomem;
    int n = snapshot_recommend(s, u, (int)k, ex, n_ex, items, scores);
    if (n < 0) {
        fprintf(stderr, "derrd-snap: recommend: %s\n", strerror(-n));
        goto out;
    }
    for (int r = 0; r < n; r++) {
        printf("%d\t", r + 1);
        fwrite(d->item_ids[items[r]], 1, d->item_id_len[items[r]], stdout);
        printf("\t%.9g\n", (double)scores[r]);
    }
    status = 0;
    goto out;
nomem:
    fprintf(stderr, "derrd-snap: out of memory\n");
out:
    free(ex);
    free(items);
    free(scores);
    snapshot_free(s);
    return status;
}

/* ---- eval ------------------------------------------------------------------ */

/* A canonical decimal id below limit ("0", "42"; not "042", "+4", "4 ").
 * Returns it, or -1. */
static int64_t parse_dataset_id(const char *s, size_t n, int64_t limit)
{
    if (n == 0 || n > 10 || (n > 1 && s[0] == '0'))
        return -1;
    int64_t v = 0;
    for (size_t k = 0; k < n; k++) {
        if (s[k] < '0' || s[k] > '9')
            return -1;
        v = v * 10 + (s[k] - '0');
    }
    return v < limit ? v : -1;
}

/* Copies the snapshot rows whose ids name dataset rows into dst (n, dim);
 * has[id] = 1 for each (may be NULL). Returns how many ids were not
 * dataset ids. */
static int64_t place_rows(float *dst, int32_t n, const float *src, const char *const *ids,
                          const uint16_t *len, int64_t rows, int32_t dim, unsigned char *has)
{
    int64_t stray = 0;
    for (int64_t r = 0; r < rows; r++) {
        if (len[r] == 0)
            continue;
        int64_t id = parse_dataset_id(ids[r], len[r], n);
        if (id < 0) {
            stray++;
            continue;
        }
        memcpy(dst + id * dim, src + r * dim, (size_t)dim * sizeof(float));
        if (has)
            has[id] = 1;
    }
    return stray;
}

static void json_metrics(const char *name, const metrics_t *m)
{
    printf("\"%s\": {", name);
    for (int k = 0; k < METRICS_NK; k++)
        printf("%s\"HR@%d\": %.6f, \"NDCG@%d\": %.6f, \"MRR@%d\": %.6f", k ? ", " : "",
               metrics_k[k], m->hr[k], metrics_k[k], m->ndcg[k], metrics_k[k], m->mrr[k]);
    printf("}");
}

static int cmd_eval(int argc, char **argv)
{
    const char *path = NULL, *data = NULL;
    int json = 0;
    long threads = sysconf(_SC_NPROCESSORS_ONLN);
    enum { O_DATA = 256, O_JSON, O_THREADS, O_HELP };
    static const struct option opts[] = {
        { "data", required_argument, 0, O_DATA },
        { "json", no_argument, 0, O_JSON },
        { "threads", required_argument, 0, O_THREADS },
        { "help", no_argument, 0, O_HELP },
        { 0, 0, 0, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case O_DATA: data = optarg; break;
        case O_JSON: json = 1; break;
        case O_THREADS: threads = parse_long("--threads", optarg, 1, 256); break;
        case O_HELP: fputs(eval_usage, stdout); return 0;
        case ':': die_usage("option '%s' needs a value", argv[optind - 1]);
        default: die_usage("unknown option '%s'", argv[optind - 1]);
        }
    }
    need_path(argc, argv, &path, "eval");
    if (!data)
        die_usage("%s", "eval needs --data DIR");
    if (threads < 1)
        threads = 1;

    char err[1024];
    int status = 1;
    dataset_t ds = { 0 };
    mf_t mf = { 0 };
    pool_t *pool = NULL;
    unsigned char *has = NULL;
    int32_t *vt = NULL, *tt = NULL;
    snapshot_t *s = open_or_die(path);
    const snapshot_desc_t *d = snapshot_desc(s);
    if (dataset_load(&ds, data, err, sizeof(err)) < 0) {
        fprintf(stderr, "derrd-snap: %s\n", err);
        status = EXIT_USAGE;
        goto out;
    }
    double t0 = now_s();
    /* The snapshot's student re-indexed to the dataset's ids; rows it lacks
     * stay zero (and its users are left out of the splits below). */
    has = calloc((size_t)ds.n_users + 1, 1);
    vt = malloc(((size_t)ds.n_users + 1) * sizeof(*vt));
    tt = malloc(((size_t)ds.n_users + 1) * sizeof(*tt));
    if (!has || !vt || !tt || mf_init(&mf, ds.n_users, ds.n_items, d->dim) < 0) {
        fprintf(stderr, "derrd-snap: out of memory\n");
        goto out;
    }
    int64_t stray_u = place_rows(mf.ue, ds.n_users, d->user_emb, d->user_ids, d->user_id_len,
                                 d->n_users, d->dim, has);
    int64_t stray_i = place_rows(mf.ie, ds.n_items, d->item_emb, d->item_ids, d->item_id_len,
                                 d->n_items, d->dim, NULL);
    int64_t miss_v = 0, miss_t = 0;
    for (int32_t u = 0; u < ds.n_users; u++) {
        vt[u] = has[u] ? ds.valid[u] : -1;
        tt[u] = has[u] ? ds.test[u] : -1;
        miss_v += !has[u] && ds.valid[u] >= 0;
        miss_t += !has[u] && ds.test[u] >= 0;
    }
    loo_split_t valid = { ds.n_users, ds.n_cands, vt, ds.cands };
    loo_split_t test = { ds.n_users, ds.n_cands, tt, ds.cands };
    pool = pool_new((int)threads);
    if (!pool) {
        fprintf(stderr, "derrd-snap: cannot start %ld threads\n", threads);
        goto out;
    }
    metrics_t mv, mt;
    if (metrics_eval(&mf, &valid, pool, &mv) < 0 || metrics_eval(&mf, &test, pool, &mt) < 0) {
        fprintf(stderr, "derrd-snap: out of memory\n");
        goto out;
    }
    double secs = now_s() - t0;
    if (stray_u || stray_i)
        fprintf(stderr, "derrd-snap: %" PRId64 " user and %" PRId64 " item ids are not ids of "
                "%s (ignored)\n", stray_u, stray_i, data);
    if (miss_t || miss_v)
        fprintf(stderr, "derrd-snap: %" PRId64 " test and %" PRId64 " valid users have no "
                "snapshot row (left out)\n", miss_t, miss_v);
    if (!json) {
        const metrics_t *m[2] = { &mv, &mt };
        for (int k = 0; k < 2; k++)
            printf("%s %" PRId64 " users  HR@5 %.4f NDCG@5 %.4f HR@10 %.4f NDCG@10 %.4f "
                   "HR@20 %.4f NDCG@20 %.4f\n", k ? "test: " : "valid:", m[k]->users,
                   m[k]->hr[0], m[k]->ndcg[0], m[k]->hr[1], m[k]->ndcg[1], m[k]->hr[2],
                   m[k]->ndcg[2]);
    } else {
        printf("{\"version\": %" PRIu64 ", \"dim\": %d, \"valid_users\": %" PRId64
               ", \"test_users\": %" PRId64 ", \"valid_users_without_row\": %" PRId64
               ", \"test_users_without_row\": %" PRId64 ", \"user_ids_not_in_data\": %" PRId64
               ", \"item_ids_not_in_data\": %" PRId64 ", \"eval_seconds\": %.3f, ",
               d->version, d->dim, mv.users, mt.users, miss_v, miss_t, stray_u, stray_i, secs);
        json_metrics("valid", &mv);
        printf(", ");
        json_metrics("test", &mt);
        printf("}\n");
    }
    status = 0;
out:
    free(has);
    free(vt);
    free(tt);
    pool_free(pool);
    mf_close(&mf);
    dataset_close(&ds);
    snapshot_free(s);
    return status;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        die_usage("%s", "a command is required: verify, info, recommend or eval");
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(usage_text, stdout);
        return 0;
    }
    opterr = 0; /* die_usage() reports, in one line */
    optind = 1;
    argc--;
    argv++;
    if (!strcmp(cmd, "verify"))
        return cmd_verify(argc, argv);
    if (!strcmp(cmd, "info"))
        return cmd_info(argc, argv);
    if (!strcmp(cmd, "recommend"))
        return cmd_recommend(argc, argv);
    if (!strcmp(cmd, "eval"))
        return cmd_eval(argc, argv);
    die_usage("unknown command '%s' (verify, info, recommend or eval)", cmd);
}
