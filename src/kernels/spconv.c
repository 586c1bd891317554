/* Conv EP and WG without the column matrix (spconv.h): the rules, the work
 * space and the drivers; the kernels are in spconv_avx512.c.
 *
 * Work space (the caller's, conv's lane column buffer):
 *   EP  per thread, one image's dx channels last and zero-padded
 *       ((H + 2PH) x (W + 2PW) x Cp), and a band of dY rows' bit sets of
 *       non-zero output channels (band*Wo x Cout/64 words) and copy
 *       (band*Wo x Cout floats);
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
uint64_t et_spconv_ep_image_avx512(const et_conv_implicit *g, const et_spconv_ep_shape *sh, const float *dy,
                                   int64_t ldy, int n, uint64_t *wband, float *dband, float *acc);
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
#define EP_DMAX 0.40
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

/* one thread's part of EP's work space */
static size_t ep_acc(const et_conv_implicit *g) {
    return al16((size_t)(g->H + 2 * g->PH) * (size_t)(g->W + 2 * g->PW) * (size_t)et_spconv_cp(g->C));
}
static size_t ep_wband(const et_conv_implicit *g) {
    const et_spconv_ep_shape sh = et_spconv_ep_shape_of(g);
    return al16(2 * (size_t)sh.band * g->Wo * (size_t)((g->Cout + 63) / 64));
}
static size_t ep_ws1(const et_conv_implicit *g) {
    const et_spconv_ep_shape sh = et_spconv_ep_shape_of(g);
    return ep_acc(g) + ep_wband(g) + al16((size_t)sh.band * g->Wo * (size_t)g->Cout);
}

int et_spconv_ep_applies(const et_conv_implicit *g, size_t *ws_floats) {
    if (!geom_ok(g) || g->Cout > EP_COUT_MAX) return 0;
    /* one KC block in EP's K = Cout: the micro-kernel's sum is one fma chain */
    if (g->Cout > et_gemm_kinfo_for(ET_ISA_AVX512)->kc) return 0;
    if (ws_floats) *ws_floats = (size_t)threads_here() * ep_ws1(g);
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

/* EP's shape (spconv.h): channel blocks of at most 3 vectors, as even as
 * they come (64 channels: 2 + 2), and all taps in one group up to 9 (27
 * sums in registers, the most the 32 vector registers leave room for);
 * bands of at least EP_BAND_PIXELS pixels. */
#define EP_BAND_PIXELS 64
static void ep_nv_tg(int C, int KH, int KW, int *nv, int *tg) {
    const int cv = et_spconv_cp(C) / 16, nblk = (cv + 2) / 3;
    *nv = (cv + nblk - 1) / nblk;
    *tg = KH * KW < 9 ? KH * KW : 9;
}

et_spconv_ep_shape et_spconv_ep_shape_of(const et_conv_implicit *g) {
    et_spconv_ep_shape sh;
    ep_nv_tg(g->C, g->KH, g->KW, &sh.nv, &sh.tg);
    sh.band = (EP_BAND_PIXELS + g->Wo - 1) / g->Wo;
    if (sh.band > g->Ho) sh.band = g->Ho;
    return sh;
}

void et_spconv_ep_weights(const float *W, int Cout, int C, int KH, int KW, float *wt) {
    const int Cp = et_spconv_cp(C), KK = KH * KW;
    int nv, tg;
    ep_nv_tg(C, KH, KW, &nv, &tg);
    for (int cb = 0; cb < Cp; cb += 16 * nv) {
        const int nb = Cp - cb < 16 * nv ? Cp - cb : 16 * nv;
        float *b = wt + (int64_t)cb * KK * Cout;
        for (int co = 0; co < Cout; co++)
            for (int t = 0; t < KK; t++) {
                float *d = b + ((int64_t)co * KK + t) * nb;
                for (int i = 0; i < nb; i++) d[i] = cb + i < C ? W[((int64_t)co * C + cb + i) * KK + t] : 0.0f;
            }
    }
}

int et_spconv_ep(const et_conv_implicit *g, const float *dy, int64_t ldy, uint64_t *macs_cpu) {
    size_t need;
    if (!et_spconv_ep_applies(g, &need) || need > g->ws_floats || !g->ws || !g->wt || !g->dx || (g->keep && !g->x))
        return 0;
    uint64_t ent = 0;
#if ET_GEMM_HAVE_X86
    const size_t per = ep_ws1(g);
    const et_spconv_ep_shape sh = et_spconv_ep_shape_of(g);
    const int T = threads_here();
#pragma omp parallel num_threads(T) if (T > 1 && g->nb > 1) reduction(+ : ent)
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        float *acc = g->ws + (size_t)t * per;
        uint64_t *wband = (uint64_t *)(void *)(acc + ep_acc(g));
        float *dband = acc + ep_acc(g) + ep_wband(g);
#pragma omp for schedule(static)
        for (int n = 0; n < g->nb; n++) ent += et_spconv_ep_image_avx512(g, &sh, dy, ldy, n, wband, dband, acc);
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
