/* The processor model on the structure a run executed: output masks (Co per
 * position), zero operands, compressed off-chip bytes, the speculation unit's
 * cost. Every expected figure is computed by hand (or by brute force) here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "edgetrain.h"
#include "nn/model.h"
#include "util/layer_harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void close_rel(double got, double want) {
    if (!(fabs(got - want) <= 1e-9 * fabs(want) + 1e-12)) {
        print_error("got %.12g want %.12g\n", got, want);
        fail();
    }
}

/* A toy processor with numbers easy to follow: 8 INT8 MACs per cycle (pairs
 * 1x8, 2x4, 4x2, 8x1), 0.5 pJ per MAC, 2 pJ/byte SRAM, 10 pJ/byte DRAM, 6 pJ
 * per cycle at 100 MHz (so 2 pJ per cycle besides the MACs), speculation 0.01
 * pJ per predicted MAC at 32 per cycle, bitmask compression. */
static const char toy[] = "name = toy\ntech_nm = 28\nsram_kb = 1\nlanes = 8\npp_bits = 64\nint_bits = 8\n"
                          "ip_list = 1, 2, 4, 8\nop_list = 1, 2, 4, 8\nrpo = 1\nspeculation = 1\n"
                          "spec_pj_per_mac = 0.01\nspec_macs_per_cycle = 32\nweight_skip = 0\n"
                          "compress = bitmask\ncalib = int8\nv_nom = 1\ne_mac_int8_pj = 0.5\n"
                          "e_sram_pj_per_byte = 2\ne_dram_pj_per_byte = 10\nop_count = 1\n"
                          "op1.voltage = 1\nop1.freq_mhz = 100\nop1.power_mw = 0.6\n";
/* Its baseline: one fixed 2x4 pair, no speculation, no compression. */
static const char toy_base[] = "name = toyb\ntech_nm = 28\nsram_kb = 1\nlanes = 8\npp_bits = 64\nint_bits = 8\n"
                               "ip_list = 2\nop_list = 4\nrpo = 0\nfixed_ip = 2\nfixed_op = 4\nspeculation = 0\n"
                               "weight_skip = 0\ncalib = int8\nv_nom = 1\ne_mac_int8_pj = 0.5\n"
                               "e_sram_pj_per_byte = 2\ne_dram_pj_per_byte = 10\nop_count = 1\n"
                               "op1.voltage = 1\nop1.freq_mhz = 100\nop1.power_mw = 0.6\n";

static char tpath[64];
static et_hw_op got_op;
static int32_t got_co[64];
static int got_n;

static et_status keep(void *ctx, const et_hw_op *op) {
    (void)ctx;
    got_op = *op;
    if (op->co_pos) memcpy(got_co, op->co_pos, sizeof(int32_t) * (size_t)(op->spatial < 64 ? op->spatial : 64));
    got_n++;
    return ET_OK;
}

/* One linear FF of 3 positions x 4 inputs -> 3 outputs, mask = where the
 * product is non-zero:
 *   X = [1 0 0 0; 0 2 0 0; 1 1 0 0], W = [1 0 0 0; 0 1 0 0; 0 0 1 0]
 *   C = X W^T = [1 0 0; 0 2 0; 1 1 0]: Co(p) = 1, 1, 2. */
static void test_hand_case(void **state) {
    (void)state;
    et_model *m;
    assert_int_equal(et_model_parse("input 4\nlinear 3 bias=0\n", "t", &m), ET_OK);
    assert_int_equal(et_model_plan(m, 3, NULL), ET_OK);
    float *w = m->nodes[0].layer.params[0].use;
    const float W[12] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0};
    memcpy(w, W, sizeof W);
    const float X[12] = {1, 0, 0, 0, 0, 2, 0, 0, 1, 1, 0, 0};
    float C[9];
    const uint8_t mask[9] = {1, 0, 0, 0, 1, 0, 1, 1, 0};
    et_hw_arch a, b;
    assert_int_equal(et_hw_arch_parse(toy, "toy", NULL, 0, &a), ET_OK);
    assert_int_equal(et_hw_arch_parse(toy_base, "toyb", NULL, 0, &b), ET_OK);
    et_hw_run *ra, *rb;
    assert_int_equal(et_hw_run_create(&a, 0, 1, &ra), ET_OK);
    assert_int_equal(et_hw_run_create(&b, 0, 1, &rb), ET_OK);
    const char *names[1] = {"0"};
    et_trace_writer *tw;
    assert_int_equal(et_trace_create(tpath, 1, names, &tw), ET_OK);
    assert_int_equal(et_model_attach_hw(m, ra, rb, tw), ET_OK);
    et_matmul mm = {ET_FF, 0, 0, 1, 3, 3, 4, X, 4, w, 4, C, 3, 0.0f, 0, mask, 3, NULL, 0, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL};
    assert_int_equal(et_matmul_run(et_model_engine(m), &mm), ET_OK);
    et_model_attach_hw(m, NULL, NULL, NULL); /* sends the product's record */
    assert_int_equal(et_trace_close(tw, 1), ET_OK);
    const float Cw[9] = {1, 0, 0, 0, 2, 0, 1, 1, 0};
    assert_memory_equal(C, Cw, sizeof C);

    /* the record: Co(p) = 1, 1, 2; DRAM bytes per kind,
     * fp32: in 12 values = 48 B, nnz 4 -> bitmask 12 + 4*32 = 140 bits -> 48*140/384;
     * RLE (4-bit runs, row by row): rows [1000] [0200] [1100] = 2 + 2 + 3 entries
     * of 36 bits = 252 bits -> 48*252/384; weights 48 B, nnz 3 -> 108 bits;
     * out 36 B, nnz 4 -> 9 + 128 = 137 bits of 288. */
    int nl;
    got_n = 0;
    assert_int_equal(et_trace_read(tpath, &nl, NULL, 0, keep, NULL), ET_OK);
    assert_int_equal(got_n, 1);
    assert_non_null(got_op.co_pos);
    assert_int_equal(got_op.spec, 0); /* a given mask, not predicted by et_matmul.spec */
    assert_int_equal(got_op.co, 2);
    assert_int_equal(got_op.co_dense, 3);
    assert_int_equal(got_co[0], 1);
    assert_int_equal(got_co[1], 1);
    assert_int_equal(got_co[2], 2);
    assert_int_equal(got_op.dram[ET_HW_T_IN][ET_HW_C_DENSE], 48);
    assert_int_equal(got_op.dram[ET_HW_T_IN][ET_HW_C_BITMASK], 48 * 140 / 384);
    assert_int_equal(got_op.dram[ET_HW_T_IN][ET_HW_C_RLE], 48 * 252 / 384);
    assert_int_equal(got_op.dram[ET_HW_T_W][ET_HW_C_BITMASK], 48 * 108 / 384);
    assert_int_equal(got_op.dram[ET_HW_T_OUT][ET_HW_C_BITMASK], 36 * 137 / 288);
    close_rel(got_op.w_density, 3.0 / 12);

    /* toy: Ci 4; slots per pair = ceil(4/IP)*IP*OP*sum_p ceil(Co(p)/OP): 1x8 96,
     * 2x4 48, 4x2 24, 8x1 32 -> 4x2; PE cycles ceil(4/4)*3 = 3; MACs 4*4 = 16;
     * the mask was given (no prediction): no speculation cost, 3 cycles.
     * SRAM: operands 48 + 48, result 36 * (4 of 9 computed) = 16 -> 112 B.
     * DRAM (bitmask): 17 + 13 + 17 = 47 B.
     * Energy: 16*0.5 + 112*2 + 47*10 + 3*2 = 708 pJ. */
    et_hw_totals t;
    et_hw_run_totals(ra, -1, -1, &t);
    close_rel(t.cycles, 3);
    close_rel(t.macs, 16);
    close_rel(t.utilization, 16.0 / 24);
    close_rel(t.sram_bytes, 112);
    close_rel(t.dram_bytes, 47);
    close_rel(t.e_spec_j, 0);
    close_rel(t.energy_j, 708e-12);
    /* baseline 2x4, dense: ceil(4/2)*ceil(3/4)*3 = 6 cycles, 36 MACs, SRAM 132,
     * DRAM 132: 18 + 264 + 1320 + 12 = 1614 pJ */
    et_hw_totals u;
    et_hw_run_totals(rb, -1, -1, &u);
    close_rel(u.cycles, 6);
    close_rel(u.macs, 36);
    close_rel(u.utilization, 0.75);
    close_rel(u.sram_bytes, 132);
    close_rel(u.dram_bytes, 132);
    close_rel(u.e_spec_j, 0);
    close_rel(u.energy_j, 1614e-12);
    /* the same record replayed from the file costs the same */
    et_hw_run *rr;
    assert_int_equal(et_hw_run_create(&a, 0, 1, &rr), ET_OK);
    assert_int_equal(et_trace_read(tpath, &nl, NULL, 0, (et_trace_fn)et_hw_run_op, rr), ET_OK);
    et_hw_totals r;
    et_hw_run_totals(rr, -1, -1, &r);
    assert_memory_equal(&r, &t, sizeof r);
    /* RLE instead of bitmask: 31 + 48*180/384 (weights: 3 entries + runs...) -- only
     * the codec changes: DRAM = sum of min(dense, rle) per kind */
    a.compress = ET_HW_COMPRESS_RLE;
    et_hw_run *rl;
    assert_int_equal(et_hw_run_create(&a, 0, 1, &rl), ET_OK);
    assert_int_equal(et_trace_read(tpath, &nl, NULL, 0, (et_trace_fn)et_hw_run_op, rl), ET_OK);
    et_hw_run_totals(rl, -1, -1, &r);
    int64_t want = 0;
    for (int k = 0; k < ET_HW_NT; k++) {
        int64_t d = got_op.dram[k][ET_HW_C_DENSE], x = got_op.dram[k][ET_HW_C_RLE];
        want += x < d ? x : d;
    }
    close_rel(r.dram_bytes, (double)want);
    et_hw_run_free(ra), et_hw_run_free(rb), et_hw_run_free(rr), et_hw_run_free(rl);
    et_model_free(m);
}

/* The structured RPO equals brute force over every pair: the sum over
 * positions of ceil(Ci/IP)*ceil(Co(p)/OP)*IP*OP, fewest slots, ties to the
 * larger IP then OP. Pairs come from elearn (powers of two) and from random
 * lists with any IP and OP (12, 24, 7, ...). */
static void test_rpo_structured_brute(void **state) {
    (void)state;
    et_hw_arch a;
    assert_int_equal(et_hw_arch_load("elearn", NULL, 0, &a), ET_OK);
    uint64_t x = 12345;
#define NEXT() (x = x * 6364136223846793005ULL + 1442695040888963407ULL, x >> 33)
    for (int trial = 0; trial < 4000; trial++) {
        et_hw_pair pairs[ET_HW_MAX_LIST];
        int n;
        if (trial % 2) {
            int bits = (int[]){2, 4, 8}[NEXT() % 3];
            n = et_hw_pairs(&a, (et_hw_prec){ET_HW_INT, bits, bits}, pairs, ET_HW_MAX_LIST);
        } else { /* any IP x OP, e.g. an array of 24 or 48 lanes */
            n = 1 + (int)(NEXT() % ET_HW_MAX_LIST);
            for (int j = 0; j < n; j++) pairs[j] = (et_hw_pair){1 + (int)(NEXT() % 40), 1 + (int)(NEXT() % 40)};
        }
        int64_t ci = 1 + (int64_t)(NEXT() % 600), cod = 1 + (int64_t)(NEXT() % 300), np = 1 + (int64_t)(NEXT() % 64);
        int32_t co[64];
        for (int i = 0; i < np; i++) co[i] = (int32_t)(NEXT() % (uint64_t)(cod + 1));
        int best = -1;
        double bs = 0, macs = 0;
        for (int i = 0; i < np; i++) macs += (double)ci * co[i];
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int i = 0; i < np; i++)
                s += (double)((ci + pairs[j].ip - 1) / pairs[j].ip) * (double)((co[i] + pairs[j].op - 1) / pairs[j].op) *
                     pairs[j].ip * pairs[j].op;
            if (best < 0 || s < bs ||
                (s == bs && (pairs[j].ip > pairs[best].ip || (pairs[j].ip == pairs[best].ip && pairs[j].op > pairs[best].op))))
                best = j, bs = s;
        }
        et_hw_pair got;
        double util;
        assert_int_equal(et_hw_rpo_structured(ci, co, np, pairs, n, &got, &util), ET_OK);
        assert_int_equal(got.ip, pairs[best].ip);
        assert_int_equal(got.op, pairs[best].op);
        close_rel(util, bs > 0 ? macs / bs : 0);
    }
#undef NEXT
}

/* A 24-MAC array whose OPs are not powers of two (pairs 2x12, 4x6, 8x3) and
 * tiles of 3 positions. One linear FF, Ci = 5, 13 outputs, 5 positions, with a
 * given mask computing Co(p) = 13, 0, 7, 12, 12 outputs. By hand, slots =
 * ceil(5/IP)*IP*OP*sum_p ceil(Co(p)/OP) per tile:
 *   tile {13, 0, 7}: 2x12 3*24*(2+0+1) = 216, 4x6 2*24*(3+0+2) = 240,
 *                    8x3 1*24*(5+0+3) = 192 -> 8x3, 8 PE cycles, 100 MACs;
 *   tile {12, 12}:   2x12 3*24*2 = 144, 4x6 2*24*4 = 192, 8x3 1*24*8 = 192
 *                    -> 2x12, 3*2 = 6 PE cycles, 120 MACs.
 * Total 14 cycles, 220 MACs, utilization 220 / (192 + 144). Energy (no SRAM
 * or DRAM cost): 220 x 0.5 pJ + 14 cycles x (14 - 24 x 0.5) pJ = 138 pJ.
 * With tile_positions = 5 (one tile): 2x12 3*24*5 = 360, 4x6 2*24*9 = 432,
 * 8x3 1*24*16 = 384 -> 2x12, 15 cycles, utilization 220/360.
 * The baseline-like fixed 4x6 without speculation: ceil(5/4)*ceil(13/6) = 6
 * cycles per position, 30 cycles, 325 MACs. */
static void test_non_pow2_tiles(void **state) {
    (void)state;
    static const char arch24[] = "name = a24\ntech_nm = 28\nsram_kb = 1\nlanes = 24\npp_bits = 64\nint_bits = 8\n"
                                 "ip_list = 2, 4, 8\nop_list = 12, 6, 3\nrpo = 1\nspeculation = 1\n"
                                 "spec_pj_per_mac = 0.01\nspec_macs_per_cycle = 32\nweight_skip = 0\n"
                                 "tile_positions = 3\ncalib = int8\nv_nom = 1\ne_mac_int8_pj = 0.5\n"
                                 "e_sram_pj_per_byte = 0\ne_dram_pj_per_byte = 0\nop_count = 1\n"
                                 "op1.voltage = 1\nop1.freq_mhz = 100\nop1.power_mw = 1.4\n";
    et_model *m;
    assert_int_equal(et_model_parse("input 5\nlinear 13 bias=0\n", "t", &m), ET_OK);
    assert_int_equal(et_model_plan(m, 5, NULL), ET_OK);
    lh_fill(m->nodes[0].layer.params[0].use, 65, 3, -1, 1);
    static float X[25], C[65];
    lh_fill(X, 25, 4, -1, 1);
    const int cop[5] = {13, 0, 7, 12, 12};
    uint8_t mask[65];
    for (int p = 0; p < 5; p++)
        for (int j = 0; j < 13; j++) mask[p * 13 + j] = (uint8_t)((j * 5 + p) % 13 < cop[p]); /* Co(p) ones, scattered */
    et_hw_arch a, a5, f;
    assert_int_equal(et_hw_arch_parse(arch24, "a24", NULL, 0, &a), ET_OK);
    const char *set5[] = {"tile_positions=5"}, *setf[] = {"rpo=0", "fixed_ip=4", "fixed_op=6", "speculation=0"};
    assert_int_equal(et_hw_arch_parse(arch24, "a24", set5, 1, &a5), ET_OK);
    assert_int_equal(et_hw_arch_parse(arch24, "a24", setf, 4, &f), ET_OK);
    et_hw_run *ra, *r5, *rf, *rr;
    assert_int_equal(et_hw_run_create(&a, 0, 1, &ra), ET_OK);
    assert_int_equal(et_hw_run_create(&a5, 0, 1, &r5), ET_OK);
    const char *names[1] = {"0"};
    et_trace_writer *tw;
    assert_int_equal(et_trace_create(tpath, 1, names, &tw), ET_OK);
    /* the link's buffer is sized from the plan (5 positions: batch 5, 5 inputs)
     * and joins the memory plan */
    const et_memory_plan m0 = et_model_memory(m);
    assert_int_equal(m0.hw, 0);
    assert_int_equal(et_model_attach_hw(m, ra, r5, tw), ET_OK);
    const et_memory_plan m1 = et_model_memory(m);
    assert_true(m1.hw >= 5 * sizeof(int32_t));
    assert_int_equal(m1.total - m0.total, m1.hw);
    et_matmul mm = {ET_FF, 0, 0, 1, 5, 13, 5, X, 5, m->nodes[0].layer.params[0].use, 5, C, 13, 0.0f, 0, mask, 13,
                    NULL, 0, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL};
    assert_int_equal(et_matmul_run(et_model_engine(m), &mm), ET_OK);
    /* a product with more positions than the plan allows is an error, not a
     * buffer that grows while training */
    static float X6[30], C6[78];
    static uint8_t mask6[78];
    memset(mask6, 1, sizeof mask6);
    et_matmul big = {ET_FF, 0, 0, 1, 6, 13, 5, X6, 5, m->nodes[0].layer.params[0].use, 5, C6, 13, 0.0f, 0, mask6, 13,
                     NULL, 0, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL};
    et_hw_totals t;
    et_hw_run_totals(ra, -1, -1, &t);
    assert_int_equal(et_matmul_run(et_model_engine(m), &big), ET_ERR_INVALID);
    assert_non_null(strstr(et_last_error(), "planned"));
    assert_int_equal(et_model_attach_hw(m, NULL, NULL, NULL), ET_OK);
    assert_int_equal(et_trace_close(tw, 1), ET_OK);
    assert_int_equal(et_model_memory(m).hw, m1.hw); /* re-attaching does not grow it */
    et_hw_run_totals(ra, -1, -1, &t);
    close_rel(t.tiles, 2);
    close_rel(t.cycles, 14);
    close_rel(t.macs, 220);
    close_rel(t.utilization, 220.0 / 336);
    close_rel(t.energy_j, 138e-12);
    et_hw_run_totals(r5, -1, -1, &t);
    close_rel(t.tiles, 1);
    close_rel(t.cycles, 15);
    close_rel(t.utilization, 220.0 / 360);
    /* the trace holds Co(p) as recorded; replays re-tile it for each architecture */
    int nl;
    got_n = 0;
    assert_int_equal(et_trace_read(tpath, &nl, NULL, 0, keep, NULL), ET_OK);
    assert_int_equal(got_n, 1);
    assert_int_equal(got_op.co, 13);
    for (int p = 0; p < 5; p++) assert_int_equal(got_co[p], cop[p]);
    assert_int_equal(et_hw_run_create(&a, 0, 1, &rr), ET_OK);
    assert_int_equal(et_trace_read(tpath, &nl, NULL, 0, (et_trace_fn)et_hw_run_op, rr), ET_OK);
    et_hw_totals u;
    et_hw_run_totals(ra, -1, -1, &t), et_hw_run_totals(rr, -1, -1, &u);
    assert_memory_equal(&t, &u, sizeof t);
    assert_int_equal(et_hw_run_create(&f, 0, 1, &rf), ET_OK);
    assert_int_equal(et_trace_read(tpath, &nl, NULL, 0, (et_trace_fn)et_hw_run_op, rf), ET_OK);
    et_hw_run_totals(rf, -1, -1, &u);
    close_rel(u.cycles, 30);
    close_rel(u.macs, 325);
    et_hw_run_free(ra), et_hw_run_free(r5), et_hw_run_free(rf), et_hw_run_free(rr);
    et_model_free(m);
}

/* A run with masks and zero operands in every stage, fed live and through a
 * trace file: the replay equals the live run field for field, on elearn
 * (structure used) and on the baseline (structure ignored). */
static void test_live_equals_replay_sparse(void **state) {
    (void)state;
    et_model *m;
    assert_int_equal(et_model_parse("input 2 6 6\nconv 4 k=3 p=1\nrelu\nflatten\nlinear 5\n", "t", &m), ET_OK);
    assert_int_equal(et_model_set_precision(m, "w=int4,a=int8,e=int8,g=int16"), ET_OK);
    assert_int_equal(et_model_plan(m, 3, NULL), ET_OK);
    assert_int_equal(et_model_init_he(m, 2), ET_OK);
    int nn = et_model_num_nodes(m);
    et_hw_arch a, b;
    assert_int_equal(et_hw_arch_load("elearn", NULL, 0, &a), ET_OK);
    assert_int_equal(et_hw_arch_load("baseline", NULL, 0, &b), ET_OK);
    et_hw_run *la, *lb, *pa, *pb;
    assert_int_equal(et_hw_run_create(&a, 1, nn, &la), ET_OK);
    assert_int_equal(et_hw_run_create(&b, 1, nn, &lb), ET_OK);
    const char *names[8] = {0};
    for (int i = 0; i < nn; i++) et_model_node_info(m, i, &names[i], NULL, NULL);
    et_trace_writer *tw;
    assert_int_equal(et_trace_create(tpath, nn, names, &tw), ET_OK);
    assert_int_equal(et_model_attach_hw(m, la, lb, tw), ET_OK);
    /* conv: FF Y[4, 3*36] = W[4,18] col[18, 108]; EP dcol[18,108] = W^T dY; WG dW[4,18] = dY col^T.
     * linear (node 3, 144 -> 5): FF [3,5] = X[3,144] W^T; EP [3,144] = dY W; WG [5,144] = dY^T X */
    static float A[20000], B[20000], C[20000];
    static uint8_t mask[20000];
    lh_fill(A, 20000, 1, -1, 1), lh_fill(B, 20000, 2, -1, 1);
    for (int i = 0; i < 20000; i += 3) B[i] = 0; /* zero operands */
    for (int i = 0; i < 20000; i++) mask[i] = (uint8_t)((i * 7919u) % 5 < 2);
    const float *wc = m->nodes[0].layer.params[0].use, *wl = m->nodes[3].layer.params[0].use;
    float *gc = m->nodes[0].layer.params[0].grad, *gl = m->nodes[3].layer.params[0].grad;
    for (int step = 0; step < 2; step++) {
        et_matmul ops[] = {
            {ET_FF, 0, 0, 0, 4, 108, 18, wc, 18, B, 108, C, 108, 0.0f, 0, mask, 108, NULL, 0, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL},
            {ET_FF, 3, 0, 1, 3, 5, 144, A, 144, wl, 144, C, 5, 0.0f, 0, mask + 7, 5, NULL, 0, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL},
            {ET_WG, 3, 1, 0, 5, 144, 3, B, 5, A, 144, gl, 144, 0.0f, 0, NULL, 0, NULL, 0, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL},
            {ET_EP, 3, 0, 0, 3, 144, 5, B, 5, wl, 144, C, 144, 0.0f, 0, mask + 3, 144, NULL, 0, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL},
            {ET_WG, 0, 0, 1, 4, 18, 108, B, 108, A, 108, gc, 18, 0.0f, 0, NULL, 0, NULL, 0, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL},
            {ET_EP, 0, 1, 0, 18, 108, 4, wc, 18, B, 108, C, 108, 0.0f, 1, mask + 11, 108, NULL, 0, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL},
        };
        for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
            assert_int_equal(et_matmul_run(et_model_engine(m), &ops[i]), ET_OK);
    }
    et_model_attach_hw(m, NULL, NULL, NULL);
    assert_int_equal(et_trace_close(tw, 1), ET_OK);
    assert_int_equal(et_hw_run_create(&a, 1, nn, &pa), ET_OK);
    assert_int_equal(et_hw_run_create(&b, 1, nn, &pb), ET_OK);
    int nl;
    assert_int_equal(et_trace_read(tpath, &nl, NULL, 0, (et_trace_fn)et_hw_run_op, pa), ET_OK);
    assert_int_equal(et_trace_read(tpath, &nl, NULL, 0, (et_trace_fn)et_hw_run_op, pb), ET_OK);
    for (int l = -1; l < nn; l++)
        for (int s = -1; s < ET_NSTAGES; s++) {
            et_hw_totals x, y;
            et_hw_run_totals(la, l, s, &x), et_hw_run_totals(pa, l, s, &y);
            assert_memory_equal(&x, &y, sizeof x);
            et_hw_run_totals(lb, l, s, &x), et_hw_run_totals(pb, l, s, &y);
            assert_memory_equal(&x, &y, sizeof x);
        }
    /* the masks keep 2 of 5 outputs: elearn executes fewer MACs than the
     * dense baseline; the masks were given, not predicted: no speculation cost */
    et_hw_totals ta, tb, ff, ep, ffb, wg, wgb;
    et_hw_run_totals(la, -1, -1, &ta), et_hw_run_totals(lb, -1, -1, &tb);
    et_hw_run_totals(la, -1, ET_FF, &ff), et_hw_run_totals(la, -1, ET_EP, &ep);
    et_hw_run_totals(lb, -1, ET_FF, &ffb);
    et_hw_run_totals(la, -1, ET_WG, &wg), et_hw_run_totals(lb, -1, ET_WG, &wgb);
    assert_true(ff.macs < 0.5 * ffb.macs && ff.macs > 0.3 * ffb.macs);
    assert_true(wg.macs == wgb.macs); /* no mask in WG: dense on both */
    assert_true(ff.e_spec_j == 0 && ep.e_spec_j == 0 && tb.e_spec_j == 0);
    assert_true(ta.dram_bytes < tb.dram_bytes);
    et_hw_run_free(la), et_hw_run_free(lb), et_hw_run_free(pa), et_hw_run_free(pb);
    et_model_free(m);
}

/* Every speculated FF record carries the prediction's bit width (4, the
 * default of --spec-bits); others carry 0. */
static et_status check_spec_bits(void *ctx, const et_hw_op *op) {
    if (op->spec ? op->spec_bits != 4 : op->spec_bits != 0) return et_set_error(ET_ERR_INVALID, "spec_bits %d", op->spec_bits);
    *(int *)ctx += op->spec;
    return ET_OK;
}

/* A training run with speculation (--sparsity speculate): the masks the path
 * predicts reach the model; live = replay; the unit is paid in FF only. */
static void test_speculating_run(void **state) {
    (void)state;
    et_model *m;
    assert_int_equal(et_model_parse("input 1 8 8\nconv 8 k=3 p=1\nrelu\nconv 8 k=3 p=1\nrelu\nflatten\nlinear 10\n",
                                    "t", &m), ET_OK);
    assert_int_equal(et_model_set_precision(m, "w=int8,a=int8,e=int8,g=int16"), ET_OK);
    et_sparsity sp;
    assert_int_equal(et_sparsity_parse("speculate", NULL, &sp), ET_OK);
    assert_int_equal(et_model_set_sparsity(m, &sp), ET_OK);
    assert_int_equal(et_model_plan(m, 4, NULL), ET_OK);
    assert_int_equal(et_model_init_he(m, 3), ET_OK);
    int nn = et_model_num_nodes(m);
    et_hw_arch a, b;
    assert_int_equal(et_hw_arch_load("elearn", NULL, 0, &a), ET_OK);
    assert_int_equal(et_hw_arch_load("baseline", NULL, 0, &b), ET_OK);
    et_hw_run *la, *lb, *pa;
    assert_int_equal(et_hw_run_create(&a, 0, nn, &la), ET_OK);
    assert_int_equal(et_hw_run_create(&b, 0, nn, &lb), ET_OK);
    const char *names[16] = {0};
    for (int i = 0; i < nn; i++) et_model_node_info(m, i, &names[i], NULL, NULL);
    et_trace_writer *tw;
    assert_int_equal(et_trace_create(tpath, nn, names, &tw), ET_OK);
    assert_int_equal(et_model_attach_hw(m, la, lb, tw), ET_OK);
    uint8_t labels[4] = {1, 2, 3, 4};
    float loss;
    for (int s = 0; s < 3; s++) {
        lh_fill(et_model_input(m), 256, 20 + (uint64_t)s, -1, 1);
        assert_int_equal(et_model_train_step(m, labels, 4, 0.05f, &loss), ET_OK);
    }
    et_model_attach_hw(m, NULL, NULL, NULL);
    assert_int_equal(et_trace_close(tw, 1), ET_OK);
    assert_int_equal(et_hw_run_create(&a, 0, nn, &pa), ET_OK);
    int nl;
    assert_int_equal(et_trace_read(tpath, &nl, NULL, 0, (et_trace_fn)et_hw_run_op, pa), ET_OK);
    int nspec = 0;
    assert_int_equal(et_trace_read(tpath, &nl, NULL, 0, check_spec_bits, &nspec), ET_OK);
    assert_true(nspec > 0);
    for (int l = -1; l < nn; l++)
        for (int s = -1; s < ET_NSTAGES; s++) {
            et_hw_totals x, y;
            et_hw_run_totals(la, l, s, &x), et_hw_run_totals(pa, l, s, &y);
            assert_memory_equal(&x, &y, sizeof x);
        }
    et_hw_totals ff, ep, wg, ta, tb;
    et_hw_run_totals(la, -1, ET_FF, &ff), et_hw_run_totals(la, -1, ET_EP, &ep), et_hw_run_totals(la, -1, ET_WG, &wg);
    et_hw_run_totals(la, -1, -1, &ta), et_hw_run_totals(lb, -1, -1, &tb);
    assert_true(ff.e_spec_j > 0 && ep.e_spec_j == 0 && wg.e_spec_j == 0);
    assert_true(ta.macs < tb.macs); /* some outputs were predicted zero */
    et_hw_run_free(la), et_hw_run_free(lb), et_hw_run_free(pa);
    et_model_free(m);
    remove(tpath);
}

static et_status count_op(void *ctx, const et_hw_op *op) {
    (void)op;
    ++*(int *)ctx;
    return ET_OK;
}

static et_hw_op conv2_ops[ET_NSTAGES];
static et_status keep_conv2(void *ctx, const et_hw_op *op) {
    (void)ctx;
    if (op->layer == 1) conv2_ops[op->stage] = *op;
    return ET_OK;
}

/* Off-chip bytes of a 3x3 conv are sized on the tensors as the model stores
 * them, not on the im2col / dcol matrices. conv1 (1x1, weights {1, 0}) makes
 * conv2's input x2 = [x; 0] (2 channels of 3x3, x > 0); the linear layer
 * reads only the centre of each conv2 output channel, so conv2's dY is
 * non-zero only at the centre and its dcol only in that column, while dX =
 * col2im(dcol) is non-zero at all 18 inputs. fp32, by hand (bits -> bytes of
 * the 72-byte tensor):
 *   x2: bitmask 18 + 9*32 = 306 -> 38; RLE rows [9 values] [9 zeros]:
 *       9 + 1 entries of 36 bits = 360 -> 45 (its im2col, with padding, would
 *       give a bitmask of 162 + 49*32 bits -> 24);
 *   dX: bitmask 18 + 18*32 = 594 -> 74; RLE 18 entries = 648 -> 81 (dcol:
 *       162 + 18*32 bits -> 10). */
static void test_stored_tensor_bytes(void **state) {
    (void)state;
    et_model *m;
    assert_int_equal(et_model_parse("input 1 3 3\nconv 2 k=1 bias=0\nconv 2 k=3 p=1 bias=0\nflatten\nlinear 2 bias=0\n",
                                    "t", &m), ET_OK);
    et_optim opt = {0};
    assert_int_equal(et_model_plan(m, 1, &opt), ET_OK);
    assert_int_equal(et_model_init_he(m, 5), ET_OK);
    float *w1 = m->nodes[0].layer.params[0].use, *wl = m->nodes[3].layer.params[0].use;
    w1[0] = 1, w1[1] = 0;
    for (int i = 0; i < 36; i++) wl[i] = (i % 18 == 4 || i % 18 == 13) ? 0.5f + (float)i / 36 : 0;
    et_hw_arch a;
    assert_int_equal(et_hw_arch_load("elearn", NULL, 0, &a), ET_OK);
    et_hw_run *ra;
    assert_int_equal(et_hw_run_create(&a, 0, et_model_num_nodes(m), &ra), ET_OK);
    const char *names[4] = {"0", "1", "2", "3"};
    et_trace_writer *tw;
    assert_int_equal(et_trace_create(tpath, 4, names, &tw), ET_OK);
    assert_int_equal(et_model_attach_hw(m, ra, NULL, tw), ET_OK);
    float *x = et_model_input(m);
    for (int i = 0; i < 9; i++) x[i] = 1.0f + (float)i;
    uint8_t label = 1;
    float loss;
    assert_int_equal(et_model_train_step(m, &label, 1, 0.0f, &loss), ET_OK);
    assert_int_equal(et_model_attach_hw(m, NULL, NULL, NULL), ET_OK); /* emits the waiting EP record */
    assert_int_equal(et_trace_close(tw, 1), ET_OK);
    memset(conv2_ops, 0, sizeof conv2_ops);
    int nl;
    assert_int_equal(et_trace_read(tpath, &nl, NULL, 0, keep_conv2, NULL), ET_OK);
    const et_hw_op *ff = &conv2_ops[ET_FF], *ep = &conv2_ops[ET_EP], *wg = &conv2_ops[ET_WG];
    assert_int_equal(ff->ci, 18);
    assert_int_equal(ep->ci, 2);
    assert_int_equal(ff->dram[ET_HW_T_IN][ET_HW_C_DENSE], 72);
    assert_int_equal(ff->dram[ET_HW_T_IN][ET_HW_C_BITMASK], 38);
    assert_int_equal(ff->dram[ET_HW_T_IN][ET_HW_C_RLE], 45);
    assert_int_equal(wg->dram[ET_HW_T_IN][ET_HW_C_BITMASK], 38);
    assert_int_equal(wg->dram[ET_HW_T_IN][ET_HW_C_RLE], 45);
    assert_int_equal(ep->dram[ET_HW_T_OUT][ET_HW_C_DENSE], 72);
    assert_int_equal(ep->dram[ET_HW_T_OUT][ET_HW_C_BITMASK], 74);
    assert_int_equal(ep->dram[ET_HW_T_OUT][ET_HW_C_RLE], 81);
    /* conv2's dY (EP "in", WG "out"): 2 non-zeros of 18 -> bitmask 18 + 64 = 82 bits -> 10 */
    assert_int_equal(ep->dram[ET_HW_T_IN][ET_HW_C_BITMASK], 10);
    assert_int_equal(wg->dram[ET_HW_T_OUT][ET_HW_C_BITMASK], 10);
    assert_int_equal(ep->dram_bytes, ep->dram[0][0] + ep->dram[1][0] + ep->dram[2][0]);
    et_hw_run_free(ra);
    et_model_free(m);
    remove(tpath);
}

/* Per (step, layer, stage): weight bytes (dense) and the number of records. */
static int64_t wbytes[2][4][ET_NSTAGES], wrecs[2][4][ET_NSTAGES];
static et_status keep_wbytes(void *ctx, const et_hw_op *op) {
    (void)ctx;
    if (op->step < 2 && op->layer < 4) {
        wbytes[op->step][op->layer][op->stage] += op->dram[ET_HW_T_W][ET_HW_C_DENSE];
        wrecs[op->step][op->layer][op->stage]++;
    }
    return ET_OK;
}

/* A conv whose 8 images span three im2col chunks (src/nn/conv.c) is one
 * product per stage on the processor (hwlink joins the chunk calls): one
 * record per stage and step, with the weights read (FF, EP) and the weight
 * gradient written (WG) once. conv 1:
 * 8x9 weights (fp32: 288 B); conv 2 (index 2): 4x72 = 288 weights, 1152 B. */
static void test_weight_traffic_once(void **state) {
    (void)state;
    et_model *m;
    assert_int_equal(et_model_parse("input 1 32 32\nconv 8 k=3 p=1\nrelu\nconv 4 k=3 p=1\nflatten\nlinear 10\n",
                                    "t", &m), ET_OK);
    et_optim opt = {0};
    assert_int_equal(et_model_plan(m, 8, &opt), ET_OK);
    assert_int_equal(et_model_init_he(m, 5), ET_OK);
    et_hw_arch a;
    assert_int_equal(et_hw_arch_load("elearn", NULL, 0, &a), ET_OK);
    et_hw_run *ra;
    assert_int_equal(et_hw_run_create(&a, 0, et_model_num_nodes(m), &ra), ET_OK);
    const char *names[5] = {"0", "1", "2", "3", "4"};
    et_trace_writer *tw;
    assert_int_equal(et_trace_create(tpath, 5, names, &tw), ET_OK);
    assert_int_equal(et_model_attach_hw(m, ra, NULL, tw), ET_OK);
    float *x = et_model_input(m);
    for (int i = 0; i < 8 * 1024; i++) x[i] = (float)((i * 7) % 13) / 13.0f;
    uint8_t labels[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    float loss;
    for (int s = 0; s < 2; s++) assert_int_equal(et_model_train_step(m, labels, 8, 0.01f, &loss), ET_OK);
    assert_int_equal(et_model_attach_hw(m, NULL, NULL, NULL), ET_OK);
    assert_int_equal(et_trace_close(tw, 1), ET_OK);
    memset(wbytes, 0, sizeof wbytes);
    memset(wrecs, 0, sizeof wrecs);
    int nl;
    assert_int_equal(et_trace_read(tpath, &nl, NULL, 0, keep_wbytes, NULL), ET_OK);
    for (int s = 0; s < 2; s++) {
        /* three chunk calls per stage, one processor product each */
        assert_int_equal(wrecs[s][2][ET_FF], 1);
        assert_int_equal(wrecs[s][2][ET_EP], 1);
        assert_int_equal(wrecs[s][2][ET_WG], 1);
        assert_int_equal(wbytes[s][2][ET_FF], 1152); /* one weight read */
        assert_int_equal(wbytes[s][2][ET_EP], 1152);
        assert_int_equal(wbytes[s][2][ET_WG], 1152);
        assert_int_equal(wbytes[s][0][ET_FF], 288);
        assert_int_equal(wbytes[s][0][ET_WG], 288);
    }
    et_hw_run_free(ra);
    et_model_free(m);
    remove(tpath);
}

static void write_file(const char *path, const unsigned char *b, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
}

/* Version-3 rejection: structure inconsistent or cut; version 1 and dense
 * version-2 files still read, version-2 structure refused with a clear error. */
static void test_trace_v3_rejects(void **state) {
    (void)state;
    FILE *f = fopen(tpath, "rb");
    assert_non_null(f);
    static unsigned char buf[1 << 17];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_true(n > 300 && n < sizeof buf);
    char bad[80];
    snprintf(bad, sizeof bad, "%s.bad", tpath);
    int nl, cnt;
    /* the first record (after the 20-byte header and 4 names "0" "1" "2" "3")
     * is conv FF with structure: 108 positions, co_dense 4 -> 1 byte each */
    size_t rec = 20 + 2 + 2 + 2 + 2;
    assert_int_equal(buf[rec + 176], 1);
    assert_int_equal(buf[rec + 56], 108);
    /* a Co(p) above co */
    unsigned char save = buf[rec + 184 + 5];
    buf[rec + 184 + 5] = 5;
    write_file(bad, buf, n);
    buf[rec + 184 + 5] = save;
    assert_int_equal(et_trace_read(bad, &nl, NULL, 0, count_op, &cnt), ET_ERR_FORMAT);
    assert_non_null(strstr(et_last_error(), "structure"));
    /* co that is not the largest Co(p) */
    unsigned char co = buf[rec + 40];
    assert_true(co >= 1);
    buf[rec + 40] = (unsigned char)(co - 1);
    write_file(bad, buf, n);
    buf[rec + 40] = co;
    assert_int_equal(et_trace_read(bad, &nl, NULL, 0, count_op, &cnt), ET_ERR_FORMAT);
    /* a width that does not match co_dense, and a non-zero reserved word */
    buf[rec + 176] = 2;
    write_file(bad, buf, n);
    buf[rec + 176] = 1;
    assert_int_equal(et_trace_read(bad, &nl, NULL, 0, count_op, &cnt), ET_ERR_FORMAT);
    assert_non_null(strstr(et_last_error(), "malformed"));
    buf[rec + 180] = 1;
    write_file(bad, buf, n);
    buf[rec + 180] = 0;
    assert_int_equal(et_trace_read(bad, &nl, NULL, 0, count_op, &cnt), ET_ERR_FORMAT);
    /* every truncation is an error */
    for (size_t cut = 0; cut < n; cut += (cut < 600 ? 1 : 97)) {
        write_file(bad, buf, cut);
        cnt = 0;
        assert_int_not_equal(et_trace_read(bad, &nl, NULL, 0, count_op, &cnt), ET_OK);
    }
    /* every single-byte change is read or refused, never a crash (ASan in
     * `make asan`); a change inside Co(p) that breaks no rule still reads */
    uint64_t rs = 99;
    for (size_t i = 0; i < n; i += (i < 700 ? 1 : 13)) {
        unsigned char keep_b = buf[i];
        rs = rs * 6364136223846793005ULL + 1442695040888963407ULL;
        buf[i] = (unsigned char)(keep_b ^ (1u << ((rs >> 40) % 8)));
        write_file(bad, buf, n);
        buf[i] = keep_b;
        et_status st = et_trace_read(bad, &nl, NULL, 0, count_op, &cnt);
        assert_true(st == ET_OK || st == ET_ERR_FORMAT);
    }
    /* the file as written reads */
    write_file(bad, buf, n);
    assert_int_equal(et_trace_read(bad, &nl, NULL, 0, count_op, &cnt), ET_OK);
    /* a version-1 file (20-byte header, one 96-byte record) is read as dense */
    unsigned char v1[20 + 2 + 96 + 16] = "ETTRACE";
    v1[8] = 1, v1[12] = 96, v1[16] = 1;
    v1[20] = 1, v1[21] = 'x';
    unsigned char *r = v1 + 22;
    r[20] = 8, r[28] = 8;            /* a_bits, w_bits */
    r[32] = 4, r[40] = 3, r[48] = 3; /* ci, co, co_dense */
    r[56] = 2;                       /* spatial */
    double one = 1.0;
    memcpy(r + 64, &one, 8);
    r[72] = 100, r[80] = 50; /* sram, dram */
    memcpy(v1 + 22 + 96, "ETTREND", 8);
    v1[22 + 96 + 8] = 1;
    write_file(bad, v1, sizeof v1);
    got_n = 0;
    assert_int_equal(et_trace_read(bad, &nl, NULL, 0, keep, NULL), ET_OK);
    assert_int_equal(got_n, 1);
    assert_null(got_op.co_pos);
    assert_int_equal(got_op.dram_bytes, 50);
    /* version 2 (28-byte header, 184-byte records): dense records read, a
     * record with per-64-position sums is refused, naming the fix */
    unsigned char v2[28 + 2 + 184 + 16] = "ETTRACE";
    v2[8] = 2, v2[12] = 184, v2[16] = 1, v2[20] = 64, v2[24] = 9;
    v2[28] = 1, v2[29] = 'x';
    r = v2 + 30;
    r[20] = 8, r[28] = 8, r[32] = 4, r[40] = 3, r[48] = 3, r[56] = 2;
    memcpy(r + 64, &one, 8);
    r[72] = 100, r[80] = 50, r[96] = 50; /* dram[in][dense] = dram_bytes */
    memcpy(v2 + 30 + 184, "ETTREND", 8);
    v2[30 + 184 + 8] = 1;
    write_file(bad, v2, sizeof v2);
    got_n = 0;
    assert_int_equal(et_trace_read(bad, &nl, NULL, 0, keep, NULL), ET_OK);
    assert_int_equal(got_n, 1);
    assert_int_equal(got_op.dram[ET_HW_T_IN][ET_HW_C_DENSE], 50);
    r[176] = 1; /* nblk */
    write_file(bad, v2, sizeof v2);
    assert_int_equal(et_trace_read(bad, &nl, NULL, 0, keep, NULL), ET_ERR_FORMAT);
    assert_non_null(strstr(et_last_error(), "version 3"));
    remove(bad);
    remove(tpath);
}

int main(void) {
    snprintf(tpath, sizeof tpath, "/tmp/et_hwsparse_%d.etr", (int)getpid());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_case), cmocka_unit_test(test_rpo_structured_brute),
        cmocka_unit_test(test_non_pow2_tiles),     cmocka_unit_test(test_stored_tensor_bytes),
        cmocka_unit_test(test_live_equals_replay_sparse), cmocka_unit_test(test_trace_v3_rejects),
        cmocka_unit_test(test_speculating_run), cmocka_unit_test(test_weight_traffic_once)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
