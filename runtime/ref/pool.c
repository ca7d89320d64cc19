/* pool.c — reference kernels of MaxPool, AveragePool, GlobalAveragePool and GlobalMaxPool.
 * Windows are viewed as 3-D (nn_window_3d), so one loop nest serves 1-D, 2-D and 3-D. */
#include <math.h>

#include "ir/ops/nn_window.h"
#include "runtime/ref/ref_util.h"

static kiln_code pool_window(const kiln_node *n, const kiln_tensor *x, nn_window *t, kiln_err *e) {
  const int64_t *ks;
  ir_attr_ints(n, "kernel_shape", &ks);
  nn_window w;
  KILN_TRY(nn_window_forward(n, &x->shape, "X", ks, ir_attr_int(n, "ceil_mode") != 0, &w, e));
  *t = nn_window_3d(&w);
  return KILN_OK;
}

/* Taps of one output position along one dim that fall inside the input [0, in), and how
 * many fall inside the padded input [-pad_begin, in + pad_end). */
static void dim_taps(const nn_window *t, int dim, int64_t o, int64_t *n_in, int64_t *n_padded) {
  int64_t start = o * t->stride[dim] - t->pad_begin[dim];
  *n_in = *n_padded = 0;
  for (int64_t k = 0; k < t->kernel[dim]; k++) {
    int64_t p = start + k * t->dilation[dim];
    if (p >= 0 && p < t->in[dim]) ++*n_in;
    if (p >= -t->pad_begin[dim] && p < t->in[dim] + t->pad_end[dim]) ++*n_padded;
  }
}

kiln_code ref_MaxPool(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                      kiln_tensor *const *out, kiln_err *e) {
  (void)ctx;
  const kiln_tensor *x = in[0];
  nn_window t;
  KILN_TRY(pool_window(n, x, &t, e));
  bool col_major = ir_attr_int(n, "storage_order") == 1;
  int64_t planes = x->shape.d[0] * x->shape.d[1];
  int64_t in_plane = t.in[0] * t.in[1] * t.in[2];
  const float *xd = F32(x);
  float *yd = F32(out[0]);
  int64_t *idx = n->n_out > 1 && out[1] ? I64(out[1]) : NULL;
  int64_t o = 0;
  for (int64_t pl = 0; pl < planes; pl++) {
    const float *xp = xd + pl * in_plane;
    for (int64_t od = 0; od < t.out[0]; od++)
      for (int64_t oh = 0; oh < t.out[1]; oh++)
        for (int64_t ow = 0; ow < t.out[2]; ow++, o++) {
          float best = -INFINITY;
          int64_t best_at = -1; /* spatial offset of the maximum; padding never wins */
          for (int64_t kd = 0; kd < t.kernel[0]; kd++) {
            int64_t id = od * t.stride[0] - t.pad_begin[0] + kd * t.dilation[0];
            if (id < 0 || id >= t.in[0]) continue;
            for (int64_t kh = 0; kh < t.kernel[1]; kh++) {
              int64_t ih = oh * t.stride[1] - t.pad_begin[1] + kh * t.dilation[1];
              if (ih < 0 || ih >= t.in[1]) continue;
              for (int64_t kw = 0; kw < t.kernel[2]; kw++) {
                int64_t iw = ow * t.stride[2] - t.pad_begin[2] + kw * t.dilation[2];
                if (iw < 0 || iw >= t.in[2]) continue;
                float v = xp[(id * t.in[1] + ih) * t.in[2] + iw];
                if (best_at < 0 || v > best) { /* the first maximum wins ties */
                  best = v;
                  /* ONNX flattens indices over the whole input; storage_order=1 orders the
                   * spatial dims column-major (first dim fastest). */
                  best_at = col_major ? id + (ih + iw * t.in[1]) * t.in[0]
                                      : (id * t.in[1] + ih) * t.in[2] + iw;
                }
              }
            }
          }
          yd[o] = best;
          if (idx) idx[o] = best_at < 0 ? -1 : pl * in_plane + best_at;
        }
  }
  return KILN_OK;
}

kiln_code ref_AveragePool(const kiln_ref_ctx *ctx, const kiln_node *n,
                          const kiln_tensor *const *in, kiln_tensor *const *out, kiln_err *e) {
  (void)ctx;
  const kiln_tensor *x = in[0];
  nn_window t;
  KILN_TRY(pool_window(n, x, &t, e));
  bool include_pad = ir_attr_int(n, "count_include_pad") != 0;
  int64_t planes = x->shape.d[0] * x->shape.d[1];
  int64_t in_plane = t.in[0] * t.in[1] * t.in[2];
  const float *xd = F32(x);
  float *yd = F32(out[0]);
  int64_t o = 0;
  for (int64_t pl = 0; pl < planes; pl++) {
    const float *xp = xd + pl * in_plane;
    for (int64_t od = 0; od < t.out[0]; od++)
      for (int64_t oh = 0; oh < t.out[1]; oh++)
        for (int64_t ow = 0; ow < t.out[2]; ow++, o++) {
          double sum = 0;
          for (int64_t kd = 0; kd < t.kernel[0]; kd++) {
            int64_t id = od * t.stride[0] - t.pad_begin[0] + kd * t.dilation[0];
            if (id < 0 || id >= t.in[0]) continue;
            for (int64_t kh = 0; kh < t.kernel[1]; kh++) {
              int64_t ih = oh * t.stride[1] - t.pad_begin[1] + kh * t.dilation[1];
              if (ih < 0 || ih >= t.in[1]) continue;
              for (int64_t kw = 0; kw < t.kernel[2]; kw++) {
                int64_t iw = ow * t.stride[2] - t.pad_begin[2] + kw * t.dilation[2];
                if (iw < 0 || iw >= t.in[2]) continue;
                sum += xp[(id * t.in[1] + ih) * t.in[2] + iw];
              }
            }
          }
          /* The divisor counts the taps inside the input, or with count_include_pad the taps
           * inside the padded input (a ceil_mode window may reach past even that). */
          int64_t count = 1;
          const int64_t pos[3] = {od, oh, ow};
          for (int dim = 0; dim < 3; dim++) {
            int64_t n_in, n_padded;
            dim_taps(&t, dim, pos[dim], &n_in, &n_padded);
            count *= include_pad ? n_padded : n_in;
          }
          yd[o] = count > 0 ? (float)(sum / (double)count) : 0.0f;
        }
  }
  return KILN_OK;
}

/* (N, C, spatial...) as N*C planes of `plane` elements. */
static void global_dims(const kiln_tensor *x, int64_t *planes, int64_t *plane) {
  *planes = x->shape.d[0] * x->shape.d[1];
  *plane = 1;
  for (int i = 2; i < x->shape.rank; i++) *plane *= x->shape.d[i];
}

kiln_code ref_GlobalAveragePool(const kiln_ref_ctx *ctx, const kiln_node *n,
                                const kiln_tensor *const *in, kiln_tensor *const *out,
                                kiln_err *e) {
  (void)ctx, (void)n, (void)e;
  int64_t planes, plane;
  global_dims(in[0], &planes, &plane);
  for (int64_t p = 0; p < planes; p++) {
    const float *xp = F32(in[0]) + p * plane;
    double sum = 0;
    for (int64_t i = 0; i < plane; i++) sum += xp[i];
    F32(out[0])[p] = plane ? (float)(sum / (double)plane) : 0.0f;
  }
  return KILN_OK;
}

kiln_code ref_GlobalMaxPool(const kiln_ref_ctx *ctx, const kiln_node *n,
                            const kiln_tensor *const *in, kiln_tensor *const *out, kiln_err *e) {
  (void)ctx, (void)n, (void)e;
  int64_t planes, plane;
  global_dims(in[0], &planes, &plane);
  for (int64_t p = 0; p < planes; p++) {
    const float *xp = F32(in[0]) + p * plane;
    float best = -INFINITY;
    for (int64_t i = 0; i < plane; i++)
      if (i == 0 || xp[i] > best) best = xp[i];
    F32(out[0])[p] = best;
  }
  return KILN_OK;
}
