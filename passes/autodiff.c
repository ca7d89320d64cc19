/* autodiff.c — the reverse-mode driver: finds the nodes between the values to
 * differentiate and the loss, walks them in reverse topological order calling
 * each op's gradient rule, and accumulates gradients of multiply-used values. */
#include "passes/autodiff.h"

#include <stdio.h>
#include <string.h>

struct kiln_grad_ctx {
  kiln_graph *g;
  kiln_grad_fn rules[KILN_OP_COUNT];
  const char *cur_name; /* forward node being differentiated, for names and messages */
  int64_t rule_first;   /* first node added by the rule running now */
  int64_t counter;
};

kiln_graph *grad_graph(kiln_grad_ctx *gc) { return gc->g; }
const kiln_value *grad_val(kiln_grad_ctx *gc, int v) { return &gc->g->values[v]; }

void kiln_grad_rules(kiln_grad_fn *table) {
  memset(table, 0, sizeof(kiln_grad_fn) * KILN_OP_COUNT);
  grad_register_elementwise(table);
  grad_register_nn(table);
  grad_register_linalg(table);
  grad_register_tensor(table);
  grad_register_resize(table);
  grad_register_pool(table);
  grad_register_reduce(table);
  grad_register_kiln(table);
  grad_register_activations(table);
}

/* Opset of the nodes autodiff creates: their attribute/input conventions follow
 * opset 17 (axes as inputs for ReduceSum, etc.). */
#define GRAD_OPSET 17

kiln_code grad_node(kiln_grad_ctx *gc, kiln_op op, const int *in, int n_in, int *out_ids, int n_out,
                    int *node_id, kiln_err *e) {
  kiln_graph *g = gc->g;
  int outs[8];
  if (n_out > 8) return kiln_errf(e, KILN_ERR_INTERNAL, "too many outputs for a gradient node");
  for (int o = 0; o < n_out; o++) {
    char stem[200];
    snprintf(stem, sizeof stem, "grad_%s_%s%d", gc->cur_name && *gc->cur_name ? gc->cur_name : "v",
             kiln_op_name(op), o);
    char *nm = NULL;
    KILN_TRY(ir_unique_name(g, stem, &nm, e));
    kiln_code rc = ir_add_value(g, nm, &outs[o], e);
    kiln_free(nm);
    if (rc) return rc;
  }
  char name[256];
  snprintf(name, sizeof name, "grad/%s/%s_%lld", gc->cur_name && *gc->cur_name ? gc->cur_name : "node",
           kiln_op_name(op), (long long)gc->counter++);
  int nid;
  KILN_TRY(ir_add_node(g, op, name, in, n_in, outs, n_out, &nid, e));
  g->nodes[nid].opset = GRAD_OPSET;
  for (int o = 0; o < n_out; o++) out_ids[o] = outs[o];
  if (node_id) *node_id = nid;
  return KILN_OK;
}

/* Shape inference of a freshly built node; called once its attributes are set
 * (grad_op1 callers that set attributes call grad_infer themselves). */
static kiln_code grad_infer(kiln_grad_ctx *gc, int nid, kiln_err *e) {
  kiln_node *n = &gc->g->nodes[nid];
  if (n->def->infer(gc->g, n, e)) {
    char lbl[256];
    kiln_err_prefix(e, "autodiff: %s", ir_node_label(n, lbl, sizeof lbl));
    return e->code;
  }
  return KILN_OK;
}

kiln_code grad_op1(kiln_grad_ctx *gc, kiln_op op, const int *in, int n_in, int *out, int *node_id,
                   kiln_err *e) {
  int nid;
  KILN_TRY(grad_node(gc, op, in, n_in, out, 1, &nid, e));
  if (node_id) *node_id = nid;
  /* nodes that still need attributes are inferred by the driver after the rule */
  return KILN_OK;
}

kiln_code grad_const_f32(kiln_grad_ctx *gc, float v, int *out, kiln_err *e) {
  kiln_tensor *t;
  kiln_shape s = {.rank = 0};
  KILN_TRY(kiln_tensor_new(KILN_F32, &s, &t, e));
  ((float *)t->data)[0] = v;
  char *nm = NULL;
  KILN_TRY(ir_unique_name(gc->g, "grad_const", &nm, e));
  kiln_code rc = ir_add_const(gc->g, nm, t, false, out, e);
  kiln_free(nm);
  return rc;
}

kiln_code grad_const_i64s(kiln_grad_ctx *gc, const int64_t *v, int n, int *out, kiln_err *e) {
  kiln_tensor *t;
  kiln_shape s = {.rank = 1, .d = {n}};
  KILN_TRY(kiln_tensor_new(KILN_I64, &s, &t, e));
  for (int i = 0; i < n; i++) ((int64_t *)t->data)[i] = v[i];
  char *nm = NULL;
  KILN_TRY(ir_unique_name(gc->g, "grad_shape", &nm, e));
  kiln_code rc = ir_add_const(gc->g, nm, t, false, out, e);
  kiln_free(nm);
  return rc;
}

/* Infers every node from `first` on (rules build chains of nodes). */
static kiln_code infer_from(kiln_grad_ctx *gc, int64_t first, kiln_err *e) {
  for (int64_t i = first; i < gc->g->n_nodes; i++) KILN_TRY(grad_infer(gc, (int)i, e));
  return KILN_OK;
}

kiln_code grad_infer_new(kiln_grad_ctx *gc, kiln_err *e) { return infer_from(gc, gc->rule_first, e); }

kiln_code grad_reshape(kiln_grad_ctx *gc, int v, const kiln_shape *shape_in, int *out, kiln_err *e) {
  /* copies: adding values moves g->values, where callers' shapes often live */
  const kiln_shape shape = *shape_in;
  const kiln_shape cur = grad_val(gc, v)->shape;
  if (kiln_shape_eq(&cur, &shape)) {
    *out = v;
    return KILN_OK;
  }
  int sh, nid;
  int64_t first = gc->g->n_nodes;
  KILN_TRY(grad_const_i64s(gc, shape.d, shape.rank, &sh, e));
  KILN_TRY(grad_op1(gc, KILN_OP_Reshape, (int[]){v, sh}, 2, out, &nid, e));
  return infer_from(gc, first, e);
}

kiln_code grad_unbroadcast(kiln_grad_ctx *gc, int dy, const kiln_shape *shape_in, int *out, kiln_err *e) {
  /* copies: adding values moves g->values, where these shapes live */
  const kiln_shape target = *shape_in, dys = grad_val(gc, dy)->shape;
  const kiln_shape *shape = &target, *s = &dys;
  if (kiln_shape_eq(s, shape)) {
    *out = dy;
    return KILN_OK;
  }
  int r = s->rank, t = shape->rank;
  if (t > r) return kiln_errf(e, KILN_ERR_INTERNAL, "autodiff: cannot un-broadcast to a higher rank");
  int64_t axes[KILN_MAX_RANK];
  int n_axes = 0;
  for (int i = 0; i < r; i++) {
    int j = i - (r - t);
    if (j < 0 || (shape->d[j] == 1 && s->d[i] != 1)) axes[n_axes++] = i;
  }
  int cur = dy;
  if (n_axes) {
    int ax, nid;
    int64_t first = gc->g->n_nodes;
    KILN_TRY(grad_const_i64s(gc, axes, n_axes, &ax, e));
    KILN_TRY(grad_op1(gc, KILN_OP_ReduceSum, (int[]){dy, ax}, 2, &cur, &nid, e));
    KILN_TRY(ir_set_attr_int(gc->g, nid, "keepdims", 1, e));
    KILN_TRY(infer_from(gc, first, e));
  }
  return grad_reshape(gc, cur, shape, out, e);
}

static bool differentiable(const kiln_graph *g, const kiln_node *n, int i) {
  const kiln_value *v = ir_in(g, n, i);
  if (!v || v->dtype != KILN_F32) return false;
  if (i < 32 && ((n->def->shape_inputs | n->def->nondiff_inputs) & (1u << i))) return false;
  return true;
}

kiln_code kiln_autodiff(kiln_graph *g, const kiln_autodiff_opts *o, int *grads, kiln_err *e) {
  kiln_code rc = KILN_OK;
  char lbl[256];
  kiln_grad_ctx *gc = kiln_calloc(1, sizeof *gc);
  int64_t nv0 = g->n_values, nn0 = g->n_nodes;
  /* value-indexed arrays sized for the forward graph; gradient values created
   * later never need entries (they are not differentiated again) */
  char *from_wrt = kiln_calloc((size_t)(nv0 ? nv0 : 1), 1);
  char *to_loss = kiln_calloc((size_t)(nv0 ? nv0 : 1), 1);
  int *grad = kiln_malloc(sizeof(int) * (size_t)(nv0 ? nv0 : 1));
  if (!gc || !from_wrt || !to_loss || !grad) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory (autodiff)");
    goto done;
  }
  gc->g = g;
  kiln_grad_rules(gc->rules);
  for (int64_t v = 0; v < nv0; v++) grad[v] = -1;
  if (o->loss < 0 || o->loss >= nv0 || !g->values[o->loss].typed) {
    rc = kiln_errf(e, KILN_ERR_INVALID, "autodiff: the loss is not a typed value of the graph");
    goto done;
  }
  if (g->values[o->loss].dtype != KILN_F32) {
    rc = kiln_errf(e, KILN_ERR_INVALID, "autodiff: loss '%s' is not float32", g->values[o->loss].name);
    goto done;
  }
  for (int i = 0; i < o->n_wrt; i++) {
    if (o->wrt[i] < 0 || o->wrt[i] >= nv0) {
      rc = kiln_errf(e, KILN_ERR_INVALID, "autodiff: a value to differentiate with respect to is not in the graph");
      goto done;
    }
    if (g->values[o->wrt[i]].dtype != KILN_F32) {
      rc = kiln_errf(e, KILN_ERR_INVALID, "autodiff: '%s' is not float32 and has no gradient",
                     g->values[o->wrt[i]].name);
      goto done;
    }
    from_wrt[o->wrt[i]] = 1;
  }
  /* forward reachability from the wrt values (nodes are topologically sorted) */
  for (int64_t i = 0; i < nn0; i++) {
    const kiln_node *n = &g->nodes[i];
    if (n->dead) continue;
    bool any = false;
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k] >= 0 && from_wrt[n->in[k]] && differentiable(g, n, k)) any = true;
    if (any)
      for (int q = 0; q < n->n_out; q++)
        if (n->out[q] >= 0) from_wrt[n->out[q]] = 1;
  }
  /* backward reachability to the loss */
  to_loss[o->loss] = 1;
  for (int64_t i = nn0 - 1; i >= 0; i--) {
    const kiln_node *n = &g->nodes[i];
    if (n->dead) continue;
    bool any = false;
    for (int q = 0; q < n->n_out; q++)
      if (n->out[q] >= 0 && to_loss[n->out[q]]) any = true;
    if (any)
      for (int k = 0; k < n->n_in; k++)
        if (n->in[k] >= 0) to_loss[n->in[k]] = 1;
  }
  /* seed */
  if (o->seed >= 0) {
    grad[o->loss] = o->seed;
  } else {
    kiln_tensor *ones;
    rc = kiln_tensor_new(KILN_F32, &g->values[o->loss].shape, &ones, e);
    if (rc) goto done;
    for (int64_t k = 0; k < ones->numel; k++) ((float *)ones->data)[k] = 1.0f;
    char *nm = NULL;
    rc = ir_unique_name(g, "loss_grad_seed", &nm, e);
    if (!rc) rc = ir_add_const(g, nm, ones, false, &grad[o->loss], e);
    else kiln_tensor_free(ones);
    kiln_free(nm);
    if (rc) goto done;
  }
  for (int64_t i = nn0 - 1; i >= 0; i--) {
    /* copy the node: rules add nodes, which may move g->nodes */
    kiln_node n = g->nodes[i];
    if (n.dead) continue;
    int dy[16], dx[64];
    bool wants[64], any_dy = false, any_want = false;
    if (n.n_out > 16 || n.n_in > 64) continue;
    for (int q = 0; q < n.n_out; q++) {
      dy[q] = n.out[q] >= 0 && n.out[q] < nv0 ? grad[n.out[q]] : -1;
      if (dy[q] >= 0) any_dy = true;
    }
    for (int k = 0; k < n.n_in; k++) {
      dx[k] = -1;
      wants[k] = n.in[k] >= 0 && from_wrt[n.in[k]] && to_loss[n.in[k]] && differentiable(g, &n, k);
      if (wants[k]) any_want = true;
    }
    if (!any_dy || !any_want) continue;
    kiln_grad_fn rule = gc->rules[n.op];
    if (!rule) {
      rc = kiln_errf(e, KILN_ERR_UNSUPPORTED, "autodiff: no gradient rule for %s",
                     ir_node_label(&n, lbl, sizeof lbl));
      goto done;
    }
    gc->cur_name = n.name;
    int64_t first = g->n_nodes;
    gc->rule_first = first;
    rc = rule(gc, &n, dy, dx, wants, e);
    if (!rc) rc = infer_from(gc, first, e);
    if (rc) {
      kiln_err_prefix(e, "autodiff of %s", ir_node_label(&n, lbl, sizeof lbl));
      goto done;
    }
    for (int k = 0; k < n.n_in; k++) {
      if (dx[k] < 0 || !wants[k]) continue;
      int in = n.in[k];
      const kiln_value *iv = &g->values[in], *gv = &g->values[dx[k]];
      if (!gv->typed || !kiln_shape_eq(&iv->shape, &gv->shape)) {
        char a[160], b[160];
        rc = kiln_errf(e, KILN_ERR_INTERNAL,
                       "autodiff: the gradient rule of %s gave input '%s' (shape %s) a gradient of shape %s",
                       ir_node_label(&n, lbl, sizeof lbl), iv->name, kiln_shape_str(&iv->shape, a, sizeof a),
                       kiln_shape_str(&gv->shape, b, sizeof b));
        goto done;
      }
      if (grad[in] < 0) {
        grad[in] = dx[k];
      } else { /* a value used several times: accumulate */
        int sum;
        first = g->n_nodes;
        gc->cur_name = g->values[in].name;
        rc = grad_op1(gc, KILN_OP_Add, (int[]){grad[in], dx[k]}, 2, &sum, NULL, e);
        if (!rc) rc = infer_from(gc, first, e);
        if (rc) goto done;
        grad[in] = sum;
      }
    }
  }
  for (int i = 0; i < o->n_wrt; i++) {
    int v = o->wrt[i];
    if (grad[v] >= 0) {
      grads[i] = grad[v];
      continue;
    }
    kiln_tensor *z;
    rc = kiln_tensor_new(KILN_F32, &g->values[v].shape, &z, e);
    if (rc) goto done;
    char stem[300], *nm = NULL;
    snprintf(stem, sizeof stem, "%s_grad", g->values[v].name);
    rc = ir_unique_name(g, stem, &nm, e);
    if (!rc) rc = ir_add_const(g, nm, z, false, &grads[i], e);
    else kiln_tensor_free(z);
    kiln_free(nm);
    if (rc) goto done;
  }
done:
  kiln_free(gc);
  kiln_free(from_wrt);
  kiln_free(to_loss);
  kiln_free(grad);
  return rc;
}
