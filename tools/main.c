/* edgetrain: command-line entry point; one file per subcommand. */
#include "cli.h"

#include <string.h>

static const struct {
    const char *name;
    int (*run)(int, char **);
    const char *help;
} commands[] = {
    {"train", cmd_train, "train a model on a data set, write checkpoint and JSON summary"},
    {"eval", cmd_eval, "evaluate a checkpoint on the test set"},
    {"info", cmd_info, "parameters, MACs per stage and the memory plan of a model"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: edgetrain COMMAND [OPTIONS]   (edgetrain COMMAND --help for details)\n\n"
               "Trains neural networks the way edge-learning processors do.\n\ncommands:\n");
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
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "edgetrain: unknown command '%s' (try: edgetrain --help)\n", argv[1]);
    return 2;
}
