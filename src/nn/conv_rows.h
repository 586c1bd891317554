/* Row kernels of conv.c's im2col / col2im for stride-1 convolutions whose
 * input and output rows fit in 32 floats (the 28x28 grey-image models): each
 * image row is moved with masked vector loads and stores instead of memcpy +
 * scalar padding loops. Internal to src/nn. */
#ifndef ET_CONV_ROWS_H
#define ET_CONV_ROWS_H
#include <stdint.h>

/* Geometry of one stride-1 convolution (sizes of the input and output planes). */
typedef struct et_conv_geom {
    int H, W, Ho, Wo, KH, KW, PH, PW;
} et_conv_geom;

#define ET_CONV_ROWS_MAXW 32

#if defined(__x86_64__) || defined(_M_X64)
/* col row (ky,kx) of one channel for nb images: dst[n*Ho*Wo + oy*Wo + ox] =
 * x[n][oy-PH+ky][ox-PW+kx] (0 outside); src = channel plane of image 0,
 * planes H*W apart. */
void et_im2col_row_avx512(const et_conv_geom *g, int ky, int kx, const float *src, int nb,
                          float *dst, int32_t *cnt); /* cnt (NULL: none) = the row's non-zeros */
/* The column matrix transposed (conv WG under backward skipping, kernels/spwg.h):
 * dst[p*ldd + r] = col[r][p] for the C*KH*KW rows r = (ci*KH+ky)*KW+kx and the
 * nb*Ho*Wo positions p = n*Ho*Wo + oy*Wo + ox; x = channel 0's plane of image 0,
 * channels cstride apart, images H*W apart. 16 x 16 blocks (16 rows r, 16
 * positions of an output row) loaded from x and transposed in registers. */
void et_im2row_avx512(const et_conv_geom *g, int C, const float *x, int64_t cstride, int nb, float *dst,
                      int64_t ldd);
/* The same for int8 codes (speculation), 32 bytes per row. */
void et_im2col_row_i8_avx512(const et_conv_geom *g, int ky, int kx, const int8_t *src, int nb, int8_t *dst);
/* Gather form of col2im for one channel and nb images: every dx element is
 * written once as 0 + the sum of its col entries in (ky, kx) order.
 * col = the channel's first col row (rows Ho*Wo*ld apart, ld = nb*Ho*Wo). */
void et_col2im_chan_avx512(const et_conv_geom *g, const float *col, int64_t ld, int nb,
                           float *dx);
/* The same, and dx = 0 where keep (the channel's input plane of image 0,
 * planes H*W apart) is 0: conv EP's mask applied after col2im. */
void et_col2im_chan_keep_avx512(const et_conv_geom *g, const float *col, int64_t ld, int nb,
                                float *dx, const float *keep);
/* One channel's row of dY (n values): cnt[p] += dy[p] != 0 (NaN counts), and
 * the row's sum in et_sum_f32's order (16 float lanes, then their sum and
 * the tail in double), so the bias gradient comes from the same read. */
float et_conv_dyrow_avx512(const float *dy, int64_t n, int32_t *cnt);
#endif
#endif
