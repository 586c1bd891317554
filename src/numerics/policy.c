/* Precision policy parser; see policy.h and docs/precision.md. */
#include "numerics/policy.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *et_role_name(et_role r) {
    static const char *const names[ET_NROLES] = {"w", "a", "e", "g", "acc", "m", "mul"};
    return (unsigned)r < ET_NROLES ? names[r] : "?";
}

static int role_of(const char *s, size_t n) {
    for (int r = 0; r < ET_NROLES; r++)
        if (strlen(et_role_name((et_role)r)) == n && !strncmp(s, et_role_name((et_role)r), n)) return r;
    return -1;
}

/* Parses "role=fmt" assignments separated by spaces/commas into e. */
static et_status parse_assignments(char *s, et_policy_entry *e, const char *where) {
    for (char *tok = strtok(s, " \t,"); tok; tok = strtok(NULL, " \t,")) {
        char *eq = strchr(tok, '=');
        if (!eq) return et_set_error(ET_ERR_FORMAT, "%s: expected ROLE=FORMAT, got '%s'", where, tok);
        int r = role_of(tok, (size_t)(eq - tok));
        if (r < 0)
            return et_set_error(ET_ERR_FORMAT, "%s: unknown role '%.*s' (w, a, e, g, acc, m, mul)", where,
                                (int)(eq - tok), tok);
        if (e->set & (1u << r)) return et_set_error(ET_ERR_FORMAT, "%s: role '%s' given twice", where, et_role_name((et_role)r));
        if (r == ET_ROLE_ACC && !strcmp(eq + 1, "int32")) {
            /* exact integer accumulation (docs/precision.md): not a number
             * format of its own, a property of the matmul call */
            e->fmt[r] = (et_format){.kind = ET_FMT_INT, .bits = 32, .round = ET_ROUND_RN};
        } else if (et_format_parse(eq + 1, &e->fmt[r])) {
            char msg[300];
            snprintf(msg, sizeof msg, "%s", et_last_error());
            return et_set_error(ET_ERR_FORMAT, "%s: %s", where, msg);
        }
        e->set |= 1u << r;
    }
    return ET_OK;
}

static et_status parse_laps(char *s, et_laps *l, const char *where) {
    for (char *tok = strtok(s, " \t,"); tok; tok = strtok(NULL, " \t,")) {
        char *eq = strchr(tok, '='), *end;
        if (!eq) return et_set_error(ET_ERR_FORMAT, "%s: expected KEY=VALUE after laps, got '%s'", where, tok);
        *eq = 0;
        errno = 0;
        double v = strtod(eq + 1, &end);
        if (errno || end == eq + 1 || *end) return et_set_error(ET_ERR_FORMAT, "%s: bad number for laps %s", where, tok);
        if (!strcmp(tok, "threshold") && v > 0 && v < 10) l->threshold = v;
        else if (!strcmp(tok, "every") && v >= 1 && v <= 1e9 && v == (int)v) l->every = (int)v;
        else if (!strcmp(tok, "inc") && v >= 1 && v <= 8 && v == (int)v) l->inc = (int)v;
        else if (!strcmp(tok, "max") && v >= 2 && v <= 16 && v == (int)v) l->max = (int)v;
        else return et_set_error(ET_ERR_FORMAT, "%s: laps %s=%s is unknown or out of range (threshold in (0,10), "
                                 "every >= 1, inc 1..8, max 2..16)", where, tok, eq + 1);
    }
    return ET_OK;
}

et_status et_policy_parse(const char *text, const char *name, et_policy *out) {
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", name);
    out->n = 1;
    size_t len = strlen(text);
    char *buf = malloc(len + 1);
    if (!buf) return et_set_error(ET_ERR_NOMEM, "out of memory");
    memcpy(buf, text, len + 1);
    et_status st = ET_OK;
    int lineno = 0, saw_default = 0;
    /* One line without keywords is an inline policy. */
    int inline_form = !strchr(buf, '\n') && strncmp(buf, "default", 7) && strncmp(buf, "layer", 5) &&
                      strncmp(buf, "laps", 4);
    char *save = NULL;
    for (char *ln = buf; ln && !st; ln = save) {
        save = strchr(ln, '\n');
        if (save) *save++ = 0;
        lineno++;
        char *hash = strchr(ln, '#');
        if (hash) *hash = 0;
        while (isspace((unsigned char)*ln)) ln++;
        if (!*ln) continue;
        char where[128];
        snprintf(where, sizeof where, "%s:%d", name, lineno);
        if (inline_form) {
            st = parse_assignments(ln, &out->entries[0], where);
            saw_default = 1;
        } else if (!strncmp(ln, "default", 7) && (isspace((unsigned char)ln[7]) || !ln[7])) {
            if (saw_default) st = et_set_error(ET_ERR_FORMAT, "%s: 'default' given twice", where);
            else st = parse_assignments(ln + 7, &out->entries[0], where), saw_default = 1;
        } else if (!strncmp(ln, "laps", 4) && (isspace((unsigned char)ln[4]) || !ln[4])) {
            if (out->laps.on) {
                st = et_set_error(ET_ERR_FORMAT, "%s: 'laps' given twice", where);
                break;
            }
            out->laps = (et_laps){1, 0.05, 100, 2, 16};
            st = parse_laps(ln + 4, &out->laps, where);
        } else if (!strncmp(ln, "layer", 5) && isspace((unsigned char)ln[5])) {
            char *p = ln + 5;
            while (isspace((unsigned char)*p)) p++;
            char *end = p;
            while (*end && !isspace((unsigned char)*end)) end++;
            if (end == p) {
                st = et_set_error(ET_ERR_FORMAT, "%s: 'layer' needs a layer name (e.g. layer 3 w=int4)", where);
                break;
            }
            if (out->n > ET_POLICY_MAX_LAYERS) {
                st = et_set_error(ET_ERR_FORMAT, "%s: more than %d layer overrides", where, ET_POLICY_MAX_LAYERS);
                break;
            }
            et_policy_entry *e = &out->entries[out->n];
            snprintf(e->layer, sizeof e->layer, "%.*s", (int)(end - p), p);
            for (int i = 1; i < out->n; i++)
                if (!strcmp(out->entries[i].layer, e->layer))
                    st = et_set_error(ET_ERR_FORMAT, "%s: layer %s given twice", where, e->layer);
            if (!st) st = parse_assignments(end, e, where);
            if (!st && !e->set) st = et_set_error(ET_ERR_FORMAT, "%s: layer %s sets no role", where, e->layer);
            out->n++;
        } else {
            st = et_set_error(ET_ERR_FORMAT, "%s: expected 'default ...', 'layer NAME ...' or 'laps ...'", where);
        }
    }
    free(buf);
    return st;
}

et_status et_policy_load(const char *spec, et_policy *out) {
    char cand[3][1024];
    int nc = 0;
    snprintf(cand[nc++], sizeof cand[0], "%s", spec);
    if (!strchr(spec, '/') && !strchr(spec, '=')) {
        const char *env = getenv("ET_POLICIES_DIR");
        if (env) snprintf(cand[nc++], sizeof cand[0], "%s/%s.policy", env, spec);
        snprintf(cand[nc++], sizeof cand[0], "policies/%s.policy", spec);
    }
    for (int i = 0; i < nc; i++) {
        FILE *f = fopen(cand[i], "rb");
        if (!f) continue;
        char *text = malloc(65537);
        size_t n = text ? fread(text, 1, 65537, f) : 0;
        fclose(f);
        if (!text) return et_set_error(ET_ERR_NOMEM, "out of memory");
        if (n > 65536) {
            free(text);
            return et_set_error(ET_ERR_FORMAT, "%s: policy file larger than 64 KB", cand[i]);
        }
        text[n] = 0;
        if (memchr(text, 0, n)) {
            free(text);
            return et_set_error(ET_ERR_FORMAT, "%s: not a text file", cand[i]);
        }
        const char *base = strrchr(cand[i], '/');
        char name[64];
        snprintf(name, sizeof name, "%.63s", base ? base + 1 : cand[i]);
        char *dot = strrchr(name, '.');
        if (dot && !strcmp(dot, ".policy")) *dot = 0;
        et_status st = et_policy_parse(text, name, out);
        free(text);
        return st;
    }
    if (strchr(spec, '=')) return et_policy_parse(spec, "inline", out);
    return et_set_error(ET_ERR_IO, "cannot open precision policy '%s' (a file, a name in policies/, or ROLE=FMT,...)", spec);
}

const et_format *et_policy_format(const et_policy *p, const char *layer, et_role role) {
    const et_format *f = NULL;
    if (p->entries[0].set & (1u << role)) f = &p->entries[0].fmt[role];
    for (int i = 1; i < p->n; i++)
        if (!strcmp(p->entries[i].layer, layer) && (p->entries[i].set & (1u << role))) f = &p->entries[i].fmt[role];
    if (f && f->kind == ET_FMT_FLOAT && f->ebits == 8 && f->mbits == 23 && !f->sat && !f->nosub) return NULL; /* fp32 */
    return f;
}
