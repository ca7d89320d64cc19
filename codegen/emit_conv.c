/* emit_conv.c — emitters of Conv and ConvTranspose, both on the convolution generator
 * (conv_gen.h).  ConvTranspose is the convolution of the zero-inserted input with the
 * flipped, channel-transposed kernel. */
#include "codegen/conv_gen.h"
#include "codegen/emit_nn.h"
#include "ir/ops/nn_window.h"

static int opt_in(const kiln_node *n, int i) { return n->n_in > i ? n->in[i] : -1; }

static kiln_code emit_Conv(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                           kiln_err *e) {
  cg_conv_geom geom;
  KILN_TRY(cg_conv_geom_from_node(g, n, &geom, e));
  const kiln_tensor *wc = ir_in_const(g, n, 1);
  cg_conv_weights w = cg_conv_weights_oihw(&geom, cg_buf_value(cx, n->in[1]),
                                           wc ? (const float *)wc->data : NULL);
  cg_conv_epilogue epi = cg_conv_epilogue_none();
  if (opt_in(n, 2) >= 0) epi.bias_buf = cg_buf_value(cx, n->in[2]);
  return cg_emit_conv(cx, "conv", &geom, &w, &epi, cg_buf_value(cx, n->in[0]),
                      cg_buf_value(cx, n->out[0]), e);
}

/* y[o] = sum over i, k with o = i*stride + k*dil - pad_b of x[i] w[k]: a stride-1
 * convolution of x with stride-1 zeros inserted, padded by ext-1-pad_b, and the flipped
 * kernel.  W is (C, OC/group, k...). */
static kiln_code emit_ConvTranspose(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                    kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0), *wv = ir_in(g, n, 1), *y = ir_out(g, n, 0);
  int64_t kernel[NN_WIN_MAX];
  for (int i = 2; i < wv->shape.rank; i++) kernel[i - 2] = wv->shape.d[i];
  nn_window win;
  KILN_TRY(nn_window_transpose(n, &x->shape, x->name, kernel, &win, e));
  nn_window t = nn_window_3d(&win);
  cg_conv_geom geom = {.N = x->shape.d[0], .C = x->shape.d[1], .OC = y->shape.d[1],
                       .groups = ir_attr_int(n, "group")};
  for (int d = 0; d < 3; d++) {
    int64_t ext = (t.kernel[d] - 1) * t.dilation[d] + 1;
    int64_t eff = (t.in[d] - 1) * t.stride[d] + 1;
    geom.in[d] = t.in[d];
    geom.xform[d] = t.stride[d] > 1 ? CG_IN_ZERO_INSERT : CG_IN_PLAIN;
    geom.xfactor[d] = t.stride[d];
    geom.k[d] = t.kernel[d];
    geom.stride[d] = 1;
    geom.dil[d] = t.dilation[d];
    geom.pad_b[d] = ext - 1 - t.pad_begin[d];
    geom.pad_e[d] = t.out[d] - 1 + ext - eff - geom.pad_b[d];
    geom.out[d] = t.out[d];
  }
  int64_t kk = t.kernel[0] * t.kernel[1] * t.kernel[2];
  int64_t cg = geom.C / geom.groups, mg = geom.OC / geom.groups;
  const kiln_tensor *wc = ir_in_const(g, n, 1);
  cg_conv_weights w = {.buf = cg_buf_value(cx, n->in[1]),
                       .data = wc ? (const float *)wc->data : NULL,
                       .off = kk - 1, .g_stride = cg * mg * kk, .oc_stride = kk,
                       .ic_stride = mg * kk, .tap_stride = -1};
  cg_conv_epilogue epi = cg_conv_epilogue_none();
  if (opt_in(n, 2) >= 0) epi.bias_buf = cg_buf_value(cx, n->in[2]);
  return cg_emit_conv(cx, "convtranspose", &geom, &w, &epi, cg_buf_value(cx, n->in[0]),
                      cg_buf_value(cx, n->out[0]), e);
}

void cg_register_conv(kiln_emit_fn *table) {
  table[KILN_OP_Conv] = emit_Conv;
  table[KILN_OP_ConvTranspose] = emit_ConvTranspose;
}
