/* grad_linalg.c — gradient rules of the linalg op family (see passes/autodiff.h): Gemm and
 * MatMul as products with the other operand (un-broadcast over batch dims), Softmax and
 * LogSoftmax over their normalised axes, and the classification losses through the
 * kiln.NLLLossGrad op (the scatter of -weight * dLoss at the labels). */
#include <string.h>

#include "ir/ops/linalg.h"
#include "passes/grad_ops_util.h"

/* Y = alpha op(A) op(B) + beta C.  With op(X) = X or X^T:
 *   dA = alpha dY op(B)^T    (transA: alpha op(B) dY^T)
 *   dB = alpha op(A)^T dY    (transB: alpha dY^T op(A))
 *   dC = beta * dY summed down to C's shape. */
static kiln_code g_gemm(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                        const bool *w, kiln_err *e) {
  bool ta = ir_attr_int(n, "transA") != 0, tb = ir_attr_int(n, "transB") != 0;
  double alpha = ir_attr_float(n, "alpha"), beta = ir_attr_float(n, "beta");
  int a = n->in[0], b = n->in[1];
  if (w[0]) {
    if (!ta)
      KILN_TRY(gu_gemm(gc, dy[0], b, false, !tb, alpha, &dx[0], e));
    else
      KILN_TRY(gu_gemm(gc, b, dy[0], tb, true, alpha, &dx[0], e));
  }
  if (w[1]) {
    if (!tb)
      KILN_TRY(gu_gemm(gc, a, dy[0], !ta, false, alpha, &dx[1], e));
    else
      KILN_TRY(gu_gemm(gc, dy[0], a, true, ta, alpha, &dx[1], e));
  }
  if (n->n_in > 2 && w[2]) {
    int d;
    KILN_TRY(gu_scale(gc, dy[0], beta, &d, e));
    KILN_TRY(gu_to_input(gc, d, n->in[2], &dx[2], e));
  }
  return KILN_OK;
}

/* MatMul with numpy semantics.  1-D operands are promoted ([K] -> [1,K] on the left, [K,1] on
 * the right) and dY reshaped to the promoted output batch + [M,N]; then dA = dY B^T and
 * dB = A^T dY, summed over the batch dims the operand was broadcast along.  When B has no
 * batch dims (a linear layer on [..., K] inputs) both are single Gemms over the flattened
 * batch. */
static kiln_code g_matmul(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                          const bool *w, kiln_err *e) {
  kiln_shape sa = gu_shape(gc, n->in[0]), sb = gu_shape(gc, n->in[1]);
  kiln_matmul_dims md;
  KILN_TRY(kiln_matmul_dims_of(&sa, "A", &sb, "B", &md, e));
  kiln_shape pa = sa.rank == 1 ? kiln_shape_make(2, (int64_t[]){1, sa.d[0]}) : sa;
  kiln_shape pb = sb.rank == 1 ? kiln_shape_make(2, (int64_t[]){sb.d[0], 1}) : sb;
  kiln_shape po = md.batch;
  po.d[po.rank++] = md.m;
  po.d[po.rank++] = md.n;
  int a, b, d;
  KILN_TRY(grad_reshape(gc, n->in[0], &pa, &a, e));
  KILN_TRY(grad_reshape(gc, n->in[1], &pb, &b, e));
  KILN_TRY(grad_reshape(gc, dy[0], &po, &d, e));
  if (md.b_batch.rank == 0) {
    int64_t rows = gu_numel(&md.batch) * md.m;
    kiln_shape a2 = kiln_shape_make(2, (int64_t[]){rows, md.k});
    kiln_shape d2 = kiln_shape_make(2, (int64_t[]){rows, md.n});
    int dd;
    KILN_TRY(grad_reshape(gc, d, &d2, &dd, e));
    if (w[0]) {
      int t;
      KILN_TRY(gu_gemm(gc, dd, b, false, true, 1.0, &t, e));
      KILN_TRY(grad_reshape(gc, t, &sa, &dx[0], e));
    }
    if (w[1]) {
      int aa, t;
      KILN_TRY(grad_reshape(gc, a, &a2, &aa, e));
      KILN_TRY(gu_gemm(gc, aa, dd, true, false, 1.0, &t, e));
      KILN_TRY(grad_reshape(gc, t, &sb, &dx[1], e));
    }
    return KILN_OK;
  }
  if (w[0]) {
    int bt, t;
    KILN_TRY(gu_swap_last2(gc, b, &bt, e));
    KILN_TRY(gu_bin(gc, KILN_OP_MatMul, d, bt, &t, e));
    KILN_TRY(grad_unbroadcast(gc, t, &pa, &t, e));
    KILN_TRY(grad_reshape(gc, t, &sa, &dx[0], e));
  }
  if (w[1]) {
    int at, t;
    KILN_TRY(gu_swap_last2(gc, a, &at, e));
    KILN_TRY(gu_bin(gc, KILN_OP_MatMul, at, d, &t, e));
    KILN_TRY(grad_unbroadcast(gc, t, &pb, &t, e));
    KILN_TRY(grad_reshape(gc, t, &sb, &dx[1], e));
  }
  return KILN_OK;
}

/* The axes Softmax/LogSoftmax normalise over: from opset 13 the single `axis` (default -1);
 * before, the input is coerced to 2-D at `axis` (default 1), so all axes from it (none when
 * axis == rank: each element is its own row). */
static kiln_code softmax_axes(const kiln_node *n, int r, int64_t *axes, int *n_axes, kiln_err *e) {
  bool coerce_2d = n->opset < 13;
  int64_t axis = ir_attr_has(n, "axis") ? ir_attr_int(n, "axis") : (coerce_2d ? 1 : -1);
  int ax;
  if (coerce_2d && axis == r)
    ax = r;
  else
    KILN_TRY(ir_axis(axis, r, &ax, e));
  *n_axes = 0;
  if (coerce_2d)
    for (int i = ax; i < r; i++) axes[(*n_axes)++] = i;
  else
    axes[(*n_axes)++] = ax;
  return KILN_OK;
}

/* softmax: dx = y * (dy - sum(dy * y)) */
static kiln_code g_softmax(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                           const bool *w, kiln_err *e) {
  int64_t axes[KILN_MAX_RANK];
  int na, y = n->out[0], t, s, d;
  KILN_TRY(softmax_axes(n, gu_shape(gc, n->in[0]).rank, axes, &na, e));
  KILN_TRY(gu_bin(gc, KILN_OP_Mul, dy[0], y, &t, e));
  KILN_TRY(gu_reduce(gc, KILN_OP_ReduceSum, t, axes, na, true, &s, e));
  KILN_TRY(gu_bin(gc, KILN_OP_Sub, dy[0], s, &d, e));
  return gu_bin(gc, KILN_OP_Mul, y, d, &dx[0], e);
}

/* log-softmax: dx = dy - exp(y) * sum(dy) */
static kiln_code g_log_softmax(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                               const bool *w, kiln_err *e) {
  int64_t axes[KILN_MAX_RANK];
  int na, p, s, t;
  KILN_TRY(softmax_axes(n, gu_shape(gc, n->in[0]).rank, axes, &na, e));
  KILN_TRY(gu_reduce(gc, KILN_OP_ReduceSum, dy[0], axes, na, true, &s, e));
  KILN_TRY(gu_un(gc, KILN_OP_Exp, n->out[0], &p, e));
  KILN_TRY(gu_bin(gc, KILN_OP_Mul, p, s, &t, e));
  return gu_bin(gc, KILN_OP_Sub, dy[0], t, &dx[0], e);
}

/* kiln.NLLLossGrad(dLoss, labels[, weights]): the gradient of the negative log-likelihood
 * w.r.t. its log-probability input, with the loss node's reduction and ignore_index. */
static kiln_code nll_grad(kiln_grad_ctx *gc, const kiln_node *n, int dloss, int *out, kiln_err *e) {
  kiln_graph *g = grad_graph(gc);
  int in[3] = {dloss, n->in[1], n->n_in > 2 ? n->in[2] : -1}, nid;
  KILN_TRY(grad_op1(gc, KILN_OP_NLLLossGrad, in, in[2] >= 0 ? 3 : 2, out, &nid, e));
  KILN_TRY(ir_set_attr_int(g, nid, "classes", gu_shape(gc, n->in[0]).d[1], e));
  KILN_TRY(ir_set_attr_str(g, nid, "reduction", ir_attr_str(n, "reduction"), e));
  if (ir_attr_has(n, "ignore_index"))
    KILN_TRY(ir_set_attr_int(g, nid, "ignore_index", ir_attr_int(n, "ignore_index"), e));
  return grad_infer_new(gc, e);
}

static kiln_code g_nll(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                       const bool *w, kiln_err *e) {
  return nll_grad(gc, n, dy[0], &dx[0], e);
}

/* SoftmaxCrossEntropyLoss = NLL(log_softmax(scores, axis 1)).  The gradient reaching the
 * log-probabilities (from the loss, plus the log_prob output's own) goes through the
 * log-softmax backward: dscores = g - softmax * sum_c g. */
static kiln_code g_sce(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                       const bool *w, kiln_err *e) {
  int gl = -1;
  if (dy[0] >= 0) KILN_TRY(nll_grad(gc, n, dy[0], &gl, e));
  bool has_logp = n->n_out > 1 && n->out[1] >= 0;
  if (has_logp && dy[1] >= 0) {
    if (gl < 0)
      gl = dy[1];
    else
      KILN_TRY(gu_bin(gc, KILN_OP_Add, gl, dy[1], &gl, e));
  }
  int p, s, t;
  if (has_logp) {
    KILN_TRY(gu_un(gc, KILN_OP_Exp, n->out[1], &p, e));
  } else {
    int nid;
    KILN_TRY(grad_op1(gc, KILN_OP_Softmax, (int[]){n->in[0]}, 1, &p, &nid, e));
    KILN_TRY(ir_set_attr_int(grad_graph(gc), nid, "axis", 1, e));
    KILN_TRY(grad_infer_new(gc, e));
  }
  int64_t ax = 1;
  KILN_TRY(gu_reduce(gc, KILN_OP_ReduceSum, gl, &ax, 1, true, &s, e));
  KILN_TRY(gu_bin(gc, KILN_OP_Mul, p, s, &t, e));
  return gu_bin(gc, KILN_OP_Sub, gl, t, &dx[0], e);
}

void grad_register_linalg(kiln_grad_fn *table) {
  table[KILN_OP_Gemm] = g_gemm;
  table[KILN_OP_MatMul] = g_matmul;
  table[KILN_OP_Softmax] = g_softmax;
  table[KILN_OP_LogSoftmax] = g_log_softmax;
  table[KILN_OP_NegativeLogLikelihoodLoss] = g_nll;
  table[KILN_OP_SoftmaxCrossEntropyLoss] = g_sce;
}
