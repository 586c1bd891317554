/*
 * IDX image/label files (the MNIST / Fashion-MNIST format) and Fashion-MNIST.
 *
 * An IDX file is a big-endian header, then unsigned bytes:
 *   images: magic 0x00000803, n, rows, cols, then n*rows*cols pixels
 *   labels: magic 0x00000801, n,             then n labels
 * Files are read through zlib's gzread, which decompresses gzip files and
 * passes plain files through, so both work.
 *
 * The header of a gzip stream cannot be checked against the file size (the
 * decompressed length is unknown until it has been read), so it is not trusted
 * for allocation: buffers start at min(needed, 1 MiB) and double as data
 * actually arrives. A file that claims 10^8 images but holds ten costs a
 * 1 MiB buffer and a clean ET_ERR_FORMAT, never a giant allocation.
 *
 * Checked: magic numbers, truncated headers and data, n <= 10^8, 1 <= rows,
 * cols <= 4096, image and label counts equal, no bytes after the last item
 * (when the whole file is read; with a `limit` nothing past the items taken is
 * read). Label values are not checked: they are bytes (0..255), and the number
 * of classes is the model's business, not the file's.
 */
#include "edgetrain.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_MAGIC_LABELS 0x00000801u
#define IDX_MAX_ITEMS 100000000u
#define IDX_MAX_SIDE 4096u
#define IDX_FIRST_CHUNK ((size_t)1 << 20)
#define IDX_MAX_READ ((unsigned)1 << 30) /* per gzread call (it takes unsigned, returns int) */

#define FMNIST_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"

/* zlib's error message for f without the "PATH: " prefix gzerror puts on it. */
static const char *gz_msg(gzFile f, const char *path, int *zerr) {
    const char *msg = gzerror(f, zerr);
    if (!msg) return "unknown error";
    size_t l = strlen(path);
    if (strncmp(msg, path, l) == 0 && msg[l] == ':' && msg[l + 1] == ' ') msg += l + 2;
    return msg;
}

/* Reads up to n bytes; *gotp = bytes read (< n at end of data). Fails on a
 * read or decompression error. */
static et_status gz_read_upto(gzFile f, const char *path, void *buf, size_t n, size_t *gotp) {
    unsigned char *p = buf;
    size_t got = 0;
    *gotp = 0;
    while (got < n) {
        size_t want = n - got;
        unsigned chunk = want > IDX_MAX_READ ? IDX_MAX_READ : (unsigned)want;
        int r = gzread(f, p + got, chunk);
        if (r < 0) {
            int zerr = 0;
            const char *msg = gz_msg(f, path, &zerr);
            if (zerr == Z_ERRNO)
                return et_set_error(ET_ERR_IO, "%s: read error: %s", path, strerror(errno));
            if (zerr == Z_MEM_ERROR)
                return et_set_error(ET_ERR_NOMEM, "%s: out of memory decompressing", path);
            return et_set_error(ET_ERR_FORMAT, "%s: corrupt gzip data: %s", path, msg);
        }
        if (r == 0) break;
        got += (size_t)r;
        *gotp = got;
    }
    return ET_OK;
}

/* After a short read: distinguishes a clean end of data from a gzip error that
 * gzread reports only on the next call (e.g. a truncated gzip stream). */
static et_status short_read_error(gzFile f, const char *path, const char *what,
                                  unsigned long long expected, unsigned long long got) {
    int zerr = 0;
    const char *msg = gz_msg(f, path, &zerr);
    if (zerr != Z_OK && zerr != Z_STREAM_END && *msg)
        return et_set_error(ET_ERR_FORMAT, "%s: truncated %s (%llu of %llu bytes): %s", path, what,
                            got, expected, msg);
    return et_set_error(ET_ERR_FORMAT, "%s: truncated %s (%llu of %llu bytes)", path, what, got,
                        expected);
}

static uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Opens `path` and reads its header: magic, then ndims 32-bit sizes. */
static et_status open_idx(const char *path, uint32_t magic, int ndims, gzFile *out,
                          uint32_t *dims) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return et_set_error(ET_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) return et_set_error(ET_ERR_IO, "%s: is a directory", path);
    errno = 0;
    gzFile f = gzopen(path, "rb");
    if (!f)
        return et_set_error(errno ? ET_ERR_IO : ET_ERR_NOMEM, "%s: cannot open: %s", path,
                            errno ? strerror(errno) : "out of memory");
    gzbuffer(f, 1u << 17);
    unsigned char hdr[16];
    size_t hlen = 4 + 4 * (size_t)ndims;
    size_t got;
    et_status rc = gz_read_upto(f, path, hdr, hlen, &got);
    if (rc != ET_OK) {
        gzclose(f);
        return rc;
    }
    if (got >= 4 && be32(hdr) != magic) {
        gzclose(f);
        return et_set_error(ET_ERR_FORMAT,
                            "%s: bad magic 0x%08x (expected 0x%08x for an IDX %s file)", path,
                            be32(hdr), magic, magic == IDX_MAGIC_IMAGES ? "image" : "label");
    }
    if (got < hlen) {
        rc = short_read_error(f, path, "IDX header", hlen, (unsigned long long)got);
        gzclose(f);
        return rc;
    }
    for (int i = 0; i < ndims; i++)
        dims[i] = be32(hdr + 4 + 4 * i);
    *out = f;
    return ET_OK;
}

/* Reads `total` bytes into a buffer grown as data arrives; *out is NULL when
 * total == 0. If check_end, the data must end right there. */
static et_status read_items(gzFile f, const char *path, const char *what, size_t total,
                            int check_end, uint8_t **out) {
    *out = NULL;
    uint8_t *buf = NULL;
    size_t cap = 0, have = 0;
    while (have < total) {
        size_t ncap = cap ? (cap > total / 2 ? total : cap * 2)
                          : (total < IDX_FIRST_CHUNK ? total : IDX_FIRST_CHUNK);
        uint8_t *nb = realloc(buf, ncap);
        if (!nb) {
            free(buf);
            return et_set_error(ET_ERR_NOMEM, "%s: out of memory reading %s (%zu bytes)", path,
                                what, ncap);
        }
        buf = nb;
        cap = ncap;
        size_t got;
        et_status rc = gz_read_upto(f, path, buf + have, cap - have, &got);
        if (rc != ET_OK) {
            free(buf);
            return rc;
        }
        have += got;
        if (have < cap) {
            et_status rc = short_read_error(f, path, what, total, have);
            free(buf);
            return rc;
        }
    }
    if (check_end) {
        unsigned char extra;
        size_t got;
        et_status rc = gz_read_upto(f, path, &extra, 1, &got);
        if (rc != ET_OK || got != 0) {
            free(buf);
            if (rc != ET_OK) return rc;
            return et_set_error(ET_ERR_FORMAT, "%s: unexpected bytes after the last %s", path,
                                what);
        }
        /* gzread reports a gzip stream cut inside its trailer (CRC, length)
         * only through gzerror. */
        int zerr = Z_OK;
        const char *msg = gz_msg(f, path, &zerr);
        if (zerr != Z_OK) {
            free(buf);
            return et_set_error(ET_ERR_FORMAT, "%s: damaged gzip stream after the %s: %s", path,
                                what, msg);
        }
    }
    *out = buf;
    return ET_OK;
}

void et_dataset_prefetch(const et_dataset *ds, const int64_t *idx, int n) {
    if (!ds || !ds->images || !idx) return;
    const int64_t px = (int64_t)ds->rows * ds->cols;
    for (int i = 0; i < n; i++) {
        if (idx[i] < 0 || idx[i] >= ds->n) continue;
        const uint8_t *p = ds->images + idx[i] * px;
        for (int64_t k = 0; k < px; k += 64) __builtin_prefetch(p + k);
        __builtin_prefetch(p + px - 1);
    }
}

void et_dataset_free(et_dataset *ds) {
    if (!ds) return;
    free(ds->images);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

et_status et_idx_load(const char *images_path, const char *labels_path, int64_t limit,
                      et_dataset *out) {
    if (!out) return et_set_error(ET_ERR_INVALID, "et_idx_load: out is NULL");
    memset(out, 0, sizeof *out);
    if (!images_path || !labels_path)
        return et_set_error(ET_ERR_INVALID, "et_idx_load: path is NULL");

    gzFile fi = NULL, fl = NULL;
    uint32_t di[3], dl[1];
    uint8_t *images = NULL, *labels = NULL;
    et_status rc = open_idx(images_path, IDX_MAGIC_IMAGES, 3, &fi, di);
    if (rc != ET_OK) return rc;
    rc = open_idx(labels_path, IDX_MAGIC_LABELS, 1, &fl, dl);
    if (rc != ET_OK) goto done;

    if (di[0] > IDX_MAX_ITEMS) {
        rc = et_set_error(ET_ERR_FORMAT, "%s: absurd image count %u (limit %u)", images_path, di[0],
                          IDX_MAX_ITEMS);
        goto done;
    }
    if (di[1] == 0 || di[1] > IDX_MAX_SIDE || di[2] == 0 || di[2] > IDX_MAX_SIDE) {
        rc = et_set_error(ET_ERR_FORMAT, "%s: absurd image size %ux%u (each side 1..%u)",
                          images_path, di[1], di[2], IDX_MAX_SIDE);
        goto done;
    }
    if (dl[0] != di[0]) {
        rc = et_set_error(ET_ERR_FORMAT, "%s holds %u labels but %s holds %u images", labels_path,
                          dl[0], images_path, di[0]);
        goto done;
    }
    int64_t n = di[0];
    int all = limit < 0 || limit >= n;
    if (!all) n = limit;
    size_t item = (size_t)di[1] * di[2];
    if ((uint64_t)n > SIZE_MAX / item) {
        rc = et_set_error(ET_ERR_NOMEM, "%s: %lld images of %zu bytes exceed the address space",
                          images_path, (long long)n, item);
        goto done;
    }
    rc = read_items(fi, images_path, "image data", (size_t)n * item, all, &images);
    if (rc != ET_OK) goto done;
    rc = read_items(fl, labels_path, "label data", (size_t)n, all, &labels);
    if (rc != ET_OK) goto done;

    out->n = n;
    out->rows = (int)di[1];
    out->cols = (int)di[2];
    out->images = images;
    out->labels = labels;
    images = labels = NULL;
done:
    free(images);
    free(labels);
    if (fi) gzclose(fi);
    if (fl) gzclose(fl);
    return rc;
}

/* dir/name.gz if it exists, else dir/name if it exists; *out malloc'd. */
static et_status find_file(const char *dir, const char *name, char **out) {
    *out = NULL;
    size_t len = strlen(dir) + strlen(name) + 8;
    char *p = malloc(len);
    if (!p) return et_set_error(ET_ERR_NOMEM, "out of memory");
    struct stat sb;
    snprintf(p, len, "%s/%s.gz", dir, name);
    if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode)) {
        *out = p;
        return ET_OK;
    }
    snprintf(p, len, "%s/%s", dir, name);
    if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode)) {
        *out = p;
        return ET_OK;
    }
    free(p);
    return et_set_error(ET_ERR_IO,
                        "Fashion-MNIST: neither %s/%s.gz nor %s/%s exists (install the Debian "
                        "package dataset-fashion-mnist or give the directory holding the files)",
                        dir, name, dir, name);
}

et_status et_fmnist_load(const char *dir, int train, int64_t limit, et_dataset *out) {
    if (!out) return et_set_error(ET_ERR_INVALID, "et_fmnist_load: out is NULL");
    memset(out, 0, sizeof *out);
    if (!dir) dir = FMNIST_DEFAULT_DIR;
    const char *pre = train ? "train" : "t10k";
    char iname[64], lname[64];
    snprintf(iname, sizeof iname, "%s-images-idx3-ubyte", pre);
    snprintf(lname, sizeof lname, "%s-labels-idx1-ubyte", pre);
    char *ipath = NULL, *lpath = NULL;
    et_status rc = find_file(dir, iname, &ipath);
    if (rc == ET_OK) rc = find_file(dir, lname, &lpath);
    if (rc == ET_OK) rc = et_idx_load(ipath, lpath, limit, out);
    free(ipath);
    free(lpath);
    return rc;
}

/* ------------------------------------------------------------- writing */

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

/* Writes one gzipped IDX file atomically (PATH.tmp.PID, then rename). */
static et_status write_gz_atomic(const char *path, const unsigned char *hdr, size_t hlen, const uint8_t *data,
                                 size_t n) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    gzFile g = gzopen(tmp, "wb6");
    if (!g) return et_set_error(ET_ERR_IO, "cannot create %s", tmp);
    int ok = gzwrite(g, hdr, (unsigned)hlen) == (int)hlen;
    for (size_t off = 0; ok && off < n; off += 1 << 20) {
        unsigned chunk = (unsigned)(n - off < (1u << 20) ? n - off : (1u << 20));
        ok = gzwrite(g, data + off, chunk) == (int)chunk;
    }
    ok &= gzclose(g) == Z_OK;
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        return et_set_error(ET_ERR_IO, "cannot write %s", path);
    }
    return ET_OK;
}

et_status et_idx_save(const char *images_path, const char *labels_path, const et_dataset *ds) {
    if (ds->n < 0 || ds->n > 100000000 || ds->rows <= 0 || ds->cols <= 0)
        return et_set_error(ET_ERR_INVALID, "idx: bad data set shape");
    unsigned char ih[16], lh[8];
    put_be32(ih, 0x803), put_be32(ih + 4, (uint32_t)ds->n), put_be32(ih + 8, (uint32_t)ds->rows),
        put_be32(ih + 12, (uint32_t)ds->cols);
    put_be32(lh, 0x801), put_be32(lh + 4, (uint32_t)ds->n);
    et_status st = write_gz_atomic(images_path, ih, 16, ds->images, (size_t)ds->n * ds->rows * ds->cols);
    if (!st) st = write_gz_atomic(labels_path, lh, 8, ds->labels, (size_t)ds->n);
    return st;
}
