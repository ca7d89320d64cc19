/* verify.c — topological order, compaction, the verifier, and shape inference
 * with constant propagation over the whole graph. */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "ir/graph.h"

kiln_code ir_toposort(kiln_graph *g, kiln_err *e) {
  int64_t nn = g->n_nodes, nv = g->n_values;
  kiln_code rc = KILN_OK;
  int *order = kiln_malloc(sizeof(int) * (size_t)(nn ? nn : 1));
  int *state = kiln_calloc((size_t)(nn ? nn : 1), sizeof(int)); /* 0 new, 1 on stack, 2 done */
  int *stack = kiln_malloc(sizeof(int) * 2 * (size_t)(nn ? nn : 1));
  (void)nv;
  if (!order || !state || !stack) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory (toposort)");
    goto done;
  }
  int64_t n_order = 0;
  /* Iterative DFS over producers so deep graphs do not overflow the C stack.
   * stack holds (node, next input index) pairs. */
  for (int64_t root = 0; root < nn; root++) {
    if (g->nodes[root].dead || state[root]) continue;
    int sp = 0;
    stack[0] = (int)root;
    stack[1] = 0;
    sp = 1;
    state[root] = 1;
    while (sp > 0) {
      int node = stack[2 * (sp - 1)];
      int *next = &stack[2 * (sp - 1) + 1];
      kiln_node *n = &g->nodes[node];
      if (*next < n->n_in) {
        int vid = n->in[(*next)++];
        if (vid < 0) continue;
        int p = g->values[vid].producer;
        if (p < 0 || g->nodes[p].dead) continue;
        if (state[p] == 1) {
          char buf[200];
          rc = kiln_errf(e, KILN_ERR_INVALID, "the graph has a cycle through %s (value '%s')",
                         ir_node_label(&g->nodes[p], buf, sizeof buf), g->values[vid].name);
          goto done;
        }
        if (state[p] == 0) {
          state[p] = 1;
          stack[2 * sp] = p;
          stack[2 * sp + 1] = 0;
          sp++;
        }
      } else {
        state[node] = 2;
        order[n_order++] = node;
        sp--;
      }
    }
  }
  /* Permute nodes: live nodes in order, dead nodes after them. */
  kiln_node *nodes = kiln_malloc(sizeof(kiln_node) * (size_t)(nn ? nn : 1));
  if (!nodes) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory (toposort)");
    goto done;
  }
  int64_t k = 0;
  for (int64_t i = 0; i < n_order; i++) nodes[k++] = g->nodes[order[i]];
  for (int64_t i = 0; i < nn; i++)
    if (g->nodes[i].dead) nodes[k++] = g->nodes[i];
  assert(k == nn);
  kiln_free(g->nodes);
  g->nodes = nodes;
  g->cap_nodes = nn ? nn : 1;
  for (int64_t v = 0; v < g->n_values; v++) g->values[v].producer = -1;
  for (int64_t i = 0; i < nn; i++) {
    if (g->nodes[i].dead) continue;
    for (int o = 0; o < g->nodes[i].n_out; o++)
      if (g->nodes[i].out[o] >= 0) {
        g->values[g->nodes[i].out[o]].producer = (int)i;
        g->values[g->nodes[i].out[o]].producer_slot = o;
      }
  }
done:
  kiln_free(order);
  kiln_free(state);
  kiln_free(stack);
  return rc;
}

kiln_code ir_compact(kiln_graph *g, kiln_err *e) {
  /* drop dead nodes */
  int64_t k = 0;
  for (int64_t i = 0; i < g->n_nodes; i++) {
    kiln_node *n = &g->nodes[i];
    if (n->dead) {
      kiln_free(n->name);
      kiln_free(n->domain);
      kiln_free(n->doc);
      kiln_free(n->in);
      kiln_free(n->out);
      for (int a = 0; a < n->n_attrs; a++) ir_attr_free(&n->attrs[a]);
      kiln_free(n->attrs);
      continue;
    }
    g->nodes[k++] = *n;
  }
  g->n_nodes = k;
  /* mark referenced values */
  int64_t nv = g->n_values;
  int *remap = kiln_malloc(sizeof(int) * (size_t)(nv ? nv : 1));
  if (!remap) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (compact)");
  for (int64_t v = 0; v < nv; v++) {
    kiln_value *val = &g->values[v];
    remap[v] = (val->is_input || val->is_output) ? 1 : 0;
  }
  for (int64_t i = 0; i < g->n_nodes; i++) {
    kiln_node *n = &g->nodes[i];
    for (int j = 0; j < n->n_in; j++)
      if (n->in[j] >= 0) remap[n->in[j]] = 1;
    for (int j = 0; j < n->n_out; j++)
      if (n->out[j] >= 0) remap[n->out[j]] = 1;
  }
  int64_t nk = 0;
  for (int64_t v = 0; v < nv; v++) {
    if (!remap[v]) {
      kiln_value *val = &g->values[v];
      kiln_free(val->name);
      kiln_free(val->doc);
      for (int r = 0; r < KILN_MAX_RANK; r++) kiln_free(val->sym[r]);
      kiln_tensor_free(val->data);
      remap[v] = -1;
      continue;
    }
    g->values[nk] = g->values[v];
    remap[v] = (int)nk++;
  }
  g->n_values = nk;
  for (int64_t i = 0; i < g->n_nodes; i++) {
    kiln_node *n = &g->nodes[i];
    for (int j = 0; j < n->n_in; j++)
      if (n->in[j] >= 0) n->in[j] = remap[n->in[j]];
    for (int j = 0; j < n->n_out; j++)
      if (n->out[j] >= 0) n->out[j] = remap[n->out[j]];
  }
  for (int i = 0; i < g->n_inputs; i++) g->inputs[i] = remap[g->inputs[i]];
  for (int i = 0; i < g->n_outputs; i++) g->outputs[i] = remap[g->outputs[i]];
  kiln_free(remap);
  for (int64_t v = 0; v < g->n_values; v++) g->values[v].producer = -1;
  for (int64_t i = 0; i < g->n_nodes; i++)
    for (int o = 0; o < g->nodes[i].n_out; o++)
      if (g->nodes[i].out[o] >= 0) {
        g->values[g->nodes[i].out[o]].producer = (int)i;
        g->values[g->nodes[i].out[o]].producer_slot = o;
      }
  /* rebuild the name index */
  int64_t cap = 64;
  while (g->n_values * 2 > cap) cap *= 2;
  int *idx = kiln_malloc((size_t)cap * sizeof *idx);
  if (!idx) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (name index)");
  for (int64_t i = 0; i < cap; i++) idx[i] = -1;
  kiln_free(g->name_index);
  g->name_index = idx;
  g->name_index_cap = cap;
  for (int64_t v = 0; v < g->n_values; v++) {
    uint64_t h = 1469598103934665603ull;
    for (const char *s = g->values[v].name; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    h &= (uint64_t)(cap - 1);
    while (idx[h] >= 0) h = (h + 1) & (uint64_t)(cap - 1);
    idx[h] = (int)v;
  }
  return KILN_OK;
}

static kiln_code verify_attrs(const kiln_node *n, kiln_err *e) {
  const kiln_op_def *d = n->def;
  for (int a = 0; a < n->n_attrs; a++) {
    const kiln_attr *at = &n->attrs[a];
    const kiln_attr_spec *s = kiln_op_attr_spec(d, at->name);
    if (!s) return kiln_errf(e, KILN_ERR_INVALID, "unknown attribute '%s'", at->name);
    if (s->kind != at->kind && !s->legacy)
      return kiln_errf(e, KILN_ERR_INVALID, "attribute '%s' has the wrong kind (%d, expected %d)",
                       at->name, at->kind, s->kind);
  }
  for (int s = 0; s < d->n_attrs; s++)
    if (d->attrs[s].required && !ir_attr_find(n, d->attrs[s].name))
      return kiln_errf(e, KILN_ERR_INVALID, "required attribute '%s' is missing", d->attrs[s].name);
  return KILN_OK;
}

kiln_code ir_verify(const kiln_graph *g, kiln_err *e) {
  char lbl[256];
  for (int i = 0; i < g->n_inputs; i++)
    if (g->inputs[i] < 0 || g->inputs[i] >= g->n_values)
      return kiln_errf(e, KILN_ERR_INVALID, "graph input %d refers to no value", i);
  for (int i = 0; i < g->n_outputs; i++) {
    int v = g->outputs[i];
    if (v < 0 || v >= g->n_values) return kiln_errf(e, KILN_ERR_INVALID, "graph output %d refers to no value", i);
    const kiln_value *val = &g->values[v];
    if (val->producer < 0 && !val->data && !val->is_input)
      return kiln_errf(e, KILN_ERR_INVALID, "graph output '%s' is never produced", val->name);
  }
  /* a node may only read values defined by an earlier node, an input or a constant */
  char *defined = kiln_calloc((size_t)(g->n_values ? g->n_values : 1), 1);
  if (!defined) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (verify)");
  kiln_code rc = KILN_OK;
  for (int64_t v = 0; v < g->n_values; v++)
    defined[v] = g->values[v].is_input || (g->values[v].data && g->values[v].producer < 0);
  for (int64_t i = 0; i < g->n_nodes && !rc; i++) {
    const kiln_node *n = &g->nodes[i];
    if (n->dead) continue;
    const kiln_op_def *d = n->def;
    assert(d);
    ir_node_label(n, lbl, sizeof lbl);
    if (n->n_in < d->min_in || n->n_in > d->max_in) {
      rc = kiln_errf(e, KILN_ERR_INVALID, "%s has %d inputs; %s takes %d..%d", lbl, n->n_in, d->name,
                     d->min_in, d->max_in == KILN_VARIADIC ? 9999 : d->max_in);
      break;
    }
    if (n->n_out < d->min_out || n->n_out > d->max_out) {
      rc = kiln_errf(e, KILN_ERR_INVALID, "%s has %d outputs; %s gives %d..%d", lbl, n->n_out,
                     d->name, d->min_out, d->max_out);
      break;
    }
    for (int k = 0; k < n->n_in; k++) {
      int v = n->in[k];
      if (v < -1 || v >= g->n_values) {
        rc = kiln_errf(e, KILN_ERR_INVALID, "%s: input %d refers to no value", lbl, k);
        break;
      }
      if (v >= 0 && !defined[v]) {
        rc = kiln_errf(e, KILN_ERR_INVALID, "%s reads '%s', which no earlier node, input or initializer defines",
                       lbl, g->values[v].name);
        break;
      }
      if (v < 0 && k < d->min_in) {
        rc = kiln_errf(e, KILN_ERR_INVALID, "%s: required input %d is empty", lbl, k);
        break;
      }
    }
    if (rc) break;
    for (int k = 0; k < n->n_out; k++) {
      int v = n->out[k];
      if (v < -1 || v >= g->n_values) {
        rc = kiln_errf(e, KILN_ERR_INVALID, "%s: output %d refers to no value", lbl, k);
        break;
      }
      if (v >= 0) {
        if (g->values[v].producer != (int)i) {
          rc = kiln_errf(e, KILN_ERR_INVALID, "%s: value '%s' has more than one definition", lbl,
                         g->values[v].name);
          break;
        }
        defined[v] = 1;
      }
    }
    if (rc) break;
    if (verify_attrs(n, e)) {
      kiln_err_prefix(e, "%s", lbl);
      rc = e->code;
    }
  }
  kiln_free(defined);
  return rc;
}

kiln_code ir_bind_dim(kiln_graph *g, const char *sym, int64_t size, kiln_err *e) {
  if (size <= 0 || size > KILN_MAX_DIM)
    return kiln_errf(e, KILN_ERR_INVALID, "cannot bind dimension '%s' to %lld", sym, (long long)size);
  bool found = false;
  for (int i = 0; i < g->n_inputs; i++) {
    kiln_value *v = &g->values[g->inputs[i]];
    for (int d = 0; d < v->shape.rank; d++)
      if (v->sym[d] && strcmp(v->sym[d], sym) == 0) {
        v->shape.d[d] = size;
        found = true;
      }
  }
  if (!found) return kiln_errf(e, KILN_ERR_INVALID, "no graph input has a dimension named '%s'", sym);
  return KILN_OK;
}

kiln_code ir_bind_input_const(kiln_graph *g, const char *name, kiln_tensor *t, kiln_err *e) {
  int v = ir_find_value(g, name);
  if (v < 0 || !g->values[v].is_input) {
    kiln_tensor_free(t);
    return kiln_errf(e, KILN_ERR_INVALID, "'%s' is not a graph input", name);
  }
  kiln_value *val = &g->values[v];
  kiln_tensor_free(val->data);
  val->data = t;
  val->dtype = t->dtype;
  val->shape = t->shape;
  val->typed = true;
  val->is_input = false;
  int k = 0;
  for (int i = 0; i < g->n_inputs; i++)
    if (g->inputs[i] != v) g->inputs[k++] = g->inputs[i];
  g->n_inputs = k;
  return KILN_OK;
}

bool ir_input_feeds_shape(const kiln_graph *g, int v) {
  /* Walk forward from v: a use in a shape slot answers yes; otherwise follow
   * the outputs of consuming nodes (a shape may be computed from the input). */
  int64_t nv = g->n_values;
  char *seen = kiln_calloc((size_t)(nv ? nv : 1), 1);
  int *work = kiln_malloc(sizeof(int) * (size_t)(nv ? nv : 1));
  bool found = false;
  if (!seen || !work) goto out;
  int top = 0;
  work[top++] = v;
  seen[v] = 1;
  while (top > 0 && !found) {
    int cur = work[--top];
    for (int64_t i = 0; i < g->n_nodes && !found; i++) {
      const kiln_node *n = &g->nodes[i];
      if (n->dead) continue;
      bool uses = false;
      for (int k = 0; k < n->n_in; k++)
        if (n->in[k] == cur) {
          uses = true;
          if (k < 32 && (n->def->shape_inputs & (1u << k))) found = true;
        }
      if (!uses || found) continue;
      for (int o = 0; o < n->n_out; o++)
        if (n->out[o] >= 0 && !seen[n->out[o]]) {
          seen[n->out[o]] = 1;
          work[top++] = n->out[o];
        }
    }
  }
out:
  kiln_free(seen);
  kiln_free(work);
  return found;
}

kiln_code ir_infer(kiln_graph *g, const kiln_evaluator *ev, kiln_err *e) {
  char lbl[256];
  for (int i = 0; i < g->n_inputs; i++) {
    kiln_value *v = &g->values[g->inputs[i]];
    for (int d = 0; d < v->shape.rank; d++)
      if (v->shape.d[d] < 0)
        return kiln_errf(e, KILN_ERR_SHAPE,
                         "graph input '%s' has an unbound dimension %d ('%s'); bind it (e.g. --bind %s=1)",
                         v->name, d, v->sym[d] ? v->sym[d] : "?", v->sym[d] ? v->sym[d] : "dim");
    if (!v->typed)
      return kiln_errf(e, KILN_ERR_SHAPE, "graph input '%s' has no type", v->name);
    int64_t bytes;
    if (kiln_bytes_for(v->dtype, &v->shape, &bytes, e)) {
      kiln_err_prefix(e, "graph input '%s'", v->name);
      return e->code;
    }
  }
  for (int64_t i = 0; i < g->n_nodes; i++) {
    kiln_node *n = &g->nodes[i];
    if (n->dead) continue;
    ir_node_label(n, lbl, sizeof lbl);
    for (int k = 0; k < n->n_in; k++) {
      kiln_value *v = ir_in(g, n, k);
      if (v && !v->typed)
        return kiln_errf(e, KILN_ERR_SHAPE, "%s: input '%s' has no known type", lbl, v->name);
      if (v && k < 32 && (n->def->shape_inputs & (1u << k)) && !v->data)
        return kiln_errf(e, KILN_ERR_UNSUPPORTED,
                         "%s: input '%s' determines the output shape but is not a constant "
                         "(kiln compiles static shapes)",
                         lbl, v->name);
    }
    if (n->def->infer(g, n, e)) {
      kiln_err_prefix(e, "%s", lbl);
      return e->code;
    }
    for (int o = 0; o < n->n_out; o++) {
      kiln_value *v = ir_out(g, n, o);
      if (v && !v->typed)
        return kiln_errf(e, KILN_ERR_INTERNAL, "%s: shape inference left output '%s' untyped", lbl,
                         v->name);
    }
    /* Constant propagation: a node whose inputs are all constant and whose outputs
     * are small is evaluated now, so shape chains (Shape -> Gather -> Concat ->
     * Reshape) resolve.  The node stays; the folding pass removes it. */
    if (!ev || (n->def->flags & KILN_OPF_NO_FOLD)) continue;
    bool all_const = true, any_out = false;
    int64_t out_elems = 0;
    for (int k = 0; k < n->n_in; k++) {
      kiln_value *v = ir_in(g, n, k);
      if (v && !v->data) all_const = false;
    }
    for (int o = 0; o < n->n_out; o++) {
      kiln_value *v = ir_out(g, n, o);
      if (!v) continue;
      int64_t ne;
      kiln_shape_numel(&v->shape, &ne);
      out_elems += ne;
      if (!v->data) any_out = true;
    }
    if (!all_const || !any_out || out_elems > ev->max_fold_elems) continue;
    kiln_tensor *ins[64] = {0}, *outs[16] = {0};
    if (n->n_in > 64 || n->n_out > 16) continue;
    for (int k = 0; k < n->n_in; k++) {
      kiln_value *v = ir_in(g, n, k);
      ins[k] = v ? v->data : NULL;
    }
    if (ev->eval(ev->ctx, g, n, ins, outs, e)) {
      for (int o = 0; o < 16; o++) kiln_tensor_free(outs[o]);
      kiln_err_prefix(e, "%s", lbl);
      return e->code;
    }
    for (int o = 0; o < n->n_out; o++) {
      kiln_value *v = ir_out(g, n, o);
      if (v && !v->data)
        v->data = outs[o];
      else
        kiln_tensor_free(outs[o]);
    }
  }
  return KILN_OK;
}
