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
 * How (the GotoBLAS/BLIS blocking):
 *  - X is packed as NR-pixel strips, each contiguous over the input channels (zeros past the
 *    last pixel; a strided convolution gathers its pixels there through a compile-time offset
 *    table), so the micro-kernel reads its input sequentially and X's row pitch causes no
 *    cache set conflicts.  With one block of output channels each GEMM tile packs its own
 *    pixels, chunk by chunk, into a stack buffer that stays in L2; with several, a first
 *    kernel packs all of X once into scratch ([image][pixel block][strip][ic][NR]) for them;
 *  - the GEMM tiles over (image, block of MC output channels, block of NC pixels).  The weights
 *    are repacked at compile time into panels of MR output channels ([ic][MR] per panel: one
 *    step of the micro-kernel reads MR adjacent floats).  Per chunk of KC input channels, every
 *    strip of the tile (KC x NR floats, in L1) meets every channel panel of the tile (MC x KC,
 *    in L2).  The micro-kernel keeps MR x NR/V accumulators in vector registers (6 x 2 vectors
 *    of 8 with AVX2, 12 x 2 of 16 with AVX-512): per input channel NR/V vector loads, MR
 *    broadcast weights and MR x NR/V llvm.fma.  Between chunks the partial sums wait in a
 *    stack buffer (an exact float round trip, so each sum is one FMA chain whatever KC); the
 *    epilogue runs once, on the last chunk, and is the only write to Y.
 * Every output element therefore gets the same instruction sequence whatever the blocking,
 * which the plan may adapt to the thread count: results are bitwise identical for any. */
#ifndef KILN_CODEGEN_GEMM_GEN_H
#define KILN_CODEGEN_GEMM_GEN_H

#include "codegen/conv_gen.h"

/* Whether cg_gemm_conv_emit takes this convolution: a checked geometry (conv_gen's
 * check_geom passed) with 1x1 kernels, no padding or input transform, no output placement,
 * groups == 1, constant weights and a non-empty output. */
bool cg_gemm_conv_applicable(kiln_emit_ctx *cx, const cg_conv_geom *geom,
                             const cg_conv_weights *w, const cg_conv_epilogue *epi);

/* Emits the convolution as one or two kernels (same contract as cg_emit_conv: Y may share the
 * residual's memory, not X's or the weights').  Errors: out of memory. */
kiln_code cg_gemm_conv_emit(kiln_emit_ctx *cx, const char *label, const cg_conv_geom *geom,
                            const cg_conv_weights *w, const cg_conv_epilogue *epi, int x_buf,
                            int y_buf, kiln_err *e);

#endif
