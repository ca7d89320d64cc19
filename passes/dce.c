/* dce.c — dead-code elimination: removes nodes none of whose outputs reach a
 * graph output.  Walks backwards from the outputs marking live values. */
#include "passes/pass.h"

kiln_code pass_dce(kiln_graph *g, kiln_pass_ctx *cx, kiln_pass_stats *st, kiln_err *e) {
  char *live = kiln_calloc((size_t)(g->n_values ? g->n_values : 1), 1);
  if (!live) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (dce)");
  for (int i = 0; i < g->n_outputs; i++) live[g->outputs[i]] = 1;
  /* nodes are topologically sorted: one backward sweep suffices */
  for (int64_t i = g->n_nodes - 1; i >= 0; i--) {
    kiln_node *n = &g->nodes[i];
    if (n->dead) continue;
    bool used = false;
    for (int o = 0; o < n->n_out; o++)
      if (n->out[o] >= 0 && live[n->out[o]]) used = true;
    if (!used) {
      n->dead = true;
      st->changes++;
      continue;
    }
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k] >= 0) live[n->in[k]] = 1;
  }
  kiln_free(live);
  snprintf(st->detail, sizeof st->detail, "%lld nodes removed", (long long)st->changes);
  return KILN_OK;
}
