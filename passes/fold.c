/* fold.c — constant folding: every node whose outputs are computable from constants
 * is evaluated once (with the pass context's evaluator, the reference kernels) and
 * removed; its outputs become producer-less constants, written as initializers.
 *
 * A node folds when its outputs are already constant (ir_infer folded it, or its
 * output depends only on static shapes, like Shape) or when every present input is
 * constant.  This collapses the Shape -> Gather -> Unsqueeze -> Concat -> Reshape
 * chains of PyTorch exports and weight transforms (Transpose/Reshape of a weight).
 * ir_infer folds only small outputs; this pass folds any size, except that a node
 * whose outputs are both large and much larger than its inputs (ConstantOfShape,
 * Expand, Tile of a small constant into an activation-sized tensor) is kept, so the
 * model file does not grow by a materialized broadcast. */
#include <string.h>

#include "passes/pass.h"

/* Outputs above this many elements and more than FOLD_GROWTH times the inputs stay
 * computed at run time. */
#define FOLD_BIG_ELEMS ((int64_t)1 << 20)
#define FOLD_GROWTH 4

static int64_t numel_of(const kiln_value *v) {
  int64_t n = 0;
  if (v && v->typed && !kiln_shape_numel(&v->shape, &n)) n = INT64_MAX / 4;
  return n;
}

/* In training mode a folded parameter would stop being trained: values computed from
 * float initializers (parameters, running statistics) are not folded. */
static bool is_parameter(const kiln_value *v) {
  return v->trainable || (v->is_initializer && v->data && v->dtype == KILN_F32);
}

kiln_code pass_fold(kiln_graph *g, kiln_pass_ctx *cx, kiln_pass_stats *st, kiln_err *e) {
  bool training = cx->mode == KILN_MODE_TRAINING;
  char *tainted = NULL;
  if (training) {
    tainted = kiln_calloc((size_t)(g->n_values ? g->n_values : 1), 1);
    if (!tainted) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (fold)");
    for (int64_t v = 0; v < g->n_values; v++) tainted[v] = is_parameter(&g->values[v]);
  }
  int64_t evaluated = 0, skipped_big = 0;
  kiln_code rc = KILN_OK;
  char lbl[256];
  /* Nodes are in topological order, so constants made here feed later nodes. */
  for (int64_t i = 0; i < g->n_nodes && !rc; i++) {
    kiln_node *n = &g->nodes[i];
    if (n->dead || (n->def->flags & KILN_OPF_NO_FOLD)) continue;
    bool inputs_const = true, outputs_const = true, any_out = false, from_param = false;
    int64_t in_elems = 0, out_elems = 0;
    for (int k = 0; k < n->n_in; k++) {
      const kiln_value *v = ir_in(g, n, k);
      if (!v) continue;
      if (!v->data) inputs_const = false;
      if (tainted && tainted[n->in[k]]) from_param = true;
      in_elems += numel_of(v);
    }
    for (int o = 0; o < n->n_out; o++) {
      const kiln_value *v = ir_out(g, n, o);
      if (!v) continue;
      any_out = true;
      if (!v->data) outputs_const = false;
      out_elems += numel_of(v);
    }
    if (!any_out) continue;
    if (from_param) {
      for (int o = 0; o < n->n_out; o++)
        if (n->out[o] >= 0) tainted[n->out[o]] = 1;
      continue;
    }
    if (!outputs_const) {
      if (!inputs_const || !cx->ev) continue;
      if (out_elems > FOLD_BIG_ELEMS && out_elems > FOLD_GROWTH * in_elems) {
        skipped_big++;
        continue;
      }
      kiln_tensor *ins[256] = {0}, *outs[64] = {0};
      if (n->n_in > 256 || n->n_out > 64) continue;
      for (int k = 0; k < n->n_in; k++) {
        kiln_value *v = ir_in(g, n, k);
        ins[k] = v ? v->data : NULL;
      }
      rc = cx->ev->eval(cx->ev->ctx, g, n, ins, outs, e);
      if (rc) {
        for (int o = 0; o < n->n_out; o++) kiln_tensor_free(outs[o]);
        kiln_err_prefix(e, "folding %s", ir_node_label(n, lbl, sizeof lbl));
        break;
      }
      for (int o = 0; o < n->n_out; o++) {
        kiln_value *v = ir_out(g, n, o);
        if (v && !v->data)
          v->data = outs[o];
        else
          kiln_tensor_free(outs[o]);
      }
      evaluated++;
    }
    /* The node goes; its outputs keep their data and lose their producer when the
     * manager compacts the graph, so they are saved as initializers.  Graph outputs
     * that became constant stay outputs. */
    n->dead = true;
    for (int o = 0; o < n->n_out; o++) {
      kiln_value *v = ir_out(g, n, o);
      if (v) v->is_initializer = true;
    }
    st->changes++;
  }
  kiln_free(tainted);
  if (rc) return rc;
  int len = snprintf(st->detail, sizeof st->detail, "%lld nodes folded (%lld evaluated here)",
                     (long long)st->changes, (long long)evaluated);
  if (skipped_big && len > 0 && (size_t)len < sizeof st->detail)
    snprintf(st->detail + len, sizeof st->detail - (size_t)len,
             ", %lld kept: outputs too large to store", (long long)skipped_big);
  return KILN_OK;
}
