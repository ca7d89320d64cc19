/* layout.c — reference kernels of the blocked-layout ops (ir/ops/layout.h).  BlockedConv is
 * written as what it stands for: its inputs unblocked, FusedConv's reference kernel, its output
 * blocked again, so the oracle of the layout pass is the code that runs the plain graph. */
#include "ir/ops/layout.h"
#include "runtime/ref/ref_util.h"

kiln_code ref_ToBlocked(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                        kiln_tensor *const *out, kiln_err *e) {
  (void)ctx;
  int64_t b;
  KILN_TRY(kiln_block_get(n, &b, e));
  const kiln_shape *s = &in[0]->shape;
  kiln_block_act(F32(in[0]), F32(out[0]), s->d[0], s->d[1], s->d[2] * s->d[3], b);
  return KILN_OK;
}

kiln_code ref_FromBlocked(const kiln_ref_ctx *ctx, const kiln_node *n,
                          const kiln_tensor *const *in, kiln_tensor *const *out, kiln_err *e) {
  (void)ctx;
  int64_t b;
  KILN_TRY(kiln_block_get(n, &b, e));
  const kiln_shape *s = &out[0]->shape;
  kiln_unblock_act(F32(in[0]), F32(out[0]), s->d[0], s->d[1], s->d[2] * s->d[3], b);
  return KILN_OK;
}

/* A new plain tensor (N, Cb*b, H, W) holding blocked activation t. */
static kiln_code unblocked_act(const kiln_tensor *t, kiln_tensor **out, kiln_err *e) {
  const kiln_shape *s = &t->shape;
  kiln_shape ps = {.rank = 4, .d = {s->d[0], s->d[1] * s->d[4], s->d[2], s->d[3]}};
  KILN_TRY(kiln_tensor_new(KILN_F32, &ps, out, e));
  kiln_unblock_act(F32(t), F32(*out), ps.d[0], ps.d[1], ps.d[2] * ps.d[3], s->d[4]);
  return KILN_OK;
}

kiln_code ref_BlockedConv(const kiln_ref_ctx *ctx, const kiln_node *n,
                          const kiln_tensor *const *in, kiln_tensor *const *out, kiln_err *e) {
  int64_t b;
  KILN_TRY(kiln_block_get(n, &b, e));
  const kiln_shape *ws = &in[1]->shape, *ys = &out[0]->shape;
  kiln_tensor *x = NULL, *w = NULL, *z = NULL, *y = NULL;
  kiln_shape wps = {.rank = 4, .d = {ws->d[0] * b, ws->d[1] * b, ws->d[2], ws->d[3]}};
  kiln_shape yps = {.rank = 4, .d = {ys->d[0], ys->d[1] * b, ys->d[2], ys->d[3]}};
  kiln_code rc = unblocked_act(in[0], &x, e);
  if (!rc) rc = kiln_tensor_new(KILN_F32, &wps, &w, e);
  if (!rc && n->n_in > 3 && in[3]) rc = unblocked_act(in[3], &z, e);
  if (!rc) rc = kiln_tensor_new(KILN_F32, &yps, &y, e);
  if (!rc) {
    kiln_unblock_weights(F32(in[1]), F32(w), wps.d[0], wps.d[1], wps.d[2] * wps.d[3], b);
    const kiln_tensor *fin[4] = {x, w, n->n_in > 2 ? in[2] : NULL, z};
    kiln_tensor *fout[1] = {y};
    rc = ref_FusedConv(ctx, n, fin, fout, e);
  }
  if (!rc) kiln_block_act(F32(y), F32(out[0]), yps.d[0], yps.d[1], yps.d[2] * yps.d[3], b);
  kiln_tensor_free(x);
  kiln_tensor_free(w);
  kiln_tensor_free(z);
  kiln_tensor_free(y);
  return rc;
}
