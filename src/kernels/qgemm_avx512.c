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
 * Random bits: the 16 columns' xorshift32 states (qgemm.h) side by side in
 * one vector per row; the rounding adds the word's bits under the cut
 * directly (w & field: rnd(w)'s top bits are their complement), and the
 * general rounding gets rnd(w) itself.
 *
 * Checks: the short path is right only when every input it rounds is 0 or in
 * the format's normal range. The products are done in chunks of QG_KCH: the
 * fast loop records the least and the greatest magnitude it rounded (four
 * integer operations per rounding, no branch); a chunk that strayed out of
 * the range is done again from its start (sums and generator states are
 * kept) by the checked loop, which sends each such vector to the general
 * rounding. */
#include "kernels/qgemm.h"
#include "core/rng.h"
#include "kernels/transpose_avx512.h"
#include "numerics/format_avx512.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define V(x) _mm512_set1_epi32((int)(x))
#define INLINE static inline __attribute__((always_inline))

/* ------------------------------------------------ random bits, 16 lanes */

/* One xorshift32 step on 16 lanes. */
INLINE __m512i xs16(__m512i x) {
    x = _mm512_xor_si512(x, _mm512_slli_epi32(x, 13));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 17));
    return _mm512_xor_si512(x, _mm512_slli_epi32(x, 5));
}

/* Keys of the elements e0 .. e0 + 15: x_0 (their high halves, 0 -> 1) and
 * the beta words (their low halves), in column order. */
INLINE void keys16(__m512i pre, uint64_t e0, __m512i *x0, __m512i *lo) {
    const __m512i i0 = _mm512_add_epi64(_mm512_set1_epi64((long long)e0), _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0));
    const __m512i k0 = et_rand_at8(pre, i0), k1 = et_rand_at8(pre, _mm512_add_epi64(i0, _mm512_set1_epi64(8)));
    const __m512i hi = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    const __m512i lw = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    __m512i h = _mm512_permutex2var_epi32(k0, hi, k1);
    *x0 = _mm512_mask_mov_epi32(h, _mm512_testn_epi32_mask(h, h), V(1));
    *lo = _mm512_permutex2var_epi32(k0, lw, k1);
}

/* --------------------------------------- general rounding (format_avx512.h) */

/* rnd(w) = ~rotl(w, 32 - S) for stochastic rounding (qgemm.h). */
__attribute__((noinline)) static __m512 quantize16_float(const et_qparams *p, __m512 xv, __m512i w) {
    __m512i rnd = _mm512_setzero_si512();
    if (p->mode == ET_ROUND_SR)
        rnd = _mm512_xor_si512(_mm512_rolv_epi32(w, V((32 - (23 - p->mant)) & 31)), V(0xffffffffu));
    return et_quantize16(p, xv, rnd);
}

/* --------------------------------------------- short path, normal range */

enum { K_IDENT = 0, K_RN = ET_VQ_RN, K_RZ = ET_VQ_RZ, K_SR = ET_VQ_SR };
typedef et_vq vq;
#define vq_init et_vq_init

/* format_avx512.h's short rounding; stochastic: the word's bits under the cut
 * are the increment. */
INLINE __m512i short_round(const vq *q, int kind, __m512i u, __m512i w) {
    if (kind == K_SR) return _mm512_and_si512(_mm512_add_epi32(u, _mm512_and_si512(w, q->field)), q->notmask);
    return et_vq_round(q, kind, u, w);
}

/* Checked: the short rounding when every lane takes it, else the general one
 * (out of line: the vector goes to memory there anyway). */
INLINE __m512 round_checked(const vq *q, int kind, __m512 x, __m512i w) {
    if (kind == K_IDENT) return x;
    __m512i u = _mm512_castps_si512(x);
    if (__builtin_expect(!et_vq_short_ok(q, u), 0)) return quantize16_float(q->p, x, w);
    return _mm512_castsi512_ps(short_round(q, kind, u, w));
}

/* What the fast loop records of the inputs of a rounding, so that a chunk
 * can be found to have strayed from the short path's range afterwards. */
enum {
    CK_NONE = 0, /* nothing: every input is known to be in range */
    CK_FULL = 1, /* mx = the greatest magnitude, mn = the least minus 1 (a zero
                  * counts as 2^32 - 1, i.e. not at all) */
    CK_OVER = 2  /* mx only: an accumulator sum below the normal range is
                  * exact and the short path keeps it (see block_modes) */
};

INLINE __m512 round_fast(const vq *q, int kind, int ck, __m512 x, __m512i w, __m512i *mn, __m512i *mx) {
    if (kind == K_IDENT) return x;
    __m512i u = _mm512_castps_si512(x);
    if (ck != CK_NONE) {
        __m512i a = _mm512_and_si512(u, V(0x7fffffff));
        *mx = _mm512_max_epu32(*mx, a);
        if (ck == CK_FULL) *mn = _mm512_min_epu32(*mn, _mm512_add_epi32(a, V(0xffffffffu)));
    }
    return _mm512_castsi512_ps(short_round(q, kind, u, w));
}

/* Nonzero if the recorded magnitudes left [min normal, max finite] of p. */
INLINE __mmask16 strayed(const et_qparams *p, int ck, __m512i mn, __m512i mx) {
    if (ck == CK_NONE) return 0;
    __mmask16 bad = _mm512_cmpgt_epu32_mask(mx, V(p->maxbits));
    if (ck == CK_FULL) bad |= _mm512_cmplt_epu32_mask(mn, V(p->minnorm - 1u));
    return bad;
}

/* Magnitudes of operands, as float bits: mn1 = the least nonzero one minus 1
 * (UINT32_MAX: all are zero), mx = the greatest (NaN counts, above inf). */
typedef struct mags {
    uint32_t mn1, mx;
} mags;

/* Folds the magnitudes of x[0 .. n) into mn (least nonzero minus 1) and mx. */
static inline void mags_acc(const float *x, size_t n, __m512i *mn, __m512i *mx) {
    const __m512i abs = V(0x7fffffff), m1 = V(0xffffffffu);
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 m = (__mmask16)(n - i >= 16 ? 0xffff : (1u << (n - i)) - 1);
        __m512i a = _mm512_and_si512(_mm512_maskz_loadu_epi32(m, x + i), abs);
        *mx = _mm512_max_epu32(*mx, a), *mn = _mm512_mask_min_epu32(*mn, m, *mn, _mm512_add_epi32(a, m1));
    }
}

static inline mags mags_reduce(__m512i mn, __m512i mx) {
    return (mags){_mm512_reduce_min_epu32(mn), _mm512_reduce_max_epu32(mx)};
}

/* Magnitudes of n contiguous floats. */
static inline mags mags_of(const float *x, size_t n) {
    __m512i mn = V(0xffffffffu), mx = _mm512_setzero_si512();
    mags_acc(x, n, &mn, &mx);
    return mags_reduce(mn, mx);
}

static inline float bits_f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* 1 if every product a * b (fp32) of operands with magnitudes a, b is 0 or
 * in p's normal range: fp32 multiplication is monotonic, so the products lie
 * between fl(least * least) and fl(greatest * greatest). */
static inline int products_in_range(const et_qparams *p, mags a, mags b) {
    if (a.mx >= 0x7f800000u || b.mx >= 0x7f800000u) return 0; /* inf or NaN (inf * 0 is NaN) */
    if (a.mn1 == 0xffffffffu || b.mn1 == 0xffffffffu) return 1; /* every product is 0 */
    float lo = bits_f(a.mn1 + 1u) * bits_f(b.mn1 + 1u), hi = bits_f(a.mx) * bits_f(b.mx);
    uint32_t l, h;
    memcpy(&l, &lo, 4), memcpy(&h, &hi, 4);
    return l >= p->minnorm && h <= p->maxbits;
}

/* ------------------------------------------------------------ the block */

#define RM 4   /* rows of C at a time */

typedef struct blk {
    vq qm, qa;
    int mk, ak, f16, rot; /* rot: et_qgemm_acc_rot (16-bit fields) */
    const float *ap[RM];
    size_t astep;
    const float *Bp;
} blk;

/* Products k0 .. k1 - 1 of the RM rows: p = round_mul(a * b), s = round_acc(s + p);
 * checked, or fast recording what cm / ca say in mm / ma (CK_*). */
INLINE void chunk(const blk *c, int checked, int cm, int ca, int k0, int k1, __m512 s[RM], __m512i x[RM], __m512i mm[2],
                  __m512i ma[2]) {
    const int mk = c->mk, ak = c->ak, srm = mk == K_SR, sra = ak == K_SR;
    const __m512i rotv = V(c->rot), zero = _mm512_setzero_si512();
    for (int k = k0; k < k1; k++) {
        const __m512 b = _mm512_load_ps(c->Bp + (size_t)k * 16);
#pragma GCC unroll 4 /* the rows' sums stay in registers, their chains interleave */
        for (int r = 0; r < RM; r++) {
            __m512i wm = zero, wa = zero;
            if (c->f16 && (srm || sra)) { /* one word per product */
                x[r] = xs16(x[r]);
                wm = x[r];
                wa = srm ? _mm512_rolv_epi32(x[r], rotv) : x[r]; /* rot is 0 without srm */
            } else {
                if (srm) x[r] = xs16(x[r]), wm = x[r];
                if (sra) x[r] = xs16(x[r]), wa = x[r];
            }
            __m512 p = _mm512_mul_ps(_mm512_set1_ps(c->ap[r][(size_t)k * c->astep]), b);
            p = checked ? round_checked(&c->qm, mk, p, wm) : round_fast(&c->qm, mk, cm, p, wm, &mm[0], &mm[1]);
            __m512 t = _mm512_add_ps(s[r], p);
            s[r] = checked ? round_checked(&c->qa, ak, t, wa) : round_fast(&c->qa, ak, ca, t, wa, &ma[0], &ma[1]);
        }
    }
}

/* Exponent of the finest quantum of p's format (its least subnormal). */
static int grid_exp(const et_qparams *p) { return (int)(p->minnorm >> 23) - 127 - p->mant; }

/* How the accumulator's inputs need checking at most. A sum t = s + p whose
 * magnitude is below the normal range needs the general rounding only if it
 * is off the format's grid: s always is on it (a rounded sum, or 0), and so
 * is p when it is a rounded product of a format whose grid is at least as
 * coarse, and in range (the multiplier's check makes sure). Then t is a
 * multiple of the grid below 2^emin, exact in fp32 and in the format: both
 * roundings keep it (:nosub would flush it, so no). Only overflow is left,
 * and a chunk whose sums are bounded below max finite (chunk_bounded) does
 * not need that either. */
static int acc_check(const et_qgemm_args *g, int mk) {
    if (mk == K_IDENT || g->acc.nosub) return CK_FULL;
    return grid_exp(&g->mul) >= grid_exp(&g->acc) ? CK_OVER : CK_FULL;
}

/* A chunk's sums stay below the accumulator's max finite when, with |s| <= s0
 * at its start and |a * b| <= pmax (fp32), s0 + QG_KCH pmax (1 + 2^-mant_mul)
 * is at most et_qgemm_sum_limit (qgemm.h: every rounding grows a magnitude
 * by at most one quantum). */
static inline int chunk_bounded(const et_qgemm_args *g, float s0, float pmax) {
    return (double)s0 + QG_KCH * (double)pmax * (1.0 + ldexp(1.0, -g->mul.mant)) <= g->sum_limit;
}

/* Magnitudes of op(A) at rows row[0..RM) (ta = 1: consecutive, from row[0]),
 * products k0 .. k1 - 1. */
static inline mags mags_rows(const et_qgemm_args *g, const blk *c, const int row[RM], int nrows, int k0, int k1) {
    __m512i mn = V(0xffffffffu), mx = _mm512_setzero_si512();
    if (!g->ta)
        for (int r = 0; r < nrows; r++) mags_acc(c->ap[r] + k0, (size_t)(k1 - k0), &mn, &mx);
    else /* A[k * lda + row]: the rows' values at one k are contiguous */
        for (int k = k0; k < k1; k++) mags_acc(g->A + row[0] + (size_t)k * g->lda, (size_t)nrows, &mn, &mx);
    return mags_reduce(mn, mx);
}

INLINE void block(const et_qgemm_args *g, int i0, int i1, int j0, int j1, const float *Bp, const mags *bch, int mk,
                  int ak, int f16) {
    blk c;
    vq_init(&c.qm, &g->mul);
    vq_init(&c.qa, &g->acc);
    c.mk = mk, c.ak = ak, c.f16 = f16, c.rot = (int)et_qgemm_acc_rot(g);
    c.astep = g->ta ? (size_t)g->lda : 1;
    c.Bp = Bp;
    const int N = g->N, K = g->K;
    const int sr = mk == K_SR || ak == K_SR;
    const int ca0 = ak == K_IDENT ? CK_NONE : acc_check(g, mk);
    const __m512i pre = _mm512_set1_epi64((long long)g->acc.prefix); /* mul and acc share the key */
    const __mmask16 cmask = (__mmask16)(j1 - j0 == 16 ? 0xffff : (1u << (j1 - j0)) - 1);
    const __m512 beta = _mm512_set1_ps(g->beta);
    const __m512i zero = _mm512_setzero_si512(), ones = V(0xffffffffu), abs = V(0x7fffffff);
    for (int i = i0; i < i1; i += RM) {
        int row[RM];
        const int nrows = i1 - i < RM ? i1 - i : RM;
        __m512 s[RM];
        __m512i x[RM]; /* the columns' xorshift32 states */
        for (int r = 0; r < RM; r++) {
            row[r] = i + r < i1 ? i + r : i1 - 1; /* short tail: repeat the last row */
            c.ap[r] = g->ta ? g->A + row[r] : g->A + (size_t)row[r] * g->lda;
            float *cp = g->C + (size_t)row[r] * g->ldc + j0;
            __m512i lo = zero;
            x[r] = zero;
            if (sr) keys16(pre, (uint64_t)row[r] * (uint64_t)N + (uint64_t)j0, &x[r], &lo);
            s[r] = g->beta != 0.0f ? round_checked(&c.qa, ak, _mm512_mul_ps(beta, _mm512_maskz_loadu_ps(cmask, cp)), lo)
                                   : _mm512_setzero_ps();
        }
        for (int k0 = 0; k0 < K; k0 += QG_KCH) {
            const int k1 = k0 + QG_KCH < K ? k0 + QG_KCH : K;
            /* the checks this chunk needs: none for the products when the
             * operands' magnitudes keep them in range, none for the sums when
             * they are bounded below max finite */
            int cm = CK_NONE, ca = ca0;
            if (mk != K_IDENT) {
                mags am = mags_rows(g, &c, row, nrows, k0, k1), bm = bch[k0 / QG_KCH];
                if (!products_in_range(&g->mul, am, bm)) cm = CK_FULL;
                if (ca == CK_OVER && am.mx < 0x7f800000u && bm.mx < 0x7f800000u) {
                    __m512i sm = zero;
                    for (int r = 0; r < RM; r++) sm = _mm512_max_epu32(sm, _mm512_and_si512(_mm512_castps_si512(s[r]), abs));
                    uint32_t s0 = _mm512_reduce_max_epu32(sm);
                    if (s0 < 0x7f800000u && chunk_bounded(g, bits_f(s0), bits_f(am.mx) * bits_f(bm.mx)))
                        ca = CK_NONE;
                }
            }
            __m512 s0[RM];
            __m512i x0[RM], mm[2] = {ones, zero}, ma[2] = {ones, zero};
            for (int r = 0; r < RM; r++) s0[r] = s[r], x0[r] = x[r];
            /* the fast loops (the checks are constants in each) */
#define FAST(m, a) else if (cm == (m) && ca == (a)) chunk(&c, 0, m, a, k0, k1, s, x, mm, ma)
            if (0) {}
            FAST(CK_NONE, CK_NONE); FAST(CK_NONE, CK_OVER); FAST(CK_NONE, CK_FULL);
            FAST(CK_FULL, CK_NONE); FAST(CK_FULL, CK_OVER); FAST(CK_FULL, CK_FULL);
#undef FAST
            __mmask16 bad = strayed(&g->mul, cm, mm[0], mm[1]) | strayed(&g->acc, ca, ma[0], ma[1]);
            if (__builtin_expect(bad != 0, 0)) { /* again, checked */
                for (int r = 0; r < RM; r++) s[r] = s0[r], x[r] = x0[r];
                chunk(&c, 1, CK_NONE, CK_NONE, k0, k1, s, x, mm, ma);
            }
        }
        for (int r = RM - 1; r >= 0; r--) /* repeated tail rows hold the same values */
            _mm512_mask_storeu_ps(g->C + (size_t)row[r] * g->ldc + j0, cmask, s[r]);
    }
}

/* One out-of-line function per (multiplier, accumulator, field layout), so
 * that each gets its own register allocation (one function holding them all
 * kept the sums and generator states in memory). */
#define BLOCK_FN(m, a, f)                                                                                              \
    static __attribute__((noinline)) void block_##m##_##a##_##f(const et_qgemm_args *g, int i0, int i1, int j0,      \
                                                                 int j1, const float *Bp, const mags *bch) {          \
        block(g, i0, i1, j0, j1, Bp, bch, m, a, f);                                                                    \
    }
#define BLOCK_FNS(m)                                                                                                   \
    BLOCK_FN(m, 0, 0) BLOCK_FN(m, 1, 0) BLOCK_FN(m, 2, 0) BLOCK_FN(m, 3, 0)                                            \
    BLOCK_FN(m, 0, 1) BLOCK_FN(m, 1, 1) BLOCK_FN(m, 2, 1) BLOCK_FN(m, 3, 1)
BLOCK_FNS(0) BLOCK_FNS(1) BLOCK_FNS(2) BLOCK_FNS(3)
#undef BLOCK_FNS
#undef BLOCK_FN

#define CASE(m, a)                                                                                                     \
    case (m) * 4 + (a):                                                                                                \
        if (((m) == K_SR || (a) == K_SR) && f16) block_##m##_##a##_1(g, i0, i1, j0, j1, Bp, bch);                     \
        else block_##m##_##a##_0(g, i0, i1, j0, j1, Bp, bch);                                                          \
        break;

static int kind_of(const et_qparams *p, int ident) {
    if (ident) return K_IDENT;
    return p->mode == ET_ROUND_RN ? K_RN : p->mode == ET_ROUND_RZ ? K_RZ : K_SR;
}

void et_qgemm_avx512_block(const et_qgemm_args *g, int i0, int i1, int j0, int j1, float *Bp, int pack) {
    const int K = g->K, nc = j1 - j0;
    int mk = kind_of(&g->mul, g->mul_ident), ak = kind_of(&g->acc, g->acc_ident);
    const int f16 = et_qgemm_fields16(g);
    /* magnitudes of the panel's chunks (0 past N), after the panel */
    mags *bch = (mags *)(Bp + (size_t)K * 16);
    if (pack) { /* columns j0 .. j1 of op(B) into Bp, then its chunks' magnitudes */
        if (!g->tb) { /* row k of op(B): 16 contiguous floats, zero past N */
            const __mmask16 m = (__mmask16)(nc >= 16 ? 0xffff : (1u << nc) - 1);
            for (int k = 0; k < K; k++)
                _mm512_store_ps(Bp + (size_t)k * 16, _mm512_maskz_loadu_ps(m, g->B + (size_t)k * g->ldb + j0));
        } else { /* column l of the panel is row j0 + l of B: 16 k's of each row, transposed */
            for (int k0 = 0; k0 < K; k0 += 16) {
                const __mmask16 km = (__mmask16)(K - k0 >= 16 ? 0xffff : (1u << (K - k0)) - 1);
                __m512 r[16];
                for (int l = 0; l < 16; l++)
                    r[l] = l < nc ? _mm512_maskz_loadu_ps(km, g->B + (size_t)(j0 + l) * g->ldb + k0) : _mm512_setzero_ps();
                et_tr16_avx512(r);
                for (int kk = 0; kk < 16 && k0 + kk < K; kk++) _mm512_store_ps(Bp + (size_t)(k0 + kk) * 16, r[kk]);
            }
        }
        if (mk != K_IDENT)
            for (int k0 = 0; k0 < K; k0 += QG_KCH)
                bch[k0 / QG_KCH] = mags_of(Bp + (size_t)k0 * 16, (size_t)((K - k0 < QG_KCH ? K - k0 : QG_KCH) * 16));
    }
    switch (mk * 4 + ak) {
        CASE(0, 0) CASE(0, 1) CASE(0, 2) CASE(0, 3)
        CASE(1, 0) CASE(1, 1) CASE(1, 2) CASE(1, 3)
        CASE(2, 0) CASE(2, 1) CASE(2, 2) CASE(2, 3)
        CASE(3, 0) CASE(3, 1) CASE(3, 2) CASE(3, 3)
    }
}
