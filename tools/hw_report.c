/* The processor-model report shared by `train --arch` and `simulate --trace`. */
#include "cli.h"

#include <cjson/cJSON.h>
#include <stdio.h>

cJSON *hw_totals_json(const et_hw_totals *t) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "cycles", t->cycles);
    cJSON_AddNumberToObject(o, "seconds", t->seconds);
    cJSON *e = cJSON_AddObjectToObject(o, "energy_j");
    cJSON_AddNumberToObject(e, "mac", t->e_mac_j);
    cJSON_AddNumberToObject(e, "sram", t->e_sram_j);
    cJSON_AddNumberToObject(e, "dram", t->e_dram_j);
    cJSON_AddNumberToObject(e, "speculation", t->e_spec_j);
    cJSON_AddNumberToObject(e, "other", t->e_other_j);
    cJSON_AddNumberToObject(e, "total", t->energy_j);
    cJSON_AddNumberToObject(o, "macs_executed", t->macs);
    cJSON_AddNumberToObject(o, "pe_utilization", t->utilization);
    cJSON_AddNumberToObject(o, "effective_tops", t->tops);
    cJSON_AddNumberToObject(o, "tops_per_watt", t->tops_per_watt);
    cJSON_AddNumberToObject(o, "sram_bytes", t->sram_bytes);
    cJSON_AddNumberToObject(o, "dram_bytes", t->dram_bytes);
    return o;
}

static cJSON *run_json(const char *const *names, et_hw_run *r) {
    cJSON *o = cJSON_CreateObject();
    et_hw_totals t;
    cJSON_AddStringToObject(o, "arch", et_hw_run_arch(r)->name);
    et_hw_run_totals(r, -1, -1, &t);
    cJSON_AddItemToObject(o, "totals", hw_totals_json(&t));
    cJSON *st = cJSON_AddObjectToObject(o, "stages");
    for (int s = 0; s < ET_NSTAGES; s++) {
        et_hw_run_totals(r, -1, s, &t);
        cJSON_AddItemToObject(st, et_stage_name((et_stage)s), hw_totals_json(&t));
    }
    cJSON *ls = cJSON_AddArrayToObject(o, "layers");
    for (int i = 0; names[i]; i++) {
        et_hw_run_totals(r, i, -1, &t);
        if (t.tiles == 0) continue;
        cJSON *l = hw_totals_json(&t);
        cJSON_AddStringToObject(l, "name", names[i]);
        cJSON_AddItemToArray(ls, l);
    }
    return o;
}

/* The "hw" section: the architecture's run, the baseline's, and their ratios.
 * names: layer names by layer index, NULL-terminated. */
cJSON *hw_json(const char *const *names, et_hw_run *hw, et_hw_run *hwb, int opp) {
    cJSON *o = run_json(names, hw);
    const et_hw_arch *a = et_hw_run_arch(hw);
    char v[32];
    snprintf(v, sizeof v, "%.2gV", a->opp[opp - 1].voltage);
    cJSON_AddStringToObject(o, "voltage", v);
    cJSON_AddNumberToObject(o, "frequency_mhz", a->opp[opp - 1].freq_mhz);
    if (hwb) {
        et_hw_totals t, b;
        et_hw_run_totals(hw, -1, -1, &t);
        et_hw_run_totals(hwb, -1, -1, &b);
        cJSON_AddItemToObject(o, "baseline", run_json(names, hwb));
        cJSON *r = cJSON_AddObjectToObject(o, "ratios");
        cJSON_AddNumberToObject(r, "energy_efficiency", t.energy_j > 0 ? b.energy_j / t.energy_j : 0);
        cJSON_AddNumberToObject(r, "pe_utilization", b.utilization > 0 ? t.utilization / b.utilization : 0);
        cJSON_AddNumberToObject(r, "speedup", t.seconds > 0 ? b.seconds / t.seconds : 0);
        cJSON_AddNumberToObject(r, "computation_reduction", b.macs > 0 ? 1 - t.macs / b.macs : 0);
        double mt = t.sram_bytes + t.dram_bytes, mb = b.sram_bytes + b.dram_bytes;
        cJSON_AddNumberToObject(r, "memory_access_reduction", mb > 0 ? 1 - mt / mb : 0);
    }
    return o;
}

void hw_print(et_hw_run *hw, et_hw_run *hwb) {
    et_hw_run *runs[2] = {hw, hwb};
    printf("%-10s %12s %10s %10s %8s %10s %10s %12s %12s\n", "processor", "cycles", "seconds", "energy mJ",
           "PE util", "eff. TOPS", "TOPS/W", "SRAM MB", "DRAM MB");
    for (int i = 0; i < 2 && runs[i]; i++) {
        et_hw_totals t;
        et_hw_run_totals(runs[i], -1, -1, &t);
        printf("%-10s %12.4g %10.4g %10.4g %8.3f %10.4g %10.4g %12.1f %12.1f\n", et_hw_run_arch(runs[i])->name,
               t.cycles, t.seconds, t.energy_j * 1e3, t.utilization, t.tops, t.tops_per_watt, t.sram_bytes / 1e6,
               t.dram_bytes / 1e6);
    }
    if (hwb) { /* the same ratios as the JSON's "ratios" */
        et_hw_totals t, b;
        et_hw_run_totals(hw, -1, -1, &t);
        et_hw_run_totals(hwb, -1, -1, &b);
        double mt = t.sram_bytes + t.dram_bytes, mb = b.sram_bytes + b.dram_bytes;
        printf("%s vs %s: energy efficiency %.2fx, PE utilization %.2fx, speedup %.2fx, computation -%.1f%%, "
               "memory access -%.1f%%\n",
               et_hw_run_arch(hw)->name, et_hw_run_arch(hwb)->name, t.energy_j > 0 ? b.energy_j / t.energy_j : 0,
               b.utilization > 0 ? t.utilization / b.utilization : 0, t.seconds > 0 ? b.seconds / t.seconds : 0,
               b.macs > 0 ? 100 * (1 - t.macs / b.macs) : 0, mb > 0 ? 100 * (1 - mt / mb) : 0);
    }
}

