/* AVX-512 parts of the zero-skipping GEMM: the skip kernel (gemm_avx512.c's
 * 8 x 48 tile, stepping only over the k in a bitmask) and the scans that
 * build the bitmasks and count (spgemm_internal.h). */
#include <immintrin.h>
#include <string.h>

#include "kernels/spgemm_internal.h"

#define MR ET_GEMM_AVX512_MR
#define NR ET_GEMM_AVX512_NR
#define NV (NR / 16)

/* gemm_avx512.c's tile() with the step loop over the set bits of km (NULL:
 * every step, the dense loop): the arithmetic per step and the store are the
 * same instructions. kw (NULL: no mask) points at the row panel's mask words
 * (row r's word at kw[r], its next word at kw[MR + r]) and ko is the bit of
 * column 0 in them: only the columns whose bit is set are stored, the others
 * as 0 (the output mask, applied in registers). */
static inline __attribute__((always_inline)) void stile(const int RM, const int NVv, const int SCAN,
                                                        int n, const uint64_t *km, int k,
                                                        const float *a, ptrdiff_t ars,
                                                        ptrdiff_t as, const float *b,
                                                        ptrdiff_t bs, float *c, ptrdiff_t ldc,
                                                        float beta, const uint64_t *kw,
                                                        int ko, uint64_t *pat) {
    const float alpha = 1.0f;
    __m512 acc[MR][NV];
#pragma GCC unroll 8
    for (int r = 0; r < RM; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NVv; v++) acc[r][v] = _mm512_setzero_ps();

    if (!km) {
        for (int p = 0; p < k; p++) {
            __m512 bv[NV];
#pragma GCC unroll 4
            for (int v = 0; v < NVv; v++) bv[v] = _mm512_loadu_ps(b + 16 * v);
            if (SCAN) { /* record the step's non-zero pattern on the way */
                uint64_t t = 0;
#pragma GCC unroll 4
                for (int v = 0; v < NVv; v++)
                    t |= (uint64_t)_mm512_cmp_ps_mask(bv[v], _mm512_setzero_ps(), _CMP_NEQ_UQ) << (16 * v);
                pat[p] = t;
            }
#pragma GCC unroll 8
            for (int r = 0; r < RM; r++) {
                __m512 ar = _mm512_set1_ps(a[r * ars]);
#pragma GCC unroll 4
                for (int v = 0; v < NVv; v++) acc[r][v] = _mm512_fmadd_ps(ar, bv[v], acc[r][v]);
            }
            a += as;
            b += bs;
        }
    } else {
        for (int w = 0; w * 64 < k; w++) {
            uint64_t bits = km[w];
            while (bits) {
                ptrdiff_t p = w * 64 + __builtin_ctzll(bits);
                bits &= bits - 1;
                const float *ap = a + p * as, *bp = b + p * bs;
                __m512 bv[NV];
#pragma GCC unroll 4
                for (int v = 0; v < NVv; v++) bv[v] = _mm512_loadu_ps(bp + 16 * v);
#pragma GCC unroll 8
                for (int r = 0; r < RM; r++) {
                    __m512 ar = _mm512_set1_ps(ap[r * ars]);
#pragma GCC unroll 4
                    for (int v = 0; v < NVv; v++) acc[r][v] = _mm512_fmadd_ps(ar, bv[v], acc[r][v]);
                }
            }
        }
    }
    uint64_t keep[MR] = {0};
    if (kw) {
#pragma GCC unroll 8
        for (int r = 0; r < RM; r++) keep[r] = ko ? kw[r] >> ko | kw[MR + r] << (64 - ko) : kw[r];
#pragma GCC unroll 8
        for (int r = 0; r < RM; r++)
#pragma GCC unroll 4
            for (int v = 0; v < NVv; v++)
                acc[r][v] = _mm512_maskz_mov_ps((__mmask16)(keep[r] >> (16 * v)), acc[r][v]);
    }

    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    if (n == 16 * NVv) {
        if (beta == 0.0f) {
#pragma GCC unroll 8
            for (int r = 0; r < RM; r++)
#pragma GCC unroll 4
                for (int v = 0; v < NVv; v++)
                    _mm512_storeu_ps(c + r * ldc + 16 * v, _mm512_mul_ps(va, acc[r][v]));
            /* (acc is already zero where keep is clear: 1 * 0 = +0) */
        } else {
#pragma GCC unroll 8
            for (int r = 0; r < RM; r++)
#pragma GCC unroll 4
                for (int v = 0; v < NVv; v++) {
                    float *cp = c + r * ldc + 16 * v;
                    __m512 cv = _mm512_mul_ps(vb, _mm512_loadu_ps(cp));
                    __m512 t = _mm512_fmadd_ps(va, acc[r][v], cv);
                    if (kw) t = _mm512_maskz_mov_ps((__mmask16)(keep[r] >> (16 * v)), t);
                    _mm512_storeu_ps(cp, t);
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
            if (kw) t = _mm512_maskz_mov_ps((__mmask16)(keep[r] >> (16 * v)), t);
            _mm512_mask_storeu_ps(cp, mk[v], t);
        }
    }
}

#define STILE_FN(RM, NVv)                                                                        \
    static void stileP_##RM##x##NVv(int n, const uint64_t *km, int k, const float *a,            \
                                    ptrdiff_t ars, ptrdiff_t as, const float *b, ptrdiff_t bs,   \
                                    float *c, ptrdiff_t ldc, float beta, const uint64_t *kw, int ko) { \
        (void)ars;                                                                               \
        stile(RM, NVv, 0, n, km, k, a, 1, as, b, bs, c, ldc, beta, kw, ko, NULL);               \
    }                                                                                            \
    static void stileS_##RM##x##NVv(int n, const uint64_t *km, int k, const float *a,            \
                                    ptrdiff_t ars, ptrdiff_t as, const float *b, ptrdiff_t bs,   \
                                    float *c, ptrdiff_t ldc, float beta, const uint64_t *kw, int ko) { \
        stile(RM, NVv, 0, n, km, k, a, ars, as, b, bs, c, ldc, beta, kw, ko, NULL);             \
    }                                                                                            \
    static void scanP_##RM##x##NVv(int n, int k, const float *a, ptrdiff_t ars, ptrdiff_t as,    \
                                   const float *b, ptrdiff_t bs, float *c, ptrdiff_t ldc,        \
                                   float beta, const uint64_t *kw, int ko, uint64_t *pat) {   \
        (void)ars;                                                                               \
        stile(RM, NVv, 1, n, NULL, k, a, 1, as, b, bs, c, ldc, beta, kw, ko, pat);              \
    }                                                                                            \
    static void scanS_##RM##x##NVv(int n, int k, const float *a, ptrdiff_t ars, ptrdiff_t as,    \
                                   const float *b, ptrdiff_t bs, float *c, ptrdiff_t ldc,        \
                                   float beta, const uint64_t *kw, int ko, uint64_t *pat) {   \
        stile(RM, NVv, 1, n, NULL, k, a, ars, as, b, bs, c, ldc, beta, kw, ko, pat);            \
    }
#define STILE_ROW(RM) STILE_FN(RM, 1) STILE_FN(RM, 2) STILE_FN(RM, 3)
STILE_ROW(1)
STILE_ROW(2)
STILE_ROW(3)
STILE_ROW(4)
STILE_ROW(5)
STILE_ROW(6)
STILE_ROW(7)
STILE_ROW(8)

typedef void (*stile_fn)(int, const uint64_t *, int, const float *, ptrdiff_t, ptrdiff_t,
                         const float *, ptrdiff_t, float *, ptrdiff_t, float, const uint64_t *, int);
#define STILE_PTRS(X, RM) {X##_##RM##x1, X##_##RM##x2, X##_##RM##x3}
static const stile_fn stiles[2][MR][NV] = {
    {STILE_PTRS(stileP, 1), STILE_PTRS(stileP, 2), STILE_PTRS(stileP, 3), STILE_PTRS(stileP, 4),
     STILE_PTRS(stileP, 5), STILE_PTRS(stileP, 6), STILE_PTRS(stileP, 7), STILE_PTRS(stileP, 8)},
    {STILE_PTRS(stileS, 1), STILE_PTRS(stileS, 2), STILE_PTRS(stileS, 3), STILE_PTRS(stileS, 4),
     STILE_PTRS(stileS, 5), STILE_PTRS(stileS, 6), STILE_PTRS(stileS, 7), STILE_PTRS(stileS, 8)},
};

typedef void (*scan_fn)(int, int, const float *, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t,
                        float *, ptrdiff_t, float, const uint64_t *, int, uint64_t *);
static const scan_fn scans[2][MR][NV] = {
    {STILE_PTRS(scanP, 1), STILE_PTRS(scanP, 2), STILE_PTRS(scanP, 3), STILE_PTRS(scanP, 4),
     STILE_PTRS(scanP, 5), STILE_PTRS(scanP, 6), STILE_PTRS(scanP, 7), STILE_PTRS(scanP, 8)},
    {STILE_PTRS(scanS, 1), STILE_PTRS(scanS, 2), STILE_PTRS(scanS, 3), STILE_PTRS(scanS, 4),
     STILE_PTRS(scanS, 5), STILE_PTRS(scanS, 6), STILE_PTRS(scanS, 7), STILE_PTRS(scanS, 8)},
};

/* Shared by the panel scans: step p's non-zero pattern (16*nsub columns from
 * bit bit0) into its row of B bits, and the per-column counts added to ccnt. */
static inline void brow_put(uint64_t *w, int bit0, int nsub, uint64_t t) {
    int o = bit0 & 63;
    w[bit0 >> 6] |= t << o;
    if (o && o + 16 * nsub > 64) w[(bit0 >> 6) + 1] |= t >> (64 - o);
}

static inline void ccnt_flush(int32_t *ccnt, const __m512i *cc, int n, int nsub) {
    for (int v = 0; v < nsub; v++) {
        int left = n - 16 * v;
        if (left <= 0) break;
        __mmask16 mk = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
        __m512i cur = _mm512_maskz_loadu_epi32(mk, ccnt + 16 * v);
        _mm512_mask_storeu_epi32(ccnt + 16 * v, mk, _mm512_add_epi32(cur, cc[v]));
    }
}

void et_spgemm_tilescan_avx512(int m, int n, int k, const float *a, ptrdiff_t ars, ptrdiff_t as,
                               const float *b, ptrdiff_t bs, float *c, ptrdiff_t ldc, float beta,
                               const uint64_t *kw, int ko, uint64_t *pat) {
    scans[ars != 1][m - 1][(n - 1) / 16](n, k, a, ars, as, b, bs, c, ldc, beta, kw, ko, pat);
}

/* patpanel without ccnt and brow, 8 steps per vector (VPOPCNTQ for kcnt) */
__attribute__((target("avx512vpopcntdq,popcnt"))) static void
patpanel_fast(const uint64_t *pat, int kb, int nsub, uint64_t *sub, int kbw, int32_t *kcnt) {
    memset(sub, 0, sizeof(uint64_t) * (size_t)nsub * kbw);
    int p = 0;
    for (; p + 8 <= kb; p += 8) {
        __m512i t = _mm512_loadu_si512(pat + p);
        for (int v = 0; v < nsub; v++) {
            __mmask8 nz = _mm512_test_epi64_mask(t, _mm512_set1_epi64((long long)0xffff << (16 * v)));
            sub[v * kbw + (p >> 6)] |= (uint64_t)nz << (p & 63);
        }
        if (kcnt) {
            __m256i c = _mm512_cvtepi64_epi32(_mm512_popcnt_epi64(t));
            _mm256_storeu_si256((__m256i *)(void *)(kcnt + p),
                                _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(kcnt + p)), c));
        }
    }
    for (; p < kb; p++) {
        uint64_t t = pat[p];
        for (int v = 0; v < nsub; v++)
            if ((t >> (16 * v)) & 0xffff) sub[v * kbw + (p >> 6)] |= 1ull << (p & 63);
        if (kcnt) kcnt[p] += __builtin_popcountll(t);
    }
}

__attribute__((target("popcnt"))) void
et_spgemm_patpanel_avx512(const uint64_t *pat, int kb, int n, int nsub, uint64_t *sub, int kbw,
                          int32_t *kcnt, int32_t *ccnt, uint64_t *brow, size_t bstride,
                          int bit0) {

    const __m512i one = _mm512_set1_epi32(1);
    __m512i cc[NV];
    for (int v = 0; v < NV; v++) cc[v] = _mm512_setzero_si512();
    memset(sub, 0, sizeof(uint64_t) * (size_t)nsub * kbw);
    for (int p = 0; p < kb; p++) {
        uint64_t t = pat[p];
        if (!t) continue;
        uint64_t bit = 1ull << (p & 63);
        for (int v = 0; v < nsub; v++) {
            __mmask16 mk = (__mmask16)(t >> (16 * v));
            if (mk) sub[v * kbw + (p >> 6)] |= bit;
            if (ccnt) cc[v] = _mm512_mask_add_epi32(cc[v], mk, cc[v], one);
        }
        if (kcnt) kcnt[p] += __builtin_popcountll(t);
        if (brow) brow_put(brow + (size_t)p * bstride, bit0, nsub, t);
    }
    if (ccnt) ccnt_flush(ccnt, cc, n, nsub);
}

void et_spgemm_patpanel_vpop_avx512(const uint64_t *pat, int kb, int n, int nsub, uint64_t *sub,
                                    int kbw, int32_t *kcnt, int32_t *ccnt, uint64_t *brow,
                                    size_t bstride, int bit0) {
    if (!ccnt && !brow)
        patpanel_fast(pat, kb, nsub, sub, kbw, kcnt);
    else
        et_spgemm_patpanel_avx512(pat, kb, n, nsub, sub, kbw, kcnt, ccnt, brow, bstride, bit0);
}

void et_spgemm_skip_avx512(int m, int n, const uint64_t *km, int k, const float *a,
                           ptrdiff_t ars, ptrdiff_t as, const float *b, ptrdiff_t bs, float *c,
                           ptrdiff_t ldc, float beta) {
    et_spgemm_tile_avx512(m, n, km, k, a, ars, as, b, bs, c, ldc, beta, NULL, 0);
}

void et_spgemm_tile_avx512(int m, int n, const uint64_t *km, int k, const float *a,
                           ptrdiff_t ars, ptrdiff_t as, const float *b, ptrdiff_t bs, float *c,
                           ptrdiff_t ldc, float beta, const uint64_t *kw, int ko) {
    if (ars == 1 && m == MR && n == NR)
        stileP_8x3(n, km, k, a, ars, as, b, bs, c, ldc, beta, kw, ko);
    else
        stiles[ars != 1][m - 1][(n - 1) / 16](n, km, k, a, ars, as, b, bs, c, ldc, beta, kw, ko);
}


/* ------------------------------------------------------------------ scans */

void et_spgemm_nzbits_avx512(const float *x, int n, uint64_t *bits) {
    const __m512 z = _mm512_setzero_ps();
    int w = 0;
    for (; (w + 1) * 64 <= n; w++) {
        const float *p = x + w * 64;
        uint64_t b0 = _mm512_cmp_ps_mask(_mm512_loadu_ps(p), z, _CMP_NEQ_UQ);
        uint64_t b1 = _mm512_cmp_ps_mask(_mm512_loadu_ps(p + 16), z, _CMP_NEQ_UQ);
        uint64_t b2 = _mm512_cmp_ps_mask(_mm512_loadu_ps(p + 32), z, _CMP_NEQ_UQ);
        uint64_t b3 = _mm512_cmp_ps_mask(_mm512_loadu_ps(p + 48), z, _CMP_NEQ_UQ);
        bits[w] = b0 | b1 << 16 | b2 << 32 | b3 << 48;
    }
    if (w * 64 < n) {
        uint64_t b = 0;
        for (int v = 0; v < 4; v++) {
            int left = n - w * 64 - 16 * v;
            if (left <= 0) break;
            __mmask16 mk = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
            uint64_t t = _mm512_mask_cmp_ps_mask(mk, _mm512_maskz_loadu_ps(mk, x + w * 64 + 16 * v),
                                                 z, _CMP_NEQ_UQ);
            b |= t << (16 * v);
        }
        bits[w] = b;
    }
}

void et_spgemm_nzcount_avx512(const float *x, int n, int32_t *cnt) {
    const __m512 z = _mm512_setzero_ps();
    const __m512i one = _mm512_set1_epi32(1);
    int t = 0;
    for (; t + 16 <= n; t += 16) {
        __mmask16 nz = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + t), z, _CMP_NEQ_UQ);
        __m512i c = _mm512_loadu_si512(cnt + t);
        _mm512_storeu_si512(cnt + t, _mm512_mask_add_epi32(c, nz, c, one));
    }
    if (t < n) {
        __mmask16 mk = (__mmask16)((1u << (n - t)) - 1);
        __mmask16 nz = _mm512_mask_cmp_ps_mask(mk, _mm512_maskz_loadu_ps(mk, x + t), z, _CMP_NEQ_UQ);
        __m512i c = _mm512_maskz_loadu_epi32(mk, cnt + t);
        _mm512_mask_storeu_epi32(cnt + t, mk, _mm512_mask_add_epi32(c, nz, c, one));
    }
}

void et_spgemm_mbits_avx512(const uint8_t *m, int n, uint64_t *bits) {
    int w = 0;
    for (; (w + 1) * 64 <= n; w++)
        bits[w] = _mm512_test_epi8_mask(_mm512_loadu_si512(m + w * 64), _mm512_set1_epi8(-1));
    if (w * 64 < n) {
        int left = n - w * 64;
        __mmask64 mk = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
        __m512i v = _mm512_maskz_loadu_epi8(mk, m + w * 64);
        bits[w] = _mm512_test_epi8_mask(v, _mm512_set1_epi8(-1));
    }
}

__attribute__((target("avx512vpopcntdq,popcnt"))) uint64_t
et_spgemm_popand_avx512(const uint64_t *a, const uint64_t *b, size_t nw) {
    __m512i s = _mm512_setzero_si512();
    size_t w = 0;
    for (; w + 8 <= nw; w += 8)
        s = _mm512_add_epi64(s, _mm512_popcnt_epi64(_mm512_and_si512(_mm512_loadu_si512(a + w),
                                                                      _mm512_loadu_si512(b + w))));
    uint64_t t = (uint64_t)_mm512_reduce_add_epi64(s);
    for (; w < nw; w++) t += (uint64_t)__builtin_popcountll(a[w] & b[w]);
    return t;
}

__attribute__((target("popcnt"))) void
et_spgemm_panel_avx512(const float *b, ptrdiff_t bs, int kb, int n, int sw, int nsub, uint64_t *sub,
                       int kbw, int32_t *kcnt, int32_t *ccnt, uint64_t *brow, size_t bstride,
                       int bit0) {
    (void)sw; /* 16 */
    const __m512 z = _mm512_setzero_ps();
    const __m512i one = _mm512_set1_epi32(1);
    __m512i cc[NV];
    for (int v = 0; v < NV; v++) cc[v] = _mm512_setzero_si512();
    memset(sub, 0, sizeof(uint64_t) * (size_t)nsub * kbw);
    for (int p = 0; p < kb; p++) {
        const float *bp = b + (ptrdiff_t)p * bs;
        uint32_t any = 0;
        uint64_t pat = 0;
        if (p + 64 < kb) /* rows are far apart: no hardware prefetcher follows them */
            for (int v = 0; v < nsub; v++) _mm_prefetch((const char *)(bp + 64 * bs + 16 * v), _MM_HINT_T0);
        for (int v = 0; v < nsub; v++) {
            __mmask16 mk = _mm512_cmp_ps_mask(_mm512_loadu_ps(bp + 16 * v), z, _CMP_NEQ_UQ);
            any |= (uint32_t)(mk != 0) << v;
            pat |= (uint64_t)mk << (16 * v);
            if (ccnt) cc[v] = _mm512_mask_add_epi32(cc[v], mk, cc[v], one);
        }
        if (!pat) continue;
        uint64_t bit = 1ull << (p & 63);
        for (int v = 0; v < nsub; v++)
            if ((any >> v) & 1) sub[v * kbw + (p >> 6)] |= bit;
        if (kcnt) kcnt[p] += __builtin_popcountll(pat);
        if (brow) brow_put(brow + (size_t)p * bstride, bit0, nsub, pat);
    }
    if (ccnt) ccnt_flush(ccnt, cc, n, nsub);
}

void et_spgemm_masktile_avx512(float *c, ptrdiff_t ldc, const uint64_t *mw, size_t mstride,
                               int bit0, int rows, int n) {
    const __m512 z = _mm512_setzero_ps();
    for (int r = 0; r < rows; r++) {
        float *cr = c + r * ldc;
        const uint64_t *w = mw + (size_t)r * mstride;
        for (int j = 0; j < n; j += 64) {
            uint64_t keep = et_spgemm_field(w, bit0 + j);
            for (int v = 0; v < 4 && j + 16 * v < n; v++) {
                int left = n - j - 16 * v;
                __mmask16 lim = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
                __mmask16 zero = (__mmask16)(~(keep >> (16 * v)) & lim);
                _mm512_mask_storeu_ps(cr + j + 16 * v, zero, z);
            }
        }
    }
}

int64_t et_spgemm_maskdot_avx512(const uint64_t *mw, int bit0, const int32_t *cnt, int n) {
    __m512i s = _mm512_setzero_si512(); /* 64-bit lanes: no overflow */
    int j = 0;
    for (; j + 64 <= n; j += 64) {
        uint64_t f = et_spgemm_field(mw, bit0 + j);
        if (!f) continue;
        for (int v = 0; v < 4; v++) {
            __m512i c = _mm512_maskz_loadu_epi32((__mmask16)(f >> (16 * v)), cnt + j + 16 * v);
            s = _mm512_add_epi64(s, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(c)));
            s = _mm512_add_epi64(s, _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(c, 1)));
        }
    }
    int64_t d = 0;
    if (j < n) {
        uint64_t f = et_spgemm_field(mw, bit0 + j);
        for (; j < n; j++, f >>= 1) d += (int64_t)(f & 1) * cnt[j];
    }
    return d + _mm512_reduce_add_epi64(s);
}
