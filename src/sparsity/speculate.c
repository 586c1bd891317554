/* Speculation of a product's ReLU zeros (the Bidirectional Speculation Unit;
 * docs/sparsity.md). Called by the matmul path for an et_matmul with `spec`:
 *
 *   bits 1..8  each operand x -> int8 code c = clamp(rne(x * (127 / absmax)),
 *              -127, 127) (per-tensor absmax; absmax 0 gives all-zero codes),
 *              then its top B bits in sign-magnitude form: the sign and the
 *              B-1 most significant bits of the 7-bit magnitude,
 *              t = sign(c) * floor(|c| / 2^(8-B)) (the low bits truncated, as
 *              a unit taking the operand's MSBs does; sign-magnitude so that
 *              truncation does not bias negative values). The estimate is the exact
 *              integer product S = sum_k tA * tB (et_igemm_s8) as
 *              e = (sA * sB) * (float)S + bias with s = absmax / 127 * 2^(8-B);
 *   exp        each operand x -> sign(x) * 2^floor(log2|x|) (0 stays 0; GANPU's
 *              sign/exponent-only prediction), e = et_sgemm of those + bias;
 *   32         e = et_sgemm of the operands themselves + bias: exactly the
 *              dense pre-activation, so the prediction is exact.
 * An output is predicted zero where e <= 0 (NaN predicts non-zero).
 * With `check`, the exact output (et_sgemm + bias, the dense layer's value)
 * is computed too and false zeros (predicted zero, true > 0) and missed zeros
 * (predicted non-zero, true <= 0) are counted. */
#include "sparsity/sparsity.h"

#include "kernels/igemm.h"

#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static size_t al(size_t n) { return (n + 63) & ~(size_t)63; }

/* The threads a prediction may use: the engine's, or 1 inside a parallel
 * region (conv's lanes). */
static inline int team(void) {
    int T = 1;
#ifdef _OPENMP
    if (!omp_in_parallel()) T = et_get_threads();
#endif
    return T < 1 ? 1 : T;
}

/* sA * sB of the B-bit estimate, s = absmax / 127 * 2^(8-B) (top of file) */
static float code_scale(const et_spec *sp) {
    const float step = (float)(1 << (8 - sp->bits));
    const float sa = sp->absmax_a / 127.0f * step, sb = sp->absmax_b / 127.0f * step;
    return sa * sb;
}

size_t et_spec_ws_bytes(int bits, int M, int N, int K) {
    size_t mn = (size_t)M * (size_t)N, mk = (size_t)M * (size_t)K, kn = (size_t)K * (size_t)N;
    /* the estimate, then each row's kept count (the generic paths) */
    size_t est = al(mn * 4) + al((size_t)M * 4);
    if (bits == ET_SPEC_EXACT) return est;
    if (bits == ET_SPEC_EXP) return est + al(mk * 4) + al(kn * 4);
    return est + al(mk) + al(kn);
}

int8_t et_spec_code(float x, float inv, int bits) {
    float v = x * inv;
    int c;
    if (!(v == v)) c = 0; /* NaN */
    else if (v >= 127.0f) c = 127;
    else if (v <= -127.0f) c = -127;
    else c = (int)nearbyintf(v);
    /* sign-magnitude: keep the sign and the top bits - 1 magnitude bits */
    int s = 8 - bits, t = (c < 0 ? -c : c) >> s;
    return (int8_t)(c < 0 ? -t : t);
}

float et_spec_exp(float x) {
    if (x == 0.0f || !isfinite(x)) return x == 0.0f ? 0.0f : x;
    int e;
    frexpf(x, &e); /* |x| = m * 2^e, m in [0.5, 1): floor(log2|x|) = e - 1 */
    return copysignf(ldexpf(1.0f, e - 1), x);
}

/* Codes of a stored rows x cols matrix (row stride ld) into a compact one. */
#if defined(__x86_64__) || defined(_M_X64)
void et_spec_codes_row_avx512(const float *x, int n, float inv, int bits, int8_t *out); /* the same codes */
#endif

static void codes(const float *X, int rows, int cols, int ld, float absmax, int bits, int8_t *out) {
    const float inv = absmax > 0.0f ? 127.0f / absmax : 0.0f;
#if defined(__x86_64__) || defined(_M_X64)
    if (et_cpu_isa() >= ET_ISA_AVX512) {
#pragma omp parallel for schedule(static) if ((int64_t)rows * cols > 65536)
        for (int r = 0; r < rows; r++) et_spec_codes_row_avx512(X + (int64_t)r * ld, cols, inv, bits, out + (int64_t)r * cols);
        return;
    }
#endif
#pragma omp parallel for schedule(static) if ((int64_t)rows * cols > 65536)
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) out[(int64_t)r * cols + c] = et_spec_code(X[(int64_t)r * ld + c], inv, bits);
}

size_t et_spec_a_vnni_bytes(int M, int K) { return (size_t)((M + 7) & ~7) * (size_t)((K + 3) / 4) * 4; }

int et_spec_pack_a(const float *A, int M, int K, int lda, float absmax, int bits, uint32_t *out) {
#if defined(__x86_64__) || defined(_M_X64)
    if (bits < 1 || bits > 8 || M <= 0 || K <= 0 || et_cpu_isa() < ET_ISA_AVX512 ||
        !__builtin_cpu_supports("avx512vnni"))
        return 0;
    const float inv = absmax > 0.0f ? 127.0f / absmax : 0.0f;
    const int Mp = (M + 7) & ~7, Kq = (K + 3) / 4;
#pragma omp parallel for schedule(static) if ((int64_t)Mp * K > 65536)
    for (int i = 0; i < Mp; i++) { /* the layout of et_spec_pack_a_vnni, from the floats */
        int8_t c[256] = {0}; /* a row's codes, 256 at a time (vectorised) */
        for (int q0 = 0; q0 < Kq; q0 += 64) {
            const int k0 = 4 * q0, n = K - k0 < 256 ? K - k0 : 256, q1 = Kq - q0 < 64 ? Kq : q0 + 64;
            if (i < M) et_spec_codes_row_avx512(A + (int64_t)i * lda + k0, n, inv, bits, c);
            for (int q = q0; q < q1; q++) {
                uint32_t d = 0;
                for (int t = 0; t < 4; t++) {
                    const int k = 4 * q + t;
                    const uint32_t byte = i < M && k < K ? (uint32_t)(uint8_t)(c[k - k0] + 128) : 128u;
                    d |= byte << (8 * t);
                }
                out[(size_t)(i / 8) * Kq * 8 + (size_t)q * 8 + (i & 7)] = d;
            }
        }
    }
    return 1;
#else
    (void)A, (void)M, (void)K, (void)lda, (void)absmax, (void)bits, (void)out;
    return 0;
#endif
}

void et_spec_code_tensor(const float *x, int64_t n, float absmax, int bits, int8_t *out) {
    const int64_t blk = 16384;
    const int64_t nb = (n + blk - 1) / blk;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t b = 0; b < nb; b++) {
        int64_t o = b * blk;
        codes(x + o, 1, (int)(n - o < blk ? n - o : blk), 0, absmax, bits, out + o);
    }
}

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
void et_spec_pack_a_vnni(const int8_t *ca, int M, int K, int Kq, uint32_t *Ap);
void et_spec_vnni_panel(int M, int K, int Kq, const uint32_t *Ap, const float *B, int ldb, int j0, int nc,
                        float invb, int bits, float scale, const float *bias, int bias_rows, uint8_t *mask, int ldm,
                        __m512i *bp, uint64_t *pz, int32_t *colnz, int32_t *kept);

/* The fused path for op(A) = A, op(B) = B (conv FF) on a CPU with AVX512-VNNI:
 * B's codes are taken from the floats while a 32-column panel is packed, the
 * exact int32 sums come from vpdpbusd and the mask straight from the
 * accumulators, so neither B's codes nor the estimate are stored. Uses the
 * estimate's part of the workspace; returns 0 (nothing done) when it does not
 * fit. With it, fu gets the mask count and sum_j nnz(B[:,j]) * kept(j). */
void et_spec_vnni_panel_codes(int M, int K, int Kq, const uint32_t *Ap, const int8_t *Bc, int ldc, int j0, int nc,
                              float scale, const float *bias, int bias_rows, uint8_t *mask, int ldm, __m512i *bp,
                              uint64_t *pz, int32_t *kept);

static int predict_fused(const et_matmul *mm, const int8_t *ca, char *wsp, size_t room, uint64_t *pz,
                         et_spec_fused *fu) {
    const et_spec *sp = mm->spec;
    const int M = mm->M, N = mm->N, K = mm->K;
    if (mm->ta || mm->tb || K <= 0 || K > 65536 || M <= 0 || N <= 0 || et_cpu_isa() < ET_ISA_AVX512 ||
        !__builtin_cpu_supports("avx512vnni") || (sp->b_codes && !sp->b_colnz))
        return 0;
    const int T = team();
    const int Kq = (K + 3) / 4, Mp = (M + 7) & ~7, npan = (N + 31) / 32;
    const uint32_t *Ap = sp->a_vnni;
    /* the packed weights (unless the caller packed them), a panel per thread, colnz and kept */
    const size_t pa = Ap ? 0 : al((size_t)Mp * Kq * 4), pb = al((size_t)Kq * 128), pc = al((size_t)N * 4);
    if (pa + pb * (size_t)T + 2 * pc > room) return 0;
    int32_t *colnz = (int32_t *)(void *)(wsp + pa + pb * (size_t)T), *kept = (int32_t *)(void *)((char *)colnz + pc);
    if (!Ap) {
        if (!ca) return 0;
        et_spec_pack_a_vnni(ca, M, K, Kq, (uint32_t *)(void *)wsp);
        Ap = (const uint32_t *)(void *)wsp;
    }
    const float invb = sp->absmax_b > 0.0f ? 127.0f / sp->absmax_b : 0.0f;
    const float scale = code_scale(sp);
    uint64_t z = 0;
#pragma omp parallel for schedule(static) num_threads(T) reduction(+ : z) if (T > 1 && (int64_t)M * N > 65536)
    for (int p = 0; p < npan; p++) {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        int j0 = p * 32, nc = N - j0 < 32 ? N - j0 : 32;
        __m512i *bp = (__m512i *)(void *)(wsp + pa + pb * (size_t)t);
        if (sp->b_codes) /* B's codes from the caller: packed from bytes */
            et_spec_vnni_panel_codes(M, K, Kq, Ap, sp->b_codes, sp->ldb_codes, j0, nc, scale, sp->bias, sp->bias_rows,
                                     sp->mask, sp->ldmask, bp, &z, kept + j0);
        else
            et_spec_vnni_panel(M, K, Kq, Ap, mm->B, mm->ldb, j0, nc, invb, sp->bits, scale, sp->bias, sp->bias_rows,
                               sp->mask, sp->ldmask, bp, &z, colnz + j0, kept + j0);
    }
    if (sp->b_codes) colnz = (int32_t *)sp->b_colnz;
    uint64_t kt = 0, e = 0;
    for (int j = 0; j < N; j++) kt += (uint64_t)kept[j], e += (uint64_t)kept[j] * (uint64_t)colnz[j];
    *pz = z;
    fu->valid = 1, fu->kept = kt, fu->elem_dense_a = e;
    return 1;
}
#endif

static void exps(const float *X, int rows, int cols, int ld, float *out) {
#pragma omp parallel for schedule(static) if ((int64_t)rows * cols > 65536)
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) out[(int64_t)r * cols + c] = et_spec_exp(X[(int64_t)r * ld + c]);
}

static float bias_at(const et_spec *sp, int i, int j) {
    return sp->bias ? sp->bias[sp->bias_rows ? i : j] : 0.0f;
}

et_status et_spec_predict(const et_matmul *mm, void *ws, size_t ws_bytes, et_spec_fused *fu) {
    const et_spec *sp = mm->spec;
    const int M = mm->M, N = mm->N, K = mm->K;
    if (!(sp->bits == ET_SPEC_EXP || sp->bits == ET_SPEC_EXACT || (sp->bits >= 1 && sp->bits <= 8)))
        return et_set_error(ET_ERR_INVALID, "speculation: bits must be 1..8, exp or 32 (got %d)", sp->bits);
    if (!sp->mask || sp->ldmask < N) return et_set_error(ET_ERR_INVALID, "speculation: no mask buffer");
    /* a mask the caller predicted needs room only for a check's dense output */
    if ((!sp->pre_kept || sp->check) && (!ws || ws_bytes < et_spec_ws_bytes(sp->bits, M, N, K)))
        return et_set_error(ET_ERR_INVALID, "speculation: workspace of %zu bytes is too small for %dx%dx%d", ws_bytes,
                            M, N, K);
    et_spec_fused nofu;
    if (!fu) fu = &nofu;
    fu->valid = 0, fu->kept = 0, fu->elem_dense_a = 0, fu->dense = NULL, fu->row_kept = NULL;
    float *est = ws; /* M x N, ld N (fp32 estimates, or the int32 sums isum) */
    int32_t *isum = NULL, *rk = (int32_t *)(void *)((char *)ws + al((size_t)M * N * 4));
    float scale = 0.0f;
    char *rest = (char *)rk + al((size_t)M * 4);
    uint64_t pz = 0;
    int fused = 0;
    const int ar = mm->ta ? K : M, ac = mm->ta ? M : K, br = mm->tb ? N : K, bc = mm->tb ? K : N;
    if (sp->bits == ET_SPEC_EXACT) {
        et_sgemm(mm->ta, mm->tb, M, N, K, 1.0f, mm->A, mm->lda, mm->B, mm->ldb, 0.0f, est, N > 0 ? N : 1);
    } else if (sp->bits == ET_SPEC_EXP) {
        float *fa = (float *)rest, *fb = (float *)(rest + al((size_t)M * K * 4));
        exps(mm->A, ar, ac, mm->lda, fa);
        exps(mm->B, br, bc, mm->ldb, fb);
        et_sgemm(mm->ta, mm->tb, M, N, K, 1.0f, fa, ac > 0 ? ac : 1, fb, bc > 0 ? bc : 1, 0.0f, est, N > 0 ? N : 1);
    } else if (sp->pre_kept) { /* predicted by the caller (conv's AMX path): count only */
        uint64_t kt = 0, e = 0;
        for (int j = 0; j < N; j++) kt += (uint64_t)sp->pre_kept[j];
        if (sp->b_colnz)
            for (int j = 0; j < N; j++) e += (uint64_t)sp->pre_kept[j] * (uint64_t)sp->b_colnz[j];
        pz = (uint64_t)M * (uint64_t)N - kt;
        fu->valid = sp->b_colnz != NULL, fu->kept = kt, fu->elem_dense_a = e;
        fused = 1;
    } else {
        int8_t *ca = (int8_t *)rest, *cb = (int8_t *)(rest + al((size_t)M * K));
        int have_ca = 0;
        if (!sp->a_vnni || mm->ta) codes(mm->A, ar, ac, mm->lda, sp->absmax_a, sp->bits, ca), have_ca = 1;
#if defined(__x86_64__) || defined(_M_X64)
        fused = predict_fused(mm, have_ca ? ca : NULL, (char *)ws, al((size_t)M * N * 4), &pz, fu);
#endif
        if (!fused && !have_ca) codes(mm->A, ar, ac, mm->lda, sp->absmax_a, sp->bits, ca);
        if (!fused) {
            int ldcb = bc > 0 ? bc : 1;
            if (sp->b_codes && !mm->tb) /* the caller's codes of B */
                cb = (int8_t *)sp->b_codes, ldcb = sp->ldb_codes;
            else
                codes(mm->B, br, bc, mm->ldb, sp->absmax_b, sp->bits, cb);
            isum = (int32_t *)ws;
            et_igemm_s8(mm->ta, mm->tb, M, N, K, ca, ac > 0 ? ac : 1, cb, ldcb, isum, N > 0 ? N : 1);
            scale = code_scale(sp);
        }
    }
#pragma omp parallel for schedule(static) reduction(+ : pz) if (!fused && (int64_t)M * N > 65536)
    for (int i = 0; i < (fused ? 0 : M); i++) {
        uint8_t *mr = sp->mask + (int64_t)i * sp->ldmask;
        int32_t k = 0;
        for (int j = 0; j < N; j++) {
            int64_t e = (int64_t)i * N + j;
            float v = (isum ? scale * (float)isum[e] : est[e]) + bias_at(sp, i, j);
            mr[j] = !(v <= 0.0f);
            k += mr[j];
        }
        rk[i] = k; /* the row's kept outputs, for the product's count (matmul.c) */
        pz += (uint64_t)(N - k);
    }
    if (!fused) fu->kept = (uint64_t)M * (uint64_t)N - pz, fu->row_kept = rk;
    if (sp->stats) { /* atomic: conv's two lanes may predict at once */
        __atomic_fetch_add(&sp->stats->outputs, (uint64_t)M * N, __ATOMIC_RELAXED);
        __atomic_fetch_add(&sp->stats->predicted_zero, pz, __ATOMIC_RELAXED);
        __atomic_fetch_add(&sp->stats->estimate_macs, (uint64_t)M * N * (uint64_t)K, __ATOMIC_RELAXED);
    }
    if (!sp->check) return ET_OK;
    /* The true dense output: the same et_sgemm and bias add as the layer's.
     * The masked product may take it from here (fu->dense). */
    et_sgemm(mm->ta, mm->tb, M, N, K, 1.0f, mm->A, mm->lda, mm->B, mm->ldb, 0.0f, est, N > 0 ? N : 1);
    fu->dense = est;
    uint64_t tz = 0, fz = 0, mz = 0;
#pragma omp parallel for schedule(static) reduction(+ : tz, fz, mz) if ((int64_t)M * N > 65536)
    for (int i = 0; i < M; i++) {
        const float *er = est + (int64_t)i * N;
        const uint8_t *mr = sp->mask + (int64_t)i * sp->ldmask;
        /* the row's bias hoisted (bias_at), so that the loops vectorise */
        const float *bc = sp->bias && !sp->bias_rows ? sp->bias : NULL;
        const float bi = sp->bias && sp->bias_rows ? sp->bias[i] : 0.0f;
        uint64_t t = 0, f = 0, m = 0;
        if (bc)
            for (int j = 0; j < N; j++) {
                const int zero = er[j] + bc[j] <= 0.0f, kept = mr[j] != 0;
                t += (uint64_t)zero, f += (uint64_t)(!kept && !zero), m += (uint64_t)(kept && zero);
            }
        else
            for (int j = 0; j < N; j++) {
                const int zero = er[j] + bi <= 0.0f, kept = mr[j] != 0;
                t += (uint64_t)zero, f += (uint64_t)(!kept && !zero), m += (uint64_t)(kept && zero);
            }
        tz += t, fz += f, mz += m;
    }
    if (sp->stats) {
        et_spec_stats *s = sp->stats;
        __atomic_fetch_add(&s->checked, (uint64_t)M * N, __ATOMIC_RELAXED);
        __atomic_fetch_add(&s->checked_predicted_zero, pz, __ATOMIC_RELAXED);
        __atomic_fetch_add(&s->true_zero, tz, __ATOMIC_RELAXED);
        __atomic_fetch_add(&s->false_zero, fz, __ATOMIC_RELAXED);
        __atomic_fetch_add(&s->missed_zero, mz, __ATOMIC_RELAXED);
    }
    return ET_OK;
}

/* keep(S) for the integer sums of the whole-call paths (AMX, few taps) */
/* keep(S) = !(scale * (float)S + bias <= 0) with the two fp32 roundings of
 * the other paths. With scale >= 0 (or NaN) it is monotonic in S: (float)S
 * and the product and sum round monotonically, and the infinities and NaNs
 * they can give (scale or bias infinite, 0 * inf) keep, or keep everything
 * above them. So keep(S) == (S >= thr), thr the least S it keeps (INT32_MAX:
 * none, since |S| <= 127 * 127 * 65536 < INT32_MAX). */
static inline int keep_s(int64_t S, float scale, float bias) {
    const float p = scale * (float)S;
    const float e = p + bias;
    return !(e <= 0.0f);
}

static inline int32_t keep_threshold(float scale, float bias) {
    int64_t lo = -(int64_t)INT32_MAX, hi = INT32_MAX; /* keep(hi), not keep(lo) */
    if (keep_s(lo, scale, bias)) return INT32_MIN;
    if (!keep_s(hi, scale, bias)) return INT32_MAX;
    while (hi - lo > 1) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (keep_s(mid, scale, bias)) hi = mid;
        else lo = mid;
    }
    return (int32_t)hi;
}

/* thr[co] for the channels up to cout (their biases), INT32_MAX (keep none)
 * past it up to coutp */
static inline void thresholds(const et_spec *sp, float scale, int cout, int coutp, int32_t *thr) {
    for (int co = 0; co < coutp; co++)
        thr[co] = co < cout ? keep_threshold(scale, sp->bias ? sp->bias[co] : 0.0f) : INT32_MAX;
}

/* ---- the direct prediction of a convolution with few taps ----
 * (speculate_avx512.c): K = cin * kh * kw <= 64 products per output are too
 * few for the VNNI panels or the AMX tiles to pay, so the codes' products
 * are summed directly in fp32 (exact: |S| <= 127 * 127 * 64 < 2^24), 16
 * output columns x 8 channels at a time, and the mask written as S >= thr.
 * Layout of buf: kept (int32 per output column), thr, the taps' offsets,
 * the weights' codes (8 channels by 8, zero past cout), the input's codes in
 * padded planes. */
#if defined(__x86_64__) || defined(_M_X64)
void et_spec_small_rows_avx512(const float *xq, int cin, int hp, int wq, const float *wc, const int32_t *off, int ck,
                               const int32_t *thr, int cout, int ho, int wo, int r0, int r1, uint8_t *mask,
                               int64_t ldm, int32_t *kept);
void et_spec_small_code_avx512(const float *x, int N, int n, int cin, int h, int w, int ph, int pw, int hp, int wq,
                               float inv, int bits, float *xq);
#endif

typedef struct small_layout {
    int ho, wo, hp, wq, coutp, ck;
    size_t kept_off, thr_off, off_off, wc_off, xq_off, bytes;
} small_layout;

static int small_plan(small_layout *L, int n, int cin, int h, int w, int cout, int kh, int kw, int ph, int pw) {
    memset(L, 0, sizeof *L);
    if (n <= 0 || cin <= 0 || h <= 0 || w <= 0 || cout <= 0 || kh <= 0 || kw <= 0 || ph < 0 || pw < 0) return 0;
    L->ck = cin * kh * kw;
    L->ho = h + 2 * ph - kh + 1, L->wo = w + 2 * pw - kw + 1;
    if (L->ck > ET_SPEC_SMALL_K || L->ho <= 0 || L->wo <= 0) return 0;
    L->hp = h + 2 * ph;
    L->wq = ((L->wo + 15) & ~15) + kw - 1; /* the last 16 columns' taps; >= w + 2 pw */
    L->coutp = (cout + 7) & ~7;
    L->kept_off = 0;
    L->thr_off = al((size_t)n * L->ho * L->wo * 4);
    L->off_off = L->thr_off + al((size_t)L->coutp * 4);
    L->wc_off = L->off_off + al((size_t)L->ck * 4);
    L->xq_off = L->wc_off + al((size_t)L->coutp * L->ck * 4);
    L->bytes = L->xq_off + al((size_t)n * cin * L->hp * L->wq * 4);
    return 1;
}

size_t et_spec_small_bytes(int n, int cin, int h, int w, int cout, int kh, int kw, int ph, int pw) {
    small_layout L;
    return small_plan(&L, n, cin, h, w, cout, kh, kw, ph, pw) ? L.bytes : 0;
}

static int small_forced_off;
void et_spec_set_small(int on) { small_forced_off = !on; }

int et_spec_conv_small(const float *x, int n, int cin, int h, int w, const float *wts, int cout, int kh, int kw,
                       int ph, int pw, const et_spec *sp, void *buf, size_t bytes, const int32_t **kept) {
#if defined(__x86_64__) || defined(_M_X64)
    small_layout L;
    if (small_forced_off || et_cpu_isa() < ET_ISA_AVX512 || sp->bits < 1 || sp->bits > 8 || (sp->bias && !sp->bias_rows) ||
        !small_plan(&L, n, cin, h, w, cout, kh, kw, ph, pw) || L.bytes > bytes || !buf)
        return 0;
    const float scale = code_scale(sp);
    if (scale < 0.0f) return 0;
    char *base = buf;
    int32_t *kp = (int32_t *)(void *)(base + L.kept_off), *thr = (int32_t *)(void *)(base + L.thr_off);
    int32_t *off = (int32_t *)(void *)(base + L.off_off);
    float *wc = (float *)(void *)(base + L.wc_off), *xq = (float *)(void *)(base + L.xq_off);
    const float invx = sp->absmax_b > 0.0f ? 127.0f / sp->absmax_b : 0.0f;
    const float invw = sp->absmax_a > 0.0f ? 127.0f / sp->absmax_a : 0.0f;
    thresholds(sp, scale, cout, L.coutp, thr);
    for (int co = 0; co < L.coutp; co++) {
        for (int k = 0; k < L.ck; k++)
            wc[((int64_t)(co / 8) * L.ck + k) * 8 + co % 8] =
                co < cout ? (float)et_spec_code(wts[(int64_t)co * L.ck + k], invw, sp->bits) : 0.0f;
    }
    for (int ci = 0, t = 0; ci < cin; ci++)
        for (int ky = 0; ky < kh; ky++)
            for (int kx = 0; kx < kw; kx++) off[t++] = (int32_t)(((int64_t)ci * L.hp + ky) * L.wq + kx);
    const int T = team();
    const int rows = n * L.ho;
#pragma omp parallel num_threads(T) if (T > 1)
    {
#pragma omp for schedule(static)
        for (int i = 0; i < n; i++)
            et_spec_small_code_avx512(x, n, i, cin, h, w, ph, pw, L.hp, L.wq, invx, sp->bits, xq);
        int tid = 0, nt = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num(), nt = omp_get_num_threads();
#endif
        et_spec_small_rows_avx512(xq, cin, L.hp, L.wq, wc, off, L.ck, thr, cout, L.ho, L.wo, (int)((int64_t)rows * tid / nt),
                                  (int)((int64_t)rows * (tid + 1) / nt), sp->mask, sp->ldmask, kp);
    }
    *kept = kp;
    return 1;
#else
    (void)x, (void)n, (void)cin, (void)h, (void)w, (void)wts, (void)cout, (void)kh, (void)kw, (void)ph, (void)pw;
    (void)sp, (void)buf, (void)bytes, (void)kept;
    return 0;
#endif
}

/* ---- the AMX-INT8 path of a convolution (speculate_amx.c) ---- */
#include "sparsity/speculate_amx.h"
#if defined(__x86_64__) && defined(__linux__) && !defined(ET_NO_AMX)
#include <cpuid.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>
#define ET_HAVE_AMX 1
#endif

#ifdef ET_HAVE_AMX
static int amx_state = -1; /* -1: not probed; 0: off; 1: usable */
#endif
static int amx_forced_off;

/* AMX-TILE and AMX-INT8 (CPUID 7.0 EDX bits 24, 25), AVX512-VBMI2 for the
 * byte permutes and compress stores, and the kernel's permission to use tile data
 * (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA, once per process);
 * ET_AMX=0 in the environment turns the path off. */
int et_spec_amx_ok(void) {
#ifdef ET_HAVE_AMX
    if (amx_forced_off || et_cpu_isa() < ET_ISA_AVX512) return 0;
    int s = __atomic_load_n(&amx_state, __ATOMIC_ACQUIRE);
    if (s < 0) {
        unsigned a, b, c, d;
        const char *env = getenv("ET_AMX");
        s = 0;
        if (!(env && env[0] == '0') && __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 24 & 1) && (d >> 25 & 1) &&
            __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512vbmi2") && __builtin_cpu_supports("avx512vnni"))
            s = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
        __atomic_store_n(&amx_state, s, __ATOMIC_RELEASE);
    }
    return s;
#else
    return 0;
#endif
}

void et_spec_set_amx(int on) { amx_forced_off = !on; }

static size_t al64(size_t n) { return (n + 63) & ~(size_t)63; }

int et_spec_amx_plan(et_spec_amx_layout *L, int n, int cin, int h, int w, int cout, int kh, int kw, int ph, int pw) {
    memset(L, 0, sizeof *L);
    /* channels are taken four at a time: fewer than 4 would waste most of the tiles */
    if (n <= 0 || cin < 4 || h <= 0 || w <= 0 || cout <= 0 || kh <= 0 || kw <= 0 || ph < 0 || pw < 0) return 0;
    L->n = n, L->cin = cin, L->h = h, L->w = w, L->cout = cout, L->kh = kh, L->kw = kw, L->ph = ph, L->pw = pw;
    L->ho = h + 2 * ph - kh + 1, L->wo = w + 2 * pw - kw + 1;
    if (L->ho <= 0 || L->wo <= 0 || (int64_t)cin * kh * kw > 65536) return 0; /* int32 sums stay exact */
    /* shared padding: the last tap reads at most pw - 1 columns (ph - 1 rows)
     * past the next row's (image's) start, which are its zeros; a padding
     * wider than the kernel also needs the outputs to fit in a row */
    L->hp = h + ph + (ph >= kh ? ph - kh + 1 : 0);
    L->wp = w + pw + (pw >= kw ? pw - kw + 1 : 0);
    L->cb = cin <= 4 ? 4 : cin <= 8 ? 8 : cin <= 16 ? 16 : cin <= 32 ? 32 : (cin + 63) & ~63;
    L->tp = L->cb < 64 ? 64 / L->cb : 1;
    L->ngb = L->cb < 64 ? 1 : L->cb / 64;
    L->gx = (kw + L->tp - 1) / L->tp;
    L->coutp = (cout + 31) & ~31;
    L->v = (int64_t)n * L->hp * L->wp;
    L->vpad = (L->v + 31) & ~(int64_t)31;
    L->vs = L->vpad + (int64_t)(kh - 1) * L->wp + (int64_t)L->gx * L->tp;
    L->xt_off = 0;
    L->wq_off = al64((size_t)L->vs * (size_t)L->cb);
    L->wtmp_off = L->wq_off + al64((size_t)kh * L->gx * L->ngb * (size_t)L->coutp * 64);
    L->thr_off = L->wtmp_off + al64((size_t)cout * (size_t)cin * kh * kw);
    L->kept_off = L->thr_off + al64((size_t)L->coutp * 4);
    L->lanes_off = L->kept_off + al64((size_t)n * L->ho * L->wo * 4);
    const int64_t HWp = (int64_t)L->hp * L->wp;
    L->lanes_n = al64((size_t)((32 / HWp + 2) * HWp));
    L->bytes = L->lanes_off + 5 * L->lanes_n;
    return 1;
}

#ifdef ET_HAVE_AMX
/* Codes the input and the weights into buf's layout and runs the AMX
 * prediction of the whole call: sp->mask for all outputs, *kept = per real
 * column the kept outputs (in buf); xnz (unless NULL): per input pixel
 * (image-major, N x H x W) its non-zero channels, counted on the way through
 * x. Returns 0 (nothing done) where the path does not run. The statistics are the products' to count (et_spec.pre_kept). */
int et_spec_conv_amx(const et_spec_amx_layout *L, const float *x, const float *w, const et_spec *sp, void *buf,
                     const int32_t **kept, int32_t *xnz) {
    if (!et_spec_amx_ok() || sp->bits < 1 || sp->bits > 8 || !L->bytes || (sp->bias && !sp->bias_rows)) return 0;
    const float scale = code_scale(sp);
    if (scale < 0.0f) return 0; /* never (absmax >= 0), but the threshold needs it */
    char *base = buf;
    int8_t *xt = (int8_t *)(base + L->xt_off), *wq = (int8_t *)(base + L->wq_off), *wt = (int8_t *)(base + L->wtmp_off);
    int32_t *thr = (int32_t *)(void *)(base + L->thr_off), *kp = (int32_t *)(void *)(base + L->kept_off);
    const float invx = sp->absmax_b > 0.0f ? 127.0f / sp->absmax_b : 0.0f;
    const float invw = sp->absmax_a > 0.0f ? 127.0f / sp->absmax_a : 0.0f;
    const int taps = L->kh * L->kw, CK = L->cin * taps, nco16 = L->coutp / 16;
    const int btiles = L->kh * L->gx * L->ngb * nco16;
    thresholds(sp, scale, L->cout, L->coutp, thr);
    const int T = team();
#pragma omp parallel num_threads(T) if (T > 1)
    {
#pragma omp for schedule(static) nowait
        for (int n = 0; n < L->n; n++)
            et_spec_code_xt_avx512(L, x, n, invx, sp->bits, xt, xnz ? xnz + (int64_t)n * L->h * L->w : NULL);
#pragma omp single nowait
        memset(xt + L->v * L->cb, 0, (size_t)((L->vs - L->v) * L->cb)); /* past the virtual pixels */
        /* the weights' codes in [co][tap][ci] order */
#pragma omp for schedule(static)
        for (int co = 0; co < L->cout; co++)
            et_spec_code_wt_avx512(w + (int64_t)co * CK, L->cin, taps, invw, sp->bits, wt + (int64_t)co * CK);
#pragma omp for schedule(static)
        for (int bt = 0; bt < btiles; bt++) et_spec_pack_wq_avx512(L, wt, bt, wq + (int64_t)bt * 1024);
    }
    et_spec_amx_run(L, buf, sp->mask, sp->ldmask, T);
    *kept = kp;
    return 1;
}
#else
int et_spec_conv_amx(const et_spec_amx_layout *L, const float *x, const float *w, const et_spec *sp, void *buf,
                     const int32_t **kept, int32_t *xnz) {
    (void)L, (void)x, (void)w, (void)sp, (void)buf, (void)kept, (void)xnz;
    return 0;
}
#endif
