/* test_grad.c — the autodiff driver and the elementwise gradient rules, checked
 * against finite differences (tests/gradcheck.h). */
#include "gradcheck.h"

static int add_input(kiln_graph *g, const char *name, int rank, const int64_t *d, kiln_err *e) {
  int v;
  ir_add_value(g, name, &v, e);
  g->values[v].dtype = KILN_F32;
  g->values[v].shape = kiln_shape_make(rank, d);
  g->values[v].typed = true;
  ir_add_input(g, v, e);
  return v;
}

/* y = op(a [, b]) with broadcasting shapes; checks d/da and d/db. */
static void check_op(kiln_op op, int n_in, int ra, const int64_t *da, int rb, const int64_t *db,
                     double lo, double hi) {
  kiln_err e = {0};
  kiln_graph *g = ir_graph_new();
  int a = add_input(g, "a", ra, da, &e), b = n_in > 1 ? add_input(g, "b", rb, db, &e) : -1, y;
  ir_add_value(g, "y", &y, &e);
  ir_add_node(g, op, "op", (int[]){a, b}, n_in, (int[]){y}, 1, NULL, &e);
  ir_add_output(g, y, &e);
  kiln_evaluator ev = kiln_ref_evaluator();
  CHECK_OK(ir_infer(g, &ev, &e), &e);
  kiln_tensor *in[2] = {0};
  uint64_t seed = (uint64_t)op * 977;
  for (int i = 0; i < n_in; i++) {
    kiln_tensor_new(KILN_F32, &g->values[g->inputs[i]].shape, &in[i], &e);
    gc_fill(in[i], &seed, lo, hi);
  }
  int wrt[2] = {0, 1};
  if (gradcheck(g, in, wrt, n_in, 1e-2, 1e-3)) fprintf(stderr, "  (op %s)\n", kiln_op_name(op));
  for (int i = 0; i < n_in; i++) kiln_tensor_free(in[i]);
  ir_graph_free(g);
}

static void test_binary(void) {
  int64_t s23[] = {2, 3}, s3[] = {3}, s21[] = {2, 1};
  kiln_op ops[] = {KILN_OP_Add, KILN_OP_Sub, KILN_OP_Mul, KILN_OP_Div};
  for (int i = 0; i < 4; i++) {
    check_op(ops[i], 2, 2, s23, 2, s23, 0.5, 2.0);
    check_op(ops[i], 2, 2, s23, 1, s3, 0.5, 2.0);  /* broadcast b over rows */
    check_op(ops[i], 2, 2, s21, 2, s23, 0.5, 2.0); /* broadcast a over columns */
  }
}

static void test_unary(void) {
  int64_t s[] = {2, 5};
  kiln_op ops[] = {KILN_OP_Neg, KILN_OP_Sigmoid, KILN_OP_Tanh, KILN_OP_Exp, KILN_OP_Identity};
  for (int i = 0; i < 5; i++) check_op(ops[i], 1, 2, s, 0, NULL, -1.5, 1.5);
  check_op(KILN_OP_Log, 1, 2, s, 0, NULL, 0.5, 3.0);
  check_op(KILN_OP_Sqrt, 1, 2, s, 0, NULL, 0.5, 3.0);
  check_op(KILN_OP_Relu, 1, 2, s, 0, NULL, 0.2, 1.5);   /* away from the kink */
  check_op(KILN_OP_Relu, 1, 2, s, 0, NULL, -1.5, -0.2);
}

/* A value used twice accumulates: y = x*x + x. */
static void test_accumulate(void) {
  kiln_err e = {0};
  kiln_graph *g = ir_graph_new();
  int64_t d[] = {4};
  int x = add_input(g, "x", 1, d, &e), sq, y;
  ir_add_value(g, "sq", &sq, &e);
  ir_add_value(g, "y", &y, &e);
  ir_add_node(g, KILN_OP_Mul, "sq", (int[]){x, x}, 2, (int[]){sq}, 1, NULL, &e);
  ir_add_node(g, KILN_OP_Add, "y", (int[]){sq, x}, 2, (int[]){y}, 1, NULL, &e);
  ir_add_output(g, y, &e);
  kiln_evaluator ev = kiln_ref_evaluator();
  CHECK_OK(ir_infer(g, &ev, &e), &e);
  kiln_tensor *in;
  kiln_tensor_new(KILN_F32, &g->values[x].shape, &in, &e);
  uint64_t seed = 3;
  gc_fill(in, &seed, -2, 2);
  gradcheck(g, &in, (int[]){0}, 1, 1e-2, 1e-3);
  kiln_tensor_free(in);
  ir_graph_free(g);
}

/* Missing rules are reported with the node's name, not a crash. */
static void test_missing_rule(void) {
  kiln_err e = {0};
  kiln_graph *g = ir_graph_new();
  int64_t d[] = {4};
  int x = add_input(g, "x", 1, d, &e), y;
  ir_add_value(g, "y", &y, &e);
  ir_add_node(g, KILN_OP_Floor, "floor_node", (int[]){x}, 1, (int[]){y}, 1, NULL, &e);
  ir_add_output(g, y, &e);
  kiln_evaluator ev = kiln_ref_evaluator();
  CHECK_OK(ir_infer(g, &ev, &e), &e);
  int grads[1];
  kiln_autodiff_opts o = {.loss = y, .wrt = &x, .n_wrt = 1, .seed = -1};
  kiln_code rc = kiln_autodiff(g, &o, grads, &e);
  CHECK(rc == KILN_OK || strstr(e.msg, "floor_node") != NULL);
  ir_graph_free(g);
}

int main(void) {
  RUN(test_binary);
  RUN(test_unary);
  RUN(test_accumulate);
  RUN(test_missing_rule);
  TEST_MAIN_END();
}
