/* The weight-gradient product with the zeros of its error skipped (spwg.c,
 * spwg_avx512.c; docs/sparsity.md "Kernels").
 *
 *   C[i,j] = sum_k op(A)[i,k] * B[j,k]  (+ beta * C[i,j])
 *
 * et_sgemm's tb = 1 form (B is N x K row-major; op(A) = A stored M x K, or
 * with ta = Aᵀ stored K x M, which needs no transpose here):
 * conv WG's transposed product dWᵀ[CK, Cout] += col[CK, P] · dY[Cout, P]ᵀ,
 * whose dY is mostly zero under backward skipping (ReLU mask x max-pool
 * routing). Each row of B is listed (its non-zero k, ascending) and each
 * element sums A[i,k] * B[j,k] over the listed k only, restarting from +0 at
 * et_sgemm's KC boundaries and adding each block's sum to C as its
 * micro-kernel does: for finite operands the result is et_sgemm's, bit for
 * bit (a product with B[j,k] == 0 leaves the sum unchanged).
 *
 * It runs on AVX-512 (A transposed 16 x 16 in registers, accumulators over
 * 16..128 consecutive i, tiles of sums transposed back onto C's rows) and
 * on the scalar ISA (the scalar micro-kernel's order);
 * on AVX2, and for shapes et_sgemm sums on its dot path (gemm_dot.h), it
 * does not run. */
#ifndef ET_SPWG_H
#define ET_SPWG_H
#include <stdint.h>

#include "edgetrain.h"

/* Whether the skipping kernel beats et_sgemm at this shape and density of B
 * (nnz(B) / (N*K)): density <= ET_SPWG_DMAX - ET_SPWG_DMAX_N / N. From
 * bench/bench_spwg.c on the development machine (Xeon, Emerald Rapids, one
 * thread, random zeros, VGG8's WG chunk products, 2026-12-02): the kernel's
 * time over et_sgemm's fits a + b * density with b = 1.9..2.3 and a fixed
 * part a = 0.26..0.50 (the transpose of A and the lists; a * N = 16..37),
 * break-even at density 0.24 (N = 32), 0.30..0.33 (N = 64), 0.33 (N = 128);
 * the rule stays below each (0.22, 0.25, 0.26) for a margin. Those runs
 * include the transpose; with A given transposed (ta = 1, conv's colᵀ) the
 * fixed part is smaller and the rule more conservative still. */
#define ET_SPWG_DMAX 0.28
#define ET_SPWG_DMAX_N 2.0
int et_spwg_pays(int N, double density);
/* Whether the kernel exists for this shape on this CPU (its ISA, not the
 * dot path): the density is worth measuring. */
int et_spwg_applies(int ta, int M, int N, int K);
/* nnz(B) / (N*K) of a row-major N x K matrix (the density the rule takes). */
double et_spwg_density(int N, int K, const float *B, int ldb);

/* Runs the product when it applies and pays (et_spwg_pays on the measured
 * density of B); returns 1 then, with *macs_cpu = the multiply-adds it ran
 * (nnz(B) * M), else 0 with C untouched (the caller runs et_sgemm). */
int et_sgemm_spwg(int ta, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc,
                  uint64_t *macs_cpu);

/* The same on one ISA (capped at what the CPU runs), running whenever the
 * density of B is at most dmax (tests: dmax = 1 forces it where it applies).
 * Compare with et_sgemm_isa on the same ISA. */
int et_sgemm_spwg_isa(et_isa isa, int ta, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta,
                      float *C, int ldc, double dmax, uint64_t *macs_cpu);
#endif
