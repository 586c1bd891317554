/* The B-bit prediction of a stride-1 convolution with AMX-INT8 (speculate.c,
 * et_spec_conv_predict; docs/sparsity.md "AMX path"). Compiled with AMX,
 * AVX-512 VBMI and VBMI2 flags; called only after et_spec_amx_ok().
 *
 * Implicit GEMM on a padded, pixel-major copy of the input's codes:
 * xt[v][c] holds the code of channel c of virtual pixel v (speculate_amx.h).
 * An A tile is 16 consecutive virtual pixels (rows, one pixel's cb bytes
 * apart) x 64 bytes of K: for tap (ky, kx) it starts at pixel v + ky*wp + kx,
 * so every row is a whole aligned cache line when cb >= 64; below 64 bytes a
 * row runs on into the next pixels, which are the next taps kx + 1 ... (tp
 * taps per K step). B tiles are the weights' codes in the matching order.
 * tdpbssd sums code products exactly in int32; the order of the sum does not
 * matter, so S equals et_igemm_s8's. The estimate's formula is monotonic in S,
 * so the mask is S >= thr[co] (speculate.c). C tiles are pixels x channels:
 * the mask bytes (channels x pixels) are their transpose, made with byte
 * permutes, and written for the valid pixels only (consecutive real columns,
 * so compressed to the front of each row they are stored in place). */
#include "sparsity/speculate_amx.h"

#include <immintrin.h>
#include <stdint.h>
#include <string.h>


typedef struct tilecfg {
    uint8_t palette, start;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg;

/* tiles 0..3: C (2 pixel runs x 2 channel blocks); 4, 5: A (pixels); 6, 7: B */
static void configure(void) {
    tilecfg c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 8; t++) c.colsb[t] = 64, c.rows[t] = 16;
    _tile_loadconfig(&c);
}

/* Which of the 16 virtual pixels from v0 are real outputs, and the real
 * column of the first one (the others follow it consecutively): from the
 * tables of et_spec_amx_run (vb[i] = whether virtual pixel i of a few
 * images from an image's start is real, pre[i] = the real pixels before
 * it). */
static __mmask16 run_lanes(const et_spec_amx_layout *L, const uint8_t *vb, const int32_t *pre, int64_t v0,
                           int64_t *real0) {
    const int64_t HWp = (int64_t)L->hp * L->wp, n = v0 / HWp, rem = v0 - n * HWp, left = L->v - v0;
    __mmask16 m = _mm_test_epi8_mask(_mm_loadu_si128((const __m128i *)(const void *)(vb + rem)), _mm_set1_epi8(1));
    if (left < 16) m &= left > 0 ? (__mmask16)((1u << left) - 1) : 0; /* past the last image */
    *real0 = m ? n * L->ho * L->wo + pre[rem + __builtin_ctz(m)] : 0;
    return m;
}

/* The byte transpose of a C tile's keep bits. z_i (i = 0..3) holds rows
 * (pixels) 4i..4i+3, byte 16*r + c = keep(pixel 4i + r, channel c); the
 * outputs o_j hold channels 4j..4j+3, byte 16*c + p = keep(p, 4j + c).
 * Level 1: u(a, b) = bytes of z_2a, z_2a+1 for j = 2b, 2b+1 at
 * 32*(j % 2) + 8*c + (p % 8) (p = 8a + p % 8); level 2: o_j from u(0, b),
 * u(1, b). */
static void perm_indices(uint8_t idx1[2][64], uint8_t idx2[2][64]) {
    for (int b = 0; b < 2; b++)
        for (int jj = 0; jj < 2; jj++)
            for (int c = 0; c < 4; c++)
                for (int pl = 0; pl < 8; pl++)
                    idx1[b][jj * 32 + c * 8 + pl] = (uint8_t)((pl / 4) * 64 + (pl % 4) * 16 + 4 * (2 * b + jj) + c);
    for (int jj = 0; jj < 2; jj++)
        for (int c = 0; c < 4; c++)
            for (int p = 0; p < 16; p++) idx2[jj][c * 16 + p] = (uint8_t)((p / 8) * 64 + jj * 32 + c * 8 + (p % 8));
}

/* Per pixel pair of a chunk: its runs' valid lanes, first real columns,
 * level-2 indices and kept counts so far. */
typedef struct pairst {
    __m512i ox[2][2], kc[2];
    int64_t real[2];
    __mmask16 valid[2], head[2];
} pairst;

/* The mask bytes and kept counts of one pair's 2 x 2 C tiles (pixel run h,
 * channel block c in cb[2h + c]) for channels cp..cp+31. */
static inline void epilogue(const int32_t (*cb)[256], pairst *ps, int cp, int cout, const int32_t *thr, uint8_t *mask,
                            int64_t ldm, __m512i idx1a, __m512i idx1b) {
    const __m512i ones8 = _mm512_set1_epi8(1);
    for (int h = 0; h < 2; h++) {
        if (!ps->valid[h]) continue;
        __m512i cnt = _mm512_setzero_si512();
        const __mmask16 hd = ps->head[h];
        for (int c = 0; c < 2; c++) {
            const int co0 = cp + 16 * c;
            if (co0 >= cout) break;
            const int32_t *t = cb[2 * h + c];
            const __m512i tv = _mm512_loadu_si512(thr + co0);
            __m512i zz[4];
            for (int q = 0; q < 4; q++) { /* four rows' masks at a time (there are 8 mask registers) */
                const int32_t *tq = t + 64 * q;
                const __mmask16 k0 = _mm512_cmpge_epi32_mask(_mm512_load_si512(tq), tv);
                const __mmask16 k1 = _mm512_cmpge_epi32_mask(_mm512_load_si512(tq + 16), tv);
                const __mmask16 k2 = _mm512_cmpge_epi32_mask(_mm512_load_si512(tq + 32), tv);
                const __mmask16 k3 = _mm512_cmpge_epi32_mask(_mm512_load_si512(tq + 48), tv);
                zz[q] = _mm512_maskz_mov_epi8(_mm512_kunpackd(_mm512_kunpackw(k3, k2), _mm512_kunpackw(k1, k0)), ones8);
            }
            const __m512i u00 = _mm512_permutex2var_epi8(zz[0], idx1a, zz[1]);
            const __m512i u01 = _mm512_permutex2var_epi8(zz[0], idx1b, zz[1]);
            const __m512i u10 = _mm512_permutex2var_epi8(zz[2], idx1a, zz[3]);
            const __m512i u11 = _mm512_permutex2var_epi8(zz[2], idx1b, zz[3]);
            const __m512i o[4] = {_mm512_permutex2var_epi8(u00, ps->ox[h][0], u10),
                                  _mm512_permutex2var_epi8(u00, ps->ox[h][1], u10),
                                  _mm512_permutex2var_epi8(u01, ps->ox[h][0], u11),
                                  _mm512_permutex2var_epi8(u01, ps->ox[h][1], u11)};
            cnt = _mm512_add_epi8(cnt, _mm512_add_epi8(_mm512_add_epi8(o[0], o[1]), _mm512_add_epi8(o[2], o[3])));
            /* row 4j + l of the block is lane l of o[j] */
            uint8_t *m = mask + (int64_t)co0 * ldm + ps->real[h];
            const int nc = cout - co0 < 16 ? cout - co0 : 16;
            for (int r = 0; r < nc; r++) {
                const __m512i v = o[r >> 2];
                const __m128i x = (r & 3) == 0   ? _mm512_castsi512_si128(v)
                                  : (r & 3) == 1 ? _mm512_extracti32x4_epi32(v, 1)
                                  : (r & 3) == 2 ? _mm512_extracti32x4_epi32(v, 2)
                                                 : _mm512_extracti32x4_epi32(v, 3);
                if (hd == 0xffff)
                    _mm_storeu_si128((__m128i *)(void *)(m + r * ldm), x);
                else
                    _mm_mask_storeu_epi8(m + r * ldm, hd, x);
            }
        }
        /* the four channel lanes' counts added (at most 32 per byte), then widened */
        cnt = _mm512_add_epi8(cnt, _mm512_shuffle_i64x2(cnt, cnt, 0x4E));
        cnt = _mm512_add_epi8(cnt, _mm512_shuffle_i64x2(cnt, cnt, 0xB1));
        ps->kc[h] = _mm512_add_epi32(ps->kc[h], _mm512_cvtepu8_epi32(_mm512_castsi512_si128(cnt)));
    }
}

uint64_t et_spec_amx_run(const et_spec_amx_layout *L, void *buf, uint8_t *mask, int64_t ldm, int threads) {
    char *base = buf;
    const int8_t *xt = (const int8_t *)(base + L->xt_off), *wq = (const int8_t *)(base + L->wq_off);
    const int32_t *thr = (const int32_t *)(const void *)(base + L->thr_off);
    int32_t *kept = (int32_t *)(void *)(base + L->kept_off);
    uint8_t *vb = (uint8_t *)(base + L->lanes_off);
    int32_t *pre = (int32_t *)(void *)(base + L->lanes_off + L->lanes_n);
    {
        const int64_t HWp = (int64_t)L->hp * L->wp;
        int32_t cnt = 0;
        for (int64_t i = 0; i < (int64_t)L->lanes_n; i++) {
            const int64_t r = i % HWp, y = r / L->wp, x = r - y * L->wp;
            if (r == 0) cnt = (int32_t)(i / HWp * L->ho * L->wo);
            vb[i] = y < L->ho && x < L->wo;
            pre[i] = cnt;
            cnt += vb[i];
        }
    }
    const int64_t npairs = L->vpad / 32, cb = L->cb, nco16 = L->coutp / 16;
    const int kh = L->kh, gx = L->gx, ngb = L->ngb, cout = L->cout;
    const int64_t astep = (int64_t)L->tp * cb, bstep = nco16 * 1024;
    uint64_t z = 0;
    int64_t next = 0;
#pragma omp parallel num_threads(threads) reduction(+ : z) if (threads > 1 && npairs > 1)
    {
        configure();
        int32_t cbuf[2][4][256] __attribute__((aligned(64)));
        uint8_t ix1[2][64] __attribute__((aligned(64))), ix2[2][64] __attribute__((aligned(64)));
        perm_indices(ix1, ix2);
        const __m512i idx1a = _mm512_load_si512(ix1[0]), idx1b = _mm512_load_si512(ix1[1]);
        const __m512i idx2[2] = {_mm512_load_si512(ix2[0]), _mm512_load_si512(ix2[1])};
        uint8_t io[64] __attribute__((aligned(64)));
        for (int i = 0; i < 64; i++) io[i] = (uint8_t)i;
        const __m512i iota = _mm512_load_si512(io);
        /* chunks of CH pixel pairs: each channel block's weights (its B
         * tiles, up to kh*kw*cb*32 bytes) are loaded from L2 once per chunk
         * and stay in L1 across its pairs; the pairs' tiles are few enough
         * to stay there too */
        enum { CH = 16 };
        pairst ps[CH];
        /* chunks of CH pairs, taken as the threads finish (any order gives
         * the same mask and counts: each output is its own) */
        for (int64_t p0; (p0 = __atomic_fetch_add(&next, CH, __ATOMIC_RELAXED)) < npairs;) {
            const int np = npairs - p0 < CH ? (int)(npairs - p0) : CH;
            for (int i = 0; i < np; i++) {
                const int64_t v0 = (p0 + i) * 32;
                pairst *q = &ps[i];
                q->valid[0] = run_lanes(L, vb, pre, v0, &q->real[0]);
                q->valid[1] = run_lanes(L, vb, pre, v0 + 16, &q->real[1]);
                for (int h = 0; h < 2; h++) {
                    /* the valid lanes' values, compressed to the front: as many lanes from real[h] */
                    q->head[h] = (__mmask16)((1u << __builtin_popcount(q->valid[h])) - 1);
                    q->ox[h][0] = idx2[0], q->ox[h][1] = idx2[1];
                    if (q->valid[h] && q->valid[h] != 0xffff) {
                        const __mmask64 v4 = (__mmask64)q->valid[h] * 0x0001000100010001ull;
                        const __mmask64 h4 = (__mmask64)q->head[h] * 0x0001000100010001ull;
                        const __m512i e = _mm512_maskz_expand_epi8(h4, _mm512_maskz_compress_epi8(v4, iota));
                        q->ox[h][0] = _mm512_permutexvar_epi8(e, idx2[0]);
                        q->ox[h][1] = _mm512_permutexvar_epi8(e, idx2[1]);
                    }
                    q->kc[h] = _mm512_setzero_si512();
                }
            }
            /* software pipelined: the tiles of one (block, pair) are issued
             * before the previous one's epilogue, which then runs while the
             * tile unit works */
            int prev = -1, prevcp = 0, buf = 0;
            for (int cp = 0; cp < L->coutp; cp += 32)
                for (int i = 0; i < np; i++) {
                    if (!ps[i].valid[0] && !ps[i].valid[1]) continue;
                    _tile_zero(0);
                    _tile_zero(1);
                    _tile_zero(2);
                    _tile_zero(3);
                    const int8_t *a0 = xt + (p0 + i) * 32 * cb, *b = wq + (int64_t)cp / 16 * 1024;
                    for (int ky = 0; ky < kh; ky++) {
                        const int8_t *a = a0 + (int64_t)ky * L->wp * cb;
                        for (int g = 0; g < gx; g++, a += astep)
                            for (int gb = 0; gb < ngb; gb++, b += bstep) {
                                _tile_loadd(4, a + gb * 64, cb);
                                _tile_loadd(5, a + gb * 64 + 16 * cb, cb);
                                _tile_loadd(6, b, 64);
                                _tile_loadd(7, b + 1024, 64);
                                _tile_dpbssd(0, 4, 6);
                                _tile_dpbssd(1, 4, 7);
                                _tile_dpbssd(2, 5, 6);
                                _tile_dpbssd(3, 5, 7);
                            }
                    }
                    if (prev >= 0)
                        epilogue((const int32_t(*)[256])cbuf[buf ^ 1], &ps[prev], prevcp, cout, thr, mask, ldm, idx1a,
                                 idx1b);
                    _tile_stored(0, cbuf[buf][0], 64);
                    _tile_stored(1, cbuf[buf][1], 64);
                    _tile_stored(2, cbuf[buf][2], 64);
                    _tile_stored(3, cbuf[buf][3], 64);
                    prev = i, prevcp = cp, buf ^= 1;
                }
            if (prev >= 0)
                epilogue((const int32_t(*)[256])cbuf[buf ^ 1], &ps[prev], prevcp, cout, thr, mask, ldm, idx1a, idx1b);
            for (int i = 0; i < np; i++)
                for (int h = 0; h < 2; h++)
                    if (ps[i].valid[h]) {
                        _mm512_mask_storeu_epi32(kept + ps[i].real[h], ps[i].head[h], ps[i].kc[h]);
                        z += (uint64_t)__builtin_popcount(ps[i].valid[h]) * (uint64_t)cout -
                             (uint64_t)_mm512_mask_reduce_add_epi32(ps[i].head[h], ps[i].kc[h]);
                    }
        }
        _tile_release();
    }
    return z;
}
