/* gemm_gen.h — pointwise (1x1) convolutions as packed GEMM micro-kernels, the convolution
 * generator's (conv_gen.h) path for the bottleneck 1x1 convolutions that its direct kernel
 * runs far below peak.
 *
 * What it computes is cg_emit_conv's (conv_gen.h) for a geometry with 1x1 kernels, no
 * padding, no input transform, no output placement, one group and constant weights, any
 * stride: per image n, with p the flattened output pixel and X(n, ic, p) the input pixel it
 * reads (p itself at stride 1; subsampled through a compile-time offset table otherwise),
 *
 *   acc(oc, p) = sum over ic in order (one FMA each, from 0) of W(oc, ic) * X(n, ic, p)
 *   Y(n, oc, p) = act(((acc + bias) * scale + shift) + R(n, oc, p))     (conv_gen's epilogue)
 *
 * How (the GotoBLAS/BLIS blocking): the weights are repacked at compile time into panels of
 * MR output channels ([ic][MR] per panel, so that one step of the micro-kernel reads MR
 * adjacent floats).  A tile is (image, block of MC output channels, block of NC pixels).  Per
 * chunk of KC input channels it copies its pixels of X into a stack buffer as NR-column
 * strips ([strip][ic][NR]: the micro-kernel reads it contiguously, the strip stays in L1 while
 * every channel panel of the tile (in L2) passes over it; pixel tails are zero-filled, stride
 * > 1 gathers there).  The micro-kernel keeps MR x NR/V accumulators in vector registers
 * (6 x 2 vectors of 8 with AVX2, 12 x 2 of 16 with AVX-512), one broadcast weight and NR/V
 * input vectors per input channel, explicit llvm.fma.  Between chunks the partial sums wait in
 * a second stack buffer (an exact float round trip, so the sum is one FMA chain whatever KC);
 * the epilogue runs once, on the last chunk, and is the only write to Y.  Every output element
 * therefore gets the same instruction sequence whatever the blocking or the thread count. */
#ifndef KILN_CODEGEN_GEMM_GEN_H
#define KILN_CODEGEN_GEMM_GEN_H

#include "codegen/conv_gen.h"

/* Whether cg_gemm_conv_emit takes this convolution: a checked geometry (conv_gen's
 * check_geom passed) with 1x1 kernels, no padding or input transform, no output placement,
 * groups == 1, constant weights and a non-empty output. */
bool cg_gemm_conv_applicable(kiln_emit_ctx *cx, const cg_conv_geom *geom,
                             const cg_conv_weights *w, const cg_conv_epilogue *epi);

/* Emits the convolution as one kernel (same contract as cg_emit_conv: Y may share the
 * residual's memory, not X's or the weights').  Errors: out of memory. */
kiln_code cg_gemm_conv_emit(kiln_emit_ctx *cx, const char *label, const cg_conv_geom *geom,
                            const cg_conv_weights *w, const cg_conv_epilogue *epi, int x_buf,
                            int y_buf, kiln_err *e);

#endif
