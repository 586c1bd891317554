/* Trace files: every product a training run executed (docs/trace.md).
 *
 * Version 2 (written; versions 1 and 2 are read), little-endian:
 *   header   "ETTRACE\0" | u32 version (2) | u32 fixed record bytes (184) |
 *            u32 layers | u32 block positions (ET_HW_BLK) | u32 sums per block
 *   names    per layer: u8 length (< 80) | bytes
 *   records  fixed part, 184 bytes: i64 step | i32 layer | i32 stage |
 *            i32 a_kind | i32 a_bits | i32 w_kind | i32 w_bits | i64 ci | i64 co |
 *            i64 co_dense | i64 spatial | f64 w_density | i64 sram_bytes |
 *            i64 dram_bytes | i64 sram_out_bytes | i64 dram[3 kinds][3 codecs] |
 *            u32 spec | u32 spec_bits (0..8; 0: not recorded) | u64 nblk
 *            then nblk x (sums per block) u32: the output structure
 *   trailer  "ETTREND\0" | u64 record count
 * Version 1: a 20-byte header (no block fields), 96-byte records (the fields up
 * to dram_bytes, then 8 zero bytes), no structure.
 * The reader checks every field's range and that the trailer's count matches,
 * so a truncated or garbled file is an error, never a silently short replay. */
#include "edgetrain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REC1_BYTES 96
#define REC2_BYTES 184
#define VERSION 2
#define MAX_LAYERS (1 << 16)
#define MAX_RECORDS ((uint64_t)1 << 32)
#define MAX_BLOCKS ((int64_t)1 << 26)

struct et_trace_writer {
    FILE *f;
    char path[4096], tmp[4200];
    uint64_t count;
    int nlayers;
};

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

et_status et_trace_create(const char *path, int nlayers, const char *const *names, et_trace_writer **out) {
    *out = NULL;
    if (nlayers < 0 || nlayers > MAX_LAYERS) return et_set_error(ET_ERR_INVALID, "trace: bad layer count");
    et_trace_writer *w = calloc(1, sizeof *w);
    if (!w) return et_set_error(ET_ERR_NOMEM, "out of memory");
    snprintf(w->path, sizeof w->path, "%s", path);
    snprintf(w->tmp, sizeof w->tmp, "%s.tmp.%ld", path, (long)getpid());
    w->nlayers = nlayers;
    if (!(w->f = fopen(w->tmp, "wb"))) {
        free(w);
        return et_set_error(ET_ERR_IO, "cannot create trace %s", path);
    }
    unsigned char h[28];
    memcpy(h, "ETTRACE", 8);
    put_u32(h + 8, VERSION), put_u32(h + 12, REC2_BYTES), put_u32(h + 16, (uint32_t)nlayers);
    put_u32(h + 20, ET_HW_BLK), put_u32(h + 24, ET_HW_NSUM);
    int ok = fwrite(h, 1, sizeof h, w->f) == sizeof h;
    for (int i = 0; ok && i < nlayers; i++) {
        size_t n = strlen(names[i]);
        if (n > 79) n = 79;
        unsigned char len = (unsigned char)n;
        ok = fwrite(&len, 1, 1, w->f) == 1 && fwrite(names[i], 1, n, w->f) == n;
    }
    if (!ok) {
        et_trace_close(w, 0);
        return et_set_error(ET_ERR_IO, "cannot write trace %s", path);
    }
    *out = w;
    return ET_OK;
}

static void encode(const et_hw_op *op, unsigned char *r) {
    memset(r, 0, REC2_BYTES);
    uint64_t d;
    memcpy(&d, &op->w_density, 8);
    put_u64(r, (uint64_t)op->step);
    put_u32(r + 8, (uint32_t)op->layer), put_u32(r + 12, (uint32_t)op->stage);
    put_u32(r + 16, (uint32_t)op->a_kind), put_u32(r + 20, (uint32_t)op->a_bits);
    put_u32(r + 24, (uint32_t)op->w_kind), put_u32(r + 28, (uint32_t)op->w_bits);
    put_u64(r + 32, (uint64_t)op->ci), put_u64(r + 40, (uint64_t)op->co);
    put_u64(r + 48, (uint64_t)op->co_dense), put_u64(r + 56, (uint64_t)op->spatial);
    put_u64(r + 64, d);
    put_u64(r + 72, (uint64_t)op->sram_bytes), put_u64(r + 80, (uint64_t)op->dram_bytes);
    put_u64(r + 88, (uint64_t)op->sram_out_bytes);
    for (int k = 0; k < ET_HW_NT; k++)
        for (int c = 0; c < ET_HW_NC; c++) put_u64(r + 96 + 8 * (k * ET_HW_NC + c), (uint64_t)op->dram[k][c]);
    put_u32(r + 168, (uint32_t)op->spec);
    put_u32(r + 172, (uint32_t)op->spec_bits);
    put_u64(r + 176, (uint64_t)op->nblk);
}

/* The fields versions 1 and 2 share (the first 88 bytes). */
static void decode_common(const unsigned char *r, et_hw_op *op) {
    uint64_t d = get_u64(r + 64);
    memset(op, 0, sizeof *op);
    op->step = (int64_t)get_u64(r);
    op->layer = (int32_t)get_u32(r + 8), op->stage = (int32_t)get_u32(r + 12);
    op->a_kind = (int32_t)get_u32(r + 16), op->a_bits = (int32_t)get_u32(r + 20);
    op->w_kind = (int32_t)get_u32(r + 24), op->w_bits = (int32_t)get_u32(r + 28);
    op->ci = (int64_t)get_u64(r + 32), op->co = (int64_t)get_u64(r + 40);
    op->co_dense = (int64_t)get_u64(r + 48), op->spatial = (int64_t)get_u64(r + 56);
    memcpy(&op->w_density, &d, 8);
    op->sram_bytes = (int64_t)get_u64(r + 72), op->dram_bytes = (int64_t)get_u64(r + 80);
}

/* Version 2's extra fields; 0 if any is malformed. */
static int decode_v2(const unsigned char *r, et_hw_op *op) {
    op->sram_out_bytes = (int64_t)get_u64(r + 88);
    int64_t sum = 0;
    for (int k = 0; k < ET_HW_NT; k++)
        for (int c = 0; c < ET_HW_NC; c++) {
            op->dram[k][c] = (int64_t)get_u64(r + 96 + 8 * (k * ET_HW_NC + c));
            if (op->dram[k][c] < 0 || op->dram[k][c] > ((int64_t)1 << 52)) return 0;
        }
    for (int k = 0; k < ET_HW_NT; k++) sum += op->dram[k][ET_HW_C_DENSE];
    uint32_t spec = get_u32(r + 168), spec_bits = get_u32(r + 172);
    op->spec = (int32_t)spec;
    op->spec_bits = (int32_t)spec_bits;
    op->nblk = (int64_t)get_u64(r + 176);
    int64_t want = (op->spatial + ET_HW_BLK - 1) / ET_HW_BLK;
    return sum == op->dram_bytes && op->sram_out_bytes >= 0 && op->sram_out_bytes <= op->sram_bytes && spec <= 1 &&
           spec_bits <= 8 && (spec || !spec_bits) && (op->nblk == 0 || (op->nblk == want && op->nblk <= MAX_BLOCKS)) &&
           (!spec || (op->nblk && op->stage == ET_FF));
}

/* The per-block sums of a record: S_0 <= positions x Co, S_k non-increasing,
 * S_k <= positions x ceil(Co / 2^k), S_k >= ceil(S_0 / 2^k)... bounded by the
 * block; and the largest Co(p) implied matches nothing beyond co. */
static int sums_valid(const et_hw_op *op, const uint32_t *s) {
    for (int64_t b = 0; b < op->nblk; b++) {
        int64_t p0 = b * ET_HW_BLK, p1 = p0 + ET_HW_BLK < op->spatial ? p0 + ET_HW_BLK : op->spatial;
        const uint32_t *x = s + b * ET_HW_NSUM;
        for (int k = 0; k < ET_HW_NSUM; k++) {
            int64_t cap = (p1 - p0) * ((op->co + (1 << k) - 1) >> k);
            if ((int64_t)x[k] > cap || (k && x[k] > x[k - 1])) return 0;
        }
    }
    return 1;
}

et_status et_trace_add(et_trace_writer *w, const et_hw_op *op) {
    unsigned char r[REC2_BYTES];
    encode(op, r);
    if (fwrite(r, 1, REC2_BYTES, w->f) != REC2_BYTES) return et_set_error(ET_ERR_IO, "cannot write trace %s", w->path);
    for (int64_t b = 0; b < op->nblk; b++) {
        unsigned char x[4 * ET_HW_NSUM];
        for (int k = 0; k < ET_HW_NSUM; k++) put_u32(x + 4 * k, op->sums[b * ET_HW_NSUM + k]);
        if (fwrite(x, 1, sizeof x, w->f) != sizeof x) return et_set_error(ET_ERR_IO, "cannot write trace %s", w->path);
    }
    w->count++;
    return ET_OK;
}

et_status et_trace_close(et_trace_writer *w, int commit) {
    if (!w) return ET_OK;
    et_status st = ET_OK;
    if (commit) {
        unsigned char t[16];
        memcpy(t, "ETTREND", 8);
        put_u64(t + 8, w->count);
        int ok = fwrite(t, 1, 16, w->f) == 16 && fflush(w->f) == 0 && fsync(fileno(w->f)) == 0;
        ok &= fclose(w->f) == 0;
        if (!ok || rename(w->tmp, w->path) != 0) {
            remove(w->tmp);
            st = et_set_error(ET_ERR_IO, "cannot write trace %s", w->path);
        }
    } else {
        fclose(w->f);
        remove(w->tmp);
    }
    free(w);
    return st;
}

static int op_valid(const et_hw_op *op, int nlayers) {
    return op->step >= 0 && op->layer >= 0 && op->layer < nlayers && op->stage >= 0 && op->stage < ET_NSTAGES &&
           op->a_kind >= 0 && op->a_kind <= 2 && op->w_kind >= 0 && op->w_kind <= 2 && op->a_bits >= 1 &&
           op->a_bits <= 32 && op->w_bits >= 1 && op->w_bits <= 32 && op->ci >= 1 && op->ci < ((int64_t)1 << 40) &&
           op->co >= 0 && op->co <= op->co_dense && op->co_dense < ((int64_t)1 << 40) && op->spatial >= 0 &&
           op->spatial < ((int64_t)1 << 40) && op->w_density >= 0 && op->w_density <= 1 && op->sram_bytes >= 0 &&
           op->dram_bytes >= 0;
}

et_status et_trace_read(const char *path, int *nlayers, char (*names)[80], int max_layers, et_trace_fn fn,
                        void *ctx) {
    FILE *f = fopen(path, "rb");
    if (!f) return et_set_error(ET_ERR_IO, "cannot open trace %s", path);
    et_status st = ET_OK;
    unsigned char h[28], r[REC2_BYTES];
    uint32_t *sums = NULL;
    size_t sums_cap = 0;
    uint64_t count = 0;
    if (fread(h, 1, 20, f) != 20 || memcmp(h, "ETTRACE", 8)) {
        st = et_set_error(ET_ERR_FORMAT, "%s: not an edgetrain trace", path);
        goto out;
    }
    const uint32_t version = get_u32(h + 8);
    const size_t rec = version == 1 ? REC1_BYTES : REC2_BYTES;
    if ((version != 1 && version != 2) || get_u32(h + 12) != rec) {
        st = et_set_error(ET_ERR_FORMAT, "%s: trace version %u (record %u bytes); this edgetrain reads versions 1 "
                          "and 2", path, version, get_u32(h + 12));
        goto out;
    }
    if (version == 2 && (fread(h + 20, 1, 8, f) != 8 || get_u32(h + 20) != ET_HW_BLK || get_u32(h + 24) != ET_HW_NSUM)) {
        st = et_set_error(ET_ERR_FORMAT, "%s: truncated header or structure blocks other than %d positions x %d sums",
                          path, ET_HW_BLK, ET_HW_NSUM);
        goto out;
    }
    uint32_t nl = get_u32(h + 16);
    if (nl > MAX_LAYERS) {
        st = et_set_error(ET_ERR_FORMAT, "%s: absurd layer count %u", path, nl);
        goto out;
    }
    for (uint32_t i = 0; i < nl; i++) {
        unsigned char len;
        char buf[80];
        if (fread(&len, 1, 1, f) != 1 || len > 79 || fread(buf, 1, len, f) != len) {
            st = et_set_error(ET_ERR_FORMAT, "%s: truncated or bad layer names", path);
            goto out;
        }
        buf[len] = 0;
        if (names && (int)i < max_layers) memcpy(names[i], buf, (size_t)len + 1);
    }
    *nlayers = (int)nl;
    for (;;) {
        size_t got = fread(r, 1, 16, f);
        if (got == 16 && !memcmp(r, "ETTREND", 8)) {
            if (get_u64(r + 8) != count || fgetc(f) != EOF)
                st = et_set_error(ET_ERR_FORMAT, "%s: trailer says %llu records, found %llu (or data after it)", path,
                                  (unsigned long long)get_u64(r + 8), (unsigned long long)count);
            goto out;
        }
        if (got != 16 || fread(r + 16, 1, rec - 16, f) != rec - 16) {
            st = et_set_error(ET_ERR_FORMAT, "%s: truncated after %llu records (no end marker)", path,
                              (unsigned long long)count);
            goto out;
        }
        et_hw_op op;
        decode_common(r, &op);
        int ok = op_valid(&op, (int)nl) && ++count <= MAX_RECORDS;
        if (ok && version == 1) ok = !get_u64(r + 88);
        if (ok && version == 2) ok = decode_v2(r, &op);
        if (!ok) {
            st = et_set_error(ET_ERR_FORMAT, "%s: record %llu is malformed", path, (unsigned long long)count);
            goto out;
        }
        if (op.nblk) {
            size_t need = (size_t)op.nblk * ET_HW_NSUM;
            if (need > sums_cap) {
                uint32_t *s = realloc(sums, need * sizeof *s);
                if (!s) {
                    st = et_set_error(ET_ERR_NOMEM, "out of memory");
                    goto out;
                }
                sums = s, sums_cap = need;
            }
            unsigned char x[4 * ET_HW_NSUM];
            for (int64_t b = 0; b < op.nblk; b++) {
                if (fread(x, 1, sizeof x, f) != sizeof x) {
                    st = et_set_error(ET_ERR_FORMAT, "%s: record %llu: structure cut short", path,
                                      (unsigned long long)count);
                    goto out;
                }
                for (int k = 0; k < ET_HW_NSUM; k++) sums[b * ET_HW_NSUM + k] = get_u32(x + 4 * k);
            }
            op.sums = sums;
            if (!sums_valid(&op, sums)) {
                st = et_set_error(ET_ERR_FORMAT, "%s: record %llu: inconsistent output structure", path,
                                  (unsigned long long)count);
                goto out;
            }
        }
        if ((st = fn(ctx, &op))) goto out;
    }
out:
    free(sums);
    fclose(f);
    return st;
}
