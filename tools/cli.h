/* Shared pieces of the edgetrain command-line tool. */
#ifndef ET_CLI_H
#define ET_CLI_H
#include "edgetrain.h"

#include <stdint.h>
#include <stdio.h>

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_private(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_simulate(int, char **);

/* Prints "edgetrain CMD: message" on stderr; returns 2 (usage) or 1. */
int cli_fail(const char *cmd, int usage, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Message for an option getopt_long rejected (unknown, or missing its value). */
int cli_bad_option(const char *cmd, const char *arg);
/* Strict number parsing for option values; 0 on failure. */
int cli_int(const char *s, long long lo, long long hi, long long *out);
int cli_float(const char *s, double lo, double hi, double *out);

/* Writes `len` bytes to PATH atomically (PATH.tmp.PID then rename). */
int cli_write_atomic(const char *path, const char *data, size_t len);

/* Loads Fashion-MNIST ("fmnist") from dir (NULL: Debian's package path). */
et_status cli_load_data(const char *name, const char *dir, int train, int64_t limit, et_dataset *ds);

double cli_now(void);
int64_t cli_peak_rss_bytes(void);

/* Processor-model report (tools/hw_report.c): names = layer names by index,
 * NULL-terminated; opp is 1-based. */
struct cJSON;
struct cJSON *hw_totals_json(const et_hw_totals *t);
struct cJSON *hw_json(const char *const *names, et_hw_run *hw, et_hw_run *hwb, int opp);
void hw_print(et_hw_run *hw, et_hw_run *hwb);
/* One self-contained HTML page (tools/hw_html.c): a "run" table (keys ->
 * numbers or strings; may be NULL), the hw section as hw_json() builds it
 * (may be NULL) and a peak array (may be NULL). Written atomically; 0 = ok. */
int hw_html_write(const char *path, const char *title, const struct cJSON *run, const struct cJSON *hw,
                  const struct cJSON *peak);

/* Progress bar on stderr when it is a terminal. */
typedef struct cli_progress {
    int enabled;
    double start, last;
    int64_t total;
} cli_progress;
void cli_progress_init(cli_progress *p, int64_t total, int quiet);
void cli_progress_update(cli_progress *p, int64_t done, int64_t images, float loss, int force);
void cli_progress_end(cli_progress *p);
#endif
