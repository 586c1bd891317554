/* Layers: one small config struct per layer type, and a const table of
 * operations (setup, FF, EP, WG) indexed by the layer type.
 *
 * Activation layouts: image tensors are stored "CNHW" (channel-major, then
 * image, then row, column) so that a whole-batch convolution is one GEMM whose
 * output lands in the same layout; vector tensors are [N, F]. `flatten` turns
 * an image tensor into a vector tensor in PyTorch's C,H,W feature order. */
#ifndef ET_LAYER_H
#define ET_LAYER_H
#include "edgetrain.h"

typedef enum et_layer_type {
    ET_L_CONV,
    ET_L_LINEAR,
    ET_L_RELU,
    ET_L_MAXPOOL,
    ET_L_AVGPOOL,
    ET_L_BN,
    ET_L_FLATTEN,
    ET_L_DROPOUT,
    ET_L_ADD,
    ET_L_NTYPES
} et_layer_type;

typedef struct et_shape {
    int c, h, w;  /* per image; vectors have h == w == 1 */
    int is_image; /* 1: CNHW, 0: [N, F] with F = c */
} et_shape;

static inline int64_t et_shape_numel(et_shape s) { return (int64_t)s.c * s.h * s.w; }

typedef struct et_conv_cfg { int out, kh, kw, sh, sw, ph, pw, bias; } et_conv_cfg;
typedef struct et_linear_cfg { int out, bias; } et_linear_cfg;
typedef struct et_pool_cfg { int kh, kw, sh, sw, ph, pw, global; } et_pool_cfg;
typedef struct et_bn_cfg { float eps, momentum; } et_bn_cfg;
typedef struct et_dropout_cfg { float p; } et_dropout_cfg;

/* A parameter or buffer tensor of a layer. */
typedef struct et_param {
    char name[96];   /* PyTorch state_dict name, e.g. "3.weight" */
    int ndim;
    int64_t shape[4];
    int64_t n;
    float *data;     /* master values */
    float *use;      /* values FF/EP compute with: data, or its copy rounded to the
                        precision policy's weight format */
    float *grad;     /* NULL for buffers */
    float *opt[2];   /* optimizer state (momentum / Adam moments), NULL if unused */
    uint8_t *mask;   /* pruning (src/sparsity/prune.c): 1 kept, 0 pruned; NULL: not
                        pruned. FF/EP skip zero weights, WG computes only kept ones */
    int trainable;   /* 0 for buffers (running stats) */
} et_param;

#define ET_MAX_PARAMS 4
typedef struct et_layer {
    et_layer_type type;
    int index;        /* position in the model's layer list (also the matmul layer id) */
    char prefix[80];  /* PyTorch module path, e.g. "3" or "4.body.0"; "" for add */
    et_shape in, out;
    union {
        et_conv_cfg conv;
        et_linear_cfg linear;
        et_pool_cfg pool;
        et_bn_cfg bn;
        et_dropout_cfg dropout;
    } cfg;
    int nparams;
    et_param params[ET_MAX_PARAMS];
    int64_t num_batches_tracked; /* bn only */
    float *state;                /* per-layer training state (bn: mean, invstd) */
    int skip_ep, skip_wg;        /* first layer / frozen layer */
    /* Per-tensor scales of the weights, input and error as stored now, when a
     * policy with acc=int32 keeps them on int8-sized grids (nn/precision.c);
     * 0 otherwise. They go into the matmul records (et_matmul.a_scale/b_scale). */
    float int_scale[3];
    /* conv under run-time sparsity: the tensors and engine step that
     * et_layer_sparsity's xcols and dycols were counted for (conv.c; FF
     * clears them), and dY's density from dycols */
    const float *xcols_of, *dycols_of;
    int64_t xcols_step, dycols_step;
    double dy_density;
    /* Their int8 codes when the rounding wrote them (same layout as the
     * tensor; NULL: none): conv/linear hand them to the records' a_codes/b_codes. */
    const int8_t *int_codes[3];
} et_layer;

/* What the run-time sparsity modes ask of a conv/linear call (decided by the
 * executor, src/sparsity/sparsity.c; the layer only hands it to its matmul
 * records). NULL in et_lctx: dense. */
typedef struct et_layer_sparsity {
    int ff_skip;          /* FF: skip zero input activations */
    int ep_mask;          /* EP: compute only input-gradient entries whose input is non-zero */
    int bw_skip;          /* EP, WG: skip zero operands (errors, activations) */
    et_spec *spec;        /* FF: speculation request (mask = the whole output), NULL: none */
    uint8_t *ep_maskbuf;  /* room for EP's output mask (et_layer_ep_mask_bytes), twice
                             (conv's second lane: from the first's size rounded to 64) */
    int8_t *spec_codes;   /* conv FF under speculation with 1..8 bits: room for the
                             input's codes and two lanes' im2col of them
                             (et_layer_spec_code_bytes); NULL: B is coded per product */
    int32_t *xcols;       /* conv: this node's own room for batch x Ho*Wo counts each, */
    int32_t *dycols;      /* kept from FF to EP and WG: per output pixel, the non-zeros
                             of col's column (from x) and of dY's column; conv.c counts
                             them once per step (layer_xcols, layer_dycols). NULL: none */
} et_layer_sparsity;

enum { ET_IS_W = 0, ET_IS_A = 1, ET_IS_E = 2 };

/* What a layer call gets besides its tensors. */
typedef struct et_lctx {
    et_engine *eng;
    float *scratch;        /* scratch_floats() floats, 64-byte aligned */
    int batch;             /* images in this call */
    int train;             /* 1: training mode (bn batch stats, dropout active) */
    uint64_t seed, step;   /* for dropout masks */
    int relu_in;           /* EP only: x is the output of a ReLU whose EP is fused into
                              this EP (dx must be 0 where x <= 0); see
                              et_layer_fuses_relu_ep */
    const et_layer_sparsity *sp; /* run-time sparsity of this call, NULL: dense */
    int relu_out;          /* FF only (conv): y is the input of an in-place ReLU whose FF
                              is fused into this FF (y = max(conv + bias, 0)); see
                              et_layer_fuses_relu_ff */
    float *out_amax;       /* FF only, NULL: not wanted. The executor sets it to -1; a
                              layer that takes the absmax of its whole output y as it
                              writes it (et_absmax_f32(y, n, 1)'s value: max |y|, NaN
                              never wins) stores it there (speculation's scale of the
                              next layer's input, without a pass of its own) */
    float in_amax;         /* FF only: the absmax of x where known, else -1 */
} et_lctx;

typedef struct et_layer_ops {
    const char *keyword;
    /* Computes out shape and parameter shapes from l->in and l->cfg. */
    et_status (*setup)(et_layer *l);
    /* Scratch floats a call needs at `batch` images; state floats kept per layer. */
    size_t (*scratch_floats)(const et_layer *l, int batch);
    size_t (*state_floats)(const et_layer *l);
    et_status (*ff)(et_layer *l, const et_lctx *c, const float *x, float *y);
    /* EP: dx from dy (x, y are the FF input and output). Overwrites dx. */
    et_status (*ep)(et_layer *l, const et_lctx *c, const float *x, const float *y,
                    const float *dy, float *dx);
    /* WG: parameter gradients from x and dy (overwrites grads). NULL if no params. */
    et_status (*wg)(et_layer *l, const et_lctx *c, const float *x, const float *dy);
    /* Forward MACs per image in the matmul path (0 for non-matmul layers). */
    int64_t (*macs)(const et_layer *l);
} et_layer_ops;

extern const et_layer_ops *const et_layer_table[ET_L_NTYPES];

/* Add layer: two inputs; FF y = x + x2; EP gives dy to both. */
et_status et_add_ff(const et_lctx *c, et_shape s, const float *a, const float *b, float *y);

/* Whether a layer's EP can apply the mask of the ReLU that produced its input
 * (et_lctx.relu_in), so the executor skips that ReLU's own EP pass. */
int et_layer_fuses_relu_ep(et_layer_type t);
/* Whether a layer's FF can apply the ReLU that consumes its output in place
 * (et_lctx.relu_out), so the executor skips that ReLU's own FF pass. */
int et_layer_fuses_relu_ff(et_layer_type t);
/* Shapes of a conv/linear layer's largest FF product at `batch` images
 * (conv: one chunk of images), for planning sparsity buffers; 0 for others. */
void et_layer_ff_dims(const et_layer *l, int batch, int *M, int *N, int *K);
/* Bytes of the EP output mask of a conv/linear layer at `batch` images. */
size_t et_layer_ep_mask_bytes(const et_layer *l, int batch);
/* Bytes of et_layer_sparsity.spec_codes for a conv layer at `batch` (0 for
 * other layers): the input's int8 codes, two lanes' col matrices of codes,
 * then the weights' codes packed for the fused path, each 64-byte aligned. */
size_t et_layer_spec_code_bytes(const et_layer *l, int batch);

/* Helpers shared by layer implementations. */
void et_param_define(et_layer *l, const char *suffix, int trainable, int ndim, const int64_t *shape);
#endif
