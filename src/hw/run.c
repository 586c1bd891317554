/* The processor model fed live by the matmul path: each et_matmul call of a
 * training run becomes one tile (docs/hw.md, "Live runs"), costed with
 * et_hw_tile_cost() and summed per layer and stage. FF's configuration word
 * of a layer is reused by its EP and WG tiles, as ELearn does. */
#include "edgetrain.h"

#include <stdlib.h>
#include <string.h>

struct et_hw_run {
    et_hw_arch arch;
    int opp, nlayers;
    et_hw_pair *ff_cfg;   /* per layer: FF's configuration word ({0,0}: none yet) */
    et_hw_totals *tot;    /* [(nlayers + 1) * ET_NSTAGES]: per layer and stage; last row = all layers */
};

et_status et_hw_run_create(const et_hw_arch *a, int opp, int nlayers, et_hw_run **out) {
    *out = NULL;
    if (opp < 0 || opp >= a->n_opp) return et_set_error(ET_ERR_INVALID, "%s has no operating point %d", a->name, opp + 1);
    if (nlayers < 0 || nlayers > (1 << 20)) return et_set_error(ET_ERR_INVALID, "bad layer count");
    et_hw_run *r = calloc(1, sizeof *r);
    if (r) {
        r->ff_cfg = calloc((size_t)nlayers + 1, sizeof *r->ff_cfg);
        r->tot = calloc(((size_t)nlayers + 1) * ET_NSTAGES, sizeof *r->tot);
    }
    if (!r || !r->ff_cfg || !r->tot) {
        et_hw_run_free(r);
        return et_set_error(ET_ERR_NOMEM, "out of memory");
    }
    r->arch = *a, r->opp = opp, r->nlayers = nlayers;
    *out = r;
    return ET_OK;
}

void et_hw_run_free(et_hw_run *r) {
    if (!r) return;
    free(r->ff_cfg);
    free(r->tot);
    free(r);
}

static void add(et_hw_totals *t, const et_hw_cost *c, int macs_per_cycle, const et_hw_tile *tile) {
    t->tiles++;
    t->cycles += (double)c->cycles;
    t->seconds += c->time_s;
    t->macs += c->macs;
    t->mac_slots += (double)c->pe_cycles * macs_per_cycle;
    t->e_mac_j += c->e_mac_pj * 1e-12;
    t->e_spec_j += c->e_spec_pj * 1e-12;
    t->e_sram_j += c->e_sram_pj * 1e-12;
    t->e_dram_j += c->e_dram_pj * 1e-12;
    t->e_other_j += c->e_cycle_pj * 1e-12;
    t->energy_j += c->energy_pj * 1e-12;
    t->sram_bytes += (double)tile->sram_bytes;
    t->dram_bytes += (double)tile->dram_bytes;
}

et_status et_hw_run_tile(et_hw_run *r, int layer, et_hw_tile tile) {
    if (layer < 0 || layer >= r->nlayers) return et_set_error(ET_ERR_INVALID, "hw run: layer %d out of range", layer);
    /* FF chooses (RPO); EP and WG reuse FF's word when it is valid at their precision. */
    tile.cfg = tile.stage == ET_FF ? (et_hw_pair){0, 0} : r->ff_cfg[layer];
    et_hw_cost c;
    et_status st = et_hw_tile_cost(&r->arch, r->opp, &tile, &c);
    if (st == ET_ERR_INVALID && tile.stage != ET_FF && (tile.cfg.ip || tile.cfg.op)) {
        tile.cfg = (et_hw_pair){0, 0}; /* e.g. EP at another precision than FF: choose anew */
        st = et_hw_tile_cost(&r->arch, r->opp, &tile, &c);
    }
    if (st) return st;
    if (tile.stage == ET_FF) r->ff_cfg[layer] = c.cfg;
    int mpc = et_hw_macs_per_cycle(&r->arch, tile.prec);
    add(&r->tot[(size_t)layer * ET_NSTAGES + tile.stage], &c, mpc, &tile);
    add(&r->tot[(size_t)r->nlayers * ET_NSTAGES + tile.stage], &c, mpc, &tile);
    return ET_OK;
}

static void merge(et_hw_totals *d, const et_hw_totals *s) {
    d->tiles += s->tiles, d->cycles += s->cycles, d->seconds += s->seconds, d->macs += s->macs;
    d->mac_slots += s->mac_slots, d->e_mac_j += s->e_mac_j, d->e_spec_j += s->e_spec_j;
    d->e_sram_j += s->e_sram_j, d->e_dram_j += s->e_dram_j, d->e_other_j += s->e_other_j;
    d->energy_j += s->energy_j, d->sram_bytes += s->sram_bytes, d->dram_bytes += s->dram_bytes;
}

void et_hw_run_totals(const et_hw_run *r, int layer, int stage, et_hw_totals *out) {
    memset(out, 0, sizeof *out);
    int row = layer < 0 ? r->nlayers : layer;
    if (row > r->nlayers) return;
    for (int s = 0; s < ET_NSTAGES; s++)
        if (stage < 0 || stage == s) merge(out, &r->tot[(size_t)row * ET_NSTAGES + s]);
    out->utilization = out->mac_slots > 0 ? out->macs / out->mac_slots : 0;
    out->tops = out->seconds > 0 ? 2 * out->macs / out->seconds / 1e12 : 0;
    out->tops_per_watt = out->energy_j > 0 ? 2 * out->macs / out->energy_j / 1e12 : 0;
}

const et_hw_arch *et_hw_run_arch(const et_hw_run *r) { return &r->arch; }

/* Operand formats -> a precision this architecture has (see et_hw_run_op). */
static et_hw_prec prec_of(const et_hw_arch *a, const et_hw_op *op) {
    et_hw_prec p = a->calib;
    if (op->a_kind == 1 && op->w_kind == 1) {
        int bits[2] = {op->a_bits, op->w_bits};
        for (int i = 0; i < 2; i++) { /* smallest supported INT width >= the format's bits */
            int best = 0;
            for (int k = 0; k < a->n_int_bits; k++)
                if (a->int_bits[k] >= bits[i] && (!best || a->int_bits[k] < best)) best = a->int_bits[k];
            bits[i] = best;
        }
        if (bits[0] && bits[1]) p = (et_hw_prec){ET_HW_INT, bits[0], bits[1]};
    } else if (op->a_kind == 2 && op->w_kind == 2 && op->a_bits == 16 && op->w_bits == 16) {
        p = (et_hw_prec){ET_HW_FP, 16, 16};
    } else if (op->a_kind == 2 && op->w_kind == 2 && op->a_bits <= 8 && op->w_bits <= 8) {
        p = (et_hw_prec){ET_HW_FP, 8, 8};
    }
    if (!et_hw_macs_per_cycle(a, p)) p = a->calib;
    return p;
}

et_status et_hw_run_op(et_hw_run *r, const et_hw_op *op) {
    if ((unsigned)op->stage >= ET_NSTAGES) return et_set_error(ET_ERR_INVALID, "hw op: bad stage %d", op->stage);
    et_hw_tile t;
    memset(&t, 0, sizeof t);
    t.stage = (et_stage)op->stage;
    t.prec = prec_of(&r->arch, op);
    t.ci = op->ci, t.co = op->co, t.co_dense = op->co_dense, t.spatial = op->spatial;
    t.w_density = op->w_density;
    t.sram_bytes = op->sram_bytes, t.dram_bytes = op->dram_bytes;
    return et_hw_run_tile(r, op->layer, t);
}
