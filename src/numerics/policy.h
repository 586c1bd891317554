/* Precision policies: for every layer, a number format per role.
 *
 * Roles: w (weights as used in FF/EP), a (activations entering a matmul),
 * e (errors entering EP/WG), g (weight gradients), acc (the matmul
 * accumulator), m (master weights and optimizer state), mul (the multiplier
 * output, optional). A role without a format stays fp32. Text format
 * (docs/precision.md):
 *   # comment
 *   default w=int8 a=int8 e=int8 g=int16 acc=fp32
 *   layer 0 w=int2            per-layer override (PyTorch layer name)
 *   laps threshold=0.1 every=50 inc=2 max=16   adaptive weight precision
 * or inline, on one line: "w=int4,a=int8,e=int8,g=int16,acc=fp32". */
#ifndef ET_POLICY_H
#define ET_POLICY_H
#include "edgetrain.h"

typedef enum et_role { ET_ROLE_W, ET_ROLE_A, ET_ROLE_E, ET_ROLE_G, ET_ROLE_ACC, ET_ROLE_M, ET_ROLE_MUL, ET_NROLES } et_role;

const char *et_role_name(et_role r);

#define ET_POLICY_MAX_LAYERS 256
typedef struct et_policy_entry {
    char layer[80]; /* "" for the default */
    unsigned set;   /* bit r: role r given */
    et_format fmt[ET_NROLES];
} et_policy_entry;

/* LAPS-style layer-wise adaptive precision (survey, paper 003 §VI): every
 * `every` steps, each layer with an intN/dfxpN weight format compares its
 * weights rounded at the current width with the same weights rounded at
 * width + `inc`; when the relative difference ||q_b - q_b+inc|| / ||q_b+inc||
 * exceeds `threshold`, the layer's width grows by `inc` (up to `max`). */
typedef struct et_laps {
    int on;
    double threshold;
    int every, inc, max;
} et_laps;

typedef struct et_policy {
    char name[64];
    et_laps laps;
    int n;          /* entries[0] is the default */
    et_policy_entry entries[ET_POLICY_MAX_LAYERS + 1];
} et_policy;

/* acc=int32: exact integer accumulation. Stored as {kind INT, bits 32};
 * et_policy_acc_int32() tells it apart. */
static inline int et_policy_acc_int32(const et_format *f) { return f && f->kind == ET_FMT_INT && f->bits == 32; }

/* Parses policy text (file content or one inline line). */
et_status et_policy_parse(const char *text, const char *name, et_policy *out);
/* SPEC: a file, a name in $ET_POLICIES_DIR or policies/ (NAME.policy), or inline text. */
et_status et_policy_load(const char *spec, et_policy *out);
/* Format of `role` for layer `layer` (override, else default), NULL if fp32. */
const et_format *et_policy_format(const et_policy *p, const char *layer, et_role role);
#endif
