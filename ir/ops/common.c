/* common.c — shared shape-inference functions for op families. */
#include "ir/ops/common.h"

kiln_code infer_unary_float(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_F32), 0, KILN_MAX_RANK, e));
  const kiln_value *x = ir_in(g, n, 0);
  return ir_set_output(g, n, 0, x->dtype, &x->shape, e);
}

kiln_code infer_unary_any(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT_ANY, 0, KILN_MAX_RANK, e));
  const kiln_value *x = ir_in(g, n, 0);
  return ir_set_output(g, n, 0, x->dtype, &x->shape, e);
}

kiln_code infer_unary_numeric(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT_NUM, 0, KILN_MAX_RANK, e));
  const kiln_value *x = ir_in(g, n, 0);
  return ir_set_output(g, n, 0, x->dtype, &x->shape, e);
}

static kiln_code broadcast_all(kiln_graph *g, kiln_node *n, uint32_t mask, kiln_shape *out,
                               kiln_dtype *dt, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, mask, 0, KILN_MAX_RANK, e));
  const kiln_value *a = ir_in(g, n, 0);
  kiln_shape s = a->shape;
  for (int i = 1; i < n->n_in; i++) {
    KILN_TRY(ir_check_input(g, n, i, mask, 0, KILN_MAX_RANK, e));
    const kiln_value *b = ir_in(g, n, i);
    if (b->dtype != a->dtype)
      return kiln_errf(e, KILN_ERR_SHAPE, "inputs '%s' (%s) and '%s' (%s) have different dtypes",
                       a->name, kiln_dtype_name(a->dtype), b->name, kiln_dtype_name(b->dtype));
    KILN_TRY(ir_broadcast(&s, &b->shape, &s, e));
  }
  *out = s;
  *dt = a->dtype;
  return KILN_OK;
}

kiln_code infer_broadcast_same(kiln_graph *g, kiln_node *n, kiln_err *e) {
  kiln_shape s;
  kiln_dtype dt;
  KILN_TRY(broadcast_all(g, n, KILN_DT_NUM, &s, &dt, e));
  return ir_set_output(g, n, 0, dt, &s, e);
}

kiln_code infer_broadcast_bool(kiln_graph *g, kiln_node *n, kiln_err *e) {
  kiln_shape s;
  kiln_dtype dt;
  KILN_TRY(broadcast_all(g, n, KILN_DT_ANY, &s, &dt, e));
  return ir_set_output(g, n, 0, KILN_BOOL, &s, e);
}

kiln_code ir_const_ints(const kiln_graph *g, const kiln_node *n, int i, int64_t *vals, int max,
                        int *count, kiln_err *e) {
  const kiln_value *v = ir_in(g, n, i);
  if (!v) return kiln_errf(e, KILN_ERR_INVALID, "input %d is required", i);
  const kiln_tensor *t = v->data;
  if (!t) return kiln_errf(e, KILN_ERR_UNSUPPORTED, "input '%s' must be a constant", v->name);
  if (t->dtype != KILN_I64 && t->dtype != KILN_I32)
    return kiln_errf(e, KILN_ERR_SHAPE, "input '%s' must be int64, not %s", v->name,
                     kiln_dtype_name(t->dtype));
  if (t->shape.rank > 1)
    return kiln_errf(e, KILN_ERR_SHAPE, "input '%s' must be 1-D", v->name);
  if (t->numel > max)
    return kiln_errf(e, KILN_ERR_LIMIT, "input '%s' has %lld elements; at most %d allowed", v->name,
                     (long long)t->numel, max);
  for (int64_t k = 0; k < t->numel; k++) vals[k] = kiln_tensor_get_i(t, k);
  *count = (int)t->numel;
  return KILN_OK;
}
