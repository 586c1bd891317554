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

/* The fast counting pass (spcount.c): the same exact macs_elem from closed
 * forms over the operands' non-zero patterns, O(M*K + K*N + M*N) instead of a
 * walk through the GEMM driver:
 *   no skip_zeros:      K * (mask count)
 *   no mask:            sum_k nnz(op(A)[:,k]) * nnz(op(B)[k,:])
 *   mask, op(A) dense:  sum_j nnz(op(B)[:,j]) * (mask count of column j)
 *   mask, op(B) dense:  sum_i nnz(op(A)[i,:]) * (mask count of row i)
 *   mask, both sparse:  the op(A)-dense form minus, for each zero op(A)[i,k],
 *                       popcount(mask row i & non-zero bits of op(B) row k) (or
 *                       those popcounts over the non-zeros directly, whichever
 *                       side of op(A) is smaller; VPOPCNTQ where the CPU has it).
 * Also gives the mask count and `live`, an estimate of the fraction of the
 * dense work et_sgemm_sparse's micro-tiles cannot skip: (fraction of MR x 16
 * mask sub-tiles with a kept element) x (fraction of (MR-row panel, k) of
 * op(A) with a non-zero) x (fraction of (16-column group, k) of op(B) with a
 * non-zero), the last two with skip_zeros only. */
typedef struct et_spgemm_count {
    uint64_t macs_elem; /* exact, as et_spgemm_stats */
    uint64_t kept;      /* outputs the mask keeps (M*N without a mask) */
    double live;        /* estimated unskippable fraction of the dense work */
} et_spgemm_count;

void et_spgemm_count_fast(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
                          int ldb, int skip_zeros, const uint8_t *mask, int ldmask, et_spgemm_count *out);

/* The per-call choice the matmul path makes: counts first (et_spgemm_count_fast),
 * then runs et_sgemm_sparse only where skipping pays (live <= ET_SPGEMM_LIVE_MAX,
 * measured by bench/bench_spgemm.c), else et_sgemm and the mask applied after it
 * (macs_cpu = M*N*K). Results are et_sgemm's bits, masked, either way. */
#define ET_SPGEMM_LIVE_MAX 0.3
/* On AVX-512, a product with op(A) = A^T, op(B) = B, skip_zeros and K <= 384
 * (conv EP: dcol = W^T dY) with K >= ET_SPCOLS_KMIN whose B is at most this
 * dense (sampled) runs the column-sparse kernel instead (spcols_avx512.c:
 * element-level skipping of B's zeros, same bits). Below K = 64 its fixed
 * cost per output element (about 1.5 cycles) exceeds what it saves: on VGG8
 * skip (Intel Xeon, 2 threads) conv EP with K = 128 ran 7.0 -> 3.6 ms per
 * step, K = 64 6.5 -> 5.3 ms, K = 32 7.2 -> 7.6 ms. */
#define ET_SPCOLS_DENSITY_MAX 0.25
#define ET_SPCOLS_KMIN 64
/* The column-sparse kernel alone, for a product whose executed MACs the
 * caller already knows (et_matmul's known counts): runs it where it applies
 * and pays (the rules above, skip_zeros, no mask) and returns 1 with the MACs
 * it ran in *macs_cpu; returns 0 (nothing done) otherwise. Same bits as
 * et_sgemm. */
int et_sgemm_cols_known(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                        float beta, float *C, int ldc, uint64_t *macs_cpu);
void et_sgemm_sparse_auto(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                          float beta, float *C, int ldc, int skip_zeros, const uint8_t *mask, int ldmask,
                          et_spgemm_stats *st, et_spgemm_count *cnt);

/* Weighted non-zero counts of a stored rows x cols matrix, one read:
 * along_rows: sum_r w[r] * nnz(row r); else sum_c w[c] * nnz(column c).
 * The matmul path forms a product's exact count from them when the caller
 * knows one side's counts (et_matmul.knnz_a / knnz_b / post_mask_cols). */
uint64_t et_spgemm_wsum(int along_rows, int rows, int cols, const float *X, int ld, const int32_t *w);
/* cnt[r] = nnz(row r) (along_rows, rows entries) or cnt[c] = nnz(column c)
 * (cols entries); serial (for tests and small operands). */
void et_spgemm_linecount(int along_rows, int rows, int cols, const float *X, int ld, int32_t *cnt);

/* cnt[t] += (x[t] != 0) for t < n (vectorised where the ISA has it). */
void et_spgemm_nzcount_add(const float *x, int n, int32_t *cnt);

/* C[i,j] = 0 where mask[i,j] == 0 (threads over rows). */
void et_spgemm_apply_mask(int M, int N, float *C, int ldc, const uint8_t *mask, int ldmask);
/* Whether a stored rows x cols matrix (row stride ld) holds a zero. */
int et_spgemm_any_zero(const float *X, int rows, int cols, int ld);

/* The plain reference: et_sgemm, then the mask, and the statistics counted
 * element by element (slow; for tests). */
void et_sgemm_sparse_ref(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                         float beta, float *C, int ldc, int skip_zeros, const uint8_t *mask, int ldmask,
                         et_spgemm_stats *st);
#endif
