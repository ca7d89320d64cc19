/* tensor.h — a dense, row-major tensor that owns its data. */
#ifndef KILN_TENSOR_H
#define KILN_TENSOR_H

#include "ir/base.h"

typedef struct kiln_tensor {
  kiln_dtype dtype;
  kiln_shape shape;
  void *data;     /* numel * dtype size bytes, 64-byte aligned; owned unless `borrowed` */
  int64_t numel;
  bool borrowed;  /* data belongs to someone else (an arena, a caller's buffer) */
} kiln_tensor;

/* Allocates a zero-filled tensor.  Checks the size against the limits. */
kiln_code kiln_tensor_new(kiln_dtype dt, const kiln_shape *shape, kiln_tensor **out, kiln_err *e);
/* A tensor header over memory it does not own. */
kiln_code kiln_tensor_wrap(kiln_dtype dt, const kiln_shape *shape, void *data, kiln_tensor **out,
                           kiln_err *e);
kiln_code kiln_tensor_clone(const kiln_tensor *t, kiln_tensor **out, kiln_err *e);
void kiln_tensor_free(kiln_tensor *t);
size_t kiln_tensor_nbytes(const kiln_tensor *t);
/* Reads element i (any dtype) as double / int64; used by shape inference and tests.
 * Float to integer truncates toward zero and saturates at the type's range (NaN -> 0). */
double kiln_tensor_get_f(const kiln_tensor *t, int64_t i);
int64_t kiln_tensor_get_i(const kiln_tensor *t, int64_t i);
void kiln_tensor_set_f(kiln_tensor *t, int64_t i, double v);
/* Bytes needed for a shape of a dtype, overflow-checked. */
kiln_code kiln_bytes_for(kiln_dtype dt, const kiln_shape *s, int64_t *bytes, kiln_err *e);

/* Row-major strides (in elements) of a shape. */
void kiln_strides(const kiln_shape *s, int64_t *strides);

#endif
