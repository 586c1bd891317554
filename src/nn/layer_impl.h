/* Shared by the files that implement layers (not part of the API). */
#ifndef ET_LAYER_IMPL_H
#define ET_LAYER_IMPL_H
#include "nn/layer.h"

/* Sum of n floats in a fixed order with a double accumulator. */
float et_sum_f32(const float *x, int64_t n);

/* Softmax cross-entropy, mean over n rows of k logits; writes dL/dlogits
 * and counts correct argmax predictions. Returns the mean loss. */
double et_softmax_xent(const float *logits, const uint8_t *labels, int n, int k, float *dlogits,
                       int64_t *correct);

/* conv.c: images per im2col chunk at `batch`, and whether the layer uses its
 * input directly as the col matrix (1x1, stride 1, unpadded). */
int et_conv_chunk(const et_layer *l, int batch);
int et_conv_is_direct(const et_layer *l);

extern const et_layer_ops et_conv_ops, et_linear_ops, et_relu_ops, et_maxpool_ops,
    et_avgpool_ops, et_bn_ops, et_flatten_ops, et_dropout_ops, et_add_ops;
#endif
