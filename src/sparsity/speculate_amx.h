/* The AMX-INT8 prediction of a stride-1 convolution (speculate_amx.c, driven
 * by et_spec_conv_amx in speculate.c). Internal to the sparsity code. */
#ifndef ET_SPECULATE_AMX_H
#define ET_SPECULATE_AMX_H
#include <stddef.h>
#include <stdint.h>

/* Shapes and the buffer layout of one call (et_spec_amx_plan). */
typedef struct et_spec_amx_layout {
    int n, cin, h, w, cout, kh, kw, ph, pw; /* stride 1 */
    int hp, wp, ho, wo;                     /* padded input, output */
    int gp, coutp;   /* channel groups of 4 (a multiple of 16 above 16), output channels rounded to 32 */
    int64_t v, vpad; /* virtual pixels n*hp*wp, rounded up to 32 */
    int64_t vs;      /* row stride of xq in uint32: vpad + the taps' reach, rounded to 16 */
    size_t xq_off, wq_off, wtmp_off, kept_off, bytes; /* in the buffer, 64-byte aligned */
} et_spec_amx_layout;

/* Fills L; 0 when the shape does not suit the path (stride != 1 is the caller's to reject). */
int et_spec_amx_plan(et_spec_amx_layout *L, int n, int cin, int h, int w, int cout, int kh, int kw, int ph, int pw);

/* The mask of every output (cout rows, row stride ldm, real columns
 * n*ho*wo) from the coded input xq and weights wq; kept[j] = the kept
 * outputs of real column j. Returns the predicted zeros. Tiles are
 * configured and released in each of `threads` threads. */
uint64_t et_spec_amx_run(const et_spec_amx_layout *L, const uint32_t *xq, const int8_t *wq, float scale,
                         const float *bias, uint8_t *mask, int64_t ldm, int32_t *kept, int threads);

/* speculate_avx512.c: rows of xq for channel group g of image n (codes of
 * et_spec_code with inv and bits; padding and channels past cin are 0). */
void et_spec_code_xq_avx512(const et_spec_amx_layout *L, const float *x, int g, int n, float inv, int bits,
                            uint32_t *xq);
#endif
