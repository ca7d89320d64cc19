/* tensor.c — tensor allocation with checked sizes. */
#include "ir/tensor.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

kiln_code kiln_bytes_for(kiln_dtype dt, const kiln_shape *s, int64_t *bytes, kiln_err *e) {
  int64_t n;
  size_t es = kiln_dtype_size(dt);
  if (es == 0) return kiln_errf(e, KILN_ERR_UNSUPPORTED, "unsupported dtype %s", kiln_dtype_name(dt));
  if (s->rank < 0 || s->rank > KILN_MAX_RANK)
    return kiln_errf(e, KILN_ERR_LIMIT, "tensor of rank %d exceeds the limit of %d", s->rank,
                     KILN_MAX_RANK);
  if (kiln_shape_numel(s, &n) && kiln_mul_ok(n, (int64_t)es, bytes) && *bytes <= KILN_MAX_TENSOR_BYTES)
    return KILN_OK;
  /* say which limit: a dimension, the element count, or bytes */
  char buf[160];
  kiln_shape_str(s, buf, sizeof buf);
  for (int i = 0; i < s->rank; i++)
    if (s->d[i] < 0 || s->d[i] > KILN_MAX_DIM)
      return kiln_errf(e, KILN_ERR_LIMIT,
                       "tensor of shape %s exceeds the size limit: dimension %d is outside 0..%lld",
                       buf, i, (long long)KILN_MAX_DIM);
  bool empty = false;
  for (int i = 0; i < s->rank; i++) empty |= s->d[i] == 0;
  if (!kiln_shape_numel(s, &n))
    return kiln_errf(e, KILN_ERR_LIMIT, "tensor of shape %s exceeds the size limit of %lld elements%s",
                     buf, (long long)KILN_MAX_ELEMS, empty ? " (counting its non-zero dimensions)" : "");
  return kiln_errf(e, KILN_ERR_LIMIT, "tensor of shape %s (%s) exceeds the size limit of %lld bytes",
                   buf, kiln_dtype_name(dt), (long long)KILN_MAX_TENSOR_BYTES);
}

kiln_code kiln_tensor_new(kiln_dtype dt, const kiln_shape *shape, kiln_tensor **out, kiln_err *e) {
  int64_t bytes;
  *out = NULL;
  KILN_TRY(kiln_bytes_for(dt, shape, &bytes, e));
  kiln_tensor *t = kiln_calloc(1, sizeof *t);
  if (!t) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  size_t alloc = ((size_t)bytes + 63) & ~(size_t)63;
  if (alloc == 0) alloc = 64;
  /* aligned_alloc does not go through our hook; check the hook first. */
  void *probe = kiln_malloc(1);
  if (!probe) {
    kiln_free(t);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory allocating %lld bytes", (long long)bytes);
  }
  kiln_free(probe);
  t->data = aligned_alloc(64, alloc);
  if (!t->data) {
    kiln_free(t);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory allocating %lld bytes", (long long)bytes);
  }
  memset(t->data, 0, alloc);
  t->dtype = dt;
  t->shape = *shape;
  kiln_shape_numel(shape, &t->numel);
  *out = t;
  return KILN_OK;
}

kiln_code kiln_tensor_wrap(kiln_dtype dt, const kiln_shape *shape, void *data, kiln_tensor **out,
                           kiln_err *e) {
  int64_t bytes;
  *out = NULL;
  KILN_TRY(kiln_bytes_for(dt, shape, &bytes, e));
  kiln_tensor *t = kiln_calloc(1, sizeof *t);
  if (!t) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  t->dtype = dt;
  t->shape = *shape;
  t->data = data;
  t->borrowed = true;
  kiln_shape_numel(shape, &t->numel);
  *out = t;
  return KILN_OK;
}

kiln_code kiln_tensor_clone(const kiln_tensor *src, kiln_tensor **out, kiln_err *e) {
  KILN_TRY(kiln_tensor_new(src->dtype, &src->shape, out, e));
  memcpy((*out)->data, src->data, kiln_tensor_nbytes(src));
  return KILN_OK;
}

void kiln_tensor_free(kiln_tensor *t) {
  if (!t) return;
  if (!t->borrowed) free(t->data);
  kiln_free(t);
}

size_t kiln_tensor_nbytes(const kiln_tensor *t) {
  return (size_t)t->numel * kiln_dtype_size(t->dtype);
}

double kiln_tensor_get_f(const kiln_tensor *t, int64_t i) {
  switch (t->dtype) {
  case KILN_F32: return ((const float *)t->data)[i];
  case KILN_I32: return ((const int32_t *)t->data)[i];
  case KILN_I64: return (double)((const int64_t *)t->data)[i];
  case KILN_BOOL: return ((const uint8_t *)t->data)[i] ? 1.0 : 0.0;
  default: return 0;
  }
}

/* double -> integer in [lo, hi] without C's undefined behaviour for values out of range:
 * truncates toward zero, saturates, NaN -> 0.  (Values come from files: 1e30 happens.) */
static int64_t saturate(double v, int64_t lo, int64_t hi) {
  if (isnan(v)) return 0;
  if (v <= (double)lo) return lo;
  if (v >= (double)hi) return hi; /* (double)INT64_MAX rounds up to 2^63: caught here */
  return (int64_t)v;
}

int64_t kiln_tensor_get_i(const kiln_tensor *t, int64_t i) {
  switch (t->dtype) {
  case KILN_F32: return saturate(((const float *)t->data)[i], INT64_MIN, INT64_MAX);
  case KILN_I32: return ((const int32_t *)t->data)[i];
  case KILN_I64: return ((const int64_t *)t->data)[i];
  case KILN_BOOL: return ((const uint8_t *)t->data)[i] ? 1 : 0;
  default: return 0;
  }
}

void kiln_tensor_set_f(kiln_tensor *t, int64_t i, double v) {
  switch (t->dtype) {
  case KILN_F32: ((float *)t->data)[i] = (float)v; break;
  case KILN_I32: ((int32_t *)t->data)[i] = (int32_t)saturate(v, INT32_MIN, INT32_MAX); break;
  case KILN_I64: ((int64_t *)t->data)[i] = saturate(v, INT64_MIN, INT64_MAX); break;
  case KILN_BOOL: ((uint8_t *)t->data)[i] = v != 0; break;
  default: break;
  }
}

void kiln_strides(const kiln_shape *s, int64_t *strides) {
  int64_t acc = 1;
  for (int i = s->rank - 1; i >= 0; i--) {
    strides[i] = acc;
    acc *= s->d[i];
  }
}
