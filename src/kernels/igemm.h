/* INT8 GEMM (number-formats issue, item 5): exact integer products of int8
 * codes summed in int32, row-major like et_sgemm (op(A) is M x K, op(B) K x N):
 *   C[i,j] = sum_k op(A)[i,k] * op(B)[k,j]     (C is overwritten)
 * Every path gives the same int32 results (the sum is exact, so order does not
 * matter): AVX-512 VNNI (vpdpbusd on A + 128, minus 128 * column sums of B),
 * AVX2 (vpmaddwd on int16) and a portable scalar loop, chosen at run time;
 * threads over tiles of C. Exact as long as |sum| < 2^31, guaranteed for
 * K <= 131072 (the arithmetic wraps modulo 2^32, like the scalar reference).
 * Packing buffers belong to the calling thread and only grow: after the first
 * call of the largest shape, or et_igemm_reserve for it, no call allocates. */
#ifndef ET_IGEMM_H
#define ET_IGEMM_H
#include "edgetrain.h"

#include <stdint.h>

void et_igemm_s8(int ta, int tb, int M, int N, int K, const int8_t *A, int lda, const int8_t *B, int ldb,
                 int32_t *C, int ldc);

/* The training path (docs/architecture.md, "The matmul path"): float operands
 * that a precision policy stored on per-tensor integer grids, x = scale * q
 * with |q| <= 127 (intN, dfxpN with N <= 8). Codes are taken back as
 *     q = round-to-nearest-even(x * fl(1 / scale)) clamped to [-127, 127] (NaN: 0),
 * which is exact for values on the grid (x * fl(1/scale) is within 3 * 2^-24
 * relative of q, far from a half), vectorised and fused into the packing. The exact int32 sum S of code products is rounded once:
 *     C[i,j] = (float)((double)S * ((double)scale_a * (double)scale_b))
 *              (+ beta * C[i,j] in fp32 when beta != 0: fl(fl(beta*C) + that))
 * (the product of two fp32 scales is exact in double; the double product with
 * S has a relative error <= 2^-53 before the one fp32 rounding). scale_a and
 * scale_b must be > 0. Returns ET_ERR_INVALID for bad arguments, ET_ERR_NOMEM
 * if the packing buffers cannot grow. */
et_status et_igemm_f32(int ta, int tb, int M, int N, int K, const float *A, int lda, float scale_a, const float *B,
                       int ldb, float scale_b, float beta, float *C, int ldc);

/* et_igemm_f32 with operands that may also come as their int8 codes: qa (qb),
 * if not NULL, holds the codes of A (B) in A's (B's) layout and leading
 * dimension, qa[o] = et_igemm_code(A[o], scale_a) for every element o of
 * op(A) (as a precision policy's rounding writes them, et_quantize_codes);
 * the path packs the codes instead of taking them back from the floats, and
 * A (B) may then be NULL. Same results as et_igemm_f32 on the floats. */
et_status et_igemm_f32q(int ta, int tb, int M, int N, int K, const float *A, const int8_t *qa, int lda, float scale_a,
                        const float *B, const int8_t *qb, int ldb, float scale_b, float beta, float *C, int ldc);
et_status et_igemm_f32q_isa(et_isa isa, int ta, int tb, int M, int N, int K, const float *A, const int8_t *qa, int lda,
                            float scale_a, const float *B, const int8_t *qb, int ldb, float scale_b, float beta, float *C,
                            int ldc);

/* im2col of int8 codes (the column matrix of a convolution for the integer
 * path, conv.c): x holds c channels of n images of h x w (CNHW); for images
 * n0 .. n0+nb-1 (kernel kh x kw, stride sh, sw, padding ph, pw, output ho x wo)
 *   col[(ci*kh + ky)*kw + kx][i*ho*wo + oy*wo + ox] = x[ci][n0+i][oy*sh-ph+ky][ox*sw-pw+kx]
 * (0 outside the image). Row r of col starts at col + r * nb*ho*wo. */
typedef struct et_igemm_conv {
    int c, n, h, w, kh, kw, sh, sw, ph, pw, ho, wo;
} et_igemm_conv;
void et_igemm_im2col(const et_igemm_conv *g, const int8_t *x, int n0, int nb, int8_t *col);

/* Paths, for tests and benchmarks: isa is clamped to what the CPU runs
 * (AVX-512 needs AVX512-VNNI too). */
void et_igemm_s8_isa(et_isa isa, int ta, int tb, int M, int N, int K, const int8_t *A, int lda, const int8_t *B,
                     int ldb, int32_t *C, int ldc);
et_status et_igemm_f32_isa(et_isa isa, int ta, int tb, int M, int N, int K, const float *A, int lda, float scale_a,
                           const float *B, int ldb, float scale_b, float beta, float *C, int ldc);
et_isa et_igemm_isa(void);

/* Grows the calling thread's packing buffers to what a product with op(A)
 * M x K and op(B) K x N needs on `threads` threads (the model's memory plan
 * does this for every product of training); et_igemm_workspace_bytes: what
 * the calling thread's buffers hold now. */
et_status et_igemm_reserve(int M, int N, int K, int threads);
size_t et_igemm_workspace_bytes(void);
/* Frees the calling thread's buffers (a thread that used et_igemm and exits
 * should call it; the next call or reserve allocates again). */
void et_igemm_release(void);

/* Products C = A . B^T (ta = 0, tb = 1) whose operands both come as codes,
 * with a small output and a long K (a convolution's weight gradient over an
 * image chunk: LeNet's 8 x 9 and 16 x 72 with K = 29008 and 3528) are summed
 * in the dot form on the VNNI path: both operands read along K in place, no
 * packing. The shape alone decides; the sums are exact either way. */
int et_igemm_dot_fits(int M, int N, int K);

/* The code of x on the grid of `scale` (the rule above), scalar. */
int et_igemm_code(float x, float scale);

/* ---- internal (igemm.c <-> igemm_avx512.c / igemm_avx2.c) ----
 * Panels of 32 columns of C. Packed in igemm.c:
 * VNNI:  Ap in blocks of 8 rows (Kq = ceil(K/4)): row i, group q at
 *        Ap[(i & ~7)*Kq + 8q + (i & 7)], the uint32 of the 4 bytes a[4q..4q+3] + 128
 *        (128 past K); blocks start at multiples of 8 rows; Bp panel: for each q, 32 columns x 4 int8 (0 past K and past N);
 *        colsum128[c] = 128 * sum_k b[k][c].
 * AVX2:  Ap row i at Ap + i*Kp (Kp = ceil(K/2)): uint32 = two int16 a[2p], a[2p+1];
 *        Bp panel: for each p, 32 columns x 2 int16.
 * The blocks compute rows [i0, i1) and the first nc (<= 32) columns of the panel. */
void et_igemm_avx512_block(const uint32_t *Ap, int Kq, const int8_t *Bp, const int32_t *colsum128, int i0, int i1,
                           int nc, int32_t *C, int ldc);
/* The same with float output, as et_igemm_f32 describes (scale sab, beta). */
void et_igemm_avx512_block_f32(const uint32_t *Ap, int Kq, const int8_t *Bp, const int32_t *colsum128, int i0,
                               int i1, int nc, float *C, int ldc, double sab, float beta);
void et_igemm_avx2_block(const uint32_t *Ap, int Kp, const int16_t *Bp, int i0, int i1, int nc, int32_t *C, int ldc);
/* VNNI packing straight from floats on a grid (codes as et_igemm_code):
 * rows [i0, i1) of Ap; npan (<= 8) panels from column j0 of op(B) (panel p
 * at bp + p * panel_bytes, padded with zero columns past N) and their column
 * sums; and the store of a rows x nc int32 tile (row stride 32) into
 * float C as described for et_igemm_f32. */
void et_igemm_avx512_pack_a(const float *A, int lda, int ta, float scale, int K, int Kq, int i0, int i1, uint32_t *Ap);
void et_igemm_avx512_pack_b(const float *B, int ldb, int tb, float scale, int K, int N, int Kq, int j0, int npan,
                            int8_t *bp, size_t panel_bytes, int32_t *colsum128);
/* The same packing from int8 codes (layouts as the float operands'). */
void et_igemm_avx512_pack_a_s8(const int8_t *A, int lda, int ta, int K, int Kq, int i0, int i1, uint32_t *Ap);
void et_igemm_avx512_pack_b_s8(const int8_t *B, int ldb, int tb, int K, int N, int Kq, int j0, int npan, int8_t *bp,
                               size_t panel_bytes, int32_t *colsum128);
/* One row (ci, ky, kx) of et_igemm_im2col for nb images with unit column
 * stride and rows of at most 64 codes (src: the channel's plane of the first
 * image, planes `plane` apart): dst[(n*Ho + oy)*Wo + ox] = src[n*plane +
 * (oy*SH-PH+ky)*W + ox + ix0] for ox in [lo, hi) and rows inside, else 0. */
void et_igemm_avx512_im2col_rows(const int8_t *src, int64_t plane, int H, int W, int Ho, int Wo, int SH, int PH,
                                 int ky, int ix0, int lo, int hi, int nb, int8_t *dst);
/* The dot form for C = A . B^T with both operands' codes along K in place
 * (et_igemm_dot_fits): rows [i0, i1) of the M x N int32 sums S (row stride
 * N), and the row sums of B it subtracts. */
void et_igemm_avx512_dot(const int8_t *A, int lda, const int8_t *B, int ldb, const int32_t *bsum128, int i0, int i1,
                         int N, int K, int32_t *S);
void et_igemm_avx512_rowsum128(const int8_t *B, int ldb, int N, int K, int32_t *bsum128);
void et_igemm_avx512_store(const int32_t *tile, int rows, int nc, double sab, float beta, float *C, int ldc);
#endif
