/* grad_nn.c — gradient rules of the nn op family and of the kiln BatchNorm training op
 * (see passes/autodiff.h and docs/ops-kiln.md):
 *  - Conv: dX = ConvTranspose(dY, W) with the Conv's geometry and the output_padding that
 *    gives back X's size; dW = kiln.ConvGradWeight(X, dY); dB = ReduceSum(dY) over all
 *    axes but the channel's.
 *  - ConvTranspose: dX = Conv(dY, W), dW = kiln.ConvGradWeight(dY, X), dB as above.
 *  - kiln.BatchNormTrain: kiln.BatchNormGrad through the batch statistics (with
 *    activation=relu, the output Y masks dY inside kiln.BatchNormGrad).
 *  - BatchNormalization in inference form (constant statistics): composed from forward
 *    ops; in its training form (batch statistics): as BatchNormTrain.
 * Pooling rules live in passes/grad_pool_rules.c. */
#include <stdio.h>
#include <string.h>

#include "ir/ops/nn_window.h"
#include "passes/autodiff.h"

/* ReduceSum(v, axes, keepdims=0) */
static kiln_code reduce_sum(kiln_grad_ctx *gc, int v, const int64_t *axes, int n_axes, int *out,
                            kiln_err *e) {
  int ax, nid;
  KILN_TRY(grad_const_i64s(gc, axes, n_axes, &ax, e));
  KILN_TRY(grad_op1(gc, KILN_OP_ReduceSum, (int[]){v, ax}, 2, out, &nid, e));
  return ir_set_attr_int(grad_graph(gc), nid, "keepdims", 0, e);
}

/* The bias gradient of a convolution: dY summed over every axis but 1. */
static kiln_code conv_bias_grad(kiln_grad_ctx *gc, int dy, int *out, kiln_err *e) {
  int rank = grad_val(gc, dy)->shape.rank;
  int64_t axes[KILN_MAX_RANK];
  int k = 0;
  for (int i = 0; i < rank; i++)
    if (i != 1) axes[k++] = i;
  return reduce_sum(gc, dy, axes, k, out, e);
}

/* Sets the geometry attributes shared by the nodes a convolution rule builds: explicit
 * pads (auto_pad already resolved), strides, dilations, group, kernel_shape. */
static kiln_code set_geometry(kiln_grad_ctx *gc, int nid, const nn_window *w, int64_t group,
                              kiln_err *e) {
  kiln_graph *g = grad_graph(gc);
  int64_t pads[2 * NN_WIN_MAX];
  for (int i = 0; i < w->nsp; i++) {
    pads[i] = w->pad_begin[i];
    pads[w->nsp + i] = w->pad_end[i];
  }
  KILN_TRY(ir_set_attr_ints(g, nid, "pads", pads, 2 * w->nsp, e));
  KILN_TRY(ir_set_attr_ints(g, nid, "strides", w->stride, w->nsp, e));
  KILN_TRY(ir_set_attr_ints(g, nid, "dilations", w->dilation, w->nsp, e));
  KILN_TRY(ir_set_attr_ints(g, nid, "kernel_shape", w->kernel, w->nsp, e));
  return ir_set_attr_int(g, nid, "group", group, e);
}

static void weight_kernel(const kiln_value *w, int64_t *kernel) {
  for (int i = 2; i < w->shape.rank; i++) kernel[i - 2] = w->shape.d[i];
}

/* y = Conv(x, W, b). */
static kiln_code g_conv(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                        const bool *wants, kiln_err *e) {
  const kiln_value *x = grad_val(gc, n->in[0]), *w = grad_val(gc, n->in[1]);
  int64_t kernel[NN_WIN_MAX];
  weight_kernel(w, kernel);
  nn_window win;
  KILN_TRY(nn_window_forward(n, &x->shape, x->name, kernel, false, &win, e));
  int64_t group = ir_attr_int(n, "group");
  if (wants[0]) {
    /* ConvTranspose's size is stride*(out-1) + output_padding + extent - pads; the rows the
     * last window never reached (at most stride-1 of them) come back as output_padding. */
    int64_t opad[NN_WIN_MAX];
    for (int i = 0; i < win.nsp; i++) {
      int64_t ext = (win.kernel[i] - 1) * win.dilation[i] + 1;
      opad[i] = win.in[i] + win.pad_begin[i] + win.pad_end[i] - ext -
                win.stride[i] * (win.out[i] - 1);
      if (opad[i] < 0 || opad[i] >= win.stride[i])
        return kiln_errf(e, KILN_ERR_INTERNAL, "conv gradient: output_padding %lld out of range",
                         (long long)opad[i]);
    }
    int nid;
    KILN_TRY(grad_op1(gc, KILN_OP_ConvTranspose, (int[]){dy[0], n->in[1]}, 2, &dx[0], &nid, e));
    KILN_TRY(set_geometry(gc, nid, &win, group, e));
    KILN_TRY(ir_set_attr_ints(grad_graph(gc), nid, "output_padding", opad, win.nsp, e));
  }
  if (wants[1]) {
    int nid;
    KILN_TRY(grad_op1(gc, KILN_OP_ConvGradWeight, (int[]){n->in[0], dy[0]}, 2, &dx[1], &nid, e));
    KILN_TRY(set_geometry(gc, nid, &win, group, e));
  }
  if (n->n_in > 2 && wants[2]) KILN_TRY(conv_bias_grad(gc, dy[0], &dx[2], e));
  return KILN_OK;
}

/* y = ConvTranspose(x, W, b): the transpose of a Conv from y's space to x's, so
 * dX = Conv(dY, W) and dW = ConvGradWeight(dY, X) with the same geometry. */
static kiln_code g_conv_transpose(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                                  const bool *wants, kiln_err *e) {
  const kiln_value *x = grad_val(gc, n->in[0]), *w = grad_val(gc, n->in[1]);
  int64_t kernel[NN_WIN_MAX];
  weight_kernel(w, kernel);
  nn_window win;
  KILN_TRY(nn_window_transpose(n, &x->shape, x->name, kernel, &win, e));
  int64_t group = ir_attr_int(n, "group");
  for (int i = 0; i < win.nsp; i++) {
    /* The Conv over dY must find exactly x's positions: no negative pads (an output_shape
     * larger than the full result) and output_padding below the stride. */
    int64_t ext = (win.kernel[i] - 1) * win.dilation[i] + 1;
    int64_t span = win.out[i] + win.pad_begin[i] + win.pad_end[i] - ext;
    if (win.pad_begin[i] < 0 || win.pad_end[i] < 0 || span < 0 ||
        span / win.stride[i] + 1 != win.in[i])
      return kiln_errf(e, KILN_ERR_UNSUPPORTED,
                       "no gradient for a ConvTranspose whose output_padding/output_shape pads "
                       "spatial dimension %d beyond one stride",
                       i);
  }
  /* the geometry seen from y's side: a Conv over y has y's sizes as input */
  nn_window fw = win;
  for (int i = 0; i < win.nsp; i++) {
    fw.in[i] = win.out[i];
    fw.out[i] = win.in[i];
  }
  if (wants[0]) {
    int nid;
    KILN_TRY(grad_op1(gc, KILN_OP_Conv, (int[]){dy[0], n->in[1]}, 2, &dx[0], &nid, e));
    KILN_TRY(set_geometry(gc, nid, &fw, group, e));
  }
  if (wants[1]) {
    int nid;
    KILN_TRY(grad_op1(gc, KILN_OP_ConvGradWeight, (int[]){dy[0], n->in[0]}, 2, &dx[1], &nid, e));
    KILN_TRY(set_geometry(gc, nid, &fw, group, e));
  }
  if (n->n_in > 2 && wants[2]) KILN_TRY(conv_bias_grad(gc, dy[0], &dx[2], e));
  return KILN_OK;
}

/* Gradients of a batch-statistics BatchNorm: BatchNormGrad(X, scale, mean, invstd, dY[, Y]).
 * `mean`/`invstd` are the forward's saved statistics, or -1 to recompute them with a
 * BatchNormTrain node over the same inputs.  `y` >= 0: the forward's ReLU output (a
 * BatchNormTrain with activation=relu), which masks dY. */
static kiln_code bn_batch_grad(kiln_grad_ctx *gc, const kiln_node *n, int mean, int invstd,
                               int dy, int y, int *dx, const bool *wants, kiln_err *e) {
  if (mean < 0 || invstd < 0) {
    int outs[3], nid;
    KILN_TRY(grad_node(gc, KILN_OP_BatchNormTrain, n->in, 5, outs, 3, &nid, e));
    kiln_graph *g = grad_graph(gc);
    KILN_TRY(ir_set_attr_float(g, nid, "epsilon", ir_attr_float(n, "epsilon"), e));
    /* only mean and invstd are read: no running update, so a single value per channel is
     * allowed as in the forward */
    KILN_TRY(ir_set_attr_int(g, nid, "unbiased", 0, e));
    mean = outs[1];
    invstd = outs[2];
  }
  int outs[3];
  KILN_TRY(grad_node(gc, KILN_OP_BatchNormGrad, (int[]){n->in[0], n->in[1], mean, invstd, dy, y},
                     y >= 0 ? 6 : 5, outs, 3, NULL, e));
  for (int i = 0; i < 3; i++)
    if (wants[i]) dx[i] = outs[i];
  return KILN_OK;
}

/* Saved statistics are not differentiated through (nothing reads them but the backward);
 * the running statistics are state, not part of the loss. */
static kiln_code no_stat_grads(const kiln_node *n, const int *dy, kiln_err *e) {
  for (int o = 1; o < n->n_out && o < 3; o++)
    if (dy[o] >= 0)
      return kiln_errf(e, KILN_ERR_UNSUPPORTED,
                       "the loss depends on output %d (a batch statistic) of the BatchNorm; only "
                       "Y is differentiated",
                       o);
  return KILN_OK;
}

static kiln_code g_bn_train(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                            const bool *wants, kiln_err *e) {
  KILN_TRY(no_stat_grads(n, dy, e));
  if (dy[0] < 0) return KILN_OK;
  int mean = n->n_out > 1 ? n->out[1] : -1, invstd = n->n_out > 2 ? n->out[2] : -1;
  int y = !strcmp(ir_attr_str(n, "activation"), "relu") ? n->out[0] : -1;
  return bn_batch_grad(gc, n, mean, invstd, dy[0], y, dx, wants, e);
}

/* Whether a BatchNormalization node normalizes with batch statistics by its own
 * attributes (as runtime/ref/norm.c decides, without the runtime's training flag). */
static bool bn_uses_batch_stats(const kiln_node *n) {
  if (n->opset >= 14) return ir_attr_int(n, "training_mode") != 0;
  if (n->opset < 7 && ir_attr_int(n, "is_test") != 0) return false;
  for (int o = 1; o < n->n_out; o++)
    if (n->out[o] >= 0) return true;
  return false;
}

/* y = scale * (x - mean) / sqrt(var + eps) + B with constant mean and var:
 *   dX = dY * scale / sqrt(var + eps)
 *   dScale = sum dY * (x - mean) / sqrt(var + eps)
 *   dB = sum dY
 * with parameters broadcast as (C, 1, ...) (or as (C, D1, ...) for the per-activation
 * form of opsets < 9, whose sums run over the batch axis only). */
static kiln_code bn_const_grad(kiln_grad_ctx *gc, const kiln_node *n, int dy, int *dx,
                               const bool *wants, kiln_err *e) {
  /* copies: adding nodes and values moves g->values */
  const kiln_shape xs = grad_val(gc, n->in[0])->shape, ss = grad_val(gc, n->in[1])->shape;
  const kiln_shape bs = grad_val(gc, n->in[2])->shape;
  int rank = xs.rank;
  bool per_channel = ss.rank == 1 && ss.d[0] == xs.d[1];
  kiln_shape ps; /* the broadcastable parameter shape */
  ps.rank = rank - 1;
  ps.d[0] = xs.d[1];
  for (int i = 1; i < rank - 1; i++) ps.d[i] = per_channel ? 1 : xs.d[i + 1];
  int64_t axes[KILN_MAX_RANK];
  int n_axes = 0;
  axes[n_axes++] = 0;
  if (per_channel)
    for (int i = 2; i < rank; i++) axes[n_axes++] = i;

  int eps, ve, sd;
  KILN_TRY(grad_const_f32(gc, (float)ir_attr_float(n, "epsilon"), &eps, e));
  KILN_TRY(grad_op1(gc, KILN_OP_Add, (int[]){n->in[4], eps}, 2, &ve, NULL, e));
  KILN_TRY(grad_op1(gc, KILN_OP_Sqrt, (int[]){ve}, 1, &sd, NULL, e));
  KILN_TRY(grad_infer_new(gc, e));
  if (wants[0]) {
    int k, kr;
    KILN_TRY(grad_op1(gc, KILN_OP_Div, (int[]){n->in[1], sd}, 2, &k, NULL, e));
    KILN_TRY(grad_infer_new(gc, e));
    KILN_TRY(grad_reshape(gc, k, &ps, &kr, e));
    KILN_TRY(grad_op1(gc, KILN_OP_Mul, (int[]){dy, kr}, 2, &dx[0], NULL, e));
  }
  if (wants[1]) {
    int mr, sdr, xm, xn, t, s;
    KILN_TRY(grad_reshape(gc, n->in[3], &ps, &mr, e));
    KILN_TRY(grad_reshape(gc, sd, &ps, &sdr, e));
    KILN_TRY(grad_op1(gc, KILN_OP_Sub, (int[]){n->in[0], mr}, 2, &xm, NULL, e));
    KILN_TRY(grad_op1(gc, KILN_OP_Div, (int[]){xm, sdr}, 2, &xn, NULL, e));
    KILN_TRY(grad_op1(gc, KILN_OP_Mul, (int[]){dy, xn}, 2, &t, NULL, e));
    KILN_TRY(reduce_sum(gc, t, axes, n_axes, &s, e));
    KILN_TRY(grad_infer_new(gc, e));
    KILN_TRY(grad_reshape(gc, s, &ss, &dx[1], e));
  }
  if (wants[2]) {
    int s;
    KILN_TRY(reduce_sum(gc, dy, axes, n_axes, &s, e));
    KILN_TRY(grad_infer_new(gc, e));
    KILN_TRY(grad_reshape(gc, s, &bs, &dx[2], e));
  }
  return KILN_OK;
}

static kiln_code g_batchnorm(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                             const bool *wants, kiln_err *e) {
  KILN_TRY(no_stat_grads(n, dy, e));
  if (dy[0] < 0) return KILN_OK;
  if (!bn_uses_batch_stats(n)) return bn_const_grad(gc, n, dy[0], dx, wants, e);
  const kiln_value *x = grad_val(gc, n->in[0]), *scale = grad_val(gc, n->in[1]);
  if (scale->shape.rank != 1 || scale->shape.d[0] != x->shape.d[1])
    return kiln_errf(e, KILN_ERR_UNSUPPORTED,
                     "no gradient for the per-activation (spatial=0) training form");
  /* the opset < 14 saved statistics are a variance, not an inverse deviation: recompute */
  return bn_batch_grad(gc, n, -1, -1, dy[0], -1, dx, wants, e);
}

void grad_register_nn(kiln_grad_fn *table) {
  table[KILN_OP_Conv] = g_conv;
  table[KILN_OP_ConvTranspose] = g_conv_transpose;
  table[KILN_OP_BatchNormalization] = g_batchnorm;
  table[KILN_OP_BatchNormTrain] = g_bn_train;
}
