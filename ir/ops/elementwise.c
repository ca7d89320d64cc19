/* elementwise.c — op definitions of the elementwise family: unary math and activations,
 * broadcasting binary arithmetic and comparisons, variadic Sum/Mean/Max/Min, Where, Cast
 * and Dropout.  The scalar bodies live in runtime/ref/elementwise.c. */
#include <float.h>

#include "ir/ops/common.h"
#include "ir/ops/elementwise.h"

#define EW (KILN_OPF_ELEMENTWISE | KILN_OPF_INPLACE_OK)

/* ---- broadcasting shared with the kernels ---- */

kiln_code kiln_ew_bshape(const kiln_node *n, const kiln_shape *a, const kiln_shape *b,
                         kiln_shape *out, kiln_err *e) {
  *out = *b;
  if (n->opset >= 7) return KILN_OK;
  if (n->op == KILN_OP_PRelu) {
    /* PRelu-6: "if slope is of size 1 the value is shared across channels"; a 1-D slope of
     * C values is per channel (axis 1), as old PyTorch exports rely on. */
    if (a->rank >= 2 && b->rank == 1 && b->d[0] != 1 && b->d[0] == a->d[1]) {
      out->rank = a->rank - 1;
      for (int i = 1; i < out->rank; i++) out->d[i] = 1;
    }
    return KILN_OK;
  }
  if (!kiln_op_attr_spec(n->def, "axis") || !ir_attr_has(n, "axis") ||
      ir_attr_int(n, "broadcast") == 0)
    return KILN_OK; /* trailing alignment: the same as numpy's */
  int64_t axis = ir_attr_int(n, "axis");
  if (axis < 0) axis += a->rank;
  if (axis < 0 || axis + b->rank > a->rank) {
    char sa[160], sb[160];
    return kiln_errf(e, KILN_ERR_SHAPE, "cannot broadcast %s to %s at axis %lld",
                     kiln_shape_str(b, sb, sizeof sb), kiln_shape_str(a, sa, sizeof sa),
                     (long long)ir_attr_int(n, "axis"));
  }
  out->rank = a->rank;
  for (int i = 0; i < a->rank; i++)
    out->d[i] = (i >= axis && i < axis + b->rank) ? b->d[i - axis] : 1;
  return KILN_OK;
}

/* ---- shape inference ---- */

/* Checks inputs i0..i0+count-1 (present ones) against `mask`, requires one dtype among them
 * when `same`, and broadcasts their shapes (with input i0 as the legacy `a`). */
static kiln_code bcast_inputs(kiln_graph *g, kiln_node *n, int i0, int count, uint32_t mask,
                              bool same, kiln_shape *s, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, i0, mask, 0, KILN_MAX_RANK, e));
  const kiln_value *a = ir_in(g, n, i0);
  *s = a->shape;
  for (int i = i0 + 1; i < i0 + count; i++) {
    KILN_TRY(ir_check_input(g, n, i, mask, 0, KILN_MAX_RANK, e));
    const kiln_value *b = ir_in(g, n, i);
    if (same && b->dtype != a->dtype)
      return kiln_errf(e, KILN_ERR_SHAPE, "inputs '%s' (%s) and '%s' (%s) have different dtypes",
                       a->name, kiln_dtype_name(a->dtype), b->name, kiln_dtype_name(b->dtype));
    kiln_shape bs;
    KILN_TRY(kiln_ew_bshape(n, &a->shape, &b->shape, &bs, e));
    KILN_TRY(ir_broadcast(s, &bs, s, e));
  }
  return KILN_OK;
}

/* Add, Sub, Mul, Div: one numeric dtype in and out. */
static kiln_code infer_arith(kiln_graph *g, kiln_node *n, kiln_err *e) {
  kiln_shape s;
  KILN_TRY(bcast_inputs(g, n, 0, 2, KILN_DT_NUM, true, &s, e));
  return ir_set_output(g, n, 0, ir_in(g, n, 0)->dtype, &s, e);
}

/* Pow: base and exponent may differ in dtype; the result has the base's. */
static kiln_code infer_pow(kiln_graph *g, kiln_node *n, kiln_err *e) {
  kiln_shape s;
  KILN_TRY(bcast_inputs(g, n, 0, 2, KILN_DT_NUM, false, &s, e));
  return ir_set_output(g, n, 0, ir_in(g, n, 0)->dtype, &s, e);
}

/* Equal takes bool too; Greater and Less numbers only.  The result is bool. */
static kiln_code infer_compare(kiln_graph *g, kiln_node *n, kiln_err *e) {
  kiln_shape s;
  uint32_t mask = n->op == KILN_OP_Equal ? KILN_DT_ANY : KILN_DT_NUM;
  KILN_TRY(bcast_inputs(g, n, 0, 2, mask, true, &s, e));
  return ir_set_output(g, n, 0, KILN_BOOL, &s, e);
}

/* Sum, Max, Min: 1..N inputs of one numeric dtype; Mean: float only. */
static kiln_code infer_variadic(kiln_graph *g, kiln_node *n, kiln_err *e) {
  kiln_shape s;
  uint32_t mask = n->op == KILN_OP_Mean || n->op == KILN_OP_Sum ? KILN_DT(KILN_F32) : KILN_DT_NUM;
  KILN_TRY(bcast_inputs(g, n, 0, n->n_in, mask, true, &s, e));
  return ir_set_output(g, n, 0, ir_in(g, n, 0)->dtype, &s, e);
}

static kiln_code infer_not(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_BOOL), 0, KILN_MAX_RANK, e));
  return ir_set_output(g, n, 0, KILN_BOOL, &ir_in(g, n, 0)->shape, e);
}

/* PRelu: the slope broadcasts to x (unidirectionally); y has x's shape. */
static kiln_code infer_prelu(kiln_graph *g, kiln_node *n, kiln_err *e) {
  kiln_shape s;
  KILN_TRY(bcast_inputs(g, n, 0, 2, KILN_DT_NUM, true, &s, e));
  const kiln_value *x = ir_in(g, n, 0), *slope = ir_in(g, n, 1);
  if (!kiln_shape_eq(&s, &x->shape)) {
    char sx[160], ss[160];
    return kiln_errf(e, KILN_ERR_SHAPE, "slope '%s' %s does not broadcast to x '%s' %s",
                     slope->name, kiln_shape_str(&slope->shape, ss, sizeof ss), x->name,
                     kiln_shape_str(&x->shape, sx, sizeof sx));
  }
  return ir_set_output(g, n, 0, x->dtype, &x->shape, e);
}

/* Clip: bounds are attributes before opset 11 and optional scalar inputs from 11. */
static kiln_code infer_clip(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT_NUM, 0, KILN_MAX_RANK, e));
  const kiln_value *x = ir_in(g, n, 0);
  for (int i = 1; i < n->n_in; i++) {
    const kiln_value *b = ir_in(g, n, i);
    if (!b) continue;
    if (n->opset < 11)
      return kiln_errf(e, KILN_ERR_INVALID,
                       "Clip of opset %d takes min/max as attributes, not as inputs", n->opset);
    if (b->dtype != x->dtype)
      return kiln_errf(e, KILN_ERR_SHAPE, "bound '%s' is %s but x '%s' is %s", b->name,
                       kiln_dtype_name(b->dtype), x->name, kiln_dtype_name(x->dtype));
    int64_t ne;
    if (!kiln_shape_numel(&b->shape, &ne) || ne != 1)
      return kiln_errf(e, KILN_ERR_SHAPE, "bound '%s' must be a scalar", b->name);
  }
  return ir_set_output(g, n, 0, x->dtype, &x->shape, e);
}

static kiln_code infer_where(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_BOOL), 0, KILN_MAX_RANK, e));
  kiln_shape s;
  KILN_TRY(bcast_inputs(g, n, 1, 2, KILN_DT_ANY, true, &s, e));
  KILN_TRY(ir_broadcast(&ir_in(g, n, 0)->shape, &s, &s, e));
  return ir_set_output(g, n, 0, ir_in(g, n, 1)->dtype, &s, e);
}

static kiln_code infer_cast(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT_ANY, 0, KILN_MAX_RANK, e));
  int64_t to = ir_attr_int(n, "to");
  if (to < 0 || to > 64 || !kiln_dtype_supported((int)to))
    return kiln_errf(e, KILN_ERR_UNSUPPORTED,
                     "Cast to %s is not supported (kiln handles float32, int32, int64, bool)",
                     kiln_dtype_name((int)to));
  return ir_set_output(g, n, 0, (kiln_dtype)to, &ir_in(g, n, 0)->shape, e);
}

/* Dropout: y like x; the optional mask is bool from opset 10 and x's dtype before. */
static kiln_code infer_dropout(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_F32), 0, KILN_MAX_RANK, e));
  const kiln_value *x = ir_in(g, n, 0);
  if (n->opset < 12 && (ir_in(g, n, 1) || ir_in(g, n, 2)))
    return kiln_errf(e, KILN_ERR_INVALID,
                     "Dropout of opset %d takes its ratio as an attribute, not as an input",
                     n->opset);
  static const kiln_dtype want[3] = {KILN_UNDEF, KILN_F32, KILN_BOOL};
  for (int i = 1; i < 3; i++) {
    const kiln_value *v = ir_in(g, n, i);
    if (!v) continue;
    int64_t ne;
    if (v->dtype != want[i] || !kiln_shape_numel(&v->shape, &ne) || ne != 1)
      return kiln_errf(e, KILN_ERR_SHAPE, "%s '%s' must be a %s scalar",
                       i == 1 ? "ratio" : "training_mode", v->name, kiln_dtype_name(want[i]));
  }
  KILN_TRY(ir_set_output(g, n, 0, x->dtype, &x->shape, e));
  return ir_set_output(g, n, 1, n->opset >= 10 ? KILN_BOOL : x->dtype, &x->shape, e);
}

/* ---- attribute schemas ---- */

/* Binary ops of opset < 7 broadcast only with broadcast=1 (and optionally at `axis`);
 * kiln_ew_bshape reads these two.  consumed_inputs predates opset 6 and is ignored. */
static const kiln_attr_spec binary_attrs[] = {
    A_LEGACY("broadcast", KILN_ATTR_INT),
    A_LEGACY("axis", KILN_ATTR_INT),
    A_LEGACY("consumed_inputs", KILN_ATTR_INTS),
};
static const kiln_attr_spec leaky_attrs[] = {A_FLOAT("alpha", 0.01)};
static const kiln_attr_spec elu_attrs[] = {A_FLOAT("alpha", 1.0)};
static const kiln_attr_spec selu_attrs[] = {A_FLOAT("alpha", 1.67326319217681884765625),
                                            A_FLOAT("gamma", 1.05070102214813232421875)};
static const kiln_attr_spec hardsigmoid_attrs[] = {A_FLOAT("alpha", 0.2), A_FLOAT("beta", 0.5)};
static const kiln_attr_spec clip_attrs[] = {A_FLOAT("min", -FLT_MAX), A_FLOAT("max", FLT_MAX)};
static const kiln_attr_spec cast_attrs[] = {A_REQ_INT("to")};
static const kiln_attr_spec dropout_attrs[] = {
    A_FLOAT("ratio", 0.5), /* opset < 12; an input from 12 */
    A_INT("is_test", 0),   /* opset 6: 1 = inference even when the runtime trains */
    A_INT("seed", 0),      /* opset 12+: the mask's seed (random when absent) */
};

/* ---- definitions ---- */

#define UNARY_DEF(Name, infer_fn, attr_arr, n_attr, doc_)                                        \
  const kiln_op_def kiln_opdef_##Name = {.name = #Name, .domain = "", .min_in = 1, .max_in = 1,   \
                                         .min_out = 1, .max_out = 1, .attrs = attr_arr,            \
                                         .n_attrs = n_attr, .infer = infer_fn, .flags = EW,        \
                                         .doc = doc_}
#define UNARY(Name, infer_fn, doc_) UNARY_DEF(Name, infer_fn, NULL, 0, doc_)
#define UNARY_A(Name, infer_fn, attrs, doc_) UNARY_DEF(Name, infer_fn, attrs, NELEM(attrs), doc_)

UNARY(Identity, infer_unary_any, "y = x");
UNARY(Relu, infer_unary_numeric, "y = max(x, 0)");
UNARY_A(LeakyRelu, infer_unary_float, leaky_attrs, "y = x < 0 ? alpha*x : x");
UNARY(Sigmoid, infer_unary_float, "y = 1 / (1 + exp(-x))");
UNARY(Tanh, infer_unary_float, "y = tanh(x)");
UNARY_A(HardSigmoid, infer_unary_float, hardsigmoid_attrs,
      "y = max(0, min(1, alpha*x + beta))");
UNARY(HardSwish, infer_unary_float, "y = x * max(0, min(1, x/6 + 1/2))");
UNARY_A(Elu, infer_unary_float, elu_attrs, "y = x < 0 ? alpha*(exp(x) - 1) : x");
UNARY_A(Selu, infer_unary_float, selu_attrs,
      "y = gamma * (x <= 0 ? alpha*(exp(x) - 1) : x)");
UNARY(Softplus, infer_unary_float, "y = log(1 + exp(x))");
UNARY(Softsign, infer_unary_float, "y = x / (1 + |x|)");
UNARY(Sqrt, infer_unary_float, "y = sqrt(x)");
UNARY(Exp, infer_unary_float, "y = exp(x)");
UNARY(Log, infer_unary_float, "y = ln(x)");
UNARY(Neg, infer_unary_numeric, "y = -x");
UNARY(Abs, infer_unary_numeric, "y = |x|");
UNARY(Reciprocal, infer_unary_float, "y = 1 / x");
UNARY(Floor, infer_unary_float, "y = floor(x)");
UNARY(Ceil, infer_unary_float, "y = ceil(x)");
UNARY(Erf, infer_unary_float, "y = erf(x)");
UNARY(Not, infer_not, "y = !x (bool)");

const kiln_op_def kiln_opdef_Clip = {
    .name = "Clip", .domain = "", .min_in = 1, .max_in = 3, .min_out = 1, .max_out = 1,
    .attrs = clip_attrs, .n_attrs = NELEM(clip_attrs), .infer = infer_clip,
    .nondiff_inputs = 0x6, .flags = EW,
    .doc = "y = min(max(x, min), max); bounds are attributes before opset 11, inputs after"};

const kiln_op_def kiln_opdef_PRelu = {
    .name = "PRelu", .domain = "", .min_in = 2, .max_in = 2, .min_out = 1, .max_out = 1,
    .infer = infer_prelu, .flags = EW,
    .doc = "y = x < 0 ? slope*x : x (slope broadcasts to x)"};

#define BINARY(Name, infer_fn, flags_, doc_)                                                       \
  const kiln_op_def kiln_opdef_##Name = {                                                          \
      .name = #Name, .domain = "", .min_in = 2, .max_in = 2, .min_out = 1, .max_out = 1,           \
      .attrs = binary_attrs, .n_attrs = NELEM(binary_attrs), .infer = infer_fn, .flags = flags_,   \
      .doc = doc_}

BINARY(Add, infer_arith, EW, "y = a + b (broadcasting)");
BINARY(Sub, infer_arith, EW, "y = a - b (broadcasting)");
BINARY(Mul, infer_arith, EW, "y = a * b (broadcasting)");
BINARY(Div, infer_arith, EW, "y = a / b (broadcasting; integers truncate toward zero)");
BINARY(Pow, infer_pow, EW, "y = a ^ b (broadcasting; y has a's dtype)");
BINARY(Equal, infer_compare, KILN_OPF_ELEMENTWISE, "y = a == b (broadcasting, bool)");
BINARY(Greater, infer_compare, KILN_OPF_ELEMENTWISE, "y = a > b (broadcasting, bool)");
BINARY(Less, infer_compare, KILN_OPF_ELEMENTWISE, "y = a < b (broadcasting, bool)");

#define VARIADIC(Name, doc_)                                                                       \
  const kiln_op_def kiln_opdef_##Name = {.name = #Name, .domain = "", .min_in = 1,                 \
                                         .max_in = KILN_VARIADIC, .min_out = 1, .max_out = 1,      \
                                         .infer = infer_variadic, .flags = EW, .doc = doc_}

VARIADIC(Sum, "y = x0 + x1 + ... (broadcasting)");
VARIADIC(Mean, "y = (x0 + x1 + ...) / N (broadcasting)");
VARIADIC(Max, "y = max(x0, x1, ...) (broadcasting)");
VARIADIC(Min, "y = min(x0, x1, ...) (broadcasting)");

const kiln_op_def kiln_opdef_Where = {
    .name = "Where", .domain = "", .min_in = 3, .max_in = 3, .min_out = 1, .max_out = 1,
    .infer = infer_where, .flags = KILN_OPF_ELEMENTWISE,
    .doc = "y = cond ? x : y (broadcasting)"};

const kiln_op_def kiln_opdef_Cast = {
    .name = "Cast", .domain = "", .min_in = 1, .max_in = 1, .min_out = 1, .max_out = 1,
    .attrs = cast_attrs, .n_attrs = NELEM(cast_attrs), .infer = infer_cast,
    .flags = KILN_OPF_ELEMENTWISE,
    .doc = "y = x converted to dtype `to` (float32, int32, int64, bool)"};

/* NO_FOLD is static (flags belong to the op, not the node), so even a Dropout whose
 * training_mode is a constant false is not folded by ir_infer; it is an identity that
 * the graph passes remove anyway. */
const kiln_op_def kiln_opdef_Dropout = {
    .name = "Dropout", .domain = "", .min_in = 1, .max_in = 3, .min_out = 1, .max_out = 2,
    .attrs = dropout_attrs, .n_attrs = NELEM(dropout_attrs), .infer = infer_dropout,
    .nondiff_inputs = 0x6, .flags = EW | KILN_OPF_NO_FOLD,
    .doc = "inference: y = x, mask all true; training: y = x * mask / (1 - ratio), random mask"};
