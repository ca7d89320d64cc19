/* test_jit_tensor.c — the tensor family's JIT kernels against the reference on hand-built
 * graphs: every dtype, size-1 and empty dims, sizes that do not divide the tile size, rows long
 * enough to be cut into chunks, in-place reshapes, Gather's out-of-range indices, and results
 * bitwise identical at 1 and 3 threads. */
#include "jit_diff_tensor.h"

#define RF(...) jd_rand(KILN_F32, (int)(sizeof(DIMS(__VA_ARGS__)) / 8), DIMS(__VA_ARGS__))
#define RI(...) jd_rand(KILN_I64, (int)(sizeof(DIMS(__VA_ARGS__)) / 8), DIMS(__VA_ARGS__))
#define RI32(...) jd_rand(KILN_I32, (int)(sizeof(DIMS(__VA_ARGS__)) / 8), DIMS(__VA_ARGS__))
#define RB(...) jd_rand(KILN_BOOL, (int)(sizeof(DIMS(__VA_ARGS__)) / 8), DIMS(__VA_ARGS__))
/* a 1-D int64 constant */
#define VEC(...) ti64(1, DIMS((int64_t)(sizeof(IV(__VA_ARGS__)) / 8)), IV(__VA_ARGS__))
#define EMPTY_VEC() tn_new(KILN_I64, 1, DIMS(0))

static void run_free(jd_case c, const char *what) {
  jd_run(&c, what);
  jd_free(&c);
}

static void test_reshape_like(void) {
  run_free((jd_case){KILN_OP_Reshape, 14, {RF(3, 5, 7), VEC(7, -1)}, 2, 2, 1}, "reshape f32");
  run_free((jd_case){KILN_OP_Reshape, 14, {RI(2, 3, 4), VEC(0, 12)}, 2, 2, 1}, "reshape i64");
  run_free((jd_case){KILN_OP_Reshape, 14, {RB(4, 9), VEC(36)}, 2, 2, 1}, "reshape bool");
  run_free((jd_case){KILN_OP_Reshape, 14, {RF(2, 0, 3), VEC(-1, 6)}, 2, 2, 1}, "reshape empty");
  run_free((jd_case){KILN_OP_Reshape, 14, {RF(5, 20000), VEC(100000)}, 2, 2, 1}, "reshape long");
  run_free((jd_case){KILN_OP_Flatten, 13, {RF(2, 3, 4, 5)}, 1, 0, 1, {AI("axis", 0)}}, "flatten 0");
  run_free((jd_case){KILN_OP_Flatten, 13, {RI32(2, 3, 4, 5)}, 1, 0, 1, {AI("axis", -2)}},
           "flatten -2");
  run_free((jd_case){KILN_OP_Squeeze, 11, {RF(1, 3, 1, 5)}, 1, 0, 1, {AV("axes", 0, 2)}},
           "squeeze 11");
  run_free((jd_case){KILN_OP_Squeeze, 13, {RF(1, 3, 1, 5), VEC(-2)}, 2, 2, 1}, "squeeze 13");
  run_free((jd_case){KILN_OP_Squeeze, 13, {RB(1, 1, 7)}, 1, 0, 1}, "squeeze all");
  run_free((jd_case){KILN_OP_Unsqueeze, 11, {RF(3, 5)}, 1, 0, 1, {AV("axes", 0, 3)}},
           "unsqueeze 11");
  run_free((jd_case){KILN_OP_Unsqueeze, 13, {RI(3, 5), VEC(-1, 1)}, 2, 2, 1}, "unsqueeze 13");
}

/* x -> Add(x, x) -> Reshape -> y: the planner runs the reshape in place (its kernel must then
 * leave the data alone), and the result still matches the reference. */
static kiln_graph *build_inplace(int64_t n, kiln_err *e) {
  kiln_graph *g = ir_graph_new();
  ir_set_opset(g, "", 14, e);
  int x, s, shp, y;
  ir_add_value(g, "x", &x, e);
  g->values[x].dtype = KILN_F32;
  g->values[x].shape = kiln_shape_make(2, DIMS(n, 3));
  g->values[x].typed = true;
  ir_add_input(g, x, e);
  kiln_tensor *st = VEC(3, -1);
  ir_add_const(g, "shape", st, true, &shp, e);
  ir_add_value(g, "s", &s, e);
  ir_add_value(g, "y", &y, e);
  ir_add_node(g, KILN_OP_Add, "add", (int[]){x, x}, 2, (int[]){s}, 1, NULL, e);
  ir_add_node(g, KILN_OP_Reshape, "reshape", (int[]){s, shp}, 2, (int[]){y}, 1, NULL, e);
  ir_add_output(g, y, e);
  ir_toposort(g, e);
  ir_infer(g, NULL, e);
  return g;
}

static void test_inplace_reshape(void) {
  kiln_err e = {0};
  int64_t n = 4099;
  kiln_graph *gref = build_inplace(n, &e), *gjit = build_inplace(n, &e);
  CHECK_OK(e.code, &e);
  kiln_tensor *x = RF(n, 3), *want = NULL, *got = NULL;
  kiln_ref_ctx ctx = {.g = gref};
  CHECK_OK(kiln_ref_run(gref, &ctx, &x, &want, &e), &e);
  kiln_program *p = NULL;
  kiln_compile_opts o = {.threads = 3, .cache_dir = ""};
  CHECK_OK(kiln_compile(gjit, &o, &p, &e), &e);
  if (p) {
    bool aliased = false;
    for (int64_t b = 0; b < p->n_bufs; b++)
      aliased |= p->bufs[b].alias_of >= 0;
    CHECK(aliased);
    CHECK_OK(kiln_program_run(p, &x, &got, false, &e), &e);
    CHECK(jd_close(got, want, 0, 0, "in-place reshape"));
    kiln_program_free(p);
  }
  kiln_tensor_free(x), kiln_tensor_free(want), kiln_tensor_free(got);
  ir_graph_free(gref);
}

static void test_transpose(void) {
  run_free((jd_case){KILN_OP_Transpose, 13, {RF(130, 257)}, 1, 0, 1}, "transpose 2d default");
  run_free((jd_case){KILN_OP_Transpose, 13, {RI(3, 1, 4, 5)}, 1, 0, 1, {AV("perm", 0, 2, 3, 1)}},
           "transpose nchw->nhwc i64");
  run_free((jd_case){KILN_OP_Transpose, 13, {RB(2, 3, 5)}, 1, 0, 1, {AV("perm", 2, 0, 1)}},
           "transpose bool");
  run_free((jd_case){KILN_OP_Transpose, 13, {RF(2, 0, 5)}, 1, 0, 1, {AV("perm", 2, 0, 1)}},
           "transpose empty");
  run_free((jd_case){KILN_OP_Transpose, 13, {RF(1, 40000)}, 1, 0, 1}, "transpose long row");
  run_free(
      (jd_case){KILN_OP_Transpose, 13, {RF(3, 7, 1, 2, 5)}, 1, 0, 1, {AV("perm", 4, 1, 2, 0, 3)}},
      "transpose rank 5");
  run_free((jd_case){KILN_OP_Transpose, 13, {RF(6, 4)}, 1, 0, 1, {AV("perm", 0, 1)}},
           "transpose identity");
  int64_t perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
  for (int i = 0; i < 6; i++) {
    jd_case c = {KILN_OP_Transpose, 13, {RI32(17, 3, 33)}, 1, 0, 1};
    c.attrs[0] = (jd_attr){.name = "perm", .kind = 'I', .v = perms[i], .n = 3};
    run_free(c, "transpose perms");
  }
}

static void test_concat(void) {
  run_free(
      (jd_case){
          KILN_OP_Concat, 13, {RF(2, 3, 4), RF(2, 5, 4), RF(2, 1, 4)}, 3, 0, 1, {AI("axis", 1)}},
      "concat axis 1");
  run_free((jd_case){KILN_OP_Concat, 13, {RI(3, 5), RI(3, 2)}, 2, 2, 1, {AI("axis", -1)}},
           "concat last, const input");
  run_free((jd_case){KILN_OP_Concat, 13, {RB(1, 7), RB(4, 7)}, 2, 0, 1, {AI("axis", 0)}},
           "concat bool axis 0");
  run_free((jd_case){KILN_OP_Concat, 13, {RF(2, 0, 3), RF(2, 3, 3)}, 2, 0, 1, {AI("axis", 1)}},
           "concat with an empty input");
  run_free((jd_case){KILN_OP_Concat, 13, {RF(2, 20000), RF(2, 30001)}, 2, 0, 1, {AI("axis", 1)}},
           "concat long rows");
  run_free((jd_case){KILN_OP_Concat, 4, {RF(7)}, 1, 0, 1, {AI("axis", 0)}}, "concat one input");
}

static void test_split(void) {
  run_free((jd_case){KILN_OP_Split, 11, {RF(6, 5)}, 1, 0, 3}, "split equal axis 0");
  run_free(
      (jd_case){KILN_OP_Split, 11, {RI(3, 10)}, 1, 0, 3, {AI("axis", -1), AV("split", 2, 0, 8)}},
      "split variable with zero part");
  run_free((jd_case){KILN_OP_Split, 13, {RF(2, 7, 3), VEC(3, 4)}, 2, 2, 2, {AI("axis", 1)}},
           "split 13 input");
  run_free((jd_case){KILN_OP_Split, 13, {RB(4, 4, 1)}, 1, 0, 2, {AI("axis", 1)}}, "split bool");
  run_free((jd_case){KILN_OP_Split, 13, {RF(3, 40002)}, 1, 0, 2, {AI("axis", 1)}}, "split long");
}

static void test_slice(void) {
  run_free((jd_case){KILN_OP_Slice,
                     13,
                     {RF(20, 10, 5), VEC(0, 0), VEC(3, 10), VEC(0, 1), VEC(1, 1)},
                     5,
                     0x1e,
                     1},
           "slice basic");
  run_free((jd_case){KILN_OP_Slice,
                     13,
                     {RF(20, 10, 5), VEC(20, 10, 4), VEC(0, 0, 1), VEC(0, 1, 2), VEC(-1, -3, -2)},
                     5,
                     0x1e,
                     1},
           "slice negative steps");
  run_free(
      (jd_case){KILN_OP_Slice, 13, {RI(20, 10, 5), VEC(1000), VEC(1000), VEC(1), NULL}, 5, 0x1e, 1},
      "slice start out of bounds (empty)");
  run_free((jd_case){KILN_OP_Slice,
                     13,
                     {RI32(9, 11), VEC(-7, 2), VEC(-1, 1000), VEC(-1, -2), VEC(3, 2)},
                     5,
                     0x1e,
                     1},
           "slice negative axes, steps");
  run_free(
      (jd_case){KILN_OP_Slice, 9, {RB(5, 6)}, 1, 0, 1, {AV("starts", 1, 0), AV("ends", 4, -1)}},
      "slice opset 9 attrs");
  run_free(
      (jd_case){KILN_OP_Slice, 13, {RF(2, 50000), VEC(3), VEC(49999), VEC(1), NULL}, 5, 0x1e, 1},
      "slice long rows");
}

static void test_gather(void) {
  run_free((jd_case){KILN_OP_Gather, 13, {RF(5, 4, 3), VEC(0, 4, -1, 2)}, 2, 0, 1},
           "gather axis 0");
  run_free((jd_case){KILN_OP_Gather,
                     13,
                     {RI(5, 4, 3), ti32(2, DIMS(2, 2), (int32_t[]){3, -4, 0, 1})},
                     2,
                     0,
                     1,
                     {AI("axis", 1)}},
           "gather axis 1 i32 2-d indices");
  run_free(
      (jd_case){
          KILN_OP_Gather, 13, {RB(5, 4, 3), ti64(0, DIMS(0), IV(-1))}, 2, 0, 1, {AI("axis", -1)}},
      "gather scalar index, last axis");
  run_free((jd_case){KILN_OP_Gather, 13, {RF(3, 4), EMPTY_VEC()}, 2, 0, 1}, "gather no indices");
  run_free((jd_case){KILN_OP_Gather, 13, {RF(7, 30000), VEC(6, 0, 3)}, 2, 2, 1},
           "gather long rows");
  run_free(
      (jd_case){
          KILN_OP_Gather, 13, {RF(100, 3), VEC(5, 9, 99, 0, 1, 2, 3, 4, 5, 6, 7, 8)}, 2, 0, 1},
      "gather const indices");
}

/* An index outside [-dim, dim) fed at run time: the reference reports an error, and so
 * does the compiled program (the kernel flags the program's status word). */
static void test_gather_out_of_range(void) {
  jd_case c = {KILN_OP_Gather, 13, {RF(4, 3), VEC(1, 4, -5, -4)}, 2, 0, 1};
  one_node t;
  kiln_tensor *want = NULL, *got[1] = {0};
  kiln_err e = {0};
  CHECK_OK(jd_build(&c, &t), &t.e);
  kiln_ref_ctx ctx = {.g = t.g};
  CHECK(kiln_ref_run(t.g, &ctx, c.in, &want, &t.e) == KILN_ERR_SHAPE);
  CHECK(strstr(t.e.msg, "out of range") != NULL);
  ir_graph_free(t.g);
  CHECK(jd_jit(&c, 2, got, &e) == KILN_ERR_INVALID);
  CHECK(strstr(e.msg, "out of range") != NULL && strstr(e.msg, "Gather") != NULL);
  CHECK(got[0] == NULL);
  kiln_tensor_free(want), kiln_tensor_free(got[0]);
  jd_free(&c);
}

static void test_expand(void) {
  run_free((jd_case){KILN_OP_Expand, 13, {RF(3, 1), VEC(2, 3, 4)}, 2, 2, 1}, "expand 3x1 -> 2x3x4");
  run_free((jd_case){KILN_OP_Expand, 13, {RI(3, 1), VEC(1, 5)}, 2, 2, 1}, "expand both ways");
  run_free((jd_case){KILN_OP_Expand, 13, {RB(1), VEC(5, 1)}, 2, 2, 1}, "expand bool");
  run_free((jd_case){KILN_OP_Expand, 13, {ti64(0, DIMS(0), IV(7)), VEC(3, 3)}, 2, 2, 1},
           "expand scalar");
  run_free((jd_case){KILN_OP_Expand, 13, {RF(1, 70000), VEC(3, 1)}, 2, 2, 1}, "expand long");
  run_free((jd_case){KILN_OP_Expand, 13, {RF(2, 1, 5), VEC(2, 0, 5)}, 2, 2, 1}, "expand to empty");
  run_free((jd_case){KILN_OP_Expand, 13, {RF(4, 1, 3, 1), VEC(4, 5, 3, 6)}, 2, 2, 1},
           "expand interleaved");
}

static void test_constants(void) {
  kiln_tensor *vf = ti64(1, DIMS(1), IV(-3));
  kiln_tensor *ff = tf(1, DIMS(1), FV(2.5f));
  run_free((jd_case){KILN_OP_ConstantOfShape, 12, {VEC(3, 1, 5)}, 1, 1, 1, {AT("value", vf)}},
           "constantofshape i64");
  run_free((jd_case){KILN_OP_ConstantOfShape, 12, {VEC(301, 203)}, 1, 1, 1, {AT("value", ff)}},
           "constantofshape f32 large");
  run_free((jd_case){KILN_OP_ConstantOfShape, 12, {VEC(4, 4)}, 1, 1, 1}, "constantofshape default");
  run_free((jd_case){KILN_OP_ConstantOfShape, 12, {VEC(4, 0)}, 1, 1, 1}, "constantofshape empty");
  kiln_tensor *cv = RI(3, 4);
  run_free((jd_case){KILN_OP_Constant, 13, {NULL}, 0, 0, 1, {AT("value", cv)}, .unfold = true},
           "constant tensor (unfolded)");
  run_free(
      (jd_case){
          KILN_OP_Constant, 13, {NULL}, 0, 0, 1, {AFV("value_floats", 1.5, -2, 3)}, .unfold = true},
      "constant value_floats (unfolded)");
  run_free((jd_case){KILN_OP_Shape,
                     15,
                     {RF(2, 3, 5, 7)},
                     1,
                     0,
                     1,
                     {AI("start", 1), AI("end", -1)},
                     .unfold = true},
           "shape (unfolded)");
  kiln_tensor_free(vf), kiln_tensor_free(ff), kiln_tensor_free(cv);
}

int main(void) {
  RUN(test_reshape_like);
  RUN(test_inplace_reshape);
  RUN(test_transpose);
  RUN(test_concat);
  RUN(test_split);
  RUN(test_slice);
  RUN(test_gather);
  RUN(test_gather_out_of_range);
  RUN(test_expand);
  RUN(test_constants);
  (void)on_run, (void)on_end, (void)on_node;
  TEST_MAIN_END();
}
