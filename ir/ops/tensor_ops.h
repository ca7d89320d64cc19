/* tensor_ops.h — parameter decoding shared by the tensor family's shape inference
 * (ir/ops/tensor.c) and its reference kernels (runtime/ref/tensor.c), so that both
 * read Shape's start/end, Slice's starts/ends/axes/steps and Split's sizes alike. */
#ifndef KILN_OPS_TENSOR_OPS_H
#define KILN_OPS_TENSOR_OPS_H

#include "ir/graph.h"

/* Constant: a new tensor holding the node's value / value_float(s) / value_int(s). */
kiln_code kiln_constant_value(const kiln_node *n, kiln_tensor **out, kiln_err *e);

/* Shape (opset 15+): the half-open range [*start, *end) of dims to report, clamped. */
void kiln_shape_op_range(const kiln_node *n, int rank, int *start, int *end);

/* A resolved Slice: output element i along axis a reads input index
 * start[a] + i * step[a]. */
typedef struct kiln_slice_plan {
  int64_t start[KILN_MAX_RANK];
  int64_t step[KILN_MAX_RANK];
  kiln_shape out;
} kiln_slice_plan;

/* Resolves Slice arguments per the ONNX spec (negative indices count from the end,
 * clamping, negative steps).  axes/steps may be NULL (all leading axes / step 1). */
kiln_code kiln_slice_resolve(const kiln_shape *in, const int64_t *starts, const int64_t *ends,
                             const int64_t *axes, const int64_t *steps, int count,
                             kiln_slice_plan *p, kiln_err *e);

/* Split: normalized axis and the size of each of the node's n_out parts.  `split`
 * holds the explicit sizes (from the input or the attribute) or is NULL for equal
 * parts. */
kiln_code kiln_split_sizes(const kiln_node *n, const kiln_shape *in, const int64_t *split,
                           int64_t n_split, int *axis, int64_t *sizes, kiln_err *e);

#endif
