/* grad_pool.c — reference kernels of the pooling and resizing gradients: MaxPoolGrad,
 * AveragePoolGrad and ResizeGrad.  Each scatters every output gradient onto the input
 * elements its forward output read, visiting outputs in order (the JIT kernels gather or
 * scatter per plane in the same order where they can, so the pools agree bit for bit). */
#include <string.h>

#include "ir/ops/grad_pool.h"
#include "ir/ops/nn_window.h"
#include "runtime/ref/ref_util.h"

/* The forward pool's window over an input of shape x, viewed as 3-D. */
static kiln_code window3(const kiln_node *n, const kiln_shape *x, nn_window *t, kiln_err *e) {
  const int64_t *ks;
  ir_attr_ints(n, "kernel_shape", &ks);
  nn_window w;
  KILN_TRY(nn_window_forward(n, x, "X", ks, ir_attr_int(n, "ceil_mode") != 0, &w, e));
  *t = nn_window_3d(&w);
  return KILN_OK;
}

kiln_code ref_MaxPoolGrad(const kiln_ref_ctx *ctx, const kiln_node *n,
                          const kiln_tensor *const *in, kiln_tensor *const *out, kiln_err *e) {
  (void)ctx;
  const kiln_tensor *x = in[0], *dy = in[1];
  nn_window t;
  KILN_TRY(window3(n, &x->shape, &t, e));
  int64_t planes = x->shape.d[0] * x->shape.d[1];
  int64_t in_plane = t.in[0] * t.in[1] * t.in[2];
  const float *xd = F32(x), *dyd = F32(dy);
  float *dxd = F32(out[0]);
  memset(dxd, 0, sizeof(float) * (size_t)out[0]->numel);
  int64_t o = 0;
  for (int64_t pl = 0; pl < planes; pl++) {
    const float *xp = xd + pl * in_plane;
    float *dxp = dxd + pl * in_plane;
    for (int64_t od = 0; od < t.out[0]; od++)
      for (int64_t oh = 0; oh < t.out[1]; oh++)
        for (int64_t ow = 0; ow < t.out[2]; ow++, o++) {
          /* the argmax exactly as ref_MaxPool finds it: the first maximum, padding never wins */
          float best = 0;
          int64_t best_at = -1;
          for (int64_t kd = 0; kd < t.kernel[0]; kd++) {
            int64_t id = od * t.stride[0] - t.pad_begin[0] + kd * t.dilation[0];
            if (id < 0 || id >= t.in[0]) continue;
            for (int64_t kh = 0; kh < t.kernel[1]; kh++) {
              int64_t ih = oh * t.stride[1] - t.pad_begin[1] + kh * t.dilation[1];
              if (ih < 0 || ih >= t.in[1]) continue;
              for (int64_t kw = 0; kw < t.kernel[2]; kw++) {
                int64_t iw = ow * t.stride[2] - t.pad_begin[2] + kw * t.dilation[2];
                if (iw < 0 || iw >= t.in[2]) continue;
                int64_t at = (id * t.in[1] + ih) * t.in[2] + iw;
                if (best_at < 0 || xp[at] > best) {
                  best = xp[at];
                  best_at = at;
                }
              }
            }
          }
          if (best_at >= 0) dxp[best_at] += dyd[o];
        }
  }
  return KILN_OK;
}

/* Taps of output position o along one dim inside the input, and inside the padded input
 * (as runtime/ref/pool.c counts them for the divisor). */
static void dim_taps(const nn_window *t, int dim, int64_t o, int64_t *n_in, int64_t *n_padded) {
  int64_t start = o * t->stride[dim] - t->pad_begin[dim];
  *n_in = *n_padded = 0;
  for (int64_t k = 0; k < t->kernel[dim]; k++) {
    int64_t p = start + k * t->dilation[dim];
    if (p >= 0 && p < t->in[dim]) ++*n_in;
    if (p >= -t->pad_begin[dim] && p < t->in[dim] + t->pad_end[dim]) ++*n_padded;
  }
}

kiln_code ref_AveragePoolGrad(const kiln_ref_ctx *ctx, const kiln_node *n,
                              const kiln_tensor *const *in, kiln_tensor *const *out,
                              kiln_err *e) {
  (void)ctx;
  const kiln_tensor *dy = in[0];
  kiln_tensor *dx = out[0];
  nn_window t;
  KILN_TRY(window3(n, &dx->shape, &t, e));
  bool include_pad = ir_attr_int(n, "count_include_pad") != 0;
  int64_t planes = dx->shape.d[0] * dx->shape.d[1];
  int64_t in_plane = t.in[0] * t.in[1] * t.in[2];
  const float *dyd = F32(dy);
  float *dxd = F32(dx);
  memset(dxd, 0, sizeof(float) * (size_t)dx->numel);
  int64_t o = 0;
  for (int64_t pl = 0; pl < planes; pl++) {
    float *dxp = dxd + pl * in_plane;
    for (int64_t od = 0; od < t.out[0]; od++)
      for (int64_t oh = 0; oh < t.out[1]; oh++)
        for (int64_t ow = 0; ow < t.out[2]; ow++, o++) {
          int64_t count = 1;
          const int64_t pos[3] = {od, oh, ow};
          for (int dim = 0; dim < 3; dim++) {
            int64_t n_in, n_padded;
            dim_taps(&t, dim, pos[dim], &n_in, &n_padded);
            count *= include_pad ? n_padded : n_in;
          }
          if (count <= 0) continue; /* the forward output is the constant 0 */
          float g = dyd[o] / (float)count;
          for (int64_t kd = 0; kd < t.kernel[0]; kd++) {
            int64_t id = od * t.stride[0] - t.pad_begin[0] + kd * t.dilation[0];
            if (id < 0 || id >= t.in[0]) continue;
            for (int64_t kh = 0; kh < t.kernel[1]; kh++) {
              int64_t ih = oh * t.stride[1] - t.pad_begin[1] + kh * t.dilation[1];
              if (ih < 0 || ih >= t.in[1]) continue;
              for (int64_t kw = 0; kw < t.kernel[2]; kw++) {
                int64_t iw = ow * t.stride[2] - t.pad_begin[2] + kw * t.dilation[2];
                if (iw < 0 || iw >= t.in[2]) continue;
                dxp[(id * t.in[1] + ih) * t.in[2] + iw] += g;
              }
            }
          }
        }
  }
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
