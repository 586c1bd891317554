/* The dot-product path of et_sgemm: driver, shape rule and the scalar kernel.
 * The summation order is defined in gemm_dot.h; every ISA follows it, so the
 * three kernels give the same bits.
 *
 * Threads split the blocks of C (never K); each thread walks K chunk by chunk
 * over all of its blocks, so a chunk of A's rows is reused from cache across
 * the blocks of B it meets. Running sums live in a buffer on the caller's
 * stack (M·N <= ET_DOT_MAX_MN floats). */
#include "kernels/gemm_dot.h"

#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ------------------------------------------------------------ scalar kernel */

void et_dot_kernel_scalar(int mb, int nb, int kc, const float *A, ptrdiff_t lda, const float *B,
                          ptrdiff_t ldb, float *out) {
    for (int r = 0; r < mb; r++)
        for (int c = 0; c < nb; c++) {
            const float *a = A + r * lda, *b = B + c * ldb;
            float acc[16];
            for (int l = 0; l < 16; l++) acc[l] = 0.0f;
            for (int p = 0; p < kc; p += 16)
                for (int l = 0; l < 16; l++) {
                    int in = p + l < kc;
                    acc[l] = fmaf(in ? a[p + l] : 0.0f, in ? b[p + l] : 0.0f, acc[l]);
                }
            for (int w = 8; w >= 1; w /= 2)
                for (int l = 0; l < w; l++) acc[l] = acc[l] + acc[l + w];
            out[r * ET_DOT_NB + c] = acc[0];
        }
}

/* ------------------------------------------------------------------ driver */

static et_dot_kernel pick_kernel(et_isa isa) {
    et_isa cpu = et_cpu_isa();
    if ((unsigned)isa > (unsigned)cpu) isa = cpu;
#if defined(__x86_64__) || defined(_M_X64)
    if (isa == ET_ISA_AVX512) return et_dot_kernel_avx512;
    if (isa == ET_ISA_AVX2) return et_dot_kernel_avx2;
#endif
    return et_dot_kernel_scalar;
}

/* Long K, small output, and a shape the packed path handles badly: one side
 * shorter than 16 (the packed path pads it to whole 8x48 tiles), or fewer
 * output elements than K / 16 (too few tiles to share between cores).
 * Measured with bench_gemm's convWG shapes. Symmetric in M and N, so a
 * product and its transpose (conv's two WG forms) take the same path and
 * give the same bits. */
int et_gemm_dot_fits(int ta, int tb, int M, int N, int K) {
    if (ta || !tb || M <= 0 || N <= 0) return 0;
    if ((long)M * N > ET_DOT_MAX_MN) return 0;
    if (K < 2048) return 0;
    return (M < N ? M : N) < 16 || (long)K >= 16L * M * N;
}

/* The blocks [b0, b1) of C (row-major over the block grid), all chunks. */
static void run_blocks(et_dot_kernel kern, int M, int N, int K, const float *A, ptrdiff_t lda,
                       const float *B, ptrdiff_t ldb, float *s, int b0, int b1) {
    const int nbj = (N + ET_DOT_NB - 1) / ET_DOT_NB;
    float out[ET_DOT_MB * ET_DOT_NB];
    for (int p0 = 0; p0 < K; p0 += ET_DOT_KCH) {
        int kc = K - p0 < ET_DOT_KCH ? K - p0 : ET_DOT_KCH;
        for (int b = b0; b < b1; b++) {
            int i0 = b / nbj * ET_DOT_MB, j0 = b % nbj * ET_DOT_NB;
            int mb = M - i0 < ET_DOT_MB ? M - i0 : ET_DOT_MB;
            int nb = N - j0 < ET_DOT_NB ? N - j0 : ET_DOT_NB;
            kern(mb, nb, kc, A + i0 * lda + p0, lda, B + j0 * ldb + p0, ldb, out);
            for (int r = 0; r < mb; r++)
                for (int c = 0; c < nb; c++) {
                    float *sp = s + (ptrdiff_t)(i0 + r) * N + j0 + c;
                    *sp = p0 == 0 ? out[r * ET_DOT_NB + c] : *sp + out[r * ET_DOT_NB + c];
                }
        }
    }
}

void et_gemm_dot(et_isa isa, int M, int N, int K, float alpha, const float *A, ptrdiff_t lda,
                 const float *B, ptrdiff_t ldb, float beta, float *C, ptrdiff_t ldc, int threads) {
    if (M <= 0 || N <= 0 || K <= 0 || (long)M * N > ET_DOT_MAX_MN) return;
    et_dot_kernel kern = pick_kernel(isa);
    float s[ET_DOT_MAX_MN];
    const int nblocks = ((M + ET_DOT_MB - 1) / ET_DOT_MB) * ((N + ET_DOT_NB - 1) / ET_DOT_NB);
    int T = threads < 1 ? 1 : threads;
#ifdef _OPENMP
    if (omp_in_parallel()) T = 1;
#endif
    if (T > nblocks) T = nblocks;
    if ((double)M * N * K < 262144.0 * T) T = 1; /* too little work to share */
    if (T == 1) {
        run_blocks(kern, M, N, K, A, lda, B, ldb, s, 0, nblocks);
    } else {
#ifdef _OPENMP
#pragma omp parallel num_threads(T)
        {
            int t = omp_get_thread_num(), nt = omp_get_num_threads();
            int b0 = (int)((long)nblocks * t / nt), b1 = (int)((long)nblocks * (t + 1) / nt);
            run_blocks(kern, M, N, K, A, lda, B, ldb, s, b0, b1);
        }
#else
        run_blocks(kern, M, N, K, A, lda, B, ldb, s, 0, nblocks);
#endif
    }
    for (int i = 0; i < M; i++) {
        float *c = C + i * ldc;
        const float *si = s + (ptrdiff_t)i * N;
        if (beta == 0.0f)
            for (int j = 0; j < N; j++) c[j] = alpha * si[j];
        else
            for (int j = 0; j < N; j++) c[j] = fmaf(alpha, si[j], beta * c[j]);
    }
}
