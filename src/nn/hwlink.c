/* Feeds a model's matmul calls to live processor-model runs and trace files
 * (docs/hw.md, "Live runs" and "Non-zero structure"): each call becomes one
 * et_hw_op.
 *   Ci = the reduction length K; Co = the output channels (conv: M for FF and
 *   WG, the Cin*KH*KW rows of dcol for EP; linear: N for FF and EP, M for WG);
 *   spatial = the other output dimension.
 *   Precision: the operands' formats under the precision policy: intN/dfxpN ->
 *   INT N, fp16/bf16 -> FP16, formats of <= 8 bits -> FP8; anything else
 *   (fp32) or a precision the architecture lacks -> its calibration precision.
 *   SRAM bytes: both operands and the result as the array reads/writes them.
 *   DRAM bytes: the layer's input and output tensors for the images of the
 *   call and its weights (or weight gradient), each once, at their formats,
 *   dense and sized under the RLE and bitmask codecs from the zeros of the
 *   matrices the product read and wrote.
 *   Structure: with an output mask, Co(p) = the mask's non-zeros at output
 *   position p, summarised per block of ET_HW_BLK positions; the weight
 *   operand's (WG: the activation operand's, or with pruning the layer's kept
 *   fraction: WG computes only kept weights' gradients) non-zero fraction
 *   -> w_density. */
#include "nn/precision.h"
#include "sparsity/codec.h"

#include <stdlib.h>
#include <string.h>

/* matrices above this many elements are sized on every s-th row only */
#define SAMPLE_ELEMS (1 << 16)
#define RUN_BITS 4

typedef struct hw_link {
    et_model *m;
    et_hw_run *runs[2];
    int nruns;
    et_trace_writer *trace;
    /* grow-only scratch (reaches its size in the first step) */
    int32_t *cnt;
    size_t cnt_cap;
    uint32_t *sums;
    size_t sums_cap;
} hw_link;

void et_hwlink_free(et_model *m) {
    hw_link *k = m->hw_link;
    if (!k) return;
    free(k->cnt);
    free(k->sums);
    free(k);
    m->hw_link = NULL;
}

/* Codec sizes (dense, RLE, bitmask; bits) of a stored rows x cols matrix with
 * row stride ld, at `bits` per element, row by row; big matrices are sampled
 * on every s-th row (fixed by the shape) and scaled. Returns the non-zero
 * fraction of what was scanned. */
static double sizes(const float *x, int64_t rows, int64_t cols, int64_t ld, int bits, double out[ET_HW_NC]) {
    int64_t s = rows * cols > SAMPLE_ELEMS ? (rows * cols + SAMPLE_ELEMS - 1) / SAMPLE_ELEMS : 1;
    if (s > rows) s = rows;
    double acc[ET_NCODECS] = {0}, nz = 0, el = 0;
    for (int64_t r = 0; r < rows; r += s) {
        uint64_t b[ET_NCODECS];
        int64_t n;
        et_codec_sizes_f32(x + r * ld, 1, cols, bits, RUN_BITS, b, &n);
        for (int c = 0; c < ET_NCODECS; c++) acc[c] += (double)b[c];
        nz += (double)n, el += (double)cols;
    }
    out[ET_HW_C_DENSE] = acc[ET_CODEC_DENSE], out[ET_HW_C_RLE] = acc[ET_CODEC_RLE];
    out[ET_HW_C_BITMASK] = acc[ET_CODEC_BITMASK];
    return el > 0 ? nz / el : 1;
}

/* dram[kind][codec] = the tensor's dense bytes scaled by the codec's measured ratio */
static void kind_bytes(int64_t d[ET_HW_NC], double dense_bytes, const double bits[ET_HW_NC]) {
    for (int c = 0; c < ET_HW_NC; c++)
        d[c] = (int64_t)(bits[ET_HW_C_DENSE] > 0 ? dense_bytes * bits[c] / bits[ET_HW_C_DENSE] : dense_bytes);
}

/* Per-block sums S_k of Co(p) from an M x N output mask; co_rows: output
 * channels are the rows (positions the columns), else the reverse. */
static et_status structure(hw_link *k, const et_matmul *mm, int co_rows, et_hw_op *op) {
    const int64_t P = co_rows ? mm->N : mm->M, C = co_rows ? mm->M : mm->N;
    const int64_t nblk = (P + ET_HW_BLK - 1) / ET_HW_BLK;
    if ((size_t)P > k->cnt_cap) {
        int32_t *c = realloc(k->cnt, (size_t)P * sizeof *c);
        if (!c) return et_set_error(ET_ERR_NOMEM, "out of memory");
        k->cnt = c, k->cnt_cap = (size_t)P;
    }
    if ((size_t)nblk * ET_HW_NSUM > k->sums_cap) {
        uint32_t *s = realloc(k->sums, (size_t)nblk * ET_HW_NSUM * sizeof *s);
        if (!s) return et_set_error(ET_ERR_NOMEM, "out of memory");
        k->sums = s, k->sums_cap = (size_t)nblk * ET_HW_NSUM;
    }
    int32_t *cnt = k->cnt;
    if (co_rows) {
        memset(cnt, 0, (size_t)P * sizeof *cnt);
        for (int64_t i = 0; i < C; i++) {
            const uint8_t *row = mm->mask + i * mm->ldmask;
            for (int64_t p = 0; p < P; p++) cnt[p] += row[p] != 0;
        }
    } else {
        for (int64_t p = 0; p < P; p++) {
            const uint8_t *row = mm->mask + p * mm->ldmask;
            int32_t c = 0;
            for (int64_t j = 0; j < C; j++) c += row[j] != 0;
            cnt[p] = c;
        }
    }
    int64_t co = 0;
    for (int64_t b = 0; b < nblk; b++) {
        uint32_t *s = k->sums + b * ET_HW_NSUM;
        memset(s, 0, ET_HW_NSUM * sizeof *s);
        int64_t p1 = (b + 1) * ET_HW_BLK < P ? (b + 1) * ET_HW_BLK : P;
        for (int64_t p = b * ET_HW_BLK; p < p1; p++) {
            if (cnt[p] > co) co = cnt[p];
            for (int j = 0; j < ET_HW_NSUM; j++) s[j] += (uint32_t)((cnt[p] + (1 << j) - 1) >> j);
        }
    }
    op->co = co;
    op->nblk = nblk;
    op->sums = k->sums;
    op->spec = mm->spec != NULL && mm->stage == ET_FF;
    /* B-bit predictions use B-bit MACs; exact prediction is costed as the
     * widest (8-bit) unit; exponent-only prediction is not recorded (0) */
    op->spec_bits = !op->spec ? 0 : mm->spec->bits == ET_SPEC_EXACT ? 8 : mm->spec->bits >= 1 && mm->spec->bits <= 8 ? mm->spec->bits : 0;
    return ET_OK;
}

static int fmt_bits(const et_format *f) { return f ? f->bits : 32; }

/* Operand kind for et_hw_op: 0 fp32/other, 1 integer, 2 floating point. */
static void kind_of(const et_format *f, int32_t *kind, int32_t *bits) {
    *kind = !f ? 0 : f->kind != ET_FMT_FLOAT ? 1 : 2;
    *bits = fmt_bits(f);
}

static et_status sink(void *ctx, const et_matmul *mm, uint64_t macs) {
    (void)macs;
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
    /* the stored matrices: A is M x K (ta: K x M), B is K x N (tb: N x K), C is M x N */
    const int64_t ra = mm->ta ? mm->K : mm->M, ca = mm->ta ? mm->M : mm->K;
    const int64_t rb = mm->tb ? mm->N : mm->K, cb = mm->tb ? mm->K : mm->N;
    /* which operand is the weight matrix (FF, EP) */
    const int a_is_w = mm->stage != ET_WG && mm->A == l->params[0].use;
    const et_format *fA = a_is_w ? opB : opA, *fB = a_is_w ? opA : opB;
    double a_bytes = (double)mm->M * mm->K * fmt_bits(fA) / 8.0;
    double b_bytes = (double)mm->K * mm->N * fmt_bits(fB) / 8.0;
    double c_bytes = (double)mm->M * mm->N * fmt_bits(res) / 8.0;
    op.sram_bytes = (int64_t)(a_bytes + b_bytes + c_bytes);
    op.sram_out_bytes = (int64_t)c_bytes;
    const double in_e = (double)et_shape_numel(l->in) * images, out_e = (double)et_shape_numel(l->out) * images;
    const double w_e = (double)l->params[0].n;
    /* measured codec sizes of what the product read and wrote */
    double sa[ET_HW_NC], sb[ET_HW_NC], sc[ET_HW_NC];
    const float *xa = mm->A, *xb = mm->B;
    int64_t rxa = ra, cxa = ca, lxa = mm->lda, rxb = rb, cxb = cb, lxb = mm->ldb;
    if (a_is_w) { /* xa = the activation/error operand, xb = the weight operand */
        xa = mm->B, rxa = rb, cxa = cb, lxa = mm->ldb;
        xb = mm->A, rxb = ra, cxb = ca, lxb = mm->lda;
    }
    sizes(xa, rxa, cxa, lxa, fmt_bits(opA), sa);
    op.w_density = sizes(xb, rxb, cxb, lxb, fmt_bits(opB), sb); /* weights; WG: activations */
    et_prune_stats ps; /* pruned layer: WG computes only the kept weights' gradients */
    if (mm->stage == ET_WG && et_model_prune_stats(m, mm->layer, &ps) && ps.weights)
        op.w_density = 1.0 - (double)ps.pruned / (double)ps.weights;
    sizes(mm->C, mm->M, mm->N, mm->ldc, fmt_bits(res), sc);
    switch (mm->stage) {
    case ET_FF: /* in: input activations; w: weights; out: outputs */
        kind_bytes(op.dram[ET_HW_T_IN], in_e * fmt_bits(fa) / 8.0, sa);
        kind_bytes(op.dram[ET_HW_T_W], w_e * fmt_bits(fw) / 8.0, sb);
        kind_bytes(op.dram[ET_HW_T_OUT], out_e * fmt_bits(fa) / 8.0, sc);
        break;
    case ET_EP: /* in: the incoming error dY; w: weights; out: dX */
        kind_bytes(op.dram[ET_HW_T_IN], out_e * fmt_bits(fe) / 8.0, sa);
        kind_bytes(op.dram[ET_HW_T_W], w_e * fmt_bits(fw) / 8.0, sb);
        kind_bytes(op.dram[ET_HW_T_OUT], in_e * fmt_bits(fe) / 8.0, sc);
        break;
    default: /* in: stored activations X (B); w: the weight gradient (C); out: dY (A) */
        kind_bytes(op.dram[ET_HW_T_IN], in_e * fmt_bits(fa) / 8.0, sb);
        kind_bytes(op.dram[ET_HW_T_W], w_e * fmt_bits(fg) / 8.0, sc);
        kind_bytes(op.dram[ET_HW_T_OUT], out_e * fmt_bits(fe) / 8.0, sa);
        break;
    }
    op.dram_bytes = 0;
    for (int t = 0; t < ET_HW_NT; t++) op.dram_bytes += op.dram[t][ET_HW_C_DENSE];
    /* the output mask the product computed under: given (BP reusing FF's
     * prediction, pruning) or predicted by the speculation unit (mm->spec) */
    et_matmul mk = *mm;
    if (!mk.mask && mm->spec && mm->spec->mask) mk.mask = mm->spec->mask, mk.ldmask = mm->spec->ldmask;
    if (mk.mask && mm->K > 0) {
        et_status st = structure(k, &mk, conv || mm->stage == ET_WG, &op);
        if (st) return st;
    }
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
