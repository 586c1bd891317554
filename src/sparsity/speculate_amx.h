/* The AMX-INT8 prediction of a stride-1 convolution (speculate_amx.c, driven
 * by et_spec_conv_amx in speculate.c). Internal to the sparsity code. */
#ifndef ET_SPECULATE_AMX_H
#define ET_SPECULATE_AMX_H
#include <stddef.h>
#include <stdint.h>

/* Shapes and the buffer layout of one call (et_spec_amx_plan).
 * Virtual pixels: image n's rows are hp apart, rows wp pixels apart; input
 * pixel (iy, ix) sits at row n*hp + ph + iy, column pw + ix, everything else
 * is zero. Padding is shared: the zero columns left of a row are also the
 * ones right of the row before (and the zero rows above an image the ones
 * below the image before), so hp = h + ph and wp = w + pw where the kernel
 * reaches no further. Output pixel (n, y, x) is virtual pixel
 * v = (n*hp + y)*wp + x and reads tap (ky, kx) at v + ky*wp + kx. */
typedef struct et_spec_amx_layout {
    int n, cin, h, w, cout, kh, kw, ph, pw; /* stride 1 */
    int hp, wp, ho, wo;                     /* virtual rows per image and pixels per row; output */
    int cb;      /* code bytes per virtual pixel: cin rounded up to 4, 8, 16, 32 or a multiple of 64 */
    int tp, gx;  /* taps per 64-byte K step (64 / cb below 64, else 1); K steps per kernel row */
    int ngb;     /* 64-byte K steps per tap (cb / 64, at least 1) */
    int coutp;   /* output channels rounded to 32 */
    int64_t v, vpad; /* virtual pixels n*hp*wp, rounded up to 32 */
    int64_t vs;      /* pixels of xt: vpad + the taps' reach */
    size_t lanes_n;  /* virtual pixels of the lane tables: at least one image and 32 more */
    size_t xt_off, wq_off, wtmp_off, thr_off, kept_off, lanes_off, bytes; /* in the buffer, 64-byte aligned */
} et_spec_amx_layout;

/* Fills L; 0 when the shape does not suit the path (stride != 1 is the caller's to reject). */
int et_spec_amx_plan(et_spec_amx_layout *L, int n, int cin, int h, int w, int cout, int kh, int kw, int ph, int pw);

/* The mask of every output (cout rows, row stride ldm, real columns
 * n*ho*wo) from the coded input at buf + xt_off (xt[v][cb], pixel-major) and
 * weights at wq_off (B tiles: [ky][kx step][K step][co / 16][16 rows of 4 k]
 * [16 co][4 bytes]): mask = S >= thr[co] (thr_off: the integer threshold of
 * the estimate's formula, speculate.c); buf + kept_off gets kept[j] = the
 * kept outputs of real column j. Returns the predicted zeros. Tiles are
 * configured and released in each of `threads` threads. */
uint64_t et_spec_amx_run(const et_spec_amx_layout *L, void *buf, uint8_t *mask, int64_t ldm, int threads);

/* speculate_avx512.c: the virtual rows of image n in xt (codes of
 * et_spec_code with inv and bits; padding and channels past cin are 0). */
void et_spec_code_xt_avx512(const et_spec_amx_layout *L, const float *x, int n, float inv, int bits, int8_t *xt,
                            int32_t *nz);
/* speculate_avx512.c: one output channel's weights w[ci][t] (cin x taps)
 * coded into out[t][ci]. */
void et_spec_code_wt_avx512(const float *w, int cin, int taps, float inv, int bits, int8_t *out);
/* speculate_avx512.c: B tile bt of wq (64-byte aligned) from the weights'
 * codes wt in [co][ky*kw + kx][ci] order. */
void et_spec_pack_wq_avx512(const et_spec_amx_layout *L, const int8_t *wt, int bt, int8_t *d);
#endif
