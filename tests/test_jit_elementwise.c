/* test_jit_elementwise.c — the elementwise family's compiled kernels against the reference
 * kernels (the oracle) on one-node graphs: broadcast shapes (numpy and opset-6 axis forms,
 * size-1 and empty dims, rows longer than a tile), every dtype an op takes, NaN/inf/-0 and
 * integer edge values; results at 1 and 3 threads bitwise equal; in-place reuse; Dropout's
 * training masks bit for bit; integer division by zero; the variadic input limit. */
#include <float.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "codegen/compile.h"
#include "runtime/ref.h"
#include "test.h"

#define MAX_IN 72

/* A kernel cache private to this run: the 3-thread compile of a case reuses the 1-thread one's
 * objects (kernels do not depend on the thread count). */
static char cache_dir[] = "/tmp/kiln-test-jit-ew-XXXXXX";

typedef struct attr_set {
  const char *name;
  int kind; /* 0 float, 1 int */
  double f;
  int64_t i;
} attr_set;

/* A one-node graph: inputs (NULL = omitted; bit i of const_mask = an initializer), attributes,
 * and how close the compiled result must be to the reference (rtol 0: bitwise, NaN ~ NaN). */
typedef struct spec {
  kiln_op op;
  int opset;
  int n_in, n_out;
  kiln_tensor *in[MAX_IN];
  uint64_t const_mask;
  attr_set attrs[4];
  int n_attrs;
  double rtol, atol;
  const char *what;
} spec;

/* ---- inputs ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 16);
}

enum { V_ANY, V_POS, V_NONZERO, V_SMALL, V_EXP, V_CAST };

static kiln_tensor *mk(kiln_dtype dt, int rank, const int64_t *d, int kind) {
  kiln_err e = {0};
  kiln_tensor *t = NULL;
  kiln_shape s = kiln_shape_make(rank, d);
  if (kiln_tensor_new(dt, &s, &t, &e)) {
    fprintf(stderr, "tensor: %s\n", e.msg);
    abort();
  }
  static const float fspecial[] = {NAN,    INFINITY, -INFINITY, -0.0f, 0.0f,  1e30f, -1e30f,
                                   1e-40f, 88.5f,    -104.0f,   3.0f,  -3.0f, 0.5f,  -0.5f};
  static const float fcast[] = {3e9f,          -3e9f, 1e19f,    -1e19f,    2.7f,  -2.7f,
                                2147483520.0f, NAN,   INFINITY, -INFINITY, -0.0f, 255.9f};
  static const int64_t ispecial[] = {INT64_MIN, INT64_MAX, INT32_MIN, INT32_MAX, -1, 0, 1, 2};
  for (int64_t k = 0; k < t->numel; k++) {
    uint32_t r = rnd();
    double v;
    int64_t iv;
    switch (kind) {
    case V_POS:
      v = (r % 5000) / 500.0 + 0.001;
      iv = r % 1000 + 1;
      break;
    case V_SMALL:
      v = (double)(int)(r % 9) - 4;
      iv = (int64_t)(r % 11) - 5;
      break;
    case V_EXP:
      v = ((int)(r % 13) - 4) * 0.5;
      iv = (int64_t)(r % 45) - 3;
      break;
    case V_CAST:
      v = r % 3 ? ((int)(r % 20001) - 10000) / 37.0 : fcast[r % 12];
      iv = (int64_t)r - (1ll << 31);
      if (r % 4 == 0) iv = ispecial[r % 8];
      break;
    default:
      v = r % 5 == 0 ? fspecial[(r / 5) % 14] : ((int)(r % 12001) - 6000) / 1000.0;
      iv = r % 8 == 0 ? ispecial[(r / 8) % 8] : (int64_t)(r % 2001) - 1000;
      if (kind == V_NONZERO && iv == 0) iv = 7;
      break;
    }
    switch (dt) {
    case KILN_F32:
      ((float *)t->data)[k] = (float)v;
      break;
    case KILN_I32:
      ((int32_t *)t->data)[k] = (int32_t)(uint32_t)(uint64_t)iv;
      break;
    case KILN_I64:
      ((int64_t *)t->data)[k] = iv;
      break;
    case KILN_BOOL:
      ((uint8_t *)t->data)[k] = (r >> 3) & 1;
      break;
    default:
      abort();
    }
    if (kind == V_NONZERO && dt == KILN_I32 && ((int32_t *)t->data)[k] == 0)
      ((int32_t *)t->data)[k] = 3;
  }
  return t;
}

static kiln_tensor *scalar_f(float v) {
  kiln_tensor *t = mk(KILN_F32, 0, NULL, V_ANY);
  ((float *)t->data)[0] = v;
  return t;
}
static kiln_tensor *scalar_b(bool v) {
  kiln_tensor *t = mk(KILN_BOOL, 0, NULL, V_ANY);
  ((uint8_t *)t->data)[0] = v;
  return t;
}

/* ---- graphs ---- */

static kiln_graph *build(const spec *s, kiln_err *e) {
  kiln_graph *g = ir_graph_new();
  if (!g) return NULL;
  ir_set_opset(g, "", s->opset, e);
  int ids[MAX_IN], outs[4];
  for (int i = 0; i < s->n_in; i++) {
    char name[16];
    snprintf(name, sizeof name, "in%d", i);
    ids[i] = -1;
    if (!s->in[i]) continue;
    if (i < 64 && (s->const_mask >> i & 1)) {
      kiln_tensor *c = NULL;
      kiln_tensor_clone(s->in[i], &c, e);
      ir_add_const(g, name, c, true, &ids[i], e);
    } else {
      ir_add_value(g, name, &ids[i], e);
      kiln_value *v = ir_val(g, ids[i]);
      v->dtype = s->in[i]->dtype;
      v->shape = s->in[i]->shape;
      v->typed = true;
      ir_add_input(g, ids[i], e);
    }
  }
  for (int o = 0; o < s->n_out; o++) {
    char name[16];
    snprintf(name, sizeof name, "out%d", o);
    ir_add_value(g, name, &outs[o], e);
  }
  int node = -1;
  ir_add_node(g, s->op, "node", ids, s->n_in, outs, s->n_out, &node, e);
  for (int a = 0; a < s->n_attrs && node >= 0; a++) {
    if (s->attrs[a].kind == 0)
      ir_set_attr_float(g, node, s->attrs[a].name, s->attrs[a].f, e);
    else
      ir_set_attr_int(g, node, s->attrs[a].name, s->attrs[a].i, e);
  }
  for (int o = 0; o < s->n_out; o++)
    ir_add_output(g, outs[o], e);
  if (!e->code) ir_verify(g, e);
  if (!e->code) ir_toposort(g, e);
  if (!e->code) ir_infer(g, NULL, e); /* no folding: constant inputs stay kernel arguments */
  return g;
}

static int feeds_of(const spec *s, kiln_tensor **feed) {
  int nf = 0;
  for (int i = 0; i < s->n_in; i++)
    if (s->in[i] && !(s->const_mask >> i & 1)) feed[nf++] = s->in[i];
  return nf;
}

/* Compiles and runs at `threads`; outputs into got[]. */
static kiln_code run_jit(const spec *s, int threads, kiln_tensor **got, kiln_program **keep,
                         kiln_err *e) {
  kiln_graph *g = build(s, e);
  if (e->code) {
    ir_graph_free(g);
    return e->code;
  }
  kiln_program *p = NULL;
  kiln_compile_opts o = {.threads = threads, .cache_dir = cache_dir};
  KILN_TRY(kiln_compile(g, &o, &p, e));
  kiln_tensor *feed[MAX_IN];
  feeds_of(s, feed);
  kiln_code rc = kiln_program_run(p, feed, got, false, e);
  if (keep)
    *keep = p;
  else
    kiln_program_free(p);
  return rc;
}

static bool same_float(float g, float w, double rtol, double atol) {
  if (isnan(g) || isnan(w)) return isnan(g) && isnan(w);
  if (rtol == 0 && atol == 0) return memcmp(&g, &w, sizeof g) == 0; /* -0 != +0 here */
  if (isinf(g) || isinf(w)) return g == w;
  return fabs((double)g - (double)w) <= atol + rtol * fabs((double)w);
}

/* Checks one output against the reference; prints the first few mismatches. */
static void compare(const spec *s, int o, const kiln_tensor *got, const kiln_tensor *want) {
  CHECK_MSG(got && want && got->dtype == want->dtype && kiln_shape_eq(&got->shape, &want->shape),
            "%s: output %d has the wrong dtype or shape", s->what, o);
  if (!got || !want || got->dtype != want->dtype || !kiln_shape_eq(&got->shape, &want->shape))
    return;
  int bad = 0;
  for (int64_t i = 0; i < got->numel; i++) {
    bool ok;
    if (got->dtype == KILN_F32)
      ok = same_float(((float *)got->data)[i], ((float *)want->data)[i], s->rtol, s->atol);
    else
      ok = kiln_tensor_get_i(got, i) == kiln_tensor_get_i(want, i);
    if (!ok && bad++ < 4)
      fprintf(stderr, "  %s: out%d[%lld] = %.9g, reference %.9g\n", s->what, o, (long long)i,
              kiln_tensor_get_f(got, i), kiln_tensor_get_f(want, i));
  }
  CHECK_MSG(bad == 0, "%s: %d of %lld elements differ from the reference", s->what, bad,
            (long long)got->numel);
}

/* The differential check: reference vs compiled at 1 and 3 threads (bitwise equal to each
 * other).  Frees the spec's input tensors. */
static void diff(spec *s) {
  kiln_err e = {0};
  kiln_tensor *want[4] = {0}, *got1[4] = {0}, *got3[4] = {0}, *feed[MAX_IN];
  kiln_graph *g = build(s, &e);
  CHECK_MSG(e.code == KILN_OK, "%s: building: %s", s->what, e.msg);
  if (!e.code) {
    feeds_of(s, feed);
    kiln_ref_ctx ctx = {.g = g, .training = false, .seed = 0};
    CHECK_MSG(kiln_ref_run(g, &ctx, feed, want, &e) == KILN_OK, "%s: reference: %s", s->what,
              e.msg);
  }
  ir_graph_free(g);
  if (!e.code)
    CHECK_MSG(run_jit(s, 1, got1, NULL, &e) == KILN_OK, "%s: jit, 1 thread: %s", s->what, e.msg);
  if (!e.code)
    CHECK_MSG(run_jit(s, 3, got3, NULL, &e) == KILN_OK, "%s: jit, 3 threads: %s", s->what, e.msg);
  if (!e.code)
    for (int o = 0; o < s->n_out; o++) {
      compare(s, o, got1[o], want[o]);
      CHECK_MSG(got1[o] && got3[o] &&
                    memcmp(got1[o]->data, got3[o]->data, kiln_tensor_nbytes(got1[o])) == 0,
                "%s: output %d differs between 1 and 3 threads", s->what, o);
    }
  for (int o = 0; o < 4; o++) {
    kiln_tensor_free(want[o]);
    kiln_tensor_free(got1[o]);
    kiln_tensor_free(got3[o]);
  }
  for (int i = 0; i < s->n_in; i++)
    kiln_tensor_free(s->in[i]);
}

#define SHAPE(...)                                                                                 \
  (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), ((const int64_t[]){__VA_ARGS__})
#define SCALAR 0, NULL

/* ---- tests ---- */

typedef struct unary_case {
  kiln_op op;
  double rtol; /* 0: bitwise equal to the reference */
  attr_set attr[2];
  int n_attr;
  int kind;
} unary_case;

static void test_unary_float(void) {
#define U(o, tol, ...)                                                                             \
  { .op = KILN_OP_##o, .rtol = tol, __VA_ARGS__ }
#define A1(n1, v1) .attr = {{.name = n1, .f = v1}}, .n_attr = 1
#define A2(n1, v1, n2, v2) .attr = {{.name = n1, .f = v1}, {.name = n2, .f = v2}}, .n_attr = 2
  static const unary_case cases[] = {
      U(Identity, 0),
      U(Relu, 0),
      U(LeakyRelu, 1e-6),
      U(LeakyRelu, 1e-6, A1("alpha", 0.3)),
      U(Sigmoid, 1e-5),
      U(Tanh, 1e-5),
      U(HardSigmoid, 1e-5),
      U(HardSigmoid, 1e-5, A2("alpha", 0.4, "beta", 0.1)),
      U(HardSwish, 1e-5),
      U(Elu, 1e-5),
      U(Elu, 1e-5, A1("alpha", 2.5)),
      U(Selu, 1e-5),
      U(Selu, 1e-5, A2("alpha", 2, "gamma", 3)),
      U(Softplus, 1e-5),
      U(Softsign, 1e-6),
      U(Sqrt, 0),
      U(Sqrt, 0, .kind = V_POS),
      U(Exp, 1e-6),
      U(Log, 1e-6),
      U(Log, 1e-6, .kind = V_POS),
      U(Neg, 0),
      U(Abs, 0),
      U(Reciprocal, 0),
      U(Floor, 0),
      U(Ceil, 0),
      U(Erf, 1e-6),
  };
#undef U
#undef A1
#undef A2
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    const unary_case *u = &cases[c];
    for (int shape = 0; shape < 3; shape++) {
      spec s = {.op = u->op,
                .opset = 13,
                .n_in = 1,
                .n_out = 1,
                .rtol = u->rtol,
                .atol = u->rtol ? 1e-7 : 0,
                .what = kiln_op_name(u->op),
                .n_attrs = u->n_attr};
      memcpy(s.attrs, u->attr, sizeof u->attr);
      if (shape == 0) s.in[0] = mk(KILN_F32, SHAPE(3, 5, 7), u->kind);
      if (shape == 1) s.in[0] = mk(KILN_F32, SCALAR, u->kind);
      if (shape == 2) s.in[0] = mk(KILN_F32, SHAPE(2, 0, 3), u->kind);
      diff(&s);
    }
  }
  /* longer than a tile, odd length */
  spec s = {.op = KILN_OP_Sigmoid,
            .opset = 13,
            .n_in = 1,
            .n_out = 1,
            .rtol = 1e-5,
            .atol = 1e-7,
            .what = "Sigmoid 40001"};
  s.in[0] = mk(KILN_F32, SHAPE(40001), V_ANY);
  diff(&s);
}

static void test_unary_int(void) {
  static const kiln_op ops[] = {KILN_OP_Identity, KILN_OP_Relu, KILN_OP_Neg, KILN_OP_Abs};
  static const kiln_dtype dts[] = {KILN_I32, KILN_I64};
  for (int o = 0; o < 4; o++)
    for (int d = 0; d < 2; d++) {
      spec s = {.op = ops[o], .opset = 13, .n_in = 1, .n_out = 1, .what = kiln_op_name(ops[o])};
      s.in[0] = mk(dts[d], SHAPE(4, 33), V_ANY);
      diff(&s);
    }
  spec s = {.op = KILN_OP_Not, .opset = 1, .n_in = 1, .n_out = 1, .what = "Not"};
  s.in[0] = mk(KILN_BOOL, SHAPE(3, 4, 5), V_ANY);
  diff(&s);
  spec id = {.op = KILN_OP_Identity, .opset = 13, .n_in = 1, .n_out = 1, .what = "Identity bool"};
  id.in[0] = mk(KILN_BOOL, SHAPE(17), V_ANY);
  diff(&id);
}

static void test_clip(void) {
  /* opset 6: attributes */
  spec a = {.op = KILN_OP_Clip,
            .opset = 6,
            .n_in = 1,
            .n_out = 1,
            .what = "Clip-6",
            .attrs = {{"min", 0, -1.5}, {"max", 0, 2.25}},
            .n_attrs = 2};
  a.in[0] = mk(KILN_F32, SHAPE(5, 9), V_ANY);
  diff(&a);
  spec d = {.op = KILN_OP_Clip, .opset = 6, .n_in = 1, .n_out = 1, .what = "Clip-6 defaults"};
  d.in[0] = mk(KILN_F32, SHAPE(5, 9), V_ANY);
  diff(&d);
  /* opset 11+: bound inputs, constant or fed, either omitted, lo > hi */
  for (int form = 0; form < 5; form++) {
    spec s = {
        .op = KILN_OP_Clip, .opset = form < 3 ? 13 : 11, .n_in = 3, .n_out = 1, .what = "Clip-13"};
    s.in[0] = mk(KILN_F32, SHAPE(3, 50), V_ANY);
    s.in[1] = form == 1 ? NULL : scalar_f(form == 4 ? 3.0f : -0.75f);
    s.in[2] = form == 2 ? NULL : scalar_f(1.25f);
    s.const_mask = form == 3 ? 0x6 : 0;
    diff(&s);
  }
  static const kiln_dtype dts[] = {KILN_I32, KILN_I64};
  for (int d2 = 0; d2 < 2; d2++)
    for (int form = 0; form < 3; form++) {
      spec s = {.op = KILN_OP_Clip, .opset = 13, .n_in = 3, .n_out = 1, .what = "Clip int"};
      s.in[0] = mk(dts[d2], SHAPE(70), V_ANY);
      s.in[1] = form == 1 ? NULL : mk(dts[d2], SCALAR, V_SMALL);
      s.in[2] = form == 2 ? NULL : mk(dts[d2], SHAPE(1), V_POS);
      diff(&s);
    }
}

/* Broadcast shape pairs: same, scalar, trailing, middle, both sides, empty, long rows. */
typedef struct shape_pair {
  int ra;
  int64_t a[5];
  int rb;
  int64_t b[5];
} shape_pair;
static const shape_pair pairs[] = {
    {0, {0}, 0, {0}},
    {1, {37}, 1, {37}},
    {3, {3, 1, 5}, 2, {4, 1}},
    {4, {2, 3, 4, 5}, 1, {5}},
    {4, {2, 3, 4, 5}, 3, {3, 1, 1}},
    {1, {1}, 2, {7, 1}},
    {2, {0, 3}, 1, {3}},
    {2, {300, 70}, 2, {300, 1}},
    {5, {2, 1, 3, 1, 5}, 5, {1, 4, 1, 6, 1}},
    {2, {2, 17000}, 1, {17000}},
    {1, {40000}, 0, {0}},
    {3, {3, 1, 16500}, 2, {2, 1}},
};
#define N_PAIRS (int)(sizeof pairs / sizeof pairs[0])

/* Every pair both ways round (all), or a few of them one way. */
static void binary_shapes(kiln_op op, int opset, kiln_dtype da, kiln_dtype db, int ka, int kb,
                          double rtol, bool all, const char *what) {
  for (int p = 0; p < N_PAIRS; p += all ? 1 : 3)
    for (int swap = 0; swap < (all ? 2 : 1); swap++) {
      const shape_pair *sp = &pairs[p];
      spec s = {.op = op,
                .opset = opset,
                .n_in = 2,
                .n_out = 1,
                .rtol = rtol,
                .atol = rtol ? 1e-7 : 0,
                .what = what};
      s.in[0] = swap ? mk(da, sp->rb, sp->b, ka) : mk(da, sp->ra, sp->a, ka);
      s.in[1] = swap ? mk(db, sp->ra, sp->a, kb) : mk(db, sp->rb, sp->b, kb);
      if (p == 1 && swap) s.const_mask = 2; /* a constant operand */
      diff(&s);
    }
}

static void test_arith(void) {
  static const kiln_op ops[] = {KILN_OP_Add, KILN_OP_Sub, KILN_OP_Mul, KILN_OP_Div};
  static const kiln_dtype dts[] = {KILN_F32, KILN_I32, KILN_I64};
  for (int o = 0; o < 4; o++)
    for (int d = 0; d < 3; d++)
      binary_shapes(ops[o], 14, dts[d], dts[d], V_ANY, ops[o] == KILN_OP_Div ? V_NONZERO : V_ANY, 0,
                    d == 0, kiln_op_name(ops[o]));
}

static void test_compare(void) {
  static const kiln_op ops[] = {KILN_OP_Equal, KILN_OP_Greater, KILN_OP_Less};
  static const kiln_dtype dts[] = {KILN_F32, KILN_I32, KILN_I64, KILN_BOOL};
  for (int o = 0; o < 3; o++)
    for (int d = 0; d < 4; d++) {
      if (dts[d] == KILN_BOOL && ops[o] != KILN_OP_Equal) continue;
      /* small values so that equal pairs occur */
      binary_shapes(ops[o], 13, dts[d], dts[d], V_SMALL, V_SMALL, 0, o == 1 && d == 0,
                    kiln_op_name(ops[o]));
    }
  spec s = {.op = KILN_OP_Equal, .opset = 13, .n_in = 2, .n_out = 1, .what = "Equal NaN"};
  s.in[0] = mk(KILN_F32, SHAPE(200), V_ANY);
  s.in[1] = mk(KILN_F32, SHAPE(200), V_ANY);
  memcpy(s.in[1]->data, s.in[0]->data, 100 * sizeof(float)); /* equal halves, NaN included */
  diff(&s);
}

static void test_pow(void) {
  static const kiln_dtype dts[] = {KILN_F32, KILN_I32, KILN_I64};
  for (int a = 0; a < 3; a++)
    for (int b = 0; b < 3; b++) {
      char what[64];
      snprintf(what, sizeof what, "Pow %s^%s", kiln_dtype_name(dts[a]), kiln_dtype_name(dts[b]));
      spec s = {.op = KILN_OP_Pow, .opset = 15, .n_in = 2, .n_out = 1, .what = what};
      s.in[0] = mk(dts[a], SHAPE(4, 60), V_SMALL);
      s.in[1] = mk(dts[b], SHAPE(60), V_EXP);
      diff(&s);
      /* large bases: wrapping (int^int) and saturation (int^float) */
      spec w = {.op = KILN_OP_Pow, .opset = 15, .n_in = 2, .n_out = 1, .what = what};
      w.in[0] = mk(dts[a], SHAPE(3, 64), V_ANY);
      w.in[1] = mk(dts[b], SHAPE(3, 1), V_SMALL);
      diff(&w);
    }
  binary_shapes(KILN_OP_Pow, 13, KILN_F32, KILN_F32, V_ANY, V_EXP, 0, false, "Pow shapes");
}

static void test_prelu(void) {
  static const kiln_dtype dts[] = {KILN_F32, KILN_I32, KILN_I64};
  for (int d = 0; d < 3; d++) {
    spec s = {.op = KILN_OP_PRelu, .opset = 9, .n_in = 2, .n_out = 1, .what = "PRelu"};
    s.in[0] = mk(dts[d], SHAPE(2, 3, 4, 5), V_ANY);
    s.in[1] = mk(dts[d], SHAPE(3, 1, 1), V_SMALL);
    diff(&s);
    spec t = {.op = KILN_OP_PRelu, .opset = 16, .n_in = 2, .n_out = 1, .what = "PRelu trailing"};
    t.in[0] = mk(dts[d], SHAPE(6, 20000), V_ANY);
    t.in[1] = mk(dts[d], SHAPE(20000), V_SMALL);
    t.const_mask = 2;
    diff(&t);
  }
  /* opset 6: a 1-D slope of the channel count applies along axis 1 */
  spec o = {.op = KILN_OP_PRelu, .opset = 6, .n_in = 2, .n_out = 1, .what = "PRelu-6 per channel"};
  o.in[0] = mk(KILN_F32, SHAPE(2, 3, 4, 5), V_ANY);
  o.in[1] = mk(KILN_F32, SHAPE(3), V_SMALL);
  o.const_mask = 2;
  diff(&o);
}

/* Opset < 7 binary ops with broadcast=1 place b at a's axes [axis, axis + rank(b)). */
static void test_legacy_axis(void) {
  static const kiln_op ops[] = {KILN_OP_Add, KILN_OP_Sub,   KILN_OP_Mul,     KILN_OP_Div,
                                KILN_OP_Pow, KILN_OP_Equal, KILN_OP_Greater, KILN_OP_Less};
  for (int o = 0; o < 8; o++)
    for (int form = 0; form < 4; form++) {
      spec s = {.op = ops[o],
                .opset = 6,
                .n_in = 2,
                .n_out = 1,
                .what = "legacy broadcast",
                .attrs = {{"broadcast", 1, 0, 1},
                          {"axis", 1, 0,
                           form == 0   ? 1
                           : form == 1 ? 0
                                       : -2}},
                .n_attrs = form == 3 ? 1 : 2};
      s.in[0] = mk(KILN_F32, SHAPE(2, 3, 4, 5), V_SMALL);
      if (form == 0) s.in[1] = mk(KILN_F32, SHAPE(3, 4), V_SMALL); /* middle axes */
      if (form == 1) s.in[1] = mk(KILN_F32, SHAPE(2), V_SMALL);    /* leading axis */
      if (form == 2) s.in[1] = mk(KILN_F32, SHAPE(4, 1), V_SMALL); /* negative axis */
      if (form == 3) s.in[1] = mk(KILN_F32, SHAPE(4, 5), V_SMALL); /* no axis: trailing */
      diff(&s);
    }
  spec i = {.op = KILN_OP_Add,
            .opset = 6,
            .n_in = 2,
            .n_out = 1,
            .what = "legacy broadcast int",
            .attrs = {{"broadcast", 1, 0, 1}, {"axis", 1, 0, 0}},
            .n_attrs = 2};
  i.in[0] = mk(KILN_I64, SHAPE(3, 20000), V_ANY);
  i.in[1] = mk(KILN_I64, SHAPE(3), V_ANY);
  diff(&i);
}

static void test_variadic(void) {
  static const kiln_op ops[] = {KILN_OP_Sum, KILN_OP_Mean, KILN_OP_Max, KILN_OP_Min};
  for (int o = 0; o < 4; o++)
    for (int form = 0; form < 4; form++) {
      spec s = {.op = ops[o], .opset = 13, .n_out = 1, .what = kiln_op_name(ops[o])};
      if (form == 0) { /* one input */
        s.n_in = 1;
        s.in[0] = mk(KILN_F32, SHAPE(3, 7), V_ANY);
      } else if (form == 1) { /* three broadcast inputs, NaN and -0 in them */
        s.n_in = 3;
        s.in[0] = mk(KILN_F32, SHAPE(4, 1, 6), V_ANY);
        s.in[1] = mk(KILN_F32, SHAPE(5, 1), V_ANY);
        s.in[2] = mk(KILN_F32, SHAPE(6), V_ANY);
      } else if (form == 2) { /* many inputs, one constant, rows over a tile */
        s.n_in = 9;
        for (int i = 0; i < 9; i++)
          s.in[i] = mk(KILN_F32, SHAPE(2, i % 2 ? 1 : 17000), V_ANY);
        s.const_mask = 1u << 4;
      } else { /* same shapes, small values: ties */
        s.n_in = 2;
        s.in[0] = mk(KILN_F32, SHAPE(50), V_SMALL);
        s.in[1] = mk(KILN_F32, SHAPE(50), V_SMALL);
        float *a = s.in[0]->data, *b = s.in[1]->data;
        a[0] = NAN, b[1] = NAN, a[2] = -0.0f, b[2] = 0.0f, a[3] = 0.0f, b[3] = -0.0f;
        a[4] = b[4] = NAN, a[5] = INFINITY, b[6] = -INFINITY;
      }
      diff(&s);
    }
  static const kiln_dtype dts[] = {KILN_I32, KILN_I64};
  for (int d = 0; d < 2; d++)
    for (int o = 2; o < 4; o++) {
      spec s = {.op = ops[o], .opset = 13, .n_in = 3, .n_out = 1, .what = "Max/Min int"};
      s.in[0] = mk(dts[d], SHAPE(4, 1, 6), V_ANY);
      s.in[1] = mk(dts[d], SHAPE(5, 1), V_ANY);
      s.in[2] = mk(dts[d], SHAPE(6), V_ANY);
      diff(&s);
    }
}

static void test_where(void) {
  static const kiln_dtype dts[] = {KILN_F32, KILN_I32, KILN_I64, KILN_BOOL};
  for (int d = 0; d < 4; d++) {
    spec s = {.op = KILN_OP_Where, .opset = 16, .n_in = 3, .n_out = 1, .what = "Where"};
    s.in[0] = mk(KILN_BOOL, SHAPE(3, 1, 5), V_ANY);
    s.in[1] = mk(dts[d], SHAPE(4, 1), V_ANY);
    s.in[2] = mk(dts[d], SHAPE(5), V_ANY);
    diff(&s);
    spec t = {.op = KILN_OP_Where, .opset = 9, .n_in = 3, .n_out = 1, .what = "Where long"};
    t.in[0] = mk(KILN_BOOL, SHAPE(20001), V_ANY);
    t.in[1] = mk(dts[d], SHAPE(20001), V_ANY);
    t.in[2] = mk(dts[d], SCALAR, V_ANY);
    diff(&t);
  }
}

static void test_cast(void) {
  static const kiln_dtype dts[] = {KILN_F32, KILN_I32, KILN_I64, KILN_BOOL};
  for (int a = 0; a < 4; a++)
    for (int b = 0; b < 4; b++) {
      char what[64];
      snprintf(what, sizeof what, "Cast %s -> %s", kiln_dtype_name(dts[a]),
               kiln_dtype_name(dts[b]));
      spec s = {.op = KILN_OP_Cast,
                .opset = 13,
                .n_in = 1,
                .n_out = 1,
                .what = what,
                .attrs = {{"to", 1, 0, dts[b]}},
                .n_attrs = 1};
      s.in[0] = mk(dts[a], SHAPE(6, 50), V_CAST);
      diff(&s);
    }
}

static void test_dropout(void) {
  /* inference forms: opset 7 (float mask), 10 (bool mask), 13 without training_mode, with a
   * false one, and with a zero ratio */
  static const int opsets[] = {7, 10, 13};
  for (int o = 0; o < 3; o++)
    for (int masks = 1; masks <= 2; masks++) {
      spec s = {.op = KILN_OP_Dropout,
                .opset = opsets[o],
                .n_in = 1,
                .n_out = masks,
                .what = "Dropout inference",
                .attrs = {{"ratio", 0, 0.3}},
                .n_attrs = opsets[o] < 12};
      s.in[0] = mk(KILN_F32, SHAPE(3, 11000), V_ANY);
      diff(&s);
    }
  for (int form = 0; form < 7; form++) {
    spec s = {.op = KILN_OP_Dropout,
              .opset = 13,
              .n_in = 3,
              .n_out = 2,
              .what = "Dropout training",
              .attrs = {{"seed", 1, 0, form == 5 ? 5000000000ll : 7}},
              .n_attrs = form != 4};
    s.in[0] = mk(KILN_F32, SHAPE(2, 3, 5000), V_ANY);
    s.in[1] = scalar_f(form == 6 ? 0.0f : 0.375f);
    s.in[2] = scalar_b(form != 2);
    if (form == 1) s.const_mask = 2; /* a constant ratio: keep bytes at compile time */
    if (form == 2) s.const_mask = 4; /* training_mode constant false: a copy */
    if (form == 3) s.const_mask = 6; /* both constant, training */
    if (form == 0) s.n_out = 1;      /* no mask output */
    diff(&s);                        /* form 4: no seed (name hash), 5: a 64-bit seed */
  }
}

/* Chains of in-place ops (the planner aliases each output with its dying input 0). */
static void test_inplace(void) {
  kiln_err e = {0};
  for (int pass = 0; pass < 2; pass++) {
    kiln_graph *g[2];
    kiln_tensor *x = mk(KILN_F32, SHAPE(3, 20000), V_ANY), *c = mk(KILN_F32, SHAPE(20000), V_ANY);
    int ids[2][6];
    for (int k = 0; k < 2; k++) {
      g[k] = ir_graph_new();
      ir_set_opset(g[k], "", 13, &e);
      int *v = ids[k];
      ir_add_value(g[k], "x", &v[0], &e);
      ir_val(g[k], v[0])->dtype = KILN_F32;
      ir_val(g[k], v[0])->shape = x->shape;
      ir_val(g[k], v[0])->typed = true;
      ir_add_input(g[k], v[0], &e);
      kiln_tensor *cc = NULL;
      kiln_tensor_clone(c, &cc, &e);
      ir_add_const(g[k], "c", cc, true, &v[1], &e);
      ir_add_value(g[k], "s", &v[2], &e);
      ir_add_value(g[k], "r", &v[3], &e);
      ir_add_value(g[k], "t", &v[4], &e);
      ir_add_value(g[k], "y", &v[5], &e);
      ir_add_node(g[k], KILN_OP_Mul, "mul", (int[]){v[0], v[1]}, 2, &v[2], 1, NULL, &e);
      ir_add_node(g[k], pass ? KILN_OP_Tanh : KILN_OP_Relu, "act", &v[2], 1, &v[3], 1, NULL, &e);
      ir_add_node(g[k], KILN_OP_Add, "add", (int[]){v[3], v[1]}, 2, &v[4], 1, NULL, &e);
      ir_add_node(g[k], KILN_OP_Sum, "sum", (int[]){v[4], v[0], v[1]}, 3, &v[5], 1, NULL, &e);
      ir_add_output(g[k], v[5], &e);
      ir_toposort(g[k], &e);
      ir_infer(g[k], NULL, &e);
    }
    CHECK_OK(e.code, &e);
    kiln_tensor *want = NULL, *got = NULL;
    kiln_ref_ctx ctx = {.g = g[0]};
    CHECK_OK(kiln_ref_run(g[0], &ctx, &x, &want, &e), &e);
    kiln_program *p = NULL;
    kiln_compile_opts o = {.threads = 2, .cache_dir = ""};
    CHECK_OK(kiln_compile(g[1], &o, &p, &e), &e);
    if (p) {
      CHECK(p->bufs[ids[1][3]].alias_of >= 0 &&
            p->bufs[ids[1][4]].alias_of >= 0); /* r, t in place */
      CHECK_OK(kiln_program_run(p, &x, &got, false, &e), &e);
      spec s = {.rtol = pass ? 1e-5 : 0, .atol = pass ? 1e-7 : 0, .what = "in-place chain"};
      compare(&s, 0, got, want);
      kiln_program_free(p);
    }
    kiln_tensor_free(want);
    kiln_tensor_free(got);
    kiln_tensor_free(x);
    kiln_tensor_free(c);
    ir_graph_free(g[0]);
  }
}

/* Integer division by zero: the reference reports an error; a kernel cannot, so x / 0 is 0. */
static void test_int_div_zero(void) {
  static const kiln_dtype dts[] = {KILN_I32, KILN_I64};
  for (int d = 0; d < 2; d++) {
    spec s = {.op = KILN_OP_Div, .opset = 14, .n_in = 2, .n_out = 1, .what = "Div by zero"};
    s.in[0] = mk(dts[d], SHAPE(4), V_ANY);
    s.in[1] = mk(dts[d], SHAPE(4), V_ANY);
    int64_t a[4] = {7, -7, INT32_MIN, 5}, b[4] = {0, 2, -1, 0};
    for (int i = 0; i < 4; i++) {
      kiln_tensor_set_f(s.in[0], i, (double)a[i]);
      kiln_tensor_set_f(s.in[1], i, (double)b[i]);
    }
    kiln_err e = {0};
    kiln_tensor *got[1] = {0};
    CHECK_OK(run_jit(&s, 1, got, NULL, &e), &e);
    if (got[0]) {
      CHECK(kiln_tensor_get_i(got[0], 0) == 0 && kiln_tensor_get_i(got[0], 1) == -3);
      CHECK(kiln_tensor_get_i(got[0], 2) == (dts[d] == KILN_I32 ? INT32_MIN : -(int64_t)INT32_MIN));
      CHECK(kiln_tensor_get_i(got[0], 3) == 0);
    }
    kiln_tensor_free(got[0]);
    kiln_tensor_free(s.in[0]);
    kiln_tensor_free(s.in[1]);
  }
}

/* More inputs than the shared kernel takes: a clear error, not a crash. */
static void test_too_many_inputs(void) {
  spec s = {.op = KILN_OP_Sum, .opset = 13, .n_in = 70, .n_out = 1, .what = "Sum of 70"};
  for (int i = 0; i < 70; i++)
    s.in[i] = mk(KILN_F32, SHAPE(3), V_ANY);
  kiln_err e = {0};
  kiln_tensor *got[1] = {0};
  CHECK(run_jit(&s, 1, got, NULL, &e) == KILN_ERR_LIMIT);
  CHECK(strstr(e.msg, "Sum") != NULL && strstr(e.msg, "70 inputs") != NULL);
  for (int i = 0; i < 70; i++)
    kiln_tensor_free(s.in[i]);
}

int main(void) {
  if (!mkdtemp(cache_dir)) {
    perror("mkdtemp");
    return 1;
  }
  RUN(test_unary_float);
  RUN(test_unary_int);
  RUN(test_clip);
  RUN(test_arith);
  RUN(test_compare);
  RUN(test_pow);
  RUN(test_prelu);
  RUN(test_legacy_axis);
  RUN(test_variadic);
  RUN(test_where);
  RUN(test_cast);
  RUN(test_dropout);
  RUN(test_inplace);
  RUN(test_int_div_zero);
  RUN(test_too_many_inputs);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", cache_dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", cache_dir);
  TEST_MAIN_END();
}
