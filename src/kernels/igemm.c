/* INT8 GEMM (kernels/igemm.h): argument checks, packing, the scalar path,
 * and the threaded driver over 32-column panels x row chunks, for int8 code
 * operands (int32 out) and for float operands on integer grids (float out,
 * codes taken back while packing). */
#include "kernels/igemm.h"

#include "core/tlbuf.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define PW 32    /* columns per panel */
#define IROWS 48 /* rows per task (and per output tile) */

static int have_vnni(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

et_isa et_igemm_isa(void) {
    et_isa isa = et_cpu_isa();
    if (isa >= ET_ISA_AVX512 && !have_vnni()) isa = ET_ISA_AVX2;
    return isa;
}

int et_igemm_code(float x, float scale) {
    float v = nearbyintf(x * (1.0f / scale)); /* the default rounding mode: to nearest, ties to even */
    if (isnan(v)) return 0;
    if (v < -127.0f) return -127;
    if (v > 127.0f) return 127;
    return (int)v;
}

/* An operand: int8 codes (q) or floats on the grid of `scale` (x). Element
 * (r, c) of op(X): X[r*ld + c], or X[c*ld + r] when transposed. */
typedef struct src {
    const int8_t *q;
    const float *x;
    float scale;
    int ld, t;
} src;

static inline int at(const src *s, int r, int c) {
    size_t o = s->t ? (size_t)c * (size_t)s->ld + (size_t)r : (size_t)r * (size_t)s->ld + (size_t)c;
    return s->q ? s->q[o] : et_igemm_code(s->x[o], s->scale);
}

/* Where sums go: int32 C, or float C = (float)(S * sab) (+ beta * C). */
typedef struct out {
    int32_t *C32;
    float *C;
    int ldc;
    double sab;
    float beta;
} out;

static void store_scalar(const int32_t *tile, int rows, int nc, double sab, float beta, float *C, int ldc) {
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < nc; c++) {
            float v = (float)((double)tile[r * PW + c] * sab);
            float *d = C + (size_t)r * ldc + c;
            *d = beta != 0.0f ? beta * *d + v : v; /* -std=c11: no contraction into an FMA */
        }
}

static void store_tile(et_isa isa, const int32_t *tile, int rows, int nc, const out *o, float *C) {
#if defined(__x86_64__)
    if (isa >= ET_ISA_AVX512) {
        et_igemm_avx512_store(tile, rows, nc, o->sab, o->beta, C, o->ldc);
        return;
    }
#endif
    (void)isa;
    store_scalar(tile, rows, nc, o->sab, o->beta, C, o->ldc);
}

/* Generic packing (any source) for VNNI (g = 4) and AVX2 (g = 2). */
static void pack_a_generic(const src *A, int g, int K, int Kg, int i, uint32_t *Ap) {
    /* VNNI: 8-row blocks, q-major inside (row i, group q at ((i&~7)*Kg + 8q + (i&7)));
     * AVX2: row i at i*Kg */
    uint32_t *dst = g == 4 ? Ap + (size_t)(i & ~7) * Kg + (i & 7) : Ap + (size_t)i * Kg;
    const int step = g == 4 ? 8 : 1;
    if (g == 4 && A->q && !A->t) { /* int8 codes, row contiguous */
        const int8_t *row = A->q + (size_t)i * A->ld;
        for (int q = 0; q < Kg; q++) {
            uint32_t w = 0;
            for (int l = 0; l < 4; l++) {
                int k = q * 4 + l;
                w |= (uint32_t)(uint8_t)((k < K ? row[k] : 0) + 128) << (8 * l);
            }
            dst[(size_t)q * 8] = w;
        }
        return;
    }
    for (int q = 0; q < Kg; q++) {
        uint32_t w = 0;
        for (int l = 0; l < g; l++) {
            int k = q * g + l;
            int v = k >= K ? 0 : at(A, i, k);
            w |= g == 4 ? (uint32_t)(uint8_t)(v + 128) << (8 * l) : (uint32_t)(uint16_t)(int16_t)v << (16 * l);
        }
        dst[(size_t)q * step] = w;
    }
}

static void pack_b_generic(const src *B, int g, int K, int N, int Kg, int p, void *panel, int32_t *cs) {
    int j0 = p * PW, nc = N - j0 < PW ? N - j0 : PW;
    if (g == 4) {
        int8_t *bp = panel;
        int32_t sum[PW] = {0};
        memset(bp, 0, (size_t)Kg * PW * 4);
        for (int k = 0; k < K; k++) {
            int8_t *dst = bp + (size_t)(k / 4) * PW * 4 + (k & 3);
            if (B->q && !B->t) { /* int8 codes, row k contiguous */
                const int8_t *src = B->q + (size_t)k * B->ld + j0;
                for (int c = 0; c < nc; c++) dst[c * 4] = src[c], sum[c] += src[c];
                continue;
            }
            for (int c = 0; c < nc; c++) {
                int v = at(B, k, j0 + c);
                dst[c * 4] = (int8_t)v, sum[c] += v;
            }
        }
        for (int c = 0; c < PW; c++) cs[c] = 128 * sum[c];
    } else {
        int16_t *bp = panel;
        for (int q = 0; q < Kg; q++)
            for (int c = 0; c < PW; c++)
                for (int l = 0; l < 2; l++) {
                    int k = q * 2 + l, j = j0 + c;
                    bp[((size_t)q * PW + c) * 2 + l] = (int16_t)(k < K && j < N ? at(B, k, j) : 0);
                }
    }
}

/* The calling thread's packing buffers (packed A; B's slices), grown on
 * demand and freed when the thread exits (core/tlbuf.h). */
static et_tlbuf bufA, bufB;

#define GP 8 /* panels per task group: B is packed per task into the thread's slice */

/* Buffer sizes of a product (op(A) M x K, op(B) K x N) on the path isa: a
 * panel, a thread's slice (its group's panels + their column sums) and the
 * packed A. */
static void sizes(et_isa isa, int M, int N, int K, size_t *panel_bytes, size_t *slice, size_t *needA) {
    const int g = isa >= ET_ISA_AVX512 ? 4 : isa == ET_ISA_AVX2 ? 2 : 1;
    const int Kg = (K + g - 1) / g, np = (N + PW - 1) / PW, gp = np < GP ? np : GP;
    /* scalar path: a panel is PW columns x K codes */
    *panel_bytes = g == 1 ? (size_t)PW * K : (size_t)Kg * PW * 4;
    *slice = ((*panel_bytes * gp + 63) & ~(size_t)63) + (size_t)gp * PW * 4;
    *needA = g == 1 ? (size_t)M * K : (size_t)((M + 15) & ~15) * Kg * 4;
}

et_status et_igemm_reserve(int M, int N, int K, int threads) {
    if (M <= 0 || N <= 0 || K <= 0) return ET_OK;
    size_t pb, slice, needA;
    sizes(et_igemm_isa(), M, N, K, &pb, &slice, &needA);
    if (!et_tlbuf_get(&bufA, needA) || !et_tlbuf_get(&bufB, slice * (size_t)(threads > 1 ? threads : 1)))
        return et_set_error(ET_ERR_NOMEM, "igemm: cannot reserve %zu bytes of packing buffers", needA + slice);
    return ET_OK;
}

size_t et_igemm_workspace_bytes(void) {
    size_t a, b;
    et_tlbuf_peek(&bufA, &a), et_tlbuf_peek(&bufB, &b);
    return a + b;
}

void et_igemm_release(void) {
    et_tlbuf_release(&bufA);
    et_tlbuf_release(&bufB);
}

/* Packs panels [p0, p0 + n) of op(B) into bp (panel_bytes each; scalar path:
 * columns x K codes) and their column sums into cs. */
static void pack_group(const src *B, int g, int K, int N, int Kg, int p0, int n, char *bp, size_t panel_bytes,
                       int32_t *cs) {
    if (g == 1) {
        for (int j = p0 * PW; j < N && j < (p0 + n) * PW; j++)
            for (int k = 0; k < K; k++) ((int8_t *)bp)[(size_t)(j - p0 * PW) * K + k] = (int8_t)at(B, k, j);
        return;
    }
#if defined(__x86_64__)
    if (B->q && g == 4) {
        et_igemm_avx512_pack_b_s8(B->q, B->ld, B->t, K, N, Kg, p0 * PW, n, (int8_t *)bp, panel_bytes, cs);
        return;
    }
    if (B->x && g == 4) {
        et_igemm_avx512_pack_b(B->x, B->ld, B->t, B->scale, K, N, Kg, p0 * PW, n, (int8_t *)bp, panel_bytes, cs);
        return;
    }
#endif
    for (int p = 0; p < n; p++) pack_b_generic(B, g, K, N, Kg, p0 + p, bp + panel_bytes * p, cs + p * PW);
}

int et_igemm_dot_fits(int M, int N, int K) { return M <= 64 && N <= 128 && K >= 1024 && (int64_t)M * N <= 4096; }

/* The dot form (et_igemm_dot_fits): output rows in blocks of 4 over the
 * threads, each element summed by one thread, then stored like a tile. */
static et_status drive_dot(et_isa isa, int M, int N, int K, const src *A, const src *B, const out *o, int T) {
    int32_t S[4096], bsum[128];
#if defined(__x86_64__)
    et_igemm_avx512_rowsum128(B->q, B->ld, N, K, bsum);
    const int nblk = (M + 3) / 4;
    if (T > nblk) T = nblk;
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static) if (T > 1)
#endif
    for (int b = 0; b < nblk; b++) {
        const int i0 = 4 * b, i1 = i0 + 4 < M ? i0 + 4 : M;
        et_igemm_avx512_dot(A->q, A->ld, B->q, B->ld, bsum, i0, i1, N, K, S);
    }
#endif
    for (int i = 0; i < M; i++) {
        if (o->C32) {
            memcpy(o->C32 + (size_t)i * o->ldc, S + (size_t)i * N, sizeof(int32_t) * (size_t)N);
            continue;
        }
        for (int j0 = 0; j0 < N; j0 += PW) {
            int32_t tile[PW];
            const int nc = N - j0 < PW ? N - j0 : PW;
            memcpy(tile, S + (size_t)i * N + j0, sizeof(int32_t) * (size_t)nc);
            store_tile(isa, tile, 1, nc, o, o->C + (size_t)i * o->ldc + j0);
        }
    }
    return ET_OK;
}

static et_status drive(et_isa isa, int M, int N, int K, const src *A, const src *B, const out *o) {
    if (M <= 0 || N <= 0) return ET_OK;
    if (isa > et_igemm_isa()) isa = et_igemm_isa();
    int T = et_get_threads();
#ifdef _OPENMP
    if (omp_in_parallel()) T = 1;
#endif
    if (T < 1) T = 1;
    if (K <= 0) { /* empty sums */
        int32_t zero[PW] = {0};
        for (int i = 0; i < M; i++)
            for (int j0 = 0; j0 < N; j0 += PW) {
                int nc = N - j0 < PW ? N - j0 : PW;
                if (o->C32) memcpy(o->C32 + (size_t)i * o->ldc + j0, zero, sizeof(int32_t) * (size_t)nc);
                else store_scalar(zero, 1, nc, o->sab, o->beta, o->C + (size_t)i * o->ldc + j0, o->ldc);
            }
        return ET_OK;
    }
    const int g = isa >= ET_ISA_AVX512 ? 4 : isa == ET_ISA_AVX2 ? 2 : 1;
    if (g == 4 && A->q && B->q && !A->t && B->t && et_igemm_dot_fits(M, N, K)) return drive_dot(isa, M, N, K, A, B, o, T);
    const int Kg = (K + g - 1) / g, np = (N + PW - 1) / PW, ng = (np + GP - 1) / GP, gp = np < GP ? np : GP;
    size_t panel_bytes, slice, needA;
    sizes(isa, M, N, K, &panel_bytes, &slice, &needA);
    int ni = 1; /* row chunks per group: enough tasks for every thread */
    if (ng < 2 * T) {
        ni = (2 * T + ng - 1) / ng;
        if (ni > (M + 7) / 8) ni = (M + 7) / 8;
    }
    const int rows = ((M + ni - 1) / ni + 7) & ~7; /* whole 8-row blocks */
    const int nt = ng * ((M + rows - 1) / rows), nab = (M + 15) / 16;
    ni = (M + rows - 1) / rows;
    if (T > nt) T = nt;
    /* the workers must see the caller's buffers, not their own */
    uint32_t *Ap = et_tlbuf_get(&bufA, needA);
    char *Bbuf = et_tlbuf_get(&bufB, slice * (size_t)T);
    if (!Ap || !Bbuf)
        return et_set_error(ET_ERR_NOMEM, "igemm: cannot allocate %zu bytes of packing buffers", needA + slice * T);
#ifdef _OPENMP
#pragma omp parallel num_threads(T) if (T > 1)
#endif
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#pragma omp for schedule(static)
#endif
        for (int ib = 0; ib < nab; ib++) {
            int i0 = ib * 16, i1 = i0 + 16 < M ? i0 + 16 : M;
#if defined(__x86_64__)
            if (A->q && g == 4) {
                et_igemm_avx512_pack_a_s8(A->q, A->ld, A->t, K, Kg, i0, i1, Ap);
                continue;
            }
            if (A->x && g == 4) {
                et_igemm_avx512_pack_a(A->x, A->ld, A->t, A->scale, K, Kg, i0, i1, Ap);
                continue;
            }
#endif
            for (int i = i0; i < i1; i++)
                if (g == 1)
                    for (int k = 0; k < K; k++) ((int8_t *)Ap)[(size_t)i * K + k] = (int8_t)at(A, i, k);
                else
                    pack_a_generic(A, g, K, Kg, i, Ap);
        }
        char *bp = Bbuf + slice * (size_t)tid;
        int32_t *cs = (int32_t *)(bp + slice - (size_t)gp * PW * 4);
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int t = 0; t < nt; t++) {
            int gi = t / ni, ic = t % ni;
            int p0 = gi * GP, npan = np - p0 < GP ? np - p0 : GP;
            pack_group(B, g, K, N, Kg, p0, npan, bp, panel_bytes, cs);
            int r0 = ic * rows, r1 = r0 + rows < M ? r0 + rows : M;
            for (int i0 = r0; i0 < r1; i0 += IROWS) {
                int i1 = i0 + IROWS < r1 ? i0 + IROWS : r1;
                for (int p = 0; p < npan; p++) {
                    int j0 = (p0 + p) * PW, nc = N - j0 < PW ? N - j0 : PW;
                    const char *pp = bp + panel_bytes * p;
                    int32_t tile[IROWS * PW];
                    int32_t *dst = o->C32 ? o->C32 + (size_t)i0 * o->ldc + j0 : tile;
                    int ldd = o->C32 ? o->ldc : PW;
                    if (g == 1) {
                        const int8_t *Aq = (const int8_t *)Ap, *Bq = (const int8_t *)pp;
                        for (int i = i0; i < i1; i++)
                            for (int c = 0; c < nc; c++) {
                                const int8_t *a = Aq + (size_t)i * K, *b = Bq + (size_t)c * K;
                                uint32_t s = 0; /* wraps modulo 2^32 like the SIMD paths */
                                for (int k = 0; k < K; k++) s += (uint32_t)((int32_t)a[k] * (int32_t)b[k]);
                                dst[(size_t)(i - i0) * ldd + c] = (int32_t)s;
                            }
                    }
#if defined(__x86_64__)
                    else if (g == 4 && !o->C32) {
                        et_igemm_avx512_block_f32(Ap + (size_t)i0 * Kg, Kg, (const int8_t *)pp, cs + p * PW, 0,
                                                  i1 - i0, nc, o->C + (size_t)i0 * o->ldc + j0, o->ldc, o->sab,
                                                  o->beta);
                        continue;
                    } else if (g == 4)
                        et_igemm_avx512_block(Ap + (size_t)i0 * Kg, Kg, (const int8_t *)pp, cs + p * PW, 0, i1 - i0,
                                              nc, dst, ldd);
                    else
                        et_igemm_avx2_block(Ap + (size_t)i0 * Kg, Kg, (const int16_t *)pp, 0, i1 - i0, nc, dst, ldd);
#endif
                    if (!o->C32) store_tile(isa, tile, i1 - i0, nc, o, o->C + (size_t)i0 * o->ldc + j0);
                }
            }
        }
    }
    return ET_OK;
}

void et_igemm_s8_isa(et_isa isa, int ta, int tb, int M, int N, int K, const int8_t *A, int lda, const int8_t *B,
                     int ldb, int32_t *C, int ldc) {
    src a = {A, NULL, 0, lda, ta}, b = {B, NULL, 0, ldb, tb};
    out o = {C, NULL, ldc, 0, 0};
    if (drive(isa, M, N, K, &a, &b, &o) != ET_OK) /* cannot allocate: the scalar path needs buffers too */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                uint32_t s = 0;
                for (int k = 0; k < K; k++) s += (uint32_t)(at(&a, i, k) * at(&b, k, j));
                C[(size_t)i * ldc + j] = (int32_t)s;
            }
}

void et_igemm_s8(int ta, int tb, int M, int N, int K, const int8_t *A, int lda, const int8_t *B, int ldb,
                 int32_t *C, int ldc) {
    et_igemm_s8_isa(et_igemm_isa(), ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
}

et_status et_igemm_f32q_isa(et_isa isa, int ta, int tb, int M, int N, int K, const float *A, const int8_t *qa, int lda,
                            float scale_a, const float *B, const int8_t *qb, int ldb, float scale_b, float beta, float *C,
                            int ldc) {
    if (M < 0 || N < 0 || K < 0) return et_set_error(ET_ERR_INVALID, "et_igemm_f32: negative size");
    if (M == 0 || N == 0) return ET_OK;
    if (!C || (K > 0 && ((!A && !qa) || (!B && !qb)))) return et_set_error(ET_ERR_INVALID, "et_igemm_f32: NULL matrix");
    if (ldc < N || (K > 0 && (lda < (ta ? M : K) || ldb < (tb ? K : N))))
        return et_set_error(ET_ERR_INVALID, "et_igemm_f32: leading dimension too small");
    if (!(scale_a > 0.0f) || !(scale_b > 0.0f) || isinf(scale_a) || isinf(scale_b))
        return et_set_error(ET_ERR_INVALID, "et_igemm_f32: scales must be positive and finite");
    src a = {qa, A, scale_a, lda, ta}, b = {qb, B, scale_b, ldb, tb};
    out o = {NULL, C, ldc, (double)scale_a * (double)scale_b, beta};
    return drive(isa, M, N, K, &a, &b, &o);
}

et_status et_igemm_f32_isa(et_isa isa, int ta, int tb, int M, int N, int K, const float *A, int lda, float scale_a,
                           const float *B, int ldb, float scale_b, float beta, float *C, int ldc) {
    return et_igemm_f32q_isa(isa, ta, tb, M, N, K, A, NULL, lda, scale_a, B, NULL, ldb, scale_b, beta, C, ldc);
}

et_status et_igemm_f32(int ta, int tb, int M, int N, int K, const float *A, int lda, float scale_a, const float *B,
                       int ldb, float scale_b, float beta, float *C, int ldc) {
    return et_igemm_f32_isa(et_igemm_isa(), ta, tb, M, N, K, A, lda, scale_a, B, ldb, scale_b, beta, C, ldc);
}

et_status et_igemm_f32q(int ta, int tb, int M, int N, int K, const float *A, const int8_t *qa, int lda, float scale_a,
                        const float *B, const int8_t *qb, int ldb, float scale_b, float beta, float *C, int ldc) {
    return et_igemm_f32q_isa(et_igemm_isa(), ta, tb, M, N, K, A, qa, lda, scale_a, B, qb, ldb, scale_b, beta, C, ldc);
}

void et_igemm_im2col(const et_igemm_conv *g, const int8_t *x, int n0, int nb, int8_t *col) {
    const int64_t rows = (int64_t)g->c * g->kh * g->kw, ld = (int64_t)nb * g->ho * g->wo;
    const int64_t plane = (int64_t)g->h * g->w;
#if defined(__x86_64__)
    const int fast = g->sw == 1 && g->w <= 64 && g->wo <= 64 && et_cpu_isa() >= ET_ISA_AVX512;
#endif
#pragma omp parallel for schedule(static) if (rows * ld > 131072)
    for (int64_t r = 0; r < rows; r++) {
        const int kx = (int)(r % g->kw), ky = (int)(r / g->kw % g->kh), ci = (int)(r / g->kw / g->kh);
        int8_t *dst = col + r * ld;
        /* output columns whose input column is inside the row: [lo, hi) */
        const int ix0 = kx - g->pw;
        int lo = 0, hi = g->wo;
        while (lo < g->wo && lo * g->sw + ix0 < 0) lo++;
        while (hi > lo && (hi - 1) * g->sw + ix0 >= g->w) hi--;
#if defined(__x86_64__)
        if (fast) {
            et_igemm_avx512_im2col_rows(x + ((int64_t)ci * g->n + n0) * plane, plane, g->h, g->w, g->ho, g->wo, g->sh,
                                        g->ph, ky, ix0, lo, hi, nb, dst);
            continue;
        }
#endif
        for (int n = 0; n < nb; n++) {
            const int8_t *src = x + ((int64_t)ci * g->n + n0 + n) * plane;
            for (int oy = 0; oy < g->ho; oy++, dst += g->wo) {
                const int iy = oy * g->sh - g->ph + ky;
                if (iy < 0 || iy >= g->h || hi <= lo) {
                    memset(dst, 0, (size_t)g->wo);
                    continue;
                }
                const int8_t *srow = src + (int64_t)iy * g->w;
                for (int ox = 0; ox < g->wo; ox++) dst[ox] = ox >= lo && ox < hi ? srow[ox * g->sw + ix0] : 0;
            }
        }
    }
}
