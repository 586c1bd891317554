/* INT8 GEMM (number-formats issue, item 5): exact integer products of int8
 * codes summed in int32, row-major like et_sgemm (op(A) is M x K, op(B) K x N):
 *   C[i,j] = sum_k op(A)[i,k] * op(B)[k,j]     (C is overwritten)
 * Every path gives the same int32 results (the sum is exact, so order does not
 * matter): AVX-512 VNNI (vpdpbusd on A + 128, minus 128 * column sums of B),
 * AVX2 (vpmaddwd on int16) and a portable scalar loop, chosen at run time;
 * threads over tiles of C. Exact as long as |sum| < 2^31, guaranteed for
 * K <= 131072 (the arithmetic wraps modulo 2^32, like the scalar reference). */
#ifndef ET_IGEMM_H
#define ET_IGEMM_H
#include "edgetrain.h"

#include <stdint.h>

void et_igemm_s8(int ta, int tb, int M, int N, int K, const int8_t *A, int lda, const int8_t *B, int ldb,
                 int32_t *C, int ldc);

/* The float wrapper for intN operands (N <= 8) with per-tensor scales:
 * codes q = round-to-nearest-even(x / scale) clamped to [-127, 127] (the
 * symmetric int8 range of an intN policy; a scale of 0 gives all-zero codes),
 * then C[i,j] = (scale_a * scale_b) * (float)sum_k qa*qb, the product of the
 * scales in fp32 and one fp32 rounding of the exact int32 sum.
 * Returns ET_ERR_INVALID for bad arguments, ET_ERR_NOMEM if the code buffers
 * cannot be allocated. */
et_status et_igemm_f32(int ta, int tb, int M, int N, int K, const float *A, int lda, float scale_a, const float *B,
                       int ldb, float scale_b, float *C, int ldc);

/* Paths, for tests and benchmarks: isa is clamped to what the CPU runs
 * (AVX-512 needs AVX512-VNNI too). */
void et_igemm_s8_isa(et_isa isa, int ta, int tb, int M, int N, int K, const int8_t *A, int lda, const int8_t *B,
                     int ldb, int32_t *C, int ldc);
et_isa et_igemm_isa(void);

/* ---- internal (igemm.c <-> igemm_avx512.c / igemm_avx2.c) ----
 * Panels of 32 columns of C. Packed in igemm.c:
 * VNNI:  Ap row i at Ap + i*Kq (Kq = ceil(K/4)): uint32 of the 4 bytes a[4q..4q+3] + 128
 *        (128 past K); Bp panel: for each q, 32 columns x 4 int8 (0 past K and past N);
 *        colsum128[c] = 128 * sum_k b[k][c].
 * AVX2:  Ap row i at Ap + i*Kp (Kp = ceil(K/2)): uint32 = two int16 a[2p], a[2p+1];
 *        Bp panel: for each p, 32 columns x 2 int16.
 * The blocks compute rows [i0, i1) and the first nc (<= 32) columns of the panel. */
void et_igemm_avx512_block(const uint32_t *Ap, int Kq, const int8_t *Bp, const int32_t *colsum128, int i0, int i1,
                           int nc, int32_t *C, int ldc);
void et_igemm_avx2_block(const uint32_t *Ap, int Kp, const int16_t *Bp, int i0, int i1, int nc, int32_t *C, int ldc);
#endif
