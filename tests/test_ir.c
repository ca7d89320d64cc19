/* test_ir.c — graph construction, verifier, toposort, inference, printing and
 * the reference interpreter on hand-built graphs. */
#include "ir/graph.h"
#include "runtime/ref.h"
#include "test.h"

static kiln_graph *build_add_relu(kiln_err *e) {
  kiln_graph *g = ir_graph_new();
  if (!g) {
    kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    return NULL;
  }
  int x, b, s, y;
  kiln_tensor *bt = NULL;
  if (ir_add_value(g, "x", &x, e)) return g;
  g->values[x].dtype = KILN_F32;
  g->values[x].shape = kiln_shape_make(2, (int64_t[]){2, 3});
  g->values[x].typed = true;
  if (ir_add_input(g, x, e)) return g;
  if (kiln_tensor_new(KILN_F32, &(kiln_shape){.rank = 1, .d = {3}}, &bt, e)) return g;
  for (int i = 0; i < 3; i++) ((float *)bt->data)[i] = (float)(i - 1);
  if (ir_add_const(g, "b", bt, true, &b, e)) return g;
  if (ir_add_value(g, "s", &s, e) || ir_add_value(g, "y", &y, e)) return g;
  if (ir_add_node(g, KILN_OP_Relu, "relu", (int[]){s}, 1, (int[]){y}, 1, NULL, e)) return g;
  if (ir_add_node(g, KILN_OP_Add, "add", (int[]){x, b}, 2, (int[]){s}, 1, NULL, e)) return g;
  ir_add_output(g, y, e);
  return g;
}

static void test_build_infer_run(void) {
  kiln_err e = {0};
  kiln_graph *g = build_add_relu(&e);
  CHECK(e.code == KILN_OK);
  CHECK_OK(ir_toposort(g, &e), &e);
  CHECK(g->nodes[0].op == KILN_OP_Add);
  CHECK_OK(ir_verify(g, &e), &e);
  kiln_evaluator ev = kiln_ref_evaluator();
  CHECK_OK(ir_infer(g, &ev, &e), &e);
  CHECK(g->values[ir_find_value(g, "y")].shape.rank == 2);
  kiln_tensor *x, *y = NULL;
  kiln_tensor_new(KILN_F32, &(kiln_shape){.rank = 2, .d = {2, 3}}, &x, &e);
  for (int i = 0; i < 6; i++) ((float *)x->data)[i] = (float)i * 0.5f - 1.0f;
  kiln_ref_ctx ctx = {.g = g};
  CHECK_OK(kiln_ref_run(g, &ctx, &x, &y, &e), &e);
  for (int i = 0; i < 6; i++) {
    float want = ((float)i * 0.5f - 1.0f) + (float)(i % 3 - 1);
    CHECK_CLOSE(((float *)y->data)[i], want > 0 ? want : 0, 0, 0);
  }
  kiln_tensor_free(x);
  kiln_tensor_free(y);
  ir_graph_free(g);
}

static void test_cycle_detected(void) {
  kiln_err e = {0};
  kiln_graph *g = ir_graph_new();
  int a, b;
  ir_add_value(g, "a", &a, &e);
  ir_add_value(g, "b", &b, &e);
  ir_add_node(g, KILN_OP_Relu, "r1", (int[]){a}, 1, (int[]){b}, 1, NULL, &e);
  ir_add_node(g, KILN_OP_Relu, "r2", (int[]){b}, 1, (int[]){a}, 1, NULL, &e);
  ir_add_output(g, b, &e);
  CHECK(ir_toposort(g, &e) == KILN_ERR_INVALID);
  CHECK(strstr(e.msg, "cycle") != NULL);
  ir_graph_free(g);
}

static void test_broadcast_error(void) {
  kiln_err e = {0};
  kiln_shape a = kiln_shape_make(2, (int64_t[]){2, 3}), b = kiln_shape_make(1, (int64_t[]){4}), o;
  CHECK(ir_broadcast(&a, &b, &o, &e) == KILN_ERR_SHAPE);
  kiln_err_clear(&e);
  b = kiln_shape_make(3, (int64_t[]){5, 1, 3});
  CHECK_OK(ir_broadcast(&a, &b, &o, &e), &e);
  CHECK(o.rank == 3 && o.d[0] == 5 && o.d[1] == 2 && o.d[2] == 3);
}

static void test_overflow_limits(void) {
  kiln_shape s = kiln_shape_make(3, (int64_t[]){1LL << 30, 1LL << 30, 1LL << 30});
  int64_t n;
  CHECK(!kiln_shape_numel(&s, &n));
  kiln_err e = {0};
  kiln_tensor *t = NULL;
  CHECK(kiln_tensor_new(KILN_F32, &s, &t, &e) == KILN_ERR_LIMIT);
  CHECK(t == NULL);
}

static void test_failing_allocator(void) {
  /* Every allocation failure while building and running a graph becomes an error. */
  for (long k = 0; k < 200; k++) {
    kiln_err e = {0};
    kiln_alloc_fail_after(k);
    kiln_graph *g = build_add_relu(&e);
    kiln_code rc = e.code;
    if (!rc) rc = ir_toposort(g, &e);
    if (!rc) rc = ir_verify(g, &e);
    kiln_evaluator ev = kiln_ref_evaluator();
    if (!rc) rc = ir_infer(g, &ev, &e);
    kiln_alloc_fail_after(-1);
    CHECK(rc == KILN_OK || rc == KILN_ERR_NOMEM || rc == KILN_ERR_INVALID);
    ir_graph_free(g);
  }
}

int main(void) {
  RUN(test_build_infer_run);
  RUN(test_cycle_detected);
  RUN(test_broadcast_error);
  RUN(test_overflow_limits);
  RUN(test_failing_allocator);
  TEST_MAIN_END();
}
