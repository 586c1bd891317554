/* Internal interface of the packed FP32 GEMM (src/kernels/gemm*.c).
 *
 * A micro-kernel computes one MR x NR tile of C from a K-slice:
 *   acc[r][c] = sum_{p<k} a[r*ars + p*as] * b[p*bs + c]  (p ascending, one
 *                                                       accumulator per element)
 *   C[r][c]   = alpha*acc + beta*C   (beta == 0: C is not read)
 * for r < m <= MR, c < n <= NR. Packed A is ars = 1, as = MR; A read in place
 * is ars = lda, as = 1 (row-major) or ars = 1, as = lda (transposed). Only
 * rows r < m of A are read. `b` holds NR values per step (packed B: bs = NR)
 * and is read for the full width (AVX-512: rounded up to 16 columns), so
 * callers zero-pad partial panels. Only the m x n corner
 * of C is read or written. Every element is summed in the same order whatever
 * the tile shape, position or thread, which keeps results thread-independent.
 * A and B may be read in place instead of packed; the values and the order,
 * hence the results, are the same.
 */
#ifndef ET_GEMM_INTERNAL_H
#define ET_GEMM_INTERNAL_H
#include <stddef.h>
#include <stdint.h>

#include "edgetrain.h"

typedef void (*et_gemm_ukernel)(int m, int n, int k, const float *a, ptrdiff_t ars,
                                ptrdiff_t as, const float *b, ptrdiff_t bs, float *c,
                                ptrdiff_t ldc, float alpha, float beta);

/* Packs rows [p0,p0+kc) x cols [j0,j0+n) of op(B) into ceil(n/nr) panels
 * of kc x nr, zero-padded (panel q at dst + q*kc*nr, row p at + p*nr). */
typedef void (*et_gemm_packb)(int tb, const float *B, ptrdiff_t ldb, int p0, int kc, int j0,
                              int n, float *dst);

/* Packs rows [i0,i0+m) x cols [0,kc) of op(A) (m <= mr) into a zero-padded
 * kc x mr panel (step p at dst + p*mr); A already points at column p0. */
typedef void (*et_gemm_packa)(int ta, const float *A, ptrdiff_t lda, int i0, int m, int kc,
                              float *dst);

/* Micro-tile shapes; the drivers in gemm.c rely on these. */
#define ET_GEMM_SCALAR_MR 4
#define ET_GEMM_SCALAR_NR 8
#define ET_GEMM_AVX2_MR 6
#define ET_GEMM_AVX2_NR 16
#define ET_GEMM_AVX512_MR 8
#define ET_GEMM_AVX512_NR 48

/* One K step of et_sgemm_convb's operand: where its row of op(B) starts in
 * x (relative to the panel's first column) and its tap's row of masks. */
typedef struct et_convb_step {
    int32_t off; /* ci * cstride + (ky - PH) * W + (kx - PW) */
    int32_t tap; /* 3 * (ky * KW + kx): the tap's 3 masks (16 columns each) */
} et_convb_step;

#if defined(__x86_64__) || defined(_M_X64)
#define ET_GEMM_HAVE_X86 1
/* et_sgemm_convb's B packer: a kc x NR panel of op(B), step p read from
 * x + ks[p].off under the masks tm[ks[p].tap + v] of its 16-column groups v
 * (0 where the bit is clear) */
void et_convb_packb_avx512(int k, const float *x, const et_convb_step *ks, const uint16_t *tm, float *dst);
void et_convA_packa_avx512(int m, int kc, const float *const *src, const uint64_t *const *bits, float *dst);
void et_gemm_ukernel_avx2(int m, int n, int k, const float *a, ptrdiff_t ars, ptrdiff_t as,
                          const float *b, ptrdiff_t bs, float *c, ptrdiff_t ldc, float alpha,
                          float beta);
void et_gemm_ukernel_avx512(int m, int n, int k, const float *a, ptrdiff_t ars, ptrdiff_t as,
                            const float *b, ptrdiff_t bs, float *c, ptrdiff_t ldc, float alpha,
                            float beta);
void et_gemm_packa_avx512(int ta, const float *A, ptrdiff_t lda, int i0, int m, int kc,
                          float *dst);
void et_gemm_packb_avx512(int tb, const float *B, ptrdiff_t ldb, int p0, int kc, int j0, int n,
                          float *dst);
#else
#define ET_GEMM_HAVE_X86 0
#endif

/* The kernel table entry of one ISA (gemm.c): what the drivers block with.
 * Exposed for the zero-skipping GEMM (spgemm.c), which must block, pack and
 * sum exactly like et_sgemm to give the same bits. */
typedef struct et_gemm_kinfo {
    et_gemm_ukernel kern;
    et_gemm_packa packa; /* NULL: the portable packers */
    et_gemm_packb packb;
    int mr, nr;          /* micro-tile */
    int bw;              /* B is read in multiples of bw columns (narrow tiles) */
    int mc, kc, nc;      /* cache blocks: mc % mr == 0, nc % nr == 0 */
    const char *name;
    et_isa isa;
} et_gemm_kinfo;

/* The entry et_sgemm_isa(isa, ...) runs (isa capped at what this CPU runs). */
const et_gemm_kinfo *et_gemm_kinfo_for(et_isa isa);

/* gemm.c's packers: op(A)[i0..i0+mb, p0..p0+kb] into ceil(mb/mr) panels of
 * kb x mr (panel q at dst + q*mr*kb); op(B)[p0..p0+kb, j0..j0+nb] into
 * ceil(nb/nr) panels of kb x nr (panel q at dst + q*nr*kb). Zero-padded. */
void et_gemm_pack_a(const et_gemm_kinfo *ki, int ta, const float *A, ptrdiff_t lda, int i0,
                    int mb, int p0, int kb, float *dst);
void et_gemm_pack_b(const et_gemm_kinfo *ki, int tb, const float *B, ptrdiff_t ldb, int p0,
                    int kb, int j0, int nb, float *dst);

/* The partition et_sgemm uses for T threads: tm row groups x tn column
 * groups of the tile grid. */
void et_gemm_partition(const et_gemm_kinfo *ki, int M, int N, int K, int T, int *tm, int *tn);

/* et_sgemm forced onto one ISA's kernels (capped at what this CPU runs). */
void et_sgemm_isa(et_isa isa, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                  int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* An output epilogue: once C[i][j] holds its product (alpha·sum + beta·C),
 *   C[i][j] = C[i][j] + row_bias[i]                (row_bias NULL: skipped)
 *   C[i][j] = C[i][j] > 0 ? C[i][j] : 0            (relu != 0)
 * one rounding each, in this order: exactly what a bias pass and a ReLU pass
 * over C after et_sgemm compute, so the bits are the same. */
typedef struct et_gemm_epi {
    const float *row_bias;
    int relu;
    /* then, with mask: C[i][j] = mask[i][j] ? C[i][j] : 0, the mask laid out
     * as C (the byte at mask + (&C[i][j] - c0)); NULL: none */
    const uint8_t *mask;
    const float *c0;
    /* then, with amax: *amax = max(*amax, |C[i][j]|) over the stored values
     * (NaN never wins; *amax >= 0; atomic, threads may share it) */
    float *amax;
} et_gemm_epi;

/* et_sgemm with an epilogue (NULL: none), applied to each micro-tile of C
 * right after its last K block, while the tile is in L1 (the dot path, and a
 * product with K == 0, apply it in a pass after). */
void et_sgemm_epi(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc, const et_gemm_epi *epi);
void et_sgemm_epi_isa(et_isa isa, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                      int lda, const float *B, int ldb, float beta, float *C, int ldc,
                      const et_gemm_epi *epi);
/* The epilogue alone over rows [0, M) x columns [0, N) of C (row i0 of C is
 * row i0 + r0 of the bias). */
void et_gemm_epi_apply(const et_gemm_epi *epi, int r0, int M, int N, float *C, ptrdiff_t ldc);
void et_gemm_epi_apply_avx512(const et_gemm_epi *epi, int r0, int M, int N, float *C, ptrdiff_t ldc);

/* Implicit im2col: conv FF's product Y = W · col for a stride-1 convolution
 * whose output plane has the input's size (padding (KH-1)/2, (KW-1)/2), with
 * col never made. Column j of op(B) is pixel j of the images laid end to end
 * (j = n*H*W + y*W + x), row k = (ci*KH + ky)*KW + kx holds
 *   x[ci*cstride + j + (ky-PH)*W + (kx-PW)]  where the tap reads inside
 * image n, else 0: im2col's column matrix. Each NR-column panel of a K
 * block is packed from x under per-tap masks instead (AVX-512 only:
 * et_sgemm_convb_ok) and multiplied by et_sgemm's micro-kernel. Blocks, K
 * order and kernel are et_sgemm's, so the result has the bits of
 *   et_sgemm_epi(0, 0, M, N, K, 1, A, lda, col, N, beta, C, ldc, epi). */
typedef struct et_gemm_convb {
    const float *x;    /* channel 0 plane of the first image of the columns */
    ptrdiff_t cstride; /* floats from one channel's planes to the next's */
    int H, W, KH, KW;
} et_gemm_convb;

#define ET_CONVB_MAXTAPS 64 /* KH * KW */

/* Whether et_sgemm_convb runs here for this geometry (the CPU's ISA, capped
 * by ET_ISA, is AVX-512; odd KH, KW with KH * KW <= ET_CONVB_MAXTAPS). */
int et_sgemm_convb_ok(const et_gemm_convb *cb);
/* Whether a call with M rows and K steps runs in the calling thread's
 * workspace (et_gemm_init's; else it allocates a buffer per call). */
int et_sgemm_convb_fits(int M, int K);
void et_sgemm_convb(int M, int N, int K, const float *A, int lda, const et_gemm_convb *cb, float beta, float *C,
                    int ldc, const et_gemm_epi *epi);
/* The same column matrix as the A of conv WG's transposed product,
 * dWᵀ[CK, Cout] (+)= col · dYᵀ: C[M x N] = col[M x K] · op(B) + beta * C with
 * op(B) = Bᵀ (B is N x K, row-major, ldb), M = CK rows of col and K columns
 * (pixels). A's panels are packed from x (et_convA_packa_avx512), never from
 * a col in memory: the bits of
 *   et_sgemm(0, 1, M, N, K, 1, col, K, B, ldb, beta, C, ldc)
 * when that call does not take the dot path (et_gemm_dot_fits(0, 1, M, N, K)). */
void et_sgemm_convA(int M, int N, int K, const et_gemm_convb *cb, const float *B, int ldb, float beta, float *C,
                    int ldc);

#endif /* ET_GEMM_INTERNAL_H */
