/* test_ops_reduce.c — the Reduce* ops on hand-built graphs: axes as attribute (old opsets)
 * and as input, keepdims, negative axes, empty axes, integer dtypes, and bad-input errors. */
#include <math.h>

#include "one_node.h"

#define NELEM_T(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* data [3,2,2] from the ONNX examples */
#define DATA FV(5, 1, 20, 2, 30, 1, 40, 2, 55, 1, 60, 2)

/* Runs `op` at `opset` on data with the axes as attribute (or NULL to leave it unset). */
static void attr_case(kiln_op op, int opset, const int64_t *axes, int n_axes, int keepdims,
                      int rank, const int64_t *dims, const float *want) {
  kiln_tensor *x = tf(3, DIMS(3, 2, 2), DATA);
  one_node t;
  on_begin(&t, op, opset, &x, 1, 0, 1);
  if (axes) ir_set_attr_ints(t.g, t.node, "axes", axes, n_axes, &t.e);
  if (keepdims >= 0) ir_set_attr_int(t.g, t.node, "keepdims", keepdims, &t.e);
  CHECK_OK(on_run(&t), &t.e);
  CHECK_TF(t.out[0], rank, dims, want);
  on_end(&t);
  kiln_tensor_free(x);
}

static void test_reduce_attr_axes(void) {
  const int64_t *ax1 = IV(1), *axm2 = IV(-2);
  const float *sum1 = FV(25, 3, 70, 3, 115, 3);
  attr_case(KILN_OP_ReduceSum, 11, ax1, 1, 1, 3, DIMS(3, 1, 2), sum1);
  attr_case(KILN_OP_ReduceSum, 11, ax1, 1, 0, 2, DIMS(3, 2), sum1);
  attr_case(KILN_OP_ReduceSum, 6, axm2, 1, -1, 3, DIMS(3, 1, 2), sum1); /* keepdims default 1 */
  attr_case(KILN_OP_ReduceSum, 11, NULL, 0, 1, 3, DIMS(1, 1, 1), FV(219)); /* all axes */
  attr_case(KILN_OP_ReduceSum, 11, NULL, 0, 0, 0, DIMS(0), FV(219));
  attr_case(KILN_OP_ReduceMean, 13, ax1, 1, 1, 3, DIMS(3, 1, 2), FV(12.5, 1.5, 35, 1.5, 57.5, 1.5));
  attr_case(KILN_OP_ReduceMean, 13, axm2, 1, 0, 2, DIMS(3, 2), FV(12.5, 1.5, 35, 1.5, 57.5, 1.5));
  attr_case(KILN_OP_ReduceMean, 17, NULL, 0, 0, 0, DIMS(0), FV(18.25));
  attr_case(KILN_OP_ReduceMax, 13, IV(0, 2), 2, 0, 1, DIMS(2), FV(55, 60));
  attr_case(KILN_OP_ReduceMax, 13, IV(-1, 0), 2, 1, 3, DIMS(1, 2, 1), FV(55, 60));
  attr_case(KILN_OP_ReduceMin, 13, IV(0, 2), 2, 0, 1, DIMS(2), FV(1, 2));
  attr_case(KILN_OP_ReduceMin, 11, IV(2), 1, 1, 3, DIMS(3, 2, 1), FV(1, 2, 1, 2, 1, 2));
  const float *sq = FV(26, 404, 901, 1604, 3026, 3604);
  attr_case(KILN_OP_ReduceSumSquare, 13, IV(2), 1, 0, 2, DIMS(3, 2), sq);
  attr_case(KILN_OP_ReduceSumSquare, 13, IV(-1), 1, 1, 3, DIMS(3, 2, 1), sq);
  float l2[6];
  for (int i = 0; i < 6; i++) l2[i] = sqrtf(sq[i]);
  attr_case(KILN_OP_ReduceL2, 13, IV(2), 1, 0, 2, DIMS(3, 2), l2);
  attr_case(KILN_OP_ReduceL2, 13, NULL, 0, 0, 0, DIMS(0),
            FV(sqrtf(26 + 404 + 901 + 1604 + 3026 + 3604)));
}

/* ReduceSum from opset 13: axes are the optional input 1 (a constant). */
static void input_case(const int64_t *axes, int n_axes, int keepdims, int noop, int rank,
                       const int64_t *dims, const float *want) {
  kiln_tensor *in[2] = {tf(3, DIMS(3, 2, 2), DATA),
                        axes ? ti64(1, DIMS(n_axes), axes) : NULL};
  one_node t;
  on_begin(&t, KILN_OP_ReduceSum, 13, in, axes ? 2 : 1, 1u << 1, 1);
  ir_set_attr_int(t.g, t.node, "keepdims", keepdims, &t.e);
  if (noop) ir_set_attr_int(t.g, t.node, "noop_with_empty_axes", 1, &t.e);
  CHECK_OK(on_run(&t), &t.e);
  CHECK_TF(t.out[0], rank, dims, want);
  on_end(&t);
  kiln_tensor_free(in[0]), kiln_tensor_free(in[1]);
}

static void test_reduce_sum_axes_input(void) {
  input_case(IV(1), 1, 1, 0, 3, DIMS(3, 1, 2), FV(25, 3, 70, 3, 115, 3));
  input_case(IV(-2), 1, 0, 0, 2, DIMS(3, 2), FV(25, 3, 70, 3, 115, 3));
  input_case(IV(0, 1), 2, 0, 0, 1, DIMS(2), FV(210, 9));
  input_case(NULL, 0, 1, 0, 3, DIMS(1, 1, 1), FV(219));        /* omitted: all axes */
  input_case(IV(0), 0, 1, 0, 3, DIMS(1, 1, 1), FV(219));       /* empty: all axes */
  input_case(IV(0), 0, 1, 1, 3, DIMS(3, 2, 2), DATA);          /* empty + noop: identity */
  input_case(IV(2), 1, 0, 1, 2, DIMS(3, 2), FV(6, 22, 31, 42, 56, 62)); /* noop only if empty */
}

static void test_reduce_int(void) {
  kiln_tensor *x32 = ti32(2, DIMS(2, 3), (const int32_t[]){1, -7, 3, 4, 5, 6});
  kiln_tensor *x64 = ti64(2, DIMS(2, 3), IV(1, -7, 3, 4, 5, 6));
  struct {
    kiln_op op;
    const int64_t *want;
  } cases[] = {
      {KILN_OP_ReduceSum, IV(-3, 15)}, {KILN_OP_ReduceMean, IV(-1, 5)},
      {KILN_OP_ReduceMax, IV(3, 6)},   {KILN_OP_ReduceMin, IV(-7, 4)},
      {KILN_OP_ReduceSumSquare, IV(59, 77)},
  };
  for (int k = 0; k < NELEM_T(cases); k++)
    for (int w = 0; w < 2; w++) {
      kiln_tensor *x = w ? x64 : x32;
      one_node t;
      on_begin(&t, cases[k].op, 11, &x, 1, 0, 1);
      ir_set_attr_ints(t.g, t.node, "axes", IV(1), 1, &t.e);
      ir_set_attr_int(t.g, t.node, "keepdims", 0, &t.e);
      CHECK_OK(on_run(&t), &t.e);
      CHECK_TI(t.out[0], x->dtype, 1, DIMS(2), cases[k].want);
      on_end(&t);
    }
  kiln_tensor_free(x32), kiln_tensor_free(x64);
}

/* Reducing an empty dim gives each op's identity. */
static void test_reduce_empty_dim(void) {
  kiln_tensor *x = tf(2, DIMS(2, 0), FV(0));
  kiln_op ops[] = {KILN_OP_ReduceSum, KILN_OP_ReduceMax, KILN_OP_ReduceMin};
  float want[] = {0, -INFINITY, INFINITY};
  for (int k = 0; k < 3; k++) {
    one_node t;
    on_begin(&t, ops[k], 11, &x, 1, 0, 1);
    ir_set_attr_ints(t.g, t.node, "axes", IV(1), 1, &t.e);
    CHECK_OK(on_run(&t), &t.e);
    CHECK(t.out[0] && t.out[0]->numel == 2 && t.out[0]->shape.rank == 2);
    if (t.out[0] && t.out[0]->numel == 2)
      for (int i = 0; i < 2; i++) CHECK(((float *)t.out[0]->data)[i] == want[k]);
    on_end(&t);
  }
  kiln_tensor_free(x);
}

static kiln_code error_case(kiln_op op, int opset, const int64_t *attr_axes, int n_attr,
                            const int64_t *in_axes, int n_in_axes, kiln_err *err) {
  kiln_tensor *in[2] = {tf(3, DIMS(3, 2, 2), DATA),
                        in_axes ? ti64(1, DIMS(n_in_axes), in_axes) : NULL};
  one_node t;
  on_begin(&t, op, opset, in, in_axes ? 2 : 1, 1u << 1, 1);
  if (attr_axes) ir_set_attr_ints(t.g, t.node, "axes", attr_axes, n_attr, &t.e);
  kiln_code rc = on_run(&t);
  *err = t.e;
  on_end(&t);
  kiln_tensor_free(in[0]), kiln_tensor_free(in[1]);
  return rc;
}

static void test_reduce_errors(void) {
  kiln_err e;
  CHECK(error_case(KILN_OP_ReduceMean, 13, IV(3), 1, NULL, 0, &e) == KILN_ERR_SHAPE);
  CHECK(strstr(e.msg, "axis 3 is out of range") != NULL);
  CHECK(error_case(KILN_OP_ReduceMax, 13, IV(-4), 1, NULL, 0, &e) == KILN_ERR_SHAPE);
  CHECK(error_case(KILN_OP_ReduceMin, 13, IV(1, -2), 2, NULL, 0, &e) == KILN_ERR_SHAPE);
  CHECK(strstr(e.msg, "repeated") != NULL);
  CHECK(error_case(KILN_OP_ReduceSum, 13, IV(5), 1, NULL, 0, &e) == KILN_ERR_INVALID);
  CHECK(strstr(e.msg, "input 1") != NULL); /* opset 13 ReduceSum: axes moved to input 1 */
  CHECK(error_case(KILN_OP_ReduceSum, 11, NULL, 0, IV(1), 1, &e) == KILN_ERR_INVALID);
  CHECK(strstr(e.msg, "attribute") != NULL);
  CHECK(error_case(KILN_OP_ReduceMean, 13, NULL, 0, IV(1), 1, &e) == KILN_ERR_INVALID);
  CHECK(error_case(KILN_OP_ReduceSum, 13, NULL, 0, IV(7), 1, &e) == KILN_ERR_SHAPE);
  CHECK(strstr(e.msg, "axis 7") != NULL);

  /* axes input that is not a constant is refused by inference */
  kiln_tensor *in[2] = {tf(1, DIMS(2), FV(1, 2)), ti64(1, DIMS(1), IV(0))};
  one_node t;
  on_begin(&t, KILN_OP_ReduceSum, 13, in, 2, 0, 1);
  CHECK(on_run(&t) == KILN_ERR_UNSUPPORTED);
  on_end(&t);
  /* bool data is not reducible */
  kiln_tensor *b = tn_new(KILN_BOOL, 1, DIMS(2));
  on_begin(&t, KILN_OP_ReduceMax, 11, &b, 1, 0, 1);
  CHECK(on_run(&t) == KILN_ERR_UNSUPPORTED);
  on_end(&t);
  kiln_tensor_free(in[0]), kiln_tensor_free(in[1]), kiln_tensor_free(b);
}

static void test_reduce_fold(void) {
  kiln_tensor *in[2] = {tf(2, DIMS(2, 2), FV(1, 2, 3, 4)), ti64(1, DIMS(1), IV(-1))};
  one_node t;
  on_begin(&t, KILN_OP_ReduceSum, 13, in, 2, 3u, 1);
  kiln_evaluator ev = kiln_ref_evaluator();
  CHECK_OK(ir_infer(t.g, &ev, &t.e), &t.e);
  CHECK_TF(ir_out(t.g, on_node(&t), 0)->data, 2, DIMS(2, 1), FV(3, 7));
  on_end(&t);
  kiln_tensor_free(in[0]), kiln_tensor_free(in[1]);
}

int main(void) {
  RUN(test_reduce_attr_axes);
  RUN(test_reduce_sum_axes_input);
  RUN(test_reduce_int);
  RUN(test_reduce_empty_dim);
  RUN(test_reduce_errors);
  RUN(test_reduce_fold);
  TEST_MAIN_END();
}
