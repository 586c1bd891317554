/* AVX-512 micro-kernel (8 x 48: 24 zmm accumulators, A broadcast from memory,
 * three zmm loads of B per step) and the transposing B packer.
 * See gemm_internal.h for the contract. */
#include <immintrin.h>

#include "core/amax.h"
#include "kernels/gemm_internal.h"

#define MR ET_GEMM_AVX512_MR
#define NR ET_GEMM_AVX512_NR
#define NV (NR / 16)

/* The tile kernel for RM rows and NVx16 columns: the loop trip counts are
 * compile-time constants after inlining, so the accumulators live in
 * registers. Narrower instances serve partial tiles; every element is still
 * summed in the same order, so the instance used never changes a result. */
static inline __attribute__((always_inline)) void tile(const int RM, const int NVv, int m, int n,
                                                       int k, const float *a, ptrdiff_t ars,
                                                       ptrdiff_t as,
                                                       const float *b, ptrdiff_t bs, float *c,
                                                       ptrdiff_t ldc, float alpha, float beta) {
    (void)m; /* == RM */
    __m512 acc[MR][NV];
#pragma GCC unroll 8
    for (int r = 0; r < RM; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NVv; v++) acc[r][v] = _mm512_setzero_ps();

    for (int p = 0; p < k; p++) {
        __m512 bv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NVv; v++) bv[v] = _mm512_loadu_ps(b + 16 * v);
#pragma GCC unroll 8
        for (int r = 0; r < RM; r++) {
            __m512 ar = _mm512_set1_ps(a[r * ars]);
#pragma GCC unroll 4
            for (int v = 0; v < NVv; v++) acc[r][v] = _mm512_fmadd_ps(ar, bv[v], acc[r][v]);
        }
        a += as;
        b += bs;
    }

    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    if (n == 16 * NVv) {
        if (beta == 0.0f) {
#pragma GCC unroll 8
            for (int r = 0; r < RM; r++)
#pragma GCC unroll 4
                for (int v = 0; v < NVv; v++)
                    _mm512_storeu_ps(c + r * ldc + 16 * v, _mm512_mul_ps(va, acc[r][v]));
        } else {
#pragma GCC unroll 8
            for (int r = 0; r < RM; r++)
#pragma GCC unroll 4
                for (int v = 0; v < NVv; v++) {
                    float *cp = c + r * ldc + 16 * v;
                    __m512 cv = _mm512_mul_ps(vb, _mm512_loadu_ps(cp));
                    _mm512_storeu_ps(cp, _mm512_fmadd_ps(va, acc[r][v], cv));
                }
        }
        return;
    }
    __mmask16 mk[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NVv; v++) {
        int left = n - 16 * v;
        mk[v] = left >= 16 ? (__mmask16)0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
    }
#pragma GCC unroll 8
    for (int r = 0; r < RM; r++) {
#pragma GCC unroll 4
        for (int v = 0; v < NVv; v++) {
            float *cp = c + r * ldc + 16 * v;
            __m512 t;
            if (beta == 0.0f)
                t = _mm512_mul_ps(va, acc[r][v]);
            else
                t = _mm512_fmadd_ps(va, acc[r][v],
                                    _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(mk[v], cp)));
            _mm512_mask_storeu_ps(cp, mk[v], t);
        }
    }
}

/* Instances: P reads packed A (ars == 1, known at compile time), S reads A
 * in place with any row stride. */
#define TILE_FN(RM, NVv)                                                                         \
    static void tileP_##RM##x##NVv(int m, int n, int k, const float *a, ptrdiff_t ars,           \
                                   ptrdiff_t as, const float *b, ptrdiff_t bs, float *c,         \
                                   ptrdiff_t ldc, float alpha, float beta) {                     \
        (void)ars;                                                                               \
        tile(RM, NVv, m, n, k, a, 1, as, b, bs, c, ldc, alpha, beta);                           \
    }                                                                                            \
    static void tileS_##RM##x##NVv(int m, int n, int k, const float *a, ptrdiff_t ars,           \
                                   ptrdiff_t as, const float *b, ptrdiff_t bs, float *c,         \
                                   ptrdiff_t ldc, float alpha, float beta) {                     \
        tile(RM, NVv, m, n, k, a, ars, as, b, bs, c, ldc, alpha, beta);                         \
    }
#define TILE_ROW(RM) TILE_FN(RM, 1) TILE_FN(RM, 2) TILE_FN(RM, 3)
TILE_ROW(1)
TILE_ROW(2)
TILE_ROW(3)
TILE_ROW(4)
TILE_ROW(5)
TILE_ROW(6)
TILE_ROW(7)
TILE_ROW(8)

typedef void (*tile_fn)(int, int, int, const float *, ptrdiff_t, ptrdiff_t, const float *,
                        ptrdiff_t, float *, ptrdiff_t, float, float);
#define TILE_PTRS(X, RM) {X##_##RM##x1, X##_##RM##x2, X##_##RM##x3}
static const tile_fn tiles[2][MR][NV] = {
    {TILE_PTRS(tileP, 1), TILE_PTRS(tileP, 2), TILE_PTRS(tileP, 3), TILE_PTRS(tileP, 4),
     TILE_PTRS(tileP, 5), TILE_PTRS(tileP, 6), TILE_PTRS(tileP, 7), TILE_PTRS(tileP, 8)},
    {TILE_PTRS(tileS, 1), TILE_PTRS(tileS, 2), TILE_PTRS(tileS, 3), TILE_PTRS(tileS, 4),
     TILE_PTRS(tileS, 5), TILE_PTRS(tileS, 6), TILE_PTRS(tileS, 7), TILE_PTRS(tileS, 8)},
};

void et_gemm_ukernel_avx512(int m, int n, int k, const float *a, ptrdiff_t ars, ptrdiff_t as,
                            const float *b, ptrdiff_t bs, float *c, ptrdiff_t ldc, float alpha,
                            float beta) {
    if (ars == 1 && m == MR && n == NR)
        tileP_8x3(m, n, k, a, ars, as, b, bs, c, ldc, alpha, beta);
    else
        tiles[ars != 1][m - 1][(n - 1) / 16](m, n, k, a, ars, as, b, bs, c, ldc, alpha, beta);
}

#ifndef PF_HINT
#define PF_HINT _MM_HINT_T0
#endif
#ifndef PF_DIST
#define PF_DIST 64 /* floats ahead (4 cache lines) */
#endif

/* 16 x 16 transpose of rows s[0..16) (stride ls) into d (stride ld). */
static inline __attribute__((always_inline)) void transpose16(const float *s, ptrdiff_t ls,
                                                              float *d, ptrdiff_t ld, int rows) {
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++) {
        if (i < rows) {
            /* rows are long strided streams the hardware prefetchers lose track of */
            _mm_prefetch((const char *)(s + i * ls + PF_DIST), PF_HINT);
            r[i] = _mm512_loadu_ps(s + i * ls);
        } else {
            r[i] = _mm512_setzero_ps(); /* padding columns of the panel */
        }
    }
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xee);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
    /* r[4q + j] now holds, in each 128-bit lane L, column 4L' + j ... of rows
     * 4q..4q+3; finish with 128-bit lane shuffles */
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
        r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
        r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xdd);
    }
    for (int i = 0; i < 16; i++) _mm512_storeu_ps(d + i * ld, r[i]);
}

/* 8 x 8 transpose of rows s[0..8) (stride ls) into 8 contiguous rows of 8. */
static inline __attribute__((always_inline)) void transpose8(const float *s, ptrdiff_t ls,
                                                             float *d, int rows) {
    __m256 r[8], t[8], u[8];
    for (int i = 0; i < 8; i++) {
        if (i < rows) {
            _mm_prefetch((const char *)(s + i * ls + PF_DIST), PF_HINT);
            r[i] = _mm256_loadu_ps(s + i * ls);
        } else {
            r[i] = _mm256_setzero_ps(); /* padding rows of the panel */
        }
    }
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
    for (int i = 0; i < 4; i++) {
        _mm256_storeu_ps(d + 8 * i, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
        _mm256_storeu_ps(d + 8 * (i + 4), _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
    }
}

void et_gemm_packa_avx512(int ta, const float *A, ptrdiff_t lda, int i0, int m, int kc,
                          float *dst) {
    int p = 0;
    if (!ta) {
        /* A is M x K: 8 rows, transposed 8 x 8 at a time */
        const float *s = A + (ptrdiff_t)i0 * lda;
        if (m == MR)
            for (; p + 8 <= kc; p += 8) transpose8(s + p, lda, dst + (ptrdiff_t)p * MR, MR);
        else
            for (; p + 8 <= kc; p += 8) transpose8(s + p, lda, dst + (ptrdiff_t)p * MR, m);
        for (; p < kc; p++) {
            float *dp = dst + (ptrdiff_t)p * MR;
            int r = 0;
            for (; r < m; r++) dp[r] = s[(ptrdiff_t)r * lda + p];
            for (; r < MR; r++) dp[r] = 0.0f;
        }
    } else {
        /* A is K x M: row p holds the panel's m values contiguously */
        const float *s = A + i0;
        __mmask16 mk = (__mmask16)((1u << m) - 1);
        for (; p < kc; p++)
            _mm256_storeu_ps(dst + (ptrdiff_t)p * MR,
                             _mm512_castps512_ps256(_mm512_maskz_loadu_ps(mk, s + (ptrdiff_t)p * lda)));
    }
}

void et_gemm_packb_avx512(int tb, const float *B, ptrdiff_t ldb, int p0, int kc, int j0, int n,
                          float *dst) {
    const ptrdiff_t panel = (ptrdiff_t)kc * NR;
    if (!tb) {
        /* B is K x N: walk each row of the block once, left to right, so the
         * reads are one sequential stream per row, and deal it into panels. */
        int full = n / NR, rest = n - full * NR;
        __mmask16 mk[NV];
        for (int v = 0; v < NV; v++) {
            int left = rest - 16 * v;
            mk[v] = left >= 16 ? (__mmask16)0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
        }
        for (int p = 0; p < kc; p++) {
            const float *sp = B + (ptrdiff_t)(p0 + p) * ldb + j0;
            float *dp = dst + (ptrdiff_t)p * NR;
            for (int q = 0; q < full; q++) {
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++)
                    _mm512_storeu_ps(dp + q * panel + 16 * v, _mm512_loadu_ps(sp + q * NR + 16 * v));
            }
            if (rest) {
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++)
                    _mm512_storeu_ps(dp + full * panel + 16 * v,
                                     _mm512_maskz_loadu_ps(mk[v], sp + full * NR + 16 * v));
            }
        }
        return;
    }
    /* tb: op(B)[p][j] = B[j*ldb + p]. Each group of 16 columns is 16 rows of
     * B read as 16 sequential streams and transposed 16 x 16 at a time. */
    for (int jg = 0; jg < n; jg += 16) {
        const float *s = B + (ptrdiff_t)(j0 + jg) * ldb + p0;
        float *d = dst + (jg / NR) * panel + jg % NR;
        int cols = n - jg < 16 ? n - jg : 16, p = 0;
        if (cols == 16)
            for (; p + 16 <= kc; p += 16) transpose16(s + p, ldb, d + (ptrdiff_t)p * NR, NR, 16);
        else
            for (; p + 16 <= kc; p += 16) transpose16(s + p, ldb, d + (ptrdiff_t)p * NR, NR, cols);
        for (; p < kc; p++) {
            float *dp = d + (ptrdiff_t)p * NR;
            int j = 0;
            for (; j < cols; j++) dp[j] = s[(ptrdiff_t)j * ldb + p];
            for (; j < 16; j++) dp[j] = 0.0f;
        }
    }
    /* zero the column groups of the last panel that hold no columns */
    int used = (n + 15) / 16 * 16;
    if (used % NR)
        for (int p = 0; p < kc; p++)
            for (int j = used % NR; j < NR; j++) dst[(used / NR) * panel + (ptrdiff_t)p * NR + j] = 0.0f;
}

/* ------------------------------------------- implicit im2col (gemm.c) */

/* et_sgemm_convA's packer (gemm_internal.h): m rows of the column matrix,
 * read from x 16 columns at a time by masked loads (0 outside the image),
 * copied into a row-major panel that the micro-kernel reads in place. */
void et_convA_packa_avx512(int m, int kc, const float *const *src, const uint64_t *const *bits, float *dst) {
    for (int q = 0; q < m; q++) {
        const float *s = src[q];
        const uint64_t *b = bits[q];
        float *d = dst + (ptrdiff_t)q * kc;
        int p = 0;
        for (; p + 16 <= kc; p += 16)
            _mm512_storeu_ps(d + p, _mm512_maskz_loadu_ps((__mmask16)(b[p >> 6] >> (p & 63)), s + p));
        if (p < kc) {
            const __mmask16 st = (__mmask16)((1u << (kc - p)) - 1);
            _mm512_mask_storeu_ps(d + p, st, _mm512_maskz_loadu_ps((__mmask16)(b[p >> 6] >> (p & 63)) & st, s + p));
        }
    }
}

/* et_sgemm_convb's B panel: dst[p*NR + j] = step p of op(B) at column j,
 * x + ks[p].off + j under the tap's masks tm + ks[p].tap (0 outside the
 * image and past the columns, as im2col's padding), NR wide: the panel
 * et_gemm_packb_avx512 makes from im2col's matrix */
void et_convb_packb_avx512(int k, const float *x, const et_convb_step *ks, const uint16_t *tm, float *dst) {
    for (int p = 0; p < k; p++, dst += NR) {
        const float *s = x + ks[p].off;
        const uint16_t *tp = tm + ks[p].tap;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) _mm512_storeu_ps(dst + 16 * v, _mm512_maskz_loadu_ps((__mmask16)tp[v], s + 16 * v));
    }
}

/* et_gemm_epi_apply's rows with 16 columns per step: the bias add, the ReLU
 * (v > 0 ? v : 0) and the mask as selects, in one pass (the same values as
 * the portable loops: each element gets the same one rounding and selects). */
void et_gemm_epi_apply_avx512(const et_gemm_epi *epi, int r0, int M, int N, float *C, ptrdiff_t ldc) {
    const __m512 z = _mm512_setzero_ps();
    const __m128i z8 = _mm_setzero_si128();
    __m512 mx = z; /* the stored values' absmax (amax) */
    for (int r = 0; r < M; r++) {
        float *c = C + (ptrdiff_t)r * ldc;
        const uint8_t *m = epi->mask ? epi->mask + (c - epi->c0) : NULL;
        const __m512 b = _mm512_set1_ps(epi->row_bias ? epi->row_bias[r0 + r] : 0.0f);
        for (int j = 0; j < N; j += 16) {
            const __mmask16 lim = N - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (N - j)) - 1);
            __m512 v = _mm512_maskz_loadu_ps(lim, c + j);
            __mmask16 keep = lim;
            if (epi->row_bias) v = _mm512_add_ps(v, b);
            if (epi->relu) keep &= _mm512_cmp_ps_mask(v, z, _CMP_GT_OQ);
            if (m) keep &= _mm_mask_cmpneq_epi8_mask(lim, _mm_maskz_loadu_epi8(lim, m + j), z8);
            v = _mm512_maskz_mov_ps(keep, v);
            _mm512_mask_storeu_ps(c + j, lim, v);
            if (epi->amax) mx = _mm512_max_ps(_mm512_abs_ps(v), mx); /* a NaN in v gives mx */
        }
    }
    if (epi->amax) et_amax_merge(epi->amax, _mm512_reduce_max_ps(mx));
}
