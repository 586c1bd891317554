/* GFLOP/s of et_sgemm on the shapes training uses (conv FF/EP/WG through
 * im2col in CNHW layout, linear layers at batch 100), at 1 and 2 threads,
 * next to this machine's FP32 FMA peak measured here, and OpenBLAS's
 * cblas_sgemm (dlopen'ed; the column is skipped if it cannot be found) on the
 * same shapes in the same run.
 *
 *   build/bench/bench_gemm [--isa scalar|avx2|avx512] [--quick] [--cputime] [--shape NAME]
 *
 * Times are wall-clock, best of 5 samples. On a machine shared with other
 * work, --cputime times the 1-thread runs by the thread's CPU time instead
 * (the 2-thread runs stay wall-clock), which filters out descheduling.
 */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "bench_util.h"
#include "edgetrain.h"
#include "kernels/gemm_internal.h"

static int cpu_clock; /* --cputime: 1-thread runs timed by this thread's CPU time */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------------ FMA peak */

#define PEAK_ITERS 2000000L

#if defined(__x86_64__) && defined(__GNUC__)
/* 12 independent FMA chains (enough to hide FMA latency on current cores),
 * written in assembly so that the compiler cannot spill or fold them. */
#define FMA12(op, r)                                                                        \
    op " %%" r "12, %%" r "13, %%" r "0\n\t" op " %%" r "12, %%" r "13, %%" r "1\n\t"      \
    op " %%" r "12, %%" r "13, %%" r "2\n\t" op " %%" r "12, %%" r "13, %%" r "3\n\t"      \
    op " %%" r "12, %%" r "13, %%" r "4\n\t" op " %%" r "12, %%" r "13, %%" r "5\n\t"      \
    op " %%" r "12, %%" r "13, %%" r "6\n\t" op " %%" r "12, %%" r "13, %%" r "7\n\t"      \
    op " %%" r "12, %%" r "13, %%" r "8\n\t" op " %%" r "12, %%" r "13, %%" r "9\n\t"      \
    op " %%" r "12, %%" r "13, %%" r "10\n\t" op " %%" r "12, %%" r "13, %%" r "11\n\t"
#define CLOBBER12(r)                                                                        \
    r "0", r "1", r "2", r "3", r "4", r "5", r "6", r "7", r "8", r "9", r "10", r "11", r "12", \
        r "13"

__attribute__((target("avx512f"), noinline)) static void peak_avx512(long iters) {
    __asm__ volatile("vxorps %%xmm12, %%xmm12, %%xmm12\n\t"
                     "vxorps %%xmm13, %%xmm13, %%xmm13\n\t"
                     "1:\n\t" FMA12("vfmadd231ps", "zmm") "dec %0\n\t"
                     "jnz 1b\n\t"
                     : "+r"(iters)
                     :
                     : "cc", CLOBBER12("xmm"));
}
__attribute__((target("avx2,fma"), noinline)) static void peak_avx2(long iters) {
    __asm__ volatile("vxorps %%xmm12, %%xmm12, %%xmm12\n\t"
                     "vxorps %%xmm13, %%xmm13, %%xmm13\n\t"
                     "1:\n\t" FMA12("vfmadd231ps", "ymm") "dec %0\n\t"
                     "jnz 1b\n\t"
                     : "+r"(iters)
                     :
                     : "cc", CLOBBER12("xmm"));
}
#endif

/* FP32 GFLOP/s of `threads` threads running the FMA loop at once. */
static double measure_peak(int threads, const char **how) {
    double flops_per_iter = 0;
    int isa = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        isa = 2;
        flops_per_iter = 12.0 * 16 * 2;
        *how = "avx512 FMA";
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        isa = 1;
        flops_per_iter = 12.0 * 8 * 2;
        *how = "avx2 FMA";
    }
#endif
    if (!isa) {
        *how = "none";
        return 0;
    }
    /* Wall clock over all threads (best of 40 short runs); with --cputime,
     * the sum of each thread's rate measured on its own CPU clock. */
    double best = 0;
    for (int rep = 0; rep < 40; rep++) {
        double t0 = now(), rate = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) reduction(+ : rate)
#endif
        {
            double c0 = bench_thread_now();
#if defined(__x86_64__) && defined(__GNUC__)
            if (isa == 2)
                peak_avx512(PEAK_ITERS);
            else
                peak_avx2(PEAK_ITERS);
#endif
            rate += flops_per_iter * PEAK_ITERS / (bench_thread_now() - c0) * 1e-9;
        }
        double dt = now() - t0;
        double g = cpu_clock ? rate : flops_per_iter * PEAK_ITERS * threads / dt * 1e-9;
        if (g > best) best = g;
    }
    return best;
}

/* -------------------------------------------------------------- OpenBLAS */

typedef void (*cblas_sgemm_fn)(int, int, int, int, int, int, float, const float *, int,
                               const float *, int, float, float *, int);
typedef void (*set_threads_fn)(int);
static cblas_sgemm_fn ob_sgemm;
static set_threads_fn ob_set_threads;
static const char *ob_path;

static void load_openblas(void) {
    static const char *const paths[] = {
        "/usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0",
        "libopenblas.so.0",
        "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
        "libopenblas.so",
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        void *h = dlopen(paths[i], RTLD_NOW | RTLD_LOCAL);
        if (!h) continue;
        ob_sgemm = (cblas_sgemm_fn)dlsym(h, "cblas_sgemm");
        ob_set_threads = (set_threads_fn)dlsym(h, "openblas_set_num_threads");
        if (ob_sgemm) {
            ob_path = paths[i];
            return;
        }
        dlclose(h);
    }
}

/* ---------------------------------------------------------------- shapes */

typedef struct shape {
    const char *name;
    int ta, tb, M, N, K;
} shape;

/* vgg8 on 28x28 inputs; N (or K for WG) is images_in_chunk * H * W, here 32
 * images for c1/c2 (28x28), 64 for c4 (14x14), 64 for c6 (7x7). */
static const shape shapes[] = {
    {"convFF c1 32x25088x9", 0, 0, 32, 25088, 9},
    {"convFF c2 32x25088x288", 0, 0, 32, 25088, 288},
    {"convFF c4 64x12544x576", 0, 0, 64, 12544, 576},
    {"convFF c6 128x3136x1152", 0, 0, 128, 3136, 1152},
    /* the same layer as c2 with a 4-image im2col chunk: B stays in cache */
    {"convFF c2/4 32x3136x288", 0, 0, 32, 3136, 288},
    {"convFF c2 chunk 32x784x288", 0, 0, 32, 784, 288},
    {"convEP c2 chunk 288x784x32", 1, 0, 288, 784, 32},
    {"convWG c2 chunk 32x288x784", 0, 1, 32, 288, 784},
    {"convWGt c2 chunk 288x32x784", 0, 1, 288, 32, 784},
    {"convWG c4 chunk 64x576x392", 0, 1, 64, 576, 392},
    {"convWGt c4 chunk 576x64x392", 0, 1, 576, 64, 392},
    {"convWG c6 chunk 128x1152x196", 0, 1, 128, 1152, 196},
    {"convWGt c6 chunk 1152x128x196", 0, 1, 1152, 128, 196},
    {"convEP c2 288x25088x32", 1, 0, 288, 25088, 32},
    {"convEP c4 576x12544x64", 1, 0, 576, 12544, 64},
    {"convEP c6 1152x3136x128", 1, 0, 1152, 3136, 128},
    {"convWG c1 32x9x78400", 0, 1, 32, 9, 78400},
    {"convWG lenet1 8x9x78400", 0, 1, 8, 9, 78400},
    {"convWG lenet2 16x72x19600", 0, 1, 16, 72, 19600},
    {"convWG c2 32x288x25088", 0, 1, 32, 288, 25088},
    {"convWG c4 64x576x12544", 0, 1, 64, 576, 12544},
    {"convWG c6 128x1152x3136", 0, 1, 128, 1152, 3136},
    {"convWG c2/4 32x288x3136", 0, 1, 32, 288, 3136},
    {"linFF 100x256x1152", 0, 1, 100, 256, 1152},
    {"linEP 100x1152x256", 0, 0, 100, 1152, 256},
    {"linWG 256x1152x100", 1, 0, 256, 1152, 100},
    {"linFF 100x10x256", 0, 1, 100, 10, 256},
    {"tiny 16x16x16", 0, 0, 16, 16, 16},
};

typedef struct mats {
    float *A, *B, *C;
    int lda, ldb;
} mats;

static int use_isa = -1; /* -1: et_sgemm */

static void call(int blas, const shape *s, mats *m) {
    if (blas)
        ob_sgemm(101, s->ta ? 112 : 111, s->tb ? 112 : 111, s->M, s->N, s->K, 1.0f, m->A, m->lda,
                 m->B, m->ldb, 0.0f, m->C, s->N);
    else if (use_isa >= 0)
        et_sgemm_isa((et_isa)use_isa, s->ta, s->tb, s->M, s->N, s->K, 1.0f, m->A, m->lda, m->B,
                     m->ldb, 0.0f, m->C, s->N);
    else
        et_sgemm(s->ta, s->tb, s->M, s->N, s->K, 1.0f, m->A, m->lda, m->B, m->ldb, 0.0f, m->C,
                 s->N);
}

/* Best-of-5 GFLOP/s, each sample repeating the call for >= min_time. */
static double time_shape(int blas, const shape *s, mats *m, int threads, double min_time) {
    if (blas) {
        if (ob_set_threads) ob_set_threads(threads);
    } else {
        et_set_threads(threads);
    }
    call(blas, s, m); /* warm up: first touch, workspace, thread pool */
    double flops = 2.0 * s->M * s->N * s->K, best = 0;
    double (*clk)(void) = cpu_clock && threads == 1 ? bench_thread_now : now;
    /* calls per sample from a wall-clock estimate, so that the clock (a
     * system call for --cputime) is read only twice per sample */
    int reps = 0;
    double w0 = now();
    do {
        call(blas, s, m);
        reps++;
    } while (now() - w0 < 0.01);
    reps = (int)(reps * min_time / (now() - w0)) + 1;
    for (int sample = 0; sample < 5; sample++) {
        double t0 = clk();
        for (int r = 0; r < reps; r++) call(blas, s, m);
        double dt = clk() - t0;
        double g = flops * reps / dt * 1e-9;
        if (g > best) best = g;
    }
    return best;
}

int main(int argc, char **argv) {
    int quick = 0;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) {
            quick = 1;
        } else if (!strcmp(argv[i], "--cputime")) {
            cpu_clock = 1;
        } else if (!strcmp(argv[i], "--isa") && i + 1 < argc) {
            const char *v = argv[++i];
            use_isa = !strcmp(v, "scalar") ? 0 : !strcmp(v, "avx2") ? 1 : 2;
        } else if (!strcmp(argv[i], "--peak-json")) {
            /* For bench/run.sh: the machine's FP32 peak on 1 and 2 threads. */
            const char *how = "";
            double p1 = measure_peak(1, &how), p2 = measure_peak(2, &how);
            printf("{\"gflops\": %.2f, \"threads\": 2, \"gflops_1thread\": %.2f, \"how\": \"%s\"}\n", p2, p1, how);
            return 0;
        } else if (!strcmp(argv[i], "--shape") && i + 1 < argc) {
            only = argv[++i];
        } else {
            fprintf(stderr, "usage: %s [--isa scalar|avx2|avx512] [--quick] [--cputime] [--shape NAME] [--peak-json]\n",
                    argv[0]);
            return 2;
        }
    }
    double min_time = quick ? 0.05 : 0.2;
    const char *how = "";
    double peak1 = measure_peak(1, &how), peak2 = measure_peak(2, &how);
    load_openblas();
    et_gemm_init(2);
    printf("kernel: %s%s%s   workspace: %zu KiB\n", et_gemm_kernel_name(),
           use_isa >= 0 ? "  forced isa: " : "", use_isa >= 0 ? et_isa_name((et_isa)use_isa) : "",
           et_gemm_workspace_bytes() / 1024);
    printf("measured FP32 peak (%s): 1 thread %.1f GFLOP/s, 2 threads %.1f GFLOP/s\n", how, peak1,
           peak2);
    printf("OpenBLAS: %s\n", ob_path ? ob_path : "not found (column skipped)");
    printf("%-26s %8s %8s %7s %8s %8s %7s\n", "shape (MxNxK)", "1T", "2T", "%pk2T", "OB 1T",
           "OB 2T", "et/OB2T");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const shape *s = &shapes[i];
        if (only && !strstr(s->name, only)) continue;
        mats m;
        m.lda = s->ta ? s->M : s->K;
        m.ldb = s->tb ? s->K : s->N;
        size_t an = (size_t)s->M * s->K, bn = (size_t)s->K * s->N, cn = (size_t)s->M * s->N;
        m.A = malloc(an * sizeof(float));
        m.B = malloc(bn * sizeof(float));
        m.C = malloc(cn * sizeof(float));
        if (!m.A || !m.B || !m.C) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
        for (size_t j = 0; j < an; j++) m.A[j] = (float)((j * 7 + 3) % 13) * 0.1f - 0.6f;
        for (size_t j = 0; j < bn; j++) m.B[j] = (float)((j * 5 + 1) % 11) * 0.1f - 0.5f;
        memset(m.C, 0, cn * sizeof(float));
        char t[8] = "ff";
        t[0] = s->ta ? 't' : 'n';
        t[1] = s->tb ? 't' : 'n';
        double g1 = time_shape(0, s, &m, 1, min_time), g2 = time_shape(0, s, &m, 2, min_time);
        printf("%-26s %8.1f %8.1f %6.0f%%", s->name, g1, g2, peak2 > 0 ? 100.0 * g2 / peak2 : 0.0);
        if (ob_sgemm) {
            double o1 = time_shape(1, s, &m, 1, min_time), o2 = time_shape(1, s, &m, 2, min_time);
            printf(" %8.1f %8.1f %7.2f", o1, o2, g2 / o2);
        }
        printf("  %s\n", t);
        fflush(stdout);
        free(m.A);
        free(m.B);
        free(m.C);
    }
    return 0;
}
