/* elementwise.c — reference kernels of the elementwise family. */
#include <math.h>
#include <string.h>

#include "runtime/ref/ref_util.h"

kiln_code ref_Identity(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                       kiln_tensor *const *out, kiln_err *e) {
  (void)ctx, (void)n, (void)e;
  memcpy(out[0]->data, in[0]->data, kiln_tensor_nbytes(in[0]));
  return KILN_OK;
}

kiln_code ref_Relu(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                   kiln_tensor *const *out, kiln_err *e) {
  (void)ctx, (void)n, (void)e;
  for (int64_t i = 0; i < in[0]->numel; i++) {
    double x = kiln_tensor_get_f(in[0], i);
    kiln_tensor_set_f(out[0], i, x > 0 ? x : 0);
  }
  return KILN_OK;
}

kiln_code ref_Add(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                  kiln_tensor *const *out, kiln_err *e) {
  (void)ctx, (void)n, (void)e;
  int64_t sa[KILN_MAX_RANK], sb[KILN_MAX_RANK];
  const kiln_shape *os = &out[0]->shape;
  ref_bcast_strides(&in[0]->shape, os, sa);
  ref_bcast_strides(&in[1]->shape, os, sb);
  for (int64_t i = 0; i < out[0]->numel; i++) {
    int64_t ia = ref_bcast_index(i, os, sa), ib = ref_bcast_index(i, os, sb);
    if (out[0]->dtype == KILN_F32)
      F32(out[0])[i] = F32(in[0])[ia] + F32(in[1])[ib];
    else if (out[0]->dtype == KILN_I64)
      I64(out[0])[i] = (int64_t)((uint64_t)I64(in[0])[ia] + (uint64_t)I64(in[1])[ib]);
    else
      I32(out[0])[i] = (int32_t)((uint32_t)I32(in[0])[ia] + (uint32_t)I32(in[1])[ib]);
  }
  return KILN_OK;
}
