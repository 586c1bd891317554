/* Run-time sparsity inside the library (docs/sparsity.md): the mode set of a
 * model, which layer does what (sparsity.c), and the speculation the matmul
 * path runs for a product (speculate.c). */
#ifndef ET_SPARSITY_H
#define ET_SPARSITY_H
#include "edgetrain.h"

#include <stddef.h>
#include <stdint.h>

struct et_model;

/* Workspace bytes of one speculated M x N x K product (estimate + operand codes). */
size_t et_spec_ws_bytes(int bits, int M, int N, int K);
/* What a fused prediction (B bits, op(A) = A, op(B) = B, AVX512-VNNI) learns
 * on the way: the mask's count and sum_j nnz(B[:,j]) * kept(j), which is the
 * product's exact skip_zeros count when A has no zero (valid = 0: not run). */
typedef struct et_spec_fused {
    int valid;
    uint64_t kept, elem_dense_a;
    /* the generic paths (no fused count): each row's kept outputs, M of
     * them in the workspace (NULL: not given); with op(B) free of zeros the
     * product's exact skip_zeros count is sum_i row_kept[i] * nnz(op(A) row i) */
    const int32_t *row_kept;
    /* a checked call's exact dense product op(A)·op(B) (et_sgemm, beta 0),
     * M x N with row stride N, in the workspace; NULL: not computed */
    const float *dense;
} et_spec_fused;
/* Predicts mm->spec->mask (and counts statistics); ws holds et_spec_ws_bytes().
 * fu (may be NULL) gets what the fused path learnt. */
et_status et_spec_predict(const et_matmul *mm, void *ws, size_t ws_bytes, et_spec_fused *fu);
/* One operand value's B-bit code, inv = 127 / absmax (0 if absmax is 0). */
int8_t et_spec_code(float x, float inv, int bits);
/* out[i] = et_spec_code(x[i], 127 / absmax, bits) for i < n (vectorised,
 * threads over blocks): conv codes its input once per call with it. */
void et_spec_code_tensor(const float *x, int64_t n, float absmax, int bits, int8_t *out);
/* A (M x K, row stride lda) coded with absmax/bits and packed in the fused
 * VNNI path's layout into out (et_spec_a_vnni_bytes), for et_spec.a_vnni.
 * Returns 0 (nothing written) where the fused path cannot run. */
size_t et_spec_a_vnni_bytes(int M, int K);
int et_spec_pack_a(const float *A, int M, int K, int lda, float absmax, int bits, uint32_t *out);
/* The AMX-INT8 path of a stride-1 convolution (docs/sparsity.md): usable on
 * this CPU and process (probed once; ET_AMX=0 or et_spec_set_amx(0) turn it
 * off, and an ISA capped below AVX-512). et_spec_conv_amx (layout from
 * et_spec_amx_plan, speculate_amx.h; buf of layout->bytes) predicts the mask
 * of all sp->mask's outputs from x (CNHW) and w with sp's scales, bits and
 * bias, and points *kept at the kept outputs per output column; xnz (or
 * NULL): each input pixel's non-zero channels (N x H x W); 0: not run. */
int et_spec_amx_ok(void);
void et_spec_set_amx(int on);
struct et_spec_amx_layout;
int et_spec_conv_amx(const struct et_spec_amx_layout *L, const float *x, const float *w, const et_spec *sp, void *buf,
                     const int32_t **kept, int32_t *xnz);
/* The direct path of a stride-1 convolution with few products per output
 * (K = cin * kh * kw <= ET_SPEC_SMALL_K; speculate.c): the same contract as
 * et_spec_conv_amx, on any AVX-512 CPU, with a buffer of
 * et_spec_small_bytes (0: the path does not apply to the shape). */
#define ET_SPEC_SMALL_K 64
size_t et_spec_small_bytes(int n, int cin, int h, int w, int cout, int kh, int kw, int ph, int pw);
int et_spec_conv_small(const float *x, int n, int cin, int h, int w, const float *wts, int cout, int kh, int kw,
                       int ph, int pw, const et_spec *sp, void *buf, size_t bytes, const int32_t **kept);
/* et_spec_set_small(0): the direct path off (tests compare it with the others) */
void et_spec_set_small(int on);
/* sign(x) * 2^floor(log2|x|), 0 for 0. */
float et_spec_exp(float x);

/* Model side (sparsity.c): per-node decisions, buffers in the memory plan. */
et_status et_sparsity_plan(struct et_model *m, int batch, size_t *bytes);
/* Whether node's EP will compute only the input-gradient entries whose input
 * is non-zero (the ep_mask rule, top of sparsity.c): then a relu that feeds
 * only this node needs no EP of its own (model.c fuses it). Valid once the
 * tensors' producers and aliases are known. */
int et_sparsity_masks_ep(const struct et_model *m, int node);
void et_sparsity_bind(struct et_model *m, void *mem);
/* What node `node` does in this call (NULL: dense). Fills the speculation
 * request's scales from the input x (n images) and the weights; x_amax >= 0
 * is x's absmax where the executor knows it (the FF that wrote x took it,
 * et_lctx.out_amax), else it is computed here. */
const struct et_layer_sparsity *et_sparsity_node(struct et_model *m, int node, const float *x, float x_amax, int n,
                                                 int train);
/* Whether the speculation's scales want the absmax of activations (B = 1..8). */
int et_sparsity_wants_amax(const struct et_model *m);
void et_sparsity_free(struct et_model *m);
#endif
