/* test_ops_elementwise.c — every elementwise op on small hand-built graphs with known
 * answers: broadcasting, integer types, edge values, legacy opset forms, and bad input. */
#include <float.h>
#include <stdint.h>

#include "ir/graph.h"
#include "runtime/ref.h"
#include "test.h"

/* ---- building and running one-node graphs ---- */

typedef struct tspec {
  kiln_dtype dt;
  int rank;
  int64_t d[KILN_MAX_RANK];
  const double *v; /* numel values (ints given exactly as doubles) */
  bool konst;      /* an initializer rather than a graph input */
  bool omit;       /* an omitted optional input */
} tspec;

#define SH(...)                                                                                    \
  .rank = (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), .d = {__VA_ARGS__}
#define V(...) .v = (const double[]){__VA_ARGS__}
#define TF(...) ((tspec){.dt = KILN_F32, __VA_ARGS__})
#define TI32(...) ((tspec){.dt = KILN_I32, __VA_ARGS__})
#define TI64(...) ((tspec){.dt = KILN_I64, __VA_ARGS__})
#define TB(...) ((tspec){.dt = KILN_BOOL, __VA_ARGS__})
#define OMIT ((tspec){.omit = true})

typedef struct aspec {
  const char *name;
  char kind; /* 'f' or 'i' */
  double f;
  int64_t i;
} aspec;
#define AF(nm, val) ((aspec){.name = nm, .kind = 'f', .f = (val)})
#define AI(nm, val) ((aspec){.name = nm, .kind = 'i', .i = (val)})

typedef struct opcall {
  kiln_op op;
  int opset; /* 0: 17 */
  int n_in, n_out, n_attrs; /* n_out 0: 1 */
  tspec in[4];
  aspec attrs[4];
  kiln_ref_ctx ctx; /* .g is filled in */
} opcall;

static kiln_code make_tensor(const tspec *s, kiln_tensor **t, kiln_err *e) {
  kiln_shape sh = kiln_shape_make(s->rank, s->d);
  KILN_TRY(kiln_tensor_new(s->dt, &sh, t, e));
  for (int64_t k = 0; k < (*t)->numel; k++) {
    if (s->dt == KILN_I64)
      ((int64_t *)(*t)->data)[k] = (int64_t)s->v[k];
    else
      kiln_tensor_set_f(*t, k, s->v[k]);
  }
  return KILN_OK;
}

/* Builds `op` over c->in, infers (folding constants) and runs it; outs[] receive the outputs.
 * On error the message carries the node label "... node 'n'". */
static kiln_code run_call(opcall *c, kiln_tensor **outs, kiln_err *e) {
  kiln_graph *g = ir_graph_new();
  kiln_tensor *feeds[4] = {0};
  int n_feeds = 0, ids[4], outv[4], node;
  kiln_code rc = KILN_OK;
  if (!c->n_out) c->n_out = 1;
  for (int i = 0; i < c->n_out; i++) outs[i] = NULL;
  if (!g) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  if ((rc = ir_set_opset(g, "", c->opset ? c->opset : 17, e))) goto done;
  for (int i = 0; i < c->n_in; i++) {
    char name[16];
    snprintf(name, sizeof name, "in%d", i);
    ids[i] = -1;
    if (c->in[i].omit) continue;
    kiln_tensor *t = NULL;
    if ((rc = make_tensor(&c->in[i], &t, e))) goto done;
    if (c->in[i].konst) {
      if ((rc = ir_add_const(g, name, t, true, &ids[i], e))) goto done;
    } else {
      if ((rc = ir_add_value(g, name, &ids[i], e))) {
        kiln_tensor_free(t);
        goto done;
      }
      feeds[n_feeds++] = t;
      g->values[ids[i]].dtype = t->dtype;
      g->values[ids[i]].shape = t->shape;
      g->values[ids[i]].typed = true;
      if ((rc = ir_add_input(g, ids[i], e))) goto done;
    }
  }
  for (int o = 0; o < c->n_out; o++) {
    char name[16];
    snprintf(name, sizeof name, "out%d", o);
    if ((rc = ir_add_value(g, name, &outv[o], e))) goto done;
  }
  if ((rc = ir_add_node(g, c->op, "n", ids, c->n_in, outv, c->n_out, &node, e))) goto done;
  for (int a = 0; a < c->n_attrs; a++) {
    const aspec *at = &c->attrs[a];
    rc = at->kind == 'f' ? ir_set_attr_float(g, node, at->name, at->f, e)
                         : ir_set_attr_int(g, node, at->name, at->i, e);
    if (rc) goto done;
  }
  for (int o = 0; o < c->n_out; o++)
    if ((rc = ir_add_output(g, outv[o], e))) goto done;
  kiln_evaluator ev = kiln_ref_evaluator();
  if ((rc = ir_verify(g, e)) || (rc = ir_infer(g, &ev, e))) goto done;
  c->ctx.g = g;
  rc = kiln_ref_run(g, &c->ctx, feeds, outs, e);
done:
  for (int i = 0; i < n_feeds; i++) kiln_tensor_free(feeds[i]);
  ir_graph_free(g);
  return rc;
}

/* Compares t with the expected dtype, shape and values (|got - want| <= tol + tol*|want|). */
static bool same(const kiln_tensor *t, tspec want, double tol, int line) {
  if (!t) {
    fprintf(stderr, "line %d: no output\n", line);
    return false;
  }
  kiln_shape ws = kiln_shape_make(want.rank, want.d);
  if (t->dtype != want.dt || !kiln_shape_eq(&t->shape, &ws)) {
    char a[160], b[160];
    fprintf(stderr, "line %d: got %s %s, want %s %s\n", line, kiln_dtype_name(t->dtype),
            kiln_shape_str(&t->shape, a, sizeof a), kiln_dtype_name(want.dt),
            kiln_shape_str(&ws, b, sizeof b));
    return false;
  }
  for (int64_t k = 0; k < t->numel; k++) {
    double got = t->dtype == KILN_I64 ? (double)kiln_tensor_get_i(t, k) : kiln_tensor_get_f(t, k);
    double w = want.v[k];
    bool ok = (isnan(w) && isnan(got)) || (isinf(w) && got == w) ||
              fabs(got - w) <= tol + tol * fabs(w);
    if (!ok) {
      fprintf(stderr, "line %d: element %lld = %.9g, want %.9g\n", line, (long long)k, got, w);
      return false;
    }
  }
  return true;
}

/* Runs c and checks output 0 against `want`, then frees the outputs. */
#define EXPECT(c, want, tol)                                                                       \
  do {                                                                                             \
    kiln_err e_ = {0};                                                                             \
    kiln_tensor *o_[4] = {0};                                                                      \
    opcall c_ = (c);                                                                               \
    CHECK_OK(run_call(&c_, o_, &e_), &e_);                                                         \
    CHECK(same(o_[0], (want), (tol), __LINE__));                                                   \
    for (int k_ = 0; k_ < 4; k_++) kiln_tensor_free(o_[k_]);                                       \
  } while (0)

/* Runs c and checks that it fails with `code` and a message containing `text`. */
#define EXPECT_ERR(c, code, text)                                                                  \
  do {                                                                                             \
    kiln_err e_ = {0};                                                                             \
    kiln_tensor *o_[4] = {0};                                                                      \
    opcall c_ = (c);                                                                               \
    kiln_code rc_ = run_call(&c_, o_, &e_);                                                        \
    CHECK_MSG(rc_ == (code), "got %s: %s", kiln_code_name(rc_), e_.msg);                          \
    CHECK_MSG(strstr(e_.msg, (text)) != NULL, "message: %s", e_.msg);                              \
    for (int k_ = 0; k_ < 4; k_++) kiln_tensor_free(o_[k_]);                                       \
  } while (0)

#define CALL(opname, ...)                                                                          \
  ((opcall){.op = KILN_OP_##opname, __VA_ARGS__})
#define IN1(a) .n_in = 1, .in = {a}
#define IN2(a, b) .n_in = 2, .in = {a, b}
#define IN3(a, b, c) .n_in = 3, .in = {a, b, c}
#define ATTRS(...)                                                                                 \
  .n_attrs = (int)(sizeof((aspec[]){__VA_ARGS__}) / sizeof(aspec)), .attrs = {__VA_ARGS__}

static const double tol = 1e-6;

/* ---- unary ---- */

#define X5 TF(SH(5), V(-2, -0.5, 0, 0.5, 3))

static void test_activations(void) {
  EXPECT(CALL(Identity, IN1(X5)), TF(SH(5), V(-2, -0.5, 0, 0.5, 3)), 0);
  EXPECT(CALL(Relu, IN1(X5)), TF(SH(5), V(0, 0, 0, 0.5, 3)), 0);
  EXPECT(CALL(LeakyRelu, IN1(X5)), TF(SH(5), V(-0.02, -0.005, 0, 0.5, 3)), tol);
  EXPECT(CALL(LeakyRelu, IN1(X5), ATTRS(AF("alpha", 0.5))), TF(SH(5), V(-1, -0.25, 0, 0.5, 3)),
         tol);
  EXPECT(CALL(Sigmoid, IN1(TF(SH(4), V(0, 2, -2, -200)))),
         TF(SH(4), V(0.5, 0.8807970779778823, 0.11920292202211755, 0)), tol);
  EXPECT(CALL(Tanh, IN1(TF(SH(3), V(0, 1, -30)))), TF(SH(3), V(0, 0.7615941559557649, -1)), tol);
  EXPECT(CALL(HardSigmoid, IN1(X5)), TF(SH(5), V(0.1, 0.4, 0.5, 0.6, 1)), tol);
  EXPECT(CALL(HardSigmoid, IN1(X5), ATTRS(AF("alpha", 0.5), AF("beta", 0.6))),
         TF(SH(5), V(0, 0.35, 0.6, 0.85, 1)), tol);
  EXPECT(CALL(HardSwish, IN1(TF(SH(4), V(-4, -1, 1, 4)))),
         TF(SH(4), V(0, -1.0 / 3, 2.0 / 3, 4)), tol);
  EXPECT(CALL(Elu, IN1(X5)), TF(SH(5), V(exp(-2) - 1, exp(-0.5) - 1, 0, 0.5, 3)), tol);
  EXPECT(CALL(Elu, IN1(X5), ATTRS(AF("alpha", 2))),
         TF(SH(5), V(2 * (exp(-2) - 1), 2 * (exp(-0.5) - 1), 0, 0.5, 3)), tol);
  double a = 1.6732632423543772, g = 1.0507009873554805;
  EXPECT(CALL(Selu, IN1(X5)),
         TF(SH(5), V(g * a * (exp(-2) - 1), g * a * (exp(-0.5) - 1), 0, g * 0.5, g * 3)), tol);
  EXPECT(CALL(Selu, IN1(X5), ATTRS(AF("alpha", 2), AF("gamma", 3))),
         TF(SH(5), V(6 * (exp(-2) - 1), 6 * (exp(-0.5) - 1), 0, 1.5, 9)), tol);
  EXPECT(CALL(Softplus, IN1(TF(SH(4), V(0, 1, -100, 100)))),
         TF(SH(4), V(log(2), log(1 + exp(1)), 0, 100)), tol);
  EXPECT(CALL(Softsign, IN1(X5)), TF(SH(5), V(-2.0 / 3, -0.5 / 1.5, 0, 0.5 / 1.5, 0.75)), tol);
  EXPECT(CALL(Relu, IN1(TF(SH(2), V(NAN, -INFINITY)))), TF(SH(2), V(NAN, 0)), 0);
}

static void test_math(void) {
  EXPECT(CALL(Sqrt, IN1(TF(SH(4), V(0, 1, 4, -1)))), TF(SH(4), V(0, 1, 2, NAN)), tol);
  EXPECT(CALL(Exp, IN1(TF(SH(3), V(0, 1, -1)))), TF(SH(3), V(1, exp(1), exp(-1))), tol);
  EXPECT(CALL(Exp, IN1(TF(SH(1), V(100)))), TF(SH(1), V(INFINITY)), 0);
  EXPECT(CALL(Log, IN1(TF(SH(4), V(1, exp(2), 0, -1)))), TF(SH(4), V(0, 2, -INFINITY, NAN)),
         tol);
  EXPECT(CALL(Neg, IN1(X5)), TF(SH(5), V(2, 0.5, 0, -0.5, -3)), 0);
  EXPECT(CALL(Abs, IN1(X5)), TF(SH(5), V(2, 0.5, 0, 0.5, 3)), 0);
  EXPECT(CALL(Reciprocal, IN1(TF(SH(3), V(2, -4, 0)))), TF(SH(3), V(0.5, -0.25, INFINITY)), 0);
  EXPECT(CALL(Floor, IN1(TF(SH(4), V(-1.5, 1.5, 2, -0.0)))), TF(SH(4), V(-2, 1, 2, 0)), 0);
  EXPECT(CALL(Ceil, IN1(TF(SH(4), V(-1.5, 1.5, 2, 0.2)))), TF(SH(4), V(-1, 2, 2, 1)), 0);
  EXPECT(CALL(Erf, IN1(TF(SH(3), V(0, 1, -3)))),
         TF(SH(3), V(0, 0.8427007929497149, -0.9999779095030014)), tol);
  /* rank 0 and an empty tensor */
  EXPECT(CALL(Exp, IN1(TF(.rank = 0, V(0)))), TF(.rank = 0, V(1)), 0);
  EXPECT(CALL(Relu, IN1(TF(SH(0, 3), V(0)))), TF(SH(0, 3), V(0)), 0);
}

static void test_unary_int(void) {
  EXPECT(CALL(Relu, IN1(TI32(SH(3), V(-5, 0, 7)))), TI32(SH(3), V(0, 0, 7)), 0);
  EXPECT(CALL(Relu, IN1(TI64(SH(2), V(-5, 7)))), TI64(SH(2), V(0, 7)), 0);
  EXPECT(CALL(Abs, IN1(TI32(SH(3), V(-5, 0, INT32_MIN)))), TI32(SH(3), V(5, 0, INT32_MIN)), 0);
  EXPECT(CALL(Neg, IN1(TI64(SH(3), V(-5, 0, 9007199254740992.0)))),
         TI64(SH(3), V(5, 0, -9007199254740992.0)), 0);
  EXPECT(CALL(Neg, IN1(TI32(SH(2), V(3, INT32_MIN)))), TI32(SH(2), V(-3, INT32_MIN)), 0);
  EXPECT(CALL(Identity, IN1(TB(SH(3), V(1, 0, 1)))), TB(SH(3), V(1, 0, 1)), 0);
  EXPECT(CALL(Identity, IN1(TI64(SH(1), V(-1)))), TI64(SH(1), V(-1)), 0);
  EXPECT(CALL(Not, IN1(TB(SH(2, 2), V(1, 0, 0, 1)))), TB(SH(2, 2), V(0, 1, 1, 0)), 0);
}

static void test_clip(void) {
  tspec x = TF(SH(2, 3), V(-3, -1, 0, 1, 2, 5));
  /* opset 6: bounds are attributes; absent ones are +-FLT_MAX */
  EXPECT(CALL(Clip, .opset = 6, IN1(x), ATTRS(AF("min", -1), AF("max", 2))),
         TF(SH(2, 3), V(-1, -1, 0, 1, 2, 2)), 0);
  EXPECT(CALL(Clip, .opset = 6, IN1(x), ATTRS(AF("min", 0.5))),
         TF(SH(2, 3), V(0.5, 0.5, 0.5, 1, 2, 5)), 0);
  EXPECT(CALL(Clip, .opset = 6, IN1(TF(SH(1), V(INFINITY)))), TF(SH(1), V(FLT_MAX)), 0);
  /* opset 11+: optional scalar inputs */
  EXPECT(CALL(Clip, .opset = 13, IN3(x, TF(.rank = 0, V(-1)), TF(.rank = 0, V(2)))),
         TF(SH(2, 3), V(-1, -1, 0, 1, 2, 2)), 0);
  EXPECT(CALL(Clip, .opset = 13, IN2(x, TF(.rank = 0, V(0)))),
         TF(SH(2, 3), V(0, 0, 0, 1, 2, 5)), 0);
  EXPECT(CALL(Clip, .opset = 13, IN3(x, OMIT, TF(SH(1), V(1), .konst = true))),
         TF(SH(2, 3), V(-3, -1, 0, 1, 1, 1)), 0);
  EXPECT(CALL(Clip, .opset = 13, IN1(x)), TF(SH(2, 3), V(-3, -1, 0, 1, 2, 5)), 0);
  /* min > max: everything becomes max */
  EXPECT(CALL(Clip, .opset = 13, IN3(x, TF(.rank = 0, V(3)), TF(.rank = 0, V(1)))),
         TF(SH(2, 3), V(1, 1, 1, 1, 1, 1)), 0);
  EXPECT(CALL(Clip, .opset = 13, IN3(TI64(SH(3), V(-9, 4, 9)), TI64(.rank = 0, V(-2)),
                                     TI64(.rank = 0, V(5)))),
         TI64(SH(3), V(-2, 4, 5)), 0);
  EXPECT(CALL(Clip, .opset = 12, IN2(TI32(SH(3), V(-9, 4, 9)), TI32(.rank = 0, V(0)))),
         TI32(SH(3), V(0, 4, 9)), 0);
  EXPECT_ERR(CALL(Clip, .opset = 13, IN2(x, TF(SH(2), V(0, 1)))), KILN_ERR_SHAPE, "scalar");
  EXPECT_ERR(CALL(Clip, .opset = 13, IN2(x, TI64(.rank = 0, V(0)))), KILN_ERR_SHAPE, "int64");
  EXPECT_ERR(CALL(Clip, .opset = 6, IN2(x, TF(.rank = 0, V(0)))), KILN_ERR_INVALID,
             "attributes");
}

/* ---- binary ---- */

static void test_binary_broadcast(void) {
  tspec a = TF(SH(2, 3), V(1, 2, 3, 4, 5, 6));
  EXPECT(CALL(Add, IN2(a, TF(SH(3), V(10, 20, 30)))), TF(SH(2, 3), V(11, 22, 33, 14, 25, 36)), 0);
  EXPECT(CALL(Sub, IN2(TF(SH(2, 1), V(1, 2)), TF(SH(1, 3), V(1, 2, 3)))),
         TF(SH(2, 3), V(0, -1, -2, 1, 0, -1)), 0);
  EXPECT(CALL(Mul, IN2(TF(.rank = 0, V(2)), a)), TF(SH(2, 3), V(2, 4, 6, 8, 10, 12)), 0);
  EXPECT(CALL(Div, IN2(a, TF(SH(2, 1), V(2, -4)))),
         TF(SH(2, 3), V(0.5, 1, 1.5, -1, -1.25, -1.5)), tol);
  EXPECT(CALL(Div, IN2(TF(SH(2), V(1, -1)), TF(SH(2), V(0, 0)))),
         TF(SH(2), V(INFINITY, -INFINITY)), 0);
  /* rank-3 both ways, and a constant operand (folded when everything is constant) */
  EXPECT(CALL(Add, IN2(TF(SH(2, 1, 2), V(1, 2, 3, 4)), TF(SH(3, 1), V(10, 20, 30), .konst = true))),
         TF(SH(2, 3, 2), V(11, 12, 21, 22, 31, 32, 13, 14, 23, 24, 33, 34)), 0);
  EXPECT(CALL(Mul, IN2(TF(SH(2), V(3, 4), .konst = true), TF(SH(2), V(5, 6), .konst = true))),
         TF(SH(2), V(15, 24)), 0);
}

static void test_binary_int(void) {
  EXPECT(CALL(Add, IN2(TI32(SH(2), V(INT32_MAX, 1)), TI32(SH(1), V(1)))),
         TI32(SH(2), V(INT32_MIN, 2)), 0);
  EXPECT(CALL(Sub, IN2(TI64(SH(2), V(5, -5)), TI64(.rank = 0, V(7)))), TI64(SH(2), V(-2, -12)), 0);
  EXPECT(CALL(Mul, IN2(TI64(SH(2, 2), V(1, 2, 3, 4)), TI64(SH(2, 2), V(5, 6, 7, 8)))),
         TI64(SH(2, 2), V(5, 12, 21, 32)), 0);
  /* C truncation toward zero, not numpy's floor */
  EXPECT(CALL(Div, IN2(TI32(SH(4), V(7, -7, 7, -7)), TI32(SH(4), V(2, 2, -2, -2)))),
         TI32(SH(4), V(3, -3, -3, 3)), 0);
  EXPECT(CALL(Div, IN2(TI32(SH(1), V(INT32_MIN)), TI32(SH(1), V(-1)))), TI32(SH(1), V(INT32_MIN)),
         0);
  EXPECT_ERR(CALL(Div, IN2(TI64(SH(2), V(1, 2)), TI64(SH(2), V(1, 0)))), KILN_ERR_INVALID,
             "division by zero");
}

static void test_legacy_broadcast(void) {
  tspec a = TF(SH(2, 3, 2), V(0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1));
  /* opset 6 Add with broadcast=1, axis=1: B [3] runs along axis 1 */
  EXPECT(CALL(Add, .opset = 6, IN2(a, TF(SH(3), V(10, 20, 30))),
              ATTRS(AI("broadcast", 1), AI("axis", 1))),
         TF(SH(2, 3, 2), V(10, 10, 20, 20, 30, 30, 11, 11, 21, 21, 31, 31)), 0);
  EXPECT(CALL(Mul, .opset = 6, IN2(a, TF(SH(2, 3), V(1, 2, 3, 4, 5, 6))),
              ATTRS(AI("broadcast", 1), AI("axis", 0))),
         TF(SH(2, 3, 2), V(0, 0, 0, 0, 0, 0, 4, 4, 5, 5, 6, 6)), 0);
  /* no axis: trailing alignment */
  EXPECT(CALL(Sub, .opset = 6, IN2(a, TF(SH(2), V(1, 2))), ATTRS(AI("broadcast", 1))),
         TF(SH(2, 3, 2), V(-1, -2, -1, -2, -1, -2, 0, -1, 0, -1, 0, -1)), 0);
  /* from opset 7 the attributes are gone and numpy rules apply */
  EXPECT_ERR(CALL(Add, .opset = 7, IN2(a, TF(SH(3), V(10, 20, 30)))), KILN_ERR_SHAPE,
             "do not broadcast");
  EXPECT_ERR(CALL(Add, .opset = 6, IN2(a, TF(SH(3), V(10, 20, 30))),
                  ATTRS(AI("broadcast", 1), AI("axis", 3))),
             KILN_ERR_SHAPE, "axis 3");
}

static void test_pow(void) {
  EXPECT(CALL(Pow, IN2(TF(SH(3), V(2, 4, -2)), TF(SH(3), V(3, 0.5, 2)))), TF(SH(3), V(8, 2, 4)),
         tol);
  EXPECT(CALL(Pow, IN2(TF(SH(2, 2), V(1, 2, 3, 4)), TF(.rank = 0, V(2)))),
         TF(SH(2, 2), V(1, 4, 9, 16)), tol);
  EXPECT(CALL(Pow, IN2(TF(SH(3), V(1, 2, 3)), TI64(SH(3), V(4, 5, 6)))),
         TF(SH(3), V(1, 32, 729)), tol);
  EXPECT(CALL(Pow, IN2(TF(SH(2), V(2, 4)), TI32(SH(1), V(-1)))), TF(SH(2), V(0.5, 0.25)), tol);
  EXPECT(CALL(Pow, IN2(TI32(SH(3), V(1, 2, 3)), TI32(SH(3), V(4, 5, 6)))),
         TI32(SH(3), V(1, 32, 729)), 0);
  EXPECT(CALL(Pow, IN2(TI64(SH(3), V(1, 2, 3)), TF(SH(3), V(4, 5, 6)))),
         TI64(SH(3), V(1, 32, 729)), 0);
  EXPECT(CALL(Pow, IN2(TI64(SH(4), V(-3, 2, 1, -1)), TI64(SH(4), V(3, -1, -5, -3)))),
         TI64(SH(4), V(-27, 0, 1, -1)), 0);
  EXPECT(CALL(Pow, IN2(TI64(SH(1), V(2)), TI32(SH(1), V(62)))),
         TI64(SH(1), V(4611686018427387904.0)), 0);
}

static void test_prelu(void) {
  tspec x = TF(SH(2, 3), V(-1, 2, -3, 4, -5, 6));
  EXPECT(CALL(PRelu, IN2(x, TF(SH(3), V(0.1, 0.2, 0.3)))),
         TF(SH(2, 3), V(-0.1, 2, -0.9, 4, -1, 6)), tol);
  EXPECT(CALL(PRelu, IN2(x, TF(SH(1), V(0.5)))), TF(SH(2, 3), V(-0.5, 2, -1.5, 4, -2.5, 6)), tol);
  /* opset 6: a 1-D slope of C values is per channel (axis 1) */
  EXPECT(CALL(PRelu, .opset = 6,
              IN2(TF(SH(1, 2, 2), V(-1, -1, -1, 1)), TF(SH(2), V(0.1, 0.2), .konst = true))),
         TF(SH(1, 2, 2), V(-0.1, -0.1, -0.2, 1)), tol);
  EXPECT(CALL(PRelu, IN2(TI32(SH(2), V(-3, 3)), TI32(SH(1), V(2)))), TI32(SH(2), V(-6, 3)), 0);
  /* the slope broadcasts to x, never x to the slope */
  EXPECT_ERR(CALL(PRelu, IN2(TF(SH(3), V(1, 2, 3)), TF(SH(2, 3), V(1, 1, 1, 1, 1, 1)))),
             KILN_ERR_SHAPE, "does not broadcast to x");
}

static void test_variadic(void) {
  tspec a = TF(SH(2, 2), V(1, 2, 3, 4)), b = TF(SH(2), V(10, 20)), c = TF(.rank = 0, V(100));
  EXPECT(CALL(Sum, IN3(a, b, c)), TF(SH(2, 2), V(111, 122, 113, 124)), 0);
  EXPECT(CALL(Sum, IN1(a)), TF(SH(2, 2), V(1, 2, 3, 4)), 0);
  /* the first input need not have the output's shape */
  EXPECT(CALL(Sum, IN2(b, a)), TF(SH(2, 2), V(11, 22, 13, 24)), 0);
  EXPECT(CALL(Mean, IN3(a, b, c)), TF(SH(2, 2), V(37, 122.0 / 3, 113.0 / 3, 124.0 / 3)), tol);
  EXPECT(CALL(Mean, IN1(b)), TF(SH(2), V(10, 20)), 0);
  EXPECT(CALL(Max, IN3(a, TF(SH(2), V(2, 3)), TF(SH(2, 1), V(0, 5)))),
         TF(SH(2, 2), V(2, 3, 5, 5)), 0);
  EXPECT(CALL(Min, IN2(a, TF(SH(2), V(2, NAN)))), TF(SH(2, 2), V(1, NAN, 2, NAN)), 0);
  EXPECT(CALL(Max, IN2(TI32(SH(3), V(3, 2, 1)), TI32(SH(3), V(1, 4, 4)))), TI32(SH(3), V(3, 4, 4)),
         0);
  EXPECT(CALL(Min, IN2(TI64(SH(3), V(3, 2, 1)), TI64(.rank = 0, V(2)))), TI64(SH(3), V(2, 2, 1)),
         0);
  opcall four = CALL(Max, .n_in = 4,
                     .in = {TF(SH(1), V(1)), TF(SH(1), V(7)), TF(SH(1), V(3)), TF(SH(1), V(5))});
  EXPECT(four, TF(SH(1), V(7)), 0);
  EXPECT_ERR(CALL(Mean, IN2(TI64(SH(1), V(1)), TI64(SH(1), V(2)))), KILN_ERR_UNSUPPORTED,
             "int64");
  EXPECT_ERR(CALL(Max, IN3(a, b, TF(SH(3), V(1, 2, 3)))), KILN_ERR_SHAPE, "do not broadcast");
}

static void test_compare(void) {
  tspec a = TF(SH(2, 2), V(1, 2, 3, NAN));
  EXPECT(CALL(Equal, IN2(a, TF(SH(2), V(1, 3)))), TB(SH(2, 2), V(1, 0, 0, 0)), 0);
  EXPECT(CALL(Greater, IN2(a, TF(SH(2), V(1, 3)))), TB(SH(2, 2), V(0, 0, 1, 0)), 0);
  EXPECT(CALL(Less, IN2(a, TF(.rank = 0, V(2.5)))), TB(SH(2, 2), V(1, 1, 0, 0)), 0);
  EXPECT(CALL(Equal, IN2(TI64(SH(3), V(-5, 5, 6)), TI64(SH(3), V(5, 5, 7)))),
         TB(SH(3), V(0, 1, 0)), 0);
  EXPECT(CALL(Equal, IN2(TB(SH(4), V(1, 1, 0, 0)), TB(SH(4), V(1, 0, 1, 0)))),
         TB(SH(4), V(1, 0, 0, 1)), 0);
  EXPECT(CALL(Greater, IN2(TI32(SH(2, 1), V(1, 5)), TI32(SH(2), V(2, 4)))),
         TB(SH(2, 2), V(0, 0, 1, 1)), 0);
  EXPECT_ERR(CALL(Greater, IN2(TB(SH(1), V(1)), TB(SH(1), V(0)))), KILN_ERR_UNSUPPORTED, "bool");
  EXPECT_ERR(CALL(Equal, IN2(TI32(SH(1), V(1)), TI64(SH(1), V(1)))), KILN_ERR_SHAPE,
             "different dtypes");
}

static void test_where(void) {
  EXPECT(CALL(Where, IN3(TB(SH(2, 2), V(1, 0, 1, 1)), TI64(SH(2, 2), V(1, 2, 3, 4)),
                         TI64(SH(2, 2), V(9, 8, 7, 6)))),
         TI64(SH(2, 2), V(1, 8, 3, 4)), 0);
  /* all three broadcast: cond [2,1], x [3], y scalar */
  EXPECT(CALL(Where, IN3(TB(SH(2, 1), V(1, 0)), TF(SH(3), V(1, 2, 3)), TF(.rank = 0, V(-1)))),
         TF(SH(2, 3), V(1, 2, 3, -1, -1, -1)), 0);
  EXPECT(CALL(Where, IN3(TB(SH(2), V(0, 1)), TB(SH(2), V(1, 1)), TB(SH(2), V(0, 0)))),
         TB(SH(2), V(0, 1)), 0);
  EXPECT_ERR(CALL(Where, IN3(TF(SH(1), V(1)), TF(SH(1), V(1)), TF(SH(1), V(1)))),
             KILN_ERR_UNSUPPORTED, "float32");
  EXPECT_ERR(CALL(Where, IN3(TB(SH(1), V(1)), TF(SH(1), V(1)), TI64(SH(1), V(1)))), KILN_ERR_SHAPE,
             "different dtypes");
  EXPECT_ERR(CALL(Where, IN3(TB(SH(4), V(1, 1, 1, 1)), TF(SH(3), V(1, 2, 3)), TF(SH(1), V(1)))),
             KILN_ERR_SHAPE, "do not broadcast");
}

static void test_cast(void) {
  tspec f = TF(SH(5), V(-1.7, -0.2, 0, 2.9, 3e10));
  EXPECT(CALL(Cast, IN1(f), ATTRS(AI("to", KILN_I32))), TI32(SH(5), V(-1, 0, 0, 2, INT32_MAX)), 0);
  EXPECT(CALL(Cast, IN1(f), ATTRS(AI("to", KILN_I64))),
         TI64(SH(5), V(-1, 0, 0, 2, 30000001024.0)), 0); /* 3e10 as float32 */
  EXPECT(CALL(Cast, IN1(TF(SH(3), V(0, NAN, -0.5))), ATTRS(AI("to", KILN_BOOL))),
         TB(SH(3), V(0, 1, 1)), 0);
  EXPECT(CALL(Cast, IN1(TI64(SH(3), V(-3, 16777217, 4294967297.0))), ATTRS(AI("to", KILN_F32))),
         TF(SH(3), V(-3, 16777216, 4294967296.0)), 0);
  EXPECT(CALL(Cast, IN1(TI64(SH(2), V(4294967297.0, -1))), ATTRS(AI("to", KILN_I32))),
         TI32(SH(2), V(1, -1)), 0);
  EXPECT(CALL(Cast, IN1(TB(SH(2), V(1, 0))), ATTRS(AI("to", KILN_F32))), TF(SH(2), V(1, 0)), 0);
  EXPECT(CALL(Cast, IN1(TI32(SH(3), V(2, 0, -1))), ATTRS(AI("to", KILN_BOOL))),
         TB(SH(3), V(1, 0, 1)), 0);
  EXPECT(CALL(Cast, IN1(TI32(SH(1), V(7))), ATTRS(AI("to", KILN_I32))), TI32(SH(1), V(7)), 0);
  /* float16 (10) and double (11) are refused, naming the node */
  EXPECT_ERR(CALL(Cast, IN1(f), ATTRS(AI("to", 10))), KILN_ERR_UNSUPPORTED, "node 'n'");
  EXPECT_ERR(CALL(Cast, IN1(f), ATTRS(AI("to", 11))), KILN_ERR_UNSUPPORTED, "Cast to");
  EXPECT_ERR(CALL(Cast, IN1(f)), KILN_ERR_INVALID, "'to'");
}

/* ---- Dropout ---- */

/* First 12 mask bits of ONNX's test_training_dropout_default_mask (numpy seed 0, ratio 0.5). */
static const int onnx_mask12[12] = {1, 1, 1, 1, 0, 1, 0, 1, 1, 0, 1, 1};

static void test_dropout_inference(void) {
  tspec x = TF(SH(3), V(-1, 0, 1));
  EXPECT(CALL(Dropout, .opset = 13, IN1(x)), TF(SH(3), V(-1, 0, 1)), 0);
  EXPECT(CALL(Dropout, .opset = 11, IN1(x), ATTRS(AF("ratio", 0.2))), TF(SH(3), V(-1, 0, 1)), 0);
  /* a false training_mode wins over a training runtime */
  EXPECT(CALL(Dropout, .opset = 13, IN3(x, TF(.rank = 0, V(0.5)), TB(.rank = 0, V(0))),
              .ctx = {.training = true}),
         TF(SH(3), V(-1, 0, 1)), 0);
  /* opset 6 is_test=1 keeps inference behaviour in a training run */
  EXPECT(CALL(Dropout, .opset = 6, IN1(x), ATTRS(AI("is_test", 1)), .ctx = {.training = true}),
         TF(SH(3), V(-1, 0, 1)), 0);
  /* the mask: bool from opset 10, x's dtype before */
  for (int opset = 7; opset <= 13; opset += 6) {
    kiln_err e = {0};
    kiln_tensor *o[2] = {0};
    opcall c = CALL(Dropout, .opset = opset, IN1(x), .n_out = 2);
    CHECK_OK(run_call(&c, o, &e), &e);
    CHECK(same(o[0], TF(SH(3), V(-1, 0, 1)), 0, __LINE__));
    if (opset >= 10)
      CHECK(same(o[1], TB(SH(3), V(1, 1, 1)), 0, __LINE__));
    else
      CHECK(same(o[1], TF(SH(3), V(1, 1, 1)), 0, __LINE__));
    kiln_tensor_free(o[0]);
    kiln_tensor_free(o[1]);
  }
}

/* Trains a Dropout over 60 ones; returns the mask bits and the kept count. */
static int dropout_train(opcall c, double ratio, int *mask, int line) {
  kiln_err e = {0};
  kiln_tensor *o[2] = {0};
  int kept = -1;
  double ones[60];
  for (int i = 0; i < 60; i++) ones[i] = 1;
  c.in[0] = TF(SH(3, 4, 5), .v = ones);
  c.n_out = 2;
  if (run_call(&c, o, &e)) {
    fprintf(stderr, "line %d: %s\n", line, e.msg);
  } else {
    kept = 0;
    for (int i = 0; i < 60; i++) {
      int m = (int)kiln_tensor_get_f(o[1], i);
      double y = kiln_tensor_get_f(o[0], i);
      if (mask) mask[i] = m;
      kept += m;
      if (fabs(y - (m ? 1 / (1 - ratio) : 0)) > 1e-6) {
        fprintf(stderr, "line %d: y[%d] = %g with mask %d\n", line, i, y, m);
        kept = -1;
        break;
      }
    }
  }
  kiln_tensor_free(o[0]);
  kiln_tensor_free(o[1]);
  return kept;
}

static void test_dropout_training(void) {
  int m[60], m2[60];
  /* training_mode input true: numpy-identical mask for seed 0 */
  opcall c = CALL(Dropout, .opset = 13, .n_in = 3,
                  .in = {OMIT, TF(.rank = 0, V(0.5)), TB(.rank = 0, V(1))}, ATTRS(AI("seed", 0)));
  CHECK(dropout_train(c, 0.5, m, __LINE__) > 0);
  for (int i = 0; i < 12; i++) CHECK(m[i] == onnx_mask12[i]);
  /* the same seed gives the same mask; another run seed a different one */
  CHECK(dropout_train(c, 0.5, m2, __LINE__) > 0);
  CHECK(memcmp(m, m2, sizeof m) == 0);
  c.ctx.seed = 12345;
  CHECK(dropout_train(c, 0.5, m2, __LINE__) > 0);
  CHECK(memcmp(m, m2, sizeof m) != 0);
  /* a seed beyond 32 bits */
  c.ctx.seed = 1ull << 40;
  CHECK(dropout_train(c, 0.5, m2, __LINE__) > 0);
  /* ratio 0.75 drops most; ratio 0 keeps all */
  c.ctx.seed = 0;
  c.in[1] = TF(.rank = 0, V(0.75));
  int kept = dropout_train(c, 0.75, NULL, __LINE__);
  CHECK(kept > 5 && kept < 30);
  c.in[1] = TF(.rank = 0, V(0));
  CHECK(dropout_train(c, 0, NULL, __LINE__) == 60);
  /* no training_mode input: the runtime decides; default ratio 0.5 */
  opcall d = CALL(Dropout, .opset = 13, IN1(OMIT), .ctx = {.training = true});
  kept = dropout_train(d, 0.5, NULL, __LINE__);
  CHECK(kept > 10 && kept < 50);
  d.ctx.training = false;
  CHECK(dropout_train(d, 0, NULL, __LINE__) == 60);
  /* old opsets train from the runtime's flag with the ratio attribute */
  opcall old = CALL(Dropout, .opset = 7, IN1(OMIT), ATTRS(AF("ratio", 0.25)),
                    .ctx = {.training = true});
  kept = dropout_train(old, 0.25, NULL, __LINE__);
  CHECK(kept > 30 && kept < 60);
  /* ratio 1 cannot be scaled */
  EXPECT_ERR(CALL(Dropout, .opset = 13, IN3(TF(SH(1), V(1)), TF(.rank = 0, V(1)),
                                            TB(.rank = 0, V(1)))),
             KILN_ERR_INVALID, "ratio");
  EXPECT_ERR(CALL(Dropout, .opset = 13, IN2(TF(SH(1), V(1)), TF(SH(2), V(0.5, 0.5)))),
             KILN_ERR_SHAPE, "ratio");
  EXPECT_ERR(CALL(Dropout, .opset = 10, IN2(TF(SH(1), V(1)), TF(.rank = 0, V(0.5)))),
             KILN_ERR_INVALID, "attribute");
}

/* ---- errors and flags ---- */

static void test_bad_input(void) {
  EXPECT_ERR(CALL(Add, IN2(TF(SH(2), V(1, 2)), TI64(SH(2), V(1, 2)))), KILN_ERR_SHAPE,
             "different dtypes");
  EXPECT_ERR(CALL(Mul, IN2(TF(SH(2, 3), V(1, 2, 3, 4, 5, 6)), TF(SH(4), V(1, 2, 3, 4)))),
             KILN_ERR_SHAPE, "do not broadcast");
  EXPECT_ERR(CALL(Sqrt, IN1(TI64(SH(1), V(4)))), KILN_ERR_UNSUPPORTED, "int64");
  EXPECT_ERR(CALL(Relu, IN1(TB(SH(1), V(1)))), KILN_ERR_UNSUPPORTED, "bool");
  EXPECT_ERR(CALL(Not, IN1(TF(SH(1), V(1)))), KILN_ERR_UNSUPPORTED, "float32");
  EXPECT_ERR(CALL(Add, IN2(TB(SH(1), V(1)), TB(SH(1), V(1)))), KILN_ERR_UNSUPPORTED, "bool");
  EXPECT_ERR(CALL(Sub, IN2(TF(SH(2), V(1, 2)), TF(SH(3), V(1, 2, 3)))), KILN_ERR_SHAPE, "node 'n'");
  EXPECT_ERR(CALL(Relu, IN2(TF(SH(1), V(1)), TF(SH(1), V(1)))), KILN_ERR_INVALID, "inputs");
  EXPECT_ERR(CALL(Elu, IN1(TF(SH(1), V(1))), ATTRS(AI("alpha", 1))), KILN_ERR_INVALID,
             "wrong kind");
}

static void test_flags(void) {
  static const kiln_op same_dtype[] = {KILN_OP_Relu, KILN_OP_Add, KILN_OP_Pow, KILN_OP_Clip,
                                       KILN_OP_PRelu, KILN_OP_Max, KILN_OP_Dropout, KILN_OP_Not};
  static const kiln_op other[] = {KILN_OP_Equal, KILN_OP_Less, KILN_OP_Where, KILN_OP_Cast};
  for (size_t i = 0; i < sizeof same_dtype / sizeof *same_dtype; i++) {
    uint32_t f = kiln_op_get(same_dtype[i])->flags;
    CHECK((f & KILN_OPF_ELEMENTWISE) && (f & KILN_OPF_INPLACE_OK));
  }
  for (size_t i = 0; i < sizeof other / sizeof *other; i++) {
    uint32_t f = kiln_op_get(other[i])->flags;
    CHECK((f & KILN_OPF_ELEMENTWISE) && !(f & KILN_OPF_INPLACE_OK));
  }
  CHECK(kiln_op_get(KILN_OP_Dropout)->flags & KILN_OPF_NO_FOLD);
  CHECK(!(kiln_op_get(KILN_OP_Add)->flags & KILN_OPF_NO_FOLD));
  CHECK(kiln_op_lookup("", "HardSwish") == KILN_OP_HardSwish);
  CHECK(kiln_op_lookup("ai.onnx", "Where") == KILN_OP_Where);
}

static void test_failing_allocator(void) {
  /* every allocation failure while building, inferring and running a graph is an error */
  for (long k = 0; k < 150; k++) {
    kiln_err e = {0};
    kiln_tensor *o[2] = {0};
    opcall c = CALL(Dropout, .opset = 13,
                    IN3(TF(SH(4), V(1, 2, 3, 4)), TF(.rank = 0, V(0.5)), TB(.rank = 0, V(1))),
                    .n_out = 2);
    kiln_alloc_fail_after(k);
    kiln_code rc = run_call(&c, o, &e);
    kiln_alloc_fail_after(-1);
    CHECK_MSG(rc == KILN_OK || rc == KILN_ERR_NOMEM, "%s", e.msg);
    kiln_tensor_free(o[0]);
    kiln_tensor_free(o[1]);
  }
}

static void test_dropout_nomem(void) {
  /* Dropout's kernel allocates its generator: called directly, a failure is an error */
  kiln_err e = {0};
  kiln_graph *g = ir_graph_new();
  int x, y, node;
  CHECK_OK(ir_set_opset(g, "", 13, &e), &e);
  CHECK_OK(ir_add_value(g, "x", &x, &e), &e);
  CHECK_OK(ir_add_value(g, "y", &y, &e), &e);
  CHECK_OK(ir_add_node(g, KILN_OP_Dropout, "d", (int[]){x, -1, -1}, 3, (int[]){y}, 1, &node, &e),
           &e);
  kiln_tensor *t[4] = {0};
  kiln_shape s4 = kiln_shape_make(1, (int64_t[]){4}), s0 = kiln_shape_make(0, NULL);
  CHECK_OK(kiln_tensor_new(KILN_F32, &s4, &t[0], &e), &e);
  CHECK_OK(kiln_tensor_new(KILN_F32, &s0, &t[1], &e), &e);
  CHECK_OK(kiln_tensor_new(KILN_BOOL, &s0, &t[2], &e), &e);
  CHECK_OK(kiln_tensor_new(KILN_F32, &s4, &t[3], &e), &e);
  ((float *)t[1]->data)[0] = 0.5f;
  ((uint8_t *)t[2]->data)[0] = 1;
  kiln_ref_ctx ctx = {.g = g};
  const kiln_tensor *ins[3] = {t[0], t[1], t[2]};
  kiln_alloc_fail_after(0);
  kiln_code rc = ref_Dropout(&ctx, ir_node(g, node), ins, &t[3], &e);
  kiln_alloc_fail_after(-1);
  CHECK(rc == KILN_ERR_NOMEM);
  kiln_err_clear(&e);
  CHECK_OK(ref_Dropout(&ctx, ir_node(g, node), ins, &t[3], &e), &e);
  for (int i = 0; i < 4; i++) kiln_tensor_free(t[i]);
  ir_graph_free(g);
}

int main(void) {
  RUN(test_activations);
  RUN(test_math);
  RUN(test_unary_int);
  RUN(test_clip);
  RUN(test_binary_broadcast);
  RUN(test_binary_int);
  RUN(test_legacy_broadcast);
  RUN(test_pow);
  RUN(test_prelu);
  RUN(test_variadic);
  RUN(test_compare);
  RUN(test_where);
  RUN(test_cast);
  RUN(test_dropout_inference);
  RUN(test_dropout_training);
  RUN(test_bad_input);
  RUN(test_flags);
  RUN(test_failing_allocator);
  RUN(test_dropout_nomem);
  TEST_MAIN_END();
}
