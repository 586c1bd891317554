/* edgetrain simulate: the processor model (docs/hw.md). This part prints the
 * peak figures of an architecture per precision and operating point. */
#include "cli.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SETS 64

static const char simulate_help[] =
    "usage: edgetrain simulate --arch A --peak [--json OUT] [--set KEY=VALUE]...\n"
    "\n"
    "Models what training costs on an edge-learning processor (docs/hw.md).\n"
    "\n"
    "  --arch A          preset (elearn, baseline, trainer) or a config file path\n"
    "  --set KEY=VALUE   override one config key (repeatable), e.g. --set op2.power_mw=12\n"
    "  --peak            peak TOPS and TOPS/W per precision and operating point\n"
    "  --json OUT        also write the results as JSON: {\"arch\", \"peak\": [{\"precision\",\n"
    "                    \"voltage\", \"frequency_mhz\", \"tops\", \"tops_per_watt\"}]}\n";

int cmd_simulate(int argc, char **argv) {
    static const struct option opts[] = {{"arch", 1, 0, 'a'}, {"set", 1, 0, 's'}, {"peak", 0, 0, 'p'},
                                         {"json", 1, 0, 'j'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    const char *arch_name = NULL, *json_path = NULL, *sets[MAX_SETS];
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
        case 'h': fputs(simulate_help, stdout); return 0;
        default: return cli_bad_option("simulate", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_fail("simulate", 1, "unexpected argument '%s'", argv[optind]);
    if (!arch_name) return cli_fail("simulate", 1, "--arch is required (try: edgetrain simulate --help)");
    if (!peak) return cli_fail("simulate", 1, "nothing to do: give --peak (try: edgetrain simulate --help)");
    et_hw_arch arch;
    if (et_hw_arch_load(arch_name, sets, nsets, &arch)) return cli_fail("simulate", 1, "%s", et_last_error());

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
    if (json_path) {
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
