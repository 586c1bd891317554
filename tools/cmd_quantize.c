/* edgetrain quantize: numbers from stdin through one number format. */
#include "cli.h"

#include <ctype.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_VALUES 100000000LL

static const char quantize_help[] =
    "usage: edgetrain quantize --format FMT [--seed S] [--step T] [--tensor K]\n"
    "\n"
    "Reads whitespace-separated decimal numbers (and inf, -inf, nan, any case) from\n"
    "stdin, rounds each to float32 and then to FMT, and writes one value per line\n"
    "(%.9g: reads back exactly). Element i uses stream position i of the stochastic\n"
    "rounding key (S, K, i, T). intN/dfxpN take their scale from the whole input.\n"
    "At most 100000000 values.\n"
    "\n"
    "FMT = BASE[:MOD]...[/ROUND]   (docs/formats.md)\n"
    "  BASE   fp32 | fp16 | bf16\n"
    "         e4m3   OCP E4M3FN: bias 7, no inf, max 448, saturates\n"
    "         e5m2   OCP E5M2: bias 15, max 57344, saturates\n"
    "         eXmY   2<=X<=8, 0<=Y<=23: IEEE-like, bias 2^(X-1)-1, subnormals,\n"
    "                overflow to inf (e5m10 = fp16, e8m7 = bf16, e8m23 = fp32)\n"
    "         intN   2<=N<=16: symmetric, scale = absmax/(2^(N-1)-1)\n"
    "         dfxpN  2<=N<=16: smallest power-of-two scale fitting absmax\n"
    "  MOD    :sat        overflow and +-inf become +-max finite (floats)\n"
    "         :nosub      results below the smallest normal become +-0 (floats)\n"
    "         :scaled     per-tensor power-of-two scale 2^-k, absmax*2^k <= max\n"
    "                     (floats; the CLI input is one tensor)\n"
    "         :perchannel one scale per row (intN/dfxpN; the CLI input is one row)\n"
    "  ROUND  /rn  to nearest, ties to even (default)\n"
    "         /rz  toward zero (overflow gives max finite)\n"
    "         /sr  stochastic with 32 random bits\n"
    "         /srR stochastic with R random bits, 1<=R<=32: rounds the magnitude up\n"
    "              with probability floor(f*2^R)/2^R, f the cut-off fraction\n";

/* Parses one token: a decimal number, inf, -inf or nan (strtof's other forms
 * such as hex floats are accepted too). */
static int parse_value(const char *tok, float *out) {
    const char *t = tok + (*tok == '+' || *tok == '-');
    if (!strcasecmp(t, "inf") || !strcasecmp(t, "nan") || isdigit((unsigned char)*t) || *t == '.') {
        char *end;
        float v = strtof(tok, &end);
        if (*end) return 0;
        *out = v;
        return 1;
    }
    return 0;
}

int cmd_quantize(int argc, char **argv) {
    static const struct option opts[] = {{"format", 1, 0, 'f'}, {"seed", 1, 0, 's'}, {"step", 1, 0, 't'},
                                         {"tensor", 1, 0, 'k'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    const char *fmt_text = NULL;
    long long seed = 0, step = 0, tensor = 0;
    int c, li = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, &li)) != -1) {
        int ok = 1;
        switch (c) {
        case 'f': fmt_text = optarg; break;
        case 's': ok = cli_int(optarg, 0, INT64_MAX, &seed); break;
        case 't': ok = cli_int(optarg, 0, INT64_MAX, &step); break;
        case 'k': ok = cli_int(optarg, 0, INT64_MAX, &tensor); break;
        case 'h': fputs(quantize_help, stdout); return 0;
        default: return cli_bad_option("quantize", argv[optind - 1]);
        }
        if (!ok) return cli_fail("quantize", 1, "bad value '%s' for --%s", optarg, opts[li].name);
    }
    if (optind < argc) return cli_fail("quantize", 1, "unexpected argument '%s'", argv[optind]);
    if (!fmt_text) return cli_fail("quantize", 1, "--format is required (try: edgetrain quantize --help)");
    et_format fmt;
    if (et_format_parse(fmt_text, &fmt)) return cli_fail("quantize", 1, "%s", et_last_error());

    size_t n = 0, cap = 0;
    float *x = NULL;
    char tok[128];
    size_t len = 0;
    int ch;
    for (;;) {
        ch = getchar();
        if (ch != EOF && !isspace(ch)) {
            if (len + 1 >= sizeof tok) {
                free(x);
                return cli_fail("quantize", 0, "value %zu: token too long ('%.20s...')", n + 1, tok);
            }
            tok[len++] = (char)ch;
            continue;
        }
        if (len) {
            tok[len] = 0;
            len = 0;
            float v;
            if (!parse_value(tok, &v)) {
                free(x);
                return cli_fail("quantize", 0, "value %zu: cannot parse '%s' as a number", n + 1, tok);
            }
            if ((long long)n >= MAX_VALUES) {
                free(x);
                return cli_fail("quantize", 0, "more than %lld values on stdin", MAX_VALUES);
            }
            if (n == cap) {
                size_t nc = cap ? 2 * cap : 4096;
                float *nx = realloc(x, nc * sizeof *x);
                if (!nx) {
                    free(x);
                    return cli_fail("quantize", 0, "out of memory after %zu values", n);
                }
                x = nx, cap = nc;
            }
            x[n++] = v;
        }
        if (ch == EOF) break;
    }
    if (ferror(stdin)) {
        free(x);
        return cli_fail("quantize", 0, "error reading stdin");
    }
    et_qkey key = {(uint64_t)seed, (uint64_t)tensor, (uint64_t)step};
    if (n && et_quantize_rows(&fmt, x, x, 1, n, &key)) {
        free(x);
        return cli_fail("quantize", 0, "%s", et_last_error());
    }
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        if (isnan(v)) fputs("nan\n", stdout);
        else if (isinf(v)) fputs(v < 0 ? "-inf\n" : "inf\n", stdout);
        else printf("%.9g\n", (double)v);
    }
    free(x);
    if (fflush(stdout) || ferror(stdout)) return cli_fail("quantize", 0, "error writing stdout");
    return 0;
}
