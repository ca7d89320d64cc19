/* linalg.h — layout helpers the linalg op definitions and reference kernels share, so that
 * the opset-dependent rules (Softmax's axis before/after opset 13) live in one place. */
#ifndef KILN_OPS_LINALG_H
#define KILN_OPS_LINALG_H

#include "ir/graph.h"

/* How Softmax/LogSoftmax node `n` views an input of shape `s`: as [outer, len, inner] with
 * the normalisation over `len`.  Before opset 13 the input is coerced to 2-D at `axis`
 * (default 1), so len is the product of the trailing dims and inner is 1; from opset 13 the
 * normalisation is over the single dim `axis` (default -1). */
kiln_code kiln_softmax_dims(const kiln_node *n, const kiln_shape *s, int64_t *outer, int64_t *len,
                            int64_t *inner, kiln_err *e);

/* MatMul's numpy semantics: a 1-D operand is promoted to a matrix ([K] -> [1,K] on the left,
 * [K,1] on the right) and the batch dims broadcast.  Writes the promoted matrix sizes, the
 * broadcast batch shape and the output shape (with the promoted dims removed again). */
typedef struct kiln_matmul_dims {
  int64_t m, k, n;
  kiln_shape a_batch, b_batch, batch; /* operand batch shapes and their broadcast */
  kiln_shape out;
} kiln_matmul_dims;
kiln_code kiln_matmul_dims_of(const kiln_shape *a, const char *a_name, const kiln_shape *b,
                              const char *b_name, kiln_matmul_dims *d, kiln_err *e);

#endif
