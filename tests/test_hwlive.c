/* Live processor-model runs: a training step of a small MLP produces exactly
 * the tiles docs/hw.md describes (built by hand here from the layer shapes),
 * FF's configuration word is reused by EP/WG, and totals add up. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "edgetrain.h"
#include "util/layer_harness.h"

#include <math.h>
#include <string.h>

static void close_rel(double got, double want) {
    if (!(fabs(got - want) <= 1e-9 * fabs(want) + 1e-12)) {
        print_error("got %.12g want %.12g\n", got, want);
        fail();
    }
}

static void test_mlp_step(void **state) {
    (void)state;
    /* input 12 -> linear 8 (node 0) -> relu (1) -> linear 6 (node 2); batch 4 */
    et_model *m;
    assert_int_equal(et_model_parse("input 12\nlinear 8 bias=0\nrelu\nlinear 6 bias=0\n", "t", &m), ET_OK);
    assert_int_equal(et_model_plan(m, 4, NULL), ET_OK);
    assert_int_equal(et_model_init_he(m, 1), ET_OK);
    lh_fill(et_model_input(m), 48, 3, 0, 1);
    et_hw_arch a;
    assert_int_equal(et_hw_arch_load("elearn", NULL, 0, &a), ET_OK);
    a.speculation = 0;
    a.compress = ET_HW_COMPRESS_NONE; /* dense bytes here; compression: tests/test_hwsparse.c */
    et_hw_run *run;
    assert_int_equal(et_hw_run_create(&a, 1, et_model_num_nodes(m), &run), ET_OK);
    assert_int_equal(et_model_attach_hw(m, run, NULL, NULL), ET_OK);
    uint8_t labels[4] = {0, 1, 2, 3};
    float loss;
    assert_int_equal(et_model_train_step(m, labels, 4, 0.1f, &loss), ET_OK);

    /* The tiles by hand (fp32 run: calibration precision INT8x8; 4-byte values):
     *   node 0 FF: ci 12, co 8, spatial 4    WG: ci 4, co 8, spatial 12   (no EP: first layer)
     *   node 2 FF: ci 8,  co 6, spatial 4    EP: ci 6, co 8, spatial 4    WG: ci 4, co 6, spatial 8 */
    struct { int node; et_stage st; int64_t ci, co, sp, M, N, K, in, out, w; } T[5] = {
        {0, ET_FF, 12, 8, 4, 4, 8, 12, 12, 8, 96}, {2, ET_FF, 8, 6, 4, 4, 6, 8, 8, 6, 48},
        {2, ET_WG, 4, 6, 8, 6, 8, 4, 8, 6, 48},   {2, ET_EP, 6, 8, 4, 4, 8, 6, 8, 6, 48},
        {0, ET_WG, 4, 8, 12, 8, 12, 4, 12, 8, 96}};
    et_hw_totals want = {0};
    et_hw_pair ff_cfg[3] = {{0, 0}, {0, 0}, {0, 0}};
    for (int i = 0; i < 5; i++) {
        et_hw_tile t = {T[i].st, a.calib, T[i].ci, T[i].co, T[i].co, T[i].sp, 1.0, 0, 0, {0, 0}, 0, 0, NULL, 0};
        t.sram_bytes = 4 * (T[i].M * T[i].K + T[i].K * T[i].N + T[i].M * T[i].N);
        t.dram_bytes = 4 * (4 * T[i].in + 4 * T[i].out + T[i].w);
        if (T[i].st != ET_FF) t.cfg = ff_cfg[T[i].node];
        et_hw_cost c;
        assert_int_equal(et_hw_tile_cost(&a, 1, &t, &c), ET_OK);
        if (T[i].st == ET_FF) ff_cfg[T[i].node] = c.cfg;
        want.cycles += (double)c.cycles, want.energy_j += c.energy_pj * 1e-12, want.macs += c.macs;
        want.sram_bytes += (double)t.sram_bytes, want.dram_bytes += (double)t.dram_bytes;
        want.mac_slots += (double)c.pe_cycles * et_hw_macs_per_cycle(&a, a.calib);
    }
    et_hw_totals got;
    et_hw_run_totals(run, -1, -1, &got);
    assert_true(got.tiles == 5);
    close_rel(got.cycles, want.cycles);
    close_rel(got.energy_j, want.energy_j);
    close_rel(got.macs, want.macs);
    close_rel(got.macs, 4.0 * (12 * 8 + 8 * 6) * 2 + 4.0 * 8 * 6); /* FF+WG both layers, EP of the second */
    close_rel(got.sram_bytes, want.sram_bytes);
    close_rel(got.dram_bytes, want.dram_bytes);
    close_rel(got.utilization, want.macs / want.mac_slots);
    /* per stage adds up to the total */
    double cyc = 0;
    for (int s = 0; s < ET_NSTAGES; s++) {
        et_hw_totals t;
        et_hw_run_totals(run, -1, s, &t);
        cyc += t.cycles;
    }
    close_rel(cyc, got.cycles);
    et_model_attach_hw(m, NULL, NULL, NULL);
    et_hw_run_free(run);
    et_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_mlp_step)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
