/* grad_ops_util.h — node-building shorthands for the gradient rules of grad_linalg.c,
 * grad_tensor.c, grad_reduce.c and grad_activations.c.  Each helper adds its node (opset 17
 * conventions: axes, pads and slice bounds as constant inputs), sets its attributes and infers
 * the shapes of everything the rule built so far, so its result is typed and can be read with
 * grad_val() at once.  Shapes are returned by value: adding values may move g->values. */
#ifndef KILN_GRAD_OPS_UTIL_H
#define KILN_GRAD_OPS_UTIL_H

#include "passes/autodiff.h"

static inline kiln_shape gu_shape(kiln_grad_ctx *gc, int v) { return grad_val(gc, v)->shape; }

static inline int64_t gu_numel(const kiln_shape *s) {
  int64_t n = 1;
  for (int i = 0; i < s->rank; i++) n *= s->d[i];
  return n;
}

/* out = op(in...), typed. */
static inline kiln_code gu_op(kiln_grad_ctx *gc, kiln_op op, const int *in, int n_in, int *out,
                              kiln_err *e) {
  KILN_TRY(grad_op1(gc, op, in, n_in, out, NULL, e));
  return grad_infer_new(gc, e);
}

static inline kiln_code gu_un(kiln_grad_ctx *gc, kiln_op op, int a, int *out, kiln_err *e) {
  return gu_op(gc, op, (int[]){a}, 1, out, e);
}

static inline kiln_code gu_bin(kiln_grad_ctx *gc, kiln_op op, int a, int b, int *out, kiln_err *e) {
  return gu_op(gc, op, (int[]){a, b}, 2, out, e);
}

/* out = a op scalar s */
static inline kiln_code gu_bin_c(kiln_grad_ctx *gc, kiln_op op, int a, double s, int *out,
                                 kiln_err *e) {
  int c;
  KILN_TRY(grad_const_f32(gc, (float)s, &c, e));
  return gu_bin(gc, op, a, c, out, e);
}

/* out = a * s (a itself when s == 1) */
static inline kiln_code gu_scale(kiln_grad_ctx *gc, int a, double s, int *out, kiln_err *e) {
  if (s == 1.0) {
    *out = a;
    return KILN_OK;
  }
  return gu_bin_c(gc, KILN_OP_Mul, a, s, out, e);
}

static inline kiln_code gu_where(kiln_grad_ctx *gc, int c, int a, int b, int *out, kiln_err *e) {
  return gu_op(gc, KILN_OP_Where, (int[]){c, a, b}, 3, out, e);
}

/* out = cond ? a : 0 (zero_when_true: cond ? 0 : a) */
static inline kiln_code gu_mask(kiln_grad_ctx *gc, int cond, int a, bool zero_when_true, int *out,
                                kiln_err *e) {
  int z;
  KILN_TRY(grad_const_f32(gc, 0.0f, &z, e));
  return zero_when_true ? gu_where(gc, cond, z, a, out, e) : gu_where(gc, cond, a, z, out, e);
}

/* A constant that takes ownership of t. */
static inline kiln_code gu_const(kiln_grad_ctx *gc, kiln_tensor *t, int *out, kiln_err *e) {
  char *nm = NULL;
  kiln_code rc = ir_unique_name(grad_graph(gc), "grad_const", &nm, e);
  if (rc) {
    kiln_tensor_free(t);
    return rc;
  }
  rc = ir_add_const(grad_graph(gc), nm, t, false, out, e);
  kiln_free(nm);
  return rc;
}

/* A float32 constant of zeros. */
static inline kiln_code gu_zeros(kiln_grad_ctx *gc, const kiln_shape *s, int *out, kiln_err *e) {
  kiln_tensor *t;
  KILN_TRY(kiln_tensor_new(KILN_F32, s, &t, e));
  return gu_const(gc, t, out, e);
}

/* A scalar constant of an integer dtype. */
static inline kiln_code gu_const_int(kiln_grad_ctx *gc, kiln_dtype dt, int64_t v, int *out,
                                     kiln_err *e) {
  kiln_tensor *t;
  kiln_shape s = {.rank = 0};
  KILN_TRY(kiln_tensor_new(dt, &s, &t, e));
  if (dt == KILN_I32)
    ((int32_t *)t->data)[0] = (int32_t)v;
  else
    ((int64_t *)t->data)[0] = v;
  return gu_const(gc, t, out, e);
}

/* ReduceSum/Max/Min/... over `axes` (keepdims as given); with no axes, x itself (ONNX would
 * reduce everything). */
static inline kiln_code gu_reduce(kiln_grad_ctx *gc, kiln_op op, int x, const int64_t *axes,
                                  int n_axes, bool keep, int *out, kiln_err *e) {
  if (n_axes == 0) {
    *out = x;
    return KILN_OK;
  }
  int ax, nid;
  KILN_TRY(grad_const_i64s(gc, axes, n_axes, &ax, e));
  if (op == KILN_OP_ReduceSum) {
    KILN_TRY(grad_op1(gc, op, (int[]){x, ax}, 2, out, &nid, e));
  } else { /* opset 17: the other reductions take axes as an attribute */
    KILN_TRY(grad_op1(gc, op, (int[]){x}, 1, out, &nid, e));
    KILN_TRY(ir_set_attr_ints(grad_graph(gc), nid, "axes", axes, n_axes, e));
  }
  KILN_TRY(ir_set_attr_int(grad_graph(gc), nid, "keepdims", keep, e));
  return grad_infer_new(gc, e);
}

/* Sum of every element, as a scalar. */
static inline kiln_code gu_sum_all(kiln_grad_ctx *gc, int x, int *out, kiln_err *e) {
  kiln_shape s = gu_shape(gc, x);
  int64_t axes[KILN_MAX_RANK];
  for (int i = 0; i < s.rank; i++) axes[i] = i;
  return gu_reduce(gc, KILN_OP_ReduceSum, x, axes, s.rank, false, out, e);
}

/* Expand x to shape s (x itself when it already has it). */
static inline kiln_code gu_expand(kiln_grad_ctx *gc, int x, const kiln_shape *s, int *out,
                                  kiln_err *e) {
  kiln_shape xs = gu_shape(gc, x);
  if (kiln_shape_eq(&xs, s)) {
    *out = x;
    return KILN_OK;
  }
  int sh;
  KILN_TRY(grad_const_i64s(gc, s->d, s->rank, &sh, e));
  return gu_op(gc, KILN_OP_Expand, (int[]){x, sh}, 2, out, e);
}

static inline kiln_code gu_transpose(kiln_grad_ctx *gc, int x, const int64_t *perm, int r, int *out,
                                     kiln_err *e) {
  bool ident = true;
  for (int i = 0; i < r; i++) ident = ident && perm[i] == i;
  if (ident) {
    *out = x;
    return KILN_OK;
  }
  int nid;
  KILN_TRY(grad_op1(gc, KILN_OP_Transpose, (int[]){x}, 1, out, &nid, e));
  KILN_TRY(ir_set_attr_ints(grad_graph(gc), nid, "perm", perm, r, e));
  return grad_infer_new(gc, e);
}

/* Swaps the last two axes. */
static inline kiln_code gu_swap_last2(kiln_grad_ctx *gc, int x, int *out, kiln_err *e) {
  int r = gu_shape(gc, x).rank;
  int64_t perm[KILN_MAX_RANK];
  for (int i = 0; i < r; i++) perm[i] = i;
  perm[r - 2] = r - 1, perm[r - 1] = r - 2;
  return gu_transpose(gc, x, perm, r, out, e);
}

static inline kiln_code gu_slice(kiln_grad_ctx *gc, int x, const int64_t *starts,
                                 const int64_t *ends, const int64_t *axes, const int64_t *steps,
                                 int n, int *out, kiln_err *e) {
  int st, en, ax, sp = -1;
  KILN_TRY(grad_const_i64s(gc, starts, n, &st, e));
  KILN_TRY(grad_const_i64s(gc, ends, n, &en, e));
  KILN_TRY(grad_const_i64s(gc, axes, n, &ax, e));
  if (steps) KILN_TRY(grad_const_i64s(gc, steps, n, &sp, e));
  return gu_op(gc, KILN_OP_Slice, (int[]){x, st, en, ax, sp}, steps ? 5 : 4, out, e);
}

/* Zero padding (negative pads crop); pads = [begin..., end...] of x's rank.  x itself when
 * every pad is 0. */
static inline kiln_code gu_pad(kiln_grad_ctx *gc, int x, const int64_t *pads, int r, int *out,
                               kiln_err *e) {
  bool zero = true;
  for (int i = 0; i < 2 * r; i++) zero = zero && pads[i] == 0;
  if (zero) {
    *out = x;
    return KILN_OK;
  }
  int p;
  KILN_TRY(grad_const_i64s(gc, pads, 2 * r, &p, e));
  return gu_op(gc, KILN_OP_Pad, (int[]){x, p}, 2, out, e);
}

static inline kiln_code gu_cast(kiln_grad_ctx *gc, int x, kiln_dtype to, int *out, kiln_err *e) {
  if (grad_val(gc, x)->dtype == to) {
    *out = x;
    return KILN_OK;
  }
  int nid;
  KILN_TRY(grad_op1(gc, KILN_OP_Cast, (int[]){x}, 1, out, &nid, e));
  KILN_TRY(ir_set_attr_int(grad_graph(gc), nid, "to", to, e));
  return grad_infer_new(gc, e);
}

/* alpha * op(a) @ op(b) */
static inline kiln_code gu_gemm(kiln_grad_ctx *gc, int a, int b, bool ta, bool tb, double alpha,
                                int *out, kiln_err *e) {
  int nid;
  kiln_graph *g = grad_graph(gc);
  KILN_TRY(grad_op1(gc, KILN_OP_Gemm, (int[]){a, b}, 2, out, &nid, e));
  if (ta) KILN_TRY(ir_set_attr_int(g, nid, "transA", 1, e));
  if (tb) KILN_TRY(ir_set_attr_int(g, nid, "transB", 1, e));
  if (alpha != 1.0) KILN_TRY(ir_set_attr_float(g, nid, "alpha", alpha, e));
  return grad_infer_new(gc, e);
}

static inline kiln_code gu_concat(kiln_grad_ctx *gc, const int *in, int n, int axis, int *out,
                                  kiln_err *e) {
  if (n == 1) {
    *out = in[0];
    return KILN_OK;
  }
  int nid;
  KILN_TRY(grad_op1(gc, KILN_OP_Concat, in, n, out, &nid, e));
  KILN_TRY(ir_set_attr_int(grad_graph(gc), nid, "axis", axis, e));
  return grad_infer_new(gc, e);
}

/* d (a broadcast result's gradient) summed down to input `in`'s shape. */
static inline kiln_code gu_to_input(kiln_grad_ctx *gc, int d, int in, int *out, kiln_err *e) {
  kiln_shape s = gu_shape(gc, in);
  return grad_unbroadcast(gc, d, &s, out, e);
}

#endif
