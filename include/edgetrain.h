/*
 * edgetrain.h — the public C API of edgetrain, one umbrella header.
 *
 * edgetrain trains deep neural networks the way edge-learning processors do
 * (run-time sparsity, low/mixed precision) and models what that costs on such
 * a processor. Sections:
 *   1. errors and status codes
 *   2. threads and CPU features
 *   3. kernels: the FP32 GEMM every matmul ends in
 *   4. the matmul call (the one path all FF/EP/WG arithmetic goes through)
 *   5. data sets (IDX / Fashion-MNIST)
 *   6. safetensors checkpoints
 *   7. models: spec parsing, building, training, evaluation
 *
 * Conventions: prefix et_, functions return et_status, a message for the last
 * error of the calling thread is in et_last_error(). The library never exits
 * and never prints.
 */
#ifndef EDGETRAIN_H
#define EDGETRAIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- 1 errors */

typedef enum et_status {
    ET_OK = 0,
    ET_ERR_INVALID,     /* bad argument or option */
    ET_ERR_NOMEM,       /* allocation failed or would exceed a stated limit */
    ET_ERR_IO,          /* cannot open / read / write a file */
    ET_ERR_FORMAT,      /* file content is malformed or truncated */
    ET_ERR_SHAPE,       /* tensor shapes do not agree */
    ET_ERR_UNSUPPORTED, /* valid request this build cannot do */
} et_status;

/* Message describing the last error set on this thread ("" if none). */
const char *et_last_error(void);
/* Sets the thread's error message (printf-style) and returns `st`. */
et_status et_set_error(et_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
const char *et_status_name(et_status st);

/* --------------------------------------------------- 2 threads, CPU features */

/* Number of worker threads used by kernels (default: all cores). Results never
 * depend on it. */
void et_set_threads(int n);
int et_get_threads(void);

typedef enum et_isa { ET_ISA_SCALAR = 0, ET_ISA_AVX2 = 1, ET_ISA_AVX512 = 2 } et_isa;
/* Best ISA this CPU supports, capped by the environment variable ET_ISA
 * (scalar|avx2|avx512) when set. */
et_isa et_cpu_isa(void);
const char *et_isa_name(et_isa isa);

/* -------------------------------------------------------------- 3 kernels */

/*
 * Row-major single-precision GEMM:
 *   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C[M,N]
 * op(A) = A (ta == 0, A is M x K, leading dimension lda) or A^T (ta != 0,
 * A is K x M). Likewise op(B). beta == 0 means C is not read (may hold NaN).
 * Multithreaded over output tiles only: every C element is summed over K in
 * the same order at any thread count, so results are bit-identical for 1..n
 * threads. Never allocates after et_gemm_init() (called lazily on first use).
 */
void et_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);
/* Allocates the per-thread packing buffers for up to `max_threads` threads.
 * Idempotent; returns ET_ERR_NOMEM on failure. */
et_status et_gemm_init(int max_threads);
/* Bytes of packing workspace the GEMM reserves for its team (for the memory
 * plan): shared blocks and a buffer per thread, for et_gemm_init's threads. */
size_t et_gemm_workspace_bytes(void);
/* Name of the micro-kernel in use, e.g. "avx512 16x28". */
const char *et_gemm_kernel_name(void);

/* ------------------------------------------------------- 4 the matmul call */

typedef enum et_stage { ET_FF = 0, ET_EP = 1, ET_WG = 2, ET_NSTAGES = 3 } et_stage;
const char *et_stage_name(et_stage s);

/* Per-run counters kept by the matmul path. MACs are multiply-accumulates. */
typedef struct et_counters {
    uint64_t macs_dense[ET_NSTAGES];
    uint64_t macs_executed[ET_NSTAGES];
    uint64_t calls[ET_NSTAGES];
    /* Multiply-adds the CPU kernels really ran (sparse kernels skip whole
     * micro-tiles and k steps, so this lies between executed and dense). */
    uint64_t macs_cpu[ET_NSTAGES];
    /* Output elements of the products, and how many an output mask left out
     * (set to 0 without computing them). */
    uint64_t outputs[ET_NSTAGES];
    uint64_t outputs_masked[ET_NSTAGES];
    /* Wall-clock seconds spent in the layer's FF, EP and WG functions (the
     * model's per-layer counters; 0 in the matmul engine's total). */
    double seconds[ET_NSTAGES];
} et_counters;

/* Speculation of a product's outputs (docs/sparsity.md, the Bidirectional
 * Speculation Unit): before the product, a cheap estimate of
 * C + bias predicts which outputs a following ReLU sets to zero; the product
 * then computes only the others. Filled by the executor; see et_matmul.spec. */
#define ET_SPEC_EXP (-1) /* bits: GANPU's sign/exponent-only operands */
#define ET_SPEC_EXACT 32 /* bits: exact fp32 estimate (speculation equals dense) */
typedef struct et_spec_stats {
    uint64_t outputs, predicted_zero;          /* every speculated product */
    uint64_t checked, checked_predicted_zero;  /* outputs of the sampled (checked) products */
    uint64_t true_zero;                        /* true dense output + bias <= 0 */
    uint64_t false_zero;                       /* predicted zero, true output > 0 (lost) */
    uint64_t missed_zero;                      /* predicted non-zero, true output <= 0 */
    uint64_t estimate_macs;                    /* low-precision multiply-adds of the estimates */
} et_spec_stats;
typedef struct et_spec {
    int bits;                 /* 1..8: top bits of the int8 codes; ET_SPEC_EXP; ET_SPEC_EXACT */
    float absmax_a, absmax_b; /* per-tensor scales of the operands (1..8 bits) */
    const float *bias;        /* NULL: none; bias[i] with bias_rows, else bias[j] */
    int bias_rows;
    uint8_t *mask;            /* the prediction is written here: M x N, row stride ldmask */
    int ldmask;
    int check;                /* also compute the exact output and count false / missed zeros */
    et_spec_stats *stats;     /* accumulated, may be NULL */
    /* 1..8 bits, op(B) = B: B's codes made by the caller (conv: its input
     * coded once per call, then an im2col of the codes), K x N int8 with row
     * stride ldb_codes, equal to et_spec_code of B's elements with absmax_b
     * (NULL: coded here from B). b_colnz (NULL: counted here) = the
     * non-zeros of B's columns, for the executed-MAC count. */
    const int8_t *b_codes;
    int ldb_codes;
    const int32_t *b_colnz;
    /* op(A) = A's codes already packed for the fused VNNI path by the caller
     * (et_spec_pack_a, once for several products with the same A and scale);
     * NULL: coded and packed per product. */
    const uint32_t *a_vnni;
    /* 1..8 bits: the mask is already predicted by the caller (conv's AMX
     * path, which predicts a whole call at once) and pre_kept[j] is the kept
     * outputs of column j (N ints); only the statistics are counted, and the
     * caller applies the mask (the dense kernel's C may keep values where it
     * is 0; the other paths zero them anyway). NULL: predict here. */
    const int32_t *pre_kept;
} et_spec;

/* One matrix product of one layer in one stage; see docs/architecture.md. */
typedef struct et_matmul {
    et_stage stage;
    int layer; /* index of the layer in the model (-1: none) */
    int ta, tb, M, N, K;
    const float *A;
    int lda;
    const float *B;
    int ldb;
    float *C;
    int ldc;
    float beta; /* 0: C = A*B, 1: C += A*B */
    /* Run-time sparsity (docs/sparsity.md). Zero-initialised = dense. */
    int skip_zeros;      /* skip every product whose A or B operand is zero (exact) */
    const uint8_t *mask; /* M x N output mask, row stride ldmask: only C[i][j] with
                            mask != 0 is computed; the others are set to 0 (NULL: all) */
    int ldmask;
    /* Speculation (NULL: none): the path predicts the output mask into
     * spec->mask and then computes as if mask = spec->mask (mask must be NULL). */
    const et_spec *spec;
    /* Integer operands (docs/architecture.md, "The matmul path"): > 0 says that
     * A (B) holds exactly a_scale (b_scale) times int8 codes |q| <= 127, as a
     * precision policy with acc=int32 stores them. With both set (and no mask)
     * the product runs on the codes with exact int32 sums (et_igemm). 0: float. */
    float a_scale, b_scale;
    /* Counts the caller knows exactly (conv: from its input, docs/sparsity.md
     * "Counts from the layer"); NULL: the call counts from the operands.
     * knnz_a[k] = nnz(op(A)[:,k]), knnz_b[k] = nnz(op(B)[k,:]) for k < K
     * (used with skip_zeros and no mask). post_mask_cols: the caller applies an
     * output mask itself after the call (conv EP: dx zeroed where x == 0, the
     * same values as masking dcol before col2im); the call computes every
     * output and counts as if masked, post_mask_cols[j] = kept outputs of
     * column j. With it, skip_zeros needs op(A) without zeros and no mask. */
    const int32_t *knnz_a, *knnz_b, *post_mask_cols;
    /* Which of the caller's concurrent lanes (0 or 1) makes the call: selects
     * the engine's per-lane workspaces (speculation). */
    int lane;
    /* Optional int8 codes of A (B) for the integer path, in A's (B's) layout and
     * leading dimension: a_codes[o] = the code of A[o] on a_scale's grid (the
     * rule of et_igemm_code, src/kernels/igemm.h), as the policy's rounding
     * wrote them. The path packs them instead of taking codes back from the
     * floats (same result). A (B) may be NULL only when the call takes the
     * integer path (both scales > 0, K <= 131072) and is plain: no mask,
     * skip_zeros or spec, no sink. NULL: none. */
    const int8_t *a_codes, *b_codes;
    /* Output epilogue (NULL / 0: none): after the product, C[i][j] += bias_rows[i],
     * then with relu C[i][j] = C[i][j] > 0 ? C[i][j] : 0 (one rounding each: the
     * values of a bias pass and a ReLU pass after the call). The plain FP32
     * kernel applies it to each tile as it finishes; the other paths after the
     * product. A sink sees C after it. With spec (mask laid out as C,
     * ldmask == ldc) the predicted mask comes last: C = mask ? epilogue(C) : 0,
     * and the call applies the mask itself even where et_spec.pre_kept would
     * leave it to the caller. */
    const float *bias_rows;
    int relu;
    /* Implicit convolution (NULL: none; src/kernels/spconv.h): conv EP / WG of
     * a stride-1 convolution whose column matrix is not formed. The record
     * still describes the GEMM (EP: dcol = Wᵀ·dY, WG: dWᵀ = col·dYᵀ, for the
     * counts), but the call reads the input and writes dx (EP, col2im done)
     * or the gradient in the kernel's layout (WG); col (WG's A)
     * and dcol (EP's C) may be NULL. Only with skip_zeros and counts from the
     * layer, on plain FP32 products. */
    const struct et_conv_implicit *conv;
    /* With post_mask_cols and skip_zeros: bnz_cols[j] = nnz(op(B)[:,j]) for
     * j < N, when the caller knows it (conv EP: dY's non-zeros per pixel,
     * counted once for EP and WG); the count then reads no operand. NULL:
     * counted from B. */
    const int32_t *bnz_cols;
    /* With an epilogue (bias_rows or relu; NULL: none): max |C[i][j]| over
     * the stored results (NaN never counts) is merged into *out_amax, which
     * must hold a value >= 0 (threads may share it). */
    float *out_amax;
} et_matmul;

typedef struct et_engine et_engine; /* the matmul path's state: counters, hooks */

/* Runs one matmul through the engine: kernel choice, counting, hooks. */
et_status et_matmul_run(et_engine *eng, const et_matmul *mm);

/* ------------------------------------------------------------ 5 data sets */

/* A labelled image set, pixels kept as bytes (converted per batch). */
typedef struct et_dataset {
    int64_t n;       /* number of images */
    int rows, cols;  /* image size */
    uint8_t *images; /* n * rows * cols, row-major */
    uint8_t *labels; /* n */
} et_dataset;

/* Loads an IDX image file (magic 0x00000803) and label file (0x00000801),
 * gzipped or not (detected from content). Reads the first `limit` items
 * (limit < 0: all). Rejects truncated/garbled files, count mismatches and
 * absurd headers with ET_ERR_FORMAT and a message; never allocates more than
 * the data actually present justifies. */
et_status et_idx_load(const char *images_path, const char *labels_path, int64_t limit,
                      et_dataset *out);
/* Fashion-MNIST from `dir` (NULL: /usr/share/datasets/fashion-mnist); `train`
 * selects train-* or t10k-* files; each file is looked up as NAME and NAME.gz. */
et_status et_fmnist_load(const char *dir, int train, int64_t limit, et_dataset *out);
void et_dataset_free(et_dataset *ds);
/* Asks the CPU to start loading images idx[0..n) of ds into its caches (a hint:
 * no effect on any result; indices out of range are ignored). Called for the
 * next batch while the current one trains, it hides the cache misses of
 * gathering scattered images. */
void et_dataset_prefetch(const et_dataset *ds, const int64_t *idx, int n);
/* Writes a data set as gzipped IDX image and label files, each atomically. */
et_status et_idx_save(const char *images_path, const char *labels_path, const et_dataset *ds);
/* A device-specific domain shift (docs/private-data.md) of images
 * first..first+n-1 of src: "lowlight" (offset, blur, dark exposure, fixed-pattern
 * and read noise) or "invert". Deterministic in (kind, seed, image, pixel). */
et_status et_dataset_shift(const et_dataset *src, const char *kind, uint64_t seed, int64_t first, int64_t n,
                           et_dataset *out);
extern const char *et_shift_names;

/* The seeded shuffle of one epoch: a permutation of 0..n-1 that is a pure
 * function of (seed, epoch). */
void et_shuffle(uint64_t seed, uint64_t epoch, int64_t n, int64_t *perm);

/* ---------------------------------------------------------- 6 safetensors */

typedef enum et_dtype {
    ET_F32 = 0, ET_F16, ET_BF16, ET_F64, ET_I64, ET_I32, ET_I16, ET_I8, ET_U8, ET_BOOL,
    ET_NDTYPES
} et_dtype;
const char *et_dtype_name(et_dtype t); /* safetensors spelling: "F32", "I64", ... */
size_t et_dtype_size(et_dtype t);

#define ET_MAX_DIMS 8
typedef struct et_st_tensor {
    const char *name;
    et_dtype dtype;
    int ndim;
    int64_t shape[ET_MAX_DIMS];
    const void *data; /* little-endian bytes, row-major */
    size_t nbytes;
} et_st_tensor;

typedef struct et_safetensors et_safetensors; /* an opened file */
/* Reads and validates a whole safetensors file: header length within the file,
 * well-formed JSON, known dtypes, shapes whose byte size matches the offsets,
 * offsets inside the data area and non-overlapping. */
et_status et_st_open(const char *path, et_safetensors **out);
int et_st_count(const et_safetensors *st);
const et_st_tensor *et_st_get(const et_safetensors *st, int i);
const et_st_tensor *et_st_find(const et_safetensors *st, const char *name);
/* Value of a "__metadata__" entry, or NULL. */
const char *et_st_meta(const et_safetensors *st, const char *key);
void et_st_close(et_safetensors *st);
/* Writes tensors (and metadata key/value string pairs, meta[2*i], meta[2*i+1])
 * atomically: to PATH.tmp.PID, fsync, rename over PATH. */
et_status et_st_write(const char *path, const et_st_tensor *tensors, int n,
                      const char *const *meta, int n_meta);

/* ----------------------------------------------------------------- 7 models */

typedef struct et_model et_model;

/* Parses a model spec (docs/model-spec.md). `name` labels the model. */
et_status et_model_parse(const char *text, const char *name, et_model **out);
/* Reads a spec file; `path` may also be a bare name, looked up as
 * $ET_MODELS_DIR/NAME.et and then models/NAME.et. */
et_status et_model_load_spec(const char *path, et_model **out);
void et_model_free(et_model *m);
const char *et_model_name(const et_model *m);
const char *et_model_spec_text(const et_model *m);

typedef enum et_optim_kind { ET_OPT_SGD = 0, ET_OPT_ADAM = 1 } et_optim_kind;
typedef struct et_optim {
    et_optim_kind kind;
    float lr;           /* base learning rate */
    float momentum;     /* SGD: v = momentum*v + g; p -= lr*v (PyTorch convention) */
    int nesterov;       /* SGD: p -= lr*(g + momentum*v) */
    float weight_decay; /* g += weight_decay * p (both optimizers, as PyTorch) */
    float beta1, beta2, eps; /* Adam */
} et_optim;
et_optim et_optim_default(et_optim_kind kind);

/* The memory plan, in bytes: everything training needs is one allocation. */
typedef struct et_memory_plan {
    size_t params, grads, optimizer, activations, act_grads, scratch, workspace, total;
    size_t sparsity; /* run-time sparsity: masks, speculation codes and estimates (in total) */
    size_t hw;       /* processor-model link (et_model_attach_hw: Co(p) per position of the
                        largest product; in total, 0 until attached) */
} et_memory_plan;

/* Plans and allocates all memory for batches of up to `batch` images and the
 * optimizer (NULL: inference only). Nothing is allocated after this. */
et_status et_model_plan(et_model *m, int batch, const et_optim *opt);
et_memory_plan et_model_memory(const et_model *m);
/* Multiply-accumulates per image in each stage (EP of the first layer is
 * skipped, as it is in training). */
void et_model_macs(const et_model *m, int64_t macs[ET_NSTAGES]);
int64_t et_model_num_params(const et_model *m);
int et_model_num_classes(const et_model *m);
/* Input shape per image: channels, height, width. */
void et_model_input_shape(const et_model *m, int *c, int *h, int *w);

/* He-normal init (std = sqrt(2/fan_in)) of conv/linear weights, zero biases,
 * batchnorm weight 1 and bias 0: a pure function of the seed. */
et_status et_model_init_he(et_model *m, uint64_t seed);
void et_model_set_seed(et_model *m, uint64_t seed); /* for dropout masks */

/* Input batch buffer (NCHW floats, batch_cap images) to fill before a step. */
float *et_model_input(et_model *m);
/* Fills the input with images idx[0..n) of `ds`, scaled by 1/255. */
et_status et_model_set_input_u8(et_model *m, const et_dataset *ds, const int64_t *idx, int n);

/* Forward pass on the first n images of the input; logits [n, classes]. */
et_status et_model_forward(et_model *m, int n, int train, const float **logits);
/* Softmax cross-entropy of the last forward (mean over the batch), then the
 * backward pass (EP and WG of every layer) leaving gradients in the params. */
et_status et_model_backward(et_model *m, const uint8_t *labels, float *loss, int64_t *correct);
/* Optimizer update with learning rate `lr`, then step += 1. */
et_status et_model_update(et_model *m, float lr);
/* forward + backward + update. */
et_status et_model_train_step(et_model *m, const uint8_t *labels, int n, float lr, float *loss);
/* Accuracy and mean loss over the first `limit` images of ds (limit<0: all). */
et_status et_model_evaluate(et_model *m, const et_dataset *ds, int64_t limit, double *accuracy,
                            double *loss);
int64_t et_model_step(const et_model *m);
void et_model_set_step(et_model *m, int64_t step);

/* Parameters by PyTorch state_dict name, for tests and tools. */
int et_model_num_tensors(const et_model *m);
/* i-th state tensor: name, float data, number of elements, gradient (NULL for buffers). */
et_status et_model_tensor(et_model *m, int i, const char **name, float **data, int64_t *n,
                          float **grad);
/* Sets a precision policy (docs/precision.md): a file, a name in policies/,
 * or inline "w=int8,a=int8,...". Before et_model_plan. */
et_status et_model_set_precision(et_model *m, const char *spec);

/* Name of the format node `node` uses for `role` ("w", "a", "e", "g", "acc",
 * "m", "mul"): "fp32" without a policy entry. Empty string for an unknown role. */
const char *et_model_format_name(const et_model *m, int node, const char *role, char *buf, size_t cap);
/* With a policy's `laps` line: the (step, weight bits) history of node
 * `node`'s adaptive weight format; returns the count (0: not adapted). */
int et_model_laps_history(const et_model *m, int node, int64_t *steps, int *bits, int cap);
/* Name of the policy in use, or NULL. */
const char *et_model_precision(const et_model *m);

/* Off-chip traffic and zeros measured on the run (src/nn/traffic.c): every
 * `every` training steps (0: off) the activations, errors, weights and
 * gradients a processor moves are sized under each codec at their precision. */
enum { ET_TRAFFIC_ACT, ET_TRAFFIC_ERR, ET_TRAFFIC_WEIGHT, ET_TRAFFIC_GRAD, ET_NTRAFFIC };
typedef struct et_traffic_stats {
    int64_t samples, elements, nonzeros;
    double bytes[4]; /* dense, zero run-length (4-bit runs), bitmask + values, CSR */
} et_traffic_stats;
et_status et_model_measure_traffic(et_model *m, int every);
/* kind: ET_TRAFFIC_*, or -1 for the total over all kinds. */
void et_model_traffic(const et_model *m, int kind, et_traffic_stats *out);
/* Zero fractions of the input and of the incoming error of node `node` over
 * the sampled steps (-1: not measured). */
void et_model_node_sparsity(const et_model *m, int node, double *input_zeros, double *error_zeros);

/* Run-time sparsity (docs/sparsity.md). Modes, combinable:
 *   skip       exact zero skipping: FF skips zero inputs, EP computes only the
 *              input-gradient entries whose input was non-zero (where that input
 *              is a ReLU output) and skips zero errors, WG skips zero operands;
 *   speculate  the Bidirectional Speculation Unit: each conv/linear whose output
 *              goes only into a ReLU predicts its zero outputs from `spec_bits`
 *              and computes only the others; includes skip;
 *   prune      dynamic weight pruning: the request only; et_model_set_pruning
 *              configures it (the CLI maps it to --prune-target, default 0.5). */
typedef struct et_sparsity {
    int skip, speculate, prune;
    int spec_bits;        /* 1..8, ET_SPEC_EXP or ET_SPEC_EXACT (default 4) */
    int spec_check_every; /* measure false/missed zeros every N training steps (0: never) */
} et_sparsity;
/* Parses "none" | MODE[,MODE...] and a --spec-bits value ("1".."8", "exp",
 * "32"; NULL: 4). Unknown, empty, contradictory modes and bad bits are errors. */
et_status et_sparsity_parse(const char *modes, const char *bits, et_sparsity *out);
/* "none", "skip", "speculate" (a static string for the mode set). */
const char *et_sparsity_name(const et_sparsity *s, char *buf, size_t cap);
/* Before et_model_plan (the plan sizes the masks and speculation buffers). */
et_status et_model_set_sparsity(et_model *m, const et_sparsity *s);
const et_sparsity *et_model_sparsity(const et_model *m);
/* What the sparsity modes do at node `node` (all 0 for non-matmul layers):
 * ff_skip, ep_mask (EP output masked by the non-zero input), bw_skip (EP/WG
 * skip zero operands), speculate (FF outputs predicted). */
void et_model_node_sparsity_plan(const et_model *m, int node, int *ff_skip, int *ep_mask, int *bw_skip,
                                 int *speculate);
/* Speculation statistics of node `node` (zeros if it does not speculate). */
void et_model_spec_stats(const et_model *m, int node, et_spec_stats *out);
void et_model_reset_spec_stats(et_model *m); /* also done by et_model_reset_counters */

/* Freezes a layer's parameters (no WG, no update) by PyTorch prefix ("3"). */
et_status et_model_freeze(et_model *m, const char *prefix);

/* Dynamic magnitude pruning during training (docs/sparsity.md, "Pruning";
 * paper 002's sparse training). Every trained conv/linear weight tensor gets
 * a mask. At steps start, start+every, ... up to end (and at end) each layer
 * prunes its smallest-magnitude unpruned weights (ties: lower index first)
 * until round(s_t * n) are pruned, with the gradual cubic schedule of Zhu &
 * Gupta (2017):
 *   s_t = target * (1 - (1 - (t - start) / (end - start))^3)  for start <= t <= end,
 *   0 before start, target after end (end <= start: target from start on).
 * Pruned weights are exactly zero, skipped in FF and EP, get no gradient in
 * WG and are never updated, so they stay pruned (no regrowth). Biases and
 * batchnorm are never pruned; frozen layers are not pruned. */
typedef struct et_prune_cfg {
    double target;        /* final pruned fraction per layer, 0 <= target < 1 */
    int64_t every;        /* steps between mask updates, >= 1 */
    int64_t start, end;   /* schedule window in optimizer steps */
} et_prune_cfg;
/* s_t of the schedule at step t. */
double et_prune_fraction(const et_prune_cfg *c, int64_t step);
/* Turns pruning on (validates cfg; NULL: off) before et_model_plan; after
 * planning it may only change the schedule of a model planned with pruning. */
et_status et_model_set_pruning(et_model *m, const et_prune_cfg *cfg);
/* The pruning configuration, or NULL when pruning is off. */
const et_prune_cfg *et_model_pruning(const et_model *m);
typedef struct et_prune_stats {
    int64_t weights, pruned; /* of the layer's weight tensor, now */
    double threshold;        /* largest |w| pruned by this process's last mask update
                                that pruned (NaN: none yet) */
    int64_t updates;         /* mask updates that pruned more weights */
    double mean_density;     /* unpruned fraction averaged over the training steps
                                this process ran (NaN: none) */
} et_prune_stats;
/* 1 and *out when node `node` has a pruned weight tensor, else 0. */
int et_model_prune_stats(const et_model *m, int node, et_prune_stats *out);

/* Checkpoints (safetensors, PyTorch state_dict names and layouts). With
 * `with_optimizer`, also optimizer state ("optimizer.NAME.momentum_buffer",
 * ".exp_avg", ".exp_avg_sq"), the pruning masks ("pruning.NAME.mask") and the
 * step counter in the metadata. */
et_status et_model_save(const et_model *m, const char *path, int with_optimizer);
/* Loads parameters (strict: every name present with its shape, nothing
 * unexpected except optimizer.* and pruning.* entries); with `with_optimizer`,
 * also the optimizer state and step, and with pruning on the weight masks
 * ("pruning.NAME.mask", U8 of the weight's shape, saved with the optimizer
 * state; a checkpoint without them starts with nothing pruned). */
et_status et_model_load(et_model *m, const char *path, int with_optimizer);

/* The matmul path's counters for this model: totals and per layer node. */
const et_counters *et_model_counters(const et_model *m);
/* Nodes of the model in execution order (layers, plus one "add" node per
 * residual block): PyTorch name ("" for add), layer keyword, and counters. */
int et_model_num_nodes(const et_model *m);
void et_model_node_info(const et_model *m, int i, const char **name, const char **kind,
                        const et_counters **counters);
void et_model_reset_counters(et_model *m);
et_engine *et_model_engine(et_model *m);
/* Wall-clock seconds a training step spends outside the layers, by phase
 * (since the last et_model_reset_counters): staging the input batch, the
 * loss, precision-policy rounding outside the layers, off-chip traffic
 * sampling (--traffic-every), the processor model's end-of-step work, and
 * the optimizer update. The layers' own time is in their counters' seconds. */
typedef enum et_phase {
    ET_PHASE_INPUT = 0, ET_PHASE_LOSS, ET_PHASE_PRECISION, ET_PHASE_TRAFFIC, ET_PHASE_HW, ET_PHASE_UPDATE,
    ET_NPHASES
} et_phase;
const char *et_phase_name(et_phase p);
double et_model_phase_seconds(const et_model *m, et_phase p);

/* Learning-rate schedules (per epoch, as PyTorch's StepLR / CosineAnnealingLR). */
float et_lr_step(float base, int epoch, int step_size, float gamma);
float et_lr_cosine(float base, int epoch, int t_max, float eta_min);

/* ---------------------------------------------------------- 8 number formats */

/*
 * A number format is a descriptor value, parsed from text (docs/formats.md):
 *   fp32 | fp16 | bf16 | e4m3 | e5m2 | eXmY (2<=X<=8, 0<=Y<=23) | intN | dfxpN (2<=N<=16)
 *   then modifiers  :sat  :nosub  :scaled  (floating point)   :perchannel  (intN, dfxpN)
 *   then rounding   /rn (default)  /rz  /sr  /srR (1<=R<=32)
 * e4m3 is OCP E4M3FN (max 448, no infinities), e5m2 is OCP E5M2 (max 57344);
 * both always saturate. Other eXmY are IEEE-like (bias 2^(X-1)-1, top exponent
 * for inf/NaN, subnormals, overflow to inf unless :sat). intN is symmetric with
 * scale absmax/(2^(N-1)-1); dfxpN uses the smallest power-of-two scale that
 * fits absmax in N-bit signed range. One quantize function serves every format.
 */
typedef enum et_fmt_kind { ET_FMT_FLOAT = 0, ET_FMT_INT = 1, ET_FMT_DFXP = 2 } et_fmt_kind;
typedef enum et_rounding { ET_ROUND_RN = 0, ET_ROUND_RZ = 1, ET_ROUND_SR = 2 } et_rounding;

typedef struct et_format {
    et_fmt_kind kind;
    int ebits, mbits; /* floating point: exponent and stored mantissa bits */
    int ocp_e4m3;     /* 1: OCP E4M3FN encoding (top exponent is finite, no inf) */
    int bits;         /* total bits (1 + ebits + mbits, or N) */
    int sat;          /* overflow and +-inf become +-max finite */
    int nosub;        /* results below the smallest normal become +-0 */
    int perchannel;   /* intN/dfxpN: one scale per row (output channel) */
    int scaled;       /* floating point: per-tensor power-of-two scale, absmax -> near max */
    et_rounding round;
    int sr_bits;      /* /srR: R random bits; /sr: 32 */
} et_format;

/* Parses TEXT; on error returns ET_ERR_INVALID with a message naming the
 * offending part. */
et_status et_format_parse(const char *text, et_format *out);
/* Canonical name ("e5m10" prints as "fp16", defaults omitted) into buf. */
const char *et_format_name(const et_format *f, char *buf, size_t cap);

/* Properties. Floating point: values; intN/dfxpN: in units of the scale
 * (max = 2^(N-1)-1, min_normal = min_subnormal = 1). */
typedef struct et_format_props {
    int bits;
    double max_finite, min_normal, min_subnormal;
} et_format_props;
et_format_props et_format_properties(const et_format *f);

/* The key of the counter-based random bits for stochastic rounding: element i
 * of a call draws from (seed, tensor, i, step), so results are identical at any
 * thread count and on any machine. */
typedef struct et_qkey {
    uint64_t seed, tensor, step;
} et_qkey;

/* Per-tensor scale of intN/dfxpN for x[0..n) (0 for an all-zero tensor); of a
 * :scaled float format, 2^-k with k the largest integer such that
 * absmax * 2^k <= max finite (1 for an all-zero tensor); 1 for other floating
 * point. Non-finite values do not count towards absmax. */
float et_format_scale(const et_format *f, const float *x, size_t n);
/* y[i] = quantize(x[i]) (the value the format represents, as a float); y may
 * equal x. key may be NULL (seed, tensor, step = 0). NaN stays NaN. */
et_status et_quantize(const et_format *f, const float *x, float *y, size_t n, const et_qkey *key);
/* Same over a [rows, cols] matrix; with f->perchannel each row gets its own
 * scale (weights: one per output channel). Element (r, c) uses index r*cols+c. */
et_status et_quantize_rows(const et_format *f, const float *x, float *y, size_t rows, size_t cols,
                           const et_qkey *key);

/* -------------------------------------------------------- 9 processor model */

/*
 * A model of what training costs on an edge-learning processor
 * (docs/hw.md). An architecture is a config text of `key = value` lines
 * (configs/hw/NAME.cfg; presets "elearn", "baseline", "trainer" are built in).
 * The cost of one tile of one stage is a pure function of the architecture,
 * an operating point and the tile; a live run or a trace replay calls
 * et_hw_tile_cost() per tile. The Runtime Parallelism Optimizer (RPO) picks
 * the input/output parallelism pair (IP, OP) per tile that maximises
 *   utilization = Ci*Co / (ceil(Ci/IP) * ceil(Co/OP) * IP * OP).
 */
#define ET_HW_MAX_LIST 16
#define ET_HW_MAX_OPP 8
/* Output structure of a product (docs/hw.md, "Non-zero structure"): Co(p), the
 * output channels computed at each output position p (0 <= Co(p) <= co_dense),
 * kept for every position. From it the model derives, for any OP (not only
 * powers of two) and any tile of positions, the tile's PE cycles
 * ceil(Ci/IP) * sum_p ceil(Co(p)/OP) exactly. */
enum { ET_HW_COMPRESS_NONE = 0, ET_HW_COMPRESS_RLE = 1, ET_HW_COMPRESS_BITMASK = 2 };
/* Tensor kinds of a product's off-chip bytes and the codecs they are sized under. */
enum { ET_HW_T_IN = 0, ET_HW_T_W = 1, ET_HW_T_OUT = 2, ET_HW_NT = 3 };
enum { ET_HW_C_DENSE = 0, ET_HW_C_RLE = 1, ET_HW_C_BITMASK = 2, ET_HW_NC = 3 };

typedef enum et_hw_num { ET_HW_INT = 0, ET_HW_FP = 1 } et_hw_num;
/* Operand precision of a tile: INT a_bits x w_bits (activation/error x
 * weight), or FP with a_bits = w_bits = 16 or 8. */
typedef struct et_hw_prec {
    et_hw_num num;
    int a_bits, w_bits;
} et_hw_prec;

typedef struct et_hw_pair {
    int ip, op; /* input and output parallelism; {0,0}: none / let the RPO choose */
} et_hw_pair;

/* One operating point; power_mw is the chip's power at the peak of the
 * calibration precision (a calibration input). */
typedef struct et_hw_opp {
    double voltage, freq_mhz, power_mw;
} et_hw_opp;

typedef struct et_hw_arch {
    char name[64];
    double tech_nm, sram_kb;
    int lanes;                      /* INT8xINT8 MAC lanes */
    int pp_bits;                    /* INT a x w: lanes*pp_bits/(a*w) MACs per cycle */
    int int_bits[ET_HW_MAX_LIST];   /* supported INT operand widths */
    int n_int_bits;
    int fp16_macs, fp8_macs;        /* FP MACs per cycle (0: unsupported) */
    int ip_list[ET_HW_MAX_LIST], n_ip; /* allowed IP values */
    int op_list[ET_HW_MAX_LIST], n_op; /* allowed OP values */
    int rpo;                        /* 1: RPO per tile; 0: fixed pair */
    int fixed_ip, fixed_op;         /* rpo = 0: the pair at the calibration precision */
    int speculation;                /* output speculation (skip zero outputs) */
    double spec_pj_per_mac;         /* speculation unit: energy per predicted MAC */
    int spec_macs_per_cycle;        /* speculation unit throughput */
    int weight_skip;                /* skip zero weights (Ci scaled by weight density) */
    int compress;                   /* off-chip codec: ET_HW_COMPRESS_* (none: dense bytes) */
    int tile_positions;             /* output positions per RPO tile (>= 1) */
    et_hw_prec calib;               /* precision at which opp power_mw was measured */
    double v_nom;                   /* voltage of the per-op energies below */
    double e_mac_int8_pj, e_mac_fp16_pj, e_mac_fp8_pj; /* per MAC at v_nom */
    double e_sram_pj_per_byte;      /* on-chip SRAM, at v_nom */
    double e_dram_pj_per_byte;      /* off-chip DRAM (no voltage scaling) */
    et_hw_opp opp[ET_HW_MAX_OPP];
    int n_opp;
} et_hw_arch;

/* Text of a built-in preset ("elearn", "baseline", "trainer"), or NULL. */
const char *et_hw_preset_text(const char *name);
extern const char *et_hw_preset_names; /* "elearn, baseline, trainer" */
/* Parses config TEXT (`source` names it in messages: "SOURCE:LINE: ...") and
 * then applies `sets[0..nsets)`, each "key=value", overriding. Unknown keys,
 * bad values, duplicates and missing required keys give ET_ERR_FORMAT (text)
 * or ET_ERR_INVALID (--set). */
et_status et_hw_arch_parse(const char *text, const char *source, const char *const *sets, int nsets,
                           et_hw_arch *out);
/* A preset name, or else a path to a config file. */
et_status et_hw_arch_load(const char *name_or_path, const char *const *sets, int nsets, et_hw_arch *out);

/* "int8" (8x8), "int8x4", "fp16", "fp8"; parse accepts the same names. */
const char *et_hw_prec_name(et_hw_prec p, char *buf, size_t cap);
et_status et_hw_prec_parse(const char *text, et_hw_prec *out);
/* MACs per cycle at precision p (0: unsupported). */
int et_hw_macs_per_cycle(const et_hw_arch *a, et_hw_prec p);
/* The allowed (IP, OP) pairs at precision p, IP ascending: pairs from
 * ip_list x op_list with IP*OP = MACs per cycle (rpo = 1), or the single
 * fixed pair with IP scaled by the precision's parallelism (rpo = 0).
 * Returns the count (<= cap; 0 if none or p is unsupported). */
int et_hw_pairs(const et_hw_arch *a, et_hw_prec p, et_hw_pair *out, int cap);
/* Utilization of (ip, op) for Ci x Co (0 if co == 0). */
double et_hw_utilization(int64_t ci, int64_t co, et_hw_pair pr);
/* The RPO: best pair of pairs[0..n) for Ci x Co (ci >= 1, co >= 0); ties go
 * to the larger IP. util may be NULL. */
et_status et_hw_rpo(int64_t ci, int64_t co, const et_hw_pair *pairs, int n, et_hw_pair *best, double *util);

/* The RPO on a structured tile of npos positions with co_pos[p] = Co(p):
 * minimises ceil(Ci/IP)*IP*OP * sum_p ceil(Co(p)/OP) (the MAC slots of every
 * position's non-zero outputs), i.e. maximises sum_p Ci*Co(p) /
 * sum_p ceil(Ci/IP)*ceil(Co(p)/OP)*IP*OP, for any IP/OP; ties: larger IP. */
et_status et_hw_rpo_structured(int64_t ci, const int32_t *co_pos, int64_t npos, const et_hw_pair *pairs, int n,
                               et_hw_pair *best, double *util);
/* sum_p ceil(co_pos[p] / op) over npos positions (op >= 1). */
int64_t et_hw_co_slots(const int32_t *co_pos, int64_t npos, int op);

/* One tile of one stage, as a trace or a live run sees it. */
typedef struct et_hw_tile {
    et_stage stage;
    et_hw_prec prec;
    int64_t ci;         /* reduction length per output (Cin*KH*KW for a conv) */
    int64_t co;         /* non-zero (speculated) output channels, <= co_dense */
    int64_t co_dense;   /* all output channels */
    int64_t spatial;    /* output positions per channel (images x Ho x Wo) */
    double w_density;   /* fraction of non-zero weights, 1 = dense */
    int64_t sram_bytes; /* bytes moved to/from the on-chip SRAM */
    int64_t dram_bytes; /* bytes moved to/from DRAM */
    et_hw_pair cfg;     /* {0,0}: RPO chooses; else this configuration word (EP/WG: FF's) */
    /* Non-zero structure (zero-initialised = dense: Co(p) = co at every position):
     * with `structured`, co_pos[p] = Co(p) for each of the tile's `spatial` positions,
     * used instead of co when the architecture speculates. */
    int structured;
    int spec;           /* FF whose output mask came from speculation: the unit predicted it */
    const int32_t *co_pos;
    int spec_bits;      /* with spec: operand bits of the unit's predicting MACs (1..8), 0 when
                           not recorded (the config's 2x2-bit cost applies) */
} et_hw_tile;

typedef struct et_hw_cost {
    et_hw_pair cfg;      /* configuration word used */
    double utilization;  /* of the PE array during the tile's compute cycles */
    int64_t cycles;      /* max(PE cycles, speculation cycles) */
    int64_t pe_cycles, spec_cycles;
    double macs;         /* executed MACs */
    double e_mac_pj, e_spec_pj, e_sram_pj, e_dram_pj, e_cycle_pj, energy_pj;
    double time_s;
} et_hw_cost;

/* Cost of one tile at operating point `opp` (0-based). */
et_status et_hw_tile_cost(const et_hw_arch *a, int opp, const et_hw_tile *t, et_hw_cost *out);

/* Peak of precision p at operating point opp: every MAC slot busy. */
typedef struct et_hw_peak {
    double tops, tops_per_watt, power_mw;
} et_hw_peak;
et_status et_hw_peak_at(const et_hw_arch *a, int opp, et_hw_prec p, et_hw_peak *out);
/* The precisions a peak table lists: INT b x b for each supported width
 * (widest first), then fp16, fp8. Returns the count (<= cap). */
int et_hw_peak_precs(const et_hw_arch *a, et_hw_prec *out, int cap);

/* A live run: tiles from a training run's matmul calls, summed per layer and
 * stage (src/hw/run.c). FF picks the configuration word (RPO); EP and WG of
 * the same layer reuse it. */
typedef struct et_hw_run et_hw_run;
typedef struct et_hw_totals {
    double tiles, cycles, seconds, macs;
    double mac_slots;   /* PE-cycles x MACs per cycle: the work the array could have done */
    double utilization; /* macs / mac_slots */
    double e_mac_j, e_spec_j, e_sram_j, e_dram_j, e_other_j, energy_j;
    double sram_bytes, dram_bytes;
    double tops, tops_per_watt; /* effective: 2 x macs / seconds, 2 x macs / joules */
} et_hw_totals;
et_status et_hw_run_create(const et_hw_arch *a, int opp, int nlayers, et_hw_run **out);
void et_hw_run_free(et_hw_run *r);
et_status et_hw_run_tile(et_hw_run *r, int layer, et_hw_tile tile);
/* Totals of one layer (or -1: all) and one stage (or -1: all). */
void et_hw_run_totals(const et_hw_run *r, int layer, int stage, et_hw_totals *out);
const et_hw_arch *et_hw_run_arch(const et_hw_run *r);
/* Reserves FF configuration words for `tiles` tiles of one layer (a live run
 * sized up front allocates nothing while it trains), and the tiles one product
 * of `positions` output positions becomes on the run's architecture. */
et_status et_hw_run_reserve(et_hw_run *r, int layer, int64_t tiles);
int64_t et_hw_run_tiles(const et_hw_run *r, int64_t positions, int structured);

/* One executed product as a live run and a trace record see it, before an
 * architecture maps its operand formats to a precision (docs/hw.md, "Live
 * runs"; docs/trace.md). Operand kinds: 0 fp32 (or any other format), 1 integer
 * (bits), 2 floating point (bits). a = activation/error operand, w = weight
 * (FF, EP) or activation (WG) operand. */
typedef struct et_hw_op {
    int64_t step;
    int32_t layer, stage;
    int32_t a_kind, a_bits, w_kind, w_bits;
    int64_t ci, co, co_dense, spatial;
    double w_density;   /* measured non-zero fraction of the w operand */
    int64_t sram_bytes, dram_bytes; /* dense: SRAM operands + result; DRAM all kinds */
    /* since version 2: SRAM bytes of the result alone (part of sram_bytes; shrinks with the
     * outputs a speculating architecture skips), and DRAM bytes per tensor kind
     * (ET_HW_T_*) sized under each codec (ET_HW_C_*) from the operands' zeros */
    int64_t sram_out_bytes;
    int64_t dram[ET_HW_NT][ET_HW_NC];
    int32_t spec;       /* 1: FF with an output mask (speculation) */
    int32_t spec_bits;  /* with spec: the prediction's operand bits (1..8; 0: not recorded) */
    const int32_t *co_pos; /* NULL: dense output; else `spatial` entries, Co(p) = the output
                              channels computed at position p (co = their maximum) */
} et_hw_op;
/* Maps the op's operand formats to a precision of the run's architecture
 * (intN -> INT N rounded up to a supported width, 16-bit floats -> FP16,
 * <= 8-bit floats -> FP8, else the calibration precision) and adds the tile. */
et_status et_hw_run_op(et_hw_run *r, const et_hw_op *op);

/* Trace files (docs/trace.md): a versioned binary record of every product a
 * training run executed, replayable on any architecture. Written to a temp
 * file and renamed into place by et_trace_close(w, 1). */
typedef struct et_trace_writer et_trace_writer;
et_status et_trace_create(const char *path, int nlayers, const char *const *layer_names, et_trace_writer **out);
et_status et_trace_add(et_trace_writer *w, const et_hw_op *op);
/* commit = 1: finish and rename into place; 0: discard. Frees w. */
et_status et_trace_close(et_trace_writer *w, int commit);
typedef et_status (*et_trace_fn)(void *ctx, const et_hw_op *op);
/* Reads and validates a whole trace, calling `fn` per record in order. Layer
 * names go to names[i] (cap 80 bytes each) for i < min(nlayers, max_layers). */
et_status et_trace_read(const char *path, int *nlayers, char (*names)[80], int max_layers, et_trace_fn fn, void *ctx);

/* The matmul path calls this for every product it executes (NULL: none). */
typedef et_status (*et_matmul_sink)(void *ctx, const et_matmul *mm, uint64_t macs_executed);
void et_engine_set_sink(et_engine *eng, et_matmul_sink sink, void *ctx);
/* Feeds every matmul call of the model to `run` and `baseline` as a tile and
 * to `trace` as a record (src/nn/hwlink.c); any may be NULL; all NULL detaches. */
et_status et_model_attach_hw(et_model *m, et_hw_run *run, et_hw_run *baseline, et_trace_writer *trace);

#ifdef __cplusplus
}
#endif
#endif /* EDGETRAIN_H */
