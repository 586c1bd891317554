/* The processor model: the utilization formula on hand cases, the RPO
 * against brute force, ELearn's published peaks (predictions only, not the
 * calibration inputs), a hand-computed tile, strict config errors, the CLI. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "edgetrain.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void load(const char *name, et_hw_arch *a) {
    et_status st = et_hw_arch_load(name, NULL, 0, a);
    if (st) fprintf(stderr, "%s\n", et_last_error());
    assert_int_equal(st, ET_OK);
}

static void near(double got, double want, double rel) {
    if (fabs(got - want) > rel * fabs(want)) fail_msg("got %.9g, want %.9g (rel %g)", got, want, rel);
}

/* Utilization = Ci*Co / (ceil(Ci/IP)*ceil(Co/OP)*IP*OP), worked by hand. */
static void test_utilization_hand(void **state) {
    (void)state;
    near(et_hw_utilization(20, 10, (et_hw_pair){32, 8}), 200.0 / (1 * 2 * 256), 1e-15);   /* 0.390625 */
    near(et_hw_utilization(20, 10, (et_hw_pair){16, 16}), 200.0 / (2 * 1 * 256), 1e-15);
    near(et_hw_utilization(64, 64, (et_hw_pair){16, 16}), 1.0, 1e-15);
    near(et_hw_utilization(3, 5, (et_hw_pair){4, 64}), 15.0 / 256, 1e-15);
    near(et_hw_utilization(100, 7, (et_hw_pair){8, 32}), 700.0 / (13 * 1 * 256), 1e-15);
    near(et_hw_utilization(129, 33, (et_hw_pair){128, 32}), 129.0 * 33 / (2 * 2 * 4096), 1e-15);
    assert_true(et_hw_utilization(5, 0, (et_hw_pair){16, 16}) == 0);
    /* RPO on the first hand case: 16x16 and 32x8 tie at 512 slots; the rule
     * gives the larger IP */
    et_hw_arch a;
    load("elearn", &a);
    et_hw_pair pairs[ET_HW_MAX_LIST], best;
    int n = et_hw_pairs(&a, (et_hw_prec){ET_HW_INT, 8, 8}, pairs, ET_HW_MAX_LIST);
    assert_int_equal(n, 5); /* 4x64 8x32 16x16 32x8 64x4 */
    double u;
    assert_int_equal(et_hw_rpo(20, 10, pairs, n, &best, &u), ET_OK);
    assert_int_equal(best.ip, 32);
    assert_int_equal(best.op, 8);
    near(u, 0.390625, 1e-15);
    assert_int_equal(et_hw_rpo(0, 10, pairs, n, &best, &u), ET_ERR_INVALID);
}

/* The RPO's choice equals brute force over every IP in ip_list x OP in op_list
 * whose product is the MACs per cycle of the precision. */
static void test_rpo_brute_force(void **state) {
    (void)state;
    const char *names[] = {"elearn", "trainer"};
    uint64_t r = 12345;
    for (int an = 0; an < 2; an++) {
        et_hw_arch a;
        load(names[an], &a);
        et_hw_prec precs[] = {{ET_HW_INT, 8, 8}, {ET_HW_INT, 8, 4}, {ET_HW_INT, 4, 8}, {ET_HW_INT, 8, 2},
                              {ET_HW_INT, 4, 4}, {ET_HW_INT, 2, 4}, {ET_HW_INT, 2, 2}, {ET_HW_FP, 16, 16},
                              {ET_HW_FP, 8, 8}};
        int tested = 0;
        for (int it = 0; it < 20000; it++) {
            r = r * 6364136223846793005ULL + 1442695040888963407ULL;
            et_hw_prec p = precs[(r >> 33) % 9];
            int s = et_hw_macs_per_cycle(&a, p);
            if (!s) continue;
            r = r * 6364136223846793005ULL + 1442695040888963407ULL;
            int64_t ci = 1 + (int64_t)((r >> 20) % ((r >> 60) & 1 ? 40 : 1200));
            int64_t co = (int64_t)((r >> 40) % ((r >> 61) & 1 ? 40 : 1200));
            double bu = -1;
            et_hw_pair bp = {0, 0};
            for (int i = 0; i < a.n_ip; i++)
                for (int j = 0; j < a.n_op; j++) {
                    int ip = a.ip_list[i], op = a.op_list[j];
                    if ((int64_t)ip * op != s) continue;
                    double den = ceil((double)ci / ip) * ceil((double)co / op) * ip * op;
                    double u = co ? (double)ci * co / den : 0;
                    if (u > bu + 1e-12 || (fabs(u - bu) <= 1e-12 && ip > bp.ip)) bu = u, bp = (et_hw_pair){ip, op};
                }
            et_hw_pair pairs[ET_HW_MAX_LIST], best;
            int n = et_hw_pairs(&a, p, pairs, ET_HW_MAX_LIST);
            double u;
            assert_int_equal(et_hw_rpo(ci, co, pairs, n, &best, &u), ET_OK);
            if (best.ip != bp.ip || best.op != bp.op)
                fail_msg("%s Ci %lld Co %lld: RPO %dx%d, brute force %dx%d", names[an], (long long)ci, (long long)co,
                         best.ip, best.op, bp.ip, bp.op);
            near(u + 1, bu + 1, 1e-12);
            tested++;
        }
        assert_true(tested > 2000);
    }
}

/* ELearn's chip table. Calibration inputs (not evidence): the 256 lanes
 * (read off 0.137 TOPS INT8x8 @268 MHz) and the INT8x8 peak power of each
 * operating point (6.75 mW and 36 mW published; 11.0 mW from 10.8 TOPS/W at
 * 0.8 V). Predictions tested here: INT2x2 throughput from the 64/(a*w) rule,
 * INT2x2 efficiency at every point, and INT8x8 efficiency at 0.75 V and 1.1 V
 * (published separately from the powers). */
static void test_elearn_peaks(void **state) {
    (void)state;
    et_hw_arch a;
    load("elearn", &a);
    assert_int_equal(a.n_opp, 3);
    et_hw_prec i8 = {ET_HW_INT, 8, 8}, i2 = {ET_HW_INT, 2, 2};
    et_hw_peak pk;
    assert_int_equal(et_hw_peak_at(&a, 2, i2, &pk), ET_OK);
    near(pk.tops, 2.195, 0.05);         /* 1.1 V, 268 MHz */
    near(pk.tops_per_watt, 61.0, 0.05);
    assert_int_equal(et_hw_peak_at(&a, 2, i8, &pk), ET_OK);
    near(pk.tops_per_watt, 3.8, 0.05);
    assert_int_equal(et_hw_peak_at(&a, 1, i2, &pk), ET_OK);
    near(pk.tops_per_watt, 172.8, 0.05); /* 0.8 V, 232 MHz */
    assert_int_equal(et_hw_peak_at(&a, 0, i2, &pk), ET_OK);
    near(pk.tops_per_watt, 145.6, 0.05); /* 0.75 V, 120 MHz */
    assert_int_equal(et_hw_peak_at(&a, 0, i8, &pk), ET_OK);
    near(pk.tops_per_watt, 9.1, 0.05);
    /* the peak table lists int8, int4, int2 */
    et_hw_prec ps[8];
    assert_int_equal(et_hw_peak_precs(&a, ps, 8), 3);
    assert_int_equal(ps[0].a_bits, 8);
    assert_int_equal(ps[2].a_bits, 2);
    assert_int_equal(et_hw_peak_at(&a, 3, i8, &pk), ET_ERR_INVALID);
    assert_int_equal(et_hw_peak_at(&a, 0, (et_hw_prec){ET_HW_FP, 16, 16}, &pk), ET_ERR_UNSUPPORTED);
}

/* A small architecture with round numbers, so the tile can be worked by hand:
 * 16 INT8 lanes, per-cycle energy 1 mW / 100 MHz = 10 pJ of which the MACs
 * take 16 x 0.5 = 8 pJ, so 2 pJ per cycle remain. */
static const char small_cfg[] =
    "name = small\ntech_nm = 28\nsram_kb = 64\nlanes = 16\npp_bits = 64\nint_bits = 2, 4, 8\n"
    "ip_list = 2, 4, 8, 16\nop_list = 2, 4, 8, 16\nrpo = 1\nspeculation = 1\nspec_pj_per_mac = 0.01\n"
    "spec_macs_per_cycle = 32\nweight_skip = 0\ncalib = int8\nv_nom = 1\ne_mac_int8_pj = 0.5\n"
    "e_sram_pj_per_byte = 2\ne_dram_pj_per_byte = 10\nop_count = 2\nop1.voltage = 1\nop1.freq_mhz = 100\nop1.power_mw = 1\n"
    "op2.voltage = 0.5\nop2.freq_mhz = 50\nop2.power_mw = 0.2\n";

static void test_tile_hand(void **state) {
    (void)state;
    et_hw_arch a;
    assert_int_equal(et_hw_arch_parse(small_cfg, "small", NULL, 0, &a), ET_OK);
    /* FF, INT8x8, Ci 10, 5 of 8 outputs non-zero, 4 positions. Pairs with
     * IP*OP = 16 (IP, OP in 2..16): 2x8 (5*1*16 = 80 slots), 4x4 (3*2*16 = 96),
     * 8x2 (2*3*16 = 96):
     * RPO picks 2x8, utilization 50/80. PE cycles 5*1*4 = 20; speculation
     * 10*8*4 = 320 MACs / 32 = 10 cycles, in parallel: 20 cycles. Energy:
     * MACs 10*5*4 = 200 x 0.5 = 100, speculation 320 x 0.01 = 3.2, SRAM
     * 100 x 2 = 200, DRAM 20 x 10 = 200, cycles 20 x 2 = 40: 543.2 pJ. */
    et_hw_tile t = {ET_FF, {ET_HW_INT, 8, 8}, 10, 5, 8, 4, 1.0, 100, 20, {0, 0}, 0, 0, NULL, 0};
    t.spec = 1; /* its output mask came from the speculation unit */
    et_hw_cost c;
    assert_int_equal(et_hw_tile_cost(&a, 0, &t, &c), ET_OK);
    assert_int_equal(c.cfg.ip, 2);
    assert_int_equal(c.cfg.op, 8);
    near(c.utilization, 0.625, 1e-15);
    assert_int_equal(c.pe_cycles, 20);
    assert_int_equal(c.spec_cycles, 10);
    assert_int_equal(c.cycles, 20);
    near(c.macs, 200, 0);
    near(c.e_mac_pj, 100, 1e-12);
    near(c.e_spec_pj, 3.2, 1e-12);
    near(c.e_sram_pj, 200, 1e-12);
    near(c.e_dram_pj, 200, 1e-12);
    near(c.e_cycle_pj, 40, 1e-12);
    near(c.energy_pj, 543.2, 1e-12);
    near(c.time_s, 20 / 100e6, 1e-12);
    /* The unit's figures are for 2x2-bit MACs: recorded as 2 bits nothing
     * changes; 4-bit predictions cost (4/2)^2 = 4x: 1280 MACs-equivalent, 40
     * cycles (now longer than the PE array's 20), 12.8 pJ, and 20 more cycles
     * of 2 pJ: 543.2 - 3.2 + 12.8 + 40 = 592.8 pJ; 8-bit ones 16x. */
    t.spec_bits = 2;
    assert_int_equal(et_hw_tile_cost(&a, 0, &t, &c), ET_OK);
    near(c.e_spec_pj, 3.2, 1e-12);
    assert_int_equal(c.cycles, 20);
    t.spec_bits = 4;
    assert_int_equal(et_hw_tile_cost(&a, 0, &t, &c), ET_OK);
    assert_int_equal(c.spec_cycles, 40);
    assert_int_equal(c.cycles, 40);
    near(c.e_spec_pj, 12.8, 1e-12);
    near(c.energy_pj, 592.8, 1e-12);
    t.spec_bits = 8;
    assert_int_equal(et_hw_tile_cost(&a, 0, &t, &c), ET_OK);
    assert_int_equal(c.spec_cycles, 160);
    near(c.e_spec_pj, 51.2, 1e-12);
    t.spec_bits = 0;
    /* EP of the same tile reuses FF's word 2x8: dX has 10 outputs from 5
     * inputs: ceil(5/2)*ceil(10/8)*4 = 24 cycles, utilization 50/96, no
     * speculation cost in BP. Energy 200 x 0.5 + 24 x 2 = 148 pJ. */
    et_hw_tile ep = {ET_EP, {ET_HW_INT, 8, 8}, 5, 10, 10, 4, 1.0, 0, 0, c.cfg, 0, 0, NULL, 0};
    assert_int_equal(et_hw_tile_cost(&a, 0, &ep, &c), ET_OK);
    assert_int_equal(c.cycles, 24);
    near(c.utilization, 50.0 / 96, 1e-15);
    near(c.energy_pj, 148, 1e-12);
    /* At 0.5 V, 50 MHz: 0.2 mW / 50 MHz = 4 pJ per cycle, MACs 8 x 0.25 = 2,
     * so 2 pJ per cycle remain; an INT8x2 MAC costs 0.5 x 16/64 x 0.25.
     * INT8x2 has 16 x 64/16 = 64 MACs per cycle: pairs 4x16 (4*1*64 = 256
     * slots for Ci 16, Co 8), 8x8 (2*1*64 = 128), 16x4 (1*2*64 = 128): the
     * tie goes to 16x4; 1*2*2 = 4 cycles, utilization 1. */
    et_hw_tile i4 = {ET_EP, {ET_HW_INT, 8, 2}, 16, 8, 8, 2, 1.0, 0, 0, {0, 0}, 0, 0, NULL, 0};
    assert_int_equal(et_hw_tile_cost(&a, 1, &i4, &c), ET_OK);
    assert_int_equal(c.cfg.ip, 16);
    assert_int_equal(c.cfg.op, 4);
    assert_int_equal(c.cycles, 4);
    near(c.utilization, 1, 1e-15);
    near(c.energy_pj, 256 * 0.5 * 16 / 64 * 0.25 + 4 * 2, 1e-12);
    /* a configuration word not allowed at this precision */
    i4.cfg = (et_hw_pair){2, 8};
    assert_int_equal(et_hw_tile_cost(&a, 1, &i4, &c), ET_ERR_INVALID);
    assert_non_null(strstr(et_last_error(), "not allowed"));
    /* the baseline computes every output, with its one fixed pair */
    load("baseline", &a);
    et_hw_tile b = {ET_FF, {ET_HW_INT, 8, 8}, 20, 3, 10, 1, 1.0, 0, 0, {0, 0}, 0, 0, NULL, 0};
    assert_int_equal(et_hw_tile_cost(&a, 0, &b, &c), ET_OK);
    assert_int_equal(c.cfg.ip, 16);
    assert_int_equal(c.cycles, 2); /* ceil(20/16) * ceil(10/16) */
    near(c.macs, 200, 0);
    b.prec = (et_hw_prec){ET_HW_INT, 2, 2};
    assert_int_equal(et_hw_tile_cost(&a, 0, &b, &c), ET_OK);
    assert_int_equal(c.cfg.ip, 256);
    assert_int_equal(c.cfg.op, 16);
    /* trainer skips pruned weights: Ci 100 at density 0.25 acts as 25 */
    load("trainer", &a);
    et_hw_tile w = {ET_WG, {ET_HW_FP, 16, 16}, 100, 64, 64, 1, 0.25, 0, 0, {0, 0}, 0, 0, NULL, 0};
    assert_int_equal(et_hw_tile_cost(&a, 0, &w, &c), ET_OK);
    near(c.macs, 25 * 64, 0);
}

static void expect_error(const char *text, const char *const *sets, int nsets, et_status st, const char *part1,
                         const char *part2) {
    et_hw_arch a;
    assert_int_equal(et_hw_arch_parse(text, "t.cfg", sets, nsets, &a), st);
    const char *m = et_last_error();
    if (!strstr(m, part1) || (part2 && !strstr(m, part2))) fail_msg("message '%s' lacks '%s' / '%s'", m, part1, part2 ? part2 : "");
}

static void test_config_errors(void **state) {
    (void)state;
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", small_cfg);
    expect_error("name = x\n# fine\nlanse = 16\n", NULL, 0, ET_ERR_FORMAT, "t.cfg:3:", "unknown key 'lanse'");
    snprintf(buf, sizeof buf, "%slanes = 16\n", small_cfg);
    expect_error(buf, NULL, 0, ET_ERR_FORMAT, "t.cfg:26:", "duplicate key 'lanes'");
    char *bad = strdup(small_cfg);
    char *p = strstr(bad, "lanes = 16");
    memcpy(p, "lanes = 1x", 10);
    expect_error(bad, NULL, 0, ET_ERR_FORMAT, "t.cfg:4:", "bad value '1x' for lanes");
    free(bad);
    expect_error("name = x\ntech_nm = 28 nm\n", NULL, 0, ET_ERR_FORMAT, "t.cfg:2:", "bad value");
    expect_error("name = x\nrpo = 2\n", NULL, 0, ET_ERR_FORMAT, "t.cfg:2:", "bad value '2' for rpo");
    expect_error("name = x\nlanes\n", NULL, 0, ET_ERR_FORMAT, "t.cfg:2:", "expected 'key = value'");
    expect_error("name = x\nlanes =\n", NULL, 0, ET_ERR_FORMAT, "t.cfg:2:", "missing value");
    expect_error("op9.voltage = 1\n", NULL, 0, ET_ERR_FORMAT, "t.cfg:1:", "unknown key");
    /* truncated: the text cut at every line boundary lacks a required key */
    const char *preset = et_hw_preset_text("elearn");
    size_t len = strlen(preset);
    int cuts = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (preset[i] != '\n') continue;
        char *t = strndup(preset, i + 1);
        expect_error(t, NULL, 0, ET_ERR_FORMAT, "t.cfg", "missing required key");
        free(t);
        cuts++;
    }
    assert_true(cuts > 20);
    /* cut mid-line: "op3.power_mw = " */
    char *t = strndup(preset, len - strlen(strstr(preset, "op3.power_mw")) + 15);
    expect_error(t, NULL, 0, ET_ERR_FORMAT, "t.cfg:", "missing value for 'op3.power_mw'");
    free(t);
    /* conditional requirements and consistency */
    const char *set_rpo[] = {"rpo=0"};
    expect_error(small_cfg, set_rpo, 1, ET_ERR_FORMAT, "missing required key 'fixed_ip'", NULL);
    const char *set_p[] = {"op1.power_mw=0.5"};
    expect_error(small_cfg, set_p, 1, ET_ERR_FORMAT, "op1:", "below the MACs' own power");
    /* --set errors */
    const char *s1[] = {"lanes=abc"};
    expect_error(small_cfg, s1, 1, ET_ERR_INVALID, "--set lanes=abc", "bad value");
    const char *s2[] = {"nokey=1"};
    expect_error(small_cfg, s2, 1, ET_ERR_INVALID, "--set nokey=1", "unknown key");
    const char *s3[] = {"lanes"};
    expect_error(small_cfg, s3, 1, ET_ERR_INVALID, "expected key=value", NULL);
    /* --set overrides */
    et_hw_arch a;
    const char *s4[] = {"op2.power_mw = 22", "name=elearn2"};
    assert_int_equal(et_hw_arch_parse(et_hw_preset_text("elearn"), "elearn", s4, 2, &a), ET_OK);
    assert_string_equal(a.name, "elearn2");
    et_hw_peak pk;
    assert_int_equal(et_hw_peak_at(&a, 1, (et_hw_prec){ET_HW_INT, 8, 8}, &pk), ET_OK);
    near(pk.tops_per_watt, 0.118784 / 0.022, 1e-9);
    assert_int_equal(et_hw_arch_load("/nonexistent/x.cfg", NULL, 0, &a), ET_ERR_IO);
    et_hw_prec pr;
    assert_int_equal(et_hw_prec_parse("int8x4", &pr), ET_OK);
    assert_int_equal(pr.w_bits, 4);
    assert_int_equal(et_hw_prec_parse("int", &pr), ET_ERR_INVALID);
    assert_int_equal(et_hw_prec_parse("int8x", &pr), ET_ERR_INVALID);
}

/* configs/hw/NAME.cfg and the built-in presets are the same text. */
static void test_presets_match_files(void **state) {
    (void)state;
    const char *names[] = {"elearn", "baseline", "trainer"};
    for (int i = 0; i < 3; i++) {
        char path[256];
        snprintf(path, sizeof path, "configs/hw/%s.cfg", names[i]);
        FILE *f = fopen(path, "rb");
        if (!f) fail_msg("cannot open %s (run from the repository root)", path);
        static char buf[1 << 16];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        assert_string_equal(buf, et_hw_preset_text(names[i]));
        et_hw_arch a, b;
        load(names[i], &a);
        load(path, &b);
        assert_memory_equal(&a, &b, sizeof a);
    }
}

static void test_cli_peak_json(void **state) {
    (void)state;
    const char *cli = getenv("ET_CLI");
    if (!cli) cli = "build/edgetrain";
    char dir[] = "/tmp/et_hw_XXXXXX", cmd[1024], out[256];
    assert_non_null(mkdtemp(dir));
    snprintf(out, sizeof out, "%s/peak.json", dir);
    snprintf(cmd, sizeof cmd, "%s simulate --arch elearn --peak --json %s >%s/stdout.txt 2>&1", cli, out, dir);
    int st = system(cmd);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    FILE *f = fopen(out, "rb");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *root = cJSON_Parse(buf);
    assert_non_null(root);
    cJSON *peak = cJSON_GetObjectItem(root, "peak");
    assert_true(cJSON_IsArray(peak));
    assert_int_equal(cJSON_GetArraySize(peak), 9);
    int found = 0;
    cJSON *r;
    cJSON_ArrayForEach(r, peak) {
        const char *p = cJSON_GetStringValue(cJSON_GetObjectItem(r, "precision"));
        const char *v = cJSON_GetStringValue(cJSON_GetObjectItem(r, "voltage"));
        assert_non_null(p);
        assert_non_null(v);
        assert_true(cJSON_IsNumber(cJSON_GetObjectItem(r, "frequency_mhz")));
        assert_true(cJSON_IsNumber(cJSON_GetObjectItem(r, "tops")));
        assert_true(cJSON_IsNumber(cJSON_GetObjectItem(r, "tops_per_watt")));
        if (!strcmp(p, "int2") && !strcmp(v, "0.8V")) {
            found = 1;
            near(cJSON_GetObjectItem(r, "frequency_mhz")->valuedouble, 232, 0);
            near(cJSON_GetObjectItem(r, "tops_per_watt")->valuedouble, 172.8, 0.05);
        }
    }
    assert_true(found);
    cJSON_Delete(root);
    /* bad input: one line on stderr, non-zero exit */
    const char *bad[] = {"simulate --arch nosuch --peak", "simulate --arch elearn --peak --set lanes=0",
                         "simulate --arch elearn --trace x", "simulate --peak", "simulate --arch elearn"};
    for (int i = 0; i < 5; i++) {
        snprintf(cmd, sizeof cmd, "%s %s >/dev/null 2>%s/err.txt", cli, bad[i], dir);
        st = system(cmd);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) != 0);
        snprintf(out, sizeof out, "%s/err.txt", dir);
        f = fopen(out, "r");
        assert_non_null(f);
        int lines = 0, ch;
        while ((ch = fgetc(f)) != EOF) lines += ch == '\n';
        fclose(f);
        if (lines != 1) fail_msg("'%s': %d lines on stderr", bad[i], lines);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utilization_hand), cmocka_unit_test(test_rpo_brute_force),
        cmocka_unit_test(test_elearn_peaks),     cmocka_unit_test(test_tile_hand),
        cmocka_unit_test(test_config_errors),    cmocka_unit_test(test_presets_match_files),
        cmocka_unit_test(test_cli_peak_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
