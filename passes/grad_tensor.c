/* grad_tensor.c — gradient rules of the data-movement ops (see passes/autodiff.h): Flatten,
 * Reshape, Squeeze, Unsqueeze, Transpose, Concat, Split, Slice, Expand, Gather (w.r.t. the
 * data) and Pad (constant mode).  Each gradient moves the output gradient back with forward
 * ops: a reshape, the inverse permutation, slices or a concatenation, zero padding. */
#include <string.h>

#include "ir/ops/common.h"
#include "ir/ops/resize.h"
#include "ir/ops/tensor_ops.h"
#include "passes/grad_ops_util.h"

/* Flatten, Reshape, Squeeze, Unsqueeze: the same elements in the same order. */
static kiln_code g_reshape(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                           const bool *w, kiln_err *e) {
  kiln_shape s = gu_shape(gc, n->in[0]);
  return grad_reshape(gc, dy[0], &s, &dx[0], e);
}

static kiln_code g_transpose(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                             const bool *w, kiln_err *e) {
  int r = gu_shape(gc, n->in[0]).rank;
  const int64_t *perm;
  ir_attr_ints(n, "perm", &perm);
  int64_t inv[KILN_MAX_RANK];
  for (int i = 0; i < r; i++) {
    int64_t p = ir_attr_has(n, "perm") ? perm[i] : r - 1 - i;
    inv[p] = i;
  }
  return gu_transpose(gc, dy[0], inv, r, &dx[0], e);
}

/* Concat: each input's gradient is its slice of dy along the axis. */
static kiln_code g_concat(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                          const bool *w, kiln_err *e) {
  kiln_shape s0 = gu_shape(gc, n->in[0]);
  int axis;
  KILN_TRY(ir_axis(ir_attr_int(n, "axis"), s0.rank, &axis, e));
  int64_t off = 0;
  for (int i = 0; i < n->n_in; i++) {
    if (n->in[i] < 0) continue;
    int64_t len = gu_shape(gc, n->in[i]).d[axis];
    if (w[i]) {
      if (len == gu_shape(gc, dy[0]).d[axis]) {
        dx[i] = dy[0];
      } else {
        int64_t st = off, en = off + len, ax = axis;
        KILN_TRY(gu_slice(gc, dy[0], &st, &en, &ax, NULL, 1, &dx[i], e));
      }
    }
    off += len;
  }
  return KILN_OK;
}

/* Split: the output gradients concatenated back, zeros for outputs without one. */
static kiln_code g_split(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                         const bool *w, kiln_err *e) {
  kiln_shape xs = gu_shape(gc, n->in[0]);
  int axis;
  KILN_TRY(ir_axis(ir_attr_int(n, "axis"), xs.rank, &axis, e));
  int parts[64], np = 0;
  for (int o = 0; o < n->n_out && o < 64; o++) {
    if (n->out[o] < 0) continue; /* an omitted output covers no elements */
    if (dy[o] >= 0) {
      parts[np++] = dy[o];
    } else {
      kiln_shape s = gu_shape(gc, n->out[o]);
      if (s.d[axis] == 0) continue;
      KILN_TRY(gu_zeros(gc, &s, &parts[np++], e));
    }
  }
  if (np == 0) return gu_zeros(gc, &xs, &dx[0], e);
  return gu_concat(gc, parts, np, axis, &dx[0], e);
}

/* Slice's starts/ends/axes/steps from attributes (opset < 10) or constant inputs, resolved. */
static kiln_code slice_plan_of(kiln_grad_ctx *gc, const kiln_node *n, const kiln_shape *xs,
                               kiln_slice_plan *p, kiln_err *e) {
  kiln_graph *g = grad_graph(gc);
  int64_t st[KILN_MAX_RANK], en[KILN_MAX_RANK], ax[KILN_MAX_RANK], sp[KILN_MAX_RANK];
  int ns = 0, ne = 0, na = 0, nst = 0;
  bool has_axes, has_steps = false;
  if (n->opset < 10) {
    const int64_t *a;
    ns = (int)ir_attr_ints(n, "starts", &a);
    if (ns > KILN_MAX_RANK) ns = KILN_MAX_RANK;
    if (ns) memcpy(st, a, sizeof(int64_t) * (size_t)ns);
    ne = (int)ir_attr_ints(n, "ends", &a);
    if (ne > KILN_MAX_RANK) ne = KILN_MAX_RANK;
    if (ne) memcpy(en, a, sizeof(int64_t) * (size_t)ne);
    has_axes = ir_attr_has(n, "axes");
    na = (int)ir_attr_ints(n, "axes", &a);
    if (na > KILN_MAX_RANK) na = KILN_MAX_RANK;
    if (na) memcpy(ax, a, sizeof(int64_t) * (size_t)na);
  } else {
    KILN_TRY(ir_const_ints(g, n, 1, st, KILN_MAX_RANK, &ns, e));
    KILN_TRY(ir_const_ints(g, n, 2, en, KILN_MAX_RANK, &ne, e));
    has_axes = ir_in(g, n, 3) != NULL;
    if (has_axes) KILN_TRY(ir_const_ints(g, n, 3, ax, KILN_MAX_RANK, &na, e));
    has_steps = ir_in(g, n, 4) != NULL;
    if (has_steps) KILN_TRY(ir_const_ints(g, n, 4, sp, KILN_MAX_RANK, &nst, e));
  }
  if (ne != ns || (has_axes && na != ns) || (has_steps && nst != ns))
    return kiln_errf(e, KILN_ERR_SHAPE, "Slice starts, ends, axes and steps differ in length");
  return kiln_slice_resolve(xs, st, en, has_axes ? ax : NULL, has_steps ? sp : NULL, ns, p, e);
}

/* Slice: dy scattered back into zeros.  A negative step is first undone by reversing dy
 * along that axis; a step s > 1 spreads dy's m elements to every s-th position (insert an
 * axis of size 1 after it, zero-pad that to s, merge: m*s elements with dy at multiples of
 * s); finally one Pad places the block at its start and crops or pads the end. */
static kiln_code g_slice(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                         const bool *w, kiln_err *e) {
  kiln_shape xs = gu_shape(gc, n->in[0]);
  kiln_slice_plan p;
  KILN_TRY(slice_plan_of(gc, n, &xs, &p, e));
  int r = xs.rank;
  if (gu_numel(&p.out) == 0) return gu_zeros(gc, &xs, &dx[0], e);
  int cur = dy[0];
  int64_t pads[2 * KILN_MAX_RANK];
  for (int a = 0; a < r; a++) {
    int64_t m = p.out.d[a], step = p.step[a], lo = p.start[a];
    if (step < 0) {
      int64_t st = -1, en = INT64_MIN, ax = a, sp = -1;
      if (m > 1) KILN_TRY(gu_slice(gc, cur, &st, &en, &ax, &sp, 1, &cur, e));
      lo = p.start[a] + (m - 1) * step;
      step = -step;
    }
    int64_t span = m;
    if (step > 1 && m > 1) {
      if (r + 1 > KILN_MAX_RANK)
        return kiln_errf(e, KILN_ERR_UNSUPPORTED,
                         "the gradient of a strided Slice of rank %d is not supported", r);
      kiln_shape s = gu_shape(gc, cur), s1 = s;
      for (int i = r; i > a + 1; i--) s1.d[i] = s1.d[i - 1];
      s1.d[a + 1] = 1;
      s1.rank = r + 1;
      KILN_TRY(grad_reshape(gc, cur, &s1, &cur, e));
      int64_t pp[2 * (KILN_MAX_RANK + 1)] = {0};
      pp[(r + 1) + a + 1] = step - 1;
      KILN_TRY(gu_pad(gc, cur, pp, r + 1, &cur, e));
      s.d[a] = m * step;
      KILN_TRY(grad_reshape(gc, cur, &s, &cur, e));
      span = m * step;
    }
    pads[a] = lo;
    pads[r + a] = xs.d[a] - lo - span; /* negative: crop the zeros after the last element */
  }
  return gu_pad(gc, cur, pads, r, &dx[0], e);
}

static kiln_code g_expand(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                          const bool *w, kiln_err *e) {
  return gu_to_input(gc, dy[0], n->in[0], &dx[0], e);
}

/* Pad (constant mode): crop what was padded and zero-pad what was cropped; the constant
 * value's gradient is the sum of dy over the padding. */
static kiln_code g_pad(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                       const bool *w, kiln_err *e) {
  kiln_graph *g = grad_graph(gc);
  kiln_shape xs = gu_shape(gc, n->in[0]);
  kiln_pad_params p;
  KILN_TRY(kiln_pad_params_get(g, n, &xs, n->n_in > 1 ? ir_in_const(g, n, 1) : NULL, &p, e));
  if (p.mode != KILN_PAD_CONSTANT)
    return kiln_errf(e, KILN_ERR_UNSUPPORTED,
                     "autodiff supports Pad in constant mode only, not '%s'",
                     ir_attr_str(n, "mode"));
  int r = xs.rank;
  int64_t pads[2 * KILN_MAX_RANK];
  for (int a = 0; a < r; a++) pads[a] = -p.begin[a], pads[r + a] = -p.end[a];
  int d;
  KILN_TRY(gu_pad(gc, dy[0], pads, r, &d, e));
  if (w[0]) dx[0] = d;
  if (n->n_in > 2 && w[2]) {
    int total, inner, diff;
    KILN_TRY(gu_sum_all(gc, dy[0], &total, e));
    KILN_TRY(gu_sum_all(gc, d, &inner, e));
    KILN_TRY(gu_bin(gc, KILN_OP_Sub, total, inner, &diff, e));
    kiln_shape cs = gu_shape(gc, n->in[2]);
    KILN_TRY(grad_reshape(gc, diff, &cs, &dx[2], e));
  }
  return KILN_OK;
}

/* Gather w.r.t. the data: a scatter-add, composed as a product with a one-hot matrix.  With
 * data viewed as [P, K, S] (K the gathered axis) and dy as [P, Q, S] (Q = number of indices),
 * dx[p, k, s] = sum_q onehot[k, q] dy[p, q, s] where onehot[k, q] = (index q == k): one
 * MatMul, O(P*K*Q*S).  Meant for the small gathers of CNN heads, not embeddings. */
static kiln_code g_gather(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                          const bool *w, kiln_err *e) {
  kiln_shape xs = gu_shape(gc, n->in[0]), is = gu_shape(gc, n->in[1]);
  kiln_dtype it = grad_val(gc, n->in[1])->dtype;
  int axis;
  KILN_TRY(ir_axis(ir_attr_int(n, "axis"), xs.rank, &axis, e));
  int64_t P = 1, K = xs.d[axis], S = 1, Q = gu_numel(&is);
  for (int i = 0; i < axis; i++) P *= xs.d[i];
  for (int i = axis + 1; i < xs.rank; i++) S *= xs.d[i];
  if (Q == 0 || K == 0 || P * S == 0) return gu_zeros(gc, &xs, &dx[0], e);
  int idx, zero, kk, neg, wrapped, ar, oh, ohf, d3, prod;
  kiln_shape row = kiln_shape_make(2, (int64_t[]){1, Q});
  KILN_TRY(grad_reshape(gc, n->in[1], &row, &idx, e));
  /* negative indices count from the end */
  KILN_TRY(gu_const_int(gc, it, 0, &zero, e));
  KILN_TRY(gu_const_int(gc, it, K, &kk, e));
  KILN_TRY(gu_bin(gc, KILN_OP_Less, idx, zero, &neg, e));
  KILN_TRY(gu_bin(gc, KILN_OP_Add, idx, kk, &wrapped, e));
  KILN_TRY(gu_where(gc, neg, wrapped, idx, &idx, e));
  kiln_tensor *t;
  KILN_TRY(kiln_tensor_new(it, &(kiln_shape){.rank = 2, .d = {K, 1}}, &t, e));
  for (int64_t k = 0; k < K; k++) kiln_tensor_set_f(t, k, (double)k);
  KILN_TRY(gu_const(gc, t, &ar, e));
  KILN_TRY(gu_bin(gc, KILN_OP_Equal, ar, idx, &oh, e));
  KILN_TRY(gu_cast(gc, oh, KILN_F32, &ohf, e));
  kiln_shape s3 = kiln_shape_make(3, (int64_t[]){P, Q, S});
  KILN_TRY(grad_reshape(gc, dy[0], &s3, &d3, e));
  KILN_TRY(gu_bin(gc, KILN_OP_MatMul, ohf, d3, &prod, e));
  return grad_reshape(gc, prod, &xs, &dx[0], e);
}

void grad_register_tensor(kiln_grad_fn *table) {
  table[KILN_OP_Flatten] = g_reshape;
  table[KILN_OP_Reshape] = g_reshape;
  table[KILN_OP_Squeeze] = g_reshape;
  table[KILN_OP_Unsqueeze] = g_reshape;
  table[KILN_OP_Transpose] = g_transpose;
  table[KILN_OP_Concat] = g_concat;
  table[KILN_OP_Split] = g_split;
  table[KILN_OP_Slice] = g_slice;
  table[KILN_OP_Expand] = g_expand;
  table[KILN_OP_Pad] = g_pad;
  table[KILN_OP_Gather] = g_gather;
}
