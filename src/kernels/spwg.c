/* The zero-skipping weight-gradient product (spwg.h): the driver, the
 * per-call choice and the scalar kernel. The AVX-512 parts are in
 * spwg_avx512.c.
 *
 * AVX-512, per call:
 *   1. count nnz(B) and choose (et_spwg_pays); dense data goes back to
 *      et_sgemm having cost one read of B;
 *   2. list each row of B: its non-zero k ascending, values, where each KC
 *      block starts; mark the 16-column groups of k with any non-zero;
 *   3. transpose those groups of A into AT (K x Mp, Mp = M rounded up to 16):
 *      the listed k's column of A becomes one contiguous row (ta: A stored
 *      K x M is AT already, nothing to do);
 *   4. per tile of 16..128 rows i x 16 columns j of C and per KC block: sum
 *      AT[k][i..] * B[j][k] over column j's listed k in registers, transpose
 *      the tile's sums 16 x 16 in registers and add them to C's rows as the
 *      micro-kernel stores (beta*C + sum in the first block, then C + sum).
 * Threads (outside a parallel region) split every step over disjoint parts
 * of the output, each element summed by one thread in the one order: the
 * same bits at any thread count. Inside one (conv's lanes) it runs serially
 * in the calling thread's buffer (core/tlbuf.h). */
#include "kernels/spwg.h"

#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/tlbuf.h"
#include "kernels/gemm_dot.h"
#include "kernels/gemm_internal.h"

#if ET_GEMM_HAVE_X86
uint64_t et_spwg_count_avx512(int j0, int j1, int K, const float *B, ptrdiff_t ldb);
void et_spwg_lists_avx512(int j0, int j1, int K, const float *B, ptrdiff_t ldb, int kc, int nblk, int32_t *idx,
                          float *val, ptrdiff_t ls, int32_t *bs, uint8_t *grp);
void et_spwg_transpose_avx512(int M, int Mp, int K, const float *A, ptrdiff_t lda, int g0, int g1, const uint8_t *grp,
                              float *AT, ptrdiff_t ldat);
void et_spwg_block_avx512(int nv, int mi, int j0, int nj, const float *AT, ptrdiff_t ldat, const int32_t *idx,
                          const float *val, ptrdiff_t ls, const int32_t *bs, int nblk, float beta, float *C,
                          ptrdiff_t ldc);
#endif

int et_spwg_pays(int N, double density) { return N > 0 && density <= ET_SPWG_DMAX - ET_SPWG_DMAX_N / N; }

static et_tlbuf wbuf; /* the calling thread's work buffer, grown on demand and kept */

static size_t al64(size_t b) { return (b + 63) & ~(size_t)63; }

/* ------------------------------------------------------------------ scalar */

static uint64_t count_c(int N, int K, const float *B, int ldb) {
    uint64_t n = 0;
    for (int j = 0; j < N; j++)
        for (int k = 0; k < K; k++) n += B[(ptrdiff_t)j * ldb + k] != 0.0f;
    return n;
}

static void lists_c(int j, int K, const float *B, int ldb, int kc, int nblk, int32_t *idx, float *val, ptrdiff_t ls,
                    int32_t *bs) {
    const float *b = B + (ptrdiff_t)j * ldb;
    int32_t *ix = idx + (ptrdiff_t)j * ls, *st = bs + (ptrdiff_t)j * (nblk + 1);
    float *vv = val + (ptrdiff_t)j * ls;
    int c = 0;
    for (int k = 0; k < K; k++) {
        if (k % kc == 0) st[k / kc] = c;
        if (b[k] != 0.0f) ix[c] = k, vv[c++] = b[k];
    }
    st[nblk] = c;
}

/* Column j of C in the scalar micro-kernel's order (gemm.c ukernel_scalar:
 * acc += a * b per step, then C = alpha*acc + beta*C with alpha = 1). */
static void column_c(int j, int M, const float *A, ptrdiff_t ars, ptrdiff_t aks, const int32_t *idx, const float *val, ptrdiff_t ls,
                     const int32_t *bs, int nblk, float beta, float *C, int ldc) {
    const int32_t *ix = idx + (ptrdiff_t)j * ls, *st = bs + (ptrdiff_t)j * (nblk + 1);
    const float *vv = val + (ptrdiff_t)j * ls;
    for (int i = 0; i < M; i++) {
        const float *a = A + (ptrdiff_t)i * ars;
        float *c = C + (ptrdiff_t)i * ldc + j;
        for (int b = 0; b < nblk; b++) {
            float acc = 0.0f;
            for (int t = st[b]; t < st[b + 1]; t++) acc += a[ix[t] * aks] * vv[t];
            const float be = b == 0 ? beta : 1.0f;
            *c = be == 0.0f ? 1.0f * acc : 1.0f * acc + be * *c;
        }
    }
}

double et_spwg_density(int N, int K, const float *B, int ldb) {
    if (N <= 0 || K <= 0) return 1.0;
    uint64_t n;
#if ET_GEMM_HAVE_X86
    if (et_cpu_isa() >= ET_ISA_AVX512)
        n = et_spwg_count_avx512(0, N, K, B, ldb);
    else
#endif
        n = count_c(N, K, B, ldb);
    return (double)n / ((double)N * (double)K);
}

/* ------------------------------------------------------------------ driver */

static int applies(const et_gemm_kinfo *ki, int ta, int M, int N, int K) {
    /* AVX2's micro-kernel is not reproduced here; the dot path sums in another order */
    return M > 0 && N > 0 && K > 0 && ki->isa != ET_ISA_AVX2 && !et_gemm_dot_fits(ta, 1, M, N, K) && ki->kc % 16 == 0;
}

int et_spwg_applies(int ta, int M, int N, int K) { return applies(et_gemm_kinfo_for(et_cpu_isa()), ta, M, N, K); }

int et_sgemm_spwg_isa(et_isa isa, int ta, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta,
                      float *C, int ldc, double dmax, uint64_t *macs_cpu) {
    const et_gemm_kinfo *ki = et_gemm_kinfo_for(isa);
    if (!applies(ki, ta, M, N, K) || !A || !B || !C) return 0;
    const int avx512 = ki->isa == ET_ISA_AVX512;
#if !ET_GEMM_HAVE_X86
    if (avx512) return 0;
#endif
    int T = et_get_threads();
#ifdef _OPENMP
    if (omp_in_parallel()) T = 1;
#endif
    if (T < 1) T = 1;
    const int par = T > 1 && (double)M * N * K > 4e6;
    /* 1. density */
    uint64_t nnz = 0;
#if ET_GEMM_HAVE_X86
    if (avx512) {
#pragma omp parallel for schedule(static) num_threads(T) if (par) reduction(+ : nnz)
        for (int q = 0; q < (N + 15) / 16; q++)
            nnz += et_spwg_count_avx512(q * 16, N - q * 16 < 16 ? N : q * 16 + 16, K, B, ldb);
    }
#endif
    if (!avx512) nnz = count_c(N, K, B, ldb);
    if ((double)nnz > dmax * (double)N * (double)K) return 0;

    const int kc = ki->kc, nblk = (K + kc - 1) / kc, ng = (K + 15) / 16, Mp = (M + 15) & ~15;
    const ptrdiff_t ls = (((ptrdiff_t)K + 15) & ~(ptrdiff_t)15) + 16;
    size_t o_val = al64(sizeof(int32_t) * (size_t)N * (size_t)ls);
    size_t o_bs = o_val + al64(sizeof(float) * (size_t)N * (size_t)ls);
    size_t o_grp = o_bs + al64(sizeof(int32_t) * (size_t)N * (size_t)(nblk + 1));
    size_t o_at = o_grp + al64((size_t)ng);
    size_t bytes = o_at + (avx512 && !ta ? al64(sizeof(float) * (size_t)K * (size_t)Mp) : 0);
    char *mem = et_tlbuf_get(&wbuf, bytes);
    if (!mem) return 0;
    int32_t *idx = (int32_t *)(void *)mem, *bs = (int32_t *)(void *)(mem + o_bs);
    float *val = (float *)(void *)(mem + o_val);
    uint8_t *grp = (uint8_t *)(mem + o_grp);

    if (!avx512) {
        for (int j = 0; j < N; j++) {
            lists_c(j, K, B, ldb, kc, nblk, idx, val, ls, bs);
            column_c(j, M, A, ta ? 1 : lda, ta ? lda : 1, idx, val, ls, bs, nblk, beta, C, ldc);
        }
        if (macs_cpu) *macs_cpu = nnz * (uint64_t)M;
        return 1;
    }
#if ET_GEMM_HAVE_X86
    /* A stored K x M is its own transpose */
    const float *AT = ta ? A : (const float *)(void *)(mem + o_at);
    const ptrdiff_t ldat = ta ? lda : Mp;
    memset(grp, 0, (size_t)ng);
    /* runs of 16-row vectors of C, as even as 8 vectors at most allow */
    const int nvec = Mp / 16, nrun = (nvec + 7) / 8, per = (nvec + nrun - 1) / nrun;
    const int nq = (N + 15) / 16;
#pragma omp parallel num_threads(T) if (par)
    {
        /* 2. lists (grp: marked with relaxed atomic stores, read after the barrier) */
#pragma omp for schedule(static)
        for (int q = 0; q < nq; q++)
            et_spwg_lists_avx512(q * 16, N - q * 16 < 16 ? N : q * 16 + 16, K, B, ldb, kc, nblk, idx, val, ls, bs,
                                 grp);
        /* 3. AT */
        if (!ta) {
#pragma omp for schedule(static)
            for (int g = 0; g < ng; g += 4)
                et_spwg_transpose_avx512(M, Mp, K, A, lda, g, ng - g < 4 ? ng : g + 4, grp, (float *)(void *)(mem + o_at),
                                         Mp);
        }
        /* 4. the tiles */
#pragma omp for schedule(static)
        for (int w = 0; w < nrun * nq; w++) {
            const int r = w / nq, q = w % nq, i0 = 16 * r * per, nv = nvec - r * per < per ? nvec - r * per : per;
            if (nv > 0)
                et_spwg_block_avx512(nv, M - i0, q * 16, N - q * 16 < 16 ? N - q * 16 : 16, AT + i0, ldat, idx, val,
                                     ls, bs, nblk, beta, C + (ptrdiff_t)i0 * ldc, ldc);
        }
    }
#endif
    if (macs_cpu) *macs_cpu = nnz * (uint64_t)M;
    return 1;
}

int et_sgemm_spwg(int ta, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc,
                  uint64_t *macs_cpu) {
    if (N <= 0 || !et_spwg_pays(N, 0.0)) return 0;
    return et_sgemm_spwg_isa(et_cpu_isa(), ta, M, N, K, A, lda, B, ldb, beta, C, ldc, ET_SPWG_DMAX - ET_SPWG_DMAX_N / N,
                             macs_cpu);
}
