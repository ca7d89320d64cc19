/* grad_reduce.c — gradient rules of the reduce op family (see passes/autodiff.h): the output
 * gradient, reshaped to keepdims form, is broadcast back over the reduced axes. */
#include "ir/ops/reduce.h"
#include "passes/grad_ops_util.h"

/* What a Reduce* node reduces: the reduced axes, x's shape and the keepdims form of y. */
typedef struct reduce_view {
  kiln_shape xs, keep;
  int64_t axes[KILN_MAX_RANK];
  int n_axes;
  uint32_t mask;      /* bit i: axis i is reduced */
  bool noop;          /* noop_with_empty_axes and no axes: y = x for every Reduce* */
  int64_t count;      /* elements reduced into each output */
} reduce_view;

static kiln_code view_of(kiln_grad_ctx *gc, const kiln_node *n, reduce_view *v, kiln_err *e) {
  kiln_graph *g = grad_graph(gc);
  v->xs = gu_shape(gc, n->in[0]);
  const kiln_tensor *axes = ir_in_const(g, n, 1);
  if (ir_in(g, n, 1) && !axes)
    return kiln_errf(e, KILN_ERR_UNSUPPORTED, "the axes input must be a constant");
  uint32_t mask;
  KILN_TRY(kiln_reduce_axes(n, v->xs.rank, axes, &mask, &v->noop, e));
  if (v->noop) mask = 0;
  v->mask = mask;
  v->keep = v->xs;
  v->n_axes = 0;
  v->count = 1;
  for (int i = 0; i < v->xs.rank; i++)
    if (mask & (1u << i)) {
      v->axes[v->n_axes++] = i;
      v->keep.d[i] = 1;
      v->count *= v->xs.d[i];
    }
  return KILN_OK;
}

/* The output gradient (and with `y`, the output) in keepdims form. */
static kiln_code keep_form(kiln_grad_ctx *gc, const reduce_view *v, int val, int *out,
                           kiln_err *e) {
  return grad_reshape(gc, val, &v->keep, out, e);
}

/* sum: dx = expand(dy); mean: the same divided by the reduced count */
static kiln_code g_sum_mean(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                            const bool *w, kiln_err *e) {
  reduce_view v;
  KILN_TRY(view_of(gc, n, &v, e));
  if (v.noop) {
    dx[0] = dy[0];
    return KILN_OK;
  }
  int d;
  KILN_TRY(keep_form(gc, &v, dy[0], &d, e));
  if (n->op == KILN_OP_ReduceMean && v.count > 0)
    KILN_TRY(gu_scale(gc, d, 1.0 / (double)v.count, &d, e));
  return gu_expand(gc, d, &v.xs, &dx[0], e);
}

/* sum of squares: dx = 2 x dy */
static kiln_code g_sum_square(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                              const bool *w, kiln_err *e) {
  reduce_view v;
  KILN_TRY(view_of(gc, n, &v, e));
  if (v.noop) {
    dx[0] = dy[0];
    return KILN_OK;
  }
  int d;
  KILN_TRY(keep_form(gc, &v, dy[0], &d, e));
  KILN_TRY(gu_bin_c(gc, KILN_OP_Mul, d, 2.0, &d, e));
  KILN_TRY(gu_bin(gc, KILN_OP_Mul, n->in[0], d, &d, e));
  return gu_expand(gc, d, &v.xs, &dx[0], e);
}

/* L2 norm: dx = x * dy / y, and 0 where y == 0 (PyTorch's norm backward masks it the same way) */
static kiln_code g_l2(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx, const bool *w,
                      kiln_err *e) {
  reduce_view v;
  KILN_TRY(view_of(gc, n, &v, e));
  if (v.noop) {
    dx[0] = dy[0];
    return KILN_OK;
  }
  int d, y, r, z, is0;
  KILN_TRY(keep_form(gc, &v, dy[0], &d, e));
  KILN_TRY(keep_form(gc, &v, n->out[0], &y, e));
  KILN_TRY(gu_bin(gc, KILN_OP_Div, d, y, &r, e));
  KILN_TRY(grad_const_f32(gc, 0.0f, &z, e));
  KILN_TRY(gu_bin(gc, KILN_OP_Equal, y, z, &is0, e));
  KILN_TRY(gu_mask(gc, is0, r, true, &r, e));
  KILN_TRY(gu_bin(gc, KILN_OP_Mul, n->in[0], r, &d, e));
  return gu_expand(gc, d, &v.xs, &dx[0], e);
}

/* max/min: the whole gradient goes to the first extreme element in row-major order over the
 * reduced axes (as MaxPool and torch.max(dim) pick it).  Built from forward ops: the position
 * of each element within its reduction, replaced by a sentinel where x is not the extreme;
 * the minimum of that is the first extreme's position. */
static kiln_code g_max_min(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                           const bool *w, kiln_err *e) {
  reduce_view v;
  KILN_TRY(view_of(gc, n, &v, e));
  if (v.noop) {
    dx[0] = dy[0];
    return KILN_OK;
  }
  int d, y, eq, pos, big, masked, first_pos, first;
  KILN_TRY(keep_form(gc, &v, dy[0], &d, e));
  KILN_TRY(keep_form(gc, &v, n->out[0], &y, e));
  KILN_TRY(gu_bin(gc, KILN_OP_Equal, n->in[0], y, &eq, e));
  /* positions: shape with the reduced dims of x and 1 elsewhere, row-major over those dims */
  kiln_shape ps = v.xs;
  for (int i = 0; i < ps.rank; i++)
    if (!(v.mask & (1u << i))) ps.d[i] = 1;
  kiln_tensor *pt;
  KILN_TRY(kiln_tensor_new(KILN_I64, &ps, &pt, e));
  for (int64_t i = 0; i < pt->numel; i++) ((int64_t *)pt->data)[i] = i;
  KILN_TRY(gu_const(gc, pt, &pos, e));
  KILN_TRY(gu_const_int(gc, KILN_I64, v.count, &big, e));
  KILN_TRY(gu_where(gc, eq, pos, big, &masked, e));
  KILN_TRY(gu_reduce(gc, KILN_OP_ReduceMin, masked, v.axes, v.n_axes, true, &first_pos, e));
  KILN_TRY(gu_bin(gc, KILN_OP_Equal, pos, first_pos, &first, e));
  KILN_TRY(gu_mask(gc, first, d, false, &d, e));
  return gu_expand(gc, d, &v.xs, &dx[0], e);
}

void grad_register_reduce(kiln_grad_fn *table) {
  table[KILN_OP_ReduceSum] = g_sum_mean;
  table[KILN_OP_ReduceMean] = g_sum_mean;
  table[KILN_OP_ReduceSumSquare] = g_sum_square;
  table[KILN_OP_ReduceL2] = g_l2;
  table[KILN_OP_ReduceMax] = g_max_min;
  table[KILN_OP_ReduceMin] = g_max_min;
}
