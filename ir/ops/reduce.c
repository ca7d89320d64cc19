/* reduce.c — op definitions of the reduce family: ReduceSum, ReduceMean, ReduceMax, ReduceMin,
 * ReduceSumSquare and ReduceL2, with axes as an attribute (old opsets) or as input 1. */
#include "ir/ops/common.h"
#include "ir/ops/reduce.h"

/* The opset from which the op takes axes as its optional input 1. */
static int axes_input_opset(const kiln_node *n) { return n->op == KILN_OP_ReduceSum ? 13 : 18; }

kiln_code kiln_reduce_axes(const kiln_node *n, int rank, const kiln_tensor *axes, uint32_t *mask,
                           bool *noop, kiln_err *e) {
  enum { MAX_AXES = 2 * KILN_MAX_RANK }; /* more than rank is an error anyway (repeats) */
  int64_t ax[MAX_AXES];
  int64_t count = 0;
  int since = axes_input_opset(n);
  if (n->opset >= since) {
    if (ir_attr_has(n, "axes"))
      return kiln_errf(e, KILN_ERR_INVALID,
                       "from opset %d the axes are input 1, not an attribute (model opset %d)",
                       since, n->opset);
    if (axes) {
      if (axes->dtype != KILN_I64 && axes->dtype != KILN_I32)
        return kiln_errf(e, KILN_ERR_SHAPE, "the axes input must be int64, not %s",
                         kiln_dtype_name(axes->dtype));
      if (axes->shape.rank > 1)
        return kiln_errf(e, KILN_ERR_SHAPE, "the axes input must be 1-D, not rank %d",
                         axes->shape.rank);
      count = axes->numel;
      if (count > MAX_AXES)
        return kiln_errf(e, KILN_ERR_SHAPE, "%lld axes given for an input of rank %d",
                         (long long)count, rank);
      for (int64_t i = 0; i < count; i++) ax[i] = kiln_tensor_get_i(axes, i);
    }
  } else {
    if (axes)
      return kiln_errf(e, KILN_ERR_INVALID,
                       "before opset %d the axes are an attribute, not input 1 (model opset %d)",
                       since, n->opset);
    const int64_t *v;
    count = ir_attr_ints(n, "axes", &v);
    if (count > MAX_AXES)
      return kiln_errf(e, KILN_ERR_SHAPE, "%lld axes given for an input of rank %d",
                       (long long)count, rank);
    for (int64_t i = 0; i < count; i++) ax[i] = v[i];
  }
  *mask = 0;
  *noop = false;
  if (count == 0) {
    if (ir_attr_int(n, "noop_with_empty_axes"))
      *noop = true;
    else
      *mask = rank ? (uint32_t)((1u << rank) - 1) : 0;
    return KILN_OK;
  }
  for (int64_t i = 0; i < count; i++) {
    int a;
    if (ax[i] < -rank || ax[i] >= rank) /* ir_axis would accept axis 0 of a scalar */
      return kiln_errf(e, KILN_ERR_SHAPE, "axis %lld is out of range for rank %d",
                       (long long)ax[i], rank);
    KILN_TRY(ir_axis(ax[i], rank, &a, e));
    if (*mask & (1u << a))
      return kiln_errf(e, KILN_ERR_SHAPE, "axis %lld is repeated", (long long)ax[i]);
    *mask |= 1u << a;
  }
  return KILN_OK;
}

static kiln_code infer_reduce(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT_NUM, 0, KILN_MAX_RANK, e));
  const kiln_value *x = ir_in(g, n, 0);
  const kiln_tensor *axes = NULL;
  if (ir_in(g, n, 1)) {
    axes = ir_in_const(g, n, 1);
    if (!axes) return kiln_errf(e, KILN_ERR_UNSUPPORTED, "the axes input must be a constant");
  }
  uint32_t mask;
  bool noop;
  KILN_TRY(kiln_reduce_axes(n, x->shape.rank, axes, &mask, &noop, e));
  bool keep = ir_attr_int(n, "keepdims") != 0;
  kiln_shape y = {.rank = 0};
  for (int i = 0; i < x->shape.rank; i++) {
    if (!(mask & (1u << i)))
      y.d[y.rank++] = x->shape.d[i];
    else if (keep)
      y.d[y.rank++] = 1;
  }
  return ir_set_output(g, n, 0, x->dtype, &y, e);
}

static const kiln_attr_spec reduce_attrs[] = {
    A_INTS("axes"), /* before the opset where axes became input 1 */
    A_INT("keepdims", 1),
    A_INT("noop_with_empty_axes", 0), /* with axes as input: empty axes mean identity */
};

#define REDUCE_OP(op, what)                                                                        \
  const kiln_op_def kiln_opdef_##op = {                                                            \
      .name = #op, .domain = "", .min_in = 1, .max_in = 2, .min_out = 1, .max_out = 1,             \
      .attrs = reduce_attrs, .n_attrs = NELEM(reduce_attrs), .infer = infer_reduce,                \
      .shape_inputs = 1u << 1, .doc = what " over axes (all when empty), keepdims"}

REDUCE_OP(ReduceSum, "y = sum(x)");
REDUCE_OP(ReduceMean, "y = mean(x)");
REDUCE_OP(ReduceMax, "y = max(x)");
REDUCE_OP(ReduceMin, "y = min(x)");
REDUCE_OP(ReduceSumSquare, "y = sum(x^2)");
REDUCE_OP(ReduceL2, "y = sqrt(sum(x^2))");
