/* test_ops_tensor.c — the tensor/shape ops (Constant, ConstantOfShape, Shape, Flatten,
 * Reshape, Squeeze, Unsqueeze, Transpose, Concat, Split, Slice, Gather, Expand) on
 * hand-built graphs: shape inference, reference kernels, folding of shape chains and
 * the errors bad input gives. */
#include <stdint.h>

#include "ir/graph.h"
#include "runtime/ref.h"
#include "test.h"

#define I64S(...) ((const int64_t[]){__VA_ARGS__})
#define NARGS(...) ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
/* A shape literal: SHP(2, 3) */
#define SHP(...) kiln_shape_make(NARGS(__VA_ARGS__), I64S(__VA_ARGS__))
#define SCALAR kiln_shape_make(0, NULL)
#define NELEM_CASES(a) ((int)(sizeof(a) / sizeof((a)[0])))

static kiln_tensor *tensor_of(kiln_dtype dt, kiln_shape s, const int64_t *vals) {
  kiln_err e = {0};
  kiln_tensor *t = NULL;
  if (kiln_tensor_new(dt, &s, &t, &e)) return NULL;
  for (int64_t i = 0; i < t->numel; i++) {
    int64_t v = vals ? vals[i] : i;
    if (dt == KILN_I64) /* exact, also for INT64_MAX which a double cannot hold */
      ((int64_t *)t->data)[i] = v;
    else
      kiln_tensor_set_f(t, i, (double)v);
  }
  return t;
}
/* 1-D int64 tensor of the listed values: I64T(3, 4, -1) */
#define I64T(...) tensor_of(KILN_I64, SHP(NARGS(__VA_ARGS__)), I64S(__VA_ARGS__))
/* An empty 1-D int64 tensor. */
#define I64T_EMPTY() tensor_of(KILN_I64, SHP(0), NULL)
/* float32 0, 1, 2, ... of shape s */
#define IOTA(s) tensor_of(KILN_F32, (s), NULL)

/* Checks t's shape and its values (read as integers). */
static void check_tensor(const kiln_tensor *t, kiln_shape s, const int64_t *vals, int line) {
  char a[160], b[160];
  test_checks_++;
  if (!t) {
    fprintf(stderr, "%s:%d: no tensor\n", __FILE__, line);
    test_failures_++;
    return;
  }
  if (!kiln_shape_eq(&t->shape, &s)) {
    fprintf(stderr, "%s:%d: shape %s, expected %s\n", __FILE__, line,
            kiln_shape_str(&t->shape, a, sizeof a), kiln_shape_str(&s, b, sizeof b));
    test_failures_++;
    return;
  }
  for (int64_t i = 0; vals && i < t->numel; i++)
    if (kiln_tensor_get_f(t, i) != (double)vals[i]) {
      fprintf(stderr, "%s:%d: element %lld is %g, expected %lld\n", __FILE__, line, (long long)i,
              kiln_tensor_get_f(t, i), (long long)vals[i]);
      test_failures_++;
      return;
    }
}
#define CHECK_T(t, s, ...) check_tensor((t), (s), I64S(__VA_ARGS__), __LINE__)
#define CHECK_SHAPE(t, s) check_tensor((t), (s), NULL, __LINE__)
/* Checks that an error has `code` and mentions `text`, then clears it. */
#define CHECK_ERR(call, err, want, text)                                                           \
  do {                                                                                             \
    kiln_code rc_ = (call);                                                                        \
    CHECK_MSG(rc_ == (want) && strstr((err)->msg, (text)), "got %s: %s", kiln_code_name(rc_),      \
              (err)->msg);                                                                         \
    kiln_err_clear(err);                                                                           \
  } while (0)

/* ---- graph building ---- */

static int new_value(kiln_graph *g, const char *name, kiln_err *e) {
  int id = ir_find_value(g, name);
  if (id >= 0) return id;
  if (ir_add_value(g, name, &id, e)) return -1;
  return id;
}

static int add_input(kiln_graph *g, const char *name, kiln_dtype dt, kiln_shape s, kiln_err *e) {
  int id = new_value(g, name, e);
  if (id < 0) return -1;
  g->values[id].dtype = dt;
  g->values[id].shape = s;
  g->values[id].typed = true;
  ir_add_input(g, id, e);
  return id;
}

static int add_const(kiln_graph *g, const char *name, kiln_tensor *t, kiln_err *e) {
  int id = -1;
  if (!t) {
    kiln_errf(e, KILN_ERR_NOMEM, "out of memory (test tensor)");
    return -1;
  }
  if (ir_add_const(g, name, t, true, &id, e)) return -1;
  return id;
}

/* Adds node `name` = op(ins...) -> outs...; inputs/outputs are value names ("" = omitted).
 * Returns the node id. */
static int add_node(kiln_graph *g, kiln_op op, const char *name, const char *const *ins, int nin,
                    const char *const *outs, int nout, kiln_err *e) {
  int in[16], out[16], id = -1;
  for (int i = 0; i < nin; i++) in[i] = ins[i][0] ? new_value(g, ins[i], e) : -1;
  for (int i = 0; i < nout; i++) out[i] = outs[i][0] ? new_value(g, outs[i], e) : -1;
  if (ir_add_node(g, op, name, in, nin, out, nout, &id, e)) return -1;
  return id;
}
#define NAMES(...) ((const char *const[]){__VA_ARGS__})
#define NNAMES(...) ((int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(char *)))
#define NODE(g, op, name, ins, outs, e)                                                            \
  add_node((g), KILN_OP_##op, (name), NAMES ins, NNAMES ins, NAMES outs, NNAMES outs, (e))

static kiln_graph *new_graph_e(int opset, kiln_err *e) {
  kiln_graph *g = ir_graph_new();
  if (!g) {
    kiln_errf(e, KILN_ERR_NOMEM, "out of memory (graph)");
    return NULL;
  }
  if (ir_set_opset(g, "", opset, e)) {
    ir_graph_free(g);
    return NULL;
  }
  return g;
}

static kiln_graph *new_graph(int opset) {
  kiln_err e = {0};
  return new_graph_e(opset, &e);
}

static void free_all(kiln_tensor **t, int n) {
  for (int i = 0; i < n; i++) kiln_tensor_free(t[i]);
}

/* Sorts, verifies and infers (folding constants with the reference kernels). */
static kiln_code prepare(kiln_graph *g, kiln_err *e) {
  KILN_TRY(ir_toposort(g, e));
  KILN_TRY(ir_verify(g, e));
  kiln_evaluator ev = kiln_ref_evaluator();
  return ir_infer(g, &ev, e);
}

/* Runs g on `given` inputs (NULL entries: iota of the input's dtype and shape) and
 * returns the outputs, which the caller frees. */
static kiln_code run(kiln_graph *g, kiln_tensor **given, kiln_tensor **outs, kiln_err *e) {
  kiln_tensor *ins[8] = {0}, *made[8] = {0};
  for (int i = 0; i < g->n_outputs; i++) outs[i] = NULL;
  for (int i = 0; i < g->n_inputs && i < 8; i++) {
    const kiln_value *v = &g->values[g->inputs[i]];
    ins[i] = given && given[i] ? given[i] : (made[i] = tensor_of(v->dtype, v->shape, NULL));
    if (!ins[i]) {
      free_all(made, 8);
      return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (test input)");
    }
  }
  kiln_ref_ctx ctx = {.g = g};
  kiln_code rc = kiln_ref_run(g, &ctx, ins, outs, e);
  for (int i = 0; i < 8; i++) kiln_tensor_free(made[i]);
  return rc;
}

/* Adds every named value as a graph output. */
static void outputs(kiln_graph *g, const char *const *names, int n, kiln_err *e) {
  for (int i = 0; i < n; i++) ir_add_output(g, ir_find_value(g, names[i]), e);
}
#define OUTPUTS(g, e, ...) outputs((g), NAMES(__VA_ARGS__), NNAMES(__VA_ARGS__), (e))

static const kiln_value *val(const kiln_graph *g, const char *name) {
  return &g->values[ir_find_value(g, name)];
}


/* A graph y = op(x, c1, c2, ...) with graph input x (float32 of shape xs) and constant
 * inputs c1.. (NULL: omitted).  *node receives the node id for setting attributes. */
static kiln_graph *one_op(kiln_op op, int opset, kiln_shape xs, kiln_tensor *const *consts,
                          int n_consts, int nout, int *node, kiln_err *e) {
  kiln_graph *g = new_graph(opset);
  char names[8][16];
  const char *ins[8], *outs[8];
  add_input(g, "x", KILN_F32, xs, e);
  ins[0] = "x";
  for (int i = 0; i < n_consts; i++) {
    snprintf(names[i], sizeof names[i], "c%d", i + 1);
    ins[i + 1] = consts[i] ? names[i] : "";
    if (consts[i]) add_const(g, names[i], consts[i], e);
  }
  for (int i = 0; i < nout; i++) {
    snprintf(names[4 + i], sizeof names[4 + i], "y%d", i);
    outs[i] = names[4 + i];
  }
  *node = add_node(g, op, "op", ins, 1 + n_consts, outs, nout, e);
  outputs(g, outs, nout, e);
  return g;
}
#define CONSTS(...) ((kiln_tensor *const[]){__VA_ARGS__})
#define NCONSTS(...) ((int)(sizeof((kiln_tensor *[]){__VA_ARGS__}) / sizeof(kiln_tensor *)))
/* ONE(op, opset, xshape, outputs, &node, &e, consts...) */
#define ONE(op, opset, xs, nout, node, e, ...)                                                    \
  one_op(KILN_OP_##op, (opset), (xs), CONSTS(__VA_ARGS__), NCONSTS(__VA_ARGS__), (nout), (node),  \
         (e))
#define ONE0(op, opset, xs, nout, node, e)                                                        \
  one_op(KILN_OP_##op, (opset), (xs), NULL, 0, (nout), (node), (e))

/* Prepares and runs a one_op graph; returns output 0 (and 1.. in outs). */
static kiln_code eval(kiln_graph *g, kiln_tensor **outs, kiln_err *e) {
  for (int i = 0; i < g->n_outputs; i++) outs[i] = NULL;
  KILN_TRY(prepare(g, e));
  return run(g, NULL, outs, e);
}

/* ---- Constant ---- */

static void test_constant(void) {
  kiln_err e = {0};
  kiln_tensor *y[2];
  /* value tensor, then a Reshape that needs its data at inference time */
  kiln_graph *g = new_graph(13);
  add_input(g, "x", KILN_F32, SHP(2, 3), &e);
  int c = NODE(g, Constant, "c", (), ("shape"), &e);
  ir_set_attr_tensor(g, c, "value", I64T(3, -1), &e);
  NODE(g, Reshape, "r", ("x", "shape"), ("y"), &e);
  OUTPUTS(g, &e, "y", "shape");
  CHECK_OK(e.code, &e);
  CHECK_OK(prepare(g, &e), &e);
  CHECK(val(g, "shape")->data != NULL);
  CHECK_SHAPE(&(kiln_tensor){.shape = val(g, "y")->shape}, SHP(3, 2));
  CHECK_OK(run(g, NULL, y, &e), &e);
  CHECK_T(y[0], SHP(3, 2), 0, 1, 2, 3, 4, 5);
  CHECK_T(y[1], SHP(2), 3, -1);
  free_all(y, 2);
  /* Inference is repeatable (the data is replaced, not leaked or duplicated). */
  CHECK_OK(prepare(g, &e), &e);
  ir_graph_free(g);

  struct {
    const char *attr;
    kiln_dtype dt;
    kiln_shape s;
    int64_t v0;
  } cases[] = {{"value_float", KILN_F32, SCALAR, 2},
               {"value_floats", KILN_F32, SHP(3), 1},
               {"value_int", KILN_I64, SCALAR, -7},
               {"value_ints", KILN_I64, SHP(3), 4}};
  for (int k = 0; k < 4; k++) {
    g = new_graph(13);
    c = NODE(g, Constant, "c", (), ("y"), &e);
    if (k == 0) ir_set_attr_float(g, c, "value_float", 2.0, &e);
    if (k == 1) ir_set_attr_floats(g, c, "value_floats", (const double[]){1, 2.5, -3}, 3, &e);
    if (k == 2) ir_set_attr_int(g, c, "value_int", -7, &e);
    if (k == 3) ir_set_attr_ints(g, c, "value_ints", I64S(4, 5, 6), 3, &e);
    OUTPUTS(g, &e, "y");
    CHECK_OK(eval(g, y, &e), &e);
    CHECK_MSG(y[0] && y[0]->dtype == cases[k].dt, "%s", cases[k].attr);
    CHECK_SHAPE(y[0], cases[k].s);
    CHECK(y[0] && kiln_tensor_get_f(y[0], 0) == (double)cases[k].v0);
    if (k == 1) CHECK(y[0] && ((float *)y[0]->data)[1] == 2.5f);
    free_all(y, 1);
    ir_graph_free(g);
  }

  /* strings and sparse tensors are refused; exactly one value attribute is required */
  g = new_graph(13);
  c = NODE(g, Constant, "strc", (), ("y"), &e);
  ir_set_attr_str(g, c, "value_string", "hello", &e);
  OUTPUTS(g, &e, "y");
  CHECK_ERR(prepare(g, &e), &e, KILN_ERR_UNSUPPORTED, "Constant node 'strc': string Constants");
  ir_graph_free(g);
  g = new_graph(13);
  c = NODE(g, Constant, "two", (), ("y"), &e);
  ir_set_attr_int(g, c, "value_int", 1, &e);
  ir_set_attr_float(g, c, "value_float", 1, &e);
  OUTPUTS(g, &e, "y");
  CHECK_ERR(prepare(g, &e), &e, KILN_ERR_INVALID, "exactly one value attribute");
  ir_graph_free(g);
}

/* ---- ConstantOfShape ---- */

static void test_constant_of_shape(void) {
  kiln_err e = {0};
  kiln_tensor *y[1];
  kiln_graph *g = new_graph(9);
  add_const(g, "s", I64T(2, 3), &e);
  int n = NODE(g, ConstantOfShape, "cos", ("s"), ("y"), &e);
  ir_set_attr_tensor(g, n, "value", tensor_of(KILN_I32, SHP(1), I64S(7)), &e);
  OUTPUTS(g, &e, "y");
  CHECK_OK(eval(g, y, &e), &e);
  CHECK(y[0] && y[0]->dtype == KILN_I32);
  CHECK_T(y[0], SHP(2, 3), 7, 7, 7, 7, 7, 7);
  free_all(y, 1);
  ir_graph_free(g);

  /* default value float 0; a zero dim gives an empty tensor; [] gives a scalar */
  g = new_graph(9);
  add_const(g, "s", I64T(0), &e);
  add_const(g, "s2", I64T_EMPTY(), &e);
  NODE(g, ConstantOfShape, "a", ("s"), ("y"), &e);
  NODE(g, ConstantOfShape, "b", ("s2"), ("z"), &e);
  OUTPUTS(g, &e, "y", "z");
  kiln_tensor *yz[2];
  CHECK_OK(eval(g, yz, &e), &e);
  CHECK(yz[0] && yz[0]->dtype == KILN_F32);
  CHECK_SHAPE(yz[0], SHP(0));
  CHECK_T(yz[1], SCALAR, 0);
  free_all(yz, 2);
  ir_graph_free(g);

  /* a shape that is not a constant is refused with a message naming it */
  g = new_graph(9);
  add_input(g, "dyn", KILN_I64, SHP(2), &e);
  NODE(g, ConstantOfShape, "cos", ("dyn"), ("y"), &e);
  OUTPUTS(g, &e, "y");
  CHECK_ERR(prepare(g, &e), &e, KILN_ERR_UNSUPPORTED, "input 'dyn' determines the output shape");
  ir_graph_free(g);
}

/* ---- Shape ---- */

static void test_shape(void) {
  kiln_err e = {0};
  kiln_tensor *y[1];
  struct {
    bool has_start, has_end;
    int64_t start, end;
    int n;
    int64_t want[3];
  } cases[] = {{false, false, 0, 0, 3, {2, 3, 4}}, {true, false, 1, 0, 2, {3, 4}},
               {false, true, 0, -1, 2, {2, 3}},    {true, false, -10, 0, 3, {2, 3, 4}},
               {false, true, 0, 10, 3, {2, 3, 4}}, {true, true, 1, -1, 1, {3}},
               {true, true, 2, 1, 0, {0}}};
  for (int k = 0; k < NELEM_CASES(cases); k++) {
    int n;
    kiln_graph *g = ONE0(Shape, 15, SHP(2, 3, 4), 1, &n, &e);
    if (cases[k].has_start) ir_set_attr_int(g, n, "start", cases[k].start, &e);
    if (cases[k].has_end) ir_set_attr_int(g, n, "end", cases[k].end, &e);
    /* Without an evaluator the output is still constant: infer sets the data. */
    CHECK_OK(ir_toposort(g, &e), &e);
    CHECK_OK(ir_infer(g, NULL, &e), &e);
    const kiln_tensor *d = val(g, "y0")->data;
    CHECK_MSG(d != NULL, "case %d", k);
    if (d) check_tensor(d, SHP(cases[k].n), cases[k].want, __LINE__);
    CHECK_OK(eval(g, y, &e), &e);
    if (y[0]) check_tensor(y[0], SHP(cases[k].n), cases[k].want, __LINE__);
    free_all(y, 1);
    ir_graph_free(g);
  }
}

/* ---- Flatten ---- */

static void test_flatten(void) {
  kiln_err e = {0};
  kiln_tensor *y[1];
  int64_t axes[] = {0, 1, 2, 3, -1, -3};
  kiln_shape want[] = {SHP(1, 24), SHP(2, 12), SHP(6, 4), SHP(24, 1), SHP(6, 4), SHP(1, 24)};
  for (int k = 0; k < 6; k++) {
    int n;
    kiln_graph *g = ONE0(Flatten, 13, SHP(2, 3, 4), 1, &n, &e);
    ir_set_attr_int(g, n, "axis", axes[k], &e);
    CHECK_OK(eval(g, y, &e), &e);
    CHECK_SHAPE(y[0], want[k]);
    CHECK(y[0] && kiln_tensor_get_f(y[0], 23) == 23);
    free_all(y, 1);
    ir_graph_free(g);
  }
  int n;
  kiln_graph *g = ONE0(Flatten, 13, SHP(2, 3, 4), 1, &n, &e);
  ir_set_attr_int(g, n, "axis", 4, &e);
  CHECK_ERR(eval(g, y, &e), &e, KILN_ERR_SHAPE, "axis 4 is out of range for input 'x' of rank 3");
  ir_graph_free(g);
}

/* ---- Reshape ---- */

static void test_reshape(void) {
  kiln_err e = {0};
  kiln_tensor *y[1];
  int n;
  kiln_graph *g = ONE(Reshape, 13, SHP(2, 3, 4), 1, &n, &e, I64T(4, -1));
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_SHAPE(y[0], SHP(4, 6));
  CHECK(y[0] && kiln_tensor_get_f(y[0], 13) == 13);
  free_all(y, 1);
  ir_graph_free(g);

  g = ONE(Reshape, 13, SHP(2, 3, 4), 1, &n, &e, I64T(0, 0, 2, -1)); /* 0 copies */
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_SHAPE(y[0], SHP(2, 3, 2, 2));
  free_all(y, 1);
  ir_graph_free(g);

  /* allowzero=1: 0 is a real zero-size dimension */
  g = ONE(Reshape, 14, SHP(0, 3, 4), 1, &n, &e, I64T(3, 4, 0));
  ir_set_attr_int(g, n, "allowzero", 1, &e);
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_SHAPE(y[0], SHP(3, 4, 0));
  free_all(y, 1);
  ir_graph_free(g);

  /* int64 data and a scalar target */
  g = new_graph(13);
  add_const(g, "d", I64T(42), &e);
  add_const(g, "s", I64T_EMPTY(), &e);
  NODE(g, Reshape, "r", ("d", "s"), ("y"), &e);
  OUTPUTS(g, &e, "y");
  CHECK_OK(prepare(g, &e), &e);
  CHECK(val(g, "y")->data != NULL);
  if (val(g, "y")->data) CHECK_T(val(g, "y")->data, SCALAR, 42);
  ir_graph_free(g);

  /* errors: element count mismatch, two -1, copying a dim the input lacks, a dynamic shape */
  g = ONE(Reshape, 13, SHP(2, 3, 4), 1, &n, &e, I64T(5, 5));
  CHECK_ERR(eval(g, y, &e), &e, KILN_ERR_SHAPE,
            "Reshape node 'op': cannot reshape input 'x' [2,3,4] (24 elements) to [5,5] "
            "(25 elements)");
  ir_graph_free(g);
  g = ONE(Reshape, 13, SHP(2, 3, 4), 1, &n, &e, I64T(5, -1));
  CHECK_ERR(eval(g, y, &e), &e, KILN_ERR_SHAPE, "not a multiple of 5");
  ir_graph_free(g);
  g = ONE(Reshape, 13, SHP(2, 3, 4), 1, &n, &e, I64T(-1, -1));
  CHECK_ERR(eval(g, y, &e), &e, KILN_ERR_SHAPE, "more than one -1");
  ir_graph_free(g);
  g = ONE(Reshape, 13, SHP(24), 1, &n, &e, I64T(24, 0));
  CHECK_ERR(eval(g, y, &e), &e, KILN_ERR_SHAPE, "copies dimension 1 (0)");
  ir_graph_free(g);
  g = new_graph(13);
  add_input(g, "x", KILN_F32, SHP(2, 3), &e);
  add_input(g, "s", KILN_I64, SHP(2), &e);
  NODE(g, Reshape, "r", ("x", "s"), ("y"), &e);
  OUTPUTS(g, &e, "y");
  CHECK_ERR(prepare(g, &e), &e, KILN_ERR_UNSUPPORTED,
            "Reshape node 'r': input 's' determines the output shape but is not a constant");
  ir_graph_free(g);
}

/* ---- Squeeze / Unsqueeze ---- */

static void test_squeeze_unsqueeze(void) {
  kiln_err e = {0};
  kiln_tensor *y[1];
  int n;
  /* opset 11: axes attribute (negative allowed) */
  kiln_graph *g = ONE0(Squeeze, 11, SHP(1, 3, 1, 5), 1, &n, &e);
  ir_set_attr_ints(g, n, "axes", I64S(-2), 1, &e);
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_SHAPE(y[0], SHP(1, 3, 5));
  free_all(y, 1);
  ir_graph_free(g);
  /* opset 13: axes input; absent axes squeeze every size-1 dim */
  g = ONE(Squeeze, 13, SHP(1, 3, 1, 5), 1, &n, &e, I64T(0, 2));
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_SHAPE(y[0], SHP(3, 5));
  CHECK(y[0] && kiln_tensor_get_f(y[0], 14) == 14);
  free_all(y, 1);
  ir_graph_free(g);
  g = ONE0(Squeeze, 13, SHP(1, 3, 1, 5), 1, &n, &e);
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_SHAPE(y[0], SHP(3, 5));
  free_all(y, 1);
  ir_graph_free(g);
  g = ONE(Squeeze, 13, SHP(1, 3, 1, 5), 1, &n, &e, I64T(1));
  CHECK_ERR(eval(g, y, &e), &e, KILN_ERR_SHAPE, "cannot squeeze axis 1 of input 'x' [1,3,1,5]");
  ir_graph_free(g);
  g = ONE(Squeeze, 13, SHP(1, 3, 1, 5), 1, &n, &e, I64T(4));
  CHECK_ERR(eval(g, y, &e), &e, KILN_ERR_SHAPE, "axis 4 is out of range for rank 4");
  ir_graph_free(g);

  /* Unsqueeze: axes index the output; unsorted and negative axes */
  g = ONE0(Unsqueeze, 11, SHP(3, 4), 1, &n, &e);
  ir_set_attr_ints(g, n, "axes", I64S(3, 0), 2, &e);
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_SHAPE(y[0], SHP(1, 3, 4, 1));
  free_all(y, 1);
  ir_graph_free(g);
  g = ONE(Unsqueeze, 13, SHP(3, 4), 1, &n, &e, I64T(-1, 1));
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_SHAPE(y[0], SHP(3, 1, 4, 1));
  CHECK(y[0] && kiln_tensor_get_f(y[0], 11) == 11);
  free_all(y, 1);
  ir_graph_free(g);
  g = ONE(Unsqueeze, 13, SHP(3, 4), 1, &n, &e, I64T(1, -3));
  CHECK_ERR(eval(g, y, &e), &e, KILN_ERR_SHAPE, "appears twice");
  ir_graph_free(g);
  g = ONE(Unsqueeze, 13, SHP(3, 4), 1, &n, &e, I64T(5));
  CHECK_ERR(eval(g, y, &e), &e, KILN_ERR_SHAPE, "axis 5 is out of range for rank 3");
  ir_graph_free(g);
}

/* ---- Transpose ---- */

static void test_transpose(void) {
  kiln_err e = {0};
  kiln_tensor *y[1];
  int n;
  kiln_graph *g = ONE0(Transpose, 13, SHP(2, 3, 4), 1, &n, &e);
  ir_set_attr_ints(g, n, "perm", I64S(1, 0, 2), 3, &e);
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_T(y[0], SHP(3, 2, 4), 0, 1, 2, 3, 12, 13, 14, 15, 4, 5, 6, 7, 16, 17, 18, 19, 8, 9, 10, 11,
          20, 21, 22, 23);
  free_all(y, 1);
  ir_graph_free(g);
  g = ONE0(Transpose, 13, SHP(2, 3, 4), 1, &n, &e); /* default: reverse */
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_T(y[0], SHP(4, 3, 2), 0, 12, 4, 16, 8, 20, 1, 13, 5, 17, 9, 21, 2, 14, 6, 18, 10, 22, 3, 15,
          7, 19, 11, 23);
  free_all(y, 1);
  ir_graph_free(g);
  g = ONE0(Transpose, 13, SHP(2, 3, 4), 1, &n, &e);
  ir_set_attr_ints(g, n, "perm", I64S(0, 0, 1), 3, &e);
  CHECK_ERR(eval(g, y, &e), &e, KILN_ERR_SHAPE,
            "perm [0,0,1] is not a permutation of 0..2 for input 'x' of rank 3");
  ir_graph_free(g);
  g = ONE0(Transpose, 13, SHP(2, 3, 4), 1, &n, &e);
  ir_set_attr_ints(g, n, "perm", I64S(1, 0), 2, &e);
  CHECK_ERR(eval(g, y, &e), &e, KILN_ERR_SHAPE, "not a permutation");
  ir_graph_free(g);
}

/* ---- Concat ---- */

static void test_concat(void) {
  kiln_err e = {0};
  kiln_tensor *y[1];
  for (int neg = 0; neg < 2; neg++) {
    kiln_graph *g = new_graph(13);
    add_input(g, "a", KILN_F32, SHP(2, 1), &e);
    add_input(g, "b", KILN_F32, SHP(2, 2), &e);
    add_input(g, "c", KILN_F32, SHP(2, 0), &e);
    int n = NODE(g, Concat, "cat", ("a", "c", "b"), ("y"), &e);
    ir_set_attr_int(g, n, "axis", neg ? -1 : 1, &e);
    OUTPUTS(g, &e, "y");
    CHECK_OK(prepare(g, &e), &e);
    CHECK_OK(run(g, NULL, y, &e), &e);
    CHECK_T(y[0], SHP(2, 3), 0, 0, 1, 1, 2, 3);
    free_all(y, 1);
    ir_graph_free(g);
  }
  /* int64 constants fold */
  kiln_graph *g = new_graph(13);
  add_const(g, "a", I64T(1, 2), &e);
  add_const(g, "b", I64T(-1), &e);
  int n = NODE(g, Concat, "cat", ("a", "b"), ("y"), &e);
  ir_set_attr_int(g, n, "axis", 0, &e);
  OUTPUTS(g, &e, "y");
  CHECK_OK(prepare(g, &e), &e);
  if (val(g, "y")->data) CHECK_T(val(g, "y")->data, SHP(3), 1, 2, -1);
  CHECK(val(g, "y")->data != NULL);
  ir_graph_free(g);
  /* errors */
  g = new_graph(13);
  add_input(g, "a", KILN_F32, SHP(2, 1), &e);
  add_input(g, "b", KILN_F32, SHP(3, 2), &e);
  n = NODE(g, Concat, "cat", ("a", "b"), ("y"), &e);
  ir_set_attr_int(g, n, "axis", 1, &e);
  OUTPUTS(g, &e, "y");
  CHECK_ERR(prepare(g, &e), &e, KILN_ERR_SHAPE,
            "inputs 'a' [2,1] and 'b' [3,2] differ in a dimension other than axis 1");
  ir_set_attr_int(g, n, "axis", 2, &e);
  CHECK_ERR(prepare(g, &e), &e, KILN_ERR_SHAPE, "axis 2 is out of range for rank 2");
  ir_graph_free(g);
}

/* ---- Split ---- */

static void test_split(void) {
  kiln_err e = {0};
  kiln_tensor *y[3];
  int n;
  /* equal parts along axis 1 */
  kiln_graph *g = ONE0(Split, 13, SHP(2, 6), 3, &n, &e);
  ir_set_attr_int(g, n, "axis", 1, &e);
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_T(y[0], SHP(2, 2), 0, 1, 6, 7);
  CHECK_T(y[1], SHP(2, 2), 2, 3, 8, 9);
  CHECK_T(y[2], SHP(2, 2), 4, 5, 10, 11);
  free_all(y, 3);
  ir_graph_free(g);
  /* opset 13 sizes input, negative axis */
  g = ONE(Split, 13, SHP(2, 6), 2, &n, &e, I64T(2, 4));
  ir_set_attr_int(g, n, "axis", -1, &e);
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_T(y[0], SHP(2, 2), 0, 1, 6, 7);
  CHECK_T(y[1], SHP(2, 4), 2, 3, 4, 5, 8, 9, 10, 11);
  free_all(y, 2);
  ir_graph_free(g);
  /* opset 11 split attribute; zero-size parts */
  g = ONE0(Split, 11, SHP(6), 3, &n, &e);
  ir_set_attr_ints(g, n, "split", I64S(1, 0, 5), 3, &e);
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_T(y[0], SHP(1), 0);
  CHECK_SHAPE(y[1], SHP(0));
  CHECK_T(y[2], SHP(5), 1, 2, 3, 4, 5);
  free_all(y, 3);
  ir_graph_free(g);
  g = ONE(Split, 13, SHP(0), 3, &n, &e, I64T(0, 0, 0));
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_SHAPE(y[2], SHP(0));
  free_all(y, 3);
  ir_graph_free(g);
  /* errors */
  g = ONE0(Split, 13, SHP(2, 5), 3, &n, &e);
  ir_set_attr_int(g, n, "axis", 1, &e);
  CHECK_ERR(eval(g, y, &e), &e, KILN_ERR_SHAPE, "cannot split axis 1 of size 5 into 3 equal parts");
  ir_graph_free(g);
  g = ONE(Split, 13, SHP(6), 2, &n, &e, I64T(2, 3));
  CHECK_ERR(eval(g, y, &e), &e, KILN_ERR_SHAPE, "'split' [2,3] sums to 5, but axis 0 has size 6");
  ir_graph_free(g);
  g = ONE(Split, 13, SHP(6), 2, &n, &e, I64T(6));
  CHECK_ERR(eval(g, y, &e), &e, KILN_ERR_SHAPE, "has 1 sizes but the node has 2 outputs");
  ir_graph_free(g);
}

/* ---- Slice ---- */

static void test_slice(void) {
  kiln_err e = {0};
  kiln_tensor *y[1];
  int n;
  kiln_shape xs = SHP(3, 4, 5); /* x = arange(60).reshape(3, 4, 5) */
  /* x[0:2, 1:3, :] */
  kiln_graph *g = ONE(Slice, 13, xs, 1, &n, &e, I64T(0, 1), I64T(2, 3), I64T(0, 1));
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_T(y[0], SHP(2, 2, 5), 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 25, 26, 27, 28, 29, 30, 31, 32, 33,
          34);
  free_all(y, 1);
  ir_graph_free(g);
  /* x[:, 10:0:-3, -1:-100:-2]: negative steps, clamping */
  g = ONE(Slice, 13, xs, 1, &n, &e, I64T(-1, 10), I64T(-100, 0), I64T(2, 1), I64T(-2, -3));
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_T(y[0], SHP(3, 1, 3), 19, 17, 15, 39, 37, 35, 59, 57, 55);
  free_all(y, 1);
  ir_graph_free(g);
  /* x[:, :, 1::2] with an INT64_MAX end and a negative axis; int32 arguments */
  g = ONE(Slice, 13, xs, 1, &n, &e, tensor_of(KILN_I32, SHP(1), I64S(1)), I64T(INT64_MAX),
          I64T(-1), I64T(2));
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_T(y[0], SHP(3, 4, 2), 1, 3, 6, 8, 11, 13, 16, 18, 21, 23, 26, 28, 31, 33, 36, 38, 41, 43,
          46, 48, 51, 53, 56, 58);
  free_all(y, 1);
  ir_graph_free(g);
  /* x[:, ::-1][0] via INT64_MAX / INT64_MIN bounds */
  g = ONE(Slice, 13, xs, 1, &n, &e, I64T(0, INT64_MAX), I64T(1, INT64_MIN), I64T(0, 1),
          I64T(1, -1));
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_T(y[0], SHP(1, 4, 5), 15, 16, 17, 18, 19, 10, 11, 12, 13, 14, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4);
  free_all(y, 1);
  ir_graph_free(g);
  /* a huge step takes one element; an empty range gives a zero dim */
  g = ONE(Slice, 13, xs, 1, &n, &e, I64T(1, 3), I64T(3, 1), I64T(2, 0), I64T(INT64_MAX, 1));
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_SHAPE(y[0], SHP(0, 4, 1));
  free_all(y, 1);
  ir_graph_free(g);
  g = ONE(Slice, 13, xs, 1, &n, &e, I64T(4), I64T(0), I64T(1), I64T(INT64_MIN));
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_T(y[0], SHP(3, 1, 5), 15, 16, 17, 18, 19, 35, 36, 37, 38, 39, 55, 56, 57, 58, 59);
  free_all(y, 1);
  ir_graph_free(g);
  /* opset 9: attributes, default axes: x[1:1000, 0:-1] */
  g = ONE0(Slice, 9, xs, 1, &n, &e);
  ir_set_attr_ints(g, n, "starts", I64S(1, 0), 2, &e);
  ir_set_attr_ints(g, n, "ends", I64S(1000, -1), 2, &e);
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_T(y[0], SHP(2, 3, 5), 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 40, 41,
          42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54);
  free_all(y, 1);
  ir_graph_free(g);
  /* errors */
  g = ONE(Slice, 13, xs, 1, &n, &e, I64T(0), I64T(1), I64T(0), I64T(0));
  CHECK_ERR(eval(g, y, &e), &e, KILN_ERR_SHAPE, "Slice step for axis 0 is 0");
  ir_graph_free(g);
  g = ONE(Slice, 13, xs, 1, &n, &e, I64T(0, 0), I64T(1, 1), I64T(1, -2));
  CHECK_ERR(eval(g, y, &e), &e, KILN_ERR_SHAPE, "appears twice");
  ir_graph_free(g);
  g = ONE(Slice, 13, xs, 1, &n, &e, I64T(0), I64T(1), I64T(3));
  CHECK_ERR(eval(g, y, &e), &e, KILN_ERR_SHAPE, "axis 3 is out of range for rank 3");
  ir_graph_free(g);
  g = ONE(Slice, 13, xs, 1, &n, &e, I64T(0, 0), I64T(1));
  CHECK_ERR(eval(g, y, &e), &e, KILN_ERR_SHAPE, "same length");
  ir_graph_free(g);
}

/* ---- Gather ---- */

static void test_gather(void) {
  kiln_err e = {0};
  kiln_tensor *y[1];
  int n;
  /* x = arange(12).reshape(3, 4); take(x, [[0,-1],[2,1]], axis=1) */
  kiln_graph *g = ONE(Gather, 13, SHP(3, 4), 1, &n, &e,
                      tensor_of(KILN_I64, SHP(2, 2), I64S(0, -1, 2, 1)));
  ir_set_attr_int(g, n, "axis", 1, &e);
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_T(y[0], SHP(3, 2, 2), 0, 3, 2, 1, 4, 7, 6, 5, 8, 11, 10, 9);
  free_all(y, 1);
  ir_graph_free(g);
  /* axis 0 with int32 indices, and a scalar index removes the axis */
  g = ONE(Gather, 13, SHP(3, 4), 1, &n, &e, tensor_of(KILN_I32, SHP(2), I64S(2, 0)));
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_T(y[0], SHP(2, 4), 8, 9, 10, 11, 0, 1, 2, 3);
  free_all(y, 1);
  ir_graph_free(g);
  g = ONE(Gather, 13, SHP(3, 4), 1, &n, &e, tensor_of(KILN_I64, SCALAR, I64S(-1)));
  ir_set_attr_int(g, n, "axis", -1, &e);
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_T(y[0], SHP(3), 3, 7, 11);
  free_all(y, 1);
  ir_graph_free(g);
  /* a constant index out of range is caught by inference */
  g = ONE(Gather, 13, SHP(3, 4), 1, &n, &e, I64T(3));
  CHECK_ERR(eval(g, y, &e), &e, KILN_ERR_SHAPE,
            "Gather node 'op': index 3 in 'c1' is out of range for axis 0 of input 'x' (size 3)");
  ir_graph_free(g);
  /* a runtime index out of range is caught by the reference kernel, naming the node */
  g = new_graph(13);
  add_input(g, "x", KILN_F32, SHP(3, 4), &e);
  add_input(g, "idx", KILN_I64, SHP(2), &e);
  NODE(g, Gather, "gath", ("x", "idx"), ("y"), &e);
  OUTPUTS(g, &e, "y");
  CHECK_OK(prepare(g, &e), &e);
  kiln_tensor *bad[2] = {NULL, tensor_of(KILN_I64, SHP(2), I64S(1, -4))};
  CHECK_ERR(run(g, bad, y, &e), &e, KILN_ERR_SHAPE,
            "Gather node 'gath': index -4 in 'idx' is out of range for axis 0 of 'x' (size 3)");
  kiln_tensor_free(bad[1]);
  bad[1] = tensor_of(KILN_I64, SHP(2), I64S(1, -3));
  CHECK_OK(run(g, bad, y, &e), &e);
  CHECK_T(y[0], SHP(2, 4), 4, 5, 6, 7, 0, 1, 2, 3);
  free_all(y, 1);
  kiln_tensor_free(bad[1]);
  ir_graph_free(g);
  /* float indices are refused */
  g = ONE(Gather, 13, SHP(3, 4), 1, &n, &e, tensor_of(KILN_F32, SHP(1), I64S(0)));
  CHECK_ERR(eval(g, y, &e), &e, KILN_ERR_UNSUPPORTED, "input 'c1' has dtype float");
  ir_graph_free(g);
}

/* ---- Expand ---- */

static void test_expand(void) {
  kiln_err e = {0};
  kiln_tensor *y[1];
  int n;
  kiln_graph *g = ONE(Expand, 13, SHP(3, 1), 1, &n, &e, I64T(2, 1, 2));
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_T(y[0], SHP(2, 3, 2), 0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2);
  free_all(y, 1);
  ir_graph_free(g);
  /* the shape may have a lower rank and 1s: bidirectional */
  g = ONE(Expand, 13, SHP(2, 1, 3), 1, &n, &e, I64T(4, 1));
  CHECK_OK(eval(g, y, &e), &e);
  CHECK_SHAPE(y[0], SHP(2, 4, 3));
  CHECK(y[0] && kiln_tensor_get_f(y[0], 23) == 5);
  free_all(y, 1);
  ir_graph_free(g);
  g = ONE(Expand, 13, SHP(3, 2), 1, &n, &e, I64T(4));
  CHECK_ERR(eval(g, y, &e), &e, KILN_ERR_SHAPE,
            "cannot expand input 'x' to shape 'c1': shapes [3,2] and [4] do not broadcast");
  ir_graph_free(g);
}

/* ---- folding of shape chains ---- */

/* PyTorch's flatten: y = Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])).  The
 * Reshape's shape input must resolve at inference time.  opset 13 (axes as an input) or
 * 11 (axes as an attribute). */
static kiln_graph *build_chain(int opset, kiln_err *e) {
  kiln_graph *g = new_graph_e(opset, e);
  if (!g) return NULL;
  add_input(g, "x", KILN_F32, SHP(2, 3, 4, 5), e);
  add_const(g, "zero", tensor_of(KILN_I64, SCALAR, I64S(0)), e);
  add_const(g, "one", tensor_of(KILN_I64, SCALAR, I64S(1)), e);
  add_const(g, "minus1", I64T(-1), e);
  NODE(g, Shape, "shape", ("x"), ("s"), e);
  NODE(g, Gather, "g0", ("s", "zero"), ("d0"), e);
  NODE(g, Gather, "g1", ("s", "one"), ("d1"), e);
  int u0, u1;
  if (opset >= 13) {
    add_const(g, "ax0", I64T(0), e);
    u0 = NODE(g, Unsqueeze, "u0", ("d0", "ax0"), ("u0"), e);
    u1 = NODE(g, Unsqueeze, "u1", ("d1", "ax0"), ("u1"), e);
  } else {
    u0 = NODE(g, Unsqueeze, "u0", ("d0"), ("u0"), e);
    u1 = NODE(g, Unsqueeze, "u1", ("d1"), ("u1"), e);
    ir_set_attr_ints(g, u0, "axes", I64S(0), 1, e);
    ir_set_attr_ints(g, u1, "axes", I64S(0), 1, e);
  }
  int cat = NODE(g, Concat, "cat", ("u0", "u1", "minus1"), ("target"), e);
  ir_set_attr_int(g, cat, "axis", 0, e);
  NODE(g, Reshape, "reshape", ("x", "target"), ("r"), e);
  /* A second chain: Slice the shape, ConstantOfShape it, Expand to it. */
  add_const(g, "st", I64T(-2), e);
  add_const(g, "en", I64T(INT64_MAX), e);
  int sl = NODE(g, Slice, "slice", ("s", "st", "en"), ("tail"), e);
  if (opset < 10) {
    ir_node(g, sl)->n_in = 1;
    ir_set_attr_ints(g, sl, "starts", I64S(-2), 1, e);
    ir_set_attr_ints(g, sl, "ends", I64S(INT64_MAX), 1, e);
  }
  int cos = NODE(g, ConstantOfShape, "cos", ("tail"), ("ones"), e);
  kiln_tensor *one_f = tensor_of(KILN_F32, SHP(1), I64S(1));
  if (!one_f) kiln_errf(e, KILN_ERR_NOMEM, "out of memory (test tensor)");
  if (one_f) ir_set_attr_tensor(g, cos, "value", one_f, e);
  add_const(g, "b3", I64T(3, 1, 1), e);
  NODE(g, Expand, "expand", ("ones", "b3"), ("big"), e);
  OUTPUTS(g, e, "r", "big");
  return g;
}

static void test_fold_chain(void) {
  int opsets[] = {13, 11, 9};
  for (int k = 0; k < 3; k++) {
    kiln_err e = {0};
    kiln_graph *g = build_chain(opsets[k], &e);
    CHECK_OK(e.code, &e);
    CHECK_OK(prepare(g, &e), &e);
    const kiln_value *t = val(g, "target");
    CHECK_MSG(t->data != NULL, "opset %d", opsets[k]);
    if (t->data) CHECK_T(t->data, SHP(3), 2, 3, -1);
    CHECK_SHAPE(&(kiln_tensor){.shape = val(g, "r")->shape}, SHP(2, 3, 20));
    CHECK(val(g, "tail")->data && val(g, "ones")->data);
    CHECK_SHAPE(&(kiln_tensor){.shape = val(g, "big")->shape}, SHP(3, 4, 5));
    kiln_tensor *y[2];
    CHECK_OK(run(g, NULL, y, &e), &e);
    CHECK_SHAPE(y[0], SHP(2, 3, 20));
    CHECK(y[0] && kiln_tensor_get_f(y[0], 119) == 119);
    CHECK_SHAPE(y[1], SHP(3, 4, 5));
    CHECK(y[1] && kiln_tensor_get_f(y[1], 59) == 1);
    free_all(y, 2);
    ir_graph_free(g);
  }
}

/* A shape computed from a graph input's values (not its shape) cannot be folded. */
static void test_dynamic_shape_refused(void) {
  kiln_err e = {0};
  kiln_graph *g = new_graph(13);
  add_input(g, "x", KILN_F32, SHP(2, 3), &e);
  add_input(g, "n", KILN_I64, SHP(1), &e);
  add_const(g, "three", I64T(3), &e);
  int cat = NODE(g, Concat, "cat", ("n", "three"), ("target"), &e);
  ir_set_attr_int(g, cat, "axis", 0, &e);
  NODE(g, Reshape, "reshape", ("x", "target"), ("y"), &e);
  OUTPUTS(g, &e, "y");
  CHECK(ir_input_feeds_shape(g, ir_find_value(g, "n")));
  CHECK_ERR(prepare(g, &e), &e, KILN_ERR_UNSUPPORTED,
            "Reshape node 'reshape': input 'target' determines the output shape but is not a "
            "constant");
  /* binding the input to a constant makes it fold */
  CHECK_OK(ir_bind_input_const(g, "n", I64T(2), &e), &e);
  CHECK_OK(prepare(g, &e), &e);
  CHECK_SHAPE(&(kiln_tensor){.shape = val(g, "y")->shape}, SHP(2, 3));
  ir_graph_free(g);
}

static void test_failing_allocator(void) {
  for (long k = 0; k < 400; k++) {
    kiln_err e = {0};
    kiln_alloc_fail_after(k);
    kiln_graph *g = build_chain(13, &e);
    kiln_code rc = e.code;
    if (!rc) rc = prepare(g, &e);
    kiln_tensor *y[2] = {0};
    if (!rc) rc = run(g, NULL, y, &e);
    kiln_alloc_fail_after(-1);
    CHECK_MSG(rc == KILN_OK || rc == KILN_ERR_NOMEM, "k=%ld: %s", k, e.msg);
    free_all(y, 2);
    ir_graph_free(g);
  }
}

int main(void) {
  RUN(test_constant);
  RUN(test_constant_of_shape);
  RUN(test_shape);
  RUN(test_flatten);
  RUN(test_reshape);
  RUN(test_squeeze_unsqueeze);
  RUN(test_transpose);
  RUN(test_concat);
  RUN(test_split);
  RUN(test_slice);
  RUN(test_gather);
  RUN(test_expand);
  RUN(test_fold_chain);
  RUN(test_dynamic_shape_refused);
  RUN(test_failing_allocator);
  TEST_MAIN_END();
}
