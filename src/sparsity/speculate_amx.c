/* The B-bit prediction of a stride-1 convolution with AMX-INT8 (speculate.c,
 * et_spec_conv_predict; docs/sparsity.md "AMX path"). Compiled with AMX and
 * AVX-512 flags; called only after et_spec_amx_ok().
 *
 * Implicit GEMM on a padded, channel-interleaved copy of the input's codes:
 * xq[g][v] holds the codes of channels 4g..4g+3 (one byte each) of virtual
 * pixel v = (n, y, x) of the zero-padded input (y < Hp, x < Wp). Output pixel
 * v of the padded grid (valid when y < Ho and x < Wo) reads tap (ky, kx) at
 * v + ky*Wp + kx, so a B tile (16 channel groups x 16 pixels x 4 bytes) of
 * one tap is 16 rows of xq loaded with one stride, no im2col. A tiles are the
 * weights' codes wq[tap][co][ci]. tdpbssd sums code products exactly in
 * int32; the order of the sum does not matter, so S equals et_igemm_s8's.
 * The mask is formed from S as the other paths do (scale * (float)S, then
 * + bias, kept where !(e <= 0)), and written for the valid pixels only (they
 * are consecutive real columns, so compressed to the front of a vector they
 * are stored in place). */
#include "sparsity/speculate_amx.h"

#include <immintrin.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct tilecfg {
    uint8_t palette, start;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg;

/* tiles 0..3: C (2 channel blocks x 2 pixel runs); 4, 5: A; 6, 7: B */
static void configure(int gk) {
    tilecfg c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 4; t++) c.colsb[t] = 64, c.rows[t] = 16;
    for (int t = 4; t < 6; t++) c.colsb[t] = (uint16_t)(4 * gk), c.rows[t] = 16;
    for (int t = 6; t < 8; t++) c.colsb[t] = 64, c.rows[t] = (uint8_t)gk;
    _tile_loadconfig(&c);
}

/* Which of the 16 virtual pixels from v0 are real outputs, and the real
 * column of the first one (the others follow it consecutively). */
static __mmask16 run_lanes(const et_spec_amx_layout *L, int64_t v0, int64_t *real0) {
    const int64_t HWp = (int64_t)L->hp * L->wp;
    int64_t n = v0 / HWp, rem = v0 - n * HWp;
    int y = (int)(rem / L->wp), x = (int)(rem - (int64_t)y * L->wp);
    __mmask16 m = 0;
    *real0 = 0;
    for (int l = 0; l < 16; l++) {
        if (n < L->n && y < L->ho && x < L->wo) {
            if (!m) *real0 = (n * L->ho + y) * L->wo + x;
            m |= (__mmask16)(1u << l);
        }
        if (++x == L->wp) {
            x = 0;
            if (++y == L->hp) y = 0, n++;
        }
    }
    return m;
}

uint64_t et_spec_amx_run(const et_spec_amx_layout *L, const uint32_t *xq, const int8_t *wq, float scale,
                         const float *bias, uint8_t *mask, int64_t ldm, int32_t *kept, int threads) {
    const int gk = L->gp < 16 ? L->gp : 16, ngb = L->gp / gk, taps = L->kh * L->kw;
    const int64_t npairs = L->vpad / 32, lda = (int64_t)L->gp * 4, ldb = L->vs * 4;
    uint64_t z = 0;
#pragma omp parallel num_threads(threads) reduction(+ : z) if (threads > 1 && npairs > 1)
    {
        configure(gk);
        int32_t cb[4][256] __attribute__((aligned(64)));
        const __m512 vs = _mm512_set1_ps(scale), zero = _mm512_setzero_ps();
        const __m512i one = _mm512_set1_epi32(1);
        const __m128i ones8 = _mm_set1_epi8(1);
#pragma omp for schedule(static)
        for (int64_t p = 0; p < npairs; p++) {
            const int64_t v0 = p * 32;
            int64_t real[2];
            const __mmask16 valid[2] = {run_lanes(L, v0, &real[0]), run_lanes(L, v0 + 16, &real[1])};
            if (!valid[0] && !valid[1]) continue;
            /* the valid lanes' values, compressed to the front: as many lanes from real[r] */
            const __mmask16 head[2] = {(__mmask16)((1u << __builtin_popcount(valid[0])) - 1),
                                       (__mmask16)((1u << __builtin_popcount(valid[1])) - 1)};
            __m512i kc[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
            for (int cp = 0; cp < L->coutp; cp += 32) {
                _tile_zero(0);
                _tile_zero(1);
                _tile_zero(2);
                _tile_zero(3);
                for (int t = 0; t < taps; t++) {
                    const int64_t off = (int64_t)(t / L->kw) * L->wp + t % L->kw;
                    for (int gb = 0; gb < ngb; gb++) {
                        const int8_t *a = wq + ((int64_t)t * L->coutp + cp) * lda + gb * 64;
                        const uint32_t *b = xq + (int64_t)gb * 16 * L->vs + v0 + off;
                        _tile_loadd(4, a, lda);
                        _tile_loadd(5, a + 16 * lda, lda);
                        _tile_loadd(6, b, ldb);
                        _tile_loadd(7, b + 16, ldb);
                        _tile_dpbssd(0, 4, 6);
                        _tile_dpbssd(1, 4, 7);
                        _tile_dpbssd(2, 5, 6);
                        _tile_dpbssd(3, 5, 7);
                    }
                }
                _tile_stored(0, cb[0], 64);
                _tile_stored(1, cb[1], 64);
                _tile_stored(2, cb[2], 64);
                _tile_stored(3, cb[3], 64);
                for (int q = 0; q < 4; q++) { /* tile q: channel block q / 2, pixel run q % 2 */
                    const int r = q & 1;
                    if (!valid[r]) continue;
                    for (int i = 0; i < 16; i++) {
                        const int co = cp + (q >> 1) * 16 + i;
                        if (co >= L->cout) break;
                        const __m512 b = bias ? _mm512_set1_ps(bias[co]) : zero;
                        const __m512 e =
                            _mm512_add_ps(_mm512_mul_ps(vs, _mm512_cvtepi32_ps(_mm512_load_si512(cb[q] + 16 * i))), b);
                        const __mmask16 keep = _mm512_mask_cmp_ps_mask(valid[r], e, zero, _CMP_NLE_UQ);
                        /* register compress, then a plain masked store (the memory form is slow) */
                        _mm_mask_storeu_epi8(mask + (int64_t)co * ldm + real[r], head[r],
                                             _mm_maskz_compress_epi8(valid[r], _mm_maskz_mov_epi8(keep, ones8)));
                        z += (uint64_t)__builtin_popcount((unsigned)(valid[r] & ~keep));
                        kc[r] = _mm512_mask_add_epi32(kc[r], keep, kc[r], one);
                    }
                }
            }
            for (int r = 0; r < 2; r++)
                if (valid[r]) _mm512_mask_storeu_epi32(kept + real[r], head[r], _mm512_maskz_compress_epi32(valid[r], kc[r]));
        }
        _tile_release();
    }
    return z;
}
