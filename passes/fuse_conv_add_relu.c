/* fuse_conv_add_relu.c — ResNet's skip connection: Conv (its BatchNorm already folded by
 * fold-bn) → Add(conv, residual) → Relu becomes one kiln.FusedConv(X, W, B, Z = residual)
 * with has_residual = 1: the residual is added and the activation applied in the
 * convolution's epilogue.  The activation is optional (any one fuse-conv-act takes), so
 * Conv → Add alone fuses too.
 *
 * Preconditions: inference mode; a float32 Conv (or a FusedConv without residual and
 * activation) whose output is read by the Add alone and is not a graph output; the other
 * operand has exactly the Conv's output shape (no broadcasting) and is not that output; the
 * Add's output, when an activation follows, is read by it alone.  When both operands are
 * convolutions, the first operand's is fused. */
#include <string.h>

#include "passes/fusion.h"

/* Whether node `pi` is a convolution the pass can give a residual. */
static bool conv_ok(const kiln_graph *g, int pi) {
  const kiln_node *n = &g->nodes[pi];
  if (n->dead) return false;
  if (n->op == KILN_OP_FusedConv) {
    if (ir_attr_int(n, "has_residual") || strcmp(ir_attr_str(n, "activation"), "none")) return false;
  } else if (n->op != KILN_OP_Conv) {
    return false;
  }
  const kiln_value *x = ir_in(g, n, 0);
  return x && x->typed && x->dtype == KILN_F32 && x->shape.rank >= 3 && x->shape.rank <= 5;
}

kiln_code pass_fuse_conv_add_relu(kiln_graph *g, kiln_pass_ctx *cx, kiln_pass_stats *st,
                                  kiln_err *e) {
  if (cx->mode == KILN_MODE_TRAINING) {
    snprintf(st->detail, sizeof st->detail, "skipped: training mode keeps the unfused ops");
    return KILN_OK;
  }
  int64_t with_act = 0;
  int64_t n0 = g->n_nodes;
  for (int64_t i = 0; i < n0; i++) {
    const kiln_node *add = &g->nodes[i];
    if (add->dead || add->op != KILN_OP_Add || add->n_in != 2) continue;
    if (add->opset < 7 && ir_attr_int(add, "broadcast")) continue;
    const kiln_value *yv = ir_out(g, add, 0);
    if (!yv || !yv->typed || yv->dtype != KILN_F32) continue;
    int side = -1, pi = -1;
    for (int s = 0; s < 2 && side < 0; s++) {
      int v = add->in[s], other = add->in[1 - s];
      if (v < 0 || other < 0 || v == other || fuse_sole_reader(g, v) != (int)i) continue;
      int p = g->values[v].producer;
      if (p < 0 || g->values[v].producer_slot != 0 || !conv_ok(g, p)) continue;
      const kiln_value *ov = &g->values[other];
      if (!ov->typed || ov->dtype != KILN_F32 || !kiln_shape_eq(&ov->shape, &g->values[v].shape) ||
          !kiln_shape_eq(&yv->shape, &g->values[v].shape))
        continue;
      side = s, pi = p;
    }
    if (side < 0) continue;
    /* an activation reading the sum alone */
    kiln_fused_act_params act = {.act = KILN_FACT_NONE};
    int ai = fuse_sole_reader(g, add->out[0]);
    if (ai >= 0 && !(fuse_act_of(g, &g->nodes[ai], &act) && g->nodes[ai].in[0] == add->out[0]))
      ai = -1, act.act = KILN_FACT_NONE;
    const kiln_node *conv = &g->nodes[pi];
    int in[4] = {conv->in[0], conv->in[1], conv->n_in > 2 ? conv->in[2] : -1, add->in[1 - side]};
    int dead[3] = {pi, (int)i, ai}, nid;
    int out = ai >= 0 ? g->nodes[ai].out[0] : add->out[0];
    KILN_TRY(fuse_replace(g, dead, ai >= 0 ? 3 : 2, KILN_OP_FusedConv, g->nodes[pi].name, in, 4,
                          out, &nid, e));
    KILN_TRY(fuse_copy_attrs(g, pi, nid, fuse_conv_attr_names, e));
    KILN_TRY(ir_set_attr_int(g, nid, "has_residual", 1, e));
    KILN_TRY(fuse_set_act(g, nid, &act, e));
    with_act += ai >= 0;
    st->changes++;
  }
  snprintf(st->detail, sizeof st->detail, "%lld residual adds fused (%lld with an activation)",
           (long long)st->changes, (long long)with_act);
  return KILN_OK;
}
