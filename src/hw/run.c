/* The processor model fed live by the matmul path: each et_matmul call of a
 * training run becomes one tile (docs/hw.md, "Live runs"), costed with
 * et_hw_tile_cost() and summed per layer and stage. FF's configuration word
 * of a layer is reused by its EP and WG tiles, as ELearn does. */
#include "edgetrain.h"

#include <stdlib.h>
#include <string.h>

/* Per layer: the configuration words of its latest FF pass, tile by tile, and
 * where the current FF / EP / WG pass is in that list. */
typedef struct layer_words {
    et_hw_pair *w;
    int64_t n, cap;
    int64_t next[ET_NSTAGES];
    int last_stage; /* -1: none yet */
} layer_words;

struct et_hw_run {
    et_hw_arch arch;
    int opp, nlayers;
    layer_words *lw;      /* per layer */
    et_hw_totals *tot;    /* [(nlayers + 1) * ET_NSTAGES]: per layer and stage; last row = all layers */
};

et_status et_hw_run_create(const et_hw_arch *a, int opp, int nlayers, et_hw_run **out) {
    *out = NULL;
    if (opp < 0 || opp >= a->n_opp) return et_set_error(ET_ERR_INVALID, "%s has no operating point %d", a->name, opp + 1);
    if (nlayers < 0 || nlayers > (1 << 20)) return et_set_error(ET_ERR_INVALID, "bad layer count");
    et_hw_run *r = calloc(1, sizeof *r);
    if (r) {
        r->lw = calloc((size_t)nlayers + 1, sizeof *r->lw);
        r->tot = calloc(((size_t)nlayers + 1) * ET_NSTAGES, sizeof *r->tot);
    }
    if (!r || !r->lw || !r->tot) {
        et_hw_run_free(r);
        return et_set_error(ET_ERR_NOMEM, "out of memory");
    }
    r->arch = *a, r->opp = opp, r->nlayers = nlayers;
    for (int i = 0; i < nlayers; i++) r->lw[i].last_stage = -1;
    *out = r;
    return ET_OK;
}

void et_hw_run_free(et_hw_run *r) {
    if (!r) return;
    if (r->lw)
        for (int i = 0; i < r->nlayers; i++) free(r->lw[i].w);
    free(r->lw);
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

/* The configuration word tile `idx` of a BP stage reuses: FF's word of the same
 * tile index (the last FF tile if BP has more tiles), {0,0} if none. */
static et_hw_pair bp_word(const layer_words *lw, int64_t idx) {
    if (!lw->n) return (et_hw_pair){0, 0};
    return lw->w[idx < lw->n ? idx : lw->n - 1];
}

/* Costs one tile and adds it; FF records its word at its tile index. */
static et_status run_tile(et_hw_run *r, int layer, et_hw_tile tile) {
    layer_words *lw = &r->lw[layer];
    const int64_t idx = lw->next[tile.stage]++;
    /* FF chooses (RPO); EP and WG reuse FF's word when it is valid at their precision. */
    tile.cfg = tile.stage == ET_FF ? (et_hw_pair){0, 0} : bp_word(lw, idx);
    et_hw_cost c;
    et_status st = et_hw_tile_cost(&r->arch, r->opp, &tile, &c);
    if (st == ET_ERR_INVALID && tile.stage != ET_FF && (tile.cfg.ip || tile.cfg.op)) {
        tile.cfg = (et_hw_pair){0, 0}; /* e.g. EP at another precision than FF: choose anew */
        st = et_hw_tile_cost(&r->arch, r->opp, &tile, &c);
    }
    if (st) return st;
    if (tile.stage == ET_FF) {
        if (idx >= lw->cap) {
            int64_t cap = lw->cap ? lw->cap * 2 : 64;
            while (cap <= idx) cap *= 2;
            et_hw_pair *w = realloc(lw->w, (size_t)cap * sizeof *w);
            if (!w) return et_set_error(ET_ERR_NOMEM, "out of memory");
            lw->w = w, lw->cap = cap;
        }
        lw->w[idx] = c.cfg;
        lw->n = idx + 1;
    }
    int mpc = et_hw_macs_per_cycle(&r->arch, tile.prec);
    add(&r->tot[(size_t)layer * ET_NSTAGES + tile.stage], &c, mpc, &tile);
    add(&r->tot[(size_t)r->nlayers * ET_NSTAGES + tile.stage], &c, mpc, &tile);
    return ET_OK;
}

/* A new pass of a layer starts when FF follows BP (new FF tile list) or BP
 * follows FF (BP tiles count from the first FF tile again). */
static void pass_start(et_hw_run *r, int layer, int stage) {
    layer_words *lw = &r->lw[layer];
    if (stage == ET_FF && lw->last_stage != ET_FF) lw->next[ET_FF] = 0, lw->n = 0;
    if (stage != ET_FF && lw->last_stage == ET_FF) lw->next[ET_EP] = lw->next[ET_WG] = 0;
    lw->last_stage = stage;
}

et_status et_hw_run_tile(et_hw_run *r, int layer, et_hw_tile tile) {
    if (layer < 0 || layer >= r->nlayers) return et_set_error(ET_ERR_INVALID, "hw run: layer %d out of range", layer);
    if ((unsigned)tile.stage >= ET_NSTAGES) return et_set_error(ET_ERR_INVALID, "hw run: bad stage %d", (int)tile.stage);
    pass_start(r, layer, tile.stage);
    return run_tile(r, layer, tile);
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

/* DRAM bytes of an op on this architecture: each tensor kind under the
 * architecture's codec, or dense when the codec would not shrink it. */
static int64_t dram_of(const et_hw_arch *a, const et_hw_op *op) {
    int64_t dense = 0, packed = 0;
    for (int k = 0; k < ET_HW_NT; k++) dense += op->dram[k][ET_HW_C_DENSE];
    if (!dense) return op->dram_bytes; /* no per-kind sizes (version-1 trace): dense */
    if (a->compress == ET_HW_COMPRESS_NONE) return dense;
    int c = a->compress == ET_HW_COMPRESS_RLE ? ET_HW_C_RLE : ET_HW_C_BITMASK;
    for (int k = 0; k < ET_HW_NT; k++) {
        int64_t d = op->dram[k][ET_HW_C_DENSE], x = op->dram[k][c];
        packed += x < d ? x : d;
    }
    return packed;
}

et_status et_hw_run_op(et_hw_run *r, const et_hw_op *op) {
    if ((unsigned)op->stage >= ET_NSTAGES) return et_set_error(ET_ERR_INVALID, "hw op: bad stage %d", op->stage);
    if (op->layer < 0 || op->layer >= r->nlayers)
        return et_set_error(ET_ERR_INVALID, "hw run: layer %d out of range", op->layer);
    const et_hw_arch *a = &r->arch;
    if (op->co_pos && (op->spatial < 0 || op->co < 0 || op->co > op->co_dense))
        return et_set_error(ET_ERR_INVALID, "hw op: bad output structure");
    if (op->sram_out_bytes < 0 || op->sram_out_bytes > op->sram_bytes)
        return et_set_error(ET_ERR_INVALID, "hw op: result SRAM bytes out of range");
    et_hw_tile t;
    memset(&t, 0, sizeof t);
    t.stage = (et_stage)op->stage;
    t.prec = prec_of(a, op);
    t.ci = op->ci, t.co = op->co, t.co_dense = op->co_dense, t.spatial = op->spatial;
    t.w_density = op->w_density;
    t.spec = op->spec;
    t.spec_bits = op->spec_bits;
    t.dram_bytes = dram_of(a, op);
    const int structured = a->speculation && op->co_pos != NULL;
    /* results the architecture does not compute are not written to SRAM */
    double out_frac = 1;
    if (structured) {
        double s0 = (double)et_hw_co_slots(op->co_pos, op->spatial, 1);
        double dense = (double)op->co_dense * (double)op->spatial;
        out_frac = dense > 0 ? s0 / dense : 0;
    }
    t.sram_bytes = op->sram_bytes - op->sram_out_bytes + (int64_t)((double)op->sram_out_bytes * out_frac);
    pass_start(r, op->layer, op->stage);
    if (!structured) return run_tile(r, op->layer, t);
    /* one tile per tile_positions output positions (the last may be shorter);
     * bytes go with the first */
    const int64_t per = a->tile_positions > 0 ? a->tile_positions : 1;
    for (int64_t p0 = 0; p0 < op->spatial || p0 == 0; p0 += per) {
        et_hw_tile u = t;
        u.structured = 1;
        u.spatial = op->spatial - p0 < per ? op->spatial - p0 : per;
        u.co_pos = op->co_pos + p0;
        if (p0) u.sram_bytes = u.dram_bytes = 0;
        et_status st = run_tile(r, op->layer, u);
        if (st) return st;
        if (op->spatial <= 0) break;
    }
    return ET_OK;
}

/* Reserves room for `tiles` FF configuration words of `layer`, so that a run
 * fed from a planned model does not allocate while it trains. */
et_status et_hw_run_reserve(et_hw_run *r, int layer, int64_t tiles) {
    if (layer < 0 || layer >= r->nlayers || tiles < 0)
        return et_set_error(ET_ERR_INVALID, "hw run: bad reservation (layer %d, %lld tiles)", layer, (long long)tiles);
    layer_words *lw = &r->lw[layer];
    if (tiles <= lw->cap) return ET_OK;
    et_hw_pair *w = realloc(lw->w, (size_t)tiles * sizeof *w);
    if (!w) return et_set_error(ET_ERR_NOMEM, "out of memory");
    lw->w = w, lw->cap = tiles;
    return ET_OK;
}

int64_t et_hw_run_tiles(const et_hw_run *r, int64_t positions, int structured) {
    const int64_t per = r->arch.tile_positions > 0 ? r->arch.tile_positions : 1;
    if (!structured || !r->arch.speculation || positions <= 0) return 1;
    return (positions + per - 1) / per;
}
