/*
 * derrd-snap: verify, describe, query and evaluate a student snapshot
 * (docs/SNAPSHOT.md), the way serving will read it.
 *
 *   derrd-snap verify FILE|DIR
 *   derrd-snap info FILE|DIR [--json]
 *   derrd-snap recommend FILE|DIR --user ID [-k N] [--exclude ID,ID...]
 *   derrd-snap eval FILE|DIR --data DIR [--json] [--threads N]
 *   derrd-snap from-emb EMBFILE OUT.dsnap [--version N] [--level L]
 *   derrd-snap bench FILE|DIR... [--users N] [-k N] [--seed S] [--json]
 *
 * A DIR means DIR/latest. Exit 0 on success, 1 when the snapshot does not
 * verify or the query fails, 2 on usage errors. Run with --help for more.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io/dataset.h"
#include "io/embfile.h"
#include "io/event.h"
#include "io/proc.h"
#include "io/snapshot.h"
#include "model/gemm.h"
#include "model/metrics.h"
#include "model/mf.h"
#include "model/pool.h"
#include "model/rng.h"
#include "tools/cli.h"


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
    "  from-emb EMBFILE OUT.dsnap [--version N] [--level L]\n"
    "                              snapshot of an embedding file (derrd-train --save),\n"
    "                              ids the decimal row numbers\n"
    "  bench FILE|DIR... [--users N] [-k N] [--seed S] [--json]\n"
    "                              open+verify and top-k recommend cost, same users\n"
    "                              for every snapshot, ratios to the first\n"
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
    "per line: rank (from 1), item id, score, tab-separated. Ids are opaque bytes:\n"
    "backslash, tab, newline and other control bytes in one are written as \\\\,\n"
    "\\t, \\n and \\xhh, so every line keeps three fields. Unknown user: exit 1.\n"
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

static const char *from_emb_usage =
    "usage: derrd-snap from-emb EMBFILE OUT.dsnap [--version N] [--level L]\n"
    "\n"
    "Converts an embedding file (docs/EMBFILE.md; what derrd-train --save writes)\n"
    "into a snapshot. Row r of each table gets the external id \"r\" in decimal,\n"
    "the shared datasets' ids, so `eval --data` and `recommend --user 42` work on\n"
    "it. No Kafka topic or offsets, teacher version and round 0, quality not\n"
    "measured (NaN). OUT.dsnap is written atomically (temp file, fsync, rename,\n"
    "fsync of the directory), then read back and verified.\n"
    "\n"
    "Prints one line: dim, rows, raw (decompressed payload) and file bytes, and\n"
    "the write time (zstd compression, the file write and the fsyncs; not the\n"
    "read-back) with its rate in MB/s of raw bytes (MB = 10^6 bytes).\n"
    "\n"
    "  --version N        snapshot version (default 1)\n"
    "  --level L          zstd level, 1 to 22 (default 3)\n";

static const char *bench_usage =
    "usage: derrd-snap bench FILE|DIR... [--users N] [-k N] [--seed S] [--json]\n"
    "\n"
    "Measures what serving pays for each snapshot given, on one thread:\n"
    "\n"
    "  open       snapshot_open: read the file, the header and frame CRCs, zstd\n"
    "             decompression, the payload CRC, the NaN scan, the id hash\n"
    "             tables; best of 5, in seconds and MB/s of raw (decompressed)\n"
    "             bytes (MB = 10^6 bytes). After the first open the file is in\n"
    "             the page cache, so this is the CPU cost, not the disk's.\n"
    "  recommend  top-k over all items (snapshot_recommend, no exclusions) for\n"
    "             each sampled user; mean microseconds per user, best of 3 passes.\n"
    "\n"
    "The users are drawn with --seed from the user ids present in every snapshot\n"
    "given (taken in the first snapshot's row order), so every snapshot answers\n"
    "for the same user ids. Repetitions alternate between the snapshots, so a\n"
    "change in machine load reaches all of them alike. Prints a table (with the\n"
    "slowest recommend pass beside the best, to show the noise) and, with more\n"
    "than one snapshot, each one's cost relative to the first.\n"
    "\n"
    "  --users N          users to query (default 2000; all of them if fewer)\n"
    "  -k, --k N          items per user (default 10)\n"
    "  --seed S           sampling seed (default 0)\n"
    "  --json             one JSON object per snapshot instead of the table\n";

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
        cli_die_usage("unexpected argument '%s'", argv[optind]);
    if (!*path)
        cli_die_usage("%s needs a snapshot FILE or DIR", cmd);
}

/* A JSON string of n bytes: valid UTF-8 as it is, a byte that is not (a
 * crafted file's) as U+FFFD, so that the output stays JSON. */
static void json_str(const char *s, size_t n)
{
    putchar('"');
    for (size_t k = 0; k < n;) {
        unsigned char ch = (unsigned char)s[k];
        size_t len = event_utf8_seq((const unsigned char *)s + k, n - k);
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f)
            printf("\\u%04x", ch);
        else if (!len)
            fputs("\\ufffd", stdout);
        else
            fwrite(s + k, 1, len, stdout);
        k += len ? len : 1;
    }
    putchar('"');
}

/* Writes bytes for a line of text: backslash, tab and newline as \\ \t \n,
 * other bytes below 0x20 and 0x7f as \xhh (ids are opaque bytes; neither
 * the framing nor the terminal may be at their mercy). */
static void text_bytes(const char *s, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        unsigned char ch = (unsigned char)s[k];
        if (ch == '\\')
            fputs("\\\\", stdout);
        else if (ch == '\t')
            fputs("\\t", stdout);
        else if (ch == '\n')
            fputs("\\n", stdout);
        else if (ch < 0x20 || ch == 0x7f)
            printf("\\x%02x", ch);
        else
            putchar(ch);
    }
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
        case ':': cli_die_usage("option '%s' needs a value", argv[optind - 1]);
        default: cli_die_usage("unknown option '%s'", argv[optind - 1]);
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
        case ':': cli_die_usage("option '%s' needs a value", argv[optind - 1]);
        default: cli_die_usage("unknown option '%s'", argv[optind - 1]);
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
        fputs("topic            ", stdout);
        if (d->topic[0])
            text_bytes(d->topic, strlen(d->topic));
        else
            fputs("(none)", stdout);
        putchar('\n');
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
        case 'k': k = cli_parse_long("-k", optarg, 1, 1000000); break;
        case O_EXCLUDE: exclude = optarg; break;
        case O_HELP: fputs(recommend_usage, stdout); return 0;
        case ':': cli_die_usage("option '%s' needs a value", argv[optind - 1]);
        default: cli_die_usage("unknown option '%s'", argv[optind - 1]);
        }
    }
    need_path(argc, argv, &path, "recommend");
    if (!user)
        cli_die_usage("%s", "recommend needs --user ID");
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
        text_bytes(d->item_ids[items[r]], d->item_id_len[items[r]]);
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
        case O_THREADS: threads = cli_parse_long("--threads", optarg, 1, 256); break;
        case O_HELP: fputs(eval_usage, stdout); return 0;
        case ':': cli_die_usage("option '%s' needs a value", argv[optind - 1]);
        default: cli_die_usage("unknown option '%s'", argv[optind - 1]);
        }
    }
    need_path(argc, argv, &path, "eval");
    if (!data)
        cli_die_usage("%s", "eval needs --data DIR");
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
    if (dataset_load(&ds, data, err, sizeof(err)) < 0 ||
        dataset_check_items(&ds, data, err, sizeof(err)) < 0) { /* mf_init sizes by items */
        fprintf(stderr, "derrd-snap: %s\n", err);
        status = CLI_EXIT_USAGE;
        goto out;
    }
    double t0 = cli_now_s();
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
    double secs = cli_now_s() - t0;
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
        cli_json_metrics("valid", &mv);
        printf(", ");
        cli_json_metrics("test", &mt);
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

/* ---- from-emb -------------------------------------------------------------- */

/* The decimal ids "0" .. "n-1", packed in one block (*block, no NULs
 * between them): ids[r] points at row r's, len[r] is its length. Returns 0
 * or -ENOMEM; the caller frees the three arrays. */
static int row_ids_new(uint32_t n, char **block, const char ***ids, uint16_t **len)
{
    size_t total = 0;
    for (uint64_t r = 0, digits = 1, next = 10; r < n; r++) {
        if (r == next) {
            digits++;
            next *= 10;
        }
        total += digits;
    }
    *block = malloc(total + 16); /* + snprintf's final NUL */
    *ids = malloc((size_t)n * sizeof(**ids) + 1);
    *len = malloc((size_t)n * sizeof(**len) + 1);
    if (!*block || !*ids || !*len)
        return -ENOMEM;
    char *p = *block;
    for (uint32_t r = 0; r < n; r++) {
        int l = snprintf(p, 16, "%" PRIu32, r);
        (*ids)[r] = p;
        (*len)[r] = (uint16_t)l;
        p += l;
    }
    return 0;
}

static int cmd_from_emb(int argc, char **argv)
{
    const char *in = NULL, *out = NULL;
    long version = 1, level = 3;
    enum { O_VERSION = 256, O_LEVEL, O_HELP };
    static const struct option opts[] = {
        { "version", required_argument, 0, O_VERSION },
        { "level", required_argument, 0, O_LEVEL },
        { "help", no_argument, 0, O_HELP },
        { 0, 0, 0, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case O_VERSION: version = cli_parse_long("--version", optarg, 0, LONG_MAX); break;
        case O_LEVEL: level = cli_parse_long("--level", optarg, 1, 22); break;
        case O_HELP: fputs(from_emb_usage, stdout); return 0;
        case ':': cli_die_usage("option '%s' needs a value", argv[optind - 1]);
        default: cli_die_usage("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        in = argv[optind++];
    if (optind < argc)
        out = argv[optind++];
    if (optind < argc)
        cli_die_usage("unexpected argument '%s'", argv[optind]);
    if (!in || !out)
        cli_die_usage("%s", "from-emb needs an EMBFILE and an OUT.dsnap");

    char err[1024];
    int status = 1;
    embfile_t emb = { 0 };
    char *ublock = NULL, *iblock = NULL;
    const char **uids = NULL, **iids = NULL;
    uint16_t *ulen = NULL, *ilen = NULL;
    snapshot_t *s = NULL;
    if (embfile_read(in, &emb, err, sizeof(err)) < 0) {
        fprintf(stderr, "derrd-snap: %s\n", err);
        goto out;
    }
    if (emb.n_users > INT32_MAX || emb.n_items > INT32_MAX) {
        fprintf(stderr, "derrd-snap: %s: %" PRIu32 " users, %" PRIu32 " items: a snapshot "
                "holds at most %d of each\n", in, emb.n_users, emb.n_items, INT32_MAX);
        goto out;
    }
    if (row_ids_new(emb.n_users, &ublock, &uids, &ulen) < 0 ||
        row_ids_new(emb.n_items, &iblock, &iids, &ilen) < 0) {
        fprintf(stderr, "derrd-snap: out of memory\n");
        goto out;
    }
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    snapshot_desc_t d = {
        .version = (uint64_t)version,
        .created_ms = (uint64_t)wall.tv_sec * 1000u + (uint64_t)(wall.tv_nsec / 1000000),
        .dim = (int32_t)emb.dim,
        .n_users = emb.n_users,
        .n_items = emb.n_items,
        .user_emb = emb.rows,
        .item_emb = emb.rows + (size_t)emb.n_users * emb.dim,
        .user_ids = uids,
        .user_id_len = ulen,
        .item_ids = iids,
        .item_id_len = ilen,
        .topic = "",
        .quality = { NAN, NAN, NAN, NAN, 0 },
    };
    double t0 = cli_now_s();
    if (snapshot_write(out, &d, (int)level, err, sizeof(err)) < 0) {
        fprintf(stderr, "derrd-snap: %s\n", err);
        goto out;
    }
    double secs = cli_now_s() - t0;
    /* Read back: the sizes, and proof that what was written verifies. */
    if (snapshot_open(out, &s, err, sizeof(err)) < 0) {
        fprintf(stderr, "derrd-snap: written but does not verify: %s\n", err);
        goto out;
    }
    snapshot_size_t sz;
    snapshot_size(s, &sz);
    printf("%s: dim %" PRIu32 ", %" PRIu32 " users, %" PRIu32 " items, raw %" PRIu64
           " bytes, file %" PRIu64 " bytes (%.3fx), zstd level %ld, write %.4f s (%.1f MB/s "
           "raw)\n", out, emb.dim, emb.n_users, emb.n_items, sz.raw_bytes, sz.file_bytes,
           sz.file_bytes ? (double)sz.raw_bytes / (double)sz.file_bytes : 0.0, level, secs,
           secs > 0 ? (double)sz.raw_bytes / secs / 1e6 : 0.0);
    status = 0;
out:
    snapshot_free(s);
    free(ublock);
    free(iblock);
    free(uids);
    free(iids);
    free(ulen);
    free(ilen);
    free(emb.rows);
    return status;
}

/* ---- bench ----------------------------------------------------------------- */

#define BENCH_OPENS 5
#define BENCH_PASSES 3

typedef struct {
    const char *path;
    snapshot_t *s;
    snapshot_size_t size;
    int64_t *rows;               /* the sampled users' rows in this snapshot */
    double open_s[BENCH_OPENS];  /* seconds per open */
    double rec_us[BENCH_PASSES]; /* mean microseconds per user, per pass */
    double open_best, rec_best, rec_worst;
} bench_snap_t;

static double min_of(const double *v, int n)
{
    double m = v[0];
    for (int k = 1; k < n; k++)
        m = v[k] < m ? v[k] : m;
    return m;
}

static double max_of(const double *v, int n)
{
    double m = v[0];
    for (int k = 1; k < n; k++)
        m = v[k] > m ? v[k] : m;
    return m;
}

/* "dim D" when the snapshots' dims all differ, else the path. */
static void bench_label(const bench_snap_t *b, int n, int j, char *buf, size_t cap)
{
    int distinct = 1;
    for (int x = 0; x < n; x++)
        for (int y = x + 1; y < n; y++)
            distinct &= snapshot_desc(b[x].s)->dim != snapshot_desc(b[y].s)->dim;
    if (distinct)
        snprintf(buf, cap, "dim %d", snapshot_desc(b[j].s)->dim);
    else
        snprintf(buf, cap, "%s", b[j].path);
}

static int cmd_bench(int argc, char **argv)
{
    long n_want = 2000, k = 10, seed = 0;
    int json = 0;
    enum { O_USERS = 256, O_SEED, O_JSON, O_HELP };
    static const struct option opts[] = {
        { "users", required_argument, 0, O_USERS },
        { "k", required_argument, 0, 'k' },
        { "seed", required_argument, 0, O_SEED },
        { "json", no_argument, 0, O_JSON },
        { "help", no_argument, 0, O_HELP },
        { 0, 0, 0, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, ":k:", opts, NULL)) != -1) {
        switch (c) {
        case O_USERS: n_want = cli_parse_long("--users", optarg, 1, INT32_MAX); break;
        case 'k': k = cli_parse_long("-k", optarg, 1, 1000000); break;
        case O_SEED: seed = cli_parse_long("--seed", optarg, 0, LONG_MAX); break;
        case O_JSON: json = 1; break;
        case O_HELP: fputs(bench_usage, stdout); return 0;
        case ':': cli_die_usage("option '%s' needs a value", argv[optind - 1]);
        default: cli_die_usage("unknown option '%s'", argv[optind - 1]);
        }
    }
    int n = argc - optind;
    if (n < 1)
        cli_die_usage("%s", "bench needs at least one snapshot FILE or DIR");

    char err[1024];
    int status = 1;
    bench_snap_t *b = calloc((size_t)n, sizeof(*b));
    int64_t *cand = NULL, *items = NULL;
    float *scores = NULL;
    if (!b)
        goto nomem;
    for (int j = 0; j < n; j++) {
        b[j].path = argv[optind + j];
        b[j].s = open_or_die(b[j].path);
        snapshot_size(b[j].s, &b[j].size);
    }

    /* The users with an id in every snapshot, as rows of the first. */
    const snapshot_desc_t *d0 = snapshot_desc(b[0].s);
    cand = malloc((size_t)d0->n_users * sizeof(*cand) + 1);
    if (!cand)
        goto nomem;
    int64_t n_cand = 0;
    for (int64_t r = 0; r < d0->n_users; r++) {
        if (d0->user_id_len[r] == 0)
            continue;
        int everywhere = 1;
        for (int j = 1; j < n && everywhere; j++)
            everywhere = snapshot_user_row(b[j].s, d0->user_ids[r], d0->user_id_len[r]) >= 0;
        if (everywhere)
            cand[n_cand++] = r;
    }
    if (n_cand == 0) {
        fprintf(stderr, "derrd-snap: bench: no user id is in every snapshot given\n");
        goto out;
    }
    /* The first m of a seeded partial Fisher-Yates shuffle. */
    int64_t m = n_want < n_cand ? n_want : n_cand;
    rng_t rng;
    rng_init(&rng, (uint64_t)seed);
    for (int64_t x = 0; x < m; x++) {
        int64_t y = x + (int64_t)rng_below(&rng, (uint32_t)(n_cand - x));
        int64_t t = cand[x];
        cand[x] = cand[y];
        cand[y] = t;
    }
    for (int j = 0; j < n; j++) {
        b[j].rows = malloc((size_t)m * sizeof(*b[j].rows));
        if (!b[j].rows)
            goto nomem;
        for (int64_t x = 0; x < m; x++)
            b[j].rows[x] = snapshot_user_row(b[j].s, d0->user_ids[cand[x]],
                                             d0->user_id_len[cand[x]]);
    }
    items = malloc((size_t)k * sizeof(*items));
    scores = malloc((size_t)k * sizeof(*scores));
    if (!items || !scores)
        goto nomem;

    /* Open + verify, alternating between the snapshots. */
    for (int rep = 0; rep < BENCH_OPENS; rep++)
        for (int j = 0; j < n; j++) {
            snapshot_t *t;
            double t0 = cli_now_s();
            if (snapshot_open(b[j].path, &t, err, sizeof(err)) < 0) {
                fprintf(stderr, "derrd-snap: %s\n", err);
                goto out;
            }
            b[j].open_s[rep] = cli_now_s() - t0;
            snapshot_free(t);
        }
    /* Top-k for every sampled user; the sink keeps the work observable. */
    volatile int64_t sink = 0;
    for (int pass = 0; pass < BENCH_PASSES; pass++)
        for (int j = 0; j < n; j++) {
            double t0 = cli_now_s();
            for (int64_t x = 0; x < m; x++) {
                int got = snapshot_recommend(b[j].s, b[j].rows[x], (int)k, NULL, 0, items,
                                             scores);
                if (got < 0) {
                    fprintf(stderr, "derrd-snap: %s: recommend: %s\n", b[j].path,
                            strerror(-got));
                    goto out;
                }
                sink += got ? items[0] : 0;
            }
            b[j].rec_us[pass] = (cli_now_s() - t0) / (double)m * 1e6;
        }
    (void)sink;
    for (int j = 0; j < n; j++) {
        b[j].open_best = min_of(b[j].open_s, BENCH_OPENS);
        b[j].rec_best = min_of(b[j].rec_us, BENCH_PASSES);
        b[j].rec_worst = max_of(b[j].rec_us, BENCH_PASSES);
    }

    if (json) {
        for (int j = 0; j < n; j++) {
            const snapshot_desc_t *d = snapshot_desc(b[j].s);
            printf("{\"snapshot\": ");
            json_str(b[j].path, strlen(b[j].path));
            printf(", \"version\": %" PRIu64 ", \"dim\": %d, \"n_users\": %" PRId64
                   ", \"n_items\": %" PRId64 ", \"file_bytes\": %" PRIu64 ", \"raw_bytes\": %"
                   PRIu64 ", \"open_seconds\": %.6f, \"open_raw_mb_per_s\": %.1f, "
                   "\"open_seconds_runs\": [", d->version, d->dim, d->n_users, d->n_items,
                   b[j].size.file_bytes, b[j].size.raw_bytes, b[j].open_best,
                   (double)b[j].size.raw_bytes / b[j].open_best / 1e6);
            for (int r = 0; r < BENCH_OPENS; r++)
                printf("%s%.6f", r ? ", " : "", b[j].open_s[r]);
            printf("], \"users\": %" PRId64 ", \"users_in_every_snapshot\": %" PRId64
                   ", \"k\": %ld, \"seed\": %ld, \"recommend_us_per_user\": %.3f, "
                   "\"recommend_us_passes\": [", m, n_cand, k, seed, b[j].rec_best);
            for (int r = 0; r < BENCH_PASSES; r++)
                printf("%s%.3f", r ? ", " : "", b[j].rec_us[r]);
            printf("], \"recommend_ratio_to_first\": %.3f, \"open_ratio_to_first\": %.3f}\n",
                   b[j].rec_best / b[0].rec_best, b[j].open_best / b[0].open_best);
        }
    } else {
        printf("%5s %9s %9s %12s %12s %9s %10s %10s %12s  %s\n", "dim", "users", "items",
               "file_bytes", "raw_bytes", "open_s", "open_MB/s", "rec_us", "rec_us_worst",
               "snapshot");
        for (int j = 0; j < n; j++) {
            const snapshot_desc_t *d = snapshot_desc(b[j].s);
            printf("%5d %9" PRId64 " %9" PRId64 " %12" PRIu64 " %12" PRIu64 " %9.4f %10.1f "
                   "%10.2f %12.2f  %s\n", d->dim, d->n_users, d->n_items, b[j].size.file_bytes,
                   b[j].size.raw_bytes, b[j].open_best,
                   (double)b[j].size.raw_bytes / b[j].open_best / 1e6, b[j].rec_best,
                   b[j].rec_worst, b[j].path);
        }
        printf("open: best of %d; recommend: top-%ld over all items, %" PRId64 " users (seed "
               "%ld, of %" PRId64 " with an id in every snapshot), mean per user, best of %d "
               "passes; one thread\n", BENCH_OPENS, k, m, seed, n_cand, BENCH_PASSES);
        for (int j = 1; j < n; j++) {
            char lj[512], l0[512];
            bench_label(b, n, j, lj, sizeof(lj));
            bench_label(b, n, 0, l0, sizeof(l0));
            printf("%s / %s: recommend %.2fx, open+verify %.2fx, file bytes %.2fx\n", lj, l0,
                   b[j].rec_best / b[0].rec_best, b[j].open_best / b[0].open_best,
                   (double)b[j].size.file_bytes / (double)b[0].size.file_bytes);
        }
    }
    status = 0;
    goto out;
nomem:
    fprintf(stderr, "derrd-snap: out of memory\n");
out:
    if (b)
        for (int j = 0; j < n; j++) {
            snapshot_free(b[j].s);
            free(b[j].rows);
        }
    free(b);
    free(cand);
    free(items);
    free(scores);
    return status;
}

int main(int argc, char **argv)
{
    /* as derrd-train: better BLAS kernels than OpenBLAS's fallback */
    (void)proc_restart_with_env(argv, "OPENBLAS_CORETYPE", gemm_better_core());
    cli_init("derrd-snap");
    if (argc < 2)
        cli_die_usage("%s", "a command is required: verify, info, recommend, eval, from-emb or "
                  "bench");
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(usage_text, stdout);
        return 0;
    }
    opterr = 0; /* cli_die_usage() reports, in one line */
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
    if (!strcmp(cmd, "from-emb"))
        return cmd_from_emb(argc, argv);
    if (!strcmp(cmd, "bench"))
        return cmd_bench(argc, argv);
    cli_die_usage("unknown command '%s' (verify, info, recommend, eval, from-emb or bench)", cmd);
}
