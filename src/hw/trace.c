/* Trace files: every product a training run executed (docs/trace.md).
 *
 * Version 3 (written; versions 1 and 2 are read, version 2 only without output
 * structure), little-endian:
 *   header   "ETTRACE\0" | u32 version (3) | u32 fixed record bytes (184) | u32 layers
 *   names    per layer: u8 length (< 80) | bytes
 *   records  fixed part, 184 bytes: i64 step | i32 layer | i32 stage |
 *            i32 a_kind | i32 a_bits | i32 w_kind | i32 w_bits | i64 ci | i64 co |
 *            i64 co_dense | i64 spatial | f64 w_density | i64 sram_bytes |
 *            i64 dram_bytes | i64 sram_out_bytes | i64 dram[3 kinds][3 codecs] |
 *            u32 spec | u32 spec_bits (0..8; 0: not recorded) | u32 co_width |
 *            u32 reserved (0)
 *            then, with co_width > 0, spatial x co_width bytes: Co(p) per output
 *            position, unsigned; co_width = 1 if co_dense <= 255, 2 if <= 65535, else 4
 *   trailer  "ETTREND\0" | u64 record count
 * Version 2: a 28-byte header (block fields 64, 9), the same fixed part with
 * u64 nblk at 176 and per-64-position sums; records without sums are read.
 * Version 1: a 20-byte header, 96-byte records (the fields up to dram_bytes,
 * then 8 zero bytes), no structure.
 * The reader checks every field's range and that the trailer's count matches,
 * so a truncated or garbled file is an error, never a silently short replay. */
#include "edgetrain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REC1_BYTES 96
#define REC2_BYTES 184
#define VERSION 3
#define MAX_LAYERS (1 << 16)
#define MAX_RECORDS ((uint64_t)1 << 32)

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
    unsigned char h[20];
    memcpy(h, "ETTRACE", 8);
    put_u32(h + 8, VERSION), put_u32(h + 12, REC2_BYTES), put_u32(h + 16, (uint32_t)nlayers);
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

/* Bytes per Co(p) of a product with co_dense output channels. */
static uint32_t co_width(int64_t co_dense) { return co_dense <= 255 ? 1 : co_dense <= 65535 ? 2 : 4; }

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
    put_u32(r + 176, op->co_pos ? co_width(op->co_dense) : 0);
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

/* The fields versions 2 and 3 add (up to byte 176); 0 if any is malformed. */
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
    return sum == op->dram_bytes && op->sram_out_bytes >= 0 && op->sram_out_bytes <= op->sram_bytes && spec <= 1 &&
           spec_bits <= 8 && (spec || !spec_bits) && (!spec || op->stage == ET_FF);
}

et_status et_trace_add(et_trace_writer *w, const et_hw_op *op) {
    unsigned char r[REC2_BYTES];
    encode(op, r);
    if (fwrite(r, 1, REC2_BYTES, w->f) != REC2_BYTES) return et_set_error(ET_ERR_IO, "cannot write trace %s", w->path);
    if (op->co_pos) { /* Co(p) at co_width bytes each, through a fixed buffer */
        const uint32_t cw = co_width(op->co_dense);
        unsigned char x[4096];
        size_t len = 0;
        for (int64_t p = 0; p < op->spatial; p++) {
            uint32_t v = (uint32_t)op->co_pos[p];
            for (uint32_t i = 0; i < cw; i++) x[len++] = (unsigned char)(v >> (8 * i));
            if (len + 4 > sizeof x || p + 1 == op->spatial) {
                if (fwrite(x, 1, len, w->f) != len) return et_set_error(ET_ERR_IO, "cannot write trace %s", w->path);
                len = 0;
            }
        }
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
    int32_t *co_pos = NULL;
    size_t co_cap = 0;
    uint64_t count = 0;
    struct stat sb;
    const int64_t fsize = fstat(fileno(f), &sb) == 0 ? (int64_t)sb.st_size : 0;
    if (fread(h, 1, 20, f) != 20 || memcmp(h, "ETTRACE", 8)) {
        st = et_set_error(ET_ERR_FORMAT, "%s: not an edgetrain trace", path);
        goto out;
    }
    const uint32_t version = get_u32(h + 8);
    const size_t rec = version == 1 ? REC1_BYTES : REC2_BYTES;
    if (version < 1 || version > VERSION || get_u32(h + 12) != rec) {
        st = et_set_error(ET_ERR_FORMAT, "%s: trace version %u (record %u bytes); this edgetrain reads versions 1 "
                          "to %d", path, version, get_u32(h + 12), VERSION);
        goto out;
    }
    if (version == 2 && (fread(h + 20, 1, 8, f) != 8 || get_u32(h + 20) != 64 || get_u32(h + 24) != 9)) {
        st = et_set_error(ET_ERR_FORMAT, "%s: truncated version-2 header", path);
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
        uint32_t cw = 0;
        if (ok && version == 1) ok = !get_u64(r + 88);
        if (ok && version >= 2) ok = decode_v2(r, &op);
        if (ok && version == 2 && get_u64(r + 176)) {
            st = et_set_error(ET_ERR_FORMAT, "%s: record %llu carries version-2 output structure (sums per 64 "
                              "positions), which cannot be re-tiled for any OP; record the trace again with this "
                              "edgetrain (version 3)", path, (unsigned long long)count);
            goto out;
        }
        if (ok && version == 2) ok = !op.spec; /* a v2 spec flag needs structure */
        if (ok && version == 3) {
            cw = get_u32(r + 176);
            ok = get_u32(r + 180) == 0 && (cw == 0 || (cw == co_width(op.co_dense) && op.co_dense <= 2147483647)) &&
                 (!op.spec || cw);
        }
        if (!ok) {
            st = et_set_error(ET_ERR_FORMAT, "%s: record %llu is malformed", path, (unsigned long long)count);
            goto out;
        }
        if (cw) { /* Co(p) per position; the file must hold them before anything is allocated */
            const int64_t need = op.spatial * (int64_t)cw;
            if (need > fsize - (int64_t)ftell(f)) {
                st = et_set_error(ET_ERR_FORMAT, "%s: record %llu: structure cut short", path,
                                  (unsigned long long)count);
                goto out;
            }
            if ((size_t)op.spatial > co_cap) {
                int32_t *c = realloc(co_pos, (size_t)(op.spatial ? op.spatial : 1) * sizeof *c);
                if (!c) {
                    st = et_set_error(ET_ERR_NOMEM, "out of memory");
                    goto out;
                }
                co_pos = c, co_cap = (size_t)op.spatial;
            }
            unsigned char x[4096];
            int64_t p = 0, mx = 0;
            int bad = 0;
            while (p < op.spatial) {
                int64_t n = op.spatial - p < (int64_t)(sizeof x / cw) ? op.spatial - p : (int64_t)(sizeof x / cw);
                if (fread(x, cw, (size_t)n, f) != (size_t)n) {
                    st = et_set_error(ET_ERR_FORMAT, "%s: record %llu: structure cut short", path,
                                      (unsigned long long)count);
                    goto out;
                }
                for (int64_t i = 0; i < n; i++, p++) {
                    uint32_t v = 0;
                    for (uint32_t b = 0; b < cw; b++) v |= (uint32_t)x[i * cw + b] << (8 * b);
                    bad |= (int64_t)v > op.co;
                    if ((int64_t)v > mx) mx = v;
                    co_pos[p] = (int32_t)v;
                }
            }
            if (bad || mx != op.co) { /* co is the largest Co(p) */
                st = et_set_error(ET_ERR_FORMAT, "%s: record %llu: inconsistent output structure", path,
                                  (unsigned long long)count);
                goto out;
            }
            op.co_pos = co_pos;
        }
        if ((st = fn(ctx, &op))) goto out;
    }
out:
    free(co_pos);
    fclose(f);
    return st;
}
