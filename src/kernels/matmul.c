/* The one matmul call: see docs/architecture.md and docs/sparsity.md. */
#include "kernels/matmul.h"

#include "kernels/gemm_internal.h"
#include "kernels/igemm.h"
#include "kernels/qgemm.h"
#include "kernels/spconv.h"
#include "kernels/spgemm.h"
#include "kernels/spwg.h"
#include "sparsity/sparsity.h"

#include <string.h>

/* Products counted from the caller's counts (known_count) run dense down to
 * this executed fraction; below it the per-call choice looks at the operands. */
#define ET_KNOWN_SPARSE_MAX 0.0

const char *et_stage_name(et_stage s) {
    static const char *const names[ET_NSTAGES] = {"ff", "ep", "wg"};
    return (unsigned)s < ET_NSTAGES ? names[s] : "?";
}

void et_engine_reset(et_engine *eng) {
    memset(&eng->total, 0, sizeof eng->total);
    eng->int_calls = 0;
    if (eng->per_layer) memset(eng->per_layer, 0, sizeof(et_counters) * (size_t)eng->nlayers);
}

typedef struct work {
    uint64_t dense, executed, cpu, outputs, masked;
} work;

/* Atomic: a layer's plain products may run on two threads (et_matmul_plain). */
static void count(et_counters *c, et_stage s, const work *w) {
    __atomic_fetch_add(&c->macs_dense[s], w->dense, __ATOMIC_RELAXED);
    __atomic_fetch_add(&c->macs_executed[s], w->executed, __ATOMIC_RELAXED);
    __atomic_fetch_add(&c->macs_cpu[s], w->cpu, __ATOMIC_RELAXED);
    __atomic_fetch_add(&c->outputs[s], w->outputs, __ATOMIC_RELAXED);
    __atomic_fetch_add(&c->outputs_masked[s], w->masked, __ATOMIC_RELAXED);
    __atomic_fetch_add(&c->calls[s], 1, __ATOMIC_RELAXED);
}

int et_matmul_emulated(const et_engine *eng, int layer) {
    if (!eng || layer < 0 || layer >= eng->nlayers) return 0;
    const et_format *acc = eng->acc ? eng->acc[layer] : NULL;
    return (eng->mul && eng->mul[layer]) || (acc && acc->kind == ET_FMT_FLOAT);
}

int et_matmul_plain(const et_engine *eng, int layer) {
    return !eng || (!eng->sink && !et_matmul_emulated(eng, layer));
}

/* After a dense product that could not skip (emulated accumulation, the
 * integer path): masked-out outputs become 0, and the multiply-adds a
 * processor skipping at element granularity executes are counted exactly by
 * the fast counting pass. Returns the count; *kept gets the mask's count. */
static uint64_t mask_and_count(const et_matmul *mm, const uint8_t *mask, int ldm, uint64_t *kept) {
    if (mask) {
#pragma omp parallel for schedule(static) if ((int64_t)mm->M * mm->N > 65536)
        for (int i = 0; i < mm->M; i++) {
            const uint8_t *r = mask + (int64_t)i * ldm;
            float *c = mm->C + (int64_t)i * mm->ldc;
            for (int j = 0; j < mm->N; j++) c[j] = r[j] ? c[j] : 0.0f;
        }
    }
    et_spgemm_count cnt;
    et_spgemm_count_fast(mm->ta, mm->tb, mm->M, mm->N, mm->K, mm->A, mm->lda, mm->B, mm->ldb, mm->skip_zeros, mask,
                         ldm, &cnt);
    *kept = cnt.kept;
    return cnt.macs_elem;
}

/* The exact count from the counts the caller knows (et_matmul.knnz_a,
 * knnz_b, post_mask_cols; docs/sparsity.md "Counts from the layer"): one
 * weighted read of the other operand, no scan of the one the caller knows.
 * Returns 0 when the record gives none that apply. */
static int known_count(const et_matmul *mm, uint64_t *elem, uint64_t *kept) {
    const int M = mm->M, N = mm->N, K = mm->K;
    if (mm->mask || mm->spec) return 0;
    if (mm->post_mask_cols) {
        uint64_t k = 0;
        for (int j = 0; j < N; j++) k += (uint64_t)mm->post_mask_cols[j];
        *kept = k;
        /* sum_j nnz(op(B)[:,j]) * kept(j) (op(A) has no zero: the caller's promise) */
        if (mm->skip_zeros && mm->bnz_cols) {
            uint64_t e = 0;
            for (int j = 0; j < N; j++) e += (uint64_t)mm->bnz_cols[j] * (uint64_t)mm->post_mask_cols[j];
            *elem = e;
            return 1;
        }
        *elem = !mm->skip_zeros ? k * (uint64_t)(K > 0 ? K : 0)
                : mm->tb ? et_spgemm_wsum(1, N, K, mm->B, mm->ldb, mm->post_mask_cols)
                         : et_spgemm_wsum(0, K, N, mm->B, mm->ldb, mm->post_mask_cols);
        return 1;
    }
    if (!mm->skip_zeros || !(mm->knnz_a || mm->knnz_b)) return 0;
    *kept = (uint64_t)M * (uint64_t)N;
    if (mm->knnz_a && mm->knnz_b) {
        uint64_t e = 0;
        for (int k = 0; k < K; k++) e += (uint64_t)mm->knnz_a[k] * (uint64_t)mm->knnz_b[k];
        *elem = e;
    } else if (mm->knnz_b) { /* sum_k nnz(op(A)[:,k]) * knnz_b[k] */
        *elem = mm->ta ? et_spgemm_wsum(1, K, M, mm->A, mm->lda, mm->knnz_b)
                       : et_spgemm_wsum(0, M, K, mm->A, mm->lda, mm->knnz_b);
    } else { /* sum_k knnz_a[k] * nnz(op(B)[k,:]) */
        *elem = mm->tb ? et_spgemm_wsum(0, N, K, mm->B, mm->ldb, mm->knnz_a)
                       : et_spgemm_wsum(1, K, N, mm->B, mm->ldb, mm->knnz_a);
    }
    return 1;
}

/* nnz / numel of an operand of `lines` lines of `len` from its line counts */
static double known_density(const int32_t *cnt, int lines, int len) {
    uint64_t nz = 0;
    for (int i = 0; i < lines; i++) nz += (uint64_t)cnt[i];
    return lines > 0 && len > 0 ? (double)nz / ((double)lines * (double)len) : 1.0;
}

/* The im2col operand of an implicit convolution, for et_sgemm_convb/convA. */
static et_gemm_convb convb_of(const et_conv_implicit *g) {
    const int64_t HW = (int64_t)g->H * g->W;
    return (et_gemm_convb){g->x + (int64_t)g->n0 * HW, (ptrdiff_t)g->N * HW, g->H, g->W, g->KH, g->KW};
}

/* Whether the prediction's counts give a speculated product's exact
 * executed count, so that it can run the dense kernel and then the mask:
 * 1, the fused path's sum_j kept(j) * nnz(op(B) column j), exact when op(A)
 * has no zero (conv FF: the weights); 2, the generic paths' kept count of
 * each row, with sum_i kept(i) * nnz(op(A) row i) exact when op(B) has no
 * zero (linear FF: B = the weights); 0, neither (the counting kernels).
 * Without skip_zeros any count of kept outputs does. The zero tests stop at
 * the first zero. */
static int spec_count(const et_matmul *mm, const et_spec_fused *fu) {
    if (fu->valid && (!mm->skip_zeros || !et_spgemm_any_zero(mm->A, mm->ta ? mm->K : mm->M, mm->ta ? mm->M : mm->K,
                                                             mm->lda)))
        return 1;
    if (fu->row_kept && (!mm->skip_zeros || !et_spgemm_any_zero(mm->B, mm->tb ? mm->N : mm->K,
                                                                mm->tb ? mm->K : mm->N, mm->ldb)))
        return 2;
    return 0;
}

/* An epilogue over all of C, rows split over the threads. */
static void apply_epi(const et_gemm_epi *epi, int M, int N, float *C, int ldc) {
#pragma omp parallel for schedule(static) if ((int64_t)M * N > 65536)
    for (int i = 0; i < M; i++) et_gemm_epi_apply(epi, i, 1, N, C + (int64_t)i * ldc, ldc);
}

et_status et_matmul_run(et_engine *eng, const et_matmul *mm) {
    if (mm->M < 0 || mm->N < 0 || mm->K < 0 || (unsigned)mm->stage >= ET_NSTAGES)
        return et_set_error(ET_ERR_INVALID, "matmul: bad shape %dx%dx%d", mm->M, mm->N, mm->K);
    if (mm->spec && mm->mask) return et_set_error(ET_ERR_INVALID, "matmul: give a mask or a speculation, not both");
    if (mm->spec && (mm->bias_rows || mm->relu) && mm->spec->ldmask != mm->ldc)
        return et_set_error(ET_ERR_INVALID, "matmul: an epilogue with a speculation needs the mask laid out as C");
    if (mm->mask && mm->ldmask < mm->N) return et_set_error(ET_ERR_INVALID, "matmul: mask stride %d < N %d", mm->ldmask, mm->N);
    uint64_t macs = (uint64_t)mm->M * (uint64_t)mm->N * (uint64_t)mm->K;
    const uint8_t *mask = mm->mask;
    int ldm = mm->ldmask;
    et_spec_fused fu = {0, 0, 0, NULL, NULL};
    if (mm->post_mask_cols && (mm->mask || mm->spec))
        return et_set_error(ET_ERR_INVALID, "matmul: post_mask_cols with a mask or a speculation");
    if (mm->spec) { /* predict the output mask first (src/sparsity/speculate.c) */
        void *ws = eng ? (mm->lane && eng->spec_ws1 ? eng->spec_ws1 : eng->spec_ws) : NULL;
        et_status st = et_spec_predict(mm, ws, eng ? eng->spec_ws_bytes : 0, &fu);
        if (st) return st;
        mask = mm->spec->mask, ldm = mm->spec->ldmask;
    }
    const int sparse = mm->skip_zeros || mask || mm->post_mask_cols;
    const int integer = mm->a_scale > 0 && mm->b_scale > 0 && mm->K <= 131072;
    if (mm->K > 0 && (!mm->A || !mm->B) && !(mm->conv && (mm->stage == ET_FF ? mm->A : mm->B)) &&
        !(integer && !sparse && !mm->spec && !(eng && eng->sink) && (mm->A || mm->a_codes) && (mm->B || mm->b_codes)))
        return et_set_error(ET_ERR_INVALID, "matmul: NULL operand (codes alone serve only a plain integer product)");
    /* with a speculation the epilogue ends with the predicted mask: C = mask ? epi(C) : 0 */
    et_gemm_epi epi = {mm->bias_rows, mm->relu, NULL, NULL, mm->out_amax};
    const int has_epi = epi.row_bias || epi.relu;
    if (mm->spec && has_epi) epi.mask = mask, epi.c0 = mm->C;
    int epi_done = 0, spec_counted = 0;
    work w = {macs, macs, macs, (uint64_t)mm->M * (uint64_t)mm->N, 0};
    uint64_t kept = w.outputs, kelem = 0, kkept = 0;
    const int known = sparse && known_count(mm, &kelem, &kkept);
    /* An implicit convolution (et_matmul.conv): plain FP32 only; EP and sparse
     * WG skip dY's zeros with the layer's counts (spconv.h); dense FF and WG
     * pack col's panels from x (et_sgemm_convb / convA); a speculated FF runs
     * et_sgemm_convb where the layer predicted the mask (et_spec.pre_kept),
     * applying it in the epilogue when the record has one, else leaving it to
     * the layer. No output mask of its own: EP's is the kernel's,
     * post_mask_cols only counts it. */
    if (mm->conv) {
        const et_conv_implicit *g = mm->conv;
        const int64_t ck = (int64_t)g->C * g->KH * g->KW, P = (int64_t)g->nb * g->Ho * g->Wo;
        const int shape = mm->stage == ET_FF   ? mm->M == g->Cout && mm->K == ck && mm->N == P && !mm->ta && !mm->tb &&
                                                   !mm->post_mask_cols
                          : mm->stage == ET_WG ? mm->M == ck && mm->N == g->Cout && mm->K == P && !mm->ta && mm->tb
                                               : mm->M == ck && mm->N == P && mm->K == g->Cout && mm->ta && !mm->tb;
        if (!shape || !g->x || g->n0 < 0 || g->nb < 1 || g->n0 + g->nb > g->N)
            return et_set_error(ET_ERR_INVALID, "matmul: the implicit convolution's geometry does not match the product");
        const int ok = !integer && et_matmul_plain(eng, mm->layer) && !mm->mask &&
                       (mm->stage == ET_EP   ? mm->skip_zeros && known
                        : mm->stage == ET_WG ? !mm->skip_zeros || known
                                             : (!mm->spec && (!mm->skip_zeros || known)) ||
                                                   (mm->spec && mm->spec->pre_kept && fu.valid && !fu.dense));
        if (!ok)
            return et_set_error(ET_ERR_INVALID, "matmul: an implicit convolution is only a plain FP32 conv product: "
                                                "EP/WG skipping zeros with the layer's counts, dense FF/WG, or a "
                                                "speculated FF whose mask the layer predicted");
    }
    int in_range = eng && mm->layer >= 0 && mm->layer < eng->nlayers;
    const et_format *mul = in_range && eng->mul ? eng->mul[mm->layer] : NULL;
    const et_format *acc = in_range && eng->acc ? eng->acc[mm->layer] : NULL;
    if (acc && acc->kind != ET_FMT_FLOAT) acc = NULL; /* acc=int32 without integer operands: fp32 sums */
    if (integer) {
        /* Exact integer path: int8 codes of both operands, int32 sums (no
         * overflow: K * 127^2 < 2^31), one rounding. It runs dense; with
         * sparsity the mask is applied and the executed MACs counted after. */
        et_status st = et_igemm_f32q(mm->ta, mm->tb, mm->M, mm->N, mm->K, mm->A, mm->a_codes, mm->lda, mm->a_scale,
                                     mm->B, mm->b_codes, mm->ldb, mm->b_scale, mm->beta, mm->C, mm->ldc);
        if (st) return st;
        if (eng) __atomic_fetch_add(&eng->int_calls, 1, __ATOMIC_RELAXED);
        if (known)
            w.executed = kelem, kept = kkept;
        else if (sparse)
            w.executed = mask_and_count(mm, mask, ldm, &kept);
    } else if (mul || acc) {
        /* Emulated accumulation. Each call of a layer and stage gets its own
         * random-bit tensor id: (layer, stage, how many such calls came before).
         * With sparsity it runs dense, then the mask is applied: the CPU did
         * every product, a processor only the element-level executed ones. */
        uint64_t nth = eng->per_layer ? eng->per_layer[mm->layer].calls[mm->stage] : eng->total.calls[mm->stage];
        et_qkey key = {eng->seed, (((uint64_t)mm->layer * ET_NSTAGES + (uint64_t)mm->stage) << 40) ^ nth,
                       (uint64_t)eng->step};
        et_status st = et_qgemm(mm->ta, mm->tb, mm->M, mm->N, mm->K, mm->A, mm->lda, mm->B, mm->ldb, mm->beta,
                                mm->C, mm->ldc, mul, acc, &key);
        if (st) return st;
        if (known)
            w.executed = kelem, kept = kkept;
        else if (sparse)
            w.executed = mask_and_count(mm, mask, ldm, &kept);
    } else if (mm->conv && mm->stage == ET_FF) {
        /* col's panels packed from x (et_sgemm_convb): et_sgemm's bits. Dense
         * or skipping zeros (counted from the layer's counts, as the
         * known-count path below) with the epilogue; speculated, counted as
         * the prediction counted, with the epilogue and then the predicted
         * mask when the record has an epilogue, else dense (the layer applies
         * the mask) */
        const et_gemm_convb cb = convb_of(mm->conv);
        et_sgemm_convb(mm->M, mm->N, mm->K, mm->A, mm->lda, &cb, mm->beta, mm->C, mm->ldc, has_epi ? &epi : NULL);
        epi_done = 1;
        if (mm->spec)
            kept = fu.kept, w.executed = mm->skip_zeros ? fu.elem_dense_a : fu.kept * (uint64_t)mm->K;
        else if (known)
            w.executed = kelem, kept = kkept;
    } else if (mm->conv && !sparse) { /* dense WG, col's panels packed from x (et_sgemm_convA) */
        const et_gemm_convb cb = convb_of(mm->conv);
        et_sgemm_convA(mm->M, mm->N, mm->K, &cb, mm->B, mm->ldb, mm->beta, mm->C, mm->ldc);
    } else if (mm->conv) {
        /* the column matrix never formed (spconv.h): EP writes dx, col2im
         * included, WG the gradient in the kernel's layout; the caller chose
         * it (the kernel applies and pays) and gives the work space */
        const int ran = mm->stage == ET_EP ? et_spconv_ep(mm->conv, mm->B, mm->ldb, &w.cpu)
                                           : et_spconv_wg(mm->conv, mm->B, mm->ldb, mm->beta, mm->C, &w.cpu);
        if (!ran) return et_set_error(ET_ERR_INVALID, "matmul: the implicit convolution does not apply here");
        w.executed = kelem, kept = kkept;
    } else if (known && (mm->post_mask_cols || (double)kelem >= ET_KNOWN_SPARSE_MAX * (double)macs)) {
        /* counted from what the caller knows; a kernel that skips B's zeros
         * where it applies and B is sparse enough to pay: the column-sparse
         * one for op(B) = B (conv EP: dcol = Wᵀ·dY; spcols_avx512.c) or the
         * row-listing one for op(B) = Bᵀ (conv WG: dWᵀ = col·dYᵀ, col given
         * as it is or transposed; spwg.h), else the dense one. A mask, if
         * any, is the caller's to apply. */
        int done = 0;
        if (mm->skip_zeros && !mask) {
            if (!mm->tb)
                done = et_sgemm_cols_known(mm->ta, mm->tb, mm->M, mm->N, mm->K, mm->A, mm->lda, mm->B, mm->ldb,
                                           mm->beta, mm->C, mm->ldc, &w.cpu);
            else if (!mm->post_mask_cols && (!mm->knnz_b || et_spwg_pays(mm->N, known_density(mm->knnz_b, mm->K, mm->N))))
                /* B's density known from the caller's counts: dense B goes
                 * straight to et_sgemm, without the kernel's read of B */
                done = et_sgemm_spwg(mm->ta, mm->M, mm->N, mm->K, mm->A, mm->lda, mm->B, mm->ldb, mm->beta, mm->C,
                                     mm->ldc, &w.cpu);
        }
        if (!done)
            et_sgemm(mm->ta, mm->tb, mm->M, mm->N, mm->K, 1.0f, mm->A, mm->lda, mm->B, mm->ldb, mm->beta, mm->C,
                     mm->ldc);
        w.executed = kelem, kept = kkept;
    } else if (sparse && (spec_counted = spec_count(mm, &fu)) != 0) {
        /* the prediction counted the product: the dense kernel, then the
         * mask; on a checked call the check's dense product is this product
         * (same et_sgemm, beta 0) */
        if (fu.dense && mm->beta == 0.0f) {
#pragma omp parallel for schedule(static) if ((int64_t)mm->M * mm->N > 65536)
            for (int i = 0; i < mm->M; i++) {
                const uint8_t *r = mask + (int64_t)i * ldm;
                const float *d = fu.dense + (int64_t)i * mm->N;
                float *c = mm->C + (int64_t)i * mm->ldc;
                for (int j = 0; j < mm->N; j++) c[j] = r[j] ? d[j] : 0.0f;
            }
        } else if (has_epi) { /* the epilogue applies the mask as each tile is stored */
            et_sgemm_epi(mm->ta, mm->tb, mm->M, mm->N, mm->K, 1.0f, mm->A, mm->lda, mm->B, mm->ldb, mm->beta, mm->C,
                         mm->ldc, &epi);
            epi_done = 1;
        } else {
            et_sgemm(mm->ta, mm->tb, mm->M, mm->N, mm->K, 1.0f, mm->A, mm->lda, mm->B, mm->ldb, mm->beta, mm->C,
                     mm->ldc);
            /* a mask the caller predicted is the caller's to apply (et_spec.pre_kept),
             * unless a processor-model sink reads C below */
            if (!mm->spec->pre_kept || (eng && eng->sink)) et_spgemm_apply_mask(mm->M, mm->N, mm->C, mm->ldc, mask, ldm);
        }
        kept = fu.kept;
        w.executed = !mm->skip_zeros ? fu.kept * (uint64_t)mm->K
                     : spec_counted == 1
                         ? fu.elem_dense_a
                         : et_spgemm_wsum(!mm->ta, mm->ta ? mm->K : mm->M, mm->ta ? mm->M : mm->K, mm->A, mm->lda,
                                          fu.row_kept);
    } else if (sparse) {
        /* per call: the skipping kernel where its micro-tiles can skip enough,
         * else the dense one and the mask after it; counted exactly either way */
        et_spgemm_stats ss = {0, 0};
        et_spgemm_count cnt;
        et_sgemm_sparse_auto(mm->ta, mm->tb, mm->M, mm->N, mm->K, mm->A, mm->lda, mm->B, mm->ldb, mm->beta, mm->C,
                             mm->ldc, mm->skip_zeros, mask, ldm, &ss, &cnt);
        w.executed = ss.macs_elem, w.cpu = ss.macs_cpu, kept = cnt.kept;
    } else {
        et_sgemm_epi(mm->ta, mm->tb, mm->M, mm->N, mm->K, 1.0f, mm->A, mm->lda, mm->B, mm->ldb, mm->beta, mm->C,
                     mm->ldc, has_epi ? &epi : NULL);
        epi_done = 1;
    }
    if (!epi_done && has_epi) /* the other paths: a pass after the product (their masked outputs are 0 already) */
        apply_epi(&epi, mm->M, mm->N, mm->C, mm->ldc);
    if (mask || mm->post_mask_cols) w.masked = w.outputs - kept;
    if (eng && eng->sink) {
        et_status st = eng->sink(eng->sink_ctx, mm, w.executed);
        if (st) return st;
    }
    if (eng) {
        count(&eng->total, mm->stage, &w);
        if (eng->per_layer && in_range) count(&eng->per_layer[mm->layer], mm->stage, &w);
    }
    return ET_OK;
}

void et_engine_set_sink(et_engine *eng, et_matmul_sink sink, void *ctx) {
    eng->sink = sink;
    eng->sink_ctx = ctx;
}
