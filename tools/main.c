/* edgetrain: command-line entry point; one file per subcommand. */
#include "cli.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Lets `--model lenet` work from anywhere: unless ET_MODELS_DIR is set, point
 * it at the models shipped next to this binary (installed:
 * PREFIX/share/edgetrain/models; in the source tree: build/../models). */
static void find_models_dir(void) {
    if (getenv("ET_MODELS_DIR")) return;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return;
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (!slash) return;
    *slash = 0;
    const char *rel[] = {"/../share/edgetrain/models", "/../models"};
    for (int i = 0; i < 2; i++) {
        char cand[PATH_MAX + 64];
        snprintf(cand, sizeof cand, "%s%s", exe, rel[i]);
        if (access(cand, R_OK) == 0) {
            setenv("ET_MODELS_DIR", cand, 0);
            return;
        }
    }
}

static const struct {
    const char *name;
    int (*run)(int, char **);
    const char *help;
} commands[] = {
    {"train", cmd_train, "train a model on a data set, write checkpoint and JSON summary"},
    {"eval", cmd_eval, "evaluate a checkpoint on the test set"},
    {"info", cmd_info, "parameters, MACs per stage and the memory plan of a model"},
    {"private-data", cmd_private, "build a device-specific shifted copy of the data (the private set)"},
    {"quantize", cmd_quantize, "round numbers from stdin to a number format (fp16, e4m3, int8, ...)"},
    {"simulate", cmd_simulate, "model a training processor: peak TOPS and TOPS/W of an architecture"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: edgetrain COMMAND [OPTIONS]   (edgetrain COMMAND --help for details)\n\n"
               "Trains neural networks the way edge-learning processors do.\n\ncommands:\n");
    find_models_dir();
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "edgetrain: missing command (train, eval, info; try: edgetrain --help)\n");
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("edgetrain 0.1 (gemm: %s)\n", et_gemm_kernel_name());
        return 0;
    }
    find_models_dir();
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "edgetrain: unknown command '%s' (try: edgetrain --help)\n", argv[1]);
    return 2;
}
