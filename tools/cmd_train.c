/* edgetrain train: the training loop, checkpoints, JSON summary. */
#include "cli.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char train_help[] =
    "usage: edgetrain train --model SPEC --data fmnist [options]\n"
    "\n"
    "Trains a model with softmax cross-entropy and writes a summary.\n"
    "\n"
    "  --model SPEC        model spec file, or a name in models/ (mlp, lenet, vgg8, alexnet, resnet)\n"
    "  --data NAME         data set: fmnist (Fashion-MNIST)\n"
    "  --data-dir DIR      directory with the four IDX files, gzipped or not\n"
    "                      (default /usr/share/datasets/fashion-mnist)\n"
    "  --epochs E          passes over the training data (default 1)\n"
    "  --steps S           optimizer steps instead of epochs\n"
    "  --batch B           images per step (default 100; the last batch of an epoch may be smaller)\n"
    "  --lr LR             learning rate (default 0.01 for sgd, 0.001 for adam)\n"
    "  --momentum M        SGD momentum (default 0.9)\n"
    "  --nesterov          Nesterov momentum\n"
    "  --weight-decay WD   L2 weight decay added to the gradient (default 0)\n"
    "  --optimizer NAME    sgd (default) or adam\n"
    "  --lr-schedule S     none (default), step:SIZE:GAMMA (per epoch), cosine[:T_MAX epochs]\n"
    "  --seed S            seed for init, shuffling and dropout (default 1)\n"
    "  --threads T         worker threads (default: all cores; results do not depend on it)\n"
    "  --init-from F       start from the weights in a safetensors checkpoint (PyTorch names)\n"
    "  --resume F          continue a run from a checkpoint written by --save (with optimizer state)\n"
    "  --save F            write the final checkpoint (weights + optimizer state), atomically\n"
    "  --precision SPEC    precision policy: a file, a name in policies/ (int8, elearn-vgg8,\n"
    "                      hfp8, fp16, bf16, e6m5-sr13) or inline w=int8,a=int8,e=int8,g=int16\n"
    "                      (docs/precision.md; acc=int32: exact INT8 GEMM for integer\n"
    "                      operands); default fp32 everywhere\n"
    "  --arch A            model the run on a processor (elearn, baseline, trainer or a config\n"
    "                      file; docs/hw.md) and add an \"hw\" section to the JSON summary\n"
    "  --baseline B        a second architecture to compare with (ratios in the summary)\n"
    "  --trace F           record every executed product to a trace file (docs/trace.md),\n"
    "                      replayable with edgetrain simulate --trace F --arch A\n"
    "  --traffic-every N   every N steps, size the activations, errors, weights and gradients\n"
    "                      under each off-chip codec (default 10; 0: off); in the summary\n"
    "  --sparsity MODES    run-time sparsity (docs/sparsity.md), comma-separated:\n"
    "                      none (default, dense), skip (exact zero skipping in FF/EP/WG),\n"
    "                      speculate (predict ReLU zeros before FF and compute only the\n"
    "                      others; includes skip), prune (dynamic weight pruning, the same\n"
    "                      as --prune-target 0.5 unless --prune-target is given)\n"
    "  --spec-bits B       speculation precision: 1..8 (top B bits of int8 codes, default 4),\n"
    "                      exp (sign and exponent only) or 32 (exact: equals dense)\n"
    "  --spec-check-every N  every N steps, also compute the true outputs and count false and\n"
    "                      missed zeros of the speculation (default 10; 0: never)\n"
    "  --opp K             operating point of both architectures (1-based, default 1)\n"
    "  --html F            with --arch: also write the processor report as one self-contained\n"
    "                      HTML page (plots and tables, same numbers as the JSON)\n"
    "  --eval-first        evaluate the test set before training too (initial_test_accuracy)\n"
    "  --prune-target F    dynamic magnitude pruning (docs/sparsity.md): prune the fraction F\n"
    "                      (0 <= F < 1) of every trained conv/linear weight tensor, the smallest\n"
    "                      |w| first; pruned weights are skipped in FF/EP, get no gradient in WG\n"
    "                      and are never updated. Masks are saved with --save (for --resume)\n"
    "  --prune-every N     steps between mask updates (default 100)\n"
    "  --prune-start S     first step of the cubic schedule (default 0)\n"
    "  --prune-end E       step at which the target is reached (default 80% of the run's steps)\n"
    "  --freeze LIST       comma-separated layer names (PyTorch prefixes, e.g. 0,3) whose\n"
    "                      parameters are not trained (no WG, no update)\n"
    "  --no-shuffle        use file order instead of a seeded shuffle per epoch\n"
    "  --train-limit N     use the first N training images (default all)\n"
    "  --test-limit N      evaluate on the first N test images (default all; 0 skips)\n"
    "  --json F            write a JSON summary\n"
    "  --log-loss F        write CSV step,loss (each step's batch loss before its update)\n"
    "  --quiet             no progress output\n"
    "  --profile           print where the training time went: wall milliseconds per step in\n"
    "                      each layer's FF, EP and WG and in the step's phases outside the\n"
    "                      layers (always in the JSON summary as profile)\n"
    "\n"
    "final_loss in the summary is the mean batch loss over the last min(100, steps) steps.\n";

enum { O_MODEL = 1000, O_DATA, O_DATADIR, O_EPOCHS, O_STEPS, O_BATCH, O_LR, O_MOM, O_NEST, O_WD, O_OPT,
       O_SCHED, O_SEED, O_THREADS, O_INIT, O_RESUME, O_SAVE, O_NOSHUF, O_TRLIM, O_TELIM, O_JSON,
       O_LOGLOSS, O_QUIET, O_HELP, O_FREEZE, O_PREC, O_ARCH, O_BASE, O_OPP, O_TRACE, O_TRAFFIC,
       O_HTML, O_EVALFIRST, O_PTARGET, O_PEVERY, O_PSTART, O_PEND, O_SPARSITY, O_SPECBITS, O_SPECCHECK, O_PROFILE };

static const struct option train_opts[] = {
    {"model", 1, 0, O_MODEL},     {"data", 1, 0, O_DATA},       {"data-dir", 1, 0, O_DATADIR},
    {"epochs", 1, 0, O_EPOCHS},   {"steps", 1, 0, O_STEPS},     {"batch", 1, 0, O_BATCH},
    {"lr", 1, 0, O_LR},           {"momentum", 1, 0, O_MOM},    {"nesterov", 0, 0, O_NEST},
    {"weight-decay", 1, 0, O_WD}, {"optimizer", 1, 0, O_OPT},   {"lr-schedule", 1, 0, O_SCHED},
    {"seed", 1, 0, O_SEED},       {"threads", 1, 0, O_THREADS}, {"init-from", 1, 0, O_INIT},
    {"resume", 1, 0, O_RESUME},   {"save", 1, 0, O_SAVE},       {"no-shuffle", 0, 0, O_NOSHUF},
    {"train-limit", 1, 0, O_TRLIM}, {"test-limit", 1, 0, O_TELIM}, {"json", 1, 0, O_JSON},
    {"log-loss", 1, 0, O_LOGLOSS}, {"quiet", 0, 0, O_QUIET},    {"help", 0, 0, O_HELP},
    {"freeze", 1, 0, O_FREEZE},   {"precision", 1, 0, O_PREC},  {"arch", 1, 0, O_ARCH},
    {"baseline", 1, 0, O_BASE},   {"opp", 1, 0, O_OPP},         {"trace", 1, 0, O_TRACE},
    {"traffic-every", 1, 0, O_TRAFFIC}, {"html", 1, 0, O_HTML}, {"eval-first", 0, 0, O_EVALFIRST},
    {"prune-target", 1, 0, O_PTARGET}, {"prune-every", 1, 0, O_PEVERY}, {"prune-start", 1, 0, O_PSTART},
    {"prune-end", 1, 0, O_PEND},
    {"sparsity", 1, 0, O_SPARSITY}, {"spec-bits", 1, 0, O_SPECBITS},
    {"spec-check-every", 1, 0, O_SPECCHECK}, {"profile", 0, 0, O_PROFILE},
    {0, 0, 0, 0}};

typedef struct {
    const char *model, *data, *data_dir, *init_from, *resume, *save, *json, *log_loss, *freeze, *precision, *arch, *baseline, *trace, *html;
    const char *sparsity, *spec_bits;
    long long opp, traffic_every, spec_check;
    et_sparsity sp;
    long long epochs, steps, batch, seed, threads, train_limit, test_limit;
    double lr, momentum, wd;
    int nesterov, shuffle, quiet, have_lr, have_mom, eval_first, profile;
    et_optim_kind opt;
    int sched; /* 0 none, 1 step, 2 cosine */
    long long sched_size;
    double sched_gamma;
    /* pruning: on with --prune-target (or --sparsity ...,prune); end < 0: 80% of the run */
    int prune;
    double prune_target;
    long long prune_every, prune_start, prune_end;
    int have_prune_opts;
} train_args;

static int parse_schedule(train_args *a, const char *s) {
    if (!strcmp(s, "none")) return a->sched = 0, 1;
    if (!strncmp(s, "step:", 5)) {
        char buf[64];
        snprintf(buf, sizeof buf, "%s", s + 5);
        char *colon = strchr(buf, ':');
        if (!colon) return 0;
        *colon = 0;
        a->sched = 1;
        return cli_int(buf, 1, 1000000, &a->sched_size) && cli_float(colon + 1, 0, 1e6, &a->sched_gamma);
    }
    if (!strcmp(s, "cosine")) return a->sched = 2, a->sched_size = 0, 1;
    if (!strncmp(s, "cosine:", 7)) return a->sched = 2, cli_int(s + 7, 1, 1000000, &a->sched_size);
    return 0;
}

static int parse_args(int argc, char **argv, train_args *a) {
    memset(a, 0, sizeof *a);
    a->epochs = 1, a->batch = 100, a->seed = 1, a->train_limit = -1, a->test_limit = -1;
    a->momentum = 0.9, a->shuffle = 1, a->opt = ET_OPT_SGD, a->steps = -1, a->traffic_every = 10;
    a->prune_target = 0.5, a->prune_every = 100, a->prune_start = 0, a->prune_end = -1;
    a->spec_check = 10;
    int c, li = 0, have_epochs = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", train_opts, &li)) != -1) {
        const char *v = optarg;
        int ok = 1;
        switch (c) {
        case O_MODEL: a->model = v; break;
        case O_DATA: a->data = v; break;
        case O_DATADIR: a->data_dir = v; break;
        case O_EPOCHS: ok = cli_int(v, 1, 100000, &a->epochs), have_epochs = 1; break;
        case O_STEPS: ok = cli_int(v, 1, (long long)1 << 40, &a->steps); break;
        case O_BATCH: ok = cli_int(v, 1, 65536, &a->batch); break;
        case O_LR: ok = cli_float(v, 1e-12, 1e6, &a->lr), a->have_lr = 1; break;
        case O_MOM: ok = cli_float(v, 0, 1, &a->momentum), a->have_mom = 1; break;
        case O_NEST: a->nesterov = 1; break;
        case O_WD: ok = cli_float(v, 0, 1e3, &a->wd); break;
        case O_OPT:
            if (!strcmp(v, "sgd")) a->opt = ET_OPT_SGD;
            else if (!strcmp(v, "adam")) a->opt = ET_OPT_ADAM;
            else return cli_fail("train", 1, "unknown optimizer '%s' (sgd or adam)", v);
            break;
        case O_SCHED:
            if (!parse_schedule(a, v))
                return cli_fail("train", 1, "bad --lr-schedule '%s' (none, step:SIZE:GAMMA, cosine[:T_MAX])", v);
            break;
        case O_SEED: ok = cli_int(v, 0, INT64_MAX, &a->seed); break;
        case O_THREADS: ok = cli_int(v, 1, 1024, &a->threads); break;
        case O_INIT: a->init_from = v; break;
        case O_RESUME: a->resume = v; break;
        case O_SAVE: a->save = v; break;
        case O_NOSHUF: a->shuffle = 0; break;
        case O_TRLIM: ok = cli_int(v, 1, INT64_MAX, &a->train_limit); break;
        case O_TELIM: ok = cli_int(v, 0, INT64_MAX, &a->test_limit); break;
        case O_JSON: a->json = v; break;
        case O_LOGLOSS: a->log_loss = v; break;
        case O_QUIET: a->quiet = 1; break;
        case O_PROFILE: a->profile = 1; break;
        case O_FREEZE: a->freeze = v; break;
        case O_PREC: a->precision = v; break;
        case O_ARCH: a->arch = v; break;
        case O_BASE: a->baseline = v; break;
        case O_TRACE: a->trace = v; break;
        case O_HTML: a->html = v; break;
        case O_EVALFIRST: a->eval_first = 1; break;
        case O_TRAFFIC: ok = cli_int(v, 0, 1000000000, &a->traffic_every); break;
        case O_OPP: ok = cli_int(v, 1, ET_HW_MAX_OPP, &a->opp); break;
        case O_PTARGET:
            if (!cli_float(v, 0, 1, &a->prune_target) || a->prune_target >= 1)
                return cli_fail("train", 1, "bad value '%s' for --prune-target (a fraction, 0 <= F < 1)", v);
            a->prune = 1;
            break;
        case O_PEVERY: ok = cli_int(v, 1, (long long)1 << 40, &a->prune_every), a->have_prune_opts = 1; break;
        case O_PSTART: ok = cli_int(v, 0, (long long)1 << 40, &a->prune_start), a->have_prune_opts = 1; break;
        case O_PEND: ok = cli_int(v, 0, (long long)1 << 40, &a->prune_end), a->have_prune_opts = 1; break;
        case O_SPARSITY: a->sparsity = v; break;
        case O_SPECBITS: a->spec_bits = v; break;
        case O_SPECCHECK: ok = cli_int(v, 0, 1000000000, &a->spec_check); break;
        case O_HELP: fputs(train_help, stdout); exit(0);
        default: return cli_bad_option("train", argv[optind - 1]);
        }
        if (!ok) return cli_fail("train", 1, "bad value '%s' for --%s", v, train_opts[li].name);
    }
    if (optind < argc) return cli_fail("train", 1, "unexpected argument '%s'", argv[optind]);
    if (!a->model) return cli_fail("train", 1, "--model is required (see edgetrain train --help)");
    if (!a->data) return cli_fail("train", 1, "--data is required (e.g. --data fmnist)");
    if (have_epochs && a->steps > 0) return cli_fail("train", 1, "give --epochs or --steps, not both");
    if (a->init_from && a->resume) return cli_fail("train", 1, "give --init-from or --resume, not both");
    if (a->baseline && !a->arch) return cli_fail("train", 1, "--baseline needs --arch");
    if (a->html && !a->arch) return cli_fail("train", 1, "--html needs --arch");
    if (et_sparsity_parse(a->sparsity, a->spec_bits, &a->sp)) return cli_fail("train", 1, "%s", et_last_error());
    a->sp.spec_check_every = (int)a->spec_check;
    if (a->sp.prune) a->prune = 1; /* --sparsity prune: pruning with the --prune-* options */
    if (a->have_prune_opts && !a->prune)
        return cli_fail("train", 1, "--prune-every/--prune-start/--prune-end need --prune-target or --sparsity prune");
    if (a->prune && a->prune_end >= 0 && a->prune_end < a->prune_start)
        return cli_fail("train", 1, "--prune-end %lld is before --prune-start %lld", a->prune_end, a->prune_start);
    if (!a->opp) a->opp = 1;
    if (!a->have_lr) a->lr = a->opt == ET_OPT_ADAM ? 1e-3 : 0.01;
    return 0;
}

static float lr_at(const train_args *a, int epoch, int total_epochs) {
    if (a->sched == 1) return et_lr_step((float)a->lr, epoch, (int)a->sched_size, (float)a->sched_gamma);
    if (a->sched == 2) return et_lr_cosine((float)a->lr, epoch, a->sched_size ? (int)a->sched_size : total_epochs, 0.0f);
    return (float)a->lr;
}

/* Off-chip traffic per tensor kind and codec over the sampled steps. */
static cJSON *traffic_json(const et_model *m) {
    static const char *const kinds[ET_NTRAFFIC + 1] = {"activations", "errors", "weights", "gradients", "total"};
    static const char *const codecs[4] = {"dense", "rle", "bitmask", "csr"};
    cJSON *o = cJSON_CreateObject();
    for (int k = 0; k <= ET_NTRAFFIC; k++) {
        et_traffic_stats t;
        et_model_traffic(m, k < ET_NTRAFFIC ? k : -1, &t);
        if (k == 0) cJSON_AddNumberToObject(o, "sampled_steps", (double)t.samples);
        cJSON *e = cJSON_AddObjectToObject(o, kinds[k]);
        cJSON_AddNumberToObject(e, "elements", (double)t.elements);
        cJSON_AddNumberToObject(e, "zero_fraction", t.elements ? 1.0 - (double)t.nonzeros / (double)t.elements : 0);
        cJSON *b = cJSON_AddObjectToObject(e, "bytes");
        for (int c = 0; c < 4; c++) cJSON_AddNumberToObject(b, codecs[c], t.bytes[c]);
        cJSON *r = cJSON_AddObjectToObject(e, "reduction_vs_dense");
        for (int c = 1; c < 4; c++) cJSON_AddNumberToObject(r, codecs[c], t.bytes[0] > 0 ? 1 - t.bytes[c] / t.bytes[0] : 0);
    }
    return o;
}

/* The pruning schedule and, per pruned layer, what it reached. */
static cJSON *pruning_json(const et_model *m) {
    const et_prune_cfg *c = et_model_pruning(m);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "target", c->target);
    cJSON *s = cJSON_AddObjectToObject(o, "schedule");
    cJSON_AddStringToObject(s, "kind", "cubic (Zhu & Gupta 2017): s_t = target*(1-(1-(t-start)/(end-start))^3)");
    cJSON_AddNumberToObject(s, "every", (double)c->every);
    cJSON_AddNumberToObject(s, "start", (double)c->start);
    cJSON_AddNumberToObject(s, "end", (double)c->end);
    cJSON_AddStringToObject(o, "criterion", "per layer, smallest |w| among unpruned weights (ties: lower index); no regrowth");
    cJSON *ls = cJSON_AddArrayToObject(o, "layers");
    int64_t w = 0, p = 0;
    for (int i = 0; i < et_model_num_nodes(m); i++) {
        et_prune_stats st;
        if (!et_model_prune_stats(m, i, &st)) continue;
        const char *name;
        et_model_node_info(m, i, &name, NULL, NULL);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", name);
        cJSON_AddNumberToObject(e, "weights", (double)st.weights);
        cJSON_AddNumberToObject(e, "pruned", (double)st.pruned);
        cJSON_AddNumberToObject(e, "pruned_fraction", (double)st.pruned / (double)st.weights);
        if (isfinite(st.threshold)) cJSON_AddNumberToObject(e, "threshold", st.threshold);
        else cJSON_AddNullToObject(e, "threshold");
        cJSON_AddNumberToObject(e, "updates", (double)st.updates);
        if (isfinite(st.mean_density)) cJSON_AddNumberToObject(e, "mean_weight_density", st.mean_density);
        else cJSON_AddNullToObject(e, "mean_weight_density");
        cJSON_AddItemToArray(ls, e);
        w += st.weights, p += st.pruned;
    }
    cJSON_AddNumberToObject(o, "weights", (double)w);
    cJSON_AddNumberToObject(o, "pruned", (double)p);
    cJSON_AddNumberToObject(o, "pruned_fraction", w ? (double)p / (double)w : 0.0);
    return o;
}

static cJSON *stage_obj(const uint64_t v[ET_NSTAGES]) {
    cJSON *o = cJSON_CreateObject();
    for (int s = 0; s < ET_NSTAGES; s++) cJSON_AddNumberToObject(o, et_stage_name((et_stage)s), (double)v[s]);
    return o;
}

static double frac(uint64_t a, uint64_t b) { return b ? (double)a / (double)b : 0.0; }

/* Where the training steps' time went: per layer and stage (the model's
 * per-layer wall-clock counters), then the step's phases outside the layers
 * (input staging, loss, precision rounding, traffic sampling, processor
 * model, optimizer) and what is left of train_seconds ("other": the CLI's
 * loop, shuffling, progress). Printed as a table with --profile. */
static cJSON *profile_json(et_model *m, int64_t steps, double train_seconds, int print) {
    cJSON *p = cJSON_CreateObject(), *ls = cJSON_AddArrayToObject(p, "layers");
    double sum = 0, outside = 0;
    const int nn = et_model_num_nodes(m);
    for (int i = 0; i < nn; i++) {
        const et_counters *lc;
        et_model_node_info(m, i, NULL, NULL, &lc);
        if (lc) sum += lc->seconds[ET_FF] + lc->seconds[ET_EP] + lc->seconds[ET_WG];
    }
    for (int q = 0; q < ET_NPHASES; q++) outside += et_model_phase_seconds(m, (et_phase)q);
    const double other = train_seconds - sum - outside > 0 ? train_seconds - sum - outside : 0.0;
    const double all = sum + outside + other;
    cJSON_AddNumberToObject(p, "steps", (double)steps);
    cJSON_AddNumberToObject(p, "layer_seconds", sum);
    if (print)
        fprintf(stderr, "profile: wall ms per step (%lld steps)\n%-10s %-10s %9s %9s %9s %7s\n", (long long)steps,
                "layer", "type", "FF", "EP", "WG", "share");
    for (int i = 0; i < nn; i++) {
        const char *name, *kind;
        const et_counters *lc;
        et_model_node_info(m, i, &name, &kind, &lc);
        if (!lc) continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", name);
        cJSON_AddStringToObject(o, "type", kind);
        double t = 0;
        for (int s = 0; s < ET_NSTAGES; s++) {
            cJSON_AddNumberToObject(o, et_stage_name((et_stage)s), lc->seconds[s]);
            t += lc->seconds[s];
        }
        cJSON_AddItemToArray(ls, o);
        if (print && steps > 0)
            fprintf(stderr, "%-10s %-10s %9.3f %9.3f %9.3f %6.1f%%\n", name, kind, 1e3 * lc->seconds[ET_FF] / steps,
                    1e3 * lc->seconds[ET_EP] / steps, 1e3 * lc->seconds[ET_WG] / steps, all > 0 ? 100.0 * t / all : 0.0);
    }
    cJSON *ph = cJSON_AddObjectToObject(p, "phases");
    if (print && steps > 0) fprintf(stderr, "%-21s %9s %19s %7s\n", "outside the layers", "ms", "", "share");
    for (int q = 0; q <= ET_NPHASES; q++) {
        const char *name = q < ET_NPHASES ? et_phase_name((et_phase)q) : "other";
        const double t = q < ET_NPHASES ? et_model_phase_seconds(m, (et_phase)q) : other;
        cJSON_AddNumberToObject(ph, name, t);
        if (print && steps > 0)
            fprintf(stderr, "%-21s %9.3f %19s %6.1f%%\n", name, 1e3 * t / steps, "", all > 0 ? 100.0 * t / all : 0.0);
    }
    return p;
}

/* Speculation statistics: fractions of all speculated outputs (predicted)
 * and of the outputs of the checked (sampled) products (true / false / missed). */
static cJSON *spec_json(const et_spec_stats *s) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "outputs", (double)s->outputs);
    cJSON_AddNumberToObject(o, "predicted_zero_fraction", frac(s->predicted_zero, s->outputs));
    cJSON_AddNumberToObject(o, "estimate_macs", (double)s->estimate_macs);
    cJSON_AddNumberToObject(o, "checked_outputs", (double)s->checked);
    if (s->checked) {
        cJSON_AddNumberToObject(o, "checked_predicted_zero_fraction", frac(s->checked_predicted_zero, s->checked));
        cJSON_AddNumberToObject(o, "true_zero_fraction", frac(s->true_zero, s->checked));
        cJSON_AddNumberToObject(o, "false_zeros", (double)s->false_zero);
        cJSON_AddNumberToObject(o, "false_zero_fraction", frac(s->false_zero, s->checked));
        cJSON_AddNumberToObject(o, "missed_zeros", (double)s->missed_zero);
        cJSON_AddNumberToObject(o, "missed_zero_fraction", frac(s->missed_zero, s->checked));
    }
    return o;
}

/* Per stage: executed and CPU fractions of the dense MACs, and the fraction
 * of the product's outputs an output mask left out (FF: speculation, EP: the
 * ReLU input's zeros). */
static cJSON *layer_sparsity_json(const et_model *m, int node, const et_counters *c) {
    cJSON *o = cJSON_CreateObject();
    int ff, ep, bw, spec;
    et_model_node_sparsity_plan(m, node, &ff, &ep, &bw, &spec);
    cJSON_AddBoolToObject(o, "ff_skip", ff);
    cJSON_AddBoolToObject(o, "ep_mask", ep);
    cJSON_AddBoolToObject(o, "bw_skip", bw);
    cJSON_AddBoolToObject(o, "speculate", spec);
    for (int s = 0; s < ET_NSTAGES; s++) {
        if (!c->calls[s]) continue;
        cJSON *e = cJSON_AddObjectToObject(o, et_stage_name((et_stage)s));
        cJSON_AddNumberToObject(e, "executed_fraction", c->macs_dense[s] ? frac(c->macs_executed[s], c->macs_dense[s]) : 1.0);
        cJSON_AddNumberToObject(e, "cpu_fraction", c->macs_dense[s] ? frac(c->macs_cpu[s], c->macs_dense[s]) : 1.0);
        cJSON_AddNumberToObject(e, "output_masked_fraction", frac(c->outputs_masked[s], c->outputs[s]));
    }
    return o;
}

int cmd_train(int argc, char **argv) {
    train_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc;
    if (a.threads) et_set_threads((int)a.threads);

    et_model *m = NULL;
    et_dataset train = {0}, test = {0};
    int64_t *perm = NULL;
    uint8_t *labels = NULL;
    FILE *lossf = NULL;
    char loss_tmp[4096] = "";
    float *recent = NULL;
    cJSON *layers = NULL, *spec_layers = NULL, *profile = NULL;
    et_hw_run *hw = NULL, *hwb = NULL;
    et_trace_writer *trace = NULL;
    rc = 1;

    et_optim opt = et_optim_default(a.opt);
    opt.lr = (float)a.lr;
    opt.momentum = a.opt == ET_OPT_SGD ? (float)a.momentum : 0.0f;
    opt.nesterov = a.nesterov;
    opt.weight_decay = (float)a.wd;
    if (a.nesterov && opt.momentum == 0.0f) {
        cli_fail("train", 1, "--nesterov needs a non-zero --momentum");
        goto out;
    }
    if (et_model_load_spec(a.model, &m)) {
        cli_fail("train", 0, "%s", et_last_error());
        goto out;
    }
    if (a.precision && et_model_set_precision(m, a.precision)) goto fail;
    if (et_model_set_sparsity(m, &a.sp)) goto fail;
    if (a.freeze) {
        char list[1024], *save = NULL;
        snprintf(list, sizeof list, "%s", a.freeze);
        for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
            if (et_model_freeze(m, tok)) goto fail;
    }
    et_prune_cfg pcfg = {a.prune_target, a.prune_every, a.prune_start, a.prune_end >= 0 ? a.prune_end : a.prune_start};
    if (a.prune && et_model_set_pruning(m, &pcfg)) goto fail; /* the end is set once the run's length is known */
    if (et_model_plan(m, (int)a.batch, &opt)) {
        cli_fail("train", 0, "%s", et_last_error());
        goto out;
    }
    if (a.trace) {
        const char *names[1024] = {0};
        int nn = et_model_num_nodes(m) < 1024 ? et_model_num_nodes(m) : 1024;
        for (int i = 0; i < nn; i++) et_model_node_info(m, i, &names[i], NULL, NULL);
        if (et_trace_create(a.trace, nn, names, &trace)) goto fail;
    }
    if (a.arch) {
        et_hw_arch ar, br;
        if (et_hw_arch_load(a.arch, NULL, 0, &ar) || (a.baseline && et_hw_arch_load(a.baseline, NULL, 0, &br))) goto fail;
        if (et_hw_run_create(&ar, (int)a.opp - 1, et_model_num_nodes(m), &hw) ||
            (a.baseline && et_hw_run_create(&br, (int)a.opp - 1, et_model_num_nodes(m), &hwb)))
            goto fail;
    }
    if ((hw || trace) && et_model_attach_hw(m, hw, hwb, trace)) goto fail;
    if (a.traffic_every && et_model_measure_traffic(m, (int)a.traffic_every)) goto fail;
    if (et_model_init_he(m, (uint64_t)a.seed)) goto fail;
    if (a.init_from && et_model_load(m, a.init_from, 0)) goto fail;
    if (a.resume && et_model_load(m, a.resume, 1)) goto fail;
    et_model_set_seed(m, (uint64_t)a.seed);

    if (cli_load_data(a.data, a.data_dir, 1, a.train_limit, &train)) goto fail;
    if (a.test_limit != 0 && cli_load_data(a.data, a.data_dir, 0, a.test_limit, &test)) goto fail;
    double acc0 = NAN, loss0 = NAN;
    if (a.eval_first && test.n > 0) { /* not part of the modelled run */
        if ((hw || trace) && et_model_attach_hw(m, NULL, NULL, NULL)) goto fail;
        if (et_model_evaluate(m, &test, -1, &acc0, &loss0)) goto fail;
        if ((hw || trace) && et_model_attach_hw(m, hw, hwb, trace)) goto fail;
        if (!a.quiet) fprintf(stderr, "initial test accuracy %.4f on %lld images\n", acc0, (long long)test.n);
    }

    const int64_t ntrain = train.n, B = a.batch;
    const int64_t spe = (ntrain + B - 1) / B;
    const int64_t total = a.steps > 0 ? a.steps : a.epochs * spe;
    const int total_epochs = (int)((total + spe - 1) / spe);
    int64_t start = et_model_step(m);
    if (a.prune) {
        if (a.prune_end < 0) pcfg.end = total * 4 / 5 > pcfg.start ? total * 4 / 5 : pcfg.start;
        if (et_model_set_pruning(m, &pcfg)) goto fail;
    }
    if (start > total) {
        cli_fail("train", 0, "checkpoint is at step %lld, past the requested %lld steps", (long long)start, (long long)total);
        goto out;
    }
    perm = malloc(sizeof *perm * (size_t)ntrain);
    labels = malloc((size_t)B);
    recent = calloc(100, sizeof *recent);
    if (!perm || !labels || !recent) {
        cli_fail("train", 0, "out of memory");
        goto out;
    }
    if (a.log_loss) {
        snprintf(loss_tmp, sizeof loss_tmp, "%s.tmp.%ld", a.log_loss, (long)getpid());
        if (!(lossf = fopen(loss_tmp, "w"))) {
            cli_fail("train", 0, "cannot write %s", a.log_loss);
            goto out;
        }
        fprintf(lossf, "step,loss\n");
    }

    cli_progress prog;
    cli_progress_init(&prog, total, a.quiet);
    int64_t images = 0, cur_epoch = -1;
    float loss = NAN;
    int nrecent = 0;
    et_model_reset_counters(m);
    double t0 = cli_now();
    for (int64_t s = start; s < total; s++) {
        int64_t epoch = s / spe, b = s % spe;
        if (epoch != cur_epoch) {
            if (a.shuffle) et_shuffle((uint64_t)a.seed, (uint64_t)epoch, ntrain, perm);
            else for (int64_t i = 0; i < ntrain; i++) perm[i] = i;
            cur_epoch = epoch;
        }
        int n = (int)(ntrain - b * B < B ? ntrain - b * B : B);
        const int64_t *idx = perm + b * B;
        for (int i = 0; i < n; i++) labels[i] = train.labels[idx[i]];
        float lr = lr_at(&a, (int)epoch, total_epochs);
        if (et_model_set_input_u8(m, &train, idx, n)) goto fail;
        if (b + 1 < spe) { /* the next batch of this epoch, into the caches while this one trains */
            const int64_t nn = ntrain - (b + 1) * B < B ? ntrain - (b + 1) * B : B;
            et_dataset_prefetch(&train, perm + (b + 1) * B, (int)nn);
        }
        if (et_model_train_step(m, labels, n, lr, &loss)) goto fail;
        if (!isfinite(loss)) {
            cli_progress_end(&prog);
            cli_fail("train", 0, "loss became %f at step %lld: lower --lr", loss, (long long)s);
            goto out;
        }
        images += n;
        recent[nrecent++ % 100] = loss;
        if (lossf) fprintf(lossf, "%lld,%.9g\n", (long long)s, loss);
        cli_progress_update(&prog, s + 1, images, loss, s + 1 == total);
        if (!a.quiet && !prog.enabled && (b == spe - 1 || s + 1 == total))
            fprintf(stderr, "epoch %lld: step %lld/%lld loss %.4f %.0f img/s\n", (long long)epoch + 1,
                    (long long)s + 1, (long long)total, loss, images / (cli_now() - t0));
    }
    double secs = cli_now() - t0;
    if (hw || trace) et_model_attach_hw(m, NULL, NULL, NULL); /* evaluation is not part of the modelled run */
    if (trace) {
        et_status ts = et_trace_close(trace, 1);
        trace = NULL;
        if (ts) goto fail;
    }
    cli_progress_end(&prog);
    et_counters cnt = *et_model_counters(m);
    profile = profile_json(m, total - start, secs, a.profile);
    layers = cJSON_CreateArray(); /* per-layer training counters, before evaluation adds FF work */
    spec_layers = cJSON_CreateArray();
    et_spec_stats spec_total;
    memset(&spec_total, 0, sizeof spec_total);
    for (int i = 0; i < et_model_num_nodes(m); i++) {
        const char *name, *kind;
        const et_counters *lc;
        et_model_node_info(m, i, &name, &kind, &lc);
        if (!lc || !(lc->calls[ET_FF] + lc->calls[ET_EP] + lc->calls[ET_WG])) continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", name);
        cJSON_AddStringToObject(o, "type", kind);
        cJSON_AddItemToObject(o, "macs_dense", stage_obj(lc->macs_dense));
        cJSON_AddItemToObject(o, "macs_executed", stage_obj(lc->macs_executed));
        cJSON_AddItemToObject(o, "macs_cpu", stage_obj(lc->macs_cpu));
        cJSON_AddItemToObject(o, "sparsity", layer_sparsity_json(m, i, lc));
        et_spec_stats ss;
        et_model_spec_stats(m, i, &ss);
        if (ss.outputs) {
            cJSON *sj = spec_json(&ss);
            cJSON_AddStringToObject(sj, "name", name);
            cJSON_AddItemToArray(spec_layers, sj);
            spec_total.outputs += ss.outputs, spec_total.predicted_zero += ss.predicted_zero;
            spec_total.checked += ss.checked, spec_total.checked_predicted_zero += ss.checked_predicted_zero;
            spec_total.true_zero += ss.true_zero, spec_total.false_zero += ss.false_zero;
            spec_total.missed_zero += ss.missed_zero, spec_total.estimate_macs += ss.estimate_macs;
        }
        int64_t lsteps[32];
        int lbits[32], nl = et_model_laps_history(m, i, lsteps, lbits, 32);
        if (nl) { /* adaptive precision: [step, weight bits] when the width changed */
            cJSON *h = cJSON_AddArrayToObject(o, "w_bits_history");
            for (int k = 0; k < nl; k++) {
                cJSON *e = cJSON_CreateArray();
                cJSON_AddItemToArray(e, cJSON_CreateNumber((double)lsteps[k]));
                cJSON_AddItemToArray(e, cJSON_CreateNumber(lbits[k]));
                cJSON_AddItemToArray(h, e);
            }
        }
        double zin, zerr;
        et_model_node_sparsity(m, i, &zin, &zerr);
        if (zin >= 0) cJSON_AddNumberToObject(o, "input_zero_fraction", zin);
        if (zin >= 0) cJSON_AddNumberToObject(cJSON_GetObjectItem(o, "sparsity"), "input_zero_fraction", zin);
        if (zerr >= 0) cJSON_AddNumberToObject(cJSON_GetObjectItem(o, "sparsity"), "error_zero_fraction", zerr);
        if (zerr >= 0) cJSON_AddNumberToObject(o, "error_zero_fraction", zerr);
        cJSON *fm = cJSON_AddObjectToObject(o, "formats");
        static const char *const roles[] = {"w", "a", "e", "g", "acc", "m", "mul"};
        for (int r = 0; r < 7; r++) {
            char buf[64];
            cJSON_AddStringToObject(fm, roles[r], et_model_format_name(m, i, roles[r], buf, sizeof buf));
        }
        cJSON_AddItemToArray(layers, o);
    }

    if (lossf) {
        int bad = fflush(lossf) != 0 || fsync(fileno(lossf)) != 0;
        bad |= fclose(lossf) != 0;
        lossf = NULL;
        if (bad || rename(loss_tmp, a.log_loss)) {
            cli_fail("train", 0, "cannot write %s", a.log_loss);
            goto out;
        }
        loss_tmp[0] = 0;
    }
    if (a.save && et_model_save(m, a.save, 1)) goto fail;

    double acc = NAN, test_loss = NAN;
    if (test.n > 0 && et_model_evaluate(m, &test, -1, &acc, &test_loss)) goto fail;
    int nr = nrecent < 100 ? nrecent : 100;
    double final_loss = 0;
    for (int i = 0; i < nr; i++) final_loss += recent[i];
    final_loss = nr ? final_loss / nr : NAN;
    et_memory_plan mem = et_model_memory(m);
    double ips = secs > 0 ? images / secs : 0;

    printf("model %s: %lld steps, %lld images in %.2f s (%.0f images/s, %d threads)\n", et_model_name(m),
           (long long)(total - start), (long long)images, secs, ips, et_get_threads());
    if (isfinite(acc0)) printf("initial test accuracy %.4f on %lld images (loss %.4f)\n", acc0, (long long)test.n, loss0);
    if (test.n > 0) printf("test accuracy %.4f on %lld images (loss %.4f)\n", acc, (long long)test.n, test_loss);
    printf("final training loss %.4f; memory plan %.1f MB; peak RSS %.1f MB\n", final_loss,
           mem.total / 1048576.0, cli_peak_rss_bytes() / 1048576.0);

    if (a.prune) {
        int64_t w = 0, p = 0;
        et_prune_stats st;
        for (int i = 0; i < et_model_num_nodes(m); i++)
            if (et_model_prune_stats(m, i, &st)) w += st.weights, p += st.pruned;
        printf("pruning: %lld of %lld conv/linear weights pruned (%.4f; target %g per layer)\n", (long long)p,
               (long long)w, w ? (double)p / (double)w : 0.0, a.prune_target);
    }
    if (a.sp.skip || a.sp.speculate || a.prune) {
        char sbuf[64];
        printf("sparsity %s: executed MACs FF %.1f%% EP %.1f%% WG %.1f%% of dense; the CPU ran %.1f%%\n",
               et_sparsity_name(&a.sp, sbuf, sizeof sbuf),
               100.0 * frac(cnt.macs_executed[ET_FF], cnt.macs_dense[ET_FF]),
               100.0 * frac(cnt.macs_executed[ET_EP], cnt.macs_dense[ET_EP]),
               100.0 * frac(cnt.macs_executed[ET_WG], cnt.macs_dense[ET_WG]),
               100.0 * frac(cnt.macs_cpu[0] + cnt.macs_cpu[1] + cnt.macs_cpu[2],
                            cnt.macs_dense[0] + cnt.macs_dense[1] + cnt.macs_dense[2]));
        if (a.sp.speculate && spec_total.checked)
            printf("speculation: %.1f%% of outputs predicted zero; %.2f%% false zeros, %.2f%% missed zeros (checked steps)\n",
                   100.0 * frac(spec_total.predicted_zero, spec_total.outputs),
                   100.0 * frac(spec_total.false_zero, spec_total.checked),
                   100.0 * frac(spec_total.missed_zero, spec_total.checked));
    }
    if (hw) hw_print(hw, hwb);
    if (a.html) {
        const char *names[1024] = {0};
        for (int i = 0; i < et_model_num_nodes(m) && i < 1023; i++) et_model_node_info(m, i, &names[i], NULL, NULL);
        cJSON *h = hw_json(names, hw, hwb, (int)a.opp), *run = cJSON_CreateObject();
        cJSON_AddStringToObject(run, "model", et_model_name(m));
        cJSON_AddStringToObject(run, "precision", et_model_precision(m) ? et_model_precision(m) : "fp32");
        if (a.init_from) cJSON_AddStringToObject(run, "initial weights", a.init_from);
        if (a.data_dir) cJSON_AddStringToObject(run, "data", a.data_dir);
        cJSON_AddNumberToObject(run, "steps", (double)(total - start));
        cJSON_AddNumberToObject(run, "batch", (double)B);
        if (isfinite(acc0)) cJSON_AddNumberToObject(run, "initial test accuracy", acc0);
        if (test.n > 0) cJSON_AddNumberToObject(run, "test accuracy", acc);
        if (isfinite(final_loss)) cJSON_AddNumberToObject(run, "final training loss", final_loss);
        char title[256];
        snprintf(title, sizeof title, "edgetrain train %s on %s%s%s", et_model_name(m), et_hw_run_arch(hw)->name,
                 hwb ? " vs " : "", hwb ? et_hw_run_arch(hwb)->name : "");
        int bad = hw_html_write(a.html, title, run, h, NULL);
        cJSON_Delete(h);
        cJSON_Delete(run);
        if (bad) {
            cli_fail("train", 0, "cannot write '%s'", a.html);
            goto out;
        }
    }
    if (a.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", et_model_name(m));
        cJSON_AddNumberToObject(j, "steps", (double)(total - start));
        cJSON_AddNumberToObject(j, "first_step", (double)start);
        cJSON_AddNumberToObject(j, "epochs", total_epochs);
        cJSON_AddNumberToObject(j, "batch", (double)B);
        cJSON_AddNumberToObject(j, "train_images", (double)images);
        if (isfinite(acc0)) {
            cJSON_AddNumberToObject(j, "initial_test_accuracy", acc0);
            cJSON_AddNumberToObject(j, "initial_test_loss", loss0);
        }
        if (test.n > 0) {
            cJSON_AddNumberToObject(j, "test_accuracy", acc);
            cJSON_AddNumberToObject(j, "test_loss", test_loss);
            cJSON_AddNumberToObject(j, "test_images", (double)test.n);
        } else {
            cJSON_AddNullToObject(j, "test_accuracy");
        }
        if (isfinite(final_loss)) cJSON_AddNumberToObject(j, "final_loss", final_loss);
        else cJSON_AddNullToObject(j, "final_loss");
        cJSON_AddNumberToObject(j, "train_seconds", secs);
        cJSON_AddNumberToObject(j, "train_images_per_second", ips);
        cJSON_AddNumberToObject(j, "peak_memory_bytes", (double)mem.total);
        cJSON_AddNumberToObject(j, "peak_rss_bytes", (double)cli_peak_rss_bytes());
        cJSON_AddNumberToObject(j, "threads", et_get_threads());
        cJSON_AddNumberToObject(j, "seed", (double)a.seed);
        cJSON_AddStringToObject(j, "optimizer", a.opt == ET_OPT_ADAM ? "adam" : "sgd");
        cJSON_AddStringToObject(j, "precision", et_model_precision(m) ? et_model_precision(m) : "fp32");
        cJSON_AddNumberToObject(j, "lr", a.lr);
        cJSON_AddStringToObject(j, "gemm_kernel", et_gemm_kernel_name());
        cJSON_AddItemToObject(j, "macs_dense", stage_obj(cnt.macs_dense));
        cJSON_AddItemToObject(j, "macs_executed", stage_obj(cnt.macs_executed));
        cJSON_AddItemToObject(j, "macs_cpu", stage_obj(cnt.macs_cpu));
        cJSON_AddItemToObject(j, "layers", layers);
        cJSON_AddItemToObject(j, "profile", profile);
        profile = NULL;
        cJSON *spj = cJSON_AddObjectToObject(j, "sparsity");
        char sbuf[64];
        cJSON_AddStringToObject(spj, "mode", et_sparsity_name(&a.sp, sbuf, sizeof sbuf));
        if (a.sp.speculate) {
            if (a.sp.spec_bits == ET_SPEC_EXP) cJSON_AddStringToObject(spj, "spec_bits", "exp");
            else cJSON_AddNumberToObject(spj, "spec_bits", a.sp.spec_bits);
            cJSON_AddNumberToObject(spj, "spec_check_every", (double)a.spec_check);
        }
        cJSON *ef = cJSON_AddObjectToObject(spj, "executed_fraction");
        cJSON *cf = cJSON_AddObjectToObject(spj, "cpu_fraction");
        for (int s = 0; s < ET_NSTAGES; s++) {
            double d = (double)cnt.macs_dense[s];
            cJSON_AddNumberToObject(ef, et_stage_name((et_stage)s), d > 0 ? cnt.macs_executed[s] / d : 1.0);
            cJSON_AddNumberToObject(cf, et_stage_name((et_stage)s), d > 0 ? cnt.macs_cpu[s] / d : 1.0);
        }
        uint64_t td = 0, te = 0, tc = 0;
        for (int s = 0; s < ET_NSTAGES; s++) td += cnt.macs_dense[s], te += cnt.macs_executed[s], tc += cnt.macs_cpu[s];
        cJSON_AddNumberToObject(ef, "total", td ? (double)te / (double)td : 1.0);
        cJSON_AddNumberToObject(cf, "total", td ? (double)tc / (double)td : 1.0);
        if (a.sp.speculate) {
            cJSON *sj = cJSON_AddObjectToObject(spj, "speculation");
            cJSON_AddItemToObject(sj, "total", spec_json(&spec_total));
            cJSON_AddItemToObject(sj, "layers", spec_layers);
            spec_layers = NULL;
        }
        if (a.traffic_every) cJSON_AddItemToObject(j, "traffic", traffic_json(m));
        if (a.prune) cJSON_AddItemToObject(j, "pruning", pruning_json(m));
        if (hw) {
            const char *names[1024] = {0};
            for (int i = 0; i < et_model_num_nodes(m) && i < 1023; i++) et_model_node_info(m, i, &names[i], NULL, NULL);
            cJSON *h = hw_json(names, hw, hwb, (int)a.opp);
            cJSON_AddItemToObject(j, "hw", h);
        }
        layers = NULL;
        char *txt = cJSON_Print(j);
        cJSON_Delete(j);
        size_t len = txt ? strlen(txt) : 0;
        int bad = !txt || cli_write_atomic(a.json, txt, len);
        free(txt);
        if (bad) {
            cli_fail("train", 0, "cannot write %s", a.json);
            goto out;
        }
    }
    rc = 0;
    goto out;
fail:
    cli_fail("train", 0, "%s", et_last_error());
out:
    cJSON_Delete(layers);
    cJSON_Delete(spec_layers);
    cJSON_Delete(profile);
    et_hw_run_free(hw);
    et_hw_run_free(hwb);
    et_trace_close(trace, 0); /* a run that failed leaves no trace file */
    if (lossf) fclose(lossf);
    if (loss_tmp[0]) remove(loss_tmp);
    free(perm), free(labels), free(recent);
    et_dataset_free(&train);
    et_dataset_free(&test);
    et_model_free(m);
    return rc;
}
