/* The processor-model report as one self-contained HTML page (inline SVG, no
 * script, no network): per-layer PE utilization, energy breakdown, the
 * architecture against its baseline, and the tables. Built from the same
 * cJSON objects the JSON output is, so the page and the JSON agree. */
#include "cli.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} buf;

static void put(buf *b, const char *fmt, ...) {
    if (b->oom) return;
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->oom = 1;
            return;
        }
        if (b->s && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 65536;
        while (cap < b->n + (size_t)k + 1) cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->oom = 1;
            return;
        }
        b->s = s, b->cap = cap;
    }
}

/* Text with &, <, >, " escaped. */
static void esc(buf *b, const char *t) {
    for (; t && *t; t++) {
        switch (*t) {
        case '&': put(b, "&amp;"); break;
        case '<': put(b, "&lt;"); break;
        case '>': put(b, "&gt;"); break;
        case '"': put(b, "&quot;"); break;
        default: put(b, "%c", *t);
        }
    }
}

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}
static const char *str(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}
static const cJSON *obj(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }

static const char *const COL_A = "#1f77b4", *const COL_B = "#bbbbbb";
static const char *const E_KEYS[5] = {"mac", "sram", "dram", "speculation", "other"};
static const char *const E_COLS[5] = {"#4c72b0", "#55a868", "#c44e52", "#8172b2", "#ccb974"};

/* Grouped bars: per label, value a (architecture) and b (baseline, may be NAN). */
static void bars(buf *b, const char *title, int n, const char *const *labels, const double *va, const double *vb,
                 double vmax, const char *na, const char *nb, const char *fmt) {
    const int W = 60 + n * 54 > 520 ? 60 + n * 54 : 520, H = 260, x0 = 50, y0 = 30, h = 170;
    put(b, "<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' role='img'>", W, H);
    put(b, "<text x='%d' y='18' font-size='14' font-weight='bold'>", x0);
    esc(b, title);
    put(b, "</text>");
    if (!(vmax > 0)) vmax = 1;
    for (int g = 0; g <= 4; g++) {
        double y = y0 + h - h * g / 4.0;
        put(b, "<line x1='%d' y1='%.1f' x2='%d' y2='%.1f' stroke='#eee'/>", x0, y, W - 10, y);
        put(b, "<text x='%d' y='%.1f' font-size='10' text-anchor='end'>", x0 - 4, y + 3);
        put(b, fmt, vmax * g / 4.0);
        put(b, "</text>");
    }
    for (int i = 0; i < n; i++) {
        double x = x0 + 8 + i * 54;
        const double v[2] = {va[i], vb ? vb[i] : NAN};
        for (int k = 0; k < 2; k++) {
            if (!isfinite(v[k])) continue;
            double hh = h * (v[k] > vmax ? 1 : v[k] < 0 ? 0 : v[k] / vmax);
            put(b, "<rect x='%.1f' y='%.1f' width='20' height='%.1f' fill='%s'><title>", x + 21 * k, y0 + h - hh, hh,
                k ? COL_B : COL_A);
            esc(b, k ? nb : na);
            put(b, " ");
            esc(b, labels[i]);
            put(b, ": ");
            put(b, fmt, v[k]);
            put(b, "</title></rect>");
        }
        put(b, "<text x='%.1f' y='%d' font-size='10' text-anchor='middle'>", x + 20, y0 + h + 14);
        esc(b, labels[i]);
        put(b, "</text>");
    }
    put(b, "<rect x='%d' y='%d' width='10' height='10' fill='%s'/><text x='%d' y='%d' font-size='11'>", x0,
        y0 + h + 28, COL_A, x0 + 14, y0 + h + 37);
    esc(b, na);
    put(b, "</text>");
    if (vb) {
        put(b, "<rect x='%d' y='%d' width='10' height='10' fill='%s'/><text x='%d' y='%d' font-size='11'>", x0 + 150,
            y0 + h + 28, COL_B, x0 + 164, y0 + h + 37);
        esc(b, nb);
        put(b, "</text>");
    }
    put(b, "</svg>\n");
}

/* Stacked energy bars (joules) for the architecture and the baseline. */
static void energy(buf *b, const cJSON *ta, const cJSON *tb, const char *na, const char *nb) {
    const cJSON *t[2] = {ta, tb};
    const char *nm[2] = {na, nb};
    double vmax = 0;
    for (int k = 0; k < 2; k++)
        if (t[k]) {
            double v = num(obj(t[k], "energy_j"), "total");
            if (v > vmax) vmax = v;
        }
    if (!(vmax > 0)) vmax = 1;
    const int W = 620, H = 60 + 2 * 40 + 40, x0 = 110, w = 460;
    put(b, "<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' role='img'>", W, H);
    put(b, "<text x='10' y='18' font-size='14' font-weight='bold'>Energy breakdown (J)</text>");
    for (int k = 0; k < 2; k++) {
        if (!t[k]) continue;
        const cJSON *e = obj(t[k], "energy_j");
        double x = x0, y = 34 + 40 * k;
        put(b, "<text x='%d' y='%.1f' font-size='12' text-anchor='end'>", x0 - 6, y + 17);
        esc(b, nm[k]);
        put(b, "</text>");
        for (int i = 0; i < 5; i++) {
            double v = num(e, E_KEYS[i]), ww = isfinite(v) ? w * v / vmax : 0;
            put(b, "<rect x='%.1f' y='%.1f' width='%.2f' height='26' fill='%s'><title>%s: %.6g J</title></rect>", x, y,
                ww, E_COLS[i], E_KEYS[i], v);
            x += ww;
        }
        put(b, "<text x='%.1f' y='%.1f' font-size='11'>%.4g J</text>", x + 4, y + 17, num(e, "total"));
    }
    for (int i = 0; i < 5; i++)
        put(b, "<rect x='%d' y='%d' width='10' height='10' fill='%s'/><text x='%d' y='%d' font-size='11'>%s</text>",
            x0 + 95 * i, H - 22, E_COLS[i], x0 + 95 * i + 14, H - 13, E_KEYS[i]);
    put(b, "</svg>\n");
}

static void totals_row(buf *b, const char *name, const cJSON *t) {
    put(b, "<tr><td>");
    esc(b, name);
    put(b, "</td><td>%.6g</td><td>%.6g</td><td>%.6g</td><td>%.6g</td><td>%.4f</td><td>%.6g</td><td>%.6g</td>"
           "<td>%.6g</td><td>%.6g</td></tr>\n",
        num(t, "cycles"), num(t, "seconds"), num(obj(t, "energy_j"), "total"), num(t, "macs_executed"),
        num(t, "pe_utilization"), num(t, "effective_tops"), num(t, "tops_per_watt"), num(t, "sram_bytes"),
        num(t, "dram_bytes"));
}

static const char TOT_HEAD[] = "<tr><th></th><th>cycles</th><th>seconds</th><th>energy J</th><th>MACs executed</th>"
                               "<th>PE utilization</th><th>effective TOPS</th><th>TOPS/W</th><th>SRAM bytes</th>"
                               "<th>DRAM bytes</th></tr>\n";

static void hw_section(buf *b, const cJSON *hw) {
    const cJSON *base = obj(hw, "baseline"), *ta = obj(hw, "totals"), *tb = base ? obj(base, "totals") : NULL;
    const char *na = str(hw, "arch"), *nb = base ? str(base, "arch") : "";
    put(b, "<h2 id='totals'>Totals</h2><p>");
    esc(b, na);
    put(b, " at %s, %g MHz", str(hw, "voltage"), num(hw, "frequency_mhz"));
    if (base) {
        put(b, " against ");
        esc(b, nb);
    }
    put(b, ".</p><table>%s", TOT_HEAD);
    totals_row(b, na, ta);
    if (tb) totals_row(b, nb, tb);
    put(b, "</table>\n");
    const cJSON *r = obj(hw, "ratios");
    if (r) {
        put(b, "<h2 id='ratios'>Ratios</h2><table><tr><th>energy_efficiency</th><th>pe_utilization</th>"
               "<th>speedup</th><th>computation_reduction</th><th>memory_access_reduction</th></tr>"
               "<tr><td>%.4f</td><td>%.4f</td><td>%.4f</td><td>%.4f</td><td>%.4f</td></tr></table>\n",
            num(r, "energy_efficiency"), num(r, "pe_utilization"), num(r, "speedup"), num(r, "computation_reduction"),
            num(r, "memory_access_reduction"));
        /* the architecture relative to its baseline (baseline = 1) */
        static const char *const lab[5] = {"cycles", "energy", "TOPS/W", "DRAM bytes", "SRAM bytes"};
        double va[5], vb[5] = {1, 1, 1, 1, 1};
        va[0] = num(ta, "cycles") / num(tb, "cycles");
        va[1] = num(obj(ta, "energy_j"), "total") / num(obj(tb, "energy_j"), "total");
        va[2] = num(ta, "tops_per_watt") / num(tb, "tops_per_watt");
        va[3] = num(ta, "dram_bytes") / num(tb, "dram_bytes");
        va[4] = num(ta, "sram_bytes") / num(tb, "sram_bytes");
        double m = 1;
        for (int i = 0; i < 5; i++)
            if (isfinite(va[i]) && va[i] > m) m = va[i];
        put(b, "<h2 id='versus'>");
        esc(b, na);
        put(b, " versus ");
        esc(b, nb);
        put(b, "</h2>");
        bars(b, "relative to the baseline (baseline = 1)", 5, lab, va, vb, m, na, nb, "%.3g");
    }
    energy(b, ta, tb, na, nb);
    /* per layer */
    const cJSON *la = obj(hw, "layers"), *lb = base ? obj(base, "layers") : NULL;
    int n = cJSON_GetArraySize(la);
    if (n > 0) {
        const char **labels = calloc((size_t)n, sizeof *labels);
        double *ua = calloc((size_t)n, sizeof *ua), *ub = calloc((size_t)n, sizeof *ub);
        if (!labels || !ua || !ub) {
            b->oom = 1;
        } else {
            for (int i = 0; i < n; i++) {
                const cJSON *x = cJSON_GetArrayItem(la, i);
                labels[i] = str(x, "name");
                ua[i] = num(x, "pe_utilization");
                ub[i] = NAN;
                for (int j = 0; lb && j < cJSON_GetArraySize(lb); j++)
                    if (!strcmp(str(cJSON_GetArrayItem(lb, j), "name"), labels[i]))
                        ub[i] = num(cJSON_GetArrayItem(lb, j), "pe_utilization");
            }
            put(b, "<h2 id='layers'>Per layer</h2>");
            bars(b, "PE utilization per layer", n, labels, ua, base ? ub : NULL, 1, na, nb, "%.2f");
            put(b, "<table>%s", TOT_HEAD);
            for (int i = 0; i < n; i++) {
                char nm[160];
                snprintf(nm, sizeof nm, "%s layer %s", na, labels[i]);
                totals_row(b, nm, cJSON_GetArrayItem(la, i));
                for (int j = 0; lb && j < cJSON_GetArraySize(lb); j++)
                    if (!strcmp(str(cJSON_GetArrayItem(lb, j), "name"), labels[i])) {
                        snprintf(nm, sizeof nm, "%s layer %s", nb, labels[i]);
                        totals_row(b, nm, cJSON_GetArrayItem(lb, j));
                    }
            }
            put(b, "</table>\n");
        }
        free(labels), free(ua), free(ub);
    }
    /* per stage */
    put(b, "<h2 id='stages'>Per stage</h2><table>%s", TOT_HEAD);
    static const char *const st[3] = {"ff", "ep", "wg"};
    for (int s = 0; s < 3; s++) {
        char nm[160];
        snprintf(nm, sizeof nm, "%s %s", na, st[s]);
        totals_row(b, nm, obj(obj(hw, "stages"), st[s]));
        if (base) {
            snprintf(nm, sizeof nm, "%s %s", nb, st[s]);
            totals_row(b, nm, obj(obj(base, "stages"), st[s]));
        }
    }
    put(b, "</table>\n");
}

static void peak_section(buf *b, const cJSON *peak) {
    int n = cJSON_GetArraySize(peak);
    put(b, "<h2 id='peak'>Peak figures</h2><table><tr><th>precision</th><th>voltage</th><th>frequency MHz</th>"
           "<th>TOPS</th><th>TOPS/W</th></tr>\n");
    const char **labels = calloc((size_t)n + 1, sizeof *labels);
    char(*lab)[48] = calloc((size_t)n + 1, sizeof *lab);
    double *v = calloc((size_t)n + 1, sizeof *v), vmax = 0;
    if (!labels || !lab || !v) b->oom = 1;
    for (int i = 0; i < n && !b->oom; i++) {
        const cJSON *r = cJSON_GetArrayItem(peak, i);
        put(b, "<tr><td>");
        esc(b, str(r, "precision"));
        put(b, "</td><td>");
        esc(b, str(r, "voltage"));
        put(b, "</td><td>%g</td><td>%.6g</td><td>%.6g</td></tr>\n", num(r, "frequency_mhz"), num(r, "tops"),
            num(r, "tops_per_watt"));
        snprintf(lab[i], sizeof lab[i], "%s %s", str(r, "precision"), str(r, "voltage"));
        labels[i] = lab[i];
        v[i] = num(r, "tops_per_watt");
        if (v[i] > vmax) vmax = v[i];
    }
    put(b, "</table>\n");
    if (!b->oom) bars(b, "TOPS/W at peak", n, labels, v, NULL, vmax, "TOPS/W", "", "%.1f");
    free(labels), free(lab), free(v);
}

int hw_html_write(const char *path, const char *title, const cJSON *run, const cJSON *hw, const cJSON *peak) {
    buf b = {0};
    put(&b, "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>");
    esc(&b, title);
    put(&b, "</title><style>body{font-family:sans-serif;margin:24px;max-width:1200px}table{border-collapse:collapse;"
            "margin:8px 0 20px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}"
            "td:first-child,th:first-child{text-align:left}svg{display:block;margin:8px 0 16px}</style></head><body>\n"
            "<h1>");
    esc(&b, title);
    put(&b, "</h1>\n<p>edgetrain processor model (docs/hw.md). Every figure comes from the products the run "
            "executed; the JSON output holds the same numbers.</p>\n");
    if (run && cJSON_GetArraySize(run) > 0) {
        put(&b, "<h2 id='run'>Run</h2><table>");
        for (const cJSON *x = run->child; x; x = x->next) {
            put(&b, "<tr><td>");
            esc(&b, x->string);
            put(&b, "</td><td>");
            if (cJSON_IsNumber(x)) put(&b, "%.6g", x->valuedouble);
            else if (cJSON_IsString(x)) esc(&b, x->valuestring);
            put(&b, "</td></tr>\n");
        }
        put(&b, "</table>\n");
    }
    if (hw) hw_section(&b, hw);
    if (peak) peak_section(&b, peak);
    put(&b, "</body></html>\n");
    int rc = b.oom ? -1 : cli_write_atomic(path, b.s, b.n);
    free(b.s);
    return rc;
}
