/* trainer.c — compiling the training graph, running steps, checkpoints, export. */
#include "train/trainer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/compile.h"
#include "frontend/onnx.h"
#include "passes/pass.h"
#include "runtime/ref.h"

struct kiln_trainer {
  kiln_graph *model;       /* the inference model (weights refreshed on save) */
  kiln_train_graph *tg;    /* tg->g is owned by prog after compiling */
  kiln_program *prog;
  const kiln_graph *g;     /* the training graph (prog->g) */
  int *state_index;        /* tg->state[i] -> program state index */
  int64_t steps;
  int64_t batch, classes;
  bool profile;
  int64_t runs, profiled;  /* steps run by this trainer; those profiled */
};

static kiln_code load_bound(const char *path, int64_t batch, kiln_graph **out, kiln_err *e) {
  kiln_graph *g = NULL;
  KILN_TRY(kiln_onnx_load(path, &g, e));
  if (g->n_inputs >= 1) {
    kiln_value *in = &g->values[g->inputs[0]];
    if (in->shape.rank >= 1 && in->sym[0] && in->shape.d[0] < 0) {
      if (ir_bind_dim(g, in->sym[0], batch > 0 ? batch : 1, e)) goto fail;
    } else if (batch > 0 && in->shape.rank >= 1 && in->shape.d[0] != batch) {
      kiln_errf(e, KILN_ERR_SHAPE, "%s has a fixed batch of %lld; asked to train with batch %lld (rebuild the "
                                   "model with that --batch, or with a symbolic batch)",
                path, (long long)in->shape.d[0], (long long)batch);
      goto fail;
    }
  }
  kiln_evaluator ev = kiln_ref_evaluator();
  if (ir_infer(g, &ev, e)) {
    kiln_err_prefix(e, "%s", path);
    goto fail;
  }
  *out = g;
  return KILN_OK;
fail:
  ir_graph_free(g);
  return e->code;
}

kiln_code kiln_trainer_create(const char *model_path, int64_t batch, const kiln_trainer_opts *o,
                              kiln_trainer **out, kiln_err *e) {
  *out = NULL;
  kiln_code rc;
  kiln_trainer *t = kiln_calloc(1, sizeof *t);
  if (!t) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  kiln_graph *tgraph = NULL;
  if ((rc = load_bound(model_path, batch, &t->model, e))) goto fail;
  if ((rc = load_bound(model_path, batch, &tgraph, e))) goto fail;
  kiln_train_config cfg = o ? o->cfg : kiln_train_config_default();
  if ((rc = kiln_train_graph_build(tgraph, &cfg, &t->tg, e))) { /* consumes tgraph */
    kiln_err_prefix(e, "%s", model_path);
    goto fail;
  }
  kiln_train_graph *tg = t->tg;
  /* the training pipeline: folding, dead code, fusions valid in training */
  if ((rc = kiln_train_graph_optimize(tg, o ? o->passes : NULL, e))) goto fail;
  t->batch = tg->g->values[tg->in_image].shape.d[0];
  t->classes = tg->g->values[tg->out_logits].shape.d[1];
  int *sin = kiln_malloc(sizeof(int) * (size_t)(tg->n_state ? tg->n_state : 1));
  int *sout = kiln_malloc(sizeof(int) * (size_t)(tg->n_state ? tg->n_state : 1));
  t->state_index = kiln_malloc(sizeof(int) * (size_t)(tg->n_state ? tg->n_state : 1));
  if (!sin || !sout || !t->state_index) {
    kiln_free(sin);
    kiln_free(sout);
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    goto fail;
  }
  for (int i = 0; i < tg->n_state; i++) {
    sin[i] = tg->state[i].in;
    sout[i] = tg->state[i].out;
  }
  kiln_compile_opts co = {.threads = o ? o->threads : 0,
                          .cache_dir = o ? o->cache_dir : NULL,
                          .allow_fallback = o ? o->allow_fallback : false,
                          .state_in = sin,
                          .state_out = sout,
                          .n_state = tg->n_state};
  kiln_graph *g = tg->g;
  tg->g = NULL; /* the program owns it now */
  rc = kiln_compile(g, &co, &t->prog, e);
  kiln_free(sin);
  kiln_free(sout);
  if (rc) goto fail;
  t->g = t->prog->g;
  t->profile = o && o->profile;
  /* initial state: weights and statistics from the model, moments from a checkpoint or zeros */
  for (int i = 0; i < tg->n_state; i++) {
    kiln_state_entry *s = &tg->state[i];
    int idx = kiln_program_state_index(t->prog, s->in);
    t->state_index[i] = idx;
    int64_t bytes;
    void *dst = kiln_program_state_data(t->prog, idx, &bytes);
    kiln_tensor *src = s->init; /* the model's weights, or a checkpoint's moments */
    if (src && (int64_t)kiln_tensor_nbytes(src) == bytes) memcpy(dst, src->data, (size_t)bytes);
    /* the program holds the state now: the copy would double it for the whole run */
    kiln_tensor_free(src);
    s->init = NULL;
  }
  const char *st = ir_get_meta(t->model, "kiln.step");
  if (st) t->steps = strtoll(st, NULL, 10);
  *out = t;
  return KILN_OK;
fail:
  kiln_trainer_free(t);
  return rc;
}

void kiln_trainer_free(kiln_trainer *t) {
  if (!t) return;
  kiln_program_free(t->prog);
  kiln_train_graph_free(t->tg);
  ir_graph_free(t->model);
  kiln_free(t->state_index);
  kiln_free(t);
}

int64_t kiln_trainer_batch(const kiln_trainer *t) { return t->batch; }
int64_t kiln_trainer_num_classes(const kiln_trainer *t) { return t->classes; }
int64_t kiln_trainer_steps_done(const kiln_trainer *t) { return t->steps; }
const kiln_shape *kiln_trainer_image_shape(const kiln_trainer *t) { return &t->g->values[t->tg->in_image].shape; }
const kiln_shape *kiln_trainer_mask_shape(const kiln_trainer *t) {
  return t->tg->in_mask >= 0 ? &t->g->values[t->tg->in_mask].shape : NULL;
}
const char *kiln_trainer_meta(const kiln_trainer *t, const char *key) { return ir_get_meta(t->model, key); }

void kiln_trainer_memory(const kiln_trainer *t, int64_t *arena, int64_t *state) {
  *arena = t->prog->arena_bytes;
  int64_t s = 0;
  for (int i = 0; i < t->prog->n_state; i++) {
    int64_t b;
    kiln_program_state_data(t->prog, i, &b);
    s += b;
  }
  *state = s;
}

static kiln_code check_feed(const kiln_graph *g, int v, const kiln_tensor *t, kiln_err *e) {
  const kiln_value *val = &g->values[v];
  char a[160], b[160];
  if (!t) return kiln_errf(e, KILN_ERR_INVALID, "training input '%s' was not given", val->name);
  if (t->dtype != val->dtype || !kiln_shape_eq(&t->shape, &val->shape))
    return kiln_errf(e, KILN_ERR_SHAPE, "training input '%s' is %s %s; expected %s %s", val->name,
                     kiln_dtype_name(t->dtype), kiln_shape_str(&t->shape, a, sizeof a), kiln_dtype_name(val->dtype),
                     kiln_shape_str(&val->shape, b, sizeof b));
  return KILN_OK;
}

kiln_code kiln_trainer_step(kiln_trainer *t, const kiln_tensor *image, const kiln_tensor *labels,
                            const kiln_tensor *mask, const kiln_tensor *present, kiln_step_result *r,
                            kiln_err *e) {
  const kiln_graph *g = t->g;
  kiln_train_graph *tg = t->tg;
  kiln_tensor *outs[16] = {0};
  if (g->n_outputs > 16) return kiln_errf(e, KILN_ERR_LIMIT, "training graph has too many outputs");
  KILN_TRY(check_feed(g, tg->in_image, image, e));
  KILN_TRY(check_feed(g, tg->in_labels, labels, e));
  for (int64_t i = 0; i < labels->numel; i++) {
    int64_t l = ((const int64_t *)labels->data)[i];
    if (l < 0 || l >= t->classes)
      return kiln_errf(e, KILN_ERR_INVALID, "label %lld of image %lld is out of range [0, %lld)", (long long)l,
                       (long long)i, (long long)t->classes);
  }
  if (tg->in_mask >= 0) {
    KILN_TRY(check_feed(g, tg->in_mask, mask, e));
    KILN_TRY(check_feed(g, tg->in_present, present, e));
  }
  kiln_tensor *hyper = NULL;
  kiln_shape hs = {.rank = 1, .d = {3}};
  kiln_tensor **ins = kiln_calloc((size_t)g->n_inputs + 1, sizeof *ins);
  if (!ins) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  if (kiln_tensor_new(KILN_F32, &hs, &hyper, e)) {
    kiln_free(ins);
    return e->code;
  }
  kiln_optim_hyper(&tg->cfg, t->steps + 1, (float *)hyper->data);
  for (int i = 0; i < g->n_inputs; i++) {
    int v = g->inputs[i];
    if (v == tg->in_image) ins[i] = (kiln_tensor *)image;
    else if (v == tg->in_labels) ins[i] = (kiln_tensor *)labels;
    else if (v == tg->in_mask) ins[i] = (kiln_tensor *)mask;
    else if (v == tg->in_present) ins[i] = (kiln_tensor *)present;
    else if (v == tg->in_hyper) ins[i] = hyper;
  }
  bool prof = t->profile && t->runs > 0;
  kiln_code rc = kiln_program_run(t->prog, ins, outs, prof, e);
  kiln_tensor_free(hyper);
  kiln_free(ins);
  if (rc) return rc;
  t->runs++;
  t->profiled += prof;
  memset(r, 0, sizeof *r);
  for (int i = 0; i < g->n_outputs; i++) {
    int v = g->outputs[i];
    if (v == tg->out_loss) r->loss = ((float *)outs[i]->data)[0];
    else if (v == tg->out_cls) r->loss_cls = ((float *)outs[i]->data)[0];
    else if (v == tg->out_loc) r->loss_loc = ((float *)outs[i]->data)[0];
    else if (v == tg->out_logits) {
      const float *lg = (const float *)outs[i]->data;
      for (int64_t b = 0; b < t->batch; b++) {
        int64_t best = 0;
        for (int64_t c = 1; c < t->classes; c++)
          if (lg[b * t->classes + c] > lg[b * t->classes + best]) best = c;
        r->correct += best == ((const int64_t *)labels->data)[b];
      }
    }
  }
  for (int i = 0; i < g->n_outputs; i++) kiln_tensor_free(outs[i]);
  t->steps++;
  return KILN_OK;
}

kiln_code kiln_trainer_profile(const kiln_trainer *t, kiln_trainer_prof **rows, int64_t *n_rows,
                               int64_t *steps, kiln_err *e) {
  const kiln_program *p = t->prog;
  *rows = NULL;
  *n_rows = 0;
  *steps = p->step_seconds ? t->profiled : 0;
  kiln_trainer_prof *r = kiln_calloc((size_t)(p->n_steps ? p->n_steps : 1), sizeof *r);
  if (!r) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  int64_t n = 0;
  for (int64_t s = 0; s < p->n_steps; s++) {
    const kiln_step *st = &p->steps[s];
    /* the kernels of one node are consecutive steps */
    if (!n || !st->node || st->node != p->steps[s - 1].node) {
      kiln_trainer_prof *q = &r[n++];
      snprintf(q->label, sizeof q->label, "%s", st->label);
      q->op = st->node ? st->node->def->name : "?";
      q->macs = st->macs;
      if (st->node && st->node->n_in && st->node->n_out) {
        const kiln_value *a = ir_in(p->g, st->node, 0), *b = ir_out(p->g, st->node, 0);
        char sa[48] = "-", sb[48] = "-";
        if (a) kiln_shape_str(&a->shape, sa, sizeof sa);
        if (b) kiln_shape_str(&b->shape, sb, sizeof sb);
        snprintf(q->shape, sizeof q->shape, "%s -> %s", sa, sb);
      }
    }
    kiln_trainer_prof *q = &r[n - 1];
    q->kernels++;
    q->fallback |= !st->fn;
    if (p->step_seconds) q->seconds += p->step_seconds[s];
    if (p->step_cpu_seconds) q->cpu_seconds += p->step_cpu_seconds[s];
  }
  *rows = r;
  *n_rows = n;
  return KILN_OK;
}

/* Replaces (or adds) the constant `name` of the model with a copy of `src`. */
/* Sets constant `name` of the model graph to a view of `data` (the program's state storage,
 * which outlives every save: the model is only written from): a checkpoint costs no copy of
 * the weights and moments, which would double the state at the end of a run. */
static kiln_code put_const(kiln_graph *m, const char *name, void *data, const kiln_value *like, kiln_err *e) {
  int v = ir_find_value(m, name);
  kiln_tensor *t;
  KILN_TRY(kiln_tensor_wrap(like->dtype, &like->shape, data, &t, e));
  if (v >= 0) {
    kiln_tensor_free(m->values[v].data);
    m->values[v].data = t;
    return KILN_OK;
  }
  return ir_add_const(m, name, t, true, &v, e);
}

kiln_code kiln_trainer_save(kiln_trainer *t, const char *path, const char *const *meta, kiln_err *e) {
  kiln_train_graph *tg = t->tg;
  for (int i = 0; i < tg->n_state; i++) {
    const kiln_value *sv = &t->g->values[tg->state[i].in];
    void *data = kiln_program_state_data(t->prog, t->state_index[i], NULL);
    KILN_TRY(put_const(t->model, sv->name, data, sv, e));
  }
  char buf[64];
  snprintf(buf, sizeof buf, "%lld", (long long)t->steps);
  KILN_TRY(ir_set_meta(t->model, "kiln.step", buf, e));
  KILN_TRY(ir_set_meta(t->model, "kiln.checkpoint", "1", e));
  for (int i = 0; meta && meta[i] && meta[i + 1]; i += 2) KILN_TRY(ir_set_meta(t->model, meta[i], meta[i + 1], e));
  return kiln_onnx_save(t->model, path, e);
}

kiln_code kiln_trainer_get(kiln_trainer *t, const char *name, kiln_tensor **out, kiln_err *e) {
  for (int i = 0; i < t->tg->n_state; i++) {
    const kiln_value *sv = &t->g->values[t->tg->state[i].in];
    if (strcmp(sv->name, name)) continue;
    KILN_TRY(kiln_tensor_new(sv->dtype, &sv->shape, out, e));
    memcpy((*out)->data, kiln_program_state_data(t->prog, t->state_index[i], NULL), kiln_tensor_nbytes(*out));
    return KILN_OK;
  }
  return kiln_errf(e, KILN_ERR_INVALID, "no trained value named '%s'", name);
}

kiln_code kiln_export_checkpoint(const char *ckpt, const char *out, bool fold_bn, kiln_err *e) {
  kiln_graph *g = NULL;
  KILN_TRY(kiln_onnx_load(ckpt, &g, e));
  kiln_code rc = KILN_OK;
  /* drop the training metadata; ir_compact drops the optimizer moments, which no
   * node reads */
  int k = 0;
  for (int i = 0; i < g->n_meta; i++) {
    if (!strncmp(g->meta_keys[i], "kiln.", 5)) {
      kiln_free(g->meta_keys[i]);
      kiln_free(g->meta_vals[i]);
      continue;
    }
    g->meta_keys[k] = g->meta_keys[i];
    g->meta_vals[k++] = g->meta_vals[i];
  }
  g->n_meta = k;
  if ((rc = ir_compact(g, e))) goto done;
  if (fold_bn) {
    kiln_evaluator ev = kiln_ref_evaluator();
    kiln_pass_ctx cx = {.mode = KILN_MODE_INFERENCE, .ev = &ev};
    if ((rc = ir_infer(g, &ev, e))) goto done;
    if ((rc = kiln_run_pipeline(g, "fold-bn,dce", &cx, NULL, e))) goto done;
  }
  rc = kiln_onnx_save(g, out, e);
done:
  ir_graph_free(g);
  return rc;
}
