/* fusion.c — helpers shared by the fusion passes (see fusion.h). */
#include "passes/fusion.h"

#include <math.h>
#include <string.h>

const char *const fuse_conv_attr_names[] = {"auto_pad", "dilations", "group", "kernel_shape",
                                            "pads",     "strides",   NULL};

static bool is_f32(const kiln_value *v) { return v && v->typed && v->dtype == KILN_F32; }

/* A constant scalar bound of Clip (opset >= 11), or the default when absent. */
static bool clip_bound(const kiln_graph *g, const kiln_node *n, int i, double def, double *v) {
  *v = def;
  if (!ir_in(g, n, i)) return true;
  const kiln_tensor *t = ir_in_const(g, n, i);
  if (!t || t->numel != 1 || t->dtype != KILN_F32) return false;
  *v = kiln_tensor_get_f(t, 0);
  return true;
}

bool fuse_act_of(const kiln_graph *g, const kiln_node *n, kiln_fused_act_params *a) {
  memset(a, 0, sizeof *a);
  if (n->dead || n->n_out < 1 || !is_f32(ir_in(g, n, 0)) || !is_f32(ir_out(g, n, 0))) return false;
  switch (n->op) {
  case KILN_OP_Relu: a->act = KILN_FACT_RELU; return true;
  case KILN_OP_Sigmoid: a->act = KILN_FACT_SIGMOID; return true;
  case KILN_OP_LeakyRelu:
    a->act = KILN_FACT_LEAKY_RELU;
    a->alpha = ir_attr_float(n, "alpha");
    return true;
  case KILN_OP_Clip:
    a->act = KILN_FACT_CLIP;
    if (n->opset < 11) {
      a->alpha = ir_attr_float(n, "min");
      a->beta = ir_attr_float(n, "max");
      return true;
    }
    return clip_bound(g, n, 1, -INFINITY, &a->alpha) && clip_bound(g, n, 2, INFINITY, &a->beta);
  default: return false;
  }
}

int fuse_sole_reader(const kiln_graph *g, int v) {
  if (v < 0 || pass_is_output(g, v)) return -1;
  return pass_single_user(g, v);
}

kiln_code fuse_replace(kiln_graph *g, const int *dead, int n_dead, kiln_op op, const char *name,
                       const int *in, int n_in, int out, int *nid, kiln_err *e) {
  /* the name is copied first: it may point into a node about to move */
  char *nm = kiln_strdup(name);
  if (!nm) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  for (int i = 0; i < n_dead; i++) g->nodes[dead[i]].dead = true;
  int old = g->values[out].producer;
  g->values[out].producer = -1;
  kiln_code rc = ir_add_node(g, op, nm, in, n_in, &out, 1, nid, e);
  kiln_free(nm);
  if (rc) { /* leave the graph as it was */
    for (int i = 0; i < n_dead; i++) g->nodes[dead[i]].dead = false;
    g->values[out].producer = old;
  }
  return rc;
}

kiln_code fuse_copy_attrs(kiln_graph *g, int from, int to, const char *const *names, kiln_err *e) {
  for (int k = 0; names[k]; k++) {
    const kiln_attr *a = ir_attr_find(&g->nodes[from], names[k]);
    if (!a) continue;
    kiln_attr c;
    KILN_TRY(ir_attr_clone(a, &c, e));
    KILN_TRY(ir_push_attr(g, to, &c, e));
  }
  return KILN_OK;
}

kiln_code fuse_set_act(kiln_graph *g, int nid, const kiln_fused_act_params *a, kiln_err *e) {
  KILN_TRY(ir_set_attr_str(g, nid, "activation", kiln_fused_act_names[a->act], e));
  if (a->act == KILN_FACT_CLIP || a->act == KILN_FACT_LEAKY_RELU)
    KILN_TRY(ir_set_attr_float(g, nid, "act_alpha", a->alpha, e));
  if (a->act == KILN_FACT_CLIP) KILN_TRY(ir_set_attr_float(g, nid, "act_beta", a->beta, e));
  return KILN_OK;
}

kiln_code fuse_add_const(kiln_graph *g, const char *stem, const char *suffix, kiln_tensor *t,
                         int *id, kiln_err *e) {
  char buf[512], *name = NULL;
  snprintf(buf, sizeof buf, "%s%s", stem, suffix);
  kiln_code rc = ir_unique_name(g, buf, &name, e);
  if (rc) {
    kiln_tensor_free(t);
    return rc;
  }
  rc = ir_add_const(g, name, t, true, id, e);
  kiln_free(name);
  return rc;
}

bool fuse_bn_foldable(const kiln_graph *g, const kiln_node *bn, int64_t c) {
  if (bn->dead || bn->op != KILN_OP_BatchNormalization) return false;
  bool extra = false;
  for (int o = 1; o < bn->n_out; o++) {
    if (bn->out[o] < 0) continue;
    extra = true;
    if (ir_use_count(g, bn->out[o]) > 0 || pass_is_output(g, bn->out[o])) return false;
  }
  bool inference;
  if (bn->opset >= 14)
    inference = ir_attr_int(bn, "training_mode") == 0;
  else if (bn->opset < 7 && ir_attr_int(bn, "is_test") != 0)
    inference = true;
  else
    inference = !extra; /* asking for the statistics selects the training form */
  if (!inference) return false;
  for (int i = 1; i <= 4; i++) {
    const kiln_tensor *t = ir_in_const(g, bn, i);
    if (!t || t->dtype != KILN_F32 || t->numel != c) return false;
  }
  return true;
}

kiln_code fuse_fold_bn(kiln_graph *g, const kiln_node *bn, int w, int b, int *w_id, int *b_id,
                       kiln_err *e) {
  const float *gamma = ir_in_const(g, bn, 1)->data, *beta = ir_in_const(g, bn, 2)->data;
  const float *mean = ir_in_const(g, bn, 3)->data, *var = ir_in_const(g, bn, 4)->data;
  double eps = ir_attr_float(bn, "epsilon");
  const kiln_tensor *wt = g->values[w].data, *bt = b >= 0 ? g->values[b].data : NULL;
  int64_t c = wt->shape.d[0], per = wt->numel / (c ? c : 1);
  kiln_tensor *nw = NULL, *nb = NULL;
  KILN_TRY(kiln_tensor_clone(wt, &nw, e));
  kiln_code rc = kiln_tensor_new(KILN_F32, &(kiln_shape){.rank = 1, .d = {c}}, &nb, e);
  if (rc) {
    kiln_tensor_free(nw);
    return rc;
  }
  for (int64_t m = 0; m < c; m++) {
    double s = gamma[m] / sqrt((double)var[m] + eps);
    float *row = (float *)nw->data + m * per;
    for (int64_t j = 0; j < per; j++) row[j] = (float)(row[j] * s);
    double bias = bt ? ((const float *)bt->data)[m] : 0.0;
    ((float *)nb->data)[m] = (float)((bias - mean[m]) * s + beta[m]);
  }
  char wname[512], bname[512];
  snprintf(wname, sizeof wname, "%s", g->values[w].name);
  snprintf(bname, sizeof bname, "%s", b >= 0 ? g->values[b].name : g->values[w].name);
  if (b < 0) { /* "conv.weight" -> "conv.bias" */
    char *dot = strrchr(bname, '.');
    if (dot && !strcmp(dot, ".weight")) strcpy(dot, ".bias");
  }
  rc = fuse_add_const(g, wname, "_bn", nw, w_id, e);
  if (rc) {
    kiln_tensor_free(nb);
    return rc;
  }
  return fuse_add_const(g, bname, "_bn", nb, b_id, e);
}

bool fuse_resize_params(const kiln_graph *g, int ri, kiln_resize_params *p) {
  const kiln_node *r = &g->nodes[ri];
  if (r->dead || (r->op != KILN_OP_Resize && r->op != KILN_OP_Upsample)) return false;
  const kiln_value *x = ir_in(g, r, 0);
  if (!x || !x->typed || x->dtype != KILN_F32 || x->shape.rank < 3 || x->shape.rank > 5)
    return false;
  const kiln_tensor *in[4] = {NULL};
  for (int i = 1; i < r->n_in && i < 4; i++) {
    if (ir_in(g, r, i) && !ir_in_const(g, r, i)) return false;
    in[i] = ir_in_const(g, r, i);
  }
  kiln_err e = {0};
  return kiln_resize_params_get(g, r, &x->shape, in, p, &e) == KILN_OK;
}
