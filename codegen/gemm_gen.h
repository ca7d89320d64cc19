/* gemm_gen.h — convolutions as packed GEMM micro-kernels, the convolution generator's
 * (conv_gen.h) path for the pointwise (1x1) convolutions of bottlenecks, for strided wider
 * kernels, and for stride-1 wider kernels whose output columns fill its direct kernel's
 * vectors poorly (small images: ResNet's 28, 14, 7 columns), which it runs well below peak.
 *
 * What it computes is cg_emit_conv's (conv_gen.h) for a geometry with one group, no input
 * transform and no output placement.  With K = C * kD*kH*kW rows r =
 * (ic, tap) and p the flattened output pixel, per image n:
 *
 *   acc(oc, p) = sum over r in order (one FMA each, from 0) of W(oc, ic, tap) * Xe(n, ic, p, tap)
 *   Y(n, oc, p) = act(((acc + bias) * scale + shift) + R(n, oc, p))     (conv_gen's epilogue)
 *
 * where Xe is the input element that tap reads for pixel p (p itself for a plain 1x1: stride
 * 1, no padding), 0 in the padding: the GEMM of the weights with X's im2col rows.
 *
 * How (the GotoBLAS/BLIS blocking):
 *  - X is packed as strips of NR pixels, each contiguous over the K rows, so the micro-kernel
 *    reads its input sequentially and X's row pitch causes no cache set conflicts.  All but a
 *    plain 1x1 read their pixels through a compile-time offset table per tap (-1 for padding):
 *    'same' stride-1 convolutions, where each tap reads its pixels' own offsets shifted, as
 *    contiguous loads masked by the table, others as gathers.  With one block of output
 *    channels each GEMM tile packs its own pixels, chunk by chunk, into a stack buffer that
 *    stays in L2; with several, a first kernel packs all of X once into scratch
 *    ([image][pixel block][strip][r][NR]);
 *  - the GEMM tiles over (image, block of MC output channels, block of NC pixels), small
 *    images of a batch several to a tile (each weight panel then meets the strips of each in
 *    turn while in L1: training's 4x4 maps, 8 images, 9.4 -> 7.2 ms on Zen 3).  The
 *    weights are repacked into panels of MR output channels (at compile time when constant,
 *    else by a first kernel on every run, as training graphs feed them: [r][MR] per
 *    panel: one step of the micro-kernel reads MR adjacent floats; chunk-major, so a tile
 *    streams its block sequentially, the next panel prefetched while one is in use).  Per
 *    chunk of KC rows, every channel panel of the tile (MR x KC floats, in L1) meets every
 *    strip of the tile (KC x NC, in L2).  Between chunks the partial sums wait in a stack
 *    buffer (an exact float round trip, so each sum is one FMA chain whatever KC); the
 *    epilogue runs once, on the last chunk, and is the only write to Y;
 *  - two micro-kernels, the plan taking the one its estimate of cycles (lanes left empty,
 *    FMA latency, loads) favours.  Vectors over pixels: MR x NV vectors of NR = NV*V pixels
 *    (6 x 2 vectors of 8 with AVX2, 12 x 2 of 16 with AVX-512), per row NV vector loads of X,
 *    MR broadcast weights and MR x NV FMAs; the epilogue stores whole vectors along Y's rows.
 *    Vectors over output channels, for small images where pixel vectors run partly empty
 *    (ResNet's 7x7 = 49 pixels: 3 strips of 16 and one of 1): NV vectors of MR = NV*V
 *    channels x NR pixels (2 x 8 channels x 4-6 pixels with AVX2, 2 x 16 x 8-12 with
 *    AVX-512, NR the count that wastes least on the last group), per row NV vector loads of
 *    a zero-padded weight panel, NR broadcast pixels and NV x NR FMAs; its epilogue takes the
 *    per-channel parameters as vectors and stores each lane to its channel's row of Y.
 * Every output element therefore gets the same FMA chain and the same epilogue operations (on
 * V-lane vectors) whatever the blocking or micro-kernel, which the plan may adapt to the
 * thread count and the image size: results are bitwise identical for any. */
#ifndef KILN_CODEGEN_GEMM_GEN_H
#define KILN_CODEGEN_GEMM_GEN_H

#include "codegen/conv_gen.h"

/* The micro-kernel (kiln_compile_opts.gemm_kernel, for tests; results are bitwise the same). */
enum {
  CG_GEMM_AUTO = 0, /* the plan's choice */
  CG_GEMM_PIXELS,   /* vectors over output pixels */
  CG_GEMM_CHANNELS, /* vectors over output channels */
};

/* Whether cg_gemm_conv_emit takes this convolution (where it is the faster of the two on Zen 3):
 * a checked geometry (conv_gen's check_geom passed) with one group, no input transform or
 * output placement, a non-empty output, and either a 1x1 kernel (any stride or
 * padding) or a wider kernel over at least 32 input channels whose im2col rows stay under
 * 64 MiB, strided or with more than 5% of the direct kernel's lanes along output columns
 * empty (a width that is not a multiple of the vector width). */
bool cg_gemm_conv_applicable(kiln_emit_ctx *cx, const cg_conv_geom *geom,
                             const cg_conv_weights *w, const cg_conv_epilogue *epi);

/* Emits the convolution as one or two kernels (same contract as cg_emit_conv: Y may share the
 * residual's memory, not X's or the weights').  Errors: out of memory. */
kiln_code cg_gemm_conv_emit(kiln_emit_ctx *cx, const char *label, const cg_conv_geom *geom,
                            const cg_conv_weights *w, const cg_conv_epilogue *epi, int x_buf,
                            int y_buf, kiln_err *e);

#endif
