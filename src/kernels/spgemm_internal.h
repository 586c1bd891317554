/* Internal interface of the zero-skipping GEMM (spgemm*.c).
 *
 * A skip kernel has the contract of a micro-kernel (gemm_internal.h) with
 * alpha = 1, except that it runs only the steps p < k whose bit is set in
 * km (bit p%64 of km[p/64]), in ascending order. Skipping a step whose
 * products are all zero leaves every accumulator unchanged (an accumulator
 * starts at +0 and fma(a, b, acc) with a*b == 0 returns acc: it can never be
 * -0), so for finite operands the tile equals the dense kernel's bit for bit.
 */
#ifndef ET_SPGEMM_INTERNAL_H
#define ET_SPGEMM_INTERNAL_H
#include <stddef.h>
#include <stdint.h>

#include "kernels/gemm_internal.h"
#include "kernels/spgemm.h"

typedef void (*et_spgemm_skernel)(int m, int n, const uint64_t *km, int k, const float *a,
                                  ptrdiff_t ars, ptrdiff_t as, const float *b, ptrdiff_t bs,
                                  float *c, ptrdiff_t ldc, float beta);

/* Scans (portable versions in spgemm.c, AVX-512 twins in spgemm_avx512.c):
 *   nzbits    bits[t/64] bit t%64 = (x[t] != 0) for t < n; ceil(n/64) words
 *             written, bits past n zero
 *   nzcount   cnt[t] += (x[t] != 0) for t < n
 *   mbits     as nzbits for a byte mask
 *   popand    sum of popcount(a[w] & b[w]) over w < nw */
/*   panel     one operand panel of kb steps x n columns (n <= nsub*sw, sw = 16
 *             on AVX-512, NR elsewhere), step p at b + p*bs, read for the full
 *             ceil(n/sw)*sw width (packed panels are zero-padded; direct ones
 *             have n % sw == 0):
 *             sub[v*kbw + p/64] bit p%64 = any non-zero in columns
 *             [v*sw, v*sw+sw) of step p (zeroed first); kcnt[p] += non-zeros
 *             of step p; ccnt[j] += non-zeros of column j; brow[p*bstride]
 *             gets bits [bit0, bit0+n) = the non-zero pattern of step p.
 *             kcnt, ccnt, brow may be NULL.
 *   masktile  C[r*ldc + j] = 0 where bit bit0+j of bit row r is 0 (r < rows,
 *             j < n; bit rows mw + r*mstride, readable one word past bit0+n)
 *   maskdot   sum of cnt[j] over j < n with bit bit0+j of mw set */
typedef struct et_spgemm_scan {
    void (*nzbits)(const float *x, int n, uint64_t *bits);
    void (*nzcount)(const float *x, int n, int32_t *cnt);
    void (*mbits)(const uint8_t *m, int n, uint64_t *bits);
    uint64_t (*popand)(const uint64_t *a, const uint64_t *b, size_t nw);
    void (*panel)(const float *b, ptrdiff_t bs, int kb, int n, int sw, int nsub, uint64_t *sub,
                  int kbw, int32_t *kcnt, int32_t *ccnt, uint64_t *brow, size_t bstride,
                  int bit0);
    void (*masktile)(float *c, ptrdiff_t ldc, const uint64_t *mw, size_t mstride, int bit0,
                     int rows, int n);
    int64_t (*maskdot)(const uint64_t *mw, int bit0, const int32_t *cnt, int n);
} et_spgemm_scan;

/* The scans et_sgemm_sparse uses on `isa` (VPOPCNTQ popand where the CPU has it). */
const et_spgemm_scan *et_spgemm_scan_for(et_isa isa);

#if ET_GEMM_HAVE_X86
void et_spgemm_skip_avx2(int m, int n, const uint64_t *km, int k, const float *a, ptrdiff_t ars,
                         ptrdiff_t as, const float *b, ptrdiff_t bs, float *c, ptrdiff_t ldc,
                         float beta);
void et_spgemm_skip_avx512(int m, int n, const uint64_t *km, int k, const float *a,
                           ptrdiff_t ars, ptrdiff_t as, const float *b, ptrdiff_t bs, float *c,
                           ptrdiff_t ldc, float beta);
/* The AVX-512 tile in one: km == NULL runs every step (the dense kernel's
 * loop, same bits); kw (NULL: no mask) points at the row panel's mask words
 * (row r's word kw[r], the next word kw[ET_GEMM_AVX512_MR + r]) and ko is the
 * bit of column 0 in them: columns whose bit is clear are stored as +0. */
void et_spgemm_tile_avx512(int m, int n, const uint64_t *km, int k, const float *a,
                           ptrdiff_t ars, ptrdiff_t as, const float *b, ptrdiff_t bs, float *c,
                           ptrdiff_t ldc, float beta, const uint64_t *kw, int ko);
/* The dense AVX-512 tile (same bits as the above with km == NULL) that also
 * records pat[p] = the non-zero pattern of B's step p (bit j: column j, over
 * ceil(n/16)*16 columns), and the panel bookkeeping of `panel` from those
 * patterns: B is scanned while the first tile of a panel is computed, with
 * its loads from memory overlapped by the FMAs. */
void et_spgemm_tilescan_avx512(int m, int n, int k, const float *a, ptrdiff_t ars, ptrdiff_t as,
                               const float *b, ptrdiff_t bs, float *c, ptrdiff_t ldc, float beta,
                               const uint64_t *kw, int ko, uint64_t *pat);
void et_spgemm_patpanel_avx512(const uint64_t *pat, int kb, int n, int nsub, uint64_t *sub, int kbw,
                               int32_t *kcnt, int32_t *ccnt, uint64_t *brow, size_t bstride,
                               int bit0);
void et_spgemm_patpanel_vpop_avx512(const uint64_t *pat, int kb, int n, int nsub, uint64_t *sub,
                                    int kbw, int32_t *kcnt, int32_t *ccnt, uint64_t *brow,
                                    size_t bstride, int bit0); /* needs AVX512_VPOPCNTDQ */
void et_spgemm_nzbits_avx512(const float *x, int n, uint64_t *bits);
void et_spgemm_nzcount_avx512(const float *x, int n, int32_t *cnt);
void et_spgemm_mbits_avx512(const uint8_t *m, int n, uint64_t *bits);
uint64_t et_spgemm_popand_avx512(const uint64_t *a, const uint64_t *b, size_t nw); /* VPOPCNTQ */
void et_spgemm_panel_avx512(const float *b, ptrdiff_t bs, int kb, int n, int sw, int nsub,
                            uint64_t *sub, int kbw, int32_t *kcnt, int32_t *ccnt, uint64_t *brow,
                            size_t bstride, int bit0); /* sw == 16 */
int64_t et_spgemm_maskdot_avx512(const uint64_t *mw, int bit0, const int32_t *cnt, int n);
void et_spgemm_masktile_avx512(float *c, ptrdiff_t ldc, const uint64_t *mw, size_t mstride,
                               int bit0, int rows, int n);

/* the 64 bits of w starting at bit lo (w readable one word past lo/64) */
static inline uint64_t et_spgemm_field(const uint64_t *w, int lo) {
    int o = lo & 63;
    uint64_t x = w[lo >> 6] >> o;
    if (o) x |= w[(lo >> 6) + 1] << (64 - o);
    return x;
}
#endif

/* et_sgemm_sparse forced onto one ISA (capped at what this CPU runs): the
 * blocking, kernels and scans of that ISA. */
void et_sgemm_sparse_isa(et_isa isa, int ta, int tb, int M, int N, int K, const float *A,
                         int lda, const float *B, int ldb, float beta, float *C, int ldc,
                         int skip_zeros, const uint8_t *mask, int ldmask, et_spgemm_stats *st);

/* The fast counting pass (spcount.c) on one ISA's scans (tests). */
void et_spgemm_count_isa(et_isa isa, int ta, int tb, int M, int N, int K, const float *A, int lda,
                         const float *B, int ldb, int skip_zeros, const uint8_t *mask, int ldmask,
                         et_spgemm_count *out);

#endif
