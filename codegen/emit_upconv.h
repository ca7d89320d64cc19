/* emit_upconv.h — what the upsample-convolution emitters share (codegen/emit_fused.c's
 * kiln.UpsampleConv, codegen/emit_upconv_grad.c's kiln.UpsampleConvGradInput): folding
 * weights known only at run time into the small kernels of a phase decomposition. */
#ifndef KILN_CODEGEN_EMIT_UPCONV_H
#define KILN_CODEGEN_EMIT_UPCONV_H

#include "codegen/emit.h"

/* A weight fold: `rows` rows of src_row weights each become rows of dst_row weights, where
 * dst[r*dst_row + t] = sum of src[r*src_row + src[j]] for j in [start[t], start[t+1]), added
 * in that order in float32 (0 when the range is empty). */
typedef struct cg_wfold {
  int64_t rows, src_row, dst_row;
  const int64_t *start; /* dst_row + 1 entries */
  const int64_t *src;   /* start[dst_row] entries */
} cg_wfold;

/* Emits the fold as a kernel step of the current node: src_buf -> dst_buf (dst_buf holds
 * rows * dst_row floats, e.g. scratch from cg_buf_scratch). */
kiln_code cg_emit_weight_fold(kiln_emit_ctx *cx, const char *label, const cg_wfold *f,
                              int src_buf, int dst_buf, kiln_err *e);

/* Registers kiln.UpsampleConvGradInput's emitter (called by cg_register_fused). */
void cg_register_upconv_grad(kiln_emit_fn *table);

#endif
