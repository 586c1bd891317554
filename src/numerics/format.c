/* Number formats: parsing, names, properties, scales and the scalar quantize
 * loop that is the reference for every vectorised path (docs/formats.md). */
#include "numerics/format_internal.h"

#include "core/rng.h"

#include <ctype.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- parsing */

static int parse_uint(const char **s, int *out) {
    const char *p = *s;
    if (!isdigit((unsigned char)*p)) return 0;
    if (p[0] == '0' && isdigit((unsigned char)p[1])) return 0; /* "e04m3" is not another e4m3 */
    long v = 0;
    while (isdigit((unsigned char)*p)) {
        v = v * 10 + (*p++ - '0');
        if (v > 1000) return 0;
    }
    *s = p, *out = (int)v;
    return 1;
}

static et_status bad(const char *text, const char *why) {
    return et_set_error(ET_ERR_INVALID, "bad number format '%s': %s (see docs/formats.md)", text, why);
}

et_status et_format_parse(const char *text, et_format *out) {
    if (!text || !out) return et_set_error(ET_ERR_INVALID, "et_format_parse: NULL argument");
    et_format f = {0};
    f.round = ET_ROUND_RN;
    const char *p = text;
    size_t base_len = strcspn(p, ":/");
    char base[32];
    if (base_len == 0 || base_len >= sizeof base) return bad(text, "missing or overlong base format");
    memcpy(base, p, base_len);
    base[base_len] = 0;
    p += base_len;
    const char *b = base;
    int x, y;
    if (!strcmp(base, "fp32")) f.kind = ET_FMT_FLOAT, f.ebits = 8, f.mbits = 23;
    else if (!strcmp(base, "fp16")) f.kind = ET_FMT_FLOAT, f.ebits = 5, f.mbits = 10;
    else if (!strcmp(base, "bf16")) f.kind = ET_FMT_FLOAT, f.ebits = 8, f.mbits = 7;
    else if (!strcmp(base, "e4m3")) f.kind = ET_FMT_FLOAT, f.ebits = 4, f.mbits = 3, f.ocp_e4m3 = 1, f.sat = 1;
    else if (!strcmp(base, "e5m2")) f.kind = ET_FMT_FLOAT, f.ebits = 5, f.mbits = 2, f.sat = 1;
    else if (b[0] == 'e' && (b++, parse_uint(&b, &x)) && *b == 'm' && (b++, parse_uint(&b, &y)) && !*b) {
        if (x < 2 || x > 8) return bad(text, "exponent bits X of eXmY must be 2..8");
        if (y > 23) return bad(text, "mantissa bits Y of eXmY must be 0..23");
        f.kind = ET_FMT_FLOAT, f.ebits = x, f.mbits = y;
    } else if ((!strncmp(base, "int", 3) && (b = base + 3)) || (!strncmp(base, "dfxp", 4) && (b = base + 4))) {
        int n;
        if (!parse_uint(&b, &n) || *b) return bad(text, "expected intN or dfxpN with a bit count N");
        if (n < 2 || n > 16) return bad(text, "bit count N of intN/dfxpN must be 2..16");
        f.kind = base[0] == 'i' ? ET_FMT_INT : ET_FMT_DFXP;
        f.bits = n;
    } else
        return bad(text, "unknown base format (fp32, fp16, bf16, e4m3, e5m2, eXmY, intN, dfxpN)");
    if (f.kind == ET_FMT_FLOAT) f.bits = 1 + f.ebits + f.mbits;
    int seen_sat = 0, seen_nosub = 0, seen_pc = 0, seen_sc = 0;
    while (*p == ':') {
        p++;
        size_t len = strcspn(p, ":/");
        int *flag = NULL, *seen = NULL;
        if (len == 3 && !strncmp(p, "sat", 3)) flag = &f.sat, seen = &seen_sat;
        else if (len == 5 && !strncmp(p, "nosub", 5)) flag = &f.nosub, seen = &seen_nosub;
        else if (len == 10 && !strncmp(p, "perchannel", 10)) flag = &f.perchannel, seen = &seen_pc;
        else if (len == 6 && !strncmp(p, "scaled", 6)) flag = &f.scaled, seen = &seen_sc;
        else return bad(text, "unknown modifier (:sat, :nosub, :scaled, :perchannel)");
        if (*seen) return bad(text, "modifier given twice");
        if (flag == &f.perchannel && f.kind == ET_FMT_FLOAT)
            return bad(text, ":perchannel applies to intN and dfxpN only");
        if (flag != &f.perchannel && f.kind != ET_FMT_FLOAT)
            return bad(text, ":sat, :nosub and :scaled apply to floating-point formats only");
        *flag = *seen = 1;
        p += len;
    }
    if (*p == '/') {
        p++;
        if (!strcmp(p, "rn")) f.round = ET_ROUND_RN;
        else if (!strcmp(p, "rz")) f.round = ET_ROUND_RZ;
        else if (!strcmp(p, "sr")) f.round = ET_ROUND_SR, f.sr_bits = 32;
        else if (!strncmp(p, "sr", 2)) {
            const char *q = p + 2;
            int r;
            if (!parse_uint(&q, &r) || *q) return bad(text, "unknown rounding (/rn, /rz, /sr, /srR)");
            if (r < 1 || r > 32) return bad(text, "random bits R of /srR must be 1..32");
            f.round = ET_ROUND_SR, f.sr_bits = r;
        } else
            return bad(text, "unknown rounding (/rn, /rz, /sr, /srR)");
        p += strlen(p);
    }
    if (*p) return bad(text, "unexpected text after the format (modifiers come before the rounding)");
    *out = f;
    return ET_OK;
}

const char *et_format_name(const et_format *f, char *buf, size_t cap) {
    char base[24];
    if (f->kind == ET_FMT_INT) snprintf(base, sizeof base, "int%d", f->bits);
    else if (f->kind == ET_FMT_DFXP) snprintf(base, sizeof base, "dfxp%d", f->bits);
    else if (f->ebits == 8 && f->mbits == 23) snprintf(base, sizeof base, "fp32");
    else if (f->ebits == 5 && f->mbits == 10) snprintf(base, sizeof base, "fp16");
    else if (f->ebits == 8 && f->mbits == 7) snprintf(base, sizeof base, "bf16");
    else snprintf(base, sizeof base, "e%dm%d", f->ebits, f->mbits);
    int always_sat = f->kind == ET_FMT_FLOAT && ((f->ebits == 4 && f->mbits == 3) || (f->ebits == 5 && f->mbits == 2));
    char rnd[8] = "";
    if (f->round == ET_ROUND_RZ) snprintf(rnd, sizeof rnd, "/rz");
    else if (f->round == ET_ROUND_SR && f->sr_bits == 32) snprintf(rnd, sizeof rnd, "/sr");
    else if (f->round == ET_ROUND_SR) snprintf(rnd, sizeof rnd, "/sr%d", f->sr_bits);
    snprintf(buf, cap, "%s%s%s%s%s%s", base, f->sat && !always_sat ? ":sat" : "", f->nosub ? ":nosub" : "",
             f->scaled ? ":scaled" : "", f->perchannel ? ":perchannel" : "", rnd);
    return buf;
}

/* ---------------------------------------------------------- properties */

static int bias_of(const et_format *f) { return (1 << (f->ebits - 1)) - 1; }
static int emax_of(const et_format *f) {
    /* IEEE-like: the top exponent field is inf/NaN. E4M3FN: it holds finite
     * values except S.1111.111 (NaN), so emax is one higher. */
    return f->ocp_e4m3 ? (1 << f->ebits) - 1 - bias_of(f) : bias_of(f);
}
static double max_of(const et_format *f) {
    double frac = f->ocp_e4m3 ? 2.0 - 2.0 * ldexp(1.0, -f->mbits) /* 1.110b */ : 2.0 - ldexp(1.0, -f->mbits);
    return ldexp(frac, emax_of(f));
}

et_format_props et_format_properties(const et_format *f) {
    et_format_props p = {f->bits, 0, 0, 0};
    if (f->kind != ET_FMT_FLOAT) {
        p.max_finite = (double)((1 << (f->bits - 1)) - 1);
        p.min_normal = p.min_subnormal = 1;
        return p;
    }
    int emin = 1 - bias_of(f);
    p.max_finite = max_of(f);
    p.min_normal = ldexp(1.0, emin);
    p.min_subnormal = f->nosub ? p.min_normal : ldexp(1.0, emin - f->mbits);
    return p;
}

/* ------------------------------------------------------------- scales */

static float absmax_serial_inf(const float *x, size_t n, int with_inf) {
#if defined(__x86_64__)
    if (et_cpu_isa() >= ET_ISA_AVX512) return et_absmax_avx512(x, n, with_inf);
#endif
    float m = 0;
    for (size_t i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        if (a > m && (with_inf ? !isnan(a) : isfinite(a))) m = a;
    }
    return m;
}

static float absmax_serial(const float *x, size_t n) { return absmax_serial_inf(x, n, 0); }

/* Tensors of 2^18 elements or more (1 MB; a smaller one is rounded on one
 * thread in about the time a fork-join costs, and that stays robust on a busy
 * machine) are split into blocks of QBLOCK elements (a multiple of 16,
 * so every block but the last is whole vectors) over the threads; a maximum
 * and an element-wise rounding do not depend on the split. */
#define QBLOCK ((size_t)1 << 15)
static int par_threads(size_t n) {
#ifdef _OPENMP
    if (n < 8 * QBLOCK || omp_in_parallel()) return 1;
    int t = et_get_threads();
    size_t nb = (n + QBLOCK - 1) / QBLOCK;
    if (t > 64) t = 64; /* scan_and_round's per-thread maxima */
    return t < 1 ? 1 : (size_t)t > nb ? (int)nb : t;
#else
    (void)n;
    return 1;
#endif
}

float et_absmax_f32(const float *x, size_t n, int with_inf) {
    const int T = par_threads(n);
    if (T <= 1) return absmax_serial_inf(x, n, with_inf);
    const long nb = (long)((n + QBLOCK - 1) / QBLOCK);
    float m = 0;
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static) reduction(max : m)
#endif
    for (long b = 0; b < nb; b++) {
        size_t i = (size_t)b * QBLOCK, len = n - i < QBLOCK ? n - i : QBLOCK;
        float v = absmax_serial_inf(x + i, len, with_inf);
        m = v > m ? v : m;
    }
    return m;
}

static float absmax(const float *x, size_t n) { return et_absmax_f32(x, n, 0); }

static float scale_of(const et_format *f, float am);

float et_format_scale(const et_format *f, const float *x, size_t n) {
    if (f->kind == ET_FMT_FLOAT && !f->scaled) return 1.0f;
    return scale_of(f, absmax(x, n));
}

/* The per-tensor scale of a tensor whose finite absmax is am. */
static float scale_of(const et_format *f, float am) {
    if (f->kind == ET_FMT_FLOAT) {
        /* :scaled: 2^-k with k the largest integer such that absmax * 2^k <= max
         * finite (a shared exponent bias); 1 for an all-zero tensor */
        if (am == 0) return 1.0f;
        double mx = max_of(f);
        int k = (int)floor(log2(mx / am));
        while (ldexp((double)am, k) > mx) k--;
        while (ldexp((double)am, k + 1) <= mx) k++;
        if (k < -126) k = -126;
        if (k > 126) k = 126;
        return ldexpf(1.0f, -k);
    }
    if (am == 0) return 0.0f;
    float qmax = (float)((1 << (f->bits - 1)) - 1);
    if (f->kind == ET_FMT_INT) return am / qmax;
    /* dfxp: the smallest k with absmax <= qmax * 2^k (exact comparisons in
     * double); k is clamped to float's power-of-two range. */
    int k = (int)ceil(log2((double)am / qmax));
    while (ldexp(qmax, k - 1) >= am) k--;
    while (ldexp(qmax, k) < am) k++;
    if (k < -149) k = -149;
    if (k > 127) k = 127;
    return ldexpf(1.0f, k);
}

/* ------------------------------------------------------- the quantizer */

static uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void et_qparams_init(et_qparams *p, const et_format *f, float scale, const et_qkey *key) {
    memset(p, 0, sizeof *p);
    p->mode = f->round;
    p->rbits = f->sr_bits >= 1 && f->sr_bits <= 32 ? f->sr_bits : 32;
    if (f->kind == ET_FMT_FLOAT) {
        int emin = 1 - bias_of(f);
        p->mant = f->mbits;
        p->qmin = f->nosub ? -300 : emin - f->mbits;
        p->nosub = f->nosub;
        p->overflow_max = f->sat || f->round == ET_ROUND_RZ;
        p->inf_max = f->sat;
        p->maxbits = f2u((float)max_of(f));
        p->minnorm = f2u(ldexpf(1.0f, emin));
    } else {
        p->is_int = 1;
        p->mant = 160;
        p->qmin = 0;
        p->overflow_max = p->inf_max = 1;
        p->maxbits = f2u((float)((1 << (f->bits - 1)) - 1));
        p->scale = scale;
    }
    et_qkey k = key ? *key : (et_qkey){0, 0, 0};
    p->subseed = et_rand64(k.seed, ET_STREAM_QUANTIZE, k.tensor);
    p->step = k.step;
    p->prefix = et_rand_prefix(p->subseed, p->step);
}

uint32_t et_qrand(const et_qparams *p, uint64_t index) { return (uint32_t)(et_rand_at(p->prefix, index) >> 32); }

/* Rounds the magnitude bits a (finite, non-zero) to a multiple of 2^qexp,
 * qexp = max(Ex - mant, qmin), as if the exponent range had no upper bound.
 * s bits of the float's integer significand are cut off; `rem` is the cut-off
 * part, i.e. the fraction f of a quantum is rem / 2^s. */
static uint32_t round_mag(const et_qparams *p, uint32_t a, uint32_t rnd) {
    int e = (int)(a >> 23);
    int ex = e ? e - 127 : (31 - __builtin_clz(a)) - 149;
    int qexp = ex - p->mant > p->qmin ? ex - p->mant : p->qmin;
    int s = qexp - ((e ? e : 1) - 150);
    if (s <= 0) return a;
    uint32_t sig = e ? (a & 0x7fffffu) | 0x800000u : a;
    uint32_t rem = s >= 32 ? sig : sig & ((1u << s) - 1);
    uint32_t keep = s >= 32 ? 0 : sig >> s;
    uint32_t up;
    if (p->mode == ET_ROUND_RN) {
        if (s - 1 >= 32) up = 0;
        else {
            uint32_t half = 1u << (s - 1);
            /* ties to the even code: the parity of the kept significand, except
             * that with no mantissa bits (eXm0) a normal result's code is its
             * exponent, whose parity is that of the float's exponent field */
            uint32_t odd = p->mant == 0 && qexp == ex ? (a >> 23) & 1 : keep & 1;
            up = rem > half || (rem == half && odd);
        }
    } else if (p->mode == ET_ROUND_RZ) {
        up = 0;
    } else {
        /* round up with probability floor(f * 2^R) / 2^R */
        int R = p->rbits;
        uint32_t t = s >= R ? (s - R >= 32 ? 0 : rem >> (s - R)) : rem << (R - s);
        uint32_t r = rnd >> (32 - R);
        up = r < t;
    }
    if (s <= 23) return ((a >> s) << s) + (up << s); /* a carry moves into the exponent */
    if (!up) return 0;
    return qexp >= -126 ? (uint32_t)(qexp + 127) << 23 : 1u << (qexp + 149);
}

float et_quantize_one(const et_qparams *p, float x, uint32_t rnd) {
    uint32_t u = f2u(x), sign = u & 0x80000000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return x; /* NaN stays NaN */
    if (!p->is_int) {
        if (a == 0x7f800000u) return u2f(sign | (p->inf_max ? p->maxbits : a));
        if (a == 0) return x;
        uint32_t r = round_mag(p, a, rnd);
        if (r > p->maxbits) r = p->overflow_max ? p->maxbits : 0x7f800000u;
        if (p->nosub && r < p->minnorm) r = 0;
        return u2f(sign | r);
    }
    if (p->scale == 0) return u2f(sign);
    uint32_t r;
    if (a == 0x7f800000u) r = p->maxbits;
    else {
        uint32_t ya = f2u(u2f(a) / p->scale);
        if (ya >= 0x7f800000u) r = p->maxbits;
        else {
            r = ya ? round_mag(p, ya, rnd) : 0;
            if (r > p->maxbits) r = p->maxbits;
        }
    }
    return u2f(sign | f2u(u2f(r) * p->scale));
}

void et_quantize_scalar(const et_qparams *p, const float *x, float *y, size_t n, uint64_t first) {
    int sr = p->mode == ET_ROUND_SR;
    for (size_t i = 0; i < n; i++) y[i] = et_quantize_one(p, x[i], sr ? et_qrand(p, first + i) : 0);
}

typedef void (*qloop)(const et_qparams *, const float *, float *, size_t, uint64_t);

static qloop pick_loop(void) {
#if defined(__x86_64__)
    if (et_cpu_isa() >= ET_ISA_AVX512) return et_quantize_avx512;
#endif
    return et_quantize_scalar;
}

static et_status run(const et_format *f, const float *x, float *y, size_t n, float scale, const et_qkey *key,
                     uint64_t first) {
    et_qparams p;
    et_qparams_init(&p, f, scale, key);
    qloop loop = pick_loop();
    if (f->kind == ET_FMT_FLOAT && f->ebits == 8 && f->mbits == 23 && !f->nosub && !f->sat) {
        if (y != x) memmove(y, x, n * sizeof *x); /* fp32 is the identity */
        return ET_OK;
    }
    if (f->kind == ET_FMT_FLOAT && scale != 1.0f) {
        /* :scaled: y = q(x / scale) * scale, scale a power of two (exact but
         * at the ends of fp32's own range) */
        const float inv = 1.0f / scale;
        for (size_t i = 0; i < n; i++) y[i] = x[i] * inv;
        loop(&p, y, y, n, first);
        for (size_t i = 0; i < n; i++) y[i] *= scale;
        return ET_OK;
    }
    const int T = par_threads(n);
    if (T <= 1) {
        loop(&p, x, y, n, first);
        return ET_OK;
    }
    const long nb = (long)((n + QBLOCK - 1) / QBLOCK);
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
    for (long b = 0; b < nb; b++) {
        size_t i = (size_t)b * QBLOCK, len = n - i < QBLOCK ? n - i : QBLOCK;
        loop(&p, x + i, y + i, len, first + i);
    }
    return ET_OK;
}

/* A per-tensor scaled rounding of a large tensor in one parallel region:
 * each thread scans its contiguous part for the absmax, the threads agree on
 * the maximum (order-free), and each rounds the part it scanned while that is
 * still in its cache. codes (NULL: none): et_quantize_codes. Elements keep
 * their index (stochastic rounding keys), so the split changes nothing. */
static void codes_scalar(const float *y, int8_t *q, size_t n, float cs);

static et_status scan_and_round(const et_format *f, const float *x, float *y, int8_t *codes, size_t n,
                                const et_qkey *key, float *scale) {
    const int T = par_threads(n);
    float part[64];
    float s = 0;
#if defined(__x86_64__)
    const int avx512 = et_cpu_isa() >= ET_ISA_AVX512;
#endif
    qloop loop = pick_loop();
#ifdef _OPENMP
#pragma omp parallel num_threads(T) if (T > 1)
#endif
    {
        int t = 0, nt = 1;
#ifdef _OPENMP
        t = omp_get_thread_num(), nt = omp_get_num_threads();
#endif
        const size_t per = ((n + (size_t)nt - 1) / (size_t)nt + 15) & ~(size_t)15;
        const size_t lo = (size_t)t * per < n ? (size_t)t * per : n, hi = lo + per < n ? lo + per : n;
        part[t] = absmax_serial(x + lo, hi - lo);
#ifdef _OPENMP
#pragma omp barrier
#endif
        /* every thread derives the same scale and parameters (one barrier) */
        float am = 0;
        for (int k = 0; k < nt; k++) am = part[k] > am ? part[k] : am;
        const float sc = scale_of(f, am), cs = sc > 0 ? sc : 1.0f;
        et_qparams p;
        et_qparams_init(&p, f, sc, key);
        if (t == 0) s = sc;
        /* blocks of 4096: the codes are taken while a block is in L1 */
        for (size_t i = lo; i < hi; i += 4096) {
            const size_t len = hi - i < 4096 ? hi - i : 4096;
            if (!codes) {
                loop(&p, x + i, y + i, len, i);
                continue;
            }
#if defined(__x86_64__)
            if (avx512) {
                et_quantize_codes_avx512(&p, x + i, y + i, codes + i, len, i, cs);
                continue;
            }
#endif
            loop(&p, x + i, y + i, len, i);
            codes_scalar(y + i, codes + i, len, cs);
        }
    }
    if (scale) *scale = s;
    return ET_OK;
}

et_status et_quantize(const et_format *f, const float *x, float *y, size_t n, const et_qkey *key) {
    return et_quantize_scaled(f, x, y, n, key, NULL);
}

et_status et_quantize_scaled(const et_format *f, const float *x, float *y, size_t n, const et_qkey *key,
                             float *scale) {
    if (!f || (n && (!x || !y))) return et_set_error(ET_ERR_INVALID, "et_quantize: NULL argument");
    if (f->kind != ET_FMT_FLOAT) return scan_and_round(f, x, y, NULL, n, key, scale);
    float s = et_format_scale(f, x, n);
    if (scale) *scale = s;
    return run(f, x, y, n, s, key, 0);
}

/* Codes of y[0..n) on the grid of cs (the rule of et_igemm_code). */
static void codes_scalar(const float *y, int8_t *q, size_t n, float cs) {
    const float r = 1.0f / cs;
    for (size_t i = 0; i < n; i++) {
        float v = nearbyintf(y[i] * r);
        q[i] = (int8_t)(isnan(v) ? 0 : v < -127.0f ? -127 : v > 127.0f ? 127 : (int)v);
    }
}

et_status et_quantize_codes(const et_format *f, const float *x, float *y, int8_t *codes, size_t n,
                            const et_qkey *key, float *scale) {
    if (!f || (n && (!x || !y || !codes))) return et_set_error(ET_ERR_INVALID, "et_quantize_codes: NULL argument");
    if (f->kind == ET_FMT_FLOAT || f->perchannel || f->bits > 8)
        return et_set_error(ET_ERR_INVALID, "et_quantize_codes: needs a per-tensor intN/dfxpN format with N <= 8");
    return scan_and_round(f, x, y, codes, n, key, scale);
}

et_status et_quantize_rows(const et_format *f, const float *x, float *y, size_t rows, size_t cols,
                           const et_qkey *key) {
    if (!f || (rows && cols && (!x || !y))) return et_set_error(ET_ERR_INVALID, "et_quantize_rows: NULL argument");
    if (!f->perchannel) return et_quantize(f, x, y, rows * cols, key);
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        run(f, xr, y + r * cols, cols, et_format_scale(f, xr, cols), key, (uint64_t)(r * cols));
    }
    return ET_OK;
}
