/* Emulated-accumulation GEMM: every product rounded to a multiplier format and
 * every addition to an accumulator format, in one fixed order, as an
 * edge-learning processor's MAC array would (number-formats issue, item 4).
 *
 *   C[M,N] = sum_k op(A)[i,k] * op(B)[k,j]   (+ beta * C), row-major like et_sgemm.
 *
 * Order of operations, for each element (i,j), e = i*N + j, with
 * round_f(x, r) = et_quantize of the single float x to format f with the 32
 * random bits r (stochastic rounding uses their top R bits; the r's are
 * defined below):
 *   s = beta != 0 ? round_acc(beta * C[i,j], r0(e)) : 0
 *   for k = 0 .. K-1 ascending:
 *       p = round_mul(a_ik * b_kj, rm(e, k))   (a*b is the fp32 product; mul == NULL: p = a*b)
 *       s = round_acc(s + p, ra(e, k))         (s + p is the fp32 sum)
 *   C[i,j] = s
 * Random bits (docs/formats.md, "Random bits"): element e has the key
 *   key_e = et_rand64(sub, step, e),  sub = et_rand64(seed, 0x5352, tensor),
 * and a xorshift32 sequence (Marsaglia's 13/17/5, period 2^32 - 1) started
 * from its high half: x_0 = hi32(key_e) (1 if that is 0), x_t = xs32(x_{t-1}).
 * A rounding to a format with S = 23 - mant that sees the word w takes the
 * 32 random bits rnd(w) = ~rotl(w, 32 - S) (stochastic rounding uses their
 * top R: the complement of w's bits [S - R, S), which is what the vector
 * kernel adds below the cut directly). Which words:
 *   beta * C: w = lo32(key_e);
 *   every stochastic rounding of the call uses R <= 16 (16-bit fields): one
 *       word x_{k+1} per product k, seen as w = x_{k+1} by the multiplier and
 *       as w = rotl(x_{k+1}, rot) by the accumulator, rot = 16 + S_acc - S_mul
 *       (0 when the multiplier does not round stochastically): the two take
 *       disjoint 16-bit windows of the word;
 *   otherwise: one word per stochastic rounding, in order, the multiplier's
 *       first (x_{2k+1}, x_{2k+2} when both are stochastic).
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

/* The generator above: xs32 (one xorshift32 step), and element e's word t
 * for the key of `p` (its prefix; et_qparams_init): t = 0: lo32(key_e), the
 * beta word; t >= 1: x_t. */
uint32_t et_qgemm_xs32(uint32_t x);
uint32_t et_qgemm_word(const et_qparams *p, uint64_t e, uint64_t t);

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
    double sum_limit;         /* the AVX-512 kernel's bound on its chunks' sums (et_qgemm_sum_limit) */
} et_qgemm_args;

/* 1: every stochastic rounding of the call uses <= 16 random bits (16-bit fields). */
int et_qgemm_fields16(const et_qgemm_args *g);
/* The greatest s0 + QG_KCH * pmax * (1 + 2^-mant_mul) for which QG_KCH
 * products of magnitude <= pmax added to a sum of magnitude <= s0, each
 * rounded (multiplier, fp32, accumulator), cannot pass the accumulator's max
 * finite: max finite / (g^QG_KCH (1 + 1e-9)), g = (1 + 2^-24)(1 + 2^-mant_acc). */
double et_qgemm_sum_limit(const et_qgemm_args *g);
/* rot above (16-bit fields). */
unsigned et_qgemm_acc_rot(const et_qgemm_args *g);

/* Products per chunk of the AVX-512 kernel (its range checks and its
 * recomputation work chunk by chunk). */
#define QG_KCH 32

/* Rows [i0, i1) x columns [j0, j1) of C, j0 a multiple of 16; Bp is scratch:
 * K*16 floats (64-byte aligned, rounded up to 64 bytes), then 8 bytes per
 * chunk of QG_KCH products; pack = 0: Bp already holds this panel (the
 * same call's previous block on this thread had the same columns). AVX-512F/DQ only. */
void et_qgemm_avx512_block(const et_qgemm_args *g, int i0, int i1, int j0, int j1, float *Bp, int pack);
#endif
