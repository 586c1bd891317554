/* The dot-product path of et_sgemm (src/kernels/gemm_dot*.c): C = A·Bᵀ with
 * both operands read along K in place (ta == 0, tb == 1), for products whose
 * output is small and whose K is long — a convolution's weight gradient
 * dW[Cout, Cin·kh·kw] = dY · colᵀ over every position of the batch. The
 * packed path pads such an output to whole 8x48 tiles (a 8x9 gradient would
 * waste 81% of its multiply-adds) and cannot split K among threads.
 *
 * Summation order of one element C[i][j] (the same on every ISA, at any
 * thread count, for any blocking):
 *   K is cut into chunks of ET_DOT_KCH (the last one shorter). In each chunk,
 *   16 lanes l = 0..15 start at +0 and take acc[l] = fma(A[i][k], B[j][k],
 *   acc[l]) for k = chunk start + 16t + l, t ascending; past the chunk's end
 *   a lane takes fma(0, 0, acc[l]). The chunk's value is the tree
 *   ((acc[l] + acc[l+8]) + (.. l+4)) + (.. l+2)) + (.. l+1) reduced to lane 0.
 *   s = chunk 0, then s = s + chunk c for c = 1, 2, ... in order.
 *   C[i][j] = alpha·s (beta == 0: C is not read) or fma(alpha, s, beta·C).
 */
#ifndef ET_GEMM_DOT_H
#define ET_GEMM_DOT_H
#include <stddef.h>

#include "edgetrain.h"

#define ET_DOT_KCH 1024 /* chunk of K, a multiple of 16 */
#define ET_DOT_MB 4     /* the largest block of rows of A one kernel call takes */
#define ET_DOT_NB 4     /* ... and of rows of B */
#define ET_DOT_MAX_MN 16384

/* One block: out[r*ET_DOT_NB + c] = the chunk value (above) of rows r < mb of
 * A and c < nb of B over k < kc (kc <= ET_DOT_KCH), A and B already at the
 * chunk's first column. */
typedef void (*et_dot_kernel)(int mb, int nb, int kc, const float *A, ptrdiff_t lda, const float *B,
                              ptrdiff_t ldb, float *out);

void et_dot_kernel_scalar(int mb, int nb, int kc, const float *A, ptrdiff_t lda, const float *B,
                          ptrdiff_t ldb, float *out);
#if defined(__x86_64__) || defined(_M_X64)
void et_dot_kernel_avx2(int mb, int nb, int kc, const float *A, ptrdiff_t lda, const float *B,
                        ptrdiff_t ldb, float *out);
void et_dot_kernel_avx512(int mb, int nb, int kc, const float *A, ptrdiff_t lda, const float *B,
                          ptrdiff_t ldb, float *out);
#endif

/* Whether et_sgemm takes the dot path for this call (a function of the shape
 * only, never of threads or data). */
int et_gemm_dot_fits(int ta, int tb, int M, int N, int K);

/* C = alpha·A·Bᵀ + beta·C through the dot path on one ISA (capped at what the
 * CPU runs), with up to `threads` threads (1 inside a parallel region). */
void et_gemm_dot(et_isa isa, int M, int N, int K, float alpha, const float *A, ptrdiff_t lda,
                 const float *B, ptrdiff_t ldb, float beta, float *C, ptrdiff_t ldc, int threads);

#endif /* ET_GEMM_DOT_H */
