/* resize.h — the parameters of Resize/Upsample and Pad, decoded once from a node and its
 * constant inputs; shared by shape inference (ir/ops/resize.c) and the reference kernels. */
#ifndef KILN_OPS_RESIZE_H
#define KILN_OPS_RESIZE_H

#include "ir/graph.h"
#include "runtime/ref/resize_coords.h"

typedef enum kiln_resize_mode {
  KILN_RESIZE_NEAREST = 0,
  KILN_RESIZE_LINEAR,
  KILN_RESIZE_CUBIC,
} kiln_resize_mode;

typedef struct kiln_resize_params {
  kiln_resize_mode mode;
  kiln_coord_mode coord;
  kiln_nearest_mode nearest;
  double cubic_a;
  bool exclude_outside;
  double extrapolation_value;
  kiln_shape out;                    /* output shape */
  double scale[KILN_MAX_RANK];       /* per-axis scale used by the coordinate transform */
  double resized_len[KILN_MAX_RANK]; /* in_len * scale before flooring (see resize_coords.h) */
  double roi_start[KILN_MAX_RANK];   /* tf_crop_and_resize region; [0, 1] otherwise */
  double roi_end[KILN_MAX_RANK];
} kiln_resize_params;

/* Decodes a Resize (opset 10, 11+) or Upsample (opset 7, 9) node.  `x` is input 0's shape and
 * in[i] the tensor of input i, or NULL when absent or not constant (in[0] is not read).  `g` is
 * used only to name inputs in messages and may be NULL. */
kiln_code kiln_resize_params_get(const kiln_graph *g, const kiln_node *n, const kiln_shape *x,
                                 const kiln_tensor *const *in, kiln_resize_params *p, kiln_err *e);

typedef enum kiln_pad_mode { KILN_PAD_CONSTANT = 0, KILN_PAD_REFLECT, KILN_PAD_EDGE } kiln_pad_mode;

typedef struct kiln_pad_params {
  kiln_pad_mode mode;
  int64_t begin[KILN_MAX_RANK], end[KILN_MAX_RANK]; /* negative: crop */
  kiln_shape out;
} kiln_pad_params;

/* Decodes a Pad node: pads from the attribute (opset < 11) or from `pads` (input 1, opset 11+,
 * NULL when not constant).  Checks the output shape and that reflect/edge have data to copy. */
kiln_code kiln_pad_params_get(const kiln_graph *g, const kiln_node *n, const kiln_shape *x,
                              const kiln_tensor *pads, kiln_pad_params *p, kiln_err *e);

/* The forward taps along axis d, exactly as the Resize reference kernel computes them: per
 * output index o in [0, p->out.d[d]), count[o] taps (clamped input index idx[o*max_taps + t],
 * weight w[o*max_taps + t]); count[o] < 0 marks a position outside a tf_crop_and_resize region
 * (it reads the extrapolation value and so receives no gradient). */
void kiln_resize_axis_taps(const kiln_resize_params *p, int d, int64_t in_len, int max_taps,
                           int64_t *idx, double *w, int *count);

#endif
