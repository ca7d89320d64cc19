/* norm.c — reference kernels of BatchNormalization, InstanceNormalization and LRN.
 * Statistics are accumulated in double, two-pass (mean, then squared deviations). */
#include <math.h>
#include <string.h>

#include "runtime/ref/ref_util.h"

/* Whether BatchNormalization normalizes with the statistics of this batch.  Opset >= 14 says
 * so with training_mode; before that the training form is the one that asks for the extra
 * outputs (mean, var, saved_mean, saved_var), unless opset 6's is_test overrides it. */
static bool bn_training(const kiln_ref_ctx *ctx, const kiln_node *n, kiln_tensor *const *out) {
  if (ctx && ctx->training) return true;
  if (n->opset >= 14) return ir_attr_int(n, "training_mode") != 0;
  bool extra = false;
  for (int o = 1; o < n->n_out; o++) extra = extra || out[o];
  if (n->opset < 7 && ir_attr_int(n, "is_test") != 0) return false;
  return extra;
}

kiln_code ref_BatchNormalization(const kiln_ref_ctx *ctx, const kiln_node *n,
                                 const kiln_tensor *const *in, kiln_tensor *const *out,
                                 kiln_err *e) {
  const kiln_tensor *x = in[0];
  const float *xd = F32(x), *scale = F32(in[1]), *bias = F32(in[2]);
  const float *in_mean = F32(in[3]), *in_var = F32(in[4]);
  int64_t batch = x->shape.d[0], c = x->shape.d[1];
  int64_t spatial = 1;
  for (int i = 2; i < x->shape.rank; i++) spatial *= x->shape.d[i];
  /* One parameter per channel, or per (channel, position) for the legacy spatial=0 form. */
  int64_t n_param = in[1]->numel;
  bool per_channel = n_param == c;
  int64_t per_param = per_channel ? spatial : 1; /* elements of one parameter in one image */
  double eps = ir_attr_float(n, "epsilon"), momentum = ir_attr_float(n, "momentum");
  bool training = bn_training(ctx, n, out);

  double *mean = kiln_calloc((size_t)(n_param ? n_param : 1), sizeof(double));
  double *var = kiln_calloc((size_t)(n_param ? n_param : 1), sizeof(double));
  if (!mean || !var) {
    kiln_free(mean);
    kiln_free(var);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (BatchNormalization statistics)");
  }
  /* Element (b, p, j): image b, parameter p, j-th element of that parameter's run. */
#define BN_AT(b, p, j) (((b) * n_param + (p)) * per_param + (j))
  if (training) {
    double count = (double)(batch * per_param);
    for (int64_t p = 0; p < n_param; p++) {
      double s = 0, ss = 0;
      for (int64_t b = 0; b < batch; b++)
        for (int64_t j = 0; j < per_param; j++) s += xd[BN_AT(b, p, j)];
      mean[p] = count > 0 ? s / count : 0;
      for (int64_t b = 0; b < batch; b++)
        for (int64_t j = 0; j < per_param; j++) {
          double d = xd[BN_AT(b, p, j)] - mean[p];
          ss += d * d;
        }
      var[p] = count > 0 ? ss / count : 0;
    }
  } else {
    for (int64_t p = 0; p < n_param; p++) {
      mean[p] = in_mean[p];
      var[p] = in_var[p];
    }
  }
  float *yd = F32(out[0]);
  for (int64_t p = 0; p < n_param; p++) {
    double k = scale[p] / sqrt(var[p] + eps);
    for (int64_t b = 0; b < batch; b++)
      for (int64_t j = 0; j < per_param; j++) {
        int64_t i = BN_AT(b, p, j);
        yd[i] = (float)((xd[i] - mean[p]) * k + bias[p]);
      }
  }
#undef BN_AT
  /* Optional outputs: running mean/var (momentum-blended with this batch's statistics in
   * training, unchanged otherwise), then opsets < 14's saved_mean/saved_var. */
  for (int64_t p = 0; p < n_param; p++) {
    double run_mean = training ? in_mean[p] * momentum + mean[p] * (1 - momentum) : in_mean[p];
    double run_var = training ? in_var[p] * momentum + var[p] * (1 - momentum) : in_var[p];
    if (n->n_out > 1 && out[1]) F32(out[1])[p] = (float)run_mean;
    if (n->n_out > 2 && out[2]) F32(out[2])[p] = (float)run_var;
    if (n->n_out > 3 && out[3]) F32(out[3])[p] = (float)mean[p];
    if (n->n_out > 4 && out[4]) F32(out[4])[p] = (float)var[p];
  }
  kiln_free(mean);
  kiln_free(var);
  return KILN_OK;
}

kiln_code ref_InstanceNormalization(const kiln_ref_ctx *ctx, const kiln_node *n,
                                    const kiln_tensor *const *in, kiln_tensor *const *out,
                                    kiln_err *e) {
  (void)ctx, (void)e;
  const kiln_tensor *x = in[0];
  int64_t batch = x->shape.d[0], c = x->shape.d[1];
  int64_t plane = 1;
  for (int i = 2; i < x->shape.rank; i++) plane *= x->shape.d[i];
  double eps = ir_attr_float(n, "epsilon");
  for (int64_t b = 0; b < batch; b++)
    for (int64_t ch = 0; ch < c; ch++) {
      const float *xp = F32(x) + (b * c + ch) * plane;
      float *yp = F32(out[0]) + (b * c + ch) * plane;
      double s = 0, ss = 0;
      for (int64_t i = 0; i < plane; i++) s += xp[i];
      double mean = plane ? s / (double)plane : 0;
      for (int64_t i = 0; i < plane; i++) ss += (xp[i] - mean) * (xp[i] - mean);
      double var = plane ? ss / (double)plane : 0;
      double k = F32(in[1])[ch] / sqrt(var + eps);
      for (int64_t i = 0; i < plane; i++) yp[i] = (float)((xp[i] - mean) * k + F32(in[2])[ch]);
    }
  return KILN_OK;
}

kiln_code ref_LRN(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                  kiln_tensor *const *out, kiln_err *e) {
  (void)ctx, (void)e;
  const kiln_tensor *x = in[0];
  int64_t batch = x->shape.d[0], c = x->shape.d[1];
  int64_t plane = 1;
  for (int i = 2; i < x->shape.rank; i++) plane *= x->shape.d[i];
  double alpha = ir_attr_float(n, "alpha"), beta = ir_attr_float(n, "beta");
  double bias = ir_attr_float(n, "bias");
  int64_t size = ir_attr_int(n, "size");
  /* Channels [ch - floor((size-1)/2), ch + ceil((size-1)/2)], clipped to [0, C). */
  int64_t before = (size - 1) / 2, after = size / 2;
  const float *xd = F32(x);
  for (int64_t b = 0; b < batch; b++)
    for (int64_t ch = 0; ch < c; ch++) {
      int64_t lo = ch - before < 0 ? 0 : ch - before;
      int64_t hi = ch + after >= c ? c - 1 : ch + after;
      for (int64_t i = 0; i < plane; i++) {
        double sq = 0;
        for (int64_t k = lo; k <= hi; k++) {
          double v = xd[(b * c + k) * plane + i];
          sq += v * v;
        }
        double v = xd[(b * c + ch) * plane + i];
        F32(out[0])[(b * c + ch) * plane + i] =
            (float)(v / pow(bias + alpha / (double)size * sq, beta));
      }
    }
  return KILN_OK;
}
