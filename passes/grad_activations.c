/* grad_activations.c — gradient rules of the remaining elementwise ops (see passes/autodiff.h):
 * the activations LeakyRelu, Clip, Elu, Selu, Softplus, Softsign, HardSigmoid, HardSwish,
 * PRelu, the math ops Abs, Pow, Reciprocal, Erf, the variadic Sum/Mean/Max/Min, Where, Cast
 * and Dropout.  Conventions at kinks follow PyTorch's derivatives (e.g. Clip passes the
 * gradient at the bounds, HardSwish uses x/3 + 1/2 at x = 3, Max/Min split ties evenly). */
#include <float.h>
#include <math.h>

#include "ir/ops/elementwise.h"
#include "passes/grad_ops_util.h"

/* out = (x op c) for a float scalar c (a comparison) */
static kiln_code cmp_c(kiln_grad_ctx *gc, kiln_op op, int x, double c, int *out, kiln_err *e) {
  return gu_bin_c(gc, op, x, c, out, e);
}

/* leaky relu: x > 0 ? dy : alpha dy */
static kiln_code g_leaky_relu(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                              const bool *w, kiln_err *e) {
  int pos, neg;
  KILN_TRY(cmp_c(gc, KILN_OP_Greater, n->in[0], 0.0, &pos, e));
  KILN_TRY(gu_scale(gc, dy[0], ir_attr_float(n, "alpha"), &neg, e));
  return gu_where(gc, pos, dy[0], neg, &dx[0], e);
}

/* elu: x > 0 ? dy : dy * alpha * exp(x)  (exp(x) rather than y + alpha: no cancellation) */
static kiln_code g_elu(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                       const bool *w, kiln_err *e) {
  int pos, ex, t;
  KILN_TRY(cmp_c(gc, KILN_OP_Greater, n->in[0], 0.0, &pos, e));
  KILN_TRY(gu_un(gc, KILN_OP_Exp, n->in[0], &ex, e));
  KILN_TRY(gu_scale(gc, ex, ir_attr_float(n, "alpha"), &ex, e));
  KILN_TRY(gu_bin(gc, KILN_OP_Mul, dy[0], ex, &t, e));
  return gu_where(gc, pos, dy[0], t, &dx[0], e);
}

/* selu: gamma * (x > 0 ? dy : dy * alpha * exp(x)) */
static kiln_code g_selu(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                        const bool *w, kiln_err *e) {
  int pos, ex, t, d;
  double alpha = ir_attr_float(n, "alpha"), gamma = ir_attr_float(n, "gamma");
  KILN_TRY(cmp_c(gc, KILN_OP_Greater, n->in[0], 0.0, &pos, e));
  KILN_TRY(gu_un(gc, KILN_OP_Exp, n->in[0], &ex, e));
  KILN_TRY(gu_scale(gc, ex, alpha * gamma, &ex, e));
  KILN_TRY(gu_bin(gc, KILN_OP_Mul, dy[0], ex, &t, e));
  KILN_TRY(gu_scale(gc, dy[0], gamma, &d, e));
  return gu_where(gc, pos, d, t, &dx[0], e);
}

/* softplus: dy * sigmoid(x) */
static kiln_code g_softplus(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                            const bool *w, kiln_err *e) {
  int s;
  KILN_TRY(gu_un(gc, KILN_OP_Sigmoid, n->in[0], &s, e));
  return gu_bin(gc, KILN_OP_Mul, dy[0], s, &dx[0], e);
}

/* softsign: dy / (1 + |x|)^2 */
static kiln_code g_softsign(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                            const bool *w, kiln_err *e) {
  int a, d, d2;
  KILN_TRY(gu_un(gc, KILN_OP_Abs, n->in[0], &a, e));
  KILN_TRY(gu_bin_c(gc, KILN_OP_Add, a, 1.0, &d, e));
  KILN_TRY(gu_bin(gc, KILN_OP_Mul, d, d, &d2, e));
  return gu_bin(gc, KILN_OP_Div, dy[0], d2, &dx[0], e);
}

/* hard sigmoid: alpha dy where 0 < alpha x + beta < 1 (read from y), else 0 */
static kiln_code g_hard_sigmoid(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                                const bool *w, kiln_err *e) {
  int above, below, d;
  KILN_TRY(cmp_c(gc, KILN_OP_Greater, n->out[0], 0.0, &above, e));
  KILN_TRY(cmp_c(gc, KILN_OP_Less, n->out[0], 1.0, &below, e));
  KILN_TRY(gu_scale(gc, dy[0], ir_attr_float(n, "alpha"), &d, e));
  KILN_TRY(gu_mask(gc, below, d, false, &d, e));
  return gu_mask(gc, above, d, false, &dx[0], e);
}

/* hard swish (PyTorch's hardswish_backward): x < -3: 0;  x <= 3: dy (x/3 + 1/2);  else dy */
static kiln_code g_hard_swish(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                              const bool *w, kiln_err *e) {
  int lo, hi, t, mid;
  KILN_TRY(cmp_c(gc, KILN_OP_Less, n->in[0], -3.0, &lo, e));
  KILN_TRY(cmp_c(gc, KILN_OP_Greater, n->in[0], 3.0, &hi, e));
  KILN_TRY(gu_bin_c(gc, KILN_OP_Div, n->in[0], 3.0, &t, e));
  KILN_TRY(gu_bin_c(gc, KILN_OP_Add, t, 0.5, &t, e));
  KILN_TRY(gu_bin(gc, KILN_OP_Mul, dy[0], t, &mid, e));
  KILN_TRY(gu_where(gc, hi, dy[0], mid, &mid, e));
  return gu_mask(gc, lo, mid, true, &dx[0], e);
}

/* clip: dy where min <= x <= max (bounds included, as torch.clamp), else 0.  Bounds are
 * attributes before opset 11 and optional scalar inputs (any shape of one element) after. */
static kiln_code g_clip(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                        const bool *w, kiln_err *e) {
  int cur = dy[0];
  kiln_shape scalar = {.rank = 0};
  for (int i = 0; i < 2; i++) {
    kiln_op cmp = i == 0 ? KILN_OP_Less : KILN_OP_Greater;
    int bound = -1, out;
    if (n->opset < 11) {
      double v = ir_attr_float(n, i == 0 ? "min" : "max");
      if (!ir_attr_has(n, i == 0 ? "min" : "max") || fabs(v) >= FLT_MAX) continue;
      KILN_TRY(grad_const_f32(gc, (float)v, &bound, e));
    } else {
      if (n->n_in <= i + 1 || n->in[i + 1] < 0) continue;
      KILN_TRY(grad_reshape(gc, n->in[i + 1], &scalar, &bound, e));
    }
    KILN_TRY(gu_bin(gc, cmp, n->in[0], bound, &out, e));
    KILN_TRY(gu_mask(gc, out, cur, true, &cur, e));
  }
  dx[0] = cur;
  return KILN_OK;
}

/* The shape input i of a broadcasting binary node is used with: its own, except for the
 * opset < 7 forms (kiln_ew_bshape), where its dims are placed at an axis of input 0. */
static kiln_code legacy_view(kiln_grad_ctx *gc, const kiln_node *n, int i, int *out,
                             kiln_shape *bs, kiln_err *e) {
  kiln_shape a = gu_shape(gc, n->in[0]), b = gu_shape(gc, n->in[i]);
  KILN_TRY(kiln_ew_bshape(n, &a, &b, bs, e));
  return grad_reshape(gc, n->in[i], bs, out, e);
}

/* d (the output's shape) summed down to input i's broadcast view, then to its shape. */
static kiln_code to_legacy_input(kiln_grad_ctx *gc, const kiln_node *n, int i, int d,
                                 const kiln_shape *bs, int *out, kiln_err *e) {
  kiln_shape s = gu_shape(gc, n->in[i]);
  KILN_TRY(grad_unbroadcast(gc, d, bs, &d, e));
  return grad_reshape(gc, d, &s, out, e);
}

/* prelu: dx = x > 0 ? dy : slope dy;  dslope = sum of (x > 0 ? 0 : x dy) */
static kiln_code g_prelu(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                         const bool *w, kiln_err *e) {
  int pos, slope, t;
  kiln_shape bs;
  KILN_TRY(cmp_c(gc, KILN_OP_Greater, n->in[0], 0.0, &pos, e));
  KILN_TRY(legacy_view(gc, n, 1, &slope, &bs, e));
  if (w[0]) {
    KILN_TRY(gu_bin(gc, KILN_OP_Mul, dy[0], slope, &t, e));
    KILN_TRY(gu_where(gc, pos, dy[0], t, &dx[0], e));
  }
  if (w[1]) {
    KILN_TRY(gu_bin(gc, KILN_OP_Mul, dy[0], n->in[0], &t, e));
    KILN_TRY(gu_mask(gc, pos, t, true, &t, e));
    KILN_TRY(to_legacy_input(gc, n, 1, t, &bs, &dx[1], e));
  }
  return KILN_OK;
}

/* abs: dy * sign(x) (0 at 0) */
static kiln_code g_abs(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                       const bool *w, kiln_err *e) {
  int pos, neg, nd, t;
  KILN_TRY(cmp_c(gc, KILN_OP_Greater, n->in[0], 0.0, &pos, e));
  KILN_TRY(cmp_c(gc, KILN_OP_Less, n->in[0], 0.0, &neg, e));
  KILN_TRY(gu_un(gc, KILN_OP_Neg, dy[0], &nd, e));
  KILN_TRY(gu_mask(gc, neg, nd, false, &t, e));
  return gu_where(gc, pos, dy[0], t, &dx[0], e);
}

/* reciprocal: -dy y^2 */
static kiln_code g_reciprocal(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                              const bool *w, kiln_err *e) {
  int y2, t;
  KILN_TRY(gu_bin(gc, KILN_OP_Mul, n->out[0], n->out[0], &y2, e));
  KILN_TRY(gu_bin(gc, KILN_OP_Mul, dy[0], y2, &t, e));
  return gu_un(gc, KILN_OP_Neg, t, &dx[0], e);
}

/* erf: dy * 2/sqrt(pi) * exp(-x^2) */
static kiln_code g_erf(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                       const bool *w, kiln_err *e) {
  int x2, t;
  KILN_TRY(gu_bin(gc, KILN_OP_Mul, n->in[0], n->in[0], &x2, e));
  KILN_TRY(gu_un(gc, KILN_OP_Neg, x2, &x2, e));
  KILN_TRY(gu_un(gc, KILN_OP_Exp, x2, &t, e));
  KILN_TRY(gu_scale(gc, t, 1.1283791670955126, &t, e));
  return gu_bin(gc, KILN_OP_Mul, dy[0], t, &dx[0], e);
}

/* True when the constant value v holds no zero (so b^(b-1) needs no mask at b == 0). */
static bool const_nonzero(kiln_grad_ctx *gc, int v) {
  const kiln_tensor *t = grad_val(gc, v)->data;
  if (!t) return false;
  for (int64_t i = 0; i < t->numel; i++)
    if (kiln_tensor_get_f(t, i) == 0) return false;
  return true;
}

/* pow y = a^b:  da = dy b a^(b-1), 0 where b == 0;  db = dy y log(a), 0 where a == 0 and
 * b >= 0 (PyTorch's masks).  An integer exponent is converted to float first. */
static kiln_code g_pow(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                       const bool *w, kiln_err *e) {
  int b, t, z;
  kiln_shape bs;
  KILN_TRY(legacy_view(gc, n, 1, &b, &bs, e));
  KILN_TRY(gu_cast(gc, b, KILN_F32, &b, e));
  KILN_TRY(grad_const_f32(gc, 0.0f, &z, e));
  if (w[0]) {
    const kiln_tensor *bc = grad_val(gc, n->in[1])->data;
    double c = bc && bc->numel == 1 ? kiln_tensor_get_f(bc, 0) : NAN;
    if (c == 1.0) {
      t = dy[0];
    } else if (c == 2.0) {
      KILN_TRY(gu_scale(gc, dy[0], 2.0, &t, e));
      KILN_TRY(gu_bin(gc, KILN_OP_Mul, t, n->in[0], &t, e));
    } else {
      int bm1, p;
      KILN_TRY(gu_bin_c(gc, KILN_OP_Sub, b, 1.0, &bm1, e));
      KILN_TRY(gu_bin(gc, KILN_OP_Pow, n->in[0], bm1, &p, e));
      KILN_TRY(gu_bin(gc, KILN_OP_Mul, p, b, &p, e));
      KILN_TRY(gu_bin(gc, KILN_OP_Mul, dy[0], p, &t, e));
      if (!const_nonzero(gc, n->in[1])) {
        int b0;
        KILN_TRY(gu_bin(gc, KILN_OP_Equal, b, z, &b0, e));
        KILN_TRY(gu_mask(gc, b0, t, true, &t, e));
      }
    }
    KILN_TRY(gu_to_input(gc, t, n->in[0], &dx[0], e));
  }
  if (w[1]) {
    int lg, a0, bneg, masked;
    KILN_TRY(gu_un(gc, KILN_OP_Log, n->in[0], &lg, e));
    KILN_TRY(gu_bin(gc, KILN_OP_Mul, n->out[0], lg, &t, e));
    KILN_TRY(gu_bin(gc, KILN_OP_Equal, n->in[0], z, &a0, e));
    KILN_TRY(gu_bin(gc, KILN_OP_Less, b, z, &bneg, e));
    /* where a == 0: keep y log a only for b < 0 */
    KILN_TRY(gu_mask(gc, bneg, t, false, &masked, e));
    KILN_TRY(gu_where(gc, a0, masked, t, &t, e));
    KILN_TRY(gu_bin(gc, KILN_OP_Mul, dy[0], t, &t, e));
    KILN_TRY(to_legacy_input(gc, n, 1, t, &bs, &dx[1], e));
  }
  return KILN_OK;
}

/* variadic Sum and Mean: every input gets dy (/ N), summed down to its shape */
static kiln_code g_sum_mean(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                            const bool *w, kiln_err *e) {
  int d = dy[0];
  if (n->op == KILN_OP_Mean) KILN_TRY(gu_scale(gc, d, 1.0 / n->n_in, &d, e));
  for (int i = 0; i < n->n_in; i++)
    if (w[i]) KILN_TRY(gu_to_input(gc, d, n->in[i], &dx[i], e));
  return KILN_OK;
}

/* variadic Max and Min: dy goes to the inputs equal to y, split evenly between ties (for two
 * inputs PyTorch's maximum/minimum rule: dy/2 each on a tie). */
static kiln_code g_max_min(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                           const bool *w, kiln_err *e) {
  if (n->n_in == 1) {
    dx[0] = dy[0];
    return KILN_OK;
  }
  int masks[64], cnt, share;
  for (int i = 0; i < n->n_in && i < 64; i++) {
    int eq;
    KILN_TRY(gu_bin(gc, KILN_OP_Equal, n->in[i], n->out[0], &eq, e));
    KILN_TRY(gu_cast(gc, eq, KILN_F32, &masks[i], e));
  }
  KILN_TRY(gu_op(gc, KILN_OP_Sum, masks, n->n_in, &cnt, e));
  KILN_TRY(gu_bin(gc, KILN_OP_Div, dy[0], cnt, &share, e));
  for (int i = 0; i < n->n_in; i++)
    if (w[i]) {
      int t;
      KILN_TRY(gu_bin(gc, KILN_OP_Mul, share, masks[i], &t, e));
      KILN_TRY(gu_to_input(gc, t, n->in[i], &dx[i], e));
    }
  return KILN_OK;
}

/* where(c, x, y): dx = c ? dy : 0, dy_y = c ? 0 : dy, each summed down to its shape */
static kiln_code g_where(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                         const bool *w, kiln_err *e) {
  for (int i = 1; i < 3; i++)
    if (w[i]) {
      int t;
      KILN_TRY(gu_mask(gc, n->in[0], dy[0], i == 2, &t, e));
      KILN_TRY(gu_to_input(gc, t, n->in[i], &dx[i], e));
    }
  return KILN_OK;
}

/* cast float -> float is the identity; other casts carry no gradient */
static kiln_code g_cast(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                        const bool *w, kiln_err *e) {
  if (grad_val(gc, n->out[0])->dtype == KILN_F32) dx[0] = dy[0];
  return KILN_OK;
}

/* Dropout.  In inference (training_mode a constant false, ratio a constant 0, or is_test at
 * opset 6) y = x and dx = dy.  Otherwise the node may drop at run time, and the gradient needs
 * the mask that was drawn: with the mask output present dx = dy * mask / (1 - ratio), which
 * assumes the graph runs in training mode (an exported training graph is the only source of
 * a used mask).  Without a mask output the node is differentiated as in inference (y = x), the
 * form `kiln grad` sees on inference models. */
static kiln_code g_dropout(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                           const bool *w, kiln_err *e) {
  kiln_graph *g = grad_graph(gc);
  bool inference = false;
  const kiln_tensor *ratio_c = NULL;
  double ratio = 0.5;
  if (n->opset >= 12) {
    const kiln_tensor *tm = ir_in_const(g, n, 2);
    if (tm && kiln_tensor_get_i(tm, 0) == 0) inference = true;
    ratio_c = ir_in_const(g, n, 1);
    if (ratio_c) ratio = kiln_tensor_get_f(ratio_c, 0);
    if (ratio_c && ratio == 0) inference = true;
  } else {
    ratio = ir_attr_float(n, "ratio");
    if (ratio == 0 || (n->opset < 7 && ir_attr_int(n, "is_test"))) inference = true;
  }
  bool has_mask = n->n_out > 1 && n->out[1] >= 0;
  if (inference || !has_mask) {
    dx[0] = dy[0];
    return KILN_OK;
  }
  int m, t;
  KILN_TRY(gu_cast(gc, n->out[1], KILN_F32, &m, e));
  KILN_TRY(gu_bin(gc, KILN_OP_Mul, dy[0], m, &t, e));
  if (n->opset < 12 || ratio_c || !ir_in(g, n, 1))
    return gu_scale(gc, t, 1.0f / (1.0f - (float)ratio), &dx[0], e); /* the forward's scale */
  /* a ratio computed at run time */
  int r = n->in[1], keep;
  kiln_shape scalar = {.rank = 0};
  KILN_TRY(grad_reshape(gc, r, &scalar, &r, e));
  int one;
  KILN_TRY(grad_const_f32(gc, 1.0f, &one, e));
  KILN_TRY(gu_bin(gc, KILN_OP_Sub, one, r, &keep, e));
  return gu_bin(gc, KILN_OP_Div, t, keep, &dx[0], e);
}

void grad_register_activations(kiln_grad_fn *table) {
  table[KILN_OP_LeakyRelu] = g_leaky_relu;
  table[KILN_OP_Elu] = g_elu;
  table[KILN_OP_Selu] = g_selu;
  table[KILN_OP_Softplus] = g_softplus;
  table[KILN_OP_Softsign] = g_softsign;
  table[KILN_OP_HardSigmoid] = g_hard_sigmoid;
  table[KILN_OP_HardSwish] = g_hard_swish;
  table[KILN_OP_Clip] = g_clip;
  table[KILN_OP_PRelu] = g_prelu;
  table[KILN_OP_Abs] = g_abs;
  table[KILN_OP_Reciprocal] = g_reciprocal;
  table[KILN_OP_Erf] = g_erf;
  table[KILN_OP_Pow] = g_pow;
  table[KILN_OP_Sum] = g_sum_mean;
  table[KILN_OP_Mean] = g_sum_mean;
  table[KILN_OP_Max] = g_max_min;
  table[KILN_OP_Min] = g_max_min;
  table[KILN_OP_Where] = g_where;
  table[KILN_OP_Cast] = g_cast;
  table[KILN_OP_Dropout] = g_dropout;
}
