/* eval.c — a model over a dataset split: predictions, confusion matrix, per-class
 * metrics, and SPN mask IoU/Dice (study/eval.h). */
#include "study/eval.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "frontend/onnx.h"
#include "ir/graph.h"
#include "runtime/ref.h"

/* Bridges between the public API and the IR, defined in runtime/api.c. */
kiln_model *kiln_model_from_graph(kiln_graph *g);
const kiln_graph *kiln_model_graph(const kiln_model *m);

struct kiln_eval {
  kiln_eval_opts o;
  kiln_session *s;
  int n_outputs;
  int logits_out, saliency_out; /* output indices; saliency -1 when absent */
  int64_t batch, k, c, h, w;
};

kiln_eval_opts kiln_eval_opts_default(void) {
  kiln_eval_opts o;
  memset(&o, 0, sizeof o);
  o.backend = KILN_BACKEND_JIT;
  o.batch = 8;
  o.threshold = 0.5f;
  return o;
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int64_t kiln_argmax(const float *x, int64_t k) {
  int64_t best = 0;
  for (int64_t i = 1; i < k; i++)
    if (x[i] > x[best] || (isnan(x[best]) && !isnan(x[i]))) best = i;
  return best;
}

void kiln_eval_result_free(kiln_eval_result *r) {
  if (!r) return;
  kiln_free(r->label);
  kiln_free(r->pred);
  kiln_free(r->logits);
  kiln_free(r->iou);
  kiln_free(r->dice);
  kiln_confusion_free(&r->cm);
  kiln_metrics_free(&r->metrics);
  memset(r, 0, sizeof *r);
}

kiln_code kiln_load_model_bound(const char *path, int64_t batch, kiln_graph **out, kiln_err *e) {
  kiln_graph *g = NULL;
  KILN_TRY(kiln_onnx_load(path, &g, e));
  kiln_code rc = KILN_OK;
  if (g->n_inputs < 1) rc = kiln_errf(e, KILN_ERR_INVALID, "%s has no inputs", path);
  if (!rc) {
    const kiln_value *in = &g->values[g->inputs[0]];
    if (in->sym[0]) {
      char sym[256];
      snprintf(sym, sizeof sym, "%s", in->sym[0]);
      rc = ir_bind_dim(g, sym, batch, e);
    }
  }
  if (!rc) {
    kiln_evaluator evr = kiln_ref_evaluator();
    rc = ir_infer(g, &evr, e);
  }
  if (rc) {
    kiln_err_prefix(e, "%s", path);
    ir_graph_free(g);
    return rc;
  }
  *out = g;
  return KILN_OK;
}

kiln_code kiln_eval_create(const char *model_path, const kiln_eval_opts *o, kiln_eval **out, kiln_err *e) {
  *out = NULL;
  kiln_eval_opts def = kiln_eval_opts_default();
  if (!o) o = &def;
  if (o->batch < 1) return kiln_errf(e, KILN_ERR_INVALID, "the evaluation batch must be at least 1");
  kiln_graph *g = NULL;
  KILN_TRY(kiln_load_model_bound(model_path, o->batch, &g, e));
  kiln_eval *ev = kiln_calloc(1, sizeof *ev);
  kiln_model *m = ev ? kiln_model_from_graph(g) : NULL;
  if (!m) {
    kiln_free(ev);
    ir_graph_free(g);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  }
  ev->o = *o;
  kiln_code rc = KILN_OK;
  /* one image input [B,C,H,W]; outputs `logits` [B,K] and optionally `saliency` [B,1,H,W] */
  const kiln_shape *is = kiln_model_input_shape(m, 0);
  if (kiln_model_num_inputs(m) != 1 || is->rank != 4 || kiln_model_input_dtype(m, 0) != KILN_F32)
    rc = kiln_errf(e, KILN_ERR_INVALID, "%s: expected one float32 image input [B,C,H,W]", model_path);
  ev->logits_out = 0;
  ev->saliency_out = -1;
  ev->n_outputs = kiln_model_num_outputs(m);
  for (int i = 0; i < ev->n_outputs; i++) {
    if (!strcmp(kiln_model_output_name(m, i), "logits")) ev->logits_out = i;
    if (!strcmp(kiln_model_output_name(m, i), "saliency")) ev->saliency_out = i;
  }
  if (!rc) {
    ev->batch = is->d[0];
    ev->c = is->d[1];
    ev->h = is->d[2];
    ev->w = is->d[3];
    const kiln_shape *ls = kiln_model_output_shape(m, ev->logits_out);
    if (ls->rank != 2 || ls->d[0] != ev->batch || ls->d[1] < 1)
      rc = kiln_errf(e, KILN_ERR_INVALID, "%s: output '%s' is not logits [B,K]", model_path,
                     kiln_model_output_name(m, ev->logits_out));
    else
      ev->k = ls->d[1];
  }
  if (!rc && ev->saliency_out >= 0) {
    const kiln_shape *ss = kiln_model_output_shape(m, ev->saliency_out);
    if (ss->rank != 4 || ss->d[0] != ev->batch || ss->d[1] != 1 || ss->d[2] != ev->h || ss->d[3] != ev->w)
      rc = kiln_errf(e, KILN_ERR_INVALID, "%s: output 'saliency' is not [B,1,H,W] at the input's size", model_path);
  }
  if (!rc) {
    kiln_options so = kiln_options_default();
    so.backend = o->backend;
    so.threads = o->threads;
    so.cache_dir = o->cache_dir;
    so.allow_fallback = o->allow_fallback;
    so.passes = o->passes;
    rc = kiln_session_create(m, &so, &ev->s, e);
    if (rc) kiln_err_prefix(e, "%s", model_path);
  }
  kiln_model_free(m);
  if (rc) {
    kiln_eval_free(ev);
    return rc;
  }
  *out = ev;
  return KILN_OK;
}

void kiln_eval_free(kiln_eval *ev) {
  if (!ev) return;
  kiln_session_free(ev->s);
  kiln_free(ev);
}

int64_t kiln_eval_batch(const kiln_eval *ev) { return ev->batch; }
int64_t kiln_eval_classes(const kiln_eval *ev) { return ev->k; }
bool kiln_eval_has_saliency(const kiln_eval *ev) { return ev->saliency_out >= 0; }
void kiln_eval_image_shape(const kiln_eval *ev, int64_t *c, int64_t *h, int64_t *w) {
  *c = ev->c;
  *h = ev->h;
  *w = ev->w;
}

kiln_code kiln_load_examples(kiln_dataset *d, int64_t first, int64_t count, float *images, int64_t *labels,
                             float *masks, bool *has_mask, int threads, kiln_err *e) {
  if (count <= 0) return KILN_OK;
  int64_t img = d->c * d->h * d->w, hw = d->h * d->w;
  kiln_err *errs = kiln_calloc((size_t)count, sizeof *errs);
  if (!errs) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  if (threads < 1) threads = 1;
  if (threads > count) threads = (int)count;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t i = 0; i < count; i++) {
    bool hm = false;
    if (masks) memset(masks + i * hw, 0, sizeof(float) * (size_t)hw);
    d->get(d, first + i, images + i * img, &labels[i], masks ? masks + i * hw : NULL, &hm, &errs[i]);
    if (has_mask) has_mask[i] = hm;
  }
  kiln_code rc = KILN_OK;
  for (int64_t i = 0; i < count && !rc; i++)
    if (errs[i].code) {
      rc = errs[i].code;
      if (!e->code) *e = errs[i];
    }
  kiln_free(errs);
  return rc;
}

kiln_code kiln_eval_run(kiln_eval *ev, kiln_dataset *d, kiln_eval_result *r, kiln_err *e) {
  memset(r, 0, sizeof *r);
  double t0 = now_seconds();
  if (d->c != ev->c || d->h != ev->h || d->w != ev->w)
    return kiln_errf(e, KILN_ERR_SHAPE, "dataset '%s' has images [%lld,%lld,%lld] but the model takes [%lld,%lld,%lld]",
                     d->name ? d->name : "?", (long long)d->c, (long long)d->h, (long long)d->w, (long long)ev->c,
                     (long long)ev->h, (long long)ev->w);
  if (d->classes != ev->k)
    return kiln_errf(e, KILN_ERR_INVALID, "dataset '%s' has %lld classes but the model has %lld logits",
                     d->name ? d->name : "?", (long long)d->classes, (long long)ev->k);
  int64_t n = d->n;
  if (ev->o.limit > 0 && ev->o.limit < n) n = ev->o.limit;
  int64_t B = ev->batch, k = ev->k, hw = ev->h * ev->w, img = ev->c * hw;
  bool sal = ev->saliency_out >= 0;
  kiln_code rc = KILN_OK;
  kiln_tensor *x = NULL, **outs = NULL;
  float *masks = NULL;
  bool *has_mask = NULL;
  int64_t *labels = NULL;
  r->n = n;
  r->k = k;
  r->has_saliency = sal;
  r->mean_iou = r->mean_dice = NAN;
  KILN_TRY(kiln_confusion_init(&r->cm, k, e));
  kiln_shape xs = kiln_shape_make(4, (int64_t[]){B, ev->c, ev->h, ev->w});
  rc = kiln_tensor_new(KILN_F32, &xs, &x, e);
  if (rc) goto out;
  r->label = kiln_calloc((size_t)(n ? n : 1), sizeof *r->label);
  r->pred = kiln_calloc((size_t)(n ? n : 1), sizeof *r->pred);
  r->logits = kiln_calloc((size_t)(n ? n * k : 1), sizeof *r->logits);
  outs = kiln_calloc((size_t)ev->n_outputs, sizeof *outs);
  labels = kiln_calloc((size_t)B, sizeof *labels);
  has_mask = kiln_calloc((size_t)B, sizeof *has_mask);
  if (sal) {
    masks = kiln_calloc((size_t)(B * hw), sizeof *masks);
    r->iou = kiln_calloc((size_t)(n ? n : 1), sizeof *r->iou);
    r->dice = kiln_calloc((size_t)(n ? n : 1), sizeof *r->dice);
  }
  if (!r->label || !r->pred || !r->logits || !outs || !labels || !has_mask ||
      (sal && (!masks || !r->iou || !r->dice))) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    goto out;
  }
  /* SPN threshold on the logits: sigmoid(s) > t  <=>  s > log(t / (1 - t)) */
  float t = ev->o.threshold;
  float logit_t = t <= 0 ? -INFINITY : t >= 1 ? INFINITY : (float)log((double)t / (1.0 - (double)t));
  double sum_iou = 0, sum_dice = 0;
  int threads = ev->o.threads > 0 ? ev->o.threads : omp_get_max_threads();
  for (int64_t first = 0; first < n; first += B) {
    int64_t cnt = n - first < B ? n - first : B;
    float *xd = x->data;
    /* padding rows are zero images; their outputs are ignored */
    if (cnt < B) memset(xd + cnt * img, 0, sizeof(float) * (size_t)((B - cnt) * img));
    rc = kiln_load_examples(d, first, cnt, xd, labels, masks, has_mask, threads, e);
    if (rc) goto out;
    rc = kiln_session_run(ev->s, &x, outs, e);
    if (rc) goto out;
    const float *lg = outs[ev->logits_out]->data;
    for (int64_t i = 0; i < cnt; i++) {
      int64_t idx = first + i;
      memcpy(r->logits + idx * k, lg + i * k, sizeof(float) * (size_t)k);
      r->label[idx] = labels[i];
      r->pred[idx] = kiln_argmax(lg + i * k, k);
      rc = kiln_confusion_add(&r->cm, labels[i], r->pred[idx], e);
      if (rc) {
        kiln_err_prefix(e, "example %lld of '%s'", (long long)idx, d->name ? d->name : "?");
        goto out;
      }
      if (!sal) continue;
      r->iou[idx] = r->dice[idx] = NAN;
      if (!has_mask[i]) continue;
      kiln_seg_counts c = {0};
      kiln_seg_count((const float *)outs[ev->saliency_out]->data + i * hw, logit_t, masks + i * hw, hw, &c);
      r->iou[idx] = kiln_seg_iou(&c);
      r->dice[idx] = kiln_seg_dice(&c);
      sum_iou += r->iou[idx];
      sum_dice += r->dice[idx];
      r->n_masked++;
      r->seg.tp += c.tp;
      r->seg.fp += c.fp;
      r->seg.fn += c.fn;
      r->seg.tn += c.tn;
    }
    for (int i = 0; i < ev->n_outputs; i++) {
      kiln_tensor_free(outs[i]);
      outs[i] = NULL;
    }
    if (ev->o.progress) ev->o.progress(ev->o.progress_ctx, first + cnt, n);
  }
  if (r->n_masked) {
    r->mean_iou = sum_iou / (double)r->n_masked;
    r->mean_dice = sum_dice / (double)r->n_masked;
  }
  rc = kiln_metrics_compute(&r->cm, &r->metrics, e);
out:
  for (int i = 0; outs && i < ev->n_outputs; i++) kiln_tensor_free(outs[i]);
  kiln_free(outs);
  kiln_tensor_free(x);
  kiln_free(masks);
  kiln_free(has_mask);
  kiln_free(labels);
  r->seconds = now_seconds() - t0;
  if (rc) kiln_eval_result_free(r);
  return rc;
}

kiln_code kiln_evaluate(const char *model_path, kiln_dataset *d, const kiln_eval_opts *o, kiln_eval_result *r,
                        kiln_err *e) {
  memset(r, 0, sizeof *r);
  kiln_eval *ev = NULL;
  KILN_TRY(kiln_eval_create(model_path, o, &ev, e));
  kiln_code rc = kiln_eval_run(ev, d, r, e);
  kiln_eval_free(ev);
  return rc;
}
