/* gemm_gen.h — convolutions as packed GEMM micro-kernels, the convolution generator's
 * (conv_gen.h) path for the pointwise (1x1) convolutions of bottlenecks and for strided wider
 * kernels, which its direct kernel runs well below peak.
 *
 * What it computes is cg_emit_conv's (conv_gen.h) for a geometry with one group, no input
 * transform, no output placement and constant weights.  With K = C * kD*kH*kW rows r =
 * (ic, tap) and p the flattened output pixel, per image n:
 *
 *   acc(oc, p) = sum over r in order (one FMA each, from 0) of W(oc, ic, tap) * Xe(n, ic, p, tap)
 *   Y(n, oc, p) = act(((acc + bias) * scale + shift) + R(n, oc, p))     (conv_gen's epilogue)
 *
 * where Xe is the input element that tap reads for pixel p (p itself for a plain 1x1: stride
 * 1, no padding), 0 in the padding: the GEMM of the weights with X's im2col rows.
 *
 * How (the GotoBLAS/BLIS blocking):
 *  - X is packed as NR-pixel strips, each contiguous over the K rows (zeros past the last
 *    pixel; all but a plain 1x1 gather their pixels through a compile-time offset table per
 *    tap, -1 for padding), so the micro-kernel reads its input sequentially and X's row pitch
 *    causes no cache set conflicts.  With one block of output channels each GEMM tile packs
 *    its own pixels, chunk by chunk, into a stack buffer that stays in L2; with several, a
 *    first kernel packs all of X once into scratch ([image][pixel block][strip][r][NR]);
 *  - the GEMM tiles over (image, block of MC output channels, block of NC pixels).  The
 *    weights are repacked at compile time into panels of MR output channels ([r][MR] per
 *    panel: one step of the micro-kernel reads MR adjacent floats; chunk-major, so a tile
 *    streams its block sequentially).  Per chunk of KC rows, every channel panel of the tile
 *    (MR x KC floats, in L1) meets every strip of the tile (KC x NC, in L2), so the epilogue
 *    walks MR output rows at a time sequentially.  The micro-kernel keeps MR x NR/V
 *    accumulators in vector registers (6 x 2 vectors of 8 with AVX2, 12 x 2 of 16 with
 *    AVX-512): per row NR/V vector loads, MR broadcast weights and MR x NR/V llvm.fma.
 *    Between chunks the partial sums wait in a stack buffer (an exact float round trip, so
 *    each sum is one FMA chain whatever KC); the epilogue runs once, on the last chunk, and
 *    is the only write to Y.
 * Every output element therefore gets the same instruction sequence whatever the blocking,
 * which the plan may adapt to the thread count: results are bitwise identical for any. */
#ifndef KILN_CODEGEN_GEMM_GEN_H
#define KILN_CODEGEN_GEMM_GEN_H

#include "codegen/conv_gen.h"

/* Whether cg_gemm_conv_emit takes this convolution (where it is the faster of the two on Zen 3):
 * a checked geometry (conv_gen's check_geom passed) with one group, constant weights, no input
 * transform or output placement, a non-empty output, and either a 1x1 kernel (any stride or
 * padding) or a strided wider kernel over at least 32 input channels whose im2col rows stay
 * under 64 MiB. */
bool cg_gemm_conv_applicable(kiln_emit_ctx *cx, const cg_conv_geom *geom,
                             const cg_conv_weights *w, const cg_conv_epilogue *epi);

/* Emits the convolution as one or two kernels (same contract as cg_emit_conv: Y may share the
 * residual's memory, not X's or the weights').  Errors: out of memory. */
kiln_code cg_gemm_conv_emit(kiln_emit_ctx *cx, const char *label, const cg_conv_geom *geom,
                            const cg_conv_weights *w, const cg_conv_epilogue *epi, int x_buf,
                            int y_buf, kiln_err *e);

#endif
