/* grad_pool.c — reference kernels of the pooling and resizing gradients: MaxPoolGrad,
 * AveragePoolGrad and ResizeGrad.  Each scatters every output gradient onto the input
 * elements its forward output read, visiting outputs in order (the JIT kernels gather or
 * scatter per plane in the same order where they can, so the pools agree bit for bit). */
#include <string.h>

#include "ir/ops/grad_pool.h"
#include "runtime/ref/pool_window.h"

kiln_code ref_MaxPoolGrad(const kiln_ref_ctx *ctx, const kiln_node *n,
                          const kiln_tensor *const *in, kiln_tensor *const *out, kiln_err *e) {
  (void)ctx;
  const kiln_tensor *x = in[0], *dy = in[1];
  nn_window t;
  KILN_TRY(ref_pool_window(n, &x->shape, &t, e));
  int64_t planes = x->shape.d[0] * x->shape.d[1];
  int64_t in_plane = t.in[0] * t.in[1] * t.in[2];
  const float *xd = F32(x), *dyd = F32(dy);
  float *dxd = F32(out[0]);
  memset(dxd, 0, sizeof(float) * (size_t)out[0]->numel);
  int64_t *at = ref_pool_tap_buffer(&t, e);
  if (!at) return e->code;
  int64_t o = 0;
  for (int64_t pl = 0; pl < planes; pl++) {
    const float *xp = xd + pl * in_plane;
    float *dxp = dxd + pl * in_plane;
    for (int64_t od = 0; od < t.out[0]; od++)
      for (int64_t oh = 0; oh < t.out[1]; oh++)
        for (int64_t ow = 0; ow < t.out[2]; ow++, o++) {
          /* the argmax exactly as ref_MaxPool finds it */
          float best = 0;
          int64_t best_at = -1;
          int64_t taps = ref_pool_taps(&t, od, oh, ow, at);
          for (int64_t i = 0; i < taps; i++)
            if (best_at < 0 || xp[at[i]] > best) {
              best = xp[at[i]];
              best_at = at[i];
            }
          if (best_at >= 0) dxp[best_at] += dyd[o];
        }
  }
  kiln_free(at);
  return KILN_OK;
}

kiln_code ref_AveragePoolGrad(const kiln_ref_ctx *ctx, const kiln_node *n,
                              const kiln_tensor *const *in, kiln_tensor *const *out,
                              kiln_err *e) {
  (void)ctx;
  const kiln_tensor *dy = in[0];
  kiln_tensor *dx = out[0];
  nn_window t;
  KILN_TRY(ref_pool_window(n, &dx->shape, &t, e));
  bool include_pad = ir_attr_int(n, "count_include_pad") != 0;
  int64_t planes = dx->shape.d[0] * dx->shape.d[1];
  int64_t in_plane = t.in[0] * t.in[1] * t.in[2];
  const float *dyd = F32(dy);
  float *dxd = F32(dx);
  memset(dxd, 0, sizeof(float) * (size_t)dx->numel);
  int64_t *at = ref_pool_tap_buffer(&t, e);
  if (!at) return e->code;
  int64_t o = 0;
  for (int64_t pl = 0; pl < planes; pl++) {
    float *dxp = dxd + pl * in_plane;
    for (int64_t od = 0; od < t.out[0]; od++)
      for (int64_t oh = 0; oh < t.out[1]; oh++)
        for (int64_t ow = 0; ow < t.out[2]; ow++, o++) {
          int64_t count = ref_pool_divisor(&t, od, oh, ow, include_pad);
          if (count <= 0) continue; /* the forward output is the constant 0 */
          float g = dyd[o] / (float)count;
          int64_t taps = ref_pool_taps(&t, od, oh, ow, at);
          for (int64_t i = 0; i < taps; i++) dxp[at[i]] += g;
        }
  }
  kiln_free(at);
  return KILN_OK;
}

/* The adjoint of the interpolation: each output gradient is added, with the product of its
 * per-axis tap weights, to every input element the forward output read (accumulated in
 * double).  Outputs outside a tf_crop_and_resize region read no input and give nothing. */
kiln_code ref_ResizeGrad(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                         kiln_tensor *const *out, kiln_err *e) {
  (void)ctx;
  const kiln_tensor *dy = in[0];
  kiln_tensor *dx = out[0];
  kiln_shape xs;
  kiln_resize_params p;
  KILN_TRY(kiln_resize_grad_params(n, &dy->shape, &xs, &p, e));
  int rank = xs.rank;
  int max_taps = kiln_resize_max_taps(p.mode);
  int64_t total = 0;
  for (int d = 0; d < rank; d++) total += dy->shape.d[d];
  int64_t *idx = kiln_malloc(sizeof(int64_t) * (size_t)(total * max_taps + 1));
  double *w = kiln_malloc(sizeof(double) * (size_t)(total * max_taps + 1));
  int *count = kiln_malloc(sizeof(int) * (size_t)(total + 1));
  double *acc = kiln_calloc((size_t)dx->numel + 1, sizeof(double));
  if (!idx || !w || !count || !acc) {
    kiln_free(idx), kiln_free(w), kiln_free(count), kiln_free(acc);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (resize gradient tables)");
  }
  int64_t *a_idx[KILN_MAX_RANK];
  double *a_w[KILN_MAX_RANK];
  int *a_count[KILN_MAX_RANK];
  int64_t off = 0;
  for (int d = 0; d < rank; d++) {
    a_idx[d] = idx + off * max_taps, a_w[d] = w + off * max_taps, a_count[d] = count + off;
    kiln_resize_axis_taps(&p, d, xs.d[d], max_taps, a_idx[d], a_w[d], a_count[d]);
    off += dy->shape.d[d];
  }
  int64_t xstride[KILN_MAX_RANK], oi[KILN_MAX_RANK];
  kiln_strides(&xs, xstride);
  for (int64_t o = 0; o < dy->numel; o++) {
    ref_unflatten(o, &dy->shape, oi);
    bool outside = false;
    for (int d = 0; d < rank; d++)
      if (a_count[d][oi[d]] <= 0) outside = true; /* no taps: no input was read */
    if (outside) continue;
    /* the product of the per-axis taps, walked like an odometer (as the forward does) */
    int k[KILN_MAX_RANK] = {0};
    for (;;) {
      double wt = 1;
      int64_t dst = 0;
      for (int d = 0; d < rank; d++) {
        int64_t at = oi[d] * max_taps + k[d];
        wt *= a_w[d][at];
        dst += a_idx[d][at] * xstride[d];
      }
      acc[dst] += wt * F32(dy)[o];
      int d = rank - 1;
      while (d >= 0 && ++k[d] == a_count[d][oi[d]]) k[d--] = 0;
      if (d < 0) break;
    }
  }
  for (int64_t i = 0; i < dx->numel; i++) F32(dx)[i] = (float)acc[i];
  kiln_free(idx), kiln_free(w), kiln_free(count), kiln_free(acc);
  return KILN_OK;
}
