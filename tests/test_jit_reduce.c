/* test_jit_reduce.c — the JIT's Reduce* kernels against the reference interpreter on
 * hand-built one-node graphs: every op and dtype, contiguous and strided axes, keepdims,
 * axes as attribute or input, noop_with_empty_axes, size-1, scalar and empty dims, NaN and
 * integer wrap-around, and results bitwise equal at 1 and 3 threads. */
#include <math.h>

#include "jit_case.h"

static const kiln_op red_ops[6] = {KILN_OP_ReduceSum, KILN_OP_ReduceMean,      KILN_OP_ReduceMax,
                                   KILN_OP_ReduceMin, KILN_OP_ReduceSumSquare, KILN_OP_ReduceL2};

/* One case with the axes as an attribute (opset 11); n_axes < 0 leaves axes unset. */
static void red_attr_tiles(kiln_op op, kiln_dtype dt, int rank, const int64_t *d, int n_axes,
                           const int64_t *axes, int keepdims, int64_t min_tiles, const char *what) {
  jcase c = {.op = op, .opset = 11, .n_in = 1, .n_out = 1, .min_tiles = min_tiles};
  c.in[0] = dt == KILN_F32 ? rf(rank, d) : ri(dt, rank, d);
  if (n_axes >= 0)
    c.attrs[c.n_attrs++] = (jattr){.name = "axes", .kind = 'v', .n = n_axes, .v = axes};
  c.attrs[c.n_attrs++] = AI("keepdims", keepdims);
  char buf[160];
  snprintf(buf, sizeof buf, "%s %s %s", kiln_op_name(op), kiln_dtype_name(dt), what);
  jc_run(&c, buf);
  jc_free(&c);
}

static void red_attr(kiln_op op, kiln_dtype dt, int rank, const int64_t *d, int n_axes,
                     const int64_t *axes, int keepdims, const char *what) {
  red_attr_tiles(op, dt, rank, d, n_axes, axes, keepdims, 0, what);
}

static void test_axes(void) {
  static const struct {
    int n;
    int64_t ax[4];
    const char *what;
  } axes[] = {{-1, {0}, "all"},
              {1, {0}, "axis 0"},
              {1, {1}, "axis 1"},
              {1, {3}, "axis 3"},
              {1, {-1}, "axis -1"},
              {2, {0, 2}, "axes 0,2"},
              {2, {1, 3}, "axes 1,3"},
              {2, {2, 3}, "axes 2,3"},
              {4, {3, 1, 0, 2}, "all listed"},
              {3, {0, 1, 3}, "axes 0,1,3"}};
  kiln_dtype dts[3] = {KILN_F32, KILN_I32, KILN_I64};
  for (int o = 0; o < 6; o++)
    for (int t = 0; t < 3; t++)
      for (size_t a = 0; a < sizeof axes / sizeof axes[0]; a++) /* keepdims changes only shapes */
        red_attr(red_ops[o], dts[t], 4, DIMS(2, 3, 4, 5), axes[a].n, axes[a].ax, (int)(a + t) & 1,
                 axes[a].what);
}

static void test_shapes(void) {
  for (int o = 0; o < 6; o++) {
    kiln_op op = red_ops[o];
    red_attr(op, KILN_F32, 3, DIMS(3, 1, 4), 1, IV(1), 1, "size-1 axis");
    red_attr(op, KILN_F32, 3, DIMS(3, 1, 4), 1, IV(0), 0, "axis 0 over a size-1 dim");
    red_attr(op, KILN_F32, 3, DIMS(7, 33, 9), 1, IV(1), 1, "odd kept run");
    red_attr(op, KILN_F32, 2, DIMS(64, 3000), 1, IV(1), 0, "long rows");
    /* few rows: the kept run is split into chunks so several threads share the work */
    red_attr_tiles(op, KILN_F32, 2, DIMS(3000, 64), 1, IV(0), 0, 4, "long columns");
    red_attr_tiles(op, KILN_F32, 3, DIMS(2, 2000, 70), 1, IV(1), 0, 8, "long odd columns");
    red_attr(op, KILN_I64, 2, DIMS(3000, 64), 1, IV(0), 1, "long int columns");
    red_attr(op, KILN_I32, 2, DIMS(64, 3000), 1, IV(1), 1, "long int rows");
    red_attr(op, KILN_F32, 4, DIMS(8, 64, 7, 7), 2, IV(2, 3), 1, "global pool");
    red_attr(op, KILN_F32, 0, DIMS(0), -1, NULL, 1, "scalar");
    red_attr(op, KILN_I32, 0, DIMS(0), -1, NULL, 0, "int scalar");
    red_attr(op, KILN_F32, 2, DIMS(0, 3), 1, IV(0), 1, "empty reduced dim");
    red_attr(op, KILN_I64, 2, DIMS(0, 3), 1, IV(0), 0, "empty reduced int dim");
    red_attr(op, KILN_F32, 2, DIMS(3, 0), 1, IV(0), 1, "empty output");
    red_attr(op, KILN_F32, 3, DIMS(2, 0, 3), -1, NULL, 0, "empty all");
  }
}

/* Axes as input 1: ReduceSum from opset 13, the others from 18. */
static void red_input(kiln_op op, int opset, const int64_t *axes, int n_axes, bool omit, int keep,
                      int noop, const char *what) {
  jcase c = {.op = op, .opset = opset, .n_in = omit ? 1 : 2, .n_out = 1, .const_mask = 2u};
  c.in[0] = rf(3, DIMS(4, 5, 6));
  if (!omit) c.in[1] = ti64(1, DIMS(n_axes), axes);
  c.attrs[c.n_attrs++] = AI("keepdims", keep);
  if (noop) c.attrs[c.n_attrs++] = AI("noop_with_empty_axes", 1);
  jc_run(&c, what);
  jc_free(&c);
}

static void test_axes_input(void) {
  red_input(KILN_OP_ReduceSum, 13, IV(0, 2), 2, false, 1, 0, "sum axes input");
  red_input(KILN_OP_ReduceSum, 13, IV(-2), 1, false, 0, 0, "sum negative axis input");
  red_input(KILN_OP_ReduceSum, 13, NULL, 0, true, 0, 0, "sum axes omitted");
  red_input(KILN_OP_ReduceSum, 13, NULL, 0, false, 1, 0, "sum empty axes");
  red_input(KILN_OP_ReduceSum, 13, NULL, 0, false, 1, 1, "sum noop");
  red_input(KILN_OP_ReduceSum, 13, NULL, 0, true, 1, 1, "sum noop, axes omitted");
  red_input(KILN_OP_ReduceMax, 18, IV(1), 1, false, 1, 0, "max axes input");
  red_input(KILN_OP_ReduceSumSquare, 18, NULL, 0, false, 0, 1, "sumsquare noop");
  red_input(KILN_OP_ReduceMean, 18, IV(2, 0), 2, false, 0, 0, "mean axes input");
}

static void test_special_values(void) {
  /* NaN propagates through max/min and sums; infinities */
  for (int o = 0; o < 6; o++) {
    jcase c = {.op = red_ops[o], .opset = 11, .n_in = 1, .n_out = 1};
    c.in[0] = tf(2, DIMS(3, 4), FV(1, NAN, 3, 4, -INFINITY, 2, 5, -1, 0, -0.0f, INFINITY, 7));
    c.attrs[c.n_attrs++] = AINTS("axes", 1, 1);
    jc_run(&c, "special values, rows");
    c.attrs[0] = AINTS("axes", 1, 0);
    jc_run(&c, "special values, columns");
    jc_free(&c);
  }
  /* integer sums wrap like the reference's two's complement */
  jcase c = {.op = KILN_OP_ReduceSum, .opset = 11, .n_in = 1, .n_out = 1};
  c.in[0] = ti64(2, DIMS(2, 2), IV(INT64_MAX, 5, INT64_MAX, INT64_MIN));
  jc_run(&c, "int64 wrap");
  c.op = KILN_OP_ReduceSumSquare;
  jc_run(&c, "int64 square wrap");
  jc_free(&c);
  c.op = KILN_OP_ReduceMean;
  c.in[0] = ti32(2, DIMS(2, 3), (const int32_t[]){INT32_MAX, INT32_MAX, 1, -7, 2, 2});
  jc_run(&c, "int32 mean beyond int32");
  c.op = KILN_OP_ReduceSum;
  jc_run(&c, "int32 sum wraps");
  jc_free(&c);
}

/* A non-constant axes input is refused (by shape inference, before code generation). */
static void test_bad_axes(void) {
  jcase c = {.op = KILN_OP_ReduceSum, .opset = 13, .n_in = 2, .n_out = 1};
  c.in[0] = rf(2, DIMS(3, 4));
  c.in[1] = ti64(1, DIMS(1), IV(0));
  one_node j;
  jc_build(&c, &j);
  CHECK(ir_infer(j.g, NULL, &j.e) == KILN_ERR_UNSUPPORTED);
  CHECK(strstr(j.e.msg, "constant") != NULL);
  CHECK(on_node(&j)->op == KILN_OP_ReduceSum);
  on_end(&j);
  jc_free(&c);
  c = (jcase){.op = KILN_OP_ReduceMax, .opset = 11, .n_in = 1, .n_out = 1};
  c.in[0] = rf(2, DIMS(3, 4));
  c.attrs[c.n_attrs++] = AINTS("axes", 1, 2);
  jc_build(&c, &j);
  CHECK(ir_infer(j.g, NULL, &j.e) == KILN_ERR_SHAPE);
  on_end(&j);
  jc_free(&c);
}

int main(void) {
  RUN(test_axes);
  RUN(test_shapes);
  RUN(test_axes_input);
  RUN(test_special_values);
  RUN(test_bad_axes);
  TEST_MAIN_END();
}
