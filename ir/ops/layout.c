/* layout.c — op definitions of the blocked-layout ops (ToBlocked, FromBlocked, BlockedConv) and
 * the data movers between plain and blocked layouts (ir/ops/layout.h). */
#include "ir/ops/layout.h"

#include "ir/ops/common.h"
#include "ir/ops/fused.h"
#include "ir/ops/nn_window.h"

kiln_code kiln_block_get(const kiln_node *n, int64_t *b, kiln_err *e) {
  *b = ir_attr_int(n, "block");
  if (*b < 1 || *b > KILN_BLOCK_MAX)
    return kiln_errf(e, KILN_ERR_INVALID, "attribute 'block' is %lld; expected 1..%d",
                     (long long)*b, KILN_BLOCK_MAX);
  return KILN_OK;
}

void kiln_block_act(const float *x, float *y, int64_t N, int64_t C, int64_t HW, int64_t b) {
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = 0; c < C; c++) {
      const float *src = x + (n * C + c) * HW;
      float *dst = y + (n * C + c / b * b) * HW + c % b;
      for (int64_t p = 0; p < HW; p++) dst[p * b] = src[p];
    }
}

void kiln_unblock_act(const float *x, float *y, int64_t N, int64_t C, int64_t HW, int64_t b) {
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = 0; c < C; c++) {
      const float *src = x + (n * C + c / b * b) * HW + c % b;
      float *dst = y + (n * C + c) * HW;
      for (int64_t p = 0; p < HW; p++) dst[p] = src[p * b];
    }
}

/* Offset of weight (oc, ic, k) in the blocked weights. */
static int64_t wb_off(int64_t oc, int64_t ic, int64_t k, int64_t IC, int64_t K, int64_t b) {
  return ((((oc / b) * (IC / b) + ic / b) * K + k) * b + ic % b) * b + oc % b;
}

void kiln_block_weights(const float *w, float *wb, int64_t OC, int64_t IC, int64_t K, int64_t b) {
  for (int64_t oc = 0; oc < OC; oc++)
    for (int64_t ic = 0; ic < IC; ic++)
      for (int64_t k = 0; k < K; k++) wb[wb_off(oc, ic, k, IC, K, b)] = w[(oc * IC + ic) * K + k];
}

void kiln_unblock_weights(const float *wb, float *w, int64_t OC, int64_t IC, int64_t K,
                          int64_t b) {
  for (int64_t oc = 0; oc < OC; oc++)
    for (int64_t ic = 0; ic < IC; ic++)
      for (int64_t k = 0; k < K; k++) w[(oc * IC + ic) * K + k] = wb[wb_off(oc, ic, k, IC, K, b)];
}

/* ---- shape inference ---- */

static kiln_code infer_to_blocked(kiln_graph *g, kiln_node *n, kiln_err *e) {
  int64_t b;
  KILN_TRY(kiln_block_get(n, &b, e));
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_F32), 4, 4, e));
  const kiln_value *x = ir_in(g, n, 0);
  if (x->shape.d[1] % b)
    return kiln_errf(e, KILN_ERR_SHAPE, "input '%s' has %lld channels, not a multiple of the "
                     "block %lld", x->name, (long long)x->shape.d[1], (long long)b);
  kiln_shape ys = {.rank = 5, .d = {x->shape.d[0], x->shape.d[1] / b, x->shape.d[2],
                                    x->shape.d[3], b}};
  return ir_set_output(g, n, 0, KILN_F32, &ys, e);
}

static kiln_code infer_from_blocked(kiln_graph *g, kiln_node *n, kiln_err *e) {
  int64_t b;
  KILN_TRY(kiln_block_get(n, &b, e));
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_F32), 5, 5, e));
  const kiln_value *x = ir_in(g, n, 0);
  int64_t c;
  if (x->shape.d[4] != b || !kiln_mul_ok(x->shape.d[1], b, &c))
    return kiln_errf(e, KILN_ERR_SHAPE, "input '%s' has a last dimension of %lld; expected the "
                     "block %lld", x->name, (long long)x->shape.d[4], (long long)b);
  kiln_shape ys = {.rank = 4, .d = {x->shape.d[0], c, x->shape.d[2], x->shape.d[3]}};
  return ir_set_output(g, n, 0, KILN_F32, &ys, e);
}

static kiln_code infer_blocked_conv(kiln_graph *g, kiln_node *n, kiln_err *e) {
  int64_t b;
  KILN_TRY(kiln_block_get(n, &b, e));
  kiln_fused_act_params act;
  KILN_TRY(kiln_fused_act_get(n, &act, e));
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_F32), 5, 5, e));
  KILN_TRY(ir_check_input(g, n, 1, KILN_DT(KILN_F32), 6, 6, e));
  const kiln_value *x = ir_in(g, n, 0), *w = ir_in(g, n, 1);
  if (ir_attr_int(n, "group") != 1)
    return kiln_errf(e, KILN_ERR_UNSUPPORTED, "group %lld: a blocked convolution has one group",
                     (long long)ir_attr_int(n, "group"));
  if (x->shape.d[4] != b || w->shape.d[4] != b || w->shape.d[5] != b ||
      w->shape.d[1] != x->shape.d[1])
    return kiln_errf(e, KILN_ERR_SHAPE, "input '%s' and weight '%s' are not blocked by %lld "
                     "over the same %lld input channel blocks", x->name, w->name, (long long)b,
                     (long long)x->shape.d[1]);
  kiln_shape xs = {.rank = 4, .d = {x->shape.d[0], x->shape.d[1] * b, x->shape.d[2],
                                    x->shape.d[3]}};
  int64_t kernel[2] = {w->shape.d[2], w->shape.d[3]}, oc = w->shape.d[0] * b;
  const int64_t *ks;
  int64_t n_ks = ir_attr_ints(n, "kernel_shape", &ks);
  if (ks && (n_ks != 2 || ks[0] != kernel[0] || ks[1] != kernel[1]))
    return kiln_errf(e, KILN_ERR_SHAPE, "attribute 'kernel_shape' disagrees with weight '%s'",
                     w->name);
  nn_window win;
  KILN_TRY(nn_window_forward(n, &xs, x->name, kernel, false, &win, e));
  if (ir_in(g, n, 2)) {
    KILN_TRY(ir_check_input(g, n, 2, KILN_DT(KILN_F32), 1, 1, e));
    const kiln_value *bias = ir_in(g, n, 2);
    if (bias->shape.d[0] != oc)
      return kiln_errf(e, KILN_ERR_SHAPE, "bias '%s' has %lld values; the output has %lld "
                       "channels", bias->name, (long long)bias->shape.d[0], (long long)oc);
  }
  kiln_shape ys = {.rank = 5, .d = {x->shape.d[0], w->shape.d[0], win.out[0], win.out[1], b}};
  KILN_TRY(kiln_residual_check(g, n, &ys, e));
  return ir_set_output(g, n, 0, KILN_F32, &ys, e);
}

static int64_t macs_blocked_conv(const kiln_graph *g, const kiln_node *n) {
  const kiln_value *y = ir_out(g, n, 0), *w = ir_in(g, n, 1);
  int64_t numel;
  if (!y || !y->typed || !w || !w->typed || !kiln_shape_numel(&y->shape, &numel)) return 0;
  return numel * w->shape.d[1] * w->shape.d[2] * w->shape.d[3] * w->shape.d[4];
}

static const kiln_attr_spec block_attrs[] = {A_REQ_INT("block")};
static const kiln_attr_spec blocked_conv_attrs[] = {CONV_ATTRS, ACT_ATTRS,
                                                    A_INT("has_residual", 0), A_REQ_INT("block")};

const kiln_op_def kiln_opdef_ToBlocked = {
    .name = "ToBlocked", .domain = "kiln", .min_in = 1, .max_in = 1, .min_out = 1, .max_out = 1,
    .attrs = block_attrs, .n_attrs = NELEM(block_attrs), .infer = infer_to_blocked,
    .doc = "(N, C, H, W) -> (N, C/block, H, W, block): channels blocked for vector access"};

const kiln_op_def kiln_opdef_FromBlocked = {
    .name = "FromBlocked", .domain = "kiln", .min_in = 1, .max_in = 1, .min_out = 1,
    .max_out = 1, .attrs = block_attrs, .n_attrs = NELEM(block_attrs),
    .infer = infer_from_blocked,
    .doc = "(N, C/block, H, W, block) -> (N, C, H, W): back to the plain layout"};

const kiln_op_def kiln_opdef_BlockedConv = {
    .name = "BlockedConv", .domain = "kiln", .min_in = 2, .max_in = 4, .min_out = 1,
    .max_out = 1, .attrs = blocked_conv_attrs, .n_attrs = NELEM(blocked_conv_attrs),
    .infer = infer_blocked_conv, .macs = macs_blocked_conv, .flags = KILN_OPF_FUSED,
    .doc = "kiln.FusedConv on blocked tensors (NCHW<block>c), weights blocked to match"};
