/* libFuzzer target for the parsers without a target of their own: the first
 * byte picks the parser (model spec, precision policy, number format, hardware
 * config, trace file), the rest is its input. Parsers must return an error or a valid result, never crash,
 * hang or allocate without bound. */
#include "edgetrain.h"
#include "numerics/policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static et_status count_op(void *ctx, const et_hw_op *op) {
    (void)ctx;
    uint64_t s = 0; /* touch every structure word the reader hands out */
    for (int64_t i = 0; op->co_pos && i < op->spatial; i++) s += (uint64_t)op->co_pos[i];
    return op->layer >= 0 && s != UINT64_MAX ? ET_OK : ET_ERR_INVALID;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > 8192) return 0;
    char *text = malloc(size);
    memcpy(text, data + 1, size - 1);
    text[size - 1] = 0;
    switch (data[0] % 5) {
    case 0: {
        et_model *m = NULL;
        if (et_model_parse(text, "fuzz", &m) == ET_OK) {
            int64_t macs[ET_NSTAGES];
            et_model_macs(m, macs);
            (void)et_model_num_params(m);
        }
        et_model_free(m);
        break;
    }
    case 1: {
        static et_policy p;
        (void)et_policy_parse(text, "fuzz", &p);
        break;
    }
    case 2: {
        et_format f;
        char buf[64];
        if (et_format_parse(text, &f) == ET_OK) {
            float x[4] = {1.5f, -3e38f, 1e-40f, 0.0f};
            et_format_name(&f, buf, sizeof buf);
            et_format parsed;
            if (et_format_parse(buf, &parsed) != ET_OK) abort(); /* canonical names parse */
            (void)et_quantize(&f, x, x, 4, NULL);
        }
        break;
    }
    case 4: {
        static char tpath[64];
        if (!tpath[0]) snprintf(tpath, sizeof tpath, "/tmp/et_fuzz_trace_%d", (int)getpid());
        FILE *f = fopen(tpath, "wb");
        if (f) {
            fwrite(data + 1, 1, size - 1, f);
            fclose(f);
            int nl;
            char names[4][80];
            (void)et_trace_read(tpath, &nl, names, 4, count_op, NULL);
        }
        break;
    }
    default: {
        static et_hw_arch a;
        (void)et_hw_arch_parse(text, "fuzz", NULL, 0, &a);
        break;
    }
    }
    free(text);
    return 0;
}
