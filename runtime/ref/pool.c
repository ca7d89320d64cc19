/* pool.c — reference kernels of MaxPool, AveragePool, GlobalAveragePool and GlobalMaxPool.
 * Windows are viewed as 3-D (nn_window_3d), so one loop nest serves 1-D, 2-D and 3-D. */
#include <math.h>

#include "runtime/ref/pool_window.h"

kiln_code ref_MaxPool(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                      kiln_tensor *const *out, kiln_err *e) {
  (void)ctx;
  const kiln_tensor *x = in[0];
  nn_window t;
  KILN_TRY(ref_pool_window(n, &x->shape, &t, e));
  bool col_major = ir_attr_int(n, "storage_order") == 1;
  int64_t planes = x->shape.d[0] * x->shape.d[1];
  int64_t in_plane = t.in[0] * t.in[1] * t.in[2];
  const float *xd = F32(x);
  float *yd = F32(out[0]);
  int64_t *idx = n->n_out > 1 && out[1] ? I64(out[1]) : NULL;
  int64_t *at = ref_pool_tap_buffer(&t, e);
  if (!at) return e->code;
  int64_t o = 0;
  for (int64_t pl = 0; pl < planes; pl++) {
    const float *xp = xd + pl * in_plane;
    for (int64_t od = 0; od < t.out[0]; od++)
      for (int64_t oh = 0; oh < t.out[1]; oh++)
        for (int64_t ow = 0; ow < t.out[2]; ow++, o++) {
          float best = -INFINITY;
          int64_t best_at = -1; /* spatial offset of the maximum; padding never wins */
          int64_t taps = ref_pool_taps(&t, od, oh, ow, at);
          for (int64_t i = 0; i < taps; i++)
            if (best_at < 0 || xp[at[i]] > best) { /* the first maximum wins ties */
              best = xp[at[i]];
              best_at = at[i];
            }
          yd[o] = best;
          if (!idx) continue;
          /* ONNX flattens indices over the whole input; storage_order=1 orders the spatial
           * dims column-major (first dim fastest). */
          if (best_at >= 0 && col_major) {
            int64_t iw = best_at % t.in[2], ih = best_at / t.in[2] % t.in[1];
            int64_t id = best_at / (t.in[1] * t.in[2]);
            best_at = id + (ih + iw * t.in[1]) * t.in[0];
          }
          idx[o] = best_at < 0 ? -1 : pl * in_plane + best_at;
        }
  }
  kiln_free(at);
  return KILN_OK;
}

kiln_code ref_AveragePool(const kiln_ref_ctx *ctx, const kiln_node *n,
                          const kiln_tensor *const *in, kiln_tensor *const *out, kiln_err *e) {
  (void)ctx;
  const kiln_tensor *x = in[0];
  nn_window t;
  KILN_TRY(ref_pool_window(n, &x->shape, &t, e));
  bool include_pad = ir_attr_int(n, "count_include_pad") != 0;
  int64_t planes = x->shape.d[0] * x->shape.d[1];
  int64_t in_plane = t.in[0] * t.in[1] * t.in[2];
  const float *xd = F32(x);
  float *yd = F32(out[0]);
  int64_t *at = ref_pool_tap_buffer(&t, e);
  if (!at) return e->code;
  int64_t o = 0;
  for (int64_t pl = 0; pl < planes; pl++) {
    const float *xp = xd + pl * in_plane;
    for (int64_t od = 0; od < t.out[0]; od++)
      for (int64_t oh = 0; oh < t.out[1]; oh++)
        for (int64_t ow = 0; ow < t.out[2]; ow++, o++) {
          double sum = 0;
          int64_t taps = ref_pool_taps(&t, od, oh, ow, at);
          for (int64_t i = 0; i < taps; i++) sum += xp[at[i]];
          int64_t count = ref_pool_divisor(&t, od, oh, ow, include_pad);
          yd[o] = count > 0 ? (float)(sum / (double)count) : 0.0f;
        }
  }
  kiln_free(at);
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
