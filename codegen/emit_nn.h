/* emit_nn.h — the nn family's emitters are split over emit_conv.c, emit_pool.c and
 * emit_norm.c; each registers its own ops, and cg_register_nn (emit_nn.c) calls them all.
 * Also the few IR helpers they share. */
#ifndef KILN_CODEGEN_EMIT_NN_H
#define KILN_CODEGEN_EMIT_NN_H

#include "codegen/emit.h"

void cg_register_conv(kiln_emit_fn *table);
void cg_register_pool(kiln_emit_fn *table);
void cg_register_norm(kiln_emit_fn *table);

/* A stack slot in the entry block (promoted to registers by mem2reg). */
LLVMValueRef nn_alloca(cg_kernel *k, LLVMTypeRef ty, const char *name);
/* a * c and a + c for a constant c, folding the trivial cases. */
LLVMValueRef nn_mulc(cg_kernel *k, LLVMValueRef a, int64_t c);
LLVMValueRef nn_addc(cg_kernel *k, LLVMValueRef a, int64_t c);
/* The tiles [lo, hi) of a kernel as a loop over items [lo*per, min(hi*per, total)). */
LLVMValueRef nn_items_begin(cg_kernel *k, cg_loop *l, int64_t per, int64_t total);
/* sum of base[i] for i in [0, len), in double, in a fixed order: 8 interleaved partial sums
 * (vectorized), combined lane by lane, then the tail.  With `mean` (a double), sums
 * (base[i] - mean)^2 instead. */
LLVMValueRef nn_sum_f64(cg_kernel *k, LLVMValueRef base, LLVMValueRef off, int64_t len,
                        LLVMValueRef mean);

#endif
