/* gradcheck.h — checks gradient rules against central finite differences.
 *
 * Given a forward graph whose inputs are all fed (no initializers on the
 * differentiated path), gradcheck() picks a fixed random cotangent r for output
 * 0 and compares kiln's autodiff gradient of L = sum(y * r) with respect to each
 * graph input listed in `wrt` against (L(x + eps) - L(x - eps)) / (2 eps),
 * where L is accumulated in double from the reference runtime's float32
 * outputs.  With eps relative to |x| the float32 rounding of the forward pass
 * contributes about 1e-7 |L| / eps, so tolerances of about 1e-2 relative hold
 * for smooth functions; inputs are kept away from kinks by the caller. */
#ifndef KILN_GRADCHECK_H
#define KILN_GRADCHECK_H

#include <math.h>

#include "passes/autodiff.h"
#include "runtime/ref.h"
#include "test.h"

static uint64_t gc_rng(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static double gc_unif(uint64_t *s) { return (double)(gc_rng(s) >> 11) / 9007199254740992.0; }

/* Fills inputs with values in [lo, hi) (floats) */
static void gc_fill(kiln_tensor *t, uint64_t *seed, double lo, double hi) {
  for (int64_t i = 0; i < t->numel; i++)
    if (t->dtype == KILN_F32) ((float *)t->data)[i] = (float)(lo + (hi - lo) * gc_unif(seed));
}

static double gc_loss(const kiln_graph *g, kiln_tensor **in, const kiln_tensor *r) {
  kiln_err e = {0};
  kiln_tensor *out[8] = {0};
  kiln_ref_ctx ctx = {.g = g};
  if (kiln_ref_run(g, &ctx, in, out, &e)) {
    fprintf(stderr, "gradcheck: forward failed: %s\n", e.msg);
    return NAN;
  }
  double L = 0;
  for (int64_t i = 0; i < r->numel; i++) L += (double)((float *)out[0]->data)[i] * (double)((float *)r->data)[i];
  for (int i = 0; i < g->n_outputs && i < 8; i++) kiln_tensor_free(out[i]);
  return L;
}

/* g: a typed (ir_infer'd) graph; inputs[i] fed in g->inputs order (floats for
 * wrt inputs, filled by the caller); wrt: indices into g->inputs. Returns the
 * number of mismatching elements (also reported through CHECK). */
static int gradcheck(kiln_graph *g, kiln_tensor **inputs, const int *wrt, int n_wrt, double rtol,
                     double atol) {
  kiln_err e = {0};
  uint64_t seed = 12345;
  int bad = 0;
  const kiln_value *y = &g->values[g->outputs[0]];
  kiln_tensor *r;
  kiln_tensor_new(KILN_F32, &y->shape, &r, &e);
  gc_fill(r, &seed, -1.0, 1.0);
  /* the backward graph: a copy of the forward graph plus gradient nodes, with
   * the gradients as extra outputs */
  kiln_graph *bg = g; /* autodiff appends to g; forward evaluation ignores extra outputs */
  int rid, wrt_ids[16], grads[16];
  kiln_tensor *rc;
  kiln_tensor_clone(r, &rc, &e);
  CHECK_OK(ir_add_const(bg, "gradcheck_r", rc, false, &rid, &e), &e);
  for (int i = 0; i < n_wrt; i++) wrt_ids[i] = bg->inputs[wrt[i]];
  int n_out0 = bg->n_outputs;
  kiln_autodiff_opts o = {.loss = bg->outputs[0], .wrt = wrt_ids, .n_wrt = n_wrt, .seed = rid};
  kiln_code rc2 = kiln_autodiff(bg, &o, grads, &e);
  CHECK_OK(rc2, &e);
  if (rc2) {
    kiln_tensor_free(r);
    return 1;
  }
  for (int i = 0; i < n_wrt; i++) ir_add_output(bg, grads[i], &e);
  kiln_evaluator ev = kiln_ref_evaluator();
  CHECK_OK(ir_toposort(bg, &e), &e);
  CHECK_OK(ir_verify(bg, &e), &e);
  CHECK_OK(ir_infer(bg, &ev, &e), &e);
  kiln_tensor *outs[24] = {0};
  kiln_ref_ctx ctx = {.g = bg};
  CHECK_OK(kiln_ref_run(bg, &ctx, inputs, outs, &e), &e);
  /* finite differences on the forward part: outputs beyond n_out0 are ignored */
  for (int i = 0; i < n_wrt && outs[n_out0 + i]; i++) {
    kiln_tensor *x = inputs[wrt[i]];
    const float *an = (const float *)outs[n_out0 + i]->data;
    for (int64_t j = 0; j < x->numel; j++) {
      float *xj = &((float *)x->data)[j];
      float orig = *xj;
      double eps = 1e-2 * fmax(1.0, fabs(orig));
      *xj = (float)(orig + eps);
      double lp = gc_loss(bg, inputs, r);
      *xj = (float)(orig - eps);
      double lm = gc_loss(bg, inputs, r);
      *xj = orig;
      double fd = (lp - lm) / (2 * eps);
      if (!(fabs(an[j] - fd) <= atol + rtol * fabs(fd))) {
        if (bad < 5)
          fprintf(stderr, "gradcheck: input '%s'[%lld]: autodiff %.6g, finite difference %.6g\n",
                  bg->values[bg->inputs[wrt[i]]].name, (long long)j, an[j], fd);
        bad++;
      }
    }
  }
  CHECK_MSG(bad == 0, "%d gradient elements differ from finite differences", bad);
  for (int i = 0; i < 24; i++) kiln_tensor_free(outs[i]);
  kiln_tensor_free(r);
  return bad;
}

#endif
