/* conv.c — op definitions of Conv and ConvTranspose (1-D, 2-D, 3-D, grouped). */
#include "ir/ops/common.h"
#include "ir/ops/nn_window.h"

static const kiln_attr_spec conv_attrs[] = {
    A_STR("auto_pad", "NOTSET"), A_INTS("dilations"), A_INT("group", 1),
    A_INTS("kernel_shape"),      A_INTS("pads"),      A_INTS("strides"),
};

static const kiln_attr_spec conv_transpose_attrs[] = {
    A_STR("auto_pad", "NOTSET"), A_INTS("dilations"), A_INT("group", 1),
    A_INTS("kernel_shape"),      A_INTS("output_padding"), A_INTS("output_shape"),
    A_INTS("pads"),              A_INTS("strides"),
};

/* Checks X and W (same rank, float) and the optional kernel_shape attribute against W's
 * spatial dims; returns the kernel sizes. */
static kiln_code conv_operands(const kiln_graph *g, const kiln_node *n, int64_t *kernel,
                               kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_F32), 3, 2 + NN_WIN_MAX, e));
  const kiln_value *x = ir_in(g, n, 0);
  KILN_TRY(ir_check_input(g, n, 1, KILN_DT(KILN_F32), x->shape.rank, x->shape.rank, e));
  const kiln_value *w = ir_in(g, n, 1);
  int nsp = x->shape.rank - 2;
  const int64_t *ks;
  int64_t n_ks = ir_attr_ints(n, "kernel_shape", &ks);
  if (ks && n_ks != nsp)
    return kiln_errf(e, KILN_ERR_SHAPE, "attribute 'kernel_shape' has %lld values; expected %d",
                     (long long)n_ks, nsp);
  for (int i = 0; i < nsp; i++) {
    kernel[i] = w->shape.d[2 + i];
    if (ks && ks[i] != kernel[i]) {
      char buf[160];
      return kiln_errf(e, KILN_ERR_SHAPE,
                       "attribute 'kernel_shape' disagrees with weight '%s' of shape %s", w->name,
                       kiln_shape_str(&w->shape, buf, sizeof buf));
    }
  }
  int64_t group = ir_attr_int(n, "group");
  if (group < 1 || group > KILN_MAX_DIM)
    return kiln_errf(e, KILN_ERR_SHAPE, "group %lld must be positive", (long long)group);
  return KILN_OK;
}

static kiln_code check_bias(const kiln_graph *g, const kiln_node *n, int64_t channels,
                            kiln_err *e) {
  if (!ir_in(g, n, 2)) return KILN_OK;
  KILN_TRY(ir_check_input(g, n, 2, KILN_DT(KILN_F32), 1, 1, e));
  const kiln_value *b = ir_in(g, n, 2);
  if (b->shape.d[0] != channels)
    return kiln_errf(e, KILN_ERR_SHAPE, "bias '%s' has %lld values; the output has %lld channels",
                     b->name, (long long)b->shape.d[0], (long long)channels);
  return KILN_OK;
}

static kiln_code infer_conv(kiln_graph *g, kiln_node *n, kiln_err *e) {
  int64_t kernel[NN_WIN_MAX];
  KILN_TRY(conv_operands(g, n, kernel, e));
  const kiln_value *x = ir_in(g, n, 0), *w = ir_in(g, n, 1);
  int64_t group = ir_attr_int(n, "group");
  int64_t c = x->shape.d[1], m = w->shape.d[0];
  char bx[160], bw[160];
  int64_t cg;
  /* W is (M, C/group, k...). */
  if (!kiln_mul_ok(w->shape.d[1], group, &cg) || cg != c)
    return kiln_errf(e, KILN_ERR_SHAPE,
                     "input '%s' %s has %lld channels but weight '%s' %s takes %lld per group x "
                     "%lld groups",
                     x->name, kiln_shape_str(&x->shape, bx, sizeof bx), (long long)c, w->name,
                     kiln_shape_str(&w->shape, bw, sizeof bw), (long long)w->shape.d[1],
                     (long long)group);
  if (m % group != 0)
    return kiln_errf(e, KILN_ERR_SHAPE, "weight '%s' has %lld output channels, not divisible by "
                     "group %lld", w->name, (long long)m, (long long)group);
  KILN_TRY(check_bias(g, n, m, e));
  nn_window win;
  KILN_TRY(nn_window_forward(n, &x->shape, x->name, kernel, false, &win, e));
  kiln_shape s = x->shape;
  s.d[1] = m;
  for (int i = 0; i < win.nsp; i++) s.d[2 + i] = win.out[i];
  return ir_set_output(g, n, 0, KILN_F32, &s, e);
}

static kiln_code infer_conv_transpose(kiln_graph *g, kiln_node *n, kiln_err *e) {
  int64_t kernel[NN_WIN_MAX];
  KILN_TRY(conv_operands(g, n, kernel, e));
  const kiln_value *x = ir_in(g, n, 0), *w = ir_in(g, n, 1);
  int64_t group = ir_attr_int(n, "group");
  int64_t c = x->shape.d[1];
  char bx[160], bw[160];
  /* W is (C, M/group, k...). */
  if (w->shape.d[0] != c || c % group != 0)
    return kiln_errf(e, KILN_ERR_SHAPE,
                     "input '%s' %s has %lld channels but weight '%s' %s takes %lld in %lld "
                     "groups",
                     x->name, kiln_shape_str(&x->shape, bx, sizeof bx), (long long)c, w->name,
                     kiln_shape_str(&w->shape, bw, sizeof bw), (long long)w->shape.d[0],
                     (long long)group);
  int64_t m;
  if (!kiln_mul_ok(w->shape.d[1], group, &m) || m > KILN_MAX_DIM)
    return kiln_errf(e, KILN_ERR_LIMIT, "too many output channels");
  KILN_TRY(check_bias(g, n, m, e));
  nn_window win;
  KILN_TRY(nn_window_transpose(n, &x->shape, x->name, kernel, &win, e));
  kiln_shape s = x->shape;
  s.d[1] = m;
  for (int i = 0; i < win.nsp; i++) s.d[2 + i] = win.out[i];
  return ir_set_output(g, n, 0, KILN_F32, &s, e);
}

static int64_t kernel_volume(const kiln_value *w) {
  int64_t v = 1;
  for (int i = 2; i < w->shape.rank; i++) v *= w->shape.d[i];
  return v;
}

/* MACs = output elements x (C_in / group) x kernel volume (bias adds not counted). */
static int64_t macs_conv(const kiln_graph *g, const kiln_node *n) {
  const kiln_value *y = ir_out(g, n, 0), *w = ir_in(g, n, 1);
  int64_t numel;
  if (!y || !y->typed || !w || !w->typed || !kiln_shape_numel(&y->shape, &numel)) return 0;
  return numel * w->shape.d[1] * kernel_volume(w);
}

/* MACs = input elements x (C_out / group) x kernel volume: each input element scatters one
 * kernel's worth of products into every output channel of its group. */
static int64_t macs_conv_transpose(const kiln_graph *g, const kiln_node *n) {
  const kiln_value *x = ir_in(g, n, 0), *w = ir_in(g, n, 1);
  int64_t numel;
  if (!x || !x->typed || !w || !w->typed || !kiln_shape_numel(&x->shape, &numel)) return 0;
  return numel * w->shape.d[1] * kernel_volume(w);
}

const kiln_op_def kiln_opdef_Conv = {
    .name = "Conv", .domain = "", .min_in = 2, .max_in = 3, .min_out = 1, .max_out = 1,
    .attrs = conv_attrs, .n_attrs = NELEM(conv_attrs), .infer = infer_conv, .macs = macs_conv,
    .doc = "N-D convolution (cross-correlation) with groups, strides, pads, dilations, bias"};

const kiln_op_def kiln_opdef_ConvTranspose = {
    .name = "ConvTranspose", .domain = "", .min_in = 2, .max_in = 3, .min_out = 1, .max_out = 1,
    .attrs = conv_transpose_attrs, .n_attrs = NELEM(conv_transpose_attrs),
    .infer = infer_conv_transpose, .macs = macs_conv_transpose,
    .doc = "N-D transposed convolution (gradient of Conv w.r.t. its input), with bias"};
