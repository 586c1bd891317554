/* The AVX-512 parts of the zero-skipping weight-gradient product (spwg.h;
 * driven by spwg.c): the non-zero lists of B's rows, the transpose of A, the
 * summing kernel and the transposing copies of C.
 *
 * Bits: for C[i][j] the listed k of row j of B (B[j][k] != 0) are taken in
 * ascending order into an accumulator that starts at +0 at each KC boundary
 * (acc = fma(A[i][k], B[j][k], acc), the AVX-512 micro-kernel's fma), and
 * each block's sum is added to the element as the micro-kernel stores it:
 * beta*C first (beta == 0: +0, C not read), then + acc per block. A product
 * with B[j][k] == 0 leaves an accumulator unchanged (it starts at +0 and is
 * never -0), so this is et_sgemm's sum with fewer steps: the same bits. */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "kernels/transpose_avx512.h"

static inline __mmask16 head(int n) { return n >= 16 ? (__mmask16)0xffff : n > 0 ? (__mmask16)((1u << n) - 1) : 0; }

/* nnz of rows [j0, j1) of B (K columns) */
uint64_t et_spwg_count_avx512(int j0, int j1, int K, const float *B, ptrdiff_t ldb) {
    const __m512 z = _mm512_setzero_ps();
    uint64_t n = 0;
    for (int j = j0; j < j1; j++) {
        const float *b = B + (ptrdiff_t)j * ldb;
        int k = 0;
        for (; k + 16 <= K; k += 16) n += (uint64_t)__builtin_popcount(_mm512_cmp_ps_mask(_mm512_loadu_ps(b + k), z, _CMP_NEQ_UQ));
        if (k < K) {
            __mmask16 m = head(K - k);
            n += (uint64_t)__builtin_popcount(_mm512_mask_cmp_ps_mask(m, _mm512_maskz_loadu_ps(m, b + k), z, _CMP_NEQ_UQ));
        }
    }
    return n;
}

/* Row j's list for j in [j0, j1): the k (ascending) with B[j][k] != 0 at
 * idx + j*ls, their values at val + j*ls (ls >= K + 16: each step stores a
 * whole vector), bs[j*(nblk+1) + b] = the first entry with k >= b*kc and
 * bs[j*(nblk+1) + nblk] = the count (kc a multiple of 16); grp[k/16] = 1 for
 * each 16 columns with a non-zero. */
void et_spwg_lists_avx512(int j0, int j1, int K, const float *B, ptrdiff_t ldb, int kc, int nblk, int32_t *idx,
                          float *val, ptrdiff_t ls, int32_t *bs, uint8_t *grp) {
    const __m512 z = _mm512_setzero_ps();
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (int j = j0; j < j1; j++) {
        const float *b = B + (ptrdiff_t)j * ldb;
        int32_t *ix = idx + (ptrdiff_t)j * ls, *st = bs + (ptrdiff_t)j * (nblk + 1);
        float *vv = val + (ptrdiff_t)j * ls;
        int c = 0;
        for (int k = 0; k < K; k += 16) {
            if (k % kc == 0) st[k / kc] = c;
            const __mmask16 m = head(K - k);
            const __m512 x = _mm512_maskz_loadu_ps(m, b + k);
            const __mmask16 nz = _mm512_mask_cmp_ps_mask(m, x, z, _CMP_NEQ_UQ);
            if (!nz) continue;
            _mm512_storeu_si512(ix + c, _mm512_maskz_compress_epi32(nz, _mm512_add_epi32(iota, _mm512_set1_epi32(k))));
            _mm512_storeu_ps(vv + c, _mm512_maskz_compress_ps(nz, x));
            c += __builtin_popcount(nz);
            __atomic_store_n(&grp[k >> 4], (uint8_t)1, __ATOMIC_RELAXED); /* rows of other threads mark it too */
        }
        st[nblk] = c;
    }
}

/* AT[k][i] = A[i][k] for i < Mp (rows past M: 0) and the k of the 16-column
 * groups [g0, g1) with grp[g] set (k < K); ldat a multiple of 16, AT 64-byte
 * aligned. */
void et_spwg_transpose_avx512(int M, int Mp, int K, const float *A, ptrdiff_t lda, int g0, int g1, const uint8_t *grp,
                              float *AT, ptrdiff_t ldat) {
    /* 16 rows of A at a time, read along k (streams the prefetchers follow) */
    for (int i0 = 0; i0 < Mp; i0 += 16) {
        const float *a = A + (ptrdiff_t)i0 * lda;
        const int mr = M - i0 < 16 ? M - i0 : 16;
        for (int g = g0; g < g1; g++) {
            if (!grp[g]) continue;
            const int k0 = g * 16, nk = K - k0 < 16 ? K - k0 : 16;
            const __mmask16 m = head(nk);
            __m512 r[16];
            /* rows past M: masked off (no fault, zeros) */
#pragma GCC unroll 16
            for (int q = 0; q < 16; q++) r[q] = _mm512_maskz_loadu_ps(q < mr ? m : 0, a + (ptrdiff_t)q * lda + k0);
            et_tr16_avx512(r);
#pragma GCC unroll 16
            for (int q = 0; q < 16; q++) /* constant bounds: r stays in registers */
                if (q < nk) _mm512_store_ps(AT + (ptrdiff_t)(k0 + q) * ldat + i0, r[q]);
        }
    }
}

/* Rows [i0, i0 + 16*NV) (i0 = 0 at AT) x columns [j0, j0 + nj) (nj <= 16) of
 * C: per KC block, each column's sum over its listed k (NV vectors over i in
 * registers) goes to T, T is transposed 16 x 16 in registers and each row of
 * C gets it as the micro-kernel stores: beta*C + sum in the first block
 * (beta == 0: the sum alone, C not read), C + sum after. Rows past mi are
 * neither read from AT nor stored. */
static inline __attribute__((always_inline)) void gblock(const int NV, int mi, int j0, int nj, const float *AT,
                                                          ptrdiff_t ldat, const int32_t *idx, const float *val,
                                                          ptrdiff_t ls, const int32_t *bs, int nblk, float beta,
                                                          float *C, ptrdiff_t ldc) {
    __attribute__((aligned(64))) float T[16][128];
    const __mmask16 cm = head(nj), lm = head(mi - 16 * (NV - 1)); /* the last vector's rows */
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int b = 0; b < nblk; b++) {
        for (int jj = 0; jj < 16; jj++) {
            __m512 acc[8];
#pragma GCC unroll 8
            for (int v = 0; v < NV; v++) acc[v] = _mm512_setzero_ps();
            if (jj < nj) {
                const int j = j0 + jj;
                const int32_t *ix = idx + (ptrdiff_t)j * ls, *st = bs + (ptrdiff_t)j * (nblk + 1);
                const float *vv = val + (ptrdiff_t)j * ls;
                for (int t = st[b]; t < st[b + 1]; t++) {
                    const float *a = AT + (ptrdiff_t)ix[t] * ldat;
                    const __m512 bv = _mm512_set1_ps(vv[t]);
#pragma GCC unroll 8
                    for (int v = 0; v < NV; v++)
                        acc[v] = _mm512_fmadd_ps(v < NV - 1 ? _mm512_loadu_ps(a + 16 * v) : _mm512_maskz_loadu_ps(lm, a + 16 * v),
                                                 bv, acc[v]);
                }
            }
#pragma GCC unroll 8
            for (int v = 0; v < NV; v++) _mm512_store_ps(&T[jj][16 * v], acc[v]);
        }
        const float be = b == 0 ? beta : 1.0f;
        const __m512 vb = _mm512_set1_ps(be);
        for (int v = 0; v < NV && 16 * v < mi; v++) {
            __m512 x[16];
#pragma GCC unroll 16
            for (int q = 0; q < 16; q++) x[q] = _mm512_load_ps(&T[q][16 * v]);
            et_tr16_avx512(x);
#pragma GCC unroll 16
            for (int q = 0; q < 16; q++) {
                if (16 * v + q >= mi) break;
                float *c = C + (ptrdiff_t)(16 * v + q) * ldc + j0;
                const __m512 y = be == 0.0f ? _mm512_mul_ps(one, x[q])
                                            : _mm512_fmadd_ps(one, x[q], _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(cm, c)));
                _mm512_mask_storeu_ps(c, cm, y);
            }
        }
    }
}

#define GB(n)                                                                                                          \
    static void gb##n(int mi, int j0, int nj, const float *AT, ptrdiff_t ldat, const int32_t *idx, const float *val,  \
                      ptrdiff_t ls, const int32_t *bs, int nblk, float beta, float *C, ptrdiff_t ldc) {                \
        gblock(n, mi, j0, nj, AT, ldat, idx, val, ls, bs, nblk, beta, C, ldc);                                        \
    }
GB(1)
GB(2)
GB(3)
GB(4)
GB(5)
GB(6)
GB(7)
GB(8)

typedef void (*gb_fn)(int, int, int, const float *, ptrdiff_t, const int32_t *, const float *, ptrdiff_t,
                      const int32_t *, int, float, float *, ptrdiff_t);
static const gb_fn gbs[8] = {gb1, gb2, gb3, gb4, gb5, gb6, gb7, gb8};

/* Rows [i0, i0 + min(16*nv, mi)) x columns [j0, j0 + nj) of C (nv 1..8, nj
 * <= 16): AT (row k = column k of A) at column i0, C at row i0. */
void et_spwg_block_avx512(int nv, int mi, int j0, int nj, const float *AT, ptrdiff_t ldat, const int32_t *idx,
                          const float *val, ptrdiff_t ls, const int32_t *bs, int nblk, float beta, float *C,
                          ptrdiff_t ldc) {
    gbs[nv - 1](mi, j0, nj, AT, ldat, idx, val, ls, bs, nblk, beta, C, ldc);
}
