/* The processor model: MAC throughput per precision, the Runtime Parallelism
 * Optimizer, per-tile cycles and energy, and peak figures (docs/hw.md). */
#include "edgetrain.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CH 2147483647LL /* Ci, Co bound: keeps ceil(Ci/IP)*ceil(Co/OP)*IP*OP in int64 */

static int has_bits(const et_hw_arch *a, int b) {
    for (int i = 0; i < a->n_int_bits; i++)
        if (a->int_bits[i] == b) return 1;
    return 0;
}

int et_hw_macs_per_cycle(const et_hw_arch *a, et_hw_prec p) {
    if (p.num == ET_HW_FP) {
        if (p.a_bits != p.w_bits) return 0;
        return p.a_bits == 16 ? a->fp16_macs : p.a_bits == 8 ? a->fp8_macs : 0;
    }
    if (!has_bits(a, p.a_bits) || !has_bits(a, p.w_bits)) return 0;
    int ab = p.a_bits * p.w_bits;
    if (ab > a->pp_bits || a->pp_bits % ab) return 0;
    return (int)((int64_t)a->lanes * (a->pp_bits / ab));
}

/* Energy of one MAC at v_nom. */
static double mac_pj(const et_hw_arch *a, et_hw_prec p) {
    if (p.num == ET_HW_FP) return p.a_bits == 16 ? a->e_mac_fp16_pj : a->e_mac_fp8_pj;
    return a->e_mac_int8_pj * (double)(p.a_bits * p.w_bits) / 64.0;
}

static int cmp_int(const void *x, const void *y) {
    int a = *(const int *)x, b = *(const int *)y;
    return (a > b) - (a < b);
}

int et_hw_pairs(const et_hw_arch *a, et_hw_prec p, et_hw_pair *out, int cap) {
    int64_t s = et_hw_macs_per_cycle(a, p);
    if (!s || cap < 1) return 0;
    if (!a->rpo) {
        int64_t sc = et_hw_macs_per_cycle(a, a->calib), ip;
        if (!sc) return 0;
        if (s % sc == 0) ip = (int64_t)a->fixed_ip * (s / sc);
        else if (sc % s == 0 && a->fixed_ip % (sc / s) == 0) ip = a->fixed_ip / (sc / s);
        else return 0;
        if (ip < 1 || ip > MAX_CH) return 0;
        out[0] = (et_hw_pair){(int)ip, a->fixed_op};
        return 1;
    }
    int ips[ET_HW_MAX_LIST], n = 0;
    memcpy(ips, a->ip_list, sizeof ips);
    qsort(ips, (size_t)a->n_ip, sizeof ips[0], cmp_int);
    for (int i = 0; i < a->n_ip && n < cap; i++) {
        if (s % ips[i]) continue;
        int64_t op = s / ips[i];
        for (int j = 0; j < a->n_op; j++)
            if (a->op_list[j] == op) {
                out[n++] = (et_hw_pair){ips[i], (int)op};
                break;
            }
    }
    return n;
}

static int64_t ceil_div(int64_t x, int64_t y) { return (x + y - 1) / y; }

/* ceil(Ci/IP)*ceil(Co/OP)*IP*OP: the MAC slots the tile occupies. */
static int64_t slots(int64_t ci, int64_t co, et_hw_pair p) {
    return ceil_div(ci, p.ip) * ceil_div(co, p.op) * (int64_t)p.ip * p.op;
}

double et_hw_utilization(int64_t ci, int64_t co, et_hw_pair pr) {
    if (ci <= 0 || co <= 0 || pr.ip <= 0 || pr.op <= 0) return 0;
    return (double)ci * (double)co / (double)slots(ci, co, pr);
}

et_status et_hw_rpo(int64_t ci, int64_t co, const et_hw_pair *pairs, int n, et_hw_pair *best, double *util) {
    if (ci < 1 || ci > MAX_CH || co < 0 || co > MAX_CH)
        return et_set_error(ET_ERR_INVALID, "RPO: Ci = %lld, Co = %lld out of range (1 <= Ci, 0 <= Co, both <= %lld)",
                            (long long)ci, (long long)co, MAX_CH);
    if (!pairs || n < 1) return et_set_error(ET_ERR_INVALID, "RPO: no IP/OP pairs to choose from");
    int b = -1;
    int64_t bs = 0;
    for (int i = 0; i < n; i++) {
        if (pairs[i].ip < 1 || pairs[i].op < 1)
            return et_set_error(ET_ERR_INVALID, "RPO: bad pair %dx%d", pairs[i].ip, pairs[i].op);
        int64_t s = slots(ci, co, pairs[i]);
        /* fewest occupied slots = highest utilization; ties: larger IP, then larger OP */
        if (b < 0 || s < bs || (s == bs && (pairs[i].ip > pairs[b].ip ||
                                            (pairs[i].ip == pairs[b].ip && pairs[i].op > pairs[b].op)))) {
            b = i;
            bs = s;
        }
    }
    *best = pairs[b];
    if (util) *util = et_hw_utilization(ci, co, pairs[b]);
    return ET_OK;
}

int64_t et_hw_co_slots(const int32_t *co_pos, int64_t npos, int op) {
    int64_t s = 0;
    if (op < 1) return 0;
    if (!(op & (op - 1))) { /* a power of two: shift */
        int k = 0;
        while ((1 << k) < op) k++;
        for (int64_t p = 0; p < npos; p++) s += (co_pos[p] + op - 1) >> k;
    } else {
        for (int64_t p = 0; p < npos; p++) s += (co_pos[p] + op - 1) / op;
    }
    return s;
}

/* MAC slots of a structured tile: ceil(Ci/IP)*IP*OP * sum_p ceil(Co(p)/OP),
 * with sum_p ceil(Co(p)/OP) = s. */
static double slots_structured(int64_t ci, int64_t s, et_hw_pair p) {
    return (double)ceil_div(ci, p.ip) * p.ip * (double)p.op * (double)s;
}

/* The RPO over pre-computed S(OP) = sum_p ceil(Co(p)/OP) per pair (sk[i] for
 * pairs[i]); returns the index of the best pair. */
static int rpo_structured_idx(int64_t ci, const int64_t *sk, const et_hw_pair *pairs, int n, double *best_slots) {
    int b = -1;
    double bs = 0;
    for (int i = 0; i < n; i++) {
        double s = slots_structured(ci, sk[i], pairs[i]);
        if (b < 0 || s < bs || (s == bs && (pairs[i].ip > pairs[b].ip ||
                                            (pairs[i].ip == pairs[b].ip && pairs[i].op > pairs[b].op)))) {
            b = i;
            bs = s;
        }
    }
    *best_slots = bs;
    return b;
}

/* S(OP) for every pair, one pass over the positions per distinct OP. */
static void pair_sums(const int32_t *co_pos, int64_t npos, const et_hw_pair *pairs, int n, int64_t *sk) {
    for (int i = 0; i < n; i++) {
        int j = 0;
        while (j < i && pairs[j].op != pairs[i].op) j++;
        sk[i] = j < i ? sk[j] : et_hw_co_slots(co_pos, npos, pairs[i].op);
    }
}

et_status et_hw_rpo_structured(int64_t ci, const int32_t *co_pos, int64_t npos, const et_hw_pair *pairs, int n,
                               et_hw_pair *best, double *util) {
    if (ci < 1 || ci > MAX_CH) return et_set_error(ET_ERR_INVALID, "RPO: Ci = %lld out of range", (long long)ci);
    if (!pairs || n < 1 || n > ET_HW_MAX_LIST * ET_HW_MAX_LIST)
        return et_set_error(ET_ERR_INVALID, "RPO: no IP/OP pairs to choose from");
    if (npos < 0 || (npos && !co_pos)) return et_set_error(ET_ERR_INVALID, "RPO: no output structure");
    for (int i = 0; i < n; i++)
        if (pairs[i].ip < 1 || pairs[i].op < 1)
            return et_set_error(ET_ERR_INVALID, "RPO: bad pair %dx%d", pairs[i].ip, pairs[i].op);
    for (int64_t p = 0; p < npos; p++)
        if (co_pos[p] < 0) return et_set_error(ET_ERR_INVALID, "RPO: negative Co at position %lld", (long long)p);
    int64_t sk[ET_HW_MAX_LIST * ET_HW_MAX_LIST];
    pair_sums(co_pos, npos, pairs, n, sk);
    double bs;
    int b = rpo_structured_idx(ci, sk, pairs, n, &bs);
    *best = pairs[b];
    if (util) *util = bs > 0 ? (double)ci * (double)et_hw_co_slots(co_pos, npos, 1) / bs : 0;
    return ET_OK;
}

/* Energy per cycle not in the MACs (clock, buffers, control, leakage) at
 * operating point i: the calibrated chip energy per cycle minus the MACs'. */
static et_status cycle_pj(const et_hw_arch *a, int i, double *out) {
    const et_hw_opp *o = &a->opp[i];
    double s = (o->voltage / a->v_nom) * (o->voltage / a->v_nom);
    double total = o->power_mw * 1e3 / o->freq_mhz; /* pJ per cycle */
    double macs = et_hw_macs_per_cycle(a, a->calib) * mac_pj(a, a->calib) * s;
    if (total < macs * (1 - 1e-12)) {
        char b[32];
        return et_set_error(ET_ERR_INVALID,
                            "power_mw = %g is below the MACs' own power at %s (%.4g mW at %gV, %g MHz): "
                            "lower the MAC energy or raise the power",
                            o->power_mw, et_hw_prec_name(a->calib, b, sizeof b), macs * o->freq_mhz * 1e-3,
                            o->voltage, o->freq_mhz);
    }
    *out = total > macs ? total - macs : 0;
    return ET_OK;
}

static double vscale(const et_hw_arch *a, int i) {
    double r = a->opp[i].voltage / a->v_nom;
    return r * r;
}

static et_status check_opp(const et_hw_arch *a, int opp) {
    if (!a) return et_set_error(ET_ERR_INVALID, "processor model: NULL architecture");
    if (opp < 0 || opp >= a->n_opp)
        return et_set_error(ET_ERR_INVALID, "operating point %d out of range (%s has %d)", opp + 1, a->name, a->n_opp);
    return ET_OK;
}

et_status et_hw_peak_at(const et_hw_arch *a, int opp, et_hw_prec p, et_hw_peak *out) {
    et_status st = check_opp(a, opp);
    if (st) return st;
    int s = et_hw_macs_per_cycle(a, p);
    char b[32];
    if (!s)
        return et_set_error(ET_ERR_UNSUPPORTED, "%s does not support %s", a->name, et_hw_prec_name(p, b, sizeof b));
    double ovh;
    if ((st = cycle_pj(a, opp, &ovh))) return st;
    double f = a->opp[opp].freq_mhz;
    double pj = s * mac_pj(a, p) * vscale(a, opp) + ovh;
    out->tops = 2.0 * s * f * 1e6 / 1e12;
    out->power_mw = pj * f * 1e-3;
    out->tops_per_watt = out->tops / (out->power_mw * 1e-3);
    return ET_OK;
}

int et_hw_peak_precs(const et_hw_arch *a, et_hw_prec *out, int cap) {
    int bits[ET_HW_MAX_LIST], n = 0;
    memcpy(bits, a->int_bits, sizeof bits);
    qsort(bits, (size_t)a->n_int_bits, sizeof bits[0], cmp_int);
    for (int i = a->n_int_bits - 1; i >= 0 && n < cap; i--) {
        et_hw_prec p = {ET_HW_INT, bits[i], bits[i]};
        if (et_hw_macs_per_cycle(a, p)) out[n++] = p;
    }
    if (a->fp16_macs && n < cap) out[n++] = (et_hw_prec){ET_HW_FP, 16, 16};
    if (a->fp8_macs && n < cap) out[n++] = (et_hw_prec){ET_HW_FP, 8, 8};
    return n;
}

et_status et_hw_tile_cost(const et_hw_arch *a, int opp, const et_hw_tile *t, et_hw_cost *out) {
    et_status st = check_opp(a, opp);
    if (st) return st;
    if (!t || !out) return et_set_error(ET_ERR_INVALID, "et_hw_tile_cost: NULL argument");
    char pb[32];
    int s = et_hw_macs_per_cycle(a, t->prec);
    if (!s)
        return et_set_error(ET_ERR_UNSUPPORTED, "%s does not support %s", a->name,
                            et_hw_prec_name(t->prec, pb, sizeof pb));
    if ((unsigned)t->stage >= ET_NSTAGES) return et_set_error(ET_ERR_INVALID, "tile: bad stage %d", (int)t->stage);
    if (t->ci < 1 || t->ci > MAX_CH || t->co_dense < 0 || t->co_dense > MAX_CH || t->co < 0 || t->co > t->co_dense ||
        t->spatial < 0 || t->sram_bytes < 0 || t->dram_bytes < 0 || !(t->w_density >= 0 && t->w_density <= 1))
        return et_set_error(ET_ERR_INVALID,
                            "tile: need 1 <= ci, 0 <= co <= co_dense, spatial and bytes >= 0, 0 <= w_density <= 1 "
                            "(got ci %lld, co %lld, co_dense %lld, spatial %lld, w_density %g)",
                            (long long)t->ci, (long long)t->co, (long long)t->co_dense, (long long)t->spatial,
                            t->w_density);
    if (t->structured) { /* 0 <= Co(p) <= co_dense at each of the tile's positions */
        if (t->spatial && !t->co_pos) return et_set_error(ET_ERR_INVALID, "tile: structured without Co(p)");
        for (int64_t p = 0; p < t->spatial; p++)
            if (t->co_pos[p] < 0 || t->co_pos[p] > t->co_dense)
                return et_set_error(ET_ERR_INVALID, "tile: inconsistent output structure (Co = %d at position %lld)",
                                    (int)t->co_pos[p], (long long)p);
    }
    double ovh;
    if ((st = cycle_pj(a, opp, &ovh))) return st;
    int64_t ci = t->ci;
    if (a->weight_skip) {
        double x = (double)t->ci * t->w_density;
        ci = (int64_t)ceil(x - 1e-9 * x);
    }
    const int structured = a->speculation && t->structured;
    int64_t co = a->speculation ? t->co : t->co_dense;

    et_hw_pair pairs[ET_HW_MAX_LIST];
    int n = et_hw_pairs(a, t->prec, pairs, ET_HW_MAX_LIST);
    et_hw_pair cfg;
    int64_t sk[ET_HW_MAX_LIST]; /* structured: S(OP) per allowed pair */
    if (structured) pair_sums(t->co_pos, t->spatial, pairs, n, sk);
    if (t->cfg.ip || t->cfg.op) {
        int ok = 0;
        for (int i = 0; i < n; i++) ok |= pairs[i].ip == t->cfg.ip && pairs[i].op == t->cfg.op;
        if (!ok) {
            char list[256] = "";
            size_t len = 0;
            for (int i = 0; i < n && len < sizeof list - 24; i++)
                len += (size_t)snprintf(list + len, sizeof list - len, "%s%dx%d", i ? " " : "", pairs[i].ip,
                                        pairs[i].op);
            return et_set_error(ET_ERR_INVALID, "tile: configuration word %dx%d is not allowed at %s on %s (allowed: %s)",
                                t->cfg.ip, t->cfg.op, et_hw_prec_name(t->prec, pb, sizeof pb), a->name, list);
        }
        cfg = t->cfg;
    } else if (structured && ci > 0) {
        if (n < 1) return et_set_error(ET_ERR_INVALID, "RPO: no IP/OP pairs to choose from");
        double bs;
        cfg = pairs[rpo_structured_idx(ci, sk, pairs, n, &bs)];
    } else if ((st = et_hw_rpo(ci > 0 ? ci : 1, ci > 0 ? co : 0, pairs, n, &cfg, NULL))) {
        return st;
    }
    memset(out, 0, sizeof *out);
    out->cfg = cfg;
    double sv = vscale(a, opp);
    if (structured && ci > 0) {
        int64_t s_op = 0, s_1 = 0; /* sum_p ceil(Co(p)/OP), sum_p Co(p) */
        for (int i = 0; i < n; i++)
            if (pairs[i].ip == cfg.ip && pairs[i].op == cfg.op) s_op = sk[i];
        s_1 = et_hw_co_slots(t->co_pos, t->spatial, 1);
        out->pe_cycles = ceil_div(ci, cfg.ip) * s_op;
        out->macs = (double)ci * (double)s_1;
        double sl = slots_structured(ci, s_op, cfg);
        out->utilization = sl > 0 ? out->macs / sl : 0;
    } else if (ci > 0 && co > 0) {
        out->utilization = et_hw_utilization(ci, co, cfg);
        out->pe_cycles = ceil_div(ci, cfg.ip) * ceil_div(co, cfg.op) * t->spatial;
        out->macs = (double)ci * (double)co * (double)t->spatial;
    }
    if (a->speculation && t->spec && t->stage == ET_FF) {
        /* the unit predicts every output: Ci x Co_dense low-bit MACs per position.
         * Its figures are for 2x2-bit MACs; b-bit operands cost (b/2)^2 of them
         * in energy and in throughput, as the PE array's b x b products do. */
        double sm = (double)t->ci * (double)t->co_dense * (double)t->spatial;
        double f = t->spec_bits > 0 ? (double)t->spec_bits * (double)t->spec_bits / 4.0 : 1.0;
        out->spec_cycles = (int64_t)ceil(sm * f / a->spec_macs_per_cycle);
        out->e_spec_pj = sm * f * a->spec_pj_per_mac * sv;
    }
    out->cycles = out->pe_cycles > out->spec_cycles ? out->pe_cycles : out->spec_cycles;
    out->e_mac_pj = out->macs * mac_pj(a, t->prec) * sv;
    out->e_sram_pj = (double)t->sram_bytes * a->e_sram_pj_per_byte * sv;
    out->e_dram_pj = (double)t->dram_bytes * a->e_dram_pj_per_byte;
    out->e_cycle_pj = (double)out->cycles * ovh;
    out->energy_pj = out->e_mac_pj + out->e_spec_pj + out->e_sram_pj + out->e_dram_pj + out->e_cycle_pj;
    out->time_s = (double)out->cycles / (a->opp[opp].freq_mhz * 1e6);
    return ET_OK;
}
