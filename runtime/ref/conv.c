/* conv.c — reference kernels of Conv and ConvTranspose.
 *
 * Every window is viewed as 3-D (nn_window_3d: a 1-D or 2-D op gets leading size-1 dims),
 * so one loop nest serves all ranks.  The loops run over (output channel, input channel,
 * kernel tap) outside and over output positions inside, with the range of positions a tap
 * reaches computed once (tap_range), so a full ResNet at 224 runs in seconds. */
#include "ir/ops/nn_window.h"
#include "runtime/ref/ref_util.h"

/* The positions p in [0, n_p) whose partner p * stride + off lies in [0, n_q) are
 * [*lo, *hi): the loops below then need no bounds test per multiply-accumulate. */
static void tap_range(int64_t n_q, int64_t n_p, int64_t stride, int64_t off, int64_t *lo,
                      int64_t *hi) {
  int64_t l = off >= 0 ? 0 : (-off + stride - 1) / stride;       /* p*stride + off >= 0 */
  int64_t h = n_q - 1 - off < 0 ? 0 : (n_q - 1 - off) / stride + 1; /* p*stride + off < n_q */
  *lo = l < n_p ? l : n_p;
  *hi = h < n_p ? h : n_p;
  if (*hi < *lo) *hi = *lo;
}

/* Kernel sizes are W's spatial dims (kernel_shape, when given, was checked against them). */
static void weight_kernel(const kiln_tensor *w, int64_t *kernel) {
  for (int i = 2; i < w->shape.rank; i++) kernel[i - 2] = w->shape.d[i];
}

kiln_code ref_Conv(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                   kiln_tensor *const *out, kiln_err *e) {
  (void)ctx;
  const kiln_tensor *x = in[0], *w = in[1], *b = n->n_in > 2 ? in[2] : NULL;
  kiln_tensor *y = out[0];
  int64_t kernel[NN_WIN_MAX];
  weight_kernel(w, kernel);
  nn_window win;
  KILN_TRY(nn_window_forward(n, &x->shape, "X", kernel, false, &win, e));
  nn_window t = nn_window_3d(&win);
  int64_t batch = x->shape.d[0], c_in = x->shape.d[1], m = w->shape.d[0];
  int64_t group = ir_attr_int(n, "group");
  int64_t cg = c_in / group, mg = m / group; /* channels per group in and out */
  int64_t in_plane = t.in[0] * t.in[1] * t.in[2], out_plane = t.out[0] * t.out[1] * t.out[2];
  int64_t kvol = t.kernel[0] * t.kernel[1] * t.kernel[2];
  const float *xd = F32(x), *wd = F32(w);
  float *yd = F32(y);

  for (int64_t bn = 0; bn < batch; bn++)
    for (int64_t oc = 0; oc < m; oc++) {
      int64_t g = oc / mg;
      float *yp = yd + (bn * m + oc) * out_plane;
      float bias = b ? F32(b)[oc] : 0.0f;
      for (int64_t o = 0; o < out_plane; o++) yp[o] = bias;
      for (int64_t ic = 0; ic < cg; ic++) {
        const float *xp = xd + (bn * c_in + g * cg + ic) * in_plane;
        const float *wp = wd + (oc * cg + ic) * kvol;
        for (int64_t kd = 0; kd < t.kernel[0]; kd++)
          for (int64_t kh = 0; kh < t.kernel[1]; kh++)
            for (int64_t kw = 0; kw < t.kernel[2]; kw++) {
              float wv = wp[(kd * t.kernel[1] + kh) * t.kernel[2] + kw];
              /* input position = output position * stride + tap offset */
              int64_t off[3], lo[3], hi[3];
              const int64_t k[3] = {kd, kh, kw};
              for (int i = 0; i < 3; i++) {
                off[i] = k[i] * t.dilation[i] - t.pad_begin[i];
                tap_range(t.in[i], t.out[i], t.stride[i], off[i], &lo[i], &hi[i]);
              }
              for (int64_t od = lo[0]; od < hi[0]; od++) {
                int64_t id = od * t.stride[0] + off[0];
                for (int64_t oh = lo[1]; oh < hi[1]; oh++) {
                  int64_t ih = oh * t.stride[1] + off[1];
                  const float *restrict xrow = xp + (id * t.in[1] + ih) * t.in[2];
                  float *restrict yrow = yp + (od * t.out[1] + oh) * t.out[2];
                  int64_t sw = t.stride[2], ow_off = off[2];
                  if (sw == 1) /* the common case, kept apart so compilers vectorize it */
                    for (int64_t ow = lo[2]; ow < hi[2]; ow++) yrow[ow] += wv * xrow[ow + ow_off];
                  else
                    for (int64_t ow = lo[2]; ow < hi[2]; ow++)
                      yrow[ow] += wv * xrow[ow * sw + ow_off];
                }
              }
            }
      }
    }
  return KILN_OK;
}

kiln_code ref_ConvTranspose(const kiln_ref_ctx *ctx, const kiln_node *n,
                            const kiln_tensor *const *in, kiln_tensor *const *out, kiln_err *e) {
  (void)ctx;
  const kiln_tensor *x = in[0], *w = in[1], *b = n->n_in > 2 ? in[2] : NULL;
  kiln_tensor *y = out[0];
  int64_t kernel[NN_WIN_MAX];
  weight_kernel(w, kernel);
  nn_window win;
  KILN_TRY(nn_window_transpose(n, &x->shape, "X", kernel, &win, e));
  nn_window t = nn_window_3d(&win);
  int64_t batch = x->shape.d[0], c_in = x->shape.d[1];
  int64_t group = ir_attr_int(n, "group");
  int64_t cg = c_in / group, mg = w->shape.d[1], m = mg * group;
  int64_t in_plane = t.in[0] * t.in[1] * t.in[2], out_plane = t.out[0] * t.out[1] * t.out[2];
  int64_t kvol = t.kernel[0] * t.kernel[1] * t.kernel[2];
  const float *xd = F32(x), *wd = F32(w);
  float *yd = F32(y);

  for (int64_t bn = 0; bn < batch; bn++)
    for (int64_t oc = 0; oc < m; oc++) {
      float *yp = yd + (bn * m + oc) * out_plane;
      float bias = b ? F32(b)[oc] : 0.0f;
      for (int64_t o = 0; o < out_plane; o++) yp[o] = bias;
    }
  /* Scatter: input position i with tap k lands on output i * stride + k * dilation - pad. */
  for (int64_t bn = 0; bn < batch; bn++)
    for (int64_t ic = 0; ic < c_in; ic++) {
      int64_t g = ic / cg;
      const float *xp = xd + (bn * c_in + ic) * in_plane;
      for (int64_t j = 0; j < mg; j++) {
        int64_t oc = g * mg + j;
        float *yp = yd + (bn * m + oc) * out_plane;
        const float *wp = wd + (ic * mg + j) * kvol; /* W is (C, M/group, k...) */
        for (int64_t kd = 0; kd < t.kernel[0]; kd++)
          for (int64_t kh = 0; kh < t.kernel[1]; kh++)
            for (int64_t kw = 0; kw < t.kernel[2]; kw++) {
              float wv = wp[(kd * t.kernel[1] + kh) * t.kernel[2] + kw];
              /* the input positions whose output lands inside the (cropped) result */
              int64_t off[3], lo[3], hi[3];
              const int64_t k[3] = {kd, kh, kw};
              for (int i = 0; i < 3; i++) {
                off[i] = k[i] * t.dilation[i] - t.pad_begin[i];
                tap_range(t.out[i], t.in[i], t.stride[i], off[i], &lo[i], &hi[i]);
              }
              for (int64_t id = lo[0]; id < hi[0]; id++) {
                int64_t od = id * t.stride[0] + off[0];
                for (int64_t ih = lo[1]; ih < hi[1]; ih++) {
                  int64_t oh = ih * t.stride[1] + off[1];
                  const float *restrict xrow = xp + (id * t.in[1] + ih) * t.in[2];
                  float *restrict yrow = yp + (od * t.out[1] + oh) * t.out[2];
                  int64_t sw = t.stride[2], ow_off = off[2];
                  for (int64_t iw = lo[2]; iw < hi[2]; iw++)
                    yrow[iw * sw + ow_off] += wv * xrow[iw];
                }
              }
            }
      }
    }
  return KILN_OK;
}
