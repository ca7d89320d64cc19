/* grad_upconv.h — kiln.UpsampleConvGradInput, the adjoint of nearest upsampling followed by a
 * stride-1 convolution (the input gradient of the SPN block Resize -> Conv, which
 * passes/fuse_train_upsample_conv.c forms from ConvTranspose -> kiln.ResizeGrad).  Its
 * attributes decoded once, for shape inference (ir/ops/grad_upconv.c), the reference kernel
 * (runtime/ref/grad_upconv.c), the emitter (codegen/emit_upconv_grad.c) and the pass.
 * docs/ops-kiln.md documents the op. */
#ifndef KILN_OPS_GRAD_UPCONV_H
#define KILN_OPS_GRAD_UPCONV_H

#include "ir/graph.h"
#include "ir/ops/nn_window.h"
#include "runtime/ref/resize_coords.h"

typedef struct kiln_upconv_grad {
  int nsp;                   /* spatial dims (1..3) */
  int64_t scale[NN_WIN_MAX]; /* integer nearest scale per spatial dim */
  int64_t group;
  kiln_coord_mode coord;     /* the resize's modes, as decoded; their index map is floor(o/s) */
  kiln_nearest_mode nearest;
  /* The forward convolution over the upsampled input: in = scale * dX's size, out = dY's. */
  nn_window win;
} kiln_upconv_grad;

/* Whether nearest resizing by integer scale s of an axis of `len` elements, with these modes,
 * reads element floor(o / s) at every upsampled position o (what the phase decompositions of
 * kiln.UpsampleConv and kiln.UpsampleConvGradInput assume). */
bool kiln_upconv_floor_map(kiln_coord_mode coord, kiln_nearest_mode nearest, int64_t s,
                           int64_t len);

/* Decodes node n (kiln.UpsampleConvGradInput) against its output gradient dY and weight W
 * shapes (named dy_name / w_name in errors) and returns dX's shape in *dx.  Errors: strides
 * other than 1, auto_pad, a mode other than nearest, an index map that is not floor(o / s),
 * scales, kernel_shape, group or channel counts that disagree, and a dY size that no input
 * size gives. */
kiln_code kiln_upconv_grad_get(const kiln_node *n, const kiln_shape *dy, const char *dy_name,
                               const kiln_shape *w, const char *w_name, kiln_upconv_grad *p,
                               kiln_shape *dx, kiln_err *e);

#endif
