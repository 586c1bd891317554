/* Conv EP and WG without the column matrix (spconv.h): the rules, the work
 * space and the drivers; the kernels are in spconv_avx512.c.
 *
 * Work space (the caller's, conv's lane column buffer):
 *   EP  dyT (P x Coutp floats) and the per-column bit sets of non-zero output
 *       channels (P x nw words), P = the chunk's nb*Ho*Wo;
 *   WG  the chunk's input padded and channels last (nb x Hp x Wp x Cp), the
 *       window offset of every output pixel (P int32), and per thread a list
 *       of one KC block's non-zeros (2*KC). */
#include "kernels/spconv.h"

#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/gemm_dot.h"
#include "kernels/gemm_internal.h"

#if ET_GEMM_HAVE_X86
void et_spconv_ep_prep_avx512(int Cout, int Coutp, int nw, int64_t P, const float *dy, int64_t ldy, float *dyT,
                              uint64_t *bits);
uint64_t et_spconv_ep_image_avx512(const et_conv_implicit *g, int Coutp, int nw, const float *dyT, const uint64_t *bits,
                                   int n, float *acc);
void et_spconv_wg_xt_avx512(const et_conv_implicit *g, int Cp, int Hp, int Wp, float *xt);
uint64_t et_spconv_wg_rows_avx512(const et_conv_implicit *g, int Cp, int Wp, int kc, const float *xt, const int32_t *pofs,
                                  const float *dy, int64_t ldy, float beta, float *G, int c0, int c1, int32_t *lbuf);
#endif

/* The most output channels EP's bit sets hold (4 words), and the widest
 * input row segment WG keeps in registers (24 vectors: KW*Cp <= 384). */
#define EP_COUT_MAX 256
#define WG_SEG_MAX 384
/* Density rules (nnz(dY) / numel, measured with bench/bench_spconv.c, see
 * docs/sparsity.md "Kernels"). */
#define EP_DMAX 0.15
#define WG_DMAX 0.40

int et_spconv_cp(int C) { return (C + 15) & ~15; }

static size_t al16(size_t n) { return (n + 15) & ~(size_t)15; }

static int threads_here(void) {
    int T = et_get_threads();
#ifdef _OPENMP
    if (omp_in_parallel()) T = 1;
#endif
    return T < 1 ? 1 : T;
}

static int geom_ok(const et_conv_implicit *g) {
    return g && g->C > 0 && g->Cout > 0 && g->nb > 0 && g->KH > 0 && g->KW > 0 && g->PH >= 0 && g->PW >= 0 &&
           g->Ho == g->H + 2 * g->PH - g->KH + 1 && g->Wo == g->W + 2 * g->PW - g->KW + 1 && g->Ho > 0 && g->Wo > 0 &&
           et_cpu_isa() >= ET_ISA_AVX512 && ET_GEMM_HAVE_X86;
}

static size_t ep_ws(const et_conv_implicit *g, int *coutp, int *nw) {
    const size_t P = (size_t)g->nb * g->Ho * g->Wo;
    *coutp = et_spconv_cp(g->Cout);
    *nw = (g->Cout + 63) / 64;
    return al16(P * (size_t)*coutp) + al16(P * (size_t)*nw * 2) +
           (size_t)threads_here() * al16((size_t)g->H * g->W * (size_t)et_spconv_cp(g->C));
}

int et_spconv_ep_applies(const et_conv_implicit *g, size_t *ws_floats) {
    if (!geom_ok(g) || g->Cout > EP_COUT_MAX) return 0;
    /* one KC block in EP's K = Cout: the micro-kernel's sum is one fma chain */
    if (g->Cout > et_gemm_kinfo_for(ET_ISA_AVX512)->kc) return 0;
    int cp, nw;
    if (ws_floats) *ws_floats = ep_ws(g, &cp, &nw);
    return 1;
}

static size_t wg_ws(const et_conv_implicit *g, int *cp, int *hp, int *wp, int kc) {
    *cp = et_spconv_cp(g->C), *hp = g->H + 2 * g->PH, *wp = g->W + 2 * g->PW;
    const size_t P = (size_t)g->nb * g->Ho * g->Wo;
    return al16((size_t)g->nb * *hp * *wp * (size_t)*cp) + al16(P) + (size_t)threads_here() * al16(2 * (size_t)kc);
}

int et_spconv_wg_applies(const et_conv_implicit *g, size_t *ws_floats) {
    if (!geom_ok(g) || g->KW * et_spconv_cp(g->C) > WG_SEG_MAX) return 0;
    const int kc = et_gemm_kinfo_for(ET_ISA_AVX512)->kc;
    const int64_t P = (int64_t)g->nb * g->Ho * g->Wo, CK = (int64_t)g->C * g->KH * g->KW;
    /* et_sgemm sums these shapes on its dot path, in another order */
    if (P > INT32_MAX || et_gemm_dot_fits(0, 1, (int)CK, g->Cout, (int)P)) return 0;
    int cp, hp, wp;
    const size_t ws = wg_ws(g, &cp, &hp, &wp, kc);
    /* xt's offsets are int32 */
    if ((double)g->nb * hp * wp * cp > (double)INT32_MAX) return 0;
    if (ws_floats) *ws_floats = ws;
    return 1;
}

int et_spconv_ep_pays(const et_conv_implicit *g, double density) { return g && density <= EP_DMAX; }
int et_spconv_wg_pays(const et_conv_implicit *g, double density) { return g && density <= WG_DMAX; }

void et_spconv_ep_weights(const float *W, int Cout, int C, int KH, int KW, float *wt) {
    const int Cp = et_spconv_cp(C), KK = KH * KW;
    for (int t = 0; t < KK; t++)
        for (int co = 0; co < Cout; co++) {
            float *d = wt + ((int64_t)co * KK + t) * Cp;
            for (int ci = 0; ci < C; ci++) d[ci] = W[((int64_t)co * C + ci) * KK + t];
            for (int ci = C; ci < Cp; ci++) d[ci] = 0.0f;
        }
}

int et_spconv_ep(const et_conv_implicit *g, const float *dy, int64_t ldy, uint64_t *macs_cpu) {
    size_t need;
    if (!et_spconv_ep_applies(g, &need) || need > g->ws_floats || !g->ws || !g->wt || !g->dx || (g->keep && !g->x))
        return 0;
    uint64_t ent = 0;
#if ET_GEMM_HAVE_X86
    int coutp, nw;
    ep_ws(g, &coutp, &nw);
    const int64_t P = (int64_t)g->nb * g->Ho * g->Wo;
    float *dyT = g->ws;
    uint64_t *bits = (uint64_t *)(void *)(g->ws + al16((size_t)P * (size_t)coutp));
    float *accs = (float *)(void *)(bits + al16((size_t)P * (size_t)nw * 2) / 2);
    const size_t per = al16((size_t)g->H * g->W * (size_t)et_spconv_cp(g->C));
    const int T = threads_here();
#pragma omp parallel num_threads(T) if (T > 1 && g->nb > 1) reduction(+ : ent)
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
#pragma omp for schedule(static)
        for (int64_t p0 = 0; p0 < P; p0 += 256)
            et_spconv_ep_prep_avx512(g->Cout, coutp, nw, P - p0 < 256 ? P - p0 : 256, dy + p0, ldy, dyT + p0 * coutp,
                                     bits + p0 * nw);
#pragma omp for schedule(static)
        for (int n = 0; n < g->nb; n++) ent += et_spconv_ep_image_avx512(g, coutp, nw, dyT, bits, n, accs + (size_t)t * per);
    }
#else
    (void)dy, (void)ldy;
#endif
    if (macs_cpu) *macs_cpu = ent * (uint64_t)g->C;
    return 1;
}

int et_spconv_wg(const et_conv_implicit *g, const float *dy, int64_t ldy, float beta, float *G, uint64_t *macs_cpu) {
    size_t need;
    if (!et_spconv_wg_applies(g, &need) || need > g->ws_floats || !g->ws || !g->x || !G) return 0;
    uint64_t nnz = 0;
#if ET_GEMM_HAVE_X86
    const int kc = et_gemm_kinfo_for(ET_ISA_AVX512)->kc;
    int cp, hp, wp;
    wg_ws(g, &cp, &hp, &wp, kc);
    float *xt = g->ws;
    int32_t *pofs = (int32_t *)(void *)(g->ws + al16((size_t)g->nb * hp * wp * (size_t)cp));
    int32_t *lists = pofs + al16((size_t)g->nb * g->Ho * g->Wo);
    const int HWo = g->Ho * g->Wo;
    for (int n = 0; n < g->nb; n++)
        for (int oy = 0; oy < g->Ho; oy++)
            for (int ox = 0; ox < g->Wo; ox++)
                pofs[(int64_t)n * HWo + oy * g->Wo + ox] = (int32_t)((((int64_t)n * hp + oy) * wp + ox) * cp);
    et_spconv_wg_xt_avx512(g, cp, hp, wp, xt);
    const int T = threads_here();
#pragma omp parallel num_threads(T) if (T > 1 && g->Cout > 1) reduction(+ : nnz)
    {
        int t = 0, nt = 1;
#ifdef _OPENMP
        t = omp_get_thread_num(), nt = omp_get_num_threads();
#endif
        const int c0 = (int)((int64_t)g->Cout * t / nt), c1 = (int)((int64_t)g->Cout * (t + 1) / nt);
        nnz += et_spconv_wg_rows_avx512(g, cp, wp, kc, xt, pofs, dy, ldy, beta, G, c0, c1,
                                        lists + (size_t)t * al16(2 * (size_t)kc));
    }
#else
    (void)dy, (void)ldy, (void)beta;
#endif
    if (macs_cpu) *macs_cpu = nnz * (uint64_t)g->C * (uint64_t)(g->KH * g->KW);
    return 1;
}
