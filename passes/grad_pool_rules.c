/* grad_pool_rules.c — gradient rules of the pools: MaxPool and AveragePool through the
 * kiln.MaxPoolGrad / kiln.AveragePoolGrad ops (which re-derive the forward window from the same
 * attributes), GlobalAveragePool composed of forward ops, GlobalMaxPool as a 1-D MaxPoolGrad
 * over the flattened spatial dims (the first maximum gets the gradient, as in PyTorch). */
#include "passes/autodiff.h"

/* Copies the window attributes that are set on pool node n onto gradient node nid. */
static kiln_code copy_window(kiln_grad_ctx *gc, const kiln_node *n, int nid, kiln_err *e) {
  kiln_graph *g = grad_graph(gc);
  static const char *const ints[] = {"kernel_shape", "strides", "pads", "dilations"};
  for (int i = 0; i < 4; i++) {
    const int64_t *v;
    int64_t cnt = ir_attr_ints(n, ints[i], &v);
    if (v) KILN_TRY(ir_set_attr_ints(g, nid, ints[i], v, cnt, e));
  }
  if (ir_attr_has(n, "auto_pad"))
    KILN_TRY(ir_set_attr_str(g, nid, "auto_pad", ir_attr_str(n, "auto_pad"), e));
  if (ir_attr_has(n, "ceil_mode"))
    KILN_TRY(ir_set_attr_int(g, nid, "ceil_mode", ir_attr_int(n, "ceil_mode"), e));
  return KILN_OK;
}

static kiln_code g_maxpool(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                           const bool *wants, kiln_err *e) {
  if (dy[0] < 0) return KILN_OK; /* only the (integer) indices are used */
  int nid;
  KILN_TRY(grad_op1(gc, KILN_OP_MaxPoolGrad, (int[]){n->in[0], dy[0]}, 2, &dx[0], &nid, e));
  return copy_window(gc, n, nid, e);
}

static kiln_code g_avgpool(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                           const bool *wants, kiln_err *e) {
  kiln_shape xs = grad_val(gc, n->in[0])->shape;
  int nid;
  KILN_TRY(grad_op1(gc, KILN_OP_AveragePoolGrad, (int[]){dy[0]}, 1, &dx[0], &nid, e));
  KILN_TRY(copy_window(gc, n, nid, e));
  if (ir_attr_has(n, "count_include_pad"))
    KILN_TRY(ir_set_attr_int(grad_graph(gc), nid, "count_include_pad",
                             ir_attr_int(n, "count_include_pad"), e));
  return ir_set_attr_ints(grad_graph(gc), nid, "input_shape", xs.d, xs.rank, e);
}

/* Number of spatial positions (dims 2..) of a shape. */
static int64_t spatial_size(const kiln_shape *s) {
  int64_t p = 1;
  for (int i = 2; i < s->rank; i++) p *= s->d[i];
  return p;
}

/* An all-zero float32 constant of shape s (gradients of empty inputs). */
static kiln_code zeros(kiln_grad_ctx *gc, const kiln_shape *s, int *out, kiln_err *e) {
  kiln_tensor *t;
  KILN_TRY(kiln_tensor_new(KILN_F32, s, &t, e));
  char *nm = NULL;
  kiln_code rc = ir_unique_name(grad_graph(gc), "grad_zeros", &nm, e);
  if (!rc) rc = ir_add_const(grad_graph(gc), nm, t, false, out, e);
  else kiln_tensor_free(t);
  kiln_free(nm);
  return rc;
}

/* dX = Expand(dY / (D1*...*Dk), shape of X) */
static kiln_code g_global_avgpool(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                                  const bool *wants, kiln_err *e) {
  kiln_shape xs = grad_val(gc, n->in[0])->shape;
  int64_t plane = spatial_size(&xs);
  if (plane == 0) return zeros(gc, &xs, &dx[0], e);
  int cnt, q, sh;
  KILN_TRY(grad_const_f32(gc, (float)plane, &cnt, e));
  KILN_TRY(grad_op1(gc, KILN_OP_Div, (int[]){dy[0], cnt}, 2, &q, NULL, e));
  KILN_TRY(grad_const_i64s(gc, xs.d, xs.rank, &sh, e));
  return grad_op1(gc, KILN_OP_Expand, (int[]){q, sh}, 2, &dx[0], NULL, e);
}

/* dX = Reshape(MaxPoolGrad(X as (N, C, P), dY as (N, C, 1), kernel [P]), shape of X): one
 * window over all P spatial positions, so any rank of X works. */
static kiln_code g_global_maxpool(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                                  const bool *wants, kiln_err *e) {
  kiln_shape xs = grad_val(gc, n->in[0])->shape;
  int64_t plane = spatial_size(&xs);
  if (plane == 0) return zeros(gc, &xs, &dx[0], e);
  kiln_shape x3 = {.rank = 3, .d = {xs.d[0], xs.d[1], plane}};
  kiln_shape y3 = {.rank = 3, .d = {xs.d[0], xs.d[1], 1}};
  int xr, dyr, d3, nid;
  KILN_TRY(grad_reshape(gc, n->in[0], &x3, &xr, e));
  KILN_TRY(grad_reshape(gc, dy[0], &y3, &dyr, e));
  KILN_TRY(grad_op1(gc, KILN_OP_MaxPoolGrad, (int[]){xr, dyr}, 2, &d3, &nid, e));
  KILN_TRY(ir_set_attr_ints(grad_graph(gc), nid, "kernel_shape", &plane, 1, e));
  KILN_TRY(grad_infer_new(gc, e));
  return grad_reshape(gc, d3, &xs, &dx[0], e);
}

void grad_register_pool(kiln_grad_fn *table) {
  table[KILN_OP_MaxPool] = g_maxpool;
  table[KILN_OP_AveragePool] = g_avgpool;
  table[KILN_OP_GlobalAveragePool] = g_global_avgpool;
  table[KILN_OP_GlobalMaxPool] = g_global_maxpool;
}
