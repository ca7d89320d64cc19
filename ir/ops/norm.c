/* norm.c — op definitions of BatchNormalization, InstanceNormalization and LRN. */
#include "ir/ops/common.h"

static const kiln_attr_spec batchnorm_attrs[] = {
    A_FLOAT("epsilon", 1e-5),
    A_FLOAT("momentum", 0.9),
    A_INT("training_mode", 0), /* opset >= 14 */
    /* opsets 6..8: spatial=0 normalizes per activation, with (C, D1, ...) parameters.
     * Legacy (accepted with any kind) but read, so it carries its real default. */
    {.name = "spatial", .kind = KILN_ATTR_INT, .def_i = 1, .legacy = true},
    A_LEGACY("is_test", KILN_ATTR_INT),
    A_LEGACY("consumed_inputs", KILN_ATTR_INTS),
};

static const kiln_attr_spec instancenorm_attrs[] = {A_FLOAT("epsilon", 1e-5)};

static const kiln_attr_spec lrn_attrs[] = {
    A_FLOAT("alpha", 1e-4), A_FLOAT("beta", 0.75), A_FLOAT("bias", 1.0), A_REQ_INT("size"),
};

static kiln_code infer_batchnorm(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_F32), 2, KILN_MAX_RANK, e));
  const kiln_value *x = ir_in(g, n, 0);
  if (n->opset >= 14 && n->n_out > 3)
    return kiln_errf(e, KILN_ERR_INVALID,
                     "has %d outputs; BatchNormalization-%d gives at most 3 (Y, running_mean, "
                     "running_var)",
                     n->n_out, n->opset);
  /* Parameters are (C), or (C, D1, ...) for the per-activation form of opsets < 9. */
  kiln_shape per_channel = kiln_shape_make(1, &x->shape.d[1]);
  kiln_shape per_activation = kiln_shape_make(x->shape.rank - 1, &x->shape.d[1]);
  bool allow_activation = n->opset < 9 && ir_attr_int(n, "spatial") == 0;
  const kiln_value *first = NULL;
  static const char *const names[] = {"scale", "B", "input_mean", "input_var"};
  for (int i = 1; i <= 4; i++) {
    KILN_TRY(ir_check_input(g, n, i, KILN_DT(KILN_F32), 1, KILN_MAX_RANK, e));
    const kiln_value *p = ir_in(g, n, i);
    char bp[160], bx[160];
    if (!kiln_shape_eq(&p->shape, &per_channel) &&
        !(allow_activation && kiln_shape_eq(&p->shape, &per_activation)))
      return kiln_errf(e, KILN_ERR_SHAPE,
                       "%s '%s' has shape %s; input '%s' %s needs one value per channel (%lld)",
                       names[i - 1], p->name, kiln_shape_str(&p->shape, bp, sizeof bp), x->name,
                       kiln_shape_str(&x->shape, bx, sizeof bx), (long long)x->shape.d[1]);
    if (first && !kiln_shape_eq(&p->shape, &first->shape))
      return kiln_errf(e, KILN_ERR_SHAPE, "%s '%s' and %s '%s' have different shapes",
                       names[0], first->name, names[i - 1], p->name);
    if (!first) first = p;
  }
  KILN_TRY(ir_set_output(g, n, 0, KILN_F32, &x->shape, e));
  for (int o = 1; o < n->n_out; o++) KILN_TRY(ir_set_output(g, n, o, KILN_F32, &first->shape, e));
  return KILN_OK;
}

static kiln_code infer_instancenorm(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_F32), 3, KILN_MAX_RANK, e));
  const kiln_value *x = ir_in(g, n, 0);
  for (int i = 1; i <= 2; i++) {
    KILN_TRY(ir_check_input(g, n, i, KILN_DT(KILN_F32), 1, 1, e));
    const kiln_value *p = ir_in(g, n, i);
    if (p->shape.d[0] != x->shape.d[1])
      return kiln_errf(e, KILN_ERR_SHAPE, "%s '%s' has %lld values; input '%s' has %lld channels",
                       i == 1 ? "scale" : "B", p->name, (long long)p->shape.d[0], x->name,
                       (long long)x->shape.d[1]);
  }
  return ir_set_output(g, n, 0, KILN_F32, &x->shape, e);
}

static kiln_code infer_lrn(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_F32), 2, KILN_MAX_RANK, e));
  int64_t size = ir_attr_int(n, "size");
  if (size < 1 || size > KILN_MAX_DIM)
    return kiln_errf(e, KILN_ERR_INVALID, "size %lld must be positive", (long long)size);
  const kiln_value *x = ir_in(g, n, 0);
  return ir_set_output(g, n, 0, KILN_F32, &x->shape, e);
}

const kiln_op_def kiln_opdef_BatchNormalization = {
    .name = "BatchNormalization", .domain = "", .min_in = 5, .max_in = 5, .min_out = 1,
    .max_out = 5, .attrs = batchnorm_attrs, .n_attrs = NELEM(batchnorm_attrs),
    .infer = infer_batchnorm, .nondiff_inputs = (1u << 3) | (1u << 4),
    .doc = "y = scale * (x - mean) / sqrt(var + epsilon) + B per channel; batch statistics "
           "and running-stat outputs in training mode"};

const kiln_op_def kiln_opdef_InstanceNormalization = {
    .name = "InstanceNormalization", .domain = "", .min_in = 3, .max_in = 3, .min_out = 1,
    .max_out = 1, .attrs = instancenorm_attrs, .n_attrs = NELEM(instancenorm_attrs),
    .infer = infer_instancenorm,
    .doc = "y = scale * (x - mean) / sqrt(var + epsilon) + B, statistics per (n, c)"};

const kiln_op_def kiln_opdef_LRN = {
    .name = "LRN", .domain = "", .min_in = 1, .max_in = 1, .min_out = 1, .max_out = 1,
    .attrs = lrn_attrs, .n_attrs = NELEM(lrn_attrs), .infer = infer_lrn,
    .doc = "local response normalization across channels"};
