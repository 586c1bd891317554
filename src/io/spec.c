/* Model spec parser (docs/model-spec.md). Strict: unknown layers, unknown or
 * repeated options, malformed numbers and out-of-range sizes are errors that
 * name the line. */
#include "nn/model.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOK 16
#define MAX_DIM 65536

typedef struct {
    const char *name;
    int line;
    char *tok[MAX_TOK];
    int ntok;
    unsigned used; /* bit i: option token i consumed */
} line_t;

static et_status line_err(const line_t *L, const char *msg, const char *arg) {
    return et_set_error(ET_ERR_FORMAT, "%s:%d: %s%s%s", L->name, L->line, msg, arg ? " " : "",
                        arg ? arg : "");
}

static int parse_int(const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return 0;
    *out = (int)v;
    return 1;
}

static int parse_float(const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || v != v) return 0;
    *out = v;
    return 1;
}

/* Finds option `key=`; returns its value or NULL. Marks it used. */
static const char *opt(line_t *L, const char *key) {
    size_t k = strlen(key);
    for (int i = 1; i < L->ntok; i++)
        if (!strncmp(L->tok[i], key, k) && L->tok[i][k] == '=') {
            L->used |= 1u << i;
            return L->tok[i] + k + 1;
        }
    return NULL;
}

/* "A" or "AxB" */
static et_status opt_pair(line_t *L, const char *key, int lo, int dflt_a, int dflt_b, int *a, int *b) {
    const char *v = opt(L, key);
    *a = dflt_a, *b = dflt_b;
    if (!v) return ET_OK;
    char buf[64];
    snprintf(buf, sizeof buf, "%s", v);
    char *x = strchr(buf, 'x');
    if (x) *x = 0;
    if (!parse_int(buf, lo, MAX_DIM, a) || (x && !parse_int(x + 1, lo, MAX_DIM, b)))
        return line_err(L, "bad value for option", key);
    if (!x) *b = *a;
    return ET_OK;
}

static et_status opt_flag(line_t *L, const char *key, int dflt, int *out) {
    const char *v = opt(L, key);
    *out = dflt;
    if (v && !parse_int(v, 0, 1, out)) return line_err(L, "option must be 0 or 1:", key);
    return ET_OK;
}

static et_status opt_float(line_t *L, const char *key, float dflt, float *out) {
    const char *v = opt(L, key);
    *out = dflt;
    if (v && !parse_float(v, out)) return line_err(L, "bad number for option", key);
    return ET_OK;
}

static et_status check_all_used(const line_t *L, int first_opt) {
    for (int i = first_opt; i < L->ntok; i++)
        if (!(L->used & (1u << i))) return line_err(L, "unknown option", L->tok[i]);
    return ET_OK;
}

/* Parses one layer line into (type, cfg). */
static et_status parse_layer(line_t *L, et_layer_type *type, et_layer *cfg_out) {
    const char *kw = L->tok[0];
    et_status st = ET_OK;
    int first_opt = 1;
    memset(cfg_out, 0, sizeof *cfg_out);
    if (!strcmp(kw, "conv")) {
        et_conv_cfg *c = &cfg_out->cfg.conv;
        *type = ET_L_CONV;
        if (L->ntok < 2 || !parse_int(L->tok[1], 1, MAX_DIM, &c->out))
            return line_err(L, "conv needs a positive output channel count, e.g. 'conv 32 k=3 p=1'", NULL);
        first_opt = 2;
        L->used |= 2;
        if (!opt(L, "k")) return line_err(L, "conv needs a kernel size k=", NULL);
        L->used = 2;
        if ((st = opt_pair(L, "k", 1, 1, 1, &c->kh, &c->kw)) || (st = opt_pair(L, "s", 1, 1, 1, &c->sh, &c->sw)) ||
            (st = opt_pair(L, "p", 0, 0, 0, &c->ph, &c->pw)) || (st = opt_flag(L, "bias", 1, &c->bias)))
            return st;
    } else if (!strcmp(kw, "linear")) {
        et_linear_cfg *c = &cfg_out->cfg.linear;
        *type = ET_L_LINEAR;
        if (L->ntok < 2 || !parse_int(L->tok[1], 1, 1 << 24, &c->out))
            return line_err(L, "linear needs a positive output size, e.g. 'linear 10'", NULL);
        first_opt = 2;
        L->used |= 2;
        if ((st = opt_flag(L, "bias", 1, &c->bias))) return st;
    } else if (!strcmp(kw, "relu")) {
        *type = ET_L_RELU;
    } else if (!strcmp(kw, "flatten")) {
        *type = ET_L_FLATTEN;
    } else if (!strcmp(kw, "maxpool") || !strcmp(kw, "avgpool")) {
        et_pool_cfg *c = &cfg_out->cfg.pool;
        *type = kw[0] == 'm' ? ET_L_MAXPOOL : ET_L_AVGPOOL;
        if (*type == ET_L_AVGPOOL && L->ntok >= 2 && !strcmp(L->tok[1], "global")) {
            c->global = 1;
            first_opt = 2;
            L->used |= 2;
        } else {
            if (!opt(L, "k")) return line_err(L, "pooling needs a window size k= (or 'avgpool global')", NULL);
            L->used = 0;
            if ((st = opt_pair(L, "k", 1, 1, 1, &c->kh, &c->kw)) ||
                (st = opt_pair(L, "s", 1, c->kh, c->kw, &c->sh, &c->sw)) ||
                (st = opt_pair(L, "p", 0, 0, 0, &c->ph, &c->pw)))
                return st;
        }
    } else if (!strcmp(kw, "bn")) {
        *type = ET_L_BN;
        if ((st = opt_float(L, "eps", 1e-5f, &cfg_out->cfg.bn.eps)) ||
            (st = opt_float(L, "momentum", 0.1f, &cfg_out->cfg.bn.momentum)))
            return st;
    } else if (!strcmp(kw, "dropout")) {
        *type = ET_L_DROPOUT;
        if ((st = opt_float(L, "p", 0.5f, &cfg_out->cfg.dropout.p))) return st;
    } else {
        return line_err(L, "unknown layer", kw);
    }
    return check_all_used(L, first_opt);
}

/* Splits `s` (modified in place) into tokens; strips comments. */
static void tokenize(char *s, line_t *L) {
    char *hash = strchr(s, '#');
    if (hash) *hash = 0;
    L->ntok = 0;
    L->used = 0;
    for (char *p = s; *p;) {
        while (*p && isspace((unsigned char)*p)) p++;
        if (!*p) break;
        if (L->ntok == MAX_TOK) {
            L->ntok = MAX_TOK + 1;
            return;
        }
        L->tok[L->ntok++] = p;
        while (*p && !isspace((unsigned char)*p)) p++;
        if (*p) *p++ = 0;
    }
}

static et_status build(et_model *m, char *text, const char *name) {
    line_t L = {name, 0, {0}, 0, 0};
    int cur = -1, entry = 0;
    /* residual state */
    int in_block = 0, in_shortcut = 0, block_entry = 0, block_in = -1, body_out = -1, sub = 0;
    char *save = NULL;
    for (char *ln = text; ln; ln = save) {
        save = strchr(ln, '\n');
        if (save) *save++ = 0;
        L.line++;
        tokenize(ln, &L);
        if (L.ntok == 0) continue;
        if (L.ntok > MAX_TOK) return line_err(&L, "too many tokens", NULL);
        const char *kw = L.tok[0];
        if (cur < 0) {
            int c, h = 1, w = 1;
            if (strcmp(kw, "input") || (L.ntok != 2 && L.ntok != 4) || !parse_int(L.tok[1], 1, MAX_DIM, &c) ||
                (L.ntok == 4 && (!parse_int(L.tok[2], 1, MAX_DIM, &h) || !parse_int(L.tok[3], 1, MAX_DIM, &w))))
                return line_err(&L, "the first line must be 'input C H W' or 'input F' with positive sizes", NULL);
            if ((int64_t)c * h * w > (1 << 26)) return line_err(&L, "input too large", NULL);
            cur = et_model_add_input(m, (et_shape){c, h, w, L.ntok == 4});
            if (cur < 0) return et_set_error(ET_ERR_NOMEM, "out of memory");
            continue;
        }
        if (!strcmp(kw, "input")) return line_err(&L, "'input' may only appear once, first", NULL);
        if (!strcmp(kw, "residual")) {
            if (L.ntok != 1) return line_err(&L, "'residual' takes no options", NULL);
            if (in_block) return line_err(&L, "nested residual blocks are not supported", NULL);
            in_block = 1, in_shortcut = 0, block_entry = entry++, block_in = cur, sub = 0;
            continue;
        }
        if (!strcmp(kw, "shortcut")) {
            if (!in_block || in_shortcut) return line_err(&L, "'shortcut' outside a residual block", NULL);
            in_shortcut = 1, body_out = cur, cur = block_in, sub = 0;
            continue;
        }
        if (!strcmp(kw, "end")) {
            if (!in_block) return line_err(&L, "'end' without 'residual'", NULL);
            int a = in_shortcut ? body_out : cur, b = in_shortcut ? cur : block_in;
            et_status st = et_model_add_residual(m, a, b, &cur);
            if (st) return line_err(&L, et_last_error(), NULL);
            in_block = 0;
            continue;
        }
        et_layer_type type = ET_L_RELU;
        et_layer tmp;
        et_status st = parse_layer(&L, &type, &tmp);
        if (st) return st;
        char prefix[80];
        if (in_block)
            snprintf(prefix, sizeof prefix, "%d.%s.%d", block_entry, in_shortcut ? "shortcut" : "body", sub++);
        else
            snprintf(prefix, sizeof prefix, "%d", entry++);
        st = et_model_add_layer(m, type, &tmp.cfg, sizeof tmp.cfg, prefix, cur, &cur);
        if (st) {
            char msg[400];
            snprintf(msg, sizeof msg, "%s", et_last_error());
            return line_err(&L, msg, NULL);
        }
    }
    if (cur < 0) return et_set_error(ET_ERR_FORMAT, "%s: empty model (needs 'input' and layers)", name);
    if (in_block) return et_set_error(ET_ERR_FORMAT, "%s: residual block not closed with 'end'", name);
    if (m->nnodes == 0) return et_set_error(ET_ERR_FORMAT, "%s: model has no layers", name);
    m->entries = entry;
    return ET_OK;
}

et_status et_model_parse(const char *text, const char *name, et_model **out) {
    *out = NULL;
    et_model *m = calloc(1, sizeof *m);
    size_t len = strlen(text);
    char *copy = malloc(len + 1);
    if (!m || !copy || !(m->spec_text = malloc(len + 1))) {
        free(copy);
        et_model_free(m);
        return et_set_error(ET_ERR_NOMEM, "out of memory");
    }
    memcpy(copy, text, len + 1);
    memcpy(m->spec_text, text, len + 1);
    snprintf(m->name, sizeof m->name, "%s", name);
    et_status st = build(m, copy, name);
    free(copy);
    if (st) {
        et_model_free(m);
        return st;
    }
    *out = m;
    return ET_OK;
}

static char *read_small_file(const char *path, size_t max) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    fclose(f);
    if (!buf || n > max) {
        free(buf);
        errno = EFBIG;
        return NULL;
    }
    buf[n] = 0;
    if (memchr(buf, 0, n)) {
        free(buf);
        errno = EINVAL;
        return NULL;
    }
    return buf;
}

et_status et_model_load_spec(const char *path, et_model **out) {
    *out = NULL;
    char cand[3][1024];
    int nc = 0;
    snprintf(cand[nc++], sizeof cand[0], "%s", path);
    if (!strchr(path, '/')) {
        const char *env = getenv("ET_MODELS_DIR");
        if (env) snprintf(cand[nc++], sizeof cand[0], "%s/%s.et", env, path);
        snprintf(cand[nc++], sizeof cand[0], "models/%s.et", path);
    }
    for (int i = 0; i < nc; i++) {
        char *text = read_small_file(cand[i], 1 << 20);
        if (!text) {
            if (errno == EFBIG) return et_set_error(ET_ERR_FORMAT, "%s: spec file larger than 1 MB", cand[i]);
            if (errno == EINVAL) return et_set_error(ET_ERR_FORMAT, "%s: not a text file", cand[i]);
            continue;
        }
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        char name[64];
        snprintf(name, sizeof name, "%s", base);
        char *dot = strrchr(name, '.');
        if (dot && !strcmp(dot, ".et")) *dot = 0;
        et_status st = et_model_parse(text, name, out);
        free(text);
        return st;
    }
    return et_set_error(ET_ERR_IO, "cannot open model spec '%s' (also looked for models/%s.et)", path, path);
}
