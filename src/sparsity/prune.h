/* Dynamic magnitude pruning during training (docs/sparsity.md, "Pruning").
 * The model executor calls these at fixed points of a step; the layers only
 * see each weight's mask (et_param.mask) and hand it to the matmul call. */
#ifndef ET_PRUNE_H
#define ET_PRUNE_H
#include "nn/model.h"

/* The memory plan: bytes of the weight masks (one byte per weight of every
 * pruned layer) and of the selection scratch. Called by et_model_plan()
 * before it allocates; 0 and 0 when pruning is off. */
void et_prune_plan_bytes(const et_model *m, size_t *mask_bytes, size_t *scratch_bytes);
/* Points the masks (all ones: nothing pruned) and the scratch into the plan. */
void et_prune_bind(et_model *m, uint8_t *masks, void *scratch);

/* Start of a training step (before the weights are rounded for FF): when
 * the schedule says so, prunes more weights of each layer, zeroing their
 * master value, gradient and optimizer state. Idempotent within a step. */
void et_prune_step(et_model *m);
/* After the precision policy rounded the weights into param.use: keeps the
 * rounded copy exactly zero where pruned. */
void et_prune_apply_use(et_model *m);
/* A mask read from a checkpoint (0/1 bytes, the weight's shape): replaces
 * node's mask and zeroes the weight and its optimizer state where pruned. */
et_status et_prune_load_mask(et_model *m, int node, const uint8_t *mask, int64_t n);
/* Nothing pruned (a fresh init). */
void et_prune_reset(et_model *m);
void et_prune_free(et_model *m);
#endif
