/* The zero-skipping / output-masked GEMM (et_sgemm_sparse) against the dense
 * et_sgemm on the products of one VGG8 training step at batch 100 (conv FF,
 * EP, WG over one im2col chunk per layer, weighted by the layer's number of
 * chunks; linear FF, EP, WG), at activation densities 100/70/50/30/10 %.
 *
 * Zero patterns:
 *   random     every activation independently non-zero with probability d;
 *   clustered  per image and channel, a blob (an ellipse of area d*H*W around
 *              a jittered centre) is non-zero and the background zero: ReLU
 *              maps of a centred object, as on Fashion-MNIST.
 * Each layer's input and output activations follow the pattern; FF gets the
 * output's non-zero map as its mask (speculation), EP dY = the output pattern
 * with mask col != 0, WG dY and col (no mask), as in a `skip`/`speculate`
 * training step.
 *
 *   build/bench/bench_spgemm [--threads T] [--reps R] [--verbose]
 *
 * Per density and pattern: time of et_sgemm (dense), of et_sgemm_sparse
 * (skip_zeros + mask), their ratio, the time of the counting pass alone
 * (et_sgemm_sparse_count), the executed fractions macs_cpu/dense and
 * macs_elem/dense, per stage and in total, and the time of the matmul path's
 * per-call choice (et_sgemm_sparse_auto: count, then the skipping kernel or
 * the dense one plus the mask) with its ratio to dense. Times: best of R runs, each run
 * dense and sparse back to back; with --threads 1 the thread's CPU time.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "edgetrain.h"
#include "kernels/spgemm_internal.h"

static int T = 1, reps = 3, verbose;
static const char *only; /* --only NAME: just that product (profiling) */

static double now(void) {
    struct timespec ts;
    clock_gettime(T == 1 ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}


/* C maps of nb images of h x w (CNHW), non-zero per the pattern */
static void make_act(float *x, int C, int nb, int h, int w, double d, int clustered) {
    for (int c = 0; c < C; c++)
        for (int n = 0; n < nb; n++) {
            float *p = x + ((size_t)c * nb + n) * h * w;
            double cy = (h - 1) / 2.0 + (bench_unif() - 0.5) * h * 0.2;
            double cx = (w - 1) / 2.0 + (bench_unif() - 0.5) * w * 0.2;
            double asp = 0.75 + 0.5 * bench_unif();
            double area = d * h * w * (0.85 + 0.3 * bench_unif());
            double ry = sqrt(area / M_PI * asp), rx = sqrt(area / M_PI / asp);
            for (int y = 0; y < h; y++)
                for (int xx = 0; xx < w; xx++) {
                    int on;
                    if (d >= 1.0)
                        on = 1;
                    else if (!clustered)
                        on = bench_unif() < d;
                    else {
                        double u = (y - cy) / ry, v = (xx - cx) / rx;
                        on = u * u + v * v <= 1.0;
                    }
                    p[y * w + xx] = on ? (float)(0.05 + bench_unif()) : 0.0f;
                }
        }
}

/* 3x3, padding 1 im2col of x (C maps of nb x h x w) into col[C*9, nb*h*w] */
static void im2col(const float *x, int C, int nb, int h, int w, float *col) {
    size_t P = (size_t)nb * h * w;
    for (int c = 0; c < C; c++)
        for (int ky = 0; ky < 3; ky++)
            for (int kx = 0; kx < 3; kx++) {
                float *r = col + ((size_t)c * 9 + ky * 3 + kx) * P;
                for (int n = 0; n < nb; n++)
                    for (int y = 0; y < h; y++)
                        for (int xx = 0; xx < w; xx++) {
                            int sy = y + ky - 1, sx = xx + kx - 1;
                            *r++ = sy < 0 || sy >= h || sx < 0 || sx >= w
                                       ? 0.0f
                                       : x[(((size_t)c * nb + n) * h + sy) * w + sx];
                        }
            }
}

typedef struct prod {
    const char *name;
    int stage; /* 0 FF, 1 EP, 2 WG */
    int ta, tb, M, N, K;
    const float *A, *B;
    int lda, ldb;
    float beta;
    const uint8_t *mask; /* ldm = N */
    double weight;       /* how many times a step runs it (chunks) */
} prod;

#define MAXP 32
static prod P[MAXP];
static int np;
static float *bufs[256];
static int nbufs;

static void *keep(void *p) {
    if (!p) {
        fprintf(stderr, "bench_spgemm: out of memory\n");
        exit(1);
    }
    bufs[nbufs++] = p;
    return p;
}
static float *fl(size_t n) { return keep(malloc(n * sizeof(float))); }
static uint8_t *nzmask(const float *x, size_t n) {
    uint8_t *m = keep(malloc(n));
    for (size_t i = 0; i < n; i++) m[i] = x[i] != 0.0f;
    return m;
}
static float *weights(size_t n) {
    float *w = fl(n);
    for (size_t i = 0; i < n; i++) w[i] = (float)(bench_unif() - 0.5);
    return w;
}

static void add(const char *name, int stage, int ta, int tb, int M, int N, int K, const float *A,
                int lda, const float *B, int ldb, float beta, const uint8_t *mask, double wgt) {
    P[np++] = (prod){name, stage, ta, tb, M, N, K, A, B, lda, ldb, beta, mask, wgt};
}

/* VGG8 (models/vgg8.et) at batch 100: one chunk per conv layer (8 MB of im2col, as
 * src/nn/conv.c chunks), the linear layers whole. */
static void build(double d, int clustered) {
    static const int cv[6][4] = {{1, 32, 28, 28},  {32, 32, 28, 28}, {32, 64, 14, 14},
                                 {64, 64, 14, 14}, {64, 128, 7, 7},  {128, 128, 7, 7}};
    static const char *names[6][3] = {{"conv1 FF", "conv1 EP", "conv1 WG"}, {"conv2 FF", "conv2 EP", "conv2 WG"},
                                      {"conv3 FF", "conv3 EP", "conv3 WG"}, {"conv4 FF", "conv4 EP", "conv4 WG"},
                                      {"conv5 FF", "conv5 EP", "conv5 WG"}, {"conv6 FF", "conv6 EP", "conv6 WG"}};
    const int batch = 100;
    for (int l = 0; l < 6; l++) {
        int Cin = cv[l][0], Cout = cv[l][1], h = cv[l][2], w = cv[l][3], CK = Cin * 9;
        int nb = (int)(((size_t)1 << 21) / ((size_t)CK * h * w));
        if (nb < 1) nb = 1;
        if (nb > batch) nb = batch;
        double chunks = (double)batch / nb;
        int Pn = nb * h * w;
        /* the first layer's input is the image itself: dense where it is non-zero */
        float *x = fl((size_t)Cin * Pn), *col = fl((size_t)CK * Pn);
        make_act(x, Cin, nb, h, w, l == 0 ? (d < 1 ? 0.5 : 1.0) : d, l == 0 ? 1 : clustered);
        im2col(x, Cin, nb, h, w, col);
        float *y = fl((size_t)Cout * Pn);
        make_act(y, Cout, nb, h, w, d, clustered);
        uint8_t *ymask = nzmask(y, (size_t)Cout * Pn), *cmask = nzmask(col, (size_t)CK * Pn);
        float *W = weights((size_t)Cout * CK);
        add(names[l][0], 0, 0, 0, Cout, Pn, CK, W, CK, col, Pn, 0.0f, ymask, chunks);
        if (l > 0) /* the first weight layer has no EP */
            add(names[l][1], 1, 1, 0, CK, Pn, Cout, W, CK, y, Pn, 0.0f, cmask, chunks);
        add(names[l][2], 2, 0, 1, Cout, CK, Pn, y, Pn, col, Pn, 1.0f, NULL, chunks);
    }
    /* linear 1152 -> 256 and 256 -> 10 */
    static const int ln[2][2] = {{1152, 256}, {256, 10}};
    for (int l = 0; l < 2; l++) {
        int in = ln[l][0], out = ln[l][1];
        float *X = fl((size_t)batch * in), *Y = fl((size_t)batch * out);
        for (size_t i = 0; i < (size_t)batch * in; i++) X[i] = bench_unif() < d ? (float)(0.05 + bench_unif()) : 0.0f;
        for (size_t i = 0; i < (size_t)batch * out; i++)
            Y[i] = (l == 1 || bench_unif() < d) ? (float)(0.05 + bench_unif()) : 0.0f;
        uint8_t *xm = nzmask(X, (size_t)batch * in), *ym = l == 0 ? nzmask(Y, (size_t)batch * out) : NULL;
        float *W = weights((size_t)out * in);
        const char *nm[2][3] = {{"fc1 FF", "fc1 EP", "fc1 WG"}, {"fc2 FF", "fc2 EP", "fc2 WG"}};
        add(nm[l][0], 0, 0, 1, batch, out, in, X, in, W, in, 0.0f, ym, 1);
        add(nm[l][1], 1, 0, 0, batch, in, out, Y, out, W, in, 0.0f, xm, 1);
        add(nm[l][2], 2, 1, 0, out, in, batch, Y, out, X, in, 0.0f, NULL, 1);
    }
}

static void release(void) {
    for (int i = 0; i < nbufs; i++) free(bufs[i]);
    nbufs = 0;
    np = 0;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            T = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--verbose"))
            verbose = 1;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else {
            fprintf(stderr, "usage: bench_spgemm [--threads T] [--reps R] [--verbose] [--only \"conv2 FF\"]\n");
            return 2;
        }
    }
    if (T < 1 || reps < 1) {
        fprintf(stderr, "bench_spgemm: --threads and --reps must be >= 1\n");
        return 2;
    }
    et_set_threads(T);
    if (et_gemm_init(T) != ET_OK) {
        fprintf(stderr, "bench_spgemm: %s\n", et_last_error());
        return 1;
    }
    printf("bench_spgemm: VGG8 batch 100, threads %d, %s, best of %d, times in ms per step\n", T,
           et_gemm_kernel_name(), reps);
    printf("%-10s %-6s | %9s %9s %6s | %8s %6s | %7s %7s | %8s %6s\n", "pattern", "dens", "dense", "sparse",
           "ratio", "count", "cnt/sp", "cpu/dn", "elem/dn", "auto", "ratio");
    static const double dens[] = {1.0, 0.7, 0.5, 0.3, 0.1};
    float *C = NULL;
    size_t csz = 0;
    for (int pat = 0; pat < 2; pat++)
        for (size_t di = 0; di < sizeof dens / sizeof dens[0]; di++) {
            if (pat == 1 && dens[di] >= 1.0) continue;
            build(dens[di], pat);
            double td[3] = {0}, tsp[3] = {0}, tc[3] = {0}, tau[3] = {0}, mdense[3] = {0}, mcpu[3] = {0}, melem[3] = {0};
            for (int q = 0; q < np; q++) {
                const prod *p = &P[q];
                if (only && strcmp(only, p->name)) continue;
                size_t need = (size_t)p->M * p->N;
                if (need > csz) {
                    free(C);
                    C = malloc(need * sizeof(float));
                    if (!C) return 1;
                    csz = need;
                }
                double bd = 1e30, bs = 1e30, bc = 1e30, ba = 1e30;
                et_spgemm_count ca = {0, 0, 0};
                et_spgemm_stats st = {0, 0}, sc;
                memset(C, 0, need * sizeof(float));
                for (int r = 0; r < reps; r++) {
                    double t0 = now();
                    et_sgemm(p->ta, p->tb, p->M, p->N, p->K, 1.0f, p->A, p->lda, p->B, p->ldb, p->beta, C, p->N);
                    double t1 = now();
                    et_sgemm_sparse(p->ta, p->tb, p->M, p->N, p->K, p->A, p->lda, p->B, p->ldb, p->beta, C,
                                    p->N, 1, p->mask, p->N, &st);
                    double t2 = now();
                    et_sgemm_sparse_count(p->ta, p->tb, p->M, p->N, p->K, p->A, p->lda, p->B, p->ldb, 1,
                                          p->mask, p->N, &sc);
                    double t3 = now();
                    et_spgemm_stats sa;
                    et_sgemm_sparse_auto(p->ta, p->tb, p->M, p->N, p->K, p->A, p->lda, p->B, p->ldb, p->beta, C,
                                         p->N, 1, p->mask, p->N, &sa, &ca);
                    double t4 = now();
                    if (t4 - t3 < ba) ba = t4 - t3;
                    if (t1 - t0 < bd) bd = t1 - t0;
                    if (t2 - t1 < bs) bs = t2 - t1;
                    if (t3 - t2 < bc) bc = t3 - t2;
                }
                double dm = (double)p->M * p->N * p->K;
                int s = p->stage;
                td[s] += bd * p->weight;
                tsp[s] += bs * p->weight;
                tc[s] += bc * p->weight;
                tau[s] += ba * p->weight;
                mdense[s] += dm * p->weight;
                mcpu[s] += (double)st.macs_cpu * p->weight;
                melem[s] += (double)st.macs_elem * p->weight;
                if (verbose)
                    printf("  %-9s %4dx%5dx%5d x%5.2f  dense %8.3f sparse %8.3f ratio %5.2f count %7.3f  cpu %5.3f elem %5.3f  auto %8.3f live %5.3f\n",
                           p->name, p->M, p->N, p->K, p->weight, bd * 1e3, bs * 1e3, bd / bs, bc * 1e3,
                           st.macs_cpu / dm, st.macs_elem / dm, ba * 1e3, ca.live);
            }
            const char *stn[4] = {"FF", "EP", "WG", "all"};
            for (int s = 0; s < 4; s++) {
                double a = 0, b = 0, c = 0, d0 = 0, d1 = 0, d2 = 0, au = 0;
                for (int u = 0; u < 3; u++)
                    if (s == 3 || s == u) {
                        a += td[u], b += tsp[u], c += tc[u], d0 += mdense[u], d1 += mcpu[u], d2 += melem[u], au += tau[u];
                    }
                char lab[32];
                snprintf(lab, sizeof lab, "%s %s", pat ? "clustered" : "random", stn[s]);
                printf("%-13s %3.0f%% | %9.2f %9.2f %5.2fx | %8.2f %5.1f%% | %7.3f %7.3f | %8.2f %5.2fx\n", lab,
                       dens[di] * 100, a * 1e3, b * 1e3, a / b, c * 1e3, 100 * c / b, d1 / d0, d2 / d0, au * 1e3,
                       a / au);
            }
            release();
        }
    free(C);
    return 0;
}
