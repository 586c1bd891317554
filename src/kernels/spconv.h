/* Conv EP and WG with the column matrix never formed, skipping dY's zeros one
 * element at a time (spconv.c, spconv_avx512.c; docs/sparsity.md "Kernels").
 *
 * A stride-1 convolution's backward products are GEMMs over the column
 * matrix col = im2col(x) (conv.c):
 *   EP  dcol[CK, P] = Wᵀ · dY[Cout, P], then col2im into dx
 *   WG  dWᵀ[CK, Cout] (+)= col[CK, P] · dY[Cout, P]ᵀ
 * Under backward skipping dY is 60-95% zero (ReLU mask, max-pool routing).
 * These kernels read x and write dx in place of col and dcol and visit only
 * dY's non-zeros, vectors over input channels:
 *   EP  for each dx pixel and tap (ky, kx) in col2im's order, the tap's sum
 *       over the non-zero dY at the pixel it reads (output channels
 *       ascending, fma from +0: the micro-kernel's sum of that dcol entry),
 *       added to the pixel's total from +0: col2im's gather sum;
 *   WG  for each output channel and KC block of the product's K (pixels),
 *       the sum over the block's non-zero dY of dY * (the KW x C input row
 *       segments it reads), from +0, added to the gradient as the
 *       micro-kernel stores (beta * C + sum, then C + sum).
 * A skipped product would have added a zero to a sum that is never -0, so
 * for finite data the results are et_sgemm + col2im's bits exactly.
 *
 * AVX-512 only (the other ISAs keep conv's column-matrix path); single
 * threaded inside a parallel region (conv's lanes), over disjoint outputs
 * otherwise. */
#ifndef ET_SPCONV_H
#define ET_SPCONV_H
#include <stddef.h>
#include <stdint.h>

#include "edgetrain.h"

/* One product's convolution (et_matmul.conv): the geometry, the chunk of
 * images, and what the kernels read and write instead of col / dcol. */
struct et_conv_implicit {
    int C, N, H, W;                   /* input: C planes of N images of H x W (CNHW) */
    int Cout, KH, KW, PH, PW, Ho, Wo; /* stride 1 */
    int n0, nb;                       /* the product's images */
    const float *x;                   /* the input (WG's col operand; EP's keep mask) */
    float *dx;                        /* EP: the input gradient (CNHW): images n0.. written */
    int keep;                         /* EP: dx = 0 where x == 0 (conv's EP mask) */
    const float *wt;                  /* EP: the weights by tap (et_spconv_ep_weights) */
    float *ws;                        /* work space of ws_floats floats (64-byte aligned) */
    size_t ws_floats;
};
typedef struct et_conv_implicit et_conv_implicit;

/* C rounded up to 16: the channel stride of the kernels' layouts. */
int et_spconv_cp(int C);

/* Whether EP / WG runs for this geometry on this CPU, with the work space it
 * needs (floats) in *ws_floats. WG writes the gradient in its own layout
 * G[co][(ky*KW + kx)*Cp + ci] (Cp = et_spconv_cp(C)); conv converts it. */
int et_spconv_ep_applies(const et_conv_implicit *g, size_t *ws_floats);
int et_spconv_wg_applies(const et_conv_implicit *g, size_t *ws_floats);

/* Whether each kernel beats conv's column-matrix path at this density of dY
 * (nnz / numel, e.g. et_spwg_density; measured, spconv.c). */
int et_spconv_ep_pays(const et_conv_implicit *g, double density);
int et_spconv_wg_pays(const et_conv_implicit *g, double density);

/* How EP cuts its work (et_spconv_ep_shape_of): input channels in blocks of
 * 16*nv (nv <= 3; the last block narrower when Cp is not a multiple), taps
 * in groups of tg <= 9 (tg*nv sums in registers), dY rows in bands of band
 * rows (>= 64 pixels; each block and group is run over a band's pixels). */
typedef struct et_spconv_ep_shape {
    int nv, tg, band;
} et_spconv_ep_shape;
et_spconv_ep_shape et_spconv_ep_shape_of(const et_conv_implicit *g);

/* EP's weights by channel block and tap: for the block of channels
 * [cb, cb + nb) (et_spconv_ep_shape), wt[cb*KK*Cout + (co*KK + tap)*nb +
 * ci - cb] = W[co][ci][tap] (W is OIHW, KK = KH*KW, tap = ky*KW + kx), zero
 * for ci >= C: KK*Cout*Cp floats, so that each sum's weight vectors are
 * contiguous. The kernel is fastest with wt 64-byte aligned. */
void et_spconv_ep_weights(const float *W, int Cout, int C, int KH, int KW, float *wt);

/* EP for the chunk: dx of images n0..n0+nb-1 from dY's columns of those
 * images (dy points at the chunk's first column, row stride ldy). Returns 1
 * when it ran (it applies and the work space is large enough), with
 * *macs_cpu = the multiply-adds run (C per non-zero dY and tap it feeds);
 * else 0, nothing written. */
int et_spconv_ep(const et_conv_implicit *g, const float *dy, int64_t ldy, uint64_t *macs_cpu);

/* WG for the chunk: G (layout above) = beta*G + the chunk's sums, in
 * et_sgemm's KC blocks of the chunk's K = nb*Ho*Wo (beta 0 or 1). Returns 1
 * when it ran, with *macs_cpu = the multiply-adds run (C*KH*KW per non-zero
 * dY, padding included); else 0, nothing written. */
int et_spconv_wg(const et_conv_implicit *g, const float *dy, int64_t ldy, float beta, float *G, uint64_t *macs_cpu);
#endif
