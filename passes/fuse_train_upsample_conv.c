/* fuse_train_upsample_conv.c — the SPN block's nearest upsampling + convolution in a training
 * step, forward and backward (the inference form is passes/fuse_upsample_conv.c).
 *
 * Forward: Conv(U = Resize(X), W[, B]) becomes kiln.UpsampleConv(X, W[, B]), whose emitter
 * runs the phase decomposition on X with the phase weights summed at run time
 * (codegen/emit_fused.c): a 3x3 convolution after a x2 upsampling costs 4/9 of the products.
 * The Resize stays while something else reads U; dce drops it otherwise.
 *
 * Weight gradient: kiln.ConvGradWeight(U, dY) becomes a kiln.ConvGradWeight over X by phases
 * (dY in X's role, stride s), a MatMul with a constant 0/1 fold matrix and a Transpose
 * (fuse_weight_grad below): 4/9 of the products again, and U is no longer read, so the
 * Resize goes.
 *
 * Backward: kiln.ResizeGrad(T = ConvTranspose(dY, W)) — the input gradient of the same block,
 * passes/grad_nn.c then passes/grad_resize.c — becomes kiln.UpsampleConvGradInput(dY, W): one
 * strided convolution over dY with weights folded at run time
 * (codegen/emit_upconv_grad.c): 4/9 of the ConvTranspose's products for s = 2 and a 3x3
 * kernel, and no ResizeGrad pass.
 *
 * The rewrites compute what they replace up to float rounding (the weights are summed before
 * multiplying; the weight gradient sums its products in another order); the reference
 * kernels of the fused ops run the unfused ops.  The resize's
 * mapping is written as coordinate_transformation_mode asymmetric, nearest_mode floor, which
 * is the same index map (checked: floor(o / s) at every position).
 *
 * Preconditions (each of the three rewrites independently; anything else stays unfused):
 *  - training mode, on a graph that already holds its backward pass (cx->differentiated): the
 *    fused ops have no gradient rules;
 *  - float32, rank 3..5; nearest Resize/Upsample (constant scales or sizes) keeping N and C
 *    and scaling every spatial dim by an integer s in [1, 1024] exactly; coordinate and
 *    rounding modes whose index map is floor(o / s) for the sizes at hand, checked position
 *    by position (asymmetric with floor or legacy rounding, half_pixel with
 *    round_prefer_floor; align_corners with round_prefer_floor too for s = 2; not ceil);
 *  - forward: a plain Conv (not FusedConv) reading U as X, strides 1, kernel dims <= 64;
 *  - backward: a ConvTranspose without bias, strides 1, output_padding 0, pads >= 0, whose
 *    output is read by the ResizeGrad alone and is not a graph output; per dim
 *    (k-1)*dilation + s <= s*k overall (the folded kernel is no larger than s^D kernels:
 *    dilation <= s);
 *  - weight gradient: a kiln.ConvGradWeight reading U as X, group 1, strides 1, kernel dims
 *    <= 64, the same folded-size bound (and at most 4096 folded taps), and non-negative pads
 *    for the phase convolution (begin (k-1)*dil - pad_begin, end as the sizes give). */
#include <string.h>

#include "ir/ops/grad_pool.h"
#include "ir/ops/grad_upconv.h"
#include "passes/fusion.h"

static bool f32(const kiln_value *v) { return v && v->typed && v->dtype == KILN_F32; }

/* The integer spatial scales of a nearest resize from x to y with floor(o / s) index maps, as
 * decoded in p; false when the mapping is anything else. */
static bool nearest_floor_scales(const kiln_resize_params *p, const kiln_shape *x,
                                 int64_t *scale) {
  if (p->mode != KILN_RESIZE_NEAREST || p->exclude_outside || x->rank < 3 || x->rank > 5 ||
      (int)p->coord > (int)KILN_COORD_ASYMMETRIC)
    return false;
  if (p->out.d[0] != x->d[0] || p->out.d[1] != x->d[1]) return false;
  for (int d = 2; d < x->rank; d++) {
    int64_t in_len = x->d[d], out_len = p->out.d[d];
    if (in_len < 1 || out_len % in_len) return false;
    int64_t s = out_len / in_len;
    if (s > 1024 || p->scale[d] != (double)s || p->resized_len[d] != (double)out_len) return false;
    if (!kiln_upconv_floor_map(p->coord, p->nearest, s, in_len)) return false;
    scale[d - 2] = s;
  }
  return true;
}

/* The forward resize node ri: its scales when it is a nearest floor-map upsampling. */
static bool forward_resize(const kiln_graph *g, int ri, int64_t *scale) {
  kiln_resize_params p;
  if (!fuse_resize_params(g, ri, &p) || !f32(ir_out(g, &g->nodes[ri], 0))) return false;
  return nearest_floor_scales(&p, &ir_in(g, &g->nodes[ri], 0)->shape, scale);
}

static kiln_code set_mapping(kiln_graph *g, int nid, const int64_t *scale, int nsp,
                             kiln_err *e) {
  KILN_TRY(ir_set_attr_str(g, nid, "mode", "nearest", e));
  KILN_TRY(ir_set_attr_str(g, nid, "coordinate_transformation_mode", "asymmetric", e));
  KILN_TRY(ir_set_attr_str(g, nid, "nearest_mode", "floor", e));
  return ir_set_attr_ints(g, nid, "scales", scale, nsp, e);
}

/* Conv(Resize(X), W[, B]) -> kiln.UpsampleConv(X, W[, B]). */
static kiln_code fuse_forward(kiln_graph *g, int ci, bool *fused, kiln_err *e) {
  *fused = false;
  const kiln_node *conv = &g->nodes[ci];
  int u = conv->in[0];
  if (u < 0 || g->values[u].producer < 0 || !f32(ir_out(g, conv, 0))) return KILN_OK;
  int ri = g->values[u].producer;
  int64_t scale[3];
  if (!forward_resize(g, ri, scale)) return KILN_OK;
  const kiln_value *w = ir_in(g, conv, 1);
  if (!f32(w) || w->shape.rank != g->values[u].shape.rank) return KILN_OK;
  int nsp = w->shape.rank - 2;
  const int64_t *st;
  int64_t n_st = ir_attr_ints(conv, "strides", &st);
  for (int d = 0; st && d < n_st; d++)
    if (st[d] != 1) return KILN_OK;
  for (int d = 0; d < nsp; d++)
    if (w->shape.d[2 + d] > 64) return KILN_OK;
  int b = conv->n_in > 2 ? conv->in[2] : -1, nid;
  int in[3] = {g->nodes[ri].in[0], conv->in[1], b};
  KILN_TRY(fuse_replace(g, &ci, 1, KILN_OP_UpsampleConv, g->nodes[ci].name, in, b >= 0 ? 3 : 2,
                        g->nodes[ci].out[0], &nid, e));
  KILN_TRY(fuse_copy_attrs(g, ci, nid, fuse_conv_attr_names, e));
  KILN_TRY(set_mapping(g, nid, scale, nsp, e));
  *fused = true;
  return KILN_OK;
}

/* kiln.ResizeGrad(ConvTranspose(dY, W)) -> kiln.UpsampleConvGradInput(dY, W). */
static kiln_code fuse_backward(kiln_graph *g, int ri, bool *fused, kiln_err *e) {
  *fused = false;
  const kiln_node *rg = &g->nodes[ri];
  int t = rg->in[0];
  const kiln_node *ct = pass_producer_of(g, t, KILN_OP_ConvTranspose);
  if (!ct || fuse_sole_reader(g, t) != ri || ct->n_in > 2 || !f32(ir_out(g, rg, 0))) return KILN_OK;
  const kiln_value *tv = &g->values[t], *dy = ir_in(g, ct, 0), *w = ir_in(g, ct, 1);
  if (!f32(tv) || !f32(dy) || !f32(w) || tv->shape.rank < 3 || tv->shape.rank > 5 ||
      w->shape.rank != tv->shape.rank)
    return KILN_OK;
  kiln_shape xs;
  kiln_resize_params p;
  kiln_err ign = {0};
  if (kiln_resize_grad_params(rg, &tv->shape, &xs, &p, &ign)) return KILN_OK;
  int64_t scale[3];
  if (!nearest_floor_scales(&p, &xs, scale)) return KILN_OK;
  int nsp = tv->shape.rank - 2;
  int64_t kernel[NN_WIN_MAX];
  for (int d = 0; d < nsp; d++) kernel[d] = w->shape.d[2 + d];
  nn_window win;
  if (nn_window_transpose(ct, &dy->shape, dy->name, kernel, &win, &ign)) return KILN_OK;
  double folded = 1, full = 1;
  for (int d = 0; d < nsp; d++) {
    if (win.stride[d] != 1 || win.pad_begin[d] < 0 || win.pad_end[d] < 0 ||
        win.out[d] != tv->shape.d[2 + d])
      return KILN_OK;
    folded *= (double)(scale[d] == 1 ? kernel[d] : (kernel[d] - 1) * win.dilation[d] + scale[d]);
    full *= (double)(scale[d] * kernel[d]);
  }
  if (folded > full) return KILN_OK;
  int64_t group = ir_attr_int(ct, "group"), pads[2 * NN_WIN_MAX], ones[NN_WIN_MAX];
  for (int d = 0; d < nsp; d++) {
    pads[d] = win.pad_begin[d], pads[nsp + d] = win.pad_end[d];
    ones[d] = 1;
  }
  int in[2] = {ct->in[0], ct->in[1]}, dead[2] = {g->values[t].producer, ri}, nid;
  int out = rg->out[0];
  KILN_TRY(fuse_replace(g, dead, 2, KILN_OP_UpsampleConvGradInput, rg->name, in, 2, out, &nid,
                        e));
  KILN_TRY(ir_set_attr_ints(g, nid, "pads", pads, 2 * nsp, e));
  KILN_TRY(ir_set_attr_ints(g, nid, "strides", ones, nsp, e));
  KILN_TRY(ir_set_attr_ints(g, nid, "dilations", win.dilation, nsp, e));
  KILN_TRY(ir_set_attr_ints(g, nid, "kernel_shape", kernel, nsp, e));
  KILN_TRY(ir_set_attr_int(g, nid, "group", group, e));
  KILN_TRY(set_mapping(g, nid, scale, nsp, e));
  /* the op's own decoding must give back the ResizeGrad's output shape */
  kiln_upconv_grad q;
  kiln_shape dxs;
  const kiln_value *dyv = &g->values[in[0]], *wv = &g->values[in[1]];
  KILN_TRY(kiln_upconv_grad_get(&g->nodes[nid], &dyv->shape, dyv->name, &wv->shape, wv->name,
                                &q, &dxs, e));
  if (!kiln_shape_eq(&dxs, &xs))
    return kiln_errf(e, KILN_ERR_INTERNAL, "UpsampleConvGradInput's shape disagrees with the "
                     "ResizeGrad it replaces");
  *fused = true;
  return KILN_OK;
}

/* A new value named after `stem` + `suffix` (made unique). */
static kiln_code new_value(kiln_graph *g, const char *stem, const char *suffix, int *id,
                           kiln_err *e) {
  char buf[512], *name = NULL;
  snprintf(buf, sizeof buf, "%s%s", stem, suffix);
  KILN_TRY(ir_unique_name(g, buf, &name, e));
  kiln_code rc = ir_add_value(g, name, id, e);
  kiln_free(name);
  return rc;
}

/* A new int64 [n] constant. */
static kiln_code new_i64s(kiln_graph *g, const char *stem, const char *suffix, const int64_t *v,
                          int n, int *id, kiln_err *e) {
  kiln_tensor *t = NULL;
  KILN_TRY(kiln_tensor_new(KILN_I64, &(kiln_shape){.rank = 1, .d = {n}}, &t, e));
  memcpy(t->data, v, sizeof(int64_t) * (size_t)n);
  return fuse_add_const(g, stem, suffix, t, id, e);
}

/* Moves the last `count` nodes to just after node `at` (ids after `at` shift up by count) and
 * renumbers the producers of the values of the nodes moved or shifted. */
static kiln_code move_after(kiln_graph *g, int at, int count, kiln_err *e) {
  int64_t nn = g->n_nodes, first = nn - count;
  kiln_node *tmp = kiln_malloc(sizeof(kiln_node) * (size_t)count);
  if (!tmp) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  memcpy(tmp, &g->nodes[first], sizeof(kiln_node) * (size_t)count);
  memmove(&g->nodes[at + 1 + count], &g->nodes[at + 1],
          sizeof(kiln_node) * (size_t)(first - at - 1));
  memcpy(&g->nodes[at + 1], tmp, sizeof(kiln_node) * (size_t)count);
  kiln_free(tmp);
  for (int64_t i = at + 1; i < nn; i++) {
    if (g->nodes[i].dead) continue;
    for (int o = 0; o < g->nodes[i].n_out; o++)
      if (g->nodes[i].out[o] >= 0) g->values[g->nodes[i].out[o]].producer = (int)i;
  }
  return KILN_OK;
}

/* kiln.ConvGradWeight(U = Resize(X), dY) of a stride-1, ungrouped convolution, by phases over
 * X.  With o = s*i + p the tap k reads U[s*i + p + k*dil - pb] = X[i + a] (a = floor(q / s),
 * q = p + k*dil - pb), so dW[k] = sum over p, i of dY[s*i + p] X[i + a]; with j = i + a this
 * is sum_j X[j] dY[s*j + d] for d = pb - k*dil + (q mod s).  Numbering d by
 * t = (K-1-k)*dil + r (r = q mod s runs over [0, s) as p does), every (k, r) is one tap of
 *   Wt[c, m, t] = sum_j X[n, c, j] dY[n, m, s*j + t - P],   P = (K-1)*dil - pb
 * — kiln.ConvGradWeight with dY in X's role and X in dY's: stride s, (K-1)*dil + s taps
 * ((K-1)*dil + 1 dilated by dil when s = 1) over L positions — and dW[k] = sum over r of
 * Wt[(K-1-k)*dil + r], the transpose of UpsampleConvGradInput's fold: a MatMul with a
 * constant 0/1 matrix, then channels back to [M, C, k...].  For x2 and 3x3: 16 products per
 * X element against 9 per U element (36), and U is no longer read. */
static kiln_code fuse_weight_grad(kiln_graph *g, int gi, bool *fused, kiln_err *e) {
  *fused = false;
  const kiln_node *n = &g->nodes[gi];
  int u = n->in[0], dyv = n->in[1];
  if (u < 0 || dyv < 0 || g->values[u].producer < 0 || !f32(ir_out(g, n, 0))) return KILN_OK;
  int ri = g->values[u].producer;
  int64_t scale[3];
  if (!forward_resize(g, ri, scale)) return KILN_OK;
  int xv = g->nodes[ri].in[0];
  const kiln_value *us = &g->values[u], *dy = &g->values[dyv], *x = &g->values[xv];
  if (!f32(dy) || !f32(x) || dy->shape.rank != us->shape.rank) return KILN_OK;
  int nsp = us->shape.rank - 2;
  if (ir_attr_int(n, "group") != 1) return KILN_OK;
  const int64_t *ks;
  if (ir_attr_ints(n, "kernel_shape", &ks) != nsp) return KILN_OK;
  nn_window win;
  kiln_err ign = {0};
  if (nn_window_forward(n, &us->shape, us->name, ks, false, &win, &ign)) return KILN_OK;
  int64_t kf[3], dilf[3], pads[6], strides[3], fvol = 1, kvol = 1;
  double folded = 1, full = 1;
  for (int d = 0; d < nsp; d++) {
    int64_t s = scale[d], K = win.kernel[d], dil = win.dilation[d], L = x->shape.d[2 + d];
    if (win.stride[d] != 1 || K > 64 || win.out[d] != dy->shape.d[2 + d]) return KILN_OK;
    kf[d] = s == 1 ? K : (K - 1) * dil + s;
    dilf[d] = s == 1 ? dil : 1;
    pads[d] = (K - 1) * dil - win.pad_begin[d];
    pads[nsp + d] = s * (L - 1) + (kf[d] - 1) * dilf[d] - pads[d] - (win.out[d] - 1);
    if (pads[d] < 0 || pads[nsp + d] < 0) return KILN_OK;
    strides[d] = s;
    fvol *= kf[d], kvol *= K;
    folded *= (double)kf[d];
    full *= (double)(s * K);
  }
  if (folded > full || fvol > 4096) return KILN_OK;
  int64_t M = dy->shape.d[1], C = x->shape.d[1];
  /* S[t, k] = 1 when folded tap t (row-major over kf) sums into tap k (row-major over K) */
  kiln_tensor *S = NULL;
  KILN_TRY(kiln_tensor_new(KILN_F32, &(kiln_shape){.rank = 2, .d = {fvol, kvol}}, &S, e));
  float *sp = S->data;
  for (int64_t t = 0; t < fvol; t++)
    for (int64_t k = 0; k < kvol; k++) {
      int64_t tt = t, kk = k;
      bool hit = true;
      for (int d = nsp - 1; d >= 0; d--) {
        int64_t td = tt % kf[d], kd = kk % win.kernel[d];
        tt /= kf[d], kk /= win.kernel[d];
        int64_t r = td - (win.kernel[d] - 1 - kd) * (scale[d] == 1 ? 1 : win.dilation[d]);
        hit = hit && (scale[d] == 1 ? r == 0 : r >= 0 && r < scale[d]);
      }
      sp[t * kvol + k] = hit ? 1.0f : 0.0f;
    }
  char stem[256];
  snprintf(stem, sizeof stem, "%s", g->values[n->out[0]].name);
  int s_id, shp1, shp2, wt, r1, mm, r2, nid;
  KILN_TRY(fuse_add_const(g, stem, "_phase_fold", S, &s_id, e));
  int64_t dims1[2] = {C * M, fvol}, dims2[5] = {C, M};
  for (int d = 0; d < nsp; d++) dims2[2 + d] = win.kernel[d];
  KILN_TRY(new_i64s(g, stem, "_shape_flat", dims1, 2, &shp1, e));
  KILN_TRY(new_i64s(g, stem, "_shape_cm", dims2, nsp + 2, &shp2, e));
  KILN_TRY(new_value(g, stem, "_phases", &wt, e));
  KILN_TRY(new_value(g, stem, "_flat", &r1, e));
  KILN_TRY(new_value(g, stem, "_folded", &mm, e));
  KILN_TRY(new_value(g, stem, "_cm", &r2, e));
  /* The node itself becomes the phase convolution and the fold follows it, so that they keep
   * the weight gradient's place in the order (ir_toposort visits nodes by index): appended,
   * they would run only when the optimizer needs dW, keeping dY or the phase sums alive
   * through the rest of the backward pass. */
  int dw = g->nodes[gi].out[0];
  kiln_node *pn = &g->nodes[gi];
  pn->in[0] = dyv;
  pn->in[1] = xv;
  pn->out[0] = wt;
  g->values[wt].producer = gi;
  g->values[dw].producer = -1;
  KILN_TRY(ir_set_attr_str(g, gi, "auto_pad", "NOTSET", e));
  KILN_TRY(ir_set_attr_ints(g, gi, "kernel_shape", kf, nsp, e));
  KILN_TRY(ir_set_attr_ints(g, gi, "strides", strides, nsp, e));
  KILN_TRY(ir_set_attr_ints(g, gi, "pads", pads, 2 * nsp, e));
  KILN_TRY(ir_set_attr_ints(g, gi, "dilations", dilf, nsp, e));
  KILN_TRY(ir_set_attr_int(g, gi, "group", 1, e));
  char name[300];
  snprintf(name, sizeof name, "%s/flat", g->nodes[gi].name);
  KILN_TRY(ir_add_node(g, KILN_OP_Reshape, name, (int[]){wt, shp1}, 2, &r1, 1, &nid, e));
  snprintf(name, sizeof name, "%s/fold", g->nodes[gi].name);
  KILN_TRY(ir_add_node(g, KILN_OP_MatMul, name, (int[]){r1, s_id}, 2, &mm, 1, &nid, e));
  snprintf(name, sizeof name, "%s/cm", g->nodes[gi].name);
  KILN_TRY(ir_add_node(g, KILN_OP_Reshape, name, (int[]){mm, shp2}, 2, &r2, 1, &nid, e));
  int64_t perm[5] = {1, 0, 2, 3, 4};
  snprintf(name, sizeof name, "%s/transpose", g->nodes[gi].name);
  KILN_TRY(ir_add_node(g, KILN_OP_Transpose, name, (int[]){r2}, 1, &dw, 1, &nid, e));
  KILN_TRY(ir_set_attr_ints(g, nid, "perm", perm, nsp + 2, e));
  KILN_TRY(move_after(g, gi, 4, e));
  *fused = true;
  return KILN_OK;
}

kiln_code pass_fuse_train_upsample_conv(kiln_graph *g, kiln_pass_ctx *cx, kiln_pass_stats *st,
                                        kiln_err *e) {
  if (cx->mode != KILN_MODE_TRAINING || !cx->differentiated) {
    snprintf(st->detail, sizeof st->detail, "skipped: only training steps with their backward "
             "pass (inference graphs: fuse-upsample-conv)");
    return KILN_OK;
  }
  int64_t fwd = 0, bwd = 0, wgt = 0, n0 = g->n_nodes;
  for (int64_t i = 0; i < n0; i++) {
    bool fused = false;
    if (g->nodes[i].dead) continue;
    if (g->nodes[i].op == KILN_OP_Conv) {
      KILN_TRY(fuse_forward(g, (int)i, &fused, e));
      fwd += fused;
    } else if (g->nodes[i].op == KILN_OP_ResizeGrad) {
      KILN_TRY(fuse_backward(g, (int)i, &fused, e));
      bwd += fused;
    }
  }
  /* backwards: the nodes each rewrite inserts after its node only shift the ones already seen */
  for (int64_t i = n0 - 1; i >= 0; i--) {
    bool fused = false;
    if (g->nodes[i].dead || g->nodes[i].op != KILN_OP_ConvGradWeight) continue;
    KILN_TRY(fuse_weight_grad(g, (int)i, &fused, e));
    wgt += fused;
  }
  st->changes = fwd + bwd + wgt;
  snprintf(st->detail, sizeof st->detail,
           "%lld forward Resize+Conv -> kiln.UpsampleConv, %lld backward "
           "ConvTranspose+ResizeGrad -> kiln.UpsampleConvGradInput, %lld weight gradients "
           "by phases over X",
           (long long)fwd, (long long)bwd, (long long)wgt);
  return KILN_OK;
}
