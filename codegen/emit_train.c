/* emit_train.c — emitters of the train op family (see codegen/emit.h): kiln.NLLLossGrad.
 *
 * NLLLossGrad writes zeros everywhere but at each element's label.  For reduction "mean" a
 * first single-tile kernel sums the applied weights in double in the reference's order into
 * scratch; the main kernel is tiled over (n, block of d1.. positions), each tile zeroing its
 * [C, block] part of the output and then writing the label entries, each computed as the
 * reference does (-w * dL in double, divided by the sum for mean, rounded once), so results
 * are bitwise equal to the reference for any thread count.  A label outside [0, C) that is
 * not ignored (an error in the reference) leaves its gradient at zero. */
#include <string.h>

#include "codegen/emit.h"

typedef LLVMValueRef V;

#define NLL_TILE_ELEMS 16384

/* Whether label t is in range and not ignored. */
static V label_active(cg_kernel *k, V t, bool has_ii, int64_t ii, int64_t C) {
  LLVMBuilderRef b = k->b;
  V ok = LLVMBuildAnd(b, LLVMBuildICmp(b, LLVMIntSGE, t, cg_i64(k, 0), ""),
                      LLVMBuildICmp(b, LLVMIntSLT, t, cg_i64(k, C), ""), "");
  if (has_ii) ok = LLVMBuildAnd(b, ok, LLVMBuildICmp(b, LLVMIntNE, t, cg_i64(k, ii), ""), "");
  return ok;
}

static V load_label(cg_kernel *k, kiln_dtype dt, V T, V pos) {
  V t = cg_load(k, cg_dtype(k, dt), T, pos);
  return dt == KILN_I64 ? t : LLVMBuildSExt(k->b, t, k->t->i64, "");
}

static kiln_code emit_NLLLossGrad(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                  kiln_err *e) {
  const kiln_value *labels = ir_in(g, n, 1), *w = ir_in(g, n, 2), *out = ir_out(g, n, 0);
  int64_t N = out->shape.d[0], C = out->shape.d[1], D = 1;
  for (int i = 2; i < out->shape.rank; i++) D *= out->shape.d[i];
  if (N * C * D == 0) return KILN_OK;
  bool has_ii = ir_attr_has(n, "ignore_index");
  int64_t ii = has_ii ? ir_attr_int(n, "ignore_index") : 0;
  const char *red = ir_attr_str(n, "reduction");
  bool none = !strcmp(red, "none"), mean = !strcmp(red, "mean");
  int lab = cg_buf_value(cx, n->in[1]), wbuf = w ? cg_buf_value(cx, n->in[2]) : -1;
  int wsum_buf = -1;
  LLVMTypeRef f32, f64;

  if (mean) { /* the applied weight sum, in the reference's order */
    wsum_buf = cg_buf_scratch(cx, sizeof(double), e);
    if (wsum_buf < 0) return e->code ? e->code : KILN_ERR_NOMEM;
    cg_kernel k;
    KILN_TRY(cg_kernel_begin(cx, &k, "nll_grad_wsum", w ? 3 : 2, e));
    f32 = k.t->f32, f64 = k.t->f64;
    V T = cg_arg(&k, 0), S = cg_arg(&k, 1);
    cg_store(&k, LLVMConstReal(f64, 0), S, cg_i64(&k, 0));
    cg_loop lp;
    V pos = cg_loop_begin(&k, &lp, cg_i64(&k, 0), cg_i64(&k, N * D), NULL, "p");
    V t = load_label(&k, labels->dtype, T, pos);
    cg_if act;
    cg_if_begin(&k, &act, label_active(&k, t, has_ii, ii, C));
    V wt = w ? LLVMBuildFPExt(k.b, cg_load(&k, f32, cg_arg(&k, 2), t), f64, "")
             : LLVMConstReal(f64, 1);
    V s = cg_load(&k, f64, S, cg_i64(&k, 0));
    cg_store(&k, LLVMBuildFAdd(k.b, s, wt, ""), S, cg_i64(&k, 0));
    cg_if_end(&k, &act);
    cg_loop_end(&k, &lp);
    int bufs[3] = {lab, wsum_buf, wbuf};
    KILN_TRY(cg_kernel_end(cx, &k, 1, bufs, e));
  }

  int64_t bd = C * D <= NLL_TILE_ELEMS ? D : (NLL_TILE_ELEMS / C > 0 ? NLL_TILE_ELEMS / C : 1);
  int64_t nb = (D + bd - 1) / bd;
  int bufs[5] = {cg_buf_value(cx, n->in[0]), lab, cg_buf_value(cx, n->out[0]), -1, -1};
  int n_bufs = 3, w_arg = -1, s_arg = -1;
  if (w) w_arg = n_bufs, bufs[n_bufs++] = wbuf;
  if (mean) s_arg = n_bufs, bufs[n_bufs++] = wsum_buf;
  cg_kernel kk;
  cg_kernel *k = &kk;
  KILN_TRY(cg_kernel_begin(cx, k, "nll_grad", n_bufs, e));
  LLVMBuilderRef b = k->b;
  f32 = k->t->f32, f64 = k->t->f64;
  V DL = cg_arg(k, 0), T = cg_arg(k, 1), Y = cg_arg(k, 2);
  cg_loop lt, lc, ld, lp;
  V tile = cg_loop_begin(k, &lt, k->lo, k->hi, NULL, "tile");
  V ni = LLVMBuildSDiv(b, tile, cg_i64(k, nb), "");
  V d_lo = cg_mul(k, LLVMBuildSRem(b, tile, cg_i64(k, nb), ""), cg_i64(k, bd));
  V d_hi = cg_min(k, cg_add(k, d_lo, cg_i64(k, bd)), cg_i64(k, D));
  V row0 = cg_mul(k, ni, cg_i64(k, C * D)); /* out[n, 0, 0] */
  V c = cg_loop_begin(k, &lc, cg_i64(k, 0), cg_i64(k, C), NULL, "c");
  V cbase = cg_add(k, row0, cg_mul(k, c, cg_i64(k, D)));
  V d = cg_loop_begin(k, &ld, d_lo, d_hi, NULL, "d");
  cg_store(k, LLVMConstReal(f32, 0), Y, cg_add(k, cbase, d));
  cg_loop_end(k, &ld);
  cg_loop_end(k, &lc);
  V p = cg_loop_begin(k, &lp, d_lo, d_hi, NULL, "dp");
  V pos = cg_add(k, cg_mul(k, ni, cg_i64(k, D)), p);
  V t = load_label(k, labels->dtype, T, pos);
  cg_if act;
  cg_if_begin(k, &act, label_active(k, t, has_ii, ii, C));
  V wt = w ? LLVMBuildFPExt(b, cg_load(k, f32, cg_arg(k, w_arg), t), f64, "")
           : LLVMConstReal(f64, 1);
  V dl = LLVMBuildFPExt(b, cg_load(k, f32, DL, none ? pos : cg_i64(k, 0)), f64, "");
  V gv = LLVMBuildFMul(b, LLVMBuildFNeg(b, wt, ""), dl, "");
  if (mean) gv = LLVMBuildFDiv(b, gv, cg_load(k, f64, cg_arg(k, s_arg), cg_i64(k, 0)), "");
  V at = cg_add(k, cg_add(k, row0, cg_mul(k, t, cg_i64(k, D))), p); /* out[n, t, d] */
  cg_store(k, LLVMBuildFPTrunc(b, gv, f32, ""), Y, at);
  cg_if_end(k, &act);
  cg_loop_end(k, &lp);
  cg_loop_end(k, &lt);
  return cg_kernel_end(cx, k, N * nb, bufs, e);
}

void cg_register_train(kiln_emit_fn *table) { table[KILN_OP_NLLLossGrad] = emit_NLLLossGrad; }
