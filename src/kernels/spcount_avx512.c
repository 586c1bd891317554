/* One pass over a row for the fast counting pass (spcount.c): its non-zero
 * bits (as et_spgemm_nzbits_avx512) and, in the same loads, cnt[t] += (x[t] != 0)
 * (as et_spgemm_nzcount_avx512). */
#include <immintrin.h>
#include <stdint.h>

void et_spcount_nzscan_avx512(const float *x, int n, uint64_t *bits, int32_t *cnt) {
    const __m512 z = _mm512_setzero_ps();
    const __m512i one = _mm512_set1_epi32(1);
    for (int w = 0; w * 64 < n; w++) {
        uint64_t b = 0;
        for (int v = 0; v < 4; v++) {
            int t = w * 64 + 16 * v, left = n - t;
            if (left <= 0) break;
            __mmask16 mk = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
            __mmask16 nz = _mm512_mask_cmp_ps_mask(mk, _mm512_maskz_loadu_ps(mk, x + t), z, _CMP_NEQ_UQ);
            __m512i c = _mm512_maskz_loadu_epi32(mk, cnt + t);
            _mm512_mask_storeu_epi32(cnt + t, mk, _mm512_mask_add_epi32(c, nz, c, one));
            b |= (uint64_t)nz << (16 * v);
        }
        bits[w] = b;
    }
}
