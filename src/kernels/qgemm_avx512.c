/* Emulated-accumulation GEMM, AVX-512 block kernel (kernels/qgemm.h): 16
 * output columns per vector, 4 rows of C at a time, every rounding step of
 * the reference loop done lane-wise on the same float bit patterns, so the
 * result equals et_qgemm_ref bit for bit (tests/test_qgemm.c).
 *
 * Rounding: values in a format's normal range (and zeros) take a short path
 * (the quantum is 2^(23-mant) float ulps, so round_mag() of format.c reduces
 * to integer operations with constant shifts); a vector with any lane outside
 * it (subnormal in the format, inf, NaN) takes the general path,
 * et_quantize16() of numerics/format_avx512.h (shared with et_quantize).
 *
 * Random bits: et_rand64(subseed, step, n) >> 32 for 16 indices at once; the
 * first two rounds of the hash depend on (subseed, step) only and are
 * computed once, the last one (mix64 of core/rng.c) runs on 8 x 64-bit lanes
 * with vpmullq (AVX-512DQ). */
#include "kernels/qgemm.h"
#include "numerics/format_avx512.h"

#include <immintrin.h>
#include <string.h>

#define V(x) _mm512_set1_epi32((int)(x))
#define INLINE static inline __attribute__((always_inline))

/* ------------------------------------------------ random bits, 16 lanes */

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
#define IDX_ADD 0x632be59bd9b4e019ULL

INLINE __m512i mix64v(__m512i z) {
    z = _mm512_xor_si512(z, _mm512_srli_epi64(z, 30));
    z = _mm512_mullo_epi64(z, _mm512_set1_epi64((long long)0xbf58476d1ce4e5b9ULL));
    z = _mm512_xor_si512(z, _mm512_srli_epi64(z, 27));
    z = _mm512_mullo_epi64(z, _mm512_set1_epi64((long long)0x94d049bb133111ebULL));
    return _mm512_xor_si512(z, _mm512_srli_epi64(z, 31));
}

/* Top 32 bits of et_rand64 for the indices (v0 - IDX_ADD) (lanes 0-7) and
 * (v1 - IDX_ADD) (lanes 8-15); h = the hash state after the first two rounds. */
INLINE __m512i rand16(__m512i h, __m512i v0, __m512i v1) {
    const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    __m512i r0 = mix64v(_mm512_xor_si512(h, v0)), r1 = mix64v(_mm512_xor_si512(h, v1));
    return _mm512_permutex2var_epi32(r0, odd, r1);
}

/* --------------------------------------- general rounding (format_avx512.h) */

__attribute__((noinline)) static __m512 quantize16_float(const et_qparams *p, __m512 xv, __m512i rnd) {
    return et_quantize16(p, xv, rnd);
}

/* --------------------------------------------- short path, normal range */

enum { K_IDENT = 0, K_RN = 1, K_RZ = 2, K_SR = 3 };

typedef struct vq {
    const et_qparams *p;
    __m512i minnorm, span, maxb, ovval, notmask, halfm1, oddbit, S, shr, shl, rshift;
} vq;

static void vq_init(vq *q, const et_qparams *p) {
    int S = 23 - p->mant, R = p->rbits;
    q->p = p;
    q->minnorm = V(p->minnorm);
    q->span = V(0x7f800000u - p->minnorm);
    q->maxb = V(p->maxbits);
    q->ovval = p->overflow_max ? V(p->maxbits) : V(0x7f800000u);
    q->notmask = V(~((1u << S) - 1u));
    q->halfm1 = V(S > 0 ? (1u << (S - 1)) - 1u : 0u);
    q->oddbit = V(S > 0 ? 1 : 0);
    q->S = V(S);
    q->shr = V(S > R ? S - R : 0);
    q->shl = V(R > S ? R - S : 0);
    q->rshift = V(32 - R);
}

INLINE __m512 vround(const vq *q, int kind, __m512 x, __m512i rnd) {
    if (kind == K_IDENT) return x;
    __m512i u = _mm512_castps_si512(x);
    __m512i a = _mm512_and_si512(u, V(0x7fffffff));
    __mmask16 ok = _mm512_cmplt_epu32_mask(_mm512_sub_epi32(a, q->minnorm), q->span) |
                   _mm512_cmpeq_epi32_mask(a, _mm512_setzero_si512());
    if (__builtin_expect(ok != 0xffff, 0)) return quantize16_float(q->p, x, rnd);
    __m512i r;
    if (kind == K_RN) {
        __m512i odd = _mm512_and_si512(_mm512_srlv_epi32(a, q->S), q->oddbit);
        r = _mm512_and_si512(_mm512_add_epi32(_mm512_add_epi32(a, q->halfm1), odd), q->notmask);
    } else if (kind == K_RZ) {
        r = _mm512_and_si512(a, q->notmask);
    } else {
        __m512i rem = _mm512_andnot_si512(q->notmask, a);
        __m512i t = _mm512_sllv_epi32(_mm512_srlv_epi32(rem, q->shr), q->shl);
        __mmask16 up = _mm512_cmplt_epu32_mask(_mm512_srlv_epi32(rnd, q->rshift), t);
        __m512i quantum = _mm512_add_epi32(_mm512_andnot_si512(q->notmask, V(0xffffffffu)), V(1));
        r = _mm512_mask_add_epi32(_mm512_and_si512(a, q->notmask), up, _mm512_and_si512(a, q->notmask), quantum);
    }
    r = _mm512_mask_mov_epi32(r, _mm512_cmpgt_epu32_mask(r, q->maxb), q->ovval);
    return _mm512_castsi512_ps(_mm512_or_si512(r, _mm512_andnot_si512(V(0x7fffffff), u)));
}

/* ------------------------------------------------------------ the block */

#define RM 4

INLINE void block(const et_qgemm_args *g, int i0, int i1, int j0, int j1, const float *Bp, int mk, int ak) {
    vq qm, qa;
    vq_init(&qm, &g->mul);
    vq_init(&qa, &g->acc);
    const int N = g->N, K = g->K;
    const uint64_t twoK = 2 * (uint64_t)K;
    const int sr = mk == K_SR || ak == K_SR;
    /* hash state after the first two rounds (mul and acc share the key) */
    const __m512i h = _mm512_set1_epi64(
        (long long)mix64(mix64(g->acc.subseed + 0x9e3779b97f4a7c15ULL) ^ (g->acc.step * 0xd1b54a32d192ed03ULL)));
    const __m512i lane0 = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0), lane1 = _mm512_add_epi64(lane0, _mm512_set1_epi64(8));
    const __m512i one64 = _mm512_set1_epi64(1), two64 = _mm512_set1_epi64(2);
    const __m512i step2K = _mm512_set1_epi64((long long)twoK);
    const __mmask16 cm = (__mmask16)(j1 - j0 == 16 ? 0xffff : (1u << (j1 - j0)) - 1);
    const uint64_t beta_base = 2 * (uint64_t)g->M * (uint64_t)N * (uint64_t)K;
    const __m512 beta = _mm512_set1_ps(g->beta);
    for (int i = i0; i < i1; i += RM) {
        int row[RM];
        const float *ap[RM];
        __m512 s[RM];
        __m512i v0[RM], v1[RM]; /* index of (row, lane, k) + IDX_ADD, mul rounding */
        for (int r = 0; r < RM; r++) {
            row[r] = i + r < i1 ? i + r : i1 - 1; /* short tail: repeat the last row */
            ap[r] = g->ta ? g->A + row[r] : g->A + (size_t)row[r] * g->lda;
            uint64_t e = (uint64_t)row[r] * (uint64_t)N + (uint64_t)j0;
            float *c = g->C + (size_t)row[r] * g->ldc + j0;
            if (g->beta != 0.0f) {
                __m512i rnd = _mm512_setzero_si512();
                if (ak == K_SR) {
                    __m512i b = _mm512_set1_epi64((long long)(beta_base + e + IDX_ADD));
                    rnd = rand16(h, _mm512_add_epi64(b, lane0), _mm512_add_epi64(b, lane1));
                }
                s[r] = vround(&qa, ak, _mm512_mul_ps(beta, _mm512_maskz_loadu_ps(cm, c)), rnd);
            } else
                s[r] = _mm512_setzero_ps();
            __m512i b = _mm512_set1_epi64((long long)(e * twoK + IDX_ADD));
            v0[r] = _mm512_add_epi64(b, _mm512_mullo_epi64(lane0, step2K));
            v1[r] = _mm512_add_epi64(b, _mm512_mullo_epi64(lane1, step2K));
        }
        const size_t astep = g->ta ? (size_t)g->lda : 1;
        __m512i kk = _mm512_setzero_si512(); /* 2k in every lane: the indices are v + kk */
        for (int k = 0; k < K; k++) {
            __m512 bv = _mm512_load_ps(Bp + (size_t)k * 16);
#pragma GCC unroll 4 /* the rows' sums stay in registers, their chains interleave */
            for (int r = 0; r < RM; r++) {
                __m512 p = _mm512_mul_ps(_mm512_set1_ps(ap[r][(size_t)k * astep]), bv);
                __m512i i0 = _mm512_setzero_si512(), i1 = i0;
                if (sr) i0 = _mm512_add_epi64(v0[r], kk), i1 = _mm512_add_epi64(v1[r], kk);
                if (mk != K_IDENT) p = vround(&qm, mk, p, mk == K_SR ? rand16(h, i0, i1) : _mm512_setzero_si512());
                __m512i ra = ak == K_SR ? rand16(h, _mm512_add_epi64(i0, one64), _mm512_add_epi64(i1, one64))
                                        : _mm512_setzero_si512();
                s[r] = vround(&qa, ak, _mm512_add_ps(s[r], p), ra);
            }
            if (sr) kk = _mm512_add_epi64(kk, two64);
        }
        for (int r = RM - 1; r >= 0; r--) /* repeated tail rows hold the same values */
            _mm512_mask_storeu_ps(g->C + (size_t)row[r] * g->ldc + j0, cm, s[r]);
    }
}

#define CASE(m, a)                                                                                                     \
    case (m) * 4 + (a): block(g, i0, i1, j0, j1, Bp, m, a); break;

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
    } else { /* column l of the panel is row j0 + l of B: read along it */
        if (nc < 16) memset(Bp, 0, sizeof(float) * 16 * (size_t)K);
        for (int l = 0; l < nc; l++) {
            const float *src = g->B + (size_t)(j0 + l) * g->ldb;
            for (int k = 0; k < K; k++) Bp[(size_t)k * 16 + l] = src[k];
        }
    }
    int mk = kind_of(&g->mul, g->mul_ident), ak = kind_of(&g->acc, g->acc_ident);
    switch (mk * 4 + ak) {
        CASE(0, 0) CASE(0, 1) CASE(0, 2) CASE(0, 3)
        CASE(1, 0) CASE(1, 1) CASE(1, 2) CASE(1, 3)
        CASE(2, 0) CASE(2, 1) CASE(2, 2) CASE(2, 3)
        CASE(3, 0) CASE(3, 1) CASE(3, 2) CASE(3, 3)
    }
}
