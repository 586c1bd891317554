/* Runs one layer outside a model: owns its parameters, input, output and
 * gradients. Used by the golden and finite-difference tests. */
#ifndef ET_LAYER_HARNESS_H
#define ET_LAYER_HARNESS_H
#include "kernels/matmul.h"
#include "nn/layer.h"

typedef struct lh {
    et_layer l;
    et_engine eng;
    int N;
    int64_t nx, ny;
    float *x, *x2, *y, *dy, *dx, *dx2, *scratch;
    uint64_t seed;
    int train;
    int relu_in; /* passed to EP as et_lctx.relu_in */
    const et_layer_sparsity *sp; /* run-time sparsity of the calls (NULL: dense) */
} lh;

/* Sets up a layer of type t with config cfg (NULL for none) on input shape in
 * and batch N; returns ET_OK or the setup error. Parameters get random values. */
et_status lh_init(lh *h, et_layer_type t, const void *cfg, size_t cfg_size, et_shape in, int N);
void lh_free(lh *h);
et_status lh_ff(lh *h);
et_status lh_ep(lh *h); /* dx from dy */
et_status lh_wg(lh *h);
/* Fills a with uniform values in [lo, hi) from a fixed stream. */
void lh_fill(float *a, int64_t n, uint64_t stream, float lo, float hi);
/* NCHW <-> CNHW for N images of C planes of hw values. */
void lh_nchw_to_cnhw(const float *src, float *dst, int N, int C, int64_t hw);
void lh_cnhw_to_nchw(const float *src, float *dst, int N, int C, int64_t hw);
#endif
