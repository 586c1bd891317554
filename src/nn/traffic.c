/* Off-chip traffic measured on the live run (sparsity issue, item 4): every
 * `every` training steps, the tensors a processor would move off-chip are
 * sized under each codec (src/sparsity/codec.c) at their actual precision:
 *   activations: the input of each conv/linear, as stored for WG;
 *   errors:      the gradient entering each conv/linear's EP/WG;
 *   weights:     the weights FF/EP use; gradients: the weight gradients.
 * Matrices are [channels, rest] (CNHW images: C x N*H*W; vectors: N x F;
 * weights and gradients: out x in*KH*KW). RLE uses 4-bit runs. */
#include "nn/precision.h"
#include "sparsity/codec.h"

#include <stdlib.h>
#include <string.h>

#define RUN_BITS 4

typedef struct traffic {
    int every;
    et_traffic_stats kind[ET_NTRAFFIC];
    int64_t *in_el, *in_nz, *err_el, *err_nz; /* per node */
} traffic;

et_status et_model_measure_traffic(et_model *m, int every) {
    if (every < 0) return et_set_error(ET_ERR_INVALID, "traffic: interval must be >= 0");
    traffic *t = m->traffic;
    if (!t) {
        t = calloc(1, sizeof *t);
        if (t) {
            t->in_el = calloc((size_t)m->nnodes + 1, sizeof(int64_t));
            t->in_nz = calloc((size_t)m->nnodes + 1, sizeof(int64_t));
            t->err_el = calloc((size_t)m->nnodes + 1, sizeof(int64_t));
            t->err_nz = calloc((size_t)m->nnodes + 1, sizeof(int64_t));
        }
        if (!t || !t->in_el || !t->in_nz || !t->err_el || !t->err_nz) {
            if (t) free(t->in_el), free(t->in_nz), free(t->err_el), free(t->err_nz);
            free(t);
            return et_set_error(ET_ERR_NOMEM, "out of memory");
        }
        m->traffic = t;
    }
    t->every = every;
    return ET_OK;
}

void et_traffic_free(et_model *m) {
    traffic *t = m->traffic;
    if (!t) return;
    free(t->in_el), free(t->in_nz), free(t->err_el), free(t->err_nz);
    free(t);
    m->traffic = NULL;
}

static int is_matmul(const et_layer *l) { return l->type == ET_L_CONV || l->type == ET_L_LINEAR; }

int et_traffic_sampling(const et_model *m) {
    const traffic *t = m->traffic;
    return t && t->every > 0 && m->step % t->every == 0;
}

static void add(et_traffic_stats *s, const float *x, int64_t rows, int64_t cols, int bits, int64_t *nz_out) {
    uint64_t b[ET_NCODECS];
    int64_t nz;
    et_codec_sizes_f32(x, rows, cols, bits, RUN_BITS, b, &nz);
    s->elements += rows * cols;
    s->nonzeros += nz;
    for (int c = 0; c < ET_NCODECS; c++) s->bytes[c] += (double)b[c] / 8.0;
    if (nz_out) *nz_out = nz;
}

static void rows_cols(et_shape s, int n, int64_t *rows, int64_t *cols) {
    if (s.is_image) *rows = s.c, *cols = (int64_t)n * s.h * s.w;
    else *rows = n, *cols = s.c;
}

void et_traffic_input(et_model *m, int node, const float *x, int n) {
    traffic *t = m->traffic;
    const et_layer *l = &m->nodes[node].layer;
    if (!is_matmul(l)) return;
    int64_t r, c, nz;
    rows_cols(l->in, n, &r, &c);
    const et_format *f = et_model_format(m, node, ET_ROLE_A);
    add(&t->kind[ET_TRAFFIC_ACT], x, r, c, f ? f->bits : 32, &nz);
    t->in_el[node] += r * c, t->in_nz[node] += nz;
}

void et_traffic_error(et_model *m, int node, const float *dy, int n) {
    traffic *t = m->traffic;
    const et_layer *l = &m->nodes[node].layer;
    if (!is_matmul(l)) return;
    int64_t r, c, nz;
    rows_cols(l->out, n, &r, &c);
    const et_format *f = et_model_format(m, node, ET_ROLE_E);
    add(&t->kind[ET_TRAFFIC_ERR], dy, r, c, f ? f->bits : 32, &nz);
    t->err_el[node] += r * c, t->err_nz[node] += nz;
}

void et_traffic_params(et_model *m) {
    traffic *t = m->traffic;
    for (int i = 0; i < m->nnodes; i++) {
        const et_layer *l = &m->nodes[i].layer;
        if (!is_matmul(l) || !l->params[0].grad) continue;
        const et_param *w = &l->params[0];
        int64_t rows = w->shape[0], cols = w->n / w->shape[0];
        const et_format *fw = et_model_format(m, i, ET_ROLE_W), *fg = et_model_format(m, i, ET_ROLE_G);
        add(&t->kind[ET_TRAFFIC_WEIGHT], w->use, rows, cols, fw ? fw->bits : 32, NULL);
        add(&t->kind[ET_TRAFFIC_GRAD], w->grad, rows, cols, fg ? fg->bits : 32, NULL);
    }
    for (int k = 0; k < ET_NTRAFFIC; k++) t->kind[k].samples++;
}

void et_model_traffic(const et_model *m, int kind, et_traffic_stats *out) {
    memset(out, 0, sizeof *out);
    const traffic *t = m->traffic;
    if (!t) return;
    if (kind >= 0 && kind < ET_NTRAFFIC) {
        *out = t->kind[kind];
        return;
    }
    for (int k = 0; k < ET_NTRAFFIC; k++) { /* total */
        out->samples = t->kind[k].samples;
        out->elements += t->kind[k].elements, out->nonzeros += t->kind[k].nonzeros;
        for (int c = 0; c < 4; c++) out->bytes[c] += t->kind[k].bytes[c];
    }
}

void et_model_node_sparsity(const et_model *m, int node, double *input_zeros, double *error_zeros) {
    const traffic *t = m->traffic;
    *input_zeros = *error_zeros = -1;
    if (!t || node < 0 || node >= m->nnodes) return;
    if (t->in_el[node]) *input_zeros = 1.0 - (double)t->in_nz[node] / (double)t->in_el[node];
    if (t->err_el[node]) *error_zeros = 1.0 - (double)t->err_nz[node] / (double)t->err_el[node];
}
