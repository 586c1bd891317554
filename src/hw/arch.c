/* Architecture configs of the processor model: a strict `key = value` text
 * format (docs/hw.md), built-in presets, and `--set key=value` overrides. */
#include "edgetrain.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hw/presets.h"

typedef enum { K_NUM, K_INT, K_BOOL, K_LIST, K_STR, K_PREC, K_CODEC } key_type;

typedef struct key_def {
    const char *name;
    key_type type;
    size_t off;    /* into et_hw_arch */
    size_t count;  /* K_LIST: offset of the count */
    int required;  /* 1 always; 0 optional (default 0 / empty) */
    double lo, hi; /* K_NUM / K_INT range */
} key_def;

#define OFF(f) offsetof(et_hw_arch, f)
static const key_def keys[] = {
    {"name", K_STR, OFF(name), 0, 1, 0, 0},
    {"tech_nm", K_NUM, OFF(tech_nm), 0, 1, 1, 1000},
    {"sram_kb", K_NUM, OFF(sram_kb), 0, 1, 0, 1e9},
    {"lanes", K_INT, OFF(lanes), 0, 0, 1, 1 << 20},
    {"pp_bits", K_INT, OFF(pp_bits), 0, 0, 1, 4096},
    {"int_bits", K_LIST, OFF(int_bits), OFF(n_int_bits), 0, 1, 32},
    {"fp16_macs", K_INT, OFF(fp16_macs), 0, 0, 0, 1 << 24},
    {"fp8_macs", K_INT, OFF(fp8_macs), 0, 0, 0, 1 << 24},
    {"ip_list", K_LIST, OFF(ip_list), OFF(n_ip), 1, 1, 1 << 20},
    {"op_list", K_LIST, OFF(op_list), OFF(n_op), 1, 1, 1 << 20},
    {"rpo", K_BOOL, OFF(rpo), 0, 1, 0, 1},
    {"fixed_ip", K_INT, OFF(fixed_ip), 0, 0, 1, 1 << 20},
    {"fixed_op", K_INT, OFF(fixed_op), 0, 0, 1, 1 << 20},
    {"speculation", K_BOOL, OFF(speculation), 0, 1, 0, 1},
    {"spec_pj_per_mac", K_NUM, OFF(spec_pj_per_mac), 0, 0, 0, 1e6},
    {"spec_macs_per_cycle", K_INT, OFF(spec_macs_per_cycle), 0, 0, 1, 1 << 24},
    {"weight_skip", K_BOOL, OFF(weight_skip), 0, 1, 0, 1},
    {"compress", K_CODEC, OFF(compress), 0, 0, 0, 0},
    {"tile_positions", K_INT, OFF(tile_positions), 0, 0, 1, 1 << 24},
    {"calib", K_PREC, OFF(calib), 0, 1, 0, 0},
    {"v_nom", K_NUM, OFF(v_nom), 0, 1, 0.01, 100},
    {"e_mac_int8_pj", K_NUM, OFF(e_mac_int8_pj), 0, 0, 0, 1e6},
    {"e_mac_fp16_pj", K_NUM, OFF(e_mac_fp16_pj), 0, 0, 0, 1e6},
    {"e_mac_fp8_pj", K_NUM, OFF(e_mac_fp8_pj), 0, 0, 0, 1e6},
    {"e_sram_pj_per_byte", K_NUM, OFF(e_sram_pj_per_byte), 0, 1, 0, 1e6},
    {"e_dram_pj_per_byte", K_NUM, OFF(e_dram_pj_per_byte), 0, 1, 0, 1e6},
    {"op_count", K_INT, OFF(n_opp), 0, 1, 1, ET_HW_MAX_OPP},
};
#define NKEYS (sizeof keys / sizeof keys[0])
/* Operating points: opN.voltage, opN.freq_mhz, opN.power_mw, N = 1..ET_HW_MAX_OPP. */
static const char *const opp_fields[3] = {"voltage", "freq_mhz", "power_mw"};
static const double opp_hi[3] = {100, 1e6, 1e9};

typedef struct parse_state {
    et_hw_arch *a;
    const char *source;
    unsigned char seen[NKEYS];
    unsigned char opp_seen[ET_HW_MAX_OPP][3];
} parse_state;

const char *et_hw_preset_names = "elearn, baseline, trainer";

const char *et_hw_preset_text(const char *name) {
    if (!name) return NULL;
    if (!strcmp(name, "elearn")) return et_hw_preset_elearn;
    if (!strcmp(name, "baseline")) return et_hw_preset_baseline;
    if (!strcmp(name, "trainer")) return et_hw_preset_trainer;
    return NULL;
}

const char *et_hw_prec_name(et_hw_prec p, char *buf, size_t cap) {
    if (p.num == ET_HW_FP) snprintf(buf, cap, "fp%d", p.a_bits);
    else if (p.a_bits == p.w_bits) snprintf(buf, cap, "int%d", p.a_bits);
    else snprintf(buf, cap, "int%dx%d", p.a_bits, p.w_bits);
    return buf;
}

et_status et_hw_prec_parse(const char *text, et_hw_prec *out) {
    int a = 0, w = 0, n = 0;
    if (!strcmp(text, "fp16") || !strcmp(text, "fp8")) {
        out->num = ET_HW_FP;
        out->a_bits = out->w_bits = text[2] == '1' ? 16 : 8;
        return ET_OK;
    }
    if (sscanf(text, "int%d%n", &a, &n) == 1 && !text[n] && a >= 1 && a <= 32 && isdigit((unsigned char)text[3])) {
        *out = (et_hw_prec){ET_HW_INT, a, a};
        return ET_OK;
    }
    if (sscanf(text, "int%dx%d%n", &a, &w, &n) == 2 && !text[n] && a >= 1 && a <= 32 && w >= 1 && w <= 32 &&
        isdigit((unsigned char)text[3]) && isdigit((unsigned char)text[strcspn(text, "x") + 1])) {
        *out = (et_hw_prec){ET_HW_INT, a, w};
        return ET_OK;
    }
    return et_set_error(ET_ERR_INVALID, "bad precision '%s' (int8, int4, int2, int8x4, fp16, fp8)", text);
}

static int parse_double(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

static int parse_long(const char *s, long long *out) {
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)*s) && *s != '-') return 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) return 0;
    *out = v;
    return 1;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    return s;
}

/* Sets one key. `where` prefixes messages ("elearn.cfg:12" or "--set"). */
static et_status set_key(parse_state *ps, const char *where, et_status bad, char *key, char *val, int allow_dup) {
    et_hw_arch *a = ps->a;
    if (!*key) return et_set_error(bad, "%s: missing key before '='", where);
    if (!*val) return et_set_error(bad, "%s: missing value for '%s'", where, key);
    int k;
    if (!strncmp(key, "op", 2) && isdigit((unsigned char)key[2])) {
        char *dot;
        long n = strtol(key + 2, &dot, 10);
        if (*dot != '.' || n < 1 || n > ET_HW_MAX_OPP)
            return et_set_error(bad, "%s: unknown key '%s' (operating points are op1..op%d)", where, key,
                                ET_HW_MAX_OPP);
        for (k = 0; k < 3 && strcmp(dot + 1, opp_fields[k]); k++) {}
        if (k == 3)
            return et_set_error(bad, "%s: unknown key '%s' (opN.voltage, opN.freq_mhz, opN.power_mw)", where, key);
        double v;
        if (!parse_double(val, &v) || v <= 0 || v > opp_hi[k])
            return et_set_error(bad, "%s: bad value '%s' for %s (a positive number)", where, val, key);
        if (ps->opp_seen[n - 1][k] && !allow_dup) return et_set_error(bad, "%s: duplicate key '%s'", where, key);
        ps->opp_seen[n - 1][k] = 1;
        double *f = k == 0 ? &a->opp[n - 1].voltage : k == 1 ? &a->opp[n - 1].freq_mhz : &a->opp[n - 1].power_mw;
        *f = v;
        return ET_OK;
    }
    for (k = 0; k < (int)NKEYS && strcmp(keys[k].name, key); k++) {}
    if (k == (int)NKEYS) return et_set_error(bad, "%s: unknown key '%s' (see docs/hw.md)", where, key);
    const key_def *d = &keys[k];
    if (ps->seen[k] && !allow_dup) return et_set_error(bad, "%s: duplicate key '%s'", where, key);
    char *base = (char *)a + d->off;
    double v;
    long long iv;
    switch (d->type) {
    case K_STR:
        if (strlen(val) >= sizeof a->name) return et_set_error(bad, "%s: %s is too long", where, key);
        for (const char *c = val; *c; c++)
            if (!isalnum((unsigned char)*c) && *c != '_' && *c != '-' && *c != '.')
                return et_set_error(bad, "%s: bad value '%s' for %s (letters, digits, _ - .)", where, val, key);
        strcpy(base, val);
        break;
    case K_NUM:
        if (!parse_double(val, &v) || v < d->lo || v > d->hi)
            return et_set_error(bad, "%s: bad value '%s' for %s (a number in [%g, %g])", where, val, key, d->lo,
                                d->hi);
        *(double *)base = v;
        break;
    case K_INT:
    case K_BOOL:
        if (!parse_long(val, &iv) || iv < (long long)d->lo || iv > (long long)d->hi)
            return et_set_error(bad, "%s: bad value '%s' for %s (an integer in [%g, %g])", where, val, key, d->lo,
                                d->hi);
        *(int *)base = (int)iv;
        break;
    case K_PREC: {
        et_hw_prec p;
        if (et_hw_prec_parse(val, &p))
            return et_set_error(bad, "%s: bad value '%s' for %s (int8, int4, int2, int8x4, fp16, fp8)", where, val,
                                key);
        *(et_hw_prec *)base = p;
        break;
    }
    case K_CODEC:
        if (!strcmp(val, "none")) *(int *)base = ET_HW_COMPRESS_NONE;
        else if (!strcmp(val, "rle")) *(int *)base = ET_HW_COMPRESS_RLE;
        else if (!strcmp(val, "bitmask")) *(int *)base = ET_HW_COMPRESS_BITMASK;
        else return et_set_error(bad, "%s: bad value '%s' for %s (none, rle, bitmask)", where, val, key);
        break;
    case K_LIST: {
        int *arr = (int *)base, n = 0;
        char *save = NULL;
        for (char *tok = strtok_r(val, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            tok = trim(tok);
            if (n == ET_HW_MAX_LIST)
                return et_set_error(bad, "%s: more than %d values for %s", where, ET_HW_MAX_LIST, key);
            if (!parse_long(tok, &iv) || iv < (long long)d->lo || iv > (long long)d->hi)
                return et_set_error(bad, "%s: bad value '%s' in %s (integers in [%g, %g], comma-separated)", where,
                                    tok, key, d->lo, d->hi);
            for (int j = 0; j < n; j++)
                if (arr[j] == iv) return et_set_error(bad, "%s: %s lists %lld twice", where, key, iv);
            arr[n++] = (int)iv;
        }
        if (!n) return et_set_error(bad, "%s: missing value for '%s'", where, key);
        *(int *)((char *)a + d->count) = n;
        break;
    }
    }
    ps->seen[k] = 1;
    return ET_OK;
}

static size_t key_index(const char *name) {
    size_t k = 0;
    while (k < NKEYS && strcmp(keys[k].name, name)) k++;
    return k;
}

static et_status check_arch(parse_state *ps) {
    et_hw_arch *a = ps->a;
    const char *src = ps->source;
    for (size_t k = 0; k < NKEYS; k++)
        if (keys[k].required && !ps->seen[k])
            return et_set_error(ET_ERR_FORMAT, "%s: missing required key '%s'", src, keys[k].name);
    /* op_count comes first in a file, so a file cut after a whole operating
     * point still misses the next one */
    for (int i = 0; i < ET_HW_MAX_OPP; i++)
        for (int f = 0; f < 3; f++) {
            if (i < a->n_opp && !ps->opp_seen[i][f])
                return et_set_error(ET_ERR_FORMAT, "%s: missing required key 'op%d.%s' (op_count = %d)", src, i + 1,
                                    opp_fields[f], a->n_opp);
            if (i >= a->n_opp && ps->opp_seen[i][f])
                return et_set_error(ET_ERR_FORMAT, "%s: op%d.%s is given but op_count = %d", src, i + 1,
                                    opp_fields[f], a->n_opp);
        }
#define NEED(cond, key, why)                                                                                  \
    if ((cond) && !ps->seen[key_index(key)])                                                                  \
        return et_set_error(ET_ERR_FORMAT, "%s: missing required key '%s' (%s)", src, key, why);
    NEED(a->n_int_bits, "lanes", "int_bits is set");
    NEED(a->n_int_bits, "pp_bits", "int_bits is set");
    NEED(a->n_int_bits, "e_mac_int8_pj", "int_bits is set");
    NEED(a->fp16_macs, "e_mac_fp16_pj", "fp16_macs > 0");
    NEED(a->fp8_macs, "e_mac_fp8_pj", "fp8_macs > 0");
    NEED(!a->rpo, "fixed_ip", "rpo = 0");
    NEED(!a->rpo, "fixed_op", "rpo = 0");
    NEED(a->speculation, "spec_pj_per_mac", "speculation = 1");
    NEED(a->speculation, "spec_macs_per_cycle", "speculation = 1");
#undef NEED
    if (!ps->seen[key_index("tile_positions")]) a->tile_positions = 64;
    if (!a->n_int_bits && !a->fp16_macs && !a->fp8_macs)
        return et_set_error(ET_ERR_FORMAT, "%s: no precision supported (set int_bits, fp16_macs or fp8_macs)", src);
    for (int i = 0; i < a->n_int_bits; i++)
        for (int j = 0; j < a->n_int_bits; j++) {
            long long ab = (long long)a->int_bits[i] * a->int_bits[j];
            if (ab > a->pp_bits || (a->pp_bits % ab))
                return et_set_error(ET_ERR_FORMAT, "%s: int_bits %d x %d does not divide pp_bits = %d", src,
                                    a->int_bits[i], a->int_bits[j], a->pp_bits);
        }
    char pb[32];
    if (!et_hw_macs_per_cycle(a, a->calib))
        return et_set_error(ET_ERR_FORMAT, "%s: calib = %s is not a supported precision", src,
                            et_hw_prec_name(a->calib, pb, sizeof pb));
    if (!a->rpo) {
        et_hw_pair p;
        if (et_hw_pairs(a, a->calib, &p, 1) != 1 || (int64_t)a->fixed_ip * a->fixed_op != et_hw_macs_per_cycle(a, a->calib))
            return et_set_error(ET_ERR_FORMAT, "%s: fixed_ip x fixed_op = %d x %d must equal the MACs per cycle at %s (%d)",
                                src, a->fixed_ip, a->fixed_op, et_hw_prec_name(a->calib, pb, sizeof pb),
                                et_hw_macs_per_cycle(a, a->calib));
    }
    /* every supported precision needs at least one pair */
    et_hw_prec ps_[ET_HW_MAX_LIST * ET_HW_MAX_LIST + 2];
    int np = 0;
    for (int i = 0; i < a->n_int_bits; i++)
        for (int j = 0; j < a->n_int_bits; j++) ps_[np++] = (et_hw_prec){ET_HW_INT, a->int_bits[i], a->int_bits[j]};
    if (a->fp16_macs) ps_[np++] = (et_hw_prec){ET_HW_FP, 16, 16};
    if (a->fp8_macs) ps_[np++] = (et_hw_prec){ET_HW_FP, 8, 8};
    for (int i = 0; i < np; i++) {
        et_hw_pair p;
        if (et_hw_pairs(a, ps_[i], &p, 1) < 1)
            return et_set_error(ET_ERR_FORMAT, "%s: no IP x OP pair gives %d MACs per cycle at %s (check ip_list, "
                                "op_list, fixed_ip)", src, et_hw_macs_per_cycle(a, ps_[i]),
                                et_hw_prec_name(ps_[i], pb, sizeof pb));
    }
    /* the calibrated per-cycle energy must cover the MACs themselves */
    for (int i = 0; i < a->n_opp; i++) {
        et_hw_peak pk;
        et_status st = et_hw_peak_at(a, i, a->calib, &pk);
        if (st) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", et_last_error());
            return et_set_error(ET_ERR_FORMAT, "%s: op%d: %s", src, i + 1, msg);
        }
    }
    return ET_OK;
}

et_status et_hw_arch_parse(const char *text, const char *source, const char *const *sets, int nsets,
                           et_hw_arch *out) {
    if (!text || !out) return et_set_error(ET_ERR_INVALID, "et_hw_arch_parse: NULL argument");
    if (!source) source = "config";
    et_hw_arch a;
    memset(&a, 0, sizeof a);
    parse_state ps;
    memset(&ps, 0, sizeof ps);
    ps.a = &a;
    ps.source = source;
    const char *p = text;
    for (int line = 1; *p; line++) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char buf[1024];
        if (n >= sizeof buf) return et_set_error(ET_ERR_FORMAT, "%s:%d: line too long", source, line);
        memcpy(buf, p, n);
        buf[n] = 0;
        p += n + (e != NULL);
        for (size_t i = 0; i < n; i++)
            if (buf[i] == 0 || (unsigned char)buf[i] >= 0x80 || (iscntrl((unsigned char)buf[i]) && buf[i] != '\t' && buf[i] != '\r'))
                return et_set_error(ET_ERR_FORMAT, "%s:%d: unexpected byte 0x%02x", source, line, (unsigned char)buf[i]);
        char *hash = strchr(buf, '#');
        if (hash) *hash = 0;
        char *s = trim(buf);
        if (!*s) continue;
        char where[600];
        snprintf(where, sizeof where, "%s:%d", source, line);
        char *eq = strchr(s, '=');
        if (!eq) return et_set_error(ET_ERR_FORMAT, "%s: expected 'key = value', got '%.60s'", where, s);
        *eq = 0;
        et_status st = set_key(&ps, where, ET_ERR_FORMAT, trim(s), trim(eq + 1), 0);
        if (st) return st;
    }
    for (int i = 0; i < nsets; i++) {
        char buf[1024];
        if (!sets[i] || strlen(sets[i]) >= sizeof buf)
            return et_set_error(ET_ERR_INVALID, "--set: bad or too long argument");
        strcpy(buf, sets[i]);
        char *eq = strchr(buf, '=');
        char where[1100];
        snprintf(where, sizeof where, "--set %s", sets[i]);
        if (!eq) return et_set_error(ET_ERR_INVALID, "%s: expected key=value", where);
        *eq = 0;
        et_status st = set_key(&ps, where, ET_ERR_INVALID, trim(buf), trim(eq + 1), 1);
        if (st) return st;
    }
    et_status st = check_arch(&ps);
    if (st) return st;
    *out = a;
    return ET_OK;
}

et_status et_hw_arch_load(const char *name_or_path, const char *const *sets, int nsets, et_hw_arch *out) {
    if (!name_or_path) return et_set_error(ET_ERR_INVALID, "et_hw_arch_load: NULL name");
    const char *preset = et_hw_preset_text(name_or_path);
    if (preset) return et_hw_arch_parse(preset, name_or_path, sets, nsets, out);
    FILE *f = fopen(name_or_path, "rb");
    if (!f)
        return et_set_error(ET_ERR_IO, "cannot open architecture '%s': %s (presets: %s)", name_or_path,
                            strerror(errno), et_hw_preset_names);
    size_t cap = 1 << 16, n;
    char *buf = malloc(cap + 1);
    if (!buf) {
        fclose(f);
        return et_set_error(ET_ERR_NOMEM, "out of memory reading '%s'", name_or_path);
    }
    n = fread(buf, 1, cap + 1, f);
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return et_set_error(ET_ERR_IO, "error reading '%s'", name_or_path);
    }
    if (n > cap) {
        free(buf);
        return et_set_error(ET_ERR_FORMAT, "%s: larger than %zu bytes", name_or_path, cap);
    }
    buf[n] = 0;
    if (strlen(buf) != n) {
        free(buf);
        return et_set_error(ET_ERR_FORMAT, "%s: contains a NUL byte", name_or_path);
    }
    et_status st = et_hw_arch_parse(buf, name_or_path, sets, nsets, out);
    free(buf);
    return st;
}
