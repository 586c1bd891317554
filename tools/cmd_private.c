/* edgetrain private-data: builds the device's private data set, a documented
 * deterministic shift of part of Fashion-MNIST, as IDX files usable with
 * --data-dir. */
#include "cli.h"

#include <getopt.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char private_help[] =
    "usage: edgetrain private-data --out DIR [options]\n"
    "\n"
    "Writes DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz: a device-specific shift\n"
    "(docs/private-data.md) of training images FROM..FROM+TRAIN-1 and of the first TEST\n"
    "test images. Use the result with --data fmnist --data-dir DIR.\n"
    "\n"
    "  --out DIR         output directory (created if missing)\n"
    "  --shift NAME      lowlight (default) or invert\n"
    "  --seed S          the device's seed (default 1)\n"
    "  --train N         private training images (default 5000)\n"
    "  --train-from I    first training image taken (default 55000: not among the first 55000)\n"
    "  --test N          private test images (default 1000)\n"
    "  --data NAME       source data set: fmnist\n"
    "  --data-dir DIR    where the source IDX files are\n";

int cmd_private(int argc, char **argv) {
    static const struct option opts[] = {
        {"out", 1, 0, 'o'}, {"shift", 1, 0, 's'}, {"seed", 1, 0, 'S'}, {"train", 1, 0, 'n'},
        {"train-from", 1, 0, 'f'}, {"test", 1, 0, 't'}, {"data", 1, 0, 'd'}, {"data-dir", 1, 0, 'D'},
        {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    const char *out = NULL, *shift = "lowlight", *data = "fmnist", *dir = NULL;
    long long seed = 1, ntrain = 5000, from = 55000, ntest = 1000;
    int c, li = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, &li)) != -1) {
        int ok = 1;
        switch (c) {
        case 'o': out = optarg; break;
        case 's': shift = optarg; break;
        case 'd': data = optarg; break;
        case 'D': dir = optarg; break;
        case 'S': ok = cli_int(optarg, 0, INT64_MAX, &seed); break;
        case 'n': ok = cli_int(optarg, 1, 100000000, &ntrain); break;
        case 'f': ok = cli_int(optarg, 0, 100000000, &from); break;
        case 't': ok = cli_int(optarg, 1, 100000000, &ntest); break;
        case 'h': fputs(private_help, stdout); return 0;
        default: return cli_bad_option("private-data", argv[optind - 1]);
        }
        if (!ok) return cli_fail("private-data", 1, "bad value '%s' for --%s", optarg, opts[li].name);
    }
    if (optind < argc) return cli_fail("private-data", 1, "unexpected argument '%s'", argv[optind]);
    if (!out) return cli_fail("private-data", 1, "--out is required");
    if (mkdir(out, 0755) != 0 && access(out, W_OK) != 0)
        return cli_fail("private-data", 0, "cannot create or write directory %s", out);
    et_dataset src = {0}, dst = {0};
    int rc = 1;
    char pi[4096], pl[4096];
    for (int train = 1; train >= 0; train--) {
        int64_t first = train ? from : 0, n = train ? ntrain : ntest;
        if (cli_load_data(data, dir, train, first + n, &src) || et_dataset_shift(&src, shift, (uint64_t)seed, first, n, &dst))
            goto fail;
        snprintf(pi, sizeof pi, "%s/%s-images-idx3-ubyte.gz", out, train ? "train" : "t10k");
        snprintf(pl, sizeof pl, "%s/%s-labels-idx1-ubyte.gz", out, train ? "train" : "t10k");
        if (et_idx_save(pi, pl, &dst)) goto fail;
        et_dataset_free(&src);
        et_dataset_free(&dst);
    }
    printf("private data (%s, seed %lld): %lld training images from #%lld, %lld test images -> %s\n", shift, seed,
           ntrain, from, ntest, out);
    rc = 0;
    goto out;
fail:
    cli_fail("private-data", 0, "%s", et_last_error());
out:
    et_dataset_free(&src);
    et_dataset_free(&dst);
    return rc;
}
