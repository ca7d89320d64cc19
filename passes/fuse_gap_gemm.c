/* fuse_gap_gemm.c — a classifier head GlobalAveragePool → Flatten (or Reshape to [N, C]) →
 * Gemm becomes one kiln.GapGemm(X, B, C): the pooled [N, C, 1, 1] tensor and its flattened
 * copy are never stored.
 *
 * Preconditions: inference mode; float32; the pooled value is read by the Flatten/Reshape
 * alone and the flattened one by the Gemm alone (as its A, with transA = 0), neither a graph
 * output; the flattened shape is [N, C]. */
#include "passes/fusion.h"

kiln_code pass_fuse_gap_gemm(kiln_graph *g, kiln_pass_ctx *cx, kiln_pass_stats *st, kiln_err *e) {
  if (cx->mode == KILN_MODE_TRAINING) {
    snprintf(st->detail, sizeof st->detail, "skipped: training mode keeps the unfused ops");
    return KILN_OK;
  }
  int64_t n0 = g->n_nodes;
  for (int64_t i = 0; i < n0; i++) {
    const kiln_node *gap = &g->nodes[i];
    if (gap->dead || gap->op != KILN_OP_GlobalAveragePool) continue;
    const kiln_value *x = ir_in(g, gap, 0);
    if (!x || !x->typed || x->dtype != KILN_F32 || x->shape.rank < 3) continue;
    int fi = fuse_sole_reader(g, gap->out[0]);
    if (fi < 0) continue;
    const kiln_node *flat = &g->nodes[fi];
    if ((flat->op != KILN_OP_Flatten && flat->op != KILN_OP_Reshape) || flat->in[0] != gap->out[0])
      continue;
    const kiln_value *fv = ir_out(g, flat, 0);
    if (!fv || !fv->typed || fv->shape.rank != 2 || fv->shape.d[0] != x->shape.d[0] ||
        fv->shape.d[1] != x->shape.d[1])
      continue;
    int mi = fuse_sole_reader(g, flat->out[0]);
    if (mi < 0) continue;
    const kiln_node *gemm = &g->nodes[mi];
    if (gemm->op != KILN_OP_Gemm || gemm->in[0] != flat->out[0] || gemm->in[1] == flat->out[0] ||
        ir_attr_int(gemm, "transA") != 0)
      continue;
    if (gemm->n_in > 2 && gemm->in[2] == flat->out[0]) continue;
    const kiln_value *yv = ir_out(g, gemm, 0);
    if (!yv || !yv->typed || yv->dtype != KILN_F32) continue;
    int in[3] = {gap->in[0], gemm->in[1], gemm->n_in > 2 ? gemm->in[2] : -1};
    double alpha = ir_attr_float(gemm, "alpha"), beta = ir_attr_float(gemm, "beta");
    int64_t tb = ir_attr_int(gemm, "transB");
    int dead[3] = {(int)i, fi, mi}, nid;
    KILN_TRY(fuse_replace(g, dead, 3, KILN_OP_GapGemm, g->nodes[mi].name, in, in[2] >= 0 ? 3 : 2,
                          gemm->out[0], &nid, e));
    if (alpha != 1.0) KILN_TRY(ir_set_attr_float(g, nid, "alpha", alpha, e));
    if (beta != 1.0) KILN_TRY(ir_set_attr_float(g, nid, "beta", beta, e));
    if (tb) KILN_TRY(ir_set_attr_int(g, nid, "transB", tb, e));
    st->changes++;
  }
  snprintf(st->detail, sizeof st->detail, "%lld pooling heads fused", (long long)st->changes);
  return KILN_OK;
}
