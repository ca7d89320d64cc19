/* emit_nn.c — emitters of the nn op family (see codegen/emit.h): convolutions in
 * emit_conv.c (on the generator of conv_gen.h), pools in emit_pool.c, normalizations in
 * emit_norm.c; and the IR helpers they share. */
#include "codegen/emit_nn.h"

void cg_register_nn(kiln_emit_fn *table) {
  cg_register_conv(table);
  cg_register_pool(table);
  cg_register_norm(table);
}

LLVMValueRef nn_alloca(cg_kernel *k, LLVMTypeRef ty, const char *name) {
  LLVMBuilderRef b2 = LLVMCreateBuilderInContext(k->ctx);
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(k->fn);
  LLVMValueRef first = LLVMGetFirstInstruction(entry);
  if (first)
    LLVMPositionBuilderBefore(b2, first);
  else
    LLVMPositionBuilderAtEnd(b2, entry);
  LLVMValueRef a = LLVMBuildAlloca(b2, ty, name);
  LLVMDisposeBuilder(b2);
  return a;
}

LLVMValueRef nn_mulc(cg_kernel *k, LLVMValueRef a, int64_t c) {
  return c == 1 ? a : c == 0 ? cg_i64(k, 0) : cg_mul(k, a, cg_i64(k, c));
}

LLVMValueRef nn_addc(cg_kernel *k, LLVMValueRef a, int64_t c) {
  return c == 0 ? a : cg_add(k, a, cg_i64(k, c));
}

LLVMValueRef nn_items_begin(cg_kernel *k, cg_loop *l, int64_t per, int64_t total) {
  LLVMValueRef lo = nn_mulc(k, k->lo, per);
  LLVMValueRef hi = cg_min(k, nn_mulc(k, k->hi, per), cg_i64(k, total));
  return cg_loop_begin(k, l, lo, hi, NULL, "item");
}

#define SUM_LANES 8

LLVMValueRef nn_sum_f64(cg_kernel *k, LLVMValueRef base, LLVMValueRef off, int64_t len,
                        LLVMValueRef mean) {
  LLVMBuilderRef b = k->b;
  LLVMTypeRef vf = LLVMVectorType(k->t->f32, SUM_LANES), vd = LLVMVectorType(k->t->f64, SUM_LANES);
  LLVMValueRef vmean = NULL;
  if (mean) {
    LLVMValueRef v = LLVMBuildInsertElement(b, LLVMGetPoison(vd), mean, cg_i32(k, 0), "");
    vmean = LLVMBuildShuffleVector(b, v, LLVMGetPoison(vd),
                                   LLVMConstNull(LLVMVectorType(k->t->i32, SUM_LANES)), "");
  }
  int64_t nvec = len / SUM_LANES;
  LLVMValueRef total = LLVMConstReal(k->t->f64, 0);
  if (nvec > 0) {
    LLVMValueRef acc = nn_alloca(k, vd, "vsum");
    LLVMBuildStore(b, LLVMConstNull(vd), acc);
    cg_loop l;
    LLVMValueRef i = cg_loop_begin(k, &l, cg_i64(k, 0), cg_i64(k, nvec), NULL, "v");
    LLVMValueRef p = cg_gep(k, k->t->f32, base, cg_add(k, off, nn_mulc(k, i, SUM_LANES)));
    LLVMValueRef x = LLVMBuildLoad2(b, vf, p, "");
    LLVMSetAlignment(x, 4);
    LLVMValueRef xd = LLVMBuildFPExt(b, x, vd, "");
    if (vmean) {
      xd = LLVMBuildFSub(b, xd, vmean, "");
      xd = LLVMBuildFMul(b, xd, xd, "");
    }
    LLVMBuildStore(b, LLVMBuildFAdd(b, LLVMBuildLoad2(b, vd, acc, ""), xd, ""), acc);
    cg_loop_end(k, &l);
    LLVMValueRef s = LLVMBuildLoad2(b, vd, acc, "");
    for (int j = 0; j < SUM_LANES; j++)
      total = LLVMBuildFAdd(b, total, LLVMBuildExtractElement(b, s, cg_i32(k, j), ""), "");
  }
  if (len % SUM_LANES) {
    LLVMValueRef acc = nn_alloca(k, k->t->f64, "sum");
    LLVMBuildStore(b, total, acc);
    cg_loop l;
    LLVMValueRef i = cg_loop_begin(k, &l, cg_i64(k, nvec * SUM_LANES), cg_i64(k, len), NULL, "t");
    LLVMValueRef x =
        LLVMBuildFPExt(b, cg_load(k, k->t->f32, base, cg_add(k, off, i)), k->t->f64, "");
    if (mean) {
      x = LLVMBuildFSub(b, x, mean, "");
      x = LLVMBuildFMul(b, x, x, "");
    }
    LLVMBuildStore(b, LLVMBuildFAdd(b, LLVMBuildLoad2(b, k->t->f64, acc, ""), x, ""), acc);
    cg_loop_end(k, &l);
    total = LLVMBuildLoad2(b, k->t->f64, acc, "");
  }
  return total;
}
