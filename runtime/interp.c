/* interp.c — the reference interpreter: allocate, run each node's reference
 * kernel in topological order, free values after their last use. */
#include <assert.h>
#include <string.h>

#include "runtime/ref.h"

static kiln_code eval_node(void *ctxp, const kiln_graph *g, const kiln_node *n,
                           kiln_tensor *const *in, kiln_tensor **out, kiln_err *e) {
  (void)ctxp;
  kiln_ref_ctx ctx = {.g = g, .training = false, .seed = 0};
  for (int o = 0; o < n->n_out; o++) {
    const kiln_value *v = ir_out(g, n, o);
    out[o] = NULL;
    if (!v) continue;
    kiln_code rc = kiln_tensor_new(v->dtype, &v->shape, &out[o], e);
    if (rc) return rc;
  }
  kiln_ref_fn fn = kiln_ref_kernel(n->op);
  assert(fn);
  return fn(&ctx, n, (const kiln_tensor *const *)in, out, e);
}

kiln_evaluator kiln_ref_evaluator(void) {
  kiln_evaluator ev = {.eval = eval_node, .ctx = NULL, .max_fold_elems = 1 << 16};
  return ev;
}

kiln_code kiln_ref_run(const kiln_graph *g, const kiln_ref_ctx *ctx, kiln_tensor *const *inputs,
                       kiln_tensor **outputs, kiln_err *e) {
  int64_t nv = g->n_values;
  kiln_code rc = KILN_OK;
  char lbl[256];
  /* vals[v]: the tensor holding value v during the run (borrowed for inputs and
   * constants, owned otherwise); last[v]: index of the last node reading v. */
  kiln_tensor **vals = kiln_calloc((size_t)(nv ? nv : 1), sizeof *vals);
  bool *owned = kiln_calloc((size_t)(nv ? nv : 1), sizeof *owned);
  int64_t *last = kiln_malloc(sizeof(int64_t) * (size_t)(nv ? nv : 1));
  for (int i = 0; i < g->n_outputs; i++) outputs[i] = NULL;
  if (!vals || !owned || !last) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory (interpreter)");
    goto done;
  }
  for (int64_t v = 0; v < nv; v++) last[v] = g->values[v].is_output ? INT64_MAX : -1;
  for (int64_t i = 0; i < g->n_nodes; i++)
    for (int k = 0; k < g->nodes[i].n_in; k++) {
      int v = g->nodes[i].in[k];
      if (v >= 0 && last[v] != INT64_MAX && last[v] < i) last[v] = i;
    }
  for (int i = 0; i < g->n_inputs; i++) {
    const kiln_value *v = &g->values[g->inputs[i]];
    const kiln_tensor *t = inputs[i];
    char a[160], b[160];
    if (!t) {
      rc = kiln_errf(e, KILN_ERR_INVALID, "input '%s' was not given", v->name);
      goto done;
    }
    if (t->dtype != v->dtype || !kiln_shape_eq(&t->shape, &v->shape)) {
      rc = kiln_errf(e, KILN_ERR_SHAPE, "input '%s' is %s %s; the model expects %s %s", v->name,
                     kiln_dtype_name(t->dtype), kiln_shape_str(&t->shape, a, sizeof a),
                     kiln_dtype_name(v->dtype), kiln_shape_str(&v->shape, b, sizeof b));
      goto done;
    }
    vals[g->inputs[i]] = (kiln_tensor *)t;
  }
  for (int64_t v = 0; v < nv; v++)
    if (g->values[v].data) vals[v] = g->values[v].data;

  for (int64_t i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    if (n->dead) continue;
    bool need = false;
    for (int o = 0; o < n->n_out; o++) {
      const kiln_value *ov = ir_out(g, n, o);
      if (ov && !ov->data) need = true;
    }
    if (!need) continue; /* folded at inference time */
    const kiln_tensor *ins[256];
    kiln_tensor *outs[64];
    if (n->n_in > 256 || n->n_out > 64) {
      rc = kiln_errf(e, KILN_ERR_LIMIT, "%s has too many inputs or outputs",
                     ir_node_label(n, lbl, sizeof lbl));
      goto done;
    }
    for (int k = 0; k < n->n_in; k++) {
      ins[k] = n->in[k] >= 0 ? vals[n->in[k]] : NULL;
      assert(n->in[k] < 0 || ins[k]);
    }
    for (int o = 0; o < n->n_out; o++) {
      const kiln_value *ov = ir_out(g, n, o);
      outs[o] = NULL;
      if (!ov) continue;
      rc = kiln_tensor_new(ov->dtype, &ov->shape, &outs[o], e);
      if (rc) {
        for (int p = 0; p < o; p++) kiln_tensor_free(outs[p]);
        kiln_err_prefix(e, "%s", ir_node_label(n, lbl, sizeof lbl));
        goto done;
      }
    }
    rc = kiln_ref_kernel(n->op)(ctx, n, ins, outs, e);
    for (int o = 0; o < n->n_out; o++) {
      if (!outs[o]) continue;
      int v = n->out[o];
      if (rc || g->values[v].data) {
        kiln_tensor_free(outs[o]);
        continue;
      }
      vals[v] = outs[o];
      owned[v] = true;
    }
    if (rc) {
      kiln_err_prefix(e, "%s", ir_node_label(n, lbl, sizeof lbl));
      goto done;
    }
    /* free values whose last reader was this node */
    for (int k = 0; k < n->n_in; k++) {
      int v = n->in[k];
      if (v >= 0 && owned[v] && last[v] == i) {
        kiln_tensor_free(vals[v]);
        vals[v] = NULL;
        owned[v] = false;
      }
    }
    /* outputs nobody reads */
    for (int o = 0; o < n->n_out; o++) {
      int v = n->out[o];
      if (v >= 0 && owned[v] && last[v] < 0) {
        kiln_tensor_free(vals[v]);
        vals[v] = NULL;
        owned[v] = false;
      }
    }
  }
  for (int i = 0; i < g->n_outputs; i++) {
    int v = g->outputs[i];
    if (!vals[v]) {
      rc = kiln_errf(e, KILN_ERR_INTERNAL, "output '%s' was not computed", g->values[v].name);
      goto done;
    }
    if (owned[v]) { /* a value listed twice as an output is cloned the second time */
      outputs[i] = vals[v];
      owned[v] = false;
    } else {
      rc = kiln_tensor_clone(vals[v], &outputs[i], e);
      if (rc) goto done;
    }
  }
done:
  if (rc)
    for (int i = 0; i < g->n_outputs; i++) {
      kiln_tensor_free(outputs[i]);
      outputs[i] = NULL;
    }
  if (vals && owned)
    for (int64_t v = 0; v < nv; v++)
      if (owned[v]) kiln_tensor_free(vals[v]);
  kiln_free(vals);
  kiln_free(owned);
  kiln_free(last);
  return rc;
}
