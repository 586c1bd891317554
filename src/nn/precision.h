/* Precision policy applied by the model executor; see precision.c. */
#ifndef ET_PRECISION_H
#define ET_PRECISION_H
#include "nn/model.h"
#include "numerics/policy.h"

/* Format of `role` for node `node` (NULL: fp32 / not a conv or linear). */
const et_format *et_model_format(const et_model *m, int node, et_role role);
et_status et_precision_weights(et_model *m);
et_status et_precision_input(et_model *m, int node, float *x, int64_t n);
et_status et_precision_error(et_model *m, int node, float *dy, int64_t n);
et_status et_precision_grads(et_model *m);
et_status et_precision_master(et_model *m);
#endif
