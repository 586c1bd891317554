/* The one matmul call: see docs/architecture.md. */
#include "kernels/matmul.h"

#include "kernels/qgemm.h"

#include <string.h>

const char *et_stage_name(et_stage s) {
    static const char *const names[ET_NSTAGES] = {"ff", "ep", "wg"};
    return (unsigned)s < ET_NSTAGES ? names[s] : "?";
}

void et_engine_reset(et_engine *eng) {
    memset(&eng->total, 0, sizeof eng->total);
    if (eng->per_layer) memset(eng->per_layer, 0, sizeof(et_counters) * (size_t)eng->nlayers);
}

static void count(et_counters *c, et_stage s, uint64_t dense, uint64_t executed) {
    c->macs_dense[s] += dense;
    c->macs_executed[s] += executed;
    c->macs_cpu[s] += dense; /* the dense kernels run every product */
    c->calls[s]++;
}

/* ---- minimal sparsity routing (branch h-prune, so that pruning can be tested
 * and measured; the sparsity branch's engine with the fast kernels replaces
 * this block). The dense kernel runs, masked outputs are then set to 0, and
 * executed MACs are counted exactly as et_sgemm_sparse's macs_elem:
 *   skip_zeros, no mask:  sum_k nnz(column k of op(A)) * nnz(row k of op(B));
 *   mask, no skip_zeros:  K * nnz(mask);
 *   both:                 element by element (slow; pruning never asks it). */
static float op_at(const float *X, int t, int ld, int r, int c) {
    return t ? X[(int64_t)c * ld + r] : X[(int64_t)r * ld + c];
}

static uint64_t sparse_macs(const et_matmul *mm) {
    uint64_t n = 0;
    if (!mm->mask) {
        for (int k = 0; k < mm->K; k++) {
            uint64_t a = 0, b = 0;
            for (int i = 0; i < mm->M; i++) a += op_at(mm->A, mm->ta, mm->lda, i, k) != 0.0f;
            for (int j = 0; a && j < mm->N; j++) b += op_at(mm->B, mm->tb, mm->ldb, k, j) != 0.0f;
            n += a * b;
        }
        return n;
    }
    for (int i = 0; i < mm->M; i++)
        for (int j = 0; j < mm->N; j++) {
            if (!mm->mask[(int64_t)i * mm->ldmask + j]) continue;
            if (!mm->skip_zeros) {
                n += (uint64_t)mm->K;
                continue;
            }
            for (int k = 0; k < mm->K; k++)
                n += op_at(mm->A, mm->ta, mm->lda, i, k) != 0.0f && op_at(mm->B, mm->tb, mm->ldb, k, j) != 0.0f;
        }
    return n;
}

static void apply_out_mask(const et_matmul *mm) {
    if (!mm->mask) return;
    for (int i = 0; i < mm->M; i++)
        for (int j = 0; j < mm->N; j++)
            if (!mm->mask[(int64_t)i * mm->ldmask + j]) mm->C[(int64_t)i * mm->ldc + j] = 0.0f;
}
/* ---- end of the minimal sparsity routing */

et_status et_matmul_run(et_engine *eng, const et_matmul *mm) {
    if (mm->M < 0 || mm->N < 0 || mm->K < 0 || (unsigned)mm->stage >= ET_NSTAGES)
        return et_set_error(ET_ERR_INVALID, "matmul: bad shape %dx%dx%d", mm->M, mm->N, mm->K);
    uint64_t macs = (uint64_t)mm->M * (uint64_t)mm->N * (uint64_t)mm->K;
    const int sparse = mm->skip_zeros || mm->mask; /* minimal routing, see above */
    uint64_t executed = sparse ? sparse_macs(mm) : macs;
    int in_range = eng && mm->layer >= 0 && mm->layer < eng->nlayers;
    const et_format *mul = in_range && eng->mul ? eng->mul[mm->layer] : NULL;
    const et_format *acc = in_range && eng->acc ? eng->acc[mm->layer] : NULL;
    if (mul || acc) {
        /* Emulated accumulation. Each call of a layer and stage gets its own
         * random-bit tensor id: (layer, stage, how many such calls came before). */
        uint64_t nth = eng->per_layer ? eng->per_layer[mm->layer].calls[mm->stage] : eng->total.calls[mm->stage];
        et_qkey key = {eng->seed, (((uint64_t)mm->layer * ET_NSTAGES + (uint64_t)mm->stage) << 40) ^ nth,
                       (uint64_t)eng->step};
        et_status st = et_qgemm(mm->ta, mm->tb, mm->M, mm->N, mm->K, mm->A, mm->lda, mm->B, mm->ldb, mm->beta,
                                mm->C, mm->ldc, mul, acc, &key);
        if (st) return st;
    } else {
        et_sgemm(mm->ta, mm->tb, mm->M, mm->N, mm->K, 1.0f, mm->A, mm->lda, mm->B, mm->ldb, mm->beta, mm->C,
                 mm->ldc);
    }
    if (sparse) apply_out_mask(mm);
    if (eng && eng->sink) {
        et_status st = eng->sink(eng->sink_ctx, mm, executed);
        if (st) return st;
    }
    if (eng) {
        count(&eng->total, mm->stage, macs, executed);
        if (eng->per_layer && mm->layer >= 0 && mm->layer < eng->nlayers)
            count(&eng->per_layer[mm->layer], mm->stage, macs, executed);
    }
    return ET_OK;
}

void et_engine_set_sink(et_engine *eng, et_matmul_sink sink, void *ctx) {
    eng->sink = sink;
    eng->sink_ctx = ctx;
}
