/* resize.c — reference kernels of Resize, Upsample and Pad. */
#include <assert.h>
#include <string.h>

#include "ir/ops/resize.h"
#include "runtime/ref/ref_util.h"
#include "runtime/ref/resize_coords.h"

/* One axis's taps (kiln_resize_axis_taps): per output position, count[o] input indices and
 * weights, count < 0 outside a tf_crop_and_resize region. */
typedef struct axis_taps {
  int64_t *idx;
  double *w;
  int *count;
} axis_taps;

/* Resize and Upsample: separable N-D interpolation.  Each output element is the weighted sum,
 * over every combination of its per-axis taps, of the input elements they address. */
static kiln_code resize_run(const kiln_ref_ctx *ctx, const kiln_node *n,
                            const kiln_tensor *const *in, kiln_tensor *const *out, kiln_err *e) {
  const kiln_tensor *x = in[0];
  kiln_tensor *y = out[0];
  kiln_resize_params p;
  KILN_TRY(kiln_resize_params_get(ctx ? ctx->g : NULL, n, &x->shape, in, &p, e));
  assert(kiln_shape_eq(&p.out, &y->shape));
  int rank = x->shape.rank;
  int max_taps = p.mode == KILN_RESIZE_NEAREST ? 1 : p.mode == KILN_RESIZE_LINEAR ? 2 : 4;
  if (y->numel == 0) return KILN_OK;

  int64_t total = 0;
  for (int d = 0; d < rank; d++) total += y->shape.d[d];
  int64_t *idx = kiln_malloc(sizeof(int64_t) * (size_t)(total * max_taps));
  double *w = kiln_malloc(sizeof(double) * (size_t)(total * max_taps));
  int *count = kiln_malloc(sizeof(int) * (size_t)total);
  if (!idx || !w || !count) {
    kiln_free(idx), kiln_free(w), kiln_free(count);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (resize tables)");
  }
  axis_taps axes[KILN_MAX_RANK];
  int64_t off = 0;
  for (int d = 0; d < rank; d++) {
    axes[d] = (axis_taps){idx + off * max_taps, w + off * max_taps, count + off};
    kiln_resize_axis_taps(&p, d, x->shape.d[d], max_taps, axes[d].idx, axes[d].w, axes[d].count);
    off += y->shape.d[d];
  }

  int64_t xstride[KILN_MAX_RANK], oi[KILN_MAX_RANK];
  kiln_strides(&x->shape, xstride);
  size_t esz = kiln_dtype_size(x->dtype);
  for (int64_t o = 0; o < y->numel; o++) {
    ref_unflatten(o, &y->shape, oi);
    bool outside = false;
    for (int d = 0; d < rank; d++)
      if (axes[d].count[oi[d]] < 0) outside = true;
    if (outside) {
      kiln_tensor_set_f(y, o, p.extrapolation_value);
      continue;
    }
    if (p.mode == KILN_RESIZE_NEAREST) { /* one tap per axis: copy the element exactly */
      int64_t src = 0;
      for (int d = 0; d < rank; d++) src += axes[d].idx[oi[d]] * xstride[d];
      memcpy((char *)y->data + o * esz, (const char *)x->data + src * esz, esz);
      continue;
    }
    /* Walk the product of the per-axis taps like an odometer. */
    int k[KILN_MAX_RANK] = {0};
    double acc = 0;
    for (;;) {
      double wt = 1;
      int64_t src = 0;
      for (int d = 0; d < rank; d++) {
        int64_t t = oi[d] * max_taps + k[d];
        wt *= axes[d].w[t];
        src += axes[d].idx[t] * xstride[d];
      }
      acc += wt * F32(x)[src];
      int d = rank - 1;
      while (d >= 0 && ++k[d] == axes[d].count[oi[d]]) k[d--] = 0;
      if (d < 0) break;
    }
    F32(y)[o] = (float)acc;
  }
  kiln_free(idx), kiln_free(w), kiln_free(count);
  return KILN_OK;
}

kiln_code ref_Resize(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                     kiln_tensor *const *out, kiln_err *e) {
  return resize_run(ctx, n, in, out, e);
}

kiln_code ref_Upsample(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                       kiln_tensor *const *out, kiln_err *e) {
  return resize_run(ctx, n, in, out, e);
}

/* Source index along one axis for output index i, or -1 for the constant.  Negative pads crop
 * first; positive pads then extend the kept range [lo, hi) by the mode's rule. */
static int64_t pad_source(kiln_pad_mode mode, int64_t i, int64_t begin, int64_t lo, int64_t hi) {
  int64_t src = i - begin;
  if (src >= lo && src < hi) return src;
  if (mode == KILN_PAD_CONSTANT) return -1;
  if (mode == KILN_PAD_EDGE) return src < lo ? lo : hi - 1;
  int64_t m = hi - lo; /* reflect, repeating like numpy.pad when the pad exceeds the axis */
  if (m == 1) return lo;
  int64_t period = 2 * (m - 1), r = (src - lo) % period;
  if (r < 0) r += period;
  if (r >= m) r = period - r;
  return lo + r;
}

kiln_code ref_Pad(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                  kiln_tensor *const *out, kiln_err *e) {
  const kiln_tensor *x = in[0];
  kiln_tensor *y = out[0];
  kiln_pad_params p;
  KILN_TRY(
      kiln_pad_params_get(ctx ? ctx->g : NULL, n, &x->shape, n->n_in > 1 ? in[1] : NULL, &p, e));
  assert(kiln_shape_eq(&p.out, &y->shape));
  int rank = x->shape.rank;
  size_t esz = kiln_dtype_size(x->dtype);

  /* The padding value, as one element of x's dtype. */
  uint64_t cbuf = 0;
  if (n->opset >= 11) {
    const kiln_tensor *cv = n->n_in > 2 ? in[2] : NULL;
    if (cv && cv->numel > 0) memcpy(&cbuf, cv->data, esz);
  } else {
    kiln_tensor c = {.dtype = x->dtype, .shape = {.rank = 0}, .data = &cbuf, .numel = 1};
    kiln_tensor_set_f(&c, 0, ir_attr_float(n, "value"));
  }
  if (y->numel == 0) return KILN_OK;

  int64_t total = 0;
  for (int d = 0; d < rank; d++) total += y->shape.d[d];
  int64_t *map = kiln_malloc(sizeof(int64_t) * (size_t)(total ? total : 1));
  if (!map) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (pad tables)");
  int64_t *axis_map[KILN_MAX_RANK], off = 0;
  for (int d = 0; d < rank; d++) {
    axis_map[d] = map + off;
    int64_t lo = p.begin[d] < 0 ? -p.begin[d] : 0;
    int64_t hi = x->shape.d[d] - (p.end[d] < 0 ? -p.end[d] : 0);
    for (int64_t i = 0; i < y->shape.d[d]; i++)
      axis_map[d][i] = pad_source(p.mode, i, p.begin[d], lo, hi);
    off += y->shape.d[d];
  }
  int64_t xstride[KILN_MAX_RANK], oi[KILN_MAX_RANK];
  kiln_strides(&x->shape, xstride);
  for (int64_t o = 0; o < y->numel; o++) {
    ref_unflatten(o, &y->shape, oi);
    int64_t src = 0;
    for (int d = 0; d < rank && src >= 0; d++) {
      int64_t s = axis_map[d][oi[d]];
      src = s < 0 ? -1 : src + s * xstride[d];
    }
    char *dst = (char *)y->data + o * esz;
    if (src < 0)
      memcpy(dst, &cbuf, esz);
    else
      memcpy(dst, (const char *)x->data + src * esz, esz);
  }
  kiln_free(map);
  return KILN_OK;
}
