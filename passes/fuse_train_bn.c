/* fuse_train_bn.c — the training graph's BatchNorm + ReLU, forward and backward.
 *
 * Forward: kiln.BatchNormTrain whose normalized output Y is read by one Relu alone (and is
 * not a graph output) becomes kiln.BatchNormTrain with activation="relu": the node produces
 * the Relu's output value directly (the backward's Greater(y, 0) of that Relu reads it
 * unchanged), so the normalized value before the ReLU is never stored.
 *
 * Backward: the gradient of a ReLU with output y is Where(Greater(y, 0), dy, 0)
 * (passes/grad_elementwise.c).  When that masked gradient is read only by
 * kiln.BatchNormGrad nodes, as their dY (a BatchNorm + ReLU; the two BatchNorms of a
 * downsampling residual block share one), each becomes BatchNormGrad(X, scale, mean,
 * invstd, dy, y), which applies the mask as it reads dy: neither the boolean mask nor the
 * masked gradient is stored.
 *
 * Both rewrites compute exactly what they replace (the reference kernels give the same
 * values; runtime/ref/grad_nn.c), so they are valid in either mode.  kiln.BatchNormTrain
 * with activation="relu" stays differentiable (passes/grad_nn.c masks with its output). */
#include <math.h>
#include <string.h>

#include "passes/fusion.h"

static bool f32(const kiln_value *v) { return v && v->typed && v->dtype == KILN_F32; }

/* Whether input i of node n is a float32 constant holding the single value +0. */
static bool const_zero(const kiln_graph *g, const kiln_node *n, int i) {
  const kiln_tensor *t = ir_in_const(g, n, i);
  if (!t || t->dtype != KILN_F32 || t->numel != 1) return false;
  float z = ((const float *)t->data)[0];
  return z == 0.0f && !signbit(z);
}

/* BatchNormTrain -> Relu: the BatchNorm takes over the Relu's output value.  *fused tells
 * whether it matched. */
static kiln_code fuse_forward(kiln_graph *g, int bi, bool *fused, kiln_err *e) {
  *fused = false;
  const kiln_node *bn = &g->nodes[bi];
  if (strcmp(ir_attr_str(bn, "activation"), "none") || bn->out[0] < 0) return KILN_OK;
  int y = bn->out[0];
  int ri = fuse_sole_reader(g, y);
  if (ri < 0) return KILN_OK;
  const kiln_node *relu = &g->nodes[ri];
  if (relu->op != KILN_OP_Relu || relu->in[0] != y || !f32(ir_out(g, relu, 0))) return KILN_OK;
  KILN_TRY(ir_set_attr_str(g, bi, "activation", "relu", e));
  int r = g->nodes[ri].out[0];
  g->nodes[ri].dead = true;
  g->values[r].producer = bi;
  g->values[y].producer = -1; /* read by nobody now: compaction drops it */
  g->nodes[bi].out[0] = r;
  *fused = true;
  return KILN_OK;
}

/* The (live) BatchNormGrad nodes reading value d, each as its dY only and without a mask
 * yet, when they are all of d's readers; their ids in users[], their count returned (0: no
 * match). */
static int bn_grad_readers(const kiln_graph *g, int d, int *users, int cap) {
  if (pass_is_output(g, d)) return 0;
  int n_users = 0;
  for (int64_t i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    if (n->dead) continue;
    bool reads = false;
    for (int k = 0; k < n->n_in; k++) reads |= n->in[k] == d;
    if (!reads) continue;
    if (n->op != KILN_OP_BatchNormGrad || n->n_in != 5 || n_users == cap) return 0;
    for (int k = 0; k < 4; k++)
      if (n->in[k] == d) return 0;
    users[n_users++] = (int)i;
  }
  return n_users;
}

/* Where(Greater(y, 0), dy, 0) read by BatchNormGrad nodes only: they mask dy themselves.
 * Returns the number of BatchNormGrad nodes rewritten (0: no match). */
static int fuse_backward(kiln_graph *g, int wi, kiln_err *e, kiln_code *rc) {
  const kiln_node *w = &g->nodes[wi];
  if (w->n_in != 3 || !const_zero(g, w, 2)) return 0;
  int pos = w->in[0], dy = w->in[1], d = w->out[0];
  const kiln_node *gt = pass_producer_of(g, pos, KILN_OP_Greater);
  if (!gt || fuse_sole_reader(g, pos) != wi || !const_zero(g, gt, 1)) return 0;
  int y = gt->in[0];
  const kiln_value *vy = &g->values[y], *vdy = &g->values[dy], *vd = &g->values[d];
  if (!f32(vy) || !f32(vdy) || !f32(vd) || !kiln_shape_eq(&vy->shape, &vd->shape) ||
      !kiln_shape_eq(&vdy->shape, &vd->shape))
    return 0;
  int users[16];
  int n_users = bn_grad_readers(g, d, users, 16);
  for (int u = 0; u < n_users; u++) {
    kiln_node *n = &g->nodes[users[u]];
    int *in = kiln_realloc(n->in, 6 * sizeof(int));
    if (!in) {
      *rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      return u;
    }
    n->in = in;
    n->in[4] = dy;
    n->in[5] = y;
    n->n_in = 6;
  }
  if (n_users) {
    g->nodes[wi].dead = true;
    g->nodes[g->values[pos].producer].dead = true;
  }
  return n_users;
}

kiln_code pass_fuse_train_bn(kiln_graph *g, kiln_pass_ctx *cx, kiln_pass_stats *st,
                             kiln_err *e) {
  (void)cx;
  int64_t fwd = 0, masks = 0, grads = 0;
  int64_t n0 = g->n_nodes;
  for (int64_t i = 0; i < n0; i++) {
    if (g->nodes[i].dead || g->nodes[i].op != KILN_OP_BatchNormTrain) continue;
    bool fused;
    KILN_TRY(fuse_forward(g, (int)i, &fused, e));
    fwd += fused;
  }
  for (int64_t i = 0; i < n0; i++) {
    if (g->nodes[i].dead || g->nodes[i].op != KILN_OP_Where) continue;
    kiln_code rc = KILN_OK;
    int k = fuse_backward(g, (int)i, e, &rc);
    if (rc) return rc;
    masks += k > 0;
    grads += k;
  }
  st->changes = fwd + masks;
  snprintf(st->detail, sizeof st->detail,
           "%lld BatchNormTrain + Relu fused; %lld Relu masks moved into %lld BatchNormGrad",
           (long long)fwd, (long long)masks, (long long)grads);
  return KILN_OK;
}
