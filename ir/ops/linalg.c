/* linalg.c — op definitions of the linalg family: Gemm, MatMul, Softmax, LogSoftmax and the
 * classification losses SoftmaxCrossEntropyLoss and NegativeLogLikelihoodLoss. */
#include <string.h>

#include "ir/ops/common.h"
#include "ir/ops/linalg.h"

/* ---- shared layout rules ---- */

kiln_code kiln_softmax_dims(const kiln_node *n, const kiln_shape *s, int64_t *outer, int64_t *len,
                            int64_t *inner, kiln_err *e) {
  int r = s->rank;
  if (r < 1) return kiln_errf(e, KILN_ERR_SHAPE, "the input must have rank >= 1, not 0");
  bool coerce_2d = n->opset < 13;
  int64_t axis = ir_attr_has(n, "axis") ? ir_attr_int(n, "axis") : (coerce_2d ? 1 : -1);
  int ax;
  /* Before opset 13 axis == rank is meaningful: the input is coerced to [numel, 1]. */
  if (coerce_2d && axis == r)
    ax = r;
  else
    KILN_TRY(ir_axis(axis, r, &ax, e));
  int64_t o = 1, l = 1, in = 1;
  for (int i = 0; i < ax; i++) o *= s->d[i];
  if (coerce_2d) {
    for (int i = ax; i < r; i++) l *= s->d[i];
  } else {
    l = s->d[ax];
    for (int i = ax + 1; i < r; i++) in *= s->d[i];
  }
  *outer = o, *len = l, *inner = in;
  return KILN_OK;
}

kiln_code kiln_matmul_dims_of(const kiln_shape *a, const char *a_name, const kiln_shape *b,
                              const char *b_name, kiln_matmul_dims *d, kiln_err *e) {
  char sa[160], sb[160];
  if (a->rank < 1 || b->rank < 1)
    return kiln_errf(e, KILN_ERR_SHAPE, "MatMul operands must have rank >= 1 ('%s' %s, '%s' %s)",
                     a_name, kiln_shape_str(a, sa, sizeof sa), b_name,
                     kiln_shape_str(b, sb, sizeof sb));
  bool a_vec = a->rank == 1, b_vec = b->rank == 1;
  kiln_shape pa = a_vec ? kiln_shape_make(2, (int64_t[]){1, a->d[0]}) : *a;
  kiln_shape pb = b_vec ? kiln_shape_make(2, (int64_t[]){b->d[0], 1}) : *b;
  memset(d, 0, sizeof *d);
  d->m = pa.d[pa.rank - 2];
  d->k = pa.d[pa.rank - 1];
  d->n = pb.d[pb.rank - 1];
  if (pb.d[pb.rank - 2] != d->k)
    return kiln_errf(e, KILN_ERR_SHAPE,
                     "MatMul inner dimensions differ: '%s' %s has %lld columns, '%s' %s has "
                     "%lld rows",
                     a_name, kiln_shape_str(a, sa, sizeof sa), (long long)d->k, b_name,
                     kiln_shape_str(b, sb, sizeof sb), (long long)pb.d[pb.rank - 2]);
  d->a_batch = kiln_shape_make(pa.rank - 2, pa.d);
  d->b_batch = kiln_shape_make(pb.rank - 2, pb.d);
  kiln_err be = {0};
  if (ir_broadcast(&d->a_batch, &d->b_batch, &d->batch, &be))
    return kiln_errf(e, KILN_ERR_SHAPE, "MatMul batch dims of '%s' %s and '%s' %s do not broadcast",
                     a_name, kiln_shape_str(a, sa, sizeof sa), b_name,
                     kiln_shape_str(b, sb, sizeof sb));
  d->out = d->batch;
  if (!a_vec) d->out.d[d->out.rank++] = d->m;
  if (!b_vec) d->out.d[d->out.rank++] = d->n;
  return KILN_OK;
}

static kiln_code same_dtype(const kiln_value *a, const kiln_value *b, kiln_err *e) {
  if (a->dtype == b->dtype) return KILN_OK;
  return kiln_errf(e, KILN_ERR_SHAPE, "inputs '%s' (%s) and '%s' (%s) have different dtypes",
                   a->name, kiln_dtype_name(a->dtype), b->name, kiln_dtype_name(b->dtype));
}

/* ---- Gemm ---- */

static kiln_code infer_gemm(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT_NUM, 2, 2, e));
  KILN_TRY(ir_check_input(g, n, 1, KILN_DT_NUM, 2, 2, e));
  const kiln_value *a = ir_in(g, n, 0), *b = ir_in(g, n, 1), *c = ir_in(g, n, 2);
  KILN_TRY(same_dtype(a, b, e));
  bool ta = ir_attr_int(n, "transA") != 0, tb = ir_attr_int(n, "transB") != 0;
  int64_t m = a->shape.d[ta ? 1 : 0], ka = a->shape.d[ta ? 0 : 1];
  int64_t kb = b->shape.d[tb ? 1 : 0], nn = b->shape.d[tb ? 0 : 1];
  char sa[160], sb[160];
  if (ka != kb)
    return kiln_errf(e, KILN_ERR_SHAPE,
                     "inner dimensions differ: A '%s' %s (transA=%d) has K=%lld, B '%s' %s "
                     "(transB=%d) has K=%lld",
                     a->name, kiln_shape_str(&a->shape, sa, sizeof sa), ta, (long long)ka, b->name,
                     kiln_shape_str(&b->shape, sb, sizeof sb), tb, (long long)kb);
  kiln_shape y = kiln_shape_make(2, (int64_t[]){m, nn});
  if (c) {
    KILN_TRY(ir_check_input(g, n, 2, KILN_DT_NUM, 0, 2, e));
    KILN_TRY(same_dtype(a, c, e));
    /* C broadcasts unidirectionally to [M, N]; before opset 7 only with broadcast=1. */
    bool exact = n->opset < 7 && ir_attr_int(n, "broadcast") == 0;
    bool ok = exact ? kiln_shape_eq(&c->shape, &y) : true;
    for (int i = 0; i < c->shape.rank && ok; i++) {
      int64_t cd = c->shape.d[c->shape.rank - 1 - i], yd = y.d[1 - i];
      if (cd != yd && cd != 1) ok = false;
    }
    if (!ok)
      return kiln_errf(e, KILN_ERR_SHAPE, "C '%s' %s does not broadcast to the output %s%s",
                       c->name, kiln_shape_str(&c->shape, sa, sizeof sa),
                       kiln_shape_str(&y, sb, sizeof sb),
                       exact ? " (before opset 7 broadcasting needs broadcast=1)" : "");
  }
  return ir_set_output(g, n, 0, a->dtype, &y, e);
}

static int64_t macs_gemm(const kiln_graph *g, const kiln_node *n) {
  const kiln_value *a = ir_in(g, n, 0), *y = ir_out(g, n, 0);
  if (!a || !y || a->shape.rank != 2 || y->shape.rank != 2) return 0;
  int64_t k = a->shape.d[ir_attr_int(n, "transA") ? 0 : 1];
  return y->shape.d[0] * y->shape.d[1] * k;
}

static const kiln_attr_spec gemm_attrs[] = {
    A_FLOAT("alpha", 1.0), A_FLOAT("beta", 1.0), A_INT("transA", 0), A_INT("transB", 0),
    A_INT("broadcast", 0), /* opset < 7: C may broadcast only when set */
};

const kiln_op_def kiln_opdef_Gemm = {
    .name = "Gemm", .domain = "", .min_in = 2, .max_in = 3, .min_out = 1, .max_out = 1,
    .attrs = gemm_attrs, .n_attrs = NELEM(gemm_attrs), .infer = infer_gemm, .macs = macs_gemm,
    .doc = "Y = alpha * op(A) @ op(B) + beta * C, op = optional transpose, C broadcast to [M,N]"};

/* ---- MatMul ---- */

static kiln_code infer_matmul(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT_NUM, 1, KILN_MAX_RANK, e));
  KILN_TRY(ir_check_input(g, n, 1, KILN_DT_NUM, 1, KILN_MAX_RANK, e));
  const kiln_value *a = ir_in(g, n, 0), *b = ir_in(g, n, 1);
  KILN_TRY(same_dtype(a, b, e));
  kiln_matmul_dims d;
  KILN_TRY(kiln_matmul_dims_of(&a->shape, a->name, &b->shape, b->name, &d, e));
  return ir_set_output(g, n, 0, a->dtype, &d.out, e);
}

static int64_t macs_matmul(const kiln_graph *g, const kiln_node *n) {
  const kiln_value *a = ir_in(g, n, 0), *b = ir_in(g, n, 1);
  kiln_matmul_dims d;
  kiln_err e = {0};
  int64_t batch;
  if (!a || !b || kiln_matmul_dims_of(&a->shape, a->name, &b->shape, b->name, &d, &e) ||
      !kiln_shape_numel(&d.batch, &batch))
    return 0;
  return batch * d.m * d.n * d.k;
}

const kiln_op_def kiln_opdef_MatMul = {
    .name = "MatMul", .domain = "", .min_in = 2, .max_in = 2, .min_out = 1, .max_out = 1,
    .infer = infer_matmul, .macs = macs_matmul,
    .doc = "Y = A @ B with numpy semantics (1-D promotion, broadcast batch dims)"};

/* ---- Softmax, LogSoftmax ---- */

static kiln_code infer_softmax(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_F32), 1, KILN_MAX_RANK, e));
  const kiln_value *x = ir_in(g, n, 0);
  int64_t outer, len, inner;
  KILN_TRY(kiln_softmax_dims(n, &x->shape, &outer, &len, &inner, e));
  return ir_set_output(g, n, 0, x->dtype, &x->shape, e);
}

/* The default axis depends on the opset (1 before 13, -1 from 13): kiln_softmax_dims reads
 * the attribute only when present, so the schema default here is never used. */
static const kiln_attr_spec softmax_attrs[] = {A_INT("axis", -1)};

const kiln_op_def kiln_opdef_Softmax = {
    .name = "Softmax", .domain = "", .min_in = 1, .max_in = 1, .min_out = 1, .max_out = 1,
    .attrs = softmax_attrs, .n_attrs = NELEM(softmax_attrs), .infer = infer_softmax,
    .doc = "y = exp(x - max) / sum(exp(x - max)) over axis (opset < 13: over the dims from axis)"};

const kiln_op_def kiln_opdef_LogSoftmax = {
    .name = "LogSoftmax", .domain = "", .min_in = 1, .max_in = 1, .min_out = 1, .max_out = 1,
    .attrs = softmax_attrs, .n_attrs = NELEM(softmax_attrs), .infer = infer_softmax,
    .doc = "y = x - max - log(sum(exp(x - max))) over axis (opset < 13: over the dims from axis)"};

/* ---- SoftmaxCrossEntropyLoss, NegativeLogLikelihoodLoss ---- */

/* Inputs (scores or log-probabilities [N,C,d1..], labels [N,d1..], weights [C]); output 0
 * the loss ([N,d1..] for reduction "none", else a scalar), output 1 (SCE) the log-probs. */
static kiln_code infer_loss(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_F32), 2, KILN_MAX_RANK, e));
  const kiln_value *x = ir_in(g, n, 0);
  int r = x->shape.rank;
  KILN_TRY(ir_check_input(g, n, 1, KILN_DT(KILN_I32) | KILN_DT(KILN_I64), r - 1, r - 1, e));
  const kiln_value *t = ir_in(g, n, 1), *w = ir_in(g, n, 2);
  char sx[160], st[160];
  bool match = t->shape.d[0] == x->shape.d[0];
  for (int i = 1; i < r - 1; i++) match = match && t->shape.d[i] == x->shape.d[i + 1];
  if (!match)
    return kiln_errf(e, KILN_ERR_SHAPE, "labels '%s' %s do not match input '%s' %s (want [N,d1..])",
                     t->name, kiln_shape_str(&t->shape, st, sizeof st), x->name,
                     kiln_shape_str(&x->shape, sx, sizeof sx));
  if (w) {
    KILN_TRY(ir_check_input(g, n, 2, KILN_DT(KILN_F32), 1, 1, e));
    if (w->shape.d[0] != x->shape.d[1])
      return kiln_errf(e, KILN_ERR_SHAPE,
                       "weights '%s' have %lld entries; input '%s' %s has C=%lld",
                       w->name, (long long)w->shape.d[0], x->name,
                       kiln_shape_str(&x->shape, sx, sizeof sx), (long long)x->shape.d[1]);
  }
  const char *red = ir_attr_str(n, "reduction");
  bool none = !strcmp(red, "none");
  if (!none && strcmp(red, "sum") && strcmp(red, "mean"))
    return kiln_errf(e, KILN_ERR_INVALID, "reduction '%s' is not one of none, sum, mean", red);
  kiln_shape scalar = {.rank = 0};
  KILN_TRY(ir_set_output(g, n, 0, x->dtype, none ? &t->shape : &scalar, e));
  if (n->n_out > 1) KILN_TRY(ir_set_output(g, n, 1, x->dtype, &x->shape, e));
  return KILN_OK;
}

/* ignore_index has no default: when absent no label is ignored (read with ir_attr_has). */
static const kiln_attr_spec loss_attrs[] = {A_INT("ignore_index", 0), A_STR("reduction", "mean")};

const kiln_op_def kiln_opdef_SoftmaxCrossEntropyLoss = {
    .name = "SoftmaxCrossEntropyLoss", .domain = "", .min_in = 2, .max_in = 3, .min_out = 1,
    .max_out = 2, .attrs = loss_attrs, .n_attrs = NELEM(loss_attrs), .infer = infer_loss,
    .nondiff_inputs = 1u << 1 | 1u << 2, /* labels, class weights */
    .doc = "loss = -weights[label] * log_softmax(scores, axis=1)[label], reduced none/sum/mean"};

const kiln_op_def kiln_opdef_NegativeLogLikelihoodLoss = {
    .name = "NegativeLogLikelihoodLoss", .domain = "", .min_in = 2, .max_in = 3, .min_out = 1,
    .max_out = 1, .attrs = loss_attrs, .n_attrs = NELEM(loss_attrs), .infer = infer_loss,
    .nondiff_inputs = 1u << 1 | 1u << 2, /* targets, class weights */
    .doc = "loss = -weight[target] * input[n, target, d..], reduced none/sum/mean"};
