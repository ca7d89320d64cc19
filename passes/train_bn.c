/* train_bn.c — BatchNormalization -> kiln.BatchNormTrain for training graphs (see
 * passes/train_bn.h). */
#include "passes/train_bn.h"

#include <stdio.h>
#include <string.h>

static bool is_graph_output(const kiln_graph *g, int v) {
  for (int i = 0; i < g->n_outputs; i++)
    if (g->outputs[i] == v) return true;
  return false;
}

static bool value_read(const kiln_graph *g, int v) {
  return v >= 0 && (ir_use_count(g, v) > 0 || is_graph_output(g, v));
}

static kiln_code infer_node(kiln_graph *g, int nid, kiln_err *e) {
  kiln_node *n = &g->nodes[nid];
  if (n->def->infer(g, n, e)) {
    char lbl[256];
    kiln_err_prefix(e, "%s", ir_node_label(n, lbl, sizeof lbl));
    return e->code;
  }
  return KILN_OK;
}

/* A new value named exactly `name` (the training driver finds the running statistics by
 * these names). */
static kiln_code exact_value(kiln_graph *g, const char *name, int *id, kiln_err *e) {
  if (ir_find_value(g, name) >= 0)
    return kiln_errf(e, KILN_ERR_INVALID,
                     "value '%s' already exists (is a running-statistics tensor shared by two "
                     "BatchNormalization nodes?)",
                     name);
  return ir_add_value(g, name, id, e);
}

static kiln_code fresh_value(kiln_graph *g, const char *stem, int *id, kiln_err *e) {
  char *nm = NULL;
  KILN_TRY(ir_unique_name(g, stem, &nm, e));
  kiln_code rc = ir_add_value(g, nm, id, e);
  kiln_free(nm);
  return rc;
}

/* Rewrites node `ni`. */
static kiln_code convert(kiln_graph *g, int ni, kiln_err *e) {
  kiln_node *n = &g->nodes[ni];
  char lbl[256], nm[600];
  ir_node_label(n, lbl, sizeof lbl);
  const kiln_value *x = ir_in(g, n, 0), *scale = ir_in(g, n, 1);
  if (!x || !x->typed || !scale || !scale->typed)
    return kiln_errf(e, KILN_ERR_INVALID, "%s: the graph must be shape-inferred first", lbl);
  if (scale->shape.rank != 1 || x->shape.rank < 2 || scale->shape.d[0] != x->shape.d[1])
    return kiln_errf(e, KILN_ERR_UNSUPPORTED,
                     "%s: the per-activation (spatial=0) form cannot be trained", lbl);
  for (int o = 3; o < n->n_out; o++)
    if (value_read(g, n->out[o]))
      return kiln_errf(e, KILN_ERR_UNSUPPORTED,
                       "%s: output '%s' (a saved batch statistic) is read; kiln's training form "
                       "does not provide it",
                       lbl, g->values[n->out[o]].name);
  int in[5];
  memcpy(in, n->in, sizeof in);
  int old_out[3] = {n->out[0], n->n_out > 1 ? n->out[1] : -1, n->n_out > 2 ? n->out[2] : -1};
  double eps = ir_attr_float(n, "epsilon"), momentum = ir_attr_float(n, "momentum");
  char *name = kiln_strdup(n->name ? n->name : "");
  if (!name) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  /* retire the old node: its outputs lose their producer */
  n->dead = true;
  for (int o = 0; o < n->n_out; o++)
    if (n->out[o] >= 0) g->values[n->out[o]].producer = -1;

  kiln_code rc;
  int outs[5] = {old_out[0], -1, -1, -1, -1}, nid;
  const char *y_name = g->values[old_out[0]].name;
  snprintf(nm, sizeof nm, "%s.saved_mean", y_name);
  rc = fresh_value(g, nm, &outs[1], e);
  snprintf(nm, sizeof nm, "%s.saved_invstd", g->values[old_out[0]].name);
  if (!rc) rc = fresh_value(g, nm, &outs[2], e);
  snprintf(nm, sizeof nm, "%s.new", g->values[in[3]].name);
  if (!rc) rc = exact_value(g, nm, &outs[3], e);
  snprintf(nm, sizeof nm, "%s.new", g->values[in[4]].name);
  if (!rc) rc = exact_value(g, nm, &outs[4], e);
  if (!rc) rc = ir_add_node(g, KILN_OP_BatchNormTrain, name, in, 5, outs, 5, &nid, e);
  kiln_free(name);
  if (rc) return rc;
  KILN_TRY(ir_set_attr_float(g, nid, "epsilon", eps, e));
  KILN_TRY(ir_set_attr_float(g, nid, "momentum", momentum, e));
  KILN_TRY(infer_node(g, nid, e));
  for (int o = 1; o <= 2; o++) {
    if (old_out[o] < 0) continue;
    int id_node;
    snprintf(nm, sizeof nm, "%s/running_stat%d", g->nodes[nid].name, o);
    KILN_TRY(ir_add_node(g, KILN_OP_Identity, nm, &outs[2 + o], 1, &old_out[o], 1, &id_node, e));
    KILN_TRY(infer_node(g, id_node, e));
  }
  KILN_TRY(ir_add_output(g, outs[3], e));
  return ir_add_output(g, outs[4], e);
}

kiln_code kiln_bn_to_training_count(kiln_graph *g, int *n_converted, kiln_err *e) {
  int count = 0;
  int64_t n0 = g->n_nodes;
  for (int64_t i = 0; i < n0; i++) {
    if (g->nodes[i].dead || g->nodes[i].op != KILN_OP_BatchNormalization) continue;
    KILN_TRY(convert(g, (int)i, e));
    count++;
  }
  if (n_converted) *n_converted = count;
  if (count) KILN_TRY(ir_toposort(g, e));
  return KILN_OK;
}

kiln_code kiln_bn_to_training(kiln_graph *g, kiln_err *e) {
  return kiln_bn_to_training_count(g, NULL, e);
}
