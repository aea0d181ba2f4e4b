/*
 * derrd-train: train and evaluate on a leave-one-out dataset directory.
 *
 * Trains a BPR-MF teacher, a student without distillation, or a student
 * distilled with DE, RRD or DE-RRD, each to early stopping on the validation
 * split, and reports HR/NDCG/MRR@5/10/20 on the validation and test splits.
 * Run with --help for the options.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "io/dataset.h"
#include "io/embfile.h"
#include "io/fsutil.h"
#include "io/proc.h"
#include "model/distill.h"
#include "model/gemm.h"
#include "model/metrics.h"
#include "model/pool.h"
#include "model/ratings.h"
#include "tools/cli.h"


static const char *usage_text =
    "usage: derrd-train --data DIR --method teacher|student|de|rrd|derrd [options]\n"
    "\n"
    "Trains on DIR/train.tsv to early stopping on DIR/valid.tsv and reports\n"
    "leave-one-out HR, NDCG and MRR at 5, 10, 20 on the valid and test splits.\n"
    "Distilled methods (de, rrd, derrd) train a teacher first unless --teacher\n"
    "gives one.\n"
    "\n"
    "  --data DIR           dataset directory (train, valid, test, candidates .tsv)\n"
    "  --method M           teacher | student | de | rrd | derrd\n"
    "  --rrd-variant V      paper (default) | nosample | item | ir: item is the\n"
    "                       item side alone; ir is the authors' IR-RRD, paper\n"
    "                       plus an item side on the items it sampled (lambda\n"
    "                       5e-4, K = L = 20)\n"
    "  --teacher FILE       load the teacher from FILE (written by --save)\n"
    "  --save FILE          write the trained model (best epoch) to FILE\n"
    "  --seed N             random seed (default 0)\n"
    "  --threads N          worker threads (default: online CPUs)\n"
    "  --json               print one JSON object as the last line of stdout\n"
    "  --max-epochs N       stop after N epochs (default 1000)\n"
    "  --patience N         stop after N evaluations without improvement (default 20)\n"
    "  --select S           hr (default): the authors' protocol: the K metrics come\n"
    "                       from the epoch with the best valid HR@K (K = 5, 10,\n"
    "                       20), and an evaluation improves when any HR@K does;\n"
    "                       ndcg10: every metric from the best valid NDCG@10\n"
    "  --eval-every N       evaluate on valid every N epochs (default 1)\n"
    "  --dim N              model dim (default 200 teacher, 20 otherwise)\n"
    "  --init I             distilled students' start: teacher (default): the\n"
    "                       best rank-dim fit of the teacher's scores on top of\n"
    "                       N(0, 0.01^2), about half the epochs; normal: N(0,\n"
    "                       0.01^2) alone, as the paper\n"
    "  --teacher-dim N      dim of a teacher trained in this run (default 200)\n"
    "  --lr X               Adam learning rate (default 0.001)\n"
    "  --wd X               L2 weight decay (default 0.001)\n"
    "  --batch N            mini-batch size (default 1024)\n"
    "  --lambda-de X        DE weight (default 0.01)\n"
    "  --lambda-rrd X       RRD weight (default 0.001)\n"
    "  --quiet              nothing on stderr but errors: no progress, no summary\n"
    "                       (with --json, stdout's JSON line is the whole output)\n"
    "  --help               this text\n"
    "\n"
    "Cost knobs (docs/MODEL.md); the reference code is --de-max-experts 0\n"
    "--de-every 1 --rrd-sample 1, many times slower. On CiteULike DE on every\n"
    "step gained about 0.005 test HR@5 from --init normal and nothing from the\n"
    "teacher's fit (the default); RRD on every user nothing measurable\n"
    "(bench/RESULTS.md):\n"
    "  --de-max-experts N   evaluate at most N experts per entity (default 2; 0 = all)\n"
    "  --de-keep X          also drop the lightest experts holding < X of the\n"
    "                       selection weight (default 0)\n"
    "  --de-every N         DE on every N-th step only, weighted by N (default 5)\n"
    "  --de-sample X        share of batch entities given a DE term, reweighted\n"
    "                       (default 1)\n"
    "  --rrd-sample X       share of batch users given an RRD term, reweighted\n"
    "                       (default 0.2)\n"
    "\n"
    "The lambdas default to the reference's. Selected on CiteULike's valid\n"
    "split over three seeds, --lambda-de 0.02 --lambda-rrd 0.0005 lifts\n"
    "DE-RRD's test HR@5 from 0.4797 to 0.4835 on average over five seeds (the\n"
    "paper: 0.4843) at the same cost per epoch (bench/RESULTS.md).\n";

typedef struct {
    int max_epochs;
    int patience;
    int eval_every;
    int progress;
    metrics_select_rule_t select;
    const char *label;
} fit_opts_t;

typedef struct {
    int epochs;
    int best_epoch;        /* the last improvement: the model kept in best */
    int best_epoch_k[METRICS_NK]; /* the epoch each K's metrics come from */
    double train_seconds;  /* training epochs only */
    double eval_seconds;   /* validation passes */
    double setup_seconds;  /* distill_new: teacher top-N for RRD */
    metrics_t valid;
    metrics_t test;
    distill_stats_t first, last;
} fit_result_t;

/* Copies the K-th metrics of src into dst. */
static void metrics_take_k(metrics_t *dst, const metrics_t *src, int k)
{
    dst->hr[k] = src->hr[k];
    dst->ndcg[k] = src->ndcg[k];
    dst->mrr[k] = src->mrr[k];
    dst->users = src->users;
}

static void eval_or_die(const mf_t *m, const loo_split_t *split, const metrics_plan_t *plan,
                        pool_t *pool, metrics_t *out)
{
    if (metrics_eval_plan(m, split, plan, pool, out) < 0) {
        fprintf(stderr, "derrd-train: out of memory in evaluation\n");
        exit(1);
    }
}

/* Trains to early stopping on the valid split (o->select says how); leaves
 * the model of the last improvement in best (initialised here) and fills r.
 * Returns or exits. */
static void fit(const distill_cfg_t *cfg, const ratings_t *train, const mf_t *teacher,
                pool_t *pool, const loo_split_t *valid, const loo_split_t *test,
                const metrics_plan_t *plan, const fit_opts_t *o, mf_t *best, fit_result_t *r)
{
    char err[256];
    memset(r, 0, sizeof(*r));
    double t0 = cli_now_s();
    distill_t *d = distill_new(cfg, train, teacher, pool, err, sizeof(err));
    if (!d) {
        fprintf(stderr, "derrd-train: %s\n", err);
        exit(1);
    }
    r->setup_seconds = cli_now_s() - t0;
    if (mf_init_copy(best, distill_model(d)) < 0) {
        fprintf(stderr, "derrd-train: out of memory\n");
        exit(1);
    }
    /* Under METRICS_SELECT_HR each K keeps the model of its own epoch. */
    int per_k = o->select == METRICS_SELECT_HR;
    mf_t best_k[METRICS_NK];
    memset(best_k, 0, sizeof(best_k));
    for (int k = 0; k < METRICS_NK && per_k; k++)
        if (mf_init_copy(&best_k[k], distill_model(d)) < 0) {
            fprintf(stderr, "derrd-train: out of memory\n");
            exit(1);
        }
    metrics_select_t sel;
    metrics_select_init(&sel, o->select);
    size_t nparams = ((size_t)best->n_users + (size_t)best->n_items) * (size_t)best->dim;
    for (int e = 0; e < o->max_epochs; e++) {
        distill_stats_t st;
        double ta = cli_now_s();
        int erc = distill_epoch(d, &st);
        if (erc < 0 && erc != -EDOM) {
            fprintf(stderr, "derrd-train: epoch %d: %s\n", e, strerror(-erc));
            exit(1);
        }
        if (erc == -EDOM || !isfinite(st.loss_bpr) || !isfinite(st.loss_de) ||
            !isfinite(st.loss_rrd) || !isfinite(st.loss_rrd_item)) {
            /* NaN ranks last, so early stopping would not pick it, but
             * going on trains nothing: say so and stop. */
            fprintf(stderr, "derrd-train: %s diverged in epoch %d (a loss is not finite: bpr "
                    "%g, de %g, rrd %g); try a lower --lr or lambdas\n", o->label, e,
                    st.loss_bpr, st.loss_de, st.loss_rrd);
            exit(1);
        }
        const mf_t *m = distill_model(d);
        double tb = cli_now_s();
        r->train_seconds += tb - ta;
        r->epochs = e + 1;
        if (e == 0)
            r->first = st;
        r->last = st;
        if ((e + 1) % o->eval_every != 0 && e + 1 != o->max_epochs)
            continue;
        metrics_t v;
        eval_or_die(m, valid, plan, pool, &v);
        r->eval_seconds += cli_now_s() - tb;
        unsigned moved = metrics_select_update(&sel, &v, e);
        if (moved && !per_k)
            memcpy(best->params, m->params, nparams * sizeof(float));
        for (int k = 0; k < METRICS_NK && per_k; k++)
            if (moved >> k & 1)
                memcpy(best_k[k].params, m->params, nparams * sizeof(float));
        if (o->progress) {
            fprintf(stderr, "%s epoch %4d  bpr %.1f", o->label, e, st.loss_bpr);
            if (cfg->use_de)
                fprintf(stderr, "  de %.1f (%.2f experts/entity, T %.3f)", st.loss_de,
                        st.de_entities ? (double)st.de_pairs / (double)st.de_entities : 0.0,
                        st.temperature);
            if (cfg->use_rrd)
                fprintf(stderr, "  rrd %.1f", st.loss_rrd);
            if (cfg->use_rrd && cfg->rrd_variant == RRD_IR)
                fprintf(stderr, "  rrd-item %.1f", st.loss_rrd_item);
            fprintf(stderr, "  valid HR@5 %.4f NDCG@10 %.4f%s  %.1fs\n", v.hr[0], v.ndcg[1],
                    moved ? " *" : "", cli_now_s() - t0);
        }
        if (sel.since >= o->patience)
            break;
    }
    r->best_epoch = sel.last;
    for (int k = 0; k < METRICS_NK; k++)
        r->best_epoch_k[k] = sel.best_epoch[k];
    if (!per_k) {
        r->valid = sel.valid[1];
        eval_or_die(best, test, plan, pool, &r->test);
    } else {
        /* The model kept is the last improvement's: the K selected last. */
        int last_k = 0;
        for (int k = 1; k < METRICS_NK; k++)
            if (sel.best_epoch[k] > sel.best_epoch[last_k])
                last_k = k;
        memcpy(best->params, best_k[last_k].params, nparams * sizeof(float));
        /* Each K from its own epoch, valid and test alike. */
        for (int k = 0; k < METRICS_NK; k++) {
            metrics_t t;
            eval_or_die(&best_k[k], test, plan, pool, &t);
            metrics_take_k(&r->test, &t, k);
            metrics_take_k(&r->valid, &sel.valid[k], k);
            mf_close(&best_k[k]);
        }
    }
    distill_free(d);
}

static void print_result(const char *label, const fit_result_t *r)
{
    fprintf(stderr, "%s: %d epochs (the best is epoch %d, counting from 0), %.1fs training "
            "(%.3fs/epoch), %.1fs validation\n",
            label, r->epochs, r->best_epoch, r->train_seconds,
            r->epochs ? r->train_seconds / r->epochs : 0.0, r->eval_seconds);
    fprintf(stderr, "%s: test  HR@5 %.4f NDCG@5 %.4f HR@10 %.4f NDCG@10 %.4f HR@20 %.4f "
            "NDCG@20 %.4f\n", label, r->test.hr[0], r->test.ndcg[0], r->test.hr[1],
            r->test.ndcg[1], r->test.hr[2], r->test.ndcg[2]);
}

int main(int argc, char **argv)
{
    /* OpenBLAS's generic kernels where this CPU runs better ones: start
     * again with them named (model/gemm.h). */
    (void)proc_restart_with_env(argv, "OPENBLAS_CORETYPE", gemm_better_core());
    cli_init("derrd-train");
    const char *data = NULL, *method = NULL, *variant = "paper", *teacher_file = NULL;
    const char *save = NULL;
    long seed = 0, threads = sysconf(_SC_NPROCESSORS_ONLN);
    int json = 0, quiet = 0;
    fit_opts_t fo = { 1000, 20, 1, 0, METRICS_SELECT_HR, "" };
    distill_cfg_t cfg = distill_cfg_default();
    int dim = 0, teacher_dim = 200;
    enum {
        O_DATA = 256, O_METHOD, O_VARIANT, O_TEACHER, O_SAVE, O_SEED, O_THREADS, O_JSON,
        O_MAXEP, O_PATIENCE, O_EVERY, O_DIM, O_TDIM, O_LR, O_WD, O_BATCH, O_LDE, O_LRRD,
        O_KEEP, O_DESAMPLE, O_QUIET, O_HELP, O_MAXEXP, O_RRDSAMPLE, O_DEEVERY, O_SELECT,
        O_INIT
    };
    static const struct option opts[] = {
        { "data", required_argument, 0, O_DATA },
        { "method", required_argument, 0, O_METHOD },
        { "rrd-variant", required_argument, 0, O_VARIANT },
        { "teacher", required_argument, 0, O_TEACHER },
        { "save", required_argument, 0, O_SAVE },
        { "seed", required_argument, 0, O_SEED },
        { "threads", required_argument, 0, O_THREADS },
        { "json", no_argument, 0, O_JSON },
        { "max-epochs", required_argument, 0, O_MAXEP },
        { "patience", required_argument, 0, O_PATIENCE },
        { "eval-every", required_argument, 0, O_EVERY },
        { "select", required_argument, 0, O_SELECT },
        { "dim", required_argument, 0, O_DIM },
        { "init", required_argument, 0, O_INIT },
        { "teacher-dim", required_argument, 0, O_TDIM },
        { "lr", required_argument, 0, O_LR },
        { "wd", required_argument, 0, O_WD },
        { "batch", required_argument, 0, O_BATCH },
        { "lambda-de", required_argument, 0, O_LDE },
        { "lambda-rrd", required_argument, 0, O_LRRD },
        { "de-keep", required_argument, 0, O_KEEP },
        { "de-sample", required_argument, 0, O_DESAMPLE },
        { "de-max-experts", required_argument, 0, O_MAXEXP },
        { "rrd-sample", required_argument, 0, O_RRDSAMPLE },
        { "de-every", required_argument, 0, O_DEEVERY },
        { "quiet", no_argument, 0, O_QUIET },
        { "help", no_argument, 0, O_HELP },
        { 0, 0, 0, 0 },
    };
    int c;
    opterr = 0; /* cli_die_usage() reports, in one line */
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case O_DATA: data = optarg; break;
        case O_METHOD: method = optarg; break;
        case O_VARIANT: variant = optarg; break;
        case O_TEACHER: teacher_file = optarg; break;
        case O_SAVE: save = optarg; break;
        case O_SEED: seed = cli_parse_long("--seed", optarg, 0, 0x7fffffffL); break;
        case O_THREADS: threads = cli_parse_long("--threads", optarg, 1, 256); break;
        case O_JSON: json = 1; break;
        case O_MAXEP: fo.max_epochs = (int)cli_parse_long("--max-epochs", optarg, 1, 1000000); break;
        case O_PATIENCE: fo.patience = (int)cli_parse_long("--patience", optarg, 1, 1000000); break;
        case O_SELECT:
            if (!strcmp(optarg, "hr"))
                fo.select = METRICS_SELECT_HR;
            else if (!strcmp(optarg, "ndcg10"))
                fo.select = METRICS_SELECT_NDCG10;
            else
                cli_die_usage("unknown --select '%s'", optarg);
            break;
        case O_EVERY: fo.eval_every = (int)cli_parse_long("--eval-every", optarg, 1, 1000000); break;
        case O_INIT:
            if (!strcmp(optarg, "teacher"))
                cfg.init_from_teacher = true;
            else if (!strcmp(optarg, "normal"))
                cfg.init_from_teacher = false;
            else
                cli_die_usage("unknown --init '%s'", optarg);
            break;
        case O_DIM: dim = (int)cli_parse_long("--dim", optarg, 1, 4096); break;
        case O_TDIM: teacher_dim = (int)cli_parse_long("--teacher-dim", optarg, 1, 4096); break;
        case O_LR: cfg.adam.lr = (float)cli_parse_double("--lr", optarg, 1e-7, 10); break;
        case O_WD: cfg.adam.wd = (float)cli_parse_double("--wd", optarg, 0, 10); break;
        case O_BATCH: cfg.batch = (int)cli_parse_long("--batch", optarg, 1, 1 << 20); break;
        case O_LDE: cfg.lambda_de = (float)cli_parse_double("--lambda-de", optarg, 0, 1e6); break;
        case O_LRRD: cfg.lambda_rrd = (float)cli_parse_double("--lambda-rrd", optarg, 0, 1e6); break;
        case O_KEEP: cfg.de_keep = (float)cli_parse_double("--de-keep", optarg, 0, 0.999); break;
        case O_DESAMPLE: cfg.de_sample = (float)cli_parse_double("--de-sample", optarg, 1e-6, 1); break;
        case O_MAXEXP: cfg.de_max_experts = (int)cli_parse_long("--de-max-experts", optarg, 0, 256); break;
        case O_DEEVERY: cfg.de_every = (int)cli_parse_long("--de-every", optarg, 1, 1000000); break;
        case O_RRDSAMPLE: cfg.rrd_sample = (float)cli_parse_double("--rrd-sample", optarg, 1e-6, 1); break;
        case O_QUIET: quiet = 1; break;
        case O_HELP: fputs(usage_text, stdout); return 0;
        case ':': cli_die_usage("option '%s' needs a value", argv[optind - 1]);
        default: cli_die_usage("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        cli_die_usage("unexpected argument '%s'", argv[optind]);
    if (!data)
        cli_die_usage("%s", "--data DIR is required");
    if (!method)
        cli_die_usage("%s", "--method is required");
    int is_teacher = !strcmp(method, "teacher"), is_student = !strcmp(method, "student");
    cfg.use_de = !strcmp(method, "de") || !strcmp(method, "derrd");
    cfg.use_rrd = !strcmp(method, "rrd") || !strcmp(method, "derrd");
    if (!is_teacher && !is_student && !cfg.use_de && !cfg.use_rrd)
        cli_die_usage("unknown method '%s'", method);
    if (!strcmp(variant, "paper"))
        cfg.rrd_variant = RRD_PAPER;
    else if (!strcmp(variant, "nosample"))
        cfg.rrd_variant = RRD_NOSAMPLE;
    else if (!strcmp(variant, "item"))
        cfg.rrd_variant = RRD_ITEM;
    else if (!strcmp(variant, "ir"))
        cfg.rrd_variant = RRD_IR;
    else
        cli_die_usage("unknown --rrd-variant '%s'", variant);
    if (teacher_file && (is_teacher || is_student))
        cli_die_usage("--teacher goes with de, rrd or derrd, not '%s'", method);
    cfg.seed = (uint64_t)seed;
    cfg.dim = dim ? dim : is_teacher ? teacher_dim : 20;
    fo.progress = !quiet && isatty(2);

    char err[512];
    if (save && fsutil_check_writable(save, err, sizeof(err)) < 0)
        cli_die_usage("--save %s", err);
    int status = 1;
    dataset_t ds = { 0 };
    ratings_t train = { 0 };
    pool_t *pool = NULL;
    mf_t teacher = { 0 }, best = { 0 };
    metrics_plan_t *plan = NULL;
    /* The model's item rows are sized by the largest item id: a few lines
     * naming item 99,999,999 had a dim-20 student take 24 GB, until the
     * kernel's OOM killer ended it. */
    if (dataset_load(&ds, data, err, sizeof(err)) < 0 ||
        dataset_check_items(&ds, data, err, sizeof(err)) < 0) {
        fprintf(stderr, "derrd-train: %s\n", err);
        status = CLI_EXIT_USAGE;
        goto out;
    }
    if (ratings_init(&train, ds.n_users, ds.n_items, ds.train_u, ds.train_i, ds.n_train) < 0) {
        fprintf(stderr, "derrd-train: out of memory\n");
        goto out;
    }
    loo_split_t valid = { ds.n_users, ds.n_cands, ds.valid, ds.cands };
    loo_split_t test = { ds.n_users, ds.n_cands, ds.test, ds.cands };
    /* valid and test rank against the same candidates: one plan for both */
    plan = metrics_plan_new(&valid);
    if (!plan) {
        fprintf(stderr, "derrd-train: out of memory\n");
        goto out;
    }
    gemm_setup();
    pool = pool_new((int)threads);
    if (!pool) {
        fprintf(stderr, "derrd-train: cannot start %ld threads\n", threads);
        goto out;
    }
    if (!quiet)
        fprintf(stderr, "derrd-train: %d users, %d items, %lld interactions; %ld threads; "
                "BLAS kernels %s\n", ds.n_users, ds.n_items, (long long)train.nnz, threads,
                gemm_backend());
    double t_start = cli_now_s();
    fit_result_t tr = { 0 };
    int trained_teacher = 0;
    if (cfg.use_de || cfg.use_rrd) {
        if (teacher_file) {
            embfile_t ef;
            if (embfile_read(teacher_file, &ef, err, sizeof(err)) < 0) {
                fprintf(stderr, "derrd-train: %s\n", err);
                status = CLI_EXIT_USAGE;
                goto out;
            }
            if ((int32_t)ef.n_users != ds.n_users || (int32_t)ef.n_items != ds.n_items) {
                fprintf(stderr, "derrd-train: %s: teacher has %u users and %u items, the data "
                        "%d and %d\n", teacher_file, ef.n_users, ef.n_items, ds.n_users,
                        ds.n_items);
                free(ef.rows);
                status = CLI_EXIT_USAGE;
                goto out;
            }
            if (mf_init(&teacher, ds.n_users, ds.n_items, (int32_t)ef.dim) < 0) {
                fprintf(stderr, "derrd-train: out of memory\n");
                free(ef.rows);
                goto out;
            }
            memcpy(teacher.params, ef.rows,
                   ((size_t)ef.n_users + ef.n_items) * ef.dim * sizeof(float));
            free(ef.rows);
        } else {
            distill_cfg_t tc = distill_cfg_default();
            tc.dim = teacher_dim;
            tc.seed = cfg.seed;
            tc.adam = cfg.adam;
            tc.batch = cfg.batch;
            fit_opts_t to = fo;
            to.label = "teacher";
            fit(&tc, &train, NULL, pool, &valid, &test, plan, &to, &teacher, &tr);
            trained_teacher = 1;
            if (!quiet)
                print_result("teacher", &tr);
        }
    }
    fit_result_t r;
    fo.label = method;
    fit(&cfg, &train, (cfg.use_de || cfg.use_rrd) ? &teacher : NULL, pool, &valid, &test, plan,
        &fo, &best, &r);
    double total = cli_now_s() - t_start;
    if (!quiet)
        print_result(method, &r);
    if (save && embfile_write(save, (uint32_t)best.dim, (uint32_t)best.n_users,
                              (uint32_t)best.n_items, best.params, err, sizeof(err)) < 0) {
        fprintf(stderr, "derrd-train: %s\n", err);
        goto out;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    if (json) {
        printf("{\"method\": \"%s\", \"rrd_variant\": \"%s\", \"dim\": %d, \"seed\": %ld, "
               "\"threads\": %ld, \"epochs\": %d, \"best_epoch\": %d, \"train_seconds\": %.2f, "
               "\"epoch_seconds\": %.4f, \"eval_seconds\": %.2f, \"setup_seconds\": %.3f, ",
               method, variant, cfg.dim, seed, threads, r.epochs, r.best_epoch,
               r.train_seconds, r.epochs ? r.train_seconds / r.epochs : 0.0, r.eval_seconds,
               r.setup_seconds);
        printf("\"select\": \"%s\", ", fo.select == METRICS_SELECT_HR ? "hr" : "ndcg10");
        printf("\"best_epochs\": {\"HR@5\": %d, \"HR@10\": %d, \"HR@20\": %d}, ",
                   r.best_epoch_k[0], r.best_epoch_k[1], r.best_epoch_k[2]);
        if (trained_teacher)
            printf("\"teacher_epochs\": %d, \"teacher_train_seconds\": %.2f, "
                   "\"teacher_eval_seconds\": %.2f, \"teacher_test_hr5\": %.4f, ", tr.epochs,
                   tr.train_seconds, tr.eval_seconds, tr.test.hr[0]);
        printf("\"lr\": %g, \"wd\": %g, \"batch\": %d, ", (double)cfg.adam.lr,
               (double)cfg.adam.wd, cfg.batch);
        if (cfg.use_de || cfg.use_rrd)
            printf("\"init\": \"%s\", ", cfg.init_from_teacher ? "teacher" : "normal");
        if (cfg.use_de)
            printf("\"lambda_de\": %g, \"de_every\": %d, \"de_sample\": %g, "
                   "\"de_max_experts\": %d, \"de_keep\": %g, \"de_experts_per_entity\": %.3f, ",
                   (double)cfg.lambda_de, cfg.de_every, (double)cfg.de_sample,
                   cfg.de_max_experts, (double)cfg.de_keep,
                   r.last.de_entities ? (double)r.last.de_pairs / (double)r.last.de_entities : 0.0);
        if (cfg.use_rrd)
            printf("\"lambda_rrd\": %g, \"rrd_sample\": %g, ", (double)cfg.lambda_rrd,
                   (double)cfg.rrd_sample);
        printf("\"total_seconds\": %.2f, \"peak_rss_mb\": %.1f, \"blas_core\": \"%s\", ", total,
               (double)ru.ru_maxrss / 1024.0, gemm_backend());
        cli_json_metrics("valid", &r.valid);
        printf(", ");
        cli_json_metrics("test", &r.test);
        printf("}\n");
    }
    status = 0;
out:
    mf_close(&best);
    mf_close(&teacher);
    pool_free(pool);
    metrics_plan_free(plan);
    ratings_close(&train);
    dataset_close(&ds);
    return status;
}
