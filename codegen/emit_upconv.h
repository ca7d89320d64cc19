/* emit_upconv.h — what the upsample-convolution emitters share (codegen/emit_fused.c's
 * kiln.UpsampleConv, codegen/emit_upconv_grad.c's kiln.UpsampleConvGradInput): folding
 * weights known only at run time into the small kernels of a phase decomposition. */
#ifndef KILN_CODEGEN_EMIT_UPCONV_H
#define KILN_CODEGEN_EMIT_UPCONV_H

#include "codegen/conv_gen.h"
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

/* Nearest upsampling of X (N, C, low...) by integer scales s (index map floor(o / s)), then a
 * stride-1 convolution (kernel k, dilations dil, leading pads pad_b, groups) giving Y (N, OC,
 * out...); 1-D and 2-D put identity dims first (s = k = dil = 1, pad 0, low = out = 1). */
typedef struct cg_upconv {
  int64_t N, C, OC, groups;
  int64_t low[3], s[3], k[3], dil[3], pad_b[3], out[3];
} cg_upconv;

/* Whether cg_emit_upconv_phases takes this geometry (scales >= 1, kernels of at most 64 taps
 * per dim). */
bool cg_upconv_phases_ok(const cg_upconv *u);

/* Emits it as phase convolutions over X (emit_upconv_phases.c), with the epilogue `epi`.
 * Constant weights `w` (OC, C/groups, k...) are summed at compile time; with w NULL a kernel
 * sums w_buf's at run time. */
kiln_code cg_emit_upconv_phases(kiln_emit_ctx *cx, const cg_upconv *u, const float *w,
                                int w_buf, const cg_conv_epilogue *epi, int x_buf,
                                int y_buf, kiln_err *e);

/* Registers kiln.UpsampleConvGradInput's emitter (called by cg_register_fused). */
void cg_register_upconv_grad(kiln_emit_fn *table);

#endif
