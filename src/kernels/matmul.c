/* The one matmul call: see docs/architecture.md. */
#include "kernels/matmul.h"

#include "kernels/igemm.h"
#include "kernels/qgemm.h"

#include <string.h>

const char *et_stage_name(et_stage s) {
    static const char *const names[ET_NSTAGES] = {"ff", "ep", "wg"};
    return (unsigned)s < ET_NSTAGES ? names[s] : "?";
}

void et_engine_reset(et_engine *eng) {
    memset(&eng->total, 0, sizeof eng->total);
    eng->int_calls = 0;
    if (eng->per_layer) memset(eng->per_layer, 0, sizeof(et_counters) * (size_t)eng->nlayers);
}

static void count(et_counters *c, et_stage s, uint64_t dense, uint64_t executed) {
    c->macs_dense[s] += dense;
    c->macs_executed[s] += executed;
    c->calls[s]++;
}

et_status et_matmul_run(et_engine *eng, const et_matmul *mm) {
    if (mm->M < 0 || mm->N < 0 || mm->K < 0 || (unsigned)mm->stage >= ET_NSTAGES)
        return et_set_error(ET_ERR_INVALID, "matmul: bad shape %dx%dx%d", mm->M, mm->N, mm->K);
    uint64_t macs = (uint64_t)mm->M * (uint64_t)mm->N * (uint64_t)mm->K;
    int in_range = eng && mm->layer >= 0 && mm->layer < eng->nlayers;
    const et_format *mul = in_range && eng->mul ? eng->mul[mm->layer] : NULL;
    const et_format *acc = in_range && eng->acc ? eng->acc[mm->layer] : NULL;
    if (acc && acc->kind != ET_FMT_FLOAT) acc = NULL; /* acc=int32 without integer operands: fp32 sums */
    if (mm->a_scale > 0 && mm->b_scale > 0 && !mm->mask && mm->K <= 131072) {
        /* Exact integer path: int8 codes of both operands, int32 sums (no
         * overflow: K * 127^2 < 2^31), one rounding. */
        et_status st = et_igemm_f32(mm->ta, mm->tb, mm->M, mm->N, mm->K, mm->A, mm->lda, mm->a_scale, mm->B, mm->ldb,
                                    mm->b_scale, mm->beta, mm->C, mm->ldc);
        if (st) return st;
        if (eng) eng->int_calls++;
    } else if (mul || acc) {
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
    if (eng && eng->sink) {
        et_status st = eng->sink(eng->sink_ctx, mm, macs);
        if (st) return st;
    }
    if (eng) {
        count(&eng->total, mm->stage, macs, macs);
        if (eng->per_layer && mm->layer >= 0 && mm->layer < eng->nlayers)
            count(&eng->per_layer[mm->layer], mm->stage, macs, macs);
    }
    return ET_OK;
}

void et_engine_set_sink(et_engine *eng, et_matmul_sink sink, void *ctx) {
    eng->sink = sink;
    eng->sink_ctx = ctx;
}
