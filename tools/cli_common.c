#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

int cli_fail(const char *cmd, int usage, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "edgetrain %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return usage ? 2 : 1;
}

int cli_bad_option(const char *cmd, const char *arg) {
    if (!arg) arg = "?";
    if (!strncmp(arg, "--", 2) && !strchr(arg, '='))
        return cli_fail(cmd, 1, "unknown option or missing value: %s (see edgetrain %s --help)", arg, cmd);
    return cli_fail(cmd, 1, "unknown option %s (see edgetrain %s --help)", arg, cmd);
}

int cli_int(const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

int cli_float(const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

int cli_write_atomic(const char *path, const char *data, size_t len) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return -1;
    int ok = fwrite(data, 1, len, f) == len;
    ok &= fflush(f) == 0;
    ok &= fsync(fileno(f)) == 0;
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        return -1;
    }
    return 0;
}

et_status cli_load_data(const char *name, const char *dir, int train, int64_t limit, et_dataset *ds) {
    if (strcmp(name, "fmnist"))
        return et_set_error(ET_ERR_INVALID, "unknown data set '%s' (supported: fmnist)", name);
    return et_fmnist_load(dir, train, limit, ds);
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int64_t cli_peak_rss_bytes(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (int64_t)ru.ru_maxrss * 1024;
}

void cli_progress_init(cli_progress *p, int64_t total, int quiet) {
    p->enabled = !quiet && isatty(2);
    p->start = p->last = cli_now();
    p->total = total;
}

void cli_progress_update(cli_progress *p, int64_t done, int64_t images, float loss, int force) {
    if (!p->enabled) return;
    double now = cli_now();
    if (!force && now - p->last < 0.1) return;
    p->last = now;
    double el = now - p->start, rate = el > 0 ? (double)images / el : 0;
    double eta = done > 0 ? el * (double)(p->total - done) / (double)done : 0;
    int width = 24, fill = p->total ? (int)(width * done / p->total) : 0;
    char bar[32];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
    bar[width] = 0;
    fprintf(stderr, "\r[%s] step %lld/%lld  loss %.4f  %.0f img/s  ETA %d:%02d ", bar,
            (long long)done, (long long)p->total, loss, rate, (int)eta / 60, (int)eta % 60);
    fflush(stderr);
}

void cli_progress_end(cli_progress *p) {
    if (p->enabled) fputc('\n', stderr);
}
