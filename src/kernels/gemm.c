/* Packed, blocked FP32 GEMM (BLIS-style) with run-time ISA dispatch.
 *
 * Loop nest per thread region [m0,m1) x [n0,n1) of C:
 *   jc over N in NC blocks
 *     pc over K in KC blocks        (fixed from 0, never depends on threads)
 *       pack op(B)[pc, jc] into NR-wide panels            (thread-private)
 *       ic over M in MC blocks
 *         pack op(A)[ic, pc] into MR-tall panels          (thread-private)
 *         jr over NR panels, ir over MR panels: micro-kernel
 * The first K block applies beta (beta == 0: C never read), later ones add.
 * Threads split C into disjoint rectangles on the MR x NR tile grid, so each C
 * element is computed by one thread in one fixed order: results are
 * bit-identical for any thread count. K is never split.
 */
#include "core/amax.h"
#include "core/tlbuf.h"
#include "kernels/gemm_internal.h"
#include "kernels/gemm_dot.h"

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "edgetrain.h"

/* ------------------------------------------------------------ kernel table */

typedef et_gemm_kinfo kinfo; /* gemm_internal.h */

static void ukernel_scalar(int m, int n, int k, const float *a, ptrdiff_t ars, ptrdiff_t as,
                           const float *b, ptrdiff_t bs, float *c, ptrdiff_t ldc, float alpha,
                           float beta);

/* Cache blocking per ISA (L1 32-48 KiB, L2 >= 1 MiB per core assumed; the
 * AVX-512 values were measured on Zen 4: MC/KC/NC in 64..256/256..576/768..6144
 * all land within noise of these). KC also fixes the summation order. */
#define SCALAR_MC 128
#define SCALAR_KC 256
#define SCALAR_NC 1024
#define AVX2_MC 144
#define AVX2_KC 256
#define AVX2_NC 2048
#define AVX512_MC 128
#define AVX512_KC 384
#define AVX512_NC 1536
/* bounds for the stack buffers of the serial fallback */
#define MAX_MR 8
#define MAX_NR 48
#define MAX_KC 512
_Static_assert(ET_GEMM_SCALAR_MR <= MAX_MR && ET_GEMM_AVX2_MR <= MAX_MR &&
                   ET_GEMM_AVX512_MR <= MAX_MR,
               "MAX_MR");
_Static_assert(ET_GEMM_SCALAR_NR <= MAX_NR && ET_GEMM_AVX2_NR <= MAX_NR &&
                   ET_GEMM_AVX512_NR <= MAX_NR,
               "MAX_NR");
_Static_assert(SCALAR_KC <= MAX_KC && AVX2_KC <= MAX_KC && AVX512_KC <= MAX_KC, "MAX_KC");
_Static_assert(SCALAR_MC % ET_GEMM_SCALAR_MR == 0 && AVX2_MC % ET_GEMM_AVX2_MR == 0 &&
                   AVX512_MC % ET_GEMM_AVX512_MR == 0,
               "MC is a multiple of MR");
_Static_assert(SCALAR_NC % ET_GEMM_SCALAR_NR == 0 && AVX2_NC % ET_GEMM_AVX2_NR == 0 &&
                   AVX512_NC % ET_GEMM_AVX512_NR == 0,
               "NC is a multiple of NR");

static const kinfo kernels[3] = {
    [ET_ISA_SCALAR] = {ukernel_scalar, NULL, NULL, ET_GEMM_SCALAR_MR, ET_GEMM_SCALAR_NR,
                       ET_GEMM_SCALAR_NR, SCALAR_MC, SCALAR_KC, SCALAR_NC, "scalar 4x8", ET_ISA_SCALAR},
#if ET_GEMM_HAVE_X86
    [ET_ISA_AVX2] = {et_gemm_ukernel_avx2, NULL, NULL, ET_GEMM_AVX2_MR, ET_GEMM_AVX2_NR,
                     ET_GEMM_AVX2_NR, AVX2_MC, AVX2_KC, AVX2_NC, "avx2 6x16", ET_ISA_AVX2},
    [ET_ISA_AVX512] = {et_gemm_ukernel_avx512, et_gemm_packa_avx512, et_gemm_packb_avx512,
                       ET_GEMM_AVX512_MR, ET_GEMM_AVX512_NR, 16, AVX512_MC, AVX512_KC, AVX512_NC,
                       "avx512 8x48", ET_ISA_AVX512},
#endif
};

static const kinfo *pick(et_isa isa) {
    et_isa cpu = et_cpu_isa();
    if ((unsigned)isa > (unsigned)cpu) isa = cpu;
    while (isa > ET_ISA_SCALAR && !kernels[isa].kern) isa = (et_isa)(isa - 1);
    return &kernels[isa];
}

const et_gemm_kinfo *et_gemm_kinfo_for(et_isa isa) { return pick(isa); }

/* ------------------------------------------------------- scalar micro-kernel */

static void ukernel_scalar(int m, int n, int k, const float *a, ptrdiff_t ars, ptrdiff_t as,
                           const float *b, ptrdiff_t bs, float *c, ptrdiff_t ldc, float alpha,
                           float beta) {
    enum { MR = ET_GEMM_SCALAR_MR, NR = ET_GEMM_SCALAR_NR };
    float acc[MR][NR];
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NR; j++) acc[r][j] = 0.0f;
    for (int p = 0; p < k; p++) {
        for (int r = 0; r < MR; r++) {
            float ar = a[(r < m ? r : m - 1) * ars]; /* rows past m: not stored */
            for (int j = 0; j < NR; j++) acc[r][j] += ar * b[j];
        }
        a += as;
        b += bs;
    }
    for (int r = 0; r < m; r++) {
        float *cr = c + r * ldc;
        if (beta == 0.0f)
            for (int j = 0; j < n; j++) cr[j] = alpha * acc[r][j];
        else
            for (int j = 0; j < n; j++) cr[j] = alpha * acc[r][j] + beta * cr[j];
    }
}

/* ---------------------------------------------------------------- packing */

typedef struct args {
    int ta, tb, M, N, K;
    float alpha, beta;
    const float *A;
    ptrdiff_t lda;
    const float *B;
    ptrdiff_t ldb;
    float *C;
    ptrdiff_t ldc;
    const et_gemm_epi *epi; /* NULL: none */
} args;

/* op(A)[i0 .. i0+mb, p0 .. p0+kb] -> ceil(mb/mr) panels of kb x mr (zero-padded). */
static void pack_a(const args *g, const kinfo *ki, int i0, int mb, int p0, int kb,
                   float *restrict dst) {
    const int mr = ki->mr;
    for (int ir = 0; ir < mb; ir += mr) {
        int m = mb - ir < mr ? mb - ir : mr;
        float *d = dst + (size_t)ir * kb;
        if (ki->packa) {
            const float *a = g->ta ? g->A + (ptrdiff_t)p0 * g->lda : g->A + p0;
            ki->packa(g->ta, a, g->lda, i0 + ir, m, kb, d);
        } else if (!g->ta) {
            /* A is M x K: row i contiguous in p. */
            for (int r = 0; r < m; r++) {
                const float *s = g->A + (ptrdiff_t)(i0 + ir + r) * g->lda + p0;
                for (int p = 0; p < kb; p++) d[(size_t)p * mr + r] = s[p];
            }
            for (int r = m; r < mr; r++)
                for (int p = 0; p < kb; p++) d[(size_t)p * mr + r] = 0.0f;
        } else {
            /* A is K x M: row p contiguous in i. */
            const float *s = g->A + (ptrdiff_t)p0 * g->lda + i0 + ir;
            for (int p = 0; p < kb; p++) {
                const float *sp = s + (ptrdiff_t)p * g->lda;
                float *dp = d + (size_t)p * mr;
                int r = 0;
                for (; r < m; r++) dp[r] = sp[r];
                for (; r < mr; r++) dp[r] = 0.0f;
            }
        }
    }
}

static void packb_generic(int tb, const float *B, ptrdiff_t ldb, int p0, int kb, int j0, int n,
                          int nr, float *restrict d) {
    if (!tb) {
        const float *s = B + (ptrdiff_t)p0 * ldb + j0;
        for (int p = 0; p < kb; p++) {
            const float *sp = s + (ptrdiff_t)p * ldb;
            float *dp = d + (size_t)p * nr;
            int j = 0;
            for (; j < n; j++) dp[j] = sp[j];
            for (; j < nr; j++) dp[j] = 0.0f;
        }
    } else {
        /* B is N x K: column j of op(B) contiguous in p. */
        for (int j = 0; j < n; j++) {
            const float *s = B + (ptrdiff_t)(j0 + j) * ldb + p0;
            for (int p = 0; p < kb; p++) d[(size_t)p * nr + j] = s[p];
        }
        for (int j = n; j < nr; j++)
            for (int p = 0; p < kb; p++) d[(size_t)p * nr + j] = 0.0f;
    }
}

static void pack_b(const args *g, const kinfo *ki, int p0, int kb, int j0, int nb,
                   float *restrict dst) {
    if (ki->packb) {
        ki->packb(g->tb, g->B, g->ldb, p0, kb, j0, nb, dst);
        return;
    }
    for (int jr = 0; jr < nb; jr += ki->nr) {
        int n = nb - jr < ki->nr ? nb - jr : ki->nr;
        packb_generic(g->tb, g->B, g->ldb, p0, kb, j0 + jr, n, ki->nr, dst + (size_t)jr * kb);
    }
}

void et_gemm_pack_a(const et_gemm_kinfo *ki, int ta, const float *A, ptrdiff_t lda, int i0,
                    int mb, int p0, int kb, float *dst) {
    args g = {ta != 0, 0, 0, 0, 0, 1.0f, 0.0f, A, lda, NULL, 0, NULL, 0, NULL};
    pack_a(&g, ki, i0, mb, p0, kb, dst);
}

void et_gemm_pack_b(const et_gemm_kinfo *ki, int tb, const float *B, ptrdiff_t ldb, int p0,
                    int kb, int j0, int nb, float *dst) {
    args g = {0, tb != 0, 0, 0, 0, 1.0f, 0.0f, NULL, 0, B, ldb, NULL, 0, NULL};
    pack_b(&g, ki, p0, kb, j0, nb, dst);
}

/* ------------------------------------------------------------ epilogue */

/* Written as the separate passes would be (an add, then a select), so the
 * compiler's vectorised code computes the same values. */
void et_gemm_epi_apply(const et_gemm_epi *epi, int r0, int M, int N, float *C, ptrdiff_t ldc) {
    if (!epi) return;
#if ET_GEMM_HAVE_X86
    if (et_cpu_isa() >= ET_ISA_AVX512) {
        et_gemm_epi_apply_avx512(epi, r0, M, N, C, ldc);
        return;
    }
#endif
    for (int r = 0; r < M; r++) {
        float *restrict c = C + (ptrdiff_t)r * ldc;
        if (epi->row_bias) {
            const float b = epi->row_bias[r0 + r];
            for (int j = 0; j < N; j++) c[j] += b;
        }
        if (epi->relu)
            for (int j = 0; j < N; j++) c[j] = c[j] > 0.0f ? c[j] : 0.0f;
        if (epi->mask) {
            const uint8_t *restrict m = epi->mask + (c - epi->c0);
            for (int j = 0; j < N; j++) c[j] = m[j] ? c[j] : 0.0f;
        }
        if (epi->amax) {
            float a = 0.0f;
            for (int j = 0; j < N; j++) {
                const float v = fabsf(c[j]);
                a = v > a ? v : a; /* NaN never wins */
            }
            et_amax_merge(epi->amax, a);
        }
    }
}

/* ------------------------------------------------------------ the driver */

static void prefetch_panel(const float *b, int kb, ptrdiff_t bs, int nr) {
    for (int p = 0; p < kb; p++, b += bs)
        for (int j = 0; j < nr; j += 16) __builtin_prefetch(b + j, 0, 2);
}

/* One thread's rectangle of C. Ap holds mc*kc floats, Bp kc*nc floats.
 * Packing pays for itself through reuse; where there is none it is skipped:
 *  - op(B) row-major (tb == 0) and the rectangle one MC block tall: each B
 *    panel serves one pass over the rows, so the micro-kernel reads B in
 *    place (only a last panel of odd width is packed);
 *  - the rectangle at most two panels wide: each A panel serves at most two
 *    micro-kernel calls, so A is read in place too.
 * The arithmetic is the same either way. */
static void gemm_region(const args *g, const kinfo *ki, int mc, int nc, int m0, int m1, int n0,
                        int n1, float *Ap, float *Bp) {
    const int mr = ki->mr, nr = ki->nr, kc = ki->kc;
    const int direct_b = !g->tb && m1 - m0 <= mc;
    const int direct_a = n1 - n0 <= 2 * nr;
    for (int jc = n0; jc < n1; jc += nc) {
        int nb = n1 - jc < nc ? n1 - jc : nc;
        for (int pc = 0; pc < g->K; pc += kc) {
            int kb = g->K - pc < kc ? g->K - pc : kc;
            float beta = pc == 0 ? g->beta : 1.0f;
            if (!direct_b) pack_b(g, ki, pc, kb, jc, nb, Bp);
            for (int ic = m0; ic < m1; ic += mc) {
                int mb = m1 - ic < mc ? m1 - ic : mc;
                const float *ap = Ap;
                ptrdiff_t ars = 1, as = mr, ap_step = kb; /* A panel ir at ap + ir*ap_step */
                if (!direct_a) {
                    pack_a(g, ki, ic, mb, pc, kb, Ap);
                } else if (!g->ta) {
                    ap = g->A + (ptrdiff_t)ic * g->lda + pc;
                    ars = g->lda, as = 1, ap_step = g->lda;
                } else {
                    ap = g->A + (ptrdiff_t)pc * g->lda + ic;
                    ars = 1, as = g->lda, ap_step = 1;
                }
                for (int jr = 0; jr < nb; jr += nr) {
                    int n = nb - jr < nr ? nb - jr : nr;
                    const float *bp = Bp + (size_t)jr * kb;
                    ptrdiff_t bs = nr;
                    if (direct_b && n % ki->bw == 0) {
                        bp = g->B + (ptrdiff_t)pc * g->ldb + jc + jr;
                        bs = g->ldb;
                        /* B comes from memory in short strided pieces the
                         * hardware prefetchers miss: fetch the panel two
                         * ahead into L2 while this one is computed. */
                        if (ic == m0 && jr + 3 * nr <= nb) prefetch_panel(bp + 2 * nr, kb, bs, nr);
                    } else if (direct_b) {
                        pack_b(g, ki, pc, kb, jc + jr, n, Bp);
                        bp = Bp;
                    }
                    for (int ir = 0; ir < mb; ir += mr) {
                        int m = mb - ir < mr ? mb - ir : mr;
                        float *ct = g->C + (ptrdiff_t)(ic + ir) * g->ldc + jc + jr;
                        ki->kern(m, n, kb, ap + ir * ap_step, ars, as, bp, bs, ct, g->ldc, g->alpha, beta);
                        /* the tile is final after the last K block: its epilogue while in L1 */
                        if (g->epi && pc + kb == g->K) et_gemm_epi_apply(g->epi, ic + ir, m, n, ct, g->ldc);
                    }
                }
            }
        }
    }
}

/* C = beta * C (K == 0 or alpha == 0). */
static void scale_c(const args *g) {
    for (int i = 0; i < g->M; i++) {
        float *c = g->C + (ptrdiff_t)i * g->ldc;
        if (g->beta == 0.0f)
            memset(c, 0, sizeof(float) * (size_t)g->N);
        else if (g->beta != 1.0f)
            for (int j = 0; j < g->N; j++) c[j] *= g->beta;
    }
}

/* ------------------------------------------------------ per-thread buffers */

static size_t ws_mc_kc, ws_kc_nc; /* floats per thread for A and B blocks */
static int ws_threads;
static float *ws_mem;
static atomic_flag ws_busy = ATOMIC_FLAG_INIT;

static void ws_sizes(void) {
    size_t a = 0, b = 0;
    for (int i = 0; i < 3; i++) {
        const kinfo *k = &kernels[i];
        if (!k->kern) continue;
        if ((size_t)k->mc * k->kc > a) a = (size_t)k->mc * k->kc;
        if ((size_t)k->kc * k->nc > b) b = (size_t)k->kc * k->nc;
    }
    /* round to whole cache lines so every block starts 64-byte aligned */
    ws_mc_kc = (a + 15) & ~(size_t)15;
    ws_kc_nc = (b + 15) & ~(size_t)15;
}

static void lock_ws(void) {
    while (atomic_flag_test_and_set_explicit(&ws_busy, memory_order_acquire)) {
    }
}
static void unlock_ws(void) { atomic_flag_clear_explicit(&ws_busy, memory_order_release); }

/* Caller holds the lock. */
static et_status ws_grow(int max_threads) {
    if (max_threads < 1) max_threads = 1;
    if (ws_mem && ws_threads >= max_threads) return ET_OK;
    ws_sizes();
    size_t per = ws_mc_kc + ws_kc_nc;
    size_t bytes = per * sizeof(float) * (size_t)max_threads;
    float *mem = aligned_alloc(64, bytes);
    if (!mem) return et_set_error(ET_ERR_NOMEM, "gemm: cannot allocate %zu bytes of workspace", bytes);
    free(ws_mem);
    ws_mem = mem;
    ws_threads = max_threads;
    return ET_OK;
}

/* Calls from inside a parallel region (each thread of the region running its
 * own products, e.g. conv's two lanes) block and pack like a top-level call,
 * in a buffer of the calling thread: allocated by et_gemm_init for the
 * threads of the OpenMP team, never inside the training loop. Without one
 * (a thread et_gemm_init did not see) they fall back to small stack panels. */
static et_tlbuf tl_buf;

static void tl_alloc(void) { et_tlbuf_get(&tl_buf, (ws_mc_kc + ws_kc_nc) * sizeof(float)); }

et_status et_gemm_init(int max_threads) {
    lock_ws();
    et_status st = ws_grow(max_threads);
    unlock_ws();
#ifdef _OPENMP
    if (!st && !omp_in_parallel()) {
        int T = max_threads > 1 ? max_threads : 1;
#pragma omp parallel num_threads(T)
        tl_alloc();
    }
#endif
    return st;
}

/* What et_gemm_init reserves for a team of ws_threads threads: the shared
 * blocks and one buffer per team thread. Not et_tlbuf_total: the buffers of
 * an earlier team's threads are freed when those threads exit, which libgomp
 * lets happen after their master has gone on, so a live total depends on
 * timing (a memory plan read it 2.5 MB high on a CI machine). */
size_t et_gemm_workspace_bytes(void) {
    return ws_mem ? (ws_mc_kc + ws_kc_nc) * sizeof(float) * 2 * (size_t)ws_threads : 0;
}

const char *et_gemm_kernel_name(void) { return pick(et_cpu_isa())->name; }

/* -------------------------------------------------------- thread partition */

/* Below this many multiply-adds per thread, extra threads cost more than they
 * save. Only the speed depends on it. */
#define MIN_MACS_PER_THREAD (1 << 18)

typedef struct part {
    int tm, tn; /* thread grid: tm row groups x tn column groups */
} part;

/* Threads' column ranges start on multiples of the narrowest tile (bw), not
 * of NR: N = 256 on 2 threads splits 128 + 128 (48+48+32 each) instead of
 * 144 + 112. Each element's sum is the same whatever tile computes it. */
static part choose_part(const args *g, const kinfo *ki, int T) {
    int mt = (g->M + ki->mr - 1) / ki->mr, nt = (g->N + ki->bw - 1) / ki->bw;
    double macs = (double)g->M * g->N * g->K;
    int want = (int)(macs / MIN_MACS_PER_THREAD);
    if (want < T) T = want < 1 ? 1 : want;
    part best = {1, 1};
    double best_cost = -1;
    for (int tm = 1; tm <= T; tm++) {
        for (int tn = 1; tm * tn <= T; tn++) {
            if (tm > mt || tn > nt) continue;
            int rm = (mt + tm - 1) / tm, rn = (nt + tn - 1) / tn; /* row tiles, column granules per thread */
            /* compute of the largest rectangle + its packing (A rows and B columns,
             * counted at a fraction of a micro-kernel's rate) */
            double cost = (double)rm * ki->mr * rn * ki->bw + 4.0 * (rm * ki->mr + rn * ki->bw);
            if (best_cost < 0 || cost < best_cost - 1e-9) {
                best_cost = cost;
                best.tm = tm;
                best.tn = tn;
            }
        }
    }
    return best;
}

void et_gemm_partition(const et_gemm_kinfo *ki, int M, int N, int K, int T, int *tm, int *tn) {
    args g = {0, 0, M, N, K, 1.0f, 0.0f, NULL, 0, NULL, 0, NULL, 0, NULL};
    part p = choose_part(&g, ki, T);
    *tm = p.tm;
    *tn = p.tn;
}

/* Range of tiles [lo, hi) of group `i` out of `n` over `tiles` tiles, in elements. */
static void split(int tiles, int n, int i, int t, int size, int *lo, int *hi) {
    int a = (int)((long)tiles * i / n), b = (int)((long)tiles * (i + 1) / n);
    *lo = a * t;
    *hi = b * t < size ? b * t : size;
}

static void run(const args *g, const kinfo *ki) {
    if (g->M <= 0 || g->N <= 0) return;
    if (g->K <= 0 || g->alpha == 0.0f) {
        scale_c(g);
        et_gemm_epi_apply(g->epi, 0, g->M, g->N, g->C, g->ldc);
        return;
    }
    int nested = 0;
#ifdef _OPENMP
    nested = omp_in_parallel();
#endif
    if (nested || atomic_flag_test_and_set_explicit(&ws_busy, memory_order_acquire)) {
        /* Called from inside a parallel region or concurrently with another
         * call: compute serially, in the thread's own buffer or in small stack
         * panels. Same KC and kernel, hence the same results. */
        float *tm = et_tlbuf_peek(&tl_buf, NULL);
        if (tm) {
            gemm_region(g, ki, ki->mc, ki->nc, 0, g->M, 0, g->N, tm, tm + ws_mc_kc);
            return;
        }
        float Ap[MAX_MR * MAX_KC] __attribute__((aligned(64)));
        float Bp[MAX_KC * MAX_NR] __attribute__((aligned(64)));
        gemm_region(g, ki, ki->mr, ki->nr, 0, g->M, 0, g->N, Ap, Bp);
        return;
    }
    int T = et_get_threads();
    if (T < 1) T = 1;
    if (!ws_mem || ws_threads < T) {
#ifdef _OPENMP
        int np = omp_get_num_procs();
#else
        int np = 1;
#endif
        if (ws_grow(T > np ? T : np) != ET_OK && !ws_mem) {
            unlock_ws();
            float Ap[MAX_MR * MAX_KC] __attribute__((aligned(64)));
            float Bp[MAX_KC * MAX_NR] __attribute__((aligned(64)));
            gemm_region(g, ki, ki->mr, ki->nr, 0, g->M, 0, g->N, Ap, Bp);
            return;
        }
    }
    if (T > ws_threads) T = ws_threads;
    int mt = (g->M + ki->mr - 1) / ki->mr, nt = (g->N + ki->bw - 1) / ki->bw;
    part pt = choose_part(g, ki, T);
    int nreg = pt.tm * pt.tn;
    float *mem = ws_mem;
    size_t per = ws_mc_kc + ws_kc_nc;
    if (nreg == 1) {
        gemm_region(g, ki, ki->mc, ki->nc, 0, g->M, 0, g->N, mem, mem + ws_mc_kc);
    } else {
#ifdef _OPENMP
#pragma omp parallel num_threads(nreg)
        {
            int tid = omp_get_thread_num(), nth = omp_get_num_threads();
            float *Ap = mem + per * (size_t)tid, *Bp = Ap + ws_mc_kc;
            for (int r = tid; r < nreg; r += nth) {
                int m0, m1, n0, n1;
                split(mt, pt.tm, r / pt.tn, ki->mr, g->M, &m0, &m1);
                split(nt, pt.tn, r % pt.tn, ki->bw, g->N, &n0, &n1);
                if (m0 < m1 && n0 < n1) gemm_region(g, ki, ki->mc, ki->nc, m0, m1, n0, n1, Ap, Bp);
            }
        }
#else
        (void)per;
        gemm_region(g, ki, ki->mc, ki->nc, 0, g->M, 0, g->N, mem, mem + ws_mc_kc);
#endif
    }
    unlock_ws();
}

static void sgemm(const kinfo *ki, int ta, int tb, int M, int N, int K, float alpha,
                  const float *A, int lda, const float *B, int ldb, float beta, float *C,
                  int ldc, const et_gemm_epi *epi) {
    if (epi && !epi->row_bias && !epi->relu && !epi->mask && !epi->amax) epi = NULL;
    if (K > 0 && alpha != 0.0f && et_gemm_dot_fits(ta, tb, M, N, K)) {
        et_gemm_dot(ki->isa, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, et_get_threads());
        if (M > 0 && N > 0) et_gemm_epi_apply(epi, 0, M, N, C, ldc);
        return;
    }
    args g = {ta != 0, tb != 0, M, N, K, alpha, beta, A, lda, B, ldb, C, ldc, epi};
    run(&g, ki);
}

void et_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    sgemm(pick(et_cpu_isa()), ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, NULL);
}

void et_sgemm_isa(et_isa isa, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                  int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    sgemm(pick(isa), ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, NULL);
}

void et_sgemm_epi(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc, const et_gemm_epi *epi) {
    sgemm(pick(et_cpu_isa()), ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, epi);
}

void et_sgemm_epi_isa(et_isa isa, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                      int lda, const float *B, int ldb, float beta, float *C, int ldc,
                      const et_gemm_epi *epi) {
    sgemm(pick(isa), ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, epi);
}

/* ------------------------------------------------- implicit im2col (conv FF)
 *
 * et_sgemm_convb (gemm_internal.h): et_sgemm's blocks and micro-kernel,
 * with each NR-column panel of a K block of B packed from x by
 * et_convb_packb_avx512 (the steps' offsets and taps listed once per call,
 * the taps' masks once per panel) and used by all row panels of A. */

int et_sgemm_convb_ok(const et_gemm_convb *cb) {
#if ET_GEMM_HAVE_X86
    return pick(et_cpu_isa())->isa == ET_ISA_AVX512 && cb->KH % 2 && cb->KW % 2 && cb->KH <= cb->H &&
           cb->KW <= cb->W && cb->KH * cb->KW <= ET_CONVB_MAXTAPS && (int64_t)cb->H * cb->W < (1 << 24);
#else
    (void)cb;
    return 0;
#endif
}

#if ET_GEMM_HAVE_X86
typedef struct cargs {
    int M, N, K;
    const float *A;
    ptrdiff_t lda;
    const et_gemm_convb *cb;
    float beta;
    float *C;
    ptrdiff_t ldc;
    const et_gemm_epi *epi;
} cargs;

/* bits [lo, hi) of a multi-word bitset */
static void set_bits(uint64_t *w, int lo, int hi) {
    for (int i = lo; i < hi;) {
        const int b = i & 63, e = hi - i < 64 - b ? hi - i : 64 - b;
        w[i >> 6] |= (e == 64 ? ~(uint64_t)0 : (((uint64_t)1 << e) - 1)) << b;
        i += e;
    }
}

/* Which columns [j0, j0 + n) (those < N) each tap reads inside its image:
 * bit l of out[t * words ..] for column j0 + l, t = ky * KW + kx; words >=
 * ceil(n / 64). Built per run of columns in one image row: the columns whose
 * input row is inside for a ky and whose input column is inside for a kx,
 * then tap = ky's & kx's. */
static void tap_bits(const et_gemm_convb *cb, int N, int j0, int n, int words, uint64_t *out) {
    enum { MAXW = (MAX_KC + 63) / 64 };
    const int H = cb->H, W = cb->W, HW = H * W, PH = cb->KH / 2, PW = cb->KW / 2;
    uint64_t rows[ET_CONVB_MAXTAPS][MAXW], cols[ET_CONVB_MAXTAPS][MAXW];
    for (int i = 0; i < cb->KH; i++) memset(rows[i], 0, sizeof(uint64_t) * (size_t)words);
    for (int i = 0; i < cb->KW; i++) memset(cols[i], 0, sizeof(uint64_t) * (size_t)words);
    const int lim = N - j0 < n ? N - j0 : n;
    int pix = j0 % HW, y = pix / W, xx = pix % W;
    for (int l = 0; l < lim;) {
        const int len = W - xx < lim - l ? W - xx : lim - l;
        for (int ky = 0; ky < cb->KH; ky++)
            if ((unsigned)(y + ky - PH) < (unsigned)H) set_bits(rows[ky], l, l + len);
        for (int kx = 0; kx < cb->KW; kx++) { /* inside: PW - kx <= xx' < W + PW - kx */
            const int a = PW - kx > xx ? PW - kx : xx, e = W + PW - kx < xx + len ? W + PW - kx : xx + len;
            if (e > a) set_bits(cols[kx], l + a - xx, l + e - xx);
        }
        l += len, xx = 0;
        if (++y == H) y = 0;
    }
    for (int ky = 0, t = 0; ky < cb->KH; ky++)
        for (int kx = 0; kx < cb->KW; kx++, t++)
            for (int w = 0; w < words; w++) out[t * words + w] = rows[ky][w] & cols[kx][w];
}

/* the taps' masks of a panel of n <= NR columns: tm[3*t + v] = columns
 * j0 + 16v .. j0 + 16v + 15 */
static void convb_masks(const et_gemm_convb *cb, int N, int j0, int n, uint16_t *tm) {
    uint64_t b[ET_CONVB_MAXTAPS];
    tap_bits(cb, N, j0, n, 1, b);
    for (int t = 0; t < cb->KH * cb->KW; t++)
        tm[3 * t] = (uint16_t)b[t], tm[3 * t + 1] = (uint16_t)(b[t] >> 16), tm[3 * t + 2] = (uint16_t)(b[t] >> 32);
}

/* floats of a region's buffer: all of A packed (MR-row panels per K block),
 * then per K step its offset in x and its tap, then a B panel */
static size_t convb_floats(const cargs *g, const kinfo *ki) {
    return (size_t)((g->M + ki->mr - 1) / ki->mr * ki->mr) * (size_t)g->K + 2 * (size_t)g->K + (size_t)ki->kc * ki->nr + 32;
}

/* Columns [n0, n1): A packed once and the K steps' offsets and taps listed
 * once, then per panel of NR columns its taps' masks and its K blocks, each
 * packed and run over all row panels (the order of K blocks per element is
 * et_sgemm's: first beta, then += each block). */
static void convb_region(const cargs *g, const kinfo *ki, int n0, int n1, float *buf) {
    const int mr = ki->mr, nr = ki->nr, kc = ki->kc, M = g->M, K = g->K;
    const size_t mp = (size_t)(M + mr - 1) / mr * mr;
    const et_gemm_convb *cb = g->cb;
    const int taps = cb->KH * cb->KW, W = cb->W, PH = cb->KH / 2, PW = cb->KW / 2;
    et_convb_step *ks = (et_convb_step *)(void *)(buf + mp * (size_t)K);
    float *bp = (float *)(((uintptr_t)(buf + mp * (size_t)K + 2 * (size_t)K) + 63) & ~(uintptr_t)63);
    uint16_t tm[3 * ET_CONVB_MAXTAPS];
    for (int pc = 0; pc < K; pc += kc) {
        const int kb = K - pc < kc ? K - pc : kc;
        et_gemm_pack_a(ki, 0, g->A, g->lda, 0, M, pc, kb, buf + mp * (size_t)pc);
    }
    for (int k = 0; k < K; k++) {
        const int ci = k / taps, t = k % taps, ky = t / cb->KW, kx = t % cb->KW;
        ks[k].off = (int32_t)(ci * cb->cstride + (ptrdiff_t)(ky - PH) * W + (kx - PW));
        ks[k].tap = 3 * t;
    }
    for (int jr = n0; jr < n1; jr += nr) {
        const int n = n1 - jr < nr ? n1 - jr : nr;
        convb_masks(cb, g->N, jr, n, tm);
        for (int pc = 0; pc < K; pc += kc) {
            const int kb = K - pc < kc ? K - pc : kc;
            const float beta = pc == 0 ? g->beta : 1.0f;
            const float *ap = buf + mp * (size_t)pc;
            et_convb_packb_avx512(kb, cb->x + jr, ks + pc, tm, bp);
            for (int ir = 0; ir < M; ir += mr) {
                const int m = M - ir < mr ? M - ir : mr;
                float *ct = g->C + (ptrdiff_t)ir * g->ldc + jr;
                ki->kern(m, n, kb, ap + (size_t)ir * kb, 1, mr, bp, nr, ct, g->ldc, 1.0f, beta);
                if (g->epi && pc + kb == K) et_gemm_epi_apply(g->epi, ir, m, n, ct, g->ldc);
            }
        }
    }
}

/* without a large enough workspace of the calling thread: a buffer of its own */
static void convb_alone(const cargs *g, const kinfo *ki, int n0, int n1) {
    float *buf = malloc(sizeof(float) * convb_floats(g, ki));
    if (!buf) return; /* cannot happen for the sizes conv asks; C left as it was */
    convb_region(g, ki, n0, n1, buf);
    free(buf);
}
#endif

int et_sgemm_convb_fits(int M, int K) {
#if ET_GEMM_HAVE_X86
    if (!ws_mc_kc) ws_sizes();
    const kinfo *ki = pick(et_cpu_isa());
    const cargs g = {M, 0, K, NULL, 0, NULL, 0.0f, NULL, 0, NULL};
    return ki->isa == ET_ISA_AVX512 && convb_floats(&g, ki) <= ws_mc_kc + ws_kc_nc;
#else
    (void)M, (void)K;
    return 0;
#endif
}

/* The threads of an implicit-conv product that owns the shared workspace:
 * the caller's count, as many as the workspace holds, one for small products,
 * at most one per tile of the split. */
static int conv_team(int M, int N, int K, int tiles) {
    int T = et_get_threads();
    if (T < 1) T = 1;
    if ((!ws_mem || ws_threads < T) && ws_grow(T) != ET_OK) T = ws_threads;
    if (T > ws_threads) T = ws_threads;
    if ((double)M * N * K < (double)MIN_MACS_PER_THREAD * 2) T = 1;
    return T > tiles ? tiles : T;
}

void et_sgemm_convb(int M, int N, int K, const float *A, int lda, const et_gemm_convb *cb, float beta, float *C,
                    int ldc, const et_gemm_epi *epi) {
#if ET_GEMM_HAVE_X86
    const kinfo *ki = pick(et_cpu_isa());
    if (epi && !epi->row_bias && !epi->relu && !epi->mask && !epi->amax) epi = NULL;
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || ki->isa != ET_ISA_AVX512 || (int64_t)K * cb->cstride >= ((int64_t)1 << 31)) {
        /* never for the convolutions it serves; kept correct: the column
         * matrix is only needed then */
        float *col = malloc(sizeof(float) * ((size_t)K * N + 1));
        if (!col) return;
        const int taps = cb->KH * cb->KW, HW = cb->H * cb->W;
        for (int k = 0; k < K; k++) {
            int ci = k / taps, t = k % taps, dy = t / cb->KW - cb->KH / 2, dx = t % cb->KW - cb->KW / 2;
            for (int j = 0; j < N; j++) {
                int pix = j % HW, y = pix / cb->W + dy, xx = pix % cb->W + dx;
                col[(size_t)k * N + j] = (unsigned)y < (unsigned)cb->H && (unsigned)xx < (unsigned)cb->W
                                             ? cb->x[ci * cb->cstride + j + (ptrdiff_t)dy * cb->W + dx]
                                             : 0.0f;
            }
        }
        sgemm(ki, 0, 0, M, N, K, 1.0f, A, lda, col, N, beta, C, ldc, epi);
        free(col);
        return;
    }
    cargs g = {M, N, K, A, lda, cb, beta, C, ldc, epi};
    const size_t need = convb_floats(&g, ki);
    int nested = 0;
#ifdef _OPENMP
    nested = omp_in_parallel();
#endif
    if (nested) {
        size_t have = 0;
        float *tb = et_tlbuf_peek(&tl_buf, &have);
        if (tb && have >= need * sizeof(float))
            convb_region(&g, ki, 0, N, tb);
        else
            convb_alone(&g, ki, 0, N);
        return;
    }
    if (atomic_flag_test_and_set_explicit(&ws_busy, memory_order_acquire)) {
        convb_alone(&g, ki, 0, N);
        return;
    }
    const int tiles = (N + 15) / 16; /* columns split on multiples of 16: any split gives the same bits */
    int T = conv_team(M, N, K, tiles);
#ifndef _OPENMP
    T = 1;
#endif
    const size_t per = ws_mc_kc + ws_kc_nc;
    if (!ws_mem || per < need) {
        unlock_ws();
        convb_alone(&g, ki, 0, N); /* T == 1 there: a buffer larger than the workspace is rare */
        return;
    }
    if (T <= 1) {
        convb_region(&g, ki, 0, N, ws_mem);
    } else {
#ifdef _OPENMP
#pragma omp parallel num_threads(T)
        {
            int t = omp_get_thread_num(), nt = omp_get_num_threads(), lo, hi;
            for (int r = t; r < T; r += nt) {
                split(tiles, T, r, 16, N, &lo, &hi);
                if (lo < hi) convb_region(&g, ki, lo, hi, ws_mem + per * (size_t)t);
            }
        }
#endif
    }
    unlock_ws();
#else
    (void)M, (void)N, (void)K, (void)A, (void)lda, (void)cb, (void)beta, (void)C, (void)ldc, (void)epi;
#endif
}

/* --------------------------------------- implicit im2col (conv WG, A side)
 *
 * et_sgemm_convA (gemm_internal.h): gemm_region's loop nest for op(B) = Bᵀ
 * (always packed) with A's MR-row panels copied from x, row-major, by
 * et_convA_packa_avx512 and read in place by the micro-kernel (as
 * gemm_region reads a row-major A at most two panels wide; in place or
 * packed, the values and the order are the same). Rows [m0, m1). */
#if ET_GEMM_HAVE_X86
typedef struct aargs {
    int M, N, K;
    const et_gemm_convb *cb;
    const float *B;
    ptrdiff_t ldb;
    float beta;
    float *C;
    ptrdiff_t ldc;
} aargs;

static void convA_region(const aargs *g, const kinfo *ki, int m0, int m1, float *Ap, float *Bp) {
    enum { MAXW = (MAX_KC + 63) / 64 };
    const int mr = ki->mr, nr = ki->nr, kc = ki->kc, mc = ki->mc, nc = ki->nc;
    const et_gemm_convb *cb = g->cb;
    const int taps = cb->KH * cb->KW, W = cb->W, PH = cb->KH / 2, PW = cb->KW / 2;
    uint64_t bits[ET_CONVB_MAXTAPS * MAXW];
    for (int jc = 0; jc < g->N; jc += nc) {
        const int nb = g->N - jc < nc ? g->N - jc : nc;
        for (int pc = 0; pc < g->K; pc += kc) {
            const int kb = g->K - pc < kc ? g->K - pc : kc, words = (kb + 63) / 64;
            const float beta = pc == 0 ? g->beta : 1.0f;
            et_gemm_pack_b(ki, 1, g->B, g->ldb, pc, kb, jc, nb, Bp);
            tap_bits(cb, g->K, pc, kb, words, bits);
            for (int ic = m0; ic < m1; ic += mc) {
                const int mb = m1 - ic < mc ? m1 - ic : mc;
                for (int ir = 0; ir < mb; ir += mr) {
                    const int m = mb - ir < mr ? mb - ir : mr;
                    const float *src[MAX_MR];
                    const uint64_t *bq[MAX_MR];
                    for (int q = 0; q < m; q++) {
                        const int r = ic + ir + q, ci = r / taps, t = r % taps;
                        src[q] = cb->x + ci * cb->cstride + pc + (ptrdiff_t)(t / cb->KW - PH) * W + (t % cb->KW - PW);
                        bq[q] = bits + t * words;
                    }
                    et_convA_packa_avx512(m, kb, src, bq, Ap + (size_t)ir * kb);
                }
                for (int jr = 0; jr < nb; jr += nr) {
                    const int n = nb - jr < nr ? nb - jr : nr;
                    for (int ir = 0; ir < mb; ir += mr) {
                        const int m = mb - ir < mr ? mb - ir : mr;
                        ki->kern(m, n, kb, Ap + (size_t)ir * kb, kb, 1, Bp + (size_t)jr * kb, nr,
                                 g->C + (ptrdiff_t)(ic + ir) * g->ldc + jc + jr, g->ldc, 1.0f, beta);
                    }
                }
            }
        }
    }
}

static void convA_alone(const aargs *g, const kinfo *ki, int m0, int m1) {
    float *Ap = aligned_alloc(64, sizeof(float) * ws_mc_kc), *Bp = aligned_alloc(64, sizeof(float) * ws_kc_nc);
    if (Ap && Bp) convA_region(g, ki, m0, m1, Ap, Bp); /* else cannot happen for conv's sizes; C left */
    free(Ap), free(Bp);
}
#endif

void et_sgemm_convA(int M, int N, int K, const et_gemm_convb *cb, const float *B, int ldb, float beta, float *C,
                    int ldc) {
#if ET_GEMM_HAVE_X86
    const kinfo *ki = pick(et_cpu_isa());
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || ki->isa != ET_ISA_AVX512) { /* never for conv; kept correct */
        args g = {0, 0, M, N, 0, 1.0f, beta, NULL, 0, NULL, 0, C, ldc, NULL};
        if (K <= 0) scale_c(&g);
        return;
    }
    if (!ws_mc_kc) ws_sizes();
    aargs g = {M, N, K, cb, B, ldb, beta, C, ldc};
    int nested = 0;
#ifdef _OPENMP
    nested = omp_in_parallel();
#endif
    if (nested) {
        float *tb = et_tlbuf_peek(&tl_buf, NULL);
        if (tb)
            convA_region(&g, ki, 0, M, tb, tb + ws_mc_kc);
        else
            convA_alone(&g, ki, 0, M);
        return;
    }
    if (atomic_flag_test_and_set_explicit(&ws_busy, memory_order_acquire)) {
        convA_alone(&g, ki, 0, M);
        return;
    }
    const int tiles = (M + ki->mr - 1) / ki->mr; /* rows split on the MR grid: any split gives the same bits */
    int T = conv_team(M, N, K, tiles);
#ifndef _OPENMP
    T = 1;
#endif
    if (!ws_mem) {
        unlock_ws();
        convA_alone(&g, ki, 0, M);
        return;
    }
    if (T <= 1) {
        convA_region(&g, ki, 0, M, ws_mem, ws_mem + ws_mc_kc);
    } else {
#ifdef _OPENMP
        const size_t per = ws_mc_kc + ws_kc_nc;
#pragma omp parallel num_threads(T)
        {
            int t = omp_get_thread_num(), nt = omp_get_num_threads(), lo, hi;
            for (int r = t; r < T; r += nt) {
                split(tiles, T, r, ki->mr, M, &lo, &hi);
                float *Ap = ws_mem + per * (size_t)t;
                if (lo < hi) convA_region(&g, ki, lo, hi, Ap, Ap + ws_mc_kc);
            }
        }
#endif
    }
    unlock_ws();
#else
    (void)M, (void)N, (void)K, (void)cb, (void)B, (void)ldb, (void)beta, (void)C, (void)ldc;
#endif
}
