/* Zero-skipping / output-masked GEMM (spgemm.h; docs/sparsity.md "Kernels").
 *
 * The driver is et_sgemm's (gemm.c): the same ISA, micro-tile grid, KC
 * blocking, packing and micro-kernels, so every element is summed in the same
 * order. On top of it:
 *  - a prepass scans op(A) (per MR-row panel: which k have a non-zero) and
 *    the mask (bit rows; per MR x sw sub-tile: all zero, mixed or all set;
 *    sw = 16 on AVX-512, NR elsewhere); op(B) is scanned panel by panel in
 *    the driver just before the micro-kernel reads it (per sw-column
 *    sub-panel and KC block: which k have a non-zero), and the same scans
 *    give the counts for macs_elem;
 *  - per tile and KC block, the AND of the panel masks says which k steps
 *    have any non-zero product. All: the dense kernel; else the cheaper of
 *    the skip kernel over the union of the sub-tiles' steps or per sub-tile
 *    (same bits either way, see spgemm_internal.h). No step in a later K
 *    block: the tile is left as it is (adding +0 changes nothing; C is never
 *    -0 there);
 *  - a sub-tile whose mask is all zero is written with zeros once and never
 *    computed; a mixed tile is computed and its masked elements zeroed after
 *    the last K block.
 * macs_elem is counted from bitmasks, per thread region (integer sums, so
 * thread-independent): without an output mask sum_k nnzA(k) * nnzB(k); with
 * one, sum_j mask[i,j] * nnz(op(B)[:,j]) minus popcount(maskrow_i & Brow_k)
 * over the (i,k) where op(A) is zero, or the popcounts directly over the
 * (i,k) where it is not, whichever side of A is smaller.
 */
#include "core/tlbuf.h"
#include "kernels/spgemm.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/spgemm_internal.h"
#include "kernels/gemm_dot.h"

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

/* POPCNT where the CPU has it (checked once per call: hw != 0), else popc64 */
static inline int popc(uint64_t x, int hw) {
#if ET_GEMM_HAVE_X86 && defined(__GNUC__)
    if (hw) {
        uint64_t r;
        __asm__("popcnt %1, %0" : "=r"(r) : "r"(x) : "cc");
        return (int)r;
    }
#endif
    (void)hw;
    return popc64(x);
}

static uint64_t popand_c(const uint64_t *a, const uint64_t *b, size_t nw) {
    uint64_t s = 0;
    for (size_t w = 0; w < nw; w++) s += (uint64_t)popc64(a[w] & b[w]);
    return s;
}

static void panel_c(const float *b, ptrdiff_t bs, int kb, int n, int sw, int nsub, uint64_t *sub,
                    int kbw, int32_t *kcnt, int32_t *ccnt, uint64_t *brow, size_t bstride,
                    int bit0) {
    memset(sub, 0, sizeof(uint64_t) * (size_t)nsub * kbw);
    for (int p = 0; p < kb; p++) {
        const float *bp = b + (ptrdiff_t)p * bs;
        int cnt = 0;
        for (int v = 0; v < nsub; v++) {
            int any = 0;
            for (int j = v * sw; j < v * sw + sw && j < n; j++) {
                int nz = bp[j] != 0.0f;
                any |= nz;
                cnt += nz;
                if (nz && ccnt) ccnt[j]++;
                if (nz && brow) {
                    int t = bit0 + j;
                    brow[(size_t)p * bstride + (t >> 6)] |= 1ull << (t & 63);
                }
            }
            if (any) sub[v * kbw + (p >> 6)] |= 1ull << (p & 63);
        }
        if (kcnt) kcnt[p] += cnt;
    }
}

static void masktile_c(float *c, ptrdiff_t ldc, const uint64_t *mw, size_t mstride, int bit0,
                       int rows, int n) {
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < n; j++) {
            int t = bit0 + j;
            if (!((mw[(size_t)r * mstride + (t >> 6)] >> (t & 63)) & 1)) c[r * ldc + j] = 0.0f;
        }
}

static int64_t maskdot_c(const uint64_t *mw, int bit0, const int32_t *cnt, int n) {
    int64_t d = 0;
    for (int j = 0; j < n; j++) {
        int t = bit0 + j;
        d += (int64_t)((mw[t >> 6] >> (t & 63)) & 1) * cnt[j];
    }
    return d;
}

static const et_spgemm_scan scan_c = {nzbits_c, nzcount_c, mbits_c,   popand_c,
                                      panel_c,  masktile_c, maskdot_c};
#if ET_GEMM_HAVE_X86
static const et_spgemm_scan scan_avx512 = {et_spgemm_nzbits_avx512, et_spgemm_nzcount_avx512,
                                           et_spgemm_mbits_avx512, et_spgemm_popand_avx512,
                                           et_spgemm_panel_avx512, et_spgemm_masktile_avx512,
                                           et_spgemm_maskdot_avx512};
static const et_spgemm_scan scan_avx512_nopop = {et_spgemm_nzbits_avx512,
                                                 et_spgemm_nzcount_avx512,
                                                 et_spgemm_mbits_avx512, popand_c,
                                                 et_spgemm_panel_avx512, et_spgemm_masktile_avx512,
                                                 et_spgemm_maskdot_avx512};
#endif

static const et_spgemm_scan *pick_scan(et_isa isa) {
#if ET_GEMM_HAVE_X86
    if (isa >= ET_ISA_AVX512)
        return __builtin_cpu_supports("avx512vpopcntdq") ? &scan_avx512 : &scan_avx512_nopop;
#endif
    (void)isa;
    return &scan_c;
}

const et_spgemm_scan *et_spgemm_scan_for(et_isa isa) { return pick_scan(isa); }

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
 * busy (concurrent, or nested in a parallel region) allocates its own. */
static void *ws_mem;
static size_t ws_size;
static atomic_flag ws_busy = ATOMIC_FLAG_INIT;
static et_tlbuf tl_buf; /* nested calls: the calling thread's buffer (core/tlbuf.h) */

/* ------------------------------------------------------------------ call */

/* How macs_elem is counted (see the top of the file). */
enum {
    CNT_NONE,   /* no skip_zeros: K * (mask count), from the prepass */
    CNT_NOMASK, /* sum_k nnzA(k) * nnzB(k), per region and block */
    CNT_DIRECT, /* sum over A[i,k] != 0 of popcount(maskrow_i & Brow_k) */
    CNT_COLS    /* sum_j mask[i,j] * nnz(B[:,j]) minus the same over A[i,k] == 0 */
};

typedef struct spctx {
    const et_gemm_kinfo *ki;
    et_spgemm_skernel skern;
    /* the AVX-512 tile with optional steps and store mask; NULL elsewhere */
    void (*ktile)(int m, int n, const uint64_t *km, int k, const float *a, ptrdiff_t ars,
                  ptrdiff_t as, const float *b, ptrdiff_t bs, float *c, ptrdiff_t ldc, float beta,
                  const uint64_t *kw, int ko);
    void (*tscan)(int m, int n, int k, const float *a, ptrdiff_t ars, ptrdiff_t as,
                  const float *b, ptrdiff_t bs, float *c, ptrdiff_t ldc, float beta,
                  const uint64_t *kw, int ko, uint64_t *pat);
    void (*patpanel)(const uint64_t *pat, int kb, int n, int nsub, uint64_t *sub, int kbw,
                     int32_t *kcnt, int32_t *ccnt, uint64_t *brow, size_t bstride, int bit0);
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
    int KW, NW, npa, sw, nsub, nsp; /* sw-column sub-panels: nsub per panel, nsp in all */
    int tm, tn, T, cmode, need_brow, count_only, hwpop;
    uint64_t *Apan;   /* [npa][KW] */
    uint64_t *Arow;   /* [M][KW], CNT_DIRECT / CNT_COLS */
    int32_t *nnzAg;   /* [tm][K], CNT_NOMASK */
    uint64_t *Mrow;   /* [M][NW + 1] */
    uint64_t *Mpan;   /* [npa][NW + 1][mr]: the same bits, a row panel's words side by side */
    uint8_t *tcls;    /* [npa][nsp]: 0 all masked, 1 mixed, 2 all set */
    char *thr;        /* per-thread buffers, thr_per bytes each */
    size_t thr_per, o_bp, o_sub, o_done, o_kcnt, o_ccnt, o_brow, o_mtmp, o_pat;
    int ncw;          /* words of a block's bit row (nc columns) */
    uint64_t mask_elems;
} spctx;

static size_t al64(size_t b) { return (b + 63) & ~(size_t)63; }

/* Lays the workspace out at `mem` (NULL: only sizes it); returns bytes. */
static size_t layout(spctx *c, char *mem) {
    const et_gemm_kinfo *ki = c->ki;
    size_t off = 0;
#define TAKE(ptr, type, count)                                                                   \
    do {                                                                                         \
        if (mem) c->ptr = (type *)(void *)(mem + off);                                           \
        off += al64((size_t)(count) * sizeof(type));                                             \
    } while (0)
    TAKE(Apan, uint64_t, (size_t)c->npa * c->KW);
    if (c->cmode == CNT_DIRECT || c->cmode == CNT_COLS) TAKE(Arow, uint64_t, (size_t)c->M * c->KW);
    if (c->cmode == CNT_NOMASK) TAKE(nnzAg, int32_t, (size_t)c->tm * c->K);
    if (c->mask) {
        TAKE(Mrow, uint64_t, (size_t)c->M * (c->NW + 1));
        TAKE(Mpan, uint64_t, (size_t)c->npa * (c->NW + 1) * c->ki->mr);
        TAKE(tcls, uint8_t, (size_t)c->npa * c->nsp);
    }
#undef TAKE
    /* per thread: Ap | Bp | sub | done | kcnt | ccnt | brow | mtmp */
    size_t t = 0;
    int kcw = ki->kc / 64;
    c->ncw = ki->nc / 64 + 2;
    t += al64(sizeof(float) * (size_t)ki->mc * ki->kc);
    c->o_bp = t;
    t += al64(sizeof(float) * (size_t)ki->kc * ki->nc);
    c->o_sub = t;
    t += al64(sizeof(uint64_t) * (size_t)(ki->nc / c->sw) * kcw);
    c->o_done = t;
    t += al64((size_t)ki->nc / ki->nr + 1);
    c->o_kcnt = t;
    t += al64(sizeof(int32_t) * (size_t)ki->kc);
    c->o_ccnt = t;
    t += al64(sizeof(int32_t) * (size_t)ki->nc);
    c->o_brow = t;
    if (c->need_brow) t += al64(sizeof(uint64_t) * (size_t)c->K * c->ncw);
    c->o_mtmp = t;
    t += al64(sizeof(uint64_t) * (size_t)c->ncw);
    c->o_pat = t;
    t += al64(sizeof(uint64_t) * (size_t)ki->kc);
    c->thr_per = t;
    if (mem) c->thr = mem + off;
    off += t * (size_t)c->T;
    return off;
}

/* the row group of the thread partition that holds row panel p */
static int row_group(const spctx *c, int p) {
    for (int g = 0; g < c->tm; g++)
        if (p < (int)((long)c->npa * (g + 1) / c->tm)) return g;
    return c->tm - 1;
}

/* The prepass over op(A) and the mask (op(B) is scanned panel by panel in
 * the driver, where it is in cache anyway). */
static void prepass(spctx *c) {
    const int M = c->M, N = c->N, K = c->K, KW = c->KW, NW = c->NW, mr = c->ki->mr;
    const et_spgemm_scan *sc = c->sc;
    const int T = c->T;
    if (c->mask) {
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1 && (double)M * N > 4e6)
        for (int i = 0; i < M; i++) {
            uint64_t *w = c->Mrow + (size_t)i * (NW + 1);
            sc->mbits(c->mask + (ptrdiff_t)i * c->ldm, N, w);
            w[NW] = 0;
        }
        uint64_t cnt = 0;
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1 && (double)M * N > 4e6) reduction(+ : cnt)
        for (int p = 0; p < c->npa; p++) {
            int i0 = p * mr, m = M - i0 < mr ? M - i0 : mr;
            for (int r = 0; r < m; r++) {
                const uint64_t *w = c->Mrow + (size_t)(i0 + r) * (NW + 1);
                cnt += sc->popand(w, w, (size_t)NW);
            }
            uint64_t *mp = c->Mpan + (size_t)p * (NW + 1) * mr;
            for (int w = 0; w <= NW; w++)
                for (int r = 0; r < mr; r++)
                    mp[(size_t)w * mr + r] = r < m ? c->Mrow[(size_t)(i0 + r) * (NW + 1) + w] : 0;
            /* OR and AND of the panel's bit rows, 64 columns at a time */
            const int sw = c->sw, per = 64 / sw;
            const uint64_t fld = sw == 64 ? ~0ull : (1ull << sw) - 1;
            for (int w = 0; w < NW; w++) {
                uint64_t any = 0, all = ~0ull;
                for (int r = 0; r < m; r++) {
                    uint64_t x = c->Mrow[(size_t)(i0 + r) * (NW + 1) + w];
                    any |= x;
                    all &= x;
                }
                if (w == NW - 1 && (N & 63)) all |= ~0ull << (N & 63); /* past N: no constraint */
                for (int t = 0; t < per && w * per + t < c->nsp; t++) {
                    uint64_t a = (any >> (t * sw)) & fld, l = (all >> (t * sw)) & fld;
                    c->tcls[(size_t)p * c->nsp + w * per + t] = (uint8_t)(!a ? 0 : l == fld ? 2 : 1);
                }
            }
        }
        c->mask_elems = cnt;
    }
    if (!c->skip) return;
    memset(c->Apan, 0, sizeof(uint64_t) * (size_t)c->npa * KW);
    if (c->nnzAg) memset(c->nnzAg, 0, sizeof(int32_t) * (size_t)c->tm * K);
    if (c->Arow) memset(c->Arow, 0, sizeof(uint64_t) * (size_t)M * KW);
    if (!c->ta) {
        /* row i of A holds op(A)[i, :] */
        for (int i = 0; i < M; i++) {
            const float *a = c->A + (ptrdiff_t)i * c->lda;
            int p = i / mr;
            uint64_t *rb = c->Arow ? c->Arow + (size_t)i * KW : (uint64_t *)(void *)(c->thr + c->o_sub);
            if (!c->Arow && (size_t)KW * 8 > c->o_done - c->o_sub) {
                /* the scratch is too small for a very long row: go by chunks */
                uint64_t w;
                for (int k0 = 0; k0 < K; k0 += 64) {
                    sc->nzbits(a + k0, K - k0 < 64 ? K - k0 : 64, &w);
                    c->Apan[(size_t)p * KW + k0 / 64] |= w;
                }
            } else {
                sc->nzbits(a, K, rb);
                for (int w = 0; w < KW; w++) c->Apan[(size_t)p * KW + w] |= rb[w];
            }
            if (c->nnzAg) sc->nzcount(a, K, c->nnzAg + (size_t)row_group(c, p) * K);
        }
    } else {
        /* row k of A holds op(A)[:, k] */
        int MW = (M + 63) / 64;
        uint64_t stackw[64];
        uint64_t *cb = MW <= 64 ? stackw : NULL;
        for (int k = 0; k < K; k++) {
            const float *a = c->A + (ptrdiff_t)k * c->lda;
            uint64_t bit = 1ull << (k & 63);
            if (cb) sc->nzbits(a, M, cb);
            for (int p = 0; p < c->npa; p++) {
                int i0 = p * mr, m = M - i0 < mr ? M - i0 : mr, any = 0;
                if (cb)
                    any = anybits(cb, i0, m);
                else
                    for (int r = 0; r < m; r++) any |= a[i0 + r] != 0.0f;
                if (!any) continue;
                c->Apan[(size_t)p * KW + (k >> 6)] |= bit;
                int g = c->nnzAg ? row_group(c, p) : 0;
                for (int r = 0; r < m; r++)
                    if (a[i0 + r] != 0.0f) {
                        if (c->nnzAg) c->nnzAg[(size_t)g * K + k]++;
                        if (c->Arow) c->Arow[(size_t)(i0 + r) * KW + (k >> 6)] |= bit;
                    }
            }
        }
    }
}

/* ------------------------------------------------------------ the driver */

static void prefetch_panel(const float *b, int kb, ptrdiff_t bs, int nr) {
    for (int p = 0; p < kb; p++, b += bs)
        for (int j = 0; j < nr; j += 16) __builtin_prefetch(b + j, 0, 2);
}

/* marks a panel scanned: 2 when every step of every sub-panel is live */
static void panel_done(uint8_t *d, const uint64_t *psub, int ns, int kb, int kbw) {
    uint64_t lw = (kb & 63) ? (1ull << (kb & 63)) - 1 : ~0ull;
    int f = 1;
    for (int v = 0; v < ns && f; v++)
        for (int w = 0; w < kbw; w++) f &= psub[v * kbw + w] == (w == kbw - 1 ? lw : ~0ull);
    *d = (uint8_t)(1 + f);
}

static void zero_tile(float *c, ptrdiff_t ldc, int m, int n) {
    for (int r = 0; r < m; r++) memset(c + r * ldc, 0, sizeof(float) * (size_t)n);
}

/* Relative cost of one step of the skip kernel on a tile (the dense kernel's
 * step = 1), and of one step of it on an sw-wide sub-tile per sw columns
 * (AVX-512, timed on a cached 8 x 48 tile: about 1.02 and 1.25). The choice
 * changes only the speed, never a bit. */
#define COST_SKIP 1.05
#define COST_SUB 1.3

typedef struct acc2 {
    uint64_t macs, elem;
} acc2;

/* gemm.c's gemm_region with the skipping and the counting. */
static acc2 region(const spctx *g, int grp, int m0, int m1, int n0, int n1, char *tb) {
    const et_gemm_kinfo *ki = g->ki;
    const et_spgemm_scan *sc = g->sc;
    const int mr = ki->mr, nr = ki->nr, kc = ki->kc, mc = ki->mc, nc = ki->nc;
    const int sw = g->sw, nsub = g->nsub, KW = g->KW, ncw = g->ncw;
    const int direct_b = !g->tb && m1 - m0 <= mc;
    const int direct_a = n1 - n0 <= 2 * nr;
    float *Ap = (float *)(void *)tb, *Bp = (float *)(void *)(tb + g->o_bp);
    uint64_t *sub = (uint64_t *)(void *)(tb + g->o_sub);
    uint8_t *done = (uint8_t *)(tb + g->o_done);
    int32_t *kcnt = (int32_t *)(void *)(tb + g->o_kcnt), *ccnt = (int32_t *)(void *)(tb + g->o_ccnt);
    uint64_t *brow = g->need_brow ? (uint64_t *)(void *)(tb + g->o_brow) : NULL;
    uint64_t *mtmp = (uint64_t *)(void *)(tb + g->o_mtmp);
    uint64_t *pat = (uint64_t *)(void *)(tb + g->o_pat);
    acc2 r = {0, 0};
    const int work = !g->count_only;
    /* whether the last B panel scanned had every step live: then the next
     * one is scanned by its first tile, computed densely; after a sparse
     * panel it is scanned on its own, so that every tile can skip */
    int dense_b = 1;
    for (int jc = n0; jc < n1; jc += nc) {
        int nb = n1 - jc < nc ? n1 - jc : nc;
        if (g->cmode == CNT_COLS) memset(ccnt, 0, sizeof(int32_t) * (size_t)nb);
        if (brow) memset(brow, 0, sizeof(uint64_t) * (size_t)g->K * ncw);
        for (int pc = 0; pc < g->K; pc += kc) {
            int kb = g->K - pc < kc ? g->K - pc : kc;
            int kbw = (kb + 63) / 64, pw = pc / 64;
            int last = pc + kb >= g->K;
            float beta = pc == 0 ? g->beta : 1.0f;
            int packed_b = 0;
            memset(done, 0, (size_t)(nb + nr - 1) / nr);
            if (g->cmode == CNT_NOMASK) memset(kcnt, 0, sizeof(int32_t) * (size_t)kb);
            for (int ic = m0; ic < m1; ic += mc) {
                int mb = m1 - ic < mc ? m1 - ic : mc;
                const float *ap = Ap;
                ptrdiff_t ars = 1, as = mr, ap_step = kb;
                int packed_a = 0;
                for (int jr = 0; jr < nb; jr += nr) {
                    int n = nb - jr < nr ? nb - jr : nr;
                    int jq = jr / nr, sq0 = (jc + jr) / sw, ns = (n + sw - 1) / sw;
                    const float *bp = NULL;
                    ptrdiff_t bs = nr;
                    uint64_t *psub = sub + (size_t)jq * nsub * kbw;
                    for (int ir = 0; ir < mb; ir += mr) {
                        int m = mb - ir < mr ? mb - ir : mr;
                        int iq = (ic + ir) / mr;
                        float *cp = work ? g->C + (ptrdiff_t)(ic + ir) * g->ldc + jc + jr : NULL;
                        int cls[8], nact = 0, full = 1;
                        for (int v = 0; v < ns; v++) {
                            cls[v] = g->tcls ? g->tcls[(size_t)iq * g->nsp + sq0 + v] : 2;
                            nact += cls[v] != 0;
                            full &= cls[v] == 2;
                        }
                        if (!nact) {
                            if (pc == 0 && work) zero_tile(cp, g->ldc, m, n);
                            continue;
                        }
                        /* operands are packed, and B's panel scanned, on first use */
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
                        /* the panel's first tile: computed densely by the AVX-512
                         * tile that scans B on the way (its loads come from
                         * memory, overlapped with the FMAs); else a separate scan */
                        int tscan = g->skip && !done[jq] && work && g->ktile && nact == ns && dense_b;
                        if (g->skip && !done[jq] && !tscan) {
                            sc->panel(bp, bs, kb, n, sw, ns, psub, kbw,
                                      g->cmode == CNT_NOMASK ? kcnt : NULL,
                                      g->cmode == CNT_COLS ? ccnt + jr : NULL,
                                      brow ? brow + (size_t)pc * ncw : NULL, (size_t)ncw, jr);
                            panel_done(done + jq, psub, ns, kb, kbw);
                            dense_b = done[jq] == 2;
                        }
                        if (!work) continue;
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
                        const uint64_t *mrows = g->Mrow ? g->Mrow + (size_t)(ic + ir) * (g->NW + 1) : NULL;
                        const size_t mst = (size_t)g->NW + 1;
                        /* the last block of a masked tile stores through the mask:
                         * in registers (AVX-512 tile) or by a pass after the kernel */
                        const int lastmask = last && !full;
                        /* kp: the row panel's mask words (AVX-512: mr == 8) */
                        const uint64_t *kp = NULL, *mp = NULL;
                        if (lastmask && g->ktile) {
                            mp = g->Mpan + (size_t)iq * (g->NW + 1) * mr;
                            kp = mp + (size_t)((jc + jr) >> 6) * mr;
                        }
                        const int ko = (jc + jr) & 63;
                        int post = lastmask && !kp; /* mask the whole tile afterwards */
                        if (tscan) {
                            g->tscan(m, n, kb, a, ars, as, bp, bs, cp, g->ldc, beta, kp, ko, pat);
                            g->patpanel(pat, kb, n, ns, psub, kbw, g->cmode == CNT_NOMASK ? kcnt : NULL,
                                        g->cmode == CNT_COLS ? ccnt + jr : NULL,
                                        brow ? brow + (size_t)pc * ncw : NULL, (size_t)ncw, jr);
                            panel_done(done + jq, psub, ns, kb, kbw);
                            dense_b = done[jq] == 2;
                            r.macs += (uint64_t)kb * m * n;
                        } else if (!g->skip) {
                            if (kp)
                                g->ktile(m, n, NULL, kb, a, ars, as, bp, bs, cp, g->ldc, beta, kp, ko);
                            else
                                ki->kern(m, n, kb, a, ars, as, bp, bs, cp, g->ldc, 1.0f, beta);
                            r.macs += (uint64_t)kb * m * n;
                        } else {
                            /* per sub-tile step masks and their union; all steps
                             * live in every active sub-tile (dense data): the
                             * dense kernel, without counting */
                            const uint64_t *wa = g->Apan + (size_t)iq * KW + pw;
                            uint64_t km[8][8], ku[8], lastw = (kb & 63) ? (1ull << (kb & 63)) - 1 : ~0ull;
                            int cnt[8], cu = 0, allfull = 1, how;
                            double csub = 0;
                            if (done[jq] == 2 && nact == ns) {
                                for (int w = 0; w < kbw; w++) allfull &= wa[w] == (w == kbw - 1 ? lastw : ~0ull);
                                if (allfull) goto dense_tile;
                            }
                            allfull = 1;
                            for (int w = 0; w < kbw; w++) ku[w] = 0;
                            for (int v = 0; v < ns; v++) {
                                if (!cls[v]) continue;
                                for (int w = 0; w < kbw; w++) {
                                    km[v][w] = wa[w] & psub[v * kbw + w];
                                    ku[w] |= km[v][w];
                                    allfull &= km[v][w] == (w == kbw - 1 ? lastw : ~0ull);
                                }
                            }
                            if (allfull) {
                            dense_tile:
                                how = 1;
                            } else {
                                for (int v = 0; v < ns; v++) {
                                    cnt[v] = 0;
                                    if (!cls[v]) continue;
                                    for (int w = 0; w < kbw; w++) cnt[v] += popc(km[v][w], g->hwpop);
                                    csub += cnt[v] * (ns > 1 ? COST_SUB : COST_SKIP);
                                }
                                for (int w = 0; w < kbw; w++) cu += popc(ku[w], g->hwpop);
                                if (cu == 0 && pc > 0)
                                    how = 0; /* nothing to add: C stays as it is */
                                else if ((double)kb * ns <= cu * ns * COST_SKIP && kb * ns <= csub)
                                    how = 1;
                                else if (cu * ns * COST_SKIP <= csub || ns == 1)
                                    how = 2;
                                else
                                    how = 3;
                            }
                            if (how == 0) {
                                post = lastmask;
                            } else if (how == 1) {
                                if (kp)
                                    g->ktile(m, n, NULL, kb, a, ars, as, bp, bs, cp, g->ldc, beta, kp, ko);
                                else
                                    ki->kern(m, n, kb, a, ars, as, bp, bs, cp, g->ldc, 1.0f, beta);
                                r.macs += (uint64_t)kb * m * n;
                            } else if (how == 2) {
                                if (g->ktile)
                                    g->ktile(m, n, ku, kb, a, ars, as, bp, bs, cp, g->ldc, beta, kp, ko);
                                else
                                    g->skern(m, n, ku, kb, a, ars, as, bp, bs, cp, g->ldc, beta);
                                r.macs += (uint64_t)cu * m * n;
                            } else {
                                for (int v = 0; v < ns; v++) {
                                    int nv = n - v * sw < sw ? n - v * sw : sw;
                                    float *cv = cp + v * sw;
                                    if (!cls[v]) {
                                        /* zero once; a later dense block may have
                                         * written it, the last block clears it */
                                        if (pc == 0 || (last && kp)) zero_tile(cv, g->ldc, m, nv);
                                        continue;
                                    }
                                    if (cnt[v] == 0 && pc > 0) {
                                        if (kp && cls[v] == 1)
                                            sc->masktile(cv, g->ldc, mrows, mst, jc + jr + v * sw, m, nv);
                                        continue;
                                    }
                                    int lov = jc + jr + v * sw;
                                    if (g->ktile)
                                        g->ktile(m, nv, km[v], kb, a, ars, as, bp + v * sw, bs, cv,
                                                 g->ldc, beta, kp ? mp + (size_t)(lov >> 6) * mr : NULL,
                                                 lov & 63);
                                    else
                                        g->skern(m, nv, km[v], kb, a, ars, as, bp + v * sw, bs, cv,
                                                 g->ldc, beta);
                                    r.macs += (uint64_t)cnt[v] * m * nv;
                                }
                            }
                        }
                        if (post) sc->masktile(cp, g->ldc, mrows, mst, jc + jr, m, n);
                    }
                }
            }
            if (g->cmode == CNT_NOMASK) {
                const int32_t *na = g->nnzAg + (size_t)grp * g->K + pc;
                for (int k = 0; k < kb; k++) r.elem += (uint64_t)na[k] * (uint64_t)kcnt[k];
            }
        }
        if (g->cmode == CNT_COLS || g->cmode == CNT_DIRECT) {
            int nbw = (nb + 63) / 64;
            for (int i = m0; i < m1; i++) {
                const uint8_t *mk = g->mask + (ptrdiff_t)i * g->ldm + jc;
                const uint64_t *mrow = g->Mrow + (size_t)i * (g->NW + 1);
                const uint64_t *ar = g->Arow + (size_t)i * KW;
                uint64_t s = 0;
                if (g->cmode == CNT_COLS) {
                    s = (uint64_t)sc->maskdot(mrow, jc, ccnt, nb);
                }
                if (brow) {
                    sc->mbits(mk, nb, mtmp);
                    for (int w = 0; w < KW; w++) {
                        uint64_t bits = g->cmode == CNT_COLS ? ~ar[w] : ar[w];
                        if (w == KW - 1 && (g->K & 63)) bits &= (1ull << (g->K & 63)) - 1;
                        while (bits) {
                            int k = w * 64 + __builtin_ctzll(bits);
                            bits &= bits - 1;
                            uint64_t pc2 = sc->popand(mtmp, brow + (size_t)k * ncw, (size_t)nbw);
                            if (g->cmode == CNT_COLS)
                                s -= pc2;
                            else
                                s += pc2;
                        }
                    }
                }
                r.elem += s;
            }
        }
    }
    return r;
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
    if (!skip_zeros && !mask) {
        /* nothing to skip: exactly et_sgemm */
        if (!count_only) et_sgemm_isa(ki->isa, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
        s.macs_elem = (uint64_t)M * N * K;
        s.macs_cpu = count_only ? 0 : s.macs_elem;
        if (st) *st = s;
        return;
    }
    if (!count_only && et_gemm_dot_fits(ta, tb, M, N, K)) {
        /* et_sgemm sums this shape on its dot path (gemm_dot.h), not on the
         * blocking the skip kernels share: the same product densely, then the
         * mask, and the executed MACs from the counting pass */
        et_sgemm_isa(ki->isa, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
        if (mask)
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++)
                    if (!mask[(ptrdiff_t)i * ldmask + j]) C[(ptrdiff_t)i * ldc + j] = 0.0f;
        run(isa, ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc, skip_zeros, mask, ldmask, &s, 1);
        s.macs_cpu = (uint64_t)M * N * K;
        if (st) *st = s;
        return;
    }
    spctx g;
    memset(&g, 0, sizeof g);
    g.ki = ki;
    g.skern = pick_skip(ki->isa);
#if ET_GEMM_HAVE_X86
    if (ki->isa == ET_ISA_AVX512) {
        g.ktile = et_spgemm_tile_avx512;
        g.tscan = et_spgemm_tilescan_avx512;
        g.patpanel = g.sc == &scan_avx512 ? et_spgemm_patpanel_vpop_avx512 : et_spgemm_patpanel_avx512;
    }
#endif
    g.sc = pick_scan(ki->isa);
#if ET_GEMM_HAVE_X86
    g.hwpop = ki->isa >= ET_ISA_AVX2 && __builtin_cpu_supports("popcnt");
#endif
    g.ta = ta != 0, g.tb = tb != 0, g.M = M, g.N = N, g.K = K;
    g.A = A, g.lda = lda, g.B = B, g.ldb = ldb, g.beta = beta, g.C = C, g.ldc = ldc;
    g.skip = skip_zeros != 0, g.mask = mask, g.ldm = ldmask;
    g.KW = (K + 63) / 64, g.NW = (N + 63) / 64;
    g.npa = (M + ki->mr - 1) / ki->mr;
    g.sw = ki->isa == ET_ISA_AVX512 ? 16 : ki->nr; /* divides 64 */
    g.nsub = ki->nr / g.sw;
    g.nsp = (N + g.sw - 1) / g.sw;
    int nested = 0;
#ifdef _OPENMP
    nested = omp_in_parallel();
#endif
    int T = nested ? 1 : et_get_threads();
    if (T < 1) T = 1;
    g.tm = g.tn = 1;
    if (T > 1) et_gemm_partition(ki, M, N, K, T, &g.tm, &g.tn);
    g.T = T;
    if (!g.skip)
        g.cmode = CNT_NONE;
    else if (!mask)
        g.cmode = CNT_NOMASK;
    else {
        /* the cheaper side of A: its non-zeros (direct) or its zeros */
        uint64_t nz = 0, w;
        int rows = ta ? K : M, cols = ta ? M : K;
        for (int i = 0; i < rows; i++)
            for (int c0 = 0; c0 < cols; c0 += 64) {
                g.sc->nzbits(A + (ptrdiff_t)i * lda + c0, cols - c0 < 64 ? cols - c0 : 64, &w);
                nz += (uint64_t)popc64(w);
            }
        uint64_t z = (uint64_t)M * K - nz;
        g.cmode = nz < z ? CNT_DIRECT : CNT_COLS;
        g.need_brow = g.cmode == CNT_DIRECT ? nz > 0 : z > 0;
    }
    size_t bytes = layout(&g, NULL);
    int own = 0;
    char *mem = NULL;
    if (!nested && !atomic_flag_test_and_set_explicit(&ws_busy, memory_order_acquire)) {
        if (ws_size < bytes) {
            free(ws_mem);
            ws_mem = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
            ws_size = ws_mem ? bytes : 0;
        }
        mem = ws_mem;
        if (!mem)
            atomic_flag_clear_explicit(&ws_busy, memory_order_release);
        else
            own = 1;
    } else if (nested) {
        /* a call inside a parallel region (conv's lanes): this thread's own
         * buffer, grown on demand and kept like the shared one */
        mem = et_tlbuf_get(&tl_buf, bytes);
        own = 3;
    } else {
        mem = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
        own = 2;
    }
    if (!mem) {
        /* no memory for the bitmasks: the reference gives the same results */
        et_sgemm_sparse_ref(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc, skip_zeros, mask,
                            ldmask, st);
        return;
    }
    layout(&g, mem);
    g.count_only = count_only;
    prepass(&g);
    if (g.cmode == CNT_NONE) s.macs_elem = mask ? g.mask_elems * (uint64_t)K : (uint64_t)M * N * K;
    if (!count_only || g.skip) {
        /* counting alone still walks B through the driver with C untouched */
        int nreg = g.tm * g.tn, mt = g.npa, nt = (N + ki->nr - 1) / ki->nr;
        uint64_t macs = 0, elem = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(nreg) reduction(+ : macs, elem) if (nreg > 1)
#endif
        {
            int tid = 0, nth = 1;
#ifdef _OPENMP
            tid = omp_get_thread_num(), nth = omp_get_num_threads();
#endif
            char *tbuf = g.thr + g.thr_per * (size_t)tid;
            for (int r = tid; r < nreg; r += nth) {
                int gi = r / g.tn;
                int a0 = (int)((long)mt * gi / g.tm), a1 = (int)((long)mt * (gi + 1) / g.tm);
                int b0 = (int)((long)nt * (r % g.tn) / g.tn), b1 = (int)((long)nt * (r % g.tn + 1) / g.tn);
                int m0 = a0 * ki->mr, m1 = a1 * ki->mr < M ? a1 * ki->mr : M;
                int n0 = b0 * ki->nr, n1 = b1 * ki->nr < N ? b1 * ki->nr : N;
                if (m0 < m1 && n0 < n1) {
                    acc2 a = region(&g, gi, m0, m1, n0, n1, tbuf);
                    macs += a.macs;
                    elem += a.elem;
                }
            }
        }
        if (g.skip) s.macs_elem = elem;
        s.macs_cpu = count_only ? 0 : macs;
    }
    if (own == 1)
        atomic_flag_clear_explicit(&ws_busy, memory_order_release);
    else if (own == 2)
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
    et_spgemm_count c;
    et_spgemm_count_fast(ta, tb, M, N, K, A, lda, B, ldb, skip_zeros, mask, ldmask, &c);
    if (st) st->macs_elem = c.macs_elem, st->macs_cpu = 0;
}
