/* The fast exact counting pass and the matmul path's per-call choice between
 * the zero-skipping kernel and the dense one (spgemm.h; docs/sparsity.md,
 * "Kernels").
 *
 * macs_elem = #{(i,j,k): mask[i,j] != 0, and with skip_zeros op(A)[i,k] != 0
 * and op(B)[k,j] != 0} from closed forms over the non-zero patterns (spgemm.h
 * lists them), never by walking the product: one pass over op(A), one over
 * op(B) and one over the mask, each vectorised through the scans of
 * spgemm.c (et_spgemm_scan), threads over disjoint rows or column blocks and
 * integer sums, so the count is the same at any thread count.
 */
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/tlbuf.h"
#include "kernels/spgemm.h"
#include "kernels/spgemm_internal.h"

/* Work buffers of the calling thread, grown on demand and kept (a training
 * loop allocates on its first calls only). */
static et_tlbuf cbuf; /* core/tlbuf.h */

static void *grow(size_t need) { return et_tlbuf_get(&cbuf, need); }

static size_t al64(size_t b) { return (b + 63) & ~(size_t)63; }

static int popc64(uint64_t x) {
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
    return (int)((x * 0x0101010101010101ull) >> 56);
}

/* bit 0 of each 16-bit (8-bit) field = any bit of that field */
static uint64_t any16(uint64_t x) {
    x |= x >> 8, x |= x >> 4, x |= x >> 2, x |= x >> 1;
    return x & 0x0001000100010001ull;
}
static uint64_t any8(uint64_t x) {
    x |= x >> 4, x |= x >> 2, x |= x >> 1;
    return x & 0x0101010101010101ull;
}

#if ET_GEMM_HAVE_X86
void et_spcount_nzscan_avx512(const float *x, int n, uint64_t *bits, int32_t *cnt);
#endif

/* bits of x != 0 and cnt[t] += (x[t] != 0), in one pass where the ISA has it */
static void nzscan(et_isa isa, const et_spgemm_scan *sc, const float *x, int n, uint64_t *bits, int32_t *cnt) {
#if ET_GEMM_HAVE_X86
    if (isa >= ET_ISA_AVX512) {
        et_spcount_nzscan_avx512(x, n, bits, cnt);
        return;
    }
#endif
    sc->nzbits(x, n, bits);
    sc->nzcount(x, n, cnt);
}

static uint64_t popw(const et_spgemm_scan *sc, const uint64_t *w, size_t nw) { return sc->popand(w, w, nw); }

/* How the masked count is formed (see spgemm.h). */
enum { M_COLS, M_ROWS, M_MINUS, M_DIRECT };

#define PR 8  /* rows of a panel (AVX-512 MR) for the live estimate */
#define GW 16 /* columns of a group (AVX-512 sub-tile) */

static int nthreads(void) {
    int T = 1;
#ifdef _OPENMP
    if (!omp_in_parallel()) T = et_get_threads();
#endif
    return T < 1 ? 1 : T;
}

static int tid(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* the reference, for a call that cannot get its buffers */
static void count_slow(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                       int skip, const uint8_t *mask, int ldm, et_spgemm_count *out) {
    uint64_t e = 0, kept = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            if (mask && !mask[(ptrdiff_t)i * ldm + j]) continue;
            kept++;
            if (!skip) {
                e += (uint64_t)K;
                continue;
            }
            for (int k = 0; k < K; k++) {
                float a = ta ? A[(ptrdiff_t)k * lda + i] : A[(ptrdiff_t)i * lda + k];
                float b = tb ? B[(ptrdiff_t)j * ldb + k] : B[(ptrdiff_t)k * ldb + j];
                e += a != 0.0f && b != 0.0f;
            }
        }
    out->macs_elem = e, out->kept = kept, out->live = 1.0;
}

void et_spgemm_count_isa(et_isa isa, int ta, int tb, int M, int N, int K, const float *A, int lda,
                         const float *B, int ldb, int skip, const uint8_t *mask, int ldm,
                         et_spgemm_count *out) {
    out->macs_elem = 0, out->kept = 0, out->live = 1.0;
    if (M <= 0 || N <= 0) return;
    const et_spgemm_scan *sc = et_spgemm_scan_for(isa);
    /* small operands: one thread (a parallel region's barriers cost more
     * than the scan, the more so when the other core is busy) */
    const int T = (double)M * K + (double)K * N + (double)M * N < (double)(1 << 20) ? 1 : nthreads();
    const int NW = (N + 63) / 64, KW = (K > 0 ? K + 63 : 63) / 64, MW = (M + 63) / 64;
    const int npa = (M + PR - 1) / PR, ngr = (N + GW - 1) / GW;
    if (K <= 0) skip = 0;
    /* ---- buffers */
    const int masked = mask != NULL, sm = skip && masked;
    size_t o_ca = 0, sz = 0;
    /* no mask: ca/cb per thread [T][K] each; mask: Abits [M][KW], cbcol [N] */
    if (skip && !masked) sz += 2 * al64(sizeof(int32_t) * (size_t)T * K);
    size_t o_abits = sz;
    if (sm) sz += al64(sizeof(uint64_t) * (size_t)M * KW);
    size_t o_cbcol = sz;
    if (sm) sz += al64(sizeof(int32_t) * (size_t)N);
    size_t o_tmp = sz; /* per thread: PR + 1 rows of max(NW, KW, MW) + 1 words */
    const int TW = (NW > KW ? (NW > MW ? NW : MW) : (KW > MW ? KW : MW)) + 1;
    sz += al64(sizeof(uint64_t) * (size_t)T * (PR + 1) * TW);
    size_t o_brow = sz; /* [K][NW], only for the popcount forms */
    char *mem = grow(sz + (sm ? al64(sizeof(uint64_t) * (size_t)K * NW) : 0));
    if (!mem) {
        count_slow(ta, tb, M, N, K, A, lda, B, ldb, skip, mask, ldm, out);
        return;
    }
#define TMP(t) ((uint64_t *)(void *)(mem + o_tmp) + (size_t)(t) * (PR + 1) * TW)
    double fa = 1.0, fb = 1.0;
    if (skip && !masked) {
        /* sum_k nnz(op(A)[:,k]) * nnz(op(B)[k,:]) */
        int32_t *ca = (int32_t *)(void *)(mem + o_ca);
        int32_t *cb = (int32_t *)(void *)(mem + o_ca + al64(sizeof(int32_t) * (size_t)T * K));
        memset(ca, 0, sizeof(int32_t) * (size_t)T * K);
        memset(cb, 0, sizeof(int32_t) * (size_t)T * K);
        uint64_t liveA = 0, liveB = 0, ecol = 0;
#pragma omp parallel num_threads(T) if (T > 1) reduction(+ : liveA, liveB, ecol)
        {
            const int t = tid();
            uint64_t *tmp = TMP(t), *orw = tmp + TW;
            int32_t *cat = ca + (size_t)t * K, *cbt = cb + (size_t)t * K;
            if (!ta) { /* A rows: op(A) rows i, K long */
#pragma omp for schedule(static)
                for (int p = 0; p < npa; p++) {
                    memset(orw, 0, sizeof(uint64_t) * (size_t)KW);
                    for (int i = p * PR; i < M && i < p * PR + PR; i++) {
                        const float *a = A + (ptrdiff_t)i * lda;
                        nzscan(isa, sc, a, K, tmp, cat);
                        for (int w = 0; w < KW; w++) orw[w] |= tmp[w];
                    }
                    liveA += popw(sc, orw, (size_t)KW);
                }
            } else { /* A rows: op(A) columns k, M long */
#pragma omp for schedule(static)
                for (int k = 0; k < K; k++) {
                    sc->nzbits(A + (ptrdiff_t)k * lda, M, tmp);
                    cat[k] = (int32_t)popw(sc, tmp, (size_t)MW);
                    for (int w = 0; w < MW; w++) liveA += (uint64_t)popc64(any8(tmp[w]));
                }
            }
            if (!tb) { /* B rows: op(B) rows k, N long */
#pragma omp for schedule(static)
                for (int k = 0; k < K; k++) {
                    sc->nzbits(B + (ptrdiff_t)k * ldb, N, tmp);
                    cbt[k] = (int32_t)popw(sc, tmp, (size_t)NW);
                    for (int w = 0; w < NW; w++) liveB += (uint64_t)popc64(any16(tmp[w]));
                }
            } else {
                /* B rows: op(B) columns j, K long. sum_k ca[k] * cb[k] =
                 * sum_j (sum of ca[k] over the non-zeros of column j): the
                 * thread slices of ca summed first, then one read of B */
                (void)cbt;
#pragma omp for schedule(static)
                for (int k = 0; k < K; k++)
                    for (int u = 1; u < T; u++) ca[k] += ca[(size_t)u * K + k];
#pragma omp for schedule(static)
                for (int g = 0; g < ngr; g++) {
                    memset(orw, 0, sizeof(uint64_t) * (size_t)KW);
                    for (int j = g * GW; j < N && j < g * GW + GW; j++) {
                        sc->nzbits(B + (ptrdiff_t)j * ldb, K, tmp);
                        tmp[KW] = 0;
                        ecol += (uint64_t)sc->maskdot(tmp, 0, ca, K);
                        for (int w = 0; w < KW; w++) orw[w] |= tmp[w];
                    }
                    liveB += popw(sc, orw, (size_t)KW);
                }
            }
        }
        uint64_t e = ecol;
        for (int k = 0; k < K && !tb; k++) {
            int64_t sa = 0, sb = 0;
            for (int t = 0; t < T; t++) sa += ca[(size_t)t * K + k], sb += cb[(size_t)t * K + k];
            e += (uint64_t)sa * (uint64_t)sb;
        }
        out->macs_elem = e, out->kept = (uint64_t)M * N;
        out->live = (double)liveA / ((double)npa * K) * ((double)liveB / ((double)ngr * K));
        return;
    }
    /* ---- with a mask (or nothing to skip) */
    uint64_t *Abits = (uint64_t *)(void *)(mem + o_abits);
    int32_t *cbcol = (int32_t *)(void *)(mem + o_cbcol);
    uint64_t *Brow = (uint64_t *)(void *)(mem + o_brow);
    int mode = M_COLS;
    uint64_t nnzA = 0, nnzB = 0;
    if (sm) {
        uint64_t liveA = 0;
        if (!ta) {
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1) reduction(+ : nnzA, liveA)
            for (int p = 0; p < npa; p++) {
                uint64_t *orw = TMP(tid());
                memset(orw, 0, sizeof(uint64_t) * (size_t)KW);
                for (int i = p * PR; i < M && i < p * PR + PR; i++) {
                    uint64_t *ab = Abits + (size_t)i * KW;
                    sc->nzbits(A + (ptrdiff_t)i * lda, K, ab);
                    nnzA += popw(sc, ab, (size_t)KW);
                    for (int w = 0; w < KW; w++) orw[w] |= ab[w];
                }
                liveA += popw(sc, orw, (size_t)KW);
            }
        } else {
            /* op(A) column k is stored row k: scatter its bits into the rows;
             * a thread owns 64 k (one word of every row) */
            memset(Abits, 0, sizeof(uint64_t) * (size_t)M * KW);
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1) reduction(+ : nnzA, liveA)
            for (int kw = 0; kw < KW; kw++) {
                uint64_t *tmp = TMP(tid());
                for (int k = kw * 64; k < K && k < kw * 64 + 64; k++) {
                    sc->nzbits(A + (ptrdiff_t)k * lda, M, tmp);
                    const uint64_t bit = 1ull << (k & 63);
                    for (int w = 0; w < MW; w++) {
                        uint64_t x = tmp[w];
                        liveA += (uint64_t)popc64(any8(x));
                        while (x) {
                            int i = w * 64 + __builtin_ctzll(x);
                            x &= x - 1;
                            Abits[(size_t)i * KW + kw] |= bit;
                            nnzA++;
                        }
                    }
                }
            }
        }
        fa = (double)liveA / ((double)npa * K);
        const uint64_t zA = (uint64_t)M * K - nnzA;
        /* op(B): column counts, and the bit rows where a popcount form needs them */
        const int need_brow = zA > 0;
        uint64_t liveB = 0;
        if (!tb) {
            /* a thread owns a block of whole 64-column words */
            const int nblk = T * 4 < NW ? T * 4 : NW;
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1) reduction(+ : nnzB, liveB)
            for (int q = 0; q < nblk; q++) {
                int w0 = (int)((long)NW * q / nblk), w1 = (int)((long)NW * (q + 1) / nblk);
                int c0 = w0 * 64, c1 = w1 * 64 < N ? w1 * 64 : N;
                uint64_t *tmp = TMP(tid());
                memset(cbcol + c0, 0, sizeof(int32_t) * (size_t)(c1 - c0));
                for (int k = 0; k < K; k++) {
                    const float *b = B + (ptrdiff_t)k * ldb + c0;
                    uint64_t *bw = need_brow ? Brow + (size_t)k * NW + w0 : tmp;
                    nzscan(isa, sc, b, c1 - c0, bw, cbcol + c0);
                    for (int w = 0; w < w1 - w0; w++) {
                        nnzB += (uint64_t)popc64(bw[w]);
                        liveB += (uint64_t)popc64(any16(bw[w]));
                    }
                }
            }
        } else {
            if (need_brow) memset(Brow, 0, sizeof(uint64_t) * (size_t)K * NW);
            /* op(B) column j is stored row j; a thread owns 64 columns j */
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1) reduction(+ : nnzB, liveB)
            for (int jw = 0; jw < NW; jw++) {
                uint64_t *tmp = TMP(tid()), *orw = tmp + TW;
                for (int j = jw * 64; j < N && j < jw * 64 + 64; j++) {
                    if ((j & (GW - 1)) == 0) memset(orw, 0, sizeof(uint64_t) * (size_t)KW);
                    sc->nzbits(B + (ptrdiff_t)j * ldb, K, tmp);
                    cbcol[j] = (int32_t)popw(sc, tmp, (size_t)KW);
                    nnzB += (uint64_t)cbcol[j];
                    for (int w = 0; w < KW; w++) orw[w] |= tmp[w];
                    if ((j & (GW - 1)) == GW - 1 || j == N - 1) liveB += popw(sc, orw, (size_t)KW);
                    if (!need_brow) continue;
                    const uint64_t bit = 1ull << (j & 63);
                    for (int w = 0; w < KW; w++) {
                        uint64_t x = tmp[w];
                        while (x) {
                            int k = w * 64 + __builtin_ctzll(x);
                            x &= x - 1;
                            Brow[(size_t)k * NW + jw] |= bit;
                        }
                    }
                }
            }
        }
        fb = (double)liveB / ((double)ngr * K);
        if (zA == 0)
            mode = M_COLS;
        else if (nnzB == (uint64_t)K * N)
            mode = M_ROWS;
        else
            mode = zA <= nnzA ? M_MINUS : M_DIRECT;
    }
    /* ---- the mask pass: per row its bits, count, and the row's share of
     * macs_elem; per panel of PR rows the kept sub-tiles */
    uint64_t kept = 0, elem = 0, tiles = 0;
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1 && (double)M * N > 65536) \
    reduction(+ : kept, elem, tiles)
    for (int p = 0; p < npa; p++) {
        uint64_t *mw = TMP(tid()), *orw = mw + TW;
        memset(orw, 0, sizeof(uint64_t) * (size_t)NW);
        for (int i = p * PR; i < M && i < p * PR + PR; i++) {
            if (masked) {
                sc->mbits(mask + (ptrdiff_t)i * ldm, N, mw);
                mw[NW] = 0;
            } else {
                for (int w = 0; w < NW; w++) mw[w] = ~0ull;
                if (N & 63) mw[NW - 1] = (1ull << (N & 63)) - 1;
                mw[NW] = 0;
            }
            uint64_t ki = popw(sc, mw, (size_t)NW);
            kept += ki;
            for (int w = 0; w < NW; w++) orw[w] |= mw[w];
            if (!sm) {
                elem += ki * (uint64_t)K;
                continue;
            }
            const uint64_t *ab = Abits + (size_t)i * KW;
            if (mode == M_ROWS) {
                elem += ki * popw(sc, ab, (size_t)KW);
                continue;
            }
            uint64_t s = mode == M_DIRECT ? 0 : (uint64_t)sc->maskdot(mw, 0, cbcol, N);
            if (mode == M_MINUS || mode == M_DIRECT) {
                for (int w = 0; w < KW; w++) {
                    uint64_t bits = mode == M_MINUS ? ~ab[w] : ab[w];
                    if (w == KW - 1 && (K & 63)) bits &= (1ull << (K & 63)) - 1;
                    while (bits) {
                        int k = w * 64 + __builtin_ctzll(bits);
                        bits &= bits - 1;
                        uint64_t c = sc->popand(mw, Brow + (size_t)k * NW, (size_t)NW);
                        s = mode == M_MINUS ? s - c : s + c;
                    }
                }
            }
            elem += s;
        }
        for (int w = 0; w < NW; w++) tiles += (uint64_t)popc64(any16(orw[w]));
    }
#undef TMP
    out->macs_elem = elem, out->kept = kept;
    out->live = (masked ? (double)tiles / ((double)npa * ngr) : 1.0) * fa * fb;
}

void et_spgemm_count_fast(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
                          int ldb, int skip_zeros, const uint8_t *mask, int ldmask, et_spgemm_count *out) {
    et_spgemm_count_isa(et_cpu_isa(), ta, tb, M, N, K, A, lda, B, ldb, skip_zeros, mask, ldmask, out);
}

void et_spgemm_apply_mask(int M, int N, float *C, int ldc, const uint8_t *mask, int ldmask) {
    const int T = nthreads();
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1 && (double)M * N > 65536)
    for (int i = 0; i < M; i++) {
        const uint8_t *r = mask + (ptrdiff_t)i * ldmask;
        float *ci = C + (ptrdiff_t)i * ldc;
        for (int j = 0; j < N; j++) ci[j] = r[j] ? ci[j] : 0.0f;
    }
}

int et_spgemm_any_zero(const float *X, int rows, int cols, int ld) {
    int z = 0;
    for (int i = 0; i < rows && !z; i++) {
        const float *x = X + (ptrdiff_t)i * ld;
        for (int j = 0; j < cols; j++) z |= x[j] == 0.0f;
    }
    return z;
}

#if ET_GEMM_HAVE_X86
#define SPCOLS_KMAX 384 /* spcols_avx512.c */
void et_spcols_lists_avx512(int K, const float *B, ptrdiff_t ldb, int j0, int nc, int16_t *lk, float *lv,
                            int32_t *cnt);
void et_spcols_tile_avx512(int r0, int r1, int K, const float *A, ptrdiff_t lda, const int16_t *lk,
                           const float *lv, const int32_t *cnt, int j0, int nc, float beta, float *C,
                           ptrdiff_t ldc, const uint8_t *mask, ptrdiff_t ldm, int32_t *kcnt);

/* Fraction of non-zeros of a K x N row-major B, sampled on up to 8 windows
 * of 64 columns spread over N (all K rows). */
static double sample_density(const et_spgemm_scan *sc, int K, int N, const float *B, int ldb) {
    uint64_t nz = 0, n = 0, w;
    const int nwin = N / 64 < 8 ? N / 64 : 8;
    for (int q = 0; q < (nwin ? nwin : 1); q++) {
        int c0 = nwin ? (int)((long)(N - 64) * q / (nwin > 1 ? nwin - 1 : 1)) : 0, len = nwin ? 64 : N;
        for (int k = 0; k < K; k++) {
            sc->nzbits(B + (ptrdiff_t)k * ldb + c0, len, &w);
            nz += (uint64_t)popc64(w);
        }
        n += (uint64_t)len * K;
    }
    return n ? (double)nz / (double)n : 1.0;
}

/* The column-sparse kernel (conv EP: C = A^T B with a sparse B) where it
 * applies and B is sparse enough (sampled); returns 0 if it did not run.
 * *nnzb = B's non-zeros; with ck, also ck->kept (outputs the mask keeps) and
 * ck->macs_elem from the kernel's lists where op(A) has no zero (else the
 * caller counts). */
static int run_cols(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                    float beta, float *C, int ldc, int skip, const uint8_t *mask, int ldm, uint64_t *nnzb_out,
                    et_spgemm_count *ck) {
    const et_gemm_kinfo *ki = et_gemm_kinfo_for(et_cpu_isa());
    if (!skip || !ta || tb || K <= 0 || K > SPCOLS_KMAX || K > ki->kc || M <= 0 || N <= 0 ||
        ki->isa != ET_ISA_AVX512)
        return 0;
    const et_spgemm_scan *sc = et_spgemm_scan_for(ki->isa);
    if (K < ET_SPCOLS_KMIN) return 0;
    const double d = sample_density(sc, K, N, B, ldb);
    if (d > ET_SPCOLS_DENSITY_MAX) return 0;
    const int T = nthreads(), nblk = (N + 15) / 16;
    /* per 16-column block: its lists (16 x K k's and values), counts and kept counts */
    const size_t per = al64((size_t)16 * K * 2) + al64((size_t)16 * K * 4) + 128;
    char *mem = grow(per * (size_t)nblk);
    if (!mem) return 0;
#define BLK(q) (mem + per * (size_t)(q))
#define LK(q) ((int16_t *)(void *)BLK(q))
#define LV(q) ((float *)(void *)(BLK(q) + al64((size_t)16 * K * 2)))
#define CNT(q) ((int32_t *)(void *)(BLK(q) + al64((size_t)16 * K * 2) + al64((size_t)16 * K * 4)))
#define KC(q) (CNT(q) + 16)
    uint64_t kept = 0, elem = 0, nnzb = 0;
#pragma omp parallel num_threads(T) if (T > 1 && (double)M * N > 65536)
    {
#pragma omp for schedule(static)
        for (int q = 0; q < nblk; q++) {
            et_spcols_lists_avx512(K, B, ldb, q * 16, N - q * 16 < 16 ? N - q * 16 : 16, LK(q), LV(q), CNT(q));
            memset(KC(q), 0, 16 * sizeof(int32_t));
        }
        /* a thread owns a range of blocks and walks it row chunk by row
         * chunk, so that its stores stay within a few pages of C */
        int t = tid(), nt = 1;
#ifdef _OPENMP
        nt = omp_get_num_threads();
#endif
        const int q0 = (int)((long)nblk * t / nt), q1 = (int)((long)nblk * (t + 1) / nt);
        for (int r0 = 0; r0 < M; r0 += 64)
            for (int q = q0; q < q1; q++)
                et_spcols_tile_avx512(r0, M - r0 < 64 ? M : r0 + 64, K, A, lda, LK(q), LV(q), CNT(q), q * 16,
                                      N - q * 16 < 16 ? N - q * 16 : 16, beta, C, ldc, mask, ldm, KC(q));
    }
    for (int q = 0; q < nblk; q++)
        for (int jj = 0; jj < 16 && q * 16 + jj < N; jj++) {
            kept += (uint64_t)KC(q)[jj];
            elem += (uint64_t)KC(q)[jj] * (uint64_t)CNT(q)[jj];
            nnzb += (uint64_t)CNT(q)[jj];
        }
#undef BLK
#undef LK
#undef LV
#undef CNT
#undef KC
    *nnzb_out = nnzb;
    if (ck) ck->macs_elem = elem, ck->kept = kept, ck->live = d;
    return 1;
}

int et_sgemm_cols_known(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                        float beta, float *C, int ldc, uint64_t *macs_cpu) {
    uint64_t nnzb = 0;
    if (!run_cols(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc, 1, NULL, 0, &nnzb, NULL)) return 0;
    *macs_cpu = nnzb * (uint64_t)M;
    return 1;
}
#else
int et_sgemm_cols_known(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                        float beta, float *C, int ldc, uint64_t *macs_cpu) {
    return 0;
}
#endif

void et_sgemm_sparse_auto(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                          float beta, float *C, int ldc, int skip_zeros, const uint8_t *mask, int ldmask,
                          et_spgemm_stats *st, et_spgemm_count *cnt) {
    et_spgemm_count c;
#if ET_GEMM_HAVE_X86
    {
        uint64_t nnzb;
        if (run_cols(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc, skip_zeros, mask, ldmask, &nnzb, &c)) {
            if (et_spgemm_any_zero(A, K, M, lda)) /* the lists count B's zeros only */
                et_spgemm_count_fast(ta, tb, M, N, K, A, lda, B, ldb, skip_zeros, mask, ldmask, &c);
            if (st) st->macs_elem = c.macs_elem, st->macs_cpu = nnzb * (uint64_t)M;
            if (cnt) *cnt = c;
            return;
        }
    }
#endif
    et_spgemm_count_fast(ta, tb, M, N, K, A, lda, B, ldb, skip_zeros, mask, ldmask, &c);
    et_spgemm_stats s = {c.macs_elem, (uint64_t)(M > 0 ? M : 0) * (uint64_t)(N > 0 ? N : 0) * (uint64_t)(K > 0 ? K : 0)};
    if ((skip_zeros || mask) && c.live <= ET_SPGEMM_LIVE_MAX && K > 0) {
        et_spgemm_stats sp;
        et_sgemm_sparse(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc, skip_zeros, mask, ldmask, &sp);
        s.macs_cpu = sp.macs_cpu;
    } else if (M > 0 && N > 0) {
        et_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
        if (mask) et_spgemm_apply_mask(M, N, C, ldc, mask, ldmask);
    }
    if (st) *st = s;
    if (cnt) *cnt = c;
}

/* sum_r w[r] * nnz(row r) (along_rows) or sum_c w[c] * nnz(column c) of a
 * stored rows x cols matrix: one read, no buffer beyond the stack (the
 * column form as sum_r (w over the non-zeros of row r)). Threads over rows
 * with an integer sum: the same at any thread count. */
uint64_t et_spgemm_wsum(int along_rows, int rows, int cols, const float *X, int ld, const int32_t *w) {
    if (rows <= 0 || cols <= 0) return 0;
    const et_spgemm_scan *sc = et_spgemm_scan_for(et_cpu_isa());
    const int T = nthreads();
    uint64_t s = 0;
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1 && (double)rows * cols > 262144) reduction(+ : s)
    for (int r = 0; r < rows; r++) {
        uint64_t bits[65]; /* 4096 columns at a time (+1: maskdot may read a word past) */
        const float *x = X + (ptrdiff_t)r * ld;
        uint64_t rs = 0;
        for (int c0 = 0; c0 < cols; c0 += 4096) {
            const int n = cols - c0 < 4096 ? cols - c0 : 4096, nw = (n + 63) / 64;
            sc->nzbits(x + c0, n, bits);
            bits[nw] = 0;
            if (along_rows)
                rs += popw(sc, bits, (size_t)nw);
            else
                rs += (uint64_t)sc->maskdot(bits, 0, w + c0, n);
        }
        s += along_rows ? rs * (uint64_t)w[r] : rs;
    }
    return s;
}

void et_spgemm_linecount(int along_rows, int rows, int cols, const float *X, int ld, int32_t *cnt) {
    if (along_rows) {
        for (int r = 0; r < rows; r++) {
            const float *x = X + (ptrdiff_t)r * ld;
            int32_t c = 0;
            for (int t = 0; t < cols; t++) c += x[t] != 0.0f;
            cnt[r] = c;
        }
        return;
    }
    const et_spgemm_scan *sc = et_spgemm_scan_for(et_cpu_isa());
    memset(cnt, 0, sizeof(int32_t) * (size_t)(cols > 0 ? cols : 0));
    for (int r = 0; r < rows; r++) sc->nzcount(X + (ptrdiff_t)r * ld, cols, cnt);
}

void et_spgemm_nzcount_add(const float *x, int n, int32_t *cnt) {
    et_spgemm_scan_for(et_cpu_isa())->nzcount(x, n, cnt);
}
