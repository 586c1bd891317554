/* Cost of the emulated-accumulation GEMM (et_qgemm) and of the INT8 GEMM
 * (et_igemm_s8 on codes, et_igemm_f32 on floats on int grids, et_igemm_f32q
 * on their codes: the training path of acc=int32) relative to et_sgemm on the same training-sized shapes
 * (M x N x K), at 1 thread, timed by this thread's CPU time, best of N runs
 * (the machine is shared). The target for qgemm with stochastic
 * rounding: at most 8x et_sgemm.
 *
 *   build/bench/bench_qgemm [--reps N] [--threads T]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edgetrain.h"
#include "kernels/igemm.h"
#include "kernels/qgemm.h"

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int reps = 5, threads = 1;

#define TIME(expr)                                                                                                     \
    ({                                                                                                                 \
        double best = 1e30;                                                                                            \
        for (int r_ = 0; r_ < reps; r_++) {                                                                            \
            double t0 = threads == 1 ? cpu_now() : wall_now();                                                         \
            expr;                                                                                                      \
            double t = (threads == 1 ? cpu_now() : wall_now()) - t0;                                                   \
            if (t < best) best = t;                                                                                    \
        }                                                                                                              \
        best;                                                                                                          \
    })

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--reps N] [--threads T]\n", argv[0]);
            return 2;
        }
    }
    et_set_threads(threads);
    static const int shapes[][3] = {{32, 3136, 288}, {100, 256, 784}, {64, 784, 576}, {100, 10, 256}};
    static const char *const cfg[][2] = {{NULL, "fp16"}, {NULL, "bf16"}, {NULL, "e6m5/sr13"},
                                         {"e5m2", "fp16"}, {NULL, "fp16/sr"}, {"e5m2/sr", "fp16/sr"},
                                         {"e6m5/sr13", "e6m5/sr13"}};
    printf("threads %d, qgemm path %s, igemm path %s, best of %d (%s time)\n", threads, et_isa_name(et_qgemm_isa()),
           et_isa_name(et_igemm_isa()), reps, threads == 1 ? "thread CPU" : "wall");
    printf("%-16s %10s | %-22s %10s %7s\n", "shape MxNxK", "sgemm ms", "qgemm mul x acc", "ms", "ratio");
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *A = malloc((size_t)M * K * 4), *B = malloc((size_t)K * N * 4), *C = malloc((size_t)M * N * 4);
        int8_t *A8 = malloc((size_t)M * K), *B8 = malloc((size_t)K * N);
        int32_t *C32 = malloc((size_t)M * N * 4);
        if (!A || !B || !C || !A8 || !B8 || !C32) return 1;
        for (size_t i = 0; i < (size_t)M * K; i++) A[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1, A8[i] = (int8_t)(i * 7);
        for (size_t i = 0; i < (size_t)K * N; i++) B[i] = (float)((i * 40503u) % 1000) / 500.0f - 1, B8[i] = (int8_t)(i * 13);
        double ts = TIME(et_sgemm(0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N));
        char shp[32];
        snprintf(shp, sizeof shp, "%dx%dx%d", M, N, K);
        for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++) {
            et_format fm, fa;
            if (cfg[c][0]) et_format_parse(cfg[c][0], &fm);
            et_format_parse(cfg[c][1], &fa);
            et_qkey key = {1, 2, 3};
            double tq = TIME(et_qgemm(0, 0, M, N, K, A, K, B, N, 0.0f, C, N, cfg[c][0] ? &fm : NULL, &fa, &key));
            char name[40];
            snprintf(name, sizeof name, "%s x %s", cfg[c][0] ? cfg[c][0] : "fp32", cfg[c][1]);
            printf("%-16s %10.3f | %-22s %10.3f %6.1fx\n", c ? "" : shp, ts * 1e3, name, tq * 1e3, tq / ts);
        }
        double ti = TIME(et_igemm_s8(0, 0, M, N, K, A8, K, B8, N, C32, N));
        printf("%-16s %10.3f | %-22s %10.3f %6.2fx\n", "", ts * 1e3, "igemm_s8", ti * 1e3, ti / ts);
        /* the training path: floats on int grids in, float out */
        for (size_t i = 0; i < (size_t)M * K; i++) A[i] = 0.01f * (float)A8[i];
        for (size_t i = 0; i < (size_t)K * N; i++) B[i] = 0.02f * (float)B8[i];
        double ts2 = TIME(et_sgemm(0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N));
        double tf = TIME(et_igemm_f32(0, 0, M, N, K, A, K, 0.01f, B, N, 0.02f, 0.0f, C, N));
        printf("%-16s %10.3f | %-22s %10.3f %6.2fx\n", "", ts2 * 1e3, "igemm_f32", tf * 1e3, tf / ts2);
        /* and with the operands' int8 codes handed over, as the policy's rounding writes them */
        double tc = TIME(et_igemm_f32q(0, 0, M, N, K, NULL, A8, K, 0.01f, NULL, B8, N, 0.02f, 0.0f, C, N));
        printf("%-16s %10.3f | %-22s %10.3f %6.2fx\n", "", ts2 * 1e3, "igemm_f32 codes", tc * 1e3, tc / ts2);
        free(A), free(B), free(C), free(A8), free(B8), free(C32);
    }
    return 0;
}
