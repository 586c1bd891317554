/* AVX-512 row kernels of pool.c's 2x2 stride-2 max pooling: one pair of input
 * rows (r0, r1) -> Wo outputs, the same picks and values as the scalar loops.
 * Internal to src/nn. */
#ifndef ET_POOL_ROWS_H
#define ET_POOL_ROWS_H

#if defined(__x86_64__) || defined(_M_X64)
/* returns max(amax, |y[x]|) over the row (NaN never wins) */
float et_maxpool2_ff_row_avx512(const float *r0, const float *r1, int Wo, float *y, float amax);
/* Writes all 2*Wo entries of both dx rows: dy to each window's pick, 0 to the
 * rest; with relu, also 0 where the picked value is not > 0 (the ReLU whose
 * output this pool reads, fused: see docs/architecture.md). */
void et_maxpool2_ep_row_avx512(const float *r0, const float *r1, int Wo, const float *dy, float *d0,
                               float *d1, int relu);
#endif
#endif
