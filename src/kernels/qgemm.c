/* Emulated-accumulation GEMM (kernels/qgemm.h): argument checks, the scalar
 * reference loop, and the threaded driver that runs the AVX-512 block kernel
 * (qgemm_avx512.c) or, without AVX-512, the reference loop on row ranges. */
#include "kernels/qgemm.h"

#include "core/rng.h"
#include "core/tlbuf.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int is_fp32_ident(const et_format *f) {
    return f->kind == ET_FMT_FLOAT && f->ebits == 8 && f->mbits == 23 && !f->sat && !f->nosub;
}

static et_status check_fmt(const et_format *f, const char *role) {
    if (f->scaled) {
        char name[64];
        return et_set_error(ET_ERR_INVALID, "et_qgemm: %s format '%s': :scaled needs a whole tensor, not one sum",
                            role, et_format_name(f, name, sizeof name));
    }
    if (f->kind != ET_FMT_FLOAT) {
        char name[64];
        return et_set_error(ET_ERR_INVALID,
                            "et_qgemm: %s format '%s' is an integer format that needs a scale; "
                            "only floating-point formats (fp16, bf16, eXmY, ...) can be %s formats "
                            "(integer operands: use et_igemm)",
                            role, et_format_name(f, name, sizeof name), role);
    }
    return ET_OK;
}

static et_status setup(et_qgemm_args *g, int ta, int tb, int M, int N, int K, const float *A, int lda,
                       const float *B, int ldb, float beta, float *C, int ldc, const et_format *mul,
                       const et_format *acc, const et_qkey *key) {
    if (M < 0 || N < 0 || K < 0) return et_set_error(ET_ERR_INVALID, "et_qgemm: negative size %dx%dx%d", M, N, K);
    if (M > 0 && N > 0) {
        if (!C || (K > 0 && (!A || !B))) return et_set_error(ET_ERR_INVALID, "et_qgemm: NULL matrix");
        if (ldc < N || lda < (ta ? M : K) || ldb < (tb ? K : N) || lda < 1 || ldb < 1)
            return et_set_error(ET_ERR_INVALID, "et_qgemm: leading dimension too small");
    }
    et_status st;
    if (mul && (st = check_fmt(mul, "multiplier")) != ET_OK) return st;
    if (acc && (st = check_fmt(acc, "accumulator")) != ET_OK) return st;
    memset(g, 0, sizeof *g);
    g->ta = ta, g->tb = tb, g->M = M, g->N = N, g->K = K, g->lda = lda, g->ldb = ldb, g->ldc = ldc;
    g->A = A, g->B = B, g->beta = beta, g->C = C;
    et_format fp32 = {.kind = ET_FMT_FLOAT, .ebits = 8, .mbits = 23, .bits = 32, .round = ET_ROUND_RN};
    g->has_mul = mul != NULL;
    et_qparams_init(&g->mul, mul ? mul : &fp32, 1.0f, key);
    et_qparams_init(&g->acc, acc ? acc : &fp32, 1.0f, key);
    g->mul_ident = !mul || is_fp32_ident(mul);
    g->acc_ident = !acc || is_fp32_ident(acc);
    g->sum_limit = et_qgemm_sum_limit(g);
    return ET_OK;
}

static float q1(const et_qparams *p, int ident, float x, uint32_t rnd) {
    return ident ? x : et_quantize_one(p, x, rnd);
}

/* ---- random bits (qgemm.h, docs/formats.md "Random bits") ---- */

static uint32_t rotl32(uint32_t x, unsigned r) {
    r &= 31u;
    return r ? (x << r) | (x >> (32u - r)) : x;
}

uint32_t et_qgemm_xs32(uint32_t x) {
    x ^= x << 13;
    x ^= x >> 17;
    return x ^ (x << 5);
}

static uint64_t qkey(const et_qparams *p, uint64_t e) { return et_rand_at(p->prefix, e); }

static uint32_t state0(uint64_t key) {
    uint32_t x = (uint32_t)(key >> 32);
    return x ? x : 1u; /* xorshift's state is never 0 */
}

uint32_t et_qgemm_word(const et_qparams *p, uint64_t e, uint64_t t) {
    uint64_t key = qkey(p, e);
    if (t == 0) return (uint32_t)key;
    uint32_t x = state0(key);
    for (uint64_t i = 0; i < t; i++) x = et_qgemm_xs32(x);
    return x;
}

static int sr_bits(const et_qparams *p, int ident) { return !ident && p->mode == ET_ROUND_SR ? p->rbits : 0; }

int et_qgemm_fields16(const et_qgemm_args *g) {
    return sr_bits(&g->mul, g->mul_ident) <= 16 && sr_bits(&g->acc, g->acc_ident) <= 16;
}

double et_qgemm_sum_limit(const et_qgemm_args *g) {
    union {
        uint32_t u;
        float f;
    } mx = {g->acc.maxbits};
    double gg = (1.0 + ldexp(1.0, -24)) * (1.0 + ldexp(1.0, -g->acc.mant));
    return (double)mx.f / (pow(gg, QG_KCH) * (1.0 + 1e-9));
}

/* S = 23 - mant: a normal value's quantum is 2^S float ulps. */
static unsigned qshift(const et_qparams *p) { return (unsigned)(23 - p->mant); }

unsigned et_qgemm_acc_rot(const et_qgemm_args *g) {
    if (!sr_bits(&g->mul, g->mul_ident)) return 0; /* the accumulator has the word to itself */
    return (16u + qshift(&g->acc) - qshift(&g->mul)) & 31u;
}

/* The 32 random bits a rounding to `p` takes from the word w as it sees it:
 * the complement of w rotated so that its bits [S - R, S) are the top R. */
static uint32_t rnd_of(const et_qparams *p, uint32_t w) { return ~rotl32(w, 32u - qshift(p)); }

/* The reference loop on rows [i0, i1). */
static void ref_rows(const et_qgemm_args *g, int i0, int i1) {
    const int N = g->N, K = g->K;
    const int srm = sr_bits(&g->mul, g->mul_ident) > 0, sra = sr_bits(&g->acc, g->acc_ident) > 0;
    const int f16 = et_qgemm_fields16(g);
    const unsigned rot = et_qgemm_acc_rot(g);
    for (int i = i0; i < i1; i++)
        for (int j = 0; j < N; j++) {
            float *c = g->C + (size_t)i * g->ldc + j;
            uint64_t e = (uint64_t)i * (uint64_t)N + (uint64_t)j;
            uint64_t key = srm || sra ? qkey(&g->acc, e) : 0; /* mul and acc share the key */
            uint32_t x = state0(key);
            float s = 0.0f;
            if (g->beta != 0.0f) {
                float bc = g->beta * *c;
                s = q1(&g->acc, g->acc_ident, bc, sra ? rnd_of(&g->acc, (uint32_t)key) : 0);
            }
            for (int k = 0; k < K; k++) {
                float a = g->ta ? g->A[(size_t)k * g->lda + i] : g->A[(size_t)i * g->lda + k];
                float b = g->tb ? g->B[(size_t)j * g->ldb + k] : g->B[(size_t)k * g->ldb + j];
                uint32_t rm = 0, ra = 0;
                if (f16 && (srm || sra)) { /* one word per product */
                    x = et_qgemm_xs32(x);
                    rm = rnd_of(&g->mul, x), ra = rnd_of(&g->acc, rotl32(x, rot));
                } else { /* one word per stochastic rounding, the multiplier's first */
                    if (srm) x = et_qgemm_xs32(x), rm = rnd_of(&g->mul, x);
                    if (sra) x = et_qgemm_xs32(x), ra = rnd_of(&g->acc, x);
                }
                float p = a * b;
                p = q1(&g->mul, g->mul_ident, p, rm);
                float t = s + p;
                s = q1(&g->acc, g->acc_ident, t, ra);
            }
            *c = s;
        }
}

et_status et_qgemm_ref(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                       float beta, float *C, int ldc, const et_format *mul, const et_format *acc,
                       const et_qkey *key) {
    et_qgemm_args g;
    et_status st = setup(&g, ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc, mul, acc, key);
    if (st != ET_OK) return st;
    if (M > 0 && N > 0) ref_rows(&g, 0, M);
    return ET_OK;
}

et_isa et_qgemm_isa(void) {
#if defined(__x86_64__)
    if (et_cpu_isa() >= ET_ISA_AVX512) return ET_ISA_AVX512;
#endif
    return ET_ISA_SCALAR;
}

#define QG_ROWS 32 /* rows of C per task */

/* Panels live in a buffer of the calling thread that only grows: after the
 * first call of a training step's largest K, or et_qgemm_reserve, no call
 * allocates. */
static et_tlbuf panels; /* core/tlbuf.h: freed when the thread exits */

/* A panel of op(B) (K x 16 floats) and the magnitudes of its chunks of
 * QG_KCH rows (et_qgemm_avx512_block). */
static size_t panel_bytes(int K) {
    size_t k = (size_t)(K > 0 ? K : 1);
    return ((k * 16 * sizeof(float) + 63) & ~(size_t)63) + ((((k + QG_KCH - 1) / QG_KCH) * 8 + 63) & ~(size_t)63);
}

/* Grows the calling thread's panels. */
static et_status grow_panels(size_t bytes) {
    if (!et_tlbuf_get(&panels, bytes))
        return et_set_error(ET_ERR_NOMEM, "et_qgemm: cannot allocate %zu bytes of panels", bytes);
    return ET_OK;
}

et_status et_qgemm_reserve(int K, int threads) {
    if (et_qgemm_isa() == ET_ISA_SCALAR) return ET_OK; /* the reference loop packs nothing */
    return grow_panels(panel_bytes(K) * (size_t)(threads > 1 ? threads : 1));
}

size_t et_qgemm_workspace_bytes(void) {
    size_t b;
    et_tlbuf_peek(&panels, &b);
    return b;
}

void et_qgemm_release(void) { et_tlbuf_release(&panels); }

et_status et_qgemm(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                   float beta, float *C, int ldc, const et_format *mul, const et_format *acc, const et_qkey *key) {
    et_qgemm_args g;
    et_status st = setup(&g, ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc, mul, acc, key);
    if (st != ET_OK || M == 0 || N == 0) return st;
    int T = et_get_threads();
#ifdef _OPENMP
    if (omp_in_parallel()) T = 1;
#endif
    if (T < 1) T = 1;
    if (et_qgemm_isa() == ET_ISA_SCALAR) {
        int nt = (M + QG_ROWS - 1) / QG_ROWS;
        if (T > nt) T = nt;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) num_threads(T) if (T > 1)
#endif
        for (int t = 0; t < nt; t++) ref_rows(&g, t * QG_ROWS, t * QG_ROWS + QG_ROWS < M ? t * QG_ROWS + QG_ROWS : M);
        return ET_OK;
    }
#if defined(__x86_64__)
    /* tasks: 16-column panels x chunks of rows; each task packs its panel of
     * op(B) (K x 16) into the thread's buffer. */
    int nj = (N + 15) / 16;
    int rows = QG_ROWS;
    if (nj < 2 * T) { /* few panels: cut the rows finer so every thread has work */
        int want = (2 * T + nj - 1) / nj;
        rows = (M + want - 1) / want;
        if (rows < 4) rows = 4;
    }
    int ni = (M + rows - 1) / rows, nt = ni * nj;
    if (T > nt) T = nt;
    size_t bsz = panel_bytes(K);
    if (grow_panels(bsz * (size_t)T) != ET_OK) return ET_ERR_NOMEM;
    float *buf = et_tlbuf_peek(&panels, NULL); /* the workers must see the caller's buffer, not their own */
#ifdef _OPENMP
#pragma omp parallel num_threads(T) if (T > 1)
#endif
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *Bp = buf + bsz / sizeof(float) * (size_t)tid;
        int have = -1; /* the panel this thread's buffer holds */
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int t = 0; t < nt; t++) {
            int jb = t / ni, ib = t % ni; /* consecutive tasks share a panel */
            int i0 = ib * rows, i1 = i0 + rows < M ? i0 + rows : M;
            int j0 = jb * 16, j1 = j0 + 16 < N ? j0 + 16 : N;
            et_qgemm_avx512_block(&g, i0, i1, j0, j1, Bp, have != jb);
            have = jb;
        }
    }
#endif
    return ET_OK;
}
