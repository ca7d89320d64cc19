/* reduce.h — which axes a Reduce* node reduces; shared by the op definitions and the
 * reference kernels so the opset-dependent rules (axes as attribute or input) live once. */
#ifndef KILN_OPS_REDUCE_H
#define KILN_OPS_REDUCE_H

#include "ir/graph.h"

/* Reads node `n`'s axes for an input of rank `rank`: from the `axes` attribute before the
 * opset where they became input 1 (13 for ReduceSum, 18 for the others), else from `axes`,
 * the constant value of input 1 (NULL when omitted).  Sets bit i of *mask for each reduced
 * axis; empty axes mean all axes, unless noop_with_empty_axes, which sets *noop (the op is
 * then an identity).  Errors on out-of-range or repeated axes. */
kiln_code kiln_reduce_axes(const kiln_node *n, int rank, const kiln_tensor *axes, uint32_t *mask,
                           bool *noop, kiln_err *e);

#endif
