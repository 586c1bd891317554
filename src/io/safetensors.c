/*
 * safetensors reading and writing.
 *
 * File layout (https://github.com/huggingface/safetensors):
 *   8 bytes   N, unsigned little-endian
 *   N bytes   UTF-8 JSON object, possibly padded with trailing spaces:
 *             {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [b, e]},
 *              ..., "__metadata__": {"key": "value", ...}}
 *   rest      the data area; [b, e) are byte offsets relative to its start.
 *
 * Reading treats the file as hostile. The whole file is read once, after a
 * size check, into two allocations that together are the size of the file (the
 * header text, and the data area in a 64-byte aligned buffer so tensors are as
 * aligned as their offsets). Then every number in the header is checked before
 * it is used: the header length against the file, each shape for negative,
 * fractional or overflowing dimensions, each byte range against the data area
 * and against its dtype and shape, the ranges against each other (no two
 * non-empty tensors may share a byte), and the names for duplicates (which a
 * JSON parser would otherwise resolve silently). Unlike the reference reader,
 * gaps between tensors and unindexed bytes at the end of the data area are
 * accepted (they are harmless); et_st_write never produces them.
 *
 * Writing lays the tensors out back to back in the order given, pads the header
 * with spaces to a multiple of 8 bytes (so the data area starts 8-aligned),
 * writes to PATH.tmp.<pid>, fsyncs, and renames over PATH.
 */
#include "edgetrain.h"
#include "io/safetensors_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ dtypes */

static const char *const dtype_names[ET_NDTYPES] = {"F32", "F16", "BF16", "F64", "I64",
                                                    "I32", "I16", "I8",   "U8",  "BOOL"};
static const unsigned char dtype_sizes[ET_NDTYPES] = {4, 2, 2, 8, 8, 4, 2, 1, 1, 1};

const char *et_dtype_name(et_dtype t) {
    return (unsigned)t < ET_NDTYPES ? dtype_names[t] : "INVALID";
}

size_t et_dtype_size(et_dtype t) {
    return (unsigned)t < ET_NDTYPES ? dtype_sizes[t] : 0;
}

/* ----------------------------------------------------------- the open file */

typedef struct st_meta {
    char *key, *value;
} st_meta;

struct et_safetensors {
    unsigned char *data; /* the data area (aligned), data_len bytes */
    size_t data_len;
    et_st_tensor *t; /* header order */
    int n;
    int *by_name; /* indices into t sorted by name, for et_st_find */
    st_meta *meta;
    int n_meta; /* sorted by key */
};

int et_st_count(const et_safetensors *st) {
    return st ? st->n : 0;
}

const et_st_tensor *et_st_get(const et_safetensors *st, int i) {
    if (!st || i < 0 || i >= st->n) return NULL;
    return &st->t[i];
}

const et_st_tensor *et_st_find(const et_safetensors *st, const char *name) {
    if (!st || !name) return NULL;
    int lo = 0, hi = st->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const et_st_tensor *t = &st->t[st->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *et_st_meta(const et_safetensors *st, const char *key) {
    if (!st || !key) return NULL;
    int lo = 0, hi = st->n_meta - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(key, st->meta[mid].key);
        if (c == 0) return st->meta[mid].value;
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

void et_st_close(et_safetensors *st) {
    if (!st) return;
    if (st->t)
        for (int i = 0; i < st->n; i++)
            free((char *)st->t[i].name);
    if (st->meta)
        for (int i = 0; i < st->n_meta; i++) {
            free(st->meta[i].key);
            free(st->meta[i].value);
        }
    free(st->t);
    free(st->by_name);
    free(st->meta);
    free(st->data);
    free(st);
}

/* ------------------------------------------------------------- validation */

/* 1 if s[0..n) is well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF). */
static int utf8_valid(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else
            return 0;
        if (n - i < len) return 0;
        if (s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (size_t k = 2; k < len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) return 0;
        i += len;
    }
    return 1;
}

/* Largest integer a JSON number (a double in cJSON) holds exactly. */
#define JSON_INT_MAX 9007199254740992.0 /* 2^53 */

/* Non-negative integral JSON number -> *v. */
static int json_uint(const cJSON *j, uint64_t *v) {
    if (!cJSON_IsNumber(j)) return 0;
    double d = j->valuedouble;
    if (!(d >= 0.0) || d > JSON_INT_MAX || d != (double)(uint64_t)d) return 0;
    *v = (uint64_t)d;
    return 1;
}

static int parse_dtype(const char *s, et_dtype *out) {
    for (int i = 0; i < ET_NDTYPES; i++)
        if (strcmp(s, dtype_names[i]) == 0) {
            *out = (et_dtype)i;
            return 1;
        }
    return 0;
}

/* dtypes of the format that et_dtype cannot represent. */
static int is_other_spec_dtype(const char *s) {
    static const char *const other[] = {"U16",     "U32",     "U64",     "F8_E5M2", "F8_E4M3",
                                        "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",      "C64"};
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
        if (strcmp(s, other[i]) == 0) return 1;
    return 0;
}

typedef struct range {
    uint64_t begin, end;
    int idx;
} range;

static int cmp_range(const void *a, const void *b) {
    const range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

typedef struct named {
    const char *name;
    int idx;
} named;

static int cmp_named(const void *a, const void *b) {
    return strcmp(((const named *)a)->name, ((const named *)b)->name);
}
static int cmp_meta(const void *a, const void *b) {
    return strcmp(((const st_meta *)a)->key, ((const st_meta *)b)->key);
}

/* Parses one tensor entry `e` named `name` into *t (name not set). */
static et_status parse_entry(const char *what, const char *name, const cJSON *e,
                             const et_safetensors *st, et_st_tensor *t, range *r) {
    const uint64_t data_len = st->data_len;
    if (!cJSON_IsObject(e))
        return et_set_error(ET_ERR_FORMAT, "%s: tensor \"%s\": entry is not a JSON object", what,
                            name);
    const cJSON *jd = NULL, *js = NULL, *jo = NULL;
    for (const cJSON *c = e->child; c; c = c->next) {
        const cJSON **slot;
        if (strcmp(c->string, "dtype") == 0)
            slot = &jd;
        else if (strcmp(c->string, "shape") == 0)
            slot = &js;
        else if (strcmp(c->string, "data_offsets") == 0)
            slot = &jo;
        else
            return et_set_error(ET_ERR_FORMAT, "%s: tensor \"%s\": unknown field \"%s\"", what,
                                name, c->string);
        if (*slot)
            return et_set_error(ET_ERR_FORMAT, "%s: tensor \"%s\": field \"%s\" given twice", what,
                                name, c->string);
        *slot = c;
    }
    if (!jd || !js || !jo)
        return et_set_error(ET_ERR_FORMAT, "%s: tensor \"%s\": missing \"%s\"", what, name,
                            !jd   ? "dtype"
                            : !js ? "shape"
                                  : "data_offsets");

    if (!cJSON_IsString(jd))
        return et_set_error(ET_ERR_FORMAT, "%s: tensor \"%s\": dtype is not a string", what, name);
    if (!parse_dtype(jd->valuestring, &t->dtype)) {
        if (is_other_spec_dtype(jd->valuestring))
            return et_set_error(ET_ERR_UNSUPPORTED, "%s: tensor \"%s\": dtype %s is not supported",
                                what, name, jd->valuestring);
        return et_set_error(ET_ERR_FORMAT, "%s: tensor \"%s\": unknown dtype \"%.32s\"", what, name,
                            jd->valuestring);
    }

    if (!cJSON_IsArray(js))
        return et_set_error(ET_ERR_FORMAT, "%s: tensor \"%s\": shape is not an array", what, name);
    int ndim = 0;
    int zero = 0;
    for (const cJSON *c = js->child; c; c = c->next) {
        if (ndim == ET_MAX_DIMS)
            return et_set_error(ET_ERR_FORMAT, "%s: tensor \"%s\": more than %d dimensions", what,
                                name, ET_MAX_DIMS);
        uint64_t d;
        if (!json_uint(c, &d)) {
            if (cJSON_IsNumber(c) && c->valuedouble < 0)
                return et_set_error(ET_ERR_FORMAT, "%s: tensor \"%s\": negative dimension %g", what,
                                    name, c->valuedouble);
            return et_set_error(ET_ERR_FORMAT,
                                "%s: tensor \"%s\": dimension %d is not an integer in [0, 2^53]",
                                what, name, ndim);
        }
        if (d == 0) zero = 1;
        t->shape[ndim++] = (int64_t)d;
    }
    t->ndim = ndim;
    /* Element count; any overflow with no zero dimension is an error. */
    uint64_t count = 1;
    if (zero)
        count = 0;
    else
        for (int i = 0; i < ndim; i++) {
            uint64_t d = (uint64_t)t->shape[i];
            if (count > UINT64_MAX / d)
                return et_set_error(ET_ERR_FORMAT,
                                    "%s: tensor \"%s\": shape's element count overflows", what,
                                    name);
            count *= d;
        }
    uint64_t esize = dtype_sizes[t->dtype];
    if (count > UINT64_MAX / esize)
        return et_set_error(ET_ERR_FORMAT, "%s: tensor \"%s\": byte size overflows", what, name);
    uint64_t nbytes = count * esize;

    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2)
        return et_set_error(ET_ERR_FORMAT,
                            "%s: tensor \"%s\": data_offsets is not an array [begin, end]", what,
                            name);
    uint64_t b, en;
    if (!json_uint(jo->child, &b) || !json_uint(jo->child->next, &en))
        return et_set_error(ET_ERR_FORMAT,
                            "%s: tensor \"%s\": data_offsets are not non-negative integers", what,
                            name);
    if (en < b)
        return et_set_error(ET_ERR_FORMAT, "%s: tensor \"%s\": data_offsets [%llu, %llu] reversed",
                            what, name, (unsigned long long)b, (unsigned long long)en);
    if (en > data_len)
        return et_set_error(ET_ERR_FORMAT,
                            "%s: tensor \"%s\": data_offsets [%llu, %llu] outside the data area "
                            "(%llu bytes)",
                            what, name, (unsigned long long)b, (unsigned long long)en,
                            (unsigned long long)data_len);
    if (en - b != nbytes)
        return et_set_error(ET_ERR_FORMAT,
                            "%s: tensor \"%s\": %llu bytes in data_offsets, but dtype %s and "
                            "shape need %llu",
                            what, name, (unsigned long long)(en - b), dtype_names[t->dtype],
                            (unsigned long long)nbytes);
    t->nbytes = (size_t)nbytes;
    t->data = st->data + b;
    r->begin = b;
    r->end = en;
    return ET_OK;
}

static et_status parse_metadata(const char *what, const cJSON *m, et_safetensors *st) {
    if (!cJSON_IsObject(m))
        return et_set_error(ET_ERR_FORMAT, "%s: __metadata__ is not a JSON object", what);
    int n = cJSON_GetArraySize(m);
    if (n == 0) return ET_OK;
    st->meta = calloc((size_t)n, sizeof *st->meta);
    if (!st->meta) return et_set_error(ET_ERR_NOMEM, "%s: out of memory", what);
    for (const cJSON *c = m->child; c; c = c->next) {
        if (!cJSON_IsString(c))
            return et_set_error(ET_ERR_FORMAT, "%s: __metadata__ value of \"%s\" is not a string",
                                what, c->string);
        st_meta *e = &st->meta[st->n_meta];
        e->key = strdup(c->string);
        e->value = strdup(c->valuestring);
        st->n_meta++;
        if (!e->key || !e->value) return et_set_error(ET_ERR_NOMEM, "%s: out of memory", what);
    }
    qsort(st->meta, (size_t)st->n_meta, sizeof *st->meta, cmp_meta);
    for (int i = 1; i < st->n_meta; i++)
        if (strcmp(st->meta[i - 1].key, st->meta[i].key) == 0)
            return et_set_error(ET_ERR_FORMAT, "%s: __metadata__ key \"%s\" given twice", what,
                                st->meta[i].key);
    return ET_OK;
}

/* 1 if a JSON string in hdr holds the escape \u0000: cJSON would cut the C
 * string there, so "a\u0000b" would pose as "a" (and a key could pose as
 * "__metadata__"). A rough lexer suffices: cJSON judges the rest. */
static int has_escaped_nul(const char *hdr, size_t hlen) {
    int in = 0;
    for (size_t i = 0; i < hlen; i++) {
        char c = hdr[i];
        if (!in) {
            in = c == '"';
            continue;
        }
        if (c == '\\') {
            if (hlen - i > 5 && hdr[i + 1] == 'u' && memcmp(hdr + i + 2, "0000", 4) == 0) return 1;
            i++;
        } else if (c == '"')
            in = 0;
    }
    return 0;
}

/* Parses the header text hdr[0..hlen) against st->data/data_len. */
static et_status parse_header(const char *what, const char *hdr, size_t hlen, et_safetensors *st) {
    if (!utf8_valid((const unsigned char *)hdr, hlen))
        return et_set_error(ET_ERR_FORMAT, "%s: header is not valid UTF-8", what);
    /* JSON text never contains NUL; cJSON would stop there. */
    if (memchr(hdr, 0, hlen))
        return et_set_error(ET_ERR_FORMAT, "%s: header contains a NUL byte", what);
    if (has_escaped_nul(hdr, hlen))
        return et_set_error(ET_ERR_FORMAT, "%s: header has a string containing \\u0000", what);
    size_t i = 0;
    while (i < hlen && (hdr[i] == ' ' || hdr[i] == '\t' || hdr[i] == '\n' || hdr[i] == '\r'))
        i++;
    if (i == hlen || hdr[i] != '{')
        return et_set_error(ET_ERR_FORMAT, "%s: header is not a JSON object", what);

    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, hlen, &end, 0);
    if (!root) {
        /* cJSON's error pointer is process-global: use it only if it points
         * into our header. */
        uintptr_t at = (uintptr_t)cJSON_GetErrorPtr(), h0 = (uintptr_t)hdr;
        size_t off = (at >= h0 && at <= h0 + hlen) ? (size_t)(at - h0) : 0;
        return et_set_error(ET_ERR_FORMAT, "%s: header is not valid JSON (near byte %zu)", what,
                            off);
    }
    et_status rc = ET_OK;
    for (const char *p = end; p < hdr + hlen; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            rc = et_set_error(ET_ERR_FORMAT, "%s: trailing bytes after the JSON header", what);
            goto out;
        }
    if (!cJSON_IsObject(root)) {
        rc = et_set_error(ET_ERR_FORMAT, "%s: header is not a JSON object", what);
        goto out;
    }

    int nent = 0, have_meta = 0;
    for (const cJSON *c = root->child; c; c = c->next) {
        if (strcmp(c->string, "__metadata__") == 0) {
            if (have_meta++) {
                rc = et_set_error(ET_ERR_FORMAT, "%s: __metadata__ given twice", what);
                goto out;
            }
        } else
            nent++;
    }
    range *rg = NULL;
    if (nent > 0) {
        st->t = calloc((size_t)nent, sizeof *st->t);
        st->by_name = malloc((size_t)nent * sizeof *st->by_name);
        rg = malloc((size_t)nent * sizeof *rg);
        if (!st->t || !st->by_name || !rg) {
            free(rg);
            rc = et_set_error(ET_ERR_NOMEM, "%s: out of memory for %d tensors", what, nent);
            goto out;
        }
    }
    for (const cJSON *c = root->child; c; c = c->next) {
        if (strcmp(c->string, "__metadata__") == 0) {
            if ((rc = parse_metadata(what, c, st)) != ET_OK) break;
            continue;
        }
        et_st_tensor *t = &st->t[st->n];
        range *r = &rg[st->n];
        if ((rc = parse_entry(what, c->string, c, st, t, r)) != ET_OK) break;
        if (!(t->name = strdup(c->string))) {
            rc = et_set_error(ET_ERR_NOMEM, "%s: out of memory", what);
            break;
        }
        r->idx = st->n;
        st->by_name[st->n] = st->n;
        st->n++;
    }
    if (rc == ET_OK && st->n > 1) {
        named *nm = malloc((size_t)st->n * sizeof *nm);
        if (!nm)
            rc = et_set_error(ET_ERR_NOMEM, "%s: out of memory", what);
        else {
            for (int k = 0; k < st->n; k++)
                nm[k] = (named){st->t[k].name, k};
            qsort(nm, (size_t)st->n, sizeof *nm, cmp_named);
            for (int k = 0; k < st->n; k++)
                st->by_name[k] = nm[k].idx;
            for (int k = 1; k < st->n && rc == ET_OK; k++)
                if (strcmp(nm[k - 1].name, nm[k].name) == 0)
                    rc = et_set_error(ET_ERR_FORMAT, "%s: tensor \"%s\" given twice", what,
                                      nm[k].name);
            free(nm);
        }
    }
    if (rc == ET_OK && st->n > 1) {
        /* Overlap: sort non-empty ranges by begin, each must start at or after
         * the end of the previous one. Empty tensors own no bytes. */
        int m = 0;
        for (int k = 0; k < st->n; k++)
            if (rg[k].end > rg[k].begin) rg[m++] = rg[k];
        qsort(rg, (size_t)m, sizeof *rg, cmp_range);
        for (int k = 1; k < m; k++)
            if (rg[k].begin < rg[k - 1].end) {
                rc = et_set_error(ET_ERR_FORMAT,
                                  "%s: tensors \"%s\" [%llu, %llu) and \"%s\" [%llu, %llu) overlap",
                                  what, st->t[rg[k - 1].idx].name,
                                  (unsigned long long)rg[k - 1].begin,
                                  (unsigned long long)rg[k - 1].end, st->t[rg[k].idx].name,
                                  (unsigned long long)rg[k].begin, (unsigned long long)rg[k].end);
                break;
            }
    }
    free(rg);
out:
    cJSON_Delete(root);
    return rc;
}

static uint64_t le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Checks the 8-byte prefix of a file of `size` bytes; *hlen = N. */
static et_status check_prefix(const char *what, const unsigned char *p, uint64_t size,
                              uint64_t *hlen) {
    if (size < 8)
        return et_set_error(ET_ERR_FORMAT,
                            "%s: file is %llu bytes, shorter than the 8-byte header length", what,
                            (unsigned long long)size);
    uint64_t n = le64(p);
    if (n > ET_ST_MAX_HEADER)
        return et_set_error(ET_ERR_FORMAT, "%s: header length %llu exceeds the %llu-byte limit",
                            what, (unsigned long long)n, (unsigned long long)ET_ST_MAX_HEADER);
    if (n > size - 8)
        return et_set_error(ET_ERR_FORMAT,
                            "%s: header length %llu runs past the end of the file (%llu bytes)",
                            what, (unsigned long long)n, (unsigned long long)size);
    if (n < 2)
        return et_set_error(ET_ERR_FORMAT,
                            "%s: header of %llu byte(s) is too short for a JSON object", what,
                            (unsigned long long)n);
    *hlen = n;
    return ET_OK;
}

static void *alloc_data(size_t n) {
    /* aligned_alloc needs a multiple of the alignment; never 0 bytes. */
    size_t sz = (n + 63) & ~(size_t)63;
    if (sz == 0) sz = 64;
    return aligned_alloc(64, sz);
}

et_status et_st_parse_buffer(const void *data, size_t size, const char *what,
                             et_safetensors **out) {
    if (!out) return et_set_error(ET_ERR_INVALID, "et_st_parse_buffer: out is NULL");
    *out = NULL;
    if (!what) what = "<memory>";
    if (!data && size) return et_set_error(ET_ERR_INVALID, "et_st_parse_buffer: data is NULL");
    const unsigned char *p = data;
    uint64_t hlen = 0;
    et_status rc = check_prefix(what, p, size, &hlen);
    if (rc != ET_OK) return rc;
    et_safetensors *st = calloc(1, sizeof *st);
    if (!st) return et_set_error(ET_ERR_NOMEM, "%s: out of memory", what);
    st->data_len = size - 8 - (size_t)hlen;
    st->data = alloc_data(st->data_len);
    if (!st->data) {
        et_st_close(st);
        return et_set_error(ET_ERR_NOMEM, "%s: out of memory for %zu data bytes", what,
                            st->data_len);
    }
    if (st->data_len) memcpy(st->data, p + 8 + hlen, st->data_len);
    rc = parse_header(what, (const char *)p + 8, (size_t)hlen, st);
    if (rc != ET_OK) {
        et_st_close(st);
        return rc;
    }
    *out = st;
    return ET_OK;
}

/* Reads exactly n bytes at the current position. */
static et_status read_full(int fd, const char *path, void *buf, size_t n) {
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (r < 0) {
            if (errno == EINTR) continue;
            return et_set_error(ET_ERR_IO, "%s: read error: %s", path, strerror(errno));
        }
        if (r == 0) return et_set_error(ET_ERR_FORMAT, "%s: file shrank while being read", path);
        p += r;
        n -= (size_t)r;
    }
    return ET_OK;
}

et_status et_st_open(const char *path, et_safetensors **out) {
    if (!out) return et_set_error(ET_ERR_INVALID, "et_st_open: out is NULL");
    *out = NULL;
    if (!path) return et_set_error(ET_ERR_INVALID, "et_st_open: path is NULL");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return et_set_error(ET_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return et_set_error(ET_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return et_set_error(ET_ERR_IO, "%s: not a regular file", path);
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size > SIZE_MAX / 2) {
        close(fd);
        return et_set_error(ET_ERR_NOMEM, "%s: file of %llu bytes is too large", path,
                            (unsigned long long)size);
    }
    unsigned char pre[8] = {0};
    uint64_t hlen = 0;
    et_status rc = read_full(fd, path, pre, size < 8 ? (size_t)size : 8);
    if (rc == ET_OK) rc = check_prefix(path, pre, size, &hlen);
    if (rc != ET_OK) {
        close(fd);
        return rc;
    }
    et_safetensors *st = calloc(1, sizeof *st);
    char *hdr = malloc((size_t)hlen);
    if (st) {
        st->data_len = (size_t)(size - 8 - hlen);
        st->data = alloc_data(st->data_len);
    }
    if (!st || !hdr || !st->data) {
        rc = et_set_error(ET_ERR_NOMEM, "%s: out of memory reading %llu bytes", path,
                          (unsigned long long)size);
        goto fail;
    }
    if ((rc = read_full(fd, path, hdr, (size_t)hlen)) != ET_OK) goto fail;
    if ((rc = read_full(fd, path, st->data, st->data_len)) != ET_OK) goto fail;
    close(fd);
    fd = -1;
    rc = parse_header(path, hdr, (size_t)hlen, st);
    free(hdr);
    hdr = NULL;
    if (rc != ET_OK) goto fail;
    *out = st;
    return ET_OK;
fail:
    if (fd >= 0) close(fd);
    free(hdr);
    et_st_close(st);
    return rc;
}

/* ---------------------------------------------------------------- writing */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}
static void sb_str(sbuf *b, const char *s) {
    sb_put(b, s, strlen(s));
}
static void sb_u64(sbuf *b, uint64_t v) {
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    sb_put(b, tmp, (size_t)n);
}
/* JSON string literal; s must be valid UTF-8 (checked by the caller). */
static void sb_json(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            sb_put(b, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            sb_put(b, esc, 6);
        } else
            sb_put(b, (const char *)p, 1);
    }
    sb_put(b, "\"", 1);
}

static et_status write_all(int fd, const char *tmp, const void *buf, size_t n) {
    const unsigned char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return et_set_error(ET_ERR_IO, "%s: write error: %s", tmp, strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
    return ET_OK;
}

static int str_ok(const char *s) {
    return s && utf8_valid((const unsigned char *)s, strlen(s));
}

static int cmp_cstr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Validates the arguments of et_st_write and builds the padded header. */
static et_status build_header(const char *path, const et_st_tensor *tensors, int n,
                              const char *const *meta, int n_meta, sbuf *b) {
    if (n < 0 || (n > 0 && !tensors) || n_meta < 0 || (n_meta > 0 && !meta))
        return et_set_error(ET_ERR_INVALID, "%s: bad tensor or metadata list", path);
    for (int i = 0; i < n_meta; i++)
        if (!str_ok(meta[2 * i]) || !str_ok(meta[2 * i + 1]))
            return et_set_error(ET_ERR_INVALID, "%s: metadata pair %d is NULL or not valid UTF-8",
                                path, i);
    for (int i = 0; i < n; i++) {
        const et_st_tensor *t = &tensors[i];
        if (!str_ok(t->name) || !t->name[0] || strcmp(t->name, "__metadata__") == 0)
            return et_set_error(ET_ERR_INVALID, "%s: tensor %d has a bad name", path, i);
        if ((unsigned)t->dtype >= ET_NDTYPES)
            return et_set_error(ET_ERR_INVALID, "%s: tensor \"%s\": bad dtype %d", path, t->name,
                                (int)t->dtype);
        if (t->ndim < 0 || t->ndim > ET_MAX_DIMS)
            return et_set_error(ET_ERR_INVALID, "%s: tensor \"%s\": bad ndim %d", path, t->name,
                                t->ndim);
        uint64_t count = 1;
        int zero = 0, bad = 0;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0 || (double)t->shape[d] > JSON_INT_MAX) bad = 1;
            if (t->shape[d] == 0) zero = 1;
        }
        if (bad)
            return et_set_error(ET_ERR_INVALID, "%s: tensor \"%s\": bad dimension", path, t->name);
        if (zero)
            count = 0;
        else
            for (int d = 0; d < t->ndim; d++) {
                if (count > UINT64_MAX / (uint64_t)t->shape[d])
                    return et_set_error(ET_ERR_INVALID, "%s: tensor \"%s\": shape overflows", path,
                                        t->name);
                count *= (uint64_t)t->shape[d];
            }
        if (count > SIZE_MAX / dtype_sizes[t->dtype] ||
            count * dtype_sizes[t->dtype] != (uint64_t)t->nbytes)
            return et_set_error(ET_ERR_SHAPE,
                                "%s: tensor \"%s\": nbytes %zu does not match dtype %s and shape",
                                path, t->name, t->nbytes, dtype_names[t->dtype]);
        if (t->nbytes && !t->data)
            return et_set_error(ET_ERR_INVALID, "%s: tensor \"%s\": data is NULL", path, t->name);
    }
    /* Duplicate names / keys. */
    int m = n > n_meta ? n : n_meta;
    if (m > 1) {
        const char **names = malloc((size_t)m * sizeof *names);
        if (!names) return et_set_error(ET_ERR_NOMEM, "%s: out of memory", path);
        const char *dup = NULL;
        for (int pass = 0; pass < 2 && !dup; pass++) {
            int k = pass ? n_meta : n;
            for (int i = 0; i < k; i++)
                names[i] = pass ? meta[2 * i] : tensors[i].name;
            qsort(names, (size_t)k, sizeof *names, cmp_cstr);
            for (int i = 1; i < k && !dup; i++)
                if (strcmp(names[i - 1], names[i]) == 0) dup = names[i];
        }
        free(names);
        if (dup) return et_set_error(ET_ERR_INVALID, "%s: name \"%s\" given twice", path, dup);
    }

    sb_put(b, "\0\0\0\0\0\0\0\0", 8); /* length, filled in below */
    sb_str(b, "{");
    int first = 1;
    if (n_meta > 0) {
        sb_str(b, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i) sb_str(b, ",");
            sb_json(b, meta[2 * i]);
            sb_str(b, ":");
            sb_json(b, meta[2 * i + 1]);
        }
        sb_str(b, "}");
        first = 0;
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const et_st_tensor *t = &tensors[i];
        if (!first) sb_str(b, ",");
        first = 0;
        sb_json(b, t->name);
        sb_str(b, ":{\"dtype\":\"");
        sb_str(b, dtype_names[t->dtype]);
        sb_str(b, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            if (d) sb_str(b, ",");
            sb_u64(b, (uint64_t)t->shape[d]);
        }
        sb_str(b, "],\"data_offsets\":[");
        sb_u64(b, off);
        sb_str(b, ",");
        if (off + t->nbytes < off)
            return et_set_error(ET_ERR_INVALID, "%s: total size overflows", path);
        off += t->nbytes;
        sb_u64(b, off);
        sb_str(b, "]}");
    }
    sb_str(b, "}");
    while (!b->oom && b->len % 8 != 0)
        sb_str(b, " ");
    if (b->oom) return et_set_error(ET_ERR_NOMEM, "%s: out of memory for the header", path);
    uint64_t hlen = b->len - 8;
    if (hlen > ET_ST_MAX_HEADER)
        return et_set_error(ET_ERR_INVALID, "%s: header of %llu bytes exceeds the limit", path,
                            (unsigned long long)hlen);
    for (int i = 0; i < 8; i++)
        b->p[i] = (char)(unsigned char)(hlen >> (8 * i));
    return ET_OK;
}

/* fsyncs the directory holding `path` so the rename is durable (best effort). */
static void sync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash)
        dir = strdup(".");
    else if (slash == path)
        dir = strdup("/");
    else
        dir = strndup(path, (size_t)(slash - path));
    if (!dir) return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

et_status et_st_write(const char *path, const et_st_tensor *tensors, int n, const char *const *meta,
                      int n_meta) {
    if (!path || !path[0]) return et_set_error(ET_ERR_INVALID, "et_st_write: path is empty");
    sbuf b = {0};
    et_status rc = build_header(path, tensors, n, meta, n_meta, &b);
    if (rc != ET_OK) {
        free(b.p);
        return rc;
    }
    size_t tlen = strlen(path) + 32;
    char *tmp = malloc(tlen);
    if (!tmp) {
        free(b.p);
        return et_set_error(ET_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        rc = et_set_error(ET_ERR_IO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        free(tmp);
        free(b.p);
        return rc;
    }
    rc = write_all(fd, tmp, b.p, b.len);
    for (int i = 0; i < n && rc == ET_OK; i++)
        rc = write_all(fd, tmp, tensors[i].data, tensors[i].nbytes);
    if (rc == ET_OK && fsync(fd) != 0)
        rc = et_set_error(ET_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (close(fd) != 0 && rc == ET_OK)
        rc = et_set_error(ET_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (rc == ET_OK && rename(tmp, path) != 0)
        rc =
            et_set_error(ET_ERR_IO, "%s: cannot rename %s over it: %s", path, tmp, strerror(errno));
    if (rc != ET_OK)
        unlink(tmp);
    else
        sync_parent_dir(path);
    free(tmp);
    free(b.p);
    return rc;
}
