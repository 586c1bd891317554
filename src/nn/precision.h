/* Precision policy applied by the model executor; see precision.c. */
#ifndef ET_PRECISION_H
#define ET_PRECISION_H
#include "nn/model.h"
#include "numerics/policy.h"

/* Format of `role` for node `node` (NULL: fp32 / not a conv or linear). */
const et_format *et_model_format(const et_model *m, int node, et_role role);
/* At planning: grows the calling thread's packing buffers of the exact integer
 * GEMM (layers with acc=int32) and of the emulated-accumulation GEMM (layers
 * with a mul or floating-point acc format) to what every FF/EP/WG product of
 * training needs, so the training loop does not allocate; *bytes = what those
 * buffers hold (0 without a policy). */
et_status et_precision_reserve(et_model *m, int batch, size_t *bytes);
et_status et_precision_weights(et_model *m);
et_status et_precision_input(et_model *m, int node, float *x, int64_t n);
et_status et_precision_error(et_model *m, int node, float *dy, int64_t n);
et_status et_precision_grads(et_model *m);
et_status et_precision_master(et_model *m);
void et_precision_free(et_model *m);
/* Traffic measurement hooks (traffic.c). */
int et_traffic_sampling(const et_model *m);
void et_traffic_input(et_model *m, int node, const float *x, int n);
void et_traffic_error(et_model *m, int node, const float *dy, int n);
void et_traffic_params(et_model *m);
void et_traffic_free(et_model *m);
void et_hwlink_free(et_model *m); /* hwlink.c */
et_status et_hwlink_step_done(et_model *m); /* hwlink.c: emit the step's waiting records */
#endif
