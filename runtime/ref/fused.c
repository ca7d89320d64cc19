/* fused.c — reference kernels of the kiln-domain fused ops.  Each one is written as the
 * unfused ops it replaces, run one after the other through their own reference kernels (a
 * fused node stands in for them as a "synthetic" node, ir/ops/fused.h), so the oracle of a
 * fusion is the very code that runs the unfused graph. */
#include <string.h>

#include "ir/ops/fused.h"
#include "runtime/ref/ref_util.h"

/* y = act(y) in place, with the activation's own reference kernel. */
static kiln_code apply_act(const kiln_ref_ctx *ctx, const kiln_node *n, kiln_tensor *y,
                           kiln_err *e) {
  kiln_fused_act_params a;
  KILN_TRY(kiln_fused_act_get(n, &a, e));
  if (a.act == KILN_FACT_NONE) return KILN_OK;
  kiln_synth_node s;
  kiln_fused_act_node(&a, &s);
  const kiln_tensor *in[1] = {y};
  kiln_tensor *out[1] = {y};
  return kiln_ref_kernel(s.n.op)(ctx, &s.n, in, out, e);
}

/* FusedConv: Conv (the node carries Conv's attributes), + Z, activation. */
kiln_code ref_FusedConv(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                        kiln_tensor *const *out, kiln_err *e) {
  const kiln_tensor *conv_in[3] = {in[0], in[1], n->n_in > 2 ? in[2] : NULL};
  KILN_TRY(ref_Conv(ctx, n, conv_in, out, e));
  const kiln_tensor *z = n->n_in > 3 ? in[3] : NULL;
  if (z) {
    float *y = F32(out[0]);
    for (int64_t i = 0; i < out[0]->numel; i++) y[i] += F32(z)[i];
  }
  return apply_act(ctx, n, out[0], e);
}

/* UpsampleConv: Resize (opset 13, scales [1, 1, s...]) into a temporary, then Conv, then the
 * activation. */
kiln_code ref_UpsampleConv(const kiln_ref_ctx *ctx, const kiln_node *n,
                           const kiln_tensor *const *in, kiln_tensor *const *out, kiln_err *e) {
  const kiln_tensor *x = in[0];
  kiln_upconv_params p;
  KILN_TRY(kiln_upconv_params_get(n, x->shape.rank, &p, e));
  kiln_synth_node rs;
  kiln_synth_init(&rs, KILN_OP_Resize, 13, 3);
  kiln_synth_str(&rs, "mode", p.linear ? "linear" : "nearest");
  kiln_synth_str(&rs, "coordinate_transformation_mode", p.coord);
  kiln_synth_str(&rs, "nearest_mode", p.nearest);
  kiln_tensor *scales = NULL, *u = NULL;
  kiln_shape us = x->shape;
  for (int d = 0; d < p.nsp; d++) us.d[2 + d] *= p.scale[d];
  kiln_code rc = kiln_tensor_new(KILN_F32, &(kiln_shape){.rank = 1, .d = {x->shape.rank}},
                                 &scales, e);
  if (!rc) rc = kiln_tensor_new(KILN_F32, &us, &u, e);
  if (!rc) {
    for (int d = 0; d < x->shape.rank; d++)
      F32(scales)[d] = d < 2 ? 1.0f : (float)p.scale[d - 2];
    kiln_ref_ctx rctx = {.g = NULL, .training = ctx ? ctx->training : false};
    const kiln_tensor *rin[3] = {x, NULL, scales};
    kiln_tensor *rout[1] = {u};
    rc = ref_Resize(&rctx, &rs.n, rin, rout, e);
  }
  if (!rc) {
    const kiln_tensor *conv_in[3] = {u, in[1], n->n_in > 2 ? in[2] : NULL};
    rc = ref_Conv(ctx, n, conv_in, out, e);
  }
  if (!rc) rc = apply_act(ctx, n, out[0], e);
  kiln_tensor_free(scales);
  kiln_tensor_free(u);
  return rc;
}

/* GapGemm: GlobalAveragePool, Flatten (the pooled [N, C, 1...] read as [N, C]), Gemm. */
kiln_code ref_GapGemm(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                      kiln_tensor *const *out, kiln_err *e) {
  const kiln_tensor *x = in[0];
  kiln_shape ps = x->shape;
  for (int d = 2; d < ps.rank; d++) ps.d[d] = 1;
  kiln_tensor *pooled = NULL;
  KILN_TRY(kiln_tensor_new(KILN_F32, &ps, &pooled, e));
  kiln_synth_node gap, gemm;
  kiln_synth_init(&gap, KILN_OP_GlobalAveragePool, 13, 1);
  const kiln_tensor *gin[1] = {x};
  kiln_tensor *gout[1] = {pooled};
  kiln_code rc = ref_GlobalAveragePool(ctx, &gap.n, gin, gout, e);
  if (!rc) {
    pooled->shape = kiln_shape_make(2, (int64_t[]){x->shape.d[0], x->shape.d[1]}); /* Flatten */
    const kiln_tensor *c = n->n_in > 2 ? in[2] : NULL;
    kiln_synth_init(&gemm, KILN_OP_Gemm, 13, c ? 3 : 2);
    kiln_synth_float(&gemm, "alpha", ir_attr_float(n, "alpha"));
    kiln_synth_float(&gemm, "beta", ir_attr_float(n, "beta"));
    gemm.attrs[gemm.n.n_attrs++] =
        (kiln_attr){.name = (char *)"transB", .kind = KILN_ATTR_INT, .i = ir_attr_int(n, "transB")};
    const kiln_tensor *min[3] = {pooled, in[1], c};
    rc = ref_Gemm(ctx, &gemm.n, min, out, e);
  }
  kiln_tensor_free(pooled);
  return rc;
}

/* FusedElementwise: the steps one after the other, each through its op's reference kernel
 * on tensors of the step's own (broadcast) shape. */
kiln_code ref_FusedElementwise(const kiln_ref_ctx *ctx, const kiln_node *n,
                               const kiln_tensor *const *in, kiln_tensor *const *out,
                               kiln_err *e) {
  kiln_ew_chain *c = kiln_malloc(sizeof *c);
  if (!c) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  kiln_code rc = kiln_ew_chain_get(n, n->n_in, c, e);
  kiln_tensor *res[KILN_EW_MAX_STEPS] = {0};
  for (int k = 0; k < c->n_steps && !rc; k++) {
    const kiln_ew_step *st = &c->step[k];
    const kiln_tensor *ops[KILN_EW_MAX_ARITY] = {0};
    for (int j = 0; j < st->arity; j++) {
      int o = st->operand[j];
      ops[j] = o < 0 ? NULL : o < n->n_in ? in[o] : res[o - n->n_in];
    }
    kiln_shape s = ops[0]->shape;
    if (st->op != KILN_OP_Clip && st->op != KILN_OP_PRelu)
      for (int j = 1; j < st->arity && !rc; j++) rc = ir_broadcast(&s, &ops[j]->shape, &s, e);
    if (!rc && k == c->n_steps - 1 && !kiln_shape_eq(&s, &out[0]->shape))
      rc = kiln_errf(e, KILN_ERR_SHAPE, "the chain's result does not have the output's shape");
    if (rc) break;
    kiln_tensor *y = k == c->n_steps - 1 ? out[0] : NULL;
    if (!y) {
      rc = kiln_tensor_new(KILN_F32, &s, &res[k], e);
      y = res[k];
    }
    if (rc) break;
    kiln_synth_node sn;
    kiln_ew_step_node(c, k, &sn);
    kiln_tensor *yo[1] = {y};
    rc = kiln_ref_kernel(st->op)(ctx, &sn.n, ops, yo, e);
    if (rc) kiln_err_prefix(e, "step %d (%s)", k, kiln_op_name(st->op));
  }
  for (int k = 0; k < KILN_EW_MAX_STEPS; k++) kiln_tensor_free(res[k]);
  kiln_free(c);
  return rc;
}
