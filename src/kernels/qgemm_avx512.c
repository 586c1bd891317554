/* Emulated-accumulation GEMM, AVX-512 block kernel (kernels/qgemm.h): 16
 * output columns per vector, 4 rows of C at a time, every rounding step of
 * the reference loop done lane-wise on the same float bit patterns, so the
 * result equals et_qgemm_ref bit for bit (tests/test_qgemm.c).
 *
 * Rounding: a vector whose lanes are all zero or in the format's normal range
 * [min normal, max finite] takes the short path of numerics/format_avx512.h
 * (add the random or rounding increment, mask: a handful of integer
 * operations); any other lane (subnormal in the format, overflow, inf, NaN)
 * sends the vector to the general et_quantize16().
 *
 * Random bits: 16 columns' words W(e, t) (qgemm.h) in two vectors of 8 x
 * 64-bit lanes, even columns in one and odd columns in the other, so that one
 * in-lane shuffle each gathers the 16 high halves and the 16 low halves in
 * column order. The lanes hold the SplitMix64 states key_e + t * gamma: each
 * word adds gamma and mixes (et_mix64x8); with 16-bit fields one word serves
 * two k's. */
#include "kernels/qgemm.h"
#include "core/rng.h"
#include "numerics/format_avx512.h"

#include <immintrin.h>
#include <string.h>

#define V(x) _mm512_set1_epi32((int)(x))
#define INLINE static inline __attribute__((always_inline))

/* ------------------------------------------------ random bits, 16 lanes */

/* From the words of the even (w0) and odd (w1) columns: the high (mul) and
 * low (acc) halves in column order (one vpshufd with a merge mask each). */
INLINE __m512i hi_bits(__m512i w0, __m512i w1) { return _mm512_mask_shuffle_epi32(w1, 0x5555, w0, 0xF5); }
INLINE __m512i lo_bits(__m512i w0, __m512i w1) { return _mm512_mask_shuffle_epi32(w0, 0xAAAA, w1, 0xA0); }

/* --------------------------------------- general rounding (format_avx512.h) */

__attribute__((noinline)) static __m512 quantize16_float(const et_qparams *p, __m512 xv, __m512i rnd) {
    return et_quantize16(p, xv, rnd);
}

/* --------------------------------------------- short path, normal range */

enum { K_IDENT = 0, K_RN = ET_VQ_RN, K_RZ = ET_VQ_RZ, K_SR = ET_VQ_SR };
typedef et_vq vq;
#define vq_init et_vq_init

/* The short rounding of format_avx512.h when every lane takes it, else the
 * general one (out of line: the vector goes to memory there anyway). */
INLINE __m512 vround(const vq *q, int kind, __m512 x, __m512i rnd) {
    if (kind == K_IDENT) return x;
    __m512i u = _mm512_castps_si512(x);
    if (__builtin_expect(!et_vq_short_ok(q, u), 0)) return quantize16_float(q->p, x, rnd);
    return _mm512_castsi512_ps(et_vq_round(q, kind, u, rnd));
}

/* ------------------------------------------------------------ the block */

#define RM 4

/* One product of row r at k: p = round_mul(a * b), s = round_acc(s + p). */
#define STEP(kk, rm, ra)                                                                                               \
    do {                                                                                                               \
        __m512 p_ = _mm512_mul_ps(_mm512_set1_ps(ap[r][(size_t)(kk) * astep]), _mm512_load_ps(Bp + (size_t)(kk) * 16)); \
        if (mk != K_IDENT) p_ = vround(&qm, mk, p_, rm);                                                               \
        s[r] = vround(&qa, ak, _mm512_add_ps(s[r], p_), ra);                                                           \
    } while (0)

/* f16: 16-bit fields (every R <= 16), products 2m and 2m+1 share W(e, m + 1). */
INLINE void block(const et_qgemm_args *g, int i0, int i1, int j0, int j1, const float *Bp, int mk, int ak, int f16) {
    vq qm, qa;
    vq_init(&qm, &g->mul);
    vq_init(&qa, &g->acc);
    const int N = g->N, K = g->K;
    const int sr = mk == K_SR || ak == K_SR;
    const __m512i pre = _mm512_set1_epi64((long long)g->acc.prefix); /* mul and acc share the key */
    const __m512i even = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0), odd = _mm512_set_epi64(15, 13, 11, 9, 7, 5, 3, 1);
    const __m512i gamma = _mm512_set1_epi64((long long)ET_GOLDEN64);
    const __mmask16 cm = (__mmask16)(j1 - j0 == 16 ? 0xffff : (1u << (j1 - j0)) - 1);
    const __m512 beta = _mm512_set1_ps(g->beta);
    const __m512i zero = _mm512_setzero_si512();
    for (int i = i0; i < i1; i += RM) {
        int row[RM];
        const float *ap[RM];
        __m512 s[RM];
        __m512i st0[RM], st1[RM]; /* SplitMix64 states of the even / odd columns */
        for (int r = 0; r < RM; r++) {
            row[r] = i + r < i1 ? i + r : i1 - 1; /* short tail: repeat the last row */
            ap[r] = g->ta ? g->A + row[r] : g->A + (size_t)row[r] * g->lda;
            float *c = g->C + (size_t)row[r] * g->ldc + j0;
            st0[r] = st1[r] = zero;
            if (sr) { /* keys of the elements e = row * N + j0 + lane */
                __m512i e = _mm512_set1_epi64((long long)((uint64_t)row[r] * (uint64_t)N + (uint64_t)j0));
                st0[r] = et_rand_at8(pre, _mm512_add_epi64(e, even));
                st1[r] = et_rand_at8(pre, _mm512_add_epi64(e, odd));
            }
            if (g->beta != 0.0f) {
                __m512i rnd = zero;
                if (ak == K_SR) rnd = lo_bits(et_mix64x8(st0[r]), et_mix64x8(st1[r])); /* t = 0 */
                s[r] = vround(&qa, ak, _mm512_mul_ps(beta, _mm512_maskz_loadu_ps(cm, c)), rnd);
            } else
                s[r] = _mm512_setzero_ps();
        }
        const size_t astep = g->ta ? (size_t)g->lda : 1;
        if (f16) {
            for (int k = 0; k < K; k += 2) {
#pragma GCC unroll 4 /* the rows' sums stay in registers, their chains interleave */
                for (int r = 0; r < RM; r++) {
                    st0[r] = _mm512_add_epi64(st0[r], gamma), st1[r] = _mm512_add_epi64(st1[r], gamma);
                    __m512i w0 = et_mix64x8(st0[r]), w1 = et_mix64x8(st1[r]);
                    __m512i h = hi_bits(w0, w1), l = lo_bits(w0, w1);
                    STEP(k, h, _mm512_slli_epi32(h, 16));
                    if (k + 1 < K) STEP(k + 1, l, _mm512_slli_epi32(l, 16));
                }
            }
        } else {
            for (int k = 0; k < K; k++) {
#pragma GCC unroll 4
                for (int r = 0; r < RM; r++) {
                    __m512i w0 = zero, w1 = zero;
                    if (sr) { /* t = k + 1 */
                        st0[r] = _mm512_add_epi64(st0[r], gamma), st1[r] = _mm512_add_epi64(st1[r], gamma);
                        w0 = et_mix64x8(st0[r]), w1 = et_mix64x8(st1[r]);
                    }
                    STEP(k, mk == K_SR ? hi_bits(w0, w1) : zero, ak == K_SR ? lo_bits(w0, w1) : zero);
                }
            }
        }
        for (int r = RM - 1; r >= 0; r--) /* repeated tail rows hold the same values */
            _mm512_mask_storeu_ps(g->C + (size_t)row[r] * g->ldc + j0, cm, s[r]);
    }
}

#define CASE(m, a)                                                                                                     \
    case (m) * 4 + (a):                                                                                                \
        if (((m) == K_SR || (a) == K_SR) && f16) block(g, i0, i1, j0, j1, Bp, m, a, 1);                                \
        else block(g, i0, i1, j0, j1, Bp, m, a, 0);                                                                    \
        break;

/* r[l][k] -> r[k][l] for a 16 x 16 block of floats. */
static inline void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);     /* per 128-bit lane: a0 b0 a1 b1 */
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]); /* a2 b2 a3 b3 */
    }
    for (int i = 0; i < 4; i++) { /* r[4i + c], lane L: element 4L + c of rows 4i .. 4i + 3 */
#define PD(x) _mm512_castps_pd(x)
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(PD(t[4 * i]), PD(t[4 * i + 2])));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(PD(t[4 * i]), PD(t[4 * i + 2])));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(PD(t[4 * i + 1]), PD(t[4 * i + 3])));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(PD(t[4 * i + 1]), PD(t[4 * i + 3])));
#undef PD
    }
    __m512 o[16];
    for (int c = 0; c < 4; c++) {
        __m512 u0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88), u1 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);
        __m512 u2 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88), u3 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
        o[c] = _mm512_shuffle_f32x4(u0, u2, 0x88), o[8 + c] = _mm512_shuffle_f32x4(u0, u2, 0xdd);
        o[4 + c] = _mm512_shuffle_f32x4(u1, u3, 0x88), o[12 + c] = _mm512_shuffle_f32x4(u1, u3, 0xdd);
    }
    for (int l = 0; l < 16; l++) r[l] = o[l];
}

static int kind_of(const et_qparams *p, int ident) {
    if (ident) return K_IDENT;
    return p->mode == ET_ROUND_RN ? K_RN : p->mode == ET_ROUND_RZ ? K_RZ : K_SR;
}

void et_qgemm_avx512_block(const et_qgemm_args *g, int i0, int i1, int j0, int j1, float *Bp) {
    const int K = g->K, nc = j1 - j0;
    if (!g->tb) { /* row k of op(B): 16 contiguous floats, zero past N */
        const __mmask16 m = (__mmask16)(nc >= 16 ? 0xffff : (1u << nc) - 1);
        for (int k = 0; k < K; k++)
            _mm512_store_ps(Bp + (size_t)k * 16, _mm512_maskz_loadu_ps(m, g->B + (size_t)k * g->ldb + j0));
    } else { /* column l of the panel is row j0 + l of B: 16 k's of each row, transposed */
        for (int k0 = 0; k0 < K; k0 += 16) {
            const __mmask16 mk = (__mmask16)(K - k0 >= 16 ? 0xffff : (1u << (K - k0)) - 1);
            __m512 r[16];
            for (int l = 0; l < 16; l++)
                r[l] = l < nc ? _mm512_maskz_loadu_ps(mk, g->B + (size_t)(j0 + l) * g->ldb + k0) : _mm512_setzero_ps();
            transpose16(r);
            for (int kk = 0; kk < 16 && k0 + kk < K; kk++) _mm512_store_ps(Bp + (size_t)(k0 + kk) * 16, r[kk]);
        }
    }
    int mk = kind_of(&g->mul, g->mul_ident), ak = kind_of(&g->acc, g->acc_ident);
    const int f16 = et_qgemm_fields16(g);
    switch (mk * 4 + ak) {
        CASE(0, 0) CASE(0, 1) CASE(0, 2) CASE(0, 3)
        CASE(1, 0) CASE(1, 1) CASE(1, 2) CASE(1, 3)
        CASE(2, 0) CASE(2, 1) CASE(2, 2) CASE(2, 3)
        CASE(3, 0) CASE(3, 1) CASE(3, 2) CASE(3, 3)
    }
}
