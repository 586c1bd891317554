/* The model: a list of nodes in topological order over numbered tensors.
 * Tensor 0 is the input batch. Each node is one layer with one input tensor,
 * or a residual add with two. See docs/architecture.md. */
#ifndef ET_MODEL_H
#define ET_MODEL_H
#include "kernels/matmul.h"
#include "nn/layer.h"

typedef struct et_tensor {
    et_shape shape;
    int producer;   /* node index, -1 for the input */
    int consumers;  /* number of nodes reading it */
    int alias_of;   /* -1, or the tensor whose storage it shares (in-place relu) */
    int grad_slot;  /* gradient slot, -1 if no gradient */
    int needs_grad; /* some layer upstream has parameters */
    float *val;     /* batch_cap * numel floats */
    float amax;     /* forward: absmax of val as the FF that wrote it took it, -1 unknown */
} et_tensor;

typedef struct et_node {
    et_layer layer;
    int in, in2; /* in2 >= 0 only for add */
    int out;
    /* ReLU EP fusion (plan_tensors): on a relu, its EP is done by its only
     * consumer, which gets ep_relu_in (et_lctx.relu_in) and writes straight
     * into the relu input's gradient slot. */
    int relu_ep_fused, ep_relu_in;
    /* ReLU FF fusion (plan_tensors): ff_relu_node >= 0 on a conv whose output
     * only an in-place relu reads (that relu's index); the executor hands the
     * conv relu_out (et_lctx) when its products are plain FP32, and sets
     * ff_done on the relu, whose FF is then skipped for that call. */
    int ff_relu_node, ff_done;
} et_node;

struct et_model {
    char name[64];
    char *spec_text;
    int nnodes, cap_nodes;
    et_node *nodes;
    int ntensors, cap_tensors;
    et_tensor *tensors;
    int entries; /* top-level entries (PyTorch Sequential indices used) */

    /* plan */
    int batch_cap;
    int planned;
    et_optim optim;
    int nslots;
    float **slots;    /* gradient slots, each slot_floats */
    size_t slot_floats;
    float *tmp;       /* accumulation buffer for tensors read twice */
    float *scratch;
    size_t scratch_floats;
    float *input_nchw; /* caller-filled input; tensor 0's storage when C == 1 */
    void *arena;
    et_memory_plan mem;

    /* precision policy (NULL: fp32 everywhere) */
    struct et_policy *policy;
    void *laps;      /* adaptive weight precision state (precision.c) */
    void *int_codes; /* int8 code buffers of the integer matmul path (precision.c) */
    int64_t wq_step; /* step at which param.use was last rounded (-1: never) */

    void *traffic; /* off-chip traffic measurement (traffic.c) */
    void *hw_link; /* live processor-model runs fed by the matmul path (hwlink.c) */
    float *ep_dx;  /* while a node's EP runs: where it writes dX (hwlink sizes it), else NULL */
    struct et_prune *prune; /* dynamic weight pruning (src/sparsity/prune.c), NULL: off */
    void *sparsity; /* run-time sparsity modes and their buffers (src/sparsity/sparsity.c) */

    /* training state */
    int64_t step;
    uint64_t seed;
    et_engine eng;
    et_counters *layer_counters;
    double phase_seconds[ET_NPHASES]; /* time outside the layers, per phase */
    float *probs;     /* softmax of the last forward (= dlogits workspace) */
    int last_batch;
    int last_train;
};

#if defined(__x86_64__) || defined(_M_X64)
/* model_avx512.c: dst[k] = (float)src[k] / 255 (divided, as PyTorch's ToTensor),
 * 16 pixels per division. */
void et_u8_div255_avx512(const uint8_t *src, float *dst, int64_t n);
/* model_avx512.c: the optimizer steps of model.c's sgd_block / adam_block
 * (v NULL: SGD without momentum; mk NULL: nothing pruned), 16 elements at a
 * time with the same operations in the same order. */
void et_sgd_avx512(float *w, const float *g, float *v, const uint8_t *mk, int64_t n, float lr, float mu, float wd,
                   int nesterov);
void et_adam_avx512(float *w, const float *g, float *v, float *s, const uint8_t *mk, int64_t n, float step_size,
                    float bc2s, float b1, float b2, float eps, float wd);
#endif

/* Builders used by the spec parser. Return the new output tensor id or -1. */
int et_model_add_input(et_model *m, et_shape s);
et_status et_model_add_layer(et_model *m, et_layer_type t, const void *cfg, size_t cfg_size,
                             const char *prefix, int in, int *out);
et_status et_model_add_residual(et_model *m, int a, int b, int *out);
#endif
