/* edgetrain eval: accuracy of a checkpoint on the test set. */
#include "cli.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char eval_help[] =
    "usage: edgetrain eval --model SPEC --checkpoint F --data fmnist [options]\n"
    "\n"
    "Evaluates a checkpoint (batchnorm uses its running statistics).\n"
    "\n"
    "  --model SPEC      model spec file or name in models/\n"
    "  --checkpoint F    safetensors checkpoint (edgetrain or PyTorch state_dict names)\n"
    "  --data NAME       fmnist\n"
    "  --data-dir DIR    directory with the IDX files\n"
    "  --test-limit N    first N test images (default all)\n"
    "  --batch B         images per forward pass (default 500)\n"
    "  --threads T       worker threads\n"
    "  --precision SPEC  precision policy for the forward pass (docs/precision.md)\n"
    "  --sparsity MODES  none (default), skip, speculate (docs/sparsity.md); a pruned\n"
    "                    checkpoint's weights are zeros, which skip and speculate skip\n"
    "  --spec-bits B     speculation precision: 1..8 (default 4), exp or 32\n"
    "  --json F          write {model, checkpoint, test_images, test_accuracy, test_loss,\n"
    "                    sparsity, macs_dense, macs_executed, macs_cpu (FF of the evaluation)}\n";

int cmd_eval(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", 1, 0, 'm'}, {"checkpoint", 1, 0, 'c'}, {"data", 1, 0, 'd'}, {"data-dir", 1, 0, 'D'},
        {"test-limit", 1, 0, 'l'}, {"batch", 1, 0, 'b'}, {"threads", 1, 0, 't'}, {"json", 1, 0, 'j'}, {"precision", 1, 0, 'p'},
        {"sparsity", 1, 0, 's'}, {"spec-bits", 1, 0, 'B'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    const char *model = NULL, *ckpt = NULL, *data = NULL, *dir = NULL, *json = NULL, *prec = NULL;
    const char *sparsity = NULL, *spec_bits = NULL;
    long long limit = -1, batch = 500, threads = 0;
    int c, li = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, &li)) != -1) {
        int ok = 1;
        switch (c) {
        case 'm': model = optarg; break;
        case 'c': ckpt = optarg; break;
        case 'd': data = optarg; break;
        case 'D': dir = optarg; break;
        case 'j': json = optarg; break;
        case 'p': prec = optarg; break;
        case 's': sparsity = optarg; break;
        case 'B': spec_bits = optarg; break;
        case 'l': ok = cli_int(optarg, 0, INT64_MAX, &limit); break;
        case 'b': ok = cli_int(optarg, 1, 65536, &batch); break;
        case 't': ok = cli_int(optarg, 1, 1024, &threads); break;
        case 'h': fputs(eval_help, stdout); return 0;
        default: return cli_bad_option("eval", argv[optind - 1]);
        }
        if (!ok) return cli_fail("eval", 1, "bad value '%s' for --%s", optarg, opts[li].name);
    }
    if (optind < argc) return cli_fail("eval", 1, "unexpected argument '%s'", argv[optind]);
    if (!model || !ckpt || !data) return cli_fail("eval", 1, "--model, --checkpoint and --data are required");
    et_sparsity sp;
    if (et_sparsity_parse(sparsity, spec_bits, &sp)) return cli_fail("eval", 1, "%s", et_last_error());
    if (sp.prune)
        return cli_fail("eval", 1, "--sparsity prune is a training mode (a pruned checkpoint's weights are zeros: "
                                   "--sparsity skip skips them)");
    if (threads) et_set_threads((int)threads);
    et_model *m = NULL;
    et_dataset test = {0};
    int rc = 1;
    double acc = 0, loss = 0;
    if (et_model_load_spec(model, &m) || (prec && et_model_set_precision(m, prec)) || et_model_set_sparsity(m, &sp) || et_model_plan(m, (int)batch, NULL) || et_model_load(m, ckpt, 0) ||
        cli_load_data(data, dir, 0, limit, &test) || et_model_evaluate(m, &test, -1, &acc, &loss)) {
        cli_fail("eval", 0, "%s", et_last_error());
        goto out;
    }
    printf("test accuracy %.4f on %lld images (loss %.4f)\n", acc, (long long)test.n, loss);
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", et_model_name(m));
        cJSON_AddStringToObject(j, "checkpoint", ckpt);
        cJSON_AddNumberToObject(j, "test_images", (double)test.n);
        cJSON_AddNumberToObject(j, "test_accuracy", acc);
        cJSON_AddNumberToObject(j, "test_loss", loss);
        char sbuf[64];
        cJSON_AddStringToObject(j, "sparsity", et_sparsity_name(&sp, sbuf, sizeof sbuf));
        const et_counters *cn = et_model_counters(m);
        cJSON_AddNumberToObject(j, "macs_dense", (double)cn->macs_dense[ET_FF]);
        cJSON_AddNumberToObject(j, "macs_executed", (double)cn->macs_executed[ET_FF]);
        cJSON_AddNumberToObject(j, "macs_cpu", (double)cn->macs_cpu[ET_FF]);
        char *txt = cJSON_Print(j);
        cJSON_Delete(j);
        if (!txt || cli_write_atomic(json, txt, strlen(txt))) {
            free(txt);
            cli_fail("eval", 0, "cannot write %s", json);
            goto out;
        }
        free(txt);
    }
    rc = 0;
out:
    et_dataset_free(&test);
    et_model_free(m);
    return rc;
}
