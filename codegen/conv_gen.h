/* conv_gen.h — the convolution generator: direct NC(D)HW convolution kernels with a fused
 * per-output epilogue, shared by the Conv/ConvTranspose emitters and by kiln-domain fused
 * ops (Conv+bias+activation, Conv+BN+residual Add+ReLU, Upsample+Conv+BN+ReLU).
 *
 * What it computes, for every output element (n, oc, od, oh, ow) of Y (N, OC, OD, OH, OW):
 *
 *   acc = sum over ic in the group of oc, then kd, kh, kw (in that order, one fused
 *         multiply-add each, starting from 0) of  W(g, oc, ic, tap) * Xe(n, c, id, ih, iw)
 *   v   = acc + bias[oc]                   (epilogue.bias_buf, optional)
 *   v   = v * scale[oc] + shift[oc]        (scale_buf / shift_buf, each optional)
 *   v   = v + R[n, oc, od, oh, ow]         (residual_buf, optional; same shape as Y)
 *   Y   = act(v)                           (none, relu, clip, leaky_relu, sigmoid)
 *
 * where Xe is X seen through an optional per-dim input transform (nearest upsampling by an
 * integer factor, or zero insertion as ConvTranspose needs) and then zero-padded by
 * pad_b/pad_e; position (od, oh, ow) reads Xe at o*stride + k*dilation - pad_b.
 *
 * Every output element is computed by the same instruction sequence whatever the tiling, so
 * results are bitwise identical for any thread count.
 *
 * How: when X needs padding, a transform, or a W stride, a first kernel copies it into a
 * scratch buffer (zero borders, W-stride phases split apart so that every tap reads
 * contiguous columns; dims with a 1-tap kernel are subsampled there).  The main kernel tiles
 * over (n, group, od, block of output rows, block of output channels); each tile computes a
 * register block of OCB channels x RB rows x NV vectors of output columns with explicit
 * vectors (8 wide, 16 with AVX-512), looping over input channels and kernel rows with the
 * kernel columns unrolled, then applies the epilogue and stores.  Constant weights are
 * repacked at compile time so that the OCB weights of one tap are adjacent. */
#ifndef KILN_CODEGEN_CONV_GEN_H
#define KILN_CODEGEN_CONV_GEN_H

#include "codegen/emit.h"

/* Spatial dims are always three (D, H, W); 1-D and 2-D convolutions put size-1 identity dims
 * first (in = k = stride = dil = out = 1, pads 0), as nn_window_3d does. */
typedef enum cg_in_transform {
  CG_IN_PLAIN = 0,   /* Xe = X */
  CG_IN_NEAREST,     /* Xe[i] = X[i / factor]: nearest upsampling, size in * factor */
  CG_IN_ZERO_INSERT, /* Xe[i * factor] = X[i], zeros between: size (in - 1) * factor + 1 */
} cg_in_transform;

#define CG_MAX_WPH 8 /* column phases of one kernel at most */

typedef struct cg_conv_geom {
  int64_t N, C, OC, groups;      /* C and OC divisible by groups */
  int64_t in[3];                 /* X spatial sizes (before the input transform) */
  cg_in_transform xform[3];
  int64_t xfactor[3];            /* the transform's factor (>= 1) */
  int64_t k[3], stride[3], dil[3];
  int64_t pad_b[3], pad_e[3];    /* may be negative (crop); with no positive pad, no transform
                                  * and unit W stride, X is read in place at the crop's offset */
  int64_t out[3];                /* Y spatial sizes: must equal the window arithmetic */
  /* Output placement (all zero: none, Y is (N, OC, out...)).  Otherwise Y is (N, OC, ydims...)
   * and output position o of dim d is stored at o * ostride[d] + ooff[d]: e.g. one phase of an
   * upsampling convolution writes every s-th element.  A placed output takes no residual. */
  int64_t ostride[3], ooff[3], ydims[3];
  /* Column phases (wph >= 2; 0 or 1: none): one kernel computes wph convolutions that share X
   * and differ only along W, where phase ph uses kernel columns [wph_lo[ph], wph_hi[ph]) (its
   * taps keep their positions in the k[2]-wide window, so pad_b[2] is the window's) and its own
   * weights (cg_conv_weights.ph_stride apart).  Output column o of phase ph is stored at Y
   * column o * wph + ph (needs ostride[2] == wph and ooff[2] == 0; columns at or past ydims[2],
   * which must be at most out[2] * wph, are dropped).  The phases' neighbouring outputs are
   * interleaved in registers and stored as whole vectors, where separate phase kernels would
   * each store every wph-th element of every line of Y: the column phases of a
   * nearest-upsampling convolution (emit_fused.c). */
  int64_t wph;
  int64_t wph_lo[CG_MAX_WPH], wph_hi[CG_MAX_WPH];
} cg_conv_geom;

/* Where weight (g, oc, ic, tap) lives in its buffer: oc and ic are local to group g, tap is
 * the row-major index over (kd, kh, kw).  Element offset:
 *   off + g*g_stride + oc*oc_stride + ic*ic_stride + tap*tap_stride
 * ONNX Conv weights (OC, C/groups, kD, kH, kW) are cg_conv_weights_oihw(); ConvTranspose's
 * (C, OC/groups, k...) read flipped make a conv too (see emit_conv.c). */
typedef struct cg_conv_weights {
  int buf;
  const float *data; /* the buffer's contents when constant (lets the generator repack), or NULL */
  int64_t off, g_stride, oc_stride, ic_stride, tap_stride;
  /* When any is nonzero: the strides of one step of kd, kh, kw, replacing tap * tap_stride
   * (e.g. the taps of one output phase of a strided ConvTranspose, a sub-kernel of W). */
  int64_t tap_strides[3];
  int64_t ph_stride; /* with column phases (cg_conv_geom.wph): phase ph's weights are at
                      * + ph * ph_stride (each phase a whole k-wide kernel; the taps outside
                      * the phase's range are never read) */
} cg_conv_weights;

typedef enum cg_act {
  CG_ACT_NONE = 0,
  CG_ACT_RELU,       /* x < 0 ? 0 : x (keeps NaN, like the reference Relu) */
  CG_ACT_CLIP,       /* min(max(x, a), b), as the reference Clip */
  CG_ACT_LEAKY_RELU, /* x < 0 ? a * x : x */
  CG_ACT_SIGMOID,    /* 1 / (1 + exp(-x)) */
} cg_act;

/* Buffers of float32 data; -1 = absent. */
typedef struct cg_conv_epilogue {
  int bias_buf;     /* [OC] */
  int scale_buf;    /* [OC] */
  int shift_buf;    /* [OC] */
  int residual_buf; /* shaped like Y */
  cg_act act;
  float act_a, act_b; /* CLIP: min, max; LEAKY_RELU: alpha */
} cg_conv_epilogue;

/* An epilogue that does nothing (all buffers -1, no activation). */
cg_conv_epilogue cg_conv_epilogue_none(void);
/* The epilogue's activation applied to a vector v (as the kernels of conv_gen and gemm_gen
 * apply it). */
LLVMValueRef cg_conv_activate(cg_kernel *k, const cg_conv_epilogue *epi, LLVMValueRef v);

/* The geometry of a node with Conv's attributes (strides, dilations, pads, auto_pad, group;
 * X = input 0, W = input 1 in ONNX Conv layout), e.g. Conv or a fused op built on it. */
kiln_code cg_conv_geom_from_node(const kiln_graph *g, const kiln_node *n, cg_conv_geom *geom,
                                 kiln_err *e);

/* The layout of ONNX Conv weights (OC, C/groups, k...) for `geom`. */
cg_conv_weights cg_conv_weights_oihw(const cg_conv_geom *geom, int buf, const float *data);

/* Emits the kernels (an optional input-preparation copy, then the convolution with its
 * epilogue) as steps of the current node.  x_buf holds X (N, C, in...), y_buf receives Y
 * (N, OC, out...).  Y must not share memory with X or the weights; it may share the residual's
 * (each element reads its residual just before its own store).  `label` names the kernels
 * (e.g. "conv").  Errors: inconsistent geometry (KILN_ERR_INVALID), out of memory.
 *
 * Example, Conv + bias + ReLU from a node with Conv's attributes:
 *   cg_conv_geom geom;
 *   KILN_TRY(cg_conv_geom_from_node(g, n, &geom, e));
 *   const kiln_tensor *wc = ir_in_const(g, n, 1);
 *   cg_conv_weights w = cg_conv_weights_oihw(&geom, cg_buf_value(cx, n->in[1]),
 *                                            wc ? wc->data : NULL);
 *   cg_conv_epilogue epi = cg_conv_epilogue_none();
 *   epi.bias_buf = cg_buf_value(cx, n->in[2]);
 *   epi.act = CG_ACT_RELU;
 *   return cg_emit_conv(cx, "conv_relu", &geom, &w, &epi, cg_buf_value(cx, n->in[0]),
 *                       cg_buf_value(cx, n->out[0]), e);
 * A BatchNormalization folded in goes to scale/shift (scale = gamma / sqrt(var + eps),
 * shift = beta - mean * scale, as constant buffers from cg_buf_const); an Upsample in front
 * sets xform[d] = CG_IN_NEAREST, xfactor[d] = the scale, with in[] the pre-upsample sizes. */
kiln_code cg_emit_conv(kiln_emit_ctx *cx, const char *label, const cg_conv_geom *geom,
                       const cg_conv_weights *w, const cg_conv_epilogue *epi, int x_buf,
                       int y_buf, kiln_err *e);

#endif
