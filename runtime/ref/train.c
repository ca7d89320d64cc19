/* train.c — reference kernels of the kiln-domain training ops (ir/ops/train.c). */
#include <string.h>

#include "runtime/ref/ref_util.h"

/* Each element: g = -w[t] * dL / W computed in double (the product of two floats is exact
 * there), then rounded to float once. */
kiln_code ref_NLLLossGrad(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                          kiln_tensor *const *out, kiln_err *e) {
  (void)ctx;
  const kiln_tensor *dl = in[0], *labels = in[1], *w = n->n_in > 2 ? in[2] : NULL;
  kiln_tensor *dx = out[0];
  int64_t N = dx->shape.d[0], C = dx->shape.d[1], D = 1;
  for (int i = 2; i < dx->shape.rank; i++) D *= dx->shape.d[i];
  bool has_ii = ir_attr_has(n, "ignore_index");
  int64_t ii = has_ii ? ir_attr_int(n, "ignore_index") : 0;
  const char *red = ir_attr_str(n, "reduction");
  bool none = !strcmp(red, "none"), mean = !strcmp(red, "mean");
  memset(dx->data, 0, kiln_tensor_nbytes(dx));
  double wsum = 0;
  for (int64_t p = 0; p < N * D; p++) {
    int64_t t = kiln_tensor_get_i(labels, p);
    if (has_ii && t == ii) continue;
    if (t < 0 || t >= C)
      return kiln_errf(e, KILN_ERR_INVALID,
                       "label %lld at position %lld is out of range [0, %lld)%s", (long long)t,
                       (long long)p, (long long)C, has_ii ? " and is not ignore_index" : "");
    wsum += w ? (double)F32(w)[t] : 1.0;
  }
  for (int64_t p = 0; p < N * D; p++) {
    int64_t t = kiln_tensor_get_i(labels, p);
    if (has_ii && t == ii) continue;
    double g = -(w ? (double)F32(w)[t] : 1.0) * (double)F32(dl)[none ? p : 0];
    if (mean) g /= wsum;
    int64_t i = p / D, d = p % D;
    F32(dx)[(i * C + t) * D + d] = (float)g;
  }
  return KILN_OK;
}
