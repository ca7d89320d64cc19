/* elementwise.c — reference kernels of the elementwise family.  Each op is one scalar
 * body (a double version for float32 tensors, an int64 version for integer and bool
 * tensors); the loops over elements, broadcasting and dtype dispatch are shared. */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "ir/ops/elementwise.h"
#include "runtime/ref/dropout_rng.h"
#include "runtime/ref/ref_util.h"

#define REF_ARGS                                                                                   \
  const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,                       \
      kiln_tensor *const *out, kiln_err *e

/* ---- element access ----
 * Float32 elements are computed in double and rounded once when stored: for + - * / and
 * sqrt that gives exactly the float32 result, and elsewhere it is at least as accurate. */

static inline double ld_d(const kiln_tensor *t, int64_t i) { return kiln_tensor_get_f(t, i); }
static inline int64_t ld_i(const kiln_tensor *t, int64_t i) { return kiln_tensor_get_i(t, i); }

/* double -> integer without C's undefined behaviour: truncates toward zero, saturates at
 * the type's range, NaN -> 0. */
static int64_t d_to_int(double v, int64_t lo, int64_t hi) {
  if (isnan(v)) return 0;
  if (v <= (double)lo) return lo;
  if (v >= (double)hi) return hi; /* (double)INT64_MAX rounds up to 2^63: caught here */
  return (int64_t)v;
}

static void st_d(kiln_tensor *t, int64_t i, double v) {
  switch (t->dtype) {
  case KILN_F32: F32(t)[i] = (float)v; break;
  case KILN_I32: I32(t)[i] = (int32_t)d_to_int(v, INT32_MIN, INT32_MAX); break;
  case KILN_I64: I64(t)[i] = d_to_int(v, INT64_MIN, INT64_MAX); break;
  case KILN_BOOL: BOOLS(t)[i] = v != 0; break; /* NaN is true, as in numpy */
  default: assert(!"unsupported dtype");
  }
}

/* int64 -> dtype: int32 keeps the low 32 bits (two's-complement wrap, as numpy). */
static void st_i(kiln_tensor *t, int64_t i, int64_t v) {
  switch (t->dtype) {
  case KILN_F32: F32(t)[i] = (float)v; break;
  case KILN_I32: I32(t)[i] = (int32_t)(uint32_t)(uint64_t)v; break;
  case KILN_I64: I64(t)[i] = v; break;
  case KILN_BOOL: BOOLS(t)[i] = v != 0; break;
  default: assert(!"unsupported dtype");
  }
}

/* Wrapping integer arithmetic (signed overflow is undefined in C). */
static int64_t wrap_add(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }
static int64_t wrap_sub(int64_t a, int64_t b) { return (int64_t)((uint64_t)a - (uint64_t)b); }
static int64_t wrap_mul(int64_t a, int64_t b) { return (int64_t)((uint64_t)a * (uint64_t)b); }

/* ---- unary ops ---- */

/* Per-node constants the scalar bodies read, gathered once per kernel call. */
typedef struct ew_params {
  double alpha, beta, gamma; /* activation attributes */
  double lo, hi;             /* Clip bounds for float tensors */
  int64_t ilo, ihi;          /* Clip bounds for integer tensors */
} ew_params;

typedef struct unary_body {
  double (*d)(double x, const ew_params *p);
  int64_t (*i)(int64_t x, const ew_params *p); /* NULL: float only (inference refuses ints) */
} unary_body;

static ew_params attr_params(const kiln_node *n) {
  ew_params p = {0};
  if (kiln_op_attr_spec(n->def, "alpha")) p.alpha = ir_attr_float(n, "alpha");
  if (kiln_op_attr_spec(n->def, "beta")) p.beta = ir_attr_float(n, "beta");
  if (kiln_op_attr_spec(n->def, "gamma")) p.gamma = ir_attr_float(n, "gamma");
  return p;
}

static void run_unary(const unary_body *b, const ew_params *p, const kiln_tensor *x,
                      kiln_tensor *y) {
  if (x->dtype == KILN_F32) {
    for (int64_t k = 0; k < x->numel; k++) st_d(y, k, b->d(F32(x)[k], p));
  } else {
    assert(b->i);
    for (int64_t k = 0; k < x->numel; k++) st_i(y, k, b->i(ld_i(x, k), p));
  }
}

/* `x < 0 ? ... : x` forms keep NaN (a comparison with NaN is false). */
static double relu_d(double x, const ew_params *p) { return x < 0 ? 0 : x; }
static int64_t relu_i(int64_t x, const ew_params *p) { return x < 0 ? 0 : x; }
static double leaky_d(double x, const ew_params *p) { return x < 0 ? p->alpha * x : x; }
static double sigmoid_d(double x, const ew_params *p) {
  /* exp of a non-positive number only: no overflow for large |x| */
  return x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x));
}
static double tanh_d(double x, const ew_params *p) { return tanh(x); }
static double hardsigmoid_d(double x, const ew_params *p) {
  return fmax(0, fmin(1, p->alpha * x + p->beta));
}
static double hardswish_d(double x, const ew_params *p) {
  return x * fmax(0, fmin(1, x / 6 + 0.5));
}
static double elu_d(double x, const ew_params *p) { return x < 0 ? p->alpha * expm1(x) : x; }
static double selu_d(double x, const ew_params *p) {
  return p->gamma * (x <= 0 ? p->alpha * expm1(x) : x);
}
static double softplus_d(double x, const ew_params *p) {
  return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); /* log(1 + e^x) without overflow */
}
static double softsign_d(double x, const ew_params *p) { return x / (1 + fabs(x)); }
static double sqrt_d(double x, const ew_params *p) { return sqrt(x); }
static double exp_d(double x, const ew_params *p) { return exp(x); }
static double log_d(double x, const ew_params *p) { return log(x); }
static double neg_d(double x, const ew_params *p) { return -x; }
static int64_t neg_i(int64_t x, const ew_params *p) { return wrap_sub(0, x); }
static double abs_d(double x, const ew_params *p) { return fabs(x); }
static int64_t abs_i(int64_t x, const ew_params *p) { return x < 0 ? wrap_sub(0, x) : x; }
static double reciprocal_d(double x, const ew_params *p) { return 1 / x; }
static double floor_d(double x, const ew_params *p) { return floor(x); }
static double ceil_d(double x, const ew_params *p) { return ceil(x); }
static double erf_d(double x, const ew_params *p) { return erf(x); }
static int64_t not_i(int64_t x, const ew_params *p) { return !x; }
/* min(max(x, lo), hi): when lo > hi every element becomes hi, as ONNX specifies. */
static double clip_d(double x, const ew_params *p) {
  double v = x < p->lo ? p->lo : x;
  return v > p->hi ? p->hi : v;
}
static int64_t clip_i(int64_t x, const ew_params *p) {
  int64_t v = x < p->ilo ? p->ilo : x;
  return v > p->ihi ? p->ihi : v;
}

#define REF_UNARY(Name, dfn, ifn)                                                                  \
  kiln_code ref_##Name(REF_ARGS) {                                                                 \
    static const unary_body body = {dfn, ifn};                                                     \
    ew_params p = attr_params(n);                                                                  \
    (void)ctx, (void)e;                                                                            \
    run_unary(&body, &p, in[0], out[0]);                                                           \
    return KILN_OK;                                                                                \
  }

REF_UNARY(Relu, relu_d, relu_i)
REF_UNARY(LeakyRelu, leaky_d, NULL)
REF_UNARY(Sigmoid, sigmoid_d, NULL)
REF_UNARY(Tanh, tanh_d, NULL)
REF_UNARY(HardSigmoid, hardsigmoid_d, NULL)
REF_UNARY(HardSwish, hardswish_d, NULL)
REF_UNARY(Elu, elu_d, NULL)
REF_UNARY(Selu, selu_d, NULL)
REF_UNARY(Softplus, softplus_d, NULL)
REF_UNARY(Softsign, softsign_d, NULL)
REF_UNARY(Sqrt, sqrt_d, NULL)
REF_UNARY(Exp, exp_d, NULL)
REF_UNARY(Log, log_d, NULL)
REF_UNARY(Neg, neg_d, neg_i)
REF_UNARY(Abs, abs_d, abs_i)
REF_UNARY(Reciprocal, reciprocal_d, NULL)
REF_UNARY(Floor, floor_d, NULL)
REF_UNARY(Ceil, ceil_d, NULL)
REF_UNARY(Erf, erf_d, NULL)
REF_UNARY(Not, NULL, not_i)

kiln_code ref_Identity(REF_ARGS) {
  (void)ctx, (void)n, (void)e;
  memcpy(out[0]->data, in[0]->data, kiln_tensor_nbytes(in[0]));
  return KILN_OK;
}

kiln_code ref_Clip(REF_ARGS) {
  static const unary_body body = {clip_d, clip_i};
  (void)ctx, (void)e;
  ew_params p = {.lo = -INFINITY, .hi = INFINITY, .ilo = INT64_MIN, .ihi = INT64_MAX};
  if (n->opset < 11) {
    p.lo = ir_attr_float(n, "min");
    p.hi = ir_attr_float(n, "max");
  } else {
    const kiln_tensor *lo = n->n_in > 1 ? in[1] : NULL, *hi = n->n_in > 2 ? in[2] : NULL;
    if (lo) p.lo = ld_d(lo, 0), p.ilo = ld_i(lo, 0);
    if (hi) p.hi = ld_d(hi, 0), p.ihi = ld_i(hi, 0);
  }
  run_unary(&body, &p, in[0], out[0]);
  return KILN_OK;
}

/* ---- broadcasting loops ---- */

typedef struct binary_body {
  double (*d)(double a, double b);    /* when either input is float32 */
  int64_t (*i)(int64_t a, int64_t b); /* when both are integer or bool */
} binary_body;

/* y = f(a, b), reading a as shape `as` and b as shape `bs` broadcast to y's shape.  `a` may
 * be `y` itself (the variadic ops accumulate in place): element k is read before it is
 * written. */
static void run_binary(const binary_body *f, const kiln_tensor *a, const kiln_shape *as,
                       const kiln_tensor *b, const kiln_shape *bs, kiln_tensor *y) {
  const kiln_shape *ys = &y->shape;
  int64_t sa[KILN_MAX_RANK], sb[KILN_MAX_RANK];
  bool flat_a = kiln_shape_eq(as, ys), flat_b = kiln_shape_eq(bs, ys);
  ref_bcast_strides(as, ys, sa);
  ref_bcast_strides(bs, ys, sb);
  bool use_d = a->dtype == KILN_F32 || b->dtype == KILN_F32;
  for (int64_t k = 0; k < y->numel; k++) {
    int64_t ia = flat_a ? k : ref_bcast_index(k, ys, sa);
    int64_t ib = flat_b ? k : ref_bcast_index(k, ys, sb);
    if (use_d)
      st_d(y, k, f->d(ld_d(a, ia), ld_d(b, ib)));
    else
      st_i(y, k, f->i(ld_i(a, ia), ld_i(b, ib)));
  }
}

/* y = x broadcast to y's shape, any dtype. */
static void bcast_copy(const kiln_tensor *x, kiln_tensor *y) {
  size_t es = kiln_dtype_size(y->dtype);
  int64_t st[KILN_MAX_RANK];
  ref_bcast_strides(&x->shape, &y->shape, st);
  for (int64_t k = 0; k < y->numel; k++)
    memcpy((char *)y->data + (size_t)k * es,
           (const char *)x->data + (size_t)ref_bcast_index(k, &y->shape, st) * es, es);
}

/* A two-input op of ir/ops/elementwise.c: input 1 broadcast with the legacy rules too. */
static kiln_code binary(const kiln_node *n, const binary_body *f, const kiln_tensor *const *in,
                        kiln_tensor *y, kiln_err *e) {
  kiln_shape bs;
  KILN_TRY(kiln_ew_bshape(n, &in[0]->shape, &in[1]->shape, &bs, e));
  run_binary(f, in[0], &in[0]->shape, in[1], &bs, y);
  return KILN_OK;
}

static double add_d(double a, double b) { return a + b; }
static double sub_d(double a, double b) { return a - b; }
static double mul_d(double a, double b) { return a * b; }
static double div_d(double a, double b) { return a / b; }
static int64_t div_i(int64_t a, int64_t b) {
  /* b != 0 was checked by ref_Div; INT64_MIN / -1 wraps instead of trapping */
  return b == -1 ? wrap_sub(0, a) : a / b;
}
static double pow_d(double a, double b) { return pow(a, b); }
static int64_t pow_i(int64_t a, int64_t b) {
  if (b < 0) /* what pow() then truncation gives; numpy refuses negative integer powers */
    return a == 1 ? 1 : a == -1 ? ((b & 1) ? -1 : 1) : 0;
  int64_t r = 1;
  for (; b; b >>= 1, a = wrap_mul(a, a))
    if (b & 1) r = wrap_mul(r, a);
  return r;
}
/* NaN propagates through Max and Min, as numpy's maximum/minimum do. */
static double max_d(double a, double b) { return isnan(a) || a > b ? a : b; }
static int64_t max_i(int64_t a, int64_t b) { return a > b ? a : b; }
static double min_d(double a, double b) { return isnan(a) || a < b ? a : b; }
static int64_t min_i(int64_t a, int64_t b) { return a < b ? a : b; }
static double eq_d(double a, double b) { return a == b; }
static int64_t eq_i(int64_t a, int64_t b) { return a == b; }
static double gt_d(double a, double b) { return a > b; }
static int64_t gt_i(int64_t a, int64_t b) { return a > b; }
static double lt_d(double a, double b) { return a < b; }
static int64_t lt_i(int64_t a, int64_t b) { return a < b; }
static double prelu_d(double x, double slope) { return x < 0 ? slope * x : x; }
static int64_t prelu_i(int64_t x, int64_t slope) { return x < 0 ? wrap_mul(slope, x) : x; }

static const binary_body add_body = {add_d, wrap_add}, max_body = {max_d, max_i},
                         min_body = {min_d, min_i};

#define REF_BINARY(Name, dfn, ifn)                                                                 \
  kiln_code ref_##Name(REF_ARGS) {                                                                 \
    static const binary_body body = {dfn, ifn};                                                    \
    (void)ctx;                                                                                     \
    return binary(n, &body, in, out[0], e);                                                        \
  }

REF_BINARY(Add, add_d, wrap_add)
REF_BINARY(Sub, sub_d, wrap_sub)
REF_BINARY(Mul, mul_d, wrap_mul)
REF_BINARY(Pow, pow_d, pow_i)
REF_BINARY(Equal, eq_d, eq_i)
REF_BINARY(Greater, gt_d, gt_i)
REF_BINARY(Less, lt_d, lt_i)
REF_BINARY(PRelu, prelu_d, prelu_i)

kiln_code ref_Div(REF_ARGS) {
  static const binary_body body = {div_d, div_i};
  (void)ctx;
  if (in[1]->dtype != KILN_F32)
    for (int64_t k = 0; k < in[1]->numel; k++)
      if (ld_i(in[1], k) == 0) return kiln_errf(e, KILN_ERR_INVALID, "integer division by zero");
  return binary(n, &body, in, out[0], e);
}

/* Sum, Max, Min: y = in[0] broadcast, then y = f(y, in[k]) for each further input. */
static void variadic(const binary_body *f, const kiln_node *n, const kiln_tensor *const *in,
                     kiln_tensor *y) {
  bcast_copy(in[0], y);
  for (int k = 1; k < n->n_in; k++) run_binary(f, y, &y->shape, in[k], &in[k]->shape, y);
}

kiln_code ref_Sum(REF_ARGS) {
  (void)ctx, (void)e;
  variadic(&add_body, n, in, out[0]);
  return KILN_OK;
}

kiln_code ref_Max(REF_ARGS) {
  (void)ctx, (void)e;
  variadic(&max_body, n, in, out[0]);
  return KILN_OK;
}

kiln_code ref_Min(REF_ARGS) {
  (void)ctx, (void)e;
  variadic(&min_body, n, in, out[0]);
  return KILN_OK;
}

kiln_code ref_Mean(REF_ARGS) {
  (void)ctx, (void)e;
  kiln_tensor *y = out[0];
  variadic(&add_body, n, in, y);
  for (int64_t k = 0; k < y->numel; k++) F32(y)[k] = F32(y)[k] / (float)n->n_in;
  return KILN_OK;
}

kiln_code ref_Where(REF_ARGS) {
  (void)ctx, (void)n, (void)e;
  kiln_tensor *y = out[0];
  const kiln_shape *ys = &y->shape;
  size_t es = kiln_dtype_size(y->dtype);
  int64_t sc[KILN_MAX_RANK], sx[KILN_MAX_RANK], sy[KILN_MAX_RANK];
  ref_bcast_strides(&in[0]->shape, ys, sc);
  ref_bcast_strides(&in[1]->shape, ys, sx);
  ref_bcast_strides(&in[2]->shape, ys, sy);
  for (int64_t k = 0; k < y->numel; k++) {
    bool c = BOOLS(in[0])[ref_bcast_index(k, ys, sc)] != 0;
    const kiln_tensor *src = c ? in[1] : in[2];
    int64_t i = ref_bcast_index(k, ys, c ? sx : sy);
    memcpy((char *)y->data + (size_t)k * es, (const char *)src->data + (size_t)i * es, es);
  }
  return KILN_OK;
}

kiln_code ref_Cast(REF_ARGS) {
  (void)ctx, (void)n, (void)e;
  const kiln_tensor *x = in[0];
  for (int64_t k = 0; k < x->numel; k++) {
    if (x->dtype == KILN_F32)
      st_d(out[0], k, F32(x)[k]);
    else
      st_i(out[0], k, ld_i(x, k));
  }
  return KILN_OK;
}

/* ---- Dropout ----
 * In training the mask is drawn from MT19937 as numpy's legacy RandomState does
 * (np.random.seed(s); np.random.uniform(0, 1, shape) >= ratio), so that kiln reproduces the
 * ONNX reference's masks bit for bit (runtime/ref/dropout_rng.h). */
kiln_code ref_Dropout(REF_ARGS) {
  const kiln_tensor *x = in[0];
  kiln_tensor *y = out[0], *mask = n->n_out > 1 ? out[1] : NULL;
  bool ctx_training = ctx && ctx->training;
  double ratio;
  bool training;
  if (n->opset >= 12) { /* ratio and training_mode are inputs; training_mode decides */
    ratio = n->n_in > 1 && in[1] ? F32(in[1])[0] : 0.5;
    training = n->n_in > 2 && in[2] ? BOOLS(in[2])[0] != 0 : ctx_training;
  } else {
    ratio = ir_attr_float(n, "ratio");
    training = ctx_training && !(n->opset < 7 && ir_attr_int(n, "is_test"));
  }
  if (!training || ratio == 0) {
    memcpy(y->data, x->data, kiln_tensor_nbytes(x));
    if (mask)
      for (int64_t k = 0; k < mask->numel; k++) st_i(mask, k, 1);
    return KILN_OK;
  }
  if (!(ratio > 0 && ratio < 1))
    return kiln_errf(e, KILN_ERR_INVALID, "ratio %g is outside [0, 1)", ratio);
  kiln_mt19937 *mt = kiln_malloc(sizeof *mt);
  if (!mt) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (Dropout)");
  kiln_mt_seed(mt, kiln_dropout_seed(n, ctx ? ctx->seed : 0));
  float scale = 1.0f / (1.0f - (float)ratio);
  for (int64_t k = 0; k < x->numel; k++) {
    bool keep = kiln_mt_uniform(mt) >= ratio;
    F32(y)[k] = (float)keep * F32(x)[k] * scale; /* numpy's mask * x * scale, -0 included */
    if (mask) st_i(mask, k, keep);
  }
  kiln_free(mt);
  return KILN_OK;
}
