/* Codecs for the tensors an edge-training processor moves off-chip: exact
 * encoders/decoders at bit granularity, and the size each would move.
 *
 * A tensor is rows x cols element codes of `bits` bits each (the tensor's
 * actual precision: float32 bit patterns, int8 codes, ...); code 0 is the
 * zero that can be skipped. Formats (docs/sparsity.md):
 *  - dense:   every code, rows*cols*bits.
 *  - rle:     entries (run, code), run = number of zero codes before `code`
 *             (run_bits wide, at most 2^run_bits - 1); a longer gap is split
 *             by entries whose code is 0; zeros after the last non-zero are
 *             covered the same way. Each entry stands for run + 1 elements.
 *  - bitmask: one bit per element (1 = non-zero), then the non-zero codes.
 *  - csr:     per row the number of non-zeros (ceil(log2(cols+1)) bits), then
 *             per non-zero its column (ceil(log2(cols)) bits, 0 if cols == 1)
 *             and its code.
 * Bits are packed LSB-first into bytes. */
#include "sparsity/codec.h"

#include <string.h>



const char *et_codec_name(et_codec c) {
    static const char *const names[ET_NCODECS] = {"dense", "rle", "bitmask", "csr"};
    return (unsigned)c < ET_NCODECS ? names[c] : "?";
}

static int bits_for(uint64_t maxval) { /* bits needed to hold 0..maxval */
    int b = 0;
    while (b < 64 && (maxval >> b)) b++;
    return b;
}

static et_status check_args(int64_t rows, int64_t cols, int bits, int run_bits) {
    if (rows < 0 || cols < 0 || (cols > 0 && rows > INT64_MAX / cols))
        return et_set_error(ET_ERR_INVALID, "codec: bad tensor shape");
    if (bits < 1 || bits > 32) return et_set_error(ET_ERR_INVALID, "codec: element bits must be 1..32");
    if (run_bits < 1 || run_bits > 32) return et_set_error(ET_ERR_INVALID, "codec: run bits must be 1..32");
    return ET_OK;
}

/* ------------------------------------------------------------ bit streams */

typedef struct {
    uint8_t *buf;
    uint64_t cap_bits, pos; /* buf == NULL: count only */
} bitw;

static int put(bitw *w, uint64_t v, int n) {
    if (w->buf) {
        if (w->pos + (uint64_t)n > w->cap_bits) return 0;
        for (int i = 0; i < n; i++, w->pos++) {
            uint8_t *byte = &w->buf[w->pos >> 3];
            uint8_t mask = (uint8_t)(1u << (w->pos & 7));
            if ((v >> i) & 1) *byte |= mask;
            else *byte &= (uint8_t)~mask;
        }
    } else {
        w->pos += (uint64_t)n;
    }
    return 1;
}

typedef struct {
    const uint8_t *buf;
    uint64_t len_bits, pos;
} bitr;

static int get(bitr *r, int n, uint64_t *v) {
    if (r->pos + (uint64_t)n > r->len_bits) return 0;
    uint64_t x = 0;
    for (int i = 0; i < n; i++, r->pos++) x |= (uint64_t)((r->buf[r->pos >> 3] >> (r->pos & 7)) & 1) << i;
    *v = x;
    return 1;
}

/* --------------------------------------------------------------- encoders */

static int encode(et_codec c, const uint32_t *codes, int64_t rows, int64_t cols, int bits, int run_bits,
                  bitw *w) {
    const int64_t n = rows * cols;
    const uint64_t maxrun = run_bits >= 32 ? 0xffffffffu : ((uint64_t)1 << run_bits) - 1;
    switch (c) {
    case ET_CODEC_DENSE:
        for (int64_t i = 0; i < n; i++)
            if (!put(w, codes[i], bits)) return 0;
        return 1;
    case ET_CODEC_RLE: {
        uint64_t run = 0;
        for (int64_t i = 0; i < n; i++) {
            if (codes[i] == 0 && run < maxrun && i + 1 < n) {
                run++;
                continue;
            }
            /* emit (run, code): code may be 0 when the run is full or at the end */
            if (!put(w, run, run_bits) || !put(w, codes[i], bits)) return 0;
            run = 0;
        }
        return 1;
    }
    case ET_CODEC_BITMASK:
        for (int64_t i = 0; i < n; i++)
            if (!put(w, codes[i] != 0, 1)) return 0;
        for (int64_t i = 0; i < n; i++)
            if (codes[i] && !put(w, codes[i], bits)) return 0;
        return 1;
    case ET_CODEC_CSR: {
        const int nb = bits_for((uint64_t)cols), cb = cols > 1 ? bits_for((uint64_t)cols - 1) : 0;
        for (int64_t r = 0; r < rows; r++) {
            const uint32_t *row = codes + r * cols;
            uint64_t nnz = 0;
            for (int64_t j = 0; j < cols; j++) nnz += row[j] != 0;
            if (!put(w, nnz, nb)) return 0;
            for (int64_t j = 0; j < cols; j++)
                if (row[j] && (!put(w, (uint64_t)j, cb) || !put(w, row[j], bits))) return 0;
        }
        return 1;
    }
    default:
        return 0;
    }
}

et_status et_codec_size_bits(et_codec c, const uint32_t *codes, int64_t rows, int64_t cols, int bits,
                             int run_bits, uint64_t *size_bits) {
    et_status st = check_args(rows, cols, bits, run_bits);
    if (st) return st;
    if ((unsigned)c >= ET_NCODECS) return et_set_error(ET_ERR_INVALID, "codec: unknown codec");
    bitw w = {NULL, 0, 0};
    encode(c, codes, rows, cols, bits, run_bits, &w);
    *size_bits = w.pos;
    return ET_OK;
}

et_status et_codec_encode(et_codec c, const uint32_t *codes, int64_t rows, int64_t cols, int bits,
                          int run_bits, uint8_t *out, size_t cap_bytes, uint64_t *size_bits) {
    et_status st = check_args(rows, cols, bits, run_bits);
    if (st) return st;
    if ((unsigned)c >= ET_NCODECS) return et_set_error(ET_ERR_INVALID, "codec: unknown codec");
    const uint64_t mask = bits == 32 ? 0xffffffffu : ((uint64_t)1 << bits) - 1;
    for (int64_t i = 0; i < rows * cols; i++)
        if (codes[i] & ~mask) return et_set_error(ET_ERR_INVALID, "codec: code %u does not fit in %d bits", codes[i], bits);
    bitw w = {out, (uint64_t)cap_bytes * 8, 0};
    if (!encode(c, codes, rows, cols, bits, run_bits, &w))
        return et_set_error(ET_ERR_NOMEM, "codec: output buffer of %zu bytes too small", cap_bytes);
    *size_bits = w.pos;
    return ET_OK;
}

et_status et_codec_decode(et_codec c, const uint8_t *in, uint64_t size_bits, int64_t rows, int64_t cols,
                          int bits, int run_bits, uint32_t *codes) {
    et_status st = check_args(rows, cols, bits, run_bits);
    if (st) return st;
    const int64_t n = rows * cols;
    bitr r = {in, size_bits, 0};
    uint64_t v;
#define GET(nbits)                                                                                  \
    do {                                                                                            \
        if (!get(&r, (nbits), &v)) return et_set_error(ET_ERR_FORMAT, "codec %s: stream truncated", \
                                                       et_codec_name(c));                           \
    } while (0)
    switch (c) {
    case ET_CODEC_DENSE:
        for (int64_t i = 0; i < n; i++) {
            GET(bits);
            codes[i] = (uint32_t)v;
        }
        break;
    case ET_CODEC_RLE:
        for (int64_t i = 0; i < n;) {
            GET(run_bits);
            if (v > (uint64_t)(n - i - 1)) return et_set_error(ET_ERR_FORMAT, "codec rle: run past the end");
            for (uint64_t k = 0; k < v; k++) codes[i++] = 0;
            GET(bits);
            codes[i++] = (uint32_t)v;
        }
        break;
    case ET_CODEC_BITMASK: {
        bitr m = r;
        r.pos = (uint64_t)n;
        if ((uint64_t)n > size_bits) return et_set_error(ET_ERR_FORMAT, "codec bitmask: stream truncated");
        for (int64_t i = 0; i < n; i++) {
            uint64_t bit = 0;
            get(&m, 1, &bit);
            if (bit) {
                GET(bits);
                if (!v) return et_set_error(ET_ERR_FORMAT, "codec bitmask: zero code marked non-zero");
                codes[i] = (uint32_t)v;
            } else {
                codes[i] = 0;
            }
        }
        break;
    }
    case ET_CODEC_CSR: {
        const int nb = bits_for((uint64_t)cols), cb = cols > 1 ? bits_for((uint64_t)cols - 1) : 0;
        memset(codes, 0, sizeof(uint32_t) * (size_t)n);
        for (int64_t row = 0; row < rows; row++) {
            GET(nb);
            uint64_t nnz = v;
            if (nnz > (uint64_t)cols) return et_set_error(ET_ERR_FORMAT, "codec csr: row count too large");
            int64_t last = -1;
            for (uint64_t k = 0; k < nnz; k++) {
                GET(cb);
                int64_t j = (int64_t)v;
                if (j <= last || j >= cols) return et_set_error(ET_ERR_FORMAT, "codec csr: bad column index");
                last = j;
                GET(bits);
                if (!v) return et_set_error(ET_ERR_FORMAT, "codec csr: stored zero");
                codes[row * cols + j] = (uint32_t)v;
            }
        }
        break;
    }
    default:
        return et_set_error(ET_ERR_INVALID, "codec: unknown codec");
    }
#undef GET
    if (r.pos != size_bits) return et_set_error(ET_ERR_FORMAT, "codec %s: %llu trailing bits", et_codec_name(c),
                                                (unsigned long long)(size_bits - r.pos));
    return ET_OK;
}

/* Sizes of every codec for a float tensor from its zero structure alone (a
 * value is zero iff it compares equal to 0.0f, i.e. +0 or -0): one pass. The
 * results equal et_codec_size_bits on the tensor's codes (tests/test_codecs.c). */
/* Non-zero bits of n <= 64 floats (bit i: x[i] != 0; NaN counts as non-zero). */
static uint64_t nzmask_scalar(const float *x, int n) {
    uint64_t w = 0;
    for (int i = 0; i < n; i++) w |= (uint64_t)(x[i] != 0.0f) << i;
    return w;
}

/* One word of the RLE count: w holds the non-zero bits of `len` elements
 * (bits >= len clear), *gap the zeros since the last non-zero before them.
 * Adds the entries of every non-zero (1 + its gap / 2^run_bits) to *entries
 * and leaves the zeros after the word's last non-zero in *gap. */
static inline void rle_word(uint64_t w, int len, int run_bits, uint64_t *gap, uint64_t *entries) {
    if (!w) {
        *gap += (uint64_t)len;
        return;
    }
    const uint64_t valid = len == 64 ? ~(uint64_t)0 : (((uint64_t)1 << len) - 1);
    const int lo = __builtin_ctzll(w), hi = 63 - __builtin_clzll(w);
    /* t: starts of runs of >= 2^run_bits zeros inside the word. Only runs
     * between the lowest and the highest non-zero matter here (the low run
     * joins the carried gap, the high one is carried on); none can be that
     * long when 2^run_bits > 62. */
    uint64_t t = 0;
    if (run_bits <= 5) {
        t = ~w & valid;
        for (int s = 1; s < (1 << run_bits) && t; s <<= 1) t &= t >> s;
        t &= (((uint64_t)1 << hi) - 1) & ~(((uint64_t)2 << lo) - 1);
    }
    if (!t) {
        /* every gap but the first is shorter than 2^run_bits */
        *entries += (uint64_t)__builtin_popcountll(w) + ((*gap + (uint64_t)lo) >> run_bits);
    } else {
        uint64_t g = *gap;
        int prev = 0;
        for (uint64_t r = w; r; r &= r - 1) {
            const int p = __builtin_ctzll(r);
            *entries += 1 + ((g + (uint64_t)(p - prev)) >> run_bits);
            g = 0;
            prev = p + 1;
        }
    }
    *gap = (uint64_t)(len - 1 - hi);
}

void et_codec_sizes_f32(const float *x, int64_t rows, int64_t cols, int bits, int run_bits,
                        uint64_t size_bits[ET_NCODECS], int64_t *nonzeros) {
    et_codec_sizes_f32_isa(et_cpu_isa(), x, rows, cols, bits, run_bits, size_bits, nonzeros);
}

void et_codec_sizes_f32_isa(et_isa isa, const float *x, int64_t rows, int64_t cols, int bits, int run_bits,
                            uint64_t size_bits[ET_NCODECS], int64_t *nonzeros) {
    const int64_t n = rows * cols;
    uint64_t nnz = 0, entries = 0, gap = 0;
    uint64_t words[64];
    const int vec = isa >= ET_ISA_AVX512 && et_cpu_isa() >= ET_ISA_AVX512;
    for (int64_t i0 = 0; i0 < n; i0 += 64 * 64) { /* blocks of 4096 elements */
        const int64_t len = n - i0 < 64 * 64 ? n - i0 : 64 * 64;
        const int nw = (int)((len + 63) / 64);
#if defined(__x86_64__) || defined(_M_X64)
        if (vec) et_codec_nzmask_avx512(x + i0, len, words);
        else
#endif
            for (int k = 0; k < nw; k++) words[k] = nzmask_scalar(x + i0 + 64 * k, (int)(len - 64 * k < 64 ? len - 64 * k : 64));
        for (int k = 0; k < nw; k++) {
            nnz += (uint64_t)__builtin_popcountll(words[k]);
            rle_word(words[k], (int)(len - 64 * k < 64 ? len - 64 * k : 64), run_bits, &gap, &entries);
        }
    }
    const uint64_t span = (uint64_t)1 << run_bits;
    entries += (gap + span - 1) / span;
    const int nb = bits_for((uint64_t)cols), cb = cols > 1 ? bits_for((uint64_t)cols - 1) : 0;
    size_bits[ET_CODEC_DENSE] = (uint64_t)n * (uint64_t)bits;
    size_bits[ET_CODEC_RLE] = entries * (uint64_t)(run_bits + bits);
    size_bits[ET_CODEC_BITMASK] = (uint64_t)n + nnz * (uint64_t)bits;
    size_bits[ET_CODEC_CSR] = (uint64_t)rows * (uint64_t)nb + nnz * (uint64_t)(cb + bits);
    if (nonzeros) *nonzeros = (int64_t)nnz;
}
