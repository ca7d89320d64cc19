/* train_graph.c — forward (training-mode BatchNorm) + losses + autodiff +
 * optimizer, as one graph with persistent state (see train_graph.h). */
#include "train/train_graph.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes/autodiff.h"
#include "passes/pass.h"
#include "passes/train_bn.h"
#include "runtime/ref.h"

#define TRAIN_OPSET 13

kiln_train_config kiln_train_config_default(void) {
  kiln_train_config c;
  memset(&c, 0, sizeof c);
  c.loc_loss = KILN_LOC_BCE;
  c.lambda = 1.0;
  c.optim = KILN_OPTIM_ADAM;
  c.lr = 1e-3;
  c.beta1 = 0.9;
  c.beta2 = 0.999;
  c.eps = 1e-8;
  c.momentum = 0.9;
  return c;
}

void kiln_optim_hyper(const kiln_train_config *cfg, int64_t t, float *hyper) {
  if (cfg->optim == KILN_OPTIM_SGD) {
    hyper[0] = (float)cfg->lr;
    hyper[1] = 1.0f;
    hyper[2] = 0.0f;
    return;
  }
  double bc1 = 1.0 - pow(cfg->beta1, (double)t), bc2 = 1.0 - pow(cfg->beta2, (double)t);
  hyper[0] = (float)(cfg->lr / bc1);
  hyper[1] = (float)sqrt(bc2);
  hyper[2] = (float)(cfg->lr * cfg->weight_decay);
}

void kiln_train_graph_free(kiln_train_graph *tg) {
  if (!tg) return;
  for (int i = 0; i < tg->n_state; i++) {
    kiln_tensor_free(tg->state[i].init);
    kiln_free(tg->state[i].param_name);
    kiln_free(tg->state[i].kind);
  }
  kiln_free(tg->state);
  ir_graph_free(tg->g);
  kiln_free(tg);
}

kiln_code kiln_unfreeze(kiln_graph *g, int v, kiln_tensor **init, kiln_err *e) {
  kiln_value *val = &g->values[v];
  if (!val->data) return kiln_errf(e, KILN_ERR_INVALID, "'%s' is not a constant", val->name);
  if (val->producer >= 0) g->nodes[val->producer].dead = true; /* folded: recompute nothing, feed it */
  KILN_TRY(ir_add_input(g, v, e));
  if (init)
    *init = val->data;
  else
    kiln_tensor_free(val->data);
  val->data = NULL;
  val->producer = -1;
  val->is_initializer = false;
  return KILN_OK;
}

/* ---- small builders ---- */
static kiln_code add_input(kiln_graph *g, const char *name, kiln_dtype dt, const kiln_shape *s, int *id,
                           kiln_err *e) {
  KILN_TRY(ir_add_value(g, name, id, e));
  g->values[*id].dtype = dt;
  g->values[*id].shape = *s;
  g->values[*id].typed = true;
  return ir_add_input(g, *id, e);
}

/* One-output node named `name` (its output value too, made unique). */
static kiln_code add1(kiln_graph *g, kiln_op op, const char *name, const int *in, int n_in, int *out,
                      int *node, kiln_err *e) {
  char *vn = NULL;
  KILN_TRY(ir_unique_name(g, name, &vn, e));
  kiln_code rc = ir_add_value(g, vn, out, e);
  kiln_free(vn);
  if (rc) return rc;
  char nn[256];
  snprintf(nn, sizeof nn, "loss/%s", name);
  int nid;
  KILN_TRY(ir_add_node(g, op, nn, in, n_in, out, 1, &nid, e));
  g->nodes[nid].opset = TRAIN_OPSET;
  if (node) *node = nid;
  return KILN_OK;
}

static kiln_code const_f32(kiln_graph *g, const char *stem, float v, int *id, kiln_err *e) {
  kiln_tensor *t;
  kiln_shape s = {.rank = 0};
  KILN_TRY(kiln_tensor_new(KILN_F32, &s, &t, e));
  ((float *)t->data)[0] = v;
  char *nm = NULL;
  KILN_TRY(ir_unique_name(g, stem, &nm, e));
  kiln_code rc = ir_add_const(g, nm, t, false, id, e);
  kiln_free(nm);
  return rc;
}

static kiln_code const_axes(kiln_graph *g, const int64_t *ax, int n, int *id, kiln_err *e) {
  kiln_tensor *t;
  kiln_shape s = {.rank = 1, .d = {n}};
  KILN_TRY(kiln_tensor_new(KILN_I64, &s, &t, e));
  for (int i = 0; i < n; i++) ((int64_t *)t->data)[i] = ax[i];
  char *nm = NULL;
  KILN_TRY(ir_unique_name(g, "loss_axes", &nm, e));
  kiln_code rc = ir_add_const(g, nm, t, false, id, e);
  kiln_free(nm);
  return rc;
}

/* An optimizer-state input: the moments a checkpoint carries (an unused constant
 * of that name and shape) or zeros. */
static kiln_code state_input(kiln_graph *g, const char *name, const kiln_shape *s, int *id, kiln_tensor **init,
                             kiln_err *e) {
  int v = ir_find_value(g, name);
  *init = NULL;
  if (v >= 0) {
    kiln_value *val = &g->values[v];
    if (!val->data || val->producer >= 0 || val->dtype != KILN_F32 || !kiln_shape_eq(&val->shape, s))
      return kiln_errf(e, KILN_ERR_INVALID, "'%s' exists but is not optimizer state of the right shape", name);
    *id = v;
    return kiln_unfreeze(g, v, init, e);
  }
  KILN_TRY(kiln_tensor_new(KILN_F32, s, init, e));
  kiln_code rc = add_input(g, name, KILN_F32, s, id, e);
  if (rc) {
    kiln_tensor_free(*init);
    *init = NULL;
  }
  return rc;
}

static int find_output(const kiln_graph *g, const char *name) {
  for (int i = 0; i < g->n_outputs; i++)
    if (!strcmp(g->values[g->outputs[i]].name, name)) return g->outputs[i];
  return -1;
}

static kiln_code push_state(kiln_train_graph *tg, int in, int out, kiln_tensor *init, const char *kind,
                            const char *param, kiln_err *e) {
  kiln_state_entry *p = kiln_realloc(tg->state, sizeof *p * (size_t)(tg->n_state + 1));
  if (!p) {
    kiln_tensor_free(init);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  }
  tg->state = p;
  kiln_state_entry *s = &p[tg->n_state++];
  memset(s, 0, sizeof *s);
  s->in = in;
  s->out = out;
  s->init = init;
  s->is_param = !strcmp(kind, "param");
  s->kind = kiln_strdup(kind);
  s->param_name = kiln_strdup(param ? param : "");
  if (!s->kind || !s->param_name) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  return KILN_OK;
}

/* Localization loss per image: [B,1,H,W] logits s and mask m -> [B]. */
static kiln_code loc_per_image(kiln_graph *g, kiln_loc_loss kind, int s, int m, int *per_img, kiln_err *e) {
  int pix;
  if (kind == KILN_LOC_BCE) {
    /* BCE with logits = softplus(s) - s*m.  (The textbook relu(s) - s*m + softplus(-|s|)
     * has the same value, but its derivative at s == 0 — common at initialization, where
     * a ReLU feeds the head — would be -m instead of sigmoid(0) - m.) */
    int sp, sm;
    KILN_TRY(add1(g, KILN_OP_Softplus, "bce_softplus", (int[]){s}, 1, &sp, NULL, e));
    KILN_TRY(add1(g, KILN_OP_Mul, "bce_sm", (int[]){s, m}, 2, &sm, NULL, e));
    KILN_TRY(add1(g, KILN_OP_Sub, "bce_pixel", (int[]){sp, sm}, 2, &pix, NULL, e));
  } else {
    int sg, d;
    KILN_TRY(add1(g, KILN_OP_Sigmoid, "loc_sigmoid", (int[]){s}, 1, &sg, NULL, e));
    KILN_TRY(add1(g, KILN_OP_Sub, "loc_diff", (int[]){sg, m}, 2, &d, NULL, e));
    if (kind == KILN_LOC_L1)
      KILN_TRY(add1(g, KILN_OP_Abs, "l1_pixel", (int[]){d}, 1, &pix, NULL, e));
    else
      KILN_TRY(add1(g, KILN_OP_Mul, "l2_pixel", (int[]){d, d}, 2, &pix, NULL, e));
  }
  int nid;
  KILN_TRY(add1(g, KILN_OP_ReduceMean, "loc_per_image", (int[]){pix}, 1, per_img, &nid, e));
  int rank = g->values[s].shape.rank;
  int64_t axes[KILN_MAX_RANK];
  for (int i = 1; i < rank; i++) axes[i - 1] = i;
  KILN_TRY(ir_set_attr_ints(g, nid, "axes", axes, rank - 1, e));
  return ir_set_attr_int(g, nid, "keepdims", 0, e);
}

kiln_code kiln_train_graph_build(kiln_graph *fwd, const kiln_train_config *cfgp, kiln_train_graph **out,
                                 kiln_err *e) {
  *out = NULL;
  kiln_train_graph *tg = kiln_calloc(1, sizeof *tg);
  if (!tg) {
    ir_graph_free(fwd);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  }
  tg->g = fwd;
  tg->cfg = cfgp ? *cfgp : kiln_train_config_default();
  kiln_train_config *cfg = &tg->cfg;
  kiln_graph *g = fwd;
  kiln_code rc = KILN_OK;
  int *params = NULL, *grads = NULL, n_params = 0;
  tg->in_mask = tg->in_present = tg->out_loc = -1;
  const char *lname = cfg->logits_name ? cfg->logits_name : "logits";
  const char *sname = cfg->saliency_name ? cfg->saliency_name : "saliency";
  int logits = find_output(g, lname), sal = find_output(g, sname);
  if (logits < 0) {
    rc = kiln_errf(e, KILN_ERR_INVALID, "the model has no output named '%s' to train a classifier on", lname);
    goto fail;
  }
  if (g->values[logits].shape.rank != 2) {
    rc = kiln_errf(e, KILN_ERR_SHAPE, "output '%s' must be [batch, classes]", lname);
    goto fail;
  }
  if (g->n_inputs != 1) {
    rc = kiln_errf(e, KILN_ERR_INVALID, "the model must have exactly one input (the image); it has %d",
                   g->n_inputs);
    goto fail;
  }
  if (sal < 0 || cfg->loc_loss == KILN_LOC_NONE) {
    cfg->loc_loss = KILN_LOC_NONE;
    sal = -1;
  }
  tg->in_image = g->inputs[0];
  tg->out_logits = logits;

  /* 1. BatchNorm with batch statistics; running statistics become state */
  if ((rc = kiln_bn_to_training(g, e))) goto fail; /* momentum from each node (ONNX 0.9 = PyTorch 0.1) */
  for (int64_t i = 0; i < g->n_nodes; i++) {
    kiln_node *n = &g->nodes[i];
    if (n->dead || n->op != KILN_OP_BatchNormTrain) continue;
    for (int k = 3; k <= 4; k++) {
      int v = n->in[k], vo = n->out[k];
      if (v < 0 || vo < 0 || !g->values[v].data) continue;
      kiln_tensor *init = NULL;
      if ((rc = kiln_unfreeze(g, v, &init, e))) goto fail;
      if ((rc = push_state(tg, v, vo, init, "bn_stat", NULL, e))) goto fail;
      n = &g->nodes[i];
    }
  }
  /* 2. parameters: float initializers read in a differentiable slot */
  params = kiln_malloc(sizeof(int) * (size_t)(g->n_values ? g->n_values : 1));
  grads = kiln_malloc(sizeof(int) * (size_t)(g->n_values ? g->n_values : 1));
  if (!params || !grads) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    goto fail;
  }
  {
    int64_t nv = g->n_values;
    for (int64_t v = 0; v < nv; v++) {
      kiln_value *val = &g->values[v];
      if (!val->data || val->producer >= 0 || !val->is_initializer || val->dtype != KILN_F32) continue;
      bool diff_use = false;
      for (int64_t i = 0; i < g->n_nodes && !diff_use; i++) {
        const kiln_node *n = &g->nodes[i];
        if (n->dead) continue;
        for (int k = 0; k < n->n_in; k++)
          if (n->in[k] == v && !(k < 32 && ((n->def->shape_inputs | n->def->nondiff_inputs) & (1u << k))))
            diff_use = true;
      }
      if (!diff_use) continue;
      kiln_tensor *init = NULL;
      if ((rc = kiln_unfreeze(g, (int)v, &init, e))) goto fail;
      g->values[v].trainable = true;
      params[n_params++] = (int)v;
      /* the pair's output is filled in after the optimizer nodes exist */
      if ((rc = push_state(tg, (int)v, -1, init, "param", NULL, e))) goto fail;
    }
  }
  if (n_params == 0) {
    rc = kiln_errf(e, KILN_ERR_INVALID, "the model has no trainable parameters");
    goto fail;
  }
  /* 3. data inputs and the losses */
  {
    int64_t B = g->values[logits].shape.d[0];
    kiln_shape sb = {.rank = 1, .d = {B}}, sh = {.rank = 1, .d = {3}};
    if ((rc = add_input(g, "labels", KILN_I64, &sb, &tg->in_labels, e))) goto fail;
    int cls;
    if ((rc = add1(g, KILN_OP_SoftmaxCrossEntropyLoss, "loss_cls", (int[]){logits, tg->in_labels}, 2, &cls,
                   NULL, e)))
      goto fail;
    tg->out_cls = cls;
    int total = cls;
    if (sal >= 0) {
      if ((rc = add_input(g, "mask", KILN_F32, &g->values[sal].shape, &tg->in_mask, e))) goto fail;
      if ((rc = add_input(g, "mask_present", KILN_F32, &sb, &tg->in_present, e))) goto fail;
      int per_img, weighted, num, cnt, one, den, loc, ax0, lam, scaled, nid;
      if ((rc = loc_per_image(g, cfg->loc_loss, sal, tg->in_mask, &per_img, e))) goto fail;
      if ((rc = add1(g, KILN_OP_Mul, "loc_masked", (int[]){per_img, tg->in_present}, 2, &weighted, NULL, e)))
        goto fail;
      if ((rc = const_axes(g, (int64_t[]){0}, 1, &ax0, e))) goto fail;
      if ((rc = add1(g, KILN_OP_ReduceSum, "loc_sum", (int[]){weighted, ax0}, 2, &num, &nid, e))) goto fail;
      if ((rc = ir_set_attr_int(g, nid, "keepdims", 0, e))) goto fail;
      if ((rc = add1(g, KILN_OP_ReduceSum, "loc_count", (int[]){tg->in_present, ax0}, 2, &cnt, &nid, e)))
        goto fail;
      if ((rc = ir_set_attr_int(g, nid, "keepdims", 0, e))) goto fail;
      if ((rc = const_f32(g, "one", 1.0f, &one, e))) goto fail;
      if ((rc = add1(g, KILN_OP_Max, "loc_den", (int[]){cnt, one}, 2, &den, NULL, e))) goto fail;
      if ((rc = add1(g, KILN_OP_Div, "loss_loc", (int[]){num, den}, 2, &loc, NULL, e))) goto fail;
      if ((rc = const_f32(g, "lambda", (float)cfg->lambda, &lam, e))) goto fail;
      if ((rc = add1(g, KILN_OP_Mul, "loc_scaled", (int[]){loc, lam}, 2, &scaled, NULL, e))) goto fail;
      if ((rc = add1(g, KILN_OP_Add, "loss", (int[]){cls, scaled}, 2, &total, NULL, e))) goto fail;
      tg->out_loc = loc;
    } else {
      if ((rc = add1(g, KILN_OP_Identity, "loss", (int[]){cls}, 1, &total, NULL, e))) goto fail;
    }
    tg->out_loss = total;
    if ((rc = add_input(g, "optim.hyper", KILN_F32, &sh, &tg->in_hyper, e))) goto fail;
  }
  /* outputs: losses first, then the logits */
  g->n_outputs = 0;
  for (int64_t v = 0; v < g->n_values; v++) g->values[v].is_output = false;
  if ((rc = ir_add_output(g, tg->out_loss, e)) || (rc = ir_add_output(g, tg->out_cls, e))) goto fail;
  if (tg->out_loc >= 0 && (rc = ir_add_output(g, tg->out_loc, e))) goto fail;
  if ((rc = ir_add_output(g, logits, e))) goto fail;
  kiln_evaluator ev = kiln_ref_evaluator();
  if ((rc = ir_toposort(g, e)) || (rc = ir_infer(g, &ev, e))) goto fail;

  /* 4. backward */
  {
    kiln_autodiff_opts ao = {.loss = tg->out_loss, .wrt = params, .n_wrt = n_params, .seed = -1};
    if ((rc = kiln_autodiff(g, &ao, grads, e))) goto fail;
  }
  /* 5. the optimizer: one fused update per parameter */
  for (int i = 0; i < n_params; i++) {
    int p = params[i];
    const char *pname = g->values[p].name;
    kiln_shape ps = g->values[p].shape;
    char nm[512];
    int m, v = -1, outs[3], nid;
    bool adam = cfg->optim != KILN_OPTIM_SGD;
    kiln_tensor *zm = NULL, *zv = NULL;
    snprintf(nm, sizeof nm, "optim.%s.%s", adam ? "adam_m" : "sgd_buf", pname);
    if ((rc = state_input(g, nm, &ps, &m, &zm, e))) goto fail;
    if (adam) {
      snprintf(nm, sizeof nm, "optim.adam_v.%s", pname);
      if ((rc = state_input(g, nm, &ps, &v, &zv, e))) {
        kiln_tensor_free(zm);
        goto fail;
      }
    }
    int n_out = adam ? 3 : 2;
    for (int o = 0; o < n_out; o++) {
      char *vn = NULL;
      snprintf(nm, sizeof nm, "%s%s.new", o == 0 ? "" : o == 1 ? (adam ? "optim.adam_m." : "optim.sgd_buf.") : "optim.adam_v.",
               pname);
      if ((rc = ir_unique_name(g, nm, &vn, e))) goto fail;
      rc = ir_add_value(g, vn, &outs[o], e);
      kiln_free(vn);
      if (rc) goto fail;
    }
    snprintf(nm, sizeof nm, "optim/%s", pname);
    if (adam) {
      rc = ir_add_node(g, KILN_OP_Adam, nm, (int[]){p, grads[i], m, v, tg->in_hyper}, 5, outs, 3, &nid, e);
      if (!rc) rc = ir_set_attr_float(g, nid, "beta1", cfg->beta1, e);
      if (!rc) rc = ir_set_attr_float(g, nid, "beta2", cfg->beta2, e);
      if (!rc) rc = ir_set_attr_float(g, nid, "epsilon", cfg->eps, e);
      if (!rc) rc = ir_set_attr_float(g, nid, "weight_decay", cfg->weight_decay, e);
      if (!rc) rc = ir_set_attr_int(g, nid, "decoupled", cfg->optim == KILN_OPTIM_ADAMW, e);
    } else {
      rc = ir_add_node(g, KILN_OP_SGD, nm, (int[]){p, grads[i], m, tg->in_hyper}, 4, outs, 2, &nid, e);
      if (!rc) rc = ir_set_attr_float(g, nid, "momentum", cfg->momentum, e);
      if (!rc) rc = ir_set_attr_float(g, nid, "weight_decay", cfg->weight_decay, e);
      if (!rc) rc = ir_set_attr_int(g, nid, "nesterov", cfg->nesterov, e);
    }
    if (rc) goto fail;
    for (int s = 0; s < tg->n_state; s++)
      if (tg->state[s].in == p) tg->state[s].out = outs[0];
    rc = push_state(tg, m, outs[1], zm, adam ? "adam_m" : "sgd_buf", pname, e);
    zm = NULL;
    if (!rc && adam) rc = push_state(tg, v, outs[2], zv, "adam_v", pname, e);
    else kiln_tensor_free(zv);
    if (rc) goto fail;
  }
  if ((rc = ir_toposort(g, e)) || (rc = ir_verify(g, e)) || (rc = ir_infer(g, &ev, e))) goto fail;
  kiln_free(params);
  kiln_free(grads);
  *out = tg;
  return KILN_OK;
fail:
  kiln_free(params);
  kiln_free(grads);
  kiln_train_graph_free(tg);
  return rc;
}

/* ---- optimizing the training graph ----
 * Passes compact the graph (value ids change) and remove what no graph output
 * needs; the state updates are not graph outputs, so they are made outputs for
 * the duration, and every id the training graph records is found again by name. */
static char *name_of(const kiln_graph *g, int v) { return v >= 0 ? kiln_strdup(g->values[v].name) : NULL; }

kiln_code kiln_train_graph_optimize_ex(kiln_train_graph *tg, const char *pipeline,
                                       const kiln_pass_ctx *opts, kiln_pipeline_result *res,
                                       kiln_err *e) {
  kiln_graph *g = tg->g;
  int *ids[9] = {&tg->in_image, &tg->in_labels, &tg->in_mask, &tg->in_present, &tg->in_hyper,
                 &tg->out_loss, &tg->out_cls,   &tg->out_loc,  &tg->out_logits};
  int n_fixed = 9, n = n_fixed + 2 * tg->n_state;
  char **names = kiln_calloc((size_t)n, sizeof(char *));
  kiln_code rc = KILN_OK;
  if (!names) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  for (int i = 0; i < n_fixed; i++)
    if (*ids[i] >= 0 && !(names[i] = name_of(g, *ids[i]))) rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  for (int i = 0; i < tg->n_state && !rc; i++) {
    names[n_fixed + 2 * i] = name_of(g, tg->state[i].in);
    names[n_fixed + 2 * i + 1] = name_of(g, tg->state[i].out);
    if (!names[n_fixed + 2 * i] || !names[n_fixed + 2 * i + 1]) rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  }
  int n_out0 = g->n_outputs;
  for (int i = 0; i < tg->n_state && !rc; i++) rc = ir_add_output(g, tg->state[i].out, e);
  if (!rc) {
    kiln_evaluator ev = kiln_ref_evaluator();
    kiln_pass_ctx cx = {0};
    if (opts) cx = *opts;
    cx.mode = KILN_MODE_TRAINING;
    cx.differentiated = true; /* the backward pass is built: no further autodiff */
    if (!cx.ev) cx.ev = &ev;
    rc = kiln_run_pipeline(g, pipeline, &cx, res, e);
    if (rc) kiln_err_prefix(e, "optimizing the training graph");
  }
  if (!rc) {
    for (int i = n_out0; i < g->n_outputs; i++) g->values[g->outputs[i]].is_output = false;
    g->n_outputs = n_out0;
    for (int i = 0; i < g->n_outputs; i++) g->values[g->outputs[i]].is_output = true;
    for (int i = 0; i < n_fixed && !rc; i++)
      if (names[i] && (*ids[i] = ir_find_value(g, names[i])) < 0)
        rc = kiln_errf(e, KILN_ERR_INTERNAL, "optimizing the training graph lost '%s'", names[i]);
    for (int i = 0; i < tg->n_state && !rc; i++) {
      tg->state[i].in = ir_find_value(g, names[n_fixed + 2 * i]);
      tg->state[i].out = ir_find_value(g, names[n_fixed + 2 * i + 1]);
      if (tg->state[i].in < 0 || tg->state[i].out < 0)
        rc = kiln_errf(e, KILN_ERR_INTERNAL, "optimizing the training graph lost state '%s'", names[n_fixed + 2 * i]);
    }
  }
  for (int i = 0; i < n; i++) kiln_free(names[i]);
  kiln_free(names);
  return rc;
}

kiln_code kiln_train_graph_optimize(kiln_train_graph *tg, const char *pipeline, kiln_err *e) {
  return kiln_train_graph_optimize_ex(tg, pipeline, NULL, NULL, e);
}
