/* linalg.c — reference kernels of the linalg family: Gemm, MatMul, Softmax, LogSoftmax and
 * the losses SoftmaxCrossEntropyLoss and NegativeLogLikelihoodLoss. */
#include <math.h>
#include <string.h>

#include "ir/ops/linalg.h"
#include "runtime/ref/ref_util.h"

/* Integer products wrap (two's complement) instead of being undefined on overflow. */
static int64_t wrap_mul(int64_t a, int64_t b) { return (int64_t)((uint64_t)a * (uint64_t)b); }
static int64_t wrap_add(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }

static void set_int(kiln_tensor *t, int64_t i, int64_t v) {
  if (t->dtype == KILN_I64)
    I64(t)[i] = v;
  else
    I32(t)[i] = (int32_t)(uint32_t)(uint64_t)v;
}

kiln_code ref_Gemm(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                   kiln_tensor *const *out, kiln_err *e) {
  (void)ctx, (void)e;
  const kiln_tensor *a = in[0], *b = in[1], *c = n->n_in > 2 ? in[2] : NULL;
  kiln_tensor *y = out[0];
  bool ta = ir_attr_int(n, "transA") != 0, tb = ir_attr_int(n, "transB") != 0;
  double alpha = ir_attr_float(n, "alpha"), beta = ir_attr_float(n, "beta");
  int64_t M = y->shape.d[0], N = y->shape.d[1], K = a->shape.d[ta ? 0 : 1];
  int64_t cst[KILN_MAX_RANK];
  if (c) ref_bcast_strides(&c->shape, &y->shape, cst);
  bool is_float = y->dtype == KILN_F32;
  for (int64_t m = 0; m < M; m++)
    for (int64_t j = 0; j < N; j++) {
      int64_t o = m * N + j, ic = c ? ref_bcast_index(o, &y->shape, cst) : 0;
      double accf = 0;
      int64_t acci = 0;
      for (int64_t k = 0; k < K; k++) {
        int64_t ia = ta ? k * M + m : m * K + k, ib = tb ? j * K + k : k * N + j;
        if (is_float)
          accf += (double)F32(a)[ia] * F32(b)[ib];
        else
          acci = wrap_add(acci, wrap_mul(kiln_tensor_get_i(a, ia), kiln_tensor_get_i(b, ib)));
      }
      if (is_float) {
        F32(y)[o] = (float)(alpha * accf + (c ? beta * F32(c)[ic] : 0.0));
      } else {
        int64_t cv = c ? kiln_tensor_get_i(c, ic) : 0;
        /* Exact integer arithmetic in the common alpha = beta = 1 case. */
        if (alpha == 1.0 && (beta == 1.0 || !c))
          set_int(y, o, wrap_add(acci, cv));
        else
          set_int(y, o, (int64_t)(alpha * (double)acci + beta * (double)cv));
      }
    }
  return KILN_OK;
}

kiln_code ref_MatMul(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                     kiln_tensor *const *out, kiln_err *e) {
  (void)ctx, (void)n;
  const kiln_tensor *a = in[0], *b = in[1];
  kiln_tensor *y = out[0];
  kiln_matmul_dims d;
  KILN_TRY(kiln_matmul_dims_of(&a->shape, "A", &b->shape, "B", &d, e));
  int64_t sa[KILN_MAX_RANK], sb[KILN_MAX_RANK], batch = 1;
  ref_bcast_strides(&d.a_batch, &d.batch, sa);
  ref_bcast_strides(&d.b_batch, &d.batch, sb);
  for (int i = 0; i < d.batch.rank; i++) batch *= d.batch.d[i];
  bool is_float = y->dtype == KILN_F32;
  for (int64_t bi = 0; bi < batch; bi++) {
    /* batch strides count whole matrices */
    int64_t a0 = ref_bcast_index(bi, &d.batch, sa) * d.m * d.k;
    int64_t b0 = ref_bcast_index(bi, &d.batch, sb) * d.k * d.n;
    for (int64_t i = 0; i < d.m; i++)
      for (int64_t j = 0; j < d.n; j++) {
        int64_t o = (bi * d.m + i) * d.n + j;
        double accf = 0;
        int64_t acci = 0;
        for (int64_t k = 0; k < d.k; k++) {
          int64_t ia = a0 + i * d.k + k, ib = b0 + k * d.n + j;
          if (is_float)
            accf += (double)F32(a)[ia] * F32(b)[ib];
          else
            acci = wrap_add(acci, wrap_mul(kiln_tensor_get_i(a, ia), kiln_tensor_get_i(b, ib)));
        }
        if (is_float)
          F32(y)[o] = (float)accf;
        else
          set_int(y, o, acci);
      }
  }
  return KILN_OK;
}

/* Softmax or log-softmax of x viewed as [outer, len, inner], over len.  Subtracting the
 * maximum first keeps exp() from overflowing on large inputs. */
static void softmax_rows(const float *x, float *y, int64_t outer, int64_t len, int64_t inner,
                         bool log_out) {
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      int64_t base = o * len * inner + i;
      double mx = -INFINITY, sum = 0;
      for (int64_t l = 0; l < len; l++) mx = fmax(mx, x[base + l * inner]);
      for (int64_t l = 0; l < len; l++) sum += exp((double)x[base + l * inner] - mx);
      double log_sum = log(sum);
      for (int64_t l = 0; l < len; l++) {
        double z = (double)x[base + l * inner] - mx;
        y[base + l * inner] = (float)(log_out ? z - log_sum : exp(z) / sum);
      }
    }
}

static kiln_code softmax_kernel(const kiln_node *n, const kiln_tensor *x, kiln_tensor *y,
                                bool log_out, kiln_err *e) {
  int64_t outer, len, inner;
  KILN_TRY(kiln_softmax_dims(n, &x->shape, &outer, &len, &inner, e));
  softmax_rows(F32(x), F32(y), outer, len, inner, log_out);
  return KILN_OK;
}

kiln_code ref_Softmax(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                      kiln_tensor *const *out, kiln_err *e) {
  (void)ctx;
  return softmax_kernel(n, in[0], out[0], false, e);
}

kiln_code ref_LogSoftmax(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                         kiln_tensor *const *out, kiln_err *e) {
  (void)ctx;
  return softmax_kernel(n, in[0], out[0], true, e);
}

/* The negative log-likelihood of log-probabilities `logp` (shape xs = [N,C,d1..]) at
 * `labels` [N,d1..], as ONNX defines it for both losses: each element's loss is
 * -weights[label] * logp[n,label,d..] (weight 1 without weights, 0 for ignore_index);
 * "mean" divides the sum by the sum of the applied weights. */
static kiln_code nll_loss(const kiln_node *n, const float *logp, const kiln_shape *xs,
                          const kiln_tensor *labels, const kiln_tensor *w, kiln_tensor *loss,
                          kiln_err *e) {
  int64_t N = xs->d[0], C = xs->d[1], D = 1;
  for (int i = 2; i < xs->rank; i++) D *= xs->d[i];
  bool has_ii = ir_attr_has(n, "ignore_index");
  int64_t ii = has_ii ? ir_attr_int(n, "ignore_index") : 0;
  const char *red = ir_attr_str(n, "reduction");
  bool none = !strcmp(red, "none"), mean = !strcmp(red, "mean");
  double sum = 0, wsum = 0;
  for (int64_t i = 0; i < N; i++)
    for (int64_t d = 0; d < D; d++) {
      int64_t t = kiln_tensor_get_i(labels, i * D + d);
      double wt = 0, l = 0;
      if (!has_ii || t != ii) {
        if (t < 0 || t >= C)
          return kiln_errf(e, KILN_ERR_INVALID,
                           "label %lld at position %lld is out of range [0, %lld)%s", (long long)t,
                           (long long)(i * D + d), (long long)C,
                           has_ii ? " and is not ignore_index" : "");
        wt = w ? F32(w)[t] : 1.0;
        l = -wt * (double)logp[(i * C + t) * D + d];
      }
      if (none) F32(loss)[i * D + d] = (float)l;
      sum += l;
      wsum += wt;
    }
  if (!none) F32(loss)[0] = (float)(mean ? sum / wsum : sum);
  return KILN_OK;
}

kiln_code ref_NegativeLogLikelihoodLoss(const kiln_ref_ctx *ctx, const kiln_node *n,
                                        const kiln_tensor *const *in, kiln_tensor *const *out,
                                        kiln_err *e) {
  (void)ctx;
  const kiln_tensor *w = n->n_in > 2 ? in[2] : NULL;
  return nll_loss(n, F32(in[0]), &in[0]->shape, in[1], w, out[0], e);
}

kiln_code ref_SoftmaxCrossEntropyLoss(const kiln_ref_ctx *ctx, const kiln_node *n,
                                      const kiln_tensor *const *in, kiln_tensor *const *out,
                                      kiln_err *e) {
  (void)ctx;
  const kiln_tensor *x = in[0];
  int64_t N = x->shape.d[0], C = x->shape.d[1], D = 1;
  for (int i = 2; i < x->shape.rank; i++) D *= x->shape.d[i];
  /* log-probabilities over the class axis 1, in the log_prob output when it is wanted */
  bool own = n->n_out < 2 || !out[1];
  float *logp = own ? kiln_malloc(sizeof(float) * (size_t)(x->numel ? x->numel : 1)) : F32(out[1]);
  if (!logp) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (log-probabilities)");
  softmax_rows(F32(x), logp, N, C, D, true);
  const kiln_tensor *w = n->n_in > 2 ? in[2] : NULL;
  kiln_code rc = nll_loss(n, logp, &x->shape, in[1], w, out[0], e);
  if (own) kiln_free(logp);
  return rc;
}
