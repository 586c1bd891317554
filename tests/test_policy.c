/* Precision policies: the shipped files say what the papers say, inline and
 * file forms parse, and malformed policies give clear errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "numerics/policy.h"

#include <stdio.h>
#include <string.h>

static int bits_of(const et_policy *p, const char *layer, et_role r) {
    const et_format *f = et_policy_format(p, layer, r);
    return f ? f->bits : 32;
}

static void test_elearn_vgg8(void **state) {
    (void)state;
    static et_policy p;
    assert_int_equal(et_policy_load("elearn-vgg8", &p), ET_OK);
    /* VGG8's weight layers in models/vgg8.et are entries 0 2 5 7 10 12 16 18 */
    const char *layers[8] = {"0", "2", "5", "7", "10", "12", "16", "18"};
    const int wbits[8] = {2, 4, 8, 8, 4, 8, 4, 8};
    for (int i = 0; i < 8; i++) {
        assert_int_equal(bits_of(&p, layers[i], ET_ROLE_W), wbits[i]);
        assert_int_equal(bits_of(&p, layers[i], ET_ROLE_A), 8);
        assert_int_equal(bits_of(&p, layers[i], ET_ROLE_E), 8);
        assert_int_equal(bits_of(&p, layers[i], ET_ROLE_G), 16);
        assert_true(et_policy_acc_int32(et_policy_format(&p, layers[i], ET_ROLE_ACC))); /* exact integer sums */
        assert_null(et_policy_format(&p, layers[i], ET_ROLE_M));
        assert_int_equal(et_policy_format(&p, layers[i], ET_ROLE_W)->kind, ET_FMT_INT);
    }
}

static void test_shipped(void **state) {
    (void)state;
    static et_policy p;
    assert_int_equal(et_policy_load("int8", &p), ET_OK);
    assert_true(et_policy_acc_int32(et_policy_format(&p, "0", ET_ROLE_ACC)));
    assert_int_equal(bits_of(&p, "0", ET_ROLE_W), 8);
    char buf[16];
    assert_string_equal(et_format_name(et_policy_format(&p, "0", ET_ROLE_ACC), buf, sizeof buf), "int32");
    assert_int_not_equal(et_policy_load("w=int32", &p), ET_OK); /* int32 is an accumulator only */
    assert_int_equal(et_policy_load("hfp8", &p), ET_OK);
    assert_int_equal(et_policy_format(&p, "3", ET_ROLE_W)->ocp_e4m3, 1);
    assert_true(et_policy_format(&p, "3", ET_ROLE_W)->scaled && et_policy_format(&p, "3", ET_ROLE_G)->scaled);
    assert_false(et_policy_format(&p, "3", ET_ROLE_ACC)->scaled);
    assert_int_equal(et_policy_format(&p, "3", ET_ROLE_E)->ebits, 5);
    assert_int_equal(et_policy_format(&p, "3", ET_ROLE_ACC)->mbits, 10);
    assert_int_equal(et_policy_load("fp16", &p), ET_OK);
    assert_int_equal(bits_of(&p, "0", ET_ROLE_A), 16);
    assert_int_equal(et_policy_load("bf16", &p), ET_OK);
    assert_int_equal(et_policy_format(&p, "0", ET_ROLE_G)->ebits, 8);
    assert_int_equal(et_policy_load("e6m5-sr13", &p), ET_OK);
    const et_format *acc = et_policy_format(&p, "9", ET_ROLE_ACC);
    assert_non_null(acc);
    assert_int_equal(acc->ebits, 6);
    assert_int_equal(acc->mbits, 5);
    assert_int_equal(acc->round, ET_ROUND_SR);
    assert_int_equal(acc->sr_bits, 13);
}

static void test_inline(void **state) {
    (void)state;
    static et_policy p;
    assert_int_equal(et_policy_load("w=int4,a=int8,e=int8,g=int16,acc=fp32", &p), ET_OK);
    assert_int_equal(bits_of(&p, "any", ET_ROLE_W), 4);
    assert_int_equal(bits_of(&p, "any", ET_ROLE_G), 16);
    assert_null(et_policy_format(&p, "any", ET_ROLE_ACC));
    assert_int_equal(bits_of(&p, "any", ET_ROLE_M), 32); /* unset: fp32 */
}

static void test_errors(void **state) {
    (void)state;
    static et_policy p;
    const char *bad[] = {
        "w=int4,q=int8",                       /* unknown role */
        "w=int1",                              /* bad format */
        "w=int4 w=int8",                       /* twice */
        "default w=int8\ndefault a=int8\n",    /* two defaults */
        "default w=int8\nlayer\n",             /* no name */
        "default w=int8\nlayer 3\n",           /* sets nothing */
        "default w=int8\nlayer 3 w=int4\nlayer 3 a=int4\n",
        "default w=int8\nfrobnicate\n",
        "default w=e9m1\n",
        "w int4",
        "default w=int8\nlaps foo=1\n",           /* unknown laps key */
        "default w=int8\nlaps threshold=-1\n",    /* out of range */
        "default w=int8\nlaps every=2.5\n",
        "default w=int8\nlaps\nlaps\n",          /* twice */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        et_status st = et_policy_parse(bad[i], "t", &p);
        if (st == ET_OK || !et_last_error()[0]) {
            fprintf(stderr, "accepted bad policy: %s\n", bad[i]);
            fail();
        }
    }
    assert_int_not_equal(et_policy_load("no-such-policy", &p), ET_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_elearn_vgg8),
        cmocka_unit_test(test_shipped),
        cmocka_unit_test(test_inline),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
