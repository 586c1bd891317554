/* INT8 GEMM block with AVX-512 VNNI (kernels/igemm.h): vpdpbusd multiplies
 * unsigned bytes by signed bytes, so A is packed as A + 128 and 128 times the
 * column sums of B are subtracted at the end: sum (a+128) b - 128 sum b =
 * sum a b, exact in int32 (wrapping, like the scalar loop). 8 rows x 32
 * columns of C in 16 accumulators, the last 1..7 rows with as many. */
#include "kernels/igemm.h"

#include <immintrin.h>
#include <string.h>

#define RMI 8

/* Converts 16 int32 sums to float: (float)((double)s * sab), then + fl(beta * C). */
static inline __m512 to_float(__m512i t, __m512d sv) {
    __m256 lo = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtepi32_pd(_mm512_castsi512_si256(t)), sv));
    __m256 hi = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(t, 1)), sv));
    return _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
}

/* R (1..RMI) rows of one 8-row block (A interleaved: a[q * 8 + r]): sums
 * over all q in named accumulators (arrays make GCC copy them every step),
 * then the store (int32, or float as et_igemm_f32 describes). */
#define ACC8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
/* acc += a (unsigned bytes) . b (signed bytes), in place (_mm512_dpbusd_epi32
 * makes GCC copy and spill the accumulators) */
#define DPBUSD(acc, a, b) __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b))
static inline __attribute__((always_inline)) void rows(int R, int half, const uint32_t *a, int Kq, const int8_t *Bp, __m512i cs0,
                                                       __m512i cs1, __mmask16 m0, __mmask16 m1, int i, int32_t *C,
                                                       float *Cf, int ldc, double sab, float beta) {
#define DECL(r) __m512i x##r = _mm512_setzero_si512(), y##r = _mm512_setzero_si512();
    ACC8(DECL)
#undef DECL
    for (int q = 0; q < Kq; q++, a += 8) {
        __m512i b0 = _mm512_load_si512(Bp + (size_t)q * 128), b1 = half ? b0 : _mm512_load_si512(Bp + (size_t)q * 128 + 64);
#define DP(r)                                                                                                          \
    if (R > r) {                                                                                                       \
        __m512i av = _mm512_set1_epi32((int)a[r]);                                                                     \
        DPBUSD(x##r, av, b0);                                                                                          \
        if (!half) DPBUSD(y##r, av, b1);                                                                               \
    }
        ACC8(DP)
#undef DP
    }
    const __m512d sv = _mm512_set1_pd(sab);
    const __m512 bv = _mm512_set1_ps(beta);
#define ST(r)                                                                                                          \
    if (R > r) {                                                                                                       \
        __m512i s0 = _mm512_sub_epi32(x##r, cs0), s1 = _mm512_sub_epi32(y##r, cs1);                                    \
        if (!Cf) {                                                                                                     \
            int32_t *c = C + (size_t)(i + r) * ldc;                                                                    \
            _mm512_mask_storeu_epi32(c, m0, s0);                                                                       \
            if (!half) _mm512_mask_storeu_epi32(c + 16, m1, s1);                                                       \
        } else {                                                                                                       \
            float *c = Cf + (size_t)(i + r) * ldc;                                                                     \
            __m512 v0 = to_float(s0, sv);                                                                              \
            if (beta != 0.0f) v0 = _mm512_add_ps(_mm512_mul_ps(bv, _mm512_maskz_loadu_ps(m0, c)), v0);                 \
            if (m0 == 0xffff) _mm512_storeu_ps(c, v0); /* plain stores for whole vectors */                            \
            else _mm512_mask_storeu_ps(c, m0, v0);                                                                     \
            if (!half) {                                                                                               \
                __m512 v1 = to_float(s1, sv);                                                                          \
                if (beta != 0.0f) v1 = _mm512_add_ps(_mm512_mul_ps(bv, _mm512_maskz_loadu_ps(m1, c + 16)), v1);        \
                if (m1 == 0xffff) _mm512_storeu_ps(c + 16, v1);                                                        \
                else _mm512_mask_storeu_ps(c + 16, m1, v1);                                                            \
            }                                                                                                          \
        }                                                                                                              \
    }
    ACC8(ST)
#undef ST
}

static inline __attribute__((always_inline)) void block_w(int half, const uint32_t *Ap, int Kq, const int8_t *Bp,
                                                        const int32_t *colsum128, int i0, int i1, int nc, int32_t *C,
                                                        float *Cf, int ldc, double sab, float beta) {
    __mmask16 m0 = (__mmask16)(nc >= 16 ? 0xffff : (1u << nc) - 1);
    __mmask16 m1 = (__mmask16)(nc >= 32 ? 0xffff : nc <= 16 ? 0 : (1u << (nc - 16)) - 1);
    __m512i cs0 = _mm512_loadu_si512(colsum128), cs1 = _mm512_loadu_si512(colsum128 + 16);
    int i = i0; /* i0 is a multiple of 8 */
    for (; i + RMI <= i1; i += RMI) rows(RMI, half, Ap + (size_t)i * Kq, Kq, Bp, cs0, cs1, m0, m1, i, C, Cf, ldc, sab, beta);
    const uint32_t *Ai = Ap + (size_t)i * Kq;
    switch (i1 - i) { /* the last rows: no work on rows past i1 */
    case 1: rows(1, half, Ai, Kq, Bp, cs0, cs1, m0, m1, i, C, Cf, ldc, sab, beta); break;
    case 2: rows(2, half, Ai, Kq, Bp, cs0, cs1, m0, m1, i, C, Cf, ldc, sab, beta); break;
    case 3: rows(3, half, Ai, Kq, Bp, cs0, cs1, m0, m1, i, C, Cf, ldc, sab, beta); break;
    case 4: rows(4, half, Ai, Kq, Bp, cs0, cs1, m0, m1, i, C, Cf, ldc, sab, beta); break;
    case 5: rows(5, half, Ai, Kq, Bp, cs0, cs1, m0, m1, i, C, Cf, ldc, sab, beta); break;
    case 6: rows(6, half, Ai, Kq, Bp, cs0, cs1, m0, m1, i, C, Cf, ldc, sab, beta); break;
    case 7: rows(7, half, Ai, Kq, Bp, cs0, cs1, m0, m1, i, C, Cf, ldc, sab, beta); break;
    default: break;
    }
}

/* A panel with at most 16 live columns (N = 9, 10, ... or the last panel)
 * runs on its first half only: one accumulator per row. */
static inline __attribute__((always_inline)) void block(const uint32_t *Ap, int Kq, const int8_t *Bp,
                                                        const int32_t *colsum128, int i0, int i1, int nc, int32_t *C,
                                                        float *Cf, int ldc, double sab, float beta) {
    if (nc <= 16) block_w(1, Ap, Kq, Bp, colsum128, i0, i1, nc, C, Cf, ldc, sab, beta);
    else block_w(0, Ap, Kq, Bp, colsum128, i0, i1, nc, C, Cf, ldc, sab, beta);
}

void et_igemm_avx512_block(const uint32_t *Ap, int Kq, const int8_t *Bp, const int32_t *colsum128, int i0, int i1,
                           int nc, int32_t *C, int ldc) {
    block(Ap, Kq, Bp, colsum128, i0, i1, nc, C, NULL, ldc, 0, 0);
}

void et_igemm_avx512_block_f32(const uint32_t *Ap, int Kq, const int8_t *Bp, const int32_t *colsum128, int i0,
                               int i1, int nc, float *C, int ldc, double sab, float beta) {
    block(Ap, Kq, Bp, colsum128, i0, i1, nc, NULL, C, ldc, sab, beta);
}

/* ------------------------------------------------ packing from floats */

/* Codes of 16 floats on the grid of a scale, r = fl(1 / scale): rne(x * r)
 * clamped to [-127, 127], NaN -> 0 (et_igemm_code, lane for lane). */
static inline __m512i codes16(__m512 x, __m512 r) {
    /* clamping before rounding gives the same codes: |v| > 127 rounds to a
     * value >= 127 in magnitude either way; the conversion rounds to nearest even */
    __m512 v = _mm512_mul_ps(x, r);
    __mmask16 ord = _mm512_cmp_ps_mask(v, v, _CMP_ORD_Q);
    v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-127.0f)), _mm512_set1_ps(127.0f));
    return _mm512_maskz_cvt_roundps_epi32(ord, v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

static inline __mmask16 lanes(int n) { return (__mmask16)(n >= 16 ? 0xffff : n <= 0 ? 0 : (1u << n) - 1); }

/* Four code vectors (k = 4q..4q+3) as the little-endian bytes of one dword. */
static inline __m512i bytes4(__m512i c0, __m512i c1, __m512i c2, __m512i c3) {
    const __m512i ff = _mm512_set1_epi32(0xff);
    __m512i w = _mm512_and_si512(c0, ff);
    w = _mm512_or_si512(w, _mm512_slli_epi32(_mm512_and_si512(c1, ff), 8));
    w = _mm512_or_si512(w, _mm512_slli_epi32(_mm512_and_si512(c2, ff), 16));
    return _mm512_or_si512(w, _mm512_slli_epi32(c3, 24));
}

void et_igemm_avx512_pack_a(const float *A, int lda, int ta, float scale, int K, int Kq, int i0, int i1, uint32_t *Ap) {
    const __m512 s = _mm512_set1_ps(1.0f / scale);
    const __m512i b128 = _mm512_set1_epi32(128);
    if (!ta) { /* row i of op(A) is contiguous: per 16 k's, 8 rows x 4 dwords,
                  transposed into 4 runs of 8 dwords (one per q) */
        for (int b0 = i0; b0 < i1; b0 += 8) {
            const float *row[8];
            int live[8];
            for (int r = 0; r < 8; r++) {
                live[r] = b0 + r < i1;
                row[r] = A + (size_t)(live[r] ? b0 + r : b0) * lda;
            }
            uint32_t *dst = Ap + (size_t)b0 * Kq;
            for (int k = 0; k < Kq * 4; k += 16) {
                const __mmask16 mk = lanes(K - k);
                __m128i x[8];
                for (int r = 0; r < 8; r++)
                    x[r] = live[r] ? _mm512_cvtepi32_epi8(
                                         _mm512_add_epi32(codes16(_mm512_maskz_loadu_ps(mk, row[r] + k), s), b128))
                                   : _mm_setzero_si128();
                __m128i y[2][4];
                for (int h = 0; h < 2; h++) {
                    __m128i *v = x + 4 * h;
                    __m128i l01 = _mm_unpacklo_epi32(v[0], v[1]), h01 = _mm_unpackhi_epi32(v[0], v[1]);
                    __m128i l23 = _mm_unpacklo_epi32(v[2], v[3]), h23 = _mm_unpackhi_epi32(v[2], v[3]);
                    y[h][0] = _mm_unpacklo_epi64(l01, l23), y[h][1] = _mm_unpackhi_epi64(l01, l23);
                    y[h][2] = _mm_unpacklo_epi64(h01, h23), y[h][3] = _mm_unpackhi_epi64(h01, h23);
                }
                const int q0 = k / 4;
                for (int t = 0; t < 4 && q0 + t < Kq; t++)
                    _mm256_storeu_si256((__m256i *)(dst + (size_t)(q0 + t) * 8), _mm256_set_m128i(y[1][t], y[0][t]));
            }
        }
        return;
    }
    /* op(A)[i][k] = A[k*lda + i]: 16 rows (two 8-row blocks, i0 a multiple
     * of 16) at a time, one dword per row and q: 8 contiguous dwords per block */
    const __mmask16 mi = lanes(i1 - i0);
    uint32_t *blk0 = Ap + (size_t)i0 * Kq, *blk1 = Ap + (size_t)(i0 + 8) * Kq;
    for (int q = 0; q < Kq; q++) {
        __m512i c[4];
        for (int l = 0; l < 4; l++) {
            int k = 4 * q + l;
            c[l] = k < K ? codes16(_mm512_maskz_loadu_ps(mi, A + (size_t)k * lda + i0), s) : _mm512_setzero_si512();
            c[l] = _mm512_add_epi32(c[l], b128);
        }
        __m512i w = bytes4(c[0], c[1], c[2], c[3]);
        _mm256_mask_storeu_epi32(blk0 + (size_t)q * 8, (__mmask8)mi, _mm512_castsi512_si256(w));
        if (mi >> 8) _mm256_mask_storeu_epi32(blk1 + (size_t)q * 8, (__mmask8)(mi >> 8), _mm512_extracti64x4_epi64(w, 1));
    }
}

static void pack_b_panel_t(const float *B, int ldb, __m512 s, int K, int N, int Kq, int j0, int8_t *bp,
                           int32_t *colsum128);
static void zero_tail_columns(int8_t *bp, int Kq, int c, int nc);

void et_igemm_avx512_pack_b(const float *B, int ldb, int tb, float scale, int K, int N, int Kq, int j0, int npan,
                            int8_t *bp, size_t panel_bytes, int32_t *colsum128) {
    const __m512 s = _mm512_set1_ps(1.0f / scale);
    if (tb) {
        for (int p = 0; p < npan; p++)
            pack_b_panel_t(B, ldb, s, K, N, Kq, j0 + 32 * p, bp + panel_bytes * p, colsum128 + 32 * p);
        return;
    }
    /* row k of op(B) is contiguous: for each q, 4 rows x 16 columns -> 16
     * dwords; the rows are read along all npan panels (sequential streams) */
    const int nch = 2 * npan; /* 16-column chunks */
    __m512i sum[2 * 8];
    for (int h = 0; h < nch; h++) sum[h] = _mm512_setzero_si512();
    for (int q = 0; q < Kq; q++) {
        const float *r[4];
        int nk = K - 4 * q < 4 ? K - 4 * q : 4;
        const float *nx[4]; /* the next q's rows, prefetched a line per chunk */
        for (int l = 0; l < 4; l++) {
            r[l] = B + (size_t)(4 * q + (l < nk ? l : 0)) * ldb + j0;
            int kn = 4 * q + 4 + l < K ? 4 * q + 4 + l : 4 * q + (l < nk ? l : 0);
            nx[l] = B + (size_t)kn * ldb + j0;
        }
        for (int h = 0; h < nch; h++) {
            const __mmask16 mh = lanes(N - j0 - 16 * h);
            for (int l = 0; l < 4; l++) _mm_prefetch((const char *)(nx[l] + 16 * h), _MM_HINT_T0);
            __m512i c[4];
            for (int l = 0; l < 4; l++) {
                c[l] = l < nk && mh ? codes16(_mm512_maskz_loadu_ps(mh, r[l] + 16 * h), s) : _mm512_setzero_si512();
                sum[h] = _mm512_add_epi32(sum[h], c[l]);
            }
            _mm512_store_si512(bp + panel_bytes * (h >> 1) + ((size_t)q * 32 + 16 * (h & 1)) * 4,
                               bytes4(c[0], c[1], c[2], c[3]));
        }
    }
    for (int h = 0; h < nch; h++) _mm512_storeu_si512(colsum128 + 16 * h, _mm512_slli_epi32(sum[h], 7));
}

static void pack_b_panel_t(const float *B, int ldb, __m512 s, int K, int N, int Kq, int j0, int8_t *bp,
                           int32_t *colsum128) {
    const int nc = N - j0 < 32 ? N - j0 : 32;
    /* op(B)[k][j] = B[j*ldb + k]: column j's codes are contiguous, 16 k's give
     * 4 dwords (q0..q0+3); 4 columns at a time, a 4 x 4 dword transpose puts
     * each q's 4 columns side by side. */
    for (int c = nc; c < 32; c++) colsum128[c] = 0;
    for (int c0 = 0; c0 < nc; c0 += 4) {
        const float *row[4];
        int live[4];
        __m512i sum[4];
        for (int u = 0; u < 4; u++) {
            live[u] = c0 + u < nc;
            row[u] = B + (size_t)(j0 + (live[u] ? c0 + u : c0)) * ldb;
            sum[u] = _mm512_setzero_si512();
        }
        for (int k = 0; k < K; k += 16) {
            const __mmask16 mk = lanes(K - k);
            __m128i x[4];
            for (int u = 0; u < 4; u++) {
                _mm_prefetch((const char *)(row[u] + k + 256), _MM_HINT_T0);
                __m512i code = live[u] ? codes16(_mm512_maskz_loadu_ps(mk, row[u] + k), s) : _mm512_setzero_si512();
                sum[u] = _mm512_add_epi32(sum[u], code);
                x[u] = _mm512_cvtepi32_epi8(code);
            }
            __m128i t01l = _mm_unpacklo_epi32(x[0], x[1]), t01h = _mm_unpackhi_epi32(x[0], x[1]);
            __m128i t23l = _mm_unpacklo_epi32(x[2], x[3]), t23h = _mm_unpackhi_epi32(x[2], x[3]);
            __m128i y[4] = {_mm_unpacklo_epi64(t01l, t23l), _mm_unpackhi_epi64(t01l, t23l),
                            _mm_unpacklo_epi64(t01h, t23h), _mm_unpackhi_epi64(t01h, t23h)};
            const int q0 = k / 4;
            for (int t = 0; t < 4 && q0 + t < Kq; t++)
                _mm_storeu_si128((__m128i *)(bp + ((size_t)(q0 + t) * 32 + c0) * 4), y[t]);
        }
        for (int u = 0; u < 4; u++)
            if (live[u]) colsum128[c0 + u] = 128 * _mm512_reduce_add_epi32(sum[u]);
    }
    zero_tail_columns(bp, Kq, (nc + 3) & ~3, nc);
}

/* C[r][c] = (float)((double)tile[r][c] * sab) (+ fl(beta * C) first). */
void et_igemm_avx512_store(const int32_t *tile, int rows, int nc, double sab, float beta, float *C, int ldc) {
    const __m512d sv = _mm512_set1_pd(sab);
    const __m512 bv = _mm512_set1_ps(beta);
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < 2; h++) {
            __mmask16 m = lanes(nc - 16 * h);
            if (!m) continue;
            __m512i t = _mm512_maskz_loadu_epi32(m, tile + r * 32 + 16 * h);
            __m256 lo = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtepi32_pd(_mm512_castsi512_si256(t)), sv));
            __m256 hi = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(t, 1)), sv));
            __m512 v = _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
            float *c = C + (size_t)r * ldc + 16 * h;
            if (beta != 0.0f) v = _mm512_add_ps(_mm512_mul_ps(bv, _mm512_maskz_loadu_ps(m, c)), v);
            _mm512_mask_storeu_ps(c, m, v);
        }
}

/* ------------------------------------------------ packing from int8 codes */

static inline __mmask64 lanes64(int n) { return n >= 64 ? ~(__mmask64)0 : n <= 0 ? 0 : ((__mmask64)1 << n) - 1; }

void et_igemm_avx512_im2col_rows(const int8_t *src, int64_t plane, int H, int W, int Ho, int Wo, int SH, int PH,
                                 int ky, int ix0, int lo, int hi, int nb, int8_t *dst) {
    /* masked-off lanes are not read, so row + ix0 + ox is touched only for ox
     * in [lo, hi); every output row but the last is stored as 64 bytes (the
     * next row overwrites the excess), the last one masked */
    const __mmask64 ml = lanes64(hi) & ~lanes64(lo), ms = lanes64(Wo);
    /* output rows [oy0, oy1) read input rows inside the image */
    int oy0 = 0, oy1 = Ho;
    while (oy0 < Ho && oy0 * SH - PH + ky < 0) oy0++;
    while (oy1 > oy0 && (oy1 - 1) * SH - PH + ky >= H) oy1--;
    if (!ml) oy1 = oy0;
    const __m512i z = _mm512_setzero_si512();
    /* a row is stored as 64 bytes while that stays inside dst's nb*Ho*Wo
     * bytes (the next rows overwrite the excess), else masked */
    const int8_t *lim = dst + (int64_t)nb * Ho * Wo - 64;
#define ROW(v)                                                                                                         \
    do {                                                                                                               \
        if (d <= lim) _mm512_storeu_si512(d, v);                                                                       \
        else _mm512_mask_storeu_epi8(d, ms, v);                                                                        \
    } while (0)
    for (int n = 0; n < nb; n++) {
        const int8_t *p = src + (int64_t)n * plane + ix0 + (int64_t)(oy0 * SH - PH + ky) * W;
        int8_t *d = dst + (int64_t)n * Ho * Wo;
        int oy = 0;
        for (; oy < oy0; oy++, d += Wo) ROW(z);
        for (; oy < oy1; oy++, d += Wo, p += (int64_t)SH * W) ROW(_mm512_maskz_loadu_epi8(ml, p));
        for (; oy < Ho; oy++, d += Wo) ROW(z);
    }
#undef ROW
}

/* Bytes k0[c], k1[c], k2[c], k3[c] of 16 columns c as 16 dwords (columns
 * 0-3, 4-7, 8-11, 12-15 in d[0..3]). */
static inline void interleave4(__m128i k0, __m128i k1, __m128i k2, __m128i k3, __m128i d[4]) {
    __m128i l01 = _mm_unpacklo_epi8(k0, k1), h01 = _mm_unpackhi_epi8(k0, k1);
    __m128i l23 = _mm_unpacklo_epi8(k2, k3), h23 = _mm_unpackhi_epi8(k2, k3);
    d[0] = _mm_unpacklo_epi16(l01, l23), d[1] = _mm_unpackhi_epi16(l01, l23);
    d[2] = _mm_unpacklo_epi16(h01, h23), d[3] = _mm_unpackhi_epi16(h01, h23);
}

/* 4 x 4 dwords: out[t] = dword t of x[0], x[1], x[2], x[3]. */
static inline void transpose4(const __m128i x[4], __m128i out[4]) {
    __m128i l01 = _mm_unpacklo_epi32(x[0], x[1]), h01 = _mm_unpackhi_epi32(x[0], x[1]);
    __m128i l23 = _mm_unpacklo_epi32(x[2], x[3]), h23 = _mm_unpackhi_epi32(x[2], x[3]);
    out[0] = _mm_unpacklo_epi64(l01, l23), out[1] = _mm_unpackhi_epi64(l01, l23);
    out[2] = _mm_unpacklo_epi64(h01, h23), out[3] = _mm_unpackhi_epi64(h01, h23);
}

void et_igemm_avx512_pack_a_s8(const int8_t *A, int lda, int ta, int K, int Kq, int i0, int i1, uint32_t *Ap) {
    const __m128i flip = _mm_set1_epi8((char)0x80); /* q + 128 as an unsigned byte; 0 past K gives 128 */
    if (!ta) { /* rows contiguous: per 16 k's, 8 rows x 4 dwords transposed into 4 runs of 8 dwords */
        for (int b0 = i0; b0 < i1; b0 += 8) {
            const int8_t *row[8];
            int live[8];
            for (int r = 0; r < 8; r++) {
                live[r] = b0 + r < i1;
                row[r] = A + (size_t)(live[r] ? b0 + r : b0) * lda;
            }
            uint32_t *dst = Ap + (size_t)b0 * Kq;
            for (int k = 0; k < Kq * 4; k += 16) {
                const __mmask16 mk = lanes(K - k);
                __m128i x[8], y[2][4];
                for (int r = 0; r < 8; r++)
                    x[r] = !live[r]       ? _mm_setzero_si128()
                           : k + 16 <= K ? _mm_xor_si128(_mm_loadu_si128((const __m128i *)(row[r] + k)), flip)
                                         : _mm_xor_si128(_mm_maskz_loadu_epi8(mk, row[r] + k), flip);
                transpose4(x, y[0]);
                transpose4(x + 4, y[1]);
                const int q0 = k / 4;
                for (int t = 0; t < 4 && q0 + t < Kq; t++)
                    _mm256_storeu_si256((__m256i *)(dst + (size_t)(q0 + t) * 8), _mm256_set_m128i(y[1][t], y[0][t]));
            }
        }
        return;
    }
    /* op(A)[i][k] = A[k*lda + i]: 16 rows (two 8-row blocks) at a time, per q
     * the bytes of 4 k's interleaved into one dword per row */
    const __mmask16 mi = lanes(i1 - i0);
    uint32_t *blk0 = Ap + (size_t)i0 * Kq, *blk1 = Ap + (size_t)(i0 + 8) * Kq;
    for (int q = 0; q < Kq; q++) {
        __m128i c[4], d[4];
        for (int l = 0; l < 4; l++) {
            int k = 4 * q + l;
            c[l] = k < K ? _mm_maskz_loadu_epi8(mi, A + (size_t)k * lda + i0) : _mm_setzero_si128();
            c[l] = _mm_xor_si128(c[l], flip);
        }
        interleave4(c[0], c[1], c[2], c[3], d);
        _mm256_mask_storeu_epi32(blk0 + (size_t)q * 8, (__mmask8)mi, _mm256_set_m128i(d[1], d[0]));
        if (mi >> 8) _mm256_mask_storeu_epi32(blk1 + (size_t)q * 8, (__mmask8)(mi >> 8), _mm256_set_m128i(d[3], d[2]));
    }
}

/* Columns [c, lim) of a panel's every q are zero (the kernel reads 16
 * columns of a panel with at most 16 live ones, else 32). */
static void zero_tail_columns(int8_t *bp, int Kq, int c, int nc) {
    const int lim = nc <= 16 ? 16 : 32; /* c is a multiple of 4: whole 16-byte groups */
    for (int q = 0; q < Kq; q++)
        for (int u = c; u < lim; u += 4) _mm_storeu_si128((__m128i *)(bp + ((size_t)q * 32 + u) * 4), _mm_setzero_si128());
}

void et_igemm_avx512_pack_b_s8(const int8_t *B, int ldb, int tb, int K, int N, int Kq, int j0, int npan, int8_t *bp,
                               size_t panel_bytes, int32_t *colsum128) {
    if (!tb) { /* row k contiguous: per q, 4 rows x 16 columns -> 16 dwords */
        const int nch = 2 * npan;
        const __m512i ones = _mm512_set1_epi8(1);
        __m512i sum[2 * 8];
        for (int h = 0; h < nch; h++) sum[h] = _mm512_setzero_si512();
        for (int q = 0; q < Kq; q++) {
            const int nk = K - 4 * q < 4 ? K - 4 * q : 4;
            for (int h = 0; h < nch; h++) {
                const int j = j0 + 16 * h;
                const __mmask16 mh = lanes(N - j);
                __m128i r[4], d[4];
                for (int l = 0; l < 4; l++) {
                    const int8_t *src = B + (size_t)(4 * q + l) * ldb + j;
                    r[l] = !(l < nk && mh)   ? _mm_setzero_si128()
                           : mh == 0xffff ? _mm_loadu_si128((const __m128i *)src)
                                          : _mm_maskz_loadu_epi8(mh, src);
                }
                interleave4(r[0], r[1], r[2], r[3], d);
                __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set_m128i(d[1], d[0])),
                                               _mm256_set_m128i(d[3], d[2]), 1);
                sum[h] = _mm512_dpbusd_epi32(sum[h], ones, w); /* + the 4 signed codes of each column */
                _mm512_storeu_si512(bp + panel_bytes * (h >> 1) + ((size_t)q * 32 + 16 * (h & 1)) * 4, w);
            }
        }
        for (int h = 0; h < nch; h++) _mm512_storeu_si512(colsum128 + 16 * h, _mm512_slli_epi32(sum[h], 7));
        return;
    }
    /* op(B)[k][j] = B[j*ldb + k]: column j's codes are contiguous; 64 k's of
     * 4 columns are 4 x 16 dwords, transposed per 128-bit lane so each q has
     * its 4 columns side by side (lane L of y[t]: q = k/4 + 4L + t) */
    const __m512i ones = _mm512_set1_epi8(1);
    for (int p = 0; p < npan; p++) {
        const int jp = j0 + 32 * p, nc = N - jp < 32 ? N - jp : 32;
        int8_t *pb = bp + panel_bytes * p;
        int32_t *cs = colsum128 + 32 * p;
        for (int c = 0; c < 32; c++) cs[c] = 0;
        for (int c0 = 0; c0 < nc; c0 += 4) {
            const int8_t *col[4];
            int live[4];
            __m512i sm[4];
            for (int u = 0; u < 4; u++) {
                live[u] = c0 + u < nc;
                col[u] = B + (size_t)(jp + (live[u] ? c0 + u : c0)) * ldb;
                sm[u] = _mm512_setzero_si512();
            }
            for (int k = 0; k < K; k += 64) {
                const __mmask64 mk = lanes64(K - k);
                __m512i x[4];
                for (int u = 0; u < 4; u++) {
                    x[u] = !live[u] ? _mm512_setzero_si512()
                           : k + 64 <= K ? _mm512_loadu_si512(col[u] + k)
                                         : _mm512_maskz_loadu_epi8(mk, col[u] + k);
                    sm[u] = _mm512_dpbusd_epi32(sm[u], ones, x[u]); /* + 4 codes per dword */
                }
                __m512i l01 = _mm512_unpacklo_epi32(x[0], x[1]), h01 = _mm512_unpackhi_epi32(x[0], x[1]);
                __m512i l23 = _mm512_unpacklo_epi32(x[2], x[3]), h23 = _mm512_unpackhi_epi32(x[2], x[3]);
                __m512i y[4] = {_mm512_unpacklo_epi64(l01, l23), _mm512_unpackhi_epi64(l01, l23),
                                _mm512_unpacklo_epi64(h01, h23), _mm512_unpackhi_epi64(h01, h23)};
                const int q0 = k / 4;
                int8_t *d = pb + ((size_t)q0 * 32 + c0) * 4;
                if (q0 + 16 <= Kq) {
#define ST4(L)                                                                                                         \
    for (int t = 0; t < 4; t++)                                                                                        \
        _mm_storeu_si128((__m128i *)(d + (size_t)(4 * L + t) * 128), _mm512_extracti32x4_epi32(y[t], L));
                    ST4(0) ST4(1) ST4(2) ST4(3)
#undef ST4
                } else {
                    for (int t = 0; t < 4; t++) {
                        __m128i v[4] = {_mm512_castsi512_si128(y[t]), _mm512_extracti32x4_epi32(y[t], 1),
                                        _mm512_extracti32x4_epi32(y[t], 2), _mm512_extracti32x4_epi32(y[t], 3)};
                        for (int L = 0; L < 4; L++)
                            if (q0 + 4 * L + t < Kq) _mm_storeu_si128((__m128i *)(d + (size_t)(4 * L + t) * 128), v[L]);
                    }
                }
            }
            for (int u = 0; u < 4; u++)
                if (live[u]) cs[c0 + u] = 128 * _mm512_reduce_add_epi32(sm[u]);
        }
        zero_tail_columns(pb, Kq, (nc + 3) & ~3, nc);
    }
}

/* ------------------------------------------------ dot form (both operands along K) */

/* S[i*N + j] = sum_k A[i*lda + k] * B[j*ldb + k] for rows [i0, i1) of A and
 * all N rows of B, int8 codes read in place: (a + 128) . b with vpdpbusd on
 * 64 k's at a time, 4 x 3 outputs per block, minus 128 * the row sums of B
 * (bsum128). Exact in int32 like the panel kernel. */
void et_igemm_avx512_dot(const int8_t *A, int lda, const int8_t *B, int ldb, const int32_t *bsum128, int i0, int i1,
                         int N, int K, int32_t *S) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const int kf = K & ~63;
    const __mmask64 mt = lanes64(K - kf);
    for (int i = i0; i < i1; i += 4)
        for (int j = 0; j < N; j += 3) {
            const int8_t *a[4], *b[3];
            for (int r = 0; r < 4; r++) a[r] = A + (size_t)(i + r < i1 ? i + r : i1 - 1) * lda;
            for (int c = 0; c < 3; c++) b[c] = B + (size_t)(j + c < N ? j + c : N - 1) * ldb;
            __m512i s00 = _mm512_setzero_si512(), s01 = s00, s02 = s00, s10 = s00, s11 = s00, s12 = s00, s20 = s00,
                    s21 = s00, s22 = s00, s30 = s00, s31 = s00, s32 = s00;
#define DOT(LOAD)                                                                                                      \
    {                                                                                                                  \
        __m512i b0 = LOAD(b[0]), b1 = LOAD(b[1]), b2 = LOAD(b[2]), x;                                                  \
        x = _mm512_xor_si512(LOAD(a[0]), flip);                                                                        \
        DPBUSD(s00, x, b0); DPBUSD(s01, x, b1); DPBUSD(s02, x, b2);                                                    \
        x = _mm512_xor_si512(LOAD(a[1]), flip);                                                                        \
        DPBUSD(s10, x, b0); DPBUSD(s11, x, b1); DPBUSD(s12, x, b2);                                                    \
        x = _mm512_xor_si512(LOAD(a[2]), flip);                                                                        \
        DPBUSD(s20, x, b0); DPBUSD(s21, x, b1); DPBUSD(s22, x, b2);                                                    \
        x = _mm512_xor_si512(LOAD(a[3]), flip);                                                                        \
        DPBUSD(s30, x, b0); DPBUSD(s31, x, b1); DPBUSD(s32, x, b2);                                                    \
    }
#define LD_FULL(p) _mm512_loadu_si512((p) + k)
#define LD_TAIL(p) _mm512_maskz_loadu_epi8(mt, (p) + kf) /* a: 0 -> 128, times b = 0 */
            for (int k = 0; k < kf; k += 64) DOT(LD_FULL)
            if (kf < K) DOT(LD_TAIL)
#undef LD_FULL
#undef LD_TAIL
#undef DOT
            const __m512i acc[4][3] = {{s00, s01, s02}, {s10, s11, s12}, {s20, s21, s22}, {s30, s31, s32}};
            for (int r = 0; r < 4 && i + r < i1; r++)
                for (int c = 0; c < 3 && j + c < N; c++)
                    S[(size_t)(i + r) * N + j + c] = _mm512_reduce_add_epi32(acc[r][c]) - bsum128[j + c];
        }
}

/* 128 * sum_k B[j*ldb + k] for rows j of B. */
void et_igemm_avx512_rowsum128(const int8_t *B, int ldb, int N, int K, int32_t *bsum128) {
    const __m512i ones = _mm512_set1_epi8(1);
    for (int j = 0; j < N; j++) {
        const int8_t *b = B + (size_t)j * ldb;
        __m512i s = _mm512_setzero_si512();
        for (int k = 0; k < K; k += 64) s = _mm512_dpbusd_epi32(s, ones, _mm512_maskz_loadu_epi8(lanes64(K - k), b + k));
        bsum128[j] = 128 * _mm512_reduce_add_epi32(s);
    }
}
