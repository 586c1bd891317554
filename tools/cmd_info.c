/* edgetrain info: what a model costs before it runs. */
#include "cli.h"

#include <getopt.h>
#include <string.h>

static const char info_help[] =
    "usage: edgetrain info --model SPEC [--batch B] [--optimizer sgd|adam] [--momentum M]\n"
    "\n"
    "Prints the parameters, the multiply-accumulates per image in each training\n"
    "stage (FF: forward, EP: error propagation, WG: weight gradient; the first\n"
    "layer has no EP) and the memory plan for training at batch B (default 100).\n";

static void mb(const char *what, size_t bytes) { printf("  %-22s %12zu bytes  %8.2f MB\n", what, bytes, bytes / 1048576.0); }

int cmd_info(int argc, char **argv) {
    static const struct option opts[] = {{"model", 1, 0, 'm'}, {"batch", 1, 0, 'b'}, {"optimizer", 1, 0, 'o'},
                                         {"momentum", 1, 0, 'M'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    const char *model = NULL;
    long long batch = 100;
    double mom = 0.9;
    et_optim_kind kind = ET_OPT_SGD;
    int c, li = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, &li)) != -1) {
        int ok = 1;
        switch (c) {
        case 'm': model = optarg; break;
        case 'b': ok = cli_int(optarg, 1, 65536, &batch); break;
        case 'M': ok = cli_float(optarg, 0, 1, &mom); break;
        case 'o':
            if (!strcmp(optarg, "sgd")) kind = ET_OPT_SGD;
            else if (!strcmp(optarg, "adam")) kind = ET_OPT_ADAM;
            else ok = 0;
            break;
        case 'h': fputs(info_help, stdout); return 0;
        default: return cli_bad_option("info", argv[optind - 1]);
        }
        if (!ok) return cli_fail("info", 1, "bad value '%s' for --%s", optarg, opts[li].name);
    }
    if (optind < argc) return cli_fail("info", 1, "unexpected argument '%s'", argv[optind]);
    if (!model) return cli_fail("info", 1, "--model is required");
    et_model *m = NULL;
    et_optim opt = et_optim_default(kind);
    opt.momentum = kind == ET_OPT_SGD ? (float)mom : 0.0f;
    if (et_model_load_spec(model, &m) || et_model_plan(m, (int)batch, &opt)) {
        int rc = cli_fail("info", 0, "%s", et_last_error());
        et_model_free(m);
        return rc;
    }
    int64_t macs[ET_NSTAGES];
    et_model_macs(m, macs);
    int ic, ih, iw;
    et_model_input_shape(m, &ic, &ih, &iw);
    printf("model %s: input %dx%dx%d, %d classes\n", et_model_name(m), ic, ih, iw, et_model_num_classes(m));
    printf("parameters: %lld\n", (long long)et_model_num_params(m));
    printf("state tensors (PyTorch state_dict names):\n");
    for (int i = 0; i < et_model_num_tensors(m); i++) {
        const char *name;
        int64_t n;
        et_model_tensor(m, i, &name, NULL, &n, NULL);
        printf("  %-28s %10lld\n", name, (long long)n);
    }
    printf("MACs per image: FF %lld, EP %lld, WG %lld (total %lld)\n", (long long)macs[ET_FF],
           (long long)macs[ET_EP], (long long)macs[ET_WG], (long long)(macs[0] + macs[1] + macs[2]));
    et_memory_plan p = et_model_memory(m);
    printf("memory plan for training at batch %lld (%s):\n", batch, kind == ET_OPT_ADAM ? "adam" : "sgd");
    mb("parameters", p.params);
    mb("parameter gradients", p.grads);
    mb("optimizer state", p.optimizer);
    mb("activations", p.activations);
    mb("activation gradients", p.act_grads);
    mb("scratch", p.scratch);
    mb("gemm workspace", p.workspace);
    mb("total", p.total);
    et_model_free(m);
    return 0;
}
