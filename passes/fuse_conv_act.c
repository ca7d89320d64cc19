/* fuse_conv_act.c — Conv (+ bias) followed by an activation (Relu, Clip/ReLU6, LeakyRelu,
 * Sigmoid) becomes one kiln.FusedConv that applies the activation in its epilogue, so the
 * convolution's output is never stored before activating it.
 *
 * Preconditions: inference mode (kiln has no gradient of the fused ops); a float32 Conv with
 * 1 to 3 spatial dims whose output is read by the activation alone and is not a graph output;
 * Clip's bounds constant.  The fused node takes the activation's output value (its name
 * survives) and the Conv's name and attributes. */
#include "passes/fusion.h"

kiln_code pass_fuse_conv_act(kiln_graph *g, kiln_pass_ctx *cx, kiln_pass_stats *st, kiln_err *e) {
  if (cx->mode == KILN_MODE_TRAINING) {
    snprintf(st->detail, sizeof st->detail, "skipped: training mode keeps the unfused ops");
    return KILN_OK;
  }
  int64_t by_act[5] = {0};
  int64_t n0 = g->n_nodes; /* nodes added here need no second look */
  for (int64_t i = 0; i < n0; i++) {
    const kiln_node *conv = &g->nodes[i];
    if (conv->dead || conv->op != KILN_OP_Conv) continue;
    const kiln_value *x = ir_in(g, conv, 0), *y = ir_out(g, conv, 0);
    if (!x || !y || !x->typed || x->dtype != KILN_F32 || x->shape.rank < 3 ||
        x->shape.rank > 5)
      continue;
    int ai = fuse_sole_reader(g, conv->out[0]);
    kiln_fused_act_params act;
    if (ai < 0 || !fuse_act_of(g, &g->nodes[ai], &act) || g->nodes[ai].in[0] != conv->out[0])
      continue;
    int in[3] = {conv->in[0], conv->in[1], conv->n_in > 2 ? conv->in[2] : -1};
    int dead[2] = {(int)i, ai}, nid;
    KILN_TRY(fuse_replace(g, dead, 2, KILN_OP_FusedConv, g->nodes[i].name, in, in[2] >= 0 ? 3 : 2,
                          g->nodes[ai].out[0], &nid, e));
    KILN_TRY(fuse_copy_attrs(g, (int)i, nid, fuse_conv_attr_names, e));
    KILN_TRY(fuse_set_act(g, nid, &act, e));
    by_act[act.act]++;
    st->changes++;
  }
  snprintf(st->detail, sizeof st->detail,
           "%lld Conv + activation fused (%lld Relu, %lld Clip, %lld LeakyRelu, %lld Sigmoid)",
           (long long)st->changes, (long long)by_act[KILN_FACT_RELU],
           (long long)by_act[KILN_FACT_CLIP], (long long)by_act[KILN_FACT_LEAKY_RELU],
           (long long)by_act[KILN_FACT_SIGMOID]);
  return KILN_OK;
}
