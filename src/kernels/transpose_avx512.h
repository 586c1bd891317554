/* A 16 x 16 float transpose in registers, for the AVX-512 files only (they
 * are built with the AVX-512 flags): r[i] holds row i before and column i
 * after. Four butterfly stages, stage h swapping bit h of the row index with
 * bit h of the column index (row i with row i + h), so that no more than two
 * vectors are live beyond the 16. Used by the sparse kernels' stores
 * (spcols, spwg) and conv's im2row. */
#ifndef ET_TRANSPOSE_AVX512_H
#define ET_TRANSPOSE_AVX512_H
#include <immintrin.h>

static inline __attribute__((always_inline)) void et_tr16_avx512(__m512 r[16]) {
    const __m512i h8a = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
    const __m512i h8b = _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    const __m512i h4a = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
    const __m512i h4b = _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
    for (int i = 0; i < 8; i++) {
        const __m512 a = r[i], b = r[i + 8];
        r[i] = _mm512_permutex2var_ps(a, h8a, b);
        r[i + 8] = _mm512_permutex2var_ps(a, h8b, b);
    }
    for (int i = 0; i < 16; i++) {
        if (i & 4) continue;
        const __m512 a = r[i], b = r[i + 4];
        r[i] = _mm512_permutex2var_ps(a, h4a, b);
        r[i + 4] = _mm512_permutex2var_ps(a, h4b, b);
    }
    for (int i = 0; i < 16; i++) {
        if (i & 2) continue;
        const __m512 a = r[i], b = r[i + 2];
        r[i] = _mm512_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 2] = _mm512_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 16; i += 2) {
        const __m512 a = r[i], b = r[i + 1];
        r[i] = _mm512_mask_moveldup_ps(a, 0xaaaa, b);
        r[i + 1] = _mm512_mask_movehdup_ps(b, 0x5555, a);
    }
}
#endif
