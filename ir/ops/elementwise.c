/* elementwise.c — op definitions of the elementwise family. */
#include "ir/ops/common.h"

const kiln_op_def kiln_opdef_Identity = {
    .name = "Identity", .domain = "", .min_in = 1, .max_in = 1, .min_out = 1, .max_out = 1,
    .infer = infer_unary_any, .flags = KILN_OPF_ELEMENTWISE | KILN_OPF_INPLACE_OK,
    .doc = "y = x"};

const kiln_op_def kiln_opdef_Relu = {
    .name = "Relu", .domain = "", .min_in = 1, .max_in = 1, .min_out = 1, .max_out = 1,
    .infer = infer_unary_numeric, .flags = KILN_OPF_ELEMENTWISE | KILN_OPF_INPLACE_OK,
    .doc = "y = max(x, 0)"};

static const kiln_attr_spec binary_attrs[] = {
    A_LEGACY("broadcast", KILN_ATTR_INT), /* opset < 7: explicit broadcast flag */
    A_LEGACY("axis", KILN_ATTR_INT),
    A_LEGACY("consumed_inputs", KILN_ATTR_INTS),
};

const kiln_op_def kiln_opdef_Add = {
    .name = "Add", .domain = "", .min_in = 2, .max_in = 2, .min_out = 1, .max_out = 1,
    .attrs = binary_attrs, .n_attrs = NELEM(binary_attrs), .infer = infer_broadcast_same,
    .flags = KILN_OPF_ELEMENTWISE | KILN_OPF_INPLACE_OK, .doc = "y = a + b (broadcasting)"};
