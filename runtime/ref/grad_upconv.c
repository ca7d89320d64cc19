/* grad_upconv.c — reference kernel of kiln.UpsampleConvGradInput: the ops it replaces, run
 * through their own reference kernels (ConvTranspose into the upsampled input's gradient,
 * then kiln.ResizeGrad), so that the oracle of the fusion is the unfused computation. */
#include <string.h>

#include "ir/ops/grad_upconv.h"
#include "runtime/ref/ref_util.h"

/* A node of `op` built on the stack with up to 8 attributes, as ir/ops/fused.h's synthetic
 * nodes (only the fields reference kernels read). */
typedef struct synth {
  kiln_node n;
  kiln_attr attrs[8];
  int ids[2];
} synth;

static void synth_init(synth *s, kiln_op op, int n_in) {
  memset(s, 0, sizeof *s);
  s->n.op = op;
  s->n.def = kiln_op_get(op);
  s->n.name = (char *)"";
  s->n.domain = (char *)"";
  s->n.opset = op == KILN_OP_ConvTranspose ? 17 : 1;
  s->n.n_in = n_in;
  s->n.n_out = 1;
  s->ids[0] = s->ids[1] = -1;
  s->n.in = s->ids;
  s->n.out = s->ids;
  s->n.attrs = s->attrs;
}

static void synth_ints(synth *s, const char *name, int64_t *v, int n) {
  s->attrs[s->n.n_attrs++] = (kiln_attr){.name = (char *)name, .kind = KILN_ATTR_INTS, .ints = v,
                                         .n = n};
}

static void synth_str(synth *s, const char *name, const char *v) {
  s->attrs[s->n.n_attrs++] = (kiln_attr){.name = (char *)name, .kind = KILN_ATTR_STRING,
                                         .s = (char *)v, .s_len = strlen(v)};
}

kiln_code ref_UpsampleConvGradInput(const kiln_ref_ctx *ctx, const kiln_node *n,
                                    const kiln_tensor *const *in, kiln_tensor *const *out,
                                    kiln_err *e) {
  const kiln_tensor *dy = in[0], *w = in[1];
  kiln_upconv_grad p;
  kiln_shape dxs;
  KILN_TRY(kiln_upconv_grad_get(n, &dy->shape, "dY", &w->shape, "W", &p, &dxs, e));
  int nsp = p.nsp, rank = dy->shape.rank;
  int64_t pads[2 * NN_WIN_MAX], strides[NN_WIN_MAX], group = p.group, ishape[KILN_MAX_RANK];
  double scales[KILN_MAX_RANK];
  for (int d = 0; d < nsp; d++) {
    pads[d] = p.win.pad_begin[d], pads[nsp + d] = p.win.pad_end[d];
    strides[d] = 1;
  }
  kiln_shape us = dxs;
  for (int d = 0; d < rank; d++) {
    ishape[d] = dxs.d[d];
    scales[d] = d < 2 ? 1.0 : (double)p.scale[d - 2];
    if (d >= 2) us.d[d] = p.win.in[d - 2];
  }
  synth ct, rg;
  synth_init(&ct, KILN_OP_ConvTranspose, 2);
  synth_ints(&ct, "pads", pads, 2 * nsp);
  synth_ints(&ct, "strides", strides, nsp);
  synth_ints(&ct, "dilations", p.win.dilation, nsp);
  ct.attrs[ct.n.n_attrs++] = (kiln_attr){.name = (char *)"group", .kind = KILN_ATTR_INT,
                                         .i = group};
  synth_init(&rg, KILN_OP_ResizeGrad, 1);
  synth_str(&rg, "mode", "nearest");
  synth_str(&rg, "coordinate_transformation_mode", ir_attr_str(n, "coordinate_transformation_mode"));
  synth_str(&rg, "nearest_mode", ir_attr_str(n, "nearest_mode"));
  synth_ints(&rg, "input_shape", ishape, rank);
  rg.attrs[rg.n.n_attrs++] = (kiln_attr){.name = (char *)"scales", .kind = KILN_ATTR_FLOATS,
                                         .floats = scales, .n = rank};
  kiln_tensor *du = NULL;
  kiln_code rc = kiln_tensor_new(KILN_F32, &us, &du, e);
  if (!rc) {
    const kiln_tensor *cin[3] = {dy, w, NULL};
    kiln_tensor *cout[1] = {du};
    rc = ref_ConvTranspose(ctx, &ct.n, cin, cout, e);
  }
  if (!rc) {
    const kiln_tensor *rin[1] = {du};
    rc = ref_ResizeGrad(ctx, &rg.n, rin, out, e);
  }
  kiln_tensor_free(du);
  return rc;
}
