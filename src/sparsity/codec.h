/* Off-chip traffic codecs (zero run-length, bitmask + values, CSR-like):
 * exact bit-level encode/decode and the size each moves. See codec.c. */
#ifndef ET_CODEC_H
#define ET_CODEC_H
#include "edgetrain.h"

typedef enum et_codec { ET_CODEC_DENSE, ET_CODEC_RLE, ET_CODEC_BITMASK, ET_CODEC_CSR, ET_NCODECS } et_codec;

const char *et_codec_name(et_codec c);
/* Bits the codec would move for these codes (no output written). */
et_status et_codec_size_bits(et_codec c, const uint32_t *codes, int64_t rows, int64_t cols, int bits,
                             int run_bits, uint64_t *size_bits);
et_status et_codec_encode(et_codec c, const uint32_t *codes, int64_t rows, int64_t cols, int bits,
                          int run_bits, uint8_t *out, size_t cap_bytes, uint64_t *size_bits);
/* Rejects truncated streams, runs past the end, bad indices and trailing bits. */
et_status et_codec_decode(et_codec c, const uint8_t *in, uint64_t size_bits, int64_t rows, int64_t cols,
                          int bits, int run_bits, uint32_t *codes);
/* All codecs' sizes for a float tensor (zero = +-0.0f) of `bits`-bit values,
 * from its zero structure, in one pass; also its number of non-zeros. */
void et_codec_sizes_f32(const float *x, int64_t rows, int64_t cols, int bits, int run_bits,
                        uint64_t size_bits[ET_NCODECS], int64_t *nonzeros);

/* The same with the instruction set capped at isa (tests cover every path). */
void et_codec_sizes_f32_isa(et_isa isa, const float *x, int64_t rows, int64_t cols, int bits, int run_bits,
                            uint64_t size_bits[ET_NCODECS], int64_t *nonzeros);
/* Internal to codec.c: the non-zero bits of n floats into ceil(n/64) words
 * (bit i of word k: x[64k+i] != 0, NaN included; bits past n clear). */
#if defined(__x86_64__) || defined(_M_X64)
void et_codec_nzmask_avx512(const float *x, int64_t n, uint64_t *words);
#endif
#endif
