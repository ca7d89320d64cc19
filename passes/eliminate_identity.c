/* eliminate_identity.c — removes nodes that copy their input unchanged: Identity,
 * Dropout that does not drop, and no-op Reshape/Flatten/Squeeze/Unsqueeze (output
 * shape = input shape), Cast to the input's dtype and Transpose that keeps the
 * element order.  Readers of the output read the input instead.
 *
 * When the output is a graph output its name is kept: the input's producer is made
 * to produce the output value directly.  When that is impossible (the input is a
 * graph input, a graph output itself, or a constant) the node stays. */
#include "passes/pass.h"

/* Transpose whose perm moves only size-1 axes relative to the others: the element
 * order, hence the data, is unchanged (perm identity is the usual case). */
static bool transpose_is_noop(const kiln_graph *g, const kiln_node *n) {
  const kiln_value *x = ir_in(g, n, 0);
  int rank = x->shape.rank;
  const int64_t *perm;
  int64_t np = ir_attr_ints(n, "perm", &perm);
  int64_t last = -1;
  for (int i = 0; i < rank; i++) {
    int64_t p = perm ? (i < np ? perm[i] : -1) : rank - 1 - i; /* absent: reverse */
    if (p < 0 || p >= rank) return false;
    if (x->shape.d[p] == 1) continue;
    if (p < last) return false;
    last = p;
  }
  return !perm || np == rank;
}

/* Dropout is the identity unless it trains (and its ratio is not 0).  Whether it
 * trains: opset >= 12 the training_mode input decides (absent: the runtime's mode);
 * before, the runtime's mode, except that opset 6's is_test=1 never trains. */
static bool dropout_is_noop(const kiln_graph *g, const kiln_node *n, kiln_pass_mode mode) {
  /* the mask output, when used, is not a copy of anything */
  const kiln_value *mask = ir_out(g, n, 1);
  if (mask && (ir_use_count(g, n->out[1]) > 0 || pass_is_output(g, n->out[1]))) return false;
  double ratio = -1;
  bool trains;
  if (n->opset >= 12) {
    const kiln_tensor *r = ir_in_const(g, n, 1);
    if (!ir_in(g, n, 1)) ratio = 0.5;
    else if (r && r->numel == 1) ratio = kiln_tensor_get_f(r, 0);
    if (ir_in(g, n, 2)) {
      const kiln_tensor *t = ir_in_const(g, n, 2);
      if (!t || t->numel != 1) return false; /* decided at run time */
      trains = kiln_tensor_get_i(t, 0) != 0;
    } else {
      trains = mode == KILN_MODE_TRAINING;
    }
  } else {
    ratio = ir_attr_float(n, "ratio");
    trains = mode == KILN_MODE_TRAINING && !(n->opset < 7 && ir_attr_int(n, "is_test"));
  }
  return !trains || ratio == 0;
}

static bool is_noop(const kiln_graph *g, const kiln_node *n, kiln_pass_mode mode) {
  const kiln_value *x = ir_in(g, n, 0), *y = ir_out(g, n, 0);
  if (!x || !y || !x->typed || !y->typed) return false;
  if (x->dtype != y->dtype || !kiln_shape_eq(&x->shape, &y->shape)) return false;
  switch (n->op) {
  case KILN_OP_Identity: return true;
  case KILN_OP_Dropout: return dropout_is_noop(g, n, mode);
  case KILN_OP_Reshape:
  case KILN_OP_Flatten:
  case KILN_OP_Squeeze:
  case KILN_OP_Unsqueeze:
  case KILN_OP_Cast: return true; /* same shape and dtype: same row-major data */
  case KILN_OP_Transpose: return transpose_is_noop(g, n);
  default: return false;
  }
}

static bool is_graph_input(const kiln_graph *g, int v) {
  for (int i = 0; i < g->n_inputs; i++)
    if (g->inputs[i] == v) return true;
  return false;
}

kiln_code pass_eliminate_identity(kiln_graph *g, kiln_pass_ctx *cx, kiln_pass_stats *st,
                                  kiln_err *e) {
  int64_t kept_outputs = 0;
  for (int64_t i = 0; i < g->n_nodes; i++) {
    kiln_node *n = &g->nodes[i];
    if (n->dead || !is_noop(g, n, cx->mode)) continue;
    int x = n->in[0], y = n->out[0];
    if (pass_is_output(g, y)) {
      /* Keep the output's name: x's producer produces y from now on. */
      kiln_value *xv = &g->values[x];
      int p = xv->producer;
      if (is_graph_input(g, x) || pass_is_output(g, x) || p < 0 || g->nodes[p].dead || xv->data) {
        kept_outputs++;
        continue;
      }
      n->dead = true;
      pass_replace_uses(g, x, y);
      kiln_node *pn = &g->nodes[p];
      int slot = xv->producer_slot;
      pn->out[slot] = y;
      g->values[y].producer = p;
      g->values[y].producer_slot = slot;
      xv->producer = -1;
    } else {
      n->dead = true;
      pass_replace_uses(g, y, x);
    }
    st->changes++;
  }
  int len = snprintf(st->detail, sizeof st->detail, "%lld no-op nodes removed",
                     (long long)st->changes);
  if (kept_outputs && len > 0 && (size_t)len < sizeof st->detail)
    snprintf(st->detail + len, sizeof st->detail - (size_t)len,
             ", %lld kept (they name a graph output)", (long long)kept_outputs);
  return KILN_OK;
}
