/* The zero-skipping weight-gradient product (et_sgemm_spwg_isa, forced)
 * against the dense et_sgemm on VGG8's conv WG chunk products (M = CK,
 * N = Cout, K = positions of one im2col chunk at batch 100), at densities of
 * dY from 1 % to 50 % (random zeros), in the calling thread (as conv's lanes
 * run them). Prints per shape and density the dense and sparse times (best
 * of R runs, thread CPU time, each run dense and sparse back to back), their
 * ratio, and the fitted costs behind et_spwg_pays (spwg.h): the sparse time
 * as a + b * density, a and b in units of the dense time.
 *
 *   build/bench/bench_spwg [--reps R] [--shape I] [--density D]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edgetrain.h"
#include "kernels/spwg.h"

#include "bench_util.h"


int main(int argc, char **argv) {
    int reps = 7, only = -1;
    double dens1 = 0;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--shape") && i + 1 < argc)
            only = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--density") && i + 1 < argc)
            dens1 = atof(argv[++i]);
    et_set_threads(1);
    const struct { const char *name; int M, N, K; } sh[] = {
        {"conv2 288x32x784", 288, 32, 784},    {"conv5 288x64x784", 288, 64, 784},
        {"conv7 576x64x392", 576, 64, 392},    {"conv10 576x128x441", 576, 128, 441},
        {"conv12 1152x128x196", 1152, 128, 196},
    };
    double dens[] = {0.01, 0.03, 0.07, 0.15, 0.3, 0.5};
    const int nd = dens1 > 0 ? 1 : (int)(sizeof dens / sizeof dens[0]);
    if (dens1 > 0) dens[0] = dens1;
    printf("%-22s %7s %10s %10s %7s\n", "product", "density", "dense us", "spwg us", "ratio");
    for (size_t s = 0; s < sizeof sh / sizeof sh[0]; s++) {
        if (only >= 0 && (size_t)only != s) continue;
        const int M = sh[s].M, N = sh[s].N, K = sh[s].K;
        float *A = malloc(sizeof(float) * (size_t)M * K), *B = malloc(sizeof(float) * (size_t)N * K);
        float *C = malloc(sizeof(float) * (size_t)M * N);
        for (size_t i = 0; i < (size_t)M * K; i++) A[i] = bench_unif() < 0.6 ? (float)bench_unif() : 0.0f;
        double r[8];
        for (int d = 0; d < nd; d++) {
            for (size_t i = 0; i < (size_t)N * K; i++) B[i] = bench_unif() < dens[d] ? (float)(bench_unif() - 0.5) : 0.0f;
            double td = 1e30, ts = 1e30;
            uint64_t cpu;
            for (int q = 0; q < reps; q++) {
                double t0 = bench_thread_now();
                et_sgemm(0, 1, M, N, K, 1.0f, A, K, B, K, 1.0f, C, N);
                double t1 = bench_thread_now();
                et_sgemm_spwg_isa(et_cpu_isa(), 0, M, N, K, A, K, B, K, 1.0f, C, N, 1.0, &cpu);
                double t2 = bench_thread_now();
                if (t1 - t0 < td) td = t1 - t0;
                if (t2 - t1 < ts) ts = t2 - t1;
            }
            r[d] = ts / td;
            printf("%-22s %6.0f%% %10.1f %10.1f %7.3f\n", sh[s].name, 100 * dens[d], td * 1e6, ts * 1e6, r[d]);
        }
        if (nd < 2) continue;
        /* least squares of ratio = a + b * density */
        double sx = 0, sy = 0, sxx = 0, sxy = 0;
        for (int d = 0; d < nd; d++) sx += dens[d], sy += r[d], sxx += dens[d] * dens[d], sxy += dens[d] * r[d];
        const double b = (nd * sxy - sx * sy) / (nd * sxx - sx * sx), a = (sy - b * sx) / nd;
        printf("%-22s fit: spwg/dense = %.3f + %.2f * density; break-even density %.3f (N = %d: a*N = %.1f)\n",
               sh[s].name, a, b, (1 - a) / b, N, a * N);
        free(A), free(B), free(C);
    }
    return 0;
}
