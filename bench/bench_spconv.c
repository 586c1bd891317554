/* Conv EP and WG without the column matrix (et_spconv_ep / et_spconv_wg,
 * kernels/spconv.h) against conv's column-matrix path on VGG8's layers
 * (batch 100, one chunk of images as conv.c cuts them), at densities of dY
 * from 2 % to 50 %, in the calling thread (as conv's lanes run them). dY's
 * non-zeros are placed at random (--pattern rand) or as max-pool backward
 * leaves them (--pattern pool: per channel and 2x2 window of the output one
 * position, non-zero with probability 4*density, so at most one non-zero per
 * window; VGG8's conv layers before a pool see this, density 0.08-0.12):
 *   EP  dense: dcol = Wᵀ·dY (et_sgemm) + col2im (conv's AVX-512 row kernel,
 *       with the mask of x);  implicit: et_spconv_ep
 *   WG  dense: im2col + dWᵀ = col·dYᵀ (et_sgemm);  implicit: et_spconv_wg
 * Prints per layer and density the times (best of R runs, thread CPU time)
 * and the ratio implicit / dense, the measurements behind et_spconv_*_pays;
 * checks on the way that both give the same bits.
 *
 *   build/bench/bench_spconv [--reps R] [--layer I] [--density D] [--pattern rand|pool]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edgetrain.h"
#include "kernels/spconv.h"
#include "nn/conv_rows.h"

#include "bench_util.h"

/* dY (Co planes of nb images of H x H, CNHW) at density d: random, or one
 * position per channel and 2x2 window, non-zero with probability 4d. */
static void fill_dy(float *dy, int Co, int nb, int H, double d, int pool) {
    const int64_t HW = (int64_t)H * H, P = nb * HW;
    if (!pool) {
        for (int64_t i = 0; i < Co * P; i++) dy[i] = bench_unif() < d ? (float)(bench_unif() - 0.5) : 0.0f;
        return;
    }
    memset(dy, 0, sizeof(float) * (size_t)(Co * P));
    for (int co = 0; co < Co; co++)
        for (int n = 0; n < nb; n++)
            for (int y = 0; y < H; y += 2)
                for (int x = 0; x < H; x += 2) {
                    const int k = (int)(bench_unif() * 4), yy = y + (k >> 1), xx = x + (k & 1);
                    const int keep = bench_unif() < 4 * d;
                    const float v = (float)(bench_unif() - 0.5);
                    if (keep && yy < H && xx < H) dy[co * P + n * HW + (int64_t)yy * H + xx] = v != 0.0f ? v : 0.25f;
                }
}

int main(int argc, char **argv) {
    int reps = 5, only = -1, pool = 0;
    double dens1 = 0;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--layer") && i + 1 < argc)
            only = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--density") && i + 1 < argc)
            dens1 = atof(argv[++i]);
        else if (!strcmp(argv[i], "--pattern") && i + 1 < argc)
            pool = !strcmp(argv[++i], "pool");
    if (et_cpu_isa() < ET_ISA_AVX512) {
        printf("bench_spconv: needs AVX-512 (the kernels run nowhere else)\n");
        return 0;
    }
    et_set_threads(1);
    /* VGG8's convolutions after the first: Cin, Cout, H (= W), images per chunk */
    const struct { const char *name; int C, Cout, H, nb; } ly[] = {
        {"conv2 32->32 28x28", 32, 32, 28, 1},   {"conv5 32->64 14x14", 32, 64, 14, 4},
        {"conv7 64->64 14x14", 64, 64, 14, 2},   {"conv10 64->128 7x7", 64, 128, 7, 9},
        {"conv12 128->128 7x7", 128, 128, 7, 4},
    };
    double dens[] = {0.02, 0.05, 0.1, 0.2, 0.3, 0.5}, dpool[] = {0.05, 0.08, 0.1, 0.125, 0.2, 0.25};
    if (pool) memcpy(dens, dpool, sizeof dens);
    const int nd = dens1 > 0 ? 1 : (int)(sizeof dens / sizeof dens[0]);
    if (dens1 > 0) dens[0] = dens1;
    printf("%-22s %7s %10s %10s %7s %10s %10s %7s\n", "layer (one chunk)", "density", "EP col us", "EP imp us", "ratio",
           "WG col us", "WG imp us", "ratio");
    int bad = 0;
    for (size_t s = 0; s < sizeof ly / sizeof ly[0]; s++) {
        if (only >= 0 && (size_t)only != s) continue;
        const int C = ly[s].C, Co = ly[s].Cout, H = ly[s].H, nb = ly[s].nb, N = nb, KK = 9, CK = C * KK;
        const int64_t HW = (int64_t)H * H, P = nb * HW;
        const et_conv_geom geo = {H, H, H, H, 3, 3, 1, 1};
        float *x = malloc(sizeof(float) * (size_t)(C * P)), *dy = malloc(sizeof(float) * (size_t)(Co * P));
        /* wt 64-byte aligned as in conv.c's scratch (a split load per vector otherwise) */
        float *w = malloc(sizeof(float) * (size_t)Co * CK);
        float *wt = aligned_alloc(64, sizeof(float) * (size_t)Co * KK * et_spconv_cp(C));
        float *col = aligned_alloc(64, sizeof(float) * (size_t)(CK * P + 16));
        float *dx0 = malloc(sizeof(float) * (size_t)(C * P)), *dx1 = malloc(sizeof(float) * (size_t)(C * P));
        float *g0 = malloc(sizeof(float) * (size_t)CK * Co), *g1 = malloc(sizeof(float) * (size_t)CK * Co);
        float *ws = aligned_alloc(64, sizeof(float) * (size_t)(CK * P + 16));
        for (int64_t i = 0; i < C * P; i++) x[i] = bench_unif() < 0.5 ? (float)bench_unif() : 0.0f;
        for (int64_t i = 0; i < (int64_t)Co * CK; i++) w[i] = (float)(bench_unif() - 0.5);
        et_spconv_ep_weights(w, Co, C, 3, 3, wt);
        const et_conv_implicit g = {C, N, H, H, Co, 3, 3, 1, 1, H, H, 0, nb, x, dx1, 1, wt, ws, (size_t)(CK * P)};
        for (int d = 0; d < nd; d++) {
            fill_dy(dy, Co, nb, H, dens[d], pool);
            int64_t nnz = 0; /* the density printed: measured */
            for (int64_t i = 0; i < Co * P; i++) nnz += dy[i] != 0.0f;
            double best[4] = {1e9, 1e9, 1e9, 1e9};
            for (int r = 0; r < reps; r++) {
                double t0 = bench_thread_now();
                et_sgemm(1, 0, CK, (int)P, Co, 1.0f, w, CK, dy, (int)P, 0.0f, col, (int)P);
                for (int ci = 0; ci < C; ci++)
                    et_col2im_chan_keep_avx512(&geo, col + (int64_t)ci * KK * P, P, nb, dx0 + ci * P, x + ci * P);
                double t1 = bench_thread_now();
                uint64_t m;
                et_spconv_ep(&g, dy, P, &m);
                double t2 = bench_thread_now();
                for (int ci = 0; ci < C; ci++)
                    for (int t = 0; t < KK; t++)
                        et_im2col_row_avx512(&geo, t / 3, t % 3, x + ci * P, nb, col + ((int64_t)ci * KK + t) * P, NULL);
                et_sgemm(0, 1, CK, Co, (int)P, 1.0f, col, (int)P, dy, (int)P, 0.0f, g0, Co);
                double t3 = bench_thread_now();
                et_spconv_wg(&g, dy, P, 0.0f, g1, &m);
                double t4 = bench_thread_now();
                const double t[4] = {t1 - t0, t2 - t1, t3 - t2, t4 - t3};
                for (int k = 0; k < 4; k++) best[k] = t[k] < best[k] ? t[k] : best[k];
            }
            if (memcmp(dx0, dx1, sizeof(float) * (size_t)(C * P))) bad = 1, printf("  EP bits differ\n");
            for (int o = 0; o < Co; o++)
                for (int ci = 0; ci < C; ci++)
                    for (int t = 0; t < KK; t++)
                        if (memcmp(&g0[((int64_t)ci * KK + t) * Co + o], &g1[((int64_t)o * KK + t) * C + ci], 4)) bad = 1;
            printf("%-22s %7.2f %10.1f %10.1f %7.2f %10.1f %10.1f %7.2f\n", ly[s].name, (double)nnz / (double)(Co * P), best[0] * 1e6,
                   best[1] * 1e6, best[1] / best[0], best[2] * 1e6, best[3] * 1e6, best[3] / best[2]);
        }
        free(x), free(dy), free(w), free(wt), free(col), free(dx0), free(dx1), free(g0), free(g1), free(ws);
    }
    if (bad) printf("bench_spconv: the implicit kernels' bits differ from the column-matrix path\n");
    return bad;
}
