/* Feeds a model's matmul calls to live processor-model runs (docs/hw.md,
 * "Live runs"): each call becomes one tile.
 *   Ci = the reduction length K; Co = the output channels (conv: M for FF and
 *   WG, the Cin*KH*KW rows of dcol for EP; linear: N for FF and EP, M for WG);
 *   spatial = the other output dimension.
 *   Precision: the operands' formats under the precision policy: intN/dfxpN ->
 *   INT N, fp16/bf16 -> FP16, formats of <= 8 bits -> FP8; anything else
 *   (fp32) or a precision the architecture lacks -> its calibration precision.
 *   SRAM bytes: both operands and the result as the array reads/writes them.
 *   DRAM bytes: the layer's input and output tensors for the images of the
 *   call and its weights (or weight gradient), each once, at their formats.
 * The run does not speculate yet, so Co non-zero = Co dense. With pruning the
 * weight density is the layer's kept fraction (an architecture with
 * weight_skip scales Ci by it). */
#include "nn/precision.h"

#include <stdlib.h>
#include <string.h>

typedef struct hw_link {
    et_model *m;
    et_hw_run *runs[2];
    int nruns;
    et_trace_writer *trace;
} hw_link;

static int fmt_bits(const et_format *f) { return f ? f->bits : 32; }

/* Operand kind for et_hw_op: 0 fp32/other, 1 integer, 2 floating point. */
static void kind_of(const et_format *f, int32_t *kind, int32_t *bits) {
    *kind = !f ? 0 : f->kind != ET_FMT_FLOAT ? 1 : 2;
    *bits = fmt_bits(f);
}

static et_status sink(void *ctx, const et_matmul *mm, uint64_t macs) {
    hw_link *k = ctx;
    et_model *m = k->m;
    const et_layer *l = &m->nodes[mm->layer].layer;
    const int conv = l->type == ET_L_CONV;
    const et_format *fa = et_model_format(m, mm->layer, ET_ROLE_A), *fw = et_model_format(m, mm->layer, ET_ROLE_W),
                    *fe = et_model_format(m, mm->layer, ET_ROLE_E), *fg = et_model_format(m, mm->layer, ET_ROLE_G);
    /* the product's two input formats (activation or error first, then weight
     * or activation) and its result's format, per stage */
    const et_format *opA, *opB, *res;
    int64_t co, spatial, images;
    const int64_t hwo = (int64_t)l->out.h * l->out.w;
    switch (mm->stage) {
    case ET_FF:
        opA = fa, opB = fw, res = fa;
        co = conv ? mm->M : mm->N, spatial = conv ? mm->N : mm->M;
        images = conv ? mm->N / hwo : mm->M;
        break;
    case ET_EP:
        opA = fe, opB = fw, res = fe;
        co = conv ? mm->M : mm->N, spatial = conv ? mm->N : mm->M;
        images = conv ? mm->N / hwo : mm->M;
        break;
    default:
        opA = fe, opB = fa, res = fg;
        co = mm->M, spatial = mm->N;
        images = conv ? mm->K / hwo : mm->K;
        break;
    }
    et_hw_op op;
    memset(&op, 0, sizeof op);
    op.step = m->step;
    op.layer = mm->layer;
    op.stage = mm->stage;
    kind_of(opA, &op.a_kind, &op.a_bits);
    kind_of(opB, &op.w_kind, &op.w_bits);
    op.ci = mm->K > 0 ? mm->K : 1;
    op.co = op.co_dense = mm->K > 0 ? co : 0;
    op.spatial = spatial;
    op.w_density = 1.0;
    et_prune_stats ps; /* pruned weights: the fraction kept (FF/EP skip the rest, WG computes only kept outputs) */
    if (et_model_prune_stats(m, mm->layer, &ps) && ps.weights) op.w_density = 1.0 - (double)ps.pruned / (double)ps.weights;
    /* which operand is the weight matrix: the one of its size (FF, EP) */
    const et_format *fA = opA, *fB = opB;
    if (mm->stage != ET_WG && (int64_t)mm->M * mm->K == l->params[0].n) fA = opB, fB = opA;
    double a_bytes = (double)mm->M * mm->K * fmt_bits(fA) / 8.0;
    double b_bytes = (double)mm->K * mm->N * fmt_bits(fB) / 8.0;
    double c_bytes = (double)mm->M * mm->N * fmt_bits(res) / 8.0;
    op.sram_bytes = (int64_t)(a_bytes + b_bytes + c_bytes);
    double in_b = (double)et_shape_numel(l->in) * images, out_b = (double)et_shape_numel(l->out) * images;
    double w_b = (double)l->params[0].n;
    double dram = mm->stage == ET_FF ? in_b * fmt_bits(fa) + out_b * fmt_bits(fa) + w_b * fmt_bits(fw)
                  : mm->stage == ET_EP ? out_b * fmt_bits(fe) + in_b * fmt_bits(fe) + w_b * fmt_bits(fw)
                                       : in_b * fmt_bits(fa) + out_b * fmt_bits(fe) + w_b * fmt_bits(fg);
    op.dram_bytes = (int64_t)(dram / 8.0);
    (void)macs;
    et_status st = ET_OK;
    for (int r = 0; r < k->nruns && !st; r++) st = et_hw_run_op(k->runs[r], &op);
    if (!st && k->trace) st = et_trace_add(k->trace, &op);
    return st;
}

et_status et_model_attach_hw(et_model *m, et_hw_run *run, et_hw_run *baseline, et_trace_writer *trace) {
    hw_link *k = m->hw_link;
    if (!k && !(k = m->hw_link = calloc(1, sizeof *k))) return et_set_error(ET_ERR_NOMEM, "out of memory");
    k->m = m;
    k->nruns = 0;
    if (run) k->runs[k->nruns++] = run;
    if (baseline) k->runs[k->nruns++] = baseline;
    k->trace = trace;
    et_engine_set_sink(&m->eng, k->nruns || trace ? sink : NULL, k);
    return ET_OK;
}
