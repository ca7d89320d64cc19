/* emit_optim.c — emitters of the optimizer ops: one vectorizable loop over the
 * parameter, reading each element's state before writing it (so the update is
 * also correct in place). */
#include "codegen/emit.h"

#define OPT_TILE 8192

/* Loads hyper[i] (a small constant-size input). */
static LLVMValueRef hyper(cg_kernel *k, LLVMValueRef h, int i) { return cg_load(k, k->t->f32, h, cg_i64(k, i)); }

static kiln_code emit_Adam(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n, kiln_err *e) {
  int64_t numel;
  kiln_shape_numel(&ir_in(g, n, 0)->shape, &numel);
  if (numel == 0) return KILN_OK;
  cg_kernel k;
  KILN_TRY(cg_kernel_begin(cx, &k, "adam", 8, e));
  LLVMBuilderRef b = k.b;
  LLVMValueRef p = cg_arg(&k, 0), gr = cg_arg(&k, 1), m = cg_arg(&k, 2), v = cg_arg(&k, 3), h = cg_arg(&k, 4);
  LLVMValueRef po = cg_arg(&k, 5), mo = cg_arg(&k, 6), vo = cg_arg(&k, 7);
  float b1 = (float)ir_attr_float(n, "beta1"), b2 = (float)ir_attr_float(n, "beta2");
  float eps = (float)ir_attr_float(n, "epsilon"), wd = (float)ir_attr_float(n, "weight_decay");
  bool decoupled = ir_attr_int(n, "decoupled") != 0;
  LLVMValueRef step = hyper(&k, h, 0), sbc2 = hyper(&k, h, 1), lrwd = hyper(&k, h, 2);
  LLVMValueRef lo = cg_mul(&k, k.lo, cg_i64(&k, OPT_TILE));
  LLVMValueRef hi = cg_min(&k, cg_mul(&k, k.hi, cg_i64(&k, OPT_TILE)), cg_i64(&k, numel));
  cg_loop l;
  LLVMValueRef i = cg_loop_begin(&k, &l, lo, hi, NULL, "i");
  LLVMTypeRef f = k.t->f32;
  LLVMValueRef pi = cg_load(&k, f, p, i), gi = cg_load(&k, f, gr, i);
  if (decoupled)
    pi = LLVMBuildFMul(b, pi, LLVMBuildFSub(b, cg_f32(&k, 1.0), lrwd, ""), "");
  else
    gi = LLVMBuildFAdd(b, gi, LLVMBuildFMul(b, cg_f32(&k, wd), pi, ""), "");
  LLVMValueRef mi = LLVMBuildFAdd(b, LLVMBuildFMul(b, cg_f32(&k, b1), cg_load(&k, f, m, i), ""),
                                  LLVMBuildFMul(b, cg_f32(&k, 1.0f - b1), gi, ""), "");
  LLVMValueRef vi = LLVMBuildFAdd(b, LLVMBuildFMul(b, cg_f32(&k, b2), cg_load(&k, f, v, i), ""),
                                  LLVMBuildFMul(b, LLVMBuildFMul(b, cg_f32(&k, 1.0f - b2), gi, ""), gi, ""), "");
  LLVMValueRef sq = cg_intrinsic(&k, "llvm.sqrt", &f, 1, &vi, 1);
  LLVMValueRef denom = LLVMBuildFAdd(b, LLVMBuildFDiv(b, sq, sbc2, ""), cg_f32(&k, eps), "");
  LLVMValueRef upd = LLVMBuildFMul(b, step, LLVMBuildFDiv(b, mi, denom, ""), "");
  cg_store(&k, LLVMBuildFSub(b, pi, upd, ""), po, i);
  cg_store(&k, mi, mo, i);
  cg_store(&k, vi, vo, i);
  cg_loop_end(&k, &l);
  int bufs[8] = {n->in[0], n->in[1], n->in[2], n->in[3], n->in[4], n->out[0], n->out[1], n->out[2]};
  return cg_kernel_end(cx, &k, (numel + OPT_TILE - 1) / OPT_TILE, bufs, e);
}

static kiln_code emit_SGD(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n, kiln_err *e) {
  int64_t numel;
  kiln_shape_numel(&ir_in(g, n, 0)->shape, &numel);
  if (numel == 0) return KILN_OK;
  cg_kernel k;
  KILN_TRY(cg_kernel_begin(cx, &k, "sgd", 6, e));
  LLVMBuilderRef b = k.b;
  LLVMTypeRef f = k.t->f32;
  LLVMValueRef p = cg_arg(&k, 0), gr = cg_arg(&k, 1), bu = cg_arg(&k, 2), lrp = cg_arg(&k, 3);
  LLVMValueRef po = cg_arg(&k, 4), bo = cg_arg(&k, 5);
  float mom = (float)ir_attr_float(n, "momentum"), wd = (float)ir_attr_float(n, "weight_decay");
  bool nesterov = ir_attr_int(n, "nesterov") != 0;
  LLVMValueRef lr = cg_load(&k, f, lrp, cg_i64(&k, 0));
  LLVMValueRef lo = cg_mul(&k, k.lo, cg_i64(&k, OPT_TILE));
  LLVMValueRef hi = cg_min(&k, cg_mul(&k, k.hi, cg_i64(&k, OPT_TILE)), cg_i64(&k, numel));
  cg_loop l;
  LLVMValueRef i = cg_loop_begin(&k, &l, lo, hi, NULL, "i");
  LLVMValueRef pi = cg_load(&k, f, p, i);
  LLVMValueRef gi = LLVMBuildFAdd(b, cg_load(&k, f, gr, i), LLVMBuildFMul(b, cg_f32(&k, wd), pi, ""), "");
  LLVMValueRef bi = LLVMBuildFAdd(b, LLVMBuildFMul(b, cg_f32(&k, mom), cg_load(&k, f, bu, i), ""), gi, "");
  LLVMValueRef d = nesterov ? LLVMBuildFAdd(b, gi, LLVMBuildFMul(b, cg_f32(&k, mom), bi, ""), "") : bi;
  cg_store(&k, LLVMBuildFSub(b, pi, LLVMBuildFMul(b, lr, d, ""), ""), po, i);
  cg_store(&k, bi, bo, i);
  cg_loop_end(&k, &l);
  int bufs[6] = {n->in[0], n->in[1], n->in[2], n->in[3], n->out[0], n->out[1]};
  return cg_kernel_end(cx, &k, (numel + OPT_TILE - 1) / OPT_TILE, bufs, e);
}

void cg_register_optim(kiln_emit_fn *table) {
  table[KILN_OP_Adam] = emit_Adam;
  table[KILN_OP_SGD] = emit_SGD;
}
