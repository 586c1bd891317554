/* Zero-skipping and output-masked FP32 GEMM: the kernel behind the matmul
 * path's run-time sparsity (sparsity issue, item 2; docs/sparsity.md).
 *
 *   C[i,j] = sum_k op(A)[i,k] * op(B)[k,j]  (+ beta * C[i,j])   where mask[i,j] != 0
 *   C[i,j] = 0                                                 where mask[i,j] == 0
 * row-major like et_sgemm (op(A) is M x K, op(B) is K x N); mask == NULL means
 * every element. With skip_zeros, products with a zero operand are not
 * computed; with finite operands that changes nothing, so the result equals
 * et_sgemm's bit for bit (same blocking over K, same order, same FMA), masked.
 *
 * Statistics (always exact, whatever the kernel skips on the CPU):
 *   macs_elem  number of (i,j,k) with mask[i,j] != 0 and, with skip_zeros,
 *              op(A)[i,k] != 0 and op(B)[k,j] != 0: the multiply-adds a
 *              processor that skips at element granularity executes;
 *   macs_cpu   multiply-adds the CPU kernel really ran (it skips whole
 *              micro-tiles and k steps, so macs_elem <= macs_cpu <= M*N*K).
 */
#ifndef ET_SPGEMM_H
#define ET_SPGEMM_H
#include "edgetrain.h"

#include <stdint.h>

typedef struct et_spgemm_stats {
    uint64_t macs_elem;
    uint64_t macs_cpu;
} et_spgemm_stats;

void et_sgemm_sparse(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                     float beta, float *C, int ldc, int skip_zeros, const uint8_t *mask, int ldmask,
                     et_spgemm_stats *st);

/* Only the statistics (macs_elem exactly; macs_cpu = 0): the counting pass
 * alone, for products that ran dense (emulated or integer arithmetic) and the
 * bench. */
void et_sgemm_sparse_count(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                           int skip_zeros, const uint8_t *mask, int ldmask, et_spgemm_stats *st);

/* The plain reference: et_sgemm, then the mask, and the statistics counted
 * element by element (slow; for tests). */
void et_sgemm_sparse_ref(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                         float beta, float *C, int ldc, int skip_zeros, const uint8_t *mask, int ldmask,
                         et_spgemm_stats *st);
#endif
