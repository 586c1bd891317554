/* The one matmul call: see docs/architecture.md and docs/sparsity.md. */
#include "kernels/matmul.h"

#include "kernels/qgemm.h"
#include "kernels/spgemm.h"
#include "sparsity/sparsity.h"

#include <string.h>

const char *et_stage_name(et_stage s) {
    static const char *const names[ET_NSTAGES] = {"ff", "ep", "wg"};
    return (unsigned)s < ET_NSTAGES ? names[s] : "?";
}

void et_engine_reset(et_engine *eng) {
    memset(&eng->total, 0, sizeof eng->total);
    if (eng->per_layer) memset(eng->per_layer, 0, sizeof(et_counters) * (size_t)eng->nlayers);
}

typedef struct work {
    uint64_t dense, executed, cpu, outputs, masked;
} work;

static void count(et_counters *c, et_stage s, const work *w) {
    c->macs_dense[s] += w->dense;
    c->macs_executed[s] += w->executed;
    c->macs_cpu[s] += w->cpu;
    c->outputs[s] += w->outputs;
    c->outputs_masked[s] += w->masked;
    c->calls[s]++;
}

static float at(const float *X, int t, int ld, int r, int c) {
    return t ? X[(int64_t)c * ld + r] : X[(int64_t)r * ld + c];
}

/* After a dense emulated product: masked-out outputs become 0, and the
 * multiply-adds a processor skipping at element granularity executes are
 * counted element by element (the emulated path is slow anyway). */
static uint64_t mask_and_count(const et_matmul *mm, const uint8_t *mask, int ldm) {
    uint64_t elem = 0;
#pragma omp parallel for schedule(static) reduction(+ : elem)
    for (int i = 0; i < mm->M; i++)
        for (int j = 0; j < mm->N; j++) {
            if (mask && !mask[(int64_t)i * ldm + j]) {
                mm->C[(int64_t)i * mm->ldc + j] = 0.0f;
                continue;
            }
            if (!mm->skip_zeros) {
                elem += (uint64_t)mm->K;
                continue;
            }
            for (int k = 0; k < mm->K; k++)
                elem += at(mm->A, mm->ta, mm->lda, i, k) != 0.0f && at(mm->B, mm->tb, mm->ldb, k, j) != 0.0f;
        }
    return elem;
}

static uint64_t masked_out(const uint8_t *mask, int ldm, int M, int N) {
    uint64_t z = 0;
    for (int i = 0; i < M; i++) {
        const uint8_t *r = mask + (int64_t)i * ldm;
        for (int j = 0; j < N; j++) z += r[j] == 0;
    }
    return z;
}

et_status et_matmul_run(et_engine *eng, const et_matmul *mm) {
    if (mm->M < 0 || mm->N < 0 || mm->K < 0 || (unsigned)mm->stage >= ET_NSTAGES)
        return et_set_error(ET_ERR_INVALID, "matmul: bad shape %dx%dx%d", mm->M, mm->N, mm->K);
    if (mm->spec && mm->mask) return et_set_error(ET_ERR_INVALID, "matmul: give a mask or a speculation, not both");
    if (mm->mask && mm->ldmask < mm->N) return et_set_error(ET_ERR_INVALID, "matmul: mask stride %d < N %d", mm->ldmask, mm->N);
    uint64_t macs = (uint64_t)mm->M * (uint64_t)mm->N * (uint64_t)mm->K;
    const uint8_t *mask = mm->mask;
    int ldm = mm->ldmask;
    if (mm->spec) { /* predict the output mask first (src/sparsity/speculate.c) */
        et_status st = et_spec_predict(mm, eng ? eng->spec_ws : NULL, eng ? eng->spec_ws_bytes : 0);
        if (st) return st;
        mask = mm->spec->mask, ldm = mm->spec->ldmask;
    }
    const int sparse = mm->skip_zeros || mask;
    work w = {macs, macs, macs, (uint64_t)mm->M * (uint64_t)mm->N, 0};
    int in_range = eng && mm->layer >= 0 && mm->layer < eng->nlayers;
    const et_format *mul = in_range && eng->mul ? eng->mul[mm->layer] : NULL;
    const et_format *acc = in_range && eng->acc ? eng->acc[mm->layer] : NULL;
    if (mul || acc) {
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
        if (sparse) w.executed = mask_and_count(mm, mask, ldm);
    } else if (sparse) {
        et_spgemm_stats ss = {0, 0};
        et_sgemm_sparse(mm->ta, mm->tb, mm->M, mm->N, mm->K, mm->A, mm->lda, mm->B, mm->ldb, mm->beta, mm->C,
                        mm->ldc, mm->skip_zeros, mask, ldm, &ss);
        w.executed = ss.macs_elem, w.cpu = ss.macs_cpu;
    } else {
        et_sgemm(mm->ta, mm->tb, mm->M, mm->N, mm->K, 1.0f, mm->A, mm->lda, mm->B, mm->ldb, mm->beta, mm->C,
                 mm->ldc);
    }
    if (mask) w.masked = masked_out(mask, ldm, mm->M, mm->N);
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
