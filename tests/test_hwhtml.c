/* simulate --html: one self-contained page whose sections and numbers match
 * the JSON written by the same command; unwritable paths are a clean error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "util/cli_harness.h"

#include "edgetrain.h"
#include "util/layer_harness.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char *b;
    b = realloc(b, 1 << 22);
    size_t n = fread(b, 1, (1 << 22) - 1, f);
    fclose(f);
    b[n] = 0;
    return strdup(b);
}

/* the page shows `fmt` of v somewhere */
static void shows(const char *html, const char *fmt, double v) {
    char s[64];
    snprintf(s, sizeof s, fmt, v);
    if (!strstr(html, s)) {
        print_error("page lacks %s\n", s);
        fail();
    }
}

static void self_contained(const char *h) {
    assert_true(!strncmp(h, "<!DOCTYPE html>", 15));
    assert_non_null(strstr(h, "</html>\n"));
    assert_null(strstr(h, "src="));
    assert_null(strstr(h, "href="));
    assert_null(strstr(h, "<script"));
    assert_non_null(strstr(h, "<svg"));
}

static void test_peak_html(void **state) {
    (void)state;
    char a[2048], err[1024], jp[512], hp[512];
    snprintf(jp, sizeof jp, "%s/p.json", ch_dir), snprintf(hp, sizeof hp, "%s/p.html", ch_dir);
    snprintf(a, sizeof a, "simulate --arch elearn --peak --json %s --html %s", jp, hp);
    assert_int_equal(ch_run(a, NULL, err, sizeof err), 0);
    char *j = slurp(jp), *h = slurp(hp);
    assert_non_null(j), assert_non_null(h);
    self_contained(h);
    assert_non_null(strstr(h, "id='peak'"));
    cJSON *root = cJSON_Parse(j), *r;
    assert_non_null(root);
    int n = 0;
    cJSON_ArrayForEach(r, cJSON_GetObjectItem(root, "peak")) {
        shows(h, "<td>%.6g</td>", cJSON_GetObjectItem(r, "tops_per_watt")->valuedouble);
        shows(h, "<td>%.6g</td>", cJSON_GetObjectItem(r, "tops")->valuedouble);
        n++;
    }
    assert_int_equal(n, 9);
    cJSON_Delete(root);
    free(j), free(h);
}

/* A trace of two training steps of a conv + linear model, replayed by the CLI. */
static void test_trace_html(void **state) {
    (void)state;
    char tp[512], jp[512], hp[512], a[2048], err[1024];
    snprintf(tp, sizeof tp, "%s/t.etr", ch_dir), snprintf(jp, sizeof jp, "%s/t.json", ch_dir);
    snprintf(hp, sizeof hp, "%s/t.html", ch_dir);
    et_model *m;
    assert_int_equal(et_model_parse("input 1 8 8\nconv 4 k=3 p=1\nrelu\nmaxpool k=2\nflatten\nlinear 10\n", "t", &m),
                     ET_OK);
    assert_int_equal(et_model_set_precision(m, "w=int4,a=int8,e=int8,g=int16"), ET_OK);
    assert_int_equal(et_model_plan(m, 4, NULL), ET_OK);
    assert_int_equal(et_model_init_he(m, 2), ET_OK);
    int nn = et_model_num_nodes(m);
    const char *names[16] = {0};
    for (int i = 0; i < nn; i++) et_model_node_info(m, i, &names[i], NULL, NULL);
    et_trace_writer *w;
    assert_int_equal(et_trace_create(tp, nn, names, &w), ET_OK);
    assert_int_equal(et_model_attach_hw(m, NULL, NULL, w), ET_OK);
    uint8_t labels[4] = {1, 2, 3, 4};
    float loss;
    for (int s = 0; s < 2; s++) {
        lh_fill(et_model_input(m), 256, 10 + (uint64_t)s, 0, 1);
        assert_int_equal(et_model_train_step(m, labels, 4, 0.1f, &loss), ET_OK);
    }
    et_model_attach_hw(m, NULL, NULL, NULL);
    assert_int_equal(et_trace_close(w, 1), ET_OK);
    et_model_free(m);
    snprintf(a, sizeof a, "simulate --trace %s --arch elearn --baseline baseline --json %s --html %s", tp, jp, hp);
    assert_int_equal(ch_run(a, NULL, err, sizeof err), 0);
    char *j = slurp(jp), *h = slurp(hp);
    assert_non_null(j), assert_non_null(h);
    self_contained(h);
    static const char *const ids[] = {"id='totals'", "id='ratios'", "id='versus'", "id='layers'", "id='stages'",
                                      "Energy breakdown", "PE utilization per layer", "speculation"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) assert_non_null(strstr(h, ids[i]));
    cJSON *hw = cJSON_Parse(j);
    assert_non_null(hw);
    cJSON *t = cJSON_GetObjectItem(hw, "totals"), *b = cJSON_GetObjectItem(cJSON_GetObjectItem(hw, "baseline"), "totals");
    cJSON *r = cJSON_GetObjectItem(hw, "ratios");
    shows(h, "<td>%.6g</td>", cJSON_GetObjectItem(cJSON_GetObjectItem(t, "energy_j"), "total")->valuedouble);
    shows(h, "<td>%.6g</td>", cJSON_GetObjectItem(cJSON_GetObjectItem(b, "energy_j"), "total")->valuedouble);
    shows(h, "<td>%.6g</td>", cJSON_GetObjectItem(t, "cycles")->valuedouble);
    shows(h, "<td>%.6g</td>", cJSON_GetObjectItem(t, "dram_bytes")->valuedouble);
    shows(h, "<td>%.4f</td>", cJSON_GetObjectItem(r, "energy_efficiency")->valuedouble);
    shows(h, "<td>%.4f</td>", cJSON_GetObjectItem(r, "memory_access_reduction")->valuedouble);
    cJSON *l;
    int nl = 0;
    cJSON_ArrayForEach(l, cJSON_GetObjectItem(hw, "layers")) {
        shows(h, "<td>%.4f</td>", cJSON_GetObjectItem(l, "pe_utilization")->valuedouble);
        nl++;
    }
    assert_int_equal(nl, 2); /* conv and linear */
    cJSON_Delete(hw);
    free(j), free(h);
    /* unwritable path: one line on stderr, non-zero exit, nothing written */
    snprintf(a, sizeof a, "simulate --trace %s --arch elearn --html %s/nodir/x.html", tp, ch_dir);
    assert_int_not_equal(ch_run(a, NULL, err, sizeof err), 0);
    assert_non_null(strstr(err, "cannot write"));
    assert_int_equal((int)(strchr(err, '\n') - err) + 1, (int)strlen(err));
    snprintf(a, sizeof a, "simulate --arch elearn --peak --html %s/nodir/x.html", ch_dir);
    assert_int_not_equal(ch_run(a, NULL, err, sizeof err), 0);
    assert_non_null(strstr(err, "cannot write"));
    /* train --html needs --arch */
    assert_int_not_equal(ch_run("train --model lenet --data fmnist --html x.html", NULL, err, sizeof err), 0);
    assert_non_null(strstr(err, "--html needs --arch"));
}

static int setup(void **state) {
    (void)state;
    return ch_setup("et_hwhtml");
}

static int teardown(void **state) {
    (void)state;
    return ch_teardown();
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_peak_html), cmocka_unit_test(test_trace_html)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
