/* Emulated-accumulation GEMM: every product rounded to a multiplier format and
 * every addition to an accumulator format, in one fixed order, as an
 * edge-learning processor's MAC array would (number-formats issue, item 4).
 *
 *   C[M,N] = sum_k op(A)[i,k] * op(B)[k,j]   (+ beta * C), row-major like et_sgemm.
 *
 * Order of operations, for each element (i,j), e = i*N + j, with
 * round_f(x, r) = et_quantize of the single float x to format f with the 32
 * random bits r (stochastic rounding uses their top R bits):
 *   s = beta != 0 ? round_acc(beta * C[i,j], lo32(W(e, 0))) : 0
 *   for k = 0 .. K-1 ascending:
 *       p = round_mul(a_ik * b_kj, rm(e, k))   (a*b is the fp32 product; mul == NULL: p = a*b)
 *       s = round_acc(s + p, ra(e, k))         (s + p is the fp32 sum)
 *   C[i,j] = s
 * Random bits (docs/formats.md, "Random bits"): element e's 64-bit words are
 * the SplitMix64 sequence started from its key,
 *   W(e, t) = et_mix64(key_e + t * ET_GOLDEN64),   key_e = et_rand64(sub, step, e),
 *   sub = et_rand64(seed, 0x5352, tensor)          (et_qgemm_word),
 * and one word feeds both roundings of one product, or of two:
 *   some stochastic rounding of the call uses R > 16 bits (32-bit fields):
 *       rm(e, k) = hi32(W(e, k+1)),  ra(e, k) = lo32(W(e, k+1));
 *   every one uses R <= 16 (16-bit fields): products 2m and 2m+1 share
 *   W(e, m+1), h = hi32 for the even one, lo32 for the odd one, and
 *       rm(e, k) = h (its top 16 bits),  ra(e, k) = h << 16 (its low 16 bits).
 * So C does not depend on the thread count, the SIMD width or the tiling.
 * No FMA is used anywhere (products and sums are rounded to fp32 separately).
 * The two fp32 roundings before the format roundings are part of the
 * definition: a product of two operands with <= 12 significant bits each
 * (fp16, bf16, 8-bit floats) is exact in fp32.
 *
 * Formats: floating point only (any eXmY, :sat, :nosub, /rn /rz /sr /srR);
 * intN/dfxpN need scales and are rejected with ET_ERR_INVALID (use et_igemm).
 * acc == NULL means fp32 (the plain float sum in the order above).
 * beta == 0: C is not read. Returns ET_OK, ET_ERR_INVALID, or ET_ERR_NOMEM
 * (the fast path packs 16-column panels of B per thread). */
#ifndef ET_QGEMM_H
#define ET_QGEMM_H
#include "edgetrain.h"

#include <stdint.h>

#include "numerics/format_internal.h"

et_status et_qgemm(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                   float beta, float *C, int ldc, const et_format *mul, const et_format *acc, const et_qkey *key);

/* The scalar reference: the loop above, one element at a time, rounding with
 * et_quantize_one (src/numerics/format.c). Single-threaded. */
et_status et_qgemm_ref(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                       float beta, float *C, int ldc, const et_format *mul, const et_format *acc,
                       const et_qkey *key);

/* W(e, t) above, for the key of `p` (its prefix; et_qparams_init). */
uint64_t et_qgemm_word(const et_qparams *p, uint64_t e, uint64_t t);

/* Grows the calling thread's panel buffer to what products with K terms need
 * on `threads` threads (the model's memory plan does this for every product of
 * training); et_qgemm_workspace_bytes: what it holds now. */
et_status et_qgemm_reserve(int K, int threads);
size_t et_qgemm_workspace_bytes(void);
/* Frees the calling thread's panel buffer (for a thread that exits). */
void et_qgemm_release(void);

/* Which path et_qgemm takes: ET_ISA_AVX512 (16 columns per vector, OpenMP)
 * or ET_ISA_SCALAR (the reference loop, OpenMP over rows). */
et_isa et_qgemm_isa(void);

/* ---- internal (qgemm.c <-> qgemm_avx512.c) ---- */

typedef struct et_qgemm_args {
    int ta, tb, M, N, K, lda, ldb, ldc;
    const float *A, *B;
    float beta;
    float *C;
    int has_mul;         /* 0: products are plain fp32 */
    et_qparams mul, acc; /* from et_qparams_init (scale 1, the key) */
    int mul_ident, acc_ident; /* the format is fp32 (no :sat/:nosub): rounding is the identity */
} et_qgemm_args;

/* 1: every stochastic rounding of the call uses <= 16 random bits (16-bit fields). */
int et_qgemm_fields16(const et_qgemm_args *g);

/* Rows [i0, i1) x columns [j0, j1) of C, j0 a multiple of 16; Bp is K*16
 * floats of scratch. AVX-512F/DQ only. */
void et_qgemm_avx512_block(const et_qgemm_args *g, int i0, int i1, int j0, int j1, float *Bp);
#endif
