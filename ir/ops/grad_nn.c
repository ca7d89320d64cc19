/* grad_nn.c — op definitions of the kiln-domain gradient ops of convolution and
 * BatchNormalization: ConvGradWeight, BatchNormTrain, BatchNormGrad (docs/ops-kiln.md). */
#include <string.h>

#include "ir/ops/common.h"
#include "ir/ops/nn_window.h"

/* The attributes of the Conv the weight gradient belongs to.  The autodiff rule always
 * writes explicit pads; auto_pad is accepted so the op reads like a Conv. */
static const kiln_attr_spec conv_grad_weight_attrs[] = {
    A_STR("auto_pad", "NOTSET"), A_INTS("dilations"), A_INT("group", 1),
    A_REQ_INTS("kernel_shape"),  A_INTS("pads"),      A_INTS("strides"),
};

static const kiln_attr_spec bn_train_attrs[] = {
    A_FLOAT("epsilon", 1e-5),
    /* ONNX's convention: running = momentum * running + (1 - momentum) * batch statistic.
     * PyTorch's momentum m corresponds to 1 - m (PyTorch's default 0.1 is 0.9 here). */
    A_FLOAT("momentum", 0.9),
    /* 1 (PyTorch): the running variance is updated with the unbiased batch variance
     * (divided by count - 1); 0 (ONNX's training-mode BatchNormalization): the biased one.
     * Normalization always uses the biased variance. */
    A_INT("unbiased", 1),
    /* "relu": Y is the rectified normalized value (passes/fuse_train_bn.c fuses the Relu that
     * read the BatchNorm's output); "none": Y is the normalized value. */
    A_STR("activation", "none"),
};

static kiln_code infer_conv_grad_weight(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_F32), 3, 2 + NN_WIN_MAX, e));
  const kiln_value *x = ir_in(g, n, 0);
  KILN_TRY(ir_check_input(g, n, 1, KILN_DT(KILN_F32), x->shape.rank, x->shape.rank, e));
  const kiln_value *dy = ir_in(g, n, 1);
  int nsp = x->shape.rank - 2;
  const int64_t *ks;
  int64_t n_ks = ir_attr_ints(n, "kernel_shape", &ks);
  if (!ks || n_ks != nsp)
    return kiln_errf(e, KILN_ERR_SHAPE, "attribute 'kernel_shape' has %lld values; expected %d",
                     (long long)n_ks, nsp);
  int64_t group = ir_attr_int(n, "group");
  int64_t c = x->shape.d[1], m = dy->shape.d[1];
  char bx[160], by[160];
  if (group < 1 || c % group != 0 || m % group != 0)
    return kiln_errf(e, KILN_ERR_SHAPE,
                     "group %lld does not divide the %lld input channels of '%s' and the %lld "
                     "output channels of '%s'",
                     (long long)group, (long long)c, x->name, (long long)m, dy->name);
  nn_window win;
  KILN_TRY(nn_window_forward(n, &x->shape, x->name, ks, false, &win, e));
  bool same = dy->shape.d[0] == x->shape.d[0];
  for (int i = 0; i < nsp; i++) same = same && dy->shape.d[2 + i] == win.out[i];
  if (!same)
    return kiln_errf(e, KILN_ERR_SHAPE,
                     "output gradient '%s' %s does not have the shape of the convolution of '%s' "
                     "%s",
                     dy->name, kiln_shape_str(&dy->shape, by, sizeof by), x->name,
                     kiln_shape_str(&x->shape, bx, sizeof bx));
  kiln_shape s = x->shape;
  s.d[0] = m;
  s.d[1] = c / group;
  for (int i = 0; i < nsp; i++) s.d[2 + i] = ks[i];
  return ir_set_output(g, n, 0, KILN_F32, &s, e);
}

/* MACs = output-gradient elements x (C / group) x kernel volume, as the forward Conv. */
static int64_t macs_conv_grad_weight(const kiln_graph *g, const kiln_node *n) {
  const kiln_value *dy = ir_in(g, n, 1), *dw = ir_out(g, n, 0);
  int64_t numel, kvol = 1;
  if (!dy || !dy->typed || !dw || !dw->typed || !kiln_shape_numel(&dy->shape, &numel)) return 0;
  for (int i = 2; i < dw->shape.rank; i++) kvol *= dw->shape.d[i];
  return numel * dw->shape.d[1] * kvol;
}

/* Checks that inputs [first, last] are float vectors of one value per channel of input 0. */
static kiln_code per_channel_inputs(const kiln_graph *g, const kiln_node *n, int first, int last,
                                    const char *const *names, kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0);
  for (int i = first; i <= last; i++) {
    KILN_TRY(ir_check_input(g, n, i, KILN_DT(KILN_F32), 1, 1, e));
    const kiln_value *p = ir_in(g, n, i);
    if (p->shape.d[0] != x->shape.d[1])
      return kiln_errf(e, KILN_ERR_SHAPE, "%s '%s' has %lld values; input '%s' has %lld channels",
                       names[i], p->name, (long long)p->shape.d[0], x->name,
                       (long long)x->shape.d[1]);
  }
  return KILN_OK;
}

static kiln_code infer_bn_train(kiln_graph *g, kiln_node *n, kiln_err *e) {
  static const char *const names[] = {"X", "scale", "B", "running_mean", "running_var"};
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_F32), 2, KILN_MAX_RANK, e));
  KILN_TRY(per_channel_inputs(g, n, 1, 4, names, e));
  const kiln_value *x = ir_in(g, n, 0);
  int64_t count = x->shape.d[0];
  for (int i = 2; i < x->shape.rank; i++) count *= x->shape.d[i];
  int64_t need = ir_attr_int(n, "unbiased") ? 2 : 1;
  if (count < need) {
    char buf[160];
    return kiln_errf(e, KILN_ERR_SHAPE,
                     "input '%s' %s has %lld value(s) per channel; batch statistics need at least "
                     "%lld",
                     x->name, kiln_shape_str(&x->shape, buf, sizeof buf), (long long)count,
                     (long long)need);
  }
  const char *act = ir_attr_str(n, "activation");
  if (strcmp(act, "none") && strcmp(act, "relu"))
    return kiln_errf(e, KILN_ERR_UNSUPPORTED, "activation '%s' is not one of none, relu", act);
  KILN_TRY(ir_set_output(g, n, 0, KILN_F32, &x->shape, e));
  kiln_shape c = kiln_shape_make(1, &x->shape.d[1]);
  for (int o = 1; o < n->n_out; o++) KILN_TRY(ir_set_output(g, n, o, KILN_F32, &c, e));
  return KILN_OK;
}

/* Input `i` is a float tensor of X's shape. */
static kiln_code same_shape_as_x(const kiln_graph *g, const kiln_node *n, int i, const char *what,
                                 kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0);
  KILN_TRY(ir_check_input(g, n, i, KILN_DT(KILN_F32), 0, KILN_MAX_RANK, e));
  const kiln_value *v = ir_in(g, n, i);
  if (!kiln_shape_eq(&v->shape, &x->shape)) {
    char bx[160], bv[160];
    return kiln_errf(e, KILN_ERR_SHAPE, "%s '%s' %s and X '%s' %s have different shapes", what,
                     v->name, kiln_shape_str(&v->shape, bv, sizeof bv), x->name,
                     kiln_shape_str(&x->shape, bx, sizeof bx));
  }
  return KILN_OK;
}

static kiln_code infer_bn_grad(kiln_graph *g, kiln_node *n, kiln_err *e) {
  static const char *const names[] = {"X", "scale", "saved_mean", "saved_invstd", "dY"};
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_F32), 2, KILN_MAX_RANK, e));
  KILN_TRY(per_channel_inputs(g, n, 1, 3, names, e));
  const kiln_value *x = ir_in(g, n, 0);
  KILN_TRY(same_shape_as_x(g, n, 4, "dY", e));
  if (ir_in(g, n, 5)) KILN_TRY(same_shape_as_x(g, n, 5, "Y", e));
  KILN_TRY(ir_set_output(g, n, 0, KILN_F32, &x->shape, e));
  kiln_shape c = kiln_shape_make(1, &x->shape.d[1]);
  for (int o = 1; o < n->n_out; o++) KILN_TRY(ir_set_output(g, n, o, KILN_F32, &c, e));
  return KILN_OK;
}

const kiln_op_def kiln_opdef_ConvGradWeight = {
    .name = "ConvGradWeight", .domain = "kiln", .min_in = 2, .max_in = 2, .min_out = 1,
    .max_out = 1, .attrs = conv_grad_weight_attrs, .n_attrs = NELEM(conv_grad_weight_attrs),
    .infer = infer_conv_grad_weight, .macs = macs_conv_grad_weight,
    .doc = "dW (M, C/group, k...) of a Conv from its input X (N, C, ...) and output gradient "
           "dY (N, M, ...); attributes of the Conv (kernel_shape, strides, pads, dilations, "
           "group)"};

const kiln_op_def kiln_opdef_BatchNormTrain = {
    .name = "BatchNormTrain", .domain = "kiln", .min_in = 5, .max_in = 5, .min_out = 1,
    .max_out = 5, .attrs = bn_train_attrs, .n_attrs = NELEM(bn_train_attrs),
    .infer = infer_bn_train, .nondiff_inputs = (1u << 3) | (1u << 4),
    .doc = "training-mode BatchNormalization: (X, scale, B, running_mean, running_var) -> (Y "
           "normalized with batch statistics, saved_mean, saved_invstd, new running_mean, new "
           "running_var); running = momentum*running + (1-momentum)*batch; activation=relu "
           "rectifies Y"};

const kiln_op_def kiln_opdef_BatchNormGrad = {
    .name = "BatchNormGrad", .domain = "kiln", .min_in = 5, .max_in = 6, .min_out = 1,
    .max_out = 3, .attrs = NULL, .n_attrs = 0, .infer = infer_bn_grad,
    .doc = "backward of BatchNormTrain: (X, scale, saved_mean, saved_invstd, dY[, Y]) -> (dX, "
           "dScale, dB), through the batch statistics; with Y (a ReLU's output), dY is read as "
           "0 where Y <= 0 (the ReLU's backward, applied on the fly)"};
