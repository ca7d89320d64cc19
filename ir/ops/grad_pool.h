/* grad_pool.h — the kiln-domain gradient ops of pooling and resizing (MaxPoolGrad,
 * AveragePoolGrad, ResizeGrad): decoding of ResizeGrad's attributes and the per-axis
 * interpolation taps, shared by shape inference, the reference kernels and the JIT emitters so
 * that the three (and the forward Resize) agree exactly on where every sample comes from. */
#ifndef KILN_OPS_GRAD_POOL_H
#define KILN_OPS_GRAD_POOL_H

#include "ir/graph.h"
#include "ir/ops/resize.h"

/* Decodes a ResizeGrad node into the forward's parameters: `dy` is the output gradient's shape
 * (the forward output), *x receives the forward input's shape (attribute input_shape).  The
 * result equals what kiln_resize_params_get() gave for the forward node. */
kiln_code kiln_resize_grad_params(const kiln_node *n, const kiln_shape *dy, kiln_shape *x,
                                  kiln_resize_params *p, kiln_err *e);

/* Names of the decoded modes, as ResizeGrad's attributes spell them (the forward rule writes
 * them; kiln_resize_grad_params parses them).  KILN_NEAREST_SIMPLE is "legacy". */
const char *kiln_resize_mode_name(kiln_resize_mode m);
const char *kiln_coord_mode_name(kiln_coord_mode m);
const char *kiln_nearest_mode_name(kiln_nearest_mode m);

/* Taps per output position of a mode: 1 (nearest), 2 (linear) or 4 (cubic). */
int kiln_resize_max_taps(kiln_resize_mode m);

/* The adjoint of one axis as a gather: for each input index i in [0, in_len), the entries
 * [start[i], start[i+1]) of src/w list the output indices that read i, in increasing order, each
 * once, with the summed weight of the taps that clamp to i.  Arrays are allocated here (start
 * has in_len + 1 entries); the caller frees them with kiln_free.  *identity is set when the axis
 * maps every index to itself with weight 1 (nothing to do along it). */
kiln_code kiln_resize_axis_adjoint(const kiln_resize_params *p, int d, int64_t in_len,
                                   int64_t **start, int64_t **src, double **w, bool *identity,
                                   kiln_err *e);

#endif
