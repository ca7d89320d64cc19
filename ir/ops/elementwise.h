/* elementwise.h — broadcasting rules of the elementwise family that shape inference
 * (ir/ops/elementwise.c) and the reference kernels (runtime/ref/elementwise*.c) share. */
#ifndef KILN_OPS_ELEMENTWISE_H
#define KILN_OPS_ELEMENTWISE_H

#include "ir/graph.h"

/* The shape to broadcast input `b` with, against the first input's shape `a`.
 * Usually `b` itself (numpy rules); it differs only for forms of opset < 7:
 *  - Add/Sub/Mul/Div/Pow/Equal/Greater/Less with broadcast=1 and an `axis`
 *    attribute place b's dims at a's axes [axis, axis + rank(b)).
 *  - PRelu with a 1-D slope of a's channel count applies it along axis 1.
 * The result has b's element count and layout (only 1-dims are inserted).
 * Errors (KILN_ERR_SHAPE) name no node; the caller prefixes it. */
kiln_code kiln_ew_bshape(const kiln_node *n, const kiln_shape *a, const kiln_shape *b,
                         kiln_shape *out, kiln_err *e);

#endif
