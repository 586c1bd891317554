/* Number formats, internal: the parameters one quantize call derives from a
 * descriptor, and the scalar (reference) and AVX-512 loops that use them. */
#ifndef ET_FORMAT_INTERNAL_H
#define ET_FORMAT_INTERNAL_H
#include "edgetrain.h"

#include <stdint.h>

/* Stream of the stochastic-rounding key in et_rand64 (kept apart from
 * src/core/rng.h's small stream numbers). */
#define ET_STREAM_QUANTIZE 0x5352u /* "SR" */

/* Everything a quantize loop needs, derived once per call (or per row). The
 * rounding works on float32 bit patterns: a value is rounded to a multiple of
 * 2^qexp with qexp = max(Ex - mant, qmin), Ex = floor(log2 |x|). */
typedef struct et_qparams {
    int is_int;        /* intN/dfxpN: y = x/scale rounded to an integer */
    int mant;          /* mantissa bits kept (int: 160, i.e. never the limit) */
    int qmin;          /* lowest quantum exponent (int: 0; nosub: -300) */
    int nosub;         /* flush results below min normal */
    int overflow_max;  /* overflow -> max (sat, OCP formats, /rz) instead of inf */
    int inf_max;       /* +-inf input -> +-max */
    uint32_t maxbits;  /* float bits of max finite (int: qmax as float) */
    uint32_t minnorm;  /* float bits of the smallest normal */
    int mode;          /* et_rounding */
    int rbits;         /* random bits for SR (1..32) */
    float scale;       /* int: the scale (0: all outputs are zero) */
    uint64_t subseed;  /* et_rand64(seed, ET_STREAM_QUANTIZE, tensor) */
    uint64_t step;
    uint64_t prefix;   /* et_rand_prefix(subseed, step): et_qrand(i) = et_rand_at(prefix, i) >> 32 */
} et_qparams;

void et_qparams_init(et_qparams *p, const et_format *f, float scale, const et_qkey *key);
/* 32 random bits of element `index` (the top half of et_rand64(subseed, step, index)). */
uint32_t et_qrand(const et_qparams *p, uint64_t index);
/* et_quantize that also reports the per-tensor scale it used (intN/dfxpN;
 * 1 for floating point, 0 for an all-zero tensor); scale may be NULL. */
et_status et_quantize_scaled(const et_format *f, const float *x, float *y, size_t n, const et_qkey *key,
                             float *scale);
/* et_quantize_scaled for a per-tensor intN/dfxpN format with N <= 8 that also
 * writes the int8 code of every result on the grid of cs = (scale > 0 ? scale
 * : 1): codes[i] = rne(y[i] * fl(1 / cs)) clamped to [-127, 127], NaN -> 0,
 * the rule by which the integer GEMM takes codes back from floats
 * (et_igemm_code), so handing it the codes instead gives the same product. */
et_status et_quantize_codes(const et_format *f, const float *x, float *y, int8_t *codes, size_t n,
                            const et_qkey *key, float *scale);
/* The codes of n floats on the grid of cs, 16 lanes at a time (AVX-512), and
 * et_quantize_avx512 followed by them (fused for intN/dfxpN to nearest). */
void et_codes_avx512(const float *y, int8_t *codes, size_t n, float cs);
void et_quantize_codes_avx512(const et_qparams *p, const float *x, float *y, int8_t *codes, size_t n, uint64_t first,
                              float cs);
/* One value with the given 32 random bits (the reference rounding of every path). */
float et_quantize_one(const et_qparams *p, float x, uint32_t rnd);
/* Reference loop: y[i] = q(x[i]) for elements first..first+n-1 (index first+i). */
void et_quantize_scalar(const et_qparams *p, const float *x, float *y, size_t n, uint64_t first);
/* max |x[i]| over the finite x[i] (0 if none), 16 lanes at a time. */
float et_absmax_avx512(const float *x, size_t n, int with_inf);
/* max |x[i]| over the finite elements (with_inf: also +-inf; NaN never
 * counts), 0 for none; large tensors are split over the threads. */
float et_absmax_f32(const float *x, size_t n, int with_inf);
/* The same, bit for bit, 16 lanes at a time (only when the CPU has AVX-512). */
void et_quantize_avx512(const et_qparams *p, const float *x, float *y, size_t n, uint64_t first);
#endif
