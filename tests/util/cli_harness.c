/* See cli_harness.h. */
#include "util/cli_harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

char ch_dir[256];
const char *ch_cli;

int ch_setup(const char *prefix) {
    ch_cli = getenv("ET_CLI") ? getenv("ET_CLI") : "build/edgetrain";
    snprintf(ch_dir, sizeof ch_dir, "/tmp/%s.XXXXXX", prefix);
    return mkdtemp(ch_dir) ? 0 : -1;
}

int ch_teardown(void) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", ch_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int ch_run(const char *args, int *err_lines, char *err, size_t cap) {
    char cmd[4096], errf[512];
    snprintf(errf, sizeof errf, "%s/stderr.txt", ch_dir);
    snprintf(cmd, sizeof cmd, "%s %s >%s/stdout.txt 2>%s", ch_cli, args, ch_dir, errf);
    int st = system(cmd);
    int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    FILE *f = fopen(errf, "r");
    int lines = 0;
    size_t n = 0;
    if (f) {
        int c;
        while ((c = fgetc(f)) != EOF) {
            lines += c == '\n';
            if (err && n + 1 < cap) err[n++] = (char)c;
        }
        fclose(f);
    }
    if (err && cap) err[n] = 0;
    if (err_lines) *err_lines = lines;
    return code;
}

int ch_have_fmnist(void) { return access("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz", R_OK) == 0; }
