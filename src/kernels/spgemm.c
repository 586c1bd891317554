/* Zero-skipping / output-masked GEMM (spgemm.h; docs/sparsity.md "Kernels").
 *
 * The driver is et_sgemm's (gemm.c): the same ISA, micro-tile grid, KC
 * blocking, packing and micro-kernels, so every element is summed in the same
 * order. On top of it:
 *  - a prepass scans the operands once into bitmasks: per MR-row panel of
 *    op(A) and per NR-column panel of op(B), which k have a non-zero; per
 *    micro-tile, whether the output mask is all zero, mixed or all set. The
 *    same scan yields the element-level counts for macs_elem;
 *  - per tile and KC block, the AND of the two panel masks says which k steps
 *    have any non-zero product. Few steps: the skip kernel runs only those
 *    (tzcnt loop); most steps: the dense kernel runs them all (same bits
 *    either way, see spgemm_internal.h). No step in a later K block: the tile
 *    is left as it is (adding +0 changes nothing; C is never -0 there);
 *  - a tile whose mask is all zero is written with zeros once and never
 *    computed; a mixed tile is computed and its masked elements zeroed after
 *    the last K block.
 * macs_elem is counted from bitmasks: without an output mask
 * sum_k nnz(op(A)[:,k]) * nnz(op(B)[k,:]); with one, the triple sum
 * sum_{i,j,k} mask[i,j] [A[i,k] != 0] [B[k,j] != 0] is taken as popcounts of
 * ANDed bit rows along whichever of k or j the operands store contiguously.
 */
#include "kernels/spgemm.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/spgemm_internal.h"

static float at(const float *X, int t, int ld, int r, int c) {
    return t ? X[(int64_t)c * ld + r] : X[(int64_t)r * ld + c];
}

void et_sgemm_sparse_ref(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                         float beta, float *C, int ldc, int skip_zeros, const uint8_t *mask, int ldmask,
                         et_spgemm_stats *st) {
    et_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
    uint64_t elem = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            if (mask && !mask[(int64_t)i * ldmask + j]) {
                C[(int64_t)i * ldc + j] = 0.0f;
                continue;
            }
            if (!skip_zeros) {
                elem += (uint64_t)K;
                continue;
            }
            for (int k = 0; k < K; k++)
                elem += at(A, ta, lda, i, k) != 0.0f && at(B, tb, ldb, k, j) != 0.0f;
        }
    if (st) {
        st->macs_elem = elem;
        st->macs_cpu = (uint64_t)M * (uint64_t)N * (uint64_t)K;
    }
}

/* ------------------------------------------------------------ portable scans */

static void nzbits_c(const float *x, int n, uint64_t *bits) {
    for (int w = 0; w * 64 < n; w++) {
        uint64_t b = 0;
        int e = n - w * 64 < 64 ? n - w * 64 : 64;
        for (int t = 0; t < e; t++) b |= (uint64_t)(x[w * 64 + t] != 0.0f) << t;
        bits[w] = b;
    }
}

static void nzcount_c(const float *x, int n, int32_t *cnt) {
    for (int t = 0; t < n; t++) cnt[t] += x[t] != 0.0f;
}

static void mbits_c(const uint8_t *m, int n, uint64_t *bits) {
    for (int w = 0; w * 64 < n; w++) {
        uint64_t b = 0;
        int e = n - w * 64 < 64 ? n - w * 64 : 64;
        for (int t = 0; t < e; t++) b |= (uint64_t)(m[w * 64 + t] != 0) << t;
        bits[w] = b;
    }
}

static int popc64(uint64_t x) {
    /* portable popcount (the baseline x86-64 target has no POPCNT) */
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
    return (int)((x * 0x0101010101010101ull) >> 56);
}

static uint64_t popand_c(const uint64_t *a, const uint64_t *b, size_t nw) {
    uint64_t s = 0;
    for (size_t w = 0; w < nw; w++) s += (uint64_t)popc64(a[w] & b[w]);
    return s;
}

static const et_spgemm_scan scan_c = {nzbits_c, nzcount_c, mbits_c, popand_c};
#if ET_GEMM_HAVE_X86
static const et_spgemm_scan scan_avx512 = {et_spgemm_nzbits_avx512, et_spgemm_nzcount_avx512,
                                           et_spgemm_mbits_avx512, et_spgemm_popand_avx512};
static const et_spgemm_scan scan_avx512_nopop = {et_spgemm_nzbits_avx512,
                                                 et_spgemm_nzcount_avx512,
                                                 et_spgemm_mbits_avx512, popand_c};
#endif

static const et_spgemm_scan *pick_scan(et_isa isa) {
#if ET_GEMM_HAVE_X86
    if (isa >= ET_ISA_AVX512)
        return __builtin_cpu_supports("avx512vpopcntdq") ? &scan_avx512 : &scan_avx512_nopop;
#endif
    (void)isa;
    return &scan_c;
}

/* any bit set in bits [lo, lo+len) of w */
static int anybits(const uint64_t *w, int lo, int len) {
    while (len > 0) {
        int o = lo & 63, t = 64 - o < len ? 64 - o : len;
        uint64_t x = w[lo >> 6] >> o;
        if (t < 64) x &= (1ull << t) - 1;
        if (x) return 1;
        lo += t;
        len -= t;
    }
    return 0;
}
/* all bits set in bits [lo, lo+len) of w */
static int allbits(const uint64_t *w, int lo, int len) {
    while (len > 0) {
        int o = lo & 63, t = 64 - o < len ? 64 - o : len;
        uint64_t x = w[lo >> 6] >> o, want = t < 64 ? (1ull << t) - 1 : ~0ull;
        if ((x & want) != want) return 0;
        lo += t;
        len -= t;
    }
    return 1;
}

/* The same for a field of at most 56 bits starting on a byte: one 8-byte
 * read (the bit rows have a spare word at the end). */
static int fieldany(const uint64_t *w, int lo, int len) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (!(lo & 7) && len <= 56) {
        uint64_t x;
        memcpy(&x, (const unsigned char *)w + (lo >> 3), 8);
        return (x & ((1ull << len) - 1)) != 0;
    }
#endif
    return anybits(w, lo, len);
}
static int fieldall(const uint64_t *w, int lo, int len) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (!(lo & 7) && len <= 56) {
        uint64_t x, want = (1ull << len) - 1;
        memcpy(&x, (const unsigned char *)w + (lo >> 3), 8);
        return (x & want) == want;
    }
#endif
    return allbits(w, lo, len);
}

/* ------------------------------------------------------ scalar skip kernel */

/* ukernel_scalar of gemm.c, stepping only over the steps in km. */
static void skip_scalar(int m, int n, const uint64_t *km, int k, const float *a, ptrdiff_t ars,
                        ptrdiff_t as, const float *b, ptrdiff_t bs, float *c, ptrdiff_t ldc,
                        float beta) {
    enum { MR = ET_GEMM_SCALAR_MR, NR = ET_GEMM_SCALAR_NR };
    const float alpha = 1.0f;
    float acc[MR][NR];
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NR; j++) acc[r][j] = 0.0f;
    for (int w = 0; w * 64 < k; w++) {
        uint64_t bits = km[w];
        while (bits) {
            int p = w * 64 + __builtin_ctzll(bits);
            bits &= bits - 1;
            const float *ap = a + p * as, *bp = b + p * bs;
            for (int r = 0; r < MR; r++) {
                float ar = ap[(r < m ? r : m - 1) * ars];
                for (int j = 0; j < NR; j++) acc[r][j] += ar * bp[j];
            }
        }
    }
    for (int r = 0; r < m; r++) {
        float *cr = c + r * ldc;
        if (beta == 0.0f)
            for (int j = 0; j < n; j++) cr[j] = alpha * acc[r][j];
        else
            for (int j = 0; j < n; j++) cr[j] = alpha * acc[r][j] + beta * cr[j];
    }
}

static et_spgemm_skernel pick_skip(et_isa isa) {
#if ET_GEMM_HAVE_X86
    if (isa == ET_ISA_AVX512) return et_spgemm_skip_avx512;
    if (isa == ET_ISA_AVX2) return et_spgemm_skip_avx2;
#endif
    (void)isa;
    return skip_scalar;
}

/* ------------------------------------------------------------- workspace */

/* One buffer, grown on demand and kept: the first call at the largest shape
 * allocates, the training loop's later calls reuse it. A call that finds it
 * busy (concurrent or nested in a parallel region) allocates its own. */
static void *ws_mem;
static size_t ws_size;
static atomic_flag ws_busy = ATOMIC_FLAG_INIT;

/* ------------------------------------------------------------------ call */

typedef struct spctx {
    const et_gemm_kinfo *ki;
    et_spgemm_skernel skern;
    const et_spgemm_scan *sc;
    int ta, tb, M, N, K;
    const float *A;
    ptrdiff_t lda;
    const float *B;
    ptrdiff_t ldb;
    float beta;
    float *C;
    ptrdiff_t ldc;
    int skip;
    const uint8_t *mask;
    ptrdiff_t ldm;
    int KW, NW, npa, npb;
    uint64_t *Apan, *Bpan; /* [npa][KW], [npb][KW] */
    uint64_t *Mrow;        /* [M][NW] mask bits */
    uint64_t *Brow;        /* tb == 0: [K][NW] */
    uint64_t *Bcol;        /* tb == 1: [N][KW] */
    uint64_t *Arow;        /* tb == 1 with a mask: [M][KW] */
    int32_t *nnzA, *nnzB;  /* [K] */
    uint8_t *tcls;         /* [npa][npb]: 0 all masked, 1 mixed, 2 all set */
    uint64_t *scr;         /* T * scr_per words of per-thread scratch */
    size_t scr_per;
    float *packs;          /* T * (mc*kc + kc*nc) */
    size_t pack_per;
    int T;
} spctx;

/* skip the dense/skip decision: a tile runs the dense kernel when at least
 * DENSE_NUM/DENSE_DEN of its steps have work (measured, bench_spgemm). */
#define DENSE_NUM 7
#define DENSE_DEN 8

static size_t rup(size_t x) { return (x + 7) & ~(size_t)7; } /* 64-byte multiples of words */

/* Lays out the workspace in `mem` (NULL: only sizes it); returns bytes. */
static size_t layout(spctx *c, char *mem) {
    size_t off = 0;
#define TAKE(ptr, type, count)                                                               \
    do {                                                                                     \
        size_t bytes_ = (((size_t)(count) * sizeof(type)) + 63) & ~(size_t)63;              \
        if (mem) c->ptr = (type *)(void *)(mem + off);                                       \
        off += bytes_;                                                                       \
    } while (0)
    const int need_mask = c->mask != NULL;
    c->scr_per = rup((size_t)c->KW) + rup((size_t)(c->M + 63) / 64) + rup((size_t)c->K / 2 + 1);
    TAKE(scr, uint64_t, c->scr_per * (size_t)c->T);
    TAKE(Apan, uint64_t, rup((size_t)c->npa * c->KW));
    TAKE(Bpan, uint64_t, rup((size_t)c->npb * c->KW));
    if (need_mask) TAKE(Mrow, uint64_t, (size_t)c->M * c->NW + 1);
    if (!c->tb) TAKE(Brow, uint64_t, (size_t)c->K * c->NW + 1); /* +1: 8-byte reads */
    if (c->tb) TAKE(Bcol, uint64_t, (size_t)c->N * c->KW);
    if (c->tb && need_mask) TAKE(Arow, uint64_t, (size_t)c->M * c->KW);
    TAKE(nnzA, int32_t, c->K);
    TAKE(nnzB, int32_t, c->K);
    if (need_mask) TAKE(tcls, uint8_t, (size_t)c->npa * c->npb);
    c->pack_per = ((size_t)c->ki->mc * c->ki->kc + (size_t)c->ki->kc * c->ki->nc + 15) & ~(size_t)15;
    TAKE(packs, float, c->pack_per * (size_t)c->T);
#undef TAKE
    return off;
}

static const float *arow(const spctx *c, int i) { return c->A + (ptrdiff_t)i * c->lda; }

/* The prepass: bitmasks and macs_elem. Runs with the threads of the call;
 * every output is owned by one iteration and the counts are integer sums, so
 * nothing depends on the thread count. */
static uint64_t prepass(spctx *c) {
    const int M = c->M, N = c->N, K = c->K, KW = c->KW, NW = c->NW;
    const int mr = c->ki->mr, nr = c->ki->nr;
    const et_spgemm_scan *sc = c->sc;
    const int T = c->T;
    memset(c->Apan, 0, sizeof(uint64_t) * (size_t)c->npa * KW);
    memset(c->Bpan, 0, sizeof(uint64_t) * (size_t)c->npb * KW);
    memset(c->nnzA, 0, sizeof(int32_t) * (size_t)K);
    memset(c->nnzB, 0, sizeof(int32_t) * (size_t)K);
    uint64_t elem = 0;

    /* mask bits and tile classes */
    if (c->mask) {
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
        for (int i = 0; i < M; i++) sc->mbits(c->mask + (ptrdiff_t)i * c->ldm, N, c->Mrow + (size_t)i * NW);
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
        for (int q = 0; q < c->npb; q++) {
            int j0 = q * nr, n = N - j0 < nr ? N - j0 : nr;
            for (int p = 0; p < c->npa; p++) {
                int i0 = p * mr, m = M - i0 < mr ? M - i0 : mr, any = 0, all = 1;
                for (int r = 0; r < m; r++) {
                    const uint64_t *w = c->Mrow + (size_t)(i0 + r) * NW;
                    any |= fieldany(w, j0, n);
                    if (all) all = fieldall(w, j0, n);
                }
                c->tcls[(size_t)p * c->npb + q] = (uint8_t)(!any ? 0 : all ? 2 : 1);
            }
        }
    }
    if (!c->skip) {
        if (!c->mask) return (uint64_t)M * N * K;
        uint64_t cnt = 0;
        for (int i = 0; i < M; i++) cnt += sc->popand(c->Mrow + (size_t)i * NW, c->Mrow + (size_t)i * NW, (size_t)NW);
        return cnt * (uint64_t)K;
    }

    /* op(A): panel masks over k (+ per-k counts, + row bits when needed) */
    if (!c->ta) {
#pragma omp parallel num_threads(T) if (T > 1 && (double)M * K > 1e5)
        {
            int tid = 0;
#ifdef _OPENMP
            tid = omp_get_thread_num();
#endif
            uint64_t *rb = c->scr + c->scr_per * (size_t)tid;
            int32_t *cnt = (int32_t *)(void *)(rb + rup((size_t)KW) + rup((size_t)(M + 63) / 64));
            memset(cnt, 0, sizeof(int32_t) * (size_t)K);
#pragma omp for schedule(static)
            for (int p = 0; p < c->npa; p++) {
                uint64_t *pan = c->Apan + (size_t)p * KW;
                for (int i = p * mr; i < M && i < (p + 1) * mr; i++) {
                    uint64_t *dst = c->Arow ? c->Arow + (size_t)i * KW : rb;
                    sc->nzbits(arow(c, i), K, dst);
                    for (int w = 0; w < KW; w++) pan[w] |= dst[w];
                    sc->nzcount(arow(c, i), K, cnt);
                }
            }
#pragma omp critical(et_spgemm_cnt)
            for (int k = 0; k < K; k++) c->nnzA[k] += cnt[k];
        }
    } else {
        /* A is K x M: row k holds op(A)[:, k] */
        int MW = (M + 63) / 64;
#pragma omp parallel num_threads(T) if (T > 1 && (double)M * K > 1e5)
        {
            int tid = 0;
#ifdef _OPENMP
            tid = omp_get_thread_num();
#endif
            uint64_t *cb = c->scr + c->scr_per * (size_t)tid + rup((size_t)KW);
#pragma omp for schedule(static)
            for (int kw = 0; kw < KW; kw++) {
                for (int k = kw * 64; k < K && k < kw * 64 + 64; k++) {
                    const float *a = c->A + (ptrdiff_t)k * c->lda;
                    sc->nzbits(a, M, cb);
                    c->nnzA[k] = (int32_t)sc->popand(cb, cb, (size_t)MW);
                    for (int p = 0; p < c->npa; p++)
                        if (anybits(cb, p * mr, M - p * mr < mr ? M - p * mr : mr))
                            c->Apan[(size_t)p * KW + kw] |= 1ull << (k & 63);
                    if (c->Arow) /* strided build of the row bits (tb == 1, masked) */
                        for (int i = 0; i < M; i++)
                            if ((cb[i >> 6] >> (i & 63)) & 1) c->Arow[(size_t)i * KW + kw] |= 1ull << (k & 63);
                }
            }
        }
    }
    /* (Arow was zeroed by the caller when it is built by setting bits) */

    /* op(B): panel masks over k (+ counts, + bit rows) */
    if (!c->tb) {
        /* B is K x N: row k holds op(B)[k, :] */
        /* a thread owns 64 k at a time: word k/64 of every panel mask */
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
        for (int kw = 0; kw < KW; kw++) {
            for (int k = kw * 64; k < K && k < kw * 64 + 64; k++) {
                uint64_t *rb = c->Brow + (size_t)k * NW;
                sc->nzbits(c->B + (ptrdiff_t)k * c->ldb, N, rb);
                c->nnzB[k] = (int32_t)sc->popand(rb, rb, (size_t)NW);
                if (!c->nnzB[k]) continue;
                uint64_t bit = 1ull << (k & 63);
                for (int q = 0; q < c->npb; q++) {
                    int j0 = q * nr, n = N - j0 < nr ? N - j0 : nr;
                    if (fieldany(rb, j0, n)) c->Bpan[(size_t)q * KW + kw] |= bit;
                }
            }
        }
    } else {
        /* B is N x K: row j holds op(B)[:, j] */
#pragma omp parallel num_threads(T) if (T > 1)
        {
            int tid = 0;
#ifdef _OPENMP
            tid = omp_get_thread_num();
#endif
            int32_t *cnt = (int32_t *)(void *)(c->scr + c->scr_per * (size_t)tid + rup((size_t)KW) +
                                               rup((size_t)(M + 63) / 64));
            memset(cnt, 0, sizeof(int32_t) * (size_t)K);
#pragma omp for schedule(static)
            for (int q = 0; q < c->npb; q++) {
                uint64_t *pan = c->Bpan + (size_t)q * KW;
                for (int j = q * nr; j < N && j < (q + 1) * nr; j++) {
                    uint64_t *cb = c->Bcol + (size_t)j * KW;
                    const float *b = c->B + (ptrdiff_t)j * c->ldb;
                    sc->nzbits(b, K, cb);
                    sc->nzcount(b, K, cnt);
                    for (int w = 0; w < KW; w++) pan[w] |= cb[w];
                }
            }
#pragma omp critical(et_spgemm_cnt)
            for (int k = 0; k < K; k++) c->nnzB[k] += cnt[k];
        }
    }

    if (!c->mask) {
        for (int k = 0; k < K; k++) elem += (uint64_t)c->nnzA[k] * (uint64_t)c->nnzB[k];
        return elem;
    }
    if (!c->tb) {
        /* along j: sum_{i,k: A[i,k] != 0} popcount(maskrow_i & Brow_k) */
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : elem) num_threads(T) if (T > 1)
        for (int i = 0; i < M; i++) {
            const uint64_t *mw = c->Mrow + (size_t)i * NW;
            uint64_t s = 0;
            for (int k = 0; k < K; k++)
                if (at(c->A, c->ta, (int)c->lda, i, k) != 0.0f && c->nnzB[k])
                    s += sc->popand(mw, c->Brow + (size_t)k * NW, (size_t)NW);
            elem += s;
        }
    } else {
        /* along k: sum_{i,j: mask[i,j]} popcount(Arow_i & Bcol_j) */
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : elem) num_threads(T) if (T > 1)
        for (int i = 0; i < M; i++) {
            const uint64_t *ar = c->Arow + (size_t)i * KW, *mw = c->Mrow + (size_t)i * NW;
            uint64_t s = 0;
            for (int w = 0; w < NW; w++) {
                uint64_t bits = mw[w];
                while (bits) {
                    int j = w * 64 + __builtin_ctzll(bits);
                    bits &= bits - 1;
                    s += sc->popand(ar, c->Bcol + (size_t)j * KW, (size_t)KW);
                }
            }
            elem += s;
        }
    }
    return elem;
}

/* ------------------------------------------------------------ the driver */

static void prefetch_panel(const float *b, int kb, ptrdiff_t bs, int nr) {
    for (int p = 0; p < kb; p++, b += bs)
        for (int j = 0; j < nr; j += 16) __builtin_prefetch(b + j, 0, 2);
}

static void zero_tile(float *c, ptrdiff_t ldc, int m, int n) {
    for (int r = 0; r < m; r++) memset(c + r * ldc, 0, sizeof(float) * (size_t)n);
}

static void mask_tile(const spctx *g, int i0, int j0, int m, int n) {
    for (int r = 0; r < m; r++) {
        const uint8_t *mk = g->mask + (ptrdiff_t)(i0 + r) * g->ldm + j0;
        float *cr = g->C + (ptrdiff_t)(i0 + r) * g->ldc + j0;
        for (int j = 0; j < n; j++)
            if (!mk[j]) cr[j] = 0.0f;
    }
}

/* gemm.c's gemm_region with the skipping; returns the multiply-adds run. */
static uint64_t region(const spctx *g, int m0, int m1, int n0, int n1, float *Ap, float *Bp) {
    const et_gemm_kinfo *ki = g->ki;
    const int mr = ki->mr, nr = ki->nr, kc = ki->kc, mc = ki->mc, nc = ki->nc;
    const int direct_b = !g->tb && m1 - m0 <= mc;
    const int direct_a = n1 - n0 <= 2 * nr;
    const int KW = g->KW;
    uint64_t macs = 0;
    for (int jc = n0; jc < n1; jc += nc) {
        int nb = n1 - jc < nc ? n1 - jc : nc;
        for (int pc = 0; pc < g->K; pc += kc) {
            int kb = g->K - pc < kc ? g->K - pc : kc;
            int kbw = (kb + 63) / 64, pw = pc / 64;
            int last = pc + kb >= g->K;
            float beta = pc == 0 ? g->beta : 1.0f;
            int packed_b = 0;
            for (int ic = m0; ic < m1; ic += mc) {
                int mb = m1 - ic < mc ? m1 - ic : mc;
                const float *ap = Ap;
                ptrdiff_t ars = 1, as = mr, ap_step = kb;
                int packed_a = 0;
                for (int jr = 0; jr < nb; jr += nr) {
                    int n = nb - jr < nr ? nb - jr : nr;
                    int jq = (jc + jr) / nr;
                    const float *bp = NULL;
                    ptrdiff_t bs = nr;
                    for (int ir = 0; ir < mb; ir += mr) {
                        int m = mb - ir < mr ? mb - ir : mr;
                        int iq = (ic + ir) / mr;
                        float *cp = g->C + (ptrdiff_t)(ic + ir) * g->ldc + jc + jr;
                        int cls = g->tcls ? g->tcls[(size_t)iq * g->npb + jq] : 2;
                        if (cls == 0) {
                            if (pc == 0) zero_tile(cp, g->ldc, m, n);
                            continue;
                        }
                        uint64_t km[8];
                        int cnt = kb;
                        if (g->skip) {
                            const uint64_t *wa = g->Apan + (size_t)iq * KW + pw;
                            const uint64_t *wb = g->Bpan + (size_t)jq * KW + pw;
                            cnt = 0;
                            for (int w = 0; w < kbw; w++) {
                                km[w] = wa[w] & wb[w];
                                cnt += popc64(km[w]);
                            }
                            if (cnt == 0 && pc > 0) {
                                if (last && cls == 1) mask_tile(g, ic + ir, jc + jr, m, n);
                                continue;
                            }
                        }
                        /* operands are packed on first use in this block */
                        if (!packed_b && !direct_b) {
                            et_gemm_pack_b(ki, g->tb, g->B, g->ldb, pc, kb, jc, nb, Bp);
                            packed_b = 1;
                        }
                        if (!bp) {
                            bp = Bp + (size_t)jr * kb;
                            if (direct_b && n % ki->bw == 0) {
                                bp = g->B + (ptrdiff_t)pc * g->ldb + jc + jr;
                                bs = g->ldb;
                                if (ic == m0 && jr + 3 * nr <= nb) prefetch_panel(bp + 2 * nr, kb, bs, nr);
                            } else if (direct_b) {
                                et_gemm_pack_b(ki, g->tb, g->B, g->ldb, pc, kb, jc + jr, n, Bp);
                                bp = Bp;
                            }
                        }
                        if (!packed_a) {
                            if (!direct_a) {
                                et_gemm_pack_a(ki, g->ta, g->A, g->lda, ic, mb, pc, kb, Ap);
                            } else if (!g->ta) {
                                ap = g->A + (ptrdiff_t)ic * g->lda + pc;
                                ars = g->lda, as = 1, ap_step = g->lda;
                            } else {
                                ap = g->A + (ptrdiff_t)pc * g->lda + ic;
                                ars = 1, as = g->lda, ap_step = 1;
                            }
                            packed_a = 1;
                        }
                        const float *a = ap + ir * ap_step;
                        if (cnt * DENSE_DEN >= kb * DENSE_NUM) {
                            ki->kern(m, n, kb, a, ars, as, bp, bs, cp, g->ldc, 1.0f, beta);
                            macs += (uint64_t)kb * m * n;
                        } else {
                            g->skern(m, n, km, kb, a, ars, as, bp, bs, cp, g->ldc, beta);
                            macs += (uint64_t)cnt * m * n;
                        }
                        if (last && cls == 1) mask_tile(g, ic + ir, jc + jr, m, n);
                    }
                }
            }
        }
    }
    return macs;
}

/* C = beta*C, then the mask (K == 0). */
static void degenerate(int M, int N, float beta, float *C, int ldc, const uint8_t *mask, int ldm) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float *c = C + (ptrdiff_t)i * ldc + j;
            if ((mask && !mask[(ptrdiff_t)i * ldm + j]) || beta == 0.0f)
                *c = 0.0f;
            else if (beta != 1.0f)
                *c *= beta;
        }
}

static void run(et_isa isa, int ta, int tb, int M, int N, int K, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc, int skip_zeros,
                const uint8_t *mask, int ldmask, et_spgemm_stats *st, int count_only) {
    et_spgemm_stats s = {0, 0};
    if (M <= 0 || N <= 0) {
        if (st) *st = s;
        return;
    }
    if (K <= 0) {
        if (!count_only) degenerate(M, N, beta, C, ldc, mask, ldmask);
        if (st) *st = s;
        return;
    }
    const et_gemm_kinfo *ki = et_gemm_kinfo_for(isa);
    if (!skip_zeros && !mask && !count_only) {
        /* nothing to skip: exactly et_sgemm */
        et_sgemm_isa(ki->isa, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
        s.macs_elem = s.macs_cpu = (uint64_t)M * N * K;
        if (st) *st = s;
        return;
    }
    spctx g;
    memset(&g, 0, sizeof g);
    g.ki = ki;
    g.skern = pick_skip(ki->isa);
    g.sc = pick_scan(ki->isa);
    g.ta = ta != 0, g.tb = tb != 0, g.M = M, g.N = N, g.K = K;
    g.A = A, g.lda = lda, g.B = B, g.ldb = ldb, g.beta = beta, g.C = C, g.ldc = ldc;
    g.skip = skip_zeros != 0, g.mask = mask, g.ldm = ldmask;
    g.KW = (K + 63) / 64, g.NW = (N + 63) / 64;
    g.npa = (M + ki->mr - 1) / ki->mr, g.npb = (N + ki->nr - 1) / ki->nr;
    int nested = 0;
#ifdef _OPENMP
    nested = omp_in_parallel();
#endif
    int T = nested ? 1 : et_get_threads();
    if (T < 1) T = 1;
    int tm = 1, tn = 1;
    if (T > 1) et_gemm_partition(ki, M, N, K, T, &tm, &tn);
    g.T = T;
    size_t bytes = layout(&g, NULL);
    int own = 0;
    char *mem = NULL;
    if (!nested && !atomic_flag_test_and_set_explicit(&ws_busy, memory_order_acquire)) {
        if (ws_size < bytes) {
            free(ws_mem);
            ws_mem = aligned_alloc(64, bytes);
            ws_size = ws_mem ? bytes : 0;
        }
        mem = ws_mem;
        if (!mem) atomic_flag_clear_explicit(&ws_busy, memory_order_release);
        else own = 1;
    } else {
        mem = aligned_alloc(64, bytes);
        own = 2;
    }
    if (!mem) {
        /* no memory for the bitmasks: the reference gives the same results */
        et_sgemm_sparse_ref(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc, skip_zeros, mask,
                            ldmask, st);
        return;
    }
    layout(&g, mem);
    if (g.Arow) memset(g.Arow, 0, sizeof(uint64_t) * (size_t)M * g.KW);
    s.macs_elem = prepass(&g);
    if (!count_only) {
        int nreg = tm * tn;
        int mt = g.npa, nt = g.npb;
        uint64_t macs = 0;
        if (nreg == 1) {
            macs = region(&g, 0, M, 0, N, g.packs, g.packs + (size_t)ki->mc * ki->kc);
        } else {
#ifdef _OPENMP
#pragma omp parallel num_threads(nreg) reduction(+ : macs)
            {
                int tid = omp_get_thread_num(), nth = omp_get_num_threads();
                float *Ap = g.packs + g.pack_per * (size_t)tid, *Bp = Ap + (size_t)ki->mc * ki->kc;
                for (int r = tid; r < nreg; r += nth) {
                    int a0 = (int)((long)mt * (r / tn) / tm), a1 = (int)((long)mt * (r / tn + 1) / tm);
                    int b0 = (int)((long)nt * (r % tn) / tn), b1 = (int)((long)nt * (r % tn + 1) / tn);
                    int m0 = a0 * ki->mr, m1 = a1 * ki->mr < M ? a1 * ki->mr : M;
                    int n0 = b0 * ki->nr, n1 = b1 * ki->nr < N ? b1 * ki->nr : N;
                    if (m0 < m1 && n0 < n1) macs += region(&g, m0, m1, n0, n1, Ap, Bp);
                }
            }
#else
            macs = region(&g, 0, M, 0, N, g.packs, g.packs + (size_t)ki->mc * ki->kc);
#endif
        }
        s.macs_cpu = macs;
    }
    if (own == 1)
        atomic_flag_clear_explicit(&ws_busy, memory_order_release);
    else
        free(mem);
    if (st) *st = s;
}

void et_sgemm_sparse(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                     float beta, float *C, int ldc, int skip_zeros, const uint8_t *mask, int ldmask,
                     et_spgemm_stats *st) {
    run(et_cpu_isa(), ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc, skip_zeros, mask, ldmask, st, 0);
}

void et_sgemm_sparse_isa(et_isa isa, int ta, int tb, int M, int N, int K, const float *A,
                         int lda, const float *B, int ldb, float beta, float *C, int ldc,
                         int skip_zeros, const uint8_t *mask, int ldmask, et_spgemm_stats *st) {
    run(isa, ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc, skip_zeros, mask, ldmask, st, 0);
}

void et_sgemm_sparse_count(int ta, int tb, int M, int N, int K, const float *A, int lda,
                           const float *B, int ldb, int skip_zeros, const uint8_t *mask,
                           int ldmask, et_spgemm_stats *st) {
    run(et_cpu_isa(), ta, tb, M, N, K, A, lda, B, ldb, 0.0f, NULL, 0, skip_zeros, mask, ldmask,
        st, 1);
}
