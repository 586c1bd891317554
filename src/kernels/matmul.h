/* The matmul path's state. Every FF/EP/WG product of every layer goes through
 * et_matmul_run(), which chooses the kernel, counts the work and (in later
 * stages of the project) applies precision policies, sparsity and tracing. */
#ifndef ET_MATMUL_H
#define ET_MATMUL_H
#include "edgetrain.h"

struct et_engine {
    et_counters total;
    et_counters *per_layer; /* nlayers entries, may be NULL */
    int nlayers;
    /* Emulated accumulation: per layer, the multiplier and accumulator
     * formats (NULL arrays or entries: exact fp32 products, fp32 sums), and
     * the key of their stochastic rounding. */
    const et_format **mul, **acc;
    uint64_t seed;
    int64_t step;
    uint64_t int_calls; /* products that took the exact integer path */
    /* Observer of every executed product (processor model, trace). */
    et_matmul_sink sink;
    void *sink_ctx;
    /* Speculation workspaces (planned by the model; see src/sparsity): lane
     * 0's, and lane 1's (et_matmul.lane; NULL: one, the lanes take turns),
     * spec_ws_bytes each. */
    void *spec_ws, *spec_ws1;
    size_t spec_ws_bytes;
};

void et_engine_reset(et_engine *eng);

/* Whether a layer's products are plain FP32 products with nothing observing
 * them (no multiplier or accumulator format, no sink): then calls of that
 * layer may run from two threads at once (they share only the counters,
 * which are added atomically). */
int et_matmul_plain(const et_engine *eng, int layer);
/* Whether a layer's products round to a multiplier or accumulator format
 * (emulated accumulation; src/kernels/qgemm.c). */
int et_matmul_emulated(const et_engine *eng, int layer);
#endif
