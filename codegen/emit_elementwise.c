/* emit_elementwise.c — emitters of the elementwise family: each op is only its
 * scalar body; cg_emit_map supplies the loops, broadcasting and tiling. */
#include "codegen/emit.h"

static LLVMValueRef body_identity(cg_kernel *k, const kiln_node *n, LLVMValueRef *in,
                                  const kiln_dtype *dt, void *user) {
  return in[0];
}

static LLVMValueRef body_relu(cg_kernel *k, const kiln_node *n, LLVMValueRef *in, const kiln_dtype *dt,
                              void *user) {
  if (dt[0] == KILN_F32) /* maxnum(x, 0) returns 0 for NaN; keep NaN like the reference: x > 0 ? x : 0 */
    return LLVMBuildSelect(k->b, LLVMBuildFCmp(k->b, LLVMRealUGT, in[0], cg_f32(k, 0), ""), in[0],
                           cg_f32(k, 0), "");
  LLVMValueRef zero = LLVMConstInt(LLVMTypeOf(in[0]), 0, 0);
  return LLVMBuildSelect(k->b, LLVMBuildICmp(k->b, LLVMIntSGT, in[0], zero, ""), in[0], zero, "");
}

static LLVMValueRef body_add(cg_kernel *k, const kiln_node *n, LLVMValueRef *in, const kiln_dtype *dt,
                             void *user) {
  return dt[0] == KILN_F32 ? LLVMBuildFAdd(k->b, in[0], in[1], "") : LLVMBuildAdd(k->b, in[0], in[1], "");
}

#define MAP_EMITTER(Name, body)                                                                    \
  static kiln_code emit_##Name(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,         \
                               kiln_err *e) {                                                      \
    return cg_emit_map(cx, g, n, body, NULL, e);                                                   \
  }

MAP_EMITTER(Identity, body_identity)
MAP_EMITTER(Relu, body_relu)
MAP_EMITTER(Add, body_add)

void cg_register_elementwise(kiln_emit_fn *table) {
  table[KILN_OP_Identity] = emit_Identity;
  table[KILN_OP_Relu] = emit_Relu;
  table[KILN_OP_Add] = emit_Add;
}
