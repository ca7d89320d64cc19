/* train.c — kiln-domain training ops: loss gradients.
 *
 * kiln.NLLLossGrad(dLoss, labels[, weights]) -> dInput
 *   The gradient of NegativeLogLikelihoodLoss (and of SoftmaxCrossEntropyLoss up to the
 *   log-softmax) w.r.t. its log-probability input [N, C, d1..]: zero except at each label,
 *     dInput[n, labels[n,d..], d..] = -weights[label] * dLoss[n,d..] / W
 *   with dLoss a scalar for reduction sum/mean (dLoss[n,d..] reads it) and [N,d1..] for
 *   none, W = the sum of the applied weights for mean and 1 otherwise, and elements whose
 *   label is ignore_index left at zero.  Attributes: classes (C, required), reduction and
 *   ignore_index as on the loss node. */
#include <string.h>

#include "ir/ops/common.h"

static kiln_code infer_nll_grad(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_F32), 0, KILN_MAX_RANK, e));
  KILN_TRY(ir_check_input(g, n, 1, KILN_DT(KILN_I32) | KILN_DT(KILN_I64), 1, KILN_MAX_RANK - 1,
                          e));
  const kiln_value *dl = ir_in(g, n, 0), *t = ir_in(g, n, 1), *w = ir_in(g, n, 2);
  int64_t C = ir_attr_int(n, "classes");
  if (C < 1 || C > KILN_MAX_DIM)
    return kiln_errf(e, KILN_ERR_INVALID, "attribute 'classes' = %lld must be positive",
                     (long long)C);
  const char *red = ir_attr_str(n, "reduction");
  bool none = !strcmp(red, "none");
  if (!none && strcmp(red, "sum") && strcmp(red, "mean"))
    return kiln_errf(e, KILN_ERR_INVALID, "reduction '%s' is not one of none, sum, mean", red);
  char s1[160], s2[160];
  int64_t ne;
  if (none ? !kiln_shape_eq(&dl->shape, &t->shape)
           : !kiln_shape_numel(&dl->shape, &ne) || ne != 1)
    return kiln_errf(e, KILN_ERR_SHAPE, "dLoss '%s' %s must be %s for reduction '%s'", dl->name,
                     kiln_shape_str(&dl->shape, s1, sizeof s1),
                     none ? kiln_shape_str(&t->shape, s2, sizeof s2) : "a scalar", red);
  if (w) {
    KILN_TRY(ir_check_input(g, n, 2, KILN_DT(KILN_F32), 1, 1, e));
    if (w->shape.d[0] != C)
      return kiln_errf(e, KILN_ERR_SHAPE, "weights '%s' have %lld entries, not classes = %lld",
                       w->name, (long long)w->shape.d[0], (long long)C);
  }
  kiln_shape s = t->shape;
  s.rank++;
  for (int i = s.rank - 1; i > 1; i--) s.d[i] = s.d[i - 1];
  s.d[1] = C;
  return ir_set_output(g, n, 0, KILN_F32, &s, e);
}

/* ignore_index has no default: when absent no label is ignored (read with ir_attr_has). */
static const kiln_attr_spec nll_grad_attrs[] = {A_REQ_INT("classes"), A_INT("ignore_index", 0),
                                                A_STR("reduction", "mean")};

const kiln_op_def kiln_opdef_NLLLossGrad = {
    .name = "NLLLossGrad", .domain = "kiln", .min_in = 2, .max_in = 3, .min_out = 1,
    .max_out = 1, .attrs = nll_grad_attrs, .n_attrs = NELEM(nll_grad_attrs),
    .infer = infer_nll_grad, .nondiff_inputs = 0x7,
    .doc = "(dLoss, labels[, weights]) -> dInput [N,C,d..]: -weights[label] * dLoss / W at "
           "each label (W = applied weight sum for mean, else 1), 0 elsewhere"};
