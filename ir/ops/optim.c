/* optim.c — optimizer ops.  Their semantics follow PyTorch's torch.optim so that
 * training matches it step for step:
 *
 * kiln.Adam(p, g, m, v, hyper) -> (p', m', v')
 *   hyper = [step_size, sqrt_bc2, lr_wd] computed by the trainer each step:
 *     step_size = lr / (1 - beta1^t),  sqrt_bc2 = sqrt(1 - beta2^t),  lr_wd = lr * weight_decay
 *   decoupled=0 (Adam):  g += weight_decay * p
 *   decoupled=1 (AdamW): p *= 1 - lr_wd
 *   m' = beta1 m + (1 - beta1) g;  v' = beta2 v + (1 - beta2) g^2
 *   p' = p - step_size * m' / (sqrt(v') / sqrt_bc2 + epsilon)
 *
 * kiln.SGD(p, g, buf, lr) -> (p', buf')
 *   g += weight_decay * p;  buf' = momentum * buf + g  (buf starts at 0, so the
 *   first step gives buf' = g as PyTorch does);  p' = p - lr * (nesterov ? g + momentum buf' : buf')
 */
#include "ir/ops/common.h"

static kiln_code infer_optim(kiln_graph *g, kiln_node *n, kiln_err *e, int n_state) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_F32), 0, KILN_MAX_RANK, e));
  const kiln_value *p = ir_in(g, n, 0);
  for (int i = 1; i <= 1 + n_state; i++) {
    KILN_TRY(ir_check_input(g, n, i, KILN_DT(KILN_F32), 0, KILN_MAX_RANK, e));
    if (!kiln_shape_eq(&ir_in(g, n, i)->shape, &p->shape))
      return kiln_errf(e, KILN_ERR_SHAPE, "input '%s' must have the shape of parameter '%s'",
                       ir_in(g, n, i)->name, p->name);
  }
  KILN_TRY(ir_check_input(g, n, 2 + n_state, KILN_DT(KILN_F32), 1, 1, e));
  for (int o = 0; o <= n_state; o++) KILN_TRY(ir_set_output(g, n, o, KILN_F32, &p->shape, e));
  return KILN_OK;
}

static kiln_code infer_adam(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(infer_optim(g, n, e, 2));
  if (ir_in(g, n, 4)->shape.d[0] < 3)
    return kiln_errf(e, KILN_ERR_SHAPE, "hyper must hold [step_size, sqrt_bc2, lr_wd]");
  return KILN_OK;
}
static kiln_code infer_sgd(kiln_graph *g, kiln_node *n, kiln_err *e) { return infer_optim(g, n, e, 1); }

static const kiln_attr_spec adam_attrs[] = {
    A_FLOAT("beta1", 0.9), A_FLOAT("beta2", 0.999), A_FLOAT("epsilon", 1e-8),
    A_FLOAT("weight_decay", 0.0), A_INT("decoupled", 0),
};

const kiln_op_def kiln_opdef_Adam = {
    .name = "Adam", .domain = "kiln", .min_in = 5, .max_in = 5, .min_out = 3, .max_out = 3,
    .attrs = adam_attrs, .n_attrs = NELEM(adam_attrs), .infer = infer_adam,
    .nondiff_inputs = 0x1f, .flags = KILN_OPF_NO_FOLD,
    .doc = "Adam/AdamW step: (p, g, m, v, [step_size, sqrt_bc2, lr_wd]) -> (p', m', v')"};

static const kiln_attr_spec sgd_attrs[] = {
    A_FLOAT("momentum", 0.0), A_FLOAT("weight_decay", 0.0), A_INT("nesterov", 0),
};

const kiln_op_def kiln_opdef_SGD = {
    .name = "SGD", .domain = "kiln", .min_in = 4, .max_in = 4, .min_out = 2, .max_out = 2,
    .attrs = sgd_attrs, .n_attrs = NELEM(sgd_attrs), .infer = infer_sgd,
    .nondiff_inputs = 0xf, .flags = KILN_OPF_NO_FOLD,
    .doc = "SGD with momentum: (p, g, buf, [lr]) -> (p', buf')"};
