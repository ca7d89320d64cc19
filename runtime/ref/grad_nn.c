/* grad_nn.c — reference kernels of ConvGradWeight, BatchNormTrain and BatchNormGrad.
 * Every sum is accumulated in double, in one fixed order.  The fused forms (BatchNormTrain
 * with activation=relu, BatchNormGrad with the ReLU output Y) compute exactly what the
 * unfused Relu and Greater/Where compute, value for value. */
#include <math.h>
#include <string.h>

#include "ir/ops/nn_window.h"
#include "runtime/ref/ref_util.h"

/* The positions p in [0, n_p) whose partner p * stride + off lies in [0, n_q) are
 * [*lo, *hi) (as in runtime/ref/conv.c). */
static void tap_range(int64_t n_q, int64_t n_p, int64_t stride, int64_t off, int64_t *lo,
                      int64_t *hi) {
  int64_t l = off >= 0 ? 0 : (-off + stride - 1) / stride;
  int64_t h = n_q - 1 - off < 0 ? 0 : (n_q - 1 - off) / stride + 1;
  *lo = l < n_p ? l : n_p;
  *hi = h < n_p ? h : n_p;
  if (*hi < *lo) *hi = *lo;
}

/* dW[oc, ic, k] = sum over (n, output position o) of dY[n, oc, o] * X[n, g*cg + ic,
 * o * stride + k * dilation - pad_begin], summed in the order n, then o row-major. */
kiln_code ref_ConvGradWeight(const kiln_ref_ctx *ctx, const kiln_node *n,
                             const kiln_tensor *const *in, kiln_tensor *const *out, kiln_err *e) {
  (void)ctx;
  const kiln_tensor *x = in[0], *dy = in[1];
  kiln_tensor *dw = out[0];
  const int64_t *ks;
  ir_attr_ints(n, "kernel_shape", &ks);
  nn_window win;
  KILN_TRY(nn_window_forward(n, &x->shape, "X", ks, false, &win, e));
  nn_window t = nn_window_3d(&win);
  int64_t batch = x->shape.d[0], c = x->shape.d[1], m = dy->shape.d[1];
  int64_t group = ir_attr_int(n, "group");
  int64_t cg = c / group, mg = m / group;
  int64_t in_plane = t.in[0] * t.in[1] * t.in[2], out_plane = t.out[0] * t.out[1] * t.out[2];
  int64_t kvol = t.kernel[0] * t.kernel[1] * t.kernel[2];
  const float *xd = F32(x), *dyd = F32(dy);
  float *dwd = F32(dw);
  for (int64_t oc = 0; oc < m; oc++) {
    int64_t g = oc / mg;
    for (int64_t ic = 0; ic < cg; ic++)
      for (int64_t kd = 0; kd < t.kernel[0]; kd++)
        for (int64_t kh = 0; kh < t.kernel[1]; kh++)
          for (int64_t kw = 0; kw < t.kernel[2]; kw++) {
            int64_t off[3], lo[3], hi[3];
            const int64_t k[3] = {kd, kh, kw};
            for (int i = 0; i < 3; i++) {
              off[i] = k[i] * t.dilation[i] - t.pad_begin[i];
              tap_range(t.in[i], t.out[i], t.stride[i], off[i], &lo[i], &hi[i]);
            }
            double acc = 0;
            for (int64_t bn = 0; bn < batch; bn++) {
              const float *xp = xd + (bn * c + g * cg + ic) * in_plane;
              const float *dyp = dyd + (bn * m + oc) * out_plane;
              for (int64_t od = lo[0]; od < hi[0]; od++)
                for (int64_t oh = lo[1]; oh < hi[1]; oh++) {
                  int64_t id = od * t.stride[0] + off[0], ih = oh * t.stride[1] + off[1];
                  const float *xrow = xp + (id * t.in[1] + ih) * t.in[2];
                  const float *dyrow = dyp + (od * t.out[1] + oh) * t.out[2];
                  for (int64_t ow = lo[2]; ow < hi[2]; ow++)
                    acc += (double)dyrow[ow] * (double)xrow[ow * t.stride[2] + off[2]];
                }
            }
            dwd[(oc * cg + ic) * kvol + (kd * t.kernel[1] + kh) * t.kernel[2] + kw] = (float)acc;
          }
  }
  return KILN_OK;
}

/* Elements of channel ch: image b's run of `spatial` values at (b * C + ch) * spatial. */
static void bn_dims(const kiln_tensor *x, int64_t *batch, int64_t *c, int64_t *spatial) {
  *batch = x->shape.d[0];
  *c = x->shape.d[1];
  *spatial = 1;
  for (int i = 2; i < x->shape.rank; i++) *spatial *= x->shape.d[i];
}

kiln_code ref_BatchNormTrain(const kiln_ref_ctx *ctx, const kiln_node *n,
                             const kiln_tensor *const *in, kiln_tensor *const *out, kiln_err *e) {
  (void)ctx, (void)e;
  const kiln_tensor *x = in[0];
  const float *xd = F32(x), *scale = F32(in[1]), *bias = F32(in[2]);
  const float *run_mean = F32(in[3]), *run_var = F32(in[4]);
  int64_t batch, c, sp;
  bn_dims(x, &batch, &c, &sp);
  double count = (double)(batch * sp);
  double eps = ir_attr_float(n, "epsilon"), momentum = ir_attr_float(n, "momentum");
  bool unbiased = ir_attr_int(n, "unbiased") != 0;
  bool relu = !strcmp(ir_attr_str(n, "activation"), "relu");
  float *yd = F32(out[0]);
  for (int64_t ch = 0; ch < c; ch++) {
    /* two passes: the mean, then the squared deviations from it */
    double s = 0, ss = 0;
    for (int64_t b = 0; b < batch; b++)
      for (int64_t j = 0; j < sp; j++) s += xd[(b * c + ch) * sp + j];
    double mean = s / count;
    for (int64_t b = 0; b < batch; b++)
      for (int64_t j = 0; j < sp; j++) {
        double d = xd[(b * c + ch) * sp + j] - mean;
        ss += d * d;
      }
    double var = ss / count;
    double sd = sqrt(var + eps);
    double k = scale[ch] / sd;
    for (int64_t b = 0; b < batch; b++)
      for (int64_t j = 0; j < sp; j++) {
        int64_t i = (b * c + ch) * sp + j;
        float y = (float)((xd[i] - mean) * k + bias[ch]);
        yd[i] = relu && y < 0 ? 0.0f : y; /* as Relu: NaN and -0 pass */
      }
    double var_run = unbiased ? ss / (count - 1) : var;
    if (n->n_out > 1 && out[1]) F32(out[1])[ch] = (float)mean;
    if (n->n_out > 2 && out[2]) F32(out[2])[ch] = (float)(1.0 / sd);
    if (n->n_out > 3 && out[3])
      F32(out[3])[ch] = (float)(run_mean[ch] * momentum + mean * (1 - momentum));
    if (n->n_out > 4 && out[4])
      F32(out[4])[ch] = (float)(run_var[ch] * momentum + var_run * (1 - momentum));
  }
  return KILN_OK;
}

/* With xh = (x - mean) * invstd and sums over the channel's `count` elements:
 *   dB = sum dy,  dScale = sum dy * xh,
 *   dx = scale * invstd * (dy - dB/count - xh*dScale/count).
 * With the optional input Y, dy is the incoming gradient where Y > 0 and 0 elsewhere: the
 * backward of the ReLU that produced Y (Where(Greater(Y, 0), dY, 0)). */
static double masked_dy(const float *dyd, const float *yd, int64_t i) {
  return yd && !(yd[i] > 0) ? 0.0 : (double)dyd[i];
}

kiln_code ref_BatchNormGrad(const kiln_ref_ctx *ctx, const kiln_node *n,
                            const kiln_tensor *const *in, kiln_tensor *const *out, kiln_err *e) {
  (void)ctx, (void)e;
  const kiln_tensor *x = in[0];
  const float *xd = F32(x), *scale = F32(in[1]), *mean = F32(in[2]), *invstd = F32(in[3]);
  const float *dyd = F32(in[4]);
  const float *yd = n->n_in > 5 && in[5] ? F32(in[5]) : NULL;
  int64_t batch, c, sp;
  bn_dims(x, &batch, &c, &sp);
  double count = (double)(batch * sp);
  for (int64_t ch = 0; ch < c; ch++) {
    double mu = mean[ch], is = invstd[ch];
    double sdy = 0, sdyx = 0;
    for (int64_t b = 0; b < batch; b++)
      for (int64_t j = 0; j < sp; j++) {
        int64_t i = (b * c + ch) * sp + j;
        double dy = masked_dy(dyd, yd, i);
        sdy += dy;
        sdyx += dy * ((xd[i] - mu) * is);
      }
    if (n->n_out > 1 && out[1]) F32(out[1])[ch] = (float)sdyx;
    if (n->n_out > 2 && out[2]) F32(out[2])[ch] = (float)sdy;
    if (!out[0]) continue;
    double a = scale[ch] * is, mb = count > 0 ? sdy / count : 0, mx = count > 0 ? sdyx / count : 0;
    float *dxd = F32(out[0]);
    for (int64_t b = 0; b < batch; b++)
      for (int64_t j = 0; j < sp; j++) {
        int64_t i = (b * c + ch) * sp + j;
        double xh = (xd[i] - mu) * is;
        dxd[i] = (float)(a * (masked_dy(dyd, yd, i) - mb - xh * mx));
      }
  }
  return KILN_OK;
}
