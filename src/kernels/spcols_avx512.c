/* Element-level zero skipping in a sparse B for op(A) = A^T, op(B) = B
 * (conv EP: dcol = W^T dY, where dY is mostly zero), AVX-512; driven by
 * et_sgemm_sparse_auto (spcount.c).
 *
 * Per block of 16 columns of C, the non-zeros of each column of B are listed
 * (k ascending); a column of C is then summed 64 rows at a time, vectors over
 * the rows: acc = fma(A[k][rows], B[k][j], acc) over the listed k only, which
 * is exactly the AVX-512 micro-kernel's sum for every element (accumulators
 * start at +0, products with B[k][j] == 0 leave them unchanged, same fma, same
 * order, one K block: K <= its KC) and so gives et_sgemm's bits. The 16 x 16
 * blocks are transposed in registers and stored as the micro-kernel stores
 * (beta == 0: 1 * acc; else fma(1, acc, beta * C)), through the mask. */
#include <immintrin.h>

#include "kernels/transpose_avx512.h"
#include <stddef.h>
#include <stdint.h>

#define ET_SPCOLS_KMAX 384

/* The non-zeros of columns [j0, j0 + nc) (nc <= 16) of B (K x N, K <=
 * ET_SPCOLS_KMAX): column jj's k (ascending) in lk[jj*K ..], its values in
 * lv[jj*K ..], their number in cnt[jj]. */
void et_spcols_lists_avx512(int K, const float *B, ptrdiff_t ldb, int j0, int nc, int16_t *lk, float *lv,
                            int32_t *cnt) {
    const __mmask16 cm = nc >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nc) - 1);
    const __m512 z = _mm512_setzero_ps();
    int c[16] = {0};
    for (int k = 0; k < K; k++) {
        const float *b = B + (ptrdiff_t)k * ldb + j0;
        unsigned nz = _mm512_mask_cmp_ps_mask(cm, _mm512_maskz_loadu_ps(cm, b), z, _CMP_NEQ_UQ);
        while (nz) {
            int jj = __builtin_ctz(nz);
            nz &= nz - 1;
            lk[jj * K + c[jj]] = (int16_t)k;
            lv[jj * K + c[jj]++] = b[jj];
        }
    }
    for (int jj = 0; jj < 16; jj++) cnt[jj] = c[jj];
}

/* Rows [r0, r1) x columns [j0, j0 + nc) of C = A^T B (A stored K x M) from
 * the lists above, through the mask; kc[jj] += kept outputs of column jj. */
void et_spcols_tile_avx512(int r0, int r1, int K, const float *A, ptrdiff_t lda, const int16_t *lk,
                           const float *lv, const int32_t *cnt, int j0, int nc, float beta, float *C,
                           ptrdiff_t ldc, const uint8_t *mask, ptrdiff_t ldm, int32_t *kcnt) {
    const __mmask16 cm = nc >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nc) - 1);
    const __m512 z = _mm512_setzero_ps();
    __attribute__((aligned(64))) float T[16][64];
    const __m512 va = _mm512_set1_ps(1.0f), vb = _mm512_set1_ps(beta);
    const __m512i one = _mm512_set1_epi32(1);
    __m512i kc = _mm512_loadu_si512(kcnt);
    for (int q0 = r0; q0 < r1; q0 += 64) {
        const int mr = r1 - q0 < 64 ? r1 - q0 : 64;
        __mmask16 rm[4];
        for (int q = 0; q < 4; q++) {
            int left = mr - 16 * q;
            rm[q] = left >= 16 ? (__mmask16)0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
        }
        for (int jj = 0; jj < 16; jj++) {
            __m512 a0 = z, a1 = z, a2 = z, a3 = z;
            const int16_t *kk = lk + jj * K;
            const float *vv = lv + jj * K;
            const int n = jj < nc ? cnt[jj] : 0;
            if (mr == 64) {
                for (int t = 0; t < n; t++) {
                    const float *a = A + (ptrdiff_t)kk[t] * lda + q0;
                    const __m512 bv = _mm512_set1_ps(vv[t]);
                    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(a), bv, a0);
                    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + 16), bv, a1);
                    a2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + 32), bv, a2);
                    a3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + 48), bv, a3);
                }
            } else {
                for (int t = 0; t < n; t++) {
                    const float *a = A + (ptrdiff_t)kk[t] * lda + q0;
                    const __m512 bv = _mm512_set1_ps(vv[t]);
                    a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(rm[0], a), bv, a0);
                    if (rm[1]) a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(rm[1], a + 16), bv, a1);
                    if (rm[2]) a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(rm[2], a + 32), bv, a2);
                    if (rm[3]) a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(rm[3], a + 48), bv, a3);
                }
            }
            _mm512_store_ps(T[jj], a0);
            _mm512_store_ps(T[jj] + 16, a1);
            _mm512_store_ps(T[jj] + 32, a2);
            _mm512_store_ps(T[jj] + 48, a3);
        }
        for (int q = 0; q < 4 && rm[q]; q++) {
            __m512 x[16];
            for (int jj = 0; jj < 16; jj++) x[jj] = _mm512_load_ps(T[jj] + 16 * q);
            et_tr16_avx512(x);
            for (int rr = 0; rr < 16 && (rm[q] >> rr & 1); rr++) {
                const int r = q0 + 16 * q + rr;
                float *cp = C + (ptrdiff_t)r * ldc + j0;
                __mmask16 keep = cm;
                if (mask) keep = _mm_mask_test_epi8_mask(cm, _mm_maskz_loadu_epi8(cm, mask + (ptrdiff_t)r * ldm + j0),
                                                         _mm_set1_epi8(-1));
                __m512 v = beta == 0.0f ? _mm512_mul_ps(va, x[rr])
                                        : _mm512_fmadd_ps(va, x[rr], _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(cm, cp)));
                _mm512_mask_storeu_ps(cp, cm, _mm512_maskz_mov_ps(keep, v));
                kc = _mm512_mask_add_epi32(kc, keep, kc, one);
            }
        }
    }
    _mm512_storeu_si512(kcnt, kc);
}
