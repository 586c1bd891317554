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
 *   dense and sized exactly under the RLE and bitmask codecs on the tensors as
 *   the model stores them (a conv's input, not its im2col expansion; a conv
 *   EP's dX after col2im: that record waits until the next call or detach).
 *   Structure: with an output mask, Co(p) = the mask's non-zeros at output
 *   position p, for every position; the weight operand's (WG: the activation
 *   operand's, or with pruning the layer's kept fraction: WG computes only
 *   kept weights' gradients) non-zero fraction -> w_density.
 * Buffers are sized when the sink is attached to a planned model; nothing is
 * allocated while it trains. */
#include "nn/precision.h"
#include "sparsity/codec.h"

#include <stdlib.h>
#include <string.h>

#define RUN_BITS 4
/* w_density of an im2col operand (WG) is counted on every s-th row of
 * matrices above this many elements, s fixed by the shape */
#define DENSITY_SAMPLE (1 << 16)

typedef struct hw_link {
    et_model *m;
    et_hw_run *runs[2];
    int nruns;
    et_trace_writer *trace;
    /* sized at attach from the plan: Co(p) of the largest product's positions */
    int32_t *cnt;
    size_t cnt_cap;
    /* a conv EP whose dX chunk is written (col2im) after the product: its
     * record is completed and emitted at the next call or at detach */
    int pending;
    et_hw_op pend;
    const float *pend_dx; /* the stored dX of the call's images */
    int64_t pend_rows, pend_cols, pend_ld;
    int pend_bits;
    double pend_dense;
    /* the (step, layer, stage) whose weight traffic was last charged, and the
     * weight density measured then */
    int64_t w_step;
    int w_layer, w_stage;
    double w_dens;
    /* the processor product being assembled from a layer's chunk calls of one
     * stage and step (see agg_add); its Co(p) in agg_co (cnt_cap entries) */
    int agg_on;
    et_hw_op agg;
    int32_t *agg_co;
} hw_link;

void et_hwlink_free(et_model *m) {
    hw_link *k = m->hw_link;
    if (!k) return;
    free(k->cnt);
    free(k->agg_co);
    free(k);
    m->hw_link = NULL;
}

/* Codec sizes (dense, RLE, bitmask; bits) of a stored rows x cols matrix with
 * row stride ld, at `bits` per element, row by row, every element. Returns
 * the non-zero fraction. */
static double sizes(const float *x, int64_t rows, int64_t cols, int64_t ld, int bits, double out[ET_HW_NC]) {
    double acc[ET_NCODECS] = {0}, nz = 0;
    for (int64_t r = 0; r < rows; r++) {
        uint64_t b[ET_NCODECS];
        int64_t n;
        et_codec_sizes_f32(x + r * ld, 1, cols, bits, RUN_BITS, b, &n);
        for (int c = 0; c < ET_NCODECS; c++) acc[c] += (double)b[c];
        nz += (double)n;
    }
    out[ET_HW_C_DENSE] = acc[ET_CODEC_DENSE], out[ET_HW_C_RLE] = acc[ET_CODEC_RLE];
    out[ET_HW_C_BITMASK] = acc[ET_CODEC_BITMASK];
    const double el = (double)rows * (double)cols;
    return el > 0 ? nz / el : 1;
}

/* Non-zero fraction of a rows x cols matrix (row stride ld); matrices above
 * DENSITY_SAMPLE elements are counted on every s-th row. A density, not a
 * traffic size: it only scales Ci for architectures that skip zero operands. */
static double density(const float *x, int64_t rows, int64_t cols, int64_t ld) {
    int64_t s = rows * cols > DENSITY_SAMPLE ? (rows * cols + DENSITY_SAMPLE - 1) / DENSITY_SAMPLE : 1;
    if (s > rows) s = rows;
    int64_t nz = 0, el = 0;
    for (int64_t r = 0; r < rows; r += s) {
        const float *row = x + r * ld;
        for (int64_t c = 0; c < cols; c++) nz += row[c] != 0.0f;
        el += cols;
    }
    return el > 0 ? (double)nz / (double)el : 1;
}

/* dram[kind][codec] = the tensor's dense bytes scaled by the codec's measured
 * ratio (the ratio is 1:1 in bits when the sized matrix is the tensor itself) */
static void kind_bytes(int64_t d[ET_HW_NC], double dense_bytes, const double bits[ET_HW_NC]) {
    for (int c = 0; c < ET_HW_NC; c++)
        d[c] = (int64_t)(bits[ET_HW_C_DENSE] > 0 ? dense_bytes * bits[c] / bits[ET_HW_C_DENSE] : dense_bytes);
}

/* Co(p) of every output position from an M x N output mask; co_rows: output
 * channels are the rows (positions the columns), else the reverse. */
static et_status structure(hw_link *k, const et_matmul *mm, int co_rows, et_hw_op *op) {
    const int64_t P = co_rows ? mm->N : mm->M, C = co_rows ? mm->M : mm->N;
    if ((size_t)P > k->cnt_cap)
        return et_set_error(ET_ERR_INVALID, "processor model: a product of %lld output positions exceeds the %zu "
                            "planned when the model was attached", (long long)P, k->cnt_cap);
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
    for (int64_t p = 0; p < P; p++)
        if (cnt[p] > co) co = cnt[p];
    op->co = co;
    op->co_pos = cnt;
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

/* Sends the assembled product to the runs and the trace. */
static et_status agg_flush(hw_link *k) {
    if (!k->agg_on) return ET_OK;
    k->agg_on = 0;
    et_status st = ET_OK;
    for (int r = 0; r < k->nruns && !st; r++) st = et_hw_run_op(k->runs[r], &k->agg);
    if (!st && k->trace) st = et_trace_add(k->trace, &k->agg);
    return st;
}

/* Co(p) of n positions into dst: the op's, or all its channels if dense */
static void co_copy(int32_t *dst, const et_hw_op *op) {
    for (int64_t p = 0; p < op->spatial; p++) dst[p] = op->co_pos ? op->co_pos[p] : (int32_t)op->co_dense;
}

/* A conv runs one layer's product of a stage as several calls, one per chunk
 * of images (src/nn/conv.c); the processor runs it as one product over all
 * the batch's positions. Consecutive calls of one (step, layer, stage) are
 * therefore joined: FF and EP chunks are more output positions (Co(p)
 * appended), WG chunks more of the reduction (Ci added); bytes add up. So
 * tiles span images as on the processor, whatever the CPU's chunk size. */
static int agg_joins(const hw_link *k, const et_hw_op *op) {
    const et_hw_op *a = &k->agg;
    if (!k->agg_on || a->step != op->step || a->layer != op->layer || a->stage != op->stage) return 0;
    if (a->a_kind != op->a_kind || a->a_bits != op->a_bits || a->w_kind != op->w_kind || a->w_bits != op->w_bits ||
        a->spec != op->spec || a->spec_bits != op->spec_bits || a->co_dense != op->co_dense)
        return 0;
    if (op->stage == ET_WG)
        return a->spatial == op->spatial && !a->co_pos && !op->co_pos;
    return a->ci == op->ci && (size_t)(a->spatial + op->spatial) <= k->cnt_cap;
}

static et_status emit(hw_link *k, const et_hw_op *op) {
    if (!agg_joins(k, op)) {
        et_status st = agg_flush(k);
        if (st) return st;
        k->agg = *op;
        if (op->co_pos) {
            memcpy(k->agg_co, op->co_pos, (size_t)op->spatial * sizeof *k->agg_co);
            k->agg.co_pos = k->agg_co;
        }
        k->agg_on = 1;
        return ET_OK;
    }
    et_hw_op *a = &k->agg;
    if (op->stage == ET_WG) {
        a->w_density = (a->w_density * (double)a->ci + op->w_density * (double)op->ci) / (double)(a->ci + op->ci);
        a->ci += op->ci;
    } else {
        if (a->co_pos || op->co_pos) {
            if (!a->co_pos) { /* the dense part so far computes every channel */
                co_copy(k->agg_co, a);
                a->co_pos = k->agg_co;
            }
            co_copy(k->agg_co + a->spatial, op);
        }
        a->spatial += op->spatial;
    }
    if (op->co > a->co) a->co = op->co;
    a->sram_bytes += op->sram_bytes, a->sram_out_bytes += op->sram_out_bytes, a->dram_bytes += op->dram_bytes;
    for (int t = 0; t < ET_HW_NT; t++)
        for (int c = 0; c < ET_HW_NC; c++) a->dram[t][c] += op->dram[t][c];
    return ET_OK;
}

/* Completes the waiting conv EP record with its dX chunk's codec sizes (col2im
 * has written it by now) and emits it. */
static et_status flush(hw_link *k) {
    if (!k->pending) return ET_OK;
    k->pending = 0;
    double sc[ET_HW_NC];
    sizes(k->pend_dx, k->pend_rows, k->pend_cols, k->pend_ld, k->pend_bits, sc);
    kind_bytes(k->pend.dram[ET_HW_T_OUT], k->pend_dense, sc);
    k->pend.dram_bytes = 0;
    for (int t = 0; t < ET_HW_NT; t++) k->pend.dram_bytes += k->pend.dram[t][ET_HW_C_DENSE];
    return emit(k, &k->pend);
}

/* The images n0.. of a conv call whose matrix starts at p inside the CNHW
 * tensor base (per-image plane hw, N images): -1 if p is not such a column. */
static int64_t chunk_start(const float *p, const float *base, int64_t hw, int64_t N) {
    if (!base || p < base || hw <= 0) return -1;
    const int64_t off = p - base;
    return off % hw == 0 && off / hw < N ? off / hw : -1;
}

static et_status sink(void *ctx, const et_matmul *mm, uint64_t macs) {
    (void)macs;
    hw_link *k = ctx;
    et_status st = flush(k);
    if (st) return st;
    et_model *m = k->m;
    const et_node *nd = &m->nodes[mm->layer];
    const et_layer *l = &nd->layer;
    const int conv = l->type == ET_L_CONV;
    const et_format *fa = et_model_format(m, mm->layer, ET_ROLE_A), *fw = et_model_format(m, mm->layer, ET_ROLE_W),
                    *fe = et_model_format(m, mm->layer, ET_ROLE_E), *fg = et_model_format(m, mm->layer, ET_ROLE_G);
    /* the product's two input formats (activation or error first, then weight
     * or activation) and its result's format, per stage */
    const et_format *opA, *opB, *res;
    int64_t co, spatial, images;
    const int64_t hwo = (int64_t)l->out.h * l->out.w, hwi = (int64_t)l->in.h * l->in.w;
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
    /* codec sizes of what the product read and wrote, as the model stores it */
    double sa[ET_HW_NC], sb[ET_HW_NC], sc[ET_HW_NC];
    const float *xa = mm->A, *xb = mm->B;
    int64_t rxa = ra, cxa = ca, lxa = mm->lda, rxb = rb, cxb = cb, lxb = mm->ldb;
    if (a_is_w) { /* xa = the activation/error operand, xb = the weight operand */
        xa = mm->B, rxa = rb, cxa = cb, lxa = mm->ldb;
        xb = mm->A, rxb = ra, cxb = ca, lxb = mm->lda;
    }
    /* a conv reads its input x (CNHW) through im2col: size the chunk's images
     * of x itself (FF: "in"; WG: "in", while the operand's own zeros, padding
     * included, give WG's w_density); locate the chunk from the stored operand
     * that is not expanded (FF: C in y; WG: A in dY; EP: B in dY) */
    const float *x_in = conv ? m->tensors[nd->in].val : NULL;
    int64_t n0 = -1, N = 0;
    if (conv && hwo > 0) {
        const int gs = m->tensors[nd->out].grad_slot;
        const float *dyb = gs >= 0 && m->slots ? m->slots[gs] : NULL;
        if (mm->stage == ET_FF) N = mm->ldc / hwo, n0 = chunk_start(mm->C, m->tensors[nd->out].val, hwo, N);
        else if (mm->stage == ET_WG) N = mm->lda / hwo, n0 = chunk_start(mm->A, dyb, hwo, N);
        else N = mm->ldb / hwo, n0 = chunk_start(mm->B, dyb, hwo, N);
        if (n0 >= 0 && n0 + images > N) n0 = -1;
    }
    const int x_stored = n0 >= 0 && x_in;
    /* A layer's products of one stage in one step are chunks of images of
     * one product on the processor: its weights (FF, EP) come on chip once and
     * its weight gradient (WG) goes off chip once, so the first chunk carries
     * that traffic and the others move no weight bytes. */
    const int w_first = !(k->w_step == m->step && k->w_layer == mm->layer && k->w_stage == (int)mm->stage);
    if (w_first) k->w_step = m->step, k->w_layer = mm->layer, k->w_stage = (int)mm->stage;
    double sx[ET_HW_NC];
    if (x_stored && mm->stage != ET_EP)
        sizes(x_in + n0 * hwi, l->in.c, images * hwi, N * hwi, fmt_bits(fa), sx);
    if (!(x_stored && mm->stage == ET_FF)) sizes(xa, rxa, cxa, lxa, fmt_bits(opA), sa);
    if (mm->stage == ET_WG && x_stored) /* the im2col matrix: only its density (DRAM: sx) */
        op.w_density = density(xb, rxb, cxb, lxb);
    else if (mm->stage != ET_WG && !w_first) /* weights already on chip: same density */
        op.w_density = k->w_dens;
    else /* weights; WG of a linear layer: the stored activations */
        op.w_density = sizes(xb, rxb, cxb, lxb, fmt_bits(opB), sb);
    if (mm->stage != ET_WG && w_first) k->w_dens = op.w_density;
    et_prune_stats ps; /* pruned layer: WG computes only the kept weights' gradients */
    if (mm->stage == ET_WG && et_model_prune_stats(m, mm->layer, &ps) && ps.weights)
        op.w_density = 1.0 - (double)ps.pruned / (double)ps.weights;
    /* a conv EP's result is dcol: its dX (CNHW, after col2im) is sized once written */
    const float *dx = mm->stage == ET_EP && conv ? m->ep_dx : NULL;
    const int defer = dx && x_stored && mm->C != dx;
    if (!defer && !(mm->stage == ET_WG && !w_first)) sizes(mm->C, mm->M, mm->N, mm->ldc, fmt_bits(res), sc);
    switch (mm->stage) {
    case ET_FF: /* in: input activations; w: weights; out: outputs */
        kind_bytes(op.dram[ET_HW_T_IN], in_e * fmt_bits(fa) / 8.0, x_stored ? sx : sa);
        if (w_first) kind_bytes(op.dram[ET_HW_T_W], w_e * fmt_bits(fw) / 8.0, sb);
        kind_bytes(op.dram[ET_HW_T_OUT], out_e * fmt_bits(fa) / 8.0, sc);
        break;
    case ET_EP: /* in: the incoming error dY; w: weights; out: dX */
        kind_bytes(op.dram[ET_HW_T_IN], out_e * fmt_bits(fe) / 8.0, sa);
        if (w_first) kind_bytes(op.dram[ET_HW_T_W], w_e * fmt_bits(fw) / 8.0, sb);
        if (!defer) kind_bytes(op.dram[ET_HW_T_OUT], in_e * fmt_bits(fe) / 8.0, sc);
        break;
    default: /* in: stored activations X; w: the weight gradient (C); out: dY (A) */
        kind_bytes(op.dram[ET_HW_T_IN], in_e * fmt_bits(fa) / 8.0, x_stored ? sx : sb);
        if (w_first) kind_bytes(op.dram[ET_HW_T_W], w_e * fmt_bits(fg) / 8.0, sc);
        kind_bytes(op.dram[ET_HW_T_OUT], out_e * fmt_bits(fe) / 8.0, sa);
        break;
    }
    op.dram_bytes = 0;
    for (int t = 0; t < ET_HW_NT; t++) op.dram_bytes += op.dram[t][ET_HW_C_DENSE];
    /* the output mask the product computed under: given (BP reusing FF's
     * prediction, pruning) or predicted by the speculation unit (mm->spec) */
    et_matmul mk = *mm;
    if (!mk.mask && mm->spec && mm->spec->mask) mk.mask = mm->spec->mask, mk.ldmask = mm->spec->ldmask;
    if (mk.mask && mm->K > 0 && (st = structure(k, &mk, conv || mm->stage == ET_WG, &op))) return st;
    if (defer) {
        k->pend = op;
        k->pend_dx = dx + n0 * hwi, k->pend_rows = l->in.c, k->pend_cols = images * hwi, k->pend_ld = N * hwi;
        k->pend_bits = fmt_bits(fe), k->pend_dense = in_e * fmt_bits(fe) / 8.0;
        k->pending = 1;
        return ET_OK;
    }
    return emit(k, &op);
}

/* The most output positions one product can have, from the plan: a conv's
 * batch x Ho x Wo (FF, EP) or Cin*KH*KW (WG), a linear layer's batch (FF, EP)
 * or inputs (WG). */
static int64_t max_positions(const et_model *m, int64_t *ff_tiles_per_layer, const et_hw_run *run) {
    int64_t P = 1;
    for (int i = 0; i < m->nnodes; i++) {
        const et_layer *l = &m->nodes[i].layer;
        int64_t p[2] = {0, 0};
        if (l->type == ET_L_CONV) {
            p[0] = (int64_t)m->batch_cap * l->out.h * l->out.w;
            p[1] = (int64_t)l->in.c * l->cfg.conv.kh * l->cfg.conv.kw;
        } else if (l->type == ET_L_LINEAR) {
            p[0] = m->batch_cap, p[1] = et_shape_numel(l->in);
        }
        for (int j = 0; j < 2; j++)
            if (p[j] > P) P = p[j];
        /* FF tiles of one pass: the products (conv chunks: at most one per image)
         * each split into tiles of the architecture's positions */
        if (ff_tiles_per_layer)
            ff_tiles_per_layer[i] = p[0] ? et_hw_run_tiles(run, p[0], 1) + m->batch_cap : 0;
    }
    return P;
}

/* End of a training step's backward pass: every product of the step is
 * complete, so the waiting records go out (runs and trace are current after
 * each step). */
et_status et_hwlink_step_done(et_model *m) {
    hw_link *k = m->hw_link;
    if (!k || (!k->nruns && !k->trace)) return ET_OK;
    et_status st = flush(k);
    return st ? st : agg_flush(k);
}

et_status et_model_attach_hw(et_model *m, et_hw_run *run, et_hw_run *baseline, et_trace_writer *trace) {
    hw_link *k = m->hw_link;
    if (k && k->pending) { /* the last record goes where its product went */
        et_status st = flush(k);
        if (st) return st;
    }
    if (k) {
        et_status st = agg_flush(k);
        if (st) return st;
    }
    if (!run && !baseline && !trace) {
        if (k) k->nruns = 0, k->trace = NULL;
        et_engine_set_sink(&m->eng, NULL, k);
        return ET_OK;
    }
    if (!m->planned) return et_set_error(ET_ERR_INVALID, "processor model: plan the model before attaching it");
    if (!k && !(k = m->hw_link = calloc(1, sizeof *k))) return et_set_error(ET_ERR_NOMEM, "out of memory");
    k->m = m;
    k->w_step = -1; /* no weight traffic charged yet */
    const size_t P = (size_t)max_positions(m, NULL, NULL);
    if (P > k->cnt_cap) {
        int32_t *c = realloc(k->cnt, P * sizeof *c), *g = c ? realloc(k->agg_co, P * sizeof *g) : NULL;
        if (c) k->cnt = c;
        if (g) k->agg_co = g;
        if (!c || !g) return et_set_error(ET_ERR_NOMEM, "out of memory");
        k->cnt_cap = P;
    }
    et_hw_run *runs[2] = {run, baseline};
    for (int r = 0; r < 2; r++) { /* FF configuration words of every layer's pass */
        if (!runs[r]) continue;
        int64_t *tiles = calloc((size_t)m->nnodes + 1, sizeof *tiles);
        if (!tiles) return et_set_error(ET_ERR_NOMEM, "out of memory");
        max_positions(m, tiles, runs[r]);
        et_status st = ET_OK;
        for (int i = 0; i < m->nnodes && !st; i++)
            if (tiles[i]) st = et_hw_run_reserve(runs[r], i, tiles[i]);
        free(tiles);
        if (st) return st;
    }
    /* the link's buffers join the model's memory plan */
    m->mem.total += sizeof *k + 2 * k->cnt_cap * sizeof *k->cnt - m->mem.hw;
    m->mem.hw = sizeof *k + 2 * k->cnt_cap * sizeof *k->cnt;
    k->nruns = 0;
    if (run) k->runs[k->nruns++] = run;
    if (baseline) k->runs[k->nruns++] = baseline;
    k->trace = trace;
    et_engine_set_sink(&m->eng, sink, k);
    return ET_OK;
}
