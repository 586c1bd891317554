/* The AVX-512 copies of model.c's element loops (src/nn/model_avx512.c)
 * against plain scalar loops written here from the definitions, bit for bit:
 * SGD (PyTorch's convention: v = mu v + g + wd w; w -= lr v, or with
 * Nesterov w -= lr (d + mu v)), plain SGD without momentum, Adam, each with
 * and without a pruning mask (masked elements and their state untouched),
 * on every length from 1 to 70 and a long one (vector tails), with values
 * that make every rounding matter. Skipped on CPUs without AVX-512. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "edgetrain.h"
#include "core/rng.h"
#include "nn/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
static int have_avx512(void) { return et_cpu_isa() >= ET_ISA_AVX512; }

static float val(uint64_t stream, int64_t i) { /* signed, spread over many binades */
    double u = et_rand_uniform(77, stream, (uint64_t)i);
    return (float)((u - 0.5) * ldexp(1.0, (int)(et_rand64(77, stream + 100, (uint64_t)i) % 20) - 10));
}

typedef struct arrays {
    float *w, *g, *v, *s, *w2, *v2, *s2;
    uint8_t *mk;
} arrays;

static arrays make(int64_t n, uint64_t seed, int masked) {
    arrays a;
    a.w = malloc(sizeof(float) * (size_t)n), a.g = malloc(sizeof(float) * (size_t)n);
    a.v = malloc(sizeof(float) * (size_t)n), a.s = malloc(sizeof(float) * (size_t)n);
    a.w2 = malloc(sizeof(float) * (size_t)n), a.v2 = malloc(sizeof(float) * (size_t)n);
    a.s2 = malloc(sizeof(float) * (size_t)n);
    a.mk = masked ? malloc((size_t)n) : NULL;
    for (int64_t i = 0; i < n; i++) {
        a.w[i] = val(seed, i), a.g[i] = val(seed + 1, i), a.v[i] = val(seed + 2, i);
        a.s[i] = fabsf(val(seed + 3, i));
        if (a.mk) a.mk[i] = (uint8_t)(et_rand64(seed, 9, (uint64_t)i) % 3 ? 1 + i % 200 : 0);
    }
    memcpy(a.w2, a.w, sizeof(float) * (size_t)n), memcpy(a.v2, a.v, sizeof(float) * (size_t)n);
    memcpy(a.s2, a.s, sizeof(float) * (size_t)n);
    return a;
}

static void drop(arrays *a) {
    free(a->w), free(a->g), free(a->v), free(a->s), free(a->w2), free(a->v2), free(a->s2), free(a->mk);
}

static void same(const float *a, const float *b, int64_t n, const char *what, int64_t len) {
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)))
            fail_msg("%s (n=%lld): element %lld is %.9g, the scalar loop gives %.9g", what, (long long)len,
                     (long long)i, (double)a[i], (double)b[i]);
}

static void test_sgd(void **state) {
    (void)state;
    if (!have_avx512()) skip();
    for (int64_t n = 1; n <= 8300; n = n < 70 ? n + 1 : n * 3 + 17) {
        for (int variant = 0; variant < 8; variant++) {
            const int masked = variant & 1, nesterov = (variant >> 1) & 1, momentum = variant < 6;
            const float lr = 0.0371f, mu = 0.9f, wd = variant & 4 ? 5e-4f : 0.0f;
            arrays a = make(n, (uint64_t)(n * 8 + variant), masked);
            for (int64_t e = 0; e < n; e++) { /* the definition, one element at a time */
                if (a.mk && !a.mk[e]) continue;
                volatile float d = a.g[e] + wd * a.w2[e];
                if (momentum) {
                    volatile float vn = mu * a.v2[e] + d;
                    volatile float step = nesterov ? d + mu * vn : vn;
                    a.v2[e] = vn;
                    a.w2[e] = a.w2[e] - lr * step;
                } else {
                    a.w2[e] = a.w2[e] - lr * d;
                }
            }
            et_sgd_avx512(a.w, a.g, momentum ? a.v : NULL, a.mk, n, lr, mu, wd, nesterov);
            same(a.w, a.w2, n, "sgd weights", n);
            same(a.v, a.v2, n, "sgd momentum", n);
            drop(&a);
        }
    }
}

static void test_adam(void **state) {
    (void)state;
    if (!have_avx512()) skip();
    for (int64_t n = 1; n <= 8300; n = n < 70 ? n + 1 : n * 3 + 17) {
        for (int variant = 0; variant < 4; variant++) {
            const int masked = variant & 1;
            const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = variant & 2 ? 1e-2f : 0.0f;
            const float step_size = 1e-3f / (1.0f - powf(b1, 3.0f)), bc2s = sqrtf(1.0f - powf(b2, 3.0f));
            arrays a = make(n, (uint64_t)(n * 4 + variant + 99999), masked);
            for (int64_t e = 0; e < n; e++) {
                if (a.mk && !a.mk[e]) continue;
                volatile float d = a.g[e] + wd * a.w2[e];
                volatile float vn = b1 * a.v2[e] + (1.0f - b1) * d;
                volatile float sn = b2 * a.s2[e] + (1.0f - b2) * d * d;
                volatile float den = sqrtf(sn) / bc2s + eps;
                a.v2[e] = vn, a.s2[e] = sn;
                a.w2[e] = a.w2[e] - step_size * vn / den;
            }
            et_adam_avx512(a.w, a.g, a.v, a.s, a.mk, n, step_size, bc2s, b1, b2, eps, wd);
            same(a.w, a.w2, n, "adam weights", n);
            same(a.v, a.v2, n, "adam first moment", n);
            same(a.s, a.s2, n, "adam second moment", n);
            drop(&a);
        }
    }
}

/* x / 255 for every byte value at every offset of a vector and its tail. */
static void test_div255(void **state) {
    (void)state;
    if (!have_avx512()) skip();
    uint8_t src[300];
    float dst[300];
    for (int i = 0; i < 300; i++) src[i] = (uint8_t)(i * 7 + 3);
    for (int n = 0; n <= 300; n += n < 40 ? 1 : 37) {
        memset(dst, 0x7f, sizeof dst);
        et_u8_div255_avx512(src, dst, n);
        for (int i = 0; i < n; i++) {
            volatile float want = (float)src[i], d = 255.0f;
            assert_true(dst[i] == want / d);
        }
        for (int i = n; i < 300; i++) assert_true(((uint8_t *)dst)[4 * i] == 0x7f); /* nothing past n */
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd),
        cmocka_unit_test(test_adam),
        cmocka_unit_test(test_div255),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
#else
#include <stdio.h>
int main(void) {
    puts("test_vecloops: no AVX-512 loops on this architecture");
    return 0;
}
#endif
