/* edgetrain simulate: the processor model (docs/hw.md): peak figures of an
 * architecture, or the replay of a training run's trace (docs/trace.md). */
#include "cli.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SETS 64

static const char simulate_help[] =
    "usage: edgetrain simulate --arch A --peak [--json OUT] [--html OUT] [--set KEY=VALUE]...\n"
    "       edgetrain simulate --trace F --arch A [--baseline B] [--opp K] [--json OUT] [--html OUT]\n"
    "\n"
    "Models what training costs on an edge-learning processor (docs/hw.md).\n"
    "\n"
    "  --arch A          preset (elearn, baseline, trainer) or a config file path\n"
    "  --set KEY=VALUE   override one config key (repeatable), e.g. --set op2.power_mw=12\n"
    "  --peak            peak TOPS and TOPS/W per precision and operating point\n"
    "  --trace F         replay a trace written by edgetrain train --trace F: cycles, energy,\n"
    "                    PE utilization, SRAM/DRAM bytes per layer and stage (the same\n"
    "                    \"hw\" section train --arch writes)\n"
    "  --baseline B      with --trace: a second architecture, and the ratios between them\n"
    "  --opp K           with --trace: operating point (1-based, default 1)\n"
    "  --json OUT        also write the results as JSON: {\"arch\", \"peak\": [{\"precision\",\n"
    "                    \"voltage\", \"frequency_mhz\", \"tops\", \"tops_per_watt\"}]}\n"
    "  --html OUT        also write one self-contained HTML page (inline SVG plots: per-layer PE\n"
    "                    utilization, energy breakdown, architecture vs baseline; the tables)\n";

typedef struct {
    et_hw_run *runs[2];
    int nruns;
} replay_ctx;

static et_status replay_op(void *ctx, const et_hw_op *op) {
    replay_ctx *r = ctx;
    for (int i = 0; i < r->nruns; i++) {
        et_status st = et_hw_run_op(r->runs[i], op);
        if (st) return st;
    }
    return ET_OK;
}

/* Replays a trace on an architecture (and a baseline). */
static int replay(const char *path, et_hw_arch *arch, const char *base_name, int opp, const char *json_path,
                  const char *html_path) {
    enum { MAXL = 1 << 16 };
    char(*names)[80] = calloc(MAXL, sizeof *names);
    const char **np = calloc(MAXL + 1, sizeof *np);
    replay_ctx r = {{NULL, NULL}, 0};
    int nl = 0, rc = 1;
    et_hw_arch base;
    if (!names || !np) {
        rc = cli_fail("simulate", 0, "out of memory");
        goto out;
    }
    /* the layer count comes from the file: read it once to size the runs */

    if (base_name) {
        if (et_hw_arch_load(base_name, NULL, 0, &base)) {
            rc = cli_fail("simulate", 1, "%s", et_last_error());
            goto out;
        }

    }
    if (et_hw_run_create(arch, opp - 1, MAXL, &r.runs[0]) ||
        (base_name && et_hw_run_create(&base, opp - 1, MAXL, &r.runs[1]))) {
        rc = cli_fail("simulate", 0, "%s", et_last_error());
        goto out;
    }
    r.nruns = base_name ? 2 : 1;
    if (et_trace_read(path, &nl, names, MAXL, replay_op, &r)) {
        rc = cli_fail("simulate", 0, "%s", et_last_error());
        goto out;
    }
    for (int i = 0; i < nl; i++) np[i] = names[i];
    hw_print(r.runs[0], r.runs[1]);
    if (json_path || html_path) {
        cJSON *j = hw_json(np, r.runs[0], r.runs[1], opp);
        cJSON_AddStringToObject(j, "trace", path);
        if (html_path) {
            cJSON *run = cJSON_CreateObject();
            cJSON_AddStringToObject(run, "trace", path);
            char title[512];
            snprintf(title, sizeof title, "edgetrain simulate: %s%s%s", arch->name, base_name ? " vs " : "",
                     base_name ? et_hw_run_arch(r.runs[1])->name : "");
            int bad = hw_html_write(html_path, title, run, j, NULL);
            cJSON_Delete(run);
            if (bad) {
                cJSON_Delete(j);
                rc = cli_fail("simulate", 0, "cannot write '%s'", html_path);
                goto out;
            }
        }
        char *text = json_path ? cJSON_Print(j) : NULL;
        cJSON_Delete(j);
        if (json_path && (!text || cli_write_atomic(json_path, text, strlen(text)))) {
            free(text);
            rc = cli_fail("simulate", 0, "cannot write '%s'", json_path);
            goto out;
        }
        free(text);
    }
    rc = 0;
out:
    et_hw_run_free(r.runs[0]);
    et_hw_run_free(r.runs[1]);
    free(names);
    free(np);
    return rc;
}

int cmd_simulate(int argc, char **argv) {
    static const struct option opts[] = {{"arch", 1, 0, 'a'}, {"set", 1, 0, 's'}, {"peak", 0, 0, 'p'},
                                         {"json", 1, 0, 'j'}, {"help", 0, 0, 'h'}, {"trace", 1, 0, 't'},
                                         {"baseline", 1, 0, 'b'}, {"opp", 1, 0, 'o'}, {"html", 1, 0, 'w'},
                                         {0, 0, 0, 0}};
    const char *trace = NULL, *base_name = NULL;
    long long opp = 1;
    const char *arch_name = NULL, *json_path = NULL, *html_path = NULL, *sets[MAX_SETS];
    int nsets = 0, peak = 0, c, li = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, &li)) != -1) {
        switch (c) {
        case 'a': arch_name = optarg; break;
        case 's':
            if (nsets == MAX_SETS) return cli_fail("simulate", 1, "more than %d --set options", MAX_SETS);
            sets[nsets++] = optarg;
            break;
        case 'p': peak = 1; break;
        case 'j': json_path = optarg; break;
        case 'w': html_path = optarg; break;
        case 't': trace = optarg; break;
        case 'b': base_name = optarg; break;
        case 'o':
            if (!cli_int(optarg, 1, ET_HW_MAX_OPP, &opp)) return cli_fail("simulate", 1, "bad value '%s' for --opp", optarg);
            break;
        case 'h': fputs(simulate_help, stdout); return 0;
        default: return cli_bad_option("simulate", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_fail("simulate", 1, "unexpected argument '%s'", argv[optind]);
    if (!arch_name) return cli_fail("simulate", 1, "--arch is required (try: edgetrain simulate --help)");
    if (!peak && !trace) return cli_fail("simulate", 1, "nothing to do: give --peak or --trace (try: edgetrain simulate --help)");
    if (peak && trace) return cli_fail("simulate", 1, "give --peak or --trace, not both");
    if (base_name && !trace) return cli_fail("simulate", 1, "--baseline needs --trace");
    et_hw_arch arch;
    if (et_hw_arch_load(arch_name, sets, nsets, &arch)) return cli_fail("simulate", 1, "%s", et_last_error());
    if (trace) return replay(trace, &arch, base_name, (int)opp, json_path, html_path);

    et_hw_prec precs[ET_HW_MAX_LIST + 2];
    int np = et_hw_peak_precs(&arch, precs, ET_HW_MAX_LIST + 2);
    cJSON *root = cJSON_CreateObject(), *rows = cJSON_CreateArray();
    if (!root || !rows) {
        cJSON_Delete(root);
        cJSON_Delete(rows);
        return cli_fail("simulate", 0, "out of memory");
    }
    cJSON_AddStringToObject(root, "arch", arch.name);
    cJSON_AddItemToObject(root, "peak", rows);
    printf("peak figures of %s (%g nm, %g KB SRAM)\n", arch.name, arch.tech_nm, arch.sram_kb);
    printf("%-9s %8s %8s %10s %12s %10s\n", "precision", "voltage", "MHz", "TOPS", "TOPS/W", "power mW");
    for (int o = 0; o < arch.n_opp; o++)
        for (int i = 0; i < np; i++) {
            et_hw_peak pk;
            if (et_hw_peak_at(&arch, o, precs[i], &pk)) {
                cJSON_Delete(root);
                return cli_fail("simulate", 0, "%s", et_last_error());
            }
            char pn[32], volt[32];
            et_hw_prec_name(precs[i], pn, sizeof pn);
            snprintf(volt, sizeof volt, "%gV", arch.opp[o].voltage);
            printf("%-9s %8s %8g %10.4f %12.2f %10.3f\n", pn, volt, arch.opp[o].freq_mhz, pk.tops, pk.tops_per_watt,
                   pk.power_mw);
            cJSON *r = cJSON_CreateObject();
            if (!r) {
                cJSON_Delete(root);
                return cli_fail("simulate", 0, "out of memory");
            }
            cJSON_AddStringToObject(r, "precision", pn);
            cJSON_AddStringToObject(r, "voltage", volt);
            cJSON_AddNumberToObject(r, "frequency_mhz", arch.opp[o].freq_mhz);
            cJSON_AddNumberToObject(r, "tops", pk.tops);
            cJSON_AddNumberToObject(r, "tops_per_watt", pk.tops_per_watt);
            cJSON_AddItemToArray(rows, r);
        }
    int rc = 0;
    if (html_path) {
        char title[128];
        snprintf(title, sizeof title, "edgetrain simulate: peak figures of %s", arch.name);
        if (hw_html_write(html_path, title, NULL, NULL, rows)) rc = cli_fail("simulate", 0, "cannot write '%s'", html_path);
    }
    if (json_path && !rc) {
        char *text = cJSON_Print(root);
        if (!text) rc = cli_fail("simulate", 0, "out of memory");
        else {
            size_t n = strlen(text);
            char *t2 = realloc(text, n + 2);
            if (t2) {
                text = t2;
                text[n++] = '\n';
                text[n] = 0;
            }
            if (cli_write_atomic(json_path, text, n)) rc = cli_fail("simulate", 0, "cannot write '%s'", json_path);
            free(text);
        }
    }
    cJSON_Delete(root);
    if (fflush(stdout) || ferror(stdout)) return cli_fail("simulate", 0, "error writing stdout");
    return rc;
}
