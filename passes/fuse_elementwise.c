/* fuse_elementwise.c — maximal trees of float elementwise nodes, each of whose inner results
 * is read once, become one kiln.FusedElementwise: one loop that evaluates the whole chain
 * per element and stores only the last result.
 *
 * A node is a candidate when its op can be a step (kiln_ew_step_op: activations, unary math,
 * Add/Sub/Mul/Div/Pow/PRelu, variadic Sum/Mean/Max/Min, Clip), everything it reads and writes
 * is float32, its opset is 7 or later (numpy broadcasting), and its output has the broadcast
 * shape of its operands.  Walking the graph backwards, each candidate whose output is read
 * by other nodes, by several, or is a graph output, roots a tree; a candidate operand whose
 * value only the tree reads joins it (up to KILN_EW_MAX_STEPS steps and KILN_EW_MAX_INPUTS
 * inputs).  Trees of one node stay as they are.
 *
 * Preconditions: inference mode, or a training graph that already holds its backward pass
 * (cx->differentiated): the fused op has no gradient rule.  The pass only absorbs values read
 * by the tree alone, so the forward values a backward pass reads stay stored. */
#include <string.h>

#include "passes/fusion.h"

typedef struct tree {
  int steps[KILN_EW_MAX_STEPS]; /* node ids, operands before users */
  int n_steps;
  int inputs[KILN_EW_MAX_INPUTS]; /* value ids */
  int n_inputs;
  bool overflow;
} tree;

static bool f32(const kiln_value *v) { return v && v->typed && v->dtype == KILN_F32; }

static bool candidate(const kiln_graph *g, const kiln_node *n) {
  int lo, hi;
  if (n->dead || n->opset < 7 || !kiln_ew_step_op(n->op, &lo, &hi)) return false;
  if (n->n_in < lo || n->n_in > hi || n->n_out != 1 || !f32(ir_out(g, n, 0))) return false;
  const kiln_value *x = ir_in(g, n, 0);
  if (!f32(x)) return false;
  kiln_shape s = x->shape;
  for (int i = 1; i < n->n_in; i++) {
    const kiln_value *v = ir_in(g, n, i);
    if (!v) {
      if (n->op != KILN_OP_Clip) return false;
      continue;
    }
    kiln_err e = {0};
    if (!f32(v) || ir_broadcast(&s, &v->shape, &s, &e)) return false;
  }
  return kiln_shape_eq(&s, &ir_out(g, n, 0)->shape);
}

/* Whether the candidate producing value v can join the tree whose node `user` reads v. */
static int joinable(const kiln_graph *g, int v, int user) {
  int p = g->values[v].producer;
  if (p < 0 || !candidate(g, &g->nodes[p]) || fuse_sole_reader(g, v) != user) return -1;
  if (g->nodes[p].opset != g->nodes[user].opset) return -1; /* one onnx_opset per chain */
  return p;
}

/* Adds node ni and at most budget - 1 of the joinable nodes below it to t, operands first
 * (operands are taken greedily, first operand first; an operand that no longer fits is an
 * input of the tree).  Returns the number of steps added; the recursion is as deep as the
 * budget. */
static int grow(const kiln_graph *g, int ni, tree *t, int budget) {
  const kiln_node *n = &g->nodes[ni];
  int added = 0;
  for (int i = 0; i < n->n_in; i++) {
    int v = n->in[i];
    if (v < 0) continue;
    bool seen = false; /* x * x: one operand */
    for (int j = 0; j < i; j++) seen |= n->in[j] == v;
    if (seen) continue;
    int p = joinable(g, v, ni), room = budget - 1 - added; /* one step is kept for ni */
    if (p >= 0 && room > 0) {
      added += grow(g, p, t, room);
      continue;
    }
    bool have = false;
    for (int k = 0; k < t->n_inputs; k++) have |= t->inputs[k] == v;
    if (have) continue;
    if (t->n_inputs == KILN_EW_MAX_INPUTS) {
      t->overflow = true;
      continue;
    }
    t->inputs[t->n_inputs++] = v;
  }
  t->steps[t->n_steps++] = ni;
  return added + 1;
}

/* The operand index of value v in the fused node: an input, or a step's result. */
static int64_t operand_of(const kiln_graph *g, const tree *t, int v) {
  for (int k = 0; k < t->n_steps; k++)
    if (g->nodes[t->steps[k]].out[0] == v) return t->n_inputs + k;
  for (int k = 0; k < t->n_inputs; k++)
    if (t->inputs[k] == v) return k;
  return -1;
}

static kiln_code build(kiln_graph *g, const tree *t, int *nid, kiln_err *e) {
  int64_t arity[KILN_EW_MAX_STEPS], operands[KILN_EW_MAX_STEPS * KILN_EW_MAX_ARITY];
  double fl[3][KILN_EW_MAX_STEPS];
  bool has_fl[3] = {false};
  int n_ops = 0, opset = 0;
  kiln_attr ops = {0};
  ops.kind = KILN_ATTR_STRINGS;
  ops.n = t->n_steps;
  ops.name = kiln_strdup("ops");
  ops.strings = kiln_calloc((size_t)t->n_steps, sizeof(char *));
  if (!ops.name || !ops.strings) {
    ir_attr_free(&ops);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  }
  for (int k = 0; k < t->n_steps; k++) {
    const kiln_node *n = &g->nodes[t->steps[k]];
    ops.strings[k] = kiln_strdup(n->def->name);
    if (!ops.strings[k]) {
      ir_attr_free(&ops);
      return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    }
    arity[k] = n->n_in;
    for (int i = 0; i < n->n_in; i++) operands[n_ops++] = n->in[i] < 0 ? -1 : operand_of(g, t, n->in[i]);
    if (n->opset > opset) opset = n->opset;
    double v[3] = {0, 0, 0};
    switch (n->op) {
    case KILN_OP_LeakyRelu:
    case KILN_OP_Elu: v[0] = ir_attr_float(n, "alpha"); break;
    case KILN_OP_Selu:
      v[0] = ir_attr_float(n, "alpha");
      v[2] = ir_attr_float(n, "gamma");
      break;
    case KILN_OP_HardSigmoid:
      v[0] = ir_attr_float(n, "alpha");
      v[1] = ir_attr_float(n, "beta");
      break;
    case KILN_OP_Clip:
      if (n->opset < 11) {
        v[0] = ir_attr_float(n, "min");
        v[1] = ir_attr_float(n, "max");
      }
      break;
    default: break;
    }
    for (int f = 0; f < 3; f++) {
      fl[f][k] = v[f];
      has_fl[f] |= v[f] != 0;
    }
  }
  int root = t->steps[t->n_steps - 1], dead[KILN_EW_MAX_STEPS];
  for (int k = 0; k < t->n_steps; k++) dead[k] = t->steps[k];
  kiln_code rc = fuse_replace(g, dead, t->n_steps, KILN_OP_FusedElementwise, g->nodes[root].name,
                              t->inputs, t->n_inputs, g->nodes[root].out[0], nid, e);
  if (rc) {
    ir_attr_free(&ops);
    return rc;
  }
  KILN_TRY(ir_push_attr(g, *nid, &ops, e));
  KILN_TRY(ir_set_attr_ints(g, *nid, "arity", arity, t->n_steps, e));
  KILN_TRY(ir_set_attr_ints(g, *nid, "operands", operands, n_ops, e));
  static const char *const fnames[3] = {"alpha", "beta", "gamma"};
  for (int f = 0; f < 3; f++)
    if (has_fl[f]) KILN_TRY(ir_set_attr_floats(g, *nid, fnames[f], fl[f], t->n_steps, e));
  return ir_set_attr_int(g, *nid, "onnx_opset", opset, e);
}

kiln_code pass_fuse_elementwise(kiln_graph *g, kiln_pass_ctx *cx, kiln_pass_stats *st,
                                kiln_err *e) {
  if (cx->mode == KILN_MODE_TRAINING && !cx->differentiated) {
    snprintf(st->detail, sizeof st->detail,
             "skipped: training mode before autodiff keeps the unfused ops");
    return KILN_OK;
  }
  int64_t fused_nodes = 0;
  tree *t = kiln_malloc(sizeof *t);
  if (!t) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  /* backwards over the topologically sorted nodes: roots before the nodes they absorb */
  for (int64_t i = g->n_nodes - 1; i >= 0; i--) {
    const kiln_node *n = &g->nodes[i];
    if (n->dead || !candidate(g, n)) continue;
    int reader = fuse_sole_reader(g, n->out[0]);
    if (reader >= 0 && candidate(g, &g->nodes[reader])) continue; /* joins its reader's tree */
    memset(t, 0, sizeof *t);
    grow(g, (int)i, t, KILN_EW_MAX_STEPS);
    if (t->n_steps < 2 || t->overflow) continue;
    int nid;
    kiln_code rc = build(g, t, &nid, e);
    if (rc) {
      kiln_free(t);
      return rc;
    }
    fused_nodes += t->n_steps;
    st->changes++;
  }
  kiln_free(t);
  snprintf(st->detail, sizeof st->detail, "%lld elementwise chains fused (%lld nodes)",
           (long long)st->changes, (long long)fused_nodes);
  return KILN_OK;
}
