/* The AMX-INT8 prediction of `--sparsity speculate` (et_spec_conv_amx:
 * coding of input and weights, then the implicit GEMM with the mask's
 * epilogue; src/sparsity/speculate_amx.c) on VGG8's stride-1 convolutions at
 * batch 100, against the dense fp32 product the layer runs anyway
 * (et_sgemm_convb, the implicit-im2col product of conv FF), at 1 and 2
 * threads. Input about 50 % zeros (after a ReLU), random weights, 4 bits.
 * Prints per layer the times (best of R runs; at 1 thread the thread's CPU
 * time, which other processes on the machine disturb less, at 2 the wall
 * time) in ms, the ratio
 * prediction / dense, and the prediction's fraction of the AMX int8 peak
 * (measured here: tdpbssd on tiles that stay in the registers, 16 KMAC each).
 *
 *   build/bench/bench_spec [--reps R] [--layer I] [--bits B] [--threads T]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edgetrain.h"
#include "kernels/gemm_internal.h"
#include "sparsity/sparsity.h"
#include "sparsity/speculate_amx.h"

#include "bench_util.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
/* int8 MACs per second of one core: tdpbssd into 4 independent C tiles. */
__attribute__((target("amx-tile,amx-int8"))) static double amx_peak(void) {
    struct {
        uint8_t palette, start, reserved[14];
        uint16_t colsb[16];
        uint8_t rows[16];
    } c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 8; t++) c.colsb[t] = 64, c.rows[t] = 16;
    static int8_t buf[1024] __attribute__((aligned(64)));
    _tile_loadconfig(&c);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_loadd(4, buf, 64);
    _tile_loadd(5, buf, 64);
    _tile_loadd(6, buf, 64);
    _tile_loadd(7, buf, 64);
    const long it = 200000;
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        double t0 = bench_thread_now();
        for (long i = 0; i < it; i++) {
            _tile_dpbssd(0, 4, 6);
            _tile_dpbssd(1, 4, 7);
            _tile_dpbssd(2, 5, 6);
            _tile_dpbssd(3, 5, 7);
        }
        double t = bench_thread_now() - t0;
        best = t < best ? t : best;
    }
    _tile_release();
    return 4.0 * it * 16 * 16 * 64 / best;
}
#endif

int main(int argc, char **argv) {
    int reps = 7, only = -1, bits = 4, t1 = 1, t2 = 2;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--layer") && i + 1 < argc)
            only = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--bits") && i + 1 < argc)
            bits = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            t1 = t2 = atoi(argv[++i]);
    if (!et_spec_amx_ok()) {
        printf("bench_spec: no AMX-INT8 here (or ET_AMX=0): nothing to measure\n");
        return 0;
    }
    if (et_gemm_init(2) != ET_OK) {
        printf("bench_spec: et_gemm_init failed\n");
        return 1;
    }
#if defined(__x86_64__) && defined(__GNUC__)
    const double peak = amx_peak();
#else
    const double peak = 0;
#endif
    printf("AMX int8 peak, one core: %.0f GMAC/s; times: ms, best of %d; %d bits\n", peak * 1e-9, reps, bits);
    const int N = 100;
    const struct { const char *name; int C, Cout, H; } ly[] = {
        {"conv2 32->32 28x28", 32, 32, 28},   {"conv5 32->64 14x14", 32, 64, 14},
        {"conv7 64->64 14x14", 64, 64, 14},   {"conv10 64->128 7x7", 64, 128, 7},
        {"conv12 128->128 7x7", 128, 128, 7},
    };
    printf("%-20s %3s %9s %9s %9s %7s %8s\n", "layer (batch 100)", "thr", "spec ms", "(gemm)", "dense ms", "ratio", "%peak");
    double sum[2][2] = {{0}};
    for (size_t s = 0; s < sizeof ly / sizeof ly[0]; s++) {
        if (only >= 0 && (size_t)only != s) continue;
        const int C = ly[s].C, Co = ly[s].Cout, H = ly[s].H, CK = C * 9;
        const int64_t HW = (int64_t)H * H, P = N * HW;
        float *x = malloc(sizeof(float) * (size_t)(C * P)), *w = malloc(sizeof(float) * (size_t)Co * CK);
        float *b = malloc(sizeof(float) * (size_t)Co), *y = malloc(sizeof(float) * (size_t)(Co * P));
        uint8_t *mask = malloc((size_t)(Co * P));
        et_spec_amx_layout L;
        if (!x || !w || !b || !y || !mask || !et_spec_amx_plan(&L, N, C, H, H, Co, 3, 3, 1, 1)) return 1;
        void *buf = aligned_alloc(64, (L.bytes + 63) / 64 * 64);
        if (!buf) return 1;
        float ax = 0, aw = 0;
        for (int64_t i = 0; i < C * P; i++) {
            x[i] = bench_unif() < 0.5 ? (float)bench_unif() : 0.0f;
            ax = x[i] > ax ? x[i] : ax;
        }
        for (int64_t i = 0; i < (int64_t)Co * CK; i++) {
            w[i] = (float)(bench_unif() - 0.5);
            aw = w[i] > aw ? w[i] : -w[i] > aw ? -w[i] : aw;
        }
        for (int i = 0; i < Co; i++) b[i] = (float)(0.1 * (bench_unif() - 0.5));
        const et_spec sp = {bits, aw, ax, b, 1, mask, (int)P, 0, NULL, NULL, 0, NULL, NULL, NULL};
        const et_gemm_convb cb = {x, (ptrdiff_t)P, H, H, 3, 3};
        const double macs = (double)Co * CK * (double)P;
        for (int T = t1; T <= t2; T++) {
            et_set_threads(T);
            double best[3] = {1e9, 1e9, 1e9};
            for (int r = 0; r < reps; r++) {
                const int32_t *kept;
                double (*now)(void) = T == 1 ? bench_thread_now : wall_now;
                double t0 = now();
                if (!et_spec_conv_amx(&L, x, w, &sp, buf, &kept, NULL)) return 1;
                double t1 = now();
                et_sgemm_convb(Co, (int)P, CK, w, CK, &cb, 0.0f, y, (int)P, NULL);
                double t2 = now();
                /* the GEMM and mask pass alone, on the codes just made */
                et_spec_amx_run(&L, buf, mask, P, T);
                double t3 = now();
                best[0] = t1 - t0 < best[0] ? t1 - t0 : best[0];
                best[1] = t2 - t1 < best[1] ? t2 - t1 : best[1];
                best[2] = t3 - t2 < best[2] ? t3 - t2 : best[2];
            }
            sum[T - 1][0] += best[0], sum[T - 1][1] += best[1];
            printf("%-20s %3d %9.3f %9.3f %9.3f %7.3f %7.1f%%\n", ly[s].name, T, best[0] * 1e3, best[2] * 1e3, best[1] * 1e3,
                   best[0] / best[1], peak > 0 ? 100.0 * macs / (best[0] * peak * T) : 0.0);
        }
        free(x), free(w), free(b), free(y), free(mask), free(buf);
    }
    for (int T = t1; T <= t2; T++)
        printf("%-20s %3d %9.3f %9s %9.3f %7.3f\n", "all", T, sum[T - 1][0] * 1e3, "", sum[T - 1][1] * 1e3,
               sum[T - 1][1] > 0 ? sum[T - 1][0] / sum[T - 1][1] : 0.0);
    return 0;
}
