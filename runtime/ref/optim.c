/* optim.c — reference kernels of the optimizer ops (see ir/ops/optim.c). */
#include <math.h>

#include "runtime/ref/ref_util.h"

kiln_code ref_Adam(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                   kiln_tensor *const *out, kiln_err *e) {
  const float b1 = (float)ir_attr_float(n, "beta1"), b2 = (float)ir_attr_float(n, "beta2");
  const float eps = (float)ir_attr_float(n, "epsilon"), wd = (float)ir_attr_float(n, "weight_decay");
  const bool decoupled = ir_attr_int(n, "decoupled") != 0;
  const float *p = F32(in[0]), *g = F32(in[1]), *m = F32(in[2]), *v = F32(in[3]), *h = F32(in[4]);
  float *po = F32(out[0]), *mo = F32(out[1]), *vo = F32(out[2]);
  const float step = h[0], sbc2 = h[1], lr_wd = h[2];
  for (int64_t i = 0; i < in[0]->numel; i++) {
    float pi = p[i], gi = g[i];
    if (decoupled)
      pi = pi * (1.0f - lr_wd);
    else
      gi = gi + wd * pi;
    float mi = b1 * m[i] + (1.0f - b1) * gi;
    float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    po[i] = pi - step * (mi / (sqrtf(vi) / sbc2 + eps));
    mo[i] = mi;
    vo[i] = vi;
  }
  return KILN_OK;
}

kiln_code ref_SGD(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                  kiln_tensor *const *out, kiln_err *e) {
  const float mom = (float)ir_attr_float(n, "momentum"), wd = (float)ir_attr_float(n, "weight_decay");
  const bool nesterov = ir_attr_int(n, "nesterov") != 0;
  const float *p = F32(in[0]), *g = F32(in[1]), *b = F32(in[2]), lr = F32(in[3])[0];
  float *po = F32(out[0]), *bo = F32(out[1]);
  for (int64_t i = 0; i < in[0]->numel; i++) {
    float gi = g[i] + wd * p[i];
    float bi = mom * b[i] + gi;
    float d = nesterov ? gi + mom * bi : bi;
    po[i] = p[i] - lr * d;
    bo[i] = bi;
  }
  return KILN_OK;
}
