/* Device-specific domain shifts: the "private data" of the edge-retraining
 * scenario. A shift is a deterministic function of (kind, seed, image index,
 * pixel), documented in docs/private-data.md, so the same device always sees
 * the same transform and anyone can rebuild the data set bit for bit. */
#include "core/rng.h"
#include "edgetrain.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { STREAM_FPN = 101, STREAM_READ = 102, STREAM_COLGAIN = 103 };

const char *et_shift_names = "lowlight, invert";

static float clamp01(float v) { return v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v; }

/* lowlight: a dim, noisy, slightly blurred and offset camera.
 *   1. mount offset: content moves down 1 and right 2 pixels (zeros enter);
 *   2. optics: separable [1 2 1]/4 blur;
 *   3. exposure: v = 0.55 * v^1.5;
 *   4. fixed-pattern noise, the same for every image: a per-pixel offset
 *      N(0, 0.06) and a per-column gain 1 + N(0, 0.08);
 *   5. read noise per image and pixel: N(0, 0.03);
 *   6. clamp to [0, 1] and round to 8 bits. */
static void lowlight(const uint8_t *src, uint8_t *dst, int rows, int cols, uint64_t seed, int64_t image,
                     float *tmp) {
    float *a = tmp, *b = tmp + (size_t)rows * cols;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            int sr = r - 1, sc = c - 2;
            a[r * cols + c] = (sr >= 0 && sc >= 0) ? src[sr * cols + sc] / 255.0f : 0.0f;
        }
    for (int r = 0; r < rows; r++) /* horizontal [1 2 1]/4, edges replicate */
        for (int c = 0; c < cols; c++) {
            float l = a[r * cols + (c > 0 ? c - 1 : c)], m = a[r * cols + c], rr = a[r * cols + (c + 1 < cols ? c + 1 : c)];
            b[r * cols + c] = 0.25f * l + 0.5f * m + 0.25f * rr;
        }
    for (int r = 0; r < rows; r++) /* vertical */
        for (int c = 0; c < cols; c++) {
            float u = b[(r > 0 ? r - 1 : r) * cols + c], m = b[r * cols + c], d = b[(r + 1 < rows ? r + 1 : r) * cols + c];
            a[r * cols + c] = 0.25f * u + 0.5f * m + 0.25f * d;
        }
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            uint64_t px = (uint64_t)r * (uint64_t)cols + (uint64_t)c;
            float v = 0.55f * powf(a[px], 1.5f);
            float colgain = 1.0f + 0.08f * (float)et_rand_normal(seed, STREAM_COLGAIN, (uint64_t)c);
            v = v * colgain + 0.06f * (float)et_rand_normal(seed, STREAM_FPN, px);
            v += 0.03f * (float)et_rand_normal(seed, ((uint64_t)STREAM_READ << 40) ^ (uint64_t)image, px);
            dst[px] = (uint8_t)lrintf(clamp01(v) * 255.0f);
        }
}

et_status et_dataset_shift(const et_dataset *src, const char *kind, uint64_t seed, int64_t first, int64_t n,
                           et_dataset *out) {
    memset(out, 0, sizeof *out);
    if (first < 0 || n < 0 || first + n > src->n)
        return et_set_error(ET_ERR_INVALID, "shift: images %lld..%lld outside the %lld available", (long long)first,
                            (long long)(first + n), (long long)src->n);
    int is_low = !strcmp(kind, "lowlight"), is_inv = !strcmp(kind, "invert");
    if (!is_low && !is_inv) return et_set_error(ET_ERR_INVALID, "unknown shift '%s' (%s)", kind, et_shift_names);
    const size_t px = (size_t)src->rows * src->cols;
    out->images = malloc(px * (size_t)(n ? n : 1));
    out->labels = malloc((size_t)(n ? n : 1));
    float *tmp = malloc(2 * px * sizeof(float));
    if (!out->images || !out->labels || !tmp) {
        free(tmp);
        et_dataset_free(out);
        return et_set_error(ET_ERR_NOMEM, "out of memory");
    }
    out->n = n, out->rows = src->rows, out->cols = src->cols;
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *s = src->images + (size_t)(first + i) * px;
        uint8_t *d = out->images + (size_t)i * px;
        if (is_low) lowlight(s, d, src->rows, src->cols, seed, first + i, tmp);
        else for (size_t k = 0; k < px; k++) d[k] = (uint8_t)(255 - s[k]);
        out->labels[i] = src->labels[first + i];
    }
    free(tmp);
    return ET_OK;
}
